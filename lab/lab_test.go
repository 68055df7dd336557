package lab

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/nat"
	"go.yaml.in/yaml/v3"
)

// These are the lab's parts that need no namespaces: names, the address
// plan, the configuration it renders, and the built-in servers' protocols
// (served here on loopback). The lab itself runs in the e2e tests.

func TestTopologyNames(t *testing.T) {
	top := NewTopology("xy", "xyc", "xys")
	if top.Prefix != "xy" || top.Client != "xy-client" || top.Router != "xy-router" ||
		top.RS != [2]string{"xy-rs1", "xy-rs2"} || top.TapClient != "xyc" || top.TapServer != "xys" {
		t.Fatalf("names: %+v", top)
	}
	if got := top.Namespaces(); !slices.Equal(got, []string{"xy-client", "xy-router", "xy-rs1", "xy-rs2"}) {
		t.Fatalf("namespaces: %v", got)
	}
	// Nothing is built yet: there is nothing to destroy.
	if err := top.Destroy(); err != nil {
		t.Fatalf("Destroy of an unbuilt lab: %v", err)
	}
}

// The address plan holds together: each side's addresses share its subnet,
// the real servers are behind the router's route, and nothing is used twice.
func TestAddressPlan(t *testing.T) {
	client := ClientAddr.Masked()
	for _, a := range []netip.Addr{TapvsClient.Addr(), VIP} {
		if !client.Contains(a) {
			t.Errorf("%s is not on the client side %s", a, client)
		}
	}
	server := RouterAddr.Masked()
	for _, a := range []netip.Addr{TapvsServer.Addr(), LIP1, LIP2} {
		if !server.Contains(a) {
			t.Errorf("%s is not on the server side %s", a, server)
		}
	}
	if TapvsClient.Masked() != client || TapvsServer.Masked() != server {
		t.Errorf("tapvs's prefixes %s, %s differ from its peers' %s, %s", TapvsClient, TapvsServer, client, server)
	}
	for i, rs := range []struct {
		addr netip.Addr
		gw   netip.Prefix
	}{{RS1, rs1GW}, {RS2, rs2GW}} {
		if !RSNet.Contains(rs.addr) || !rs.gw.Masked().Contains(rs.addr) || !RSNet.Contains(rs.gw.Addr()) {
			t.Errorf("rs%d %s: not behind %s in %s", i+1, rs.addr, rs.gw, RSNet)
		}
	}
	if rs1GW.Masked() == rs2GW.Masked() {
		t.Error("the two real servers share a VLAN")
	}
	if directClient.Masked() != directRouter.Masked() || directClient.Bits() != 30 || RSNet.Overlaps(directClient) {
		t.Errorf("direct path %s - %s", directClient, directRouter)
	}
	all := []netip.Addr{ClientAddr.Addr(), TapvsClient.Addr(), VIP, RouterAddr.Addr(), TapvsServer.Addr(), LIP1, LIP2,
		RS1, RS2, rs1GW.Addr(), rs2GW.Addr(), directClient.Addr(), directRouter.Addr()}
	seen := map[netip.Addr]bool{}
	for _, a := range all {
		if seen[a] {
			t.Errorf("%s is used twice", a)
		}
		seen[a] = true
	}
	ports := []int{HTTPPort, BulkPort, EchoPort, SynproxyPort}
	slices.Sort(ports)
	if len(slices.Compact(ports)) != 4 {
		t.Error("two built-in servers share a port")
	}
}

const labServices = `  - name: web
    vip: 172.25.254.100
    port: 80
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80}`

