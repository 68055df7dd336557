package lab

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tapvs/tapvs/config"
)

// config.yaml is the dual-stack lab's: tapvs's IPv6 addresses and route
// are the address plan's, the IPv6 services mirror the IPv4 ones at VIP6
// over the IPv6 LIPs and real servers, NAT64's at VIP64 over the IPv4
// ones, and NAT46's at VIP46 over the IPv6 ones.
func TestDualStackConfigIsTheLabs(t *testing.T) {
	c, err := config.Load("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Client.Address6 != TapvsClient6 || c.Server.Address6 != TapvsServer6 {
		t.Fatalf("address6 %s, %s; the lab has %s, %s", c.Client.Address6, c.Server.Address6, TapvsClient6, TapvsServer6)
	}
	if !slices.ContainsFunc(c.Server.Routes, func(r config.Route) bool { return r.Dst == RSNet6 && r.Via == RouterAddr6.Addr() }) {
		t.Fatalf("no route to %s via %s: %+v", RSNet6, RouterAddr6.Addr(), c.Server.Routes)
	}
	checkLabServices(t, c, VIP6, [2]netip.Addr{LIP1v6, LIP2v6}, [2]netip.Addr{RS1v6, RS2v6}, []uint16{HTTPPort, SynproxyPort, BulkPort, EchoPort})
	// NAT64: the IPv4 LIPs and servers behind the IPv6 VIP64.
	checkLabServices(t, c, VIP64, [2]netip.Addr{LIP1, LIP2}, [2]netip.Addr{RS1, RS2}, []uint16{HTTPPort, EchoPort})
	// NAT46: the IPv6 LIPs and servers behind the IPv4 VIP46.
	checkLabServices(t, c, VIP46, [2]netip.Addr{LIP1v6, LIP2v6}, [2]netip.Addr{RS1v6, RS2v6}, []uint16{HTTPPort, EchoPort})
}
