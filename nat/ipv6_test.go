package nat

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// The IPv6 data path: the lab's IPv6 addressing.
var (
	vip6    = netip.MustParseAddr("fd00:25:254::100")
	client6 = netip.MustParseAddr("fd00:25:254::1")
	lip6    = netip.MustParseAddr("fd00:25:84::10")
	rs6a    = netip.MustParseAddr("fd00:20:1::2")
	rs6b    = netip.MustParseAddr("fd00:20:2::2")
)

func newRig6(t testing.TB, proto Protocol, sched string, mod func(*Config)) *rig {
	t.Helper()
	return newRigAt(t, proto, sched, mod, vip6, lip6, rs6a, rs6b)
}

// pseudo6 sums an IPv6 pseudo-header by hand (RFC 8200 8.1), apart from
// the code under test.
func pseudo6(src, dst net.IP, next uint8, n int) uint32 {
	var s uint32
	for i := 0; i < 16; i += 2 {
		s += uint32(binary.BigEndian.Uint16(src[i:])) + uint32(binary.BigEndian.Uint16(dst[i:]))
	}
	return s + uint32(n>>16) + uint32(n&0xffff) + uint32(next)
}

// decode6 checks an IPv6 frame: gopacket's parse, the payload length, and
// the transport (or ICMPv6) checksum from scratch.
func decode6(t testing.TB, pk gopacket.Packet, raw []byte) decoded {
	t.Helper()
	var d decoded
	d.eth, _ = pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	d.ip6, _ = pk.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	d.tcp, _ = pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
	d.udp, _ = pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if int(d.ip6.Length) != len(raw)-14-40 {
		t.Fatalf("IPv6 payload length %d, frame carries %d", d.ip6.Length, len(raw)-14-40)
	}
	var l4 []byte
	var next uint8
	switch {
	case d.tcp != nil:
		l4, next = append(d.tcp.Contents, d.tcp.Payload...), 6
	case d.udp != nil:
		l4, next = append(d.udp.Contents, d.udp.Payload...), 17
		if d.udp.Checksum == 0 {
			t.Fatal("UDP over IPv6 with checksum 0")
		}
	default:
		if ic, ok := pk.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
			l4, next = append(ic.Contents, ic.Payload...), 58
		}
	}
	if l4 != nil {
		if c := csum.Checksum(l4, pseudo6(d.ip6.SrcIP, d.ip6.DstIP, next, len(l4))); c != 0 {
			t.Fatalf("IPv6 next header %d: checksum does not verify (residue %#04x)", next, c)
		}
	}
	return d
}

func addr6(ip net.IP) netip.Addr { return netip.AddrFrom16([16]byte(ip.To16())) }

func TestIPv6FullNATBothDirections(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			r := newRig6(t, proto, "rr", nil)
			seen := map[netip.Addr]bool{}
			for i := range 4 {
				cport := uint16(40000 + i)
				f := frame(t, pktSpec{src: client6, dst: vip6, sport: cport, dport: 80, proto: proto, syn: true, payload: []byte("hello"), srcMAC: macClient})
				if v := r.b.Process(ClientSide, f); v != Forward {
					t.Fatalf("verdict %v, drops %v", v, r.b.Stats.Drops())
				}
				d := decode(t, f)
				if d.ip6 == nil || d.eth.EthernetType != layers.EthernetTypeIPv6 {
					t.Fatalf("forwarded frame is not IPv6: %v", d.eth.EthernetType)
				}
				if got := addr6(d.ip6.SrcIP); got != lip6 {
					t.Fatalf("src %v, want LIP %v", got, lip6)
				}
				rip := addr6(d.ip6.DstIP)
				if rip != rs6a && rip != rs6b {
					t.Fatalf("dst %v is not a real server", rip)
				}
				seen[rip] = true
				if d.ip6.HopLimit != 64 {
					t.Fatalf("hop limit %d", d.ip6.HopLimit)
				}
				if [6]byte(d.eth.DstMAC) != macGateway || [6]byte(d.eth.SrcMAC) != macServerNIC {
					t.Fatalf("MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
				}
				var lport, rport uint16
				if d.tcp != nil {
					lport, rport = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
				} else {
					lport, rport = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
				}
				if rport != 8080 || lport < 5000 {
					t.Fatalf("ports %d -> %d", lport, rport)
				}
				back := frame(t, pktSpec{src: rip, dst: lip6, sport: 8080, dport: lport, proto: proto, syn: true, ack: true, payload: []byte("world!"), srcMAC: macGateway})
				if v := r.b.Process(ServerSide, back); v != Forward {
					t.Fatalf("reply verdict %v, drops %v", v, r.b.Stats.Drops())
				}
				d = decode(t, back)
				if addr6(d.ip6.SrcIP) != vip6 || addr6(d.ip6.DstIP) != client6 {
					t.Fatalf("reply %v -> %v", d.ip6.SrcIP, d.ip6.DstIP)
				}
				if [6]byte(d.eth.DstMAC) != macClient || [6]byte(d.eth.SrcMAC) != macClientNIC {
					t.Fatalf("reply MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
				}
				var sport, dport uint16
				if d.tcp != nil {
					sport, dport = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
				} else {
					sport, dport = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
				}
				if sport != 80 || dport != cport {
					t.Fatalf("reply ports %d -> %d", sport, dport)
				}
			}
			if !seen[rs6a] || !seen[rs6b] {
				t.Fatalf("rr over 4 connections reached %v", seen)
			}
			conns := r.b.Table().Conns()
			if len(conns) != 4 || conns[0].VIP != netip.AddrPortFrom(vip6, 80) || conns[0].LIP.Addr() != lip6 {
				t.Fatalf("table: %+v", conns)
			}
		})
	}
}

