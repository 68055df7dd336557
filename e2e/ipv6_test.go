// The IPv6 FULLNAT tests (issue #15): go test -run TestIPv6 ./e2e/

package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/lab"
)

// webServices6 are webServices at the IPv6 VIP, LIPs and real servers:
// web6 (scheduler and weights given), bulk6, echo6 (UDP), and a UDP
// service whose real server has nothing on the port.
const webServices6 = `
  - name: web6
    vip: fd00:25:254::100
    port: 80
    scheduler: %s
    local_addresses: [fd00:25:84::10, fd00:25:84::11]
    real_servers:
      - {address: fd00:20:1::2, port: 80, weight: %d}
      - {address: fd00:20:2::2, port: 80, weight: %d}
  - name: bulk6
    vip: fd00:25:254::100
    port: 9000
    scheduler: rr
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
      - {address: fd00:20:2::2, port: 9001}
  - name: nobody-listens6
    vip: fd00:25:254::100
    port: 9002
    protocol: udp
    local_addresses: [fd00:25:84::11]
    real_servers:
      - {address: fd00:20:1::2, port: 9002}`

// services6 is the IPv6 service set with the web6 scheduler and weights given.
func services6(sched string, w1, w2 int) string { return fmt.Sprintf(webServices6, sched, w1, w2) }

// setup6 builds a lab running tapvs with its IPv6 addresses (address6 on
// both sides, the route to fd00:20::/32) and the given services, which may
// mix IPv4 and IPv6 ones.
func setup6(t testing.TB, svcs, extra string) *env {
	t.Helper()
	need(t)
	needIPv6(t)
	return setupWith(t, topoOpts{queues: 1, ipv6: true}, svcs, extra)
}

// setMTU sets a link's MTU inside a namespace, and restores the old one
// when the test ends (if the namespace is still there).
func setMTU(t testing.TB, ns, dev string, mtu int) {
	t.Helper()
	var old int
	if err := lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			old = ifi.MTU
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, ns, "ip", "link", "set", "dev", dev, "mtu", fmt.Sprint(mtu))
	t.Cleanup(func() { nsRun(ns, "ip", "link", "set", "dev", dev, "mtu", fmt.Sprint(old)) })
}

var web6 = netip.AddrPortFrom(lab.VIP6, lab.HTTPPort)

