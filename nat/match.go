package nat

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Match services are what a firewall mark does on a kernel LVS, without
// the mark: tapvs sees no netfilter marks (it reads frames from a TAP, not
// the kernel's packets), so a mark number here is only the name of a
// selector the configuration defines (its marks: list): a VIP, a protocol
// and a set of ports (80 and 443; 8000-8099). A service made on a mark
// (ipvsadm -A -f MARK) takes every new flow to one of the selector's ports
// that no VIP:port service of its own has: one service, one scheduler, and
// with persistence one template per client network across all its ports,
// as IPVS's fwmark + persistence keeps a client on one server for 80 and
// 443 together.
//
// The order a new flow's service is found in: the exact VIP:port service,
// then the VIP's selectors, then the VIP's port-0 service (persist.go).
// Selectors of one VIP and protocol never overlap (SetMarks refuses it),
// so at most one matches. A real server of a match service on port 0
// takes the port the client asked for, as IPVS's fwmark services do.
//
// The data path reads the selectors only when the VIP:port lookup misses:
// the snapshot keeps the match services by VIP and protocol in a map made
// at commit and never written after; a service's ports are an immutable
// list behind an atomic pointer, swapped whole when a reload changes them.

// PortRange is ports Lo to Hi, both included.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Match is a selector: what a mark names.
type Match struct {
	Addr     netip.Addr
	Protocol Protocol
	// Ports are sorted and disjoint, adjacent ranges not merged (as
	// written, for listings); Normal makes them so.
	Ports []PortRange
}

// has reports whether port is one of m's.
func (m *Match) has(port uint16) bool {
	for _, r := range m.Ports {
		if port < r.Lo {
			return false
		}
		if port <= r.Hi {
			return true
		}
	}
	return false
}

// Normal sorts m's ranges; it refuses an empty one, port 0 and ranges
// that overlap.
func (m Match) Normal() (Match, error) {
	if len(m.Ports) == 0 {
		return m, errors.New("has no ports")
	}
	p := slices.Clone(m.Ports)
	slices.SortFunc(p, func(a, b PortRange) int { return int(a.Lo) - int(b.Lo) })
	for i, r := range p {
		if r.Lo == 0 || r.Lo > r.Hi {
			return m, fmt.Errorf("port range %d-%d is not ports 1-65535, low to high", r.Lo, r.Hi)
		}
		if i > 0 && r.Lo <= p[i-1].Hi {
			return m, fmt.Errorf("ports %s and %s overlap", p[i-1], r)
		}
	}
	m.Ports = p
	return m, nil
}

// overlap is a port two selectors share, if any.
func (m *Match) overlap(o *Match) (uint16, bool) {
	for _, a := range m.Ports {
		for _, b := range o.Ports {
			if a.Lo <= b.Hi && b.Lo <= a.Hi {
				return max(a.Lo, b.Lo), true
			}
		}
	}
	return 0, false
}

