package nat

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/csum"
)

// ICMP errors about a NAT64 connection's packets cross families (RFC 7915
// 4.2, 5.2): an ICMPv4 error from the server side about LIP4 -> RIP4
// becomes an ICMPv6 error from the VIP to the client about the packet the
// client sent (client6 -> VIP6, its own ports and sequence number), and an
// ICMPv6 error from the client about VIP6 -> client6 an ICMPv4 error from
// the LIP to the real server about RIP4 -> LIP4. Only the errors a
// balancer meets are translated: unreachables, Packet Too Big /
// fragmentation needed (path MTU discovery must work through tapvs), time
// exceeded; the rest (parameter problems, whose pointer would need the
// header mapped field by field, and codes with no counterpart) are dropped
// and counted as icmp_untranslatable.
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
	icmp6Room = ethHdrLen + ipv6HdrLen + icmpHdrLen + ipv6HdrLen
	// icmp4Room is the same for an ICMPv4 error.
	icmp4Room = ethHdrLen + ipv4MinLen + icmpHdrLen + ipv4MinLen
	// icmp6MaxQuote is the most quoted transport bytes an ICMPv6 error
	// of at most nat64MinMTU bytes carries.
	icmp6MaxQuote = nat64MinMTU - (icmp6Room - ethHdrLen)
)

// icmp4to6Type maps an ICMPv4 error's type and code (and a fragmentation
// needed's next-hop MTU) to ICMPv6's (RFC 7915 4.2) with its 32-bit field:
// a Packet Too Big's MTU, a parameter problem's pointer. ok is false for
// what has no counterpart.
func icmp4to6Type(typ, code uint8, mtu uint16) (t6, c6 uint8, field uint32, ok bool) {
	switch typ {
	case icmpUnreach:
		switch code {
		case 0, 1, 5, 6, 7, 8, 11, 12: // net, host, source route failed, unknown, isolated, for TOS
			return icmp6Unreach, 0, 0, true // no route to destination
		case 2: // protocol unreachable: the next header field (byte 6) is not understood
			return icmp6ParamErr, 1, 6, true
		case 3:
			return icmp6Unreach, 4, 0, true // port unreachable
		case 4:
			// Fragmentation needed: the IPv6 packet is 20 bytes longer
			// than the IPv4 one that did not fit; a router too old to say
			// (MTU 0) or a tiny MTU gives IPv6's minimum.
			return icmp6TooBig, 0, max(uint32(mtu)+ipv6HdrLen-ipv4MinLen, nat64MinMTU), true
		case 9, 10, 13: // administratively prohibited
			return icmp6Unreach, 1, 0, true
		}
	case icmpTimeEx:
		if code <= 1 { // TTL exceeded in transit, reassembly time exceeded
			return icmp6TimeEx, code, 0, true
		}
	}
	return 0, 0, 0, false
}

// icmp6to4Type maps an ICMPv6 error's type, code and 32-bit field (a Packet
// Too Big's MTU) to ICMPv4's (RFC 7915 5.2) with the 16-bit field of a
// fragmentation needed (the next-hop MTU), maxMTU being the IPv4 side's.
func icmp6to4Type(typ, code uint8, field uint32, maxMTU int) (t4, c4 uint8, mtu uint16, ok bool) {
	switch typ {
	case icmp6Unreach:
		switch code {
		case 0, 2, 3: // no route, beyond scope, address unreachable
			return icmpUnreach, 1, 0, true // host unreachable
		case 1:
			return icmpUnreach, 10, 0, true // communication administratively prohibited
		case 4:
			return icmpUnreach, 3, 0, true // port unreachable
		}
	case icmp6TooBig:
		// The IPv4 packet is 20 bytes shorter than the IPv6 one that did
		// not fit, and no longer than the server side's link carries.
		m := min(max(int64(field)-(ipv6HdrLen-ipv4MinLen), ipv4MinMTU), int64(maxMTU), 0xffff)
		return icmpUnreach, 4, uint16(m), true
	case icmp6TimeEx:
		if code <= 1 {
			return icmpTimeEx, code, 0, true
		}
	case icmp6ParamErr:
		if code == 1 { // unrecognized next header
			return icmpUnreach, 2, 0, true // protocol unreachable
		}
	}
	return 0, 0, 0, false
}

