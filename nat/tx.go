package nat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"
)

// Tx is a set of control-plane changes made as one. Each change is
// checked when it is made, against the state the changes before it leave;
// one that is refused returns its reason and leaves the Tx as it was. The
// function given to Update decides: if it returns an error nothing of the
// Tx is applied, and if it returns nil every accepted change is published
// to the data path together. Every operator change goes through a Tx: a
// configuration loaded or reloaded, each control API call, a restore
// (tapvsadm -R).
//
// A Tx costs what it changes, however many services there are: the
// services it adds and deletes are kept apart from the snapshot it
// started from (base), the address index is the balancer's own with the
// Tx's counts on top (delta), and the commit makes the next snapshot from
// the last by the changes alone (snapshot.go). Loading n services in one
// Tx is O(n), and so are n Txs of one service each (an ipvsadm script).
type Tx struct {
	b          *Balancer
	base       *serviceSet          // the published snapshot the Tx started from
	added      []*Service           // made by this Tx and not deleted, in order
	addedByKey map[svcKey]*Service  // of added
	gone       []*Service           // published services deleted, to retire at commit
	goneSet    map[*Service]bool    // of gone
	list       []*Service           // services() as last built; nil: to build again
	stages     map[*Service]*stage  //
	delta      addrCounts           // the Tx's changes to b.idx's counts
	retired    map[netip.Addr]int64 // connections of retiring LIPs by address, built at first need
	deflt      *Timeouts            // new default timeouts, set at commit
	n          int                  // changes made
	marks      *txMarks             // the mark definitions as they will be (match.go); nil: unchanged
}

// stage holds what a Tx changes in one service until it commits.
type stage struct {
	fresh    bool // made by this Tx: nothing of it is published yet
	name     *string
	sched    *string
	flags    SchedFlags // with sched
	synproxy *bool
	client   *ClientAddr
	ts       *Timestamps
	timeouts *Timeouts
	persist  *Persistence
	// dests is the list as it will be, published whole at commit: a Tx is
	// the only writer of a service's list (the health checker's changes are
	// Txs too), so nothing can have changed it meanwhile.
	dests   []*Dest
	owned   bool              // dests is the stage's copy (the published list is never written)
	byKey   map[destKey]*Dest // of dests, built at first use
	isNew   map[*Dest]bool    // added by this Tx: not published yet
	weights map[*Dest]int     // of published servers
	laddrs  *[]*LocalAddr     // nil: unchanged
	retire  []*LocalAddr      // LIPs taken off
	defence *policy           // nil: unchanged (defence.go)
	// thresh holds the thresholds of published servers (threshold.go);
	// nil: none changed.
	thresh map[*Dest]Thresholds
}

type destKey struct {
	a    netip.Addr
	port uint16
}

// dest finds a real server in the stage's list.
func (st *stage) dest(addr netip.Addr, port uint16) *Dest {
	if st.byKey == nil {
		st.byKey = make(map[destKey]*Dest, len(st.dests))
		for _, d := range st.dests {
			st.byKey[destKey{d.Addr, d.Port}] = d
		}
	}
	return st.byKey[destKey{addr, port}]
}

// mutable makes dests the stage's own copy before it is written.
func (st *stage) mutable() {
	if !st.owned {
		st.dests = slices.Clone(st.dests)
		st.owned = true
	}
}

// Update runs fn in a transaction: the changes it makes through tx are
// published together if fn returns nil and none of them was refused, and
// not at all otherwise. Changes serialise: one Tx at a time.
func (b *Balancer) Update(fn func(tx *Tx) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	tx := &Tx{b: b, base: b.set.Load(), addedByKey: map[svcKey]*Service{}, stages: map[*Service]*stage{}, delta: addrCounts{}}
	if err := fn(tx); err != nil {
		return err
	}
	tx.commit()
	return nil
}

// Changes is how many changes the transaction has made so far.
func (tx *Tx) Changes() int { return tx.n }

// Services lists the services as the transaction leaves them so far: a
// copy, which later changes do not move under its reader.
func (tx *Tx) Services() []*Service { return slices.Clone(tx.services()) }

