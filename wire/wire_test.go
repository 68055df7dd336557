package wire

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/csum"
)

// The views are checked against gopacket, which builds and decodes frames
// with code of its own: each accessor reads what gopacket wrote, each
// setter writes what gopacket then decodes, and each Put writes a header
// gopacket decodes, checksums valid.

var (
	macA = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	macB = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	ip4A = net.IP{192, 0, 2, 1}
	ip4B = net.IP{198, 51, 100, 7}
	ip6A = net.ParseIP("2001:db8::1")
	ip6B = net.ParseIP("2001:db8:ffff::abcd")
)

// build serializes ls with gopacket's own lengths and checksums.
func build(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// serialized is one layer as gopacket serializes it, checksums computed.
func serialized(t *testing.T, l gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := l.SerializeTo(buf, gopacket.SerializeOptions{ComputeChecksums: true}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decode(t *testing.T, b []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if e := p.ErrorLayer(); e != nil {
		t.Fatalf("gopacket: %v in % x", e.Error(), b)
	}
	return p
}

// l4Layer is a gopacket transport layer whose checksum covers a
// pseudo-header.
type l4Layer interface {
	gopacket.SerializableLayer
	SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
}

// frameOf is an Ethernet frame from macA to macB carrying ip, l4 and the
// payload, built by gopacket.
func frameOf(t *testing.T, typ layers.EthernetType, ip gopacket.NetworkLayer, l4 l4Layer, payload string) []byte {
	t.Helper()
	if err := l4.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: typ}
	return build(t, eth, ip.(gopacket.SerializableLayer), l4, gopacket.Payload(payload))
}

func tcp4Frame(t *testing.T) []byte {
	ip := &layers.IPv4{Version: 4, TOS: 0xb8, Id: 0x1234, Flags: layers.IPv4DontFragment, TTL: 61, Protocol: layers.IPProtocolTCP, SrcIP: ip4A, DstIP: ip4B,
		Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}} // 4 bytes: IHL 6
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 0xfedcba98, Ack: 0x01234567, SYN: true, ACK: true, PSH: true, Window: 0xabcd, Urgent: 0,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}}}}
	return frameOf(t, layers.EthernetTypeIPv4, ip, tcp, "hello")
}

func TestEtherIPv4TCPAccessors(t *testing.T) {
	b := tcp4Frame(t)
	p := decode(t, b)
	geth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	gip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	gtcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)

	eth := Ether(b)
	if !bytes.Equal(eth.Dst(), geth.DstMAC) || !bytes.Equal(eth.Src(), geth.SrcMAC) || eth.Type() != uint16(geth.EthernetType) || eth.Type() != EtherIPv4 ||
		!bytes.Equal(eth.Payload(), geth.Payload) {
		t.Fatalf("Ether: dst %x src %x type %#x", eth.Dst(), eth.Src(), eth.Type())
	}
	ip := IPv4(eth.Payload())
	if ip.Version() != 4 || ip.HeaderLen() != int(gip.IHL)*4 || ip.HeaderLen() != 24 || ip.TOS() != gip.TOS || ip.TotalLen() != int(gip.Length) ||
		ip.ID() != gip.Id || ip.FragField() != uint16(gip.Flags)<<13|gip.FragOffset || ip.Fragment() ||
		ip.TTL() != gip.TTL || ip.Protocol() != uint8(gip.Protocol) || ip.Protocol() != ProtoTCP || ip.Checksum() != gip.Checksum ||
		!bytes.Equal(ip.Src(), gip.SrcIP) || !bytes.Equal(ip.Dst(), gip.DstIP) || !bytes.Equal(ip.Payload(), gip.Payload) {
		t.Fatalf("IPv4 view disagrees with gopacket's %+v", gip)
	}
	if binary.BigEndian.Uint16(ip.CsumField()) != gip.Checksum || csum.Checksum(ip[:ip.HeaderLen()], 0) != 0 {
		t.Fatal("IPv4 CsumField")
	}
	tcp := TCP(ip.Payload())
	if tcp.SrcPort() != uint16(gtcp.SrcPort) || tcp.DstPort() != uint16(gtcp.DstPort) || tcp.Seq() != gtcp.Seq || tcp.Ack() != gtcp.Ack ||
		tcp.HeaderLen() != int(gtcp.DataOffset)*4 || tcp.HeaderLen() != 24 || tcp.Flags() != 0x18|0x02 || tcp.Window() != gtcp.Window ||
		tcp.Checksum() != gtcp.Checksum || binary.BigEndian.Uint16(tcp.CsumField()) != gtcp.Checksum ||
		!bytes.Equal(tcp.Options(), []byte{2, 4, 5, 0xb4}) || !bytes.Equal(tcp.Payload(), []byte("hello")) {
		t.Fatalf("TCP view disagrees with gopacket's %+v", gtcp)
	}
}

