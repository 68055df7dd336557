// SYNPROXY over IPv6 (issue #15): go test -run TestIPv6Synproxy ./e2e/

package e2e

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// synproxyServices6 are config.yaml's web6-synproxy ([VIP6]:8080 to the
// real servers' port 80), a bulk service behind SYNPROXY, and echo6,
// whose datagrams mark how far tapvs's readers have come.
const synproxyServices6 = `
  - name: web6-synproxy
    vip: fd00:25:254::100
    port: 8080
    scheduler: rr
    synproxy: true
    local_addresses: [fd00:25:84::10, fd00:25:84::11]
    real_servers:
      - {address: fd00:20:1::2, port: 80}
      - {address: fd00:20:2::2, port: 80}
  - name: bulk6-synproxy
    vip: fd00:25:254::100
    port: 9000
    scheduler: rr
    synproxy: true
    local_addresses: [fd00:25:84::10]
    real_servers:
      - {address: fd00:20:1::2, port: 9000}
      - {address: fd00:20:2::2, port: 9000}
  - name: echo6
    vip: fd00:25:254::100
    port: 9001
    protocol: udp
    scheduler: rr
    local_addresses: [fd00:25:84::11]
    real_servers:
      - {address: fd00:20:1::2, port: 9001}
      - {address: fd00:20:2::2, port: 9001}`

// synproxyServices64 are synproxyServices6 at the NAT64 VIP (issue #27):
// IPv4 LIPs and real servers behind [VIP64]:8080, :9000 and :9001.
const synproxyServices64 = `
  - name: web64-synproxy
    vip: fd00:25:254::64
    port: 8080
    scheduler: rr
    synproxy: true
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80}
  - name: bulk64-synproxy
    vip: fd00:25:254::64
    port: 9000
    scheduler: rr
    synproxy: true
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 9000}
      - {address: 10.20.2.2, port: 9000}
  - name: echo64
    vip: fd00:25:254::64
    port: 9001
    protocol: udp
    scheduler: rr
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9001}
      - {address: 10.20.2.2, port: 9001}`

// synproxyKind is where the IPv6 SYNPROXY tests run: IPv6 FULLNAT (an
// IPv6 VIP, IPv6 LIPs and real servers) or NAT64 (IPv4 ones behind an
// IPv6 VIP), whose server side the checks read in its own family.
type synproxyKind struct {
	name     string
	services string
	vip      netip.Addr
	lips     [2]netip.Addr
	rs       map[string]netip.Addr // by the lab's names, rs1 and rs2
	// server reads a packet on the router's link in the server side's
	// family (ok false: another family).
	server func(gopacket.Packet) (src, dst netip.Addr, ok bool)
	sums   func(t *testing.T, ps []gopacket.Packet, from netip.Addr, full bool) int
	// client4 marks NAT46's kind: an IPv4 client (the tests whose client
	// is the kernel's run it; those that craft IPv6 frames do not).
	client4 bool
}

// synproxyKind46 is NAT46 behind SYNPROXY (issue #27): synproxyServices64
// mirrored (xlat, nat64_test.go), an IPv4 client and VIP, IPv6 LIPs and
// real servers. The cookie SYN-ACK announces 1440 here too: the
// configured 1460 less the 20 bytes the client's segments grow by.
var synproxyKind46 = synproxyKind{name: "nat46", services: x46.services(synproxyServices64), vip: lab.VIP46,
	lips: [2]netip.Addr{lab.LIP1v6, lab.LIP2v6}, rs: map[string]netip.Addr{"rs1": lab.RS1v6, "rs2": lab.RS2v6},
	server: func(p gopacket.Packet) (src, dst netip.Addr, ok bool) { return ipsOf(p, true) },
	sums:   checkTCPSums6, client4: true}

var synproxyKinds = []synproxyKind{
	{name: "ipv6", services: synproxyServices6, vip: lab.VIP6, lips: [2]netip.Addr{lab.LIP1v6, lab.LIP2v6},
		rs: map[string]netip.Addr{"rs1": lab.RS1v6, "rs2": lab.RS2v6},
		server: func(p gopacket.Packet) (src, dst netip.Addr, ok bool) {
			if ip := ip6Of(p); ip != nil {
				return addr(ip.SrcIP), addr(ip.DstIP), true
			}
			return src, dst, false
		}, sums: checkTCPSums6},
	{name: "nat64", services: synproxyServices64, vip: lab.VIP64, lips: [2]netip.Addr{lab.LIP1, lab.LIP2},
		rs: map[string]netip.Addr{"rs1": lab.RS1, "rs2": lab.RS2},
		server: func(p gopacket.Packet) (src, dst netip.Addr, ok bool) {
			if ip := ip4Of(p); ip != nil {
				return addr(ip.SrcIP), addr(ip.DstIP), true
			}
			return src, dst, false
		}, sums: checkTCPSums4},
}

