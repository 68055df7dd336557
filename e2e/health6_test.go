// Health checks over IPv6 (issue #15): go test -run TestIPv6Health ./e2e/

package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
)

// checkedServices6 is web6 with an HTTP health check on its IPv6 real
// servers, as checkedServices is web's.
const checkedServices6 = `
  - name: web6
    vip: fd00:25:254::100
    port: 80
    scheduler: rr
    local_addresses: [fd00:25:84::10, fd00:25:84::11]
    health_check: {type: http, http_path: /, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}
    real_servers:
      - {address: fd00:20:1::2, port: 80}
      - {address: fd00:20:2::2, port: 80}`

// admRow returns the fields of the line of tapvsadm's output whose second
// field is rs (a real server's row: "-> addr forward weight ...").
func admRow(t *testing.T, out, rs string) []string {
	t.Helper()
	for _, r := range rows(out) {
		if len(r) >= 4 && r[0] == "->" && r[1] == rs {
			return r
		}
	}
	t.Fatalf("no row for %s in:\n%s", rs, out)
	return nil
}

// An HTTP health check on IPv6 real servers. rs2's web server stops (on
// both its addresses: lab.Backend.StopHTTP closes every listener): within
// fall x interval + timeout (and an interval of margin) the checker,
// probing [fd00:20:2::2]:80, marks it down and quiesces it (weight 0, in
// the daemon and in tapvsadm -ln), and every new request goes to rs1. It
// starts again: within rise x interval (and the margin) it is up with its
// weight back, and new requests reach it again. On rs2's link the SYNs
// to port 80 are all IPv6: the checker probes the IPv6 address.
func TestIPv6HealthQuiesceAndRestore(t *testing.T) {
	e := setup6(t, checkedServices6, "")
	const interval, timeout, fall, rise = 200 * time.Millisecond, 150 * time.Millisecond, 2, 2
	bound := func(n int) time.Duration { return time.Duration(n)*interval + timeout + interval }
	svc := web6.String()
	rs1, rs2 := fmt.Sprintf("[%s]:80", lab.RS1v6), fmt.Sprintf("[%s]:80", lab.RS2v6)
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	capRS2 := startCapture(t, e.top.RS[1], "eth0")

	// Both up (the first checks pass within rise x interval): rr over both.
	if !eventually(bound(rise), func() bool {
		w1, up1, _ := e.weightOf(svc, rs1)
		w2, up2, _ := e.weightOf(svc, rs2)
		return w1 == 1 && up1 && w2 == 1 && up2
	}) {
		w, up, why := e.weightOf(svc, rs2)
		t.Fatalf("the IPv6 real servers are not both up with weight 1: rs2 weight %d up %v (%s)", w, up, why)
	}
	seen := map[string]int{}
	for range 4 {
		rs, _, _ := e.get6(hc)
		seen[rs]++
	}
	if seen["rs1"] != 2 || seen["rs2"] != 2 {
		t.Fatalf("rr over two healthy servers: %v", seen)
	}

	start := time.Now()
	e.rs[1].StopHTTP()
	if !eventually(bound(fall), func() bool { w, up, _ := e.weightOf(svc, rs2); return w == 0 && !up }) {
		w, up, why := e.weightOf(svc, rs2)
		t.Fatalf("rs2 not quiesced within %v: weight %d up %v (%s)", bound(fall), w, up, why)
	}
	t.Logf("rs2 quiesced %v after its web server stopped (bound %v)", time.Since(start).Round(10*time.Millisecond), bound(fall))
	if w, up, why := e.weightOf(svc, rs1); w != 1 || !up {
		t.Fatalf("rs1, still serving, has weight %d up %v (%s)", w, up, why)
	}
	ln := e.must("-ln", "-t", svc)
	if r := admRow(t, ln, rs2); r[3] != "0" {
		t.Fatalf("tapvsadm -ln shows rs2 with weight %s while down:\n%s", r[3], ln)
	}
	if r := admRow(t, ln, rs1); r[3] != "1" {
		t.Fatalf("tapvsadm -ln shows rs1 with weight %s:\n%s", r[3], ln)
	}
	before := e.rs[0].Requests.Load()
	for i := range 8 {
		if rs, _, _ := e.get6(hc); rs != "rs1" {
			t.Fatalf("new connection %d went to %s while it was down", i, rs)
		}
	}
	if got := e.rs[0].Requests.Load() - before; got != 8 {
		t.Fatalf("rs1 served %d of the 8 requests while rs2 was down", got)
	}

	start = time.Now()
	if err := e.rs[1].StartHTTP(); err != nil {
		t.Fatal(err)
	}
	if !eventually(bound(rise), func() bool { w, up, _ := e.weightOf(svc, rs2); return w == 1 && up }) {
		w, up, why := e.weightOf(svc, rs2)
		t.Fatalf("rs2 not restored within %v: weight %d up %v (%s)", bound(rise), w, up, why)
	}
	t.Logf("rs2 restored %v after its web server started (bound %v)", time.Since(start).Round(10*time.Millisecond), bound(rise))
	if r := admRow(t, e.must("-ln", "-t", svc), rs2); r[3] != "1" {
		t.Fatalf("tapvsadm -ln shows the restored rs2 with weight %s", r[3])
	}
	seen = map[string]int{}
	for range 6 {
		rs, _, _ := e.get6(hc)
		seen[rs]++
	}
	if seen["rs2"] == 0 || seen["rs1"] == 0 {
		t.Fatalf("after rs2's restore, new connections went to %v; want both", seen)
	}
	// The checker probed rs2 over IPv6: its SYNs to [RS2v6]:80, and no
	// IPv4 one to RS2:80 (there is no IPv4 service), are on rs2's link.
	capRS2.stop()
	var syn6, syn4 int
	for _, p := range tcpPort(capRS2.packets(), lab.HTTPPort) {
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !tcp.SYN || tcp.ACK {
			continue
		}
		if ip := ip6Of(p); ip != nil && addr(ip.DstIP) == lab.RS2v6 {
			syn6++
		} else if ip4Of(p) != nil {
			syn4++
		}
	}
	if syn6 < 3 || syn4 != 0 {
		t.Fatalf("on rs2's link: %d SYNs to [%v]:80, %d IPv4 SYNs to port 80; want the checker's (and the requests') over IPv6 only", syn6, lab.RS2v6, syn4)
	}
}
