package nat

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// udpProxyRig is a UDP rig whose service puts a PROXY v2 header before each
// datagram toward its servers.
func udpProxyRig(t testing.TB, mod func(*Config)) *rig {
	t.Helper()
	r := newRig(t, UDP, "rr", mod)
	setClientAddr(t, r, ClientAddrProxyV2)
	return r
}

func setClientAddr(t testing.TB, r *rig, c ClientAddr) {
	t.Helper()
	if err := r.b.Update(func(tx *Tx) error { return tx.SetClientAddr(r.svc, c) }); err != nil {
		t.Fatal(err)
	}
}

func udpFrom(t testing.TB, sport uint16, payload []byte) *Frame {
	t.Helper()
	return frame(t, pktSpec{src: client, dst: vip, sport: sport, dport: 80, proto: UDP, payload: payload, srcMAC: macClient})
}

// regenerated has gopacket build the frame again from its decoded layers,
// lengths and checksums computed from scratch: a forwarded frame must be
// byte for byte what it builds.
func regenerated(t testing.TB, f *Frame) {
	t.Helper()
	pk := gopacket.NewPacket(f.Bytes(), layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if eth == nil || ip == nil || udp == nil {
		t.Fatalf("not Ethernet/IPv4/UDP: %v", pk)
	}
	sent := udp.Checksum // SerializeLayers overwrites it
	zero := sent == 0
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(udp.Payload)); err != nil {
		t.Fatal(err)
	}
	want := buf.Bytes()[:14+int(ip.Length)] // not gopacket's Ethernet padding
	switch {
	case zero:
		want[14+20+6], want[14+20+7] = 0, 0 // no checksum, as sent
	case sent == 0xffff && binary.BigEndian.Uint16(want[14+20+6:]) == 0:
		// gopacket writes a computed 0 as is; on the wire it is 0xffff
		// (RFC 768), which the receiver's sum takes as the same.
		want[14+20+6], want[14+20+7] = 0xff, 0xff
	}
	if !bytes.Equal(f.Bytes(), want) {
		t.Fatalf("frame differs from gopacket's own:\n got % x\nwant % x", f.Bytes(), want)
	}
}

// readProxy reads the PROXY header at the start of a datagram's payload
// with go-proxyproto and returns what it says and the payload after it.
func readProxy(t testing.TB, payload []byte) (src, dst netip.AddrPort, rest []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(payload))
	h, err := proxyproto.Read(br)
	if err != nil {
		t.Fatalf("% x: %v", payload, err)
	}
	if h.Version != 2 || h.Command != proxyproto.PROXY || h.TransportProtocol != proxyproto.UDPv4 {
		t.Fatalf("version %d, command %v, %v", h.Version, h.Command, h.TransportProtocol)
	}
	s, d := h.SourceAddr.(*net.UDPAddr).AddrPort(), h.DestinationAddr.(*net.UDPAddr).AddrPort()
	rest = payload[len(payload)-br.Buffered():]
	return netip.AddrPortFrom(s.Addr().Unmap(), s.Port()), netip.AddrPortFrom(d.Addr().Unmap(), d.Port()), rest
}

func TestUDPProxyV2Header(t *testing.T) {
	r := udpProxyRig(t, nil)
	for i, payload := range []string{"hello", "", "odd-length payload!"} {
		f := udpFrom(t, 40000, []byte(payload))
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("%q: verdict %v, drops %v", payload, v, r.b.Stats.Drops())
		}
		d := decode(t, f)
		regenerated(t, f)
		if d.udp.Checksum == 0 {
			t.Fatal("a checksummed datagram left with none")
		}
		if int(d.ip.Length) != 20+8+28+len(payload) || int(d.udp.Length) != 8+28+len(payload) {
			t.Fatalf("IP length %d, UDP length %d for %d bytes of payload", d.ip.Length, d.udp.Length, len(payload))
		}
		if addr(d.ip.SrcIP) != lip1 || uint16(d.udp.DstPort) != 8080 {
			t.Fatalf("not rewritten: %v -> %v:%d", d.ip.SrcIP, d.ip.DstIP, d.udp.DstPort)
		}
		src, dst, rest := readProxy(t, d.udp.Payload)
		if src != netip.AddrPortFrom(client, 40000) || dst != netip.AddrPortFrom(vip, 80) {
			t.Fatalf("header says %v -> %v", src, dst)
		}
		if string(rest) != payload {
			t.Fatalf("payload after the header %q, want %q", rest, payload)
		}
		if n := r.b.Stats.UDPProxyHeaders(); n != uint64(i+1) {
			t.Fatalf("%d headers counted after %d datagrams", n, i+1)
		}
	}
}

