package nat

import (
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/wire"
)

// schedDests makes real servers 10.0.0.1, 10.0.0.2, ... in the order given,
// each {weight, active, inactive}.
func schedDests(specs ...[3]int64) []*Dest {
	ds := make([]*Dest, len(specs))
	for i, s := range specs {
		d := &Dest{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), Port: 80}
		d.weight.Store(int32(s[0]))
		d.active.Store(s[1])
		d.inactive.Store(s[2])
		ds[i] = d
	}
	return ds
}

// pickIndex is the index of the server sched picks among dests, -1 for none.
func pickIndex(t *testing.T, sched string, dests []*Dest) int {
	t.Helper()
	d := newScheduler(sched, 0, dests).pick(&tupleKey{})
	for i, x := range dests {
		if x == d {
			return i
		}
	}
	if d != nil {
		t.Fatalf("%s picked %v, not one of its servers", sched, d)
	}
	return -1
}

// The least-connection family picks exactly as IPVS does: lc by the
// overhead active×256 + inactive, wlc by that overhead over the weight,
// sed by (active+1) over the weight, nq as sed but a server with no active
// connection first; a weight of 0 is never picked, and a tie goes to the
// first server listed.
func TestLeastConnPicks(t *testing.T) {
	type w = [3]int64 // weight, active, inactive
	cases := []struct {
		name  string
		sched string
		dests []w
		want  int
	}{
		// lc: active counts 256 inactive ones.
		{"lc 255 inactive under 1 active", "lc", []w{{1, 1, 0}, {1, 0, 255}}, 1},
		{"lc 257 inactive over 1 active", "lc", []w{{1, 0, 257}, {1, 1, 0}}, 1},
		{"lc 256 inactive ties 1 active", "lc", []w{{1, 1, 0}, {1, 0, 256}}, 0},
		{"lc 256 inactive ties 1 active, listed first", "lc", []w{{1, 0, 256}, {1, 1, 0}}, 0},
		{"lc inactive adds", "lc", []w{{1, 1, 0}, {1, 1, 1}}, 0},
		{"lc inactive adds, listed second", "lc", []w{{1, 1, 1}, {1, 1, 0}}, 1},
		{"lc ignores weight", "lc", []w{{1, 0, 10}, {5, 0, 20}}, 0},
		{"lc three tied", "lc", []w{{1, 2, 3}, {1, 2, 3}, {1, 2, 3}}, 0},
		{"lc weight 0 never", "lc", []w{{0, 0, 0}, {1, 5, 0}}, 1},
		{"lc all weight 0", "lc", []w{{0, 0, 0}, {0, 0, 0}}, -1},
		{"lc the least of three", "lc", []w{{1, 3, 0}, {1, 2, 9}, {1, 2, 8}}, 2},

		// wlc: overhead / weight, compared without dividing.
		{"wlc weighs", "wlc", []w{{1, 0, 10}, {5, 0, 20}}, 1},
		{"wlc 3/1 over 4/2", "wlc", []w{{1, 0, 3}, {2, 0, 4}}, 1},
		{"wlc 4/2 ties 2/1", "wlc", []w{{2, 0, 4}, {1, 0, 2}}, 0},
		{"wlc 2/1 ties 4/2", "wlc", []w{{1, 0, 2}, {2, 0, 4}}, 0},
		{"wlc active counts 256", "wlc", []w{{1, 1, 0}, {3, 2, 200}}, 1},            // 256 against 712/3
		{"wlc active counts 256, other way", "wlc", []w{{1, 1, 0}, {3, 2, 300}}, 0}, // 256 against 812/3
		{"wlc inactive adds", "wlc", []w{{2, 1, 2}, {2, 1, 1}}, 1},
		{"wlc weight 0 never", "wlc", []w{{0, 0, 0}, {1, 9, 9}}, 1},
		{"wlc all weight 0", "wlc", []w{{0, 1, 0}}, -1},

		// sed: (active + 1) / weight; inactive connections do not count.
		{"sed +1", "sed", []w{{1, 0, 0}, {3, 1, 0}}, 1},      // 1/1 against 2/3
		{"sed +1 ties", "sed", []w{{1, 0, 0}, {2, 1, 0}}, 0}, // 1/1 against 2/2
		{"sed +1 ties, other way", "sed", []w{{2, 1, 0}, {1, 0, 0}}, 0},
		{"sed ignores inactive", "sed", []w{{1, 0, 1000}, {1, 1, 0}}, 0},
		{"sed weighs", "sed", []w{{1, 1, 0}, {4, 3, 0}}, 1}, // 2/1 against 4/4
		{"sed weight 0 never", "sed", []w{{0, 0, 0}, {1, 9, 0}}, 1},

		// nq: the first server with no active connection, whatever its
		// weight or inactive count; with none, as sed.
		{"nq idle first", "nq", []w{{1, 1, 0}, {1, 0, 999}, {100, 1, 0}}, 1},
		{"nq first idle of two", "nq", []w{{1, 2, 0}, {1, 0, 0}, {5, 0, 0}}, 1},
		{"nq none idle, sed's pick", "nq", []w{{1, 1, 0}, {3, 1, 0}}, 1},
		{"nq none idle, sed's tie", "nq", []w{{1, 1, 0}, {2, 3, 0}}, 0}, // 2/1 against 4/2
		{"nq idle at weight 0 never", "nq", []w{{0, 0, 0}, {1, 1, 0}, {2, 1, 0}}, 2},
		{"nq all weight 0", "nq", []w{{0, 0, 0}}, -1},
	}
	for _, tc := range cases {
		if got := pickIndex(t, tc.sched, schedDests(tc.dests...)); got != tc.want {
			t.Errorf("%s: picked server %d of %v, want %d", tc.name, got, tc.dests, tc.want)
		}
	}
}