func TestEtherIPv4TCPSetters(t *testing.T) {
	b := tcp4Frame(t)
	eth := Ether(b)
	eth.SetMACs(macA, macB) // swapped
	eth.SetType(EtherIPv4)
	ip := IPv4(eth.Payload())
	ip.SetTTL(9)
	ip.SetProtocol(ProtoTCP)
	ip.SetTotalLen(ip.TotalLen()) // the same length: gopacket checks it against the frame
	tcp := TCP(ip.Payload())
	tcp.SetSrcPort(1)
	tcp.SetDstPort(65535)
	tcp.SetSeq(7)
	tcp.SetAck(0xffffffff)
	tcp.SetFlags(0x11) // FIN|ACK
	tcp.SetWindow(3)
	tcp.SetHeaderLen(24)
	ip.SetChecksum(0)
	ip.SetChecksum(csum.Checksum(ip[:ip.HeaderLen()], 0))
	tcp.SetChecksum(0)
	tcp.SetChecksum(csum.Checksum(tcp, csum.PseudoV4(ip.Src(), ip.Dst(), ProtoTCP, len(tcp))))

	p := decode(t, b)
	geth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	gip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	gtcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !bytes.Equal(geth.DstMAC, macA) || !bytes.Equal(geth.SrcMAC, macB) {
		t.Fatalf("SetMACs: %v %v", geth.DstMAC, geth.SrcMAC)
	}
	if gip.TTL != 9 || gip.Protocol != layers.IPProtocolTCP || ip.TTL() != 9 {
		t.Fatalf("IPv4 setters: %+v", gip)
	}
	if gtcp.SrcPort != 1 || gtcp.DstPort != 65535 || gtcp.Seq != 7 || gtcp.Ack != 0xffffffff || !gtcp.FIN || !gtcp.ACK || gtcp.SYN || gtcp.PSH ||
		gtcp.Window != 3 || gtcp.DataOffset != 6 {
		t.Fatalf("TCP setters: %+v", gtcp)
	}
	if tcp.SrcPort() != 1 || tcp.DstPort() != 65535 || tcp.Seq() != 7 || tcp.Ack() != 0xffffffff || tcp.Flags() != 0x11 || tcp.Window() != 3 || tcp.HeaderLen() != 24 {
		t.Fatal("TCP setters do not read back")
	}
	// gopacket's own checksums over the rewritten frame are the ones set.
	if err := gtcp.SetNetworkLayerForChecksum(gip); err != nil {
		t.Fatal(err)
	}
	g := build(t, geth, gip, gtcp, gopacket.Payload(gtcp.Payload))
	if !bytes.Equal(g, b) {
		t.Fatalf("rewritten frame:\nviews    % x\ngopacket % x", b, g)
	}
	// A total length set is read back, and by gopacket.
	ip.SetTotalLen(ip.TotalLen() - 1)
	if gip := decode(t, b).Layer(layers.LayerTypeIPv4).(*layers.IPv4); int(gip.Length) != ip.TotalLen() {
		t.Fatalf("SetTotalLen: gopacket %d, view %d", gip.Length, ip.TotalLen())
	}
}