func TestUDPProxyV2ZeroChecksumStaysZero(t *testing.T) {
	r := udpProxyRig(t, nil)
	f := udpFrom(t, 40000, []byte("x"))
	b := f.Bytes()
	b[14+20+6], b[14+20+7] = 0, 0
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatal(v)
	}
	d := decode(t, f)
	if d.udp.Checksum != 0 {
		t.Fatalf("checksum %#x, want 0 (none)", d.udp.Checksum)
	}
	regenerated(t, f) // the IP checksum and both lengths
	if _, _, rest := readProxy(t, d.udp.Payload); string(rest) != "x" {
		t.Fatalf("payload %q", rest)
	}
}

// A datagram whose checksum comes to 0 is sent as 0xffff, never as 0 (no
// checksum). The second datagram's payload is the first's plus the first's
// checksum (one's complement), so its own sums to 0 on the same flow.
func TestUDPProxyV2ComputedZeroIsAllOnes(t *testing.T) {
	r := udpProxyRig(t, nil)
	f := udpFrom(t, 40000, []byte("zz"))
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatal(v)
	}
	c := binary.BigEndian.Uint16(f.Bytes()[14+20+6:])
	w := csum.Fold(uint32(binary.BigEndian.Uint16([]byte("zz"))) + uint32(c))
	payload := binary.BigEndian.AppendUint16(nil, w)
	f = udpFrom(t, 40000, payload)
	if binary.BigEndian.Uint16(f.Bytes()[14+20+6:]) == 0 {
		t.Fatal("the client's own checksum is 0: pick another payload")
	}
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatal(v)
	}
	if got := binary.BigEndian.Uint16(f.Bytes()[14+20+6:]); got != 0xffff {
		t.Fatalf("checksum %#04x, want 0xffff (0 would mean none)", got)
	}
	decode(t, f)
	regenerated(t, f)
}

// A frame from a TAP with offload may carry a partial checksum (NEEDS_CSUM):
// the field holds the pseudo-header sum, the UDP length in it. Finishing it
// as the kernel does must give the right checksum over the header too.
func TestUDPProxyV2PartialChecksum(t *testing.T) {
	r := udpProxyRig(t, nil)
	f := udpFrom(t, 40000, []byte("partial"))
	b := f.Bytes()
	l4 := b[34 : 14+int(binary.BigEndian.Uint16(b[16:]))]
	binary.BigEndian.PutUint16(l4[6:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], wire.ProtoUDP, len(l4))))
	f.VNet = make(tun.VNetHdr, tun.VNetHdrLen)
	// The virtio-net header sits just before the frame, as a reader puts it.
	copy(f.Buf[f.Off-tun.VNetHdrLen:], f.VNet)
	f.VNet = f.Buf[f.Off-tun.VNetHdrLen : f.Off]
	f.VNet.SetNeedsCsum(34, 6)
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatal(v)
	}
	if &f.VNet[0] != &f.Buf[f.Off-tun.VNetHdrLen] || !f.VNet.NeedsCsum() || f.VNet.CsumStart() != 34 || f.VNet.CsumOffset() != 6 {
		t.Fatalf("virtio-net header %v not before the frame, or changed", f.VNet)
	}
	csum.Finish(f.Bytes()[34:], 6) // what the kernel does
	d := decode(t, f)
	regenerated(t, f)
	if _, _, rest := readProxy(t, d.udp.Payload); string(rest) != "partial" {
		t.Fatalf("payload %q", rest)
	}
}

