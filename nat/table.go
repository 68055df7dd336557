package nat

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/wire"
)

// The connection table is split into shards, each with its own lock, so that
// readers of different queues (and the two directions of one connection, which
// hash to different shards) rarely meet on a lock. Lookups take a read lock.
//
// A shard maps the 64-bit keyed hash of a tuple to the connection, which is
// then checked against its own tuples: 16 bytes a slot instead of a copy of
// the 38-byte tuple, for each of a connection's two keys. A tuple whose hash
// is already taken by another tuple (odds of about 1e-7 with 2M entries)
// goes to the shard's overflow map, keyed by the whole tuple.
const shardBits = 8

type shard struct {
	mu       sync.RWMutex
	m        map[uint64]*Conn
	overflow map[tupleKey]*Conn
	// quarantine holds the reply tuples of closed TCP connections (by
	// hash, until when): the real server may still hold them in TIME_WAIT,
	// so a new connection must not reuse them yet. A hash shared with
	// another tuple only makes bind skip one more port.
	quarantine map[uint64]int64
	// qorder lists quarantine entries in the order they were made, which
	// is the order they end in (one quarantine time for all; a reload that
	// changes it only delays some purges): a purge
	// looks at the ended ones only. qhead is the first not yet purged.
	qorder []quarantined
	qhead  int
	_      [128 - 24 - 8 - 8 - 8 - 24 - 8]byte // keep shards on their own cache lines
}

type quarantined struct {
	h     uint64
	until int64
}

// Table holds connections by both of their keys.
type Table struct {
	shards [1 << shardBits]shard
	seed   [5]uint64 // per process: tuples an attacker picks cannot be aimed at one hash
	count  atomic.Int64
	max    int64
	now    atomic.Int64 // coarse clock in ns, set by Tick
	epoch  time.Time
	wheel  wheel // when each connection is due to be looked at for expiry
}

func newTable(max int) *Table {
	t := &Table{max: int64(max), epoch: time.Now()}
	var b [40]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("nat: no randomness for the table's hash seed: " + err.Error())
	}
	for i := range t.seed {
		t.seed[i] = binary.LittleEndian.Uint64(b[8*i:]) | 1
	}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]*Conn)
	}
	return t
}

// hash is wyhash's multiply-mix over the tuple's words under secret seeds:
// a few nanoseconds, and without the seeds no way to pick tuples that share
// a hash. (A shared hash costs only a trip to the overflow map.)
func (t *Table) hash(k *tupleKey) uint64 {
	w := uint64(k.sport)<<24 | uint64(k.dport)<<8 | uint64(k.proto)
	s0, s1 := wire.Halves(&k.src)
	d0, d1 := wire.Halves(&k.dst)
	h := mum(s0^t.seed[0], s1^t.seed[1])
	h = mum(h^d0^t.seed[2], d1^t.seed[3])
	return mum(h^w, t.seed[4])
}

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (t *Table) shardOf(h uint64) *shard { return &t.shards[h>>(64-shardBits)] }

func (c *Conn) hasKey(k *tupleKey) bool { return c.in == *k || c.out == *k }

func (t *Table) lookup(k *tupleKey) *Conn {
	h := t.hash(k)
	s := t.shardOf(h)
	s.mu.RLock()
	c := s.m[h]
	if c != nil && !c.hasKey(k) {
		c = nil
	}
	if c == nil && len(s.overflow) > 0 {
		c = s.overflow[*k]
	}
	s.mu.RUnlock()
	return c
}

// insert adds c under k unless k is taken; it returns the holder of k. A
// quarantined k is taken too (the holder returned is nil) when honour is set.
func (t *Table) insert(k *tupleKey, c *Conn, honour bool) *Conn {
	h := t.hash(k)
	s := t.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.overflow[*k]; old != nil {
		return old
	}
	if honour && len(s.quarantine) > 0 {
		if until, ok := s.quarantine[h]; ok {
			if until > t.now.Load() {
				return nil
			}
			delete(s.quarantine, h)
		}
	}
	old := s.m[h]
	switch {
	case old == nil:
		s.m[h] = c
	case old.hasKey(k):
		return old
	default:
		if s.overflow == nil {
			s.overflow = map[tupleKey]*Conn{}
		}
		s.overflow[*k] = c
	}
	return c
}

// remove takes c off k; with until > 0, k stays quarantined until then.
func (t *Table) remove(k *tupleKey, c *Conn, until int64) {
	h := t.hash(k)
	s := t.shardOf(h)
	s.mu.Lock()
	if s.overflow[*k] == c {
		delete(s.overflow, *k)
	} else if s.m[h] == c {
		delete(s.m, h)
	}
	if until > 0 {
		if s.quarantine == nil {
			s.quarantine = map[uint64]int64{}
		}
		s.quarantine[h] = until
		s.qorder = append(s.qorder, quarantined{h, until})
	}
	s.mu.Unlock()
}

// purgeQuarantine forgets quarantined tuples whose time is up, and returns
// how many stay. A tuple quarantined again keeps its later time.
func (t *Table) purgeQuarantine(now int64) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for s.qhead < len(s.qorder) && s.qorder[s.qhead].until <= now {
			q := s.qorder[s.qhead]
			if until, ok := s.quarantine[q.h]; ok && until <= now {
				delete(s.quarantine, q.h)
			}
			s.qhead++
		}
		if s.qhead > len(s.qorder)/2 { // reuse the front
			s.qorder = s.qorder[:copy(s.qorder, s.qorder[s.qhead:])]
			s.qhead = 0
		}
		n += len(s.quarantine)
		s.mu.Unlock()
	}
	return n
}

// Len is the number of connections.
func (t *Table) Len() int { return int(t.count.Load()) }

// Tick advances the table's clock to the real time.
func (t *Table) Tick() { t.now.Store(int64(time.Since(t.epoch))) }

// ConnInfo is a snapshot of one connection, for listings (ipvsadm -lnc).
type ConnInfo struct {
	Protocol Protocol
	State    string
	Expires  time.Duration
	Client   netip.AddrPort
	VIP      netip.AddrPort
	LIP      netip.AddrPort
	RIP      netip.AddrPort
}

func addrPort(a addr16, p uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), p)
}

// Conns returns a snapshot of every connection.
func (t *Table) Conns() []ConnInfo {
	now := t.now.Load()
	seen := map[*Conn]bool{}
	var out []ConnInfo
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		var cs []*Conn
		for _, c := range s.m {
			cs = append(cs, c)
		}
		for _, c := range s.overflow {
			cs = append(cs, c)
		}
		s.mu.RUnlock()
		for _, c := range cs {
			st := c.state.Load()
			if seen[c] || st == stDead {
				continue
			}
			seen[c] = true
			name := "UDP"
			if c.in.proto == TCP {
				name = StateName(st)
			}
			out = append(out, ConnInfo{
				Protocol: c.in.proto,
				State:    name,
				Expires:  time.Duration(max(c.deadline.Load()-now, 0)),
				Client:   addrPort(c.in.src, c.in.sport),
				VIP:      addrPort(c.in.dst, c.in.dport),
				LIP:      addrPort(c.out.dst, c.out.dport),
				RIP:      addrPort(c.out.src, c.out.sport),
			})
		}
	}
	return out
}
