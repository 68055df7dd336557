package netstack

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// pipeDev is a device in memory that a test talks through while the stack's
// readers run: Read blocks for the next frame the test sends, and what the
// stack writes comes out of the wrote channel.
type pipeDev struct {
	in    chan []byte
	wrote chan []byte
	once  sync.Once
	done  chan struct{}
}

func newPipeDev() *pipeDev {
	return &pipeDev{in: make(chan []byte, 16), wrote: make(chan []byte, 256), done: make(chan struct{})}
}

func (d *pipeDev) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	select {
	case f := <-d.in:
		sizes[0] = copy(bufs[0][off:], f)
		return 1, nil
	case <-d.done:
		return 0, os.ErrClosed
	}
}
func (d *pipeDev) Write(frames [][]byte) (int, error) {
	for _, f := range frames {
		select {
		case d.wrote <- append([]byte(nil), f...):
		case <-d.done:
			return 0, os.ErrClosed
		}
	}
	return len(frames), nil
}
func (d *pipeDev) BatchSize() int  { return 1 }
func (d *pipeDev) Name() string    { return "pipe" }
func (d *pipeDev) VNetHdrLen() int { return 0 }
func (d *pipeDev) Close() error {
	d.once.Do(func() { close(d.done) })
	return nil
}

var _ tun.Device = (*pipeDev)(nil)

var (
	clientMAC6 = [6]byte{2, 0, 0, 0, 0, 1}
	serverMAC6 = [6]byte{2, 0, 0, 0, 0, 2}
	peerMAC    = net.HardwareAddr{2, 0, 0, 0, 0, 9}
	own6       = netip.MustParsePrefix("fd00:1::fe/64")
	vip6       = netip.MustParseAddr("fd00:1::100")
	client6    = netip.MustParseAddr("fd00:1::1")
	peerLL     = netip.MustParseAddr("fe80::9") // a router solicits from its link-local address
	server6    = netip.MustParsePrefix("fd00:2::4/64")
)

// stack6 is a running stack with an IPv6 address on each side (the server
// side's also reaches fd00:99::/64 through fd00:2::1 and everything else
// through fe80::1), and the devices the
// test talks through.
func stack6(t *testing.T) (st *Stack, cli, srv *pipeDev) {
	t.Helper()
	cli, srv = newPipeDev(), newPipeDev()
	st, err := New(testBalancer(t),
		NICConfig{Devs: []tun.Device{cli}, MTU: 1500, MAC: clientMAC6, Address: netip.MustParsePrefix("172.25.254.254/24"), Address6: own6},
		NICConfig{Devs: []tun.Device{srv}, MTU: 1500, MAC: serverMAC6, Address: netip.MustParsePrefix("172.25.84.4/24"), Address6: server6,
			Routes: []Route{{Dst: netip.MustParsePrefix("fd00:99::/64"), Via: netip.MustParseAddr("fd00:2::1")},
				{Dst: netip.MustParsePrefix("::/0"), Via: netip.MustParseAddr("fe80::1")}}}, // a router known by its link-local address, as routers are
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st, cli, srv
}

// frame6 is an Ethernet frame from the peer carrying an ICMPv6 message, its
// checksum computed.
func frame6(t *testing.T, dstMAC net.HardwareAddr, src, dst netip.Addr, typ uint8, msg gopacket.SerializableLayer) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: peerMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, icmp, msg); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// solicitedNode is the solicited-node multicast address of a and its
// Ethernet address (RFC 4291 2.7.1, RFC 2464 7).
func solicitedNode(a netip.Addr) (netip.Addr, net.HardwareAddr) {
	b := a.As16()
	g := netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
	return g, net.HardwareAddr{0x33, 0x33, 0xff, b[13], b[14], b[15]}
}

// solicit is a multicast neighbour solicitation for target from src.
func solicit(t *testing.T, src, target netip.Addr) []byte {
	t.Helper()
	g, gmac := solicitedNode(target)
	return solicitTo(t, gmac, src, g, target)
}

// solicitTo is a neighbour solicitation for target from src to dst: dst is
// target itself when a neighbour checks that it is still reachable (RFC
// 4861 7.3.3).
func solicitTo(t *testing.T, dstMAC net.HardwareAddr, src, dst, target netip.Addr) []byte {
	t.Helper()
	ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: target.AsSlice(),
		Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: peerMAC}}}
	return frame6(t, dstMAC, src, dst, layers.ICMPv6TypeNeighborSolicitation, ns)
}

