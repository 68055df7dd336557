package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// TestClusterFRRSync: three instances with connection sync (sync:) behind
// FRR. 300 long uploads through the VIP (each checked by the server's hash
// of what arrived, sent back at its end), spread over all three; once every
// upload carries bytes (the real server acks them), t2 is SIGKILLed,
// mid-transfer and without waiting for sync: how many of t2's uploads the
// survivors held then (their shadows) is logged. At least 99% of t2's
// uploads complete intact (their client segments ECMP moves to a
// survivor, their server replies the router sends to the survivor backing
// up t2's LIP, bgp: backup_lips, both continuing the connection with t2's
// LIP:lport and offsets), and every one of the survivors' own, those ECMP
// moved between them included. When the survivors held every upload of
// t2, they drop no server segment of a connection for want of state
// (backup_lip_no_conn does not move; the replies to t2's health checks,
// backup_lip_stack, are logged).
func TestClusterFRRSync(t *testing.T) { syncedKill(t, lab.BulkPort, 300, lab.LongFlows) }

// TestClusterFRRSyncSynproxy is TestClusterFRRSync with the uploads behind
// SYNPROXY: the shadows carry the proxy's sequence and timestamp
// translation. 45 uploads of 2 s: what it adds is the SYNPROXY record, not
// the scale, which TestClusterFRRSync shows.
func TestClusterFRRSyncSynproxy(t *testing.T) {
	syncedKill(t, lab.ClusterSynproxyBulkPort, 45, lab.ShortFlows)
}

func syncedKill(t *testing.T, port uint16, flows int, shape lab.FlowShape) {
	c := startClusterWith(t, lab.RouterFRR, 3, func(c *lab.Cluster) { c.Sync, c.FlowPort, c.FlowShape = true, port, shape })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(ctx, lab.VIP, 1, 2, 3); err != nil {
		t.Fatalf("%v\n%s", err, c.RouterState())
	}
	// The victim is the first of the router's next hops: ECMP moves some
	// of the survivors' flows between them too.
	victim, survivors := firstHop(t, c)
	before := map[int]uint64{}
	for _, n := range survivors {
		v, err := c.Inst[n-1].Drops("backup_lip_no_conn")
		if err != nil {
			t.Fatal(err)
		}
		before[n] = v
	}
	r, err := c.KillDuringTransfers(ctx, victim, flows)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL of t%d with sync during %d uploads of %v (opened in %v, all carrying bytes, synced %v after that, killed %v after the first), %d still sending: held by the survivors at the kill: %s; withdrawn in %v; %s",
		victim, flows, shape.Duration(), r.Opened.Round(time.Millisecond), r.Synced.Round(time.Millisecond), r.Killed.Round(time.Millisecond), r.Sending,
		heldLine(r, victim, survivors), r.Withdrawn.Round(time.Millisecond), r.Tally)
	if r.Synced < 0 {
		t.Errorf("the survivors did not hold t%d's flows within 500 ms of their carrying bytes (sync lags): %s", victim, heldLine(r, victim, survivors))
	}
	for _, e := range r.Errors {
		t.Logf("  broken: %s", e)
	}
	if r.Gone == 0 {
		t.Fatalf("no upload was on t%d: nothing shown", victim)
	}
	if r.Sending != flows {
		t.Errorf("%d of %d uploads had ended before the kill: not a kill mid-transfer", flows-r.Sending, flows)
	}
	// At least 99% of the victim's: one in a hundred may have been too
	// new for sync to have carried it (its record on the way at the kill).
	if r.GoneBroken*100 > r.Gone {
		t.Errorf("with sync on, %d of t%d's %d uploads broke: more than 1%%", r.GoneBroken, victim, r.Gone)
	}
	if r.MovedBroken+r.StayedBroken != 0 {
		t.Errorf("broken with sync on: %d of %d moved between survivors, %d of %d that stayed",
			r.MovedBroken, r.Moved, r.StayedBroken, r.Stayed)
	}
	all := true
	for _, n := range survivors {
		all = all && r.Held[n] == r.Gone
	}
	for _, n := range survivors {
		v, err := c.Inst[n-1].Drops("backup_lip_no_conn")
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case v != before[n] && all:
			t.Errorf("t%d dropped %d server segments to a backed-up LIP for want of state, though it held every upload of t%d", n, v-before[n], victim)
		case v != before[n]:
			t.Logf("t%d dropped %d server segments to a backed-up LIP for want of state (of uploads sync had not carried at the kill)", n, v-before[n])
		}
		if v, err := c.Inst[n-1].Drops("backup_lip_stack"); err == nil {
			t.Logf("t%d: %d replies to t%d's own stack's connections (health checks) dropped", n, v, victim)
		}
	}
}

