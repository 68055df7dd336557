package proxyhdr

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/tapvs/tapvs/csum"
)

// check reads a header back with go-proxyproto and compares what it says
// with what was written: the same addresses (an IPv4 one read back mapped
// from a TCP6 header is the same address), ports and length.
func check(t testing.TB, hdr []byte, version byte, tr proxyproto.AddressFamilyAndProtocol, src, dst netip.AddrPort) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(append(hdr, "payload"...)))
	h, err := proxyproto.Read(r)
	if err != nil {
		t.Fatalf("%q: %v", hdr, err)
	}
	if h.Version != version || h.TransportProtocol != tr || h.Command != proxyproto.PROXY {
		t.Fatalf("%q: version %d, %v, command %v; want version %d, %v", hdr, h.Version, h.TransportProtocol, h.Command, version, tr)
	}
	var gs, gd netip.AddrPort
	switch a := h.SourceAddr.(type) {
	case *net.TCPAddr:
		gs, gd = a.AddrPort(), h.DestinationAddr.(*net.TCPAddr).AddrPort()
	case *net.UDPAddr:
		gs, gd = a.AddrPort(), h.DestinationAddr.(*net.UDPAddr).AddrPort()
	}
	if gs.Addr().Unmap() != src.Addr().Unmap().WithZone("") || gs.Port() != src.Port() ||
		gd.Addr().Unmap() != dst.Addr().Unmap().WithZone("") || gd.Port() != dst.Port() {
		t.Fatalf("%q: read %v -> %v, wrote %v -> %v", hdr, gs, gd, src, dst)
	}
	if rest, _ := r.Peek(7); string(rest) != "payload" {
		t.Fatalf("%q: the header's length is wrong: %q follows", hdr, rest)
	}
}

// v4 reports whether a header for src and dst is IPv4's, as the tests
// expect it: both addresses IPv4 once unmapped.
func v4(src, dst netip.AddrPort) bool {
	return src.Addr().Unmap().Is4() && dst.Addr().Unmap().Is4()
}

// writeAll writes and checks v1 and both v2 headers for src -> dst.
func writeAll(t testing.TB, src, dst netip.AddrPort) {
	t.Helper()
	var b [MaxV1]byte
	v1, stream, dgram, v2len := proxyproto.TCPv6, proxyproto.TCPv6, proxyproto.UDPv6, V2IPv6
	if v4(src, dst) {
		v1, stream, dgram, v2len = proxyproto.TCPv4, proxyproto.TCPv4, proxyproto.UDPv4, V2IPv4
	}
	n := V1(b[:], src, dst)
	if n == 0 || n > MaxV1 || v2len == V2IPv4 && n > MaxV1IPv4 {
		t.Fatalf("V1 %v -> %v: %d", src, dst, n)
	}
	check(t, b[:n], 1, v1, src, dst)
	for _, tr := range []struct {
		t    Transport
		want proxyproto.AddressFamilyAndProtocol
	}{{Stream, stream}, {Datagram, dgram}} {
		if n := V2(b[:], tr.t, src, dst); n != v2len {
			t.Fatalf("V2 %v -> %v: %d, want %d", src, dst, n, v2len)
		}
		check(t, b[:v2len], 2, tr.want, src, dst)
	}
}

func TestHeadersReadBack(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"172.25.254.1:40000", "172.25.254.100:80"},
		{"255.255.255.255:65535", "255.255.255.255:65535"},
		{"0.0.0.1:1", "10.0.0.1:0"},
		{"[::ffff:172.25.254.1]:40000", "[::ffff:172.25.254.100]:80"}, // mapped: IPv4
		{"[::ffff:172.25.254.1]:40000", "172.25.254.100:80"},
		{"[2001:db8::1]:40000", "[2001:db8::100]:443"},
		{"[::]:0", "[::1]:1"},
		{"[fe80::1%eth0]:1", "[fe80::2%eth0]:2"}, // zones dropped
		{"[1111:2222:3333:4444:5555:6666:7777:8888]:65535", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
		{"172.25.254.1:40000", "[2001:db8::100]:80"}, // mixed: IPv6, the IPv4 one mapped
		{"[2001:db8::1]:40000", "[::ffff:10.0.0.1]:80"},
		{"[::1.2.3.4]:5", "[::5.6.7.8]:9"}, // IPv4-compatible addresses are IPv6
	} {
		writeAll(t, netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst))
	}
	if n := V1(make([]byte, 56), netip.MustParseAddrPort("255.255.255.255:65535"), netip.MustParseAddrPort("255.255.255.255:65535")); n != 56 || MaxV1IPv4 != 56 {
		t.Fatalf("the longest IPv4 v1 header is %d bytes, MaxV1IPv4 %d", n, MaxV1IPv4)
	}
	longest := netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
	if n := V1(make([]byte, 104), longest, longest); n != 104 || MaxV1 != 104 {
		t.Fatalf("the longest v1 header is %d bytes, MaxV1 %d", n, MaxV1)
	}
}

