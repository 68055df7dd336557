// The client's address over NAT64 (issue #27): an IPv6 client, an IPv6
// VIP, IPv4 LIPs and real servers, told the IPv6 client by PROXY v1/v2 and
// TOA; and each test again over NAT46 (subtests NAT64 and NAT46: xlat,
// nat64_test.go): an IPv4 client and VIP, IPv6 LIPs and real servers, told
// the IPv4 client (PROXY TCP4, AF_INET; the 8-byte IPv4 TOA).
// go test -run 'TestNAT64Proxy' ./e2e/

package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// nat64ProxyServices are PROXY services at the NAT64 VIP: v1 and v2,
// without and with SYNPROXY, to nginx on the first real server's IPv4
// address (8181-8184), to the lab's go-proxyproto HTTP servers on both
// (8101-8104), the bulk server
// behind a v2 header (9102), and v2 before UDP datagrams (9003).
const nat64ProxyServices = `
  - {name: v1-64, vip: "fd00:25:254::64", port: 8181, scheduler: rr, client_address: proxy-v1, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 8181}]}
  - {name: v2-64, vip: "fd00:25:254::64", port: 8182, scheduler: rr, client_address: proxy-v2, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 8182}]}
  - {name: v1-sp-64, vip: "fd00:25:254::64", port: 8183, scheduler: rr, synproxy: true, client_address: proxy-v1, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 8183}]}
  - {name: v2-sp-64, vip: "fd00:25:254::64", port: 8184, scheduler: rr, synproxy: true, client_address: proxy-v2, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 8184}]}
  - {name: p1-64, vip: "fd00:25:254::64", port: 8101, client_address: proxy-v1, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 8081}, {address: 10.20.2.2, port: 8081}]}
  - {name: p2-64, vip: "fd00:25:254::64", port: 8102, client_address: proxy-v2, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 8081}, {address: 10.20.2.2, port: 8081}]}
  - {name: p1-sp-64, vip: "fd00:25:254::64", port: 8103, synproxy: true, client_address: proxy-v1, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 8081}, {address: 10.20.2.2, port: 8081}]}
  - {name: p2-sp-64, vip: "fd00:25:254::64", port: 8104, synproxy: true, client_address: proxy-v2, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 8081}, {address: 10.20.2.2, port: 8081}]}
  - {name: p2-bulk64, vip: "fd00:25:254::64", port: 9102, client_address: proxy-v2, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 9002}]}
  - {name: p2-udp64, vip: "fd00:25:254::64", port: 9003, protocol: udp, client_address: proxy-v2, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 9003}, {address: 10.20.2.2, port: 9003}]}
`

// nginx on the first real server's server-side address (IPv4 for NAT64,
// IPv6 for NAT46), behind the VIP with PROXY v1 and v2, without and with
// SYNPROXY, logs the client's own address and port
// ($proxy_protocol_addr:$proxy_protocol_port, of the client's family) for
// every request, while the connection itself ($remote_addr) comes from a
// LIP of the server side's family.
func TestNAT64ProxyNginx(t *testing.T) {
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatalf("nginx is missing (apt-get install nginx-light; bash .ci/deps installs it): %v", err)
	}
	for _, x := range xlats {
		t.Run(x.name, func(t *testing.T) {
			e := setup6(t, x.services(nat64ProxyServices), "")
			logPath := startNginx(t, e.top.RS[0], t.TempDir(), x.rs1, []int{8181, 8182, 8183, 8184})
			var want []string
			for _, port := range []uint16{8181, 8182, 8183, 8184} {
				for range 3 {
					local := getFrom6(t, e, x.at(port))
					if local.Addr() != x.client {
						t.Fatalf("the client's connection is from %v, not %v", local, x.client)
					}
					want = append(want, fmt.Sprintf("%d %s:%d", port, local.Addr(), local.Port()))
				}
			}
			lines := waitLines(t, logPath, len(want), 10*time.Second)
			if len(lines) != len(want) {
				t.Fatalf("nginx logged %d lines for %d requests:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
			}
			for i, l := range lines {
				f := strings.Fields(l)
				if len(f) != 3 {
					t.Fatalf("log line %q", l)
				}
				if got := f[0] + " " + f[1]; got != want[i] {
					t.Errorf("request %d: nginx logged %q, want %q (the client's own address and port)", i, got, want[i])
				}
				if f[2] != x.lip1.String() && f[2] != x.lip2.String() {
					t.Errorf("request %d: the connection came from %s, not a LIP", i, f[2])
				}
			}
		})
	}
}

