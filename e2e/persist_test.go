package e2e

import (
	"context"
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

	"github.com/tapvs/tapvs/lab"
)

// Issue 25, persistence as IPVS does it, with real clients: distinct
// source addresses in the client's namespace each stick to one real
// server while rr spreads them; the templates show in ipvsadm -lnc as
// IPVS prints them; -M 255.255.255.0 puts two clients of one /24 on one
// server; a template expires once its connections are gone and its
// client is then scheduled afresh; a port-0 (all ports) persistent
// service sends one client's connections to two ports to one server.
func TestPersistence(t *testing.T) {
	svcs := `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    persistence_timeout: 600
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80}
  - name: all
    vip: 172.25.254.101
    port: 0
    scheduler: rr
    persistence_timeout: 600
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2}
      - {address: 10.20.2.2}`
	e := setup(t, svcs, "timeouts: {tcp: {time_wait: 1s, close: 1s}}\n")
	c1, c2, c3 := netip.MustParseAddr("172.25.254.1"), netip.MustParseAddr("172.25.254.2"), netip.MustParseAddr("172.25.254.3")
	other := netip.MustParseAddr("172.25.253.2") // another /24
	for _, a := range []string{c2.String() + "/24", c3.String() + "/24", other.String() + "/32"} {
		if out, err := exec.Command("ip", "-n", e.top.Client, "addr", "add", a, "dev", e.top.TapClient).CombinedOutput(); err != nil {
			t.Fatalf("client address %s: %v: %s", a, err, out)
		}
	}
	get := func(src, vip netip.Addr) string { t.Helper(); return answeredBy(t, e.top.Client, src, vip) }
	sticks := func(src netip.Addr, n int) string {
		t.Helper()
		first := get(src, lab.VIP)
		for i := 1; i < n; i++ {
			if got := get(src, lab.VIP); got != first {
				t.Fatalf("request %d from %v reached %s, its first %s", i+1, src, got, first)
			}
		}
		return first
	}
	templates := func() []string {
		var out []string
		for _, l := range strings.Split(e.must("-Lnc"), "\n") {
			// pro expire state source virtual local destination
			if f := strings.Fields(l); len(f) == 7 && f[2] == "NONE" {
				if f[5] != "0.0.0.0:0" {
					t.Fatalf("a template leaving from %s, not the unspecified address: %q", f[5], l)
				}
				out = append(out, f[0]+" "+f[3]+" "+f[4]+" "+f[6])
			}
		}
		return out
	}

	// Each client sticks; rr gives the second client the other server.
	s1 := sticks(c1, 6)
	s2 := sticks(c2, 6)
	if s1 == s2 {
		t.Fatalf("clients %v and %v both on %s: rr must spread new clients", c1, c2, s1)
	}
	want := []string{"TCP 172.25.254.1:0 172.25.254.100:80 " + s1 + ":80", "TCP 172.25.254.2:0 172.25.254.100:80 " + s2 + ":80"}
	if got := templates(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("ipvsadm -lnc templates %q, want %q", got, want)
	}
	if out := e.must("-Ln", "-t", "172.25.254.100:80"); !strings.Contains(out, "TCP  172.25.254.100:80 rr persistent 600\n") {
		t.Fatalf("ipvsadm -Ln:\n%s", out)
	}
	if out := e.must("-Ln", "--persistent-conn", "-t", "172.25.254.100:80"); !strings.Contains(out, "PersistConn") ||
		!strings.Contains(out, fmt.Sprintf("  -> %-28s %-9d %-11d", s1+":80", 1, 1)) {
		t.Fatalf("ipvsadm -Ln --persistent-conn:\n%s", out)
	}

	// -M 255.255.255.0: the templates go (their key was the whole
	// address), and the /24's clients share one.
	e.must("-E", "-t", "172.25.254.100:80", "-p", "600", "-M", "255.255.255.0")
	if out := e.must("-Ln", "-t", "172.25.254.100:80"); !strings.Contains(out, "rr persistent 600 mask 255.255.255.0\n") {
		t.Fatalf("ipvsadm -Ln after -M:\n%s", out)
	}
	net24 := sticks(c2, 2)
	for _, c := range []netip.Addr{c1, c3} {
		if got := sticks(c, 3); got != net24 {
			t.Fatalf("%v reached %s, %v of its /24 %s", c, got, c2, net24)
		}
	}
	away := sticks(other, 3)
	if away == net24 {
		t.Fatalf("%v, another /24, on %s too: rr must give it the other server", other, away)
	}
	want = []string{"TCP 172.25.253.0:0 172.25.254.100:80 " + away + ":80", "TCP 172.25.254.0:0 172.25.254.100:80 " + net24 + ":80"}
	if got := templates(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("ipvsadm -lnc templates %q, want %q", got, want)
	}

	// A 1s timeout, which a template takes at its next use (as IPVS's
	// keep the timeout they were given): once their connections are gone
	// the templates expire, and a client is scheduled afresh: rr's next,
	// the server the other /24 had not.
	e.must("-E", "-t", "172.25.254.100:80", "-p", "1")
	if get(c1, lab.VIP) != net24 || get(other, lab.VIP) != away {
		t.Fatal("a new timeout moved a client")
	}
	var left []string
	if !eventually(15*time.Second, func() bool { left = templates(); return len(left) == 0 }) {
		t.Fatalf("templates never expired: %q", left)
	}
	if got := get(other, lab.VIP); got == away {
		t.Fatalf("after expiry %v went back to %s: not rescheduled", other, got)
	}

	// Port 0: HTTP (80) and the bulk port (9000) of the all-ports VIP go
	// to one server, each to its own port.
	all := netip.MustParseAddr("172.25.254.101")
	rs := get(c1, all)
	for range 3 {
		if got := get(c1, all); got != rs {
			t.Fatalf("port 0 service: HTTP reached %s, then %s", rs, got)
		}
	}
	var bc net.Conn
	err := lab.InNetns(e.top.Client, func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(c1, 0)), Timeout: 5 * time.Second}
		bc, err = d.Dial("tcp4", netip.AddrPortFrom(all, lab.BulkPort).String())
		return err
	})
	if err != nil {
		t.Fatalf("port 0 service, port %d: %v", lab.BulkPort, err)
	}
	defer bc.Close()
	local := netip.MustParseAddrPort(bc.LocalAddr().String())
	found := false
	for _, c := range e.d.Balancer.Table().Conns() {
		// The client may have used its port toward the VIP's HTTP port
		// before, whose entry lingers: only the bulk port's is this one.
		if c.Client == local && c.VIP.Port() == lab.BulkPort {
			found = true
			if c.VIP != netip.AddrPortFrom(all, lab.BulkPort) || c.RIP != netip.AddrPortFrom(netip.MustParseAddr(rs), lab.BulkPort) {
				t.Fatalf("port 0 service: the bulk connection %v -> %v went to %v, want %s:%d", c.Client, c.VIP, c.RIP, rs, lab.BulkPort)
			}
		}
	}
	if !found {
		t.Fatalf("no connection from %v in the table", local)
	}
	if got := templates(); !slices.Contains(got, "TCP 172.25.254.1:0 172.25.254.101:0 "+rs+":0") {
		t.Fatalf("ipvsadm -lnc templates %q: no port-0 template of %v", got, c1)
	}
}

// answeredBy makes one HTTP request from src, an address of the client
// namespace ns, to vip's HTTP port, and returns the real server that
// answered (the lab backends' "rsN ADDR:PORT saw ..." reply).
func answeredBy(t *testing.T, ns string, src, vip netip.Addr) string {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = lab.InNetns(ns, func() (err error) {
				d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
	resp, err := hc.Get("http://" + netip.AddrPortFrom(vip, lab.HTTPPort).String() + "/")
	if err != nil {
		t.Fatalf("GET from %v: %v", src, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var rs, addr, saw string
	if _, err := fmt.Sscanf(string(body), "%s %s saw %s", &rs, &addr, &saw); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	return addr
}
