package nat

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/tapvs/tapvs/defence"
	"github.com/tapvs/tapvs/tcpflag"
)

// Defence, as LVS and DPVS have it: per-service allow and deny lists of
// source prefixes (DPVS's whitelist and blacklist), per-source limits on
// new connections per second and on concurrent connections, and a bounded
// number of half-open connections for TCP services without SYNPROXY (the
// job of LVS's drop_entry and secure_tcp). The lists and the per-source
// tracker are package defence's; this file is the glue: a service's
// policy, published whole, its checks on the path that makes a
// connection, the half-open budget, and a connection's counts given back.
//
// All of it is looked at only where a client packet finds no connection,
// the path that may make one: an established connection's packets never
// read a list, and a list or limit changed later does not touch the
// connections already open (as DPVS's blacklist, which is checked in
// conn_sched only).

// MaxSourceLimit bounds Limits.SourceCPS and Limits.SourceConns, and
// MaxHalfOpen Limits.HalfOpen.
const (
	MaxSourceLimit = 1 << 20
	MaxHalfOpen    = 1 << 24
)

// Limits are a service's limits on new connections; 0 is no limit.
type Limits struct {
	// SourceCPS is how many new connections one source address may open
	// per second, with a burst of as many (a GCRA token bucket). For a
	// SYNPROXY service it counts the SYNs answered with a cookie.
	SourceCPS int
	// SourceConns is how many connections one source address may hold at
	// once.
	SourceConns int
	// HalfOpen is how many TCP connections of the service may wait for the
	// client's ACK of the handshake (SYN_RECV) at once. It applies while
	// the service has no SYN proxy: a SYN proxy holds no state for an
	// unproven SYN.
	HalfOpen int
}

func (l Limits) check(s *Service) error {
	if l.SourceCPS < 0 || l.SourceCPS > MaxSourceLimit {
		return fmt.Errorf("source_cps %d is out of range 0-%d", l.SourceCPS, MaxSourceLimit)
	}
	if l.SourceConns < 0 || l.SourceConns > MaxSourceLimit {
		return fmt.Errorf("source_conns %d is out of range 0-%d", l.SourceConns, MaxSourceLimit)
	}
	if l.HalfOpen < 0 || l.HalfOpen > MaxHalfOpen {
		return fmt.Errorf("half_open %d is out of range 0-%d", l.HalfOpen, MaxHalfOpen)
	}
	if l.HalfOpen > 0 && s.Protocol != TCP {
		return fmt.Errorf("half_open: only a TCP service has half-open connections")
	}
	return nil
}

// policy is a service's defence as published: immutable but for the
// source tracker's counts, swapped whole by a Tx's commit.
type policy struct {
	lists  defence.Lists
	limits Limits
	src    *defence.Tracker // nil unless a per-source limit is set
}

func (p *policy) empty() bool {
	return p.lists.Empty() && p.limits == Limits{}
}

// svcDefence is a service's defence state.
type svcDefence struct {
	pol      atomic.Pointer[policy] // nil: nothing to check, the usual case, one load
	halfOpen atomic.Int64           // connections counted half-open (connDefence.halfOpen)
}

// connDefence is what a connection holds to give back at its release.
type connDefence struct {
	src *defence.Tracker // the tracker that counts it, or nil
	// srcHeld is whether src counts it now: set and cleared under the
	// source's shard lock only (defence.Tracker.Hold), as the connection's
	// state enters and leaves the closed ones (holding).
	srcHeld  bool
	halfOpen atomic.Bool // counted in its service's svcDefence.halfOpen
}

// Allow and Deny are the service's source lists; Limits its limits.
func (s *Service) Allow() []netip.Prefix { return s.policy().lists.Allow.Prefixes() }

// Deny is the service's deny list.
func (s *Service) Deny() []netip.Prefix { return s.policy().lists.Deny.Prefixes() }

// Limits are the service's limits on new connections.
func (s *Service) Limits() Limits { return s.policy().limits }

// HalfOpen is how many of the service's connections are counted half-open
// (only while a HalfOpen limit is set).
func (s *Service) HalfOpen() int64 { return s.def.halfOpen.Load() }

