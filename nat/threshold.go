package nat

import (
	"fmt"
	"math"
	"net/netip"
)

// Thresholds are a real server's connection thresholds, IPVS's (ipvsadm
// -x and -y, keepalived's uthreshold and lthreshold). A server whose
// connections (active and inactive, ipvsadm's ActiveConn + InActConn)
// reach Upper is overloaded: every scheduler passes it over for new
// connections until its count falls below Lower, or, with Lower 0, below
// three quarters of Upper. Its open connections are not touched. Upper 0
// is no limit.
//
// As in IPVS (ip_vs_conn.c's ip_vs_bind_dest and ip_vs_unbind_dest), the
// flag moves only when a connection is counted at the server (set) or
// taken off it (cleared): a change of the thresholds clears it when Upper
// is 0 or raised (ip_vs_ctl.c's __ip_vs_update_dest) and sets it at the
// next connection only. A persistence template that sends its client to
// an overloaded server still does (ip_vs_check_template looks at the
// server's availability, not its load): the client stays where its
// earlier connections went, and only new clients are kept off.
type Thresholds struct {
	Upper uint32 // -x: overloaded at this many connections; 0: no limit
	Lower uint32 // -y: not overloaded below this many; 0: below 3/4 of Upper
}

// MaxThreshold bounds a threshold as ipvsadm's -x and -y do (INT_MAX).
const MaxThreshold = math.MaxInt32

// Check refuses thresholds IPVS refuses: above MaxThreshold, or a lower
// threshold above the upper one (with Upper 0 too: -ERANGE).
func (t Thresholds) Check() error {
	switch {
	case t.Upper > MaxThreshold:
		return fmt.Errorf("has upper threshold %d, out of range 0-%d", t.Upper, MaxThreshold)
	case t.Lower > MaxThreshold:
		return fmt.Errorf("has lower threshold %d, out of range 0-%d", t.Lower, MaxThreshold)
	case t.Lower > t.Upper:
		return fmt.Errorf("has lower threshold %d above its upper threshold %d (0: no limit)", t.Lower, t.Upper)
	}
	return nil
}

// clears reports whether n connections take the overload off: below
// Lower, or with Lower 0 below 3/4 of Upper (IPVS's n*4 < u*3), or at any
// count without thresholds.
func (t Thresholds) clears(n int64) bool {
	switch {
	case t.Lower != 0:
		return n < int64(t.Lower)
	case t.Upper != 0:
		return n*4 < int64(t.Upper)*3
	}
	return true
}

func packThresholds(t Thresholds) uint64 { return uint64(t.Upper)<<32 | uint64(t.Lower) }

// Thresholds are the server's connection thresholds.
func (d *Dest) Thresholds() Thresholds {
	v := d.thresh.Load()
	return Thresholds{Upper: uint32(v >> 32), Lower: uint32(v)}
}

// Overloaded reports whether the server has reached its upper threshold
// and not yet fallen below its lower one: schedulers pass it over.
func (d *Dest) Overloaded() bool { return d.overload.Load() }

// totalConns is the count the thresholds are of: IPVS's ip_vs_dest_totalconns.
func (d *Dest) totalConns() int64 { return d.active.Load() + d.inactive.Load() }

// setThresholds is a change of the server's thresholds, as
// __ip_vs_update_dest makes it: the overload goes when the upper threshold
// goes or is raised; a lowered one takes effect at the next connection.
func (d *Dest) setThresholds(t Thresholds) {
	old := d.Thresholds()
	d.thresh.Store(packThresholds(t))
	if t.Upper == 0 || t.Upper > old.Upper {
		d.overload.Store(false)
	}
}

// bound is ip_vs_bind_dest's check, after a connection is counted at d:
// at the upper threshold d is overloaded. The flag is read before it is
// written, so that a server below its threshold keeps the line shared.
func (d *Dest) bound() {
	t := d.Thresholds()
	if t.Upper == 0 || d.totalConns() < int64(t.Upper) {
		return
	}
	if !d.overload.Load() {
		d.overload.Store(true)
	}
	// A connection taken off on another reader between the count above
	// and the store may have found the flag clear and left it so, the
	// count now below the lower mark: with no connection left to take
	// off, nothing would clear it again. Counted again after the store,
	// that case is seen here.
	if t.clears(d.totalConns()) {
		d.overload.Store(false)
	}
}

// unbound is ip_vs_unbind_dest's check, after a connection is taken off
// d: below the lower threshold (3/4 of the upper without one) d takes new
// connections again.
func (d *Dest) unbound() {
	if d.overload.Load() && d.Thresholds().clears(d.totalConns()) {
		d.overload.Store(false)
	}
}

// SetThresholds changes a real server's connection thresholds (ipvsadm -x
// and -y on -a or -e). Its open connections are not touched.
func (tx *Tx) SetThresholds(s *Service, addr netip.Addr, port uint16, t Thresholds) error {
	rs := netip.AddrPortFrom(addr, port)
	if err := t.Check(); err != nil {
		return fmt.Errorf("real server %s %w", rs, err)
	}
	st := tx.stage(s)
	d := st.dest(addr, port)
	if d == nil {
		return fmt.Errorf("real server %s: %w", rs, ErrNoDest)
	}
	if st.isNew[d] {
		d.setThresholds(t) // not published yet
	} else {
		if st.thresh == nil {
			st.thresh = map[*Dest]Thresholds{}
		}
		st.thresh[d] = t
	}
	tx.n++
	return nil
}

// Thresholds are a real server's thresholds as the transaction leaves them.
func (tx *Tx) Thresholds(s *Service, d *Dest) Thresholds {
	if st := tx.stages[s]; st != nil {
		if t, ok := st.thresh[d]; ok {
			return t
		}
	}
	return d.Thresholds()
}
