// Package frag reassembles IPv4 and IPv6 fragments into whole datagrams,
// bounded in memory: that is its one job. It follows Linux's inet_frag
// (net/ipv4/ip_fragment.c, net/ipv6/reassembly.c): datagrams are keyed by
// (source, destination, identification, protocol) for IPv4 and (source,
// destination, identification) for IPv6; all the bytes held are bounded
// (4 MiB by default, ipfrag_high_thresh's default) and so are one source's
// (an IPv4 address, an IPv6 /64);
// an incomplete datagram is given up after 30 s (ipfrag_time). A fragment
// that overlaps another is refused and its datagram given up (RFC 5722, which
// Linux applies to IPv4 too since 4.19); an exact duplicate is dropped alone.
// The first fragment must hold the whole transport header (RFC 8200 4.5, RFC
// 1858's tiny fragment), so the ports are known; a datagram past 65535 bytes
// with its IP header is refused, IPv6 too (no jumbograms). Each refusal is
// counted by its Reason.
//
// Fragments are copied into pooled chunks of a power-of-two size (what is
// charged against the bounds is the chunks' capacity and each datagram's
// bookkeeping), so in steady state no fragment allocates. Datagrams are
// sharded by a hash of their source: a shard's lock guards its datagrams and
// its per-source byte counts, and a train of fragments that arrives on
// several readers (TAP queues) meets in its shard. The total held is one
// atomic counter, reserved before a fragment is copied (a compare and
// swap: the bound holds exactly with readers on every shard): it is
// written per fragment, and fragments are not the fast path.
package frag

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// Reason says why a fragment was dropped.
type Reason uint8

const (
	Overlap   Reason = iota // it overlaps a fragment held, not exactly: the datagram is given up (RFC 5722)
	Duplicate               // it is exactly a fragment held: dropped alone
	Tiny                    // a first fragment that does not hold the whole transport header
	TooBig                  // the datagram would pass 65535 bytes with its IP header
	Memory                  // holding it would pass Config.MaxBytes
	Source                  // holding it would pass Config.MaxPerSource for its source
	TooMany                 // its datagram has MaxFragments fragments already: the datagram is given up
	Malformed               // lengths that do not add up: a fragment not a multiple of 8 bytes before the last, two different ends, an empty fragment
	Timeout                 // held by a datagram that did not complete within Config.Timeout
	NumReasons
)

var reasonNames = [NumReasons]string{"overlap", "duplicate", "tiny", "too_big", "memory", "source", "too_many", "malformed", "timeout"}

func (r Reason) String() string { return reasonNames[r] }

// Defaults, as Linux's.
const (
	DefaultMaxBytes = 4 << 20          // ipfrag_high_thresh
	DefaultTimeout  = 30 * time.Second // ipfrag_time
	// MaxDatagram is the largest datagram reassembled, IP header included.
	MaxDatagram = 65535
	// MaxFragments bounds one datagram's fragments: at 1280 bytes (IPv6's
	// minimum MTU) a 64 KiB datagram takes 53.
	MaxFragments = 64
	shards       = 64
	minChunk     = 7  // 128 bytes
	maxChunk     = 16 // 65536 bytes
)

// Config bounds a Reassembler. Zero values are the defaults.
type Config struct {
	MaxBytes     int           // all datagrams held; DefaultMaxBytes
	MaxPerSource int           // one source's datagrams; MaxBytes/4
	Timeout      time.Duration // DefaultTimeout
	// Expired, if set, is called for each datagram given up at its
	// timeout whose first fragment (offset 0) was held: Linux's ip_expire
	// and ip6_expire send an ICMP time exceeded then, and only then. first
	// is that fragment as it came (for IPv6 its Fragment header rebuilt),
	// at most MaxQuote bytes of it, valid during the call; from is what
	// AddFrom was given with it. It is called with the datagram's shard
	// locked, from Sweep or AddFrom: it must not call the Reassembler, and
	// should decide quickly (a rate limit first) what it sends.
	Expired func(first []byte, from uint64)
}

// MaxQuote is the most of a first fragment Config.Expired is given: what
// an ICMPv6 error quotes within IPv6's minimum MTU (1280 bytes less its
// IPv6 and ICMPv6 headers).
const MaxQuote = wire.IPv6MinMTU - wire.IPv6Len - wire.ICMPLen

