// Package proxyhdr writes HAProxy's PROXY protocol headers (v1 and v2;
// doc/proxy-protocol.txt in HAProxy's tree) into a buffer the data path
// owns, without allocating: tapvs puts one before a connection's first
// bytes toward a real server, or before each datagram of a UDP service, so
// the server learns the client's address that FULLNAT hides.
//
// Both families: a header is IPv4 (TCP4, AF_INET) when both addresses are
// IPv4, an IPv4-mapped IPv6 address (::ffff:a.b.c.d, how tapvs keys IPv4)
// counting as IPv4, and IPv6 (TCP6, AF_INET6) otherwise. A mixed pair is
// written as IPv6 with the IPv4 address mapped, as HAProxy does
// (make_proxy_line_v1/v2): the spec wants both addresses of one family,
// and only IPv6 can carry both.
//
// Only writing is here. Servers read the header with their own parsers
// (nginx, HAProxy, github.com/pires/go-proxyproto in the lab and the
// tests, which check every header this package writes).
package proxyhdr

import (
	"encoding/binary"
	"net/netip"
	"strconv"
)

// Transport is the protocol the header describes.
type Transport uint8

const (
	Stream   Transport = 1 // TCP
	Datagram Transport = 2 // UDP
)

const (
	// MaxV1IPv4 is the longest v1 header for IPv4: "PROXY TCP4 " + two
	// addresses of 15 characters, two ports of 5, three spaces and CRLF.
	MaxV1IPv4 = len("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n")
	// MaxV1 is the longest v1 header V1 writes, of either family: IPv6's,
	// with two addresses of 39 characters (the spec's 104). A buffer of
	// MaxV1 bytes takes any connection's header.
	MaxV1 = len("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
	// V2IPv4 is the length of a v2 header for IPv4 addresses, no TLVs:
	// the 16-byte preamble and 12 bytes of addresses and ports.
	V2IPv4 = 16 + 12
	// V2IPv6 is the length of a v2 header for IPv6 addresses, no TLVs:
	// the preamble and 36 bytes of addresses and ports.
	V2IPv6 = 16 + 36
)

// v2Sig starts every v2 header.
var v2Sig = [12]byte{'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'}

// is4 reports whether a header for src and dst is IPv4's: both addresses
// are IPv4, plain or mapped.
func is4(src, dst netip.Addr) bool {
	return (src.Is4() || src.Is4In6()) && (dst.Is4() || dst.Is4In6())
}

// V1 writes a v1 header for a TCP connection from src to dst at the start
// of b and returns its length: TCP4 when both addresses are IPv4 (mapped
// or not), TCP6 otherwise, an IPv4 address among them written mapped
// (::ffff:a.b.c.d) and a zone dropped. It returns 0 when b is shorter than
// the longest header of that family (MaxV1IPv4, MaxV1) or an address is
// not valid.
func V1(b []byte, src, dst netip.AddrPort) int {
	sa, da := src.Addr(), dst.Addr()
	if !sa.IsValid() || !da.IsValid() {
		return 0
	}
	var w []byte
	if is4(sa, da) {
		if len(b) < MaxV1IPv4 {
			return 0
		}
		sa, da = sa.Unmap(), da.Unmap()
		w = append(b[:0], "PROXY TCP4 "...)
	} else {
		if len(b) < MaxV1 {
			return 0
		}
		// As16 maps an IPv4 address and drops a zone, which the spec's
		// address format has no room for.
		sa, da = netip.AddrFrom16(sa.As16()), netip.AddrFrom16(da.As16())
		w = append(b[:0], "PROXY TCP6 "...)
	}
	w = sa.AppendTo(w)
	w = append(w, ' ')
	w = da.AppendTo(w)
	w = append(w, ' ')
	w = strconv.AppendUint(w, uint64(src.Port()), 10)
	w = append(w, ' ')
	w = strconv.AppendUint(w, uint64(dst.Port()), 10)
	w = append(w, '\r', '\n')
	return len(w)
}

// V2 writes a v2 PROXY command for a connection (Stream) or datagram
// (Datagram) from src to dst at the start of b and returns its length:
// V2IPv4 (AF_INET) when both addresses are IPv4, mapped or not, V2IPv6
// (AF_INET6) otherwise, an IPv4 address among them mapped. It returns 0
// when b is shorter, an address is not valid or the transport unknown.
func V2(b []byte, t Transport, src, dst netip.AddrPort) int {
	sa, da := src.Addr(), dst.Addr()
	if !sa.IsValid() || !da.IsValid() {
		return 0
	}
	if is4(sa, da) {
		return V2Raw4(b, t, sa.Unmap().As4(), da.Unmap().As4(), src.Port(), dst.Port())
	}
	return V2Raw6(b, t, sa.As16(), da.As16(), src.Port(), dst.Port())
}

// V2Raw4 is V2 for IPv4 addresses already in wire form, for a data path
// that has them as bytes: it writes the V2IPv4 bytes at the start of b
// (which must hold them) and returns V2IPv4, or 0 for a short b or an
// unknown transport.
func V2Raw4(b []byte, t Transport, src, dst [4]byte, sport, dport uint16) int {
	if len(b) < V2IPv4 || (t != Stream && t != Datagram) {
		return 0
	}
	copy(b, v2Sig[:])
	b[12] = 0x21           // version 2, command PROXY
	b[13] = 0x10 | byte(t) // AF_INET, then the transport
	binary.BigEndian.PutUint16(b[14:], 12)
	copy(b[16:], src[:])
	copy(b[20:], dst[:])
	binary.BigEndian.PutUint16(b[24:], sport)
	binary.BigEndian.PutUint16(b[26:], dport)
	return V2IPv4
}

// V2Raw6 is V2Raw4 for IPv6: it writes the V2IPv6 bytes of an AF_INET6
// header at the start of b and returns V2IPv6, or 0 for a short b or an
// unknown transport. It writes the addresses as given, mapped ones too:
// choosing the family is the caller's (V2 chooses IPv4 for mapped pairs).
func V2Raw6(b []byte, t Transport, src, dst [16]byte, sport, dport uint16) int {
	if len(b) < V2IPv6 || (t != Stream && t != Datagram) {
		return 0
	}
	copy(b, v2Sig[:])
	b[12] = 0x21           // version 2, command PROXY
	b[13] = 0x20 | byte(t) // AF_INET6, then the transport
	binary.BigEndian.PutUint16(b[14:], 36)
	copy(b[16:], src[:])
	copy(b[32:], dst[:])
	binary.BigEndian.PutUint16(b[48:], sport)
	binary.BigEndian.PutUint16(b[50:], dport)
	return V2IPv6
}

// V2Sum4 is the one's-complement sum (RFC 1071, unfolded) of the 16-bit
// words of the header V2Raw4 writes for the same arguments, without
// reading it back: the fixed preamble's words plus the addresses' and
// ports'. A checksum update adds it for the header's bytes.
func V2Sum4(t Transport, src, dst [4]byte, sport, dport uint16) uint32 {
	s := v2SigSum + 0x2110 + uint32(t) + 12
	s += uint32(src[0])<<8 | uint32(src[1])
	s += uint32(src[2])<<8 | uint32(src[3])
	s += uint32(dst[0])<<8 | uint32(dst[1])
	s += uint32(dst[2])<<8 | uint32(dst[3])
	return s + uint32(sport) + uint32(dport)
}

// V2Sum6 is V2Sum4 for the header V2Raw6 writes. Its 20 address and port
// words and the preamble's 8 sum to less than 2^21, so the uint32 never
// carries out.
func V2Sum6(t Transport, src, dst [16]byte, sport, dport uint16) uint32 {
	s := v2SigSum + 0x2120 + uint32(t) + 36
	for i := 0; i < 16; i += 2 {
		s += uint32(src[i])<<8 | uint32(src[i+1])
		s += uint32(dst[i])<<8 | uint32(dst[i+1])
	}
	return s + uint32(sport) + uint32(dport)
}

// v2SigSum is the sum of v2Sig's six 16-bit words.
const v2SigSum = 0x0d0a + 0x0d0a + 0x000d + 0x0a51 + 0x5549 + 0x540a