// get6 does one short HTTP request through the IPv6 VIP and returns the
// name of the real server that answered, the address it answered on and
// the source it saw.
func (e *env) get6(hc *http.Client) (rs string, rsAddr netip.Addr, saw netip.AddrPort) {
	e.t.Helper()
	resp, err := hc.Get("http://" + web6.String() + "/")
	if err != nil {
		e.t.Fatalf("GET via the IPv6 VIP: %v", err)
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

// HTTP through [VIP6]:80: rr alternates over both real servers, each
// answering on its IPv6 address and seeing an IPv6 LIP; wrr follows the
// weights; the IPv4 service of the same tapvs still balances. On the wire,
// in IPv6 frames (ethertype 0x86DD): only client <-> VIP6 on the client's
// link, only LIP6 <-> RS6 between tapvs's MAC and the router's on the
// router's link (no client address, no VIP), only LIP6 <-> RS6 at each real
// server; every TCP checksum verifies from scratch (a partial one only
// where a kernel or offload leaves it). With and without TAP offload.
func TestIPv6HTTPBalanced(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noOffload bool
	}{{"offload", false}, {"plain", true}} {
		t.Run(tc.name, func(t *testing.T) {
			need(t)
			needIPv6(t)
			e := setupWith(t, topoOpts{queues: 1, ipv6: true, noOffload: tc.noOffload}, services("rr", 1, 1)+services6("rr", 1, 1), "")
			capClient := startCapture(t, e.top.Client, e.top.TapClient)
			capRouter := startCapture(t, e.top.Router, e.top.TapServer)
			capRS := [2]*capture{startCapture(t, e.top.RS[0], "eth0"), startCapture(t, e.top.RS[1], "eth0")}
			hc := lab.HTTPClient(e.top.Client, 5*time.Second)
			lips := map[netip.Addr]bool{lab.LIP1v6: true, lab.LIP2v6: true}
			want := map[string]netip.Addr{"rs1": lab.RS1v6, "rs2": lab.RS2v6}
			prev := ""
			const n = 8
			for i := range n {
				rs, rsAddr, saw := e.get6(hc)
				if rs == prev {
					t.Fatalf("request %d went to %s twice in a row", i, rs)
				}
				prev = rs
				if rsAddr != want[rs] {
					t.Fatalf("request %d: %s answered on %s, not its IPv6 address %s", i, rs, rsAddr, want[rs])
				}
				if !lips[saw.Addr()] {
					t.Fatalf("request %d: %s saw %s, not an IPv6 LIP", i, rs, saw)
				}
			}
			if a, b := e.rs[0].Requests.Load(), e.rs[1].Requests.Load(); a != n/2 || b != n/2 {
				t.Fatalf("rs1 %d, rs2 %d requests; want %d each", a, b, n/2)
			}
			e.alternates(2) // IPv4, beside
			for _, c := range append(capRS[:], capClient, capRouter) {
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
				if !(f[0].Addr() == client && f[1] == web6 || f[0] == web6 && f[1].Addr() == client) {
					t.Fatalf("client side carries %v -> %v: only client <-> [VIP6]:80 may appear", f[0], f[1])
				}
			}
			checkTCPSums6(t, capClient.packets(), netip.Addr{}, false)
			if p := checkTCPSums6(t, capClient.packets(), lab.VIP6, false); tc.noOffload && p > 0 {
				t.Fatalf("plain TAPs: %d segments from the VIP with partial checksums", p)
			}
			rss := map[netip.Addr]bool{lab.RS1v6: true, lab.RS2v6: true}
			for i, rsAddr := range []netip.Addr{lab.RS1v6, lab.RS2v6} {
				fs := flows6(capRS[i].packets(), lab.HTTPPort)
				if len(fs) < 2*5 {
					t.Fatalf("rs%d: only %d IPv6 HTTP packets captured", i+1, len(fs))
				}
				for _, f := range fs {
					if !(lips[f[0].Addr()] && f[1] == netip.AddrPortFrom(rsAddr, lab.HTTPPort) || f[0] == netip.AddrPortFrom(rsAddr, lab.HTTPPort) && lips[f[1].Addr()]) {
						t.Fatalf("rs%d sees %v -> %v: only LIP6 <-> RS6:80 may appear", i+1, f[0], f[1])
					}
				}
				checkTCPSums6(t, capRS[i].packets(), netip.Addr{}, false)
			}
			routerMAC := ifaceMAC(t, e.top.Router, e.top.TapServer)
			tapvsMAC := net.HardwareAddr(e.d.Stack.Server.LinkAddress()).String()
			cfg := e.d.Config()
			inRange := func(p uint16) bool { return p >= cfg.PortMin && p <= cfg.PortMax }
			tcp6 := 0
			for i, p := range capRouter.packets() {
				ip := ip6Of(p)
				if ip == nil {
					continue
				}
				src, dst := addr(ip.SrcIP), addr(ip.DstIP)
				for _, a := range []netip.Addr{src, dst} {
					if a == client || a == lab.VIP6 {
						t.Fatalf("router link frame %d: IPv6 %v -> %v: the client's addresses must not cross to the servers' side", i, src, dst)
					}
				}
				tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if !ok {
					continue // neighbour discovery, MLD
				}
				tcp6++
				eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
				out := lips[src] && rss[dst] && tcp.DstPort == lab.HTTPPort && inRange(uint16(tcp.SrcPort)) &&
					eth.SrcMAC.String() == tapvsMAC && eth.DstMAC.String() == routerMAC
				back := rss[src] && lips[dst] && tcp.SrcPort == lab.HTTPPort && inRange(uint16(tcp.DstPort)) &&
					eth.SrcMAC.String() == routerMAC && eth.DstMAC.String() == tapvsMAC
				if !out && !back {
					t.Fatalf("router link frame %d: %v [%v]:%d -> %v [%v]:%d: only LIP6:[%d-%d] <-> RS6:80 between tapvs (%v) and the router (%v) may appear",
						i, eth.SrcMAC, src, tcp.SrcPort, eth.DstMAC, dst, tcp.DstPort, cfg.PortMin, cfg.PortMax, tapvsMAC, routerMAC)
				}
			}
			if tcp6 < n*5 {
				t.Fatalf("router link: only %d IPv6 TCP frames", tcp6)
			}
			if p := checkTCPSums6(t, capRouter.packets(), lab.LIP1v6, false) + checkTCPSums6(t, capRouter.packets(), lab.LIP2v6, false); tc.noOffload && p > 0 {
				t.Fatalf("plain TAPs: %d segments from the LIPs with partial checksums", p)
			}
		})
	}
}

// wrr over IPv6 follows the weights.
func TestIPv6WeightedRoundRobin(t *testing.T) {
	e := setup6(t, services6("wrr", 3, 1), "")
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	for range 40 {
		e.get6(hc)
	}
	if a, b := e.rs[0].Requests.Load(), e.rs[1].Requests.Load(); a != 30 || b != 10 {
		t.Fatalf("rs1 %d, rs2 %d requests; want 30 and 10 for weights 3:1", a, b)
	}
}

// 64 MiB each way through [VIP6]:9000 arrives intact (hashes compared),
// on either real server.
func TestIPv6Bulk64MiBBothWaysIntact(t *testing.T) {
	e := setup6(t, services6("rr", 1, 1), "")
	bulk := netip.AddrPortFrom(lab.VIP6, lab.BulkPort)
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

// Ping to the IPv6 VIP is answered (by tapvs's stack).
func TestIPv6PingVIP(t *testing.T) {
	e := setup6(t, services6("rr", 1, 1), "")
	if _, err := lab.Ping(e.ctx(5*time.Second), e.top.Client, lab.VIP6); err != nil {
		t.Fatal(err)
	}
}

// icmp6Error is an ICMPv6 error as captured: the outer header, type and
// code, the 4 bytes after the checksum (an MTU for Packet Too Big), and
// the quoted packet (as much as the error carries).
type icmp6Error struct {
	outer      *layers.IPv6
	typ, code  uint8
	param      uint32
	quote      []byte
	checksumOK bool
}

// icmp6ErrorOf decodes p as an ICMPv6 error (types below 128), checking
// its checksum from scratch; ok is false for anything else.
func icmp6ErrorOf(p gopacket.Packet) (e icmp6Error, ok bool) {
	ip := ip6Of(p)
	if ip == nil || ip.NextHeader != layers.IPProtocolICMPv6 {
		return e, false
	}
	raw := p.Data()[14:]
	if len(raw) < 40+8 || 40+int(ip.Length) > len(raw) {
		return e, false
	}
	l4 := raw[40 : 40+int(ip.Length)]
	if l4[0] >= 128 {
		return e, false
	}
	_, sumOK, _ := l4Sum6(raw)
	return icmp6Error{outer: ip, typ: l4[0], code: l4[1], param: binary.BigEndian.Uint32(l4[4:]), quote: l4[8:], checksumOK: sumOK}, true
}

// quoted reads the quoted packet's addresses, next header, hop limit and
// its first 4 transport bytes as ports.
func (e icmp6Error) quoted() (src, dst netip.AddrPort, proto, hop uint8, ok bool) {
	q := e.quote
	if len(q) < 44 || q[0]>>4 != 6 {
		return src, dst, 0, 0, false
	}
	s, d := netip.AddrFrom16([16]byte(q[8:24])), netip.AddrFrom16([16]byte(q[24:40]))
	return netip.AddrPortFrom(s, binary.BigEndian.Uint16(q[40:])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(q[42:])), q[6], q[7], true
}

// A UDP datagram through echo6 comes back from a real server that saw an
// IPv6 LIP; one to a port with no server gets the real server's ICMPv6
// port unreachable, which tapvs translates: the client's connected socket
// reads ECONNREFUSED. The wire shows the RS's error (RS6 -> LIP6, quoting
// LIP6 -> RS6:9002) on the router's link and one from the VIP to the
// client quoting the client's datagram as it sent it but for the hop limit
// the router took, checksums valid; and, for a datagram with a full UDP
// checksum (sent raw), the quoted checksum is the client's own.
func TestIPv6UDPEchoAndPortUnreachable(t *testing.T) {
	e := setup6(t, services6("rr", 1, 1), "")
	echoThenRefused(t, e, lab.VIP6, lab.LIP2v6, checkPortUnreachable6)
}

// echoThenRefused is the UDP test through vip (IPv6 FULLNAT, NAT64 or
// NAT46, whose client is IPv4):
// echoes over both real servers, each reply saying the server saw lip;
// then a datagram to a port nobody listens on, sent through the kernel
// and raw with a full checksum, must make the client's socket read
// ECONNREFUSED, and check reads the wire for it.
func echoThenRefused(t *testing.T, e *env, vip, lip netip.Addr, check func(t *testing.T, capClient, capRouter *capture, local netip.AddrPort, msg string, fullSum bool)) {
	t.Helper()
	echo := netip.AddrPortFrom(vip, lab.EchoPort)
	lipPrefix := lip.String() + ":" // the reply's "saw <addr:port>"
	if lip.Is6() {
		lipPrefix = "[" + lip.String() + "]:"
	}
	seen := map[string]bool{}
	for range 2 {
		reply, err := lab.UDPEcho(e.ctx(5*time.Second), e.top.Client, echo, "hello")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(reply, " saw "+lipPrefix) || !strings.HasSuffix(reply, ": hello") {
			t.Fatalf("echo reply %q: want the RS to have seen LIP %v", reply, lip)
		}
		seen[strings.Fields(reply)[0]] = true
	}
	if !seen["rs1"] || !seen["rs2"] {
		t.Fatalf("rr over the echo service at %v: answers from %v, want rs1 and rs2", vip, seen)
	}

	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	const closedPort = 9002
	closed := netip.AddrPortFrom(vip, closedPort)
	network, raw := "udp6", sendRawUDP6
	if vip.Is4() { // NAT46: an IPv4 client
		network, raw = "udp4", sendRawUDP
	}
	c, err := e.dial(network, closed, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	for _, tc := range []struct {
		msg     string
		fullSum bool
	}{{"anyone there?", false}, {"full sum", true}} {
		if tc.fullSum {
			if err := raw(e.top.Client, local, closed, []byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
		} else if _, err := c.Write([]byte(tc.msg)); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 100)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%q: read after sending to a port nobody listens on: %v; want connection refused (the RS's ICMP error translated)", tc.msg, err)
		}
		check(t, capClient, capRouter, local, tc.msg, tc.fullSum)
	}
}

// checkPortUnreachable6 is checkPortUnreachable for IPv6.
func checkPortUnreachable6(t *testing.T, capClient, capRouter *capture, local netip.AddrPort, msg string, fullSum bool) {
	t.Helper()
	const closedPort = 9002
	unreach := func(p gopacket.Packet) (icmp6Error, bool) {
		e, ok := icmp6ErrorOf(p)
		return e, ok && e.typ == 1 && e.code == 4 && strings.HasSuffix(string(e.quote), msg)
	}
	var sent gopacket.Packet
	var toClient, fromRS icmp6Error
	var haveTo, haveFrom bool
	if !eventually(5*time.Second, func() bool {
		sent, haveTo, haveFrom = nil, false, false
		for _, p := range capClient.packets() {
			if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && ip6Of(p) != nil && u.DstPort == closedPort && string(u.Payload) == msg && p.Layer(layers.LayerTypeICMPv6) == nil {
				sent = p
			}
			if e, ok := unreach(p); ok {
				toClient, haveTo = e, true
			}
		}
		for _, p := range capRouter.packets() {
			if e, ok := unreach(p); ok {
				fromRS, haveFrom = e, true
			}
		}
		return sent != nil && haveTo && haveFrom
	}) {
		t.Fatalf("%q: captured the client's datagram %v, an ICMPv6 port unreachable to the client %v, one from the RS %v", msg, sent != nil, haveTo, haveFrom)
	}
	// Server side: the real server's own error about what tapvs sent it.
	if src, dst := addr(fromRS.outer.SrcIP), addr(fromRS.outer.DstIP); src != lab.RS1v6 || dst != lab.LIP2v6 || !fromRS.checksumOK {
		t.Fatalf("the RS's port unreachable goes %v -> %v (checksum valid %v); want %v -> %v", src, dst, fromRS.checksumOK, lab.RS1v6, lab.LIP2v6)
	}
	if qs, qd, proto, _, ok := fromRS.quoted(); !ok || qs.Addr() != lab.LIP2v6 || qd != netip.AddrPortFrom(lab.RS1v6, closedPort) || proto != 17 {
		t.Fatalf("the RS's error quotes %v -> %v (protocol %d); want %v -> [%v]:%d UDP", qs, qd, proto, lab.LIP2v6, lab.RS1v6, closedPort)
	}
	// Client side: from the VIP, quoting the client's datagram.
	client := lab.ClientAddr6.Addr()
	if src, dst := addr(toClient.outer.SrcIP), addr(toClient.outer.DstIP); src != lab.VIP6 || dst != client || !toClient.checksumOK {
		t.Fatalf("the client's port unreachable goes %v -> %v (checksum valid %v); want %v -> %v", src, dst, toClient.checksumOK, lab.VIP6, client)
	}
	qs, qd, proto, hop, ok := toClient.quoted()
	if !ok || qs != local || qd != netip.AddrPortFrom(lab.VIP6, closedPort) || proto != 17 {
		t.Fatalf("the client's error quotes %v -> %v (protocol %d); want %v -> [%v]:%d UDP", qs, qd, proto, local, lab.VIP6, closedPort)
	}
	sip := ip6Of(sent)
	if hop != sip.HopLimit-1 {
		t.Fatalf("the quote's hop limit is %d; the client sent %d and only the router takes one", hop, sip.HopLimit)
	}
	// The quoted IPv6 header's length and the UDP datagram are the
	// client's; the UDP checksum too when it was a full one.
	q := toClient.quote
	su := sent.Layer(layers.LayerTypeUDP).(*layers.UDP)
	sudp := append(append([]byte(nil), su.Contents...), su.Payload...)
	qudp := append([]byte(nil), q[40:]...)
	if binary.BigEndian.Uint16(q[4:]) != sip.Length || len(qudp) != len(sudp) {
		t.Fatalf("the quote's payload length %d (%d bytes quoted) is not the client's %d", binary.BigEndian.Uint16(q[4:]), len(qudp), sip.Length)
	}
	if !fullSum {
		sudp[6], sudp[7], qudp[6], qudp[7] = 0, 0, 0, 0
	}
	if string(sudp) != string(qudp) {
		t.Fatalf("the quoted UDP datagram %x is not the client's %x", qudp, sudp)
	}
	if fullSum {
		if _, ok, _ := l4Sum6(q); !ok {
			t.Fatalf("the quoted UDP checksum %#04x does not verify for %v -> %v", binary.BigEndian.Uint16(qudp[6:]), local, lab.VIP6)
		}
	}
}

// sendRawUDP6 sends one IPv6 UDP datagram with a full checksum computed
// here, through a raw socket in namespace ns, so that no offload leaves
// the checksum partial.
func sendRawUDP6(ns string, src, dst netip.AddrPort, payload []byte) error {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	s, d := src.Addr().As16(), dst.Addr().As16()
	sum := ^inetSum(udp, uint64(pseudoV6(s[:], d[:], 17, len(udp))))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	return lab.InNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_UDP)
		if err != nil {
			return fmt.Errorf("raw UDP socket: %w", err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: s}); err != nil {
			return fmt.Errorf("raw UDP socket: bind %v: %w", src.Addr(), err)
		}
		if err := unix.Sendto(fd, udp, 0, &unix.SockaddrInet6{Addr: d}); err != nil {
			return fmt.Errorf("raw UDP datagram to %v: %w", dst, err)
		}
		return nil
	})
}