func (k *synproxyKind) isLIP(a netip.Addr) bool { return a == k.lips[0] || a == k.lips[1] }
func (k *synproxyKind) isRS(a netip.Addr) bool  { return a == k.rs["rs1"] || a == k.rs["rs2"] }

// mssOf returns a TCP segment's MSS option.
func mssOf(tcp *layers.TCP) (uint16, bool) {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindMSS && len(o.OptionData) == 2 {
			return binary.BigEndian.Uint16(o.OptionData), true
		}
	}
	return 0, false
}

// craft6 builds an IPv6 TCP frame to [vip]:8080 from a client that exists
// only on the wire.
func craft6(t testing.TB, srcMAC, dstMAC net.HardwareAddr, src, vip netip.Addr, sport uint16, tcp *layers.TCP, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: vip.AsSlice()}
	tcp.SrcPort, tcp.DstPort = layers.TCPPort(sport), lab.SynproxyPort
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The synproxy MSS for an IPv6 client: the configured one (for IPv4's
// 20-byte header) less 20.
func synproxyMSS6(t *testing.T, e *env) uint16 {
	t.Helper()
	mss := e.d.Config().Synproxy.MSS
	if mss != 1460 {
		t.Fatalf("the lab's synproxy MSS is %d; this test expects the default 1460", mss)
	}
	return mss - 20
}

// HTTP through [VIP6]:8080, behind SYNPROXY, with the client's kernel:
// rr alternates over both real servers, each answering on its IPv6
// address and seeing an IPv6 LIP; and the same through [VIP64]:8080
// (NAT64: IPv4 LIPs and real servers, issue #27) and VIP46:8080 (NAT46:
// an IPv4 client, the cookie SYN-ACK over IPv4). Every SYN-ACK the client gets from
// the VIP is tapvs's cookie, announcing the IPv6 MSS (the configured 1460
// less 20: 1440); every handshake was proved by a cookie (the counters),
// none failed, nothing dropped as a bad cookie. Checksums verify from
// scratch on both links.
func TestIPv6SynproxyHTTP(t *testing.T) {
	for _, k := range append(synproxyKinds, synproxyKind46) {
		t.Run(k.name, func(t *testing.T) { testSynproxyHTTP6(t, &k) })
	}
}

func testSynproxyHTTP6(t *testing.T, k *synproxyKind) {
	e := setup6(t, k.services, "")
	web := netip.AddrPortFrom(k.vip, lab.SynproxyPort)
	wantMSS := synproxyMSS6(t, e)
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	cookies0, opened0, failed0, _ := e.d.Balancer.Stats.Synproxy()
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	prev := ""
	const n = 8
	for i := range n {
		rs, rsAddr, saw := e.getAt(hc, web)
		if rs == prev {
			t.Fatalf("request %d went to %s twice in a row", i, rs)
		}
		prev = rs
		if rsAddr != k.rs[rs] || !k.isLIP(saw.Addr()) {
			t.Fatalf("request %d: %s answered on %s and saw %s; want its address %s and a LIP %v", i, rs, rsAddr, saw, k.rs[rs], k.lips)
		}
	}
	if a, b := e.rs[0].Requests.Load(), e.rs[1].Requests.Load(); a != n/2 || b != n/2 {
		t.Fatalf("rs1 %d, rs2 %d requests; want %d each", a, b, n/2)
	}
	cookies, opened, failed, _ := e.d.Balancer.Stats.Synproxy()
	if cookies-cookies0 < n || opened-opened0 != n || failed != failed0 {
		t.Fatalf("synproxy counters moved by: cookies %d, handshakes proved %d, server failures %d; want >= %d, %d, 0", cookies-cookies0, opened-opened0, failed-failed0, n, n)
	}
	if d := e.d.Balancer.Stats.Drops(); d["bad_cookie"] != 0 || d["synproxy_state"] != 0 {
		t.Fatalf("drops during clean traffic: %v", d)
	}
	for _, cp := range []struct {
		c    *capture
		port uint16
	}{{capClient, lab.SynproxyPort}, {capRouter, lab.HTTPPort}} {
		if !eventually(5*time.Second, func() bool { return tcpFlowsClosed(cp.c.packets(), cp.port) }) {
			t.Fatalf("the HTTP connections' closes (port %d) did not all reach a capture within 5s", cp.port)
		}
		cp.c.stop()
	}
	sa := 0
	for _, p := range tcpPort(capClient.packets(), lab.SynproxyPort) {
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !tcp.SYN || !tcp.ACK {
			continue
		}
		sa++
		if src, _, ok := ipsOf(p, !k.client4); !ok || src != k.vip {
			t.Fatalf("a SYN-ACK on the client's link not from the VIP in the client's family: %v", p.NetworkLayer().NetworkFlow())
		}
		if mss, ok := mssOf(tcp); !ok || mss != wantMSS {
			t.Fatalf("the cookie SYN-ACK announces MSS %d (present %v); want %d", mss, ok, wantMSS)
		}
	}
	if sa != n {
		t.Fatalf("%d SYN-ACKs reached the client for %d connections", sa, n)
	}
	checkTCPSumsOf(t, capClient.packets(), k.vip, false, !k.client4)
	for i, p := range tcpPort(capRouter.packets(), lab.HTTPPort) {
		if src, dst, ok := k.server(p); !ok || !(k.isLIP(src) && k.isRS(dst) || k.isRS(src) && k.isLIP(dst)) {
			t.Fatalf("router link frame %d: %v: only LIP <-> RS in the server side's family may appear", i, p.NetworkLayer().NetworkFlow())
		}
	}
	k.sums(t, capRouter.packets(), netip.Addr{}, false)
}

// On the wire, for a client that exists only there (fd00:25:254::77, its
// frames written raw onto the client's link): the SYN is answered with a
// cookie SYN-ACK (the client's ISN + 1, the IPv6 MSS) and nothing reaches
// the real servers' side, as echo6 datagrams read by tapvs after the SYN
// and seen on the router's link going to both real servers prove; no TCP
// connection entry exists. Only the client's ACK, carrying the cookie,
// makes tapvs open the server side: a SYN from an IPv6 LIP to an IPv6 real
// server with the client's ISN, and the server's handshake completes.
// Through [VIP64]:8080 (NAT64) the same, the server side IPv4: the SYN
// from an IPv4 LIP to an IPv4 real server, with the client's MSS of 1440
// (within the client side's MTU - 60).
func TestIPv6SynproxyOnTheWire(t *testing.T) {
	for _, k := range synproxyKinds {
		t.Run(k.name, func(t *testing.T) { testSynproxyOnTheWire6(t, &k) })
	}
}

func testSynproxyOnTheWire6(t *testing.T, k *synproxyKind) {
	e := setup6(t, k.services, "")
	wantMSS := synproxyMSS6(t, e)
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	vipMAC := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	myMAC, _ := net.ParseMAC(ifaceMAC(t, e.top.Client, e.top.TapClient))
	ghost := netip.MustParseAddr("fd00:25:254::77")
	const isn, sport = 0x6fff0000, 50123
	opts := []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xa0}}, // 1440
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
	}
	if _, err := inject(e.top.Client, e.top.TapClient, craft6(t, myMAC, vipMAC, ghost, k.vip, sport, &layers.TCP{SYN: true, Seq: isn, Window: 64800, Options: opts}, nil)); err != nil {
		t.Fatal(err)
	}
	var synack *layers.TCP
	if !eventually(2*time.Second, func() bool {
		for _, p := range tcpPort(capClient.packets(), sport) {
			if tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP); tcp.SYN && tcp.ACK && ip6Of(p) != nil && addr(ip6Of(p).DstIP) == ghost {
				synack = tcp
				return true
			}
		}
		return false
	}) {
		t.Fatal("no SYN-ACK from the IPv6 VIP")
	}
	if mss, _ := mssOf(synack); synack.Ack != isn+1 || mss != wantMSS {
		t.Fatalf("SYN-ACK ack %#x MSS %d; want %#x and %d", synack.Ack, mss, uint32(isn+1), wantMSS)
	}
	// Had the SYN gone on, it would be on the router's link before a
	// datagram tapvs's one client reader read after it. Echoes go round
	// robin: send them until both real servers' datagrams have crossed.
	echoTo := func(rs netip.Addr) int {
		n := 0
		for _, p := range udpPort(capRouter.packets(), lab.EchoPort) {
			if _, dst, ok := k.server(p); ok && dst == rs {
				n++
			}
		}
		return n
	}
	echo := netip.AddrPortFrom(k.vip, lab.EchoPort)
	rs1, rs2 := k.rs["rs1"], k.rs["rs2"]
	for i := 0; echoTo(rs1) == 0 || echoTo(rs2) == 0; i++ {
		if i == 10 {
			t.Fatalf("after %d echoes, the router's link saw %d to rs1 and %d to rs2", i, echoTo(rs1), echoTo(rs2))
		}
		if _, err := lab.UDPEcho(e.ctx(3*time.Second), e.top.Client, echo, "marker"); err != nil {
			t.Fatalf("echo %d through the IPv6 VIP: %v", i, err)
		}
		eventually(time.Second, func() bool { return echoTo(rs1)+echoTo(rs2) >= i+1 })
	}
	if ps := tcpPort(capRouter.packets(), lab.HTTPPort); len(ps) != 0 {
		t.Fatalf("%d TCP segments to the real servers' port 80 before the client's ACK", len(ps))
	}
	for _, c := range e.d.Balancer.Table().Conns() {
		if c.Protocol != nat.UDP {
			t.Fatalf("the SYN made a connection entry: %+v", c)
		}
	}

	if _, err := inject(e.top.Client, e.top.TapClient, craft6(t, myMAC, vipMAC, ghost, k.vip, sport,
		&layers.TCP{ACK: true, Seq: isn + 1, Ack: synack.Seq + 1, Window: 507}, nil)); err != nil {
		t.Fatal(err)
	}
	var seen []gopacket.Packet
	if !eventually(3*time.Second, func() bool {
		seen = tcpPort(capRouter.packets(), lab.HTTPPort)
		return len(seen) >= 3
	}) {
		t.Fatalf("after the client's ACK, %d segments to or from a real server's port 80; want its handshake", len(seen))
	}
	syn := seen[0].Layer(layers.LayerTypeTCP).(*layers.TCP)
	src, dst, ok := k.server(seen[0])
	if !ok || !syn.SYN || syn.ACK || syn.Seq != isn || !k.isLIP(src) || !k.isRS(dst) {
		t.Fatalf("the first segment to a real server: %v, SYN %v ACK %v seq %#x; want a SYN LIP -> RS in the server side's family with the client's ISN %#x",
			seen[0].NetworkLayer().NetworkFlow(), syn.SYN, syn.ACK, syn.Seq, uint32(isn))
	}
	if mss, _ := mssOf(syn); mss != 1440 {
		t.Fatalf("the SYN to the real server announces MSS %d; want the client's 1440", mss)
	}
	if rsSynAck := seen[1].Layer(layers.LayerTypeTCP).(*layers.TCP); !rsSynAck.SYN || !rsSynAck.ACK {
		t.Fatal("the real server did not answer tapvs's SYN with a SYN-ACK")
	}
	if ack := seen[2].Layer(layers.LayerTypeTCP).(*layers.TCP); ack.SYN || !ack.ACK {
		t.Fatal("tapvs did not complete the real server's handshake with an ACK")
	}
	k.sums(t, capRouter.packets(), netip.Addr{}, false)
	if _, opened, _, _ := e.d.Balancer.Stats.Synproxy(); opened != 1 {
		t.Fatalf("%d handshakes proved; want the one", opened)
	}
}

