package e2e

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// TestClusterFRRGracefulTakeover: one tapvs behind FRR with
// bgp.graceful_restart, restarted with `tapvs run --takeover` while short
// connections run through the VIP. The old process leaves its routes to
// the router (no withdrawal, no notification), FRR keeps them stale, and
// the new process's session (Restart and Forwarding State bits) replaces
// them: the router's FIB never loses the VIP, no connection fails, and
// the router's path ends fresh (not stale). Without graceful restart (the
// baseline, logged) the VIP leaves the FIB until the new session's
// announcement.
func TestClusterFRRGracefulTakeover(t *testing.T) {
	for _, gr := range []bool{true, false} {
		name := map[bool]string{true: "graceful", false: "baseline"}[gr]
		t.Run(name, func(t *testing.T) {
			c := startClusterWith(t, lab.RouterFRR, 1, func(c *lab.Cluster) {
				if gr {
					c.GracefulRestart = 30 * time.Second
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if _, err := c.WaitNextHops(ctx, lab.VIP, 1); err != nil {
				t.Fatalf("%v\n%s", err, c.RouterState())
			}
			fib := watchFIB(c)
			load := startShortLoad(lab.HTTPClient(c.Client, 2*time.Second), 20*time.Millisecond)
			defer load.stop()
			if !eventually(10*time.Second, func() bool { return load.okSince(time.Time{}) >= 20 }) {
				t.Fatal("fewer than 20 requests through the VIP in 10s")
			}
			started := time.Now()
			gone, err := c.Inst[0].Takeover(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The new session's path replaces the old one's (FRR marks a
			// path kept for a restarting peer stale).
			var paths []lab.BGPPath
			fresh := eventually(20*time.Second, func() bool {
				paths, err = c.BGPPaths(lab.VIP)
				return err == nil && len(paths) == 1 && !paths[0].Stale
			})
			freshAfter := time.Since(started)
			if !eventually(10*time.Second, func() bool { return load.okSince(started.Add(freshAfter)) >= 20 }) {
				t.Error("fewer than 20 requests through the VIP after the takeover")
			}
			load.stop()
			missing, longest := fib.stop()
			failed := 0
			for _, r := range load.snapshot() {
				if r.err != nil {
					failed++
				}
			}
			t.Logf("%s: the old tapvs exited %v after the takeover began; the router's path fresh after %v; the VIP missing from the FIB in %d polls (longest %v); %d of %d short connections failed",
				name, gone.Round(time.Millisecond), freshAfter.Round(time.Millisecond), missing, longest.Round(time.Millisecond), failed, len(load.snapshot()))
			if !fresh {
				t.Fatalf("the router's paths to the VIP never became one fresh path: %+v, %v\n%s", paths, err, c.RouterState())
			}
			if !gr {
				if missing == 0 {
					t.Error("without graceful restart the VIP never left the FIB: the baseline shows nothing")
				}
				return
			}
			if missing != 0 {
				t.Errorf("with graceful restart the VIP left the router's FIB (%d polls, longest %v)", missing, longest)
			}
			if failed != 0 {
				t.Errorf("%d short connections failed across a graceful takeover", failed)
			}
		})
	}
}

// fibWatch polls the router's FIB for the VIP every 5 ms.
type fibWatch struct {
	stopOnce func()
	mu       sync.Mutex
	missing  int           // polls that found no route to the VIP
	longest  time.Duration // the longest stretch without one
}

func watchFIB(c *lab.Cluster) *fibWatch {
	w := &fibWatch{}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var since time.Time
		for range 20000 { // 100 s at most
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			hops, err := c.NextHops(lab.VIP)
			w.mu.Lock()
			if err != nil || !slices.Contains(hops, 1) {
				w.missing++
				if since.IsZero() {
					since = time.Now()
				}
				w.longest = max(w.longest, time.Since(since))
			} else {
				since = time.Time{}
			}
			w.mu.Unlock()
		}
	}()
	w.stopOnce = sync.OnceFunc(func() { close(stop); <-done })
	return w
}

func (w *fibWatch) stop() (missing int, longest time.Duration) {
	w.stopOnce()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.missing, w.longest
}