// rr and wrr start with the first server listed; wrr's smooth order for
// weights 5, 1, 1 is nginx's (a tie between b and c goes to b), and a
// weight of 0 is skipped.
func TestRoundRobinOrder(t *testing.T) {
	order := func(sched string, n int, specs ...[3]int64) []int {
		ds := schedDests(specs...)
		s := newScheduler(sched, 0, ds)
		var got []int
		for range n {
			d := s.pick(nil)
			for i, x := range ds {
				if x == d {
					got = append(got, i)
				}
			}
		}
		return got
	}
	check := func(name string, got, want []int) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", name, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: %v, want %v", name, got, want)
			}
		}
	}
	check("rr", order("rr", 7, [3]int64{1}, [3]int64{0}, [3]int64{1}, [3]int64{1}), []int{0, 2, 3, 0, 2, 3, 0})
	check("wrr 5:1:1", order("wrr", 14, [3]int64{5}, [3]int64{1}, [3]int64{1}), []int{0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0})
	check("wrr drained", order("wrr", 4, [3]int64{0}, [3]int64{2}, [3]int64{1}), []int{1, 2, 1, 1})
	check("wrr ties", order("wrr", 4, [3]int64{1}, [3]int64{1}, [3]int64{1}), []int{0, 1, 2, 0})
	if got := order("rr", 1, [3]int64{0}); len(got) != 0 {
		t.Fatalf("rr with every weight 0 picked %v", got)
	}
	if got := order("wrr", 1, [3]int64{0}); len(got) != 0 {
		t.Fatalf("wrr with every weight 0 picked %v", got)
	}
}

// sh fills its 256 buckets with the live servers in turn, each taking as
// many buckets in a row as its weight, and maps a client to bucket
// (XOR of the address's four 32-bit words × 2654435761) >> 24; the buckets
// below were worked out apart from this code.
func TestSourceHashBuckets(t *testing.T) {
	ds := schedDests([3]int64{0}, [3]int64{3}, [3]int64{0}, [3]int64{1})
	s := newSourceHash(ds, 0)
	counts := map[*Dest]int{}
	for b, d := range s.buckets {
		want := ds[1]
		if b%4 == 3 {
			want = ds[3]
		}
		if d != want {
			t.Fatalf("bucket %d is %v, want %v", b, d, want)
		}
		counts[d]++
	}
	if counts[ds[1]] != 192 || counts[ds[3]] != 64 {
		t.Fatalf("buckets per server %v, want 192 and 64", counts)
	}
	for _, tc := range []struct {
		client string
		bucket int
	}{
		{"10.0.0.1", 39}, {"172.25.254.1", 0}, {"192.0.2.77", 149}, {"2001:db8::1", 192}, {"2001:db8::2", 95},
	} {
		a := netip.MustParseAddr(tc.client)
		c := addr16(a.As16())
		if a.Is4() {
			c = wire.In16(a.AsSlice())
		}
		if got, want := s.pick(&tupleKey{src: c}), s.buckets[tc.bucket]; got != want {
			t.Errorf("client %s: %v, want bucket %d's %v", tc.client, got, tc.bucket, want)
		}
	}
	// Weights 2 and 5: runs of 2 and 5 buckets, 256 = 36×7 + 4.
	ds = schedDests([3]int64{2}, [3]int64{5})
	s = newSourceHash(ds, 0)
	counts = map[*Dest]int{}
	for b, d := range s.buckets {
		want := ds[1]
		if b%7 < 2 {
			want = ds[0]
		}
		if d != want {
			t.Fatalf("weights 2, 5: bucket %d is %v, want %v", b, d, want)
		}
		counts[d]++
	}
	if counts[ds[0]] != 74 || counts[ds[1]] != 182 {
		t.Fatalf("weights 2, 5: buckets per server %v, want 74 and 182", counts)
	}
	if s := newSourceHash(schedDests([3]int64{0}), 0); s.pick(&tupleKey{}) != nil {
		t.Fatal("sh with every weight 0 picked a server")
	}
}

