package e2e

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// netFaultServices: a checked web service and the UDP echo service.
const netFaultServices = `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    local_addresses: [172.25.84.10]
    health_check: {type: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 2}
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80}
  - name: echo
    vip: 172.25.254.100
    port: 9001
    protocol: udp
    scheduler: rr
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9001}
      - {address: 10.20.2.2, port: 9001}`

// echoes sends n datagrams to the echo service through one socket, in
// bursts of 200, reading the answers of each burst until 50ms pass
// without one (a late answer is counted with the next burst's), then the
// last ones until a second passes without one, and returns how many came
// back.
func (e *env) echoes(n int) int {
	e.t.Helper()
	c, err := e.dial("udp4", netip.AddrPortFrom(lab.VIP, lab.EchoPort), 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	const burst = 200
	got := 0
	buf := make([]byte, 2048)
	read := func(idle time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(idle))
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return false
			}
			e.t.Fatal(err)
		}
		got++
		return true
	}
	for sent := 0; sent < n; {
		b := min(burst, n-sent)
		for i := range b {
			if _, err := fmt.Fprintf(c, "datagram %d", sent+i); err != nil {
				e.t.Fatal(err)
			}
		}
		sent += b
		for got < sent && read(50*time.Millisecond) {
		}
	}
	for got < n && read(time.Second) {
	}
	return got
}

// faultCounts reads one fault's counters from tapvsadm --fault.
func (e *env) faultCounts(target ...string) (seen, dropped, refused int) {
	e.t.Helper()
	out := e.must(append([]string{"--fault"}, target...)...)
	m := regexp.MustCompile(`seen (\d+) dropped (\d+) refused (\d+)\n$`).FindStringSubmatch(out)
	if m == nil {
		e.t.Fatalf("--fault %s: %q", strings.Join(target, " "), out)
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	c, _ := strconv.Atoi(m[3])
	return a, b, c
}

// Faults on real traffic, set and cleared with tapvsadm --fault: random
// loss toward the server within the binomial bound, every Nth answer
// dropped exactly, SYNs refused (connection refused at once) and dropped
// (connect times out), and a blackholed real server that its health check
// takes out, after which no request fails; clearing each restores the
// traffic.
func TestNetworkFaults(t *testing.T) {
	e := setup(t, netFaultServices, "")
	udp := "172.25.254.100:9001"

	// No fault: every datagram is answered, and -ln says nothing of faults.
	if got := e.echoes(500); got != 500 {
		t.Fatalf("no fault: %d of 500 answered", got)
	}
	if out := e.must("-ln"); strings.Contains(out, "Fault") {
		t.Fatalf("-ln without faults:\n%s", out)
	}

	// Random loss toward the servers: 10 000 datagrams at p = 0.2.
	const n, p = 10000, 0.2
	e.must("--fault", "-u", udp, "--with", "direction=to_server,loss=0.2")
	if out := e.must("-ln"); !strings.Contains(out, "Faults in force (1;") || !strings.Contains(out, "--fault -u "+udp+" --with direction=to_server,loss=0.2  runtime") {
		t.Fatalf("-ln with a fault:\n%s", out)
	}
	got := e.echoes(n)
	seen, dropped, _ := e.faultCounts("-u", udp)
	sd := math.Sqrt(n * p * (1 - p))
	t.Logf("loss %.2f: %d of %d answered, the fault saw %d and dropped %d (expected %.0f ± %.0f)", p, got, n, seen, dropped, n*p, sd)
	if seen != n || math.Abs(float64(dropped)-n*p) > 4*sd {
		t.Fatalf("loss: seen %d, dropped %d of %d: outside %.0f ± 4×%.0f", seen, dropped, n, n*p, sd)
	}
	if got > n-dropped || got < n-dropped-n/200 {
		t.Fatalf("loss: %d answered, %d sent, %d dropped by the fault", got, n, dropped)
	}

	// Every 5th answer dropped, toward the client only: exactly 1 in 5.
	e.must("--fault", "-u", udp, "--with", "direction=to_client,every=5")
	if got := e.echoes(1000); got != 800 {
		t.Fatalf("every 5th answer dropped: %d of 1000 answered", got)
	}
	e.must("--fault", "-u", udp, "--off")
	if got := e.echoes(200); got != 200 {
		t.Fatalf("cleared: %d of 200 answered", got)
	}

	// SYNs refused: the connect fails at once, refused; dropped: it times
	// out. Cleared, connections open again.
	dial := func(d time.Duration) (time.Duration, error) {
		start := time.Now()
		c, err := e.dial("tcp4", web, d)
		if err == nil {
			c.Close()
		}
		return time.Since(start), err
	}
	e.must("--fault", "-t", web.String(), "--with", "syn=refuse")
	if took, err := dial(5 * time.Second); !errors.Is(err, syscall.ECONNREFUSED) || took > 2*time.Second {
		t.Fatalf("SYN refused: %v after %v", err, took)
	}
	if _, _, refused := e.faultCounts("-t", web.String()); refused != 1 {
		t.Fatalf("%d SYNs refused, 1 dialled", refused)
	}
	e.must("--fault", "-t", web.String(), "--with", "syn=drop")
	if took, err := dial(time.Second); err == nil || errors.Is(err, syscall.ECONNREFUSED) || took < 900*time.Millisecond {
		t.Fatalf("SYN dropped: %v after %v, want a timeout", err, took)
	}
	if _, dropped, _ := e.faultCounts("-t", web.String()); dropped < 1 {
		t.Fatal("no SYN counted dropped")
	}
	e.must("--fault", "-t", web.String(), "--off")
	if _, err := dial(5 * time.Second); err != nil {
		t.Fatalf("cleared: %v", err)
	}

	// A blackholed real server: its health check fails and takes it out;
	// from then on every request goes to the other server and none fails.
	rs1 := "10.20.1.2:80"
	e.must("--fault", "-r", rs1, "--with", "blackhole=true")
	if !eventually(10*time.Second, func() bool { w, up, _ := e.weightOf(web.String(), rs1); return w == 0 && !up }) {
		w, up, why := e.weightOf(web.String(), rs1)
		t.Fatalf("the blackholed server is not taken out: weight %d, up %v (%s)", w, up, why)
	}
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	for i := range 20 {
		if rs, _ := e.get(hc); rs != "rs2" {
			t.Fatalf("request %d answered by %s with rs1 blackholed", i, rs)
		}
	}
	// Cleared: the check passes again and rs1 is back.
	e.must("--fault", "--off")
	if !eventually(10*time.Second, func() bool { w, up, _ := e.weightOf(web.String(), rs1); return w == 1 && up }) {
		t.Fatal("rs1 not back once the blackhole was cleared")
	}
	if out := e.must("--fault"); out != "" {
		t.Fatalf("--fault after --off: %q", out)
	}
	if n := e.d.Balancer.Stats.Drop(nat.DropFault); n < uint64(dropped) {
		t.Fatalf("drops counted as fault: %d, the loss alone dropped %d", n, dropped)
	}
	seenBoth := map[string]bool{}
	for range 10 {
		rs, _ := e.get(hc)
		seenBoth[rs] = true
	}
	if !seenBoth["rs1"] || !seenBoth["rs2"] {
		t.Fatalf("after clearing, answers from %v", seenBoth)
	}
}
