// Package clusterauth holds what the cluster's UDP channels between
// instances (package handoff's frames, package connsync's connection
// records) share: the HMAC-SHA256 tag under the cluster's key, truncated to
// 16 bytes; the check that a datagram's source is a configured peer; and a
// lock-free token bucket that bounds what an instance sends. Each channel
// keeps its own envelope around these.
package clusterauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

const (
	// TagLen is a tag's length: HMAC-SHA256 truncated to 128 bits.
	TagLen = 16
	// KeyLen is the shared key's length.
	KeyLen = 32
)

// MAC computes tags under one key: an HMAC and its scratch, for one
// goroutine at a time.
type MAC struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewMAC makes a MAC under key.
func NewMAC(key []byte) *MAC { return &MAC{mac: hmac.New(sha256.New, key)} }

// Tag returns the tag of header followed by payload, in the MAC's scratch
// (valid until its next use).
func (m *MAC) Tag(header, payload []byte) []byte {
	m.mac.Reset()
	m.mac.Write(header)
	m.mac.Write(payload)
	return m.mac.Sum(m.sum[:0])[:TagLen]
}

// Check reports, in constant time, whether tag is header and payload's.
func (m *MAC) Check(header, payload, tag []byte) bool {
	return hmac.Equal(m.Tag(header, payload), tag)
}

// PeerIndex returns the index in peers of a datagram's source address, or
// -1: peers send from their listen address, and an IPv4 one may arrive
// IPv4-mapped on a dual-stack socket.
func PeerIndex(peers []netip.AddrPort, from netip.AddrPort) int {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	for i, p := range peers {
		if p == from {
			return i
		}
	}
	return -1
}

// ReadLoop reads datagrams from conn into buf until conn is closed, and
// hands each to handle with its source, in buf (reused once handle
// returns). A buf one byte longer than the longest datagram accepted lets
// handle see a longer one as longer.
func ReadLoop(conn *net.UDPConn, buf []byte, handle func(b []byte, from netip.AddrPort)) {
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		handle(buf[:n], from)
	}
}

// Refusals counts refused datagrams by reason: one counter per error of a
// channel's parser, each with the name the metrics give it.
type Refusals struct {
	errs  []error
	names []string
	n     []atomic.Uint64
}

// NewRefusals makes the counters of errs, named names (as many).
func NewRefusals(errs []error, names []string) *Refusals {
	return &Refusals{errs: errs, names: names, n: make([]atomic.Uint64, len(errs))}
}

// Count counts err, if it is one of the reasons.
func (r *Refusals) Count(err error) {
	for i, e := range r.errs {
		if err == e {
			r.n[i].Add(1)
		}
	}
}

// Load returns the counts by name.
func (r *Refusals) Load() map[string]uint64 {
	m := make(map[string]uint64, len(r.names))
	for i, name := range r.names {
		m[name] = r.n[i].Load()
	}
	return m
}

// Bucket is a token bucket of Rate tokens a second, holding at most one
// second's worth: lock-free, as every sender takes from it.
type Bucket struct {
	rate   int64
	tokens atomic.Int64
	last   atomic.Int64 // unix nanoseconds of the last refill
}

// Init fills the bucket with rate tokens, as of now.
func (b *Bucket) Init(rate int, now time.Time) {
	b.rate = int64(rate)
	b.tokens.Store(b.rate)
	b.last.Store(now.UnixNano())
}

// Take takes one token if there is one, refilling for the time since the
// last refill first.
func (b *Bucket) Take(now time.Time) bool {
	t := now.UnixNano()
	last := b.last.Load()
	if elapsed := t - last; elapsed >= int64(time.Millisecond) && b.last.CompareAndSwap(last, t) {
		add := elapsed * b.rate / int64(time.Second)
		for {
			cur := b.tokens.Load()
			next := min(cur+add, b.rate)
			if b.tokens.CompareAndSwap(cur, next) {
				break
			}
		}
	}
	if b.tokens.Add(-1) >= 0 {
		return true
	}
	b.tokens.Add(1)
	return false
}