// The exact bytes, against the spec's layout: v1 text and the v2 family
// bytes (0x11/0x12 IPv4, 0x21/0x22 IPv6) and address lengths (12, 36).
func TestExactBytes(t *testing.T) {
	var b [MaxV1]byte
	for _, c := range []struct{ src, dst, line string }{
		{"10.0.0.1:1", "10.0.0.2:2", "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n"},
		{"[::ffff:10.0.0.1]:1", "[::ffff:10.0.0.2]:2", "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n"},
		{"[2001:db8::1]:1", "[2001:db8::2]:2", "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"},
		{"10.0.0.1:1", "[2001:db8::2]:2", "PROXY TCP6 ::ffff:10.0.0.1 2001:db8::2 1 2\r\n"},
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		if n := V1(b[:], src, dst); string(b[:n]) != c.line {
			t.Fatalf("V1 %q, want %q", b[:n], c.line)
		}
	}
	six := [16]byte{0x20, 1, 0xd, 0xb8, 15: 1}
	for _, tr := range []Transport{Stream, Datagram} {
		n := V2Raw6(b[:], tr, six, [16]byte{15: 2}, 0x1234, 0x5678)
		want := append(append(v2Sig[:], 0x21, 0x20|byte(tr), 0, 36), six[:]...)
		want = append(append(want, make([]byte, 15)...), 2, 0x12, 0x34, 0x56, 0x78)
		if n != V2IPv6 || V2IPv6 != 52 || !bytes.Equal(b[:n], want) {
			t.Fatalf("V2Raw6 % x\nwant % x", b[:n], want)
		}
		n = V2Raw4(b[:], tr, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 1, 2)
		want = append(append(v2Sig[:], 0x21, 0x10|byte(tr), 0, 12), 10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2)
		if n != V2IPv4 || !bytes.Equal(b[:n], want) {
			t.Fatalf("V2Raw4 % x\nwant % x", b[:n], want)
		}
	}
}

func TestRefusesWhatItCannotWrite(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("[2001:db8::1]:1")
	if V1(make([]byte, MaxV1IPv4-1), v4, v4) != 0 || V2(make([]byte, V2IPv4-1), Stream, v4, v4) != 0 {
		t.Fatal("wrote into a short buffer")
	}
	if V1(make([]byte, MaxV1-1), v6, v6) != 0 || V1(make([]byte, MaxV1-1), v4, v6) != 0 || V2(make([]byte, V2IPv6-1), Stream, v6, v6) != 0 ||
		V2(make([]byte, V2IPv6-1), Datagram, v4, v6) != 0 || V2Raw6(make([]byte, V2IPv6-1), Stream, [16]byte{}, [16]byte{}, 1, 1) != 0 {
		t.Fatal("wrote an IPv6 header into a short buffer")
	}
	if V1(make([]byte, MaxV1IPv4), v4, v4) == 0 || V2(make([]byte, V2IPv4), Stream, v4, v4) == 0 {
		t.Fatal("an IPv4 header refused a buffer that holds it")
	}
	var bad netip.AddrPort
	if V1(make([]byte, 200), bad, v4) != 0 || V1(make([]byte, 200), v6, bad) != 0 || V2(make([]byte, 200), Stream, bad, v4) != 0 ||
		V2(make([]byte, 200), Datagram, v6, bad) != 0 || V2(make([]byte, 200), 3, v4, v4) != 0 || V2(make([]byte, 200), 0, v6, v6) != 0 ||
		V2Raw6(make([]byte, 200), 3, [16]byte{}, [16]byte{}, 1, 1) != 0 {
		t.Fatal("wrote a header it cannot")
	}
}

func TestNoAllocations(t *testing.T) {
	var b [MaxV1]byte
	for _, c := range []struct{ src, dst string }{
		{"172.25.254.1:40000", "172.25.254.100:80"},
		{"[2001:db8::1]:40000", "[2001:db8:ffff::100]:80"},
		{"172.25.254.1:40000", "[2001:db8::100]:80"},
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		s6, d6 := src.Addr().As16(), dst.Addr().As16()
		if n := testing.AllocsPerRun(100, func() {
			V1(b[:], src, dst)
			V2(b[:], Datagram, src, dst)
			V2Raw6(b[:], Stream, s6, d6, 1, 2)
			V2Sum6(Stream, s6, d6, 1, 2)
		}); n != 0 {
			t.Fatalf("%v: %v allocations a header", c, n)
		}
	}
}

