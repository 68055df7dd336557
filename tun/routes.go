package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// HostRoutes keeps host routes (/32, /128) in the kernel of tapvs's own
// namespace to the addresses tapvs answers for on one TAP, through tapvs's
// address of their family on it: what a router that learned a VIP or a LIP
// over BGP sends to this namespace must go on into the TAP. Addresses
// inside the TAP's peer prefixes need none (the connected route covers
// them) and get none; a family whose via is the zero Addr (the kernel end
// has no address of it, so no route to tapvs's) gets none either.
// Not safe for concurrent use: one goroutine (the daemon's announcer)
// owns it.
type HostRoutes struct {
	dev         string
	via, via6   netip.Addr   // tapvs's addresses on the TAP
	peer, peer6 netip.Prefix // the kernel end's prefixes (its connected routes: peer_address, peer_address6)
	have        map[netip.Addr]bool
	link        netlink.Link
	replace     func(*netlink.Route) error // netlink.RouteReplace; a test's fake
	del         func(*netlink.Route) error
	linkByName  func(string) (netlink.Link, error)
}

// NewHostRoutes keeps routes through dev to via (IPv4) and via6 (IPv6);
// the zero Addr for either: no routes of that family. Addresses in peer or
// peer6 are skipped.
func NewHostRoutes(dev string, via, via6 netip.Addr, peer, peer6 netip.Prefix) *HostRoutes {
	return &HostRoutes{dev: dev, via: via, via6: via6, peer: peer, peer6: peer6, have: map[netip.Addr]bool{},
		replace: netlink.RouteReplace, del: netlink.RouteDel, linkByName: netlink.LinkByName}
}

// Set makes the routes exactly those to addrs (less the connected ones).
func (h *HostRoutes) Set(addrs []netip.Addr) error {
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		a = a.Unmap()
		if h.viaFor(a).IsValid() && !h.peer.Contains(a) && !h.peer6.Contains(a) {
			want[a] = true
		}
	}
	var errs []error
	for a := range want {
		if h.have[a] {
			continue
		}
		r, err := h.route(a)
		if err == nil {
			err = h.replace(r)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("host route %s dev %s: %w", a, h.dev, err))
			continue
		}
		h.have[a] = true
	}
	for a := range h.have {
		if want[a] {
			continue
		}
		if err := h.remove(a); err != nil {
			errs = append(errs, err)
			continue
		}
	}
	return errors.Join(errs...)
}

// Clear removes every route Set put in place.
func (h *HostRoutes) Clear() error {
	var errs []error
	for a := range h.have {
		if err := h.remove(a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *HostRoutes) remove(a netip.Addr) error {
	r, err := h.route(a)
	if err == nil {
		err = h.del(r)
	}
	delete(h.have, a) // gone or not, it is no longer ours to keep
	if err != nil {
		return fmt.Errorf("host route %s dev %s: remove: %w", a, h.dev, err)
	}
	return nil
}

func (h *HostRoutes) viaFor(a netip.Addr) netip.Addr {
	if a.Is4() {
		return h.via
	}
	return h.via6
}

func (h *HostRoutes) route(a netip.Addr) (*netlink.Route, error) {
	if h.link == nil {
		l, err := h.linkByName(h.dev)
		if err != nil {
			return nil, err
		}
		h.link = l
	}
	return &netlink.Route{LinkIndex: h.link.Attrs().Index, Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())},
		Gw: h.viaFor(a).AsSlice()}, nil
}
