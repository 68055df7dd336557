// Package proxyhdr writes HAProxy's PROXY protocol headers (v1 and v2;
// doc/proxy-protocol.txt in HAProxy's tree) into a buffer the data path
// owns, without allocating: tapvs puts one before a connection's first
// bytes toward a real server, or before each datagram of a UDP service, so
// the server learns the client's address that FULLNAT hides.
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
	// MaxV1 is the longest v1 header for IPv4: "PROXY TCP4 " + two
	// addresses of 15 characters, two ports of 5, three spaces and CRLF.
	MaxV1 = len("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n")
	// V2IPv4 is the length of a v2 header for IPv4 addresses, no TLVs:
	// the 16-byte preamble and 12 bytes of addresses and ports.
	V2IPv4 = 16 + 12
)

// v2Sig starts every v2 header.
var v2Sig = [12]byte{'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'}

// V1 writes a v1 header for a TCP connection from src to dst (IPv4) at the
// start of b and returns its length, or 0 when b is shorter than MaxV1 or
// an address is not IPv4.
func V1(b []byte, src, dst netip.AddrPort) int {
	if len(b) < MaxV1 || !src.Addr().Is4() || !dst.Addr().Is4() {
		return 0
	}
	w := append(b[:0], "PROXY TCP4 "...)
	w = src.Addr().AppendTo(w)
	w = append(w, ' ')
	w = dst.Addr().AppendTo(w)
	w = append(w, ' ')
	w = strconv.AppendUint(w, uint64(src.Port()), 10)
	w = append(w, ' ')
	w = strconv.AppendUint(w, uint64(dst.Port()), 10)
	w = append(w, '\r', '\n')
	return len(w)
}

// V2 writes a v2 PROXY command for a connection (Stream) or datagram
// (Datagram) from src to dst (IPv4) at the start of b and returns its
// length, V2IPv4, or 0 when b is shorter or an address is not IPv4.
func V2(b []byte, t Transport, src, dst netip.AddrPort) int {
	if len(b) < V2IPv4 || !src.Addr().Is4() || !dst.Addr().Is4() || (t != Stream && t != Datagram) {
		return 0
	}
	return V2Raw4(b, t, src.Addr().As4(), dst.Addr().As4(), src.Port(), dst.Port())
}

// V2Raw4 is V2 for addresses already in wire form, for a data path that
// has them as bytes: it writes the V2IPv4 bytes at the start of b (which
// must hold them) and returns V2IPv4, or 0 for a short b or an unknown
// transport.
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

// v2SigSum is the sum of v2Sig's six 16-bit words.
const v2SigSum = 0x0d0a + 0x0d0a + 0x000d + 0x0a51 + 0x5549 + 0x540a