// Reassembler holds incomplete datagrams. Add and Sweep may be called from
// any goroutine.
type Reassembler struct {
	cfg     Config
	bytes   atomic.Int64 // charged, all shards
	counts  [NumReasons]atomic.Uint64
	done    atomic.Uint64
	shards  [shards]shard
	chunks  [maxChunk - minChunk + 1]sync.Pool // *[]byte by size class
	entries sync.Pool                          // *entry
}

// shard's mu guards its datagrams and its sources' byte counts.
type shard struct {
	mu      sync.Mutex
	dgrams  map[key]*entry
	sources map[[16]byte]int // by key.source
	quote   [MaxQuote]byte   // an expired datagram's first fragment (expire)
	_       [64]byte         // its own cache line
}

type key struct {
	src, dst [16]byte
	id       uint32
	proto    uint8 // IPv4 only: IPv6 does not key by it
	v6       bool
}

// source is what Config.MaxPerSource bounds and the shards are chosen by:
// an IPv4 address, an IPv6 /64 (as package defence counts IPv6 clients: a
// host on a /64 has all its addresses).
func (k *key) source() [16]byte {
	a := k.src
	if k.v6 {
		clear(a[8:])
	}
	return a
}

type piece struct {
	off, end int // in the fragmentable part
	buf      *[]byte
}

type entry struct {
	key      key
	src      [16]byte            // key.source()
	pieces   [MaxFragments]piece // sorted by off
	n        int
	hdr      *[]byte // the first fragment's header (IPv4 with options; IPv6 up to the fragment header)
	hdrLen   int
	nhOff    int  // IPv6: the offset in hdr of the next header field naming the fragment header
	total    int  // the fragmentable part's length, once last
	last     bool // the last fragment came
	got      int
	charge   int
	deadline int64
	maxFrag  int
	proto    uint8 // the first fragment's transport protocol
	df       bool
	from     uint64 // what AddFrom was given with the first fragment
}

var entrySize = int(unsafe.Sizeof(entry{}))

// New returns a Reassembler with cfg's bounds.
func New(cfg Config) *Reassembler {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxPerSource <= 0 {
		cfg.MaxPerSource = cfg.MaxBytes / 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	r := &Reassembler{cfg: cfg}
	for i := range r.shards {
		r.shards[i].dgrams = map[key]*entry{}
		r.shards[i].sources = map[[16]byte]int{}
	}
	for i := range r.chunks {
		size := 1 << (minChunk + i)
		r.chunks[i].New = func() any { b := make([]byte, size); return &b }
	}
	r.entries.New = func() any { return new(entry) }
	return r
}

// Bytes is what the datagrams held are charged, at most Config.MaxBytes.
func (r *Reassembler) Bytes() int64 { return r.bytes.Load() }

// Count is how many fragments were dropped for reason.
func (r *Reassembler) Count(reason Reason) uint64 { return r.counts[reason].Load() }

// Reassembled is how many datagrams were made whole.
func (r *Reassembler) Reassembled() uint64 { return r.done.Load() }

// Held is how many datagrams are incomplete.
func (r *Reassembler) Held() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.dgrams)
		s.mu.Unlock()
	}
	return n
}

// Result is what Add did with a fragment.
type Result uint8

const (
	Held    Result = iota // kept: its datagram is not whole yet
	Done                  // its datagram is whole, in out
	Dropped               // dropped, counted under the Reason returned
)

// Info describes a datagram made whole.
type Info struct {
	Len     int  // its length in out
	MaxFrag int  // the largest fragment's IP length: Linux refragments to it (frag_max_size)
	DF      bool // an IPv4 fragment had DF set
}

// Add takes one fragment, ip (the IP packet, trimmed to its length; the
// caller has found it is a fragment). When it completes its datagram the
// whole datagram is written to out (IP header first, the fragment header
// gone from IPv6) and Add returns Done. ip may overlap out: it is copied
// before out is written. now is a monotonic clock in nanoseconds.
func (r *Reassembler) Add(ip []byte, out []byte, now int64) (Result, Info, Reason) {
	return r.AddFrom(ip, out, now, 0)
}