// bulk6RS2 is a bulk service over IPv6 to rs2 alone, behind the link a
// path MTU test narrows.
const bulk6RS2 = `
  - name: bulk6-rs2
    vip: fd00:25:254::100
    port: 9000
    scheduler: rr
    local_addresses: [fd00:25:84::10]
    real_servers:
      - {address: fd00:20:2::2, port: 9000}`

// Path MTU discovery across tapvs. Upload: the router's link to rs2 is
// narrowed to 1280 bytes (the router's side only, so rs2 still announces
// an MSS for 1500 and the client sends full-size segments). The router
// answers them with Packet Too Big to the LIP they came from; tapvs must
// translate it back to the client (from the VIP, quoting the client's own
// segment, MTU 1280, checksum valid), whose kernel then sends smaller
// segments: the 16 MiB upload completes intact, and the client's route to
// the VIP has learnt MTU 1280. Without the translation the client never
// learns, its segments are dropped, and the upload times out. Download:
// the router's link to tapvs is narrowed instead; rs2's segments toward
// the LIP get the router's Packet Too Big directly, and the smaller ones
// it sends then cross tapvs to the client intact.
func TestIPv6PathMTU(t *testing.T) {
	bulk := netip.AddrPortFrom(lab.VIP6, lab.BulkPort)
	const n = 16 << 20
	t.Run("upload", func(t *testing.T) {
		e := setup6(t, bulk6RS2, "")
		setMTU(t, e.top.Router, "to-rs2", 1280)
		setMTU(t, e.top.Router, "br-b", 1280)
		capClient := startCapture(t, e.top.Client, e.top.TapClient)
		capRouter := startCapture(t, e.top.Router, e.top.TapServer)
		if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, bulk, n); err != nil {
			t.Fatalf("upload over a 1280-byte hop: %v (did the Packet Too Big reach the client?)", err)
		}
		ptb := func(c *capture, dst netip.Addr) (icmp6Error, bool) {
			for _, p := range c.packets() {
				if e, ok := icmp6ErrorOf(p); ok && e.typ == 2 && addr(e.outer.DstIP) == dst {
					return e, true
				}
			}
			return icmp6Error{}, false
		}
		var atRouter, atClient icmp6Error
		if !eventually(5*time.Second, func() bool {
			var ok1, ok2 bool
			atRouter, ok1 = ptb(capRouter, lab.LIP1v6)
			atClient, ok2 = ptb(capClient, lab.ClientAddr6.Addr())
			return ok1 && ok2
		}) {
			t.Fatal("no Packet Too Big to the LIP on the router's link and to the client on its link")
		}
		if qs, qd, _, _, ok := atRouter.quoted(); !ok || qs.Addr() != lab.LIP1v6 || qd != netip.AddrPortFrom(lab.RS2v6, lab.BulkPort) || atRouter.param != 1280 {
			t.Fatalf("the router's Packet Too Big (MTU %d) quotes %v -> %v; want MTU 1280, %v -> [%v]:%d", atRouter.param, qs, qd, lab.LIP1v6, lab.RS2v6, lab.BulkPort)
		}
		qs, qd, proto, _, ok := atClient.quoted()
		if src := addr(atClient.outer.SrcIP); src != lab.VIP6 || !atClient.checksumOK || atClient.param != 1280 {
			t.Fatalf("the client's Packet Too Big: from %v, MTU %d, checksum valid %v; want from %v, MTU 1280, valid", src, atClient.param, atClient.checksumOK, lab.VIP6)
		}
		if !ok || qs.Addr() != lab.ClientAddr6.Addr() || qd != bulk || proto != 6 {
			t.Fatalf("the client's Packet Too Big quotes %v -> %v (protocol %d); want %v -> %v TCP", qs, qd, proto, lab.ClientAddr6.Addr(), bulk)
		}
		if out := mustRun(t, e.top.Client, "ip", "-6", "route", "get", lab.VIP6.String()); !strings.Contains(out, "mtu 1280") {
			t.Fatalf("the client's route to the VIP has not learnt MTU 1280: %s", out)
		}
	})
	t.Run("download", func(t *testing.T) {
		e := setup6(t, bulk6RS2, "")
		setMTU(t, e.top.Router, e.top.TapServer, 1280)
		capRS := startCapture(t, e.top.RS[1], "eth0")
		if _, err := lab.Download(e.ctx(time.Minute), e.top.Client, bulk, n); err != nil {
			t.Fatalf("download over a 1280-byte hop: %v", err)
		}
		var got icmp6Error
		if !eventually(5*time.Second, func() bool {
			for _, p := range capRS.packets() {
				if e, ok := icmp6ErrorOf(p); ok && e.typ == 2 && addr(e.outer.DstIP) == lab.RS2v6 {
					got = e
					return true
				}
			}
			return false
		}) {
			t.Fatal("rs2 got no Packet Too Big: the narrow hop was not on the download's path")
		}
		if qs, qd, _, _, ok := got.quoted(); !ok || qs != netip.AddrPortFrom(lab.RS2v6, lab.BulkPort) || qd.Addr() != lab.LIP1v6 || got.param != 1280 {
			t.Fatalf("rs2's Packet Too Big (MTU %d) quotes %v -> %v; want MTU 1280, [%v]:%d -> %v", got.param, qs, qd, lab.RS2v6, lab.BulkPort, lab.LIP1v6)
		}
	})
}
