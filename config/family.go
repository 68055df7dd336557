package config

import (
	"fmt"
	"net/netip"
)

// IPv6 (issue #15). A side may have an IPv6 address (address6) beside its
// IPv4 one. The families a service's addresses may have (one family on
// the server side: the VIP's, or the other: NAT64, NAT46) are the
// balancer's rules (nat/rules.go), checked by the dry run like every rule
// between values. The sidecar's kernel-side keys (peer_address,
// masquerade, publish) take IPv6 beside IPv4: peer_address6 is the kernel
// end's IPv6 address, as address6 is tapvs's (interfaces.go).

// checkAddress6 checks a side's address6: tapvs's own IPv6 address on the
// side, with the prefix that is on-link there.
func checkAddress6(e *errs, f string, p netip.Prefix) {
	a := p.Addr()
	switch {
	case a.Is4():
		e.add(f, "%s is IPv4: address6 is the side's IPv6 address; its IPv4 address goes in address", p)
	case a.Is4In6():
		e.add(f, "%s is an IPv4-mapped address: address6 is the side's IPv6 address; its IPv4 address goes in address", p)
	case a.IsUnspecified():
		e.add(f, "%s is the unspecified address, not a host", p)
	case a.IsMulticast():
		e.add(f, "%s is a multicast address, not a host", p)
	case a.IsLoopback():
		e.add(f, "%s is the loopback address: it never leaves a host", p)
	case a.IsLinkLocalUnicast():
		// Every link has fe80::/64: VIPs and LIPs in it would be
		// unreachable beyond the link, and routes could not name it.
		e.add(f, "%s is link-local: address6 needs a global or unique local address (like fd00:25:84::4/64)", p)
	case p.Bits() < 127 && a == p.Masked().Addr():
		e.add(f, "%s is its prefix's Subnet-Router anycast address (host bits all zero), not a host", p)
	}
}

// family names an address's family in a refusal.
func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// readRoute reads one route from the file; checkRoute checks it.
func readRoute(e *errs, rf string, rr rawRoute) Route {
	var rt Route
	if dst, err := netip.ParsePrefix(rr.Dst); err != nil {
		e.add(rf+".dst", "%q is not a prefix (like 10.20.0.0/16 or fd00:20::/48)", rr.Dst)
	} else {
		rt.Dst = dst
	}
	if rr.Via == "" {
		return rt
	}
	if via, err := netip.ParseAddr(rr.Via); err != nil {
		e.add(rf+".via", "%q is not an IP address", rr.Via)
	} else {
		rt.Via = via
	}
	return rt
}

// checkRoute checks one route of a side whose addresses are a4 and a6
// (zero: none, or refused), and masks its dst: dst and via are of one
// family, and via is on-link: in a4's subnet (IPv4), or in a6's prefix or
// link-local (IPv6: routers are often known by their fe80:: address).
// has6 says address6 was given: if it was refused, that refusal is the one
// to fix, and the route is not refused for its absence too.
func checkRoute(e *errs, rf string, rt *Route, a4, a6 netip.Prefix, has6 bool) {
	dstOK := false
	switch dst := rt.Dst; {
	case !dst.IsValid():
		e.add(rf+".dst", "is not set: a prefix (like 10.20.0.0/16 or fd00:20::/48)")
	case dst.Addr().Is4In6():
		e.add(rf+".dst", "%s is IPv4-mapped: write the IPv4 prefix", dst)
	case dst.Addr().Is6() && !a6.IsValid():
		if !has6 {
			e.add(rf+".dst", "%s is IPv6 and this side has no address6: IPv6 routes leave by the side's IPv6 address", dst)
		}
	default:
		rt.Dst, dstOK = dst.Masked(), true
	}
	via := rt.Via
	switch {
	case !via.IsValid(): // none: the destination is on-link
	case via.Zone() != "" || via.Is4In6():
		e.add(rf+".via", "%q is not a router's address: no zone (the side is the link) and no IPv4-mapped form", via)
	case dstOK && via.Is4() != rt.Dst.Addr().Is4():
		e.add(rf+".via", "%s is %s but dst %s is %s: a route's dst and via are of one family", via, family(via), rt.Dst, family(rt.Dst.Addr()))
	case via.Is4():
		if a4.IsValid() && !a4.Contains(via) {
			e.add(rf+".via", "%s is not on-link (not in %s)", via, a4.Masked())
		}
	case via.IsLinkLocalUnicast():
	case !a6.IsValid():
		if dstOK && !has6 { // else dst or address6 said it already
			e.add(rf+".via", "%s is IPv6 and this side has no address6", via)
		}
	case !a6.Contains(via):
		e.add(rf+".via", "%s is not on-link (not in %s, nor link-local fe80::/10)", via, a6.Masked())
	}
}

// hostAddr reads the address of a VIP, LIP or real server, of either
// family. A zone is refused (tapvs's sides are its links: an address is
// not scoped to one), and so is an IPv4-mapped IPv6 address, which would
// make an IPv4 host an IPv6 service's.
func hostAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q has a zone: a service's addresses are not scoped to a link", s)
	case a.Is4In6():
		return netip.Addr{}, fmt.Errorf("%s is an IPv4-mapped IPv6 address: write it as %s", a, a.Unmap())
	}
	return a, nil
}

// sides6 says which sides were given an address6, valid or not: a service's
// IPv6 address is refused for a missing one, not for one already refused.
type sides6 struct{ client, server bool }
