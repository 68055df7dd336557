// The NAT64 tests (issue #15): an IPv6 VIP in front of IPv4 LIPs and real
// servers. go test -run TestNAT64 ./e2e/

package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
)

// nat64Services are config.yaml's web64 and echo64 and the IPv6 set's
// bulk and nobody-listens services, at the NAT64 VIP: IPv4 LIPs and real
// servers behind [fd00:25:254::64].
const nat64Services = `
  - name: web64
    vip: fd00:25:254::64
    port: 80
    scheduler: rr
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80}
  - name: bulk64
    vip: fd00:25:254::64
    port: 9000
    scheduler: rr
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
      - {address: 10.20.2.2, port: 9001}
  - name: nobody-listens64
    vip: fd00:25:254::64
    port: 9002
    protocol: udp
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9002}`

// bulk64RS2 is a NAT64 bulk service to rs2 alone, behind the link a path
// MTU test narrows.
const bulk64RS2 = `
  - name: bulk64-rs2
    vip: fd00:25:254::64
    port: 9000
    scheduler: rr
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.2.2, port: 9000}`

var web64 = netip.AddrPortFrom(lab.VIP64, lab.HTTPPort)

// getAt does one short HTTP request to ap and returns the name of the real
// server that answered, the address it answered on and the source it saw.
func (e *env) getAt(hc *http.Client, ap netip.AddrPort) (rs string, rsAddr netip.Addr, saw netip.AddrPort) {
	e.t.Helper()
	resp, err := hc.Get("http://" + ap.String() + "/")
	if err != nil {
		e.t.Fatalf("GET via %v: %v", ap, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	var a, src string
	if _, err := fmt.Sscanf(string(body), "%s %s saw %s", &rs, &a, &src); err != nil {
		e.t.Fatalf("answer %q: %v", body, err)
	}
	if rsAddr, err = netip.ParseAddr(a); err != nil {
		e.t.Fatalf("answer %q: %v", body, err)
	}
	if saw, err = netip.ParseAddrPort(src); err != nil {
		e.t.Fatalf("answer %q: %v", body, err)
	}
	return rs, rsAddr, saw
}

// ip4Of returns p's IPv4 header, or nil for a frame that is not IPv4
// (ethertype 0x0800).
func ip4Of(p gopacket.Packet) *layers.IPv4 {
	eth, ok := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !ok || eth.EthernetType != layers.EthernetTypeIPv4 {
		return nil
	}
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	return ip
}

// pseudoV4 is the sum of the IPv4 pseudo-header (RFC 793 3.1).
func pseudoV4(src, dst []byte, proto uint8, length int) uint16 {
	var b [12]byte
	copy(b[0:4], src)
	copy(b[4:8], dst)
	b[9] = proto
	binary.BigEndian.PutUint16(b[10:], uint16(length))
	return inetSum(b[:], 0)
}

// checkTCPSums4 verifies, from the bytes and with inetSum alone (no code
// of tapvs's), the IPv4 header checksum and the TCP checksum of every IPv4
// TCP segment in ps, as checkTCPSums6 does for IPv6: from, if valid,
// limits it to segments from that address; a partial TCP checksum is
// allowed unless full, and counted. The header checksum is always whole.
// It fails the test on no segment at all.
func checkTCPSums4(t *testing.T, ps []gopacket.Packet, from netip.Addr, full bool) (partial int) {
	t.Helper()
	n := 0
	for i, p := range ps {
		ip := ip4Of(p)
		if ip == nil || ip.Protocol != layers.IPProtocolTCP {
			continue
		}
		if from.IsValid() && addr(ip.SrcIP) != from {
			continue
		}
		n++
		raw := p.Data()[14:]
		ihl := int(raw[0]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(raw[2:]))
		if inetSum(raw[:ihl], 0) != 0xffff {
			t.Fatalf("segment %d (%v -> %v): IPv4 header checksum %#04x does not verify", i, ip.SrcIP, ip.DstIP, ip.Checksum)
		}
		if tot > len(raw) || tot < ihl+20 {
			t.Fatalf("segment %d: IPv4 total length %d, %d bytes captured", i, tot, len(raw))
		}
		l4 := raw[ihl:tot]
		ps := pseudoV4(raw[12:16], raw[16:20], 6, len(l4))
		switch {
		case inetSum(l4, uint64(ps)) == 0xffff:
		case !full && binary.BigEndian.Uint16(l4[16:]) == ps:
			partial++
		default:
			t.Fatalf("segment %d (%v -> %v, %d bytes): TCP checksum does not verify", i, ip.SrcIP, ip.DstIP, tot)
		}
	}
	if n == 0 {
		t.Fatal("no IPv4 TCP segment captured")
	}
	return partial
}

// HTTP through [VIP64]:80 (an IPv6 VIP, IPv4 LIPs and real servers): rr
// alternates over both real servers, each answering on its IPv4 address
// and seeing an IPv4 LIP. On the wire, for port 80: only IPv6 client <->
// VIP64 on the client's link (no IPv4), only IPv4 LIP <-> RS on the
// router's link (no IPv6 TCP, the client's addresses nowhere), DF set on
// what tapvs sends there past 1260 bytes and only there (RFC 7915 5.1); every IPv4 header checksum and every TCP
// checksum verifies from scratch (a partial one only where a kernel or
// offload leaves it; none from tapvs on plain TAPs). With and without TAP
// offload.
func TestNAT64HTTPBalanced(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noOffload bool
	}{{"offload", false}, {"plain", true}} {
		t.Run(tc.name, func(t *testing.T) {
			need(t)
			needIPv6(t)
			e := setupWith(t, topoOpts{queues: 1, ipv6: true, noOffload: tc.noOffload}, nat64Services, "")
			capClient := startCapture(t, e.top.Client, e.top.TapClient)
			capRouter := startCapture(t, e.top.Router, e.top.TapServer)
			hc := lab.HTTPClient(e.top.Client, 5*time.Second)
			lips := map[netip.Addr]bool{lab.LIP1: true, lab.LIP2: true}
			rss := map[netip.Addr]bool{lab.RS1: true, lab.RS2: true}
			want := map[string]netip.Addr{"rs1": lab.RS1, "rs2": lab.RS2}
			prev := ""
			const n = 8
			for i := range n {
				rs, rsAddr, saw := e.getAt(hc, web64)
				if rs == prev {
					t.Fatalf("request %d went to %s twice in a row", i, rs)
				}
				prev = rs
				if rsAddr != want[rs] {
					t.Fatalf("request %d: %s answered on %s, not its IPv4 address %s", i, rs, rsAddr, want[rs])
				}
				if !lips[saw.Addr()] {
					t.Fatalf("request %d: %s saw %s, not an IPv4 LIP", i, rs, saw)
				}
			}
			if a, b := e.rs[0].Requests.Load(), e.rs[1].Requests.Load(); a != n/2 || b != n/2 {
				t.Fatalf("rs1 %d, rs2 %d requests; want %d each", a, b, n/2)
			}
			for _, c := range []*capture{capClient, capRouter} {
				if !eventually(5*time.Second, func() bool { return tcpFlowsClosed(c.packets(), lab.HTTPPort) }) {
					t.Fatal("the HTTP connections' closes did not all reach a capture within 5s")
				}
				c.stop()
			}

			client := lab.ClientAddr6.Addr()
			fs := flows6(capClient.packets(), lab.HTTPPort)
			if len(fs) < n*5 {
				t.Fatalf("client side: only %d IPv6 HTTP packets captured", len(fs))
			}
			for _, f := range fs {
				if !(f[0].Addr() == client && f[1] == web64 || f[0] == web64 && f[1].Addr() == client) {
					t.Fatalf("client side carries %v -> %v: only client <-> [VIP64]:80 may appear", f[0], f[1])
				}
			}
			for i, p := range tcpPort(capClient.packets(), lab.HTTPPort) {
				if ip6Of(p) == nil {
					t.Fatalf("client side frame %d: HTTP not over IPv6: %v", i, p.NetworkLayer().NetworkFlow())
				}
			}
			checkTCPSums6(t, capClient.packets(), netip.Addr{}, false)
			if p := checkTCPSums6(t, capClient.packets(), lab.VIP64, false); tc.noOffload && p > 0 {
				t.Fatalf("plain TAPs: %d segments from VIP64 with partial checksums", p)
			}

			cfg := e.d.Config()
			inRange := func(p uint16) bool { return p >= cfg.PortMin && p <= cfg.PortMax }
			tcp4 := 0
			for i, p := range tcpPort(capRouter.packets(), lab.HTTPPort) {
				ip := ip4Of(p)
				if ip == nil {
					t.Fatalf("router link frame %d: HTTP not over IPv4: %v", i, p.NetworkLayer().NetworkFlow())
				}
				tcp4++
				tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				src, dst := addr(ip.SrcIP), addr(ip.DstIP)
				out := lips[src] && rss[dst] && tcp.DstPort == lab.HTTPPort && inRange(uint16(tcp.SrcPort))
				back := rss[src] && lips[dst] && tcp.SrcPort == lab.HTTPPort && inRange(uint16(tcp.DstPort))
				if !out && !back {
					t.Fatalf("router link frame %d: %v:%d -> %v:%d: only LIP:[%d-%d] <-> RS:80 may appear", i, src, tcp.SrcPort, dst, tcp.DstPort, cfg.PortMin, cfg.PortMax)
				}
				if df := ip.Flags&layers.IPv4DontFragment != 0; out && df != (ip.Length > 1260) {
					t.Fatalf("router link frame %d: %v -> %v from tapvs, %d bytes: DF %v (want it past 1260 bytes only)", i, src, dst, ip.Length, df)
				}
			}
			if tcp4 < n*5 {
				t.Fatalf("router link: only %d IPv4 HTTP frames", tcp4)
			}
			for i, p := range capRouter.packets() {
				ip := ip6Of(p)
				if ip == nil {
					continue
				}
				if src, dst := addr(ip.SrcIP), addr(ip.DstIP); src == client || dst == client || src == lab.VIP64 || dst == lab.VIP64 || ip.NextHeader == layers.IPProtocolTCP {
					t.Fatalf("router link frame %d: IPv6 %v -> %v (next header %v): neither the client's addresses nor IPv6 TCP may cross to the servers' side", i, src, dst, ip.NextHeader)
				}
			}
			checkTCPSums4(t, capRouter.packets(), netip.Addr{}, false)
			if p := checkTCPSums4(t, capRouter.packets(), lab.LIP1, false) + checkTCPSums4(t, capRouter.packets(), lab.LIP2, false); tc.noOffload && p > 0 {
				t.Fatalf("plain TAPs: %d segments from the LIPs with partial checksums", p)
			}
		})
	}
}

// 64 MiB each way through [VIP64]:9000 arrives intact (hashes compared),
// on either IPv4 real server.
func TestNAT64Bulk64MiBBothWaysIntact(t *testing.T) {
	e := setup6(t, nat64Services, "")
	bulk := netip.AddrPortFrom(lab.VIP64, lab.BulkPort)
	const n = 64 << 20
	for range 2 { // rr: one of each pair to each server
		if _, err := lab.Upload(e.ctx(2*time.Minute), e.top.Client, bulk, n); err != nil {
			t.Fatal(err)
		}
		if _, err := lab.Download(e.ctx(2*time.Minute), e.top.Client, bulk, n); err != nil {
			t.Fatal(err)
		}
	}
}

// A UDP datagram through echo64 comes back from an IPv4 real server that
// saw the IPv4 LIP. One to a port with no server gets the real server's
// ICMPv4 port unreachable, which tapvs translates to ICMPv6 destination
// unreachable, port unreachable (type 1 code 4): the client's connected
// socket reads ECONNREFUSED. The wire shows the RS's error (RS1 -> LIP2,
// quoting LIP2 -> RS1:9002) on the router's link and, on the client's
// link, one from VIP64 to the client quoting the client's own datagram
// (its addresses, ports, length and payload; its hop limit less the
// router's one), checksums valid; and, for a datagram with a full UDP
// checksum (sent raw), the quoted checksum is the client's own, and the
// one tapvs sent the RS verified for LIP -> RS.
func TestNAT64UDPEchoAndPortUnreachable(t *testing.T) {
	e := setup6(t, nat64Services, "")
	echoThenRefused(t, e, lab.VIP64, lab.LIP2, checkPortUnreachable64)
}

// checkPortUnreachable64 is checkPortUnreachable6 across NAT64: the RS's
// ICMPv4 error on the router's link, the ICMPv6 one on the client's.
func checkPortUnreachable64(t *testing.T, capClient, capRouter *capture, local netip.AddrPort, msg string, fullSum bool) {
	t.Helper()
	const closedPort = 9002
	closed := netip.AddrPortFrom(lab.VIP64, closedPort)
	var sent, fromRS gopacket.Packet
	var toClient icmp6Error
	if !eventually(5*time.Second, func() bool {
		sent, fromRS = nil, nil
		got := false
		for _, p := range capClient.packets() {
			if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && ip6Of(p) != nil && u.DstPort == closedPort && string(u.Payload) == msg && p.Layer(layers.LayerTypeICMPv6) == nil {
				sent = p
			}
			if ie, ok := icmp6ErrorOf(p); ok && ie.typ == 1 && ie.code == 4 && strings.HasSuffix(string(ie.quote), msg) {
				toClient, got = ie, true
			}
		}
		for _, p := range capRouter.packets() {
			if ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && ip4Of(p) != nil && isPortUnreachable(p) && strings.HasSuffix(string(ic.Payload), msg) {
				fromRS = p
			}
		}
		return sent != nil && got && fromRS != nil
	}) {
		t.Fatalf("%q: captured the client's datagram %v, an ICMPv6 port unreachable to the client %v, an ICMPv4 one from the RS %v", msg, sent != nil, toClient.outer != nil, fromRS != nil)
	}
	// Server side: the real server's own ICMPv4 error about what tapvs sent it.
	outer, quoted, qudp := icmpQuote(t, "the RS's port unreachable", fromRS)
	if addr(outer.SrcIP) != lab.RS1 || addr(outer.DstIP) != lab.LIP2 ||
		addr(quoted.SrcIP) != lab.LIP2 || addr(quoted.DstIP) != lab.RS1 || qudp.DstPort != closedPort {
		t.Fatalf("the RS's port unreachable %v -> %v quotes %v -> %v:%d; want %v -> %v quoting %v -> %v:%d",
			outer.SrcIP, outer.DstIP, quoted.SrcIP, quoted.DstIP, qudp.DstPort, lab.RS1, lab.LIP2, lab.LIP2, lab.RS1, closedPort)
	}
	if quoted.Flags&layers.IPv4DontFragment != 0 {
		t.Fatalf("the small datagram tapvs sent the RS (as quoted) has DF: RFC 7915 sets it past 1260 bytes only")
	}
	// Client side: ICMPv6 from VIP64, quoting the client's own datagram.
	client := lab.ClientAddr6.Addr()
	if src, dst := addr(toClient.outer.SrcIP), addr(toClient.outer.DstIP); src != lab.VIP64 || dst != client || !toClient.checksumOK {
		t.Fatalf("the client's port unreachable goes %v -> %v (checksum valid %v); want %v -> %v", src, dst, toClient.checksumOK, lab.VIP64, client)
	}
	qs, qd, proto, hop, ok := toClient.quoted()
	if !ok || qs != local || qd != closed || proto != 17 {
		t.Fatalf("the client's error quotes %v -> %v (protocol %d); want %v -> %v UDP", qs, qd, proto, local, closed)
	}
	sip := ip6Of(sent)
	if hop != sip.HopLimit-1 {
		t.Fatalf("the quote's hop limit is %d; the client sent %d and only the router takes one", hop, sip.HopLimit)
	}
	q := toClient.quote
	su := sent.Layer(layers.LayerTypeUDP).(*layers.UDP)
	sudp := append(append([]byte(nil), su.Contents...), su.Payload...)
	qudp6 := append([]byte(nil), q[40:]...)
	if binary.BigEndian.Uint16(q[4:]) != sip.Length || len(qudp6) != len(sudp) {
		t.Fatalf("the quote's payload length %d (%d bytes quoted) is not the client's %d", binary.BigEndian.Uint16(q[4:]), len(qudp6), sip.Length)
	}
	// The quoted UDP checksum: the client's own when it sent a full one
	// (and then it verifies for client6 -> VIP64, as the one tapvs sent
	// the RS does for LIP -> RS); a partial one (offload) is not compared.
	if fullSum {
		if _, ok, _ := l4Sum6(q); !ok {
			t.Fatalf("the quoted UDP checksum %#04x does not verify for %v -> %v", binary.BigEndian.Uint16(qudp6[6:]), local, closed)
		}
		qb := append(append([]byte(nil), qudp.Contents...), qudp.Payload...)
		if inetSum(qb, uint64(pseudoV4(quoted.SrcIP.To4(), quoted.DstIP.To4(), 17, len(qb)))) != 0xffff {
			t.Fatalf("the UDP checksum tapvs sent the RS (as quoted) %#04x does not verify for %v -> %v", qudp.Checksum, quoted.SrcIP, quoted.DstIP)
		}
	} else {
		sudp[6], sudp[7], qudp6[6], qudp6[7] = 0, 0, 0, 0
	}
	if string(sudp) != string(qudp6) {
		t.Fatalf("the quoted UDP datagram %x is not the client's %x", qudp6, sudp)
	}
}

// Path MTU discovery through NAT64, upload. The router's link to rs2 is
// narrowed to 1300 bytes (the router's side only: rs2 still announces an
// MSS for 1500, and the client sends full-size segments). tapvs sends them
// on as IPv4 with DF set, so the router answers with ICMPv4 fragmentation
// needed (next-hop MTU 1300) to the LIP; tapvs translates it into an
// ICMPv6 Packet Too Big from VIP64 to the client with MTU 1300 + 20 = 1320
// (unambiguous: above IPv6's 1280 floor), quoting the client's own
// segment, checksum valid. The client's kernel then sends segments that
// fit: the 16 MiB upload completes intact, and the client's route to
// VIP64 has learnt MTU 1320. Without the translation the upload stalls.
// With and without TAP offload (a GSO super-frame, or one frame a
// segment).
func TestNAT64PathMTU(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noOffload bool
	}{{"offload", false}, {"plain", true}} {
		t.Run(tc.name, func(t *testing.T) { testNAT64PathMTU(t, tc.noOffload) })
	}
}

