package nat

import "testing"

// A window's free or expired slot is taken before its least recently used
// live one: the first such in the window's order, an entry exactly a day
// old being live yet (IPVS's expiry is after the day). The clock is far
// from 0, as a running one is.
func TestLBLCTableTakesExpiredSlot(t *testing.T) {
	ds := schedDests([3]int64{1}, [3]int64{1})
	l, now := testLBLC(ds, false)
	*now = 1 << 50
	t0 := *now
	for i := range lblcProbe { // dst(i) in window slot i, on server i%2
		ds[i%2].active.Store(0)
		ds[1-i%2].active.Store(1)
		k := lblcDst(i)
		if got := destIndex(ds, l.pick(&k)); got != i%2 {
			t.Fatalf("destination %d: %d, want %d", i, got, i%2)
		}
		*now++
	}
	// dst(0) used exactly a day before the end; dst(2..7) half a day
	// after t0; dst(1) last used at t0+1, expired by then.
	end := t0 + lblcExpire + 100
	*now = end - lblcExpire
	k0 := lblcDst(0)
	l.pick(&k0)
	*now = t0 + lblcExpire/2
	for i := 2; i < lblcProbe; i++ {
		k := lblcDst(i)
		l.pick(&k)
	}
	*now = end
	ds[0].active.Store(0)
	ds[1].active.Store(0)
	k := lblcDst(lblcProbe) // takes dst(1)'s expired slot
	if got := destIndex(ds, l.pick(&k)); got != 0 {
		t.Fatalf("a ninth destination: %d, want wlc's 0", got)
	}
	ds[0].active.Store(1) // wlc would pick 1 now: a destination that keeps 0 was kept
	for i := 0; i < lblcProbe; i += 2 {
		k := lblcDst(i)
		if got := destIndex(ds, l.pick(&k)); got != 0 {
			t.Fatalf("destination %d lost its server: %d, want 0", i, got)
		}
	}
}

// A set of one is never shrunk, however long unchanged.
func TestLBLCRSetOfOneKept(t *testing.T) {
	ds := schedDests([3]int64{2}, [3]int64{2})
	l, now := testLBLC(ds, true)
	*now = 1 << 50
	k := lblcDst(0)
	for range 3 {
		if got := destIndex(ds, l.pick(&k)); got != 0 {
			t.Fatalf("pick %d, want 0", got)
		}
		*now += lblcExpire // used every day, unchanged for longer
	}
	if e := l.find(&k.dst, *now); e == nil || e.n != 1 || e.set[0] != ds[0] {
		t.Fatalf("the set of one after three days: %+v", e)
	}
}

// lblcr's least and most as IPVS's ip_vs_dest_set_min and _max: by wlc's
// overhead over weight, a member of weight 0 never either, a tie to the
// newest member (IPVS's list has it first).
func TestLBLCRLeastAndMost(t *testing.T) {
	type w = [3]int64 // weight, active, inactive; oldest member first
	for _, tc := range []struct {
		name        string
		set         []w
		least, most int
	}{
		{"oldest least", []w{{2, 0, 0}, {2, 1, 0}}, 0, 1},
		{"newest least", []w{{2, 1, 0}, {2, 0, 0}}, 1, 0},
		{"tie: the newest", []w{{2, 1, 0}, {2, 1, 0}, {2, 1, 0}}, 2, 2},
		{"over the weight", []w{{2, 1, 0}, {4, 4, 0}}, 0, 1}, // 256/2 against 1024/4
		{"over the weight, flipped", []w{{4, 4, 0}, {2, 1, 0}}, 1, 0},
		{"weight counts", []w{{1, 1, 0}, {4, 3, 0}}, 1, 0}, // 256/1 against 768/4
		{"inactive counts", []w{{1, 1, 1}, {1, 1, 0}}, 1, 0},
		{"drained newest, least loaded", []w{{2, 3, 0}, {0, 0, 0}}, 0, 0},
		{"drained newest, most loaded", []w{{2, 1, 0}, {1, 0, 0}, {0, 9, 0}}, 1, 0},
		{"drained oldest", []w{{0, 9, 0}, {2, 1, 0}, {2, 0, 0}}, 2, 1},
		{"all drained", []w{{0, 0, 0}, {0, 1, 0}}, -1, -1},
	} {
		ds := schedDests(tc.set...)
		e := &lblcEntry{n: len(ds)}
		copy(e.set[:], ds)
		if got := destIndex(ds, e.least()); got != tc.least {
			t.Errorf("%s: least %d, want %d", tc.name, got, tc.least)
		}
		if got := e.most(); got != tc.most {
			t.Errorf("%s: most %d, want %d", tc.name, got, tc.most)
		}
	}
}
