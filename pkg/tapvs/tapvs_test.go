package tapvs_test

import (
	"context"
	"io"
	"net/netip"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// eventually waits, 5s at most, for cond to hold.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("5s and still not: %s", what)
		}
		<-tick.C
	}
}

// answer asks the lab's HTTP service once and returns the answering server's name.
func answer(t *testing.T, l *tapvstest.Lab, url string) string {
	t.Helper()
	resp, err := l.HTTPClient().Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))[0]
}

func TestConnectionsAndCounters(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A connection held open is in the table until it closes.
	c, err := l.Dial(ctx, "tcp4", l.Service.VIP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := netip.MustParseAddrPort(c.LocalAddr().String())
	var got tapvs.Conn
	// Listed once tapvs has seen the client's handshake ACK: Dial returns
	// when the client sends it, which may be before tapvs has read it (the
	// entry is then SYN_RECV, as CI saw once).
	eventually(t, "the connection is listed ESTABLISHED", func() bool {
		for _, cn := range l.LB.Connections() {
			if cn.Client == client {
				got = cn
				return cn.State == "ESTABLISHED"
			}
		}
		return false
	})
	if got.Protocol != tapvs.TCP || got.VIP != l.Service.VIP || got.State != "ESTABLISHED" || got.Expires <= 0 || got.Expires > l.LB.Timeouts().TCP {
		t.Errorf("connection %+v: want TCP ESTABLISHED to %s", got, l.Service.VIP)
	}
	if got.Local.Addr() != l.LocalAddrs[0] && got.Local.Addr() != l.LocalAddrs[1] {
		t.Errorf("connection from local address %s, not one of %v", got.Local, l.LocalAddrs)
	}
	if got.Real.Addr() != l.RealServers[0].Addr && got.Real.Addr() != l.RealServers[1].Addr {
		t.Errorf("connection to %s, not a real server", got.Real)
	}
	if n := l.LB.Counters(); n.ConnsCreated < 1 || n.Conns < 1 {
		t.Errorf("counters %+v after a connection", n)
	}
	var conns uint64
	for _, rs := range l.LB.RealServers() {
		if rs.Service != l.Service || rs.Weight != 1 {
			t.Errorf("real server %+v: want weight 1 in %s", rs, l.Service)
		}
		conns += rs.Conns
	}
	if conns != 1 {
		t.Errorf("the real servers counted %d connections, want 1", conns)
	}
}

func TestChangeServices(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	rs1 := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
	if err := l.LB.RemoveRealServer(l.Service, rs1); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := answer(t, l, l.URL()); got != "rs2" {
			t.Errorf("rs1 removed, yet %s answered", got)
		}
	}
	if err := l.LB.RemoveRealServer(l.Service, rs1); err == nil {
		t.Error("removing a real server twice: no error")
	}
	if err := l.LB.AddRealServer(l.Service, tapvs.RealServer{Addr: rs1, Weight: 1, UThreshold: 100, LThreshold: 50}); err != nil {
		t.Fatal(err)
	}
	for _, rs := range l.LB.RealServers() {
		if rs.Addr == rs1 && (rs.UThreshold != 100 || rs.LThreshold != 50 || rs.Overloaded) {
			t.Errorf("rs1 added with thresholds 100 and 50: listed %+v", rs)
		}
	}
	// IPVS's rule: the lower threshold is not above the upper.
	bad := tapvs.RealServer{Addr: netip.AddrPortFrom(rs1.Addr(), 8081), LThreshold: 1}
	if err := l.LB.AddRealServer(l.Service, bad); err == nil || !strings.Contains(err.Error(), "lower threshold 1 above its upper threshold 0") {
		t.Errorf("thresholds 0 and 1: %v", err)
	}
	seen := map[string]bool{}
	for range 4 {
		seen[answer(t, l, l.URL())] = true
	}
	if !seen["rs1"] || !seen["rs2"] {
		t.Errorf("rs1 added back, four requests reached %v", seen)
	}

	// A second service on another port, added whole, then removed.
	k := tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.AddrPortFrom(l.VIP, 8000)}
	svc := tapvs.Service{ServiceKey: k, Name: "second", Scheduler: "rr", LocalAddrs: l.LocalAddrs[1:],
		RealServers: []tapvs.RealServer{{Addr: rs1}}}
	if err := l.LB.AddService(svc); err != nil {
		t.Fatal(err)
	}
	if err := l.LB.AddService(svc); err == nil {
		t.Error("adding a service twice: no error")
	}
	// Scheduler flags are the scheduler's: rr takes none.
	flagged := svc
	flagged.VIP = netip.AddrPortFrom(l.VIP, 8001)
	flagged.SchedFlags = []string{"sh-port"}
	if err := l.LB.AddService(flagged); err == nil || !strings.Contains(err.Error(), `"sh-port" is not a flag of scheduler rr`) {
		t.Errorf("rr with sh-port: %v", err)
	}
	flagged.Scheduler = "sh"
	if err := l.LB.AddService(flagged); err != nil {
		t.Errorf("sh with sh-port: %v", err)
	} else if err := l.LB.RemoveService(flagged.ServiceKey); err != nil {
		t.Error(err)
	}
	url := "http://" + k.VIP.String()
	if got := answer(t, l, url); got != "rs1" {
		t.Errorf("the second service's one server is rs1; %s answered", got)
	}
	if err := l.LB.RemoveService(k); err != nil {
		t.Fatal(err)
	}
	for _, rs := range l.LB.RealServers() {
		if rs.Service == k {
			t.Errorf("the second service is removed, yet listed: %+v", rs)
		}
	}
	// Nothing answers for it: a connection is not made (the bound is how
	// long a made one would take, many times over).
	dctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if c, err := l.Dial(dctx, "tcp4", k.VIP.String()); err == nil {
		c.Close()
		t.Error("the second service is removed, yet a connection through it was made")
	}
	if err := l.LB.RemoveService(k); err == nil {
		t.Error("removing a service twice: no error")
	}
}