// AddFrom is Add with from, kept with a first fragment for Config.Expired
// (the caller's word for where it came from).
func (r *Reassembler) AddFrom(ip []byte, out []byte, now int64, from uint64) (Result, Info, Reason) {
	var f fragment
	if reason, ok := parse(ip, &f); !ok {
		return r.drop(reason, 1)
	}
	if f.off == 0 && f.last {
		if !f.key.v6 {
			return r.drop(Malformed, 1) // offset 0 without MF: not a fragment
		}
		// An IPv6 atomic fragment (RFC 6946): processed in isolation.
		return r.atomic(ip, &f, out)
	}
	src := f.key.source()
	s := &r.shards[hashSrc(&src)&(shards-1)]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.dgrams[f.key]
	if e != nil && e.deadline < now {
		r.expire(s, e)
		e = nil
	}
	chunk := chunkClass(len(f.data))
	cost := 1 << (minChunk + chunk)
	hdrCost := 0
	if f.off == 0 {
		hdrCost = 1 << (minChunk + chunkClass(f.hdrLen))
	}
	if e == nil {
		cost += entrySize
	}
	// One source's bytes are its shard's, under its lock; all the bytes
	// are reserved before a byte is copied, so readers of other shards
	// cannot all pass the bound at once (left: reserved, not charged
	// yet, given back on the way out).
	if s.sources[src]+cost+hdrCost > r.cfg.MaxPerSource {
		return r.drop(Source, 1)
	}
	if !r.reserve(cost + hdrCost) {
		return r.drop(Memory, 1)
	}
	left := cost + hdrCost
	defer r.unreserve(&left)
	if e == nil {
		e = r.entries.Get().(*entry)
		*e = entry{key: f.key, src: src, deadline: now + int64(r.cfg.Timeout)}
		s.dgrams[f.key] = e
		left -= r.charge(s, e, entrySize)
	}
	// As Linux: a last fragment that does not end where the datagram
	// does, or any past that end, gives the datagram up.
	if f.last {
		if (e.last && e.total != f.end) || (e.n > 0 && e.pieces[e.n-1].end > f.end) {
			return r.kill(s, e, Malformed)
		}
	} else if e.last && f.end > e.total {
		return r.kill(s, e, Malformed)
	}
	// Where the fragment goes, and whether it overlaps a neighbour.
	i := 0
	for i < e.n && e.pieces[i].off < f.off {
		i++
	}
	if i < e.n && e.pieces[i].off == f.off && e.pieces[i].end == f.end {
		return r.drop(Duplicate, 1)
	}
	if (i > 0 && e.pieces[i-1].end > f.off) || (i < e.n && e.pieces[i].off < f.end) {
		return r.kill(s, e, Overlap)
	}
	if e.n == MaxFragments {
		return r.kill(s, e, TooMany)
	}
	if f.last {
		e.total, e.last = f.end, true
	}
	if f.off == 0 {
		h := r.chunks[chunkClass(f.hdrLen)].Get().(*[]byte)
		copy(*h, ip[:f.hdrLen])
		e.hdr, e.hdrLen, e.nhOff, e.proto, e.from = h, f.hdrLen, f.nhOff, f.proto, from
		left -= r.charge(s, e, cap(*h))
	}
	b := r.chunks[chunk].Get().(*[]byte)
	copy(*b, f.data)
	left -= r.charge(s, e, cap(*b))
	copy(e.pieces[i+1:e.n+1], e.pieces[i:e.n])
	e.pieces[i] = piece{off: f.off, end: f.end, buf: b}
	e.n++
	e.got += f.end - f.off
	e.maxFrag = max(e.maxFrag, len(ip))
	e.df = e.df || f.df
	if !e.last || e.got != e.total || e.hdr == nil {
		return Held, Info{}, 0
	}
	// Whole: no overlaps and every byte below total held.
	n := e.hdrLen + e.total
	if n > MaxDatagram || n > len(out) {
		r.free(s, e, TooBig) // the fragment is in e: counted with the rest
		return Dropped, Info{}, TooBig
	}
	copy(out, (*e.hdr)[:e.hdrLen])
	at := e.hdrLen
	for _, p := range e.pieces[:e.n] {
		copy(out[at:], (*p.buf)[:p.end-p.off])
		at += p.end - p.off
	}
	info := Info{Len: n, MaxFrag: e.maxFrag, DF: e.df}
	finish(out[:n], e.key.v6, e.nhOff, e.proto, e.df)
	r.free(s, e, NumReasons)
	r.done.Add(1)
	return Done, info, 0
}

