// The NAT64 tests (issue #15): an IPv6 VIP in front of IPv4 LIPs and real
// servers; and, each one run again the other way (issue #27), NAT46: an
// IPv4 VIP in front of IPv6 LIPs and real servers. Each test is table-
// driven over the direction (xlats), its subtests named NAT64 and NAT46.
// go test -run TestNAT64 ./e2e/ (both), -run 'TestNAT64.*/NAT46' (NAT46).

package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
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

// xlat is one direction of translation: NAT64 (an IPv6 client and VIP,
// IPv4 LIPs and real servers) or NAT46 (an IPv4 client and VIP, IPv6 LIPs
// and real servers). A test written for NAT64 takes its addresses from
// here and its services through services, and runs both ways.
type xlat struct {
	name                 string
	vip, client          netip.Addr
	lip1, lip2, rs1, rs2 netip.Addr
}

var (
	x64   = xlat{"NAT64", lab.VIP64, lab.ClientAddr6.Addr(), lab.LIP1, lab.LIP2, lab.RS1, lab.RS2}
	x46   = xlat{"NAT46", lab.VIP46, lab.ClientAddr.Addr(), lab.LIP1v6, lab.LIP2v6, lab.RS1v6, lab.RS2v6}
	xlats = []xlat{x64, x46}
)

// client6 and server6 say the families of the two sides.
func (x xlat) client6() bool { return x.client.Is6() }
func (x xlat) server6() bool { return x.rs1.Is6() }

// at is the VIP at port.
func (x xlat) at(port uint16) netip.AddrPort { return netip.AddrPortFrom(x.vip, port) }

// The NAT46 services are the NAT64 ones with every address mapped to the
// other family (the real servers' and LIPs' IPv6 twins, the NAT46 VIP) and
// each name's 64 made 46.
var (
	nat46Addrs = strings.NewReplacer("fd00:25:254::64", lab.VIP46.String(),
		"172.25.84.10", "'"+lab.LIP1v6.String()+"'", "172.25.84.11", "'"+lab.LIP2v6.String()+"'",
		"10.20.1.2", "'"+lab.RS1v6.String()+"'", "10.20.2.2", "'"+lab.RS2v6.String()+"'")
	nat46Names = regexp.MustCompile(`(name: [a-z0-9-]*)64`)
)

// services is the NAT64 services' YAML s in x's direction.
func (x xlat) services(s string) string {
	if x == x64 {
		return s
	}
	return nat46Names.ReplaceAllString(nat46Addrs.Replace(s), "${1}46")
}

// svc is a NAT64 service's name in x's direction.
func (x xlat) svc(name string) string {
	if x == x64 {
		return name
	}
	return strings.Replace(name, "64", "46", 1)
}

// ipsOf returns p's IP addresses when it is of the family v6 says
// (ethertype 0x86dd or 0x0800); ok is false for anything else.
func ipsOf(p gopacket.Packet, v6 bool) (src, dst netip.Addr, ok bool) {
	if v6 {
		if ip := ip6Of(p); ip != nil {
			return addr(ip.SrcIP), addr(ip.DstIP), true
		}
		return src, dst, false
	}
	if ip := ip4Of(p); ip != nil {
		return addr(ip.SrcIP), addr(ip.DstIP), true
	}
	return src, dst, false
}

// checkTCPSumsOf is checkTCPSums6 or checkTCPSums4, by the family v6 says.
func checkTCPSumsOf(t *testing.T, ps []gopacket.Packet, from netip.Addr, full, v6 bool) (partial int) {
	t.Helper()
	if v6 {
		return checkTCPSums6(t, ps, from, full)
	}
	return checkTCPSums4(t, ps, from, full)
}

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