// 16 MiB each way through [VIP6]:9000 behind SYNPROXY arrives intact
// (hashes compared), the upload on one real server and the download on
// the other (rr); and through [VIP64]:9000 (NAT64) and VIP46:9000 (NAT46).
func TestIPv6SynproxyBulk16MiB(t *testing.T) {
	for _, k := range append(synproxyKinds, synproxyKind46) {
		t.Run(k.name, func(t *testing.T) { testSynproxyBulk6(t, &k) })
	}
}

func testSynproxyBulk6(t *testing.T, k *synproxyKind) {
	e := setup6(t, k.services, "")
	bulk := netip.AddrPortFrom(k.vip, lab.BulkPort)
	const n = 16 << 20
	if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, bulk, n); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Download(e.ctx(time.Minute), e.top.Client, bulk, n); err != nil {
		t.Fatal(err)
	}
	cookies, opened, failed, _ := e.d.Balancer.Stats.Synproxy()
	if opened != 2 || cookies < opened || failed != 0 {
		t.Fatalf("synproxy counters: cookies %d, handshakes proved %d, server failures %d; want 2 proved, none failed", cookies, opened, failed)
	}
}

// A spoofed IPv6 SYN flood (random sources in the client's /64) reaches
// tapvs and is answered with cookies, nearly whole, yet leaves no
// half-open connection on the real servers and no entry in tapvs, while
// legitimate IPv6 requests through the same VIP keep succeeding: the
// IPv4 flood test's checks (TestSynproxySpoofedFlood) over IPv6. hping3
// has no IPv6, so the frames are built here and written to the TAP. The
// same through the NAT64 VIP.
func TestIPv6SynproxySpoofedFlood(t *testing.T) {
	for _, k := range synproxyKinds {
		t.Run(k.name, func(t *testing.T) { testSynproxySpoofedFlood6(t, &k) })
	}
}