func TestIPv4Fragment(t *testing.T) {
	for _, c := range []struct {
		flags layers.IPv4Flag
		off   uint16
		frag  bool
	}{{0, 0, false}, {layers.IPv4DontFragment, 0, false}, {layers.IPv4MoreFragments, 0, true}, {0, 185, true}, {layers.IPv4DontFragment, 1, true}} {
		ip := &layers.IPv4{Version: 4, Flags: c.flags, FragOffset: c.off, TTL: 1, Protocol: layers.IPProtocolUDP, SrcIP: ip4A, DstIP: ip4B}
		b := build(t, ip, gopacket.Payload(make([]byte, 8)))
		v := IPv4(b)
		if v.Fragment() != c.frag || v.FragField()&IPv4FragMask != c.off || (v.FragField()&IPv4DF != 0) != (c.flags&layers.IPv4DontFragment != 0) ||
			(v.FragField()&IPv4MF != 0) != (c.flags&layers.IPv4MoreFragments != 0) {
			t.Fatalf("%+v: FragField %#x Fragment %v", c, v.FragField(), v.Fragment())
		}
	}
}

func udp6Frame(t *testing.T) []byte {
	ip := &layers.IPv6{Version: 6, TrafficClass: 0xa5, HopLimit: 33, NextHeader: layers.IPProtocolUDP, SrcIP: ip6A, DstIP: ip6B}
	return frameOf(t, layers.EthernetTypeIPv6, ip, &layers.UDP{SrcPort: 5000, DstPort: 6000}, "query")
}

func TestIPv6UDPAccessors(t *testing.T) {
	b := udp6Frame(t)
	p := decode(t, b)
	gip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	gudp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	eth := Ether(b)
	if eth.Type() != EtherIPv6 {
		t.Fatalf("type %#x", eth.Type())
	}
	ip := IPv6(eth.Payload())
	if ip.Version() != 6 || ip.TrafficClass() != gip.TrafficClass || ip.PayloadLen() != int(gip.Length) || ip.NextHeader() != uint8(gip.NextHeader) ||
		ip.NextHeader() != ProtoUDP || ip.HopLimit() != gip.HopLimit || !bytes.Equal(ip.Src(), gip.SrcIP) || !bytes.Equal(ip.Dst(), gip.DstIP) ||
		!bytes.Equal(ip.Payload(), gip.Payload) {
		t.Fatalf("IPv6 view disagrees with gopacket's %+v", gip)
	}
	udp := UDP(ip.Payload())
	if udp.SrcPort() != uint16(gudp.SrcPort) || udp.DstPort() != uint16(gudp.DstPort) || udp.Length() != int(gudp.Length) ||
		udp.Checksum() != gudp.Checksum || binary.BigEndian.Uint16(udp.CsumField()) != gudp.Checksum || !bytes.Equal(udp.Payload(), []byte("query")) {
		t.Fatalf("UDP view disagrees with gopacket's %+v", gudp)
	}
}

