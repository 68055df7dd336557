package proxyhdr

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
)

// check reads a header back with go-proxyproto and compares what it says.
func check(t testing.TB, hdr []byte, version byte, tr proxyproto.AddressFamilyAndProtocol, src, dst netip.AddrPort) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(append(hdr, "payload"...)))
	h, err := proxyproto.Read(r)
	if err != nil {
		t.Fatalf("%q: %v", hdr, err)
	}
	if h.Version != version || h.TransportProtocol != tr || h.Command != proxyproto.PROXY {
		t.Fatalf("%q: version %d, %v, command %v", hdr, h.Version, h.TransportProtocol, h.Command)
	}
	var gs, gd netip.AddrPort
	switch a := h.SourceAddr.(type) {
	case *net.TCPAddr:
		gs, gd = a.AddrPort(), h.DestinationAddr.(*net.TCPAddr).AddrPort()
	case *net.UDPAddr:
		gs, gd = a.AddrPort(), h.DestinationAddr.(*net.UDPAddr).AddrPort()
	}
	if gs.Addr().Unmap() != src.Addr() || gs.Port() != src.Port() || gd.Addr().Unmap() != dst.Addr() || gd.Port() != dst.Port() {
		t.Fatalf("%q: read %v -> %v, wrote %v -> %v", hdr, gs, gd, src, dst)
	}
	if rest, _ := r.Peek(7); string(rest) != "payload" {
		t.Fatalf("%q: the header's length is wrong: %q follows", hdr, rest)
	}
}

func TestHeadersReadBack(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"172.25.254.1:40000", "172.25.254.100:80"},
		{"255.255.255.255:65535", "255.255.255.255:65535"},
		{"0.0.0.1:1", "10.0.0.1:0"},
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		var b [MaxV1]byte
		n := V1(b[:], src, dst)
		if n == 0 || n > MaxV1 {
			t.Fatalf("V1 %v: %d", c, n)
		}
		check(t, b[:n], 1, proxyproto.TCPv4, src, dst)
		for _, tr := range []struct {
			t    Transport
			want proxyproto.AddressFamilyAndProtocol
		}{{Stream, proxyproto.TCPv4}, {Datagram, proxyproto.UDPv4}} {
			if n := V2(b[:], tr.t, src, dst); n != V2IPv4 {
				t.Fatalf("V2: %d", n)
			}
			check(t, b[:V2IPv4], 2, tr.want, src, dst)
		}
	}
	if n := V1(make([]byte, 56), netip.MustParseAddrPort("255.255.255.255:65535"), netip.MustParseAddrPort("255.255.255.255:65535")); n != 56 || MaxV1 != 56 {
		t.Fatalf("the longest v1 header is %d bytes, MaxV1 %d", n, MaxV1)
	}
}

func TestRefusesWhatItCannotWrite(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("[2001:db8::1]:1")
	if V1(make([]byte, MaxV1-1), v4, v4) != 0 || V2(make([]byte, V2IPv4-1), Stream, v4, v4) != 0 {
		t.Fatal("wrote into a short buffer")
	}
	if V1(make([]byte, 200), v6, v4) != 0 || V2(make([]byte, 200), Stream, v4, v6) != 0 || V2(make([]byte, 200), 3, v4, v4) != 0 {
		t.Fatal("wrote a header it cannot")
	}
}

func TestNoAllocations(t *testing.T) {
	src, dst := netip.MustParseAddrPort("172.25.254.1:40000"), netip.MustParseAddrPort("172.25.254.100:80")
	var b [MaxV1]byte
	if n := testing.AllocsPerRun(100, func() { V1(b[:], src, dst); V2(b[:], Datagram, src, dst) }); n != 0 {
		t.Fatalf("%v allocations a header", n)
	}
}

func FuzzHeaders(f *testing.F) {
	f.Add([]byte{172, 25, 254, 1, 0x9c, 0x40, 172, 25, 254, 100, 0, 80})
	f.Add(make([]byte, 12))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 12 {
			return
		}
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(in[0:4])), uint16(in[4])<<8|uint16(in[5]))
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(in[6:10])), uint16(in[10])<<8|uint16(in[11]))
		var b [MaxV1]byte
		check(t, b[:V1(b[:], src, dst)], 1, proxyproto.TCPv4, src, dst)
		check(t, b[:V2(b[:], Stream, src, dst)], 2, proxyproto.TCPv4, src, dst)
	})
}

// V2Sum4 is the sum of the header's words, as read back from what V2Raw4
// wrote.
func TestV2Sum4(t *testing.T) {
	for _, c := range []struct {
		src, dst     [4]byte
		sport, dport uint16
	}{{[4]byte{172, 25, 254, 1}, [4]byte{172, 25, 254, 100}, 40000, 53}, {[4]byte{255, 255, 255, 255}, [4]byte{255, 255, 255, 255}, 65535, 65535}, {}} {
		for _, tr := range []Transport{Stream, Datagram} {
			var b [V2IPv4]byte
			V2Raw4(b[:], tr, c.src, c.dst, c.sport, c.dport)
			var want uint32
			for i := 0; i < V2IPv4; i += 2 {
				want += uint32(b[i])<<8 | uint32(b[i+1])
			}
			if got := V2Sum4(tr, c.src, c.dst, c.sport, c.dport); got != want {
				t.Fatalf("%+v %v: sum %#x, the bytes sum to %#x", c, tr, got, want)
			}
		}
	}
}