// advertise is a solicited neighbour advertisement: target is at mac.
func advertise(t *testing.T, dstMAC net.HardwareAddr, src, dst, target netip.Addr, mac net.HardwareAddr) []byte {
	t.Helper()
	na := &layers.ICMPv6NeighborAdvertisement{Flags: 0x60, TargetAddress: target.AsSlice(), // solicited, override
		Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: mac}}}
	return frame6(t, dstMAC, src, dst, layers.ICMPv6TypeNeighborAdvertisement, na)
}

// icmp6Of parses a frame the stack wrote as Ethernet, IPv6 and ICMPv6, and
// fails the test unless the ICMPv6 checksum verifies over the pseudo-header.
func icmp6Of(t *testing.T, frame []byte) (*layers.Ethernet, *layers.IPv6, *layers.ICMPv6, gopacket.Packet) {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if eth == nil || ip == nil || icmp == nil {
		return nil, nil, nil, nil
	}
	// An oracle of its own: RFC 4443 2.3, the ones' complement sum of the
	// pseudo-header and the message, checksum included, is all ones.
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	l4 := ip.Payload
	add(ip.SrcIP)
	add(ip.DstIP)
	add(binary.BigEndian.AppendUint32(nil, uint32(len(l4))))
	add([]byte{0, 0, 0, byte(layers.IPProtocolICMPv6)})
	add(l4)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Fatalf("ICMPv6 %v from %s: checksum %#04x does not verify (sum %#04x)", icmp.TypeCode, ip.SrcIP, icmp.Checksum, sum)
	}
	return eth, ip, icmp, p
}

// next waits for the next ICMPv6 frame of type typ the stack writes to d,
// skipping others (an MLD report, a router solicitation would be a bug the
// options below are meant to prevent, but not this test's). answer, if not
// nil, is given every frame skipped.
func next(t *testing.T, d *pipeDev, typ uint8, answer func(gopacket.Packet)) (*layers.Ethernet, *layers.IPv6, gopacket.Packet) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-d.wrote:
			eth, ip, icmp, p := icmp6Of(t, f)
			if icmp != nil && icmp.TypeCode.Type() == typ {
				return eth, ip, p
			}
			if p != nil && answer != nil {
				answer(p)
			}
		case <-timeout:
			t.Fatalf("no ICMPv6 type %d written in 10s", typ)
		}
	}
}