// FuzzHeaders: any addresses and ports, IPv4 (12 bytes of input), IPv6
// (36: two 16-byte addresses, mapped ones included, and the ports) and a
// mixed pair: every header reads back as written, and the v2 sums agree
// with the bytes.
func FuzzHeaders(f *testing.F) {
	f.Add([]byte{172, 25, 254, 1, 0x9c, 0x40, 172, 25, 254, 100, 0, 80})
	f.Add(make([]byte, 12))
	f.Add([]byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x9c, 0x40, 0, 80})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2, 0, 1, 0, 2})
	f.Add(bytes.Repeat([]byte{0xff}, 36))
	f.Fuzz(func(t *testing.T, in []byte) {
		switch {
		case len(in) >= 36:
			src := netip.AddrPortFrom(netip.AddrFrom16([16]byte(in[0:16])), uint16(in[32])<<8|uint16(in[33]))
			dst := netip.AddrPortFrom(netip.AddrFrom16([16]byte(in[16:32])), uint16(in[34])<<8|uint16(in[35]))
			writeAll(t, src, dst)
			mixed := netip.AddrPortFrom(netip.AddrFrom4([4]byte(in[0:4])), src.Port())
			writeAll(t, mixed, dst)
			writeAll(t, dst, mixed)
			sums(t, [16]byte(in[0:16]), [16]byte(in[16:32]), src.Port(), dst.Port())
		case len(in) >= 12:
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(in[0:4])), uint16(in[4])<<8|uint16(in[5]))
			dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(in[6:10])), uint16(in[10])<<8|uint16(in[11]))
			writeAll(t, src, dst)
			s16, d16 := src.Addr().As16(), dst.Addr().As16()
			sums(t, s16, d16, src.Port(), dst.Port())
		}
	})
}

// sums checks V2Sum4 (on the last 4 bytes of each address) and V2Sum6
// against csum over the bytes V2Raw4 and V2Raw6 write, and against the
// words summed one at a time (V2Sum4/6 are unfolded sums).
func sums(t testing.TB, src, dst [16]byte, sport, dport uint16) {
	t.Helper()
	for _, tr := range []Transport{Stream, Datagram} {
		var b [V2IPv6]byte
		n := V2Raw6(b[:], tr, src, dst, sport, dport)
		want := words(b[:n])
		if got := V2Sum6(tr, src, dst, sport, dport); got != want || csum.Fold(got) != csum.Fold(csum.Sum(b[:n], 0)) {
			t.Fatalf("V2Sum6 %#x, the bytes' words sum to %#x, csum %#x", got, want, csum.Fold(csum.Sum(b[:n], 0)))
		}
		s4, d4 := [4]byte(src[12:]), [4]byte(dst[12:])
		n = V2Raw4(b[:], tr, s4, d4, sport, dport)
		want = words(b[:n])
		if got := V2Sum4(tr, s4, d4, sport, dport); got != want || csum.Fold(got) != csum.Fold(csum.Sum(b[:n], 0)) {
			t.Fatalf("V2Sum4 %#x, the bytes' words sum to %#x", got, want)
		}
	}
}

// words is the unfolded sum of b's 16-bit words.
func words(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	return s
}

// The sums are the bytes' sums for the corners: all zero, all ones, and
// the lab's addresses.
func TestV2Sums(t *testing.T) {
	lab4, lab6 := netip.MustParseAddr("172.25.254.1").As16(), netip.MustParseAddr("2001:db8::1").As16()
	ones := [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for _, c := range []struct {
		src, dst     [16]byte
		sport, dport uint16
	}{{lab4, lab6, 40000, 53}, {ones, ones, 65535, 65535}, {}} {
		sums(t, c.src, c.dst, c.sport, c.dport)
	}
}

// A v1 header is text: no zone, no brackets, one space between fields.
func TestV1NoZone(t *testing.T) {
	var b [MaxV1]byte
	n := V1(b[:], netip.MustParseAddrPort("[fe80::1%eth0]:1"), netip.MustParseAddrPort("[fe80::2%eth0]:2"))
	if s := string(b[:n]); s != "PROXY TCP6 fe80::1 fe80::2 1 2\r\n" || strings.Contains(s, "%") {
		t.Fatalf("%q", s)
	}
}