// A datagram the header would take past the server side's MTU is dropped
// and counted; one that just fits is sent.
func TestUDPProxyV2TooBig(t *testing.T) {
	for _, mtu := range []int{0, 1500, 9000, 600} {
		r := udpProxyRig(t, func(c *Config) { c.ServerMTU = mtu })
		limit := mtu
		if limit == 0 {
			limit = 1500
		}
		fits := limit - 20 - 8 - 28
		f := udpFrom(t, 40000, make([]byte, fits))
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("MTU %d: %d bytes of payload: %v", mtu, fits, v)
		}
		if d := decode(t, f); int(d.ip.Length) != limit {
			t.Fatalf("MTU %d: sent %d bytes", mtu, d.ip.Length)
		}
		f = udpFrom(t, 40000, make([]byte, fits+1))
		before := append([]byte(nil), f.Bytes()...)
		if v := r.b.Process(ClientSide, f); v != Drop || r.b.Stats.Drop(DropUDPProxyBig) != 1 {
			t.Fatalf("MTU %d: %d bytes of payload: %v, udp_proxy_too_big %d", mtu, fits+1, v, r.b.Stats.Drop(DropUDPProxyBig))
		}
		if n := r.b.Stats.UDPProxyHeaders(); n != 1 {
			t.Fatalf("MTU %d: %d headers counted", mtu, n)
		}
		if !bytes.Equal(f.Bytes(), before) {
			t.Fatalf("MTU %d: the dropped frame was changed", mtu)
		}
	}
}

// A UDP GSO super-frame is dropped and counted: the kernel would cut it into
// datagrams after tapvs, and only the first would carry a header.
func TestUDPProxyV2GSODropped(t *testing.T) {
	for _, gso := range []uint8{tun.VNetGSOUDP, 5 /* VIRTIO_NET_HDR_GSO_UDP_L4 */} {
		r := udpProxyRig(t, nil)
		f := udpFrom(t, 40000, make([]byte, 3000))
		f.VNet = make(tun.VNetHdr, tun.VNetHdrLen)
		f.VNet.SetGSO(gso, 42, 1000)
		if v := r.b.Process(ClientSide, f); v != Drop || r.b.Stats.Drop(DropUDPProxyGSO) != 1 || r.b.Stats.UDPProxyHeaders() != 0 {
			t.Fatalf("GSO type %d: %v, udp_proxy_gso %d", gso, v, r.b.Stats.Drop(DropUDPProxyGSO))
		}
	}
	// Without proxy-v2 the super-frame goes on as before.
	r := newRig(t, UDP, "rr", nil)
	f := udpFrom(t, 40000, make([]byte, 3000))
	f.VNet = make(tun.VNetHdr, tun.VNetHdrLen)
	f.VNet.SetGSO(5, 42, 1000)
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatalf("GSO frame to a plain UDP service: %v", v)
	}
}

// Datagrams from the server reach the client as they were sent: no header
// is taken off, none added.
func TestUDPProxyV2ServerToClientUnchanged(t *testing.T) {
	r := udpProxyRig(t, nil)
	f := udpFrom(t, 40000, []byte("ask"))
	if r.b.Process(ClientSide, f) != Forward {
		t.Fatal("not forwarded")
	}
	d := decode(t, f)
	payload := []byte("answer")
	back := frame(t, pktSpec{src: addr(d.ip.DstIP), dst: lip1, sport: 8080, dport: uint16(d.udp.SrcPort), proto: UDP, payload: payload, srcMAC: macGateway})
	if v := r.b.Process(ServerSide, back); v != Forward {
		t.Fatal(v)
	}
	d = decode(t, back)
	regenerated(t, back)
	if !bytes.Equal(d.udp.Payload, payload) || int(d.udp.Length) != 8+len(payload) || addr(d.ip.DstIP) != client || uint16(d.udp.DstPort) != 40000 {
		t.Fatalf("reply %v:%d, %d bytes %q", d.ip.DstIP, d.udp.DstPort, d.udp.Length, d.udp.Payload)
	}
	if n := r.b.Stats.UDPProxyHeaders(); n != 1 {
		t.Fatalf("%d headers counted", n)
	}
}

