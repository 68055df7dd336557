package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// Issue 25, keepalived's virtual_server fwmark N { ... }: a match service
// (mark 1: the VIP's HTTP and bulk ports) whose real servers are on port 0
// (each takes the client's port), with a TCP check on port 80 of their own
// (keepalived's connect_port), a sorry server and quorum scripts. rs1's web
// server stops: its check takes it out (weight 0, down in --health -f 1)
// and every request reaches rs2; it starts again: back at its weight, and
// answering. Both stop: the sorry server is added as the service's only
// server and answers every request, quorum_down ran once with the mark in
// its environment; rs2 back: the sorry server goes, rs2 answers, quorum_up
// ran. A check set at run time with tapvsadm --health -f 1 needs a port
// (refused without one, naming health_check.port); on the bulk port, which
// rs1 still answers on, it puts rs1 back.
func TestMatchServiceHealthAndSorry(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	script := filepath.Join(dir, "quorum.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $TAPVS_STATE $TAPVS_VIP_ADDR:$TAPVS_VIP_PORT fwm $TAPVS_FWMARK\" >> "+runs+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	svcs := fmt.Sprintf(`
  - name: web
    fwmark: 1
    scheduler: rr
    local_addresses: [172.25.84.10]
    sorry_server: '10.20.1.2:8080'
    quorum_up: [%[1]s, quorum_up]
    quorum_down: [%[1]s, quorum_down]
    health_check: {type: tcp, port: %[2]d, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}
    real_servers:
      - {address: 10.20.1.2}
      - {address: 10.20.2.2}`, script, lab.HTTPPort)
	marks := fmt.Sprintf("marks:\n  - {mark: 1, vip: %s, protocol: tcp, ports: [%d, %d]}\n", lab.VIP, lab.HTTPPort, lab.BulkPort)
	e := setup(t, svcs, marks+"metrics: {listen: \"127.0.0.1:0\"}\n")

	// The sorry server: a web server of its own on rs1's host.
	var l net.Listener
	if err := lab.InNetns(e.top.RS[0], func() error {
		var err error
		l, err = net.Listen("tcp4", "10.20.1.2:8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "sorry 10.20.1.2 saw %s\n", r.RemoteAddr)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	const rs1, rs2, sorry = "10.20.1.2:0", "10.20.2.2:0", "10.20.1.2:8080"
	// weight is a server's weight in FWM 1 (-1: not listed) and its
	// check's state.
	weight := func(rs string) (int, bool, string) {
		for _, s := range e.d.Manager.Services() {
			if s.FWMark != 1 {
				continue
			}
			up, why := true, ""
			for _, h := range s.Health {
				if h.Dest == rs {
					up, why = h.Healthy, h.Reason
				}
			}
			for _, d := range s.Dests {
				if d.Addr == rs {
					return d.Weight, up, why
				}
			}
		}
		return -1, false, "not listed"
	}
	waitWeight := func(what, rs string, w int, up bool) {
		t.Helper()
		// fall (or rise) x interval + timeout, and margin (health_test.go).
		if !eventually(10*time.Second, func() bool { got, gotUp, _ := weight(rs); return got == w && gotUp == up }) {
			got, gotUp, why := weight(rs)
			t.Fatalf("%s: %s weight %d, up %v (%s); want %d, %v", what, rs, got, gotUp, why, w, up)
		}
	}
	scriptRuns := func() string {
		b, _ := os.ReadFile(runs)
		return strings.TrimSpace(string(b))
	}
	quorum := func() float64 {
		return metric(t, scrape(t, e.d.Metrics.Addr()), `tapvs_service_quorum_up\{service="web",vip="FWM/1"\}`)
	}
	short := lab.HTTPClient(e.top.Client, 5*time.Second)
	answers := func(what string, want ...string) {
		t.Helper()
		for i := range 4 {
			rs, _ := e.get(short)
			ok := false
			for _, w := range want {
				ok = ok || rs == w
			}
			if !ok {
				t.Fatalf("%s: request %d answered by %s, want %v", what, i, rs, want)
			}
		}
	}

	// The first checks may run before the backends listen (setup starts
	// them after tapvs): both up first, then forget the scripts run so far.
	waitWeight("start", rs1, 1, true)
	waitWeight("start", rs2, 1, true)
	if err := os.Remove(runs); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if w, _, _ := weight(sorry); w != -1 || quorum() != 1 {
		t.Fatalf("before: the sorry server is listed (weight %d) or the quorum is lost", w)
	}

	// rs1 out and back.
	e.rs[0].StopHTTP()
	waitWeight("rs1's web server stopped", rs1, 0, false)
	if _, _, why := weight(rs1); !strings.Contains(why, "tcp connect") {
		t.Fatalf("rs1 down for %q, want its tcp connect's failure", why)
	}
	answers("rs1 out", "rs2")
	if out := e.must("--health", "-f", "1"); !strings.HasPrefix(out, "FWM  1 health file\n") ||
		!strings.Contains(out, "  -> 10.20.1.2:0                  down: tcp connect") || !strings.Contains(out, "  -> 10.20.2.2:0                  up\n") {
		t.Fatalf("tapvsadm --health -f 1:\n%s", out)
	}
	if err := e.rs[0].StartHTTP(); err != nil {
		t.Fatal(err)
	}
	waitWeight("rs1's web server started", rs1, 1, true)
	answers("rs1 back", "rs1", "rs2")
	seen := map[string]bool{}
	for range 4 { // rr: two requests in a row reach both
		rs, _ := e.get(short)
		seen[rs] = true
	}
	if !seen["rs1"] || !seen["rs2"] {
		t.Fatalf("rs1 back: four requests reached only %v", seen)
	}

	// Both out: the sorry server.
	e.rs[0].StopHTTP()
	e.rs[1].StopHTTP()
	waitWeight("both web servers stopped", sorry, 1, true)
	answers("both out", "sorry")
	for _, rs := range []string{rs1, rs2} {
		if w, up, _ := weight(rs); w != 0 || up {
			t.Fatalf("%s weight %d, up %v below quorum", rs, w, up)
		}
	}
	if ln := e.must("-ln", "-f", "1"); !strings.Contains(ln, "-> 10.20.1.2:8080") {
		t.Fatalf("tapvsadm -ln -f 1 does not list the sorry server:\n%s", ln)
	}
	if got := scriptRuns(); got != "quorum_down down 172.25.254.100:0 fwm 1" || quorum() != 0 {
		t.Fatalf("scripts ran %q, quorum gauge %v; want quorum_down once, 0", got, quorum())
	}
	if err := e.rs[1].StartHTTP(); err != nil {
		t.Fatal(err)
	}
	waitWeight("rs2's web server started", sorry, -1, false)
	waitWeight("rs2's web server started", rs2, 1, true)
	answers("rs2 back", "rs2")
	if got := scriptRuns(); got != "quorum_down down 172.25.254.100:0 fwm 1\nquorum_up up 172.25.254.100:0 fwm 1" || quorum() != 1 {
		t.Fatalf("scripts ran %q, quorum gauge %v; want quorum_down then quorum_up, 1", got, quorum())
	}

	// At run time: a check that connects needs a port; on the bulk port
	// (still listening) rs1 is up again.
	if _, errOut, code := e.adm("", "--health", "-f", "1", "--check", "type=tcp,interval=200ms,timeout=150ms"); code == 0 ||
		!strings.Contains(errOut, "health_check.port: is needed: real server 10.20.1.2:0 is on port 0") {
		t.Fatalf("--check without a port: exit %d: %s", code, errOut)
	}
	e.must("--health", "-f", "1", "--check", fmt.Sprintf("type=tcp,port=%d,interval=200ms,timeout=150ms,rise=1,fall=1", lab.BulkPort))
	waitWeight("checked on the bulk port", rs1, 1, true)
	if out := e.must("--health", "-f", "1"); !strings.HasPrefix(out, fmt.Sprintf("FWM  1 health runtime --check type=tcp,port=%d,", lab.BulkPort)) {
		t.Fatalf("tapvsadm --health -f 1 after --check:\n%s", out)
	}
	// (rs1's web server is still stopped: only its check says it is up.)
	if err := e.rs[0].StartHTTP(); err != nil {
		t.Fatal(err)
	}
	answers("rs1's web server started", "rs1", "rs2")
}
