package lab

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/nat"
)

// config.yaml is the dual-stack lab's: tapvs's IPv6 addresses and route
// are the address plan's, and the IPv6 services mirror the IPv4 ones at
// VIP6 over the IPv6 LIPs and real servers.
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
	ports := map[uint16]nat.Protocol{HTTPPort: nat.TCP, SynproxyPort: nat.TCP, BulkPort: nat.TCP, EchoPort: nat.UDP}
	for port, proto := range ports {
		i := slices.IndexFunc(c.Services, func(s config.Service) bool { return s.VIP == VIP6 && s.Port == port && s.Protocol == proto })
		if i < 0 {
			t.Errorf("no %s service at [%s]:%d", proto, VIP6, port)
			continue
		}
		s := c.Services[i]
		for _, l := range s.LocalAddresses {
			if l != LIP1v6 && l != LIP2v6 {
				t.Errorf("[%s]:%d: LIP %s is not the lab's", VIP6, port, l)
			}
		}
		var rss []netip.Addr
		for _, rs := range s.RealServers {
			rss = append(rss, rs.Address)
			if want := port; port != SynproxyPort && rs.Port != want || port == SynproxyPort && rs.Port != HTTPPort {
				t.Errorf("[%s]:%d: real server port %d", VIP6, port, rs.Port)
			}
		}
		if !slices.Equal(rss, []netip.Addr{RS1v6, RS2v6}) {
			t.Errorf("[%s]:%d: real servers %v, want %s and %s", VIP6, port, rss, RS1v6, RS2v6)
		}
		if s.Synproxy != (port == SynproxyPort) {
			t.Errorf("[%s]:%d: synproxy %v", VIP6, port, s.Synproxy)
		}
	}
}
