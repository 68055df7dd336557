package nat

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// setThresholds sets a real server's thresholds of the rig's service, a
// Tx of one change.
func (r *rig) setThresholds(t *testing.T, addr netip.Addr, th Thresholds) {
	t.Helper()
	if err := r.b.Update(func(tx *Tx) error { return tx.SetThresholds(r.svc, addr, 8080, th) }); err != nil {
		t.Fatal(err)
	}
}

// udpAt sends a client datagram from port sport at the table's time now
// and returns its verdict and, forwarded, the real server it went to.
func (r *rig) udpAt(t *testing.T, now time.Duration, sport uint16) (Verdict, netip.Addr) {
	t.Helper()
	r.b.table.now.Store(int64(now))
	f := frame(t, pktSpec{src: client, dst: vip, sport: sport, dport: 80, proto: UDP, payload: []byte("q"), srcMAC: macClient})
	v := r.b.Process(ClientSide, f)
	if v != Forward {
		return v, netip.Addr{}
	}
	return v, addr(decode(t, f).ip.DstIP)
}

// A server is overloaded from the connection that brings its count
// (active + inactive) to the upper threshold, refusing new connections
// while it is, and takes them again once connections taken off bring the
// count below the lower threshold, or with none below 3/4 of the upper
// (IPVS's ip_vs_bind_dest and ip_vs_unbind_dest). Connections are UDP
// entries opened 10 s apart, so that they expire one at a time.
func TestThresholdMarks(t *testing.T) {
	for _, tc := range []struct {
		th Thresholds
		// clear is the highest count at which the flag is off on the way
		// down: below the lower mark, or 3/4 of the upper.
		clear int
	}{
		{Thresholds{Upper: 4, Lower: 2}, 1},
		{Thresholds{Upper: 4}, 2}, // 2*4 < 12; 3*4 is not
		{Thresholds{Upper: 8}, 5}, // 5*4 < 24; 6*4 is not
		{Thresholds{Upper: 8, Lower: 7}, 6},
		{Thresholds{Upper: 3, Lower: 3}, 2},
		{Thresholds{Upper: 1}, 0},
	} {
		t.Run(fmt.Sprintf("x%d_y%d", tc.th.Upper, tc.th.Lower), func(t *testing.T) {
			r := newRig(t, UDP, "rr", nil)
			r.setWeight(t, rs2, 8080, 0) // every connection goes to rs1, or none
			r.setThresholds(t, rs1, tc.th)
			n := int(tc.th.Upper)
			const gap = 10 * time.Second
			for i := range n {
				if v, to := r.udpAt(t, time.Duration(i)*gap, uint16(20000+i)); v != Forward || to != rs1 {
					t.Fatalf("connection %d of %d: %v to %v, want Forward to %v", i+1, n, v, to, rs1)
				}
				if got, want := r.d1.Overloaded(), i+1 >= n; got != want {
					t.Fatalf("%d connections: overloaded %v, want %v", i+1, got, want)
				}
			}
			noDest := r.b.Stats.Drop(DropNoDest)
			if v, _ := r.udpAt(t, time.Duration(n)*gap, 30000); v != Drop || r.b.Stats.Drop(DropNoDest) != noDest+1 {
				t.Fatalf("at the upper threshold: new connection %v, %s %d -> %d; want Drop, counted", v, DropNoDest, noDest, r.b.Stats.Drop(DropNoDest))
			}
			if a, ia, _ := r.d1.Conns(); a+ia != int64(n) {
				t.Fatalf("a refused connection was counted: %d+%d, want %d", a, ia, n)
			}
			// Each connection's deadline is its time plus the UDP
			// timeout: half a gap after it, that one alone has expired.
			udp := DefaultTimeouts().UDP
			for i := range n {
				r.b.table.now.Store(int64(time.Duration(i)*gap + udp + gap/2))
				if got := r.b.Sweep(); got != 1 {
					t.Fatalf("sweep %d: expired %d, want 1", i, got)
				}
				held := n - 1 - i
				if got, want := r.d1.Overloaded(), held > tc.clear; got != want {
					t.Fatalf("down to %d connections: overloaded %v, want %v (clear at %d)", held, got, want, tc.clear)
				}
			}
			if v, to := r.udpAt(t, time.Duration(n)*gap+udp+gap, 30001); v != Forward || to != rs1 {
				t.Fatalf("after the overload: %v to %v, want Forward to %v", v, to, rs1)
			}
		})
	}
}