// The lab's go-proxyproto HTTP servers on both real servers' server-side
// addresses are told the client's own address and port by PROXY v1 and v2,
// without and with SYNPROXY, through the VIP, on connections from a LIP.
// On the wire at each real server, every packet of the port is of the
// server side's family with valid checksums, and each connection's first
// payload starts with the header byte for byte: v1 "PROXY TCP6 <client>
// <VIP64> <ports>\r\n" (NAT46: TCP4), v2 the 52-byte AF_INET6/STREAM
// header (NAT46: the 28-byte AF_INET one). 4 MiB each way through a v2
// bulk service arrive intact.
func TestNAT64ProxyProtocolTCP(t *testing.T) {
	for _, x := range xlats {
		t.Run(x.name, func(t *testing.T) { testXlatProxyTCP(t, x) })
	}
}

// proxyV2Header4 is the PROXY v2 header (PROXY command) for an IPv4
// source and destination: fam 0x11 for TCP, 0x12 for UDP; 16 + 12 bytes.
func proxyV2Header4(fam byte, src, dst netip.AddrPort) []byte {
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x21, fam, 0, 12)
	s, d := src.Addr().As4(), dst.Addr().As4()
	h = append(h, s[:]...)
	h = append(h, d[:]...)
	h = binary.BigEndian.AppendUint16(h, src.Port())
	return binary.BigEndian.AppendUint16(h, dst.Port())
}

func testXlatProxyTCP(t *testing.T, x xlat) {
	e := setup6(t, x.services(nat64ProxyServices), "")
	caps := [2]*capture{startCapture(t, e.top.RS[0], "eth0"), startCapture(t, e.top.RS[1], "eth0")}
	type conn struct {
		version int
		client  netip.AddrPort
		vport   uint16
	}
	var conns []conn
	servers := map[string]bool{}
	rsAddrs := map[string]netip.Addr{"rs1": x.rs1, "rs2": x.rs2}
	for _, tc := range []struct {
		port    uint16
		version int
	}{{8101, 1}, {8102, 2}, {8103, 1}, {8104, 2}} {
		for range 4 {
			vip := x.at(tc.port)
			body, local := getBody6(t, e, vip)
			var name, rsAddr, saw, told string
			if _, err := fmt.Sscanf(body, "%s %s saw %s told %s", &name, &rsAddr, &saw, &told); err != nil {
				t.Fatalf("%v: answer %q: %v", vip, body, err)
			}
			if told != local.String() {
				t.Errorf("%v (v%d): %s was told %s, the client is %s", vip, tc.version, name, told, local)
			}
			if a, err := netip.ParseAddr(rsAddr); err != nil || a != rsAddrs[name] {
				t.Errorf("%v: %s answered on %s, not its server-side address", vip, name, rsAddr)
			}
			if s, err := netip.ParseAddrPort(saw); err != nil || s.Addr() != x.lip1 {
				t.Errorf("%v: %s saw %s, not the LIP %v", vip, name, saw, x.lip1)
			}
			servers[name] = true
			conns = append(conns, conn{tc.version, local, tc.port})
		}
	}
	if !servers["rs1"] || !servers["rs2"] {
		t.Fatalf("answers from %v, want both real servers", servers)
	}
	bulk := x.at(9102)
	if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, bulk, 4<<20); err != nil {
		t.Fatalf("v2 bulk upload: %v", err)
	}
	if _, err := lab.Download(e.ctx(time.Minute), e.top.Client, bulk, 4<<20); err != nil {
		t.Fatalf("v2 bulk download: %v", err)
	}

	for _, c := range caps {
		if !eventually(5*time.Second, func() bool { return tcpFlowsClosed(c.packets(), lab.ProxyHTTPPort) }) {
			t.Fatal("the PROXY connections' closes did not all reach a capture within 5s")
		}
		c.stop()
	}
	var firsts [][]byte
	for _, c := range caps {
		seen := map[netip.AddrPort]bool{}
		for i, p := range tcpPort(c.packets(), lab.ProxyHTTPPort) {
			src, _, ok := ipsOf(p, x.server6())
			if !ok {
				t.Fatalf("frame %d at a real server: not of the server side's family: %v", i, p.NetworkLayer().NetworkFlow())
			}
			tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp.DstPort != lab.ProxyHTTPPort || len(tcp.Payload) == 0 {
				continue
			}
			from := netip.AddrPortFrom(src, uint16(tcp.SrcPort))
			if !seen[from] {
				seen[from] = true
				firsts = append(firsts, tcp.Payload)
			}
		}
		checkTCPSumsOf(t, c.packets(), netip.Addr{}, false, x.server6())
	}
	if len(firsts) != len(conns) {
		t.Fatalf("%d connections with payload captured at the real servers, %d made", len(firsts), len(conns))
	}
	for _, c := range conns {
		vip := x.at(c.vport)
		var hdr []byte
		switch {
		case c.version == 1 && x.client6():
			hdr = fmt.Appendf(nil, "PROXY TCP6 %s %s %d %d\r\n", c.client.Addr(), x.vip, c.client.Port(), c.vport)
		case c.version == 1:
			hdr = fmt.Appendf(nil, "PROXY TCP4 %s %s %d %d\r\n", c.client.Addr(), x.vip, c.client.Port(), c.vport)
		case x.client6():
			hdr = proxyV2Header6(0x21, c.client, vip)
		default:
			hdr = proxyV2Header4(0x11, c.client, vip)
		}
		if !slices.ContainsFunc(firsts, func(b []byte) bool { return bytes.HasPrefix(b, hdr) }) {
			t.Errorf("no connection's first payload at the real servers starts with the v%d header %q for %v -> %v", c.version, hdr, c.client, vip)
		}
	}
}

