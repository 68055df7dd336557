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
	copy(b, v2Sig[:])
	b[12] = 0x21           // version 2, command PROXY
	b[13] = 0x10 | byte(t) // AF_INET, then the transport
	binary.BigEndian.PutUint16(b[14:], 12)
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[16:], s[:])
	copy(b[20:], d[:])
	binary.BigEndian.PutUint16(b[24:], src.Port())
	binary.BigEndian.PutUint16(b[26:], dst.Port())
	return V2IPv4
}
