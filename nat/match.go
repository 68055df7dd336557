package nat

import (
	"encoding/binary"
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
// selector the configuration defines (its marks: list): a VIP or a prefix
// of up to 256 VIPs (172.25.254.96/29), a protocol and a set of ports (80
// and 443; 8000-8099). A service made on a mark
// (ipvsadm -A -f MARK) takes every new flow to one of the selector's ports
// that no VIP:port service of its own has: one service, one scheduler, and
// with persistence one template per client network across all its VIPs
// and ports, as IPVS's fwmark + persistence keeps a client on one server
// for 80 and 443 together (its fwmark templates are keyed by the mark, not
// the VIP).
//
// The order a new flow's service is found in: the exact VIP:port service,
// then the VIP's selectors, then the VIP's port-0 service (persist.go).
// Selectors of one VIP and protocol never overlap (SetMarks refuses it),
// so at most one matches. A real server of a match service on port 0
// takes the port the client asked for, as IPVS's fwmark services do.
//
// The data path reads the selectors only when the VIP:port lookup misses:
// the snapshot keeps the match services by VIP and protocol in a map made
// at commit and never written after, a prefix's service under each of its
// addresses (so a prefix costs the data path what one VIP does, and a
// VIP:port service of an address in it still comes first); a service's ports are an immutable
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
	// Addr and Bits are the selector's VIPs: the prefix Addr/Bits (Addr
	// its first address), or Addr alone when Bits is 0 or Addr's length.
	Addr     netip.Addr
	Bits     int
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

// MaxMatchAddrs bounds the VIPs of a selector's prefix (IPv4 /24, IPv6
// /120): each is a key of the snapshot's match map and an address the
// stack answers for, made at commit so that the data path looks one up by
// exact address as it does a single VIP.
const MaxMatchAddrs = 256

// maxHostBits is how many host bits a selector's prefix may have.
const maxHostBits = 8 // MaxMatchAddrs = 1 << maxHostBits

// Prefix is the selector's VIPs as a prefix (Addr's full length for one).
func (m *Match) Prefix() netip.Prefix {
	if m.Bits == 0 {
		return netip.PrefixFrom(m.Addr, m.Addr.BitLen())
	}
	return netip.PrefixFrom(m.Addr, m.Bits)
}

// VIPString is the selector's VIPs as the configuration writes them:
// "172.25.254.100", or "172.25.254.96/29".
func (m *Match) VIPString() string {
	if p := m.Prefix(); p.Bits() != m.Addr.BitLen() {
		return p.String()
	}
	return m.Addr.String()
}

// CheckVIPPrefix refuses a selector's prefix that is not one: host bits
// set, or more than MaxMatchAddrs addresses.
func CheckVIPPrefix(p netip.Prefix) error {
	top := p.Addr().BitLen()
	if !p.IsValid() {
		return fmt.Errorf("%s is not a prefix", p)
	}
	if p.Bits() < top-maxHostBits {
		return fmt.Errorf("%s is more than %d addresses (IPv4 /%d or longer, IPv6 /%d or longer)", p, MaxMatchAddrs, 32-maxHostBits, 128-maxHostBits)
	}
	if m := p.Masked(); m != p {
		return fmt.Errorf("%s has host bits set: its prefix is %s", p, m)
	}
	return nil
}

// addrs are the selector's VIPs, first (Addr) to last.
func (m *Match) addrs() []netip.Addr {
	p := m.Prefix()
	n := 1 << (m.Addr.BitLen() - p.Bits())
	out := make([]netip.Addr, 0, n)
	for a := p.Addr(); len(out) < n; a = a.Next() {
		out = append(out, a)
	}
	return out
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

// MarkAddr is a mark as IPVS writes it in a fwmark template's virtual
// address (ip_vs_sched_persist's `union nf_inet_addr fwmark = { .ip =
// htonl(svc->fwmark) }`): its first four bytes, the rest zero. ipvsadm
// -lnc prints mark 1's as 0.0.0.1 for IPv4 and 0:1:: for IPv6.
func MarkAddr(mark uint32, v4 bool) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint32(b[:4], mark)
	if v4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

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
			// Every VIP of the selector's prefix: the data path finds a
			// prefix's service by exact address, as a single VIP's.
			for _, a := range s.vips {
				k := matchKey{a, s.Protocol}
				n[k] = append(n[k], s)
			}
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

// VIPPrefix is the addresses the service answers on: its VIP alone, or
// its selector's prefix (a cluster announces it as one route).
func (s *Service) VIPPrefix() netip.Prefix { return netip.PrefixFrom(s.Addr, s.bits) }

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
		if err := CheckVIPPrefix(m.Prefix()); err != nil {
			return fmt.Errorf("mark %d: VIP %w", n, err)
		}
		if m.Bits == m.Addr.BitLen() {
			m.Bits = 0 // one address, written as a prefix: the same selector
		}
		for _, a := range m.addrs()[1:] {
			if err := tx.b.cfg.checkVIP(a); err != nil {
				return fmt.Errorf("mark %d: VIP %s %w", n, a, err)
			}
		}
		var err error
		if m, err = m.Normal(); err != nil {
			return fmt.Errorf("mark %d: %w", n, err)
		}
		for _, o := range slices.Sorted(maps.Keys(norm)) {
			om := norm[o]
			// Prefixes overlap when one holds the other: a VIP of both
			// would find two selectors for a port of both.
			if !om.Prefix().Overlaps(m.Prefix()) || om.Protocol != m.Protocol {
				continue
			}
			if p, ok := m.overlap(&om); ok {
				return fmt.Errorf("mark %d: port %d of %s %s is mark %d's too: selectors of one VIP may not overlap", n, p, strings.ToLower(m.Protocol.String()), m.VIPString(), o)
			}
		}
		norm[n] = m
	}
	cur := tx.b.marks
	if tx.marks != nil {
		cur = tx.marks.defs
	}
	if maps.EqualFunc(norm, cur, func(a, b Match) bool {
		return a.Addr == b.Addr && a.Bits == b.Bits && a.Protocol == b.Protocol && slices.Equal(a.Ports, b.Ports)
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
		case m.Prefix() != s.VIPPrefix() || m.Protocol != s.Protocol:
			// The service's VIPs are claimed, counted and in the match
			// map by address: another prefix is another service.
			return fmt.Errorf("mark %d moves to %s %s, but service %s uses it: delete the service first", s.Mark, strings.ToLower(m.Protocol.String()), m.VIPString(), s)
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
