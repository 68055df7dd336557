package wire_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tapvs/tapvs/synproxy"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/wire"
)

// Every frame Write lays out, IPv4 and IPv6, is the frame gopacket builds
// from the same fields with its own lengths and checksums, byte for byte.
func TestSegmentWriteMatchesGopacket(t *testing.T) {
	opts := make([]byte, 20)
	n := (&synproxy.SynOptions{MSS: 1440, WScale: 7, SACKPerm: true, TS: true, TSval: 0xdeadbeef, TSecr: 7}).Write(opts)
	for _, c := range []struct {
		src, dst string
		v4       bool
		opts     []byte
	}{
		{"172.25.254.100", "172.25.254.1", true, opts[:n]},
		{"255.255.255.255", "0.0.0.0", true, nil},
		{"2001:db8::100", "2001:db8::1", false, opts[:n]},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::", false, nil},
		{"::ffff:10.0.0.1", "2001:db8::1", false, nil}, // one mapped address: not IPv4
		{"::1.2.3.4", "::5.6.7.8", false, nil},         // IPv4-compatible, not mapped
	} {
		seg := wire.Segment{
			SrcMAC: [6]byte{2, 0, 0, 0, 0, 1}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2},
			Src: netip.MustParseAddr(c.src).As16(), Dst: netip.MustParseAddr(c.dst).As16(),
			Sport: 80, Dport: 40000, Seq: 0xfffffff0, Ack: 12345, Flags: tcpflag.SYN | tcpflag.ACK, Window: 65535, Opts: c.opts,
		}
		if seg.V4() != c.v4 {
			t.Fatalf("%s -> %s: V4 %v", c.src, c.dst, seg.V4())
		}
		b := make([]byte, 200)
		for i := range b {
			b[i] = 0xa5 // stale bytes Write must overwrite
		}
		n := seg.Write(b)
		if n != seg.FrameLen() {
			t.Fatalf("%s: wrote %d, FrameLen %d", c.src, n, seg.FrameLen())
		}
		p := gopacket.NewPacket(b[:n], layers.LayerTypeEthernet, gopacket.Default)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil {
			t.Fatalf("%s: no TCP in % x", c.src, b[:n])
		}
		var ip gopacket.NetworkLayer
		want := 14 + 20 + 20 + len(c.opts)
		if c.v4 {
			ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip4 == nil || ip4.TTL != 64 || ip4.Flags != layers.IPv4DontFragment || ip4.Protocol != layers.IPProtocolTCP ||
				!ip4.SrcIP.Equal(netip.MustParseAddr(c.src).AsSlice()) || !ip4.DstIP.Equal(netip.MustParseAddr(c.dst).AsSlice()) {
				t.Fatalf("%s: IPv4 header %+v", c.src, ip4)
			}
			ip = ip4
		} else {
			ip6, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			if ip6 == nil || ip6.HopLimit != 64 || ip6.NextHeader != layers.IPProtocolTCP || ip6.FlowLabel != 0 || ip6.TrafficClass != 0 ||
				!bytes.Equal(ip6.SrcIP, seg.Src[:]) || !bytes.Equal(ip6.DstIP, seg.Dst[:]) {
				t.Fatalf("%s: IPv6 header %+v", c.src, ip6)
			}
			ip = ip6
			want += 20
		}
		if n != want || n > wire.MaxFrameLen {
			t.Fatalf("%s: %d bytes, want %d", c.src, n, want)
		}
		if tcp.SrcPort != 80 || tcp.DstPort != 40000 || tcp.Seq != seg.Seq || tcp.Ack != seg.Ack || !tcp.SYN || !tcp.ACK || tcp.RST || tcp.Window != 65535 || len(tcp.Options) == 0 && len(c.opts) > 0 {
			t.Fatalf("%s: TCP header %+v", c.src, tcp)
		}
		// Serialized again with gopacket's own lengths and checksums.
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		buf := gopacket.NewSerializeBuffer()
		ls := []gopacket.SerializableLayer{p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet), ip.(gopacket.SerializableLayer), tcp}
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			t.Fatal(err)
		}
		// gopacket pads a short frame to Ethernet's 60 bytes; a TAP needs
		// no padding, so Write adds none.
		if g := buf.Bytes(); len(g) < n || !bytes.Equal(g[:n], b[:n]) || len(g) > max(n, 60) {
			t.Fatalf("%s -> %s:\nwrote    % x\ngopacket % x", c.src, c.dst, b[:n], buf.Bytes())
		}
	}
}

func TestSegmentWriteNoAllocations(t *testing.T) {
	var b [128]byte
	opts := []byte{2, 4, 5, 0xa0}
	for _, a := range []string{"172.25.254.1", "2001:db8::1"} {
		seg := wire.Segment{Src: netip.MustParseAddr(a).As16(), Dst: netip.MustParseAddr(a).As16(), Opts: opts}
		if n := testing.AllocsPerRun(100, func() { seg.Write(b[:]) }); n != 0 {
			t.Fatalf("%s: %v allocations a segment", a, n)
		}
	}
}

func TestAddr4(t *testing.T) {
	a := wire.Addr4([4]byte{172, 25, 254, 1})
	if a != netip.MustParseAddr("::ffff:172.25.254.1").As16() || !wire.Is4(&a) {
		t.Fatalf("Addr4: % x", a)
	}
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	if wire.Is4(&v6) {
		t.Fatal("an IPv6 address is IPv4")
	}
}

func BenchmarkSegmentWrite(b *testing.B) {
	var buf [128]byte
	for _, a := range []string{"172.25.254.1", "2001:db8::1"} {
		seg := wire.Segment{Src: netip.MustParseAddr(a).As16(), Dst: netip.MustParseAddr(a).As16(), Opts: []byte{2, 4, 5, 0xa0, 1, 3, 3, 7}}
		b.Run(a, func(b *testing.B) {
			for b.Loop() {
				seg.Write(buf[:])
			}
		})
	}
}

// The longest segment fits wire.MaxFrameLen exactly.
func TestMaxFrameLen(t *testing.T) {
	seg := wire.Segment{Src: netip.MustParseAddr("2001:db8::1").As16(), Opts: make([]byte, 40)}
	var b [wire.MaxFrameLen]byte
	if n := seg.Write(b[:]); n != wire.MaxFrameLen {
		t.Fatalf("%d bytes, wire.MaxFrameLen %d", n, wire.MaxFrameLen)
	}
}
