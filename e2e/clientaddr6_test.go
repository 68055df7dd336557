// The client's address over IPv6 (issue #15): PROXY v1 and v2 to nginx
// and to the lab's go-proxyproto servers, PROXY v2 before UDP datagrams,
// and TOA in DPVS's IPv6 layout. go test -run 'TestIPv6ClientAddr|TestIPv6Proxy|TestIPv6TOA' ./e2e/

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
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

// nginxProxyServices6 are nginxProxyServices at the IPv6 VIP, LIPs and
// first real server.
const nginxProxyServices6 = `
  - {name: v1-6, vip: "fd00:25:254::100", port: 8181, scheduler: rr, client_address: proxy-v1, local_addresses: ["fd00:25:84::10"], real_servers: [{address: "fd00:20:1::2", port: 8181}]}
  - {name: v2-6, vip: "fd00:25:254::100", port: 8182, scheduler: rr, client_address: proxy-v2, local_addresses: ["fd00:25:84::10"], real_servers: [{address: "fd00:20:1::2", port: 8182}]}
  - {name: v1-sp-6, vip: "fd00:25:254::100", port: 8183, scheduler: rr, synproxy: true, client_address: proxy-v1, local_addresses: ["fd00:25:84::11"], real_servers: [{address: "fd00:20:1::2", port: 8183}]}
  - {name: v2-sp-6, vip: "fd00:25:254::100", port: 8184, scheduler: rr, synproxy: true, client_address: proxy-v2, local_addresses: ["fd00:25:84::11"], real_servers: [{address: "fd00:20:1::2", port: 8184}]}
`

// nginx on the first real server's IPv6 address (`listen [addr]:port
// proxy_protocol`) logs, for every request through the IPv6 VIP, the
// IPv6 client's own address and port as $proxy_protocol_addr and
// $proxy_protocol_port, for PROXY v1 and v2, with and without SYNPROXY,
// while $remote_addr, the connection's own source, is an IPv6 LIP.
func TestIPv6ClientAddrNginx(t *testing.T) {
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatalf("nginx is missing (apt-get install nginx-light; bash .ci/deps installs it): %v", err)
	}
	e := setup6(t, nginxProxyServices6, "")
	logPath := startNginx(t, e.top.RS[0], t.TempDir(), lab.RS1v6, []int{8181, 8182, 8183, 8184})
	var want []string // "port client-ip:client-port", as nginx writes them
	for _, port := range []uint16{8181, 8182, 8183, 8184} {
		for range 3 {
			local := getFrom6(t, e, netip.AddrPortFrom(lab.VIP6, port))
			if local.Addr() != lab.ClientAddr6.Addr() {
				t.Fatalf("the client's connection is from %v, not %v", local, lab.ClientAddr6.Addr())
			}
			// nginx writes the address bare, without brackets.
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
			t.Errorf("request %d: nginx logged %q, want %q (the IPv6 client's own address and port)", i, got, want[i])
		}
		if f[2] != lab.LIP1v6.String() && f[2] != lab.LIP2v6.String() {
			t.Errorf("request %d: the connection came from %s, not an IPv6 LIP", i, f[2])
		}
	}
}

// getFrom6 makes one HTTP request from the client's namespace to the IPv6
// addr (or a NAT46 VIP's IPv4 one) over a connection of its own and returns that connection's local
// address: the client's own address and port.
func getFrom6(t testing.TB, e *env, addr netip.AddrPort) netip.AddrPort {
	t.Helper()
	_, local := getBody6(t, e, addr)
	return local
}

// getBody6 is getFrom6 that returns the answer's body too.
func getBody6(t testing.TB, e *env, addr netip.AddrPort) (string, netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	network := "tcp6"
	if addr.Addr().Is4() { // a NAT46 VIP
		network = "tcp4"
	}
	c, err := lab.Dial(ctx, e.top.Client, network, addr.String())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	used := false
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, fmt.Errorf("a second connection")
			}
			used = true
			return c, nil
		}}}
	resp, err := hc.Get("http://" + addr.String() + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v", addr, resp.Status, err)
	}
	return string(b), local
}