// services builds the list of services as the Tx leaves them (O(n): for
// the changes that read them all) and keeps it until the next addition or
// deletion.
func (tx *Tx) services() []*Service {
	if tx.list == nil {
		base := tx.base.services()
		list := make([]*Service, 0, len(base)-len(tx.gone)+len(tx.added))
		for _, s := range base {
			if !tx.goneSet[s] {
				list = append(list, s)
			}
		}
		tx.list = append(list, tx.added...)
	}
	return tx.list
}

// lookup finds a service by key as the transaction leaves it so far.
func (tx *Tx) lookup(k svcKey) *Service {
	if s := tx.addedByKey[k]; s != nil {
		return s
	}
	if s := tx.base.service(k); s != nil && !tx.goneSet[s] {
		return s
	}
	return nil
}

// live refuses a change to a service that the Tx does not hold (one
// deleted, by this Tx or before it): its addresses are no longer counted,
// so nothing of it may claim or give one back.
func (tx *Tx) live(s *Service) error {
	if tx.lookup(s.key) != s {
		return fmt.Errorf("service %s: %w", s, ErrNoService)
	}
	return nil
}

// Service finds a service as the transaction leaves it so far.
func (tx *Tx) Service(proto Protocol, addr netip.Addr, port uint16) (*Service, error) {
	if s := tx.lookup(svcKey{addr: addr.As16(), port: port, proto: proto}); s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("%s %s: %w", proto, netip.AddrPortFrom(addr, port), ErrNoService)
}

func (tx *Tx) stage(s *Service) *stage {
	st := tx.stages[s]
	if st == nil {
		st = &stage{dests: s.Dests(), weights: map[*Dest]int{}, isNew: map[*Dest]bool{}}
		tx.stages[s] = st
	}
	return st
}

// Dests are a service's real servers as the transaction leaves them.
func (tx *Tx) Dests(s *Service) []*Dest {
	if st := tx.stages[s]; st != nil {
		return st.dests
	}
	return s.Dests()
}

// Dest finds a real server of a service as the transaction leaves it.
func (tx *Tx) Dest(s *Service, addr netip.Addr, port uint16) *Dest {
	if st := tx.stages[s]; st != nil {
		return st.dest(addr, port)
	}
	return s.Dest(addr, port)
}

// LocalAddrs are a service's LIPs as the transaction leaves them.
func (tx *Tx) LocalAddrs(s *Service) []*LocalAddr {
	if st := tx.stages[s]; st != nil && st.laddrs != nil {
		return *st.laddrs
	}
	return s.LocalAddrs()
}

// Weight is a real server's weight as the transaction leaves it.
func (tx *Tx) Weight(s *Service, d *Dest) int {
	if st := tx.stages[s]; st != nil {
		if w, ok := st.weights[d]; ok {
			return w
		}
	}
	return d.Weight()
}