// PortsString is the ports as the configuration writes them: "80,443,8000-8099".
func (m Match) PortsString() string {
	s := make([]string, len(m.Ports))
	for i, r := range m.Ports {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

// MaxMark bounds a mark, as IPVS's fwmark (a uint32, 0 being none).
const MaxMark = 1<<32 - 1

// matchKey is what the snapshot keeps match services by.
type matchKey struct {
	addr  addr16
	proto Protocol
}

// match finds the match service of a VIP whose selector has port: the
// data path's second lookup of a new flow, after VIP:port missed.
func (set *serviceSet) match(a *addr16, proto Protocol, port uint16) *Service {
	for _, s := range set.matches[matchKey{*a, proto}] {
		if s.match.Load().has(port) {
			return s
		}
	}
	return nil
}

// nextMatches is the snapshot's match services after added and removed:
// m itself (shared, never written) when none of them is a match service.
func nextMatches(m map[matchKey][]*Service, added, removed []*Service) map[matchKey][]*Service {
	if !slices.ContainsFunc(added, isMatch) && !slices.ContainsFunc(removed, isMatch) {
		return m
	}
	n := make(map[matchKey][]*Service, len(m))
	for k, l := range m {
		l = slices.DeleteFunc(slices.Clone(l), func(s *Service) bool { return slices.Contains(removed, s) })
		if len(l) > 0 {
			n[k] = l
		}
	}
	for _, s := range added {
		if isMatch(s) {
			k := matchKey{s.key.addr, s.Protocol}
			n[k] = append(n[k], s)
		}
	}
	if len(n) == 0 {
		return nil
	}
	return n
}

func isMatch(s *Service) bool { return s.Mark != 0 }

// Selector is a match service's selector (nil for a VIP:port service).
func (s *Service) Selector() *Match { return s.match.Load() }

// txMarks is what a Tx changes in the marks: the definitions as they will
// be, and the match services whose ports change with them.
type txMarks struct {
	defs    map[uint32]Match
	rematch map[*Service]*Match
}

// Marks are the mark definitions as the balancer holds them.
func (b *Balancer) Marks() map[uint32]Match {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.marks)
}

// mark is a mark's definition as the Tx leaves it.
func (tx *Tx) mark(n uint32) (Match, bool) {
	defs := tx.b.marks
	if tx.marks != nil {
		defs = tx.marks.defs
	}
	m, ok := defs[n]
	return m, ok
}

// SetMarks replaces the mark definitions (the configuration's marks:).
// Selectors of one VIP and protocol may not overlap. A running match
// service keeps its mark: its mark must stay defined, on its VIP and
// protocol, and takes the new ports at commit.
func (tx *Tx) SetMarks(defs map[uint32]Match) error {
	norm := make(map[uint32]Match, len(defs))
	for _, n := range slices.Sorted(maps.Keys(defs)) {
		m := defs[n]
		if n == 0 {
			return errors.New("mark 0 is no mark (1-4294967295)")
		}
		if m.Protocol != TCP && m.Protocol != UDP {
			return fmt.Errorf("mark %d: protocol %v: only tcp and udp", n, m.Protocol)
		}
		if err := tx.b.cfg.checkVIP(m.Addr); err != nil {
			return fmt.Errorf("mark %d: VIP %s %w", n, m.Addr, err)
		}
		var err error
		if m, err = m.Normal(); err != nil {
			return fmt.Errorf("mark %d: %w", n, err)
		}
		for _, o := range slices.Sorted(maps.Keys(norm)) {
			om := norm[o]
			if om.Addr != m.Addr || om.Protocol != m.Protocol {
				continue
			}
			if p, ok := m.overlap(&om); ok {
				return fmt.Errorf("mark %d: port %d of %s %s is mark %d's too: selectors of one VIP may not overlap", n, p, strings.ToLower(m.Protocol.String()), m.Addr, o)
			}
		}
		norm[n] = m
	}
	cur := tx.b.marks
	if tx.marks != nil {
		cur = tx.marks.defs
	}
	if maps.EqualFunc(norm, cur, func(a, b Match) bool {
		return a.Addr == b.Addr && a.Protocol == b.Protocol && slices.Equal(a.Ports, b.Ports)
	}) {
		return nil // a reload of the same marks changes nothing
	}
	re := map[*Service]*Match{}
	for _, s := range tx.services() {
		if s.Mark == 0 {
			continue
		}
		m, ok := norm[s.Mark]
		switch {
		case !ok:
			return fmt.Errorf("mark %d is no longer defined, but service %s uses it: delete the service first", s.Mark, s)
		case m.Addr != s.Addr || m.Protocol != s.Protocol:
			return fmt.Errorf("mark %d moves to %s %s, but service %s uses it: delete the service first", s.Mark, strings.ToLower(m.Protocol.String()), m.Addr, s)
		}
		re[s] = &m
	}
	tx.marks = &txMarks{defs: norm, rematch: re}
	tx.n++
	return nil
}

// matchService fills a match service's VIP, protocol and port (0) from
// its mark's definition.
func (tx *Tx) matchService(sc *ServiceConfig) (*Match, error) {
	m, ok := tx.mark(sc.Mark)
	if !ok {
		return nil, fmt.Errorf("service FWM %d: mark %d is not defined (the configuration's marks: defines it; tapvs sees no kernel marks)", sc.Mark, sc.Mark)
	}
	sc.Addr, sc.Protocol, sc.Port = m.Addr, m.Protocol, 0
	return &m, nil
}

// MatchService finds a match service by its mark as the transaction
// leaves it so far.
func (tx *Tx) MatchService(mark uint32) (*Service, error) {
	if m, ok := tx.mark(mark); ok {
		if s := tx.lookup(svcKey{addr: m.Addr.As16(), proto: m.Protocol, mark: mark}); s != nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("FWM %d: %w", mark, ErrNoService)
}

// MatchService finds a match service by its mark.
func (b *Balancer) MatchService(mark uint32) (*Service, error) {
	for _, l := range b.set.Load().matches {
		for _, s := range l {
			if s.Mark == mark {
				return s, nil
			}
		}
	}
	return nil, fmt.Errorf("FWM %d: %w", mark, ErrNoService)
}

// commitMarks publishes the Tx's marks. Caller holds b.mu.
func (tx *Tx) commitMarks() {
	if tx.marks == nil {
		return
	}
	tx.b.marks = tx.marks.defs
	for s, m := range tx.marks.rematch {
		s.match.Store(m)
	}
}
