package wire

import "gvisor.dev/gvisor/pkg/tcpip/header"

// IPv6 extension headers (RFC 8200 4) a packet to a VIP or LIP may carry.
const (
	IP6HopByHop = uint8(header.IPv6HopByHopOptionsExtHdrIdentifier)
	IP6Routing  = uint8(header.IPv6RoutingExtHdrIdentifier)
	IP6Fragment = uint8(header.IPv6FragmentExtHdrIdentifier)
	IP6AH       = uint8(header.IPv6AuthenticationExtHdrIdentifier)
	IP6DestOpts = uint8(header.IPv6DestinationOptionsExtHdrIdentifier)
	IP6NoNext   = uint8(header.IPv6NoNextHeaderIdentifier)
	// IP6MaxExt bounds the walk: a packet with more extension headers
	// than this is not rewritten (RFC 8200 recommends a host accept few).
	IP6MaxExt = 8
)

// Generic extension header layout (RFC 8200 4.3-4.6): next header, length
// in 8-byte units not counting the first 8; a routing header's segments
// left; a fragment header is 8 bytes.
const (
	ext6LenOff      = 1
	ext6SegLeftOff  = 3
	ext6Unit        = 8
	ext6FragmentLen = 8
)

// Ext6 is where an IPv6 packet's extension headers end.
type Ext6 struct {
	Proto uint8 // the next header after the last extension header
	L4    int   // its offset
	Frag  bool  // a fragment header was crossed
	// Ext is a header a rewrite must not cross: a routing header with
	// segments left (the destination is not final), AH (it signs the
	// addresses), or more headers than IP6MaxExt.
	Ext bool
	Bad bool // an extension header runs past the packet
}

// Walk6 walks the extension headers of the IPv6 packet in b starting with
// next at off. Each header's length is checked against b before it is
// read or skipped: any input is safe.
func Walk6(b []byte, next uint8, off int) (w Ext6) {
	if off < 0 || off > len(b) {
		w.Bad = true
		return w
	}
	for range IP6MaxExt {
		switch next {
		case IP6HopByHop, IP6DestOpts, IP6Routing:
			if len(b)-off < ext6Unit {
				w.Bad = true
				return w
			}
			n := (int(b[off+ext6LenOff]) + 1) * ext6Unit
			if len(b)-off < n {
				w.Bad = true
				return w
			}
			if next == IP6Routing && b[off+ext6SegLeftOff] != 0 {
				w.Ext = true // segments left: the destination is not final
			}
			next = b[off]
			off += n
		case IP6Fragment:
			if len(b)-off < ext6FragmentLen {
				w.Bad = true
				return w
			}
			// Whatever follows is a fragment's: the headers after it are
			// in the first fragment only, so the walk ends here.
			w.Frag = true
			w.Proto, w.L4 = b[off], off+ext6FragmentLen
			return w
		case IP6AH:
			w.Ext = true // it signs the addresses the rewrite changes
			w.Proto, w.L4 = next, off
			return w
		default:
			w.Proto, w.L4 = next, off
			return w
		}
	}
	w.Ext = true
	w.Proto, w.L4 = next, off
	return w
}
