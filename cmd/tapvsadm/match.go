package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tapvs/tapvs/control/api"
)

// Match services, ipvsadm's -f MARK: tapvs sees no kernel marks, so the
// number names a selector of tapvs's configuration (marks: a VIP, a
// protocol, ports and ranges). A command names one with c.proto "fwm" and
// c.service the mark, the form of the API's path (/v1/services/fwm/1).

const fwm = "fwm"

// fwmark reads -f as ipvsadm's parse_fwmark does: 1-4294967295.
func fwmark(c *command, u use) error {
	n, err := strconv.ParseUint(u.v, 10, 32)
	if err != nil || n == 0 {
		return usagef("invalid fwmark value `%s' specified", u.v)
	}
	c.proto, c.service = fwm, strconv.FormatUint(n, 10)
	return nil
}

// key is the command's service as the API names it: {"fwmark": N} for a
// match service.
func (c *command) key() api.ServiceKey {
	if c.proto == fwm {
		n, _ := strconv.ParseUint(c.service, 10, 32)
		return api.ServiceKey{FWMark: uint32(n)}
	}
	return api.ServiceKey{Protocol: c.proto, Addr: c.service}
}

// is reports whether s is the command's service.
func (c *command) is(s api.Service) bool {
	if c.proto == fwm {
		return s.FWMark != 0 && strconv.FormatUint(uint64(s.FWMark), 10) == c.service
	}
	return s.FWMark == 0 && s.Protocol == c.proto && s.Addr == c.service
}

// svcIPv6 reports whether a service is IPv6's: a match service by its
// selector's VIP.
func svcIPv6(s api.Service) bool {
	if s.FWMark != 0 {
		p, err := matchPrefix(s)
		return err == nil && p.Addr().Is6()
	}
	return isIPv6(s.Addr)
}

func matchVIP(s api.Service) string {
	if s.Match == nil {
		return ""
	}
	return s.Match.VIP
}

// matchPrefix is a match service's selector's VIPs: a prefix, or one
// address as a full-length prefix.
func matchPrefix(s api.Service) (netip.Prefix, error) {
	v := matchVIP(s)
	if strings.Contains(v, "/") {
		return netip.ParsePrefix(v)
	}
	a, err := netip.ParseAddr(v)
	return netip.PrefixFrom(a, a.BitLen()), err
}

// fwmName is a match service as -L names it: print_service_entry's
// "FWM  %d", "FWM  %d IPv6".
func fwmName(s api.Service) string {
	if svcIPv6(s) {
		return fmt.Sprintf("FWM  %d IPv6", s.FWMark)
	}
	return fmt.Sprintf("FWM  %d", s.FWMark)
}

// fwmRule is a match service as -S names it: "-f %d", "-f %d -6".
func fwmRule(s api.Service) string {
	if svcIPv6(s) {
		return fmt.Sprintf("-f %d -6", s.FWMark)
	}
	return fmt.Sprintf("-f %d", s.FWMark)
}

// svcAddr is a service's VIP:port in -G's and the lists' columns: a
// match service's selector VIP on port 0, or its selector's prefix
// (172.25.254.96/29), which no port follows.
func svcAddr(s api.Service) string {
	if s.FWMark == 0 {
		return s.Addr
	}
	p, err := matchPrefix(s)
	switch {
	case err != nil:
		return fmt.Sprintf("fwm/%d", s.FWMark)
	case p.IsSingleIP():
		return netip.AddrPortFrom(p.Addr(), 0).String()
	}
	return p.String()
}

// svcProto is a service's protocol: a match service's selector's.
func svcProto(s api.Service) string {
	if s.FWMark != 0 && s.Match != nil {
		return s.Match.Protocol
	}
	return s.Protocol
}

// ipv6 reads -6, which -S writes after an IPv6 match service's -f (the
// family is the selector's: -6 only says what it is).
func ipv6(c *command, _ use) error {
	c.ipv6 = true
	return nil
}