// AddService adds a virtual service with no real servers and no local
// addresses yet.
func (tx *Tx) AddService(sc ServiceConfig) (*Service, error) {
	b := tx.b
	var match *Match
	if sc.Mark != 0 {
		var err error
		if match, err = tx.matchService(&sc); err != nil {
			return nil, err
		}
	}
	where := fmt.Sprintf("service %s", netip.AddrPortFrom(sc.Addr, sc.Port))
	if sc.Mark != 0 {
		where = fmt.Sprintf("service FWM %d", sc.Mark)
	}
	if sc.Protocol != TCP && sc.Protocol != UDP {
		return nil, fmt.Errorf("%s: protocol %v: only tcp and udp", where, sc.Protocol)
	}
	addrs, bits := []netip.Addr{sc.Addr}, sc.Addr.BitLen()
	if match != nil {
		addrs, bits = match.addrs(), match.Prefix().Bits()
	}
	for _, a := range addrs {
		if err := b.cfg.checkVIP(a); err != nil {
			return nil, fmt.Errorf("VIP %s %w", a, err)
		}
	}
	if err := sc.Persistence.check(sc.Addr.Is4()); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if sc.Port == 0 && sc.Mark == 0 && sc.Persistence.Timeout == 0 {
		return nil, fmt.Errorf("%s: port 0 (all ports) needs persistence (-p), as in IPVS", where)
	}
	if err := ValidScheduler(sc.Scheduler); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if err := CheckSchedFlags(sc.Scheduler, sc.SchedFlags); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if err := CheckName(sc.Name); err != nil {
		return nil, fmt.Errorf("%s: name %w", where, err)
	}
	if sc.Synproxy && sc.Protocol != TCP {
		return nil, fmt.Errorf("%s: only a TCP service can have a SYN proxy", where)
	}
	if err := sc.ClientAddr.check(sc.Protocol); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if err := sc.Timestamps.check(sc.Protocol); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	to := tx.DefaultTimeouts()
	if sc.Timeouts != nil {
		to = *sc.Timeouts
	}
	if err := to.Check(); err != nil {
		return nil, fmt.Errorf("%s: timeouts: %w", where, err)
	}
	key := svcKey{addr: sc.Addr.As16(), port: sc.Port, proto: sc.Protocol, mark: sc.Mark}
	if old := tx.lookup(key); old != nil {
		return nil, fmt.Errorf("service %s: %w", old, ErrServiceExists)
	}
	vips := make([]addr16, len(addrs))
	for i, a := range addrs {
		if err := tx.claim(a, roleVIP); err != nil {
			for _, c := range addrs[:i] {
				tx.release(c, roleVIP) // the claims made so far: nothing of a refused service stays
			}
			return nil, fmt.Errorf("VIP %s %w", a, err)
		}
		vips[i] = a.As16()
	}
	b.seq++
	s := &Service{Addr: sc.Addr, Port: sc.Port, Protocol: sc.Protocol, Mark: sc.Mark, key: key, seq: b.seq, readers: b.readers, vips: vips, bits: bits}
	s.match.Store(match)
	s.name.Store(&sc.Name)
	s.schedName.Store(&sc.Scheduler)
	s.schedFlags.Store(uint32(sc.SchedFlags))
	s.timeouts.Store(&to)
	s.synproxy.Store(sc.Synproxy)
	s.clientAddr.Store(uint32(sc.ClientAddr))
	s.timestamps.Store(uint32(sc.Timestamps))
	if p := sc.Persistence.Normal(sc.Addr.Is4()); p.Timeout > 0 {
		s.tmpl.Store(new(templates))
		s.persist.Store(&p)
	}
	s.dests.Store(&destSet{sched: newScheduler(sc.Scheduler, sc.SchedFlags, nil)})
	s.laddrs.Store(&[]*LocalAddr{})
	tx.added = append(tx.added, s)
	tx.addedByKey[key] = s
	tx.list = nil
	tx.stage(s).fresh = true
	tx.n++
	return s, nil
}

// DeleteService removes a virtual service. New flows to it are dropped as
// no_service; its open connections continue until they end, as in IPVS.
func (tx *Tx) DeleteService(s *Service) {
	if tx.live(s) != nil {
		return // already gone
	}
	tx.deleteService(s)
}

// deleteService deletes a service the Tx holds.
func (tx *Tx) deleteService(s *Service) {
	if m := s.match.Load(); m != nil {
		for _, a := range m.addrs() {
			tx.release(a, roleVIP)
		}
	} else {
		tx.release(s.Addr, roleVIP)
	}
	for _, l := range tx.LocalAddrs(s) {
		tx.release(l.Addr, roleLIP)
	}
	for _, d := range tx.Dests(s) {
		tx.release(d.Addr, roleRS)
	}
	if st := tx.stages[s]; st != nil && st.fresh {
		delete(tx.stages, s)
		delete(tx.addedByKey, s.key)
		tx.added = slices.DeleteFunc(tx.added, func(x *Service) bool { return x == s })
	} else {
		tx.retiring(tx.LocalAddrs(s))
		if tx.goneSet == nil {
			tx.goneSet = map[*Service]bool{}
		}
		tx.goneSet[s] = true
		tx.gone = append(tx.gone, s)
	}
	tx.list = nil
	tx.n++
}

// Clear removes every service (ipvsadm -C).
func (tx *Tx) Clear() {
	for _, s := range slices.Clone(tx.services()) {
		tx.deleteService(s)
	}
}

// SetName names a service (its label in metrics).
func (tx *Tx) SetName(s *Service, name string) error {
	if err := CheckName(name); err != nil {
		return fmt.Errorf("service %s: name %w", s, err)
	}
	if name != s.Name() {
		tx.stage(s).name = &name
		tx.n++
	}
	return nil
}

