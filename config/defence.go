package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	// Aliased: this file's func defence reads a service's section.
	srcdefence "github.com/tapvs/tapvs/defence"
	"github.com/tapvs/tapvs/nat"
)

// A service's defence (packages defence and nat's defence.go):
//
//	allow: [10.0.0.0/8, 192.0.2.7]   # only these sources may open connections
//	deny: [198.51.100.0/24]          # these may not; checked before allow
//	limits: {source_cps: 50, source_conns: 100, half_open: 10000}
//
// A bare IPv4 address is a /32. An IPv6 service's lists hold IPv6
// prefixes of at most /64 (an IPv6 client is listed by its /64), an IPv4
// service's IPv4 ones. Connections already open are not touched by a
// reload that changes these.

type rawSvcLimits struct {
	SourceCPS   int `mapstructure:"source_cps"`
	SourceConns int `mapstructure:"source_conns"`
	HalfOpen    int `mapstructure:"half_open"`
}

// prefixList reads a service's allow or deny list (field f) for a service
// whose clients are of vip's family (invalid: refused already, no check).
func prefixList(e *errs, f string, in []string, vip netip.Addr) []netip.Prefix {
	if len(in) > srcdefence.MaxCIDRs {
		e.add(f, "%d prefixes: at most %d", len(in), srcdefence.MaxCIDRs)
		return nil
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]int{}
	for j, s := range in {
		p, err := srcdefence.ParsePrefix(s)
		if err != nil {
			e.add(fmt.Sprintf("%s[%d]", f, j), "%v", err)
			continue
		}
		if vip.IsValid() && p.Addr().Is6() != vip.Is6() {
			e.add(fmt.Sprintf("%s[%d]", f, j), "%s is %s and the service's VIP %s is %s: a list holds prefixes of its clients' family", p, family(p.Addr()), vip, family(vip))
			continue
		}
		if k, dup := seen[p]; dup {
			e.add(fmt.Sprintf("%s[%d]", f, j), "%s is %s[%d] already", p, f[strings.LastIndexByte(f, '.')+1:], k)
			continue
		}
		seen[p] = j
		out = append(out, p)
	}
	return out
}

func defence(e *errs, f string, r rawService, s *Service) {
	s.Allow = prefixList(e, f+".allow", r.Allow, s.VIP)
	s.Deny = prefixList(e, f+".deny", r.Deny, s.VIP)
	l := r.Limits
	for _, x := range []struct {
		name string
		v    int
		max  int
	}{{"source_cps", l.SourceCPS, nat.MaxSourceLimit}, {"source_conns", l.SourceConns, nat.MaxSourceLimit}, {"half_open", l.HalfOpen, nat.MaxHalfOpen}} {
		if x.v < 0 || x.v > x.max {
			e.add(f+".limits."+x.name, "%d is out of range 0 (no limit)-%d", x.v, x.max)
		}
	}
	if l.HalfOpen != 0 && s.Protocol == nat.UDP {
		e.add(f+".limits.half_open", "only a TCP service has half-open connections")
	}
	s.Limits = nat.Limits{SourceCPS: l.SourceCPS, SourceConns: l.SourceConns, HalfOpen: l.HalfOpen}
}

// applyDefence makes a running service's lists and limits sc's, where
// decide says so.
func (r *reconcile) applyDefence(svc *nat.Service, k ServiceKey, sc Service, old *Service) (errs []error) {
	tx := r.tx
	// Lists compare as their sorted text (a slice is not comparable).
	prefixes := func(p []netip.Prefix) val { return some(prefixesText(p)) }
	limits := func(l nat.Limits) val { return some(limitsValue(l)) }
	r.setting(&errs, k, "allow", prefixes(tx.Allow(svc)), prefixes(sc.Allow), old,
		func(s *Service) val { return prefixes(s.Allow) }, func() error { return tx.SetAllow(svc, sc.Allow) })
	r.setting(&errs, k, "deny", prefixes(tx.Deny(svc)), prefixes(sc.Deny), old,
		func(s *Service) val { return prefixes(s.Deny) }, func() error { return tx.SetDeny(svc, sc.Deny) })
	r.setting(&errs, k, "limits", limits(tx.Limits(svc)), limits(sc.Limits), old,
		func(s *Service) val { return limits(s.Limits) }, func() error { return tx.SetLimits(svc, sc.Limits) })
	return errs
}

func prefixesText(p []netip.Prefix) string {
	if len(p) == 0 {
		return "[]"
	}
	s := make([]string, len(p))
	for i, x := range p {
		s[i] = x.String()
	}
	slices.Sort(s)
	return "[" + strings.Join(s, " ") + "]"
}

// limitsValue is a service's limits as a reload compares and names them.
type limitsValue nat.Limits

func (l limitsValue) String() string { return limitsText(nat.Limits(l)) }

func limitsText(l nat.Limits) string {
	return fmt.Sprintf("(source_cps %d, source_conns %d, half_open %d)", l.SourceCPS, l.SourceConns, l.HalfOpen)
}
