package nat

import (
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// icmp6 is icmp for IPv6: an ICMPv6 error about a FULLNAT connection's
// packet goes to the peer on the other side, about the packet that peer
// sent. A Packet Too Big from the server side's path reaches the client
// with its MTU unchanged (both sides have the same header size), so path
// MTU discovery works through tapvs. Everything else (echo, neighbour
// discovery, MLD) is the stack's. The quoted packet is cut short by its
// sender (an error fits 1280 bytes), so only its headers are read, each
// length checked first; the ICMPv6 checksum, which covers the outer
// addresses, is computed again.
func (b *Balancer) icmp6(side Side, p *pkt, f *Frame) Verdict {
	ic := p.icmp()
	switch ic.Type() {
	case wire.ICMP6Unreach, wire.ICMP6TooBig, wire.ICMP6TimeEx, wire.ICMP6ParamErr:
	default:
		return Pass
	}
	if !p.checked && csum.Checksum(ic, p.pseudo(wire.ProtoICMPv6, len(ic))) != 0 {
		// Its checksum is computed again on the way out: a corrupted
		// error would leave as a valid one.
		return b.Stats.drop(DropBadChecksum)
	}
	q := wire.IPv6(ic.Payload()) // the quoted IPv6 header, its extension headers, 8 bytes of transport
	if len(q) < wire.IPv6Len || q.Version() != 6 {
		return b.Stats.drop(DropMalformed)
	}
	w := wire.Walk6(q, q.NextHeader(), wire.IPv6Len)
	if w.Bad || w.Ext || w.Frag || len(q) < w.L4+quotedL4 || wire.Mapped4(q.Src()) || wire.Mapped4(q.Dst()) {
		return b.Stats.drop(DropMalformed)
	}
	if w.Proto != wire.ProtoTCP && w.Proto != wire.ProtoUDP {
		return Pass
	}
	ql4 := wire.TCP(q[w.L4:]) // TCP or UDP: the ports are at the same offsets
	// The quoted packet went the other way: its source is our side of the
	// connection, its destination the peer that complains.
	key := tupleKey{
		src: addr16(q.Dst()), dst: addr16(q.Src()),
		sport: ql4.DstPort(), dport: ql4.SrcPort(),
		proto: Protocol(w.Proto),
	}
	c := b.table.lookup(&key)
	if c == nil {
		if side == ServerSide {
			return Pass // may be about the stack's own connection from a LIP
		}
		return b.Stats.drop(DropICMPNoConn)
	}
	if (c.nat64() || c.nat46()) && side == c.v4Side() {
		// A peer on the IPv4 side quoting the IPv6 side's tuple: not a
		// packet it was ever sent.
		return b.Stats.drop(DropICMPNoConn)
	}
	to, v := b.icmpPeer(c, side, p.eth())
	if v != Forward {
		return v
	}
	if wire.Is4(to.qSrc) {
		// NAT64 from the client, NAT46 from the server: the peer hears
		// over IPv4 (icmp64.go).
		return b.icmp6to4(c, side, to, p, f, w)
	}

	// The quoted transport checksum, if quoted, moves with its pseudo-header.
	d := csum.Replace(0, q.Src(), to.qSrc[:])
	d = csum.Replace(d, q.Dst(), to.qDst[:])
	requote(c, side, ql4, w.Proto, to.qSport, to.qDport, d)
	copy(q.Src(), to.qSrc[:])
	copy(q.Dst(), to.qDst[:])

	ip := p.ip6()
	copy(ip.Src(), to.outerSrc[:])
	copy(ip.Dst(), to.outerDst[:])
	ic.SetChecksum(0)
	ic.SetChecksum(csum.Checksum(ic, p.pseudo(wire.ProtoICMPv6, len(ic))))
	f.Len = len(p.b)
	f.plain()
	return Forward
}
