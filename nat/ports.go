package nat

import (
	"math/bits"
	"sync/atomic"
)

// portMap is one (LIP, real server) pair's local ports, a bit each, set
// while a connection holds the port toward that server: the (LIP, lport,
// RIP, rport) tuple is what must be unique, so each pair has the whole
// port range to itself.
//
// Ports are taken and given back with atomic operations on 64-bit words,
// with no lock, and a search starts at the word the last one ended in: a
// free port is found in one look while there are many, and after at most
// span/64 loads when there is one left anywhere. Finding a port by trying
// tuples in the connection table (one shard lock each, a bounded number of
// tries) fails long before the pool is empty; this fails only when it is.
type portMap struct {
	words []atomic.Uint64
	span  uint32
	next  atomic.Uint32 // where the next search starts: just past the last port taken
}

// newPortMap holds span ports, the search starting at port start % span.
func newPortMap(span, start uint32) *portMap {
	n := (span + 63) / 64
	m := &portMap{words: make([]atomic.Uint64, n), span: span}
	if r := span % 64; r != 0 {
		m.words[n-1].Store(^uint64(0) << r) // the bits past the range are never free
	}
	m.next.Store(start % span)
	return m
}

// take marks a free port held and returns its index in the range, or false
// when every port is held. Ports are taken in turn from where the last
// search ended, as a cursor would: a port given back is taken again only
// after the rest of the range has had its turn, so a tuple comes back to a
// real server as late as the pool allows.
func (m *portMap) take() (uint32, bool) {
	n := uint32(len(m.words))
	start := m.next.Load()
	first := start / 64
	// The first word is looked at twice: from the start bit up, and last,
	// below it.
	for i := uint32(0); i <= n; i++ {
		w := (first + i) % n
		var below uint64 // bits not to take in this look
		switch {
		case i == 0:
			below = uint64(1)<<(start%64) - 1
		case i == n:
			below = ^(uint64(1)<<(start%64) - 1)
		}
		word := &m.words[w]
		for {
			v := word.Load()
			free := ^(v | below)
			if free == 0 {
				break
			}
			bit := uint32(bits.TrailingZeros64(free))
			if word.CompareAndSwap(v, v|1<<bit) {
				idx := w*64 + bit
				m.next.Store((idx + 1) % m.span)
				return idx, true
			}
		}
	}
	return 0, false
}

// put gives port index i back.
func (m *portMap) put(i uint32) {
	m.words[i/64].And(^(uint64(1) << (i % 64)))
}

// claim marks port index i held, if it is free: a connection made
// elsewhere (connrec, ImportConn) comes with its port, and the port must
// not be taken again while it lives.
func (m *portMap) claim(i uint32) bool {
	if i >= m.span {
		return false
	}
	w, bit := &m.words[i/64], uint64(1)<<(i%64)
	for {
		v := w.Load()
		if v&bit != 0 {
			return false
		}
		if w.CompareAndSwap(v, v|bit) {
			return true
		}
	}
}
