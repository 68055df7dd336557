package nat

import (
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// ICMP errors (destination unreachable, fragmentation needed, time exceeded,
// parameter problem) quote the packet that caused them. When that packet
// belongs to a FULLNAT connection, the peer on the other side must get the
// error about the packet it sent, not about the rewritten one: the quoted
// header is translated back and the error is sent across with the outer
// addresses of that side. Errors are rare, so checksums are recomputed here
// rather than kept as deltas.
func (b *Balancer) icmp(side Side, p *pkt, f *Frame) Verdict {
	ic := p.icmp()
	switch ic.Type() {
	case wire.ICMP4Unreach, wire.ICMP4TimeEx, wire.ICMP4Param:
	default:
		return Pass // echo and friends are the stack's
	}
	if !p.checked && csum.Checksum(ic, 0) != 0 {
		// Its checksum is computed again on the way out: a corrupted
		// error would leave as a valid one.
		return b.Stats.drop(DropBadChecksum)
	}
	q := wire.IPv4(ic.Payload()) // the quoted IP header and at least 8 bytes of its payload
	if len(q) < wire.IPv4MinLen || q.Version() != 4 {
		return b.Stats.drop(DropMalformed)
	}
	qihl := q.HeaderLen()
	if qihl < wire.IPv4MinLen || len(q) < qihl+quotedL4 {
		return b.Stats.drop(DropMalformed)
	}
	qproto := q.Protocol()
	if qproto != wire.ProtoTCP && qproto != wire.ProtoUDP {
		return Pass
	}
	ql4 := wire.TCP(q.Payload()) // TCP or UDP: the ports are at the same offsets
	// The quoted packet went the other way: its source is our side of the
	// connection, its destination the peer that complains.
	key := tupleKey{
		src: wire.In16(q.Dst()), dst: wire.In16(q.Src()),
		sport: ql4.DstPort(), dport: ql4.SrcPort(),
		proto: Protocol(qproto),
	}
	c := b.table.lookup(&key)
	if c == nil {
		if side == ServerSide {
			return Pass // may be about the stack's own connection from a LIP
		}
		return b.Stats.drop(DropICMPNoConn)
	}
	xlat := c.nat64() || c.nat46()
	if xlat && side != c.v4Side() {
		// A peer on the IPv6 side quoting the IPv4 side's tuple: not a
		// packet it was ever sent.
		return b.Stats.drop(DropICMPNoConn)
	}
	to, v := b.icmpPeer(c, side, p.eth())
	if v != Forward {
		return v
	}
	if xlat {
		return b.icmp4to6(c, side, to, p, f) // NAT64, NAT46: the peer hears over IPv6 (icmp64.go)
	}

	// The quoted transport checksum, if quoted, moves with its pseudo-header.
	d := csum.Replace(0, q.Src(), wire.In4(to.qSrc))
	d = csum.Replace(d, q.Dst(), wire.In4(to.qDst))
	requote(c, side, ql4, qproto, to.qSport, to.qDport, d)
	copy(q.Src(), wire.In4(to.qSrc))
	copy(q.Dst(), wire.In4(to.qDst))
	q.SetChecksum(0)
	q.SetChecksum(csum.Checksum(q[:qihl], 0))

	ip := p.ip4()
	copy(ip.Src(), wire.In4(to.outerSrc))
	copy(ip.Dst(), wire.In4(to.outerDst))
	ip.SetChecksum(0)
	ip.SetChecksum(csum.Checksum(ip[:p.l4-p.l3], 0))
	ic.SetChecksum(0)
	ic.SetChecksum(csum.Checksum(ic, 0))
	f.Len = len(p.b)
	f.plain()
	return Forward
}

// quotedL4 is how much of the transport header an ICMP error quotes at
// least (RFC 792): the ports, and TCP's sequence number.
const quotedL4 = 8

// icmpTo is where an ICMP error about a connection goes: the outer
// addresses it leaves with, and the addresses and ports of the quoted
// packet as the peer that hears it sent it.
type icmpTo struct {
	outerSrc, outerDst, qSrc, qDst *addr16
	qSport, qDport                 uint16
}

// icmpPeer is icmp's and icmp6's choice of the peer on the other side of
// connection c from side, e addressed to it. The verdict is Forward, or a
// drop while the server side's next hop is not resolved.
func (b *Balancer) icmpPeer(c *Conn, side Side, e wire.Ether) (icmpTo, Verdict) {
	if side == ClientSide {
		// The client complains about VIP -> client; the server sent RIP -> LIP.
		mac := c.dest.mac.Load()
		if mac == 0 {
			b.link.Resolve(c.dest)
			return icmpTo{}, b.Stats.drop(DropNoNeighbor)
		}
		b.toServer(e, mac)
		return icmpTo{&c.out.dst, &c.out.src, &c.out.src, &c.out.dst, c.out.sport, c.out.dport}, Forward
	}
	// A server or router complains about LIP -> RIP; the client sent
	// client -> VIP, and hears from the VIP.
	b.toClient(e, c)
	return icmpTo{&c.in.dst, &c.in.src, &c.in.src, &c.in.dst, c.in.sport, c.in.dport}, Forward
}

// requote turns the quoted transport header ql4 (as much of it as is
// quoted, at least 8 bytes) of protocol proto into the one its sender sent:
// ports sport -> dport, the sequence number as quotedSeq says for an error
// from side, and its checksum adjusted by acc (the pseudo-header's change)
// plus those changes.
func requote(c *Conn, side Side, ql4 wire.TCP, proto uint8, sport, dport uint16, acc uint32) {
	acc = csum.Replace16(acc, ql4.SrcPort(), sport)
	acc = csum.Replace16(acc, ql4.DstPort(), dport)
	if proto == wire.ProtoTCP {
		// The quoted sequence number is the one its sender's peer saw: a
		// stack matches an error to its connection by it (Linux ignores
		// one outside what it has in flight), so it goes back to the
		// sender's own.
		if seq := ql4.Seq(); quotedSeq(c, side, seq) != seq {
			acc = csum.Put32At(acc, ql4, wire.TCPSeqOff, quotedSeq(c, side, seq))
		}
	}
	if off := l4csumOff(proto); len(ql4) >= off+2 {
		if proto == wire.ProtoUDP {
			csum.AdjustUDP(ql4[off:], csum.Fold(acc))
		} else {
			csum.Adjust(ql4[off:], csum.Fold(acc))
		}
	}
	ql4.SetSrcPort(sport)
	ql4.SetDstPort(dport)
}

// quotedSeq is the sequence number the sender of the segment an ICMP
// error from side quotes gave it, seq being what tapvs sent on: a server's
// error quotes a client segment (shifted by the client's offset, and by a
// PROXY header's length unless the segment carried the header: both go
// back to the client's first byte), a client's error a server segment
// (shifted by SYNPROXY's).
func quotedSeq(c *Conn, side Side, seq uint32) uint32 {
	if c.sp == nil {
		if side == ServerSide {
			return c.rw.Load().ClientAck(seq)
		}
		return seq
	}
	if !c.sp.Established() {
		return seq // the offsets are fixed, and read lock-free, only once established
	}
	if side == ServerSide {
		return c.sp.ClientAck(seq)
	}
	return seq - c.sp.Offsets().Server
}