// proxyServices6 put the lab's go-proxyproto servers on both real servers'
// IPv6 addresses behind PROXY v1 and v2, without and with SYNPROXY (HTTP,
// lab.ProxyHTTPPort), PROXY v2 before UDP datagrams (lab.ProxyEchoPort),
// and the bulk server behind a v2 header (lab.ProxyBulkPort).
const proxyServices6 = `
  - {name: p1, vip: "fd00:25:254::100", port: 8101, client_address: proxy-v1, local_addresses: ["fd00:25:84::10"], real_servers: [{address: "fd00:20:1::2", port: 8081}, {address: "fd00:20:2::2", port: 8081}]}
  - {name: p2, vip: "fd00:25:254::100", port: 8102, client_address: proxy-v2, local_addresses: ["fd00:25:84::10"], real_servers: [{address: "fd00:20:1::2", port: 8081}, {address: "fd00:20:2::2", port: 8081}]}
  - {name: p1-sp, vip: "fd00:25:254::100", port: 8103, synproxy: true, client_address: proxy-v1, local_addresses: ["fd00:25:84::11"], real_servers: [{address: "fd00:20:1::2", port: 8081}, {address: "fd00:20:2::2", port: 8081}]}
  - {name: p2-sp, vip: "fd00:25:254::100", port: 8104, synproxy: true, client_address: proxy-v2, local_addresses: ["fd00:25:84::11"], real_servers: [{address: "fd00:20:1::2", port: 8081}, {address: "fd00:20:2::2", port: 8081}]}
  - {name: p2-bulk, vip: "fd00:25:254::100", port: 9102, client_address: proxy-v2, local_addresses: ["fd00:25:84::10"], real_servers: [{address: "fd00:20:1::2", port: 9002}]}
  - {name: p2-udp, vip: "fd00:25:254::100", port: 9003, protocol: udp, client_address: proxy-v2, local_addresses: ["fd00:25:84::11"], real_servers: [{address: "fd00:20:1::2", port: 9003}, {address: "fd00:20:2::2", port: 9003}]}
`