// HTTP through the VIP:80 (NAT64: an IPv6 VIP, IPv4 LIPs and real servers;
// NAT46: the mirror): rr alternates over both real servers, each answering
// on its address of the server side's family and seeing a LIP of it. On
// the wire, for port 80: only client <-> VIP in the client's family on the
// client's link, only LIP <-> RS in the server side's family on the
// router's link (the client's addresses and the client's family's TCP
// nowhere there), DF set on what tapvs sends over IPv4 (to the servers for
// NAT64, to the client for NAT46) past 1260 bytes and only there (RFC 7915
// 5.1); every IPv4 header checksum and every TCP checksum verifies from
// scratch (a partial one only where a kernel or offload leaves it; none
// from tapvs on plain TAPs). With and without TAP offload.
func TestNAT64HTTPBalanced(t *testing.T) {
	for _, x := range xlats {
		for _, tc := range []struct {
			name      string
			noOffload bool
		}{{"offload", false}, {"plain", true}} {
			t.Run(x.name+"/"+tc.name, func(t *testing.T) {
				need(t)
				needIPv6(t)
				testXlatHTTP(t, x, tc.noOffload)
			})
		}
	}
}

func testXlatHTTP(t *testing.T, x xlat, noOffload bool) {
	e := setupWith(t, topoOpts{queues: 1, ipv6: true, noOffload: noOffload}, x.services(nat64Services), "")
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	web := x.at(lab.HTTPPort)
	lips := map[netip.Addr]bool{x.lip1: true, x.lip2: true}
	rss := map[netip.Addr]bool{x.rs1: true, x.rs2: true}
	want := map[string]netip.Addr{"rs1": x.rs1, "rs2": x.rs2}
	prev := ""
	const n = 8
	for i := range n {
		rs, rsAddr, saw := e.getAt(hc, web)
		if rs == prev {
			t.Fatalf("request %d went to %s twice in a row", i, rs)
		}
		prev = rs
		if rsAddr != want[rs] {
			t.Fatalf("request %d: %s answered on %s, not its server-side address %s", i, rs, rsAddr, want[rs])
		}
		if !lips[saw.Addr()] {
			t.Fatalf("request %d: %s saw %s, not a LIP", i, rs, saw)
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

	// The client's link: client <-> VIP:80 in the client's family only.
	cps := tcpPort(capClient.packets(), lab.HTTPPort)
	if len(cps) < n*5 {
		t.Fatalf("client side: only %d HTTP packets captured", len(cps))
	}
	for i, p := range cps {
		src, dst, ok := ipsOf(p, x.client6())
		if !ok {
			t.Fatalf("client side frame %d: HTTP not in the client's family: %v", i, p.NetworkLayer().NetworkFlow())
		}
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		from := netip.AddrPortFrom(src, uint16(tcp.SrcPort))
		to := netip.AddrPortFrom(dst, uint16(tcp.DstPort))
		if !(src == x.client && to == web || from == web && dst == x.client) {
			t.Fatalf("client side carries %v -> %v: only client <-> %v may appear", from, to, web)
		}
		if ip := ip4Of(p); ip != nil && from == web {
			if df := ip.Flags&layers.IPv4DontFragment != 0; df != (ip.Length > 1260) {
				t.Fatalf("client side frame %d from the VIP, %d bytes: DF %v (want it past 1260 bytes only)", i, ip.Length, df)
			}
		}
	}
	checkTCPSumsOf(t, capClient.packets(), netip.Addr{}, false, x.client6())
	if p := checkTCPSumsOf(t, capClient.packets(), x.vip, false, x.client6()); noOffload && p > 0 {
		t.Fatalf("plain TAPs: %d segments from the VIP with partial checksums", p)
	}

	// The router's link: LIP <-> RS:80 in the server side's family only.
	cfg := e.d.Config()
	inRange := func(p uint16) bool { return p >= cfg.PortMin && p <= cfg.PortMax }
	tcpOut := 0
	for i, p := range tcpPort(capRouter.packets(), lab.HTTPPort) {
		src, dst, ok := ipsOf(p, x.server6())
		if !ok {
			t.Fatalf("router link frame %d: HTTP not in the server side's family: %v", i, p.NetworkLayer().NetworkFlow())
		}
		tcpOut++
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		out := lips[src] && rss[dst] && tcp.DstPort == lab.HTTPPort && inRange(uint16(tcp.SrcPort))
		back := rss[src] && lips[dst] && tcp.SrcPort == lab.HTTPPort && inRange(uint16(tcp.DstPort))
		if !out && !back {
			t.Fatalf("router link frame %d: %v:%d -> %v:%d: only LIP:[%d-%d] <-> RS:80 may appear", i, src, tcp.SrcPort, dst, tcp.DstPort, cfg.PortMin, cfg.PortMax)
		}
		if ip := ip4Of(p); ip != nil && out {
			if df := ip.Flags&layers.IPv4DontFragment != 0; df != (ip.Length > 1260) {
				t.Fatalf("router link frame %d: %v -> %v from tapvs, %d bytes: DF %v (want it past 1260 bytes only)", i, src, dst, ip.Length, df)
			}
		}
	}
	if tcpOut < n*5 {
		t.Fatalf("router link: only %d HTTP frames", tcpOut)
	}
	for i, p := range capRouter.packets() {
		src, dst, ok := ipsOf(p, x.client6())
		if !ok {
			continue
		}
		if src == x.client || dst == x.client || src == x.vip || dst == x.vip || p.Layer(layers.LayerTypeTCP) != nil {
			t.Fatalf("router link frame %d: %v -> %v in the client's family: neither the client's addresses nor its family's TCP may cross to the servers' side", i, src, dst)
		}
	}
	checkTCPSumsOf(t, capRouter.packets(), netip.Addr{}, false, x.server6())
	if p := checkTCPSumsOf(t, capRouter.packets(), x.lip1, false, x.server6()) + checkTCPSumsOf(t, capRouter.packets(), x.lip2, false, x.server6()); noOffload && p > 0 {
		t.Fatalf("plain TAPs: %d segments from the LIPs with partial checksums", p)
	}
}

// 64 MiB each way through the VIP:9000 arrives intact (hashes compared),
// on either real server, NAT64 and NAT46.
func TestNAT64Bulk64MiBBothWaysIntact(t *testing.T) {
	for _, x := range xlats {
		t.Run(x.name, func(t *testing.T) {
			e := setup6(t, x.services(nat64Services), "")
			bulk := x.at(lab.BulkPort)
			const n = 64 << 20
			for range 2 { // rr: one of each pair to each server
				if _, err := lab.Upload(e.ctx(2*time.Minute), e.top.Client, bulk, n); err != nil {
					t.Fatal(err)
				}
				if _, err := lab.Download(e.ctx(2*time.Minute), e.top.Client, bulk, n); err != nil {
					t.Fatal(err)
				}
			}
		})
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
//
// NAT46 is the mirror: the RS's ICMPv6 port unreachable (RS1v6 -> LIP2v6)
// on the router's link becomes an ICMPv4 one from the VIP to the client
// (type 3 code 3) quoting the client's datagram (checkPortUnreachable46).
func TestNAT64UDPEchoAndPortUnreachable(t *testing.T) {
	for _, x := range xlats {
		t.Run(x.name, func(t *testing.T) {
			e := setup6(t, x.services(nat64Services), "")
			check := checkPortUnreachable64
			if x == x46 {
				check = checkPortUnreachable46
			}
			echoThenRefused(t, e, x.vip, x.lip2, check)
		})
	}
}

// checkPortUnreachable46 is checkPortUnreachable64 mirrored: the RS's
// ICMPv6 error on the router's link, the ICMPv4 one on the client's, from
// the VIP, quoting the client's own datagram (its addresses, ports, length
// and payload, its TTL less the router's one; its checksum when it sent a
// full one), every checksum valid.
func checkPortUnreachable46(t *testing.T, capClient, capRouter *capture, local netip.AddrPort, msg string, fullSum bool) {
	t.Helper()
	const closedPort = 9002
	closed := netip.AddrPortFrom(lab.VIP46, closedPort)
	var sent, toClient gopacket.Packet
	var fromRS icmp6Error
	if !eventually(5*time.Second, func() bool {
		sent, toClient = nil, nil
		got := false
		for _, p := range capClient.packets() {
			if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && ip4Of(p) != nil && u.DstPort == closedPort && string(u.Payload) == msg && p.Layer(layers.LayerTypeICMPv4) == nil {
				sent = p
			}
			if ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && isPortUnreachable(p) && strings.HasSuffix(string(ic.Payload), msg) {
				toClient = p
			}
		}
		for _, p := range capRouter.packets() {
			if ie, ok := icmp6ErrorOf(p); ok && ie.typ == 1 && ie.code == 4 && strings.HasSuffix(string(ie.quote), msg) {
				fromRS, got = ie, true
			}
		}
		return sent != nil && toClient != nil && got
	}) {
		t.Fatalf("%q: captured the client's datagram %v, an ICMPv4 port unreachable to the client %v, an ICMPv6 one from the RS %v", msg, sent != nil, toClient != nil, fromRS.outer != nil)
	}
	// Server side: the real server's own ICMPv6 error about what tapvs sent it.
	if src, dst := addr(fromRS.outer.SrcIP), addr(fromRS.outer.DstIP); src != lab.RS1v6 || dst != lab.LIP2v6 || !fromRS.checksumOK {
		t.Fatalf("the RS's port unreachable goes %v -> %v (checksum valid %v); want %v -> %v", src, dst, fromRS.checksumOK, lab.RS1v6, lab.LIP2v6)
	}
	if qs, qd, proto, _, ok := fromRS.quoted(); !ok || qs.Addr() != lab.LIP2v6 || qd != netip.AddrPortFrom(lab.RS1v6, closedPort) || proto != 17 {
		t.Fatalf("the RS's error quotes %v -> %v (protocol %d); want %v -> [%v]:%d UDP", qs, qd, proto, lab.LIP2v6, lab.RS1v6, closedPort)
	}
	// Client side: ICMPv4 from the VIP, quoting the client's own datagram.
	outer, quoted, qudp := icmpQuote(t, "the client's port unreachable", toClient)
	if addr(outer.SrcIP) != lab.VIP46 || addr(outer.DstIP) != lab.ClientAddr.Addr() {
		t.Fatalf("the client's port unreachable goes %v -> %v; want %v -> %v", outer.SrcIP, outer.DstIP, lab.VIP46, lab.ClientAddr.Addr())
	}
	if q := netip.AddrPortFrom(addr(quoted.SrcIP), uint16(qudp.SrcPort)); q != local || netip.AddrPortFrom(addr(quoted.DstIP), uint16(qudp.DstPort)) != closed || quoted.Protocol != layers.IPProtocolUDP {
		t.Fatalf("the client's error quotes %v -> %v:%d; want %v -> %v UDP", q, quoted.DstIP, qudp.DstPort, local, closed)
	}
	sip := ip4Of(sent)
	if quoted.TTL != sip.TTL-1 || quoted.Length != sip.Length {
		t.Fatalf("the quote's TTL %d and length %d; the client sent %d and %d, and only the router takes one from the TTL", quoted.TTL, quoted.Length, sip.TTL, sip.Length)
	}
	su := sent.Layer(layers.LayerTypeUDP).(*layers.UDP)
	sudp := append(append([]byte(nil), su.Contents...), su.Payload...)
	qb := append(append([]byte(nil), qudp.Contents...), qudp.Payload...)
	if fullSum {
		if inetSum(qb, uint64(pseudoV4(quoted.SrcIP.To4(), quoted.DstIP.To4(), 17, len(qb)))) != 0xffff {
			t.Fatalf("the quoted UDP checksum %#04x does not verify for %v -> %v", qudp.Checksum, local, closed)
		}
	} else {
		sudp[6], sudp[7], qb[6], qb[7] = 0, 0, 0, 0
	}
	if string(sudp) != string(qb) {
		t.Fatalf("the quoted UDP datagram %x is not the client's %x", qb, sudp)
	}
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
//
// NAT46 is the mirror (testNAT46PathMTU): the router answers the IPv6
// segments tapvs sends with a Packet Too Big (MTU 1300) to the LIP, which
// tapvs translates into an ICMPv4 fragmentation needed from the VIP to the
// client with next-hop MTU 1300 - 20 = 1280, quoting the client's own
// segment; the client's route to the VIP learns 1280 and the upload
// completes.
func TestNAT64PathMTU(t *testing.T) {
	for _, x := range xlats {
		for _, tc := range []struct {
			name      string
			noOffload bool
		}{{"offload", false}, {"plain", true}} {
			t.Run(x.name+"/"+tc.name, func(t *testing.T) {
				if x == x46 {
					testNAT46PathMTU(t, tc.noOffload)
					return
				}
				testNAT64PathMTU(t, tc.noOffload)
			})
		}
	}
}

func testNAT46PathMTU(t *testing.T, noOffload bool) {
	const mtu6, mtu4 = 1300, 1280
	need(t)
	needIPv6(t)
	e := setupWith(t, topoOpts{queues: 1, ipv6: true, noOffload: noOffload}, x46.services(bulk64RS2), "")
	setMTU(t, e.top.Router, "to-rs2", mtu6)
	setMTU(t, e.top.Router, "br-b", mtu6)
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	bulk := x46.at(lab.BulkPort)
	if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, bulk, 16<<20); err != nil {
		t.Fatalf("upload over a %d-byte IPv6 hop: %v (did the fragmentation needed reach the client?)", mtu6, err)
	}
	var ptb icmp6Error
	var fragNeeded gopacket.Packet
	if !eventually(5*time.Second, func() bool {
		got := false
		for _, p := range capRouter.packets() {
			if ie, ok := icmp6ErrorOf(p); ok && ie.typ == 2 {
				ptb, got = ie, true
			}
		}
		fragNeeded = nil
		for _, p := range capClient.packets() {
			ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if ok && ip4Of(p) != nil && ic.TypeCode == layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded) {
				fragNeeded = p
			}
		}
		return got && fragNeeded != nil
	}) {
		t.Fatalf("captured a Packet Too Big on the router's link %v, fragmentation needed on the client's %v", ptb.outer != nil, fragNeeded != nil)
	}
	// The router's ICMPv6 error, to the LIP, about LIP6 -> RS2v6:9000.
	if dst := addr(ptb.outer.DstIP); dst != lab.LIP1v6 || ptb.param != mtu6 || !ptb.checksumOK {
		t.Fatalf("Packet Too Big to %v with MTU %d (checksum valid %v); want to %v with %d", dst, ptb.param, ptb.checksumOK, lab.LIP1v6, mtu6)
	}
	if qs, qd, proto, _, ok := ptb.quoted(); !ok || qs.Addr() != lab.LIP1v6 || qd != netip.AddrPortFrom(lab.RS2v6, lab.BulkPort) || proto != 6 {
		t.Fatalf("Packet Too Big quotes %v -> %v (%d); want %v -> [%v]:%d TCP", qs, qd, proto, lab.LIP1v6, lab.RS2v6, lab.BulkPort)
	}
	// The translation, to the client: from the VIP, its own segment quoted.
	outer := fragNeeded.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ic := fragNeeded.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	msg := append(append([]byte(nil), ic.Contents...), ic.Payload...)
	if addr(outer.SrcIP) != lab.VIP46 || addr(outer.DstIP) != lab.ClientAddr.Addr() || ic.Seq != mtu4 || inetSum(msg, 0) != 0xffff || inetSum(outer.Contents, 0) != 0xffff {
		t.Fatalf("the client's fragmentation needed: %v -> %v, next-hop MTU %d; want %v -> %v, %d, checksums valid", outer.SrcIP, outer.DstIP, ic.Seq, lab.VIP46, lab.ClientAddr.Addr(), mtu4)
	}
	q := ic.Payload
	if len(q) < 28 || q[0]>>4 != 4 || netip.AddrFrom4([4]byte(q[12:16])) != lab.ClientAddr.Addr() || netip.AddrFrom4([4]byte(q[16:20])) != lab.VIP46 ||
		binary.BigEndian.Uint16(q[22:]) != lab.BulkPort || q[9] != 6 || binary.BigEndian.Uint16(q[6:])&0x4000 == 0 {
		t.Fatalf("fragmentation needed quotes %x; want %v -> %v:%d TCP with DF", q[:min(len(q), 28)], lab.ClientAddr.Addr(), lab.VIP46, lab.BulkPort)
	}
	if out := mustRun(t, e.top.Client, "ip", "-4", "route", "get", lab.VIP46.String()); !strings.Contains(out, fmt.Sprintf("mtu %d", mtu4)) {
		t.Fatalf("the client's route to the VIP has not learnt MTU %d: %s", mtu4, out)
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

// checkedServices46 is a NAT46 web service with an HTTP health check on
// its IPv6 real servers.
const checkedServices46 = `
  - name: web46
    vip: 172.25.254.46
    port: 80
    scheduler: rr
    local_addresses: ['fd00:25:84::10']
    health_check: {type: http, http_path: /, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}
    real_servers:
      - {address: 'fd00:20:1::2', port: 80}
      - {address: 'fd00:20:2::2', port: 80}`

// NAT46 is an operator's as any service: health checks behind an IPv4 VIP
// probe the IPv6 real servers from the IPv6 LIP (rs2's web server stops:
// quiesced within fall x interval + timeout, every new request to rs1;
// its SYNs on rs2's link all IPv6), and tapvsadm builds a NAT46 service
// (an IPv4 VIP, an IPv6 LIP with -P, IPv6 real servers with -a) that
// serves requests, lists its servers as ipvsadm does, and refuses an IPv4
// real server on it naming the server side's family.
func TestNAT46HealthAndTapvsadm(t *testing.T) {
	e := setup6(t, checkedServices46, "")
	const interval, timeout, fall, rise = 200 * time.Millisecond, 150 * time.Millisecond, 2, 2
	bound := func(n int) time.Duration { return time.Duration(n)*interval + timeout + interval }
	svc := x46.at(lab.HTTPPort).String()
	rs1, rs2 := fmt.Sprintf("[%s]:80", lab.RS1v6), fmt.Sprintf("[%s]:80", lab.RS2v6)
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	capRS2 := startCapture(t, e.top.RS[1], "eth0")
	if !eventually(bound(rise), func() bool {
		w1, up1, _ := e.weightOf(svc, rs1)
		w2, up2, _ := e.weightOf(svc, rs2)
		return w1 == 1 && up1 && w2 == 1 && up2
	}) {
		w, up, why := e.weightOf(svc, rs2)
		t.Fatalf("the IPv6 real servers are not both up with weight 1: rs2 weight %d up %v (%s)", w, up, why)
	}
	e.rs[1].StopHTTP()
	if !eventually(bound(fall), func() bool { w, up, _ := e.weightOf(svc, rs2); return w == 0 && !up }) {
		w, up, why := e.weightOf(svc, rs2)
		t.Fatalf("rs2 not quiesced within %v: weight %d up %v (%s)", bound(fall), w, up, why)
	}
	for i := range 4 {
		if rs, rsAddr, saw := e.getAt(hc, x46.at(lab.HTTPPort)); rs != "rs1" || rsAddr != lab.RS1v6 || saw.Addr() != lab.LIP1v6 {
			t.Fatalf("request %d while rs2 is down: %s on %v saw %v", i, rs, rsAddr, saw)
		}
	}
	capRS2.stop()
	var syn6, syn4 int
	for _, p := range tcpPort(capRS2.packets(), lab.HTTPPort) {
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !tcp.SYN || tcp.ACK {
			continue
		}
		if ip := ip6Of(p); ip != nil && addr(ip.DstIP) == lab.RS2v6 {
			syn6++
		} else if ip4Of(p) != nil {
			syn4++
		}
	}
	if syn6 < 2 || syn4 != 0 {
		t.Fatalf("on rs2's link: %d SYNs to [%v]:80, %d IPv4 SYNs; want the checker's over IPv6 only", syn6, lab.RS2v6, syn4)
	}

	// tapvsadm: a NAT46 service on port 9000 to rs1's bulk server.
	bulk := x46.at(lab.BulkPort).String()
	e.must("-A", "-t", bulk, "-s", "rr")
	e.must("-P", "-t", bulk, "-z", lab.LIP2v6.String())
	e.must("-a", "-t", bulk, "-r", netip.AddrPortFrom(lab.RS1v6, lab.BulkPort).String(), "-b")
	if _, errOut, code := e.adm("", "-a", "-t", bulk, "-r", netip.AddrPortFrom(lab.RS2, lab.BulkPort).String(), "-b"); code == 0 ||
		!strings.Contains(errOut, "is IPv4 but service TCP "+bulk+"'s server side is IPv6 ("+lab.LIP2v6.String()+")") {
		t.Fatalf("an IPv4 real server on a NAT46 service: exit %d, %q", code, errOut)
	}
	if r := admRow(t, e.must("-ln", "-t", bulk), fmt.Sprintf("[%s]:%d", lab.RS1v6, lab.BulkPort)); r[2] != "FullNat" {
		t.Fatalf("tapvsadm -ln row %q", r)
	}
	if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, x46.at(lab.BulkPort), 4<<20); err != nil {
		t.Fatalf("upload through the tapvsadm-made NAT46 service: %v", err)
	}
}

// A NAT46 client's full-size UDP datagram (1472 bytes of payload: 1500 of
// IPv4, DF set by the client's kernel under path MTU discovery) would be
// 1520 bytes of IPv6 on the 1500-byte server side: tapvs answers it with a
// fragmentation needed from the VIP with next-hop MTU 1480, captured on
// the client's link quoting the client's datagram. The client's kernel
// learns it and cuts the datagram again in IPv4 fragments, which tapvs
// reassembles, translates and sends in IPv6 fragments: the echo comes
// back whole (the server's 1520-byte IPv6 answer in fragments too,
// reassembled and cut again as IPv4 fragments for the client).
func TestNAT46UDPFragmentationNeeded(t *testing.T) {
	e := setup6(t, x46.services(nat64Services), "")
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	echo := x46.at(lab.EchoPort)
	c, err := e.dial("udp4", echo, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := strings.Repeat("x", 1472)
	var got string
	for try := range 4 {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Logf("try %d: write: %v", try, err) // EMSGSIZE once the route has learnt the MTU
			continue
		}
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Logf("try %d: %v", try, err)
			continue
		}
		got = string(buf[:n])
		break
	}
	if !strings.HasSuffix(got, ": "+msg) {
		t.Fatalf("no whole echo of the 1472-byte datagram (drops %v): %.60q", nonZeroDrops(e), got)
	}
	var fragNeeded gopacket.Packet
	if !eventually(5*time.Second, func() bool {
		for _, p := range capClient.packets() {
			ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if ok && ic.TypeCode == layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded) {
				fragNeeded = p
			}
		}
		return fragNeeded != nil
	}) {
		t.Fatal("no fragmentation needed on the client's link")
	}
	outer, quoted, qudp := icmpQuote(t, "the fragmentation needed", fragNeeded)
	ic := fragNeeded.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if addr(outer.SrcIP) != lab.VIP46 || addr(outer.DstIP) != lab.ClientAddr.Addr() || ic.Seq != 1480 ||
		addr(quoted.DstIP) != lab.VIP46 || qudp.DstPort != lab.EchoPort || quoted.Length != 1500 || quoted.Flags&layers.IPv4DontFragment == 0 {
		t.Fatalf("fragmentation needed %v -> %v, MTU %d, quoting %v -> %v:%d (%d bytes, flags %v)", outer.SrcIP, outer.DstIP, ic.Seq, quoted.SrcIP, quoted.DstIP, qudp.DstPort, quoted.Length, quoted.Flags)
	}
	if n := e.d.Balancer.Stats.Drop(nat.DropNAT64TooBig); n == 0 {
		t.Fatal("nat64_too_big not counted")
	}
	if e.d.Balancer.Reassembled() < 2 {
		t.Fatalf("%d datagrams reassembled: want the client's, cut by its kernel, and the server's answer", e.d.Balancer.Reassembled())
	}
}