// TestIPv6PartialChecksum: an offloaded frame's partial checksum holds
// the IPv6 pseudo-header sum, which moves with the addresses.
func TestIPv6PartialChecksum(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			r := newRig6(t, proto, "rr", nil)
			f := frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: proto, syn: true, payload: []byte("partial"), srcMAC: macClient})
			b := f.Bytes()
			l4 := b[14+40:]
			off := l4csumOff(uint8(proto))
			binary.BigEndian.PutUint16(l4[off:], csum.Fold(csum.PseudoV6(b[22:38], b[38:54], uint8(proto), len(l4))))
			vnet := make([]byte, 10)
			f.VNet = vnet
			f.VNet.SetNeedsCsum(54, off)
			if v := r.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("verdict %v, drops %v", v, r.b.Stats.Drops())
			}
			// Finish it as the kernel would, then check it from scratch.
			out := f.Bytes()
			csum.Finish(out[54:], off)
			decode(t, f)
		})
	}
}

// withExt6 inserts an extension header of type kind and body (length a
// multiple of 8 less 2) after the fixed IPv6 header of an IPv6 frame.
func withExt6(t testing.TB, f *Frame, kind uint8, body []byte) *Frame {
	t.Helper()
	b := f.Bytes()
	hdr := make([]byte, 2+len(body))
	hdr[0] = b[14+6] // the old next header
	hdr[1] = byte(len(hdr)/8 - 1)
	if kind == wire.IP6Fragment {
		hdr[1] = 0
	}
	copy(hdr[2:], body)
	out := append(append(append([]byte(nil), b[:54]...), hdr...), b[54:]...)
	out[14+6] = kind
	binary.BigEndian.PutUint16(out[14+4:], uint16(len(out)-54))
	return withHeadroom(out)
}