func testNAT64PathMTU(t *testing.T, noOffload bool) {
	const mtu4, mtu6 = 1300, 1320
	need(t)
	needIPv6(t)
	e := setupWith(t, topoOpts{queues: 1, ipv6: true, noOffload: noOffload}, bulk64RS2, "")
	setMTU(t, e.top.Router, "to-rs2", mtu4)
	setMTU(t, e.top.Router, "br-b", mtu4)
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	bulk := netip.AddrPortFrom(lab.VIP64, lab.BulkPort)
	if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, bulk, 16<<20); err != nil {
		t.Fatalf("upload over a %d-byte IPv4 hop: %v (did the Packet Too Big reach the client?)", mtu4, err)
	}
	var fragNeeded gopacket.Packet
	var ptb icmp6Error
	if !eventually(5*time.Second, func() bool {
		fragNeeded = nil
		for _, p := range capRouter.packets() {
			ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if ok && ip4Of(p) != nil && ic.TypeCode == layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded) {
				fragNeeded = p
			}
		}
		got := false
		for _, p := range capClient.packets() {
			if ie, ok := icmp6ErrorOf(p); ok && ie.typ == 2 {
				ptb, got = ie, true
			}
		}
		return fragNeeded != nil && got
	}) {
		t.Fatalf("captured fragmentation needed on the router's link %v, a Packet Too Big on the client's %v", fragNeeded != nil, ptb.outer != nil)
	}
	// The router's ICMPv4 error, to the LIP, about LIP -> RS2:9000 with DF.
	outer := fragNeeded.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ic := fragNeeded.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if nh := ic.Seq; addr(outer.DstIP) != lab.LIP1 || nh != mtu4 {
		t.Fatalf("fragmentation needed to %v with next-hop MTU %d; want to %v with %d", outer.DstIP, nh, lab.LIP1, mtu4)
	}
	q := ic.Payload
	if len(q) < 28 || q[0]>>4 != 4 || netip.AddrFrom4([4]byte(q[12:16])) != lab.LIP1 || netip.AddrFrom4([4]byte(q[16:20])) != lab.RS2 ||
		binary.BigEndian.Uint16(q[22:]) != lab.BulkPort || binary.BigEndian.Uint16(q[6:])&0x4000 == 0 {
		t.Fatalf("fragmentation needed quotes %x; want %v -> %v:%d with DF", q[:min(len(q), 28)], lab.LIP1, lab.RS2, lab.BulkPort)
	}
	// The translation, to the client.
	if src, dst := addr(ptb.outer.SrcIP), addr(ptb.outer.DstIP); src != lab.VIP64 || dst != lab.ClientAddr6.Addr() || !ptb.checksumOK || ptb.code != 0 || ptb.param != mtu6 {
		t.Fatalf("the client's Packet Too Big: %v -> %v, code %d, MTU %d, checksum valid %v; want %v -> %v, code 0, MTU %d, valid",
			src, dst, ptb.code, ptb.param, ptb.checksumOK, lab.VIP64, lab.ClientAddr6.Addr(), mtu6)
	}
	qs, qd, proto, _, ok := ptb.quoted()
	if !ok || qs.Addr() != lab.ClientAddr6.Addr() || qd != bulk || proto != 6 {
		t.Fatalf("the client's Packet Too Big quotes %v -> %v (protocol %d); want %v -> %v TCP", qs, qd, proto, lab.ClientAddr6.Addr(), bulk)
	}
	if 40+int(ptb.outer.Length) > 1280 {
		t.Fatalf("the Packet Too Big is %d bytes: an ICMPv6 error is at most 1280", 40+int(ptb.outer.Length))
	}
	if out := mustRun(t, e.top.Client, "ip", "-6", "route", "get", lab.VIP64.String()); !strings.Contains(out, fmt.Sprintf("mtu %d", mtu6)) {
		t.Fatalf("the client's route to VIP64 has not learnt MTU %d: %s", mtu6, out)
	}
}
