package config

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tapvs/tapvs/nat"
)

// The marks: section: the selectors match services take (nat/match.go).
// tapvs sees no kernel firewall marks: a mark here is only the number a
// service (fwmark: N, ipvsadm -f N) names its selector by.
//
//	marks:
//	  - {mark: 1, vip: 172.25.254.100, protocol: tcp, ports: [80, 443, "8000-8099"]}
//	  - {mark: 2, vip: 172.25.254.96/29, protocol: tcp, ports: [80, 443]}

type rawMark struct {
	Mark     int    `mapstructure:"mark"`
	VIP      string `mapstructure:"vip"`
	Protocol string `mapstructure:"protocol"`
	Ports    []any  `mapstructure:"ports"`
}

// readMarks reads marks: by number. Overlaps between selectors of one VIP
// are the balancer's rule (Tx.SetMarks), checked by the dry run.
func readMarks(e *errs, r *raw, has6 sides6) map[uint32]nat.Match {
	if len(r.Marks) == 0 {
		return nil
	}
	out := map[uint32]nat.Match{}
	seen := map[uint32]string{}
	for i, rm := range r.Marks {
		f := fmt.Sprintf("marks[%d]", i)
		var m nat.Match
		ok := true
		if rm.Mark < 1 || rm.Mark > nat.MaxMark {
			e.add(f+".mark", "%d is not a mark (1-%d)", rm.Mark, uint32(math.MaxUint32))
			ok = false
		} else if prev, dup := seen[uint32(rm.Mark)]; dup {
			e.add(f+".mark", "%d is already defined by %s", rm.Mark, prev)
			ok = false
		}
		if vip, bits, err := vipPrefix(rm.VIP); err != nil {
			e.add(f+".vip", "%v", err)
			ok = false
		} else if vip.Is6() && !has6.client {
			e.add(f+".vip", "%s is IPv6 and interfaces.client has no address6: IPv6 VIPs are answered for by the client side's IPv6 address", vip)
			ok = false
		} else {
			m.Addr, m.Bits = vip, bits
		}
		proto := rm.Protocol
		if proto == "" {
			proto = "tcp"
		}
		if p, err := nat.ParseProtocol(proto); err != nil {
			e.add(f+".protocol", "%v", err)
			ok = false
		} else {
			m.Protocol = p
		}
		if len(rm.Ports) == 0 {
			e.add(f+".ports", "is empty: a selector needs ports (80, or \"8000-8099\")")
			ok = false
		}
		for j, p := range rm.Ports {
			pr, err := portRange(p)
			if err != nil {
				e.add(fmt.Sprintf("%s.ports[%d]", f, j), "%v", err)
				ok = false
				continue
			}
			m.Ports = append(m.Ports, pr)
		}
		if ok {
			if _, err := m.Normal(); err != nil {
				e.add(f+".ports", "%v", err)
				ok = false
			}
		}
		if ok {
			seen[uint32(rm.Mark)] = f
			out[uint32(rm.Mark)] = m
		}
	}
	return out
}

// vipPrefix reads a selector's vip: an address, or a prefix of at most
// nat.MaxMatchAddrs addresses (172.25.254.96/29, 2001:db8::/120), which
// the selector covers as a kernel LVS's fwmark rule covers iptables -d's
// prefix. bits is 0 for an address alone.
func vipPrefix(s string) (netip.Addr, int, error) {
	as, bs, isPrefix := strings.Cut(s, "/")
	a, err := hostAddr(as)
	if err != nil || !isPrefix {
		return a, 0, err
	}
	bits, err := strconv.Atoi(bs)
	if err != nil || bits < 0 || bits > a.BitLen() {
		return netip.Addr{}, 0, fmt.Errorf("%q is not an address or a prefix (172.25.254.96/29)", escape(s))
	}
	if err := nat.CheckVIPPrefix(netip.PrefixFrom(a, bits)); err != nil {
		return netip.Addr{}, 0, err
	}
	if bits == a.BitLen() {
		bits = 0 // a /32 (/128) is the address alone
	}
	return a, bits, nil
}

// portRange reads one of ports: a port (443, or "443") or a range
// ("8000-8099").
func portRange(v any) (nat.PortRange, error) {
	var s string
	switch p := v.(type) {
	case int:
		s = strconv.Itoa(p)
	case string:
		s = p
	default:
		return nat.PortRange{}, fmt.Errorf("%v is not a port or a range (\"8000-8099\")", v)
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, errA := strconv.Atoi(strings.TrimSpace(lo))
	b, errB := strconv.Atoi(strings.TrimSpace(hi))
	switch {
	case errA != nil || errB != nil:
		return nat.PortRange{}, fmt.Errorf("%q is not a port or a range (\"8000-8099\")", escape(s))
	case a < 1 || a > 65535 || b < 1 || b > 65535:
		return nat.PortRange{}, fmt.Errorf("%q is not in ports 1-65535", escape(s))
	case a > b:
		return nat.PortRange{}, fmt.Errorf("%q runs high to low", escape(s))
	}
	return nat.PortRange{Lo: uint16(a), Hi: uint16(b)}, nil
}

// matchService reads a service's fwmark: its VIP and protocol are its
// mark's, its port 0; vip, port and protocol are the mark's to say.
func matchService(e *errs, f string, r rawService, marks map[uint32]nat.Match, s *Service) {
	if r.VIP != "" || r.Port != 0 || r.Protocol != "" {
		e.add(f+".fwmark", "a match service takes its vip, protocol and ports from marks: leave vip, port and protocol out")
	}
	if r.FWMark < 1 || r.FWMark > nat.MaxMark {
		e.add(f+".fwmark", "%d is not a mark (1-%d)", r.FWMark, uint32(math.MaxUint32))
		return
	}
	m, ok := marks[uint32(r.FWMark)]
	if !ok {
		e.add(f+".fwmark", "%d is not defined in marks: (tapvs sees no kernel marks: a mark names a selector there)", r.FWMark)
		return
	}
	s.Mark, s.VIP, s.Protocol, s.Port = uint32(r.FWMark), m.Addr, m.Protocol, 0
}

// keyOf is a running service's key: its mark alone for a match service.
func keyOf(s *nat.Service) ServiceKey {
	if s.Mark != 0 {
		return ServiceKey{Mark: s.Mark}
	}
	return ServiceKey{Protocol: s.Protocol, VIP: s.Addr, Port: s.Port}
}

func (sc *Service) key() ServiceKey {
	if sc.Mark != 0 {
		return ServiceKey{Mark: sc.Mark}
	}
	return ServiceKey{Protocol: sc.Protocol, VIP: sc.VIP, Port: sc.Port}
}

// String is the key as tapvsadm and the API write it: "tcp 10.0.0.1:80",
// "fwm 1".
func (k ServiceKey) String() string {
	if k.Mark != 0 {
		return fmt.Sprintf("fwm %d", k.Mark)
	}
	return strings.ToLower(k.Protocol.String()) + " " + netip.AddrPortFrom(k.VIP, k.Port).String()
}

// txService finds the running service of key k.
func txService(tx *nat.Tx, k ServiceKey) (*nat.Service, error) {
	if k.Mark != 0 {
		return tx.MatchService(k.Mark)
	}
	return tx.Service(k.Protocol, k.VIP, k.Port)
}
