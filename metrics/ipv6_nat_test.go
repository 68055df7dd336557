package metrics

import (
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// An IPv6 service's samples carry [VIP]:port, [RIP]:port and the bare LIP.
func TestIPv6Labels(t *testing.T) {
	bal, err := nat.New(nat.Config{MaxConns: 100, PortMin: 5000, PortMax: 6000, Timeouts: nat.DefaultTimeouts(), Readers: 1,
		ClientNet6: netip.MustParsePrefix("fd00:25:254::fe/64"), ServerNet6: netip.MustParsePrefix("fd00:25:84::4/64")})
	if err != nil {
		t.Fatal(err)
	}
	err = bal.Update(func(tx *nat.Tx) error {
		s, err := tx.AddService(nat.ServiceConfig{Name: "web6", Addr: netip.MustParseAddr("2001:db8::1"), Port: 80, Protocol: nat.TCP, Scheduler: "wrr"})
		if err != nil {
			return err
		}
		if _, err := tx.AddLocalAddr(s, netip.MustParseAddr("fd00:25:84::10")); err != nil {
			return err
		}
		_, err = tx.AddDest(s, netip.MustParseAddr("fd00:20:1::2"), 8080, 3)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	compare(t, samples(t, New(bal, nil, nil), "tapvs_rs_weight", "tapvs_lip_connections", "tapvs_service_connections_total"), `
		tapvs_rs_weight{rs="[fd00:20:1::2]:8080",service="web6",vip="TCP/[2001:db8::1]:80"} 3
		tapvs_lip_connections{lip="fd00:25:84::10",service="web6",vip="TCP/[2001:db8::1]:80"} 0
		tapvs_service_connections_total{service="web6",vip="TCP/[2001:db8::1]:80"} 0
	`)
}