// firstHop returns the first of the router's next hops for the VIP, in its
// FIB's order, and the others.
func firstHop(t *testing.T, c *lab.Cluster) (first int, others []int) {
	t.Helper()
	hops, err := c.FIBNextHops(lab.VIP)
	if err != nil || len(hops) < 2 {
		t.Fatalf("the router's next hops for the VIP: %v (%v)", hops, err)
	}
	return hops[0], hops[1:]
}

// heldLine says how many of the victim's flows each survivor held at the
// kill.
func heldLine(r lab.KillResult, victim int, survivors []int) string {
	var b strings.Builder
	for i, n := range survivors {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "t%d %d of t%d's %d", n, r.Held[n], victim, r.Gone)
	}
	return b.String()
}

// TestClusterFRRSyncRejoin: three instances with connection sync behind
// FRR, long uploads (about 6 s, hash-checked) spread over the three. t2
// is SIGKILLed once the survivors hold its uploads, the router withdraws
// it, the survivors continue its uploads; t2 is started again with its
// same configuration and joins: it asks each survivor for a full copy
// (the first ones are lost on purpose, lab's copyBlock, so that its join
// outlasts its BGP session's start) and announces nothing until it holds
// them. It must not be among the VIP's next hops before it logged that
// it joined; once it is, the router moves flows back to it (its own
// earlier uploads, which it continues from the copy, and some of the
// survivors'), and every upload completes intact.
func TestClusterFRRSyncRejoin(t *testing.T) {
	c := startClusterWith(t, lab.RouterFRR, 3, func(c *lab.Cluster) { c.Sync = true })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(ctx, lab.VIP, 1, 2, 3); err != nil {
		t.Fatalf("%v\n%s", err, c.RouterState())
	}
	const victim = 2
	r, err := c.RejoinDuringTransfers(ctx, victim, 45)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL of t%d: withdrawn in %v; started again: joined %v after its start (%d copies asked), among the VIP's next hops %v after it",
		victim, r.Withdrawn.Round(time.Millisecond), r.Joined.Round(time.Millisecond), r.CopiesAsked, r.Announced.Round(time.Millisecond))
	t.Logf("t%d: %s", victim, r.JoinLine)
	t.Logf("%s", r.RejoinTally)
	for _, e := range r.Errors {
		t.Logf("  broken: %s", e)
	}
	if r.Own == 0 || r.Returned == 0 {
		t.Errorf("nothing shown: %d flows of t%d's own, %d moved to it by its return", r.Own, victim, r.Returned)
	}
	if r.OwnBroken+r.ReturnedBroken+r.OtherBroken != 0 {
		t.Errorf("broken across the rejoin: %d of t%d's own %d, %d of the %d its return moved to it, %d of %d others",
			r.OwnBroken, victim, r.Own, r.ReturnedBroken, r.Returned, r.OtherBroken, r.Other)
	}
	if !strings.Contains(r.JoinLine, "holding the table") {
		t.Errorf("t%d did not join with every peer's copy: %s", victim, r.JoinLine)
	}
}
