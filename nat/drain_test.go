package nat

import (
	"net/netip"
	"testing"
)

// Weight 0 drains a real server, whatever the scheduler: no new connection
// goes to it, every new connection is still forwarded (to the other one),
// and the connections it has keep working. With every server drained, a new
// connection finds no server at all.
//
// A drain only proves something if the scheduler would otherwise have
// picked the drained server. So the same traffic (established connections
// from many client addresses, which sh hashes and the lc family weighs) is
// first run on an undrained balancer, where each server must get some of
// it; then, on a fresh balancer that differs only by the drain, the
// drained server must get none.
func TestDrainedServerGetsNoNewConnection(t *testing.T) {
	const clients = 32
	round := func(t *testing.T, r *rig) map[netip.Addr][]flow {
		t.Helper()
		got := map[netip.Addr][]flow{}
		for i := range clients {
			fl := openFlow(t, r.b, clientAddr(i), uint16(20000+i), vip) // every verdict Forward
			got[fl.rip] = append(got[fl.rip], fl)
		}
		return got
	}
	for _, s := range Schedulers {
		t.Run(s, func(t *testing.T) {
			// fo and ovf send everything to the server of highest weight
			// (a tie: the first), up to its weight in active connections
			// with ovf: with both at 100, the first takes all, and the
			// drain that proves something is the first's.
			failover := s == "fo" || s == "ovf"
			rig := func() *rig {
				r := newRig(t, TCP, s, nil)
				if failover {
					r.setWeight(t, rs1, 8080, 100)
					r.setWeight(t, rs2, 8080, 100)
				}
				return r
			}
			// dh hashes the destination, the one VIP: every connection
			// goes to one server, whose drain is the one that proves
			// something.
			oneVIP := s == "dh"
			live := rig()
			open := round(t, live)
			if oneVIP && len(open[rs1])+len(open[rs2]) != clients || oneVIP && len(open[rs1])*len(open[rs2]) != 0 {
				t.Fatalf("dh: %d and %d of %d connections, want all to one server", len(open[rs1]), len(open[rs2]), clients)
			}
			for _, d := range []*Dest{live.d1, live.d2} {
				if len(open[d.Addr]) == 0 && !(failover && d == live.d2) && !oneVIP {
					t.Fatalf("undrained, %v got none of %d connections (%v): draining it would prove nothing", d, clients, open)
				}
			}
			if failover && len(open[rs1]) != clients {
				t.Fatalf("%s, two servers of weight 100: the first got %d of %d connections, want all", s, len(open[rs1]), clients)
			}

			for _, drained := range []netip.Addr{rs1, rs2} {
				r := rig()
				if err := r.b.Update(func(tx *Tx) error { return tx.SetWeight(r.svc, drained, 8080, 0) }); err != nil {
					t.Fatal(err)
				}
				if got := round(t, r); len(got[drained]) != 0 {
					t.Fatalf("drained %v got %d of %d new connections (undrained it got %d)", drained, len(got[drained]), clients, len(open[drained]))
				}
			}

			// Every server drained: nothing new is opened, nothing open is cut.
			for _, d := range []*Dest{live.d1, live.d2} {
				if err := live.b.Update(func(tx *Tx) error { return tx.SetWeight(live.svc, d.Addr, 8080, 0) }); err != nil {
					t.Fatal(err)
				}
			}
			conns, noDest := live.b.Table().Len(), live.b.Stats.Drop(DropNoDest)
			for i := range clients {
				syn := frame(t, pktSpec{src: clientAddr(i), dst: vip, sport: 30000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
				if v := live.b.Process(ClientSide, syn); v != Drop {
					t.Fatalf("every server drained: SYN from %v: verdict %v, want Drop", clientAddr(i), v)
				}
			}
			if got := live.b.Stats.Drop(DropNoDest) - noDest; got != clients || live.b.Table().Len() != conns {
				t.Fatalf("every server drained: %d of %d SYNs counted as %v, table %d -> %d", got, clients, DropNoDest, conns, live.b.Table().Len())
			}
			for _, d := range []*Dest{live.d1, live.d2} {
				for _, fl := range open[d.Addr] {
					fl.exchange(t, live.b)
				}
			}
		})
	}
}