// quote64 turns the quoted transport header ql4 (as much of it as is
// quoted, at least 8 bytes) of protocol proto into the one its sender sent:
// ports sport -> dport, the sequence number as quotedSeq says for an error
// from side, and its checksum adjusted by acc (the pseudo-header's change)
// plus those changes.
func quote64(c *Conn, side Side, ql4 []byte, proto uint8, sport, dport uint16, acc uint32) {
	acc = csum.Replace16(acc, binary.BigEndian.Uint16(ql4[0:]), sport)
	acc = csum.Replace16(acc, binary.BigEndian.Uint16(ql4[2:]), dport)
	if proto == protoTCP {
		if seq := binary.BigEndian.Uint32(ql4[4:]); quotedSeq(c, side, seq) != seq {
			acc = csum.Put32At(acc, ql4, 4, quotedSeq(c, side, seq))
		}
	}
	if off := l4csumOff(proto); len(ql4) >= off+2 {
		if proto == protoUDP {
			csum.AdjustUDP(ql4[off:], csum.Fold(acc))
		} else {
			csum.Adjust(ql4[off:], csum.Fold(acc))
		}
	}
	binary.BigEndian.PutUint16(ql4[0:], sport)
	binary.BigEndian.PutUint16(ql4[2:], dport)
}

// icmp4to6 translates an ICMPv4 error (p, checked by icmp: a quoted IPv4
// header and 8 bytes of TCP or UDP) about NAT64 connection c's server
// packet into an ICMPv6 error from the VIP to the client.
func (b *Balancer) icmp4to6(c *Conn, side Side, p *pkt, f *Frame) Verdict {
	if side != ServerSide {
		// A client quoting the server side's tuple: not a packet the
		// client was ever sent.
		return b.Stats.drop(DropICMPNoConn)
	}
	ic := p.b[p.l4:]
	t6, c6, field, ok := icmp4to6Type(ic[0], ic[1], binary.BigEndian.Uint16(ic[6:]))
	if !ok {
		return b.Stats.drop(DropICMPXlat)
	}
	q := ic[icmpHdrLen:]
	qihl := int(q[0]&0x0f) * 4
	qtotal := int(binary.BigEndian.Uint16(q[2:]))
	if qtotal < qihl {
		return b.Stats.drop(DropMalformed)
	}
	ql4 := q[qihl:]
	tlen := min(len(ql4), icmp6MaxQuote)
	qAt := f.Off + p.l4 + icmpHdrLen + qihl // the quoted transport header, in f.Buf
	start := qAt - icmp6Room
	if start-f.vnetHere() < 0 {
		return b.Stats.drop(DropNAT64)
	}
	qproto := q[9]
	// The quote, LIP4:lport -> RIP4:rport, goes back to what the client
	// sent: client6:cport -> VIP6:vport.
	acc := replaceAddr(0, q[12:16], c.in.src[:])
	acc = replaceAddr(acc, q[16:20], c.in.dst[:])
	quote64(c, side, ql4, qproto, c.in.sport, c.in.dport, acc)
	tos, ttl := p.b[p.l3+1], p.b[p.l3+8]
	qtos, qttl := q[1], q[8]
	f.reframe(start, icmp6Room+tlen) // cannot fail: the room was checked, the end does not move out
	fb := f.Bytes()
	copy(fb[0:6], c.clientMAC[:])
	copy(fb[6:12], b.cfg.ClientMAC[:])
	binary.BigEndian.PutUint16(fb[12:], etherIPv6)
	ip6 := fb[ethHdrLen:]
	putIPv6(ip6, tos, icmpHdrLen+ipv6HdrLen+tlen, protoICMPv6, ttl, &c.in.dst, &c.in.src)
	ic6 := ip6[ipv6HdrLen:]
	ic6[0], ic6[1], ic6[2], ic6[3] = t6, c6, 0, 0
	binary.BigEndian.PutUint32(ic6[4:], field)
	putIPv6(ic6[icmpHdrLen:], qtos, qtotal-qihl, qproto, qttl, &c.in.src, &c.in.dst)
	binary.BigEndian.PutUint16(ic6[2:], csum.Checksum(ic6, csum.PseudoV6(c.in.dst[:], c.in.src[:], protoICMPv6, len(ic6))))
	f.plain()
	return Forward
}