var noPolicy policy

func (s *Service) policy() *policy {
	if p := s.def.pol.Load(); p != nil {
		return p
	}
	return &noPolicy
}

// install publishes p, keeping the published source tracker if p needs one:
// the counts of open connections carry over a change of limits. Caller
// holds s.mu.
func (s *Service) install(p *policy) {
	p.src = nil
	if p.limits.SourceCPS > 0 || p.limits.SourceConns > 0 {
		p.src = s.policy().src
		if p.src == nil {
			p.src = defence.NewTracker()
		}
	}
	if p.empty() {
		s.def.pol.Store(nil)
		return
	}
	s.def.pol.Store(p)
}

// txPolicy is the service's policy as tx leaves it: a copy to change.
func (tx *Tx) txPolicy(s *Service) policy {
	if st := tx.stages[s]; st != nil && st.defence != nil {
		return *st.defence
	}
	return *s.policy()
}

// SetAllow replaces a service's allow list: when it is not empty, new
// connections only from sources in it (DPVS's whitelist).
func (tx *Tx) SetAllow(s *Service, prefixes []netip.Prefix) error {
	return tx.setList(s, "allow", prefixes, func(p *policy, set defence.CIDRSet) { p.lists.Allow = set })
}

// SetDeny replaces a service's deny list: no new connections from sources
// in it (DPVS's blacklist).
func (tx *Tx) SetDeny(s *Service, prefixes []netip.Prefix) error {
	return tx.setList(s, "deny", prefixes, func(p *policy, set defence.CIDRSet) { p.lists.Deny = set })
}

// setList stages one of a service's source lists, checked.
func (tx *Tx) setList(s *Service, name string, prefixes []netip.Prefix, put func(*policy, defence.CIDRSet)) error {
	for _, p := range prefixes {
		if p.Addr().Is6() != s.Addr.Is6() {
			// A prefix of the other family holds none of the service's
			// clients: in an allow list it would refuse every one, in a
			// deny list none.
			return fmt.Errorf("service %s: %s: %s is %s, and this service's clients are %s", s, name, p, family(p.Addr()), family(s.Addr))
		}
	}
	set, err := defence.NewCIDRSet(prefixes)
	if err != nil {
		return fmt.Errorf("service %s: %s: %w", s, name, err)
	}
	p := tx.txPolicy(s)
	put(&p, set)
	tx.stage(s).defence = &p
	tx.n++
	return nil
}

// SetLimits replaces a service's limits on new connections.
func (tx *Tx) SetLimits(s *Service, l Limits) error {
	if err := l.check(s); err != nil {
		return fmt.Errorf("service %s: limits: %w", s, err)
	}
	p := tx.txPolicy(s)
	p.limits = l
	tx.stage(s).defence = &p
	tx.n++
	return nil
}

// Allow, Deny and Limits are a service's as the transaction leaves them.
func (tx *Tx) Allow(s *Service) []netip.Prefix {
	p := tx.txPolicy(s)
	return p.lists.Allow.Prefixes()
}

// Deny is a service's deny list as the transaction leaves it.
func (tx *Tx) Deny(s *Service) []netip.Prefix {
	p := tx.txPolicy(s)
	return p.lists.Deny.Prefixes()
}

// Limits are a service's limits as the transaction leaves them.
func (tx *Tx) Limits(s *Service) Limits { return tx.txPolicy(s).limits }

// opening reports whether a packet without a connection is one that opens
// one: a UDP datagram, a bare SYN (for a SYNPROXY service, the SYN that a
// cookie answers).
func opening(proto Protocol, flags uint8) bool {
	return proto == UDP || flags&(tcpflag.SYN|tcpflag.ACK|tcpflag.RST|tcpflag.FIN) == tcpflag.SYN
}

