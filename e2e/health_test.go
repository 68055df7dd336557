package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

const checkedServices = `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    local_addresses: [172.25.84.10, 172.25.84.11]
    health_check: {type: http, http_path: /, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}
    real_servers:
      - {address: 10.20.1.2, port: 80, weight: %d}
      - {address: 10.20.2.2, port: 80, weight: %d}%s`

const extraService = `
  - name: web2
    vip: 172.25.254.100
    port: 8081
    scheduler: rr
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80}`

// persistent is a keep-alive client that keeps asking through one
// connection and counts what goes wrong: an error, or a second dial (the
// connection it had was dropped).
type persistent struct {
	hc     *http.Client
	dials  atomic.Int64
	errors atomic.Int64
	reqs   atomic.Int64
	rs     string
}

func newPersistent(e *env) *persistent {
	p := &persistent{}
	p.hc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, n, a string) (net.Conn, error) {
			p.dials.Add(1)
			return lab.Dial(ctx, e.top.Client, n, a)
		}}}
	return p
}

func (p *persistent) ask() (string, error) {
	resp, err := p.hc.Get("http://" + web.String() + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.Fields(string(b) + " ")[0], err
}

func (e *env) weightOf(svc, rs string) (int, bool, string) {
	for _, s := range e.d.Manager.Services() {
		if s.Addr != svc {
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
	return -1, false, "no such server"
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func metric(t *testing.T, body, re string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + re + ` ([0-9.e+]+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no metric matching %s", re)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func TestHealthChecksReloadAndMetrics(t *testing.T) {
	const extra = "metrics: {listen: \"127.0.0.1:0\"}\n"
	e := setup(t, fmt.Sprintf(checkedServices, 1, 1, ""), extra)
	before := scrape(t, e.d.Metrics.Addr())

	// Two persistent clients on rs1, asking every 50ms for the whole test.
	var ps []*persistent
	for tries := 0; len(ps) < 2 && tries < 10; tries++ {
		p := newPersistent(e)
		if rs, err := p.ask(); err == nil && rs == "rs1" {
			p.rs = rs
			ps = append(ps, p)
		} else {
			p.hc.CloseIdleConnections()
		}
	}
	if len(ps) < 2 {
		t.Fatal("could not open two connections to rs1")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				rs, err := p.ask()
				p.reqs.Add(1)
				if err != nil || rs != p.rs {
					p.errors.Add(1)
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// rs2's web server dies: within fall x interval it is quiesced. The
	// checks tick every interval; a probe in flight as the server stops may
	// still pass, then fall failing probes, the last taking up to timeout:
	// fall x interval + timeout from the stop. One interval more is the
	// margin for a slow machine.
	const interval, timeout, fall, rise = 200 * time.Millisecond, 150 * time.Millisecond, 2, 2
	bound := func(n int) time.Duration { return time.Duration(n)*interval + timeout + interval }
	start := time.Now()
	e.rs[1].StopHTTP()
	if !eventually(bound(fall), func() bool { w, up, _ := e.weightOf("172.25.254.100:80", "10.20.2.2:80"); return w == 0 && !up }) {
		w, up, why := e.weightOf("172.25.254.100:80", "10.20.2.2:80")
		t.Fatalf("rs2 not quiesced within %v (fall %d x interval %v + timeout %v + an interval of margin): weight %d up %v (%s)", bound(fall), fall, interval, timeout, w, up, why)
	}
	t.Logf("rs2 quiesced %v after its web server stopped (bound %v)", time.Since(start).Round(10*time.Millisecond), bound(fall))
	ln := rows(e.must("-ln", "-t", "172.25.254.100:80"))
	fields(t, ln[5][:4], "->", "10.20.2.2:80", "FullNat", "0")
	if up := metric(t, scrape(t, e.d.Metrics.Addr()), `tapvs_rs_up\{rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"\}`); up != 0 {
		t.Fatalf("tapvs_rs_up for rs2 = %v while down", up)
	}
	short := lab.HTTPClient(e.top.Client, 5*time.Second)
	for i := range 8 {
		if rs, _ := e.get(short); rs != "rs1" {
			t.Fatalf("new connection %d went to %s while it was down", i, rs)
		}
	}

	// It comes back: restored within rise x interval, with the same margin.
	start = time.Now()
	if err := e.rs[1].StartHTTP(); err != nil {
		t.Fatal(err)
	}
	if !eventually(bound(rise), func() bool { w, up, _ := e.weightOf("172.25.254.100:80", "10.20.2.2:80"); return w == 1 && up }) {
		t.Fatalf("rs2 was not restored within %v", bound(rise))
	}
	t.Logf("rs2 restored %v after its web server started (bound %v)", time.Since(start).Round(10*time.Millisecond), bound(rise))
	seen := map[string]int{}
	for range 6 {
		rs, _ := e.get(short)
		seen[rs]++
	}
	if seen["rs2"] == 0 {
		t.Fatalf("rs2 restored but got no new connection: %v", seen)
	}

	// A reload under load: a new service, a new weight.
	file := filepath.Join(t.TempDir(), "tapvs.yaml")
	write := func(text string) {
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(e.top.Config(fmt.Sprintf(checkedServices, 2, 1, extraService), extra))
	if err := e.d.Reload(file); err != nil {
		t.Fatal(err)
	}
	if w, _, _ := e.weightOf("172.25.254.100:80", "10.20.1.2:80"); w != 2 {
		t.Fatalf("weight after reload %d, want 2", w)
	}
	resp, err := short.Get("http://172.25.254.100:8081/")
	if err != nil {
		t.Fatalf("the reloaded-in service: %v", err)
	}
	resp.Body.Close()

	// A bad file is refused with its field named; nothing changes.
	rules := e.must("-Sn")
	write(strings.Replace(e.top.Config(fmt.Sprintf(checkedServices, 2, 1, extraService), extra), "port: 8081", "port: 70000", 1))
	err = e.d.Reload(file)
	if err == nil || !strings.Contains(err.Error(), "services[1].port: 70000 is not a port") {
		t.Fatalf("bad reload: %v", err)
	}
	if after := e.must("-Sn"); after != rules {
		t.Fatalf("a refused reload changed the rules:\n%s\nwas\n%s", after, rules)
	}
	// Reloading the original takes the extra service away again.
	write(e.top.Config(fmt.Sprintf(checkedServices, 1, 1, ""), extra))
	if err := e.d.Reload(file); err != nil {
		t.Fatal(err)
	}
	if svcs := e.d.Manager.Services(); len(svcs) != 1 {
		t.Fatalf("%d services after reloading the original", len(svcs))
	}

	// A reload while rs2 is down gives it weight 3: it stays out, and its
	// recovery brings it back with 3, not the weight it had when it failed.
	e.rs[1].StopHTTP()
	if !eventually(bound(fall), func() bool { w, up, _ := e.weightOf("172.25.254.100:80", "10.20.2.2:80"); return w == 0 && !up }) {
		t.Fatalf("rs2 not quiesced the second time within %v", bound(fall))
	}
	write(e.top.Config(fmt.Sprintf(checkedServices, 1, 3, ""), extra))
	if err := e.d.Reload(file); err != nil {
		t.Fatal(err)
	}
	if w, up, _ := e.weightOf("172.25.254.100:80", "10.20.2.2:80"); w != 0 || up {
		t.Fatalf("a reload put the failed rs2 back: weight %d up %v", w, up)
	}
	if err := e.rs[1].StartHTTP(); err != nil {
		t.Fatal(err)
	}
	if !eventually(bound(rise), func() bool { w, up, _ := e.weightOf("172.25.254.100:80", "10.20.2.2:80"); return w == 3 && up }) {
		w, up, _ := e.weightOf("172.25.254.100:80", "10.20.2.2:80")
		t.Fatalf("rs2 recovered with weight %d (up %v), want the reloaded 3", w, up)
	}

	// The persistent connections go on through the recovery: each asks
	// at least three more times before they stop.
	var asked [2]int64
	for i, p := range ps {
		asked[i] = p.reqs.Load()
	}
	if !eventually(5*time.Second, func() bool { return ps[0].reqs.Load() >= asked[0]+3 && ps[1].reqs.Load() >= asked[1]+3 }) {
		t.Fatalf("the persistent connections stopped asking: %d and %d requests, were %d and %d", ps[0].reqs.Load(), ps[1].reqs.Load(), asked[0], asked[1])
	}
	close(stop)
	wg.Wait()
	for i, p := range ps {
		if p.errors.Load() != 0 || p.dials.Load() != 1 || p.reqs.Load() < 10 {
			t.Fatalf("persistent connection %d to rs1: %d requests, %d errors, %d dials (1 means never dropped)", i, p.reqs.Load(), p.errors.Load(), p.dials.Load())
		}
		t.Logf("persistent connection %d to rs1: %d requests through two failures, recoveries and 4 reloads, 0 errors, never re-dialed", i, p.reqs.Load())
	}

	after := scrape(t, e.d.Metrics.Addr())
	created0 := metric(t, before, `tapvs_connections_created_total`)
	created1 := metric(t, after, `tapvs_connections_created_total`)
	in0 := metric(t, before, `tapvs_frames_total\{queue="0",result="forwarded",side="client"\}`)
	in1 := metric(t, after, `tapvs_frames_total\{queue="0",result="forwarded",side="client"\}`)
	if created1 <= created0 || in1 <= in0 {
		t.Fatalf("metrics did not move: connections %v -> %v, client frames forwarded %v -> %v", created0, created1, in0, in1)
	}
	for _, name := range []string{"tapvs_rs_packets_total", "tapvs_lip_connections", "tapvs_drops_total", "tapvs_synproxy_syn_cookies_total", "tapvs_connections_max", "tapvs_rs_scheduled_total"} {
		if !strings.Contains(after, name) {
			t.Errorf("metrics lack %s", name)
		}
	}
}