func TestIPv6ExtensionHeaders(t *testing.T) {
	syn := func() *Frame {
		return frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: TCP, syn: true, payload: []byte("x"), srcMAC: macClient})
	}
	pad6 := make([]byte, 6) // PadN: an empty options header
	pad6[0], pad6[1] = 1, 4
	cases := []struct {
		name string
		f    *Frame
		want Verdict
		drop string
	}{
		{"hop-by-hop", withExt6(t, syn(), wire.IP6HopByHop, pad6), Forward, ""},
		{"destination options", withExt6(t, syn(), wire.IP6DestOpts, pad6), Forward, ""},
		{"routing, no segments left", withExt6(t, syn(), wire.IP6Routing, []byte{0, 0, 0, 0, 0, 0}), Forward, ""},
		{"routing, segments left", withExt6(t, syn(), wire.IP6Routing, []byte{0, 1, 0, 0, 0, 0}), Drop, "ipv6_ext_header"},
		// A first fragment of 20 bytes with more to come: not a multiple of 8.
		{"fragment", withExt6(t, syn(), wire.IP6Fragment, []byte{0, 1, 0, 0, 0, 1}), Drop, "fragment_malformed"},
		// Reassembled in isolation (RFC 6946) and forwarded.
		{"atomic fragment", withExt6(t, syn(), wire.IP6Fragment, []byte{0, 0, 0, 0, 0, 1}), Forward, ""},
		{"AH", withExt6(t, syn(), wire.IP6AH, pad6), Drop, "ipv6_ext_header"},
	}
	// Nine hop-by-hop headers: past the walk's bound.
	many := syn()
	for range wire.IP6MaxExt + 1 {
		many = withExt6(t, many, wire.IP6DestOpts, pad6)
	}
	cases = append(cases, struct {
		name string
		f    *Frame
		want Verdict
		drop string
	}{"too many headers", many, Drop, "ipv6_ext_header"})
	// A header whose length runs past the packet.
	long := withExt6(t, syn(), wire.IP6DestOpts, pad6)
	long.Bytes()[54+1] = 200
	cases = append(cases, struct {
		name string
		f    *Frame
		want Verdict
		drop string
	}{"header past the packet", long, Drop, "malformed"})
	jumbo := syn()
	binary.BigEndian.PutUint16(jumbo.Bytes()[14+4:], 0)
	cases = append(cases, struct {
		name string
		f    *Frame
		want Verdict
		drop string
	}{"payload length 0 (jumbogram)", jumbo, Drop, "malformed"})
	short := syn()
	binary.BigEndian.PutUint16(short.Bytes()[14+4:], 2000)
	cases = append(cases, struct {
		name string
		f    *Frame
		want Verdict
		drop string
	}{"payload length past the frame", short, Drop, "malformed"})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig6(t, TCP, "rr", nil)
			v := r.b.Process(ClientSide, c.f)
			if v != c.want {
				t.Fatalf("verdict %v, want %v; drops %v", v, c.want, r.b.Stats.Drops())
			}
			if c.drop != "" {
				if n := r.b.Stats.Drops()[c.drop]; n != 1 {
					t.Fatalf("drops %v, want one %s", r.b.Stats.Drops(), c.drop)
				}
				return
			}
			d := decode(t, c.f)
			if addr6(d.ip6.SrcIP) != lip6 || d.tcp == nil || string(d.tcp.Payload) != "x" {
				t.Fatalf("forwarded %v -> %v, tcp %v", d.ip6.SrcIP, d.ip6.DstIP, d.tcp)
			}
		})
	}
}

// TestIPv6ChecksumChecked: a segment that would open a connection is
// checked; a UDP datagram with checksum 0 (forbidden over IPv6) too.
func TestIPv6ChecksumChecked(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		r := newRig6(t, proto, "rr", nil)
		f := frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: proto, syn: true, payload: []byte("x"), srcMAC: macClient})
		b := f.Bytes()
		if proto == UDP {
			b[54+6], b[54+7] = 0, 0
		} else {
			b[54+16] ^= 0x40
		}
		if v := r.b.Process(ClientSide, f); v != Drop || r.b.Stats.Drops()["bad_checksum"] != 1 {
			t.Fatalf("%v: verdict %v, drops %v", proto, v, r.b.Stats.Drops())
		}
	}
}

// icmp6Error builds an ICMPv6 error of type typ (code, a 4-byte field such
// as a Packet Too Big's MTU) from src to dst quoting the frame quoted.
func icmp6Error(t testing.TB, src, dst netip.Addr, srcMAC [6]byte, typ, code uint8, field uint32, quoted []byte) *Frame {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(srcMAC[:]), DstMAC: net.HardwareAddr(macServerNIC[:]), EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), NextHeader: layers.IPProtocolICMPv6}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	ic.SetNetworkLayerForChecksum(ip)
	body := make([]byte, 4+len(quoted))
	binary.BigEndian.PutUint32(body, field)
	copy(body[4:], quoted)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, ic, gopacket.Payload(body)); err != nil {
		t.Fatal(err)
	}
	return withHeadroom(buf.Bytes())
}

