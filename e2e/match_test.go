package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// Issue 25, match services (what fwmark does on a kernel LVS, without
// kernel marks): a persistent service on mark 1, whose selector in marks:
// is the HTTP port and the bulk port of one VIP, keeps each client on one
// real server across both ports (one template per client), while a
// second client lands on the other server (rr); a port outside the
// selector is no service's; ipvsadm lists it as FWM 1, -S writes -f 1,
// -lnc shows its connections and templates, and the API names it by its
// mark.
func TestMatchService(t *testing.T) {
	vip := netip.MustParseAddr("172.25.254.102")
	svcs := `
  - name: sticky
    fwmark: 1
    scheduler: rr
    persistence_timeout: 600
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2}
      - {address: 10.20.2.2}`
	marks := fmt.Sprintf("marks:\n  - {mark: 1, vip: %s, protocol: tcp, ports: [%d, %d]}\n", vip, lab.HTTPPort, lab.BulkPort)
	e := setup(t, svcs, marks)
	c1, c2 := netip.MustParseAddr("172.25.254.1"), netip.MustParseAddr("172.25.254.2")
	if out, err := exec.Command("ip", "-n", e.top.Client, "addr", "add", c2.String()+"/24", "dev", e.top.TapClient).CombinedOutput(); err != nil {
		t.Fatalf("client address %s: %v: %s", c2, err, out)
	}
	dial := func(src netip.Addr, port uint16) net.Conn {
		t.Helper()
		var c net.Conn
		err := lab.InNetns(e.top.Client, func() (err error) {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 5 * time.Second}
			c, err = d.Dial("tcp4", netip.AddrPortFrom(vip, port).String())
			return err
		})
		if err != nil {
			t.Fatalf("from %v to port %d: %v", src, port, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	get := func(src netip.Addr) string { t.Helper(); return answeredBy(t, e.top.Client, src, vip) }
	// rip is the real server the table holds conn's connection to. The
	// client may have used its port before, toward another of the VIP's
	// ports (an HTTP connection whose entry lingers): the VIP:port
	// tells them apart.
	rip := func(conn net.Conn) netip.AddrPort {
		t.Helper()
		local := netip.MustParseAddrPort(conn.LocalAddr().String())
		remote := netip.MustParseAddrPort(conn.RemoteAddr().String())
		var got netip.AddrPort
		if !eventually(5*time.Second, func() bool {
			for _, c := range e.d.Balancer.Table().Conns() {
				if c.Client == local && c.VIP == remote {
					got = c.RIP
					return true
				}
			}
			return false
		}) {
			t.Fatalf("no connection from %v in the table", local)
		}
		return got
	}

	s1 := get(c1)
	for range 3 {
		if got := get(c1); got != s1 {
			t.Fatalf("HTTP from %v reached %s, then %s", c1, s1, got)
		}
	}
	if got := rip(dial(c1, lab.BulkPort)); got != netip.AddrPortFrom(netip.MustParseAddr(s1), lab.BulkPort) {
		t.Fatalf("%v's bulk connection went to %v, its HTTP to %s:%d: one template must cover both ports", c1, got, s1, lab.HTTPPort)
	}
	s2 := get(c2)
	if s2 == s1 {
		t.Fatalf("clients %v and %v both on %s: rr must give the second the other server", c1, c2, s1)
	}
	if got := rip(dial(c2, lab.BulkPort)); got.Addr().String() != s2 {
		t.Fatalf("%v's bulk connection went to %v, its HTTP to %s", c2, got, s2)
	}
	if got := get(c1); got != s1 {
		t.Fatalf("after %v, %v reached %s, not %s", c2, c1, got, s1)
	}
	if n := e.d.Balancer.Templates(); n != 2 {
		t.Fatalf("templates %d, want one per client for both ports", n)
	}

	// A port outside the selector is no service's: dropped and counted.
	drops := e.d.Balancer.Stats.Drop(nat.DropNoService)
	err := lab.InNetns(e.top.Client, func() error {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(vip, lab.ProxyBulkPort).String())
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatalf("port %d, outside the selector, was answered", lab.ProxyBulkPort)
	}
	if !eventually(5*time.Second, func() bool { return e.d.Balancer.Stats.Drop(nat.DropNoService) > drops }) {
		t.Fatalf("a SYN to port %d was not counted as %v", lab.ProxyBulkPort, nat.DropNoService)
	}

	// ipvsadm: the listing, -S, -lnc's connections and templates.
	if out := e.must("-Ln"); !strings.Contains(out, "FWM  1 rr persistent 600\n") || !strings.Contains(out, "  -> 10.20.1.2:0 ") {
		t.Fatalf("ipvsadm -Ln:\n%s", out)
	}
	if out := e.must("-S", "-n"); !strings.Contains(out, "-A -f 1 -s rr -p 600 -j disable\n") || !strings.Contains(out, "-a -f 1 -r 10.20.2.2:0 -b -w 1\n") ||
		!strings.Contains(out, "-P -f 1 -z 172.25.84.10\n") {
		t.Fatalf("ipvsadm -S -n:\n%s", out)
	}
	lnc := e.must("-Lnc")
	var tmpl []string
	for _, l := range strings.Split(lnc, "\n") {
		if f := strings.Fields(l); len(f) == 7 && f[2] == "NONE" {
			tmpl = append(tmpl, f[3]+" "+f[4]+" "+f[6])
		}
	}
	// A fwmark template's virtual address is its mark (IPVS's
	// ip_vs_sched_persist), not the VIP.
	want := []string{c1.String() + ":0 0.0.0.1:0 " + s1 + ":0", c2.String() + ":0 0.0.0.1:0 " + s2 + ":0"}
	if !slices.Equal(tmpl, want) {
		t.Fatalf("ipvsadm -lnc templates %q, want %q:\n%s", tmpl, want, lnc)
	}
	if !strings.Contains(lnc, netip.AddrPortFrom(vip, lab.BulkPort).String()) {
		t.Fatalf("ipvsadm -lnc shows no connection to port %d:\n%s", lab.BulkPort, lnc)
	}

	// The API: the service by its mark, with its selector.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.top.Socket)
	}}}
	resp, err := hc.Get("http://tapvs/v1/services")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []api.Service
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].FWMark != 1 || list[0].Match == nil || list[0].Match.Ports != fmt.Sprintf("%d,%d", lab.HTTPPort, lab.BulkPort) || list[0].Match.VIP != vip.String() {
		t.Fatalf("GET /v1/services: %+v", list)
	}
	// -E by mark: persistence off (tapvsadm's -E changes what it is
	// given: -p 0), the templates gone.
	e.must("-E", "-f", "1", "-p", "0")
	if out := e.must("-Ln", "-f", "1"); !strings.Contains(out, "FWM  1 rr\n") {
		t.Fatalf("ipvsadm -Ln -f 1 after -E -p 0:\n%s", out)
	}
	if n := e.d.Balancer.Templates(); n != 0 {
		t.Fatalf("templates %d after persistence was turned off", n)
	}

	// A reload: mark 1 loses the bulk port, which a new connection then
	// finds no service on; another reload removes the mark with its
	// service.
	file := filepath.Join(t.TempDir(), "tapvs.yaml")
	reload := func(svcs, extra string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(e.top.Config(svcs, extra)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := e.d.Reload(file); err != nil {
			t.Fatal(err)
		}
	}
	reload(svcs, fmt.Sprintf("marks:\n  - {mark: 1, vip: %s, protocol: tcp, ports: [%d]}\n", vip, lab.HTTPPort))
	if svc, err := e.d.Balancer.MatchService(1); err != nil || svc.Selector().PortsString() != fmt.Sprint(lab.HTTPPort) {
		t.Fatalf("after a reload with port %d only: %v %v", lab.HTTPPort, svc, err)
	}
	drops = e.d.Balancer.Stats.Drop(nat.DropNoService)
	_ = lab.InNetns(e.top.Client, func() error { // the SYN is dropped: the dial fails
		c, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp4", netip.AddrPortFrom(vip, lab.BulkPort).String())
		if err == nil {
			c.Close()
			t.Errorf("port %d answered after the reload took it from the selector", lab.BulkPort)
		}
		return err
	})
	if !eventually(5*time.Second, func() bool { return e.d.Balancer.Stats.Drop(nat.DropNoService) > drops }) {
		t.Fatalf("a SYN to port %d after the reload was not counted as %v", lab.BulkPort, nat.DropNoService)
	}
	get(c1) // port 80 still the service's
	reload(fmt.Sprintf(`
  - vip: %s
    port: %d
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: %d}`, lab.VIP, lab.HTTPPort, lab.HTTPPort), "")
	if _, err := e.d.Balancer.MatchService(1); err == nil {
		t.Fatal("FWM 1 still runs after a reload without it")
	}
	if out := e.must("-Ln"); strings.Contains(out, "FWM") {
		t.Fatalf("ipvsadm -Ln after the reload:\n%s", out)
	}
}