// SetScheduler switches a service's scheduler and its flags (which must
// be the scheduler's: CheckSchedFlags) for new connections.
func (tx *Tx) SetScheduler(s *Service, name string, flags SchedFlags) error {
	if err := ValidScheduler(name); err != nil {
		return fmt.Errorf("service %s: %w", s, err)
	}
	if err := CheckSchedFlags(name, flags); err != nil {
		return fmt.Errorf("service %s: %w", s, err)
	}
	st := tx.stage(s)
	st.sched, st.flags = &name, flags
	tx.n++
	return nil
}

// SetSynproxy turns the SYN proxy on or off for new connections (ipvsadm
// -j); connections already open keep the way they were made.
func (tx *Tx) SetSynproxy(s *Service, on bool) error {
	if on && s.Protocol != TCP {
		return fmt.Errorf("service %s: only a TCP service can have a SYN proxy", s)
	}
	tx.stage(s).synproxy = &on
	tx.n++
	return nil
}

// SetClientAddr changes how the real servers learn the client's address,
// for new connections; open ones keep the way they were made.
func (tx *Tx) SetClientAddr(s *Service, c ClientAddr) error {
	if err := c.check(s.Protocol); err != nil {
		return fmt.Errorf("service %s: %w", s, err)
	}
	tx.stage(s).client = &c
	tx.n++
	return nil
}

// SetTimestamps changes what a plain TCP service does with the client's
// timestamps (seq.go), for new connections; open ones keep theirs.
func (tx *Tx) SetTimestamps(s *Service, t Timestamps) error {
	if err := t.check(s.Protocol); err != nil {
		return fmt.Errorf("service %s: %w", s, err)
	}
	tx.stage(s).ts = &t
	tx.n++
	return nil
}

// SetTimeouts replaces a service's timeouts; open connections take them at
// their next packet.
func (tx *Tx) SetTimeouts(s *Service, t Timeouts) error {
	if err := t.Check(); err != nil {
		return fmt.Errorf("service %s: timeouts: %w", s, err)
	}
	tx.stage(s).timeouts = &t
	tx.n++
	return nil
}

// SetPersistence changes a service's persistence (Timeout 0 turns it
// off). Its templates are kept when only the timeout changes (each takes
// the new one at its next use), and dropped when the netmask changes or
// persistence goes: their clients are scheduled again.
func (tx *Tx) SetPersistence(s *Service, p Persistence) error {
	if err := p.check(s.Addr.Is4()); err != nil {
		return fmt.Errorf("service %s: %w", s, err)
	}
	if s.Port == 0 && s.Mark == 0 && p.Timeout == 0 {
		return fmt.Errorf("service %s: port 0 (all ports) needs persistence (-p), as in IPVS", s)
	}
	p = p.Normal(s.Addr.Is4())
	tx.stage(s).persist = &p
	tx.n++
	return nil
}

// Persistence is a service's persistence as the transaction leaves it.
func (tx *Tx) Persistence(s *Service) Persistence {
	if st := tx.stages[s]; st != nil && st.persist != nil {
		return *st.persist
	}
	return s.Persistence()
}

// Timeouts are a service's timeouts as the transaction leaves them.
func (tx *Tx) Timeouts(s *Service) Timeouts {
	if st := tx.stages[s]; st != nil && st.timeouts != nil {
		return *st.timeouts
	}
	return s.Timeouts()
}

// AddDest adds a real server to a service.
func (tx *Tx) AddDest(s *Service, addr netip.Addr, port uint16, weight int) (*Dest, error) {
	rs := netip.AddrPortFrom(addr, port)
	if err := tx.live(s); err != nil {
		return nil, err
	}
	if err := tx.b.cfg.checkRS(addr, port, s.Port == 0); err != nil {
		return nil, fmt.Errorf("real server %s %w", rs, err)
	}
	if err := tx.checkServerSide(s, addr); err != nil {
		return nil, fmt.Errorf("real server %s %w", rs, err)
	}
	if err := checkWeight(weight); err != nil {
		return nil, fmt.Errorf("real server %s %w", rs, err)
	}
	st := tx.stage(s)
	if st.dest(addr, port) != nil {
		return nil, fmt.Errorf("real server %s: %w", rs, ErrDestExists)
	}
	if err := tx.claim(addr, roleRS); err != nil {
		return nil, fmt.Errorf("real server %s %w", rs, err)
	}
	d := s.newDest(addr, port, weight)
	// A server that another entry already reaches has a known next hop:
	// the new entry starts with it, so its first connection does not
	// wait for a resolution (no_neighbor).
	if u := tx.b.idx.use[addr]; u != nil {
		d.mac.Store(u.mac.Load())
	}
	st.mutable()
	st.dests = append(st.dests, d)
	st.byKey[destKey{addr, port}] = d
	st.isNew[d] = true
	tx.n++
	return d, nil
}