// A change of the thresholds moves the flag as IPVS's __ip_vs_update_dest
// does: raising the upper threshold, or taking it away, clears it; a
// lower one takes effect at the next connection. Thresholds IPVS refuses
// (a lower above the upper, 0 included) are refused, the server untouched.
func TestThresholdsChange(t *testing.T) {
	r := newRig(t, UDP, "rr", nil)
	r.setWeight(t, rs2, 8080, 0)
	r.setThresholds(t, rs1, Thresholds{Upper: 2, Lower: 1})
	port := uint16(20000)
	open := func(want Verdict) {
		t.Helper()
		port++
		if v, _ := r.udpAt(t, 0, port); v != want {
			t.Fatalf("connection from port %d: %v, want %v", port, v, want)
		}
	}
	open(Forward)
	open(Forward)
	if !r.d1.Overloaded() {
		t.Fatal("2 connections, upper 2: not overloaded")
	}
	r.setThresholds(t, rs1, Thresholds{Upper: 3, Lower: 1})
	if r.d1.Overloaded() {
		t.Fatal("upper raised to 3: still overloaded")
	}
	open(Forward)
	if !r.d1.Overloaded() {
		t.Fatal("3 connections, upper 3: not overloaded")
	}
	r.setThresholds(t, rs1, Thresholds{})
	if r.d1.Overloaded() {
		t.Fatal("thresholds taken away: still overloaded")
	}
	open(Forward)
	r.setThresholds(t, rs1, Thresholds{Upper: 1})
	if r.d1.Overloaded() {
		t.Fatal("upper lowered to 1 under 4 connections: overloaded before the next connection")
	}
	open(Forward)
	if !r.d1.Overloaded() {
		t.Fatal("upper 1, 5 connections: not overloaded after the next")
	}
	open(Drop)
	if got := r.d1.Thresholds(); got != (Thresholds{Upper: 1}) {
		t.Fatalf("thresholds %+v", got)
	}
	// The same upper threshold again is not a raise (IPVS's "u_threshold
	// > dest's"): still overloaded; and it is one change of the
	// transaction, as every change is (the manager publishes on it).
	var n int
	if err := r.b.Update(func(tx *Tx) error {
		err := tx.SetThresholds(r.svc, rs1, 8080, Thresholds{Upper: 1})
		n = tx.Changes()
		return err
	}); err != nil || n != 1 {
		t.Fatalf("the same thresholds set again: %v, %d changes, want 1", err, n)
	}
	if !r.d1.Overloaded() {
		t.Fatal("the same upper threshold set again cleared the overload")
	}

	for _, bad := range []struct {
		th   Thresholds
		want string
	}{
		{Thresholds{Upper: 2, Lower: 3}, "lower threshold 3 above its upper threshold 2"},
		{Thresholds{Lower: 1}, "lower threshold 1 above its upper threshold 0"},
		{Thresholds{Upper: MaxThreshold + 1}, "upper threshold 2147483648, out of range"},
	} {
		err := r.b.Update(func(tx *Tx) error { return tx.SetThresholds(r.svc, rs1, 8080, bad.th) })
		if err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "real server 10.20.1.2:8080") {
			t.Errorf("%+v: %v, want %q", bad.th, err, bad.want)
		}
	}
	if err := r.b.Update(func(tx *Tx) error { return tx.SetThresholds(r.svc, rs1, 9, Thresholds{}) }); err == nil {
		t.Error("thresholds of a server the service lacks: accepted")
	}
	if got := r.d1.Thresholds(); got != (Thresholds{Upper: 1}) || !r.d1.Overloaded() {
		t.Fatalf("after refusals: %+v, overloaded %v", got, r.d1.Overloaded())
	}
}

