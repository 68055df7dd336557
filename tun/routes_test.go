package tun

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
)

// fakeRoutes records the routes a HostRoutes asks the kernel for.
type fakeRoutes struct {
	have   map[string]string // destination → gateway
	refuse map[string]bool   // destinations the kernel refuses
}

func (f *fakeRoutes) keeper(peer netip.Prefix) *HostRoutes {
	return f.keeper6(peer, netip.Prefix{})
}

func (f *fakeRoutes) keeper6(peer, peer6 netip.Prefix) *HostRoutes {
	h := NewHostRoutes("tap-c", netip.MustParseAddr("172.25.254.254"), netip.MustParseAddr("fd00::fe"), peer, peer6)
	h.linkByName = func(string) (netlink.Link, error) {
		return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: 7, Name: "tap-c"}}, nil
	}
	h.replace = func(r *netlink.Route) error {
		if r.LinkIndex != 7 {
			return errors.New("wrong link")
		}
		if f.refuse[r.Dst.String()] {
			return errors.New("refused")
		}
		f.have[r.Dst.String()] = r.Gw.String()
		return nil
	}
	h.del = func(r *netlink.Route) error {
		delete(f.have, r.Dst.String())
		return nil
	}
	return h
}

func (f *fakeRoutes) dsts() []string {
	var d []string
	for k := range f.have {
		d = append(d, k)
	}
	slices.Sort(d)
	return d
}

func addrs(s ...string) []netip.Addr {
	var a []netip.Addr
	for _, x := range s {
		a = append(a, netip.MustParseAddr(x))
	}
	return a
}

// Host routes go to the addresses outside the peer prefix, through
// tapvs's address of their family; those that go away are removed; Clear
// removes them all.
func TestHostRoutes(t *testing.T) {
	f := &fakeRoutes{have: map[string]string{}, refuse: map[string]bool{}}
	h := f.keeper(netip.MustParsePrefix("172.25.254.0/24"))
	if err := h.Set(addrs("172.25.254.100", "172.30.0.100", "172.30.0.101", "fd00:1::100")); err != nil {
		t.Fatal(err)
	}
	if got := f.dsts(); !slices.Equal(got, []string{"172.30.0.100/32", "172.30.0.101/32", "fd00:1::100/128"}) {
		t.Fatalf("routes %v: want the two outside the peer prefix and the IPv6 one", got)
	}
	if f.have["172.30.0.100/32"] != "172.25.254.254" || f.have["fd00:1::100/128"] != "fd00::fe" {
		t.Fatalf("gateways %v", f.have)
	}
	if err := h.Set(addrs("172.30.0.101")); err != nil {
		t.Fatal(err)
	}
	if got := f.dsts(); !slices.Equal(got, []string{"172.30.0.101/32"}) {
		t.Fatalf("after two went: %v", got)
	}
	f.refuse["172.30.0.102/32"] = true
	if err := h.Set(addrs("172.30.0.101", "172.30.0.102")); err == nil {
		t.Fatal("a refused route reported no error")
	}
	delete(f.refuse, "172.30.0.102/32")
	if err := h.Set(addrs("172.30.0.101", "172.30.0.102")); err != nil || len(f.have) != 2 {
		t.Fatalf("the refused route tried again: %v, routes %v", err, f.dsts())
	}
	if err := h.Clear(); err != nil || len(f.have) != 0 {
		t.Fatalf("Clear: %v, routes %v", err, f.dsts())
	}
}

// Without an IPv6 address on the TAP, IPv6 addresses get no route.
func TestHostRoutesNoIPv6Via(t *testing.T) {
	f := &fakeRoutes{have: map[string]string{}, refuse: map[string]bool{}}
	h := f.keeper(netip.MustParsePrefix("172.25.254.0/24"))
	h.via6 = netip.Addr{}
	if err := h.Set(addrs("fd00:1::100", "10.9.9.9")); err != nil {
		t.Fatal(err)
	}
	if got := f.dsts(); !slices.Equal(got, []string{"10.9.9.9/32"}) {
		t.Fatalf("routes %v", got)
	}
}

// With an IPv6 kernel end (peer_address6), addresses in its prefix are
// connected and get no route; those outside go through tapvs's address6.
func TestHostRoutesPeer6(t *testing.T) {
	f := &fakeRoutes{have: map[string]string{}, refuse: map[string]bool{}}
	h := f.keeper6(netip.MustParsePrefix("172.25.254.0/24"), netip.MustParsePrefix("fd00::/64"))
	if err := h.Set(addrs("fd00::100", "fd00:1::100", "172.25.254.100")); err != nil {
		t.Fatal(err)
	}
	if got := f.dsts(); !slices.Equal(got, []string{"fd00:1::100/128"}) || f.have["fd00:1::100/128"] != "fd00::fe" {
		t.Fatalf("routes %v", f.have)
	}
}
