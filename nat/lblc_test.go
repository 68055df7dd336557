package nat

import (
	"net/netip"
	"sync"
	"testing"
)

// testLBLC is lblc (or lblcr) over dests with a clock the test moves.
func testLBLC(dests []*Dest, replicate bool) (*lblc, *int64) {
	l := newLBLC(dests, replicate)
	now := new(int64)
	*now = 1
	l.now = func() int64 { return *now }
	return l, now
}

// lblc: a destination's first connection goes to wlc's pick and the
// destination keeps that server while it is not overloaded, even when
// another is less loaded; overloaded (more active connections than its
// weight while some server has under half its weight active) or drained,
// wlc picks again and the destination moves. Other destinations have their
// own server; an entry unused for a day is gone.
func TestLBLCSticks(t *testing.T) {
	ds := schedDests([3]int64{4}, [3]int64{4}, [3]int64{4})
	ds[0].active.Store(1) // wlc picks ds[1] (tie with ds[2]: the first)
	l, now := testLBLC(ds, false)
	vip := v4Key("192.0.2.1", 1, "10.9.0.1")
	pick := func(k tupleKey) int { return destIndex(ds, l.pick(&k)) }
	if got := pick(vip); got != 1 {
		t.Fatalf("first pick %d, want wlc's 1", got)
	}
	ds[1].active.Store(4) // busier than the others, at its weight: not overloaded
	if got := pick(vip); got != 1 {
		t.Fatalf("at its weight: %d, want it kept (1)", got)
	}
	other := v4Key("192.0.2.1", 1, "10.9.0.2")
	if got := pick(other); got != 2 {
		t.Fatalf("another destination: %d, want wlc's 2", got)
	}
	ds[1].active.Store(5) // above its weight, and ds[2] (0 of 4) is under half: overloaded
	if got := pick(vip); got != 2 {
		t.Fatalf("overloaded: %d, want wlc's 2", got)
	}
	ds[2].active.Store(5)
	ds[0].active.Store(2)
	ds[1].active.Store(2)
	// ds[2] is above its weight but no server is under half of its own
	// (2 of 4 is half): not overloaded, kept.
	if got := pick(vip); got != 2 {
		t.Fatalf("above its weight, none under half: %d, want it kept (2)", got)
	}
	ds[2].weight.Store(0)
	if got := pick(vip); got != 0 {
		t.Fatalf("drained at pick time: %d, want wlc's 0", got)
	}
	ds[2].weight.Store(4)
	ds[2].active.Store(0)
	*now += lblcExpire
	if got := pick(vip); got != 0 {
		t.Fatalf("used a day ago to the ns: %d, want it kept (0)", got)
	}
	*now += lblcExpire + 1
	if got := pick(vip); got != 2 {
		t.Fatalf("unused for over a day: %d, want wlc's 2 afresh", got)
	}
	for _, d := range ds {
		d.weight.Store(0)
	}
	if d := l.pick(&vip); d != nil {
		t.Fatalf("every server drained: %v", d)
	}
}

// lblcDst is destination i of a set whose addresses all fold alike (IPv6,
// the first two words equal): one window of the table.
func lblcDst(i int) tupleKey {
	return tupleKey{dst: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, byte(i), 0x20, 0x01, 0x0d, byte(i), 15: 1}).As16()}
}

// A window of lblcProbe slots full, a new destination takes the least
// recently used one's slot (of two as old, the first in the window); the
// others keep theirs. The clock is far from 0, as a running one is.
func TestLBLCTableEvicts(t *testing.T) {
	ds := schedDests([3]int64{1}, [3]int64{1})
	l, now := testLBLC(ds, false)
	*now = 1 << 50
	dst := lblcDst
	for i := range lblcProbe {
		ds[i%2].active.Store(0)
		ds[1-i%2].active.Store(1)
		k := dst(i)
		if got := destIndex(ds, l.pick(&k)); got != i%2 {
			t.Fatalf("destination %d: %d, want %d", i, got, i%2)
		}
		*now++
	}
	// Make destination 0 (server 0) the most recently used; 1 (server 1)
	// is now the least.
	k0 := dst(0)
	l.pick(&k0)
	ds[0].active.Store(1)
	ds[1].active.Store(1)
	k := dst(lblcProbe) // wlc: server 0 (tie)
	if got := destIndex(ds, l.pick(&k)); got != 0 {
		t.Fatalf("a ninth destination: %d, want 0", got)
	}
	ds[1].active.Store(2)
	for i := 2; i < lblcProbe; i++ {
		k := dst(i)
		if got := destIndex(ds, l.pick(&k)); got != i%2 {
			t.Fatalf("destination %d lost its server: %d, want %d", i, got, i%2)
		}
	}
	k1 := dst(1)
	if got := destIndex(ds, l.pick(&k1)); got != 0 {
		t.Fatalf("the least recently used destination: %d, want it evicted and wlc's 0", got)
	}

	// All used at one time: the first of the window goes.
	l, now = testLBLC(ds, false)
	*now = 1 << 50
	for i := range lblcProbe {
		ds[i%2].active.Store(0)
		ds[1-i%2].active.Store(1)
		k := dst(i)
		l.pick(&k)
	}
	ds[0].active.Store(0)
	ds[1].active.Store(0)
	k = dst(lblcProbe)
	l.pick(&k)
	ds[1].active.Store(1) // wlc: 0; destination 7 keeps 1, destination 0 is new
	for _, c := range []struct{ dst, want int }{{lblcProbe - 1, 1}, {0, 0}} {
		k := dst(c.dst)
		if got := destIndex(ds, l.pick(&k)); got != c.want {
			t.Fatalf("same age, destination %d: %d, want %d (the first of the window evicted)", c.dst, got, c.want)
		}
	}
}