// Issue 25, a selector on a VIP prefix (what iptables -d 172.25.254.104/30
// -j MARK marks for a kernel LVS): tapvs answers ARP for every address of
// the /30, a client reaches two of them and, with persistence, lands on
// one real server for both (one template per client across every VIP and
// port of the selector); a second client lands on the other server; an
// address outside the prefix gets no ARP answer; ipvsadm -lnc lists each
// template as IPVS lists a fwmark template (IP, the mark as the virtual
// address, 0.0.0.1:0), and the API lists the selector with its prefix.
func TestMatchServicePrefix(t *testing.T) {
	prefix := netip.MustParsePrefix("172.25.254.104/30")
	svcs := `
  - name: sticky-prefix
    fwmark: 1
    scheduler: rr
    persistence_timeout: 600
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2}
      - {address: 10.20.2.2}`
	marks := fmt.Sprintf("marks:\n  - {mark: 1, vip: %s, protocol: tcp, ports: [%d, %d]}\n", prefix, lab.HTTPPort, lab.BulkPort)
	e := setup(t, svcs, marks)
	c1, c2 := netip.MustParseAddr("172.25.254.1"), netip.MustParseAddr("172.25.254.2")
	if out, err := exec.Command("ip", "-n", e.top.Client, "addr", "add", c2.String()+"/24", "dev", e.top.TapClient).CombinedOutput(); err != nil {
		t.Fatalf("client address %s: %v: %s", c2, err, out)
	}
	v1, v2 := netip.MustParseAddr("172.25.254.105"), netip.MustParseAddr("172.25.254.106")

	// ARP: the client's kernel learns a MAC for both addresses, tapvs's.
	neigh := func(a netip.Addr) string {
		t.Helper()
		out, err := exec.Command("ip", "-n", e.top.Client, "neigh", "show", a.String(), "dev", e.top.TapClient).CombinedOutput()
		if err != nil {
			t.Fatalf("ip neigh show %v: %v: %s", a, err, out)
		}
		return string(out)
	}
	s1 := answeredBy(t, e.top.Client, c1, v1)
	if got := answeredBy(t, e.top.Client, c1, v2); got != s1 {
		t.Fatalf("%v reached %s through %v and %s through %v: one template must cover every VIP of the prefix", c1, s1, v1, got, v2)
	}
	for _, a := range []netip.Addr{v1, v2} {
		if n := neigh(a); !strings.Contains(n, "lladdr") {
			t.Fatalf("the client has no MAC for %v after reaching it: %q", a, n)
		}
	}
	s2 := answeredBy(t, e.top.Client, c2, v2)
	if s2 == s1 {
		t.Fatalf("clients %v and %v both on %s: rr must give the second the other server", c1, c2, s1)
	}
	if got := answeredBy(t, e.top.Client, c2, netip.MustParseAddr("172.25.254.107")); got != s2 {
		t.Fatalf("%v reached %s, then %s through the prefix's last address", c2, s2, got)
	}
	if n := e.d.Balancer.Templates(); n != 2 {
		t.Fatalf("templates %d, want one per client for every VIP and port", n)
	}

	// An address just past the prefix is nobody's: no ARP answer, no
	// connection.
	outside := netip.MustParseAddr("172.25.254.108")
	err := lab.InNetns(e.top.Client, func() error {
		c, err := (&net.Dialer{Timeout: 2 * time.Second}).Dial("tcp4", netip.AddrPortFrom(outside, lab.HTTPPort).String())
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatalf("%v, outside the prefix, was answered", outside)
	}
	if n := neigh(outside); strings.Contains(n, "lladdr") {
		t.Fatalf("%v, outside the prefix, was answered by ARP: %q", outside, n)
	}

	// ipvsadm -lnc: the templates as IPVS lists fwmark templates.
	lnc := e.must("-Lnc")
	var tmpl []string
	for _, l := range strings.Split(lnc, "\n") {
		if f := strings.Fields(l); len(f) == 7 && f[2] == "NONE" {
			tmpl = append(tmpl, strings.Join([]string{f[0], f[3], f[4], f[6]}, " "))
		}
	}
	want := []string{"IP " + c1.String() + ":0 0.0.0.1:0 " + s1 + ":0", "IP " + c2.String() + ":0 0.0.0.1:0 " + s2 + ":0"}
	if !slices.Equal(tmpl, want) {
		t.Fatalf("ipvsadm -lnc templates %q, want %q:\n%s", tmpl, want, lnc)
	}
	for _, a := range []netip.Addr{v1, v2} {
		if !strings.Contains(lnc, " "+netip.AddrPortFrom(a, lab.HTTPPort).String()+" ") {
			t.Fatalf("ipvsadm -lnc shows no connection to %v:%d:\n%s", a, lab.HTTPPort, lnc)
		}
	}

	// The API: the selector with its prefix.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.top.Socket)
	}}}
	resp, err := hc.Get("http://tapvs/v1/services")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []api.Service
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Match == nil || list[0].Match.VIP != prefix.String() {
		t.Fatalf("GET /v1/services: %+v", list)
	}
}
