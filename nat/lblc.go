package nat

import (
	"sync"
	"time"
)

// lblc and lblcr are IPVS's locality-based least-connection schedulers
// (ip_vs_lblc.c, ip_vs_lblcr.c), keyed by the connection's destination
// address. lblc: a destination keeps the server it was given while that
// server is available and not overloaded, else wlc picks another and the
// destination moves to it. lblcr (with replication): a destination has a
// set of servers and takes the least loaded of them; when that one is
// overloaded wlc adds another to the set, and a set not changed for
// lblcExpire gives up its most loaded server. On a tapvs service the
// destination is the VIP, so a service's connections all go to one server
// (lblc) or one set (lblcr) while it keeps up: it is for several VIPs
// sharing servers, as caches are shared in IPVS's use of it.
//
// A server overloaded by its connection thresholds (threshold.go) is passed
// over everywhere: wlc's pick, lblcr's set, and lblc's kept server too,
// where IPVS's lblc still gives a destination its kept server (its check
// there is its own is_overloaded, not the flag): the thresholds are the
// operator's limit, which every scheduler here honours.
//
// The table is fixed: lblcSlots entries, an address taking one of the
// lblcProbe slots from its hash on; an entry unused for lblcExpire (IPVS's
// lblc_expiration) is gone, and a full window gives up its least recently
// used entry (IPVS expires idle entries when over its size). It is made at
// the first pick and starts afresh when the servers or a weight change
// (the scheduler is rebuilt; IPVS keeps it). A set holds up to lblcrSetMax
// servers; a full set that must grow gives up its most loaded.
const (
	lblcSlots   = 256
	lblcProbe   = 8
	lblcExpire  = int64(24 * time.Hour)
	lblcrSetMax = 8
)

type lblcEntry struct {
	addr    addr16
	used    bool
	lastUse int64 // ns
	lastMod int64 // ns: lblcr's set last grew or shrank
	n       int   // servers in set; lblc's is set[0]
	set     [lblcrSetMax]*Dest
}

type lblc struct {
	dests     []*Dest
	wlc       leastConn
	replicate bool
	now       func() int64 // ns, monotonic; a test's clock

	mu    sync.Mutex  // guards table: pick runs on every reader at once, once per new connection
	table []lblcEntry // nil until the first pick
}

// lblcEpoch makes lblc's clock monotonic (time.Since reads the monotonic one).
var lblcEpoch = time.Now()

func newLBLC(dests []*Dest, replicate bool) *lblc {
	return &lblc{
		dests: dests, replicate: replicate,
		wlc: leastConn{dests: dests, overhead: lcOverhead, weighted: true},
		now: func() int64 { return int64(time.Since(lblcEpoch)) },
	}
}

func (l *lblc) pick(k *tupleKey) *Dest {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.table == nil {
		l.table = make([]lblcEntry, lblcSlots)
	}
	e := l.find(&k.dst, now)
	if e != nil {
		e.lastUse = now
		if l.replicate {
			return l.fromSet(e, now)
		}
		if d := e.set[0]; available(d) && !l.overloaded(d) {
			return d
		}
	}
	d := l.wlc.pick(k)
	if d == nil {
		return nil
	}
	if e == nil {
		e = l.slot(&k.dst, now)
		*e = lblcEntry{addr: k.dst, used: true, lastUse: now}
	}
	e.set[0], e.n, e.lastMod = d, 1, now
	return d
}

// fromSet is lblcr's pick for a destination it knows, as
// ip_vs_lblcr_schedule: the set's least loaded server; a set of more than
// one unchanged for lblcExpire first gives up its most loaded; the least
// loaded overloaded (or none available), wlc's pick joins the set.
func (l *lblc) fromSet(e *lblcEntry, now int64) *Dest {
	d := e.least()
	if e.n > 1 && now-e.lastMod > lblcExpire {
		if m := e.most(); m >= 0 {
			e.remove(m)
			e.lastMod = now
		}
	}
	if d != nil && !l.overloaded(d) {
		return d
	}
	d = l.wlc.pick(nil)
	if d == nil {
		return nil
	}
	for i := range e.n {
		if e.set[i] == d {
			return d
		}
	}
	if e.n == lblcrSetMax {
		e.remove(max(e.most(), 0))
	}
	e.set[e.n] = d
	e.n++
	e.lastMod = now
	return d
}

// overloaded is IPVS's is_overloaded for lblc and lblcr: d has more active
// connections than its weight while some server of the service has fewer
// than half its weight.
func (l *lblc) overloaded(d *Dest) bool {
	if d.active.Load() <= int64(d.Weight()) {
		return false
	}
	for _, o := range l.dests {
		if o.active.Load()*2 < int64(o.Weight()) {
			return true
		}
	}
	return false
}

// find is dst's entry, nil when it has none or it expired.
func (l *lblc) find(dst *addr16, now int64) *lblcEntry {
	h := bucket256(addrFold(dst))
	for i := range uint32(lblcProbe) {
		e := &l.table[(h+i)%lblcSlots]
		if e.used && e.addr == *dst && now-e.lastUse <= lblcExpire {
			return e
		}
	}
	return nil
}

// slot is where a new entry for dst goes: the first free or expired slot
// of its window, else the least recently used.
func (l *lblc) slot(dst *addr16, now int64) *lblcEntry {
	h := bucket256(addrFold(dst))
	var lru *lblcEntry
	for i := range uint32(lblcProbe) {
		e := &l.table[(h+i)%lblcSlots]
		if !e.used || now-e.lastUse > lblcExpire {
			return e
		}
		if lru == nil || e.lastUse < lru.lastUse {
			lru = e
		}
	}
	return lru
}

// least is the set's least loaded available server by wlc's measure
// (overhead over weight), the newest of a tie as IPVS's list has it first;
// nil when none is available. An overloaded server (its thresholds) is
// passed over, as ip_vs_dest_set_min does.
func (e *lblcEntry) least() *Dest {
	var best *Dest
	var bestOH, bestW int64
	for i := e.n - 1; i >= 0; i-- {
		d := e.set[i]
		w := int64(d.Weight())
		if w <= 0 || d.overload.Load() {
			continue
		}
		if oh := lcOverhead(d); best == nil || oh*bestW < bestOH*w {
			best, bestOH, bestW = d, oh, w
		}
	}
	return best
}

// most is the index of the set's most loaded server of weight above 0 (the
// newest of a tie), -1 for none.
func (e *lblcEntry) most() int {
	best := -1
	var bestOH, bestW int64
	for i := e.n - 1; i >= 0; i-- {
		d := e.set[i]
		w := int64(d.Weight())
		if w <= 0 {
			continue
		}
		if oh := lcOverhead(d); bestW == 0 || bestOH*w < oh*bestW { // bestW 0: none yet
			best, bestOH, bestW = i, oh, w
		}
	}
	return best
}

// remove takes the set's server i out, keeping the others' order.
func (e *lblcEntry) remove(i int) {
	copy(e.set[i:e.n], e.set[i+1:e.n])
	e.n--
	e.set[e.n] = nil
}