func TestIPv6UDPSetters(t *testing.T) {
	b := udp6Frame(t)
	ip := IPv6(Ether(b).Payload())
	ip.SetTrafficClass(0x3c)
	ip.SetHopLimit(1)
	ip.SetNextHeader(ProtoUDP)
	ip.SetPayloadLen(ip.PayloadLen())
	udp := UDP(ip.Payload())
	udp.SetSrcPort(65535)
	udp.SetDstPort(1)
	udp.SetLength(udp.Length())
	udp.SetChecksum(0)
	udp.SetChecksum(csum.Checksum(udp, csum.PseudoV6(ip.Src(), ip.Dst(), ProtoUDP, len(udp))))

	p := decode(t, b)
	geth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	gip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	gudp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if gip.TrafficClass != 0x3c || gip.FlowLabel != 0 || gip.HopLimit != 1 || gip.NextHeader != layers.IPProtocolUDP || gip.Version != 6 {
		t.Fatalf("IPv6 setters: %+v", gip)
	}
	if gudp.SrcPort != 65535 || gudp.DstPort != 1 || udp.SrcPort() != 65535 || udp.DstPort() != 1 || ip.TrafficClass() != 0x3c || ip.HopLimit() != 1 {
		t.Fatalf("UDP setters: %+v", gudp)
	}
	if err := gudp.SetNetworkLayerForChecksum(gip); err != nil {
		t.Fatal(err)
	}
	if g := build(t, geth, gip, gudp, gopacket.Payload(gudp.Payload)); !bytes.Equal(g, b) {
		t.Fatalf("rewritten frame:\nviews    % x\ngopacket % x", b, g)
	}
	ip.SetPayloadLen(ip.PayloadLen() - 1)
	udp.SetLength(udp.Length() - 1)
	if gip := decode(t, b).Layer(layers.LayerTypeIPv6).(*layers.IPv6); int(gip.Length) != ip.PayloadLen() {
		t.Fatalf("SetPayloadLen: gopacket %d, view %d", gip.Length, ip.PayloadLen())
	}
	if binary.BigEndian.Uint16(b[EtherLen+IPv6Len+UDPLenOff:]) != uint16(udp.Length()) {
		t.Fatal("SetLength")
	}
}

func TestICMPv4(t *testing.T) {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: ip4A, DstIP: ip4B}
	for _, ic := range []*layers.ICMPv4{
		{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 0xbeef, Seq: 7},
		{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: 1400}, // next-hop MTU
		{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeTimeExceeded, 1)},
	} {
		b := build(t, ip, ic, gopacket.Payload(make([]byte, 28)))
		v := ICMP(IPv4(b).Payload())
		if v.Type() != ic.TypeCode.Type() || v.Code() != ic.TypeCode.Code() || v.Checksum() != ic.Checksum || binary.BigEndian.Uint16(v.CsumField()) != ic.Checksum ||
			v.Ident() != ic.Id || v.MTU4() != ic.Seq || v.Rest() != uint32(ic.Id)<<16|uint32(ic.Seq) || len(v.Payload()) != 28 {
			t.Fatalf("ICMPv4 view disagrees with gopacket's %+v", ic)
		}
		if csum.Checksum(v, 0) != 0 {
			t.Fatal("gopacket's ICMPv4 checksum does not verify")
		}
		// Setters, decoded by gopacket.
		v.SetType(ICMP4Unreach)
		v.SetCode(ICMP4FragNeeded)
		v.SetIdent(0)
		v.SetMTU4(1280)
		v.SetChecksum(0)
		v.SetChecksum(csum.Checksum(v, 0))
		g := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default).Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if g.TypeCode.Type() != ICMP4Unreach || g.TypeCode.Code() != ICMP4FragNeeded || g.Id != 0 || g.Seq != 1280 || g.Checksum != v.Checksum() {
			t.Fatalf("ICMPv4 setters: %+v", g)
		}
		v.SetRest(0x01020304)
		if g := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default).Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); g.Id != 0x0102 || g.Seq != 0x0304 {
			t.Fatalf("SetRest: %+v", g)
		}
	}
}