// The stack answers a neighbour solicitation for an IPv6 VIP that
// SetAddresses added, sent to the VIP's solicited-node group from a
// link-local address (as a router does) or from a global one, with a
// solicited advertisement of the NIC's MAC from the VIP, and a unicast one
// to the VIP (a neighbour's reachability probe) too; once SetAddresses
// takes the VIP away it no longer does, while its own address still is.
func TestNeighbourDiscoveryForVIPs(t *testing.T) {
	st, cli, _ := stack6(t)
	vip4 := netip.MustParseAddr("172.25.254.100")
	if err := st.SetAddresses(nat.ClientSide, []netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}
	nicMAC := net.HardwareAddr(clientMAC6[:])
	for i, src := range []netip.Addr{peerLL, client6, client6} {
		if i < 2 {
			cli.in <- solicit(t, src, vip6)
		} else {
			cli.in <- solicitTo(t, nicMAC, src, vip6, vip6) // unicast
		}
		// The advertisement is the first frame the side writes: no
		// MLD report for the groups the VIPs joined, no router
		// solicitation, no DAD probe came before it (ipv6Options).
		eth, ip, p := next(t, cli, layers.ICMPv6TypeNeighborAdvertisement, func(p gopacket.Packet) {
			if i == 0 {
				t.Fatalf("the client side wrote %v before the first advertisement", p.Layers()[len(p.Layers())-1].LayerType())
			}
		})
		na, _ := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
		if na == nil {
			t.Fatalf("from %s: an advertisement gopacket cannot parse", src)
		}
		var tll net.HardwareAddr
		for _, o := range na.Options {
			if o.Type == layers.ICMPv6OptTargetAddress {
				tll = o.Data
			}
		}
		if got, _ := netip.AddrFromSlice(na.TargetAddress); got != vip6 || tll.String() != nicMAC.String() || !na.Solicited() {
			t.Fatalf("from %s: advertisement for %s at %s, solicited %v; want %s at %s, solicited", src, got, tll, na.Solicited(), vip6, nicMAC)
		}
		if from, _ := netip.AddrFromSlice(ip.SrcIP); from != vip6 || net.IP(ip.DstIP).String() != src.String() || ip.HopLimit != 255 {
			t.Fatalf("from %s: advertisement %s -> %s hop limit %d", src, from, net.IP(ip.DstIP), ip.HopLimit)
		}
		if eth.SrcMAC.String() != nicMAC.String() || eth.DstMAC.String() != peerMAC.String() {
			t.Fatalf("from %s: Ethernet %s -> %s", src, eth.SrcMAC, eth.DstMAC)
		}
	}

	// Gone: the IPv4 VIP stays, the IPv6 one goes. The reader hands
	// frames to the stack one by one and the stack answers as it takes
	// each, so an answer to the first solicitation would come before the
	// one to the second.
	if err := st.SetAddresses(nat.ClientSide, []netip.Addr{vip4}); err != nil {
		t.Fatal(err)
	}
	cli.in <- solicit(t, peerLL, vip6)
	cli.in <- solicit(t, peerLL, own6.Addr())
	_, _, p := next(t, cli, layers.ICMPv6TypeNeighborAdvertisement, nil)
	na := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if got, _ := netip.AddrFromSlice(na.TargetAddress); got != own6.Addr() {
		t.Fatalf("a removed VIP: the stack advertised %s", got)
	}
	var have []string
	for _, pa := range st.s.AllAddresses()[ClientNIC] {
		have = append(have, pa.AddressWithPrefix.String())
	}
	slices.Sort(have)
	if strings.Join(have, " ") != "172.25.254.100/32 172.25.254.254/24 fd00:1::fe/64" {
		t.Fatalf("client side addresses %v: want the own ones and the IPv4 VIP, no link-local", have)
	}
}

// An echo request to an IPv6 VIP is answered (ping6), the stack resolving
// the client through neighbour discovery first.
func TestPing6ToVIP(t *testing.T) {
	st, cli, _ := stack6(t)
	if err := st.SetAddresses(nat.ClientSide, []netip.Addr{vip6}); err != nil {
		t.Fatal(err)
	}
	payload := []byte("tapvs ping6")
	cli.in <- frame6(t, net.HardwareAddr(clientMAC6[:]), client6, vip6, layers.ICMPv6TypeEchoRequest,
		gopacket.Payload(append([]byte{0x12, 0x34, 0, 7}, payload...))) // identifier, sequence, data
	nicMAC := net.HardwareAddr(clientMAC6[:])
	answerNS := func(p gopacket.Packet) {
		ns, _ := p.Layer(layers.LayerTypeICMPv6NeighborSolicitation).(*layers.ICMPv6NeighborSolicitation)
		if ns != nil && net.IP(ns.TargetAddress).Equal(client6.AsSlice()) {
			cli.in <- advertise(t, nicMAC, client6, vip6, client6, peerMAC)
		}
	}
	eth, ip, p := next(t, cli, layers.ICMPv6TypeEchoReply, answerNS)
	echo := p.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo)
	data := p.Layer(layers.LayerTypeICMPv6).LayerPayload()[4:] // past identifier and sequence: gopacket's echo layer keeps no data
	if from, _ := netip.AddrFromSlice(ip.SrcIP); from != vip6 || !net.IP(ip.DstIP).Equal(client6.AsSlice()) ||
		echo.Identifier != 0x1234 || echo.SeqNumber != 7 || string(data) != string(payload) {
		t.Fatalf("echo reply %s -> %s id %#x seq %d %q", from, net.IP(ip.DstIP), echo.Identifier, echo.SeqNumber, data)
	}
	if eth.DstMAC.String() != peerMAC.String() || eth.SrcMAC.String() != nicMAC.String() {
		t.Fatalf("echo reply Ethernet %s -> %s", eth.SrcMAC, eth.DstMAC)
	}
}