// A health check set through the Go API takes failing servers out and,
// cleared, puts them back; a bad field is refused by its name.
func TestHealthCheck(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	weights := func() (w []int) {
		for _, rs := range l.LB.RealServers() {
			if rs.Service == l.Service {
				w = append(w, rs.Weight)
			}
		}
		return w
	}
	// The file's refusals, each naming HealthCheck's field.
	err := l.LB.SetHealthCheck(l.Service, tapvs.HealthCheck{Type: "http", Path: "healthz"})
	if err == nil || !strings.HasPrefix(err.Error(), "tapvs: health check of "+l.Service.String()+": HealthCheck.Path: ") {
		t.Fatalf("a path without its /: %v", err)
	}
	err = l.LB.SetHealthCheck(l.Service, tapvs.HealthCheck{Interval: time.Millisecond, OnFailure: "drop"})
	if err == nil || !strings.Contains(err.Error(), "HealthCheck.Interval: \"1ms\" is not a duration from 10ms to 1h") ||
		!strings.Contains(err.Error(), `HealthCheck.OnFailure: "drop" is not quiesce or remove`) {
		t.Fatalf("interval 1ms and on_failure drop: %v", err)
	}
	if h, err := l.LB.HealthStatus(l.Service); err != nil || h.Check != nil || len(h.Servers) != 0 {
		t.Errorf("no check yet: %+v, %v", h, err)
	}
	// Nothing listens on port 9 of the real servers: every probe fails.
	hc := tapvs.HealthCheck{Type: "tcp", Port: 9, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1}
	if err := l.LB.SetHealthCheck(l.Service, hc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both servers quiesced", func() bool { w := weights(); return len(w) == 2 && w[0] == 0 && w[1] == 0 })
	h, err := l.LB.HealthStatus(l.Service)
	if err != nil || h.Check == nil || !reflect.DeepEqual(*h.Check, hc) || len(h.Servers) != 2 || h.Servers[0].Healthy || h.Servers[0].Reason == "" {
		t.Errorf("both servers failing port 9: %+v (check %+v), %v", h, h.Check, err)
	}
	if err := l.LB.ClearHealthCheck(l.Service); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both servers back", func() bool { w := weights(); return len(w) == 2 && w[0] == 1 && w[1] == 1 })
	if h, err := l.LB.HealthStatus(l.Service); err != nil || h.Check != nil {
		t.Errorf("the check cleared: %+v, %v", h, err)
	}
	if got := answer(t, l, l.URL()); got != "rs1" && got != "rs2" {
		t.Fatalf("after the check was cleared, %q answered", got)
	}
	if err := l.LB.ClearHealthCheck(tapvs.ServiceKey{VIP: netip.AddrPortFrom(l.VIP, 1)}); err == nil {
		t.Error("clearing the check of a service that does not exist: no error")
	}
}

// A refused configuration starts nothing: no TAP is left behind.
func TestStartRefused(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{NoService: true})
	for name, cfg := range map[string]tapvs.Config{
		"no address": {Client: tapvs.Side{TAP: "tvbadc", Netns: l.Client}, Server: tapvs.Side{TAP: "tvbads", Netns: l.Router}},
		"address outside": {
			Client: tapvs.Side{TAP: "tvbadc", Netns: l.Client, Addr: netip.MustParsePrefix("172.25.254.254/24")},
			Server: tapvs.Side{TAP: "tvbads", Netns: l.Router, Addr: netip.MustParsePrefix("172.25.84.4/24")},
			Services: []tapvs.Service{{ServiceKey: tapvs.ServiceKey{VIP: netip.MustParseAddrPort("172.25.254.100:81")},
				LocalAddrs: []netip.Addr{netip.MustParseAddr("192.168.9.9")}}},
		},
		"no local address": {
			Client: tapvs.Side{TAP: "tvbadc", Netns: l.Client, Addr: netip.MustParsePrefix("172.25.254.254/24")},
			Server: tapvs.Side{TAP: "tvbads", Netns: l.Router, Addr: netip.MustParsePrefix("172.25.84.4/24")},
			Services: []tapvs.Service{{ServiceKey: tapvs.ServiceKey{VIP: netip.MustParseAddrPort("172.25.254.100:81")},
				RealServers: []tapvs.RealServer{{Addr: netip.MustParseAddrPort("10.20.1.2:80")}}}},
		},
		"bad protocol": {
			Client: tapvs.Side{TAP: "tvbadc", Netns: l.Client, Addr: netip.MustParsePrefix("172.25.254.254/24")},
			Server: tapvs.Side{TAP: "tvbads", Netns: l.Router, Addr: netip.MustParsePrefix("172.25.84.4/24")},
			Services: []tapvs.Service{{ServiceKey: tapvs.ServiceKey{Protocol: "sctp", VIP: netip.MustParseAddrPort("172.25.254.100:81")},
				LocalAddrs: []netip.Addr{netip.MustParseAddr("172.25.84.20")}}},
		},
		// Issue 21: the bgp: section is the file's, checked as the file's.
		"bgp without a peer": {
			Client: tapvs.Side{TAP: "tvbadc", Netns: l.Client, Addr: netip.MustParsePrefix("172.25.254.254/24")},
			Server: tapvs.Side{TAP: "tvbads", Netns: l.Router, Addr: netip.MustParsePrefix("172.25.84.4/24")},
			BGP:    &tapvs.BGP{ASN: 65001, RouterID: netip.MustParseAddr("10.9.9.9")},
		},
	} {
		lb, err := tapvs.Start(context.Background(), cfg)
		if err == nil {
			lb.Close()
			t.Errorf("%s: started", name)
			continue
		}
		t.Logf("%s: %v", name, err)
		if name == "bgp without a peer" && !strings.Contains(err.Error(), "bgp.peers") {
			t.Errorf("%s: %v, want bgp.peers named", name, err)
		}
		for _, ns := range []string{"", l.Client, l.Router} {
			args := []string{"-o", "link"}
			if ns != "" {
				args = append([]string{"-n", ns}, args...)
			}
			out, err := exec.Command("ip", args...).Output()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), "tvbad") {
				t.Errorf("%s: a TAP is left in namespace %q: %s", name, ns, out)
			}
		}
	}
}

// Close removes tapvs's TAPs at once, and a second Close is harmless.
func TestClose(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	links := func() string {
		out, err := exec.Command("ip", "-n", l.Client, "-o", "link").Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	tap := strings.TrimSuffix(l.Client, "-client") + "c"
	if !strings.Contains(links(), tap) {
		t.Fatalf("no TAP %s in the client's namespace while tapvs runs", tap)
	}
	if err := l.LB.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(links(), tap) {
		t.Errorf("TAP %s is left after Close", tap)
	}
	if err := l.LB.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}
