package nat

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

// Schedulers pick a real server for a new connection. They run once per
// connection, never per packet, on any of the readers at once (a scheduler
// with state guards it). Each is built for one immutable list of servers; a
// change to the list, a weight or the flags builds a new one. pick gets the
// connection's key as the client sent it (sh hashes its source, dh and
// lblc its destination); it must not keep the pointer. Each passes over
// a server overloaded at pick time (its connection thresholds,
// threshold.go), as IPVS's schedulers pass over IP_VS_DEST_F_OVERLOAD.
type scheduler interface {
	pick(k *tupleKey) *Dest
}

// Schedulers lists the scheduler names accepted in config and by ipvsadm's -s.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "mh", "dh", "lblc", "lblcr", "fo", "ovf"}

// ValidScheduler reports whether name is a known scheduler.
func ValidScheduler(name string) error {
	for _, s := range Schedulers {
		if s == name {
			return nil
		}
	}
	return fmt.Errorf("%q is not a scheduler (one of %v)", name, Schedulers)
}

// newScheduler builds scheduler name with flags (checked against it by
// CheckSchedFlags) for dests.
func newScheduler(name string, flags SchedFlags, dests []*Dest) scheduler {
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
		return newSourceHash(dests, flags)
	case "mh":
		return newMaglev(dests, flags)
	case "dh":
		return newDestHash(dests)
	case "lblc":
		return newLBLC(dests, false)
	case "lblcr":
		return newLBLC(dests, true)
	case "fo":
		return &failover{dests: dests}
	case "ovf":
		return &failover{dests: dests, overflow: true}
	default: // "rr"; config validation rejects unknown names
		return newRR(dests)
	}
}

// rr cycles through servers whose weight is not 0, passing over those
// overloaded (IPVS's rr walks on from its last to the next that is not).
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

func (r *rr) pick(*tupleKey) *Dest {
	n := uint32(len(r.live))
	start := r.next.Add(1) - 1
	for i := range n {
		if d := r.live[(start+i)%n]; !d.overload.Load() {
			return d
		}
	}
	return nil
}

// wrr is smooth weighted round robin (as nginx does it): over any window of
// sum(weights) picks each server gets exactly its weight, spread out rather
// than in runs as IPVS's wrr gives them. An overloaded server sits a pick
// out as nginx's smooth wrr skips a peer that is down: its current weight
// does not grow, and the total is the others'.
type wrr struct {
	mu      sync.Mutex
	live    []*Dest
	weights []int
	current []int
}

func newWRR(dests []*Dest) *wrr {
	w := &wrr{}
	for _, d := range dests {
		if wt := d.Weight(); wt > 0 {
			w.live = append(w.live, d)
			w.weights = append(w.weights, wt)
		}
	}
	w.current = make([]int, len(w.live))
	return w
}

func (w *wrr) pick(*tupleKey) *Dest {
	if len(w.live) == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	best, total := -1, 0
	for i, d := range w.live {
		if d.overload.Load() {
			continue
		}
		w.current[i] += w.weights[i]
		total += w.weights[i]
		if best < 0 || w.current[i] > w.current[best] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	w.current[best] -= total
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

func (l *leastConn) pick(*tupleKey) *Dest {
	var best *Dest
	var bestOH, bestW int64
	for _, d := range l.dests {
		w := int64(d.Weight())
		if w == 0 || d.overload.Load() {
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
// A drained server (weight 0) gets no bucket: the table is rebuilt when a
// weight changes, so its clients go to the others (IPVS keeps it one bucket
// and refuses the clients that hash to it unless sh-fallback is set).
//
// Flags (IPVS's): port (sh-port) hashes the client's source port with its
// address, so one client's connections spread over the servers; fallback
// (sh-fallback) walks the table, as IPVS does, when the hashed server is
// unavailable at pick time (overloaded, or its weight went to 0 and the
// table is not rebuilt yet), where without it the connection is refused,
// as IPVS refuses it: an overloaded server's clients wait for it, unless
// the flag lets them go elsewhere.
type sourceHash struct {
	buckets [256]*Dest
	any     bool
	flags   SchedFlags
}

func newSourceHash(dests []*Dest, flags SchedFlags) *sourceHash {
	s := &sourceHash{flags: flags}
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

// addrFold is IPVS's fold of an address for sh and dh: its four 32-bit
// words XORed (an IPv4 address in the 16-byte form the data path keeps).
func addrFold(a *addr16) uint32 {
	var h uint32
	for i := 0; i < len(a); i += 4 {
		h ^= binary.BigEndian.Uint32(a[i:])
	}
	return h
}

// bucket256 is IPVS's sh/dh hash of v: times the golden ratio, top 8 bits.
func bucket256(v uint32) uint32 { return (v * 2654435761) >> 24 }

func (s *sourceHash) pick(k *tupleKey) *Dest {
	if !s.any {
		return nil
	}
	v := addrFold(&k.src)
	if s.flags&SchedPort != 0 {
		v += uint32(k.sport)
	}
	ihash := bucket256(v)
	d := s.buckets[ihash]
	if available(d) {
		return d
	}
	if s.flags&SchedFallback == 0 {
		return nil
	}
	// IPVS's walk: offset o looks at bucket (o + ihash + ihash) mod 256,
	// every bucket once.
	for o := range uint32(len(s.buckets)) {
		if d := s.buckets[(o+2*ihash)%256]; available(d) {
			return d
		}
	}
	return nil
}

// available reports whether a hashing scheduler may send a new connection
// to d: its weight is above 0 now (the table may be older than a weight)
// and it is not overloaded (IPVS's is_unavailable of sh and mh).
func available(d *Dest) bool { return d != nil && d.Weight() > 0 && !d.overload.Load() }

// destHash is IPVS's dh: the connection's destination address hashed, as
// sh hashes the source, to 256 buckets given to the live servers one each
// in turn (IPVS's dh ignores weights, beyond 0 meaning none). Every
// connection to one destination address goes to one server, refused when
// that server is unavailable at pick time. On a tapvs service the
// destination is the VIP, so each VIP maps to one server: it is for
// several VIPs (or, later, all-port services) sharing servers by address.
type destHash struct {
	buckets [256]*Dest
	any     bool
}

func newDestHash(dests []*Dest) *destHash {
	h := &destHash{}
	var live []*Dest
	for _, d := range dests {
		if d.Weight() > 0 {
			live = append(live, d)
		}
	}
	if len(live) == 0 {
		return h
	}
	h.any = true
	for b := range h.buckets {
		h.buckets[b] = live[b%len(live)]
	}
	return h
}

func (h *destHash) pick(k *tupleKey) *Dest {
	if !h.any {
		return nil
	}
	if d := h.buckets[bucket256(addrFold(&k.dst))]; available(d) {
		return d
	}
	return nil
}

// failover is IPVS's fo and ovf. fo: the server with the highest weight
// (a tie goes to the first listed), so lowering a weight or draining
// fails over to the next. ovf (overflow): the same, among the servers
// whose active connections do not exceed their weight, so the weight is a
// connection limit and the rest spill to the next: none such, no server.
// Both pass over an overloaded server (its thresholds), as IPVS's do.
type failover struct {
	dests    []*Dest
	overflow bool
}

func (f *failover) pick(*tupleKey) *Dest {
	var best *Dest
	bestW := 0 // a weight of 0 is never above it: a drained server is never picked
	for _, d := range f.dests {
		w := d.Weight()
		if d.overload.Load() || f.overflow && d.active.Load() > int64(w) {
			continue
		}
		if w > bestW {
			best, bestW = d, w
		}
	}
	return best
}