// Every scheduler passes over an overloaded server. For each, the same
// SYNs (from many client addresses, which sh and mh hash) are first sent
// to a service without thresholds, where the server that gets the most
// must get more than the threshold (else the test proves nothing); then,
// on a fresh service whose only difference is that server's upper
// threshold, it gets exactly the threshold. The others take the rest,
// except where IPVS refuses a connection instead: sh and mh without their
// fallback flag (a client whose slot's server is unavailable) and dh
// (the destination's server).
func TestThresholdsEveryScheduler(t *testing.T) {
	const clients, upper = 32, 2
	type sched struct {
		name  string
		flags SchedFlags
	}
	var cases []sched
	for _, s := range Schedulers {
		cases = append(cases, sched{s, 0})
	}
	cases = append(cases, sched{"sh", SchedFallback}, sched{"mh", SchedFallback})
	for _, sc := range cases {
		name := sc.name
		if sc.flags != 0 {
			name += "-fallback"
		}
		t.Run(name, func(t *testing.T) {
			fresh := func() *rig {
				r := newRig(t, TCP, sc.name, nil)
				if sc.flags != 0 {
					if err := r.b.Update(func(tx *Tx) error { return tx.SetScheduler(r.svc, sc.name, sc.flags) }); err != nil {
						t.Fatal(err)
					}
				}
				return r
			}
			round := func(r *rig) (got map[netip.Addr]int, refused int) {
				got = map[netip.Addr]int{}
				for i := range clients {
					syn := frame(t, pktSpec{src: clientAddr(i), dst: vip, sport: uint16(20000 + i), dport: 80, proto: TCP, syn: true, srcMAC: macClient})
					switch v := r.b.Process(ClientSide, syn); v {
					case Forward:
						got[addr(decode(t, syn).ip.DstIP)]++
					case Drop:
						refused++
					default:
						t.Fatalf("SYN %d: verdict %v", i, v)
					}
				}
				return got, refused
			}
			free, refused := round(fresh())
			if refused != 0 {
				t.Fatalf("without thresholds %d of %d SYNs refused", refused, clients)
			}
			target := rs1
			if free[rs2] > free[rs1] {
				target = rs2
			}
			if free[target] <= upper {
				t.Fatalf("without thresholds the busier server got %d of %d (%v): a threshold of %d would prove nothing", free[target], clients, free, upper)
			}
			r := fresh()
			r.setThresholds(t, target, Thresholds{Upper: upper})
			noDest := r.b.Stats.Drop(DropNoDest)
			got, refused := round(r)
			if got[target] != upper {
				t.Fatalf("%v with upper threshold %d got %d new connections (%d without)", target, upper, got[target], free[target])
			}
			if d := r.svc.Dest(target, 8080); !d.Overloaded() {
				t.Fatalf("%v: not overloaded at its threshold", target)
			}
			if n := r.b.Stats.Drop(DropNoDest) - noDest; n != uint64(refused) {
				t.Fatalf("%d refused, %d counted as %s", refused, n, DropNoDest)
			}
			refuses := sc.flags == 0 && (sc.name == "sh" || sc.name == "mh") || sc.name == "dh"
			switch {
			case refuses && refused != free[target]-upper:
				t.Fatalf("%s: %d refused, want the %d beyond the threshold that hash to %v", name, refused, free[target]-upper, target)
			case !refuses && refused != 0:
				t.Fatalf("%s: %d refused, want each to go to the other server (%v)", name, refused, got)
			}
		})
	}
}

// A persistent service's template keeps sending its client to a server
// overloaded by its thresholds, as IPVS's ip_vs_sched_persist does (its
// ip_vs_check_template looks at the server's availability, not its
// load); a new client network is scheduled past it.
func TestThresholdsPersistentTemplate(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: 600 * time.Second, Mask: 32}, nil)
	first := mustSyn(t, r.b, client, 10000)
	r.setThresholds(t, first, Thresholds{Upper: 1})
	second := mustSyn(t, r.b, client, 10001) // the template's server: now at 2 connections
	d := r.svc.Dest(first, 8080)
	if second != first || !d.Overloaded() {
		t.Fatalf("the template's client went to %v (first %v), overloaded %v", second, first, d.Overloaded())
	}
	if got := mustSyn(t, r.b, client, 10002); got != first {
		t.Fatalf("overloaded, the template's server lost its client to %v", got)
	}
	other := netip.MustParseAddr("172.25.253.77")
	for i := range 4 {
		if got := mustSyn(t, r.b, other, uint16(20000+i)); got == first {
			t.Fatalf("a new client went to the overloaded %v", first)
		}
	}
}