func testSynproxySpoofedFlood6(t *testing.T, k *synproxyKind) {
	e := setup6(t, k.services, "")
	vipMAC := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	myMAC, _ := net.ParseMAC(ifaceMAC(t, e.top.Client, e.top.TapClient))
	const n, rate = 40000, 20000
	const minAnswered = n * 9 / 10 // the TAP may throw away up to 10%, counted
	frames := make([][]byte, n)
	for i := range frames {
		var src [16]byte
		copy(src[:8], lab.ClientAddr6.Addr().AsSlice()[:8])
		for j := 8; j < 16; j++ {
			src[j] = byte(rand.IntN(256))
		}
		src[8] |= 0x80 // never the client's ::1, the VIP's ::100 or tapvs's ::fe
		frames[i] = craft6(t, myMAC, vipMAC, netip.AddrFrom16(src), k.vip, uint16(1024+rand.IntN(60000)),
			&layers.TCP{SYN: true, Seq: rand.Uint32(), Window: 64240, Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xa0}}}}, nil)
	}
	cookies0, _, _, _ := e.d.Balancer.Stats.Synproxy()
	legit0 := kernelSYNs(t, e.top.Client)
	tapDrop0 := txDropped(t, e.top.Client, e.top.TapClient)
	done := make(chan struct{})
	var delivered int
	var elapsed time.Duration
	go func() {
		defer close(done)
		delivered, elapsed = injectAtRate(t, e.top.Client, e.top.TapClient, frames, rate)
	}()
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	legit, maxHalfOpen := 0, 0
	for flooding := true; flooding; {
		select {
		case <-done:
			flooding = false
		default:
		}
		e.getAt(hc, netip.AddrPortFrom(k.vip, lab.SynproxyPort))
		legit++
		for i := range e.rs {
			maxHalfOpen = max(maxHalfOpen, synRecv(t, e.top.RS[i]))
		}
	}
	var answered, tapDrops int64
	account := func() bool {
		cookies, _, _, _ := e.d.Balancer.Stats.Synproxy()
		answered = int64(cookies-cookies0) - int64(kernelSYNs(t, e.top.Client)-legit0)
		tapDrops = int64(txDropped(t, e.top.Client, e.top.TapClient) - tapDrop0)
		return answered+tapDrops >= int64(delivered)
	}
	closed := eventually(5*time.Second, account)
	t.Logf("%d spoofed IPv6 SYNs paced at %d/s: %d taken by the TAP in %v, %d answered with a cookie, %d thrown away by the TAP's queue; %d legitimate requests served meanwhile, RS half-open peak %d",
		n, rate, delivered, elapsed.Round(time.Millisecond), answered, tapDrops, legit, maxHalfOpen)
	if maxHalfOpen != 0 {
		t.Fatalf("real servers held %d half-open connections", maxHalfOpen)
	}
	for _, c := range e.d.Balancer.Table().Conns() {
		if c.Client.Addr() != lab.ClientAddr6.Addr() && c.Client.Addr() != lab.ClientAddr.Addr() {
			t.Fatalf("a spoofed source has a connection entry: %+v", c)
		}
	}
	if legit < 5 {
		t.Fatalf("only %d legitimate requests got through during the flood", legit)
	}
	if delivered < minAnswered {
		t.Fatalf("the TAP took only %d of %d spoofed SYNs", delivered, n)
	}
	if !closed || answered > int64(delivered) {
		t.Fatalf("of %d spoofed SYNs taken by the TAP, %d were answered and %d thrown away by the TAP: the rest vanished in tapvs (or some were answered twice)", delivered, answered, tapDrops)
	}
	if answered < minAnswered {
		t.Fatalf("only %d of %d spoofed SYNs reached tapvs and were answered (want >= %d)", answered, n, minAnswered)
	}
}
