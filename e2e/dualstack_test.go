package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// The lab is dual-stack before tapvs is: every namespace has its IPv6
// addresses at once (no duplicate address detection holds them back), the
// TAPs' kernel ends have theirs, the router forwards IPv6, and the real
// servers' built-in servers (and nginx, for tests that start it) answer on
// their IPv6 addresses, saying whom they saw, as they do on IPv4. The
// client reaches them here over the direct, kernel-routed path (fd00:99::/64
// through the router), which needs nothing of tapvs's IPv6; the captures
// and checksum checks the IPv6 tests use are checked on that path too.
func TestDualStackLab(t *testing.T) {
	need(t)
	needIPv6(t)
	e := setup(t, services("rr", 1, 1), "")
	// Addresses: present, and none tentative or failed DAD.
	for _, c := range []struct {
		ns, dev string
		want    netip.Prefix
	}{
		{e.top.Client, e.top.TapClient, lab.ClientAddr6},
		{e.top.Router, e.top.TapServer, lab.RouterAddr6},
		{e.top.RS[0], "eth0", netip.PrefixFrom(lab.RS1v6, 64)},
		{e.top.RS[1], "eth0", netip.PrefixFrom(lab.RS2v6, 64)},
	} {
		out := mustRun(t, c.ns, "ip", "-6", "addr", "show", "dev", c.dev)
		line := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "inet6 "+c.want.String()+" ") {
				line = l
			}
		}
		if line == "" || strings.Contains(line, "tentative") || strings.Contains(line, "dadfailed") {
			t.Fatalf("%s in %s: no usable %s:\n%s", c.dev, c.ns, c.want, out)
		}
	}
	if got := strings.TrimSpace(mustRun(t, e.top.Router, "sysctl", "-n", "net.ipv6.conf.all.forwarding")); got != "1" {
		t.Fatalf("the router's net.ipv6.conf.all.forwarding is %s", got)
	}
	// The IPv4 service still works in the dual-stack lab.
	if reply, err := lab.UDPEcho(e.ctx(5*time.Second), e.top.Client, netip.AddrPortFrom(lab.VIP, lab.EchoPort), "v4"); err != nil || !strings.HasSuffix(reply, ": v4") {
		t.Fatalf("IPv4 echo through tapvs: %q, %v", reply, err)
	}

	capRS := startCapture(t, e.top.RS[0], "eth0")
	// HTTP over IPv6 to each real server: each names its IPv6 address and
	// the client's address on the direct path.
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	for i, rs := range []netip.Addr{lab.RS1v6, lab.RS2v6} {
		resp, err := hc.Get("http://" + netip.AddrPortFrom(rs, lab.HTTPPort).String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var name, rsAddr, saw string
		fmt.Sscanf(string(body), "%s %s saw %s", &name, &rsAddr, &saw)
		src, err := netip.ParseAddrPort(saw)
		if name != fmt.Sprintf("rs%d", i+1) || rsAddr != rs.String() || err != nil || src.Addr() != netip.MustParseAddr("fd00:99::2") {
			t.Fatalf("GET [%s]:80 answered %q: want rs%d %s saw [fd00:99::2]:port", rs, body, i+1, rs)
		}
	}
	// UDP echo, bulk both ways and ping over IPv6.
	reply, err := lab.UDPEcho(e.ctx(5*time.Second), e.top.Client, netip.AddrPortFrom(lab.RS2v6, lab.EchoPort), "six")
	if err != nil || !strings.HasPrefix(reply, "rs2 saw [fd00:99::2]:") || !strings.HasSuffix(reply, ": six") {
		t.Fatalf("IPv6 echo: %q, %v", reply, err)
	}
	bulk := netip.AddrPortFrom(lab.RS1v6, lab.BulkPort)
	if _, err := lab.Upload(e.ctx(time.Minute), e.top.Client, bulk, 4<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Download(e.ctx(time.Minute), e.top.Client, bulk, 4<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Ping(e.ctx(5*time.Second), e.top.Client, lab.RS1v6); err != nil {
		t.Fatal(err)
	}
	// The PROXY protocol servers, over IPv6, with an IPv6 header.
	c, err := e.dial("tcp", netip.AddrPortFrom(lab.RS1v6, lab.ProxyHTTPPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "PROXY TCP6 fd00:25:254::1 fd00:25:254::100 4242 80\r\nGET / HTTP/1.0\r\n\r\n")
	got, _ := io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(got), "rs1 fd00:20:1::2 saw [fd00:99::2]:") || !strings.Contains(string(got), " told [fd00:25:254::1]:4242") {
		t.Fatalf("PROXY HTTP over IPv6 answered %q", got)
	}

	// What crossed to rs1 is IPv6 (ethertype 0x86DD) between the direct
	// path's client and rs1, every TCP checksum valid or a partial one.
	if !eventually(5*time.Second, func() bool { return tcpFlowsClosed(capRS.packets(), lab.BulkPort) }) {
		t.Fatal("the bulk connections' closes did not reach the capture within 5s")
	}
	capRS.stop()
	ps := capRS.packets()
	for _, f := range flows6(ps, lab.HTTPPort) {
		if !(f[0].Addr() == lab.RS1v6 || f[1].Addr() == lab.RS1v6) {
			t.Fatalf("rs1's capture has %v -> %v", f[0], f[1])
		}
	}
	if len(flows6(ps, lab.BulkPort)) == 0 || len(flows6(ps, lab.HTTPPort)) == 0 {
		t.Fatal("rs1's capture has no IPv6 HTTP or bulk segment")
	}
	partial := checkTCPSums6(t, ps, netip.Addr{}, false)
	t.Logf("rs1: %d IPv6 TCP segments with partial checksums", partial)

	// nginx on an IPv6 address, as startNginx runs it for the tests.
	log := startNginx(t, e.top.RS[1], filepath.Join(t.TempDir(), "nginx"), lab.RS2v6, []int{8090})
	c, err = e.dial("tcp", netip.AddrPortFrom(lab.RS2v6, 8090), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "PROXY TCP6 fd00:25:254::1 fd00:25:254::100 4343 80\r\nGET / HTTP/1.0\r\n\r\n")
	status, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.Contains(status, " 200 ") {
		t.Fatalf("nginx on [%s]:8090 answered %q", lab.RS2v6, status)
	}
	if l := waitLines(t, log, 1, 5*time.Second); l[0] != "8090 fd00:25:254::1:4343 fd00:99::2" {
		t.Fatalf("nginx logged %q", l[0])
	}
}
