package nat

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// The expiry wheel files each connection under the tick its deadline falls
// in, so a sweep looks only at the connections due, instead of scanning the
// whole table (172 ms a sweep at 1M connections, every second).
//
// Filing is lazy, like LVS's timers that a packet only re-arms: a packet
// that pushes a deadline later does not touch the wheel; when the old tick
// comes, the sweep finds the deadline moved and files the connection again.
// Only a deadline moved earlier (a state with a shorter timeout: FIN,
// CLOSE) files it at once. A connection's filed tick says which of its
// entries is current; the others are dropped when their tick comes.
//
// The wheel is split into stripes chosen by the connection's address, each
// with its own lock: readers take one only when they open a connection or
// shorten its timeout, and two readers rarely pick the same stripe.
const (
	wheelTick    = int64(100 * time.Millisecond)
	wheelSlots   = 2048 // ticks ahead: 204.8 s; later deadlines are filed at the horizon and filed again from there
	wheelStripes = 32
)

type wheelStripe struct {
	mu    sync.Mutex
	slots [wheelSlots][]*Conn
	_     [56]byte
}

type wheel struct {
	stripes [wheelStripes]wheelStripe
	// done is the last tick swept: nothing is filed at or before it.
	done atomic.Int64
}

func tickOf(deadline int64) int64 { return deadline/wheelTick + 1 } // the first tick at which the deadline has passed

func (w *wheel) stripe(c *Conn) *wheelStripe {
	return &w.stripes[(uintptr(unsafe.Pointer(c))>>6)%wheelStripes]
}

// clamp keeps a tick inside the wheel: after the last tick swept and
// within one turn of it.
func (w *wheel) clamp(t int64) int64 {
	done := w.done.Load()
	return min(max(t, done+1), done+wheelSlots-1)
}

// file puts c on the wheel under its current deadline: a new connection,
// or one the sweep found alive after all. Reading the deadline here, under
// the lock, takes in a timeout shortened since the caller set it.
func (w *wheel) file(c *Conn) {
	s := w.stripe(c)
	s.mu.Lock()
	w.put(s, c, c.deadline.Load())
	s.mu.Unlock()
}

// advance files c earlier when its deadline moved before the tick it is
// filed under, or again when the sweep has already passed that tick. A
// connection not filed yet (0) is left to file, which reads the deadline.
func (w *wheel) advance(c *Conn, deadline int64) {
	s := w.stripe(c)
	s.mu.Lock()
	if f := c.filed.Load(); f != 0 && (w.clamp(tickOf(deadline)) < f || f <= w.done.Load()) {
		w.put(s, c, deadline)
	}
	s.mu.Unlock()
}

// put files c in stripe s (locked) under deadline. Every filing decision is
// made under the stripe's lock, and due moves done forward before it locks
// a stripe, so nothing is ever filed in a slot the sweep has emptied.
func (w *wheel) put(s *wheelStripe, c *Conn, deadline int64) {
	t := w.clamp(tickOf(deadline))
	c.filed.Store(t)
	i := t % wheelSlots
	s.slots[i] = append(s.slots[i], c)
}

// due appends to out the connections whose deadline is at or before now,
// going through every tick that has passed, and files again those whose
// deadline moved later. Only the sweeper calls it.
func (w *wheel) due(now int64, out []*Conn) []*Conn {
	last := now / wheelTick // ticks up to this one have fully passed
	for t := w.done.Load() + 1; t <= last; t++ {
		w.done.Store(t) // new entries go after t from here on
		i := t % wheelSlots
		for k := range w.stripes {
			s := &w.stripes[k]
			s.mu.Lock()
			list := s.slots[i]
			for _, c := range list {
				if c.filed.Load() != t || c.state.Load() == stDead {
					continue // filed again since, or gone
				}
				d := c.deadline.Load()
				if d <= now {
					out = append(out, c)
					continue
				}
				// Later ticks are never this slot (clamp keeps them within
				// one turn), so appending while list is read is safe.
				w.put(s, c, d)
			}
			clear(list)
			s.slots[i] = list[:0]
			s.mu.Unlock()
		}
	}
	return out
}