// A flow keeps the mode it was made with; a change of the service's mode
// is for new flows.
func TestUDPProxyV2ModePerFlow(t *testing.T) {
	r := newRig(t, UDP, "rr", nil)
	hasHeader := func(sport uint16) bool {
		t.Helper()
		f := udpFrom(t, sport, []byte("data"))
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatal(v)
		}
		return int(decode(t, f).udp.Length) == 8+28+4
	}
	if hasHeader(1000) {
		t.Fatal("header on a service without proxy-v2")
	}
	setClientAddr(t, r, ClientAddrProxyV2)
	if hasHeader(1000) {
		t.Fatal("an open flow took the service's new mode")
	}
	if !hasHeader(2000) {
		t.Fatal("a new flow has no header")
	}
	setClientAddr(t, r, ClientAddrNone)
	if !hasHeader(2000) {
		t.Fatal("an open proxy-v2 flow lost its header")
	}
	if hasHeader(3000) {
		t.Fatal("a new flow has a header after proxy-v2 was turned off")
	}
}

// A capture shows the client's datagram as it came, and the server's as
// it left, with the header.
func TestUDPProxyV2Capture(t *testing.T) {
	r := udpProxyRig(t, nil)
	tap, err := r.b.StartTap(r.svc, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer r.b.StopTap(tap)
	f := udpFrom(t, 40000, []byte("seen, and long enough for no padding"))
	n := f.Len
	if r.b.Process(ClientSide, f) != Forward {
		t.Fatal("not forwarded")
	}
	before, after := <-tap.C, <-tap.C
	if before.After || len(before.Data) != n || !after.After || len(after.Data) != n+28 {
		t.Fatalf("captured %d bytes before, %d after; sent %d", len(before.Data), len(after.Data), n)
	}
}

func TestUDPProxyV2NoAllocs(t *testing.T) {
	r := udpProxyRig(t, nil)
	f := udpFrom(t, 40000, make([]byte, 512))
	if r.b.Process(ClientSide, f) != Forward {
		t.Fatal("not forwarded")
	}
	f = udpFrom(t, 40000, make([]byte, 512))
	orig, off := append([]byte(nil), f.Bytes()...), f.Off
	if n := testing.AllocsPerRun(1000, func() {
		copy(f.Buf[off:], orig)
		f.Off, f.Len = off, len(orig)
		if r.b.Process(ClientSide, f) != Forward {
			t.Fatal("not forwarded")
		}
	}); n != 0 {
		t.Fatalf("%v allocations a datagram", n)
	}
	if r.b.Stats.UDPProxyHeaders() < 1000 {
		t.Fatalf("%d headers", r.b.Stats.UDPProxyHeaders())
	}
}

// A frame with no headroom for the header (never one from a reader, which
// leaves netstack.Headroom) is dropped as too big, unchanged.
func TestUDPProxyV2NoHeadroom(t *testing.T) {
	r := udpProxyRig(t, nil)
	g := udpFrom(t, 40000, []byte("tight"))
	f := &Frame{Buf: append(make([]byte, udpProxyLen-1), g.Bytes()...), Off: udpProxyLen - 1, Len: g.Len}
	before := append([]byte(nil), f.Bytes()...)
	if v := r.b.Process(ClientSide, f); v != Drop || r.b.Stats.Drop(DropUDPProxyBig) != 1 || !bytes.Equal(f.Bytes(), before) {
		t.Fatalf("%v, udp_proxy_too_big %d", v, r.b.Stats.Drop(DropUDPProxyBig))
	}
	f = &Frame{Buf: append(make([]byte, udpProxyLen), g.Bytes()...), Off: udpProxyLen, Len: g.Len}
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatalf("with just enough room: %v", v)
	}
	decode(t, f)
}

// A TCP service's proxy-v2 is not this path's (the header goes once, at the
// stream's start): its segments get no datagram header.
func TestUDPProxyV2NotForTCP(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	setClientAddr(t, r, ClientAddrProxyV2)
	f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	n := f.Len
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatal(v)
	}
	if d := decode(t, f); d.tcp == nil || f.Len > n || r.b.Stats.UDPProxyHeaders() != 0 {
		t.Fatalf("a TCP SYN went through the UDP header path: %d bytes, was %d", f.Len, n)
	}
}