// PROXY v2 before NAT64 UDP datagrams: each reaches a real server from the
// LIP after a header that names the client (AF_INET6, DGRAM; NAT46:
// AF_INET), and the echo comes back. The size limit is the server side's:
// a payload of 1500 - 20 - 8 - 52 bytes reaches an IPv4 server as a
// 1500-byte packet (NAT46: 1500 - 40 - 8 - 28, an IPv6 one); one byte more
// is dropped and counted.
func TestNAT64ProxyUDP(t *testing.T) {
	for _, x := range xlats {
		t.Run(x.name, func(t *testing.T) { testXlatProxyUDP(t, x) })
	}
}

func testXlatProxyUDP(t *testing.T, x xlat) {
	e := setup6(t, x.services(nat64ProxyServices), "")
	vip := x.at(lab.ProxyEchoPort)
	network, fits := "udp6", 1500-20-8-52
	if !x.client6() {
		network, fits = "udp4", 1500-40-8-28
	}
	c, err := e.dial(network, vip, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	me := netip.MustParseAddrPort(c.LocalAddr().String())
	ask := func(payload []byte) (string, error) {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(payload); err != nil {
			return "", err
		}
		buf := make([]byte, 65536)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	got, err := ask([]byte("hello"))
	if err != nil {
		t.Fatalf("no echo: %v", err)
	}
	// "rsN saw LIP:port told client:port: <payload>"
	_, rest, _ := strings.Cut(got, " saw ")
	saw, rest, _ := strings.Cut(rest, " told ")
	told, echoed, _ := strings.Cut(rest, ": ")
	if from, err := netip.ParseAddrPort(saw); err != nil || from.Addr() != x.lip2 || told != me.String() || echoed != "hello" {
		t.Fatalf("%q: want from the LIP %v, told %v, echoing hello", got, x.lip2, me)
	}
	svc := e.service(x.svc("p2-udp64"))
	inBytes := func() (n uint64) {
		for _, d := range svc.Dests() {
			n += d.Traffic().InBytes
		}
		return n
	}
	big, before := e.d.Balancer.Stats.Drop(nat.DropUDPProxyBig), inBytes()
	if _, err := ask(make([]byte, fits+1)); err == nil {
		t.Fatal("a datagram too big for the header was answered")
	}
	if n := e.d.Balancer.Stats.Drop(nat.DropUDPProxyBig); n != big+1 || inBytes() != before {
		t.Fatalf("udp_proxy_too_big %d -> %d, %d bytes sent to the servers", big, n, inBytes()-before)
	}
	// The one that fits reaches the server (its echo, past the client
	// side's MTU once translated, need not come back whole).
	ask(make([]byte, fits))
	if n := inBytes() - before; n != 1500 {
		t.Fatalf("%d IP bytes sent to the server, want 1500: the datagram with its header, in the server side's family", n)
	}
}

// toaServices64 are HTTP and bulk at the NAT64 VIP to the first real
// server's IPv4 address, each adding TOA, with SYNPROXY or without (%t).
const toaServices64 = `
  - {name: web64-toa, vip: "fd00:25:254::64", port: 80, scheduler: rr, synproxy: %[1]t, client_address: toa, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 80}]}
  - {name: bulk64-toa, vip: "fd00:25:254::64", port: 9000, scheduler: rr, synproxy: %[1]t, client_address: toa, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 9000}]}
`

// TOA over NAT64: the IPv4 real server's capture, decoded by gopacket,
// shows on the segment from the IPv4 LIP that completes each HTTP
// connection's handshake a first option of kind 254 and length 20 (DPVS's
// layout for an IPv6 client, which its toa module reads on an IPv4 socket
// as the NAT64 peer) naming the IPv6 client's own address and port; every
// kind-254 option on the bulk connections has length 20 and names the
// client; every packet at the server is IPv4 with checksums that verify
// from scratch (without offload, every one from the LIP full and within
// the 1500-byte MTU, the option included); no segment went without it for
// lack of room; 8 MiB each way arrive intact. With and without SYNPROXY,
// with TAP offload and without. NAT46 is the mirror: the IPv6 server sees
// the usual 8-byte IPv4 option (kind 254, length 8) naming the IPv4
// client, on IPv6 segments within the server side's 1500 bytes.
func TestNAT64TOA(t *testing.T) {
	for _, x := range xlats {
		for _, tc := range []struct{ synproxy, noOffload bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
			t.Run(fmt.Sprintf("%s/synproxy=%t/offload=%t", x.name, tc.synproxy, !tc.noOffload), func(t *testing.T) {
				need(t)
				needIPv6(t)
				testXlatTOA(t, x, tc.synproxy, tc.noOffload)
			})
		}
	}
}

func testXlatTOA(t *testing.T, x xlat, synproxy, noOffload bool) {
	e := setupWith(t, topoOpts{queues: 1, ipv6: true, noOffload: noOffload}, x.services(fmt.Sprintf(toaServices64, synproxy)), "")
	capRS := startCapture(t, e.top.RS[0], "eth0")
	var clients []netip.AddrPort
	for range 3 {
		clients = append(clients, getFrom6(t, e, x.at(lab.HTTPPort)))
	}
	bulk := x.at(lab.BulkPort)
	if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, bulk, 8<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Download(e.ctx(time.Minute), e.top.Client, bulk, 8<<20); err != nil {
		t.Fatal(err)
	}
	if !eventually(5*time.Second, func() bool { return tcpFlowsClosed(capRS.packets(), lab.HTTPPort) }) {
		t.Fatal("the HTTP connections' closes did not all reach the capture within 5s")
	}
	capRS.stop()
	ps := capRS.packets()
	for i, p := range append(tcpPort(ps, lab.HTTPPort), tcpPort(ps, lab.BulkPort)...) {
		if _, _, ok := ipsOf(p, x.server6()); !ok {
			t.Fatalf("frame %d at the real server: not of the server side's family: %v", i, p.NetworkLayer().NetworkFlow())
		}
	}
	partial := checkTCPSumsOf(t, ps, netip.Addr{}, false, x.server6())
	if noOffload {
		checkTCPSumsOf(t, ps, x.lip1, true, x.server6())
		for i, p := range ps {
			src, _, ok := ipsOf(p, x.server6())
			if !ok || src != x.lip1 {
				continue
			}
			if n := len(p.NetworkLayer().LayerContents()) + len(p.NetworkLayer().LayerPayload()); n > 1500 {
				t.Fatalf("segment %d from the LIP: %d bytes, past the MTU on plain TAPs", i, n)
			}
		}
	}

	toa, optLen := toa6Of, uint8(20)
	if !x.client6() {
		toa, optLen = toaOf, 8
	}
	told := toldAtHandshakes(t, ps, x.rs1, toa)
	slices.SortFunc(told, netip.AddrPort.Compare)
	slices.SortFunc(clients, netip.AddrPort.Compare)
	if !slices.Equal(told, clients) {
		t.Fatalf("the server was told %v, the clients were %v", told, clients)
	}
	n := 0
	for _, p := range tcpPort(ps, lab.BulkPort) {
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		for _, o := range tcp.Options {
			if o.OptionType == 254 && o.OptionLength != optLen {
				t.Fatalf("bulk segment with a kind-254 option of length %d: the client's family's is %d", o.OptionLength, optLen)
			}
		}
		if a, ok := toa(tcp); ok {
			n++
			if a.Addr() != x.client {
				t.Fatalf("bulk segment with TOA %v: not the client %v", a, x.client)
			}
		}
	}
	ins, noRoom := e.d.Balancer.Stats.TOA()
	t.Logf("TOA inserted %d, no room %d; bulk segments with TOA captured %d; partial checksums seen %d", ins, noRoom, n, partial)
	if n == 0 || ins == 0 || noRoom != 0 {
		t.Fatalf("TOA inserted %d, no room %d, %d bulk segments with TOA captured", ins, noRoom, n)
	}
}

// ipv6ListServices are an IPv6 FULLNAT and a NAT64 HTTP service, for the
// IPv6 allow and deny lists.
const ipv6ListServices = `
  - {name: web6, vip: "fd00:25:254::100", port: 80, scheduler: rr, local_addresses: ["fd00:25:84::10"], real_servers: [{address: "fd00:20:1::2", port: 80}]}
  - {name: web64, vip: "fd00:25:254::64", port: 80, scheduler: rr, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 80}]}
`

// IPv6 allow and deny lists (issue #27), set live with tapvsadm as DPVS's
// blacklist and whitelist, on an IPv6 service and a NAT64 one: a deny of
// the client's /64 refuses its new connections, counted as denied, while
// the connection it has keeps working, and deleting it lets new ones in;
// an allow list of another /64 refuses them as not_allowed, one of the
// client's /48 lets them in. An IPv4 prefix on an IPv6 service, and an
// IPv6 prefix longer than /64, are refused naming them.
func TestIPv6SourceLists(t *testing.T) {
	e := setup6(t, ipv6ListServices, "")
	for _, vip := range []netip.Addr{lab.VIP6, lab.VIP64} {
		svc := netip.AddrPortFrom(vip, lab.HTTPPort).String()
		dial := func() (net.Conn, error) {
			return lab.Dial(e.ctx(1500*time.Millisecond), e.top.Client, "tcp6", svc)
		}
		open, err := dial()
		if err != nil {
			t.Fatalf("%s: %v", svc, err)
		}
		defer open.Close()
		ka := &keepAlive{c: open, r: bufio.NewReader(open)}
		if body, err := ka.get(); err != nil || !strings.Contains(body, "saw") {
			t.Fatalf("%s before the deny: %q %v", svc, body, err)
		}
		e.must("--add-blklst", "-t", svc, "-k", "fd00:25:254::/64")
		if out := e.must("--get-blklst", "-t", svc); !strings.Contains(out, "fd00:25:254::/64") {
			t.Fatalf("--get-blklst:\n%s", out)
		}
		denied := e.d.Balancer.Stats.Drop(nat.DropDenied)
		if c, err := dial(); err == nil {
			c.Close()
			t.Fatalf("%s: a new connection from a denied /64 was opened", svc)
		}
		if n := e.d.Balancer.Stats.Drop(nat.DropDenied); n <= denied {
			t.Fatalf("%s: denied SYNs not counted: %v", svc, e.d.Balancer.Stats.Drops())
		}
		if body, err := ka.get(); err != nil || !strings.Contains(body, "saw") {
			t.Fatalf("%s: the open connection after the deny: %q %v", svc, body, err)
		}
		e.must("--del-blklst", "-t", svc, "-k", "fd00:25:254::/64")
		e.must("--add-whtlst", "-t", svc, "-k", "fd00:99::/64")
		notAllowed := e.d.Balancer.Stats.Drop(nat.DropNotAllowed)
		if c, err := dial(); err == nil {
			c.Close()
			t.Fatalf("%s: a new connection from outside the allow list was opened", svc)
		}
		if n := e.d.Balancer.Stats.Drop(nat.DropNotAllowed); n <= notAllowed {
			t.Fatalf("%s: not_allowed SYNs not counted: %v", svc, e.d.Balancer.Stats.Drops())
		}
		e.must("--add-whtlst", "-t", svc, "-k", "fd00:25:254::/48")
		c, err := dial()
		if err != nil {
			t.Fatalf("%s: the client's /48 in the allow list: %v", svc, err)
		}
		c.Close()
		for _, k := range []struct{ prefix, want string }{
			{"10.0.0.0/8", "10.0.0.0/8 is IPv4, and this service's clients are IPv6"},
			{"fd00:25:254::/96", "is longer than /64"},
		} {
			if _, errOut, code := e.adm("", "--add-blklst", "-t", svc, "-k", k.prefix); code == 0 || !strings.Contains(errOut, k.want) {
				t.Fatalf("%s: --add-blklst -k %s: exit %d, %q; want %q", svc, k.prefix, code, errOut, k.want)
			}
		}
	}
}