// NextHopMAC resolves an IPv6 real server by neighbour discovery: a
// solicitation out of the server side for the server (on-link) or for its
// route's gateway, and the MAC of the advertisement that answers it.
func TestNextHopMACv6(t *testing.T) {
	st, _, srv := stack6(t)
	for i, c := range []struct{ rs, nh string }{
		{"fd00:2::2", "fd00:2::2"},  // on-link: the side's own prefix
		{"fd00:99::5", "fd00:2::1"}, // through the route's gateway
		{"2001:db8::5", "fe80::1"},  // through a link-local gateway, soliciting from the side's own address
	} {
		rs, nh := netip.MustParseAddr(c.rs), netip.MustParseAddr(c.nh)
		want := net.HardwareAddr{2, 0, 0, 0, 0x77, byte(i)}
		type result struct {
			mac [6]byte
			err error
		}
		res := make(chan result, 1)
		go func() {
			mac, err := st.NextHopMAC(rs, 10*time.Second)
			res <- result{mac, err}
		}()
		eth, ip, p := next(t, srv, layers.ICMPv6TypeNeighborSolicitation, nil)
		ns := p.Layer(layers.LayerTypeICMPv6NeighborSolicitation).(*layers.ICMPv6NeighborSolicitation)
		g, gmac := solicitedNode(nh)
		var sll net.HardwareAddr
		for _, o := range ns.Options {
			if o.Type == layers.ICMPv6OptSourceAddress {
				sll = o.Data
			}
		}
		from, _ := netip.AddrFromSlice(ip.SrcIP)
		if !net.IP(ns.TargetAddress).Equal(nh.AsSlice()) || !net.IP(ip.DstIP).Equal(g.AsSlice()) || eth.DstMAC.String() != gmac.String() ||
			from != server6.Addr() || sll.String() != net.HardwareAddr(serverMAC6[:]).String() {
			t.Fatalf("%s: solicitation for %s from %s (%s) to %s (%s); want for %s from %s (%s) to %s (%s)", rs,
				net.IP(ns.TargetAddress), from, sll, net.IP(ip.DstIP), eth.DstMAC, nh, server6.Addr(), net.HardwareAddr(serverMAC6[:]), g, gmac)
		}
		srv.in <- advertise(t, net.HardwareAddr(serverMAC6[:]), nh, server6.Addr(), nh, want)
		r := <-res
		if r.err != nil {
			t.Fatalf("%s: %v", rs, r.err)
		}
		if net.HardwareAddr(r.mac[:]).String() != want.String() {
			t.Fatalf("%s: next hop %s, want %s", rs, net.HardwareAddr(r.mac[:]), want)
		}
	}
}

// A side without an IPv6 address (own or LIP) cannot resolve an IPv6 real
// server, and says why.
func TestNextHopMACv6WithoutAnAddress(t *testing.T) {
	st, err := New(testBalancer(t),
		NICConfig{Devs: []tun.Device{newPipeDev()}, MTU: 1500, Address: netip.MustParsePrefix("172.25.254.254/24")},
		NICConfig{Devs: []tun.Device{newPipeDev()}, MTU: 1500, Address: netip.MustParsePrefix("172.25.84.4/24"),
			Routes: []Route{{Dst: netip.MustParsePrefix("::/0"), Via: netip.MustParseAddr("fd00:2::1")}}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.s.Close()
	if _, err := st.NextHopMAC(netip.MustParseAddr("fd00:2::2"), time.Second); err == nil || !strings.Contains(err.Error(), "no address of its family") {
		t.Fatalf("resolving without an IPv6 address: %v", err)
	}
}

// A route whose gateway is not of its destination's family is refused.
func TestRouteFamiliesMustAgree(t *testing.T) {
	_, err := New(testBalancer(t),
		NICConfig{Devs: []tun.Device{newPipeDev()}, MTU: 1500, Address: netip.MustParsePrefix("172.25.254.254/24")},
		NICConfig{Devs: []tun.Device{newPipeDev()}, MTU: 1500, Address: netip.MustParsePrefix("172.25.84.4/24"),
			Routes: []Route{{Dst: netip.MustParsePrefix("fd00:99::/64"), Via: netip.MustParseAddr("172.25.84.1")}}},
		slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "not of the destination's family") {
		t.Fatalf("an IPv6 route via an IPv4 gateway: %v", err)
	}
}