// The lab's go-proxyproto HTTP servers, on the real servers' IPv6
// addresses, are told the IPv6 client's own address and port by PROXY v1
// and v2, with and without SYNPROXY, on connections from an IPv6 LIP to
// their IPv6 address. On the wire at each real server, the first payload
// of every connection is the header byte for byte: v1 "PROXY TCP6 <client>
// <VIP> <client port> <VIP port>\r\n", v2 the 52-byte AF_INET6/STREAM
// header (family 0x21, length 36) with the same four fields. 4 MiB each
// way through a v2 bulk service arrive intact.
func TestIPv6ProxyProtocolTCP(t *testing.T) {
	e := setup6(t, proxyServices6, "")
	caps := [2]*capture{startCapture(t, e.top.RS[0], "eth0"), startCapture(t, e.top.RS[1], "eth0")}
	type conn struct {
		version int
		client  netip.AddrPort
		vport   uint16
	}
	var conns []conn
	servers := map[string]bool{}
	for _, tc := range []struct {
		port    uint16
		version int
	}{{8101, 1}, {8102, 2}, {8103, 1}, {8104, 2}} {
		for range 4 { // rr: two to each server
			vip := netip.AddrPortFrom(lab.VIP6, tc.port)
			body, local := getBody6(t, e, vip)
			// "<rs> <addr> saw <LIP:port> told <client ip:port>"
			var name, rsAddr, saw, told string
			if _, err := fmt.Sscanf(body, "%s %s saw %s told %s", &name, &rsAddr, &saw, &told); err != nil {
				t.Fatalf("%v: answer %q: %v", vip, body, err)
			}
			if told != local.String() {
				t.Errorf("%v (v%d): %s was told %s, the client is %s", vip, tc.version, name, told, local)
			}
			if a, err := netip.ParseAddr(rsAddr); err != nil || a != lab.RS6(map[string]netip.Addr{"rs1": lab.RS1, "rs2": lab.RS2}[name]) {
				t.Errorf("%v: %s answered on %s, not its IPv6 address", vip, name, rsAddr)
			}
			if s, err := netip.ParseAddrPort(saw); err != nil || (s.Addr() != lab.LIP1v6 && s.Addr() != lab.LIP2v6) {
				t.Errorf("%v: %s saw %s, not an IPv6 LIP", vip, name, saw)
			}
			servers[name] = true
			conns = append(conns, conn{tc.version, local, tc.port})
		}
	}
	if !servers["rs1"] || !servers["rs2"] {
		t.Fatalf("answers from %v, want both real servers", servers)
	}
	bulk := netip.AddrPortFrom(lab.VIP6, 9102)
	if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, bulk, 4<<20); err != nil {
		t.Fatalf("v2 bulk upload: %v", err)
	}
	if _, err := lab.Download(e.ctx(time.Minute), e.top.Client, bulk, 4<<20); err != nil {
		t.Fatalf("v2 bulk download: %v", err)
	}

	// The headers on the wire: the first payload each connection carries
	// toward a real server's go-proxyproto port.
	for _, c := range caps {
		if !eventually(5*time.Second, func() bool { return tcpFlowsClosed(c.packets(), lab.ProxyHTTPPort) }) {
			t.Fatal("the PROXY connections' closes did not all reach a capture within 5s")
		}
		c.stop()
	}
	var firsts [][]byte
	for _, c := range caps {
		seen := map[netip.AddrPort]bool{}
		for _, p := range tcpPort(c.packets(), lab.ProxyHTTPPort) {
			ip, tcp := ip6Of(p), p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if ip == nil || tcp.DstPort != lab.ProxyHTTPPort || len(tcp.Payload) == 0 {
				continue
			}
			from := netip.AddrPortFrom(addr(ip.SrcIP), uint16(tcp.SrcPort))
			if !seen[from] {
				seen[from] = true
				firsts = append(firsts, tcp.Payload)
			}
		}
		checkTCPSums6(t, c.packets(), netip.Addr{}, false)
	}
	if len(firsts) != len(conns) {
		t.Fatalf("%d connections with payload captured at the real servers, %d made", len(firsts), len(conns))
	}
	for _, c := range conns {
		vip := netip.AddrPortFrom(lab.VIP6, c.vport)
		var hdr []byte
		if c.version == 1 {
			hdr = fmt.Appendf(nil, "PROXY TCP6 %s %s %d %d\r\n", c.client.Addr(), lab.VIP6, c.client.Port(), c.vport)
		} else {
			hdr = proxyV2Header6(0x21, c.client, vip)
		}
		if !slices.ContainsFunc(firsts, func(b []byte) bool { return bytes.HasPrefix(b, hdr) }) {
			show := fmt.Sprintf("%q", hdr)
			if c.version == 2 {
				show = fmt.Sprintf("%x", hdr)
			}
			t.Errorf("no connection's first payload at the real servers starts with the v%d header %s for %v -> %v", c.version, show, c.client, vip)
		}
	}
}

// proxyV2Header6 is the PROXY v2 header (PROXY command) for an IPv6
// source and destination: fam 0x21 for TCP, 0x22 for UDP; 16 + 36 bytes.
func proxyV2Header6(fam byte, src, dst netip.AddrPort) []byte {
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x21, fam, 0, 36)
	s, d := src.Addr().As16(), dst.Addr().As16()
	h = append(h, s[:]...)
	h = append(h, d[:]...)
	h = binary.BigEndian.AppendUint16(h, src.Port())
	return binary.BigEndian.AppendUint16(h, dst.Port())
}

