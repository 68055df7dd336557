package nat

import (
	"net/netip"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// NAT64, as DPVS does it: an IPv6 VIP in front of IPv4 LIPs and real
// servers; and its mirror NAT46: an IPv4 VIP in front of IPv6 LIPs and real
// servers. A connection is NAT64 when its client tuple (Conn.in) is IPv6
// and its server tuple (Conn.out) IPv4, NAT46 the other way round;
// everything else about it (table, scheduler, ports, sequence offsets, TCP
// states, sync) is FULLNAT's.
//
// The translation is RFC 7915's stateless one for the header, with the
// addresses the connection gives: client6 -> VIP6 becomes LIP4 -> RIP4 and
// back (NAT64), client4 -> VIP4 becomes LIP6 -> RIP6 and back (NAT46). It
// is done in place, without moving the payload. An IPv6 packet becoming
// IPv4 (to4: NAT64's client packets, NAT46's server ones) has its IPv6
// header and the extension headers the parser walked (hop-by-hop,
// destination options, a routing header with no segments left: RFC 7915
// 5.1 drops them) replaced by a 20-byte IPv4 header that ends where the
// transport header starts, and the Ethernet header (and the virtio-net
// header in front of it) starts that much later in the buffer (Frame.Off
// grows). An IPv4 packet becoming IPv6 (to6: NAT64's server packets,
// NAT46's client ones) has its IPv4 header (options dropped, RFC 7915 4.1)
// replaced by the 40-byte IPv6 header, which grows into the reader's
// headroom (netstack.Headroom), as a TOA option does (Frame.open).
//
// The transport checksum is adjusted by the connection's delta, computed
// once (Conn.prepare): the pseudo-header's addresses change family, its
// length and protocol do not (the upper-layer length is the same number in
// both). The IPv4 header checksum is computed whole: it is 20 bytes.

// nat64 reports whether the connection translates IPv6 to IPv4.
func (c *Conn) nat64() bool { return wire.Is4(&c.out.src) && !wire.Is4(&c.in.src) }

// nat46 reports whether the connection translates IPv4 to IPv6.
func (c *Conn) nat46() bool { return !wire.Is4(&c.out.src) && wire.Is4(&c.in.src) }

// v4Side is the side of a NAT64 or NAT46 connection that is IPv4.
func (c *Conn) v4Side() Side {
	if wire.Is4(&c.in.src) {
		return ClientSide
	}
	return ServerSide
}

// toward is what a packet of c leaving by side is given: its source and
// destination addresses and ports, and the checksum change of its
// addresses (the connection's delta for that direction).
func (c *Conn) toward(side Side) (src, dst *addr16, sport, dport, ipDelta uint16) {
	if side == ServerSide {
		return &c.out.dst, &c.out.src, c.out.dport, c.out.sport, c.inIPDelta
	}
	return &c.in.dst, &c.in.src, c.in.dport, c.in.sport, c.outIPDelta
}

// replaceAddr adds to acc the change of replacing address old by new in a
// checksum: both 4 or 16 bytes (FULLNAT, csum.Replace), or one of each
// (NAT64, NAT46), where the words cannot be paired: the old ones' sum comes
// out (one's complement: its complement is added) and the new ones' goes in.
func replaceAddr(acc uint32, old, new []byte) uint32 {
	if len(old) == len(new) {
		return csum.Replace(acc, old, new)
	}
	return acc + uint32(^csum.Fold(csum.Sum(old, 0))) + uint32(csum.Fold(csum.Sum(new, 0)))
}

// vnetHere reports how many bytes of virtio-net header sit right before the
// frame in its buffer (the reader's layout, Frame.open's assumption): the
// header moves with the frame's start. A header kept elsewhere (a test's)
// stays where it is.
func (f *Frame) vnetHere() int {
	h := len(f.VNet)
	if h > 0 && f.Off >= h && &f.Buf[f.Off-h] == &f.VNet[0] {
		return h
	}
	return 0
}

// reframe makes the frame start at off in its buffer and be n bytes long,
// the virtio-net header moved along; the bytes of the frame are not moved
// (the caller writes the new headers, having read the old ones first).
// It reports false, changing nothing, when off leaves no room for the
// virtio-net header or the frame would pass the buffer's end.
func (f *Frame) reframe(off, n int) bool {
	h := f.vnetHere()
	if off-h < 0 || n < 0 || off+n > len(f.Buf) {
		return false
	}
	if h > 0 && off != f.Off {
		copy(f.Buf[off-h:off], f.VNet)
		f.VNet = f.Buf[off-h : off]
	}
	f.Off, f.Len = off, n
	return true
}

// The MSS across the translation. An MSS is what its sender accepts, so
// each SYN's bounds what the other side sends, and a translated packet is
// 20 bytes longer toward the IPv6 side and 20 shorter toward the IPv4 side
// than the one sent. For NAT64:
//
//   - The server's SYN-ACK MSS bounds the client's segments: 60 bytes of
//     IPv6 and TCP headers, 40 once translated to IPv4. They fit the server
//     side when the MSS is at most ServerMTU - 40; a server on that link
//     announces that already, so the clamp only catches a server that
//     announces more than the link carries.
//   - The client's SYN MSS bounds the server's segments: 40 bytes of
//     headers from the server, 60 once translated to IPv6. A client that
//     announces MTU - 60 of its own link is safe; one on a larger MTU than
//     tapvs's client side (or one that announces 1460 over IPv6) would get
//     segments 20 bytes too big once translated, with DF set by the server
//     and no fragmentation possible in IPv6 on the way. So the client's MSS
//     is clamped to the client side's MTU (ClientMTU) - 60. A segment that
//     is too big all the same (a server that ignores the MSS) meets the
//     check of every server packet (fits).
//
// NAT46 is the mirror: the client's segments grow (IPv4's 40 bytes of
// headers become IPv6's 60), so the server's SYN-ACK MSS is clamped to
// ServerMTU - 60, and an IPv4 client that announces 1460 (its own link's
// MTU - 40) would otherwise get IPv6 segments from the server that fit it
// once translated anyway: the server's segments shrink, and the client's
// MSS is clamped to ClientMTU - 40 only to keep a server on a larger link
// from sending more than the client side carries. In both, each side's
// clamp is its MTU less its family's IP header and TCP's 20 bytes
// (clientMSS, serverMSS, by the side's family).
//
// DPVS clamps neither for NAT64 as such: its tcp_out_adjust_mss takes the
// TOA option's length (20 for an IPv6 client) off every server SYN-ACK's
// MSS, which for NAT64 happens to leave the same 20 bytes, and leaves the
// client's SYN alone. tapvs clamps by the arithmetic above instead, less
// the TOA option's length or the PROXY header's length where the service
// adds one: the connection's rewriter clamps both SYNs (tcprw.Rewriter's
// MSSToServer and MSSToClient, set in newRewriter) in the walk that
// translates them.
func (b *Balancer) clientMSS(v4 bool) uint16 {
	return uint16(max(b.cfg.ClientMTU-ipHdrLen(v4)-wire.TCPMinLen, wire.IPv4MinMTU))
}

func (b *Balancer) serverMSS(v4 bool) uint16 {
	return uint16(max(b.cfg.ServerMTU-ipHdrLen(v4)-wire.TCPMinLen, wire.IPv4MinMTU))
}

// to4 translates an IPv6 packet of a NAT64 connection (a client's, client6
// -> VIP6, leaving as LIP4 -> RIP4) or of a NAT46 one (a server's, RIP6 ->
// LIP6, leaving as VIP4 -> client4) into IPv4, in place, for the side it
// leaves by (out), l4Delta being its transport checksum change (the
// connection's and any sequence change). p is left describing the IPv4
// packet at the frame's new start. RFC 7915 5.1: TOS is the traffic class,
// TTL the hop limit (tapvs does not decrement it: it is not a router for
// the packets it balances), ID 0, DF set past 1260 bytes (dfFor). The
// packet only shrinks, so it is not checked against the way out's MTU: as
// FULLNAT's, a packet past it (a side with the smaller MTU) leaves whole.
func (b *Balancer) to4(c *Conn, out Side, p *pkt, f *Frame, l4Delta uint16) Verdict {
	l4len := len(p.b) - p.l4
	gso := f.VNet.GSOType() &^ tun.VNetGSOECN
	if wire.IPv4MinLen+l4len > 0xffff || (gso != tun.VNetGSONone && gso != tun.VNetGSOTCPv6) {
		// A 64 KiB super-frame whose IPv4 total length would overflow,
		// or a UDP one (UFO) the kernel would cut into IPv4 fragments
		// that DF forbids.
		return b.Stats.drop(DropNAT64)
	}
	src, dst, sport, dport, ipDelta := c.toward(out)
	transport(p, sport, dport, ipDelta, l4Delta)
	ip6 := p.ip6()
	tc, hlim := ip6.TrafficClass(), ip6.HopLimit()
	d := p.l4 - wire.EtherLen - wire.IPv4MinLen // the IPv6 headers' bytes past 20
	if !f.reframe(f.Off+d, len(p.b)-d) {
		return b.Stats.drop(DropNAT64)
	}
	eth := wire.Ether(f.Bytes())
	eth.SetType(wire.EtherIPv4)
	putIPv4(wire.IPv4(eth.Payload()), tc, wire.IPv4MinLen+l4len, p.proto, hlim, src, dst, dfFor(wire.IPv4MinLen+l4len))
	if gso != tun.VNetGSONone {
		f.VNet.SetGSOType(tun.VNetGSOTCPv4)
		f.VNet.SetHdrLen(f.VNet.HdrLen() - uint16(d))
	}
	if f.VNet.NeedsCsum() {
		f.VNet.SetCsumStart(f.VNet.CsumStart() - d)
	}
	p.b, p.l3, p.l4, p.v6 = eth, wire.EtherLen, wire.EtherLen+wire.IPv4MinLen, false
	return Forward
}

// to6 translates an IPv4 packet of a NAT64 connection (a server's, RIP4 ->
// LIP4, leaving as VIP6 -> client6) or of a NAT46 one (a client's, client4
// -> VIP4, leaving as LIP6 -> RIP6) into IPv6, in place, for the side it
// leaves by (out); IPv4 options are dropped (RFC 7915 4.1). Traffic class
// is the TOS, the flow label 0, the hop limit the TTL. A UDP datagram
// without a checksum (0, allowed over IPv4) gets one computed over the
// whole datagram: IPv6 requires it (RFC 7915 4.5 leaves the choice between
// computing it and dropping; tapvs computes, as Linux's and Jool's
// translators do). The IPv6 header is longer than the IPv4 one it replaces:
// the frame grows into the headroom, or is dropped without it.
func (b *Balancer) to6(c *Conn, out Side, p *pkt, f *Frame, l4Delta uint16) Verdict {
	l4len := len(p.b) - p.l4
	gso := f.VNet.GSOType() &^ tun.VNetGSOECN
	d := wire.IPv6Len - (p.l4 - p.l3) // 20 less the IPv4 options' length
	if (gso != tun.VNetGSONone && gso != tun.VNetGSOTCPv4) || f.Off-d-f.vnetHere() < 0 {
		return b.Stats.drop(DropNAT64)
	}
	if v := b.fits(c, out, p, f, gso); v != Forward {
		return v
	}
	src, dst, sport, dport, ipDelta := c.toward(out)
	if udp := p.udp(); p.proto == wire.ProtoUDP && !p.partial && udp.Checksum() == 0 {
		udp.SetSrcPort(sport)
		udp.SetDstPort(dport)
		ul := udp.Length() // l4ok: 8 to l4len
		sum := csum.Checksum(udp[:ul], csum.PseudoV6(src[:], dst[:], wire.ProtoUDP, ul))
		if sum == 0 {
			sum = 0xffff // RFC 768: a computed 0 is sent as all ones
		}
		udp.SetChecksum(sum)
	} else {
		transport(p, sport, dport, ipDelta, l4Delta)
	}
	ip := p.ip4()
	tos, ttl := ip.TOS(), ip.TTL()
	if !f.reframe(f.Off-d, len(p.b)+d) {
		return b.Stats.drop(DropNAT64)
	}
	eth := wire.Ether(f.Bytes())
	eth.SetType(wire.EtherIPv6)
	putIPv6(wire.IPv6(eth.Payload()), tos, l4len, p.proto, ttl, src, dst)
	if gso != tun.VNetGSONone {
		f.VNet.SetGSOType(tun.VNetGSOTCPv6)
		f.VNet.SetHdrLen(uint16(int(f.VNet.HdrLen()) + d))
	}
	if f.VNet.NeedsCsum() {
		f.VNet.SetCsumStart(f.VNet.CsumStart() + d)
	}
	p.b, p.l3, p.l4, p.v6 = eth, wire.EtherLen, wire.EtherLen+wire.IPv6Len, true
	return Forward
}

// fits checks that an IPv4 packet of a NAT64 connection (a server's) or a
// NAT46 one (a client's), translated, fits the MTU of the side it leaves
// by (out): IPv4's 20-byte header becomes IPv6's 40 bytes (options
// dropped), and an IPv6 hop never fragments. A TSO super-frame is checked
// by the segments it will be cut into. One too big is dropped and counted
// (nat64_too_big); with DF set the translator answers as a router on the
// way would (RFC 7915 section 4, RFC 1191): a fragmentation needed to the
// sender with the next-hop MTU that fits, so that its path MTU toward the
// LIP (the VIP) drops by 20 and it sends again smaller. Without DF the
// packet becomes IPv6 fragments (RFC 7915 4.1's SHOULD) when it is a
// NAT46 client's (not a TSO super-frame: xlatFit marks it, and refragment
// cuts it as it leaves); a NAT64 server's is dropped, as before: a
// server's stack sets DF on what fits its path (Linux's PMTU discovery, on
// by default), so such a packet is one it already fragments itself. A
// datagram reassembled from IPv4 fragments passes: it leaves as IPv6
// fragments (frag.go). The packet's
// addresses and ports are untouched until here (to6 rewrites nothing
// before): the quote is what its sender sent, but for a NAT46 client's TCP
// sequence number, which fragNeeded gives back.
func (b *Balancer) fits(c *Conn, out Side, p *pkt, f *Frame, gso uint8) Verdict {
	n := wire.IPv6Len + len(p.b) - p.l4
	if gso == tun.VNetGSOTCPv4 {
		n = min(n, wire.IPv6Len+p.tcp().HeaderLen()+int(f.VNet.GSOSize()))
	}
	if n <= b.mtu(out) || f.reasm != 0 {
		return Forward
	}
	if p.ip4().FragField()&wire.IPv4DF == 0 {
		if gso == tun.VNetGSONone {
			// A NAT46 client's or a NAT64 server's: cut into IPv6
			// fragments as it leaves, as RFC 7915 4.1 says (xlatFit
			// marks it for refragment).
			return b.xlatFit(out.other(), f, p)
		}
		b.Stats.drops[DropNAT64TooBig].Add(1)
		return Drop
	}
	b.Stats.drops[DropNAT64TooBig].Add(1)
	return b.fragNeeded(c, out.other(), p, f)
}

// icmpTTL is the TTL of an ICMP error tapvs makes itself (Linux's
// default).
const icmpTTL = 64

// fragNeeded rewrites an IPv4 packet that fits found too big into an
// ICMPv4 fragmentation needed back to its sender on side from (a NAT64
// server, from the LIP it was sent to; a NAT46 client, from the VIP),
// quoting its IPv4 header and first 8 bytes of transport (RFC 792: the
// ports, and a TCP sequence number the sender's stack checks: a NAT46
// client's was translated already, and goes back to its own). The next-hop
// MTU is the largest IPv4 packet that fits the other side once translated.
func (b *Balancer) fragNeeded(c *Conn, from Side, p *pkt, f *Frame) Verdict {
	const at = wire.EtherLen + wire.IPv4MinLen + wire.ICMPLen // where the quote goes
	qlen := p.l4 - p.l3 + quotedL4
	if len(p.b) < at+qlen { // cannot be: the packet is larger than an MTU
		return Drop
	}
	if from == ClientSide && p.proto == wire.ProtoTCP {
		tcp := p.tcp()
		tcp.SetSeq(quotedSeq(c, ServerSide, tcp.Seq()))
	}
	copy(p.b[at:at+qlen], p.b[p.l3:p.l3+qlen]) // overlapping: copy moves
	eth := p.eth()
	mac := b.cfg.ServerMAC
	if from == ClientSide {
		mac = b.cfg.ClientMAC
	}
	eth.SetMACs(eth.Src(), mac[:]) // back to the sender's next hop
	eth.SetType(wire.EtherIPv4)
	ip := wire.IPv4(eth.Payload())
	src, dst, _, _, _ := c.toward(from)
	putIPv4(ip, 0, wire.IPv4MinLen+wire.ICMPLen+qlen, wire.ProtoICMP, icmpTTL, src, dst, false)
	ic := wire.ICMP(ip[wire.IPv4MinLen : wire.IPv4MinLen+wire.ICMPLen+qlen])
	ic.SetType(wire.ICMP4Unreach)
	ic.SetCode(wire.ICMP4FragNeeded)
	ic.SetChecksum(0)
	ic.SetRest(uint32(b.mtu(from.other()) - (wire.IPv6Len - wire.IPv4MinLen)))
	ic.SetChecksum(csum.Checksum(ic, 0))
	f.reframe(f.Off, at+qlen) // shorter, in place: cannot fail
	f.plain()
	return Reply
}

// The rules of a NAT64 service (rules.go): its server side is one family.
// Everything a service can have, a NAT64 one can: SYNPROXY (the cookie
// handshake with the IPv6 client, the SYN to the server in IPv4), TOA and
// PROXY headers (in the client's family: toa.go, proxy.go).

// outAddr is one of a service's LIPs or real servers as the Tx leaves
// them (invalid: none), for the family of its server side.
func (tx *Tx) outAddr(s *Service) netip.Addr {
	if ls := tx.LocalAddrs(s); len(ls) > 0 {
		return ls[0].Addr
	}
	if ds := tx.Dests(s); len(ds) > 0 {
		return ds[0].Addr
	}
	return netip.Addr{}
}

// checkServerSide is checkFamily for a LIP or real server a being added to
// s in the Tx.
func (tx *Tx) checkServerSide(s *Service, a netip.Addr) error {
	return checkFamily(s, a, tx.outAddr(s))
}
