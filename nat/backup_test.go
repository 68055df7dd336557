package nat

import (
	"net/netip"
	"slices"
	"testing"
)

// A backup LIP (another instance's) is answered for on the server side
// while it is set: a server's packet to it that no connection holds is
// dropped and counted, not passed to the stack (whose reset would end the
// connection another instance's state could still continue). Unset, it is
// no address of the balancer's again.
func TestBackupLIPs(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	peer := netip.MustParseAddr("10.0.2.11")
	reply := func() Verdict {
		return r.b.Process(ServerSide, frame(t, pktSpec{src: rs1, dst: peer, sport: 8080, dport: 40000, proto: TCP, ack: true}))
	}
	if v := reply(); v != Pass {
		t.Fatalf("before it is set: %v, want Pass", v)
	}
	_, gen0, _ := r.b.Changes(0)
	r.b.SetBackupLIPs([]netip.Addr{peer, peer})
	if _, lips := r.b.Addresses(); !slices.Equal(lips, []netip.Addr{peer, lip1}) && !slices.Equal(lips, []netip.Addr{lip1, peer}) {
		t.Fatalf("LIPs answered for %v, want %s and %s", lips, lip1, peer)
	}
	if got := r.b.BackupLIPs(); !slices.Equal(got, []netip.Addr{peer}) {
		t.Fatalf("BackupLIPs %v, want [%s]", got, peer)
	}
	if ch, _, ok := r.b.Changes(gen0); !ok || len(ch) != 1 || ch[0].Addr != peer || !ch[0].Added || ch[0].Side != ServerSide {
		t.Fatalf("changes %+v, want %s added on the server side", ch, peer)
	}
	if v := reply(); v != Drop || r.b.Stats.Drop(DropBackupLIP) != 1 {
		t.Fatalf("reply to a backup LIP: %v, %d counted, want Drop and 1", v, r.b.Stats.Drop(DropBackupLIP))
	}
	// To a port outside the balancer's (5000-65535 here): the peer's
	// stack's own connection (a health check), counted apart.
	if v := r.b.Process(ServerSide, frame(t, pktSpec{src: rs1, dst: peer, sport: 8080, dport: 4999, proto: TCP, ack: true})); v != Drop ||
		r.b.Stats.Drop(DropBackupLIPStack) != 1 || r.b.Stats.Drop(DropBackupLIP) != 1 {
		t.Fatalf("a health check's reply to a backup LIP: %v, %d and %d counted", v, r.b.Stats.Drop(DropBackupLIPStack), r.b.Stats.Drop(DropBackupLIP))
	}
	// The same set again publishes nothing.
	_, gen1, _ := r.b.Changes(0)
	r.b.SetBackupLIPs([]netip.Addr{peer})
	if _, gen2, _ := r.b.Changes(0); gen2 != gen1 {
		t.Fatalf("the same backups published generation %d after %d", gen2, gen1)
	}
	r.b.SetBackupLIPs(nil)
	if _, lips := r.b.Addresses(); !slices.Equal(lips, []netip.Addr{lip1}) {
		t.Fatalf("LIPs answered for %v after the backups went, want [%s]", lips, lip1)
	}
	if v := reply(); v != Pass {
		t.Fatalf("after it is unset: %v, want Pass", v)
	}
	// A backup that is also a LIP of a service keeps it answered for
	// when the backup goes.
	r.b.SetBackupLIPs([]netip.Addr{lip1})
	r.b.SetBackupLIPs(nil)
	if _, lips := r.b.Addresses(); !slices.Equal(lips, []netip.Addr{lip1}) {
		t.Fatalf("LIPs %v, want [%s] still", lips, lip1)
	}
}
