package nat

import (
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// ICMP errors about a NAT64 or NAT46 connection's packets cross families
// (RFC 7915 4.2, 5.2). For NAT64: an ICMPv4 error from the server side
// about LIP4 -> RIP4 becomes an ICMPv6 error from the VIP to the client
// about the packet the client sent (client6 -> VIP6, its own ports and
// sequence number), and an ICMPv6 error from the client about VIP6 ->
// client6 an ICMPv4 error from the LIP to the real server about RIP4 ->
// LIP4. NAT46 is the mirror: an ICMPv6 error from the server side about
// LIP6 -> RIP6 becomes an ICMPv4 error from the VIP to the client about
// client4 -> VIP4, and an ICMPv4 error from the client about VIP4 ->
// client4 an ICMPv6 error from the LIP to the real server about RIP6 ->
// LIP6. Only the errors a balancer meets are translated: unreachables,
// Packet Too Big / fragmentation needed (path MTU discovery must work
// through tapvs), time exceeded; the rest (parameter problems, whose
// pointer would need the header mapped field by field, and codes with no
// counterpart) are dropped and counted as icmp_untranslatable.
//
// The quoted packet is translated like its outer one, but its transport
// header is usually cut short: its checksum is adjusted, not computed. The
// quoted transport bytes stay where they are in the buffer, and the headers
// in front of them are written anew: the frame's start moves (Frame.reframe).
// An ICMPv6 error is no longer than 1280 bytes (RFC 4443 2.4): the quote is
// cut to fit.

const (
	// icmp6Room is what goes in front of the quoted transport header of
	// an ICMPv6 error: Ethernet, IPv6, ICMPv6 and the quoted IPv6 header.
	icmp6Room = wire.EtherLen + wire.IPv6Len + wire.ICMPLen + wire.IPv6Len
	// icmp4Room is the same for an ICMPv4 error.
	icmp4Room = wire.EtherLen + wire.IPv4MinLen + wire.ICMPLen + wire.IPv4MinLen
	// icmp6MaxQuote is the most quoted transport bytes an ICMPv6 error
	// of at most wire.IPv6MinMTU bytes carries.
	icmp6MaxQuote = wire.IPv6MinMTU - (icmp6Room - wire.EtherLen)
)

// icmp4to6 translates an ICMPv4 error (p, checked by icmp: a quoted IPv4
// header and 8 bytes of TCP or UDP) from side, the IPv4 side of NAT64 or
// NAT46 connection c, into an ICMPv6 error to the peer on the other side
// (to, from icmpPeer, whose MACs p's Ethernet header has).
func (b *Balancer) icmp4to6(c *Conn, side Side, to icmpTo, p *pkt, f *Frame) Verdict {
	ic := p.icmp()
	t6, c6, field, ok := wire.ICMP4to6(ic.Type(), ic.Code(), ic.MTU4())
	if !ok {
		return b.Stats.drop(DropICMPXlat)
	}
	q := wire.IPv4(ic.Payload())
	qihl := q.HeaderLen()
	qtotal := q.TotalLen()
	if qtotal < qihl {
		return b.Stats.drop(DropMalformed)
	}
	ql4 := wire.TCP(q.Payload())
	tlen := min(len(ql4), icmp6MaxQuote)
	qAt := f.Off + p.l4 + wire.ICMPLen + qihl // the quoted transport header, in f.Buf
	start := qAt - icmp6Room
	if start-f.vnetHere() < 0 {
		return b.Stats.drop(DropNAT64)
	}
	qproto := q.Protocol()
	// The quote (NAT64: LIP4:lport -> RIP4:rport) goes back to what the
	// peer sent (client6:cport -> VIP6:vport).
	acc := replaceAddr(0, q.Src(), to.qSrc[:])
	acc = replaceAddr(acc, q.Dst(), to.qDst[:])
	requote(c, side, ql4, qproto, to.qSport, to.qDport, acc)
	ip := p.ip4()
	tos, ttl := ip.TOS(), ip.TTL()
	qtos, qttl := q.TOS(), q.TTL()
	macs := [2 * 6]byte(p.eth())
	f.reframe(start, icmp6Room+tlen) // cannot fail: the room was checked, the end does not move out
	eth := wire.Ether(f.Bytes())
	copy(eth, macs[:])
	eth.SetType(wire.EtherIPv6)
	ip6 := wire.IPv6(eth.Payload())
	putIPv6(ip6, tos, wire.ICMPLen+wire.IPv6Len+tlen, wire.ProtoICMPv6, ttl, to.outerSrc, to.outerDst)
	ic6 := wire.ICMP(ip6.Payload())
	ic6.SetType(t6)
	ic6.SetCode(c6)
	ic6.SetChecksum(0)
	ic6.SetRest(field)
	putIPv6(wire.IPv6(ic6.Payload()), qtos, qtotal-qihl, qproto, qttl, to.qSrc, to.qDst)
	ic6.SetChecksum(csum.Checksum(ic6, csum.PseudoV6(to.outerSrc[:], to.outerDst[:], wire.ProtoICMPv6, len(ic6))))
	f.plain()
	return Forward
}

// icmp6to4 translates an ICMPv6 error (p, checked by icmp6: a quoted IPv6
// packet whose headers w walked, and 8 bytes of TCP or UDP) from side, the
// IPv6 side of NAT64 or NAT46 connection c, into an ICMPv4 error to the
// peer on the other side (to, from icmpPeer, whose MACs p's Ethernet
// header has).
func (b *Balancer) icmp6to4(c *Conn, side Side, to icmpTo, p *pkt, f *Frame, w wire.Ext6) Verdict {
	ic := p.icmp()
	t4, c4, mtu, ok := wire.ICMP6to4(ic.Type(), ic.Code(), ic.MTU6(), b.mtu(side.other()))
	if !ok {
		return b.Stats.drop(DropICMPXlat)
	}
	q := wire.IPv6(ic.Payload())
	// The quoted IPv4 packet's length: the IPv6 payload less the
	// extension headers the translation drops.
	qlen := wire.IPv4MinLen + q.PayloadLen() - (w.L4 - wire.IPv6Len)
	if qlen < wire.IPv4MinLen {
		return b.Stats.drop(DropMalformed)
	}
	qlen = min(qlen, 0xffff)
	ql4 := wire.TCP(q[w.L4:])
	qAt := f.Off + p.l4 + wire.ICMPLen + w.L4
	start := qAt - icmp4Room // always later than the frame's start: IPv6's headers are longer
	// The quote (NAT64: VIP6:vport -> client6:cport) goes back to what
	// the peer sent (RIP4:rport -> LIP4:lport).
	acc := replaceAddr(0, q.Src(), wire.In4(to.qSrc))
	acc = replaceAddr(acc, q.Dst(), wire.In4(to.qDst))
	requote(c, side, ql4, w.Proto, to.qSport, to.qDport, acc)
	ip6 := p.ip6()
	tos, ttl := ip6.TrafficClass(), ip6.HopLimit()
	qtos, qttl := q.TrafficClass(), q.HopLimit()
	tlen := len(ql4)
	macs := [2 * 6]byte(p.eth())
	f.reframe(start, icmp4Room+tlen)
	eth := wire.Ether(f.Bytes())
	copy(eth, macs[:])
	eth.SetType(wire.EtherIPv4)
	ip := wire.IPv4(eth.Payload())
	total := wire.IPv4MinLen + wire.ICMPLen + wire.IPv4MinLen + tlen
	putIPv4(ip, tos, total, wire.ProtoICMP, ttl, to.outerSrc, to.outerDst, dfFor(total))
	ic4 := wire.ICMP(ip.Payload())
	ic4.SetType(t4)
	ic4.SetCode(c4)
	ic4.SetRest(uint32(mtu)) // unused 0s, or fragmentation needed's next-hop MTU
	// The quote is the peer's own packet, as Linux sends it: with DF.
	putIPv4(wire.IPv4(ic4.Payload()), qtos, qlen, w.Proto, qttl, to.qSrc, to.qDst, true)
	ic4.SetChecksum(0)
	ic4.SetChecksum(csum.Checksum(ic4, 0))
	f.plain()
	return Forward
}

// putIPv6 writes an IPv6 header at b: traffic class tc, flow label 0.
func putIPv6(b wire.IPv6, tc uint8, plen int, next, hlim uint8, src, dst *addr16) {
	b.Put(plen, next, hlim, src[:], dst[:])
	b.SetTrafficClass(tc)
}

// dfFor is DF for a translated packet of total bytes (RFC 7915 5.1): set
// past 1260 bytes only. A smaller packet may be fragmented on the IPv4
// side, since the IPv6 client cannot be told to send less than 1280 bytes
// (1260 once translated): with DF it would never get through a narrower
// IPv4 hop.
func dfFor(total int) bool { return total > wire.IPv6MinMTU-(wire.IPv6Len-wire.IPv4MinLen) }

// putIPv4 writes a 20-byte IPv4 header at b with its checksum, ID 0 and
// DF if df.
func putIPv4(b wire.IPv4, tos uint8, total int, proto, ttl uint8, src, dst *addr16, df bool) {
	var flags uint16
	if df {
		flags = wire.IPv4DF
	}
	b.Put(&wire.IPv4Fields{TOS: tos, TotalLen: total, Flags: flags, TTL: ttl, Protocol: proto, Src: [4]byte(wire.In4(src)), Dst: [4]byte(wire.In4(dst))})
}
