package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// TestClusterFRRSync: three instances with connection sync (sync:) behind
// FRR. Long uploads through the VIP (each checked by the server's hash of
// what arrived, sent back at its end), spread over all three; once every
// upload on t2 is in both survivors' tables (their shadows), t2 is
// SIGKILLed. Every upload completes intact: t2's, whose client segments
// ECMP moves to a survivor and whose server replies the router sends to
// the survivor backing up t2's LIP (bgp: backup_lips), both continuing
// the connection with t2's LIP:lport and offsets; and the survivors' own,
// those ECMP moved between them included. The survivors drop no server
// segment of a connection for want of state (backup_lip_no_conn does not
// move; the replies to t2's health checks, backup_lip_stack, are logged).
func TestClusterFRRSync(t *testing.T) { syncedKill(t, lab.BulkPort) }

// TestClusterFRRSyncSynproxy is TestClusterFRRSync with the uploads behind
// SYNPROXY: the shadows carry the proxy's sequence and timestamp
// translation.
func TestClusterFRRSyncSynproxy(t *testing.T) { syncedKill(t, lab.ClusterSynproxyBulkPort) }

func syncedKill(t *testing.T, port uint16) {
	c := startClusterWith(t, lab.RouterFRR, 3, func(c *lab.Cluster) { c.Sync, c.FlowPort = true, port })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(ctx, lab.VIP, 1, 2, 3); err != nil {
		t.Fatalf("%v\n%s", err, c.RouterState())
	}
	const victim = 2
	survivors := []int{1, 3}
	before := map[int]uint64{}
	for _, n := range survivors {
		v, err := c.Inst[n-1].Drops("backup_lip_no_conn")
		if err != nil {
			t.Fatal(err)
		}
		before[n] = v
	}
	r, err := c.KillDuringTransfers(ctx, victim, 45)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL of t%d with sync: withdrawn in %v; %s", victim, r.Withdrawn.Round(time.Millisecond), r.Tally)
	for _, e := range r.Errors {
		t.Logf("  broken: %s", e)
	}
	if r.Gone == 0 {
		t.Fatalf("no upload was on t%d: nothing shown", victim)
	}
	if r.GoneBroken+r.MovedBroken+r.StayedBroken != 0 {
		t.Errorf("broken with sync on: %d of t%d's %d, %d of %d moved between survivors, %d of %d that stayed",
			r.GoneBroken, victim, r.Gone, r.MovedBroken, r.Moved, r.StayedBroken, r.Stayed)
	}
	for _, n := range survivors {
		v, err := c.Inst[n-1].Drops("backup_lip_no_conn")
		if err != nil {
			t.Fatal(err)
		}
		if v != before[n] {
			t.Errorf("t%d dropped %d server segments to a backed-up LIP for want of state", n, v-before[n])
		}
		if v, err := c.Inst[n-1].Drops("backup_lip_stack"); err == nil {
			t.Logf("t%d: %d replies to t%d's own stack's connections (health checks) dropped", n, v, victim)
		}
	}
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
