package nat

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/csum"
)

// ICMP errors (destination unreachable, fragmentation needed, time exceeded,
// parameter problem) quote the packet that caused them. When that packet
// belongs to a FULLNAT connection, the peer on the other side must get the
// error about the packet it sent, not about the rewritten one: the quoted
// header is translated back and the error is sent across with the outer
// addresses of that side. Errors are rare, so checksums are recomputed here
// rather than kept as deltas.
func (b *Balancer) icmp(side Side, p *pkt, f *Frame) Verdict {
	ic := p.b[p.l4:]
	switch ic[0] {
	case icmpUnreach, icmpTimeEx, icmpParam:
	default:
		return Pass // echo and friends are the stack's
	}
	if !p.checked && csum.Checksum(ic, 0) != 0 {
		// Its checksum is computed again on the way out: a corrupted
		// error would leave as a valid one.
		return b.Stats.drop(DropBadChecksum)
	}
	q := ic[icmpHdrLen:] // the quoted IP header and at least 8 bytes of its payload
	if len(q) < ipv4MinLen || q[0]>>4 != 4 {
		return b.Stats.drop(DropMalformed)
	}
	qihl := int(q[0]&0x0f) * 4
	if qihl < ipv4MinLen || len(q) < qihl+8 {
		return b.Stats.drop(DropMalformed)
	}
	qproto := q[9]
	if qproto != protoTCP && qproto != protoUDP {
		return Pass
	}
	ql4 := q[qihl:]
	// The quoted packet went the other way: its source is our side of the
	// connection, its destination the peer that complains.
	key := tupleKey{
		src: v4in16(q[16:20]), dst: v4in16(q[12:16]),
		sport: binary.BigEndian.Uint16(ql4[2:]), dport: binary.BigEndian.Uint16(ql4[0:]),
		proto: Protocol(qproto),
	}
	c := b.table.lookup(&key)
	if c == nil {
		if side == ServerSide {
			return Pass // may be about the stack's own connection from a LIP
		}
		return b.Stats.drop(DropICMPNoConn)
	}
	if c.nat64() {
		return b.icmp4to6(c, side, p, f) // NAT64: the client hears over IPv6 (icmp64.go)
	}
	var outerSrc, outerDst, qSrc, qDst *addr16
	var qSport, qDport uint16
	if side == ClientSide {
		// The client complains about VIP -> client; the server sent RIP -> LIP.
		mac := c.dest.mac.Load()
		if mac == 0 {
			b.link.Resolve(c.dest)
			return b.Stats.drop(DropNoNeighbor)
		}
		outerSrc, outerDst = &c.out.dst, &c.out.src
		qSrc, qDst, qSport, qDport = &c.out.src, &c.out.dst, c.out.sport, c.out.dport
		putMAC(p.b[0:6], mac)
		copy(p.b[6:12], b.cfg.ServerMAC[:])
	} else {
		// A server or router complains about LIP -> RIP; the client sent
		// client -> VIP, and hears from the VIP.
		outerSrc, outerDst = &c.in.dst, &c.in.src
		qSrc, qDst, qSport, qDport = &c.in.src, &c.in.dst, c.in.sport, c.in.dport
		copy(p.b[0:6], c.clientMAC[:])
		copy(p.b[6:12], b.cfg.ClientMAC[:])
	}

	// The quoted transport checksum, if quoted, moves with its pseudo-header.
	d := csum.Replace(0, q[12:16], qSrc[12:])
	d = csum.Replace(d, q[16:20], qDst[12:])
	d = csum.Replace16(d, binary.BigEndian.Uint16(ql4[0:]), qSport)
	d = csum.Replace16(d, binary.BigEndian.Uint16(ql4[2:]), qDport)
	if qproto == protoTCP {
		// The quoted sequence number is the one its sender's peer saw: a
		// stack matches an error to its connection by it (Linux ignores
		// one outside what it has in flight), so it goes back to the
		// sender's own.
		if seq := binary.BigEndian.Uint32(ql4[4:]); quotedSeq(c, side, seq) != seq {
			d = csum.Put32At(d, ql4, 4, quotedSeq(c, side, seq))
		}
	}
	if off := l4csumOff(qproto); len(ql4) >= off+2 {
		if qproto == protoUDP {
			csum.AdjustUDP(ql4[off:], csum.Fold(d))
		} else {
			csum.Adjust(ql4[off:], csum.Fold(d))
		}
	}
	copy(q[12:16], qSrc[12:])
	copy(q[16:20], qDst[12:])
	binary.BigEndian.PutUint16(ql4[0:], qSport)
	binary.BigEndian.PutUint16(ql4[2:], qDport)
	q[10], q[11] = 0, 0
	binary.BigEndian.PutUint16(q[10:], csum.Checksum(q[:qihl], 0))

	ip := p.b[p.l3:p.l4]
	copy(ip[12:16], outerSrc[12:])
	copy(ip[16:20], outerDst[12:])
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
	ic[2], ic[3] = 0, 0
	binary.BigEndian.PutUint16(ic[2:], csum.Checksum(ic, 0))
	f.Len = len(p.b)
	f.plain()
	return Forward
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