// icmp6to4 translates an ICMPv6 error from the client (p, checked by
// icmp6: a quoted IPv6 packet whose headers w walked, and 8 bytes of TCP
// or UDP) about NAT64 connection c's packet to it into an ICMPv4 error
// from the LIP to the real server.
func (b *Balancer) icmp6to4(c *Conn, p *pkt, f *Frame, w ext6) Verdict {
	ic := p.b[p.l4:]
	t4, c4, mtu, ok := icmp6to4Type(ic[0], ic[1], binary.BigEndian.Uint32(ic[4:]), b.cfg.ServerMTU)
	if !ok {
		return b.Stats.drop(DropICMPXlat)
	}
	mac := c.dest.mac.Load()
	if mac == 0 {
		b.link.Resolve(c.dest)
		return b.Stats.drop(DropNoNeighbor)
	}
	q := ic[icmpHdrLen:]
	// The quoted IPv4 packet's length: the IPv6 payload less the
	// extension headers the translation drops.
	qlen := ipv4MinLen + int(binary.BigEndian.Uint16(q[4:])) - (w.l4 - ipv6HdrLen)
	if qlen < ipv4MinLen {
		return b.Stats.drop(DropMalformed)
	}
	qlen = min(qlen, 0xffff)
	ql4 := q[w.l4:]
	qAt := f.Off + p.l4 + icmpHdrLen + w.l4
	start := qAt - icmp4Room // always later than the frame's start: IPv6's headers are longer
	// The quote, VIP6:vport -> client6:cport, goes back to what the
	// server sent: RIP4:rport -> LIP4:lport.
	acc := replaceAddr(0, q[8:24], c.out.src[12:])
	acc = replaceAddr(acc, q[24:40], c.out.dst[12:])
	quote64(c, ClientSide, ql4, w.proto, c.out.sport, c.out.dport, acc)
	ip6 := p.b[p.l3:]
	tos, ttl := ip6[0]<<4|ip6[1]>>4, ip6[7]
	qtos, qttl := q[0]<<4|q[1]>>4, q[7]
	tlen := len(ql4)
	f.reframe(start, icmp4Room+tlen)
	fb := f.Bytes()
	putMAC(fb[0:6], mac)
	copy(fb[6:12], b.cfg.ServerMAC[:])
	binary.BigEndian.PutUint16(fb[12:], etherIPv4)
	ip := fb[ethHdrLen:]
	putIPv4(ip, tos, ipv4MinLen+icmpHdrLen+ipv4MinLen+tlen, protoICMP, ttl, &c.out.dst, &c.out.src, dfFor(ipv4MinLen+icmpHdrLen+ipv4MinLen+tlen))
	ic4 := ip[ipv4MinLen:]
	ic4[0], ic4[1] = t4, c4
	binary.BigEndian.PutUint32(ic4[4:], uint32(mtu)) // unused 0s, or fragmentation needed's next-hop MTU
	// The quote is the server's own packet, as Linux sends it: with DF.
	putIPv4(ic4[icmpHdrLen:], qtos, qlen, w.proto, qttl, &c.out.src, &c.out.dst, true)
	ic4[2], ic4[3] = 0, 0
	binary.BigEndian.PutUint16(ic4[2:], csum.Checksum(ic4, 0))
	f.plain()
	return Forward
}

// putIPv6 writes an IPv6 header at b: traffic class, flow label 0.
func putIPv6(b []byte, tc uint8, plen int, next, hlim uint8, src, dst *addr16) {
	binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(tc)<<20)
	binary.BigEndian.PutUint16(b[4:], uint16(plen))
	b[6], b[7] = next, hlim
	copy(b[8:24], src[:])
	copy(b[24:40], dst[:])
}

// dfFor is DF for a translated packet of total bytes (RFC 7915 5.1): set
// past 1260 bytes only. A smaller packet may be fragmented on the IPv4
// side, since the IPv6 client cannot be told to send less than 1280 bytes
// (1260 once translated): with DF it would never get through a narrower
// IPv4 hop.
func dfFor(total int) bool { return total > nat64MinMTU-20 }

// putIPv4 writes a 20-byte IPv4 header at b with its checksum, ID 0 and
// DF if df.
func putIPv4(b []byte, tos uint8, total int, proto, ttl uint8, src, dst *addr16, df bool) {
	b[0], b[1] = 0x45, tos
	binary.BigEndian.PutUint16(b[2:], uint16(total))
	var flags uint32
	if df {
		flags = ipFlagDF
	}
	binary.BigEndian.PutUint32(b[4:], flags)
	b[8], b[9], b[10], b[11] = ttl, proto, 0, 0
	copy(b[12:16], src[12:])
	copy(b[16:20], dst[12:])
	binary.BigEndian.PutUint16(b[10:], csum.Checksum(b[:ipv4MinLen], 0))
}
