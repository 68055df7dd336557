package bgp

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapvs/tapvs/bgp/bgptest"
)

// With graceful restart (a takeover): Leave hands the routes to a
// successor. The router (a helper, as FRR and BIRD are by default) keeps
// them, stale, while no session is up; the successor's session (Restarting)
// replaces them without either ever leaving the router's table, and what
// the successor does not announce is gone after its End-of-RIB. The
// successor's Close still withdraws at once (a Cease).
func TestLeaveKeepsRoutesForASuccessor(t *testing.T) {
	r := bgptest.StartHelper(t, 65001)
	cfg := speakerConfig(r)
	cfg.GracefulRestart = 30 * time.Second
	old := announced(t, cfg, vip, lip)
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self, lip: self})
	// Offered: 30 s, not restarting, no forwarding state kept.
	if gr := r.RemoteGR(t); gr == nil || gr.Time != 30 || gr.Flags&restartState != 0 || len(gr.Tuples) == 0 || gr.Tuples[0].Flags&forwardingState != 0 {
		t.Fatalf("the first speaker's graceful restart capability %v: want 30 s, neither bit", gr)
	}
	old.Leave()
	waitFor(t, "the session to end", func() bool { return !r.Established(t) })
	if got := r.Learned(t); got[vip] != self || got[lip] != self {
		t.Fatalf("the router holds %v after Leave, want both routes kept", got)
	}

	// The VIP must never leave the router's table across the restart.
	var missing atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if _, ok := r.Learned(t)[vip]; !ok {
				missing.Add(1)
			}
		}
	}()
	cfg.Restarting = true
	succ := announced(t, cfg, vip)
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self}) // the LIP: stale, not announced again, gone
	close(stop)
	<-done
	if n := missing.Load(); n != 0 {
		t.Fatalf("the VIP was missing from the router's table in %d polls during the restart", n)
	}
	if !r.Established(t) {
		t.Fatal("the successor's session is not up")
	}
	// The successor said it restarts, its forwarding state kept: a router
	// that follows RFC 4724 (FRR) keeps the stale routes until its
	// End-of-RIB rather than dropping them at its OPEN.
	if gr := r.RemoteGR(t); gr == nil || gr.Flags&restartState == 0 || len(gr.Tuples) == 0 || gr.Tuples[0].Flags&forwardingState == 0 {
		t.Fatalf("the successor's graceful restart capability %v: want the Restart State and Forwarding State bits", gr)
	}
	succ.Close()
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{})
}

// RFC 4724's bits as GoBGP's API reports them: the capability's Restart
// State (its flags' high nibble) and a family's Forwarding State.
const (
	restartState    = 0x08
	forwardingState = 0x80
)

// Without graceful restart Leave is Close: everything is withdrawn.
func TestLeaveWithoutGracefulRestartWithdraws(t *testing.T) {
	r := bgptest.StartHelper(t, 65001)
	s := announced(t, speakerConfig(r), vip)
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self})
	s.Leave()
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{})
	if err := s.Announce(Own(vip)); err != ErrClosed {
		t.Fatalf("Announce after Leave: %v, want ErrClosed", err)
	}
}

// waitFor checks cond every 10 ms until it holds, failing the test after
// 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