// SetWeight changes a real server's weight; 0 drains it: no new
// connections, existing ones continue.
func (tx *Tx) SetWeight(s *Service, addr netip.Addr, port uint16, weight int) error {
	if err := checkWeight(weight); err != nil {
		return fmt.Errorf("real server %s %w", netip.AddrPortFrom(addr, port), err)
	}
	st := tx.stage(s)
	d := st.dest(addr, port)
	if d == nil {
		return fmt.Errorf("real server %s: %w", netip.AddrPortFrom(addr, port), ErrNoDest)
	}
	if st.isNew[d] {
		d.weight.Store(int32(weight)) // not published yet
	} else {
		st.weights[d] = weight
	}
	tx.n++
	return nil
}

// DeleteDest removes a real server. Its open connections continue until
// they close or expire, as in IPVS.
func (tx *Tx) DeleteDest(s *Service, addr netip.Addr, port uint16) error {
	if err := tx.live(s); err != nil {
		return err
	}
	st := tx.stage(s)
	d := st.dest(addr, port)
	if d == nil {
		return fmt.Errorf("real server %s: %w", netip.AddrPortFrom(addr, port), ErrNoDest)
	}
	st.mutable()
	st.dests = slices.DeleteFunc(st.dests, func(x *Dest) bool { return x == d })
	delete(st.byKey, destKey{addr, port})
	delete(st.isNew, d)
	delete(st.weights, d)
	delete(st.thresh, d)
	tx.release(addr, roleRS)
	tx.n++
	return nil
}

// AddLocalAddr adds a LIP to a service.
func (tx *Tx) AddLocalAddr(s *Service, addr netip.Addr) (*LocalAddr, error) {
	if err := tx.live(s); err != nil {
		return nil, err
	}
	if err := tx.b.cfg.checkLIP(addr); err != nil {
		return nil, fmt.Errorf("local address %s %w", addr, err)
	}
	if err := tx.checkServerSide(s, addr); err != nil {
		return nil, fmt.Errorf("local address %s %w", addr, err)
	}
	cur := tx.LocalAddrs(s)
	if slices.ContainsFunc(cur, func(l *LocalAddr) bool { return l.Addr == addr }) {
		return nil, fmt.Errorf("local address %s: %w", addr, ErrLocalAddrExists)
	}
	if err := tx.claim(addr, roleLIP); err != nil {
		return nil, fmt.Errorf("local address %s %w", addr, err)
	}
	l := &LocalAddr{Addr: addr, a16: addr.As16()}
	l.cursor.Store(rand.Uint32()) // start at a random port: a restart does not reuse the same ports first
	next := append(slices.Clone(cur), l)
	tx.stage(s).laddrs = &next
	tx.n++
	return l, nil
}

// DeleteLocalAddr takes a LIP off a service. Connections bound to it keep
// working until they end.
func (tx *Tx) DeleteLocalAddr(s *Service, addr netip.Addr) error {
	if err := tx.live(s); err != nil {
		return err
	}
	cur := tx.LocalAddrs(s)
	i := slices.IndexFunc(cur, func(l *LocalAddr) bool { return l.Addr == addr })
	if i < 0 {
		return fmt.Errorf("local address %s: %w", addr, ErrNoLocalAddr)
	}
	st := tx.stage(s)
	next := slices.Delete(slices.Clone(cur), i, i+1)
	st.laddrs = &next
	st.retire = append(st.retire, cur[i])
	tx.release(addr, roleLIP)
	tx.retiring(cur[i : i+1])
	tx.n++
	return nil
}

// SetDefaultTimeouts sets the timeouts services made later get.
func (tx *Tx) SetDefaultTimeouts(t Timeouts) error {
	if err := t.Check(); err != nil {
		return fmt.Errorf("timeouts: %w", err)
	}
	tx.deflt = &t
	tx.n++
	return nil
}

