package nat

import (
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcpopt"
	"github.com/tapvs/tapvs/tcprw"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// TOA (TCP Option Address) tells a real server behind FULLNAT the client's
// address: an option of kind 254 and length 8, the client's port and IPv4
// address in network order (struct toa_data in Alibaba's LVS and DPVS). The
// IPv6 client gets DPVS's IPv6 layout (struct toa_ip6_data): kind 254,
// length 20, the port and the 16-byte address; Alibaba's toa module reads
// the same. The layout follows the client's family, not the server's: an
// IPv6 client behind a NAT64 service gets the 20-byte option on IPv4
// segments, as DPVS does (src/ipvs/ip_vs_proto_tcp.c, tcp_in_add_toa:
// tcp_opt_len is TCP_OLEN_IP6_ADDR when conn->af, the client's family, is
// AF_INET6, whatever tuplehash_out(conn).af; include/ipvs/proto_tcp.h:
// TCP_OPT_ADDR 254, struct tcpopt_ip6_addr), and DPVS's toa module built
// with TOA_NAT64_ENABLE reads a 254/20 option on an IPv4 socket as the
// NAT64 peer (kmod/toa/toa.c, get_toa_data: *nat64 = 1; the server asks
// for it with getsockopt TOA_SO_GET_LOOKUP, struct toa_nat64_peer). The
// Linux toa module reads it when the server's handshake completes
// (syn_recv_sock), from the client segment that acknowledges the server's
// SYN-ACK, and answers getpeername with it from then on. An IPv4 client
// behind a NAT46 service likewise gets the 8-byte IPv4 option, on IPv6
// segments.
//
// As DPVS does (tcp_fnat_in_handler), every client segment that is not a
// SYN or RST and acknowledges exactly the server's ISN + 1 gets the option:
// the handshake ACK, the data the client sends before the server sends any,
// and their retransmits, so that whichever of them completes the server's
// handshake carries it (the ACK may be lost; a SYNPROXY's held frames go
// together). Once the client acknowledges server data, segments go as they
// came: TOA costs an established flow one comparison.
//
// The option goes right after the 20-byte base header, before the client's
// options: the toa module takes the first kind-254 option it finds. The
// Ethernet, IP and base TCP headers move 8 bytes into the reader's headroom
// (Frame.open); the client's options and payload stay where they are.
const (
	toaKind = tcpopt.TOA
	toaLen  = tcpopt.LenTOA  // IPv4: kind, length, port, address
	toaLen6 = tcpopt.LenTOA6 // IPv6 (DPVS's TCPOLEN_IP6_TOA)
)

// toaSize is the TOA option's length for the connection's client family.
func (c *Conn) toaSize() int {
	if wire.Is4(&c.in.src) {
		return toaLen
	}
	return toaLen6
}

// ipHdrLen is the base IP header's length of a family (IPv6 extension
// headers are the packet's own).
func ipHdrLen(v4 bool) int {
	if v4 {
		return wire.IPv4MinLen
	}
	return wire.IPv6Len
}

// noteTOASynAck records, from a plain TOA connection's server SYN-ACK
// (seq: its ISN, as the server sent it), the ack that the client's TOA
// segments carry, in the connection's rewriter r (TOAAck); a proxied one's
// is fixed when the server's handshake fixes its offsets. A SYN-ACK again
// (a retransmit, or a new server handshake on a reused tuple) records its
// own ISN. The MSS the server announces was clamped in the walk that
// translated the SYN-ACK (the rewriter's MSSToClient: room for the option
// in the client's segments within the server side's MTU).
func (c *Conn) noteTOASynAck(r *tcprw.Rewriter, seq uint32) {
	if r.Flags&tcprw.TOAKnown != 0 && r.TOAAck == seq+1 {
		return
	}
	c.editRewriter(func(r *tcprw.Rewriter) bool {
		r.TOAAck, r.Flags = seq+1, r.Flags|tcprw.TOAKnown
		return true
	})
}

// synproxyMSS is the MSS tapvs's cookie SYN-ACK announces for svc (key is
// the client's tuple): the configured one, less TOA's 8 bytes or the PROXY
// header's length when the service adds one, so that the client's data
// segments carrying it still fit the server side's MTU. The configured MSS
// is for an IPv4 server side: an IPv6 one takes 20 bytes off it (IPv6
// FULLNAT, and NAT46, whose IPv4 client's segments grow by 20 bytes on the
// way). A NAT64 service's server side is IPv4, so its client's segments
// are bounded by the client side instead: at most ClientMTU - 60, an IPv6
// segment that tapvs's client side carries (20 bytes less than the
// configured 1460 on a 1500-byte link, as for IPv6 FULLNAT).
func (b *Balancer) synproxyMSS(svc *Service, key *tupleKey) uint16 {
	mss := b.cfg.Synproxy.MSS
	v6 := !wire.Is4(&key.src)
	nat64 := v6 && svc.serverSide4()
	server6 := v6 && !nat64 || !v6 && svc.serverSide6()
	if server6 && mss > 20+64 {
		mss -= 20 // the configured MSS is for IPv4's header; IPv6's is 20 bytes more
	}
	switch mode := svc.ClientAddr(); mode {
	case ClientAddrTOA:
		n := uint16(toaLen)
		if v6 {
			n = toaLen6
		}
		if mss > n+64 {
			mss -= n
		}
	case ClientAddrProxyV1, ClientAddrProxyV2:
		// The header goes in front of the first segment's payload (proxy.go).
		if n := proxyLen(mode, key); mss > n+64 {
			mss -= n
		}
	}
	if nat64 {
		mss = min(mss, b.clientMSS(false))
	}
	return mss
}

// heldRoom is the headroom a held copy of c's client frames keeps before
// its virtio-net header: TOA's, for a TOA connection, whose first held frame
// (the handshake ACK) gets the option when it is released; and for NAT46,
// the 20 bytes an IPv4 header grows by into IPv6's.
func (c *Conn) heldRoom() int {
	n := 0
	if c.nat46() {
		n = wire.IPv6Len - wire.IPv4MinLen // to6 grows the IPv4 header
	}
	switch {
	case c.clientAddr == ClientAddrTOA:
		return n + c.toaSize()
	case c.pp != nil:
		return n + proxyRoom // a PROXY header's, before the released ACK's payload
	}
	return n
}

// addTOA puts the TOA option into a client TCP segment of a TOA connection
// on its way to the server, if the segment is one that gets it (see the
// top of this file) and there is room, and returns l4Delta plus the change.
// The segment's sequence numbers are already as the server sees them.
//
// There is no room when the options would pass 40 bytes, when the IP packet
// (each segment of a TSO super-frame) would pass the server side's MTU, or
// when the frame has no headroom left: the segment then goes as it came,
// counted as toa_no_room, never truncated or fragmented. Either way no TOA
// option of the client's own reaches the server: every client segment of
// every service had its options walked, any malformed one dropped and any
// TOA blanked, when its sequence number was translated (the connection's
// rewriter: tcprw.Rewriter.ToServer), so what a toa module reads is
// tapvs's option or nothing.
func (b *Balancer) addTOA(c *Conn, p *pkt, f *Frame, l4Delta uint16) uint16 {
	tcp := wire.TCP(p.b[p.l4:])
	flags := tcp.Flags()
	if flags&(tcpflag.SYN|tcpflag.RST) != 0 || flags&tcpflag.ACK == 0 {
		return l4Delta
	}
	if r := c.rewriter().Load(); r == nil || r.Flags&tcprw.TOAKnown == 0 || tcp.Ack() != r.TOAAck {
		return l4Delta
	}
	acc := uint32(l4Delta)
	hl := tcp.HeaderLen()
	ipLen := len(p.b) - p.l3
	n := c.toaSize()
	// The IP headers the server side carries: this packet's, or for NAT64
	// the 20-byte IPv4 header to4 makes of its IPv6 headers, for NAT46
	// the 40-byte IPv6 header to6 makes of its IPv4 one (the option is put
	// in before the translation, and stays the client's family).
	hdrs, v6 := p.l4-p.l3, p.v6
	switch {
	case c.nat64():
		hdrs, v6 = wire.IPv4MinLen, false
	case c.nat46():
		hdrs, v6 = wire.IPv6Len, true
	}
	// The length field as the server side carries it: IPv4's total
	// length, IPv6's payload length.
	lenField := hdrs + len(p.b) - p.l4 + n
	if v6 {
		lenField -= wire.IPv6Len
	}
	// The IP packet the server side carries: this one, or for a TSO
	// super-frame each segment the kernel cuts from it (the headers, TOA
	// included, repeated before gso_size bytes of payload).
	onWire := hdrs + len(p.b) - p.l4 + n
	if f.VNet.GSOType() != tun.VNetGSONone {
		onWire = hdrs + hl + n + int(f.VNet.GSOSize())
	}
	if hl+n > wire.TCPMinLen+tcpopt.MaxLen || lenField > 0xffff || onWire > b.cfg.ServerMTU ||
		!f.open(p.l4+wire.TCPMinLen, n) {
		b.Stats.toaCount(f.Queue, true)
		return csum.Fold(acc)
	}
	p.b = f.Buf[f.Off : f.Off+len(p.b)+n]
	tcp = wire.TCP(p.b[p.l4:])
	opt := tcpopt.AppendTOA(tcp[wire.TCPMinLen:wire.TCPMinLen], c.in.sport, wire.Short(&c.in.src))
	// The transport checksum gains the option's words, the longer data
	// offset, and the 8 bytes more of TCP length in the pseudo-header. What
	// follows the option moved by an even count: its words are unchanged.
	acc = csum.Sum(opt, acc) + uint32(n)
	acc = csum.Put16At(acc, tcp, wire.TCPDataOffOff, tcp.OffsetFlags()+uint16(n/4)<<12)
	if p.partial {
		// A partial checksum holds only the pseudo-header sum, which the
		// TCP length is part of; the kernel sums the header, option
		// included, when it finishes it. csum_start and csum_offset count
		// from the frame's start, which moved with the TCP header.
		csum.AdjustPartial(tcp.CsumField(), uint16(n))
	}
	if p.v6 {
		wire.IPv6(p.b[p.l3:]).SetPayloadLen(ipLen + n - wire.IPv6Len)
	} else {
		ip := wire.IPv4(p.b[p.l3:])
		csum.Adjust(ip.CsumField(), csum.Fold(csum.Put16At(0, ip, wire.IPv4TotalLenOff, uint16(ipLen+n))))
	}
	if f.VNet.GSOType() != tun.VNetGSONone {
		// hdr_len is the length of the headers each segment repeats.
		f.VNet.SetHdrLen(f.VNet.HdrLen() + uint16(n))
	}
	b.Stats.toaCount(f.Queue, false)
	return csum.Fold(acc)
}
