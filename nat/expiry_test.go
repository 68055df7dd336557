package nat

import (
	"testing"
	"time"
)

// dueAt runs the wheel up to now and returns which of conns came due.
func dueAt(w *wheel, now time.Duration) map[*Conn]bool {
	got := map[*Conn]bool{}
	for _, c := range w.due(int64(now), nil) {
		got[c] = true
	}
	return got
}

func TestExpiryWheel(t *testing.T) {
	var w wheel
	newConn := func(deadline time.Duration) *Conn {
		c := &Conn{}
		c.state.Store(stEstablished)
		c.deadline.Store(int64(deadline))
		w.file(c)
		return c
	}
	short, extended, shortened, far, dead := newConn(5*time.Second), newConn(5*time.Second), newConn(100*time.Second), newConn(900*time.Second), newConn(5*time.Second)

	// A packet pushed extended's deadline later: lazily, no filing.
	extended.deadline.Store(int64(30 * time.Second))
	// A FIN shortened the other's: filed earlier at once.
	shortened.deadline.Store(int64(6 * time.Second))
	w.advance(shortened, int64(6*time.Second))
	dead.state.Store(stDead)

	if got := dueAt(&w, 4*time.Second); len(got) != 0 {
		t.Fatalf("due before any deadline: %d", len(got))
	}
	got := dueAt(&w, 7*time.Second)
	if !got[short] || !got[shortened] || len(got) != 2 {
		t.Fatalf("at 7s: short %v shortened %v, %d due (want those 2)", got[short], got[shortened], len(got))
	}
	// shortened has two entries (100s and 6s): the stale one must not bring it back.
	if got := dueAt(&w, 29*time.Second); len(got) != 0 {
		t.Fatalf("due at 29s: %d (extended's deadline is 30s)", len(got))
	}
	if got := dueAt(&w, 31*time.Second); !got[extended] || len(got) != 1 {
		t.Fatalf("at 31s: extended %v, %d due", got[extended], len(got))
	}
	if got := dueAt(&w, 150*time.Second); len(got) != 0 {
		t.Fatalf("due at 150s: %d (shortened's stale entry at 100s came back?)", len(got))
	}
	// far lies beyond the wheel's turn: filed at the horizon, then again.
	if got := dueAt(&w, 899*time.Second); len(got) != 0 {
		t.Fatalf("due at 899s: %d", len(got))
	}
	if got := dueAt(&w, 901*time.Second); !got[far] || len(got) != 1 {
		t.Fatalf("at 901s: far %v, %d due", got[far], len(got))
	}
	for i := range w.stripes {
		for j := range w.stripes[i].slots {
			if n := len(w.stripes[i].slots[j]); n != 0 {
				t.Fatalf("stripe %d slot %d still holds %d entries", i, j, n)
			}
		}
	}
}

// A connection the sweep has passed (returned as due, or mid-sweep) is filed
// again by advance, whatever its new tick: it must not fall off the wheel.
func TestExpiryWheelAdvanceAfterSweep(t *testing.T) {
	var w wheel
	c := &Conn{}
	c.state.Store(stEstablished)
	c.deadline.Store(int64(5 * time.Second))
	w.file(c)
	if got := dueAt(&w, 6*time.Second); !got[c] {
		t.Fatal("not due at 6s")
	}
	// The caller did not release it: a packet moved its deadline (later
	// than the tick it was filed under, which the sweep has passed).
	c.deadline.Store(int64(20 * time.Second))
	w.advance(c, int64(20*time.Second))
	if got := dueAt(&w, 19*time.Second); got[c] {
		t.Fatal("due before its new deadline")
	}
	if got := dueAt(&w, 21*time.Second); !got[c] {
		t.Fatal("fell off the wheel")
	}
}