// Config renders a valid configuration for the topology: its namespaces,
// TAP names, addresses, the route to the real servers, queues, offload and
// control socket, with the caller's services and extra settings.
func TestConfigRendersTheTopology(t *testing.T) {
	top := NewTopology("tq", "tqc", "tqs")
	top.Queues, top.Socket, top.NoOffload = 3, "/run/tq/tapvs.sock", true
	c, err := config.Parse(top.Config(labServices, "limits: {max_connections: 777}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Client.Name != "tqc" || c.Client.Netns != "tq-client" || c.Client.Address != TapvsClient || c.Client.Queues != 3 ||
		c.Server.Name != "tqs" || c.Server.Netns != "tq-router" || c.Server.Address != TapvsServer || c.Server.Queues != 3 {
		t.Fatalf("interfaces: %+v %+v", c.Client, c.Server)
	}
	if len(c.Server.Routes) != 1 || c.Server.Routes[0].Dst != RSNet || c.Server.Routes[0].Via != RouterAddr.Addr() || len(c.Client.Routes) != 0 {
		t.Fatalf("routes: %+v %+v", c.Server.Routes, c.Client.Routes)
	}
	if c.Offload || c.ControlSocket != "/run/tq/tapvs.sock" || c.MaxConns != 777 || c.Sweep != 100*time.Millisecond {
		t.Fatalf("offload %v socket %q max %d sweep %v", c.Offload, c.ControlSocket, c.MaxConns, c.Sweep)
	}
	if len(c.Services) != 1 || c.Services[0].Name != "web" || len(c.Services[0].RealServers) != 2 {
		t.Fatalf("services: %+v", c.Services)
	}

	// The defaults: one queue, offload on, no control API.
	c, err = config.Parse(NewTopology("tq", "tqc", "tqs").Config(labServices, ""))
	if err != nil {
		t.Fatal(err)
	}
	if c.Client.Queues != 1 || c.Server.Queues != 1 || !c.Offload || c.ControlSocket != "" {
		t.Fatalf("defaults: queues %d/%d offload %v socket %q", c.Client.Queues, c.Server.Queues, c.Offload, c.ControlSocket)
	}
}

// The shipped config.yaml is the lab's: lab.Run refuses it otherwise. Its
// namespaces are the lab's, its addresses the address plan's, and its
// services the built-in servers'.
func TestShippedConfigIsTheLabs(t *testing.T) {
	c, err := config.Load("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	top := NewTopology(Prefix, c.Client.Name, c.Server.Name)
	if c.Client.Netns != top.Client || c.Server.Netns != top.Router {
		t.Fatalf("netns %q, %q; the lab has %q, %q", c.Client.Netns, c.Server.Netns, top.Client, top.Router)
	}
	if c.Client.Address != TapvsClient || c.Server.Address != TapvsServer {
		t.Fatalf("addresses %s, %s; the lab has %s, %s", c.Client.Address, c.Server.Address, TapvsClient, TapvsServer)
	}
	if !slices.ContainsFunc(c.Server.Routes, func(r config.Route) bool { return r.Dst == RSNet && r.Via == RouterAddr.Addr() }) {
		t.Fatalf("no route to %s via %s: %+v", RSNet, RouterAddr.Addr(), c.Server.Routes)
	}
	checkLabServices(t, c, VIP, [2]netip.Addr{LIP1, LIP2}, [2]netip.Addr{RS1, RS2}, []uint16{HTTPPort, SynproxyPort, BulkPort, EchoPort})
}

// checkLabServices checks that c has, at vip, the lab's service on each of
// ports (TCP, the echo UDP; SYNPROXY on SynproxyPort, toward the servers'
// HTTP port; the same port on the servers otherwise) over lips and rss.
func checkLabServices(t *testing.T, c *config.Config, vip netip.Addr, lips, rss [2]netip.Addr, ports []uint16) {
	t.Helper()
	at := func(port uint16) string { return netip.AddrPortFrom(vip, port).String() }
	for _, port := range ports {
		proto := nat.TCP
		if port == EchoPort {
			proto = nat.UDP
		}
		i := slices.IndexFunc(c.Services, func(s config.Service) bool { return s.VIP == vip && s.Port == port && s.Protocol == proto })
		if i < 0 {
			t.Errorf("no %s service at %s", proto, at(port))
			continue
		}
		s := c.Services[i]
		for _, l := range s.LocalAddresses {
			if l != lips[0] && l != lips[1] {
				t.Errorf("%s: LIP %s is not the lab's", at(port), l)
			}
		}
		var got []netip.Addr
		for _, rs := range s.RealServers {
			got = append(got, rs.Address)
			if want := port; port != SynproxyPort && rs.Port != want || port == SynproxyPort && rs.Port != HTTPPort {
				t.Errorf("%s: real server port %d", at(port), rs.Port)
			}
		}
		if !slices.Equal(got, rss[:]) {
			t.Errorf("%s: real servers %v, want %s and %s", at(port), got, rss[0], rss[1])
		}
		if s.Synproxy != (port == SynproxyPort) {
			t.Errorf("%s: synproxy %v", at(port), s.Synproxy)
		}
	}
}

// Stream is the same bytes for the same length on both ends, and another
// length gives another stream.
func TestStreamIsDeterministic(t *testing.T) {
	read := func(n int64) []byte {
		b, err := io.ReadAll(io.LimitReader(Stream(n), n))
		if err != nil || int64(len(b)) != n {
			t.Fatalf("Stream(%d): %d bytes, %v", n, len(b), err)
		}
		return b
	}
	a, b := read(100000), read(100000)
	if string(a) != string(b) {
		t.Fatal("two Stream(100000) differ")
	}
	c := read(100001)
	if string(a[:4096]) == string(c[:4096]) {
		t.Fatal("Stream(100000) and Stream(100001) start alike")
	}
	if string(a[:4096]) == string(make([]byte, 4096)) {
		t.Fatal("Stream is zeros")
	}
}

func loopback(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// The bulk protocol, served on loopback: 'U' answers the SHA-256 of what
// was sent, 'D' sends Stream(n).
func TestBulkServer(t *testing.T) {
	b := &Backend{Name: "rs1", Addr: RS1}
	l := loopback(t)
	done := make(chan struct{})
	go func() { defer close(done); b.serveBulk(l) }()
	defer func() { l.Close(); <-done }()
	dial := func(op byte, n int64) net.Conn {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var hdr [9]byte
		hdr[0] = op
		binary.BigEndian.PutUint64(hdr[1:], uint64(n))
		if _, err := c.Write(hdr[:]); err != nil {
			t.Fatal(err)
		}
		return c
	}
	const n = 1 << 20
	up := dial('U', n)
	want := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(up, want), Stream(n), n); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(up, got); err != nil {
		t.Fatal(err)
	}
	up.Close()
	if string(got) != string(want.Sum(nil)) {
		t.Fatal("upload: the server's hash differs")
	}

	down := dial('D', n)
	h := sha256.New()
	m, err := io.Copy(h, down)
	down.Close()
	if err != nil || m != n {
		t.Fatalf("download: %d of %d bytes, %v", m, n, err)
	}
	ref := sha256.New()
	io.CopyN(ref, Stream(n), n)
	if string(h.Sum(nil)) != string(ref.Sum(nil)) {
		t.Fatal("download: not Stream(n)")
	}
}

// The UDP echo says who answered and whom it saw, then the message.
func TestEchoServer(t *testing.T) {
	b := &Backend{Name: "rs2", Addr: RS2}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); b.serveEcho(pc) }()
	defer func() { pc.Close(); <-done }()
	c, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("rs2 saw %s: hello", c.LocalAddr()); string(buf[:n]) != want {
		t.Fatalf("echo %q, want %q", buf[:n], want)
	}
}

// The HTTP answer is the line lab.demo parses, and every request counts.
func TestHTTPAnswer(t *testing.T) {
	b := &Backend{Name: "rs1", Addr: RS1}
	for i := 1; i <= 2; i++ {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "172.25.84.10:5123"
		b.serveHTTP(w, r)
		if got, want := w.Body.String(), "rs1 10.20.1.2 saw 172.25.84.10:5123\n"; got != want {
			t.Fatalf("answer %q, want %q", got, want)
		}
		var name, addr, saw string
		if n, err := fmt.Sscanf(w.Body.String(), "%s %s saw %s", &name, &addr, &saw); n != 3 || err != nil || name != "rs1" || saw != "172.25.84.10:5123" {
			t.Fatalf("demo's parse: %d %v %q %q %q", n, err, name, addr, saw)
		}
		if b.Requests.Load() != int64(i) {
			t.Fatalf("%d requests counted after %d", b.Requests.Load(), i)
		}
	}
}

// A namespace that does not exist is an error that names it, and fn does
// not run (in the wrong namespace).
func TestInNetnsUnknownNamespace(t *testing.T) {
	ran := false
	err := InNetns("tapvs-test-no-such-netns", func() error { ran = true; return nil })
	if err == nil || !strings.Contains(err.Error(), "netns tapvs-test-no-such-netns") {
		t.Fatalf("error %v", err)
	}
	if ran {
		t.Fatal("fn ran without its namespace")
	}
}

// ip's errors quote the command and what it printed (which names the
// device again).
func TestIPErrorQuotesTheCommand(t *testing.T) {
	err := ip("link", "show", "dev", "tvsnosuchdev0")
	if err == nil {
		t.Fatal("ip link show of a missing device succeeded")
	}
	if !strings.HasPrefix(err.Error(), "ip link show dev tvsnosuchdev0: ") || strings.Count(err.Error(), "tvsnosuchdev0") < 2 {
		t.Fatalf("error %q", err)
	}
}

// The IPv6 plan holds together as the IPv4 one does, and mirrors it: the
// client side, the server side with the LIPs, the real servers each on its
// own /64 behind the router.
func TestAddressPlan6(t *testing.T) {
	client := ClientAddr6.Masked()
	for _, a := range []netip.Addr{TapvsClient6.Addr(), VIP6, VIP64} {
		if !client.Contains(a) {
			t.Errorf("%s is not on the client side %s", a, client)
		}
	}
	server := RouterAddr6.Masked()
	for _, a := range []netip.Addr{TapvsServer6.Addr(), LIP1v6, LIP2v6} {
		if !server.Contains(a) {
			t.Errorf("%s is not on the server side %s", a, server)
		}
	}
	if TapvsClient6.Masked() != client || TapvsServer6.Masked() != server || client.Overlaps(server) {
		t.Errorf("tapvs's prefixes %s, %s against %s, %s", TapvsClient6, TapvsServer6, client, server)
	}
	for i, rs := range []struct {
		v4, addr netip.Addr
		gw       netip.Prefix
	}{{RS1, RS1v6, rs1GW6}, {RS2, RS2v6, rs2GW6}} {
		if !RSNet6.Contains(rs.addr) || !rs.gw.Masked().Contains(rs.addr) || !RSNet6.Contains(rs.gw.Addr()) {
			t.Errorf("rs%d %s: not behind %s in %s", i+1, rs.addr, rs.gw, RSNet6)
		}
		if RS6(rs.v4) != rs.addr {
			t.Errorf("RS6(%s) = %s, want %s", rs.v4, RS6(rs.v4), rs.addr)
		}
	}
	if RS6(VIP).IsValid() {
		t.Errorf("RS6(%s) = %s for an address that is no real server", VIP, RS6(VIP))
	}
	if rs1GW6.Masked() == rs2GW6.Masked() || RSNet6.Overlaps(client) || RSNet6.Overlaps(server) || RSNet6.Overlaps(directClient6) {
		t.Error("the IPv6 subnets overlap")
	}
	if directClient6.Masked() != directRouter6.Masked() {
		t.Errorf("direct path %s - %s", directClient6, directRouter6)
	}
	all := []netip.Addr{ClientAddr6.Addr(), TapvsClient6.Addr(), VIP6, VIP64, RouterAddr6.Addr(), TapvsServer6.Addr(), LIP1v6, LIP2v6,
		RS1v6, RS2v6, rs1GW6.Addr(), rs2GW6.Addr(), directClient6.Addr(), directRouter6.Addr()}
	seen := map[netip.Addr]bool{}
	for _, a := range all {
		if !a.Is6() || a.Is4In6() {
			t.Errorf("%s is not IPv6", a)
		}
		if seen[a] {
			t.Errorf("%s is used twice", a)
		}
		seen[a] = true
	}
}

// With IPv6 set, Config gives tapvs its IPv6 address on each side and the
// route to the real servers' IPv6 network; without, nothing of IPv6.
func TestConfigRendersIPv6(t *testing.T) {
	top := NewTopology("tq", "tqc", "tqs")
	if s := top.Config(labServices, ""); strings.Contains(s, "address6") || strings.Contains(s, RSNet6.String()) {
		t.Fatalf("IPv6 in an IPv4 configuration:\n%s", s)
	}
	top.IPv6 = true
	var raw struct {
		Interfaces struct {
			Client struct {
				Address6 string
			}
			Server struct {
				Address6 string
				Routes   []struct{ Dst, Via string }
			}
		}
	}
	s := top.Config(labServices, "")
	if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
		t.Fatalf("%v:\n%s", err, s)
	}
	c, sv := raw.Interfaces.Client, raw.Interfaces.Server
	if c.Address6 != TapvsClient6.String() || sv.Address6 != TapvsServer6.String() {
		t.Errorf("address6 %q, %q; want %s, %s", c.Address6, sv.Address6, TapvsClient6, TapvsServer6)
	}
	want := []struct{ Dst, Via string }{{RSNet.String(), RouterAddr.Addr().String()}, {RSNet6.String(), RouterAddr6.Addr().String()}}
	if !slices.Equal(sv.Routes, want) {
		t.Errorf("routes %+v, want %+v", sv.Routes, want)
	}
}

