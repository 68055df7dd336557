package e2e

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/lab"
)

// tapvs run --takeover under load: a second `tapvs run --takeover` with the
// same file takes the TAPs and the connection table from the running one,
// which exits 0. The TAPs are never deleted (nobody addresses them again),
// a long-lived connection carries bytes both ways after it, short
// connections run throughout (none fails), bulk uploads run across it
// (none breaks: each is checked by the server's hash), and new connections
// work after. The gap in service is printed: the longest between two
// successful short connections, and the longest stall in a bulk upload's
// acknowledged bytes.
func TestTakeoverKeepsConnections(t *testing.T) {
	bin, path, top, serverConns := holdLab(t)

	// With no tapvs to take over, --takeover starts as usual.
	p1 := startTapvsProc(t, bin, path, "--takeover")
	if !eventually(10*time.Second, func() bool { return linkIn(top.Client, top.TapClient) && linkIn(top.Router, top.TapServer) }) {
		t.Fatal("tapvs's TAPs did not appear in their namespaces")
	}
	if err := top.AddressTAPs(); err != nil {
		t.Fatal(err)
	}
	hc := lab.HTTPClient(top.Client, time.Second)
	if !eventually(10*time.Second, func() bool { _, err := httpGet(hc, lab.VIP, lab.HTTPPort); return err == nil }) {
		t.Fatal("no HTTP through tapvs after it started")
	}
	if !strings.Contains(p1.out.String(), "no tapvs to take over; starting as usual") {
		t.Errorf("the first tapvs did not say it started as usual:\n%s", p1.out)
	}

	long, err := lab.Dial(context.Background(), top.Client, "tcp4", netip.AddrPortFrom(lab.VIP, holdPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	if err := echo(long, "before\n", 5*time.Second); err != nil {
		t.Fatalf("the long connection before the takeover: %v", err)
	}
	var longServer held
	select {
	case longServer = <-serverConns:
	case <-time.After(5 * time.Second):
		t.Fatal("the real server did not see the long connection")
	}

	// Short connections, one after another, throughout.
	load := startShortLoad(hc, 0)
	defer load.stop()
	if !eventually(10*time.Second, func() bool { return load.okSince(time.Time{}) >= 20 }) {
		t.Fatal("fewer than 20 requests through the first tapvs in 10s")
	}

	// Bulk uploads, hash-checked, through the takeover: each sends
	// for 4 s (16 KiB every 10 ms), so it is mid-transfer when the old
	// tapvs exits.
	fctx, fcancel := context.WithTimeout(context.Background(), takeoverFlows.Duration()+20*time.Second)
	defer fcancel()
	flows, err := lab.StartFlows(fctx, top.Client, netip.AddrPortFrom(lab.VIP, lab.BulkPort), 4, takeoverFlows)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitCarrying(fctx, flows); err != nil {
		t.Fatal(err)
	}
	stalls := sampleStalls(flows, takeoverFlows.Size())

	// A persistent service's client: its template names one server.
	sticky := func() string {
		t.Helper()
		body, err := httpGet(hc, lab.VIP, stickyPort)
		if err != nil {
			t.Fatalf("the persistent service: %v", err)
		}
		name, _, _ := strings.Cut(body, " ")
		return name
	}
	stuck := sticky()
	if again := sticky(); again != stuck {
		t.Fatalf("the persistent service sent the client to %s, then %s", stuck, again)
	}

	started := time.Now()
	p2 := startTapvsProc(t, bin, path, "--takeover")
	select {
	case <-p1.done:
	case <-p2.done:
		t.Fatalf("the new tapvs ended (%v) before the old one", p2.err)
	case <-time.After(20 * time.Second):
		t.Fatal("the old tapvs did not exit within 20s of the takeover")
	}
	exited := time.Now()
	sending := 0
	for _, f := range flows {
		if f.Sending() {
			sending++
		}
	}
	if p1.err != nil {
		t.Errorf("the old tapvs exited with %v, want 0", p1.err)
	}
	if !linkIn(top.Client, top.TapClient) || !linkIn(top.Router, top.TapServer) {
		t.Fatal("the TAPs went with the old tapvs")
	}
	// The new one has the table and serves the control socket.
	if !eventually(10*time.Second, func() bool { _, err := api.Dial(top.Socket).Info(); return err == nil }) {
		t.Fatal("the new tapvs's control socket does not answer")
	}
	if !strings.Contains(p2.out.String(), "connection table taken over") {
		t.Errorf("the new tapvs did not report the table:\n%s", p2.out)
	}

	// The template came over with the table: listed (state NONE, client
	// port 0) before the client opens anything through the new tapvs, and
	// its next connection goes to the same server.
	stuckAt := map[string]string{"rs1": "10.20.1.2:80", "rs2": "10.20.2.2:80"}[stuck]
	var tmpl bool
	if !eventually(5*time.Second, func() bool {
		cs, err := api.Dial(top.Socket).Conns()
		tmpl = false
		for _, c := range err2nil(cs, err) {
			if c.State == "NONE" && c.Virtual == fmt.Sprintf("172.25.254.100:%d", stickyPort) && c.Destination == stuckAt && strings.HasSuffix(c.Source, ":0") {
				tmpl = true
			}
		}
		return tmpl
	}) {
		t.Fatalf("the new tapvs lists no template of the persistent service to %s", stuckAt)
	}
	if got := sticky(); got != stuck {
		t.Fatalf("after the takeover the persistent service sent the client to %s, want its template's %s", got, stuck)
	}

	// The long connection, both ways.
	if err := echo(long, "after\n", 5*time.Second); err != nil {
		t.Fatalf("the long connection after the takeover, client to server and back: %v", err)
	}
	long.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := longServer.c.Write([]byte("from the server\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("from the server\n"))
	if _, err := io.ReadFull(long, buf); err != nil || string(buf) != "from the server\n" {
		t.Fatalf("the long connection after the takeover, server to client: %q, %v", buf, err)
	}
	long.SetReadDeadline(time.Time{})

	// New connections after the old one is gone.
	if !eventually(10*time.Second, func() bool { return load.okSince(exited) >= 20 }) {
		t.Fatal("fewer than 20 new requests through the new tapvs in 10s")
	}
	load.stop()
	broken := 0
	for i, f := range flows {
		if err := f.Wait(); err != nil {
			broken++
			t.Errorf("bulk upload %d (port %d) across the takeover: %v", i+1, f.Port, err)
		}
	}
	stall := stalls()
	t.Logf("takeover: %d bulk uploads of %d KiB, %d still sending when the old tapvs exited: %d broken; the longest stall in one's acknowledged bytes %v",
		len(flows), takeoverFlows.Size()>>10, sending, broken, stall.Round(time.Millisecond))
	if sending == 0 {
		t.Errorf("every bulk upload had ended before the old tapvs exited: none crossed the takeover")
	}
	results := load.snapshot()
	var failed []shortResult
	var gap time.Duration
	var prev time.Time
	for _, r := range results {
		if r.err != nil {
			failed = append(failed, r)
			continue
		}
		if !prev.IsZero() && r.at.After(started) && r.at.Sub(prev) > gap {
			gap = r.at.Sub(prev)
		}
		prev = r.at
	}
	t.Logf("takeover: the old tapvs exited %v after the new one started; %d short connections, %d failed; longest gap between successes after the start %v",
		exited.Sub(started).Round(time.Millisecond), len(results), len(failed), gap.Round(time.Millisecond))
	for i, r := range failed {
		if i < 5 {
			t.Errorf("a short connection failed at +%v: %v", r.at.Sub(started).Round(time.Millisecond), r.err)
		}
	}
	if t.Failed() {
		t.Logf("the new tapvs said:\n%s", p2.out)
	}
	t.Logf("the old tapvs's last lines:\n%s", lastLines(p1.out.String(), 3))
	t.Logf("the new tapvs's takeover lines:\n%s", grepLines(p2.out.String(), "takeover"))
}

// takeoverFlows are the bulk uploads across a takeover: 4 s each, 1.6 MB/s.
var takeoverFlows = lab.FlowShape{Piece: 16 << 10, Pieces: 400, Pace: 10 * time.Millisecond}

// sampleStalls samples every flow's acknowledged bytes (of size each) every
// 2 ms until the returned function is called, which returns the longest
// time one of them went with data unacknowledged and no ack advancing.
// A flow sends a piece every 10 ms, so that is its usual longest.
func sampleStalls(fs []*lab.Flow, size int64) func() time.Duration {
	stop := make(chan struct{})
	done := make(chan time.Duration)
	go func() {
		last := make([]uint64, len(fs))
		since := make([]time.Time, len(fs))
		var longest time.Duration
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- longest
				return
			case now := <-t.C:
				for i, f := range fs {
					a := f.Acked()
					switch {
					case a == 0: // ended: nothing to read
					case a > last[i] || since[i].IsZero():
						last[i], since[i] = a, now
					case a < uint64(size): // unacknowledged data waits
						longest = max(longest, now.Sub(since[i]))
					}
				}
			}
		}
	}()
	return func() time.Duration { close(stop); return <-done }
}

// err2nil is v, or nothing when err is set.
func err2nil[T any](v []T, err error) []T {
	if err != nil {
		return nil
	}
	return v
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