// TestIPv6PacketTooBig: a router on the server side's path sends a Packet
// Too Big about a client segment (LIP -> RIP); the client gets it from the
// VIP about the segment it sent, MTU unchanged, checksums from scratch. A
// port unreachable from a real server goes the same way; one from the
// client goes to the real server.
func TestIPv6PacketTooBig(t *testing.T) {
	r := newRig6(t, TCP, "rr", nil)
	const cISN = 5000
	syn := frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: TCP, syn: true, seq: cISN, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatal(v)
	}
	big := frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: TCP, ack: true, seq: cISN + 1, payload: make([]byte, 1400), srcMAC: macClient})
	if v := r.b.Process(ClientSide, big); v != Forward {
		t.Fatal(v)
	}
	out := big.Bytes()
	sent := decode(t, big)
	router := netip.MustParseAddr("fd00:25:84::1")
	ptb := icmp6Error(t, router, lip6, macGateway, wire.ICMP6TooBig, 0, 1280, out[14:14+1280-40-8])
	if v := r.b.Process(ServerSide, ptb); v != Forward {
		t.Fatalf("PTB verdict %v, drops %v", v, r.b.Stats.Drops())
	}
	d := decode(t, ptb)
	if addr6(d.ip6.SrcIP) != vip6 || addr6(d.ip6.DstIP) != client6 || [6]byte(d.eth.DstMAC) != macClient {
		t.Fatalf("PTB went %v -> %v (%v)", d.ip6.SrcIP, d.ip6.DstIP, d.eth.DstMAC)
	}
	pk := gopacket.NewPacket(ptb.Bytes(), layers.LayerTypeEthernet, gopacket.Default)
	ic := pk.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if ic.TypeCode.Type() != wire.ICMP6TooBig || binary.BigEndian.Uint32(ic.Payload) != 1280 {
		t.Fatalf("ICMPv6 %v, MTU %d", ic.TypeCode, binary.BigEndian.Uint32(ic.Payload))
	}
	q := ic.Payload[4:]
	if addr6(q[8:24]) != client6 || addr6(q[24:40]) != vip6 {
		t.Fatalf("quoted %v -> %v", addr6(q[8:24]), addr6(q[24:40]))
	}
	if sp, dp := binary.BigEndian.Uint16(q[40:]), binary.BigEndian.Uint16(q[42:]); sp != 40000 || dp != 80 {
		t.Fatalf("quoted ports %d -> %d", sp, dp)
	}
	if seq := binary.BigEndian.Uint32(q[44:]); seq != cISN+1 {
		t.Fatalf("quoted seq %d, want the client's own %d (sent on as %d)", seq, cISN+1, sent.tcp.Seq)
	}

	// The client complains about a server segment: the real server hears.
	lport := uint16(sent.tcp.SrcPort)
	rip := addr6(sent.ip6.DstIP)
	back := frame(t, pktSpec{src: rip, dst: lip6, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 9, ackNum: 1, payload: []byte("data"), srcMAC: macGateway})
	if v := r.b.Process(ServerSide, back); v != Forward {
		t.Fatal(v)
	}
	un := icmp6Error(t, client6, vip6, macClient, wire.ICMP6Unreach, 4, 0, back.Bytes()[14:])
	if v := r.b.Process(ClientSide, un); v != Forward {
		t.Fatalf("unreachable verdict %v, drops %v", v, r.b.Stats.Drops())
	}
	d = decode(t, un)
	if addr6(d.ip6.SrcIP) != lip6 || addr6(d.ip6.DstIP) != rip || [6]byte(d.eth.DstMAC) != macGateway {
		t.Fatalf("unreachable went %v -> %v", d.ip6.SrcIP, d.ip6.DstIP)
	}

	// An error about no connection, from the client: counted.
	stray := frame(t, pktSpec{src: vip6, dst: client6, sport: 80, dport: 1, proto: TCP, ack: true, srcMAC: macClient})
	if v := r.b.Process(ClientSide, icmp6Error(t, client6, vip6, macClient, wire.ICMP6Unreach, 4, 0, stray.Bytes()[14:])); v != Drop || r.b.Stats.Drops()["icmp_no_conn"] != 1 {
		t.Fatalf("stray error: %v, drops %v", v, r.b.Stats.Drops())
	}
	// A quote cut inside its header: malformed.
	if v := r.b.Process(ServerSide, icmp6Error(t, router, lip6, macGateway, wire.ICMP6TooBig, 0, 1280, out[14:14+30])); v != Drop || r.b.Stats.Drops()["malformed"] != 1 {
		t.Fatalf("short quote: %v, drops %v", v, r.b.Stats.Drops())
	}
}

