package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tapvs/tapvs/bgp/bgptest"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// A match service on a VIP prefix is announced as the prefix, one route,
// not one per address (the routers need no more: each address's host
// route into the TAP is the balancer's, as a single VIP's); withdrawn
// when its last server can take nothing, beside a VIP:port service of an
// address inside it, whose /32 stays.
func TestAnnounceMatchPrefix(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	g := newClusterRigFrom(t, r, base+`  - fwmark: 1
    persistence_timeout: 60
    local_addresses: [172.25.84.11]
    real_servers: [{address: 172.25.84.21}]
marks:
  - {mark: 1, vip: 172.25.254.96/29, ports: [443]}
`+bgpSection(r))
	prefix := netip.MustParsePrefix("172.25.254.96/29")
	g.expect(t, vip80, prefix, lip10, lip11)
	b, _ := g.c.BGP()
	if i := slices.IndexFunc(b.Routes, func(r api.BGPRoute) bool { return r.Prefix == prefix.String() }); i < 0 || b.Routes[i].Kind != "vip" {
		t.Fatalf("BGP() routes %+v: want %v as a VIP's", b.Routes, prefix)
	}
	if err := g.d.Balancer.Update(func(tx *nat.Tx) error {
		s, err := tx.MatchService(1)
		if err != nil {
			return err
		}
		return tx.SetWeight(s, netip.MustParseAddr("172.25.84.21"), 0, 0)
	}); err != nil {
		t.Fatal(err)
	}
	g.expect(t, vip80, lip10, lip11)
	if b, ok := g.c.BGP(); !ok || len(b.Routes) != 3 {
		t.Fatalf("BGP() = %+v, %v", b, ok)
	}
}
