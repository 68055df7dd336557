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

// keepalived's sorry_server and quorum scripts, end to end: both real
// servers' web servers stop, their checks fail, and the sorry server (a
// web server of its own on rs1's host, port 8080) answers through the VIP
// as the service's only server, listed by tapvsadm; quorum_down ran once.
// One real server back: the sorry server is gone, the real server answers,
// quorum_up ran once.
func TestKeepalivedSorryServer(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	script := filepath.Join(dir, "quorum.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $TAPVS_STATE $TAPVS_VIP_ADDR:$TAPVS_VIP_PORT\" >> "+runs+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	svcs := fmt.Sprintf(`
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    local_addresses: [172.25.84.10]
    sorry_server: '10.20.1.2:8080'
    quorum_up: [%[1]s, quorum_up]
    quorum_down: [%[1]s, quorum_down]
    health_check: {type: http, http_path: /, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80}`, script)
	e := setup(t, svcs, "metrics: {listen: \"127.0.0.1:0\"}\n")

	// The sorry server: its own web server on rs1's host.
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

	const vip, sorry = "172.25.254.100:80", "10.20.1.2:8080"
	scriptRuns := func() string {
		b, _ := os.ReadFile(runs)
		return strings.TrimSpace(string(b))
	}
	quorum := func() float64 {
		return metric(t, scrape(t, e.d.Metrics.Addr()), `tapvs_service_quorum_up\{service="web",vip="TCP/172.25.254.100:80"\}`)
	}
	// The first checks may run before the backends listen (setup starts
	// them after tapvs): wait for both servers up, then forget the scripts
	// that ran until then.
	if !eventually(10*time.Second, func() bool {
		w1, up1, _ := e.weightOf(vip, "10.20.1.2:80")
		w2, up2, _ := e.weightOf(vip, "10.20.2.2:80")
		return w1 == 1 && up1 && w2 == 1 && up2
	}) {
		t.Fatal("the real servers did not come up")
	}
	if err := os.Remove(runs); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	short := lab.HTTPClient(e.top.Client, 5*time.Second)
	if rs, _ := e.get(short); rs != "rs1" && rs != "rs2" {
		t.Fatalf("before: answered by %s", rs)
	}
	if w, _, _ := e.weightOf(vip, sorry); w != -1 || quorum() != 1 {
		t.Fatalf("before: the sorry server is listed (weight %d) or the quorum is lost", w)
	}

	e.rs[0].StopHTTP()
	e.rs[1].StopHTTP()
	// fall x interval + timeout, and an interval of margin (health_test.go).
	if !eventually(10*time.Second, func() bool { w, _, _ := e.weightOf(vip, sorry); return w == 1 }) {
		t.Fatal("both real servers down: the sorry server was not added")
	}
	for i := range 4 {
		if rs, _ := e.get(short); rs != "sorry" {
			t.Fatalf("request %d with both real servers down answered by %s", i, rs)
		}
	}
	ln := e.must("-ln", "-t", vip)
	if !strings.Contains(ln, "-> 10.20.1.2:8080") {
		t.Fatalf("tapvsadm -ln does not list the sorry server:\n%s", ln)
	}
	for _, rs := range []string{"10.20.1.2:80", "10.20.2.2:80"} {
		if w, _, _ := e.weightOf(vip, rs); w != 0 {
			t.Fatalf("%s weight %d below quorum", rs, w)
		}
	}
	if got := scriptRuns(); got != "quorum_down down 172.25.254.100:80" || quorum() != 0 {
		t.Fatalf("scripts ran %q, quorum gauge %v; want quorum_down once, 0", got, quorum())
	}

	if err := e.rs[1].StartHTTP(); err != nil {
		t.Fatal(err)
	}
	if !eventually(10*time.Second, func() bool { w, _, _ := e.weightOf(vip, sorry); return w == -1 }) {
		t.Fatal("rs2 back: the sorry server was not removed")
	}
	for i := range 4 {
		if rs, _ := e.get(short); rs != "rs2" {
			t.Fatalf("request %d with rs2 back answered by %s", i, rs)
		}
	}
	if got := scriptRuns(); got != "quorum_down down 172.25.254.100:80\nquorum_up up 172.25.254.100:80" || quorum() != 1 {
		t.Fatalf("scripts ran %q, quorum gauge %v; want quorum_down then quorum_up, 1", got, quorum())
	}
}