// TestIPv6StackTraffic: echo requests and neighbour discovery to a VIP or
// LIP are the stack's.
func TestIPv6StackTraffic(t *testing.T) {
	r := newRig6(t, TCP, "rr", nil)
	for _, c := range []struct {
		side Side
		dst  netip.Addr
		typ  uint8
	}{
		{ClientSide, vip6, 128},  // echo request
		{ClientSide, vip6, 135},  // neighbour solicitation (unicast, NUD)
		{ServerSide, lip6, 135},  // the same for a LIP
		{ServerSide, lip6, 136},  // neighbour advertisement
		{ClientSide, client6, 1}, // not a VIP at all
	} {
		f := icmp6Error(t, client6, c.dst, macClient, c.typ, 0, 0, make([]byte, 20))
		if v := r.b.Process(c.side, f); v != Pass {
			t.Fatalf("ICMPv6 type %d to %v: %v, want Pass", c.typ, c.dst, v)
		}
	}
	if n := r.b.Stats.Drops(); len(nonZero(n)) != 0 {
		t.Fatalf("drops %v", n)
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// TestIPv6Rules: the Tx refuses what the IPv6 data path cannot do, naming
// the address and the reason.
func TestIPv6Rules(t *testing.T) {
	cfg := Config{MaxConns: 10, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts(),
		ClientNet: netip.MustParsePrefix("172.25.254.254/24"), ServerNet: netip.MustParsePrefix("172.25.84.4/24"),
		ClientNet6: netip.MustParsePrefix("fd00:25:254::fe/64"), ServerNet6: netip.MustParsePrefix("fd00:25:84::4/64")}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s6, err := b.AddService(ServiceConfig{Addr: vip6, Port: 80, Protocol: TCP, Scheduler: "rr"})
	if err != nil {
		t.Fatal(err)
	}
	s4, err := b.AddService(ServiceConfig{Addr: vip, Port: 80, Protocol: TCP, Scheduler: "rr"})
	if err != nil {
		t.Fatal(err)
	}
	// An IPv6 LIP makes s6's server side IPv6: IPv4 ones (NAT64) are
	// refused on it (nat64_test.go has NAT64's own rules).
	if _, err := b.AddLocalAddr(s6, netip.MustParseAddr("fd00:25:84::10")); err != nil {
		t.Fatal(err)
	}
	// And an IPv4 LIP makes s4's IPv4 (NAT46 is an IPv4 VIP's other
	// choice: nat46_test.go).
	if _, err := b.AddLocalAddr(s4, lip1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		do   func() error
		want string
	}{
		{"v4 RS on a v6 VIP with v6 LIPs", func() error { return b.Update(func(tx *Tx) error { _, err := tx.AddDest(s6, rs1, 80, 1); return err }) }, "is IPv4 but service"},
		{"v6 RS on a v4 VIP with v4 LIPs", func() error {
			return b.Update(func(tx *Tx) error { _, err := tx.AddDest(s4, rs6a, 80, 1); return err })
		}, "is IPv6 but service TCP 172.25.254.100:80's server side is IPv4 (172.25.84.10): its local addresses and real servers are one family"},
		{"v4 LIP on a v6 VIP with v6 LIPs", func() error { _, err := b.AddLocalAddr(s6, lip1); return err }, "one family"},
		{"LIP outside the server's v6 subnet", func() error {
			_, err := b.AddLocalAddr(s6, netip.MustParseAddr("fd00:99::10"))
			return err
		}, "not in the server side's subnet fd00:25:84::/64"},
		{"subnet-router anycast LIP", func() error {
			_, err := b.AddLocalAddr(s6, netip.MustParseAddr("fd00:25:84::"))
			return err
		}, "subnet-router anycast"},
		{"link-local VIP", func() error {
			_, err := b.AddService(ServiceConfig{Addr: netip.MustParseAddr("fe80::1"), Port: 80, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "link-local"},
		{"v4-mapped VIP", func() error {
			_, err := b.AddService(ServiceConfig{Addr: netip.MustParseAddr("::ffff:172.25.254.101"), Port: 80, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "IPv4-mapped"},
		{"tapvs's own v6 address", func() error {
			_, err := b.AddService(ServiceConfig{Addr: netip.MustParseAddr("fd00:25:254::fe"), Port: 80, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "tapvs's own address on the client side"},
		{"v6 RS in the client subnet", func() error {
			return b.Update(func(tx *Tx) error { _, err := tx.AddDest(s6, netip.MustParseAddr("fd00:25:254::7"), 80, 1); return err })
		}, "client side's subnet"},
		{"multicast RS", func() error {
			return b.Update(func(tx *Tx) error { _, err := tx.AddDest(s6, netip.MustParseAddr("ff02::1"), 80, 1); return err })
		}, "multicast"},
	} {
		err := c.do()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// No IPv6 address on the client side: an IPv6 VIP is refused by name.
	cfg.ClientNet6 = netip.Prefix{}
	b2, _ := New(cfg)
	if _, err := b2.AddService(ServiceConfig{Addr: vip6, Port: 80, Protocol: TCP, Scheduler: "rr"}); err == nil || !strings.Contains(err.Error(), "interfaces.client.address6") {
		t.Fatalf("v6 VIP without a client address6: %v", err)
	}
}

// TestIPv6NoAllocs: the IPv6 path allocates nothing per packet.
func TestIPv6NoAllocs(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		r := newRig6(t, proto, "rr", nil)
		in, back := established6(t, r, proto)
		if allocs := pairAllocs(t, r, in, back); allocs != 0 {
			t.Fatalf("%v: %v allocations per packet pair", proto, allocs)
		}
	}
}

// established6 opens one IPv6 connection on r and returns a client frame
// and a server frame of it.
func established6(t testing.TB, r *rig, proto Protocol) (in, back *Frame) {
	t.Helper()
	syn := frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: proto, syn: true, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("open: %v, drops %v", v, r.b.Stats.Drops())
	}
	info := r.b.Table().Conns()[0]
	in = frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: proto, ack: true, payload: make([]byte, 1400), srcMAC: macClient})
	back = frame(t, pktSpec{src: info.RIP.Addr(), dst: lip6, sport: 8080, dport: info.LIP.Port(), proto: proto, ack: true, payload: make([]byte, 1400), srcMAC: macGateway})
	return in, back
}

// BenchmarkForwardFamily is BenchmarkForward's one connection for IPv4
// and IPv6 side by side (ns/op is per packet, both directions in turn).
func BenchmarkForwardFamily(b *testing.B) {
	for _, fam := range []string{"ipv4", "ipv6"} {
		for _, proto := range []Protocol{TCP, UDP} {
			b.Run(fam+"/"+proto.String(), func(b *testing.B) {
				var in, back *Frame
				var r *rig
				if fam == "ipv6" {
					r = newRig6(b, proto, "rr", nil)
					in, back = established6(b, r, proto)
				} else {
					r = newRig(b, proto, "rr", nil)
					syn := frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: proto, syn: true, srcMAC: macClient})
					r.b.Process(ClientSide, syn)
					info := r.b.Table().Conns()[0]
					in = frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: proto, ack: true, payload: make([]byte, 1400), srcMAC: macClient})
					back = frame(b, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: proto, ack: true, payload: make([]byte, 1400), srcMAC: macGateway})
				}
				hdr := 14 + 20 + 20
				if fam == "ipv6" {
					hdr = 14 + 40 + 20
				}
				benchPair(b, r, in, back, hdr, hdr)
			})
		}
	}
}

// FuzzProcess6 sends any frame through a balancer with an IPv6 TCP and UDP
// service, each with one connection open, from either side. Nothing may
// panic, and a forwarded frame must be IPv6 with every checksum it came
// in with still right (the rewrite's checksum updates are incremental: a
// wrong one in is a wrong one out, a right one stays right).
func FuzzProcess6(f *testing.F) {
	seeds := [][]byte{}
	add := func(fr *Frame) { seeds = append(seeds, append([]byte(nil), fr.Bytes()...)) }
	for _, proto := range []Protocol{TCP, UDP} {
		r := newRig6(f, proto, "rr", nil)
		in, back := established6(f, r, proto)
		add(in)
		add(back)
	}
	syn := frame(f, pktSpec{src: client6, dst: vip6, sport: 40001, dport: 80, proto: TCP, syn: true, payload: []byte("x"), srcMAC: macClient})
	pad6 := []byte{1, 4, 0, 0, 0, 0}
	add(syn)
	add(withExt6(f, syn, wire.IP6HopByHop, pad6))
	add(withExt6(f, syn, wire.IP6Routing, []byte{0, 1, 0, 0, 0, 0}))
	add(withExt6(f, syn, wire.IP6Fragment, []byte{0, 1, 0, 0, 0, 1}))
	add(icmp6Error(f, netip.MustParseAddr("fd00:25:84::1"), lip6, macGateway, wire.ICMP6TooBig, 0, 1280, syn.Bytes()[14:]))
	for _, s := range seeds {
		f.Add(uint8(0), s)
		f.Add(uint8(1), s)
	}
	f.Fuzz(func(t *testing.T, ctl uint8, raw []byte) {
		var r *rig
		if ctl&2 == 0 {
			r = newRig6(t, TCP, "rr", nil)
			established6(t, r, TCP)
		} else {
			r = newRig6(t, UDP, "rr", nil)
			established6(t, r, UDP)
		}
		side := Side(ctl & 1)
		verified := l4Verifies6(raw)
		fr := withHeadroom(raw)
		v := r.b.Process(side, fr)
		if v != Forward {
			return
		}
		out := fr.Bytes()
		if len(out) < 54 || binary.BigEndian.Uint16(out[12:]) != wire.EtherIPv6 {
			t.Fatalf("forwarded a frame that is not IPv6: % x", out[:min(len(out), 20)])
		}
		if verified && !l4Verifies6(out) {
			t.Fatalf("a checksum that verified in does not out:\nin  % x\nout % x", raw, out)
		}
	})
}

// l4Verifies6 reports whether an IPv6 frame's transport (or ICMPv6)
// checksum verifies, past any extension headers (walked with the data
// path's wire.Walk6, whose own checks are TestIPv6ExtensionHeaders'); false
// for anything else.
func l4Verifies6(b []byte) bool {
	if len(b) < 54 || binary.BigEndian.Uint16(b[12:]) != wire.EtherIPv6 || b[14]>>4 != 6 {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[18:]))
	if n == 0 || 54+n > len(b) {
		return false
	}
	w := wire.Walk6(b[:54+n], b[20], 54)
	if w.Bad || w.Frag || (w.Proto != 6 && w.Proto != 17 && w.Proto != 58) {
		return false
	}
	l4 := b[w.L4 : 54+n]
	return csum.Checksum(l4, pseudo6(b[22:38], b[38:54], w.Proto, len(l4))) == 0
}

// TestIPv6TOA: an IPv6 client's address reaches the server in DPVS's IPv6
// TOA (kind 254, length 20: port, address) on the segment that acks the
// server's SYN-ACK, with full and partial checksums; the server's MSS is
// clamped for IPv6's header and the 20 bytes.
func TestIPv6TOA(t *testing.T) {
	for _, partial := range []bool{false, true} {
		r := newRig6(t, TCP, "rr", nil)
		if err := r.b.Update(func(tx *Tx) error { return tx.SetClientAddr(r.svc, ClientAddrTOA) }); err != nil {
			t.Fatal(err)
		}
		syn := frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 100, srcMAC: macClient})
		if v := r.b.Process(ClientSide, syn); v != Forward {
			t.Fatal(v)
		}
		s := decode(t, syn)
		rip, lport := addr6(s.ip6.DstIP), uint16(s.tcp.SrcPort)
		sa := frame(t, pktSpec{src: rip, dst: lip6, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: 7000, ackNum: s.tcp.Seq + 1,
			opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}, srcMAC: macGateway})
		if v := r.b.Process(ServerSide, sa); v != Forward {
			t.Fatal(v)
		}
		d := decode(t, sa)
		if mss := binary.BigEndian.Uint16(d.tcp.Options[0].OptionData); mss != 1500-40-20-toaLen6 {
			t.Fatalf("server MSS %d after the clamp, want %d", mss, 1500-40-20-toaLen6)
		}
		ack := frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 101, ackNum: d.tcp.Seq + 1, payload: []byte("GET /"), srcMAC: macClient})
		if partial {
			b := ack.Bytes()
			l4 := b[54:]
			binary.BigEndian.PutUint16(l4[16:], csum.Fold(csum.PseudoV6(b[22:38], b[38:54], wire.ProtoTCP, len(l4))))
			inVNet(ack).SetNeedsCsum(54, 16)
		}
		if v := r.b.Process(ClientSide, ack); v != Forward {
			t.Fatalf("ACK: %v %v", v, r.b.Stats.Drops())
		}
		if partial {
			csum.Finish(ack.Bytes()[54:], 16)
		}
		d = decode(t, ack)
		o := d.tcp.Options
		if len(o) == 0 || o[0].OptionType != toaKind || o[0].OptionLength != toaLen6 ||
			binary.BigEndian.Uint16(o[0].OptionData) != 40000 || netip.AddrFrom16([16]byte(o[0].OptionData[2:])) != client6 {
			t.Fatalf("partial %v: options %+v, want TOA 254/20 with [%v]:40000", partial, o, client6)
		}
		if string(d.tcp.Payload) != "GET /" {
			t.Fatalf("payload %q", d.tcp.Payload)
		}
	}
}

