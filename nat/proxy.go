package nat

import (
	"net/netip"
	"sync/atomic"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/proxyhdr"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcprw"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// PROXY protocol for TCP services (ClientAddrProxyV1, ClientAddrProxyV2).
//
// The header is a byte string fixed per connection (the client's
// address:port and the VIP:port) that takes the first n sequence numbers
// of the client's stream as the server sees it: [S, S+n), S being the
// server-space number of the client's first byte (its ISN + 1 plus the
// connection's offset). Every client byte moves forward by n.
//
// Which segments carry it. Every client segment that starts at the
// client's first byte (client-space seq == ISN + 1, no SYN or RST): the
// ACK that completes the handshake, the first data or a FIN sent before
// any, and every retransmission of them. Such a segment leaves with the
// header in front of its payload and seq S. The bytes are the same every
// time, so a server that has them already trims the overlap as TCP does;
// and a lost header is sent again by whatever the client sends again: a
// lost handshake ACK makes the server repeat its SYN-ACK, which the
// client answers with an ACK at ISN + 1 (under SYNPROXY, where tapvs made
// the server's handshake itself, tapvs re-sends that ACK: proxyResend);
// lost first data is retransmitted at ISN + 1. The header goes out right
// after the handshake, with no client data needed (a server that speaks
// first gets it before its banner), and before anything the client
// sends: a client's own PROXY header is data after tapvs's, never read as
// one.
//
// Acknowledgements come back through tcprw.ClientEdge: an ack of part
// of the header is one of nothing (ISN + 1), SACK blocks within it are
// taken out (tcprw.ClientSACK). The header's numbers, each segment's place
// against them and the MSS less its length are the connection's rewriter's
// (tcprw.Rewriter: Insert, Start, Past), applied in the one walk that
// translates the segment.
//
// MSS. A full-sized first segment plus the header must still fit the
// server side's MTU, so the MSS the client learns is n less: the server's,
// on its SYN-ACK, for a plain connection; SYNPROXY's own in the cookie
// SYN-ACK. A client may send more than it was told (its own choice, or an
// MSS it learnt elsewhere): a segment that the header would take past the
// server side's MTU loses as many bytes from its end, which the client
// sends again when the server's ack leaves them out, as it would after a
// loss. A TSO super-frame takes the header as payload and the kernel
// segments it by its gso_size as before; one whose IP length would pass
// 65535 loses as many bytes from its end too.

// proxyConn is a connection's PROXY header. It is set before the
// connection is published. Where the header goes in the server's stream,
// and whether the server has acknowledged it, are the connection's
// rewriter's (tcprw.Rewriter: Insert, Start, Past; its place decides each
// client segment's).
type proxyConn struct {
	hdr [proxyhdr.MaxV1]byte
	n   uint32
	// ack is, under SYNPROXY, the header-carrying handshake ACK tapvs
	// released to the server (a virtio-net header and the frame), sent
	// again when the server repeats its SYN-ACK.
	ack atomic.Pointer[[]byte]
}

// sawAck notes a server's acknowledgement (ack, in the server's numbers)
// on c, whose rewriter r is: one at or past the header's end, and not half
// the number space away, publishes the rewriter with Past set.
func (c *Conn) sawAck(r *tcprw.Rewriter, ack uint32) {
	if r.Acked(ack) {
		c.editRewriter(func(r *tcprw.Rewriter) bool {
			if !r.Acked(ack) {
				return false
			}
			r.Flags |= tcprw.Past
			return true
		})
	}
}

// proxyRoom is the headroom a held frame of a PROXY connection keeps for
// its header (Frame.open).
const proxyRoom = proxyhdr.MaxV1

// proxyHeader writes the PROXY header of a connection in (client ->
// VIP) in mode into b (at least proxyhdr.MaxV1 long) and returns its
// length, 0 for a mode that has none.
func proxyHeader(mode ClientAddr, in *tupleKey, b []byte) int {
	// The keys' 16-byte form: proxyhdr writes an IPv4 header for a pair of
	// mapped (::ffff:a.b.c.d) addresses and an IPv6 one otherwise.
	src := netip.AddrPortFrom(netip.AddrFrom16(in.src), in.sport)
	dst := netip.AddrPortFrom(netip.AddrFrom16(in.dst), in.dport)
	switch {
	case in.proto != TCP:
		return 0
	case mode == ClientAddrProxyV1:
		return proxyhdr.V1(b, src, dst)
	case mode == ClientAddrProxyV2:
		return proxyhdr.V2(b, proxyhdr.Stream, src, dst)
	}
	return 0
}

// proxyLen is the length of that header (0: none), for the MSS of a
// SYN-ACK made before any connection.
func proxyLen(mode ClientAddr, in *tupleKey) uint16 {
	if mode != ClientAddrProxyV1 && mode != ClientAddrProxyV2 {
		return 0
	}
	var b [proxyhdr.MaxV1]byte
	return uint16(proxyHeader(mode, in, b[:]))
}

// newProxyConn is the PROXY header of a new TCP connection c of a
// service in mode, or nil for a mode without a header.
func newProxyConn(mode ClientAddr, c *Conn) *proxyConn {
	if mode != ClientAddrProxyV1 && mode != ClientAddrProxyV2 {
		return nil
	}
	pp := &proxyConn{}
	pp.n = uint32(proxyHeader(mode, &c.in, pp.hdr[:]))
	if pp.n == 0 {
		return nil
	}
	return pp
}

// len is the header's length, 0 without one.
func (pp *proxyConn) len() uint32 {
	if pp == nil {
		return 0
	}
	return pp.n
}

// insertHeader puts the header in front of the payload of p, a client
// segment already rewritten for the server (seq moved by the header's
// length, checksums valid), and takes seq back to the header's start. The
// headers move into the frame's headroom; the payload stays. What the
// header would take past the server side's MTU (a TSO super-frame: past
// 65535) is cut from the payload's end, and a FIN with it. The IP checksum
// is recomputed; a full TCP checksum too, with the payload's sum taken from
// the old checksum rather than the bytes (a bad one stays bad); a partial
// one (NEEDS_CSUM) only counts the longer segment. It reports false,
// changing nothing, when there is no room.
func (b *Balancer) insertHeader(pp *proxyConn, p *pkt, f *Frame) bool {
	n := int(pp.n)
	tcp := wire.TCP(p.b[p.l4:])
	hl := tcp.HeaderLen()
	// The IP length field that must hold the result: IPv4's total
	// length, IPv6's payload length.
	ipLen := len(p.b) - p.l3
	if p.v6 {
		ipLen -= wire.IPv6Len
	}
	cut := max(ipLen+n-0xffff, 0)
	if f.VNet.GSOType() == tun.VNetGSONone {
		cut = max(cut, len(p.b)-p.l3+n-b.cfg.ServerMTU)
	}
	if cut >= len(tcp)-hl && cut > 0 {
		return false // not even the header would fit
	}
	var payload uint32
	if !p.partial {
		// Everything the checksum covers, less the pseudo-header and
		// the TCP header: the payload's sum, less what is cut from it.
		h := csum.Sum(tcp[wire.TCPUrgentOff:hl], csum.Sum(tcp[:wire.TCPCsumOff], p.pseudo(wire.ProtoTCP, len(tcp))))
		payload = uint32(^tcp.Checksum()) + uint32(^csum.Fold(h))
		if cut > 0 {
			tail := csum.Fold(csum.Sum(tcp[len(tcp)-cut:], 0))
			if (len(tcp)-cut)&1 != 0 {
				tail = tail<<8 | tail>>8 // summed from an odd offset (RFC 1071 2.B)
			}
			payload += uint32(^tail)
		}
	}
	at := p.l4 + hl
	f.Len = len(p.b) - cut
	if !f.open(at, n) {
		f.Len = len(p.b)
		return false
	}
	p.b = f.Bytes()
	tcp = wire.TCP(p.b[p.l4:])
	copy(tcp[hl:], pp.hdr[:n])
	tcp.SetSeq(tcp.Seq() - uint32(n))
	if tcp.Flags()&tcpflag.URG != 0 {
		// The urgent pointer counts from seq, now the header's first
		// byte: it moves with the client's bytes, or, past its 16 bits
		// or pointing before them, goes (the checksum below sums the
		// header as it is now).
		if ptr := uint32(tcp.Urgent()); ptr > 0 && ptr+uint32(n) <= 0xffff {
			tcp.SetUrgent(uint16(ptr + uint32(n)))
		} else {
			// 0 would make the header's last byte urgent.
			tcp.SetFlags(tcp.Flags() &^ tcpflag.URG)
			tcp.SetUrgent(0)
		}
	}
	if cut > 0 {
		tcp.SetFlags(tcp.Flags() &^ tcpflag.FIN) // the FIN came after the bytes cut
		b.Stats.proxyCut.Add(1)
	}
	p.setIPLen()
	if p.partial {
		// The TCP length in the pseudo-header: n more, cut less.
		csum.AdjustPartial(tcp.CsumField(), csum.Fold(uint32(n)+uint32(^uint16(cut))))
		return true
	}
	pl := csum.Fold(payload)
	if n&1 != 0 {
		pl = pl<<8 | pl>>8 // the payload now starts at an odd offset (RFC 1071 2.B)
	}
	s := csum.Sum(tcp[wire.TCPUrgentOff:hl+n], csum.Sum(tcp[:wire.TCPCsumOff], p.pseudo(wire.ProtoTCP, len(tcp))))
	tcp.SetChecksum(^csum.Fold(s + uint32(pl)))
	return true
}