// finish makes the first fragment's header the whole datagram's.
func finish(d []byte, v6 bool, nhOff int, proto uint8, df bool) {
	if v6 {
		ip := wire.IPv6(d)
		d[nhOff] = proto
		ip.SetPayloadLen(len(d) - wire.IPv6Len)
		return
	}
	ip := wire.IPv4(d)
	ip.SetTotalLen(len(d))
	var ff uint16
	if df {
		ff = wire.IPv4DF
	}
	binary.BigEndian.PutUint16(d[wire.IPv4FragOff:], ff)
	ip.SetChecksum(0)
	ip.SetChecksum(csum.Checksum(d[:ip.HeaderLen()], 0))
}

// atomic writes an IPv6 atomic fragment to out without its fragment header.
func (r *Reassembler) atomic(ip []byte, f *fragment, out []byte) (Result, Info, Reason) {
	n := f.hdrLen + len(f.data)
	if n > len(out) {
		return r.drop(TooBig, 1)
	}
	// ip may overlap out, starting at the same byte or later: the header
	// moves not at all, the data left by 8 bytes, so copy's memmove is
	// safe.
	copy(out, ip[:f.hdrLen])
	copy(out[f.hdrLen:], f.data)
	finish(out[:n], true, f.nhOff, f.proto, false)
	r.done.Add(1)
	// Linux forwards it as the packet it is (no frag_max_size): its
	// largest fragment is itself, without the fragment header.
	return Done, Info{Len: n, MaxFrag: n}, 0
}

func (r *Reassembler) drop(reason Reason, n int) (Result, Info, Reason) {
	r.counts[reason].Add(uint64(n))
	return Dropped, Info{}, reason
}

// kill gives up e, counting its fragments and the one refused under reason.
func (r *Reassembler) kill(s *shard, e *entry, reason Reason) (Result, Info, Reason) {
	r.free(s, e, reason)
	return r.drop(reason, 1)
}

// reserve takes n bytes of Config.MaxBytes if they are left: exactly, so
// that concurrent readers of different shards cannot pass it together.
func (r *Reassembler) reserve(n int) bool {
	for {
		held := r.bytes.Load()
		if held+int64(n) > int64(r.cfg.MaxBytes) {
			return false
		}
		if r.bytes.CompareAndSwap(held, held+int64(n)) {
			return true
		}
	}
}

// unreserve gives back what was reserved and not charged.
func (r *Reassembler) unreserve(left *int) { r.bytes.Add(-int64(*left)) }

// charge charges e and its source n bytes, reserved already (reserve),
// and returns n.
func (r *Reassembler) charge(s *shard, e *entry, n int) int {
	e.charge += n
	s.sources[e.src] += n
	return n
}

// free removes e from s, returning its chunks; its fragments are counted
// under reason (NumReasons: not dropped).
func (r *Reassembler) free(s *shard, e *entry, reason Reason) {
	if reason < NumReasons {
		r.counts[reason].Add(uint64(e.n))
	}
	delete(s.dgrams, e.key)
	if left := s.sources[e.src] - e.charge; left > 0 {
		s.sources[e.src] = left
	} else {
		delete(s.sources, e.src)
	}
	r.bytes.Add(-int64(e.charge))
	for _, p := range e.pieces[:e.n] {
		r.chunks[chunkClass(cap(*p.buf))].Put(p.buf)
	}
	if e.hdr != nil {
		r.chunks[chunkClass(cap(*e.hdr))].Put(e.hdr)
	}
	*e = entry{}
	r.entries.Put(e)
}

// expire gives e up at its timeout, passing its first fragment, if it
// came, to Config.Expired.
func (r *Reassembler) expire(s *shard, e *entry) {
	if r.cfg.Expired != nil && e.hdr != nil {
		q := s.quote[:]
		n := copy(q, (*e.hdr)[:e.hdrLen])
		if e.key.v6 && n+frag6Len <= len(q) { // headers past the quote leave no room for it
			frag6(q[n:n+frag6Len]).Put(e.proto, 0, true, e.key.id)
			n += frag6Len
		}
		p := e.pieces[0] // offset 0 (the header came with it): its data ends at p.end
		n += copy(q[n:], (*p.buf)[:p.end])
		r.cfg.Expired(q[:n], e.from)
	}
	r.free(s, e, Timeout)
}