// A UDP service with client_address proxy-v2 at the IPv6 VIP: each
// datagram reaches a real server's go-proxyproto echo on its IPv6 address
// from an IPv6 LIP, after a header that tells it the IPv6 client's own
// address and port; the echo comes back to the client. At the servers,
// every datagram to the port starts with the 52-byte AF_INET6/DGRAM header
// (family 0x22) naming the client and the VIP, and its UDP checksum
// verifies from scratch.
func TestIPv6ProxyUDP(t *testing.T) {
	e := setup6(t, proxyServices6, "")
	caps := [2]*capture{startCapture(t, e.top.RS[0], "eth0"), startCapture(t, e.top.RS[1], "eth0")}
	vip := netip.AddrPortFrom(lab.VIP6, lab.ProxyEchoPort)
	servers := map[string]bool{}
	type sent struct {
		client  netip.AddrPort
		payload string
	}
	var all []sent
	for flow := range 4 {
		c, err := e.dial("udp6", vip, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		me := netip.MustParseAddrPort(c.LocalAddr().String())
		for i := range 3 {
			payload := fmt.Sprintf("flow %d datagram %d", flow, i)
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write([]byte(payload)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("%q: no echo: %v", payload, err)
			}
			got := string(buf[:n])
			// "rsN saw [LIP]:port told [client]:port: <payload>"
			name, rest, _ := strings.Cut(got, " saw ")
			saw, rest, _ := strings.Cut(rest, " told ")
			told, echoed, _ := strings.Cut(rest, ": ")
			if from, err := netip.ParseAddrPort(saw); err != nil || from.Addr() != lab.LIP2v6 {
				t.Fatalf("%q: the datagram did not come from the LIP %v", got, lab.LIP2v6)
			}
			if told != me.String() || echoed != payload {
				t.Fatalf("%q: told %q, echoed %q; the client is %s and sent %q", got, told, echoed, me, payload)
			}
			servers[name] = true
			all = append(all, sent{me, payload})
		}
	}
	if !servers["rs1"] || !servers["rs2"] {
		t.Fatalf("answers from %v, want both real servers", servers)
	}
	if n := e.d.Balancer.Stats.UDPProxyHeaders(); n != uint64(len(all)) {
		t.Fatalf("%d headers counted, %d datagrams sent", n, len(all))
	}
	var wire [][]byte // the UDP payloads toward the port at the servers
	for _, c := range caps {
		c.stop()
		for _, p := range c.packets() {
			ip := ip6Of(p)
			u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if ip == nil || !ok || u.DstPort != lab.ProxyEchoPort {
				continue
			}
			raw := p.Data()[14:]
			if _, ok, partial := l4Sum6(raw); !ok && !partial {
				t.Fatalf("datagram %v -> %v: the UDP checksum does not verify", ip.SrcIP, ip.DstIP)
			}
			wire = append(wire, u.Payload)
		}
	}
	if len(wire) != len(all) {
		t.Fatalf("%d datagrams captured at the real servers, %d sent", len(wire), len(all))
	}
	for _, s := range all {
		want := append(proxyV2Header6(0x22, s.client, vip), s.payload...)
		if !slices.ContainsFunc(wire, func(b []byte) bool { return bytes.Equal(b, want) }) {
			t.Errorf("no datagram at the servers is the 52-byte v2 header for %v -> %v and %q", s.client, vip, s.payload)
		}
	}

	// The server side's MTU is 1500: a 1452-byte payload fills it without
	// the header (IPv6 40 + UDP 8), so with the 52-byte header it is
	// dropped and counted, never sent; one 52 bytes shorter fits exactly.
	c, err := e.dial("udp6", vip, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func(payload []byte) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(payload); err != nil {
			return err
		}
		_, err := c.Read(make([]byte, 65536))
		return err
	}
	if err := ask([]byte("small")); err != nil {
		t.Fatal(err)
	}
	svc := e.service("p2-udp")
	inBytes := func() (n uint64) {
		for _, d := range svc.Dests() {
			n += d.Traffic().InBytes
		}
		return n
	}
	big, bytesBefore := e.d.Balancer.Stats.Drop(nat.DropUDPProxyBig), inBytes()
	if err := ask(make([]byte, 1452)); err == nil {
		t.Fatal("a datagram too big for the header was answered")
	}
	if n := e.d.Balancer.Stats.Drop(nat.DropUDPProxyBig); n != big+1 || inBytes() != bytesBefore {
		t.Fatalf("udp_proxy_too_big %d -> %d, %d bytes sent to the servers", big, n, inBytes()-bytesBefore)
	}
	// The echo of the one that fits is past the MTU: the server sends it
	// in IPv6 fragments, which tapvs reassembles and cuts again for the
	// client.
	reassembled := e.d.Balancer.Reassembled()
	if err := ask(make([]byte, 1452-52)); err != nil {
		t.Fatalf("the echo over the MTU: %v", err)
	}
	if n := inBytes() - bytesBefore; n != 1500 {
		t.Fatalf("%d IP bytes sent to the server, want 1500: the datagram with its header", n)
	}
	if e.d.Balancer.Reassembled() == reassembled {
		t.Fatal("the echo over the MTU came back whole: no fragment reassembled")
	}
}

// toaServices6 are HTTP and bulk at the IPv6 VIP to the first real server's
// IPv6 address, each adding TOA, with SYNPROXY or without (%t).
const toaServices6 = `
  - {name: web6-toa, vip: "fd00:25:254::100", port: 80, scheduler: rr, synproxy: %[1]t, client_address: toa, local_addresses: ["fd00:25:84::10"], real_servers: [{address: "fd00:20:1::2", port: 80}]}
  - {name: bulk6-toa, vip: "fd00:25:254::100", port: 9000, scheduler: rr, synproxy: %[1]t, client_address: toa, local_addresses: ["fd00:25:84::10"], real_servers: [{address: "fd00:20:1::2", port: 9000}]}
`

// TOA over IPv6: the real server's capture shows, on the segment from the
// LIP that completes each HTTP connection's handshake (ack = the server's
// ISN + 1), a first option of kind 254 and length 20 (DPVS's layout: the
// port, then the 16-byte address) naming the IPv6 client's own address
// and port; every segment that carries one on the bulk connections names
// the client; every TCP checksum verifies from scratch (without offload,
// every one from the LIP is full); 8 MiB each way arrive intact. With and
// without SYNPROXY, with TAP offload and without.
func TestIPv6TOA(t *testing.T) {
	for _, tc := range []struct {
		synproxy, noOffload bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("synproxy=%t/offload=%t", tc.synproxy, !tc.noOffload), func(t *testing.T) {
			need(t)
			needIPv6(t)
			e := setupWith(t, topoOpts{queues: 1, ipv6: true, noOffload: tc.noOffload}, fmt.Sprintf(toaServices6, tc.synproxy), "")
			capRS := startCapture(t, e.top.RS[0], "eth0")
			var clients []netip.AddrPort
			for range 3 {
				clients = append(clients, getFrom6(t, e, web6))
			}
			bulk := netip.AddrPortFrom(lab.VIP6, lab.BulkPort)
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

			partial := checkTCPSums6(t, ps, netip.Addr{}, false)
			if tc.noOffload {
				// Plain TAPs: every segment from tapvs has a full checksum
				// and, TOA included, fits the 1500-byte MTU.
				checkTCPSums6(t, ps, lab.LIP1v6, true)
				for i, p := range ps {
					if ip := ip6Of(p); ip != nil && addr(ip.SrcIP) == lab.LIP1v6 && 40+int(ip.Length) > 1500 {
						t.Fatalf("segment %d from the LIP: %d bytes, past the MTU on plain TAPs", i, 40+int(ip.Length))
					}
				}
			}

			told := toldAtHandshakes(t, ps, lab.RS1v6, toa6Of)
			slices.SortFunc(told, netip.AddrPort.Compare)
			slices.SortFunc(clients, netip.AddrPort.Compare)
			if !slices.Equal(told, clients) {
				t.Fatalf("the server was told %v, the clients were %v", told, clients)
			}

			n := 0
			for _, p := range tcpPort(ps, lab.BulkPort) {
				tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				for _, o := range tcp.Options {
					if o.OptionType == 254 && o.OptionLength != 20 {
						t.Fatalf("bulk segment with a kind-254 option of length %d over IPv6", o.OptionLength)
					}
				}
				if a, ok := toa6Of(tcp); ok {
					n++
					if a.Addr() != lab.ClientAddr6.Addr() {
						t.Fatalf("bulk segment with TOA %v: not the client %v", a, lab.ClientAddr6.Addr())
					}
				}
			}
			ins, noRoom := e.d.Balancer.Stats.TOA()
			t.Logf("TOA inserted %d, no room %d; bulk segments with TOA captured %d; partial checksums seen %d", ins, noRoom, n, partial)
			if n == 0 || ins == 0 || noRoom != 0 {
				t.Fatalf("TOA inserted %d, no room %d, %d bulk segments with TOA captured", ins, noRoom, n)
			}
		})
	}
}

// toa6Of reads a TCP header's first option as IPv6 TOA (kind 254, length
// 20: port, then address).
func toa6Of(tcp *layers.TCP) (netip.AddrPort, bool) {
	if len(tcp.Options) == 0 {
		return netip.AddrPort{}, false
	}
	o := tcp.Options[0]
	if o.OptionType != 254 || o.OptionLength != 20 || len(o.OptionData) != 18 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(o.OptionData[2:])), binary.BigEndian.Uint16(o.OptionData)), true
}