// Every listed scheduler is valid, and a name not listed is refused with
// the list.
func TestValidScheduler(t *testing.T) {
	for _, s := range Schedulers {
		if err := ValidScheduler(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if err := ValidScheduler("fifo"); err == nil || err.Error() != `"fifo" is not a scheduler (one of [rr wrr lc wlc sed nq sh mh dh lblc lblcr fo ovf])` {
		t.Fatalf("fifo: %v", err)
	}
}

// mhClients is n clients 172.16.x.y (port 0) as the scheduler sees them.
func mhClients(n int) []tupleKey {
	cs := make([]tupleKey, n)
	for i := range cs {
		cs[i].src = netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}).As16()
	}
	return cs
}

// mh (Maglev) fills every slot of its prime table with the live servers in
// proportion to their weights (each within one round's turns of its share),
// builds the same table from the same servers every time (so every
// instance of a cluster sends a client to the same server), leaves a
// drained server out, and picks nothing without a live server.
func TestMaglevTable(t *testing.T) {
	ds := schedDests([3]int64{3}, [3]int64{1}, [3]int64{2}, [3]int64{0}, [3]int64{2})
	m := newMaglev(ds, 0)
	if len(m.table) != mhTableSize {
		t.Fatalf("table of %d slots, want %d", len(m.table), mhTableSize)
	}
	count := map[*Dest]int{}
	for i, d := range m.table {
		if d == nil {
			t.Fatalf("slot %d empty", i)
		}
		count[d]++
	}
	const total = 3 + 1 + 2 + 2
	for i, w := range []int{3, 1, 2, 0, 2} {
		share := float64(mhTableSize*w) / total
		if got := float64(count[ds[i]]); got < share-3 || got > share+3 {
			t.Errorf("server %d (weight %d): %v slots, want %.1f ± 3", i, w, got, share)
		}
	}
	again := newMaglev(schedDests([3]int64{3}, [3]int64{1}, [3]int64{2}, [3]int64{0}, [3]int64{2}), 0)
	for i := range m.table {
		if m.table[i].Addr != again.table[i].Addr {
			t.Fatalf("slot %d: %v, then %v from the same servers", i, m.table[i].Addr, again.table[i].Addr)
		}
	}
	// Equal weights share equally, whatever their size (gcd).
	even := newMaglev(schedDests([3]int64{100}, [3]int64{100}), 0)
	n := 0
	for _, d := range even.table {
		if d.Addr == ds[0].Addr {
			n++
		}
	}
	if n != mhTableSize/2+1 && n != mhTableSize/2 {
		t.Errorf("two servers of weight 100: %d and %d slots", n, mhTableSize-n)
	}
	if m := newMaglev(schedDests([3]int64{0}, [3]int64{0}), 0); m.pick(&tupleKey{}) != nil {
		t.Fatal("mh with every weight 0 picked a server")
	}
	// A client's slot is its address's hash: the same client, the same
	// server; clients spread over all live servers.
	seen := map[*Dest]int{}
	for _, c := range mhClients(4000) {
		d := m.pick(&c)
		if d != m.pick(&c) {
			t.Fatal("one client, two servers")
		}
		seen[d]++
	}
	if len(seen) != 4 || seen[ds[3]] != 0 {
		t.Fatalf("4000 clients went to %d servers (the drained one: %d), want the 4 live", len(seen), seen[ds[3]])
	}
	if got := seen[ds[0]]; got < 1200 || got > 1800 {
		t.Errorf("the weight-3 server of 8 got %d of 4000 clients, want about 1500", got)
	}
}

