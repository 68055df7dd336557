package nat

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/csum"
)

// ICMPv6 error types (RFC 4443 2.1): the ones that quote a packet.
const (
	icmp6Unreach  = 1
	icmp6TooBig   = 2
	icmp6TimeEx   = 3
	icmp6ParamErr = 4
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
	ic := p.b[p.l4:]
	switch ic[0] {
	case icmp6Unreach, icmp6TooBig, icmp6TimeEx, icmp6ParamErr:
	default:
		return Pass
	}
	if !p.checked && csum.Checksum(ic, p.pseudo(protoICMPv6, len(ic))) != 0 {
		// Its checksum is computed again on the way out: a corrupted
		// error would leave as a valid one.
		return b.Stats.drop(DropBadChecksum)
	}
	q := ic[icmpHdrLen:] // the quoted IPv6 header, its extension headers, 8 bytes of transport
	if len(q) < ipv6HdrLen || q[0]>>4 != 6 {
		return b.Stats.drop(DropMalformed)
	}
	w := walk6(q, q[6], ipv6HdrLen)
	if w.bad || w.ext || w.frag || len(q) < w.l4+8 || mapped4(q[8:24]) || mapped4(q[24:40]) {
		return b.Stats.drop(DropMalformed)
	}
	if w.proto != protoTCP && w.proto != protoUDP {
		return Pass
	}
	ql4 := q[w.l4:]
	// The quoted packet went the other way: its source is our side of the
	// connection, its destination the peer that complains.
	key := tupleKey{
		src: addr16(q[24:40]), dst: addr16(q[8:24]),
		sport: binary.BigEndian.Uint16(ql4[2:]), dport: binary.BigEndian.Uint16(ql4[0:]),
		proto: Protocol(w.proto),
	}
	c := b.table.lookup(&key)
	if c == nil {
		if side == ServerSide {
			return Pass // may be about the stack's own connection from a LIP
		}
		return b.Stats.drop(DropICMPNoConn)
	}
	var outerSrc, outerDst, qSrc, qDst *addr16
	var qSport, qDport uint16
	if side == ClientSide {
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
		outerSrc, outerDst = &c.in.dst, &c.in.src
		qSrc, qDst, qSport, qDport = &c.in.src, &c.in.dst, c.in.sport, c.in.dport
		copy(p.b[0:6], c.clientMAC[:])
		copy(p.b[6:12], b.cfg.ClientMAC[:])
	}
	if is4(qSrc) {
		if side == ClientSide && c.nat64() {
			return b.icmp6to4(c, p, f, w) // NAT64: the server hears over IPv4 (icmp64.go)
		}
		return b.Stats.drop(DropICMPNoConn) // NAT46 is not built
	}

	// The quoted transport checksum, if quoted, moves with its pseudo-header.
	d := csum.Replace(0, q[8:24], qSrc[:])
	d = csum.Replace(d, q[24:40], qDst[:])
	d = csum.Replace16(d, binary.BigEndian.Uint16(ql4[0:]), qSport)
	d = csum.Replace16(d, binary.BigEndian.Uint16(ql4[2:]), qDport)
	if w.proto == protoTCP {
		if seq := binary.BigEndian.Uint32(ql4[4:]); quotedSeq(c, side, seq) != seq {
			d = csum.Put32At(d, ql4, 4, quotedSeq(c, side, seq))
		}
	}
	if off := l4csumOff(w.proto); len(ql4) >= off+2 {
		if w.proto == protoUDP {
			csum.AdjustUDP(ql4[off:], csum.Fold(d))
		} else {
			csum.Adjust(ql4[off:], csum.Fold(d))
		}
	}
	copy(q[8:24], qSrc[:])
	copy(q[24:40], qDst[:])
	binary.BigEndian.PutUint16(ql4[0:], qSport)
	binary.BigEndian.PutUint16(ql4[2:], qDport)

	copy(p.b[p.l3+8:p.l3+24], outerSrc[:])
	copy(p.b[p.l3+24:p.l3+40], outerDst[:])
	ic[2], ic[3] = 0, 0
	binary.BigEndian.PutUint16(ic[2:], csum.Checksum(ic, p.pseudo(protoICMPv6, len(ic))))
	f.Len = len(p.b)
	f.plain()
	return Forward
}