// TestIPv6ReviewFindings: the review of #15's change found these; each
// case failed before its fix.
func TestIPv6ReviewFindings(t *testing.T) {
	// An IPv6 packet with IPv4-mapped addresses is never taken for IPv4
	// (the table keeps IPv4 in that form).
	r4 := newRig(t, TCP, "rr", nil)
	mapped := func(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
	f := frame(t, pktSpec{src: mapped(client), dst: mapped(vip), sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	if v := r4.b.Process(ClientSide, f); v != Drop || r4.b.Stats.Drops()["malformed"] != 1 || r4.b.Table().Len() != 0 {
		t.Fatalf("IPv6 to ::ffff:VIP: %v, drops %v, %d conns", v, nonZero(r4.b.Stats.Drops()), r4.b.Table().Len())
	}

	// A later fragment to an address that is not a VIP is the stack's:
	// the walk stops at the fragment header and never reads its payload
	// as headers.
	r := newRig6(t, TCP, "rr", nil)
	frag := frame(t, pktSpec{src: client6, dst: netip.MustParseAddr("fd00:25:254::77"), sport: 40000, dport: 80, proto: TCP, payload: []byte("x"), srcMAC: macClient})
	frag = withExt6(t, frag, wire.IP6Fragment, []byte{0, 0x10, 0, 0, 0, 1}) // offset 2 (x8 bytes)
	frag.Bytes()[54] = wire.IP6DestOpts                                     // what follows claims to be a header
	if v := r.b.Process(ClientSide, frag); v != Pass {
		t.Fatalf("a later fragment not to a VIP: %v, drops %v", v, nonZero(r.b.Stats.Drops()))
	}

	// A reader between a change's stores never pairs a LIP and a real
	// server of different families: with only IPv4 LIPs left for IPv6
	// real servers, no connection is made.
	r.svc.laddrs.Store(&[]*LocalAddr{{Addr: lip1, a16: lip1.As16()}})
	syn := frame(t, pktSpec{src: client6, dst: vip6, sport: 40001, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Drop || r.b.Table().Len() != 0 {
		t.Fatalf("IPv4 LIPs, IPv6 servers: %v, %d conns", v, r.b.Table().Len())
	}

	// An ICMPv6 error whose checksum does not verify is not sent on.
	r = newRig6(t, TCP, "rr", nil)
	in, _ := established6(t, r, TCP)
	if v := r.b.Process(ClientSide, in); v != Forward {
		t.Fatal(v)
	}
	ptb := icmp6Error(t, netip.MustParseAddr("fd00:25:84::1"), lip6, macGateway, wire.ICMP6TooBig, 0, 1280, in.Bytes()[14:14+200])
	ptb.Bytes()[54+2] ^= 0x10
	if v := r.b.Process(ServerSide, ptb); v != Drop || r.b.Stats.Drops()["bad_checksum"] != 1 {
		t.Fatalf("a corrupted Packet Too Big: %v, drops %v", v, nonZero(r.b.Stats.Drops()))
	}

	// An IPv4 prefix on an IPv6 service's list is refused: it holds none
	// of its clients, and an allow list would refuse every one.
	err := r.b.Update(func(tx *Tx) error { return tx.SetAllow(r.svc, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}) })
	if err == nil || !strings.Contains(err.Error(), "allow: 10.0.0.0/8 is IPv4, and this service's clients are IPv6") {
		t.Fatalf("an IPv4 allow list on an IPv6 service: %v", err)
	}
}