// MetricSum adds the samples of the series a prefix names, a whole series
// or the start of several, and takes no other: a prefix of a name is not
// that name's series.
func TestMetricSum(t *testing.T) {
	body := `# HELP tapvs_sync_records_total x
tapvs_sync_records_total{result="applied"} 12
tapvs_sync_records_total{result="refused_stale"} 2
tapvs_sync_records_total{result="refused_conflict"} 1.5e+01
tapvs_sync_records_total_other{result="applied"} 100
tapvs_drops_total{reason="x"} 7
`
	for prefix, want := range map[string]float64{
		`tapvs_sync_records_total{result="applied"} `: 12,
		`tapvs_sync_records_total{result="refused_`:   17,
		`tapvs_drops_total{reason="x"} `:              7,
		`tapvs_drops_total{reason="y"} `:              0,
	} {
		if got := MetricSum(body, prefix); got != want {
			t.Errorf("%s: %v, want %v", prefix, got, want)
		}
	}
}

// The subnets behind the router follow rs1's and rs2's: subnet k is
// 10.20.k+1.0/24 and fd00:20:k+1::/64 on its own bridge.
func TestSubnetPlan(t *testing.T) {
	for _, c := range []struct {
		k, h        int
		v4, v6, gw4 string
		gw6, bridge string
	}{
		{0, 2, "10.20.1.2", "fd00:20:1::2", "10.20.1.1/24", "fd00:20:1::1/64", "br-a"},
		{1, 2, "10.20.2.2", "fd00:20:2::2", "10.20.2.1/24", "fd00:20:2::1/64", "br-b"},
		{2, 7, "10.20.3.7", "fd00:20:3::7", "10.20.3.1/24", "fd00:20:3::1/64", "br-c"},
		{25, 2, "10.20.26.2", "fd00:20:1a::2", "10.20.26.1/24", "fd00:20:1a::1/64", "br-z"},
		{26, 254, "10.20.27.254", "fd00:20:1b::fe", "10.20.27.1/24", "fd00:20:1b::1/64", "br-27"},
		{253, 2, "10.20.254.2", "fd00:20:fe::2", "10.20.254.1/24", "fd00:20:fe::1/64", "br-254"},
	} {
		v4, v6 := SubnetAddr(c.k, c.h)
		gw4, gw6 := SubnetGW(c.k)
		if v4.String() != c.v4 || v6.String() != c.v6 || gw4.String() != c.gw4 || gw6.String() != c.gw6 || SubnetBridge(c.k) != c.bridge {
			t.Errorf("subnet %d host %d: %s %s, gateway %s %s, %s; want %s %s, %s %s, %s",
				c.k, c.h, v4, v6, gw4, gw6, SubnetBridge(c.k), c.v4, c.v6, c.gw4, c.gw6, c.bridge)
		}
		if !RSNet.Contains(v4) || !RSNet6.Contains(v6) {
			t.Errorf("subnet %d: %s or %s outside %s, %s (tapvs's route)", c.k, v4, v6, RSNet, RSNet6)
		}
	}
	if v4, v6 := SubnetAddr(0, 2); v4 != RS1 || v6 != RS1v6 {
		t.Errorf("SubnetAddr(0, 2) = %s %s, not RS1's", v4, v6)
	}
	if v4, v6 := SubnetAddr(1, 2); v4 != RS2 || v6 != RS2v6 {
		t.Errorf("SubnetAddr(1, 2) = %s %s, not RS2's", v4, v6)
	}
	if gw, _ := SubnetGW(0); gw != rs1GW {
		t.Errorf("SubnetGW(0) = %s, not rs1's gateway %s", gw, rs1GW)
	}
	var top Topology
	if err := top.AddSubnet(MaxSubnets); err == nil || !strings.Contains(err.Error(), "subnet 254: 0 to 253") {
		t.Errorf("AddSubnet(%d): %v", MaxSubnets, err)
	}
}