// lblcr: the set's least loaded server while it is not overloaded; when
// it is, wlc's pick joins the set; a set unchanged for a day gives up its
// most loaded member on the next pick.
func TestLBLCRSetGrowsAndShrinks(t *testing.T) {
	ds := schedDests([3]int64{2}, [3]int64{2}, [3]int64{2}, [3]int64{2})
	l, now := testLBLC(ds, true)
	k := v4Key("192.0.2.1", 1, "10.9.0.1")
	pick := func() int { return destIndex(ds, l.pick(&k)) }
	set := func() []int {
		e := l.find(&k.dst, *now)
		var out []int
		for i := range e.n {
			out = append(out, destIndex(ds, e.set[i]))
		}
		return out
	}
	if got := pick(); got != 0 {
		t.Fatalf("first pick %d, want wlc's 0", got)
	}
	ds[0].active.Store(3) // above 2 while others are at 0: overloaded
	if got := pick(); got != 1 {
		t.Fatalf("set {0} overloaded: %d, want wlc's 1", got)
	}
	if s := set(); len(s) != 2 || s[0] != 0 || s[1] != 1 {
		t.Fatalf("set %v, want [0 1]", s)
	}
	ds[1].active.Store(2) // 0 has 3, 1 has 2: 1 is the least of the set
	ds[2].active.Store(2)
	if got := pick(); got != 1 {
		t.Fatalf("set {0, 1}: %d, want its least loaded, 1", got)
	}
	ds[1].active.Store(3)
	ds[0].active.Store(4) // both above 2; 3 has 0: overloaded
	if got := pick(); got != 3 {
		t.Fatalf("set {0, 1} overloaded: %d, want wlc's 3", got)
	}
	if s := set(); len(s) != 3 {
		t.Fatalf("set %v, want 3 servers", s)
	}
	*now += lblcExpire // not over a day yet: no change
	ds[3].active.Store(1)
	if got := pick(); got != 3 || len(set()) != 3 {
		t.Fatalf("a day to the ns: %d, set %v; want 3 of three", got, set())
	}
	*now++ // the set last changed over a day ago; used a moment ago
	if got := pick(); got != 3 {
		t.Fatalf("after a day: %d, want the least loaded, 3", got)
	}
	if s := set(); len(s) != 2 || s[0] != 1 || s[1] != 3 {
		t.Fatalf("after a day the set is %v, want [1 3] (0, the most loaded, gone)", s)
	}
	if got := pick(); got != 3 || len(set()) != 2 {
		t.Fatalf("the next pick shrank the set again: %d %v", got, set())
	}
}

// A set holds lblcrSetMax servers; one more to add gives up the most
// loaded member.
func TestLBLCRSetBounded(t *testing.T) {
	specs := make([][3]int64, lblcrSetMax+3)
	for i := range specs {
		specs[i] = [3]int64{2}
	}
	ds := schedDests(specs...)
	l, now := testLBLC(ds, true)
	k := v4Key("192.0.2.1", 1, "10.9.0.1")
	for i := range ds {
		if got := destIndex(ds, l.pick(&k)); got != i {
			t.Fatalf("pick %d: %d", i, got)
		}
		ds[i].active.Store(int64(3 + i)) // overloaded; the newest the most loaded
	}
	e := l.find(&k.dst, *now)
	if e.n != lblcrSetMax {
		t.Fatalf("set of %d, want %d", e.n, lblcrSetMax)
	}
	for i := range e.n - 1 {
		if got := destIndex(ds, e.set[i]); got != i {
			t.Fatalf("set member %d is %d, want %d (the newest, most loaded ones given up)", i, got, i)
		}
	}
	if got := destIndex(ds, e.set[e.n-1]); got != len(ds)-1 {
		t.Fatalf("last member %d, want %d", got, len(ds)-1)
	}
}

// pick runs on several readers at once: the table is guarded (run with
// -race to see it).
func TestLBLCConcurrent(t *testing.T) {
	ds := schedDests([3]int64{1}, [3]int64{1}, [3]int64{1})
	for _, rep := range []bool{false, true} {
		l := newLBLC(ds, rep)
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 200 {
					k := v4Key("192.0.2.1", 1, netip.AddrFrom4([4]byte{10, 9, byte(g), byte(i)}).String())
					if l.pick(&k) == nil {
						t.Error("no server")
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}
