package e2e

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// A half-open budget of 5 on a service without SYNPROXY: spoofed SYNs that
// never complete take 5 places, the rest are dropped (half_open_limit) and
// never reach a real server; when the 5 expire (syn_recv: 2s), a real
// client connects again.
func TestHalfOpenBudget(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "\ntimeouts:\n  tcp: {syn_recv: 2s}\n")
	e.must("-E", "-t", webAddr, "--half-open", "5")
	web := e.service("web")
	vipMAC := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	myMAC, _ := net.ParseMAC(ifaceMAC(t, e.top.Client, e.top.TapClient))
	frames := spoofed(t, 20, myMAC, vipMAC, func(int) *layers.TCP {
		return &layers.TCP{SYN: true, Seq: rand.Uint32(), Window: 64240}
	})
	before := e.d.Balancer.Stats.Drop(nat.DropHalfOpenLimit)
	if n, err := inject(e.top.Client, e.top.TapClient, frames...); err != nil || n != len(frames) {
		t.Fatalf("injected %d of %d: %v", n, len(frames), err)
	}
	if !eventually(5*time.Second, func() bool { return e.d.Balancer.Stats.Drop(nat.DropHalfOpenLimit)-before == 15 }) {
		t.Fatalf("half_open_limit drops %d, want 15 of 20 SYNs over a budget of 5 (half-open %d)",
			e.d.Balancer.Stats.Drop(nat.DropHalfOpenLimit)-before, web.HalfOpen())
	}
	if h := web.HalfOpen(); h != 5 {
		t.Fatalf("%d half-open, want the budget's 5", h)
	}
	if n := synRecv(t, e.top.RS[0]) + synRecv(t, e.top.RS[1]); n > 5 {
		t.Fatalf("the real servers hold %d half-open connections: more than the budget reached them", n)
	}
	// While the budget is full a real client's SYN is dropped too; once the
	// spoofed entries expire its retransmitted SYN gets through.
	hc := lab.HTTPClient(e.top.Client, 10*time.Second)
	e.get(hc)
	if !eventually(5*time.Second, func() bool { return web.HalfOpen() == 0 }) {
		t.Fatalf("%d half-open after the spoofed ones expired and the client connected", web.HalfOpen())
	}
}

// A per-source limit of 5 new connections a second (a burst of 5): of 20
// connections tried at once from one client, about the burst get through,
// the rest are dropped (src_rate_limit); a second later there is room
// again.
func TestSourceRateLimit(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	e.must("-E", "-t", webAddr, "--source-cps", "5")
	before := e.d.Balancer.Stats.Drop(nat.DropSrcRateLimit)
	dial := func() bool {
		// Shorter than the client's first SYN retransmission (1 s): a
		// dropped SYN fails the dial instead of getting a second chance.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		c, err := lab.Dial(ctx, e.top.Client, "tcp4", webAddr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	start := time.Now()
	ok := 0
	for range 20 {
		if dial() {
			ok++
		}
	}
	elapsed := time.Since(start)
	refill := int(5*elapsed.Seconds()) + 1
	dropped := e.d.Balancer.Stats.Drop(nat.DropSrcRateLimit) - before
	t.Logf("%d of 20 connected in %v; %d dropped as src_rate_limit", ok, elapsed, dropped)
	if ok < 5 || ok > 5+refill {
		t.Fatalf("%d of 20 connected in %v, want the burst of 5 and at most %d refilled", ok, elapsed, refill)
	}
	if int(dropped) < 20-ok {
		t.Fatalf("%d failed connections but %d src_rate_limit drops", 20-ok, dropped)
	}
	if !eventually(3*time.Second, dial) {
		t.Fatal("no connection a second after the burst")
	}
}

// A per-source limit of one connection at once (source_conns 1) counts
// the connections the client holds: requests one after another all go
// through, though each one's entry lingers in TIME_WAIT (7 s) after it
// closes, while a second connection next to an open one is refused
// (src_conn_limit) until the first closes.
func TestSourceConnLimitSequential(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	e.must("-E", "-t", webAddr, "--source-conns", "1")
	// Shorter than TIME_WAIT: a request refused for a lingering entry
	// fails for good, while a SYN overtaking the last request's closing
	// FIN (another queue) still has its 1 s retransmission.
	hc := lab.HTTPClient(e.top.Client, 3*time.Second)
	before := e.d.Balancer.Stats.Drop(nat.DropSrcConnLimit)
	for i := range 5 {
		resp, err := hc.Get("http://" + webAddr + "/")
		if err != nil {
			t.Fatalf("request %d of 5 in a row: %v (src_conn_limit drops %d)", i+1, err, e.d.Balancer.Stats.Drop(nat.DropSrcConnLimit)-before)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i+1, resp.Status)
		}
	}
	if n := len(e.d.Balancer.Table().Conns()); n == 0 {
		t.Fatal("no entries linger: the test did not cross a closed connection's entry")
	}
	// Two at once: the second is refused while the first is held.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	held, err := lab.Dial(ctx, e.top.Client, "tcp4", webAddr)
	if err != nil {
		t.Fatalf("the first of two: %v", err)
	}
	before = e.d.Balancer.Stats.Drop(nat.DropSrcConnLimit)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if c, err := lab.Dial(ctx2, e.top.Client, "tcp4", webAddr); err == nil {
		c.Close()
		t.Fatal("a second connection next to a held one was let in")
	}
	if d := e.d.Balancer.Stats.Drop(nat.DropSrcConnLimit) - before; d == 0 {
		t.Fatal("the second connection failed without a src_conn_limit drop")
	}
	held.Close()
	if !eventually(5*time.Second, func() bool {
		resp, err := hc.Get("http://" + webAddr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}) {
		t.Fatal("no connection after the held one closed")
	}
}