func TestICMPv6(t *testing.T) {
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: ip6A, DstIP: ip6B}
	for _, c := range []struct {
		typ, code uint8
		rest      []byte // the type's four bytes, after gopacket's ICMPv6 layer
	}{
		{layers.ICMPv6TypePacketTooBig, 0, []byte{0, 0, 5, 0xdc}},
		{layers.ICMPv6TypeEchoRequest, 0, []byte{0xbe, 0xef, 0, 1}},
		{layers.ICMPv6TypeDestinationUnreachable, 4, []byte{0, 0, 0, 0}},
	} {
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(c.typ, c.code)}
		if err := ic.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		b := build(t, ip, ic, gopacket.Payload(append(append([]byte{}, c.rest...), make([]byte, 48)...)))
		v := ICMP(IPv6(b).Payload())
		p := gopacket.NewPacket(b, layers.LayerTypeIPv6, gopacket.Default)
		g := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
		if v.Type() != g.TypeCode.Type() || v.Code() != g.TypeCode.Code() || v.Checksum() != g.Checksum ||
			v.MTU6() != binary.BigEndian.Uint32(g.Payload) || v.Rest() != v.MTU6() || len(v.Payload()) != 48 {
			t.Fatalf("ICMPv6 view disagrees with gopacket's %+v", g)
		}
		if c.typ == layers.ICMPv6TypeEchoRequest {
			if e, _ := p.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); e == nil || v.Ident() != e.Identifier {
				t.Fatalf("Ident %#x, gopacket %+v", v.Ident(), e)
			}
		}
		if csum.Checksum(v, csum.PseudoV6(ip6A.To16(), ip6B.To16(), ProtoICMPv6, len(v))) != 0 {
			t.Fatal("gopacket's ICMPv6 checksum does not verify")
		}
		v.SetType(ICMP6TooBig)
		v.SetCode(0)
		v.SetMTU6(1280)
		g = gopacket.NewPacket(b, layers.LayerTypeIPv6, gopacket.Default).Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
		if g.TypeCode.Type() != ICMP6TooBig || g.TypeCode.Code() != 0 || binary.BigEndian.Uint32(g.Payload) != 1280 {
			t.Fatalf("ICMPv6 setters: %+v", g)
		}
		v.SetRest(0xdeadbeef)
		if v.MTU6() != 0xdeadbeef {
			t.Fatal("SetRest")
		}
	}
}

// IPv4.Put writes a header gopacket decodes field for field, its checksum
// the one gopacket computes.
func TestIPv4Put(t *testing.T) {
	for _, f := range []IPv4Fields{
		{TOS: 0, TotalLen: 60, ID: 0, Flags: IPv4DF, TTL: 64, Protocol: ProtoTCP, Src: [4]byte(ip4A), Dst: [4]byte(ip4B)},
		{TOS: 0x10, TotalLen: 1500, ID: 0x1234, Flags: IPv4DF, TTL: 1, Protocol: ProtoUDP, Src: [4]byte{10, 0, 0, 1}, Dst: [4]byte{172, 25, 254, 100}},
		{TOS: 0xfc, TotalLen: 0xffff, ID: 0xffff, Flags: IPv4MF | 0x1fff, TTL: 255, Protocol: ProtoICMP, Src: [4]byte{255, 255, 255, 255}, Dst: [4]byte{0, 0, 0, 0}},
	} {
		b := bytes.Repeat([]byte{0xa5}, IPv4MinLen) // stale bytes Put overwrites
		IPv4(b).Put(&f)
		if csum.Checksum(b, 0) != 0 {
			t.Fatalf("%+v: checksum does not verify: % x", f, b)
		}
		var g layers.IPv4
		if err := g.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
			t.Fatal(err)
		}
		if g.Version != 4 || g.IHL != 5 || g.TOS != f.TOS || int(g.Length) != f.TotalLen || g.Id != f.ID || uint16(g.Flags)<<13|g.FragOffset != f.Flags ||
			g.TTL != f.TTL || uint8(g.Protocol) != f.Protocol || !g.SrcIP.Equal(f.Src[:]) || !g.DstIP.Equal(f.Dst[:]) {
			t.Fatalf("Put %+v, gopacket decodes %+v", f, g)
		}
		g.Checksum = 0
		if s := serialized(t, &g); !bytes.Equal(s, b) {
			t.Fatalf("Put % x\ngopacket % x", b, s)
		}
	}
}