// DefaultTimeouts are the timeouts a service made now would get.
func (tx *Tx) DefaultTimeouts() Timeouts {
	if tx.deflt != nil {
		return *tx.deflt
	}
	return tx.b.cfg.Timeouts
}

// commit publishes the staged changes: each service's own lists first, then
// the address index and the balancer's lookup snapshot, each by what the
// Tx changed. A LIP taken off (or a deleted service's VIP) that open
// connections still use keeps its count in the snapshot, so the stack
// keeps answering for it, until the sweep finds them ended
// (pruneRetired). Caller holds b.mu.
func (tx *Tx) commit() {
	b := tx.b
	if tx.deflt != nil {
		b.cfg.Timeouts = *tx.deflt
	}
	vips, lips := map[addr16]int32{}, map[addr16]int32{}
	var newDests []*Dest
	for s, st := range tx.stages {
		var old []*LocalAddr
		if !st.fresh {
			old = s.LocalAddrs()
		}
		was := s.Persistence()
		s.commit(st)
		if now := s.Persistence(); was.Timeout > 0 && (now.Timeout == 0 || now.Mask != was.Mask) {
			b.clearTemplates(s) // keyed by the old mask, or of no use
		}
		if st.fresh {
			for _, a := range s.vips {
				vips[a]++
			}
		}
		if st.laddrs != nil {
			for _, l := range *st.laddrs {
				if !slices.Contains(old, l) {
					lips[l.a16]++
				}
			}
			for _, l := range old {
				if !slices.Contains(*st.laddrs, l) {
					b.retireLIP(l, lips)
				}
			}
		}
		for _, d := range st.dests {
			if st.isNew[d] {
				newDests = append(newDests, d)
			}
		}
	}
	for _, s := range tx.gone {
		b.clearTemplates(s)
		if s.conns() > 0 {
			b.retiredSvcs = append(b.retiredSvcs, s)
		} else {
			for _, a := range s.vips {
				vips[a]--
			}
		}
		for _, l := range s.LocalAddrs() {
			b.retireLIP(l, lips)
		}
	}
	b.idx.apply(tx.delta)
	for _, d := range newDests {
		// Where the next hop it learns is kept for the address; one it
		// was given before (a health check's, a test's) is kept there now.
		u := b.idx.use[d.Addr]
		if m := d.mac.Load(); m != 0 {
			u.mac.Store(m)
		}
		d.hop.Store(u)
	}
	b.pruneRetired(vips, lips)
	tx.commitMarks()
	if tx.n > 0 {
		b.publish(tx.added, tx.gone, vips, lips, newDests)
	}
}

// retireLIP takes a LIP off the snapshot's count, or keeps it there while
// connections use it. Caller holds b.mu.
func (b *Balancer) retireLIP(l *LocalAddr, lips map[addr16]int32) {
	if l.inUse.Load() > 0 {
		b.retired = append(b.retired, l)
		return
	}
	lips[l.a16]--
}

// commit applies a Tx's stage to the service.
func (s *Service) commit(st *stage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.name != nil {
		s.name.Store(st.name)
	}
	if st.synproxy != nil {
		s.synproxy.Store(*st.synproxy)
	}
	if st.client != nil {
		s.clientAddr.Store(uint32(*st.client))
	}
	if st.ts != nil {
		s.timestamps.Store(uint32(*st.ts))
	}
	if st.timeouts != nil {
		s.timeouts.Store(st.timeouts)
	}
	if st.persist != nil {
		if st.persist.Timeout > 0 && s.tmpl.Load() == nil {
			s.tmpl.Store(new(templates)) // before persist: a reader that sees one sees the other
		}
		s.persist.Store(st.persist)
	}
	if st.laddrs != nil {
		s.laddrs.Store(st.laddrs)
	}
	if st.sched != nil {
		s.schedName.Store(st.sched)
		s.schedFlags.Store(uint32(st.flags))
	}
	if st.defence != nil {
		s.install(st.defence)
	}
	next, changed := s.dests.Load().all, st.sched != nil || len(st.weights) > 0
	if st.owned {
		// The servers taken off keep their counts in the service's.
		for _, d := range next {
			if st.dest(d.Addr, d.Port) != d {
				s.gone.add(d.Traffic())
				d.gone.Store(true) // its templates are no longer used (persist.go)
			}
		}
		next, changed = st.dests, true
	}
	for d, w := range st.weights {
		d.weight.Store(int32(w))
	}
	for d, t := range st.thresh {
		d.setThresholds(t)
	}
	if changed {
		s.publish(next)
	}
}