// admit checks a client packet that found no connection against its
// service's defence. It returns Forward to go on, or the verdict of a
// counted drop.
func (b *Balancer) admit(svc *Service, src *addr16, proto Protocol, flags uint8) Verdict {
	pol := svc.def.pol.Load()
	if pol == nil {
		return Forward
	}
	id := defence.SourceOf(src)
	if r := pol.lists.Check(id); r != defence.OK {
		return b.Stats.drop(defenceDrops[r])
	}
	if !opening(proto, flags) {
		return Forward // not_syn, a cookie's ACK: the path after this decides
	}
	// Half-open connections beyond the budget: the new SYN is dropped
	// rather than the oldest half-open entry evicted (LVS's drop_entry).
	// Evicting needs an order over the service's half-open entries, kept
	// by every SYN under a lock shared by all of them, and under a flood
	// it evicts the real clients' handshakes at the flood's rate anyway;
	// dropping keeps the handshakes already under way, and the half-open
	// entries end at the SYN_RECV timeout (shorten it, as secure_tcp
	// does, with the service's timeouts). A flood is SYNPROXY's job.
	if l := pol.limits.HalfOpen; l > 0 && proto == TCP && !svc.synproxy.Load() && svc.def.halfOpen.Load() >= int64(l) {
		return b.Stats.drop(DropHalfOpenLimit)
	}
	if pol.src != nil {
		r, tracked := pol.src.Admit(id, b.table.now.Load(), defence.SourceLimits{CPS: pol.limits.SourceCPS, Conns: pol.limits.SourceConns})
		if !tracked {
			b.Stats.srcUntracked.Add(1)
		}
		if r != defence.OK {
			return b.Stats.drop(defenceDrops[r])
		}
	}
	return Forward
}

// defenceDrops counts each of package defence's refusals under its drop.
var defenceDrops = [defence.NumReasons]DropReason{
	defence.Denied:     DropDenied,
	defence.NotAllowed: DropNotAllowed,
	defence.RateLimit:  DropSrcRateLimit,
	defence.ConnLimit:  DropSrcConnLimit,
}

// track counts a new connection before it is published, in the state
// stored in it: at its source while the client holds it and, for a TCP
// connection not made by the SYN proxy, as half-open until the client's
// handshake ACK. Its
// release gives both back (untrack).
func (b *Balancer) track(c *Conn) {
	pol := c.svc.def.pol.Load()
	if pol == nil {
		return
	}
	// A new connection is held and half-open; an imported one (export.go)
	// is counted as its state says.
	st := c.state.Load()
	switch {
	case pol.src == nil:
	case !holding(st):
		c.def.src = pol.src // not counted until a SYN reopens it (setState)
	case pol.src.Open(defence.SourceOf(&c.in.src)):
		c.def.src = pol.src
		c.def.srcHeld = true // not published yet: no other reader sees it
	}
	if pol.limits.HalfOpen > 0 && c.in.proto == TCP && c.sp == nil && (st == stNone || st == stSynRecv) {
		c.def.halfOpen.Store(true)
		c.svc.def.halfOpen.Add(1)
	}
}

// handshake ends a half-open connection's count at the client's ACK or
// RST, the packets that end SYN_RECV in IPVS's table. Called for a
// connection's client packets only while it is counted half-open.
func handshake(c *Conn, flags uint8) {
	if flags&(tcpflag.ACK|tcpflag.RST) != 0 && flags&tcpflag.SYN == 0 && c.def.halfOpen.CompareAndSwap(true, false) {
		c.svc.def.halfOpen.Add(-1)
	}
}

// untrack gives back what track counted; release calls it once, after
// the connection's state is stDead.
func untrack(c *Conn) {
	if c.def.src != nil {
		c.holdSource()
	}
	if c.def.halfOpen.CompareAndSwap(true, false) {
		c.svc.def.halfOpen.Add(-1)
	}
}

// holdSource brings the connection's count at its source in line with its
// state: counted while the client holds it (holding), not once it closes,
// lingers or is released. The state is read under the tracker's lock
// (defence.Tracker.Hold), so racing changes settle on the last: a
// connection reopened in its lingering entry (a SYN on TIME_WAIT) counts
// again, and one released (stDead) never does.
func (c *Conn) holdSource() {
	c.def.src.Hold(defence.SourceOf(&c.in.src), &c.def.srcHeld, func() bool { return holding(c.state.Load()) })
}
