package nat

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

// Schedulers pick a real server for a new connection. They run once per
// connection, never per packet. Each is built for one immutable list of
// servers; a change to the list or a weight builds a new one.
type scheduler interface {
	pick(client *addr16) *Dest
}

// Schedulers lists the scheduler names accepted in config and by ipvsadm's -s.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "mh", "fo", "ovf"}

// ValidScheduler reports whether name is a known scheduler.
func ValidScheduler(name string) error {
	for _, s := range Schedulers {
		if s == name {
			return nil
		}
	}
	return fmt.Errorf("%q is not a scheduler (one of %v)", name, Schedulers)
}

func newScheduler(name string, dests []*Dest) scheduler {
	switch name {
	case "wrr":
		return newWRR(dests)
	case "lc":
		return &leastConn{dests: dests, overhead: lcOverhead}
	case "wlc":
		return &leastConn{dests: dests, overhead: lcOverhead, weighted: true}
	case "sed":
		return &leastConn{dests: dests, overhead: sedOverhead, weighted: true}
	case "nq":
		return &leastConn{dests: dests, overhead: sedOverhead, weighted: true, idleFirst: true}
	case "sh":
		return newSourceHash(dests)
	case "mh":
		return newMaglev(dests)
	case "fo":
		return &failover{dests: dests}
	case "ovf":
		return &failover{dests: dests, overflow: true}
	default: // "rr"; config validation rejects unknown names
		return newRR(dests)
	}
}

// rr cycles through servers whose weight is not 0.
type rr struct {
	live []*Dest
	next atomic.Uint32
}

func newRR(dests []*Dest) *rr {
	r := &rr{}
	for _, d := range dests {
		if d.Weight() > 0 {
			r.live = append(r.live, d)
		}
	}
	return r
}

func (r *rr) pick(*addr16) *Dest {
	if len(r.live) == 0 {
		return nil
	}
	return r.live[(r.next.Add(1)-1)%uint32(len(r.live))]
}

// wrr is smooth weighted round robin (as nginx does it): over any window of
// sum(weights) picks each server gets exactly its weight, spread out rather
// than in runs as IPVS's wrr gives them.
type wrr struct {
	mu      sync.Mutex
	live    []*Dest
	weights []int
	current []int
	total   int
}

func newWRR(dests []*Dest) *wrr {
	w := &wrr{}
	for _, d := range dests {
		if wt := d.Weight(); wt > 0 {
			w.live = append(w.live, d)
			w.weights = append(w.weights, wt)
			w.total += wt
		}
	}
	w.current = make([]int, len(w.live))
	return w
}

func (w *wrr) pick(*addr16) *Dest {
	if len(w.live) == 0 {
		return nil
	}
	w.mu.Lock()
	best := 0
	for i := range w.live {
		w.current[i] += w.weights[i]
		if w.current[i] > w.current[best] {
			best = i
		}
	}
	w.current[best] -= w.total
	w.mu.Unlock()
	return w.live[best]
}

// Connection overheads as IPVS computes them.
func lcOverhead(d *Dest) int64  { return d.active.Load()<<8 + d.inactive.Load() }
func sedOverhead(d *Dest) int64 { return d.active.Load() + 1 }

// leastConn covers lc, wlc, sed and nq: the server with the least overhead
// (divided by weight when weighted) wins; ties go to the first listed.
type leastConn struct {
	dests     []*Dest
	overhead  func(*Dest) int64
	weighted  bool
	idleFirst bool // nq: a server with no active connection wins outright
}

func (l *leastConn) pick(*addr16) *Dest {
	var best *Dest
	var bestOH, bestW int64
	for _, d := range l.dests {
		w := int64(d.Weight())
		if w == 0 {
			continue
		}
		if l.idleFirst && d.active.Load() == 0 {
			return d
		}
		oh := l.overhead(d)
		if !l.weighted {
			w = 1
		}
		// oh/w < bestOH/bestW without dividing.
		if best == nil || oh*bestW < bestOH*w {
			best, bestOH, bestW = d, oh, w
		}
	}
	return best
}

// sourceHash maps a client address to a server through 256 buckets filled in
// proportion to weight, so a client keeps its server while the list is stable.
// A drained server (weight 0) gets no bucket.
type sourceHash struct {
	buckets [256]*Dest
	any     bool
}

func newSourceHash(dests []*Dest) *sourceHash {
	s := &sourceHash{}
	var live []*Dest
	var weights []int
	for _, d := range dests {
		if w := d.Weight(); w > 0 {
			live = append(live, d)
			weights = append(weights, w)
		}
	}
	if len(live) == 0 {
		return s
	}
	s.any = true
	i, left := 0, weights[0]
	for b := range s.buckets {
		s.buckets[b] = live[i]
		if left--; left == 0 {
			i = (i + 1) % len(live)
			left = weights[i]
		}
	}
	return s
}

func (s *sourceHash) pick(client *addr16) *Dest {
	if !s.any {
		return nil
	}
	// IPVS's hash: the address (its four words folded) times the golden
	// ratio, top 8 bits.
	var h uint32
	for i := 0; i < len(client); i += 4 {
		h ^= binary.BigEndian.Uint32(client[i:])
	}
	return s.buckets[(h*2654435761)>>24]
}

// failover is IPVS's fo and ovf. fo: the server with the highest weight
// (a tie goes to the first listed), so lowering a weight or draining
// fails over to the next. ovf (overflow): the same, among the servers
// whose active connections do not exceed their weight, so the weight is a
// connection limit and the rest spill to the next: none such, no server.
type failover struct {
	dests    []*Dest
	overflow bool
}

func (f *failover) pick(*addr16) *Dest {
	var best *Dest
	bestW := 0 // a weight of 0 is never above it: a drained server is never picked
	for _, d := range f.dests {
		w := d.Weight()
		if f.overflow && d.active.Load() > int64(w) {
			continue
		}
		if w > bestW {
			best, bestW = d, w
		}
	}
	return best
}