// Maglev's point: a server removed (drained) moves its own clients and
// few others, where sh's buckets shift wholesale. Over 10 000 clients and
// five servers, removing one: mh moves under 5% of the others' clients
// (Maglev's disruption at this table size), sh well over half.
func TestMaglevMinimalDisruption(t *testing.T) {
	weights := [][3]int64{{1}, {1}, {1}, {1}, {1}}
	before := schedDests(weights...)
	after := schedDests(weights...)
	after[2].weight.Store(0)
	for _, c := range []struct {
		sched   string
		atMost  float64
		atLeast float64
	}{{"mh", 0.05, 0}, {"sh", 1, 0.5}} {
		a, b := newScheduler(c.sched, 0, before), newScheduler(c.sched, 0, after)
		moved, others := 0, 0
		for _, cl := range mhClients(10000) {
			was := a.pick(&cl)
			if was.Addr == before[2].Addr {
				if now := b.pick(&cl); now.Addr == before[2].Addr {
					t.Fatalf("%s: a client still on the drained server", c.sched)
				}
				continue
			}
			others++
			if b.pick(&cl).Addr != was.Addr {
				moved++
			}
		}
		frac := float64(moved) / float64(others)
		t.Logf("%s: %d of %d clients of the other servers moved (%.1f%%)", c.sched, moved, others, 100*frac)
		if frac > c.atMost || frac < c.atLeast {
			t.Errorf("%s: %.3f of the other servers' clients moved, want %v to %v", c.sched, frac, c.atLeast, c.atMost)
		}
	}
}

// fo picks the server of highest weight (a tie: the first listed), so a
// lower weight or a drain fails over; ovf the same among servers whose
// active connections do not exceed their weight (IPVS's test is active >
// weight), and none when every server is over.
func TestFailoverAndOverflow(t *testing.T) {
	for _, c := range []struct {
		sched string
		specs [][3]int64
		want  int
	}{
		{"fo", [][3]int64{{1, 0, 0}, {5, 0, 0}, {3, 0, 0}}, 1},
		{"fo", [][3]int64{{5, 0, 0}, {5, 0, 0}}, 0},
		{"fo", [][3]int64{{1, 0, 0}, {5, 100, 0}, {3, 0, 0}}, 1}, // fo ignores the load
		{"fo", [][3]int64{{1, 0, 0}, {0, 0, 0}}, 0},
		{"fo", [][3]int64{{0, 0, 0}}, -1},
		{"ovf", [][3]int64{{1, 0, 0}, {5, 5, 0}, {3, 0, 0}}, 1}, // at its weight: still picked
		{"ovf", [][3]int64{{1, 0, 0}, {5, 6, 0}, {3, 0, 0}}, 2}, // over: the next weight
		{"ovf", [][3]int64{{1, 0, 0}, {5, 6, 0}, {3, 4, 0}}, 0},
		{"ovf", [][3]int64{{1, 2, 0}, {5, 6, 0}, {3, 4, 0}}, -1},
		{"ovf", [][3]int64{{2, 0, 0}, {2, 0, 0}}, 0},
		{"ovf", [][3]int64{{0, 0, 0}, {1, 1, 0}}, 1},
	} {
		if got := pickIndex(t, c.sched, schedDests(c.specs...)); got != c.want {
			t.Errorf("%s over %v: picked %d, want %d", c.sched, c.specs, got, c.want)
		}
	}
}

// Every server's permutation is a permutation: an offset in the table and
// a skip from 1 to its size less one (the size is prime, so the list
// visits every slot), over 20 000 addresses and ports; and the list of
// one server does visit every slot.
func TestMaglevPermutations(t *testing.T) {
	for i := range 20000 {
		d := &Dest{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: uint16(i * 7)}
		off, skip := mhPerm(d)
		if off < 0 || off >= mhTableSize || skip < 1 || skip > mhTableSize-1 {
			t.Fatalf("%v:%d: offset %d, skip %d", d.Addr, d.Port, off, skip)
		}
	}
	off, skip := mhPerm(schedDests([3]int64{1})[0])
	seen := make([]bool, mhTableSize)
	for j := range mhTableSize {
		seen[(off+j*skip)%mhTableSize] = true
	}
	for c, ok := range seen {
		if !ok {
			t.Fatalf("slot %d not on the list", c)
		}
	}
}

// Weights 3 and 1 fill the table in rounds of 4 slots, 3 then 1: 1023
// whole rounds and one slot more, the weight-3 server's, so exactly 3070
// and 1023 slots; the round that fills the last slot takes no more.
func TestMaglevRoundsFillExactly(t *testing.T) {
	ds := schedDests([3]int64{3}, [3]int64{1})
	n := map[*Dest]int{}
	for _, d := range newMaglev(ds, 0).table {
		n[d]++
	}
	if n[ds[0]] != 3070 || n[ds[1]] != 1023 {
		t.Fatalf("weights 3 and 1: %d and %d slots, want 3070 and 1023", n[ds[0]], n[ds[1]])
	}
}