// IPv6.Put writes an unlabelled header gopacket decodes field for field.
func TestIPv6Put(t *testing.T) {
	b := bytes.Repeat([]byte{0xa5}, IPv6Len+8)
	IPv6(b).Put(8, ProtoUDP, 17, ip6A, ip6B)
	var g layers.IPv6
	if err := g.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
		t.Fatal(err)
	}
	if g.Version != 6 || g.TrafficClass != 0 || g.FlowLabel != 0 || g.Length != 8 || g.NextHeader != layers.IPProtocolUDP || g.HopLimit != 17 ||
		!g.SrcIP.Equal(ip6A) || !g.DstIP.Equal(ip6B) {
		t.Fatalf("gopacket decodes %+v", g)
	}
	IPv6(b).SetTrafficClass(0xff)
	if err := g.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil || g.TrafficClass != 0xff || g.FlowLabel != 0 || g.Version != 6 {
		t.Fatalf("SetTrafficClass: %+v %v", g, err)
	}
}

// TCP.Put writes a header, options and all, that gopacket decodes; with
// its checksum filled in, the segment is the one gopacket serializes.
func TestTCPPut(t *testing.T) {
	for _, opts := range [][]byte{nil, {2, 4, 5, 0xb4}, {2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 1, 1}} {
		f := TCPFields{SrcPort: 80, DstPort: 40000, Seq: 0xfffffff0, Ack: 12345, Flags: 0x12, Window: 65535, Opts: opts}
		b := bytes.Repeat([]byte{0xa5}, TCPMinLen+len(opts))
		tcp := TCP(b)
		tcp.Put(&f)
		if tcp.Checksum() != 0 || binary.BigEndian.Uint16(b[TCPUrgentOff:]) != 0 || tcp.HeaderLen() != len(b) {
			t.Fatalf("Put: % x", b)
		}
		tcp.SetChecksum(csum.Checksum(tcp, csum.PseudoV4(ip4A, ip4B, ProtoTCP, len(tcp))))
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip4A, DstIP: ip4B}
		frame := append(build(t, ip, gopacket.Payload(nil)), b...)
		binary.BigEndian.PutUint16(frame[IPv4TotalLenOff:], uint16(len(frame)))
		p := gopacket.NewPacket(frame, layers.LayerTypeIPv4, gopacket.Default)
		g, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if g == nil || g.SrcPort != 80 || g.DstPort != 40000 || g.Seq != f.Seq || g.Ack != f.Ack || !g.SYN || !g.ACK || g.FIN || g.Window != 65535 ||
			int(g.DataOffset)*4 != len(b) || !bytes.Equal(g.Contents[TCPMinLen:], opts) {
			t.Fatalf("gopacket decodes %+v", g)
		}
		if err := g.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		if s := serialized(t, g); !bytes.Equal(s, b) {
			t.Fatalf("Put % x\ngopacket % x", b, s)
		}
	}
}

func TestAddrHelpers(t *testing.T) {
	a := In16(ip4A)
	if !Is4(&a) || !Mapped4(a[:]) || !bytes.Equal(In4(&a), ip4A) || !bytes.Equal(Short(&a), ip4A) || a != [16]byte(ip4A.To16()) {
		t.Fatalf("In16: % x", a)
	}
	v6 := [16]byte(ip6A.To16())
	if Is4(&v6) || !bytes.Equal(Short(&v6), ip6A) {
		t.Fatal("an IPv6 address is IPv4")
	}
	compat := [16]byte(net.ParseIP("::1.2.3.4").To16()) // IPv4-compatible: not mapped
	if Is4(&compat) {
		t.Fatal("::1.2.3.4 is not IPv4-mapped")
	}
	hi, lo := Halves(&v6)
	if hi != binary.LittleEndian.Uint64(v6[:8]) || lo != binary.LittleEndian.Uint64(v6[8:]) {
		t.Fatal("Halves")
	}
}