// The address index keeps the kinds of address apart: a VIP, a LIP and a
// real server are three different hosts, and none of them is tapvs.
type addrRole uint8

const (
	roleVIP addrRole = iota
	roleLIP
	roleRS
	numRoles
)

var roleNames = [numRoles]string{"a VIP", "a local address", "a real server"}

// addrIndex counts the published services' addresses by role; a Tx
// counts its changes apart (addrCounts) and applies them at commit.
type addrIndex struct {
	use map[netip.Addr]*addrUse
}

type addrUse struct {
	n [numRoles]int32
	// mac is the next hop the last entry of this address to learn one
	// learned (Dest.SetNextHopMAC): a new entry of the address starts
	// with it.
	mac atomic.Uint64
}

type addrCounts map[netip.Addr]*[numRoles]int32

func newAddrIndex() *addrIndex { return &addrIndex{use: map[netip.Addr]*addrUse{}} }

// apply adds a Tx's counts, letting go of addresses no longer used.
func (x *addrIndex) apply(d addrCounts) {
	for a, c := range d {
		u := x.use[a]
		if u == nil {
			u = &addrUse{}
			x.use[a] = u
		}
		zero := true
		for r := range c {
			u.n[r] += c[r]
			zero = zero && u.n[r] == 0
		}
		if zero {
			delete(x.use, a)
		}
	}
}

// count is how many of the Tx's services hold a in role r.
func (tx *Tx) count(a netip.Addr, r addrRole) int32 {
	var n int32
	if u := tx.b.idx.use[a]; u != nil {
		n = u.n[r]
	}
	if c := tx.delta[a]; c != nil {
		n += c[r]
	}
	return n
}

func (tx *Tx) release(a netip.Addr, r addrRole) {
	if tx.count(a, r) > 0 {
		tx.counts(a)[r]--
	}
}

func (tx *Tx) counts(a netip.Addr) *[numRoles]int32 {
	c := tx.delta[a]
	if c == nil {
		c = new([numRoles]int32)
		tx.delta[a] = c
	}
	return c
}

// retiring notes LIPs taken off that connections still use: until those
// end they stay the server side's addresses, which no VIP or real server
// may take.
func (tx *Tx) retiring(ls []*LocalAddr) {
	if tx.retired == nil {
		return // built from the Tx's deletions when first needed
	}
	for _, l := range ls {
		if n := l.inUse.Load(); n > 0 {
			tx.retired[l.Addr] += n
		}
	}
}

// retiredConns is how many connections use a as a retiring LIP.
func (tx *Tx) retiredConns(a netip.Addr) int64 {
	if tx.retired == nil {
		tx.retired = map[netip.Addr]int64{}
		tx.retiring(tx.b.retired)
		for _, s := range tx.gone {
			tx.retiring(s.LocalAddrs())
		}
		for _, st := range tx.stages {
			tx.retiring(st.retire)
		}
	}
	return tx.retired[a]
}

// claim takes address a for role r, unless it already has another role.
func (tx *Tx) claim(a netip.Addr, r addrRole) error {
	for other := range numRoles {
		if other != r && tx.count(a, other) > 0 {
			return fmt.Errorf("is already %s", roleNames[other])
		}
	}
	if r != roleLIP {
		if n := tx.retiredConns(a); n > 0 {
			return fmt.Errorf("is still the local address of %d connections", n)
		}
	}
	tx.counts(a)[r]++
	return nil
}

// DryRun runs fn in a transaction on an empty balancer with cfg's
// addressing, and throws it away: the rules of a Tx checked without a
// running balancer (a configuration file's validation).
func DryRun(cfg Config, fn func(tx *Tx) error) error {
	b := &Balancer{cfg: cfg, readers: 1, idx: newAddrIndex()}
	b.set.Store(&serviceSet{})
	err := b.Update(func(tx *Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errDryRun
	})
	if err == errDryRun {
		return nil
	}
	return err
}

var errDryRun = errors.New("dry run")
