package nat

import (
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/frag"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// Fragments to a VIP (client side) and to a LIP (server side: a real
// server's replies) are reassembled (package frag, bounded as Linux's
// ipfrag_high_thresh and ipfrag_time), and the whole datagram takes the
// path any other packet takes: matched, rewritten, checksums updated over
// the whole. On its way out it is cut again, as Linux forwards a datagram
// netfilter reassembled (ip_do_fragment with frag_max_size): fragments no
// longer than the largest that came in, nor than the way out's MTU
// (Config.ServerMTU, Config.ClientMTU). tapvs is the source of the rewritten
// datagram (the LIP toward a server, the VIP toward a client), so it gives
// it an identification of its own: the client's would not be unique among
// the datagrams of all clients from one LIP. IPv4 fragments leave without
// DF (a fragment with DF set is dropped by nobody and means nothing once
// reassembled; Linux would answer a fragmentation needed when the largest
// fragment passes the MTU: tapvs cuts it to the MTU instead). IPv6 fragments
// carry a Fragment header: tapvs, as the datagram's source on that side,
// may fragment it (RFC 8200 4.5). The fragments leave in the reader's
// batch where the datagram would have (Frame.Frags), behind the frames
// read before it, and a fault's delay line does not hold them.

// fragDrops is the drop reason of each of the reassembler's refusals.
var fragDrops = [frag.NumReasons]DropReason{
	frag.Overlap:   DropFragOverlap,
	frag.Duplicate: DropFragDuplicate,
	frag.Tiny:      DropFragTiny,
	frag.TooBig:    DropFragTooBig,
	frag.Memory:    DropFragMemory,
	frag.Source:    DropFragSource,
	frag.TooMany:   DropFragTooMany,
	frag.Malformed: DropFragMalformed,
	frag.Timeout:   DropFragTimeout,
}

// reassemble takes a fragment to a VIP or LIP. When it completes its
// datagram, the datagram replaces it in f (the reader's buffer holds 64 KiB
// past its headroom), p is parsed anew and whole is true; otherwise the
// fragment is held (Stolen) or dropped.
func (b *Balancer) reassemble(side Side, p *pkt, f *Frame) (v Verdict, whole bool) {
	if b.frags == nil {
		return b.Stats.drop(DropFragment), false
	}
	res, info, _ := b.frags.AddFrom(p.b[p.l3:], f.Buf[f.Off+wire.EtherLen:], b.table.now.Load(), fragFrom(side, p.eth().Src()))
	switch res {
	case frag.Held:
		return Stolen, false
	case frag.Dropped:
		return Drop, false // counted by the reassembler (Stats.fragCount)
	}
	f.Len = wire.EtherLen + info.Len
	f.plain()
	if info.MaxFrag < info.Len {
		f.reasm, f.reasm6 = info.MaxFrag, wire.IPv6(f.Buf[f.Off+wire.EtherLen:]).Version() == 6
		b.quoteIfBig(f, info.DF)
	}
	// else no larger than its largest fragment (an IPv6 atomic fragment,
	// whose size counts no Fragment header): it goes on as a packet that
	// came whole, so a translator sizes it as one (20 bytes, not 28).
	// Wherever the largest fragment fitted, it fits.
	*p = pkt{}
	if isIP, bad := parseIP(f.Bytes(), p); !isIP || bad || p.frag {
		return b.Stats.drop(DropFragMalformed), false
	}
	return 0, true
}

// quoteIfBig keeps the start of the reassembled datagram in f, as it came
// (f.orig), if it may have to be answered to its sender (IPv6, IPv4 with
// DF): whether its largest fragment fits the way out is known once it is
// translated or not (refragment).
func (b *Balancer) quoteIfBig(f *Frame, df bool) {
	if f.reasm6 || df {
		o := origQuotes.Get().(*origQuote)
		o.n = copy(o.b[:], f.Bytes())
		f.orig = o
	}
}

// FragMark is a reassembled datagram's mark as package handoff carries it
// to another instance: the largest fragment's IP length in the low 16 bits
// and, in bit 16, whether the fragments were IPv6 (MarkBits bits in all);
// 0 for a datagram that came whole.
type FragMark uint32

// MarkBits is how many low bits of a FragMark are used: the others are 0.
const MarkBits = 17

const markV6 = 1 << 16

func markOf(n int, v6 bool) FragMark {
	m := FragMark(n)
	if v6 {
		m |= markV6
	}
	return m
}

// handedMark gives a datagram another instance reassembled and handed
// over (f.Mark), p, the mark reassemble would have given it here, so it
// leaves cut as it would have there. p is the datagram as it came there,
// reassembled and not rewritten; a mark of no length is none.
//
// The peer is outside input, its mark too: one no reassembly could have
// given this datagram is refused (Drop), as a frame whose virtio-net
// header is not the zeros reassembly leaves (a partial checksum would
// never be finished once cut), a family other than the datagram's own,
// or fragments too small to have carried it in MaxFragments (a mark of 28
// on a 60 KB segment would have it cut into thousands of frames).
func (b *Balancer) handedMark(p *pkt, f *Frame) Verdict {
	n := int(f.Mark & 0xffff)
	if n == 0 {
		return Forward
	}
	v6 := f.Mark&markV6 != 0
	per := n - fragLen(v6) // the data one fragment carried, at most
	if v6 != p.v6 || f.VNet.NeedsCsum() || f.VNet.GSOType() != tun.VNetGSONone || per < 8 || per*frag.MaxFragments < len(p.b)-p.l4 {
		return b.Stats.drop(DropHandoffMark)
	}
	f.reasm, f.reasm6 = n, v6
	b.quoteIfBig(f, !p.v6 && p.ip4().FragField()&wire.IPv4DF != 0)
	return Forward
}

// sweepFrags gives up the datagrams whose time is up.
func (b *Balancer) sweepFrags(now int64) { b.frags.Sweep(now) }

// FragmentBytes is what the fragments held for reassembly are charged,
// within Config.Reassembly.MaxBytes.
func (b *Balancer) FragmentBytes() int64 {
	if b.frags == nil {
		return 0
	}
	return b.frags.Bytes()
}

// Reassembled counts the datagrams made whole from fragments.
func (b *Balancer) Reassembled() uint64 {
	if b.frags == nil {
		return 0
	}
	return b.frags.Reassembled()
}

// Fragments are the frames a reassembled datagram is cut into for its way
// out (Frame.Frags), in one buffer from a pool: a datagram cut allocates
// nothing once the pool holds buffers as large as it takes.
type Fragments struct {
	buf    []byte
	frames [][]byte
	refs   int  // writes in flight (Hold, Done)
	spent  bool // Release came while writes were in flight
}

// Frames are the fragments in order, each a virtio-net header (zeros: full
// checksums, no segmentation) and the frame.
func (fs *Fragments) Frames() [][]byte { return fs.frames }

// Holds reports whether frame is one of Frames (or its tail: the frame
// behind a shorter virtio-net header): every frame is cut from one buffer
// and runs to its end.
func (fs *Fragments) Holds(frame []byte) bool {
	c, b := cap(frame), cap(fs.buf)
	return c > 0 && b > 0 && &frame[:c][c-1] == &fs.buf[:b][b-1]
}

// Hold and Done are for a writer that sends the frames after it returns
// (an io_uring ring): Hold as it queues a frame's write, Done as the write
// completes; the buffers go back at the later of Release and the last
// Done. The reader, the ring and the writes are one goroutine.
func (fs *Fragments) Hold() { fs.refs++ }

// Done: see Hold.
func (fs *Fragments) Done() {
	if fs.refs--; fs.refs == 0 && fs.spent {
		fs.put()
	}
}

// Release gives the buffers back once the fragments are written (or, with
// writes held, once the last is done); fs is not to be used after.
func (fs *Fragments) Release() {
	if fs.refs > 0 {
		fs.spent = true
		return
	}
	fs.put()
}

func (fs *Fragments) put() {
	fs.frames, fs.spent = fs.frames[:0], false
	fragOuts.Put(fs)
}

var fragOuts = sync.Pool{New: func() any { return new(Fragments) }}

// icmpBufs are the buffers an ICMP error tapvs answers a datagram with is
// built in (tooBig, timeExceeded): a virtio-net header, the Ethernet
// header and IPv6's minimum MTU.
var icmpBufs = sync.Pool{New: func() any {
	b := make([]byte, tun.VNetHdrLen+wire.EtherLen+wire.IPv6MinMTU)
	return &b
}}

// origQuote is the start of a reassembled datagram as it came (Frame.orig).
type origQuote struct {
	b [142]byte // the Ethernet header and 128 bytes
	n int
}

var origQuotes = sync.Pool{New: func() any { return new(origQuote) }}

// mtu is side's MTU.
func (b *Balancer) mtu(side Side) int {
	if side == ServerSide {
		return b.cfg.ServerMTU
	}
	return b.cfg.ClientMTU
}

// frag6HdrLen is an IPv6 Fragment header's length.
const frag6HdrLen = 8

// fragLen is what the headers of a fragment take in a family: IPv4's
// 20-byte header, IPv6's 40 and its 8-byte Fragment header.
func fragLen(v6 bool) int {
	if v6 {
		return wire.IPv6Len + frag6HdrLen
	}
	return wire.IPv4MinLen
}

// fragDelta is how much longer a fragment of the same data is in family
// out6 than in family in6: 28 bytes shorter from IPv6 to IPv4 (a NAT64
// client's fragments), 28 longer from IPv4 to IPv6 (a NAT64 server's, a
// NAT46 client's), 0 in one family.
func fragDelta(in6, out6 bool) int { return fragLen(out6) - fragLen(in6) }

// refragment cuts a reassembled datagram that v sends out for its way out
// and sends the fragments by the Link; one that fits is sent whole. The
// fragments are no longer than the way out's MTU nor than the largest
// fragment that came in, as long as it is in the family it leaves in
// (fragDelta: the mark says which family the fragments came in). A
// datagram forwarded whose largest fragment would not fit the other side,
// IPv6 or IPv4 with DF, is answered as Linux answers it (ip6_forward,
// ip_forward with frag_max_size): a Packet Too Big or a fragmentation
// needed to its sender, with the MTU in the sender's family, and dropped.
//
// It is family-agnostic: a translator (NAT64 here, NAT46) has nothing to
// do for a reassembled datagram but translate it, as Process calls this
// on the way out; for a packet that came whole, it calls xlatFit.
func (b *Balancer) refragment(side Side, v Verdict, f *Frame) Verdict {
	o := f.orig
	if o != nil {
		f.orig = nil
		defer origQuotes.Put(o)
	}
	if v != Forward && v != Reply {
		return v
	}
	out := side
	if v == Forward {
		out = side.other()
	}
	frame := f.Bytes()
	ip := frame[wire.EtherLen:]
	delta := fragDelta(f.reasm6, wire.IPv6(ip).Version() == 6)
	mtu := b.mtu(out)
	if o != nil && v == Forward && f.reasm+delta > mtu {
		return b.tooBig(side, o.b[:o.n], mtu-delta)
	}
	mtu = min(mtu, f.reasm+delta)
	if len(ip) <= mtu {
		return v
	}
	if f.VNet.NeedsCsum() {
		// A packet that came whole with its transport checksum left to
		// be finished (a client on this host; xlatFit marked it to be
		// cut): the fragments leave with full checksums, so it is
		// finished here, over the whole datagram.
		f.VNet.FinishChecksum(frame)
		f.plain()
	}
	s, ok := frag.NewSplitter(ip, mtu, b.fragID.Add(1))
	if !ok {
		return b.Stats.drop(DropFragNoRoom)
	}
	n, size := s.Count()
	per := tun.VNetHdrLen + wire.EtherLen + size
	fs := fragOuts.Get().(*Fragments)
	if len(fs.buf) < n*per {
		fs.buf = make([]byte, n*per) // kept by the pool for the next
	}
	for i := range n {
		buf := fs.buf[i*per : (i+1)*per]
		clear(buf[:tun.VNetHdrLen]) // full checksums, no segmentation
		copy(buf[tun.VNetHdrLen:], frame[:wire.EtherLen])
		at := tun.VNetHdrLen + wire.EtherLen
		fs.frames = append(fs.frames, buf[:at+s.Next(buf[at:])])
	}
	f.Frags = fs
	return v
}

// xlatFit is what a translator calls for a packet p of frame f that came
// whole from side (not a TSO super-frame) and that it is about to
// translate into the other family, before rewriting anything. NAT46 calls
// it for a client packet without DF (fits, nat64.go, answers one with DF
// itself, its quote's sequence number the client's own). One that fits the way
// out translated (IPv4 to IPv6: 20 bytes longer; IPv6 to IPv4: 20
// shorter), or that was reassembled (refragment fits it), goes on
// (Forward). One that does not is treated as a router between the
// families would (RFC 7915 section 4): IPv4 without DF is marked to be
// cut into fragments of the other family as it leaves (refragment); IPv4
// with DF or IPv6 is answered with a fragmentation needed or a Packet Too
// Big whose MTU is the way out's in the sender's family (20 less, 20
// more), and dropped.
func (b *Balancer) xlatFit(side Side, f *Frame, p *pkt) Verdict {
	grow := wire.IPv6Len - wire.IPv4MinLen
	if p.v6 {
		grow = -grow
	}
	mtu := b.mtu(side.other())
	if f.reasm != 0 || len(p.b)-p.l3+grow <= mtu {
		return Forward
	}
	if !p.v6 && p.ip4().FragField()&wire.IPv4DF == 0 {
		// As if it had come as one fragment as large as a datagram
		// may be: cut to the MTU in the family it leaves in.
		f.reasm, f.reasm6 = frag.MaxDatagram, false
		return Forward
	}
	return b.tooBig(side, p.b[:min(len(p.b), p.l3+len(origQuote{}.b)-wire.EtherLen)], mtu-grow)
}

// tooBig answers a datagram, whose start as it came is orig (its
// Ethernet header and at least the IP header and 8 bytes), with a
// fragmentation needed (IPv4) or a Packet Too Big (IPv6) for mtu, in the
// sender's family, from the address it was sent to (the VIP or the LIP:
// tapvs's own), back out of side. RFC 792 and RFC 4443 3.2: the quote is
// the IP header and the first 8 bytes of the transport (IPv4), as much as
// orig holds (IPv6).
func (b *Balancer) tooBig(side Side, orig []byte, mtu int) Verdict {
	in := orig[wire.EtherLen:]
	typ, code, rest := wire.ICMP4Unreach, wire.ICMP4FragNeeded, uint32(mtu)
	if wire.IPv6(in).Version() == 6 {
		typ, code, rest = wire.ICMP6TooBig, 0, uint32(max(mtu, wire.IPv6MinMTU))
	}
	bp := icmpBufs.Get().(*[]byte)
	defer icmpBufs.Put(bp)
	buf := *bp
	clear(buf[:tun.VNetHdrLen]) // full checksums, no segmentation
	n := b.icmpError(buf[tun.VNetHdrLen:], side, wire.Ether(orig).Src(), in, typ, code, rest)
	b.link.Send(side, buf[:tun.VNetHdrLen+n])
	return b.Stats.drop(DropFragPathMTU)
}

// icmpError writes into buf (icmpBufs' size) an ICMP error of type typ
// and code code (ICMPv6's for an IPv6 in) with rest its 4 bytes after the
// checksum, about in (a datagram's start as it came), from the address it
// was sent to (the VIP or the LIP: tapvs's own) back to its sender, whose
// MAC is dst, out of side; it returns the frame's length. The quote is, as
// Linux's: the IP header and the first 8 bytes of the transport for IPv4
// (RFC 792), as much of in as fits IPv6's minimum MTU for IPv6 (RFC 4443
// 2.4).
func (b *Balancer) icmpError(buf []byte, side Side, dst []byte, in []byte, typ, code uint8, rest uint32) int {
	mac := b.cfg.ClientMAC
	if side == ServerSide {
		mac = b.cfg.ServerMAC
	}
	eth := wire.Ether(buf)
	eth.SetMACs(dst, mac[:])
	if wire.IPv6(in).Version() == 6 {
		eth.SetType(wire.EtherIPv6)
		src := wire.IPv6(in)
		q := min(len(in), wire.IPv6MinMTU-wire.IPv6Len-wire.ICMPLen)
		ic := wire.ICMP(eth[wire.EtherLen+wire.IPv6Len : wire.EtherLen+wire.IPv6Len+wire.ICMPLen+q])
		wire.IPv6(eth[wire.EtherLen:]).Put(len(ic), wire.ProtoICMPv6, icmpTTL, src.Dst(), src.Src())
		copy(ic[wire.ICMPLen:], in[:q])
		ic.SetType(typ)
		ic.SetCode(code)
		ic.SetChecksum(0)
		ic.SetRest(rest)
		ic.SetChecksum(csum.Checksum(ic, csum.PseudoV6(src.Dst(), src.Src(), wire.ProtoICMPv6, len(ic))))
		return wire.EtherLen + wire.IPv6Len + len(ic)
	}
	eth.SetType(wire.EtherIPv4)
	src := wire.IPv4(in)
	q := min(len(in), src.HeaderLen()+quotedL4)
	ic := wire.ICMP(eth[wire.EtherLen+wire.IPv4MinLen : wire.EtherLen+wire.IPv4MinLen+wire.ICMPLen+q])
	wire.IPv4(eth[wire.EtherLen:]).Put(&wire.IPv4Fields{TotalLen: wire.IPv4MinLen + len(ic), TTL: icmpTTL, Protocol: wire.ProtoICMP, Src: [4]byte(src.Dst()), Dst: [4]byte(src.Src())})
	copy(ic[wire.ICMPLen:], in[:q])
	ic.SetType(typ)
	ic.SetCode(code)
	ic.SetChecksum(0)
	ic.SetRest(rest)
	ic.SetChecksum(csum.Checksum(ic, 0))
	return wire.EtherLen + wire.IPv4MinLen + len(ic)
}

// TimeExceededRate bounds the ICMP time exceeded messages sent for
// datagrams given up, all sources together, a second: fragments with a
// forged source that never complete must not make tapvs a reflector.
const TimeExceededRate = 100

// fragFrom is what the reassembler keeps with a first fragment for
// timeExceeded: the side it came in on (bit 56), and its sender's MAC
// (macOf: the low 49 bits).
func fragFrom(side Side, mac []byte) uint64 {
	return uint64(side)<<fromSideShift | macOf([6]byte(mac))
}

const fromSideShift = 56

// timeExceeded answers a datagram given up at its timeout whose first
// fragment, first, came (package frag calls it: Config.Expired), as
// Linux's ip_expire and ip6_expire do: an ICMP time exceeded, fragment
// reassembly time exceeded (type 11 code 1; ICMPv6 type 3 code 1), from
// the address the fragments were sent to, back out of the side they came
// in on to the MAC they came from, quoting the first fragment. At most
// TimeExceededRate a second leave; the others, and any to a source no
// host has (a multicast, broadcast or unspecified address), are counted
// as not sent.
func (b *Balancer) timeExceeded(first []byte, from uint64) {
	var a netip.Addr
	typ := wire.ICMP4TimeEx
	if wire.IPv6(first).Version() == 6 {
		a, typ = netip.AddrFrom16([16]byte(wire.IPv6(first).Src())), wire.ICMP6TimeEx
	} else {
		a = netip.AddrFrom4([4]byte(wire.IPv4(first).Src()))
	}
	if a.IsMulticast() || a.IsUnspecified() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		!b.timeExBucket.Take(time.Unix(0, b.table.now.Load())) {
		b.Stats.fragTimeExNotSent.Add(1)
		return
	}
	side, mac := Side(from>>fromSideShift), macBytes(from)
	bp := icmpBufs.Get().(*[]byte)
	defer icmpBufs.Put(bp)
	n := b.icmpError(*bp, side, mac[:], first, typ, fragTimeExCode, 0)
	b.link.Transmit(side, (*bp)[:n])
	b.Stats.fragTimeEx.Add(1)
}

// fragTimeExCode is the code of a time exceeded for a datagram not
// reassembled in time, in ICMP and ICMPv6 alike.
const fragTimeExCode = 1

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}