// Sweep gives up the datagrams whose time is up (now as Add's) and returns
// how many.
func (r *Reassembler) Sweep(now int64) int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for _, e := range s.dgrams {
			if e.deadline < now {
				r.expire(s, e)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// chunkClass is the size class of the smallest chunk that holds n bytes.
func chunkClass(n int) int {
	return bits.Len(uint(max(n, 1<<minChunk)-1)) - minChunk
}

func hashSrc(a *[16]byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range a {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h ^ h>>32
}

// fragment is one fragment, parsed.
type fragment struct {
	key    key
	off    int // of its data in the fragmentable part
	end    int
	last   bool
	df     bool
	proto  uint8 // the next header after the IPv4 header or the fragment header
	data   []byte
	hdrLen int // IPv4: the IP header; IPv6: up to the fragment header
	nhOff  int
}

// parse reads ip's fragment fields, refusing what cannot be reassembled.
func parse(ip []byte, f *fragment) (Reason, bool) {
	switch version(ip) {
	case 4:
		return parse4(ip, f)
	case 6:
		return parse6(ip, f)
	}
	return Malformed, false
}

func parse4(ip []byte, f *fragment) (Reason, bool) {
	if len(ip) < wire.IPv4MinLen {
		return Malformed, false
	}
	h := wire.IPv4(ip)
	hl := h.HeaderLen()
	if hl < wire.IPv4MinLen || hl > len(ip) || h.TotalLen() != len(ip) {
		return Malformed, false
	}
	ff := h.FragField()
	copy(f.key.src[12:], h.Src())
	copy(f.key.dst[12:], h.Dst())
	f.key.id, f.key.proto, f.proto = uint32(h.ID()), h.Protocol(), h.Protocol()
	f.off = int(ff&wire.IPv4FragMask) * 8
	f.last = ff&wire.IPv4MF == 0
	f.df = ff&wire.IPv4DF != 0
	f.data = ip[hl:]
	f.hdrLen = hl
	return f.check()
}

func parse6(ip []byte, f *fragment) (Reason, bool) {
	if len(ip) < wire.IPv6Len {
		return Malformed, false
	}
	h := wire.IPv6(ip)
	if wire.IPv6Len+h.PayloadLen() != len(ip) {
		return Malformed, false
	}
	// Walk to the fragment header: only the headers that may come before
	// it (hop-by-hop, destination options, routing) are crossed.
	next, nhOff, off := h.NextHeader(), wire.IPv6NextHdrOff, wire.IPv6Len
	for range wire.IP6MaxExt {
		if next == wire.IP6Fragment {
			break
		}
		// A header longer than what is left leaves off past len(ip): the
		// next turn, or the fragment header's check below, refuses it.
		if !crossable(next) || len(ip)-off < ext6Unit {
			return Malformed, false
		}
		x := ext6(ip[off:])
		next, nhOff, off = x.Next(), off, off+x.Len()
	}
	if next != wire.IP6Fragment || len(ip)-off < frag6Len {
		return Malformed, false
	}
	fh := frag6(ip[off : off+frag6Len])
	copy(f.key.src[:], h.Src())
	copy(f.key.dst[:], h.Dst())
	f.key.v6 = true
	f.key.id = fh.ID()
	f.off = fh.Off()
	f.last = !fh.More()
	f.data = ip[off+frag6Len:]
	f.hdrLen, f.nhOff, f.proto = off, nhOff, fh.Next()
	return f.check()
}

// check applies the rules common to both families.
func (f *fragment) check() (Reason, bool) {
	f.end = f.off + len(f.data)
	if len(f.data) == 0 || (!f.last && len(f.data)%8 != 0) {
		return Malformed, false
	}
	if f.hdrLen+f.end > MaxDatagram {
		return TooBig, false
	}
	if f.off == 0 && !whole(f.data, f.proto, f.key.v6) {
		return Tiny, false
	}
	return 0, true
}

// whole reports whether a first fragment's data holds every header up to
// and including the transport header's fixed part (TCP's with its options):
// RFC 8200 4.5 for IPv6, RFC 1858 for IPv4.
func whole(data []byte, proto uint8, v6 bool) bool {
	off := 0
	if v6 {
		w := wire.Walk6(data, proto, 0)
		if w.Bad || w.Frag {
			return false
		}
		proto, off = w.Proto, w.L4
	}
	rest := len(data) - off
	switch proto {
	case wire.ProtoTCP:
		return rest >= wire.TCPMinLen && rest >= wire.TCP(data[off:]).HeaderLen()
	case wire.ProtoUDP:
		return rest >= wire.UDPLen
	case wire.ProtoICMP, wire.ProtoICMPv6:
		return rest >= wire.ICMPLen
	}
	return true
}
