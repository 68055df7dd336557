package nat

import (
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// Frame is an Ethernet frame in a reader's buffer. The bytes before Off are
// headroom: a rewrite that grows the packet (a TCP option, later) moves the
// headers left into it instead of copying the payload.
type Frame struct {
	Buf []byte
	Off int
	Len int
	// Queue is the reader that read the frame (0 to Config.Readers-1): per-server
	// counters are kept per reader so no cache line is written by all.
	Queue int
	// VNet is the frame's virtio-net header on a TAP with offloads, nil
	// otherwise. It says whether the transport checksum is partial
	// (NEEDS_CSUM) and whether the frame is a TSO super-frame; the rewrite
	// keeps it valid, and frames the balancer builds clear it.
	VNet tun.VNetHdr
	// Released, with the verdict Release, are frames the balancer had held
	// and now lets go: they leave, in order, by the side this frame came
	// in on, each as tun.VNetHdrLen bytes of virtio-net header and the
	// frame (see Held). The reader sends them in its batch, as it sends
	// every other frame.
	Released [][]byte
	// HandedOff marks a frame another instance of a cluster handed over
	// (package handoff): it may continue a connection this balancer
	// holds, and nothing else (no connection opened, never handed on).
	HandedOff bool
	// Mark is a datagram reassembled from fragments as it travels to
	// another instance of a cluster (package handoff): Process sets it
	// with the verdict Handoff, and the instance that takes the frame
	// over (HandedOff) gives it back with the frame, so the datagram
	// leaves there cut as it would have here (frag.go). 0: it came whole.
	Mark FragMark
	// Follow, with the verdict Forward, is a frame to send right after
	// this one and the same way, in the same batch (nil: none), as
	// tun.VNetHdrLen bytes of virtio-net header and the frame: the RST
	// that ends a stream a fault cut (faultreset.go), which must not pass
	// the frames of the batch before it.
	Follow []byte
	// Frags, with the verdict Forward or Reply, stand for the frame: a
	// datagram reassembled here leaves cut (frag.go), as Frags.Frames in
	// order, each as tun.VNetHdrLen bytes of virtio-net header and the
	// frame, where the verdict sends the frame and in the same batch, so
	// that no fragment passes the frames before it. They are the
	// balancer's buffers: the reader gives them back (Fragments.Release)
	// once it has written them. nil: the frame goes itself.
	Frags *Fragments

	// reasm, if not 0, marks a datagram reassembled from fragments: the
	// largest fragment's IP length, which its fragments leave no longer
	// than (frag.go), in the family they came in: reasm6 says which.
	reasm  int
	reasm6 bool
	// orig, for a reassembled datagram that may not be cut for the other
	// side (frag.go: IPv6, or IPv4 with DF, whose largest fragment passes
	// that side's MTU), is its Ethernet header and start as it came: the
	// quote of the ICMP error that answers it. nil otherwise.
	orig *origQuote

	// fault is the fault of the delay or reset family that acts on the
	// frame as it leaves (Balancer.faultOut), on connection faultConn in
	// direction faultDir; nil: none. Process sets it.
	fault     *faultRule
	faultConn *Conn
	faultDir  FaultDir
}

// partial reports whether the frame's transport checksum holds only the
// pseudo-header sum, to be finished by the kernel.
func (f *Frame) partial() bool { return f.VNet.NeedsCsum() }

// checked reports whether the kernel has vouched for the frame's transport
// checksum: it is partial (the sending host finishes it) or already
// verified (DATA_VALID).
func (f *Frame) checked() bool { return f.VNet.NeedsCsum() || f.VNet.DataValid() }

// plain marks a frame the balancer built or finished: full checksums, no
// segmentation.
func (f *Frame) plain() { f.VNet.Clear() }

// held copies the frame's packet p, behind its virtio-net header (zeros
// from a plain TAP, so a TSO super-frame is sent on as one), to be held
// and later released (Frame.Released). room bytes of headroom go before
// the header, for a rewrite that grows the headers on release (a TOA
// option, a PROXY header: Frame.open): the copy is the connection's one
// allocation for the frame either way.
func held(f *Frame, p *pkt, room int) []byte {
	q := make([]byte, room+tun.VNetHdrLen+len(p.b))
	copy(q[room:], f.VNet)
	copy(q[room+tun.VNetHdrLen:], p.b)
	return q
}

// heldFrame is the Frame view of a held copy made with room bytes of
// headroom, for rewriting it in place; releasable gives back what leaves
// (the headroom a rewrite did not use is left out).
func heldFrame(q []byte, room int) Frame {
	return Frame{Buf: q, Off: room + tun.VNetHdrLen, Len: len(q) - room - tun.VNetHdrLen, VNet: tun.VNetHdr(q[room : room+tun.VNetHdrLen])}
}

// releasable is a held frame, rewritten, as Frame.Released carries it:
// its virtio-net header and the frame.
func (f *Frame) releasable() []byte {
	return f.Buf[f.Off-tun.VNetHdrLen : f.Off+f.Len]
}

// Bytes is the frame as it goes on the wire.
func (f *Frame) Bytes() []byte { return f.Buf[f.Off : f.Off+f.Len] }

// pkt is a parsed IPv4 or IPv6 packet inside a frame: offsets into the
// frame, so the rewrite works in place. It lives on the reader's stack.
type pkt struct {
	b     []byte // the frame, trimmed to the IP total length
	l3    int    // offset of the IP header
	l4    int    // offset of the transport header (past any IPv6 extension headers)
	proto uint8  // the transport protocol (IPv6: the last next header)
	v6    bool
	frag  bool
	// ext is an IPv6 extension header that forbids the rewrite: a routing
	// header with segments left (the destination is not final), AH (it
	// signs the addresses), or too many headers to walk.
	ext     bool
	partial bool // the transport checksum is partial (see Frame.partial)
	checked bool // the kernel vouched for the transport checksum (see Frame.checked)
}

// l4Valid reports whether the transport checksum verifies, or need not be
// verified here (see Frame.checked; UDP's 0 is no checksum). Only what
// makes state pays for it: a segment that opens a connection or proves a
// handshake, never the established flow's.
func (p *pkt) l4Valid() bool {
	if p.checked {
		return true
	}
	l4 := p.b[p.l4:]
	if p.v6 {
		// A zero UDP checksum is not allowed over IPv6 (RFC 8200 8.1).
		return csum.Checksum(l4, csum.PseudoV6(p.src(), p.dst(), p.proto, len(l4))) == 0
	}
	if p.proto == wire.ProtoUDP && wire.UDP(l4).Checksum() == 0 {
		return true
	}
	return csum.Checksum(l4, csum.PseudoV4(p.src(), p.dst(), p.proto, len(l4))) == 0
}

// parseIP parses an IPv4 or IPv6 frame (see parseIPv4, parseIPv6).
func parseIP(frame []byte, p *pkt) (ok bool, bad bool) {
	if len(frame) < wire.EtherLen {
		return false, false
	}
	switch wire.Ether(frame).Type() {
	case wire.EtherIPv4:
		return parseIPv4(frame, p)
	case wire.EtherIPv6:
		return parseIPv6(frame, p)
	}
	return false, false
}

// parseIPv6 validates the Ethernet and IPv6 headers of frame and walks the
// extension headers to the transport header. bad is true for a packet
// whose lengths do not add up (or a jumbogram: payload length 0); a
// fragment sets frag and a header the rewrite must not cross sets ext.
func parseIPv6(frame []byte, p *pkt) (ok bool, bad bool) {
	ip := wire.IPv6(wire.Ether(frame).Payload())
	if len(ip) < wire.IPv6Len || ip.Version() != 6 {
		return true, true
	}
	plen := ip.PayloadLen()
	if plen == 0 || wire.IPv6Len+plen > len(ip) {
		return true, true
	}
	if wire.Mapped4(ip.Src()) || wire.Mapped4(ip.Dst()) {
		// The table keeps IPv4 addresses in this form: an IPv6 packet
		// with one would be taken for IPv4 (RFC 4291 2.5.5.2: it never
		// appears on the wire).
		return true, true
	}
	p.b = frame[:wire.EtherLen+wire.IPv6Len+plen] // drops Ethernet padding
	p.l3 = wire.EtherLen
	p.v6 = true
	w := wire.Walk6(p.b, ip.NextHeader(), wire.EtherLen+wire.IPv6Len)
	if w.Bad {
		return true, true
	}
	p.proto, p.l4, p.frag, p.ext = w.Proto, w.L4, w.Frag, w.Ext
	return true, false
}

// parseIPv4 validates the Ethernet and IPv4 headers of frame. ok is false for a
// frame that is not IP (it belongs to the stack); bad is true for an IPv4
// packet whose header lengths do not add up.
func parseIPv4(frame []byte, p *pkt) (ok bool, bad bool) {
	ip := wire.IPv4(wire.Ether(frame).Payload())
	if len(ip) < wire.IPv4MinLen || ip.Version() != 4 {
		return true, true
	}
	ihl := ip.HeaderLen()
	total := ip.TotalLen()
	if ihl < wire.IPv4MinLen || total < ihl || total > len(ip) {
		return true, true
	}
	p.b = frame[:wire.EtherLen+total] // drops Ethernet padding
	p.l3 = wire.EtherLen
	p.l4 = wire.EtherLen + ihl
	p.proto = ip.Protocol()
	p.frag = ip.Fragment()
	return true, false
}

// The packet's headers, as views from where each starts.
func (p *pkt) eth() wire.Ether { return wire.Ether(p.b) }
func (p *pkt) ip4() wire.IPv4  { return wire.IPv4(p.b[p.l3:]) }
func (p *pkt) ip6() wire.IPv6  { return wire.IPv6(p.b[p.l3:]) }
func (p *pkt) tcp() wire.TCP   { return wire.TCP(p.b[p.l4:]) }
func (p *pkt) udp() wire.UDP   { return wire.UDP(p.b[p.l4:]) }
func (p *pkt) icmp() wire.ICMP { return wire.ICMP(p.b[p.l4:]) }

// dst and src return the addresses as slices of the frame: 4 or 16 bytes.
// They slice the frame once, at the header's named offsets: they run for
// every packet, and a view's accessor on a view would slice it twice.
func (p *pkt) src() []byte {
	if p.v6 {
		return p.b[p.l3+wire.IPv6SrcOff : p.l3+wire.IPv6DstOff]
	}
	return p.b[p.l3+wire.IPv4SrcOff : p.l3+wire.IPv4DstOff]
}

func (p *pkt) dst() []byte {
	if p.v6 {
		return p.b[p.l3+wire.IPv6DstOff : p.l3+wire.IPv6Len]
	}
	return p.b[p.l3+wire.IPv4DstOff : p.l3+wire.IPv4MinLen]
}

// key16 is an address of the packet in the table's form (addr16).
func (p *pkt) key16(a []byte) (k addr16) {
	if p.v6 {
		return addr16(a)
	}
	return wire.In16(a)
}

// setIPLen sets the IP header's length to the packet's, p.b, once a
// rewrite has grown or cut it: IPv6's payload length, or IPv4's total
// length and its header checksum anew.
func (p *pkt) setIPLen() {
	if p.v6 {
		wire.IPv6(p.b[p.l3:]).SetPayloadLen(len(p.b) - p.l3 - wire.IPv6Len)
		return
	}
	ip := wire.IPv4(p.b[p.l3:p.l4])
	ip.SetTotalLen(len(p.b) - p.l3)
	ip.SetChecksum(0)
	ip.SetChecksum(csum.Checksum(ip, 0))
}

// pseudo is the sum of the packet's pseudo-header for a transport length.
func (p *pkt) pseudo(proto uint8, length int) uint32 {
	if p.v6 {
		return csum.PseudoV6(p.src(), p.dst(), proto, length)
	}
	return csum.PseudoV4(p.src(), p.dst(), proto, length)
}

// l4ok checks that the transport header is whole.
func (p *pkt) l4ok() bool {
	rest := len(p.b) - p.l4
	switch p.proto {
	case wire.ProtoTCP:
		if rest < wire.TCPMinLen {
			return false
		}
		off := p.tcp().HeaderLen()
		return off >= wire.TCPMinLen && off <= rest
	case wire.ProtoUDP:
		if rest < wire.UDPLen {
			return false
		}
		ul := p.udp().Length()
		return ul >= wire.UDPLen && ul <= rest
	case wire.ProtoICMP, wire.ProtoICMPv6:
		return rest >= wire.ICMPLen
	}
	return true
}

// The transport ports (TCP's and UDP's are at the same offsets) and TCP's
// flags.
func (p *pkt) sport() uint16   { return p.tcp().SrcPort() }
func (p *pkt) dport() uint16   { return p.tcp().DstPort() }
func (p *pkt) tcpFlags() uint8 { return p.tcp().Flags() }

// l4csum is the offset of the transport checksum, or -1 when there is none to
// update (UDP over IPv4 may send 0: no checksum).
func l4csumOff(proto uint8) int {
	switch proto {
	case wire.ProtoTCP:
		return wire.TCPCsumOff
	case wire.ProtoUDP:
		return wire.UDPCsumOff
	}
	return -1
}
