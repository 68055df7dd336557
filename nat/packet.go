package nat

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
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

const (
	ethHdrLen   = 14
	etherIPv4   = 0x0800
	etherIPv6   = 0x86dd
	ipv4MinLen  = 20
	ipv6HdrLen  = 40
	protoICMP   = 1
	protoICMPv6 = 58
	protoTCP    = 6
	protoUDP    = 17
	tcpMinLen   = 20
	udpHdrLen   = 8
	icmpHdrLen  = 8
	ipFlagMF    = 0x2000
	ipFragMask  = 0x1fff
	icmpUnreach = 3
	icmpTimeEx  = 11
	icmpParam   = 12
)

// IPv6 extension headers (RFC 8200 4) a packet to a VIP or LIP may carry.
const (
	ip6HopByHop = 0
	ip6Routing  = 43
	ip6Fragment = 44
	ip6AH       = 51
	ip6DestOpts = 60
	ip6NoNext   = 59
	// ip6MaxExt bounds the walk: a packet with more extension headers
	// than this is dropped (RFC 8200 recommends a host accept few).
	ip6MaxExt = 8
)

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
	if p.proto == protoUDP && binary.BigEndian.Uint16(l4[6:]) == 0 {
		return true
	}
	return csum.Checksum(l4, csum.PseudoV4(p.src(), p.dst(), p.proto, len(l4))) == 0
}

// parseIP parses an IPv4 or IPv6 frame (see parseIPv4, parseIPv6).
func parseIP(frame []byte, p *pkt) (ok bool, bad bool) {
	if len(frame) < ethHdrLen {
		return false, false
	}
	switch binary.BigEndian.Uint16(frame[12:]) {
	case etherIPv4:
		return parseIPv4(frame, p)
	case etherIPv6:
		return parseIPv6(frame, p)
	}
	return false, false
}

// parseIPv6 validates the Ethernet and IPv6 headers of frame and walks the
// extension headers to the transport header. bad is true for a packet
// whose lengths do not add up (or a jumbogram: payload length 0); a
// fragment sets frag and a header the rewrite must not cross sets ext.
func parseIPv6(frame []byte, p *pkt) (ok bool, bad bool) {
	ip := frame[ethHdrLen:]
	if len(ip) < ipv6HdrLen || ip[0]>>4 != 6 {
		return true, true
	}
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if plen == 0 || ipv6HdrLen+plen > len(ip) {
		return true, true
	}
	if mapped4(ip[8:24]) || mapped4(ip[24:40]) {
		// The table keeps IPv4 addresses in this form: an IPv6 packet
		// with one would be taken for IPv4 (RFC 4291 2.5.5.2: it never
		// appears on the wire).
		return true, true
	}
	p.b = frame[:ethHdrLen+ipv6HdrLen+plen] // drops Ethernet padding
	p.l3 = ethHdrLen
	p.v6 = true
	w := walk6(p.b, ip[6], ethHdrLen+ipv6HdrLen)
	if w.bad {
		return true, true
	}
	p.proto, p.l4, p.frag, p.ext = w.proto, w.l4, w.frag, w.ext
	return true, false
}

// mapped4 reports whether a 16-byte address is IPv4-mapped (::ffff:a.b.c.d).
func mapped4(a []byte) bool { return is4((*addr16)(a)) }

// ext6 is where an IPv6 packet's extension headers end.
type ext6 struct {
	proto uint8 // the next header after the last extension header
	l4    int   // its offset
	frag  bool  // a fragment header was crossed
	ext   bool  // a header the rewrite must not cross (see pkt.ext)
	bad   bool  // an extension header runs past the packet
}

// walk6 walks the extension headers of the IPv6 packet in b starting with
// next at off. Each header's length is checked against b before it is
// read or skipped.
func walk6(b []byte, next uint8, off int) (w ext6) {
	for range ip6MaxExt {
		switch next {
		case ip6HopByHop, ip6DestOpts, ip6Routing:
			if len(b)-off < 8 {
				w.bad = true
				return w
			}
			n := (int(b[off+1]) + 1) * 8
			if len(b)-off < n {
				w.bad = true
				return w
			}
			if next == ip6Routing && b[off+3] != 0 {
				w.ext = true // segments left: the destination is not final
			}
			next = b[off]
			off += n
		case ip6Fragment:
			if len(b)-off < 8 {
				w.bad = true
				return w
			}
			// Whatever follows is a fragment's: the headers after it are
			// in the first fragment only, so the walk ends here.
			w.frag = true
			w.proto, w.l4 = b[off], off+8
			return w
		case ip6AH:
			w.ext = true // it signs the addresses the rewrite changes
			w.proto, w.l4 = next, off
			return w
		default:
			w.proto, w.l4 = next, off
			return w
		}
	}
	w.ext = true
	w.proto, w.l4 = next, off
	return w
}

// parseIPv4 validates the Ethernet and IPv4 headers of frame. ok is false for a
// frame that is not IP (it belongs to the stack); bad is true for an IPv4
// packet whose header lengths do not add up.
func parseIPv4(frame []byte, p *pkt) (ok bool, bad bool) {
	ip := frame[ethHdrLen:]
	if len(ip) < ipv4MinLen || ip[0]>>4 != 4 {
		return true, true
	}
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if ihl < ipv4MinLen || total < ihl || total > len(ip) {
		return true, true
	}
	fragField := binary.BigEndian.Uint16(ip[6:])
	p.b = frame[:ethHdrLen+total] // drops Ethernet padding
	p.l3 = ethHdrLen
	p.l4 = ethHdrLen + ihl
	p.proto = ip[9]
	p.frag = fragField&(ipFlagMF|ipFragMask) != 0
	return true, false
}

// dst and src return the addresses as slices of the frame: 4 or 16 bytes.
func (p *pkt) src() []byte {
	if p.v6 {
		return p.b[p.l3+8 : p.l3+24]
	}
	return p.b[p.l3+12 : p.l3+16]
}

func (p *pkt) dst() []byte {
	if p.v6 {
		return p.b[p.l3+24 : p.l3+40]
	}
	return p.b[p.l3+16 : p.l3+20]
}

// key16 is an address of the packet in the table's form (addr16).
func (p *pkt) key16(a []byte) (k addr16) {
	if p.v6 {
		return addr16(a)
	}
	return v4in16(a)
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
	case protoTCP:
		if rest < tcpMinLen {
			return false
		}
		off := int(p.b[p.l4+12]>>4) * 4
		return off >= tcpMinLen && off <= rest
	case protoUDP:
		if rest < udpHdrLen {
			return false
		}
		ul := int(binary.BigEndian.Uint16(p.b[p.l4+4:]))
		return ul >= udpHdrLen && ul <= rest
	case protoICMP, protoICMPv6:
		return rest >= icmpHdrLen
	}
	return true
}

func (p *pkt) sport() uint16 { return binary.BigEndian.Uint16(p.b[p.l4:]) }
func (p *pkt) dport() uint16 { return binary.BigEndian.Uint16(p.b[p.l4+2:]) }
func (p *pkt) tcpFlags() uint8 {
	return p.b[p.l4+13]
}

// l4csum is the offset of the transport checksum, or -1 when there is none to
// update (UDP over IPv4 may send 0: no checksum).
func l4csumOff(proto uint8) int {
	switch proto {
	case protoTCP:
		return 16
	case protoUDP:
		return 6
	}
	return -1
}
