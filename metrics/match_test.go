package metrics

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tapvs/tapvs/nat"
)

// A match service's samples carry vip="FWM/MARK": beside a port-0
// service of the same VIP, whose vip is TCP/VIP:0, the label sets stay
// apart.
func TestMatchServiceLabels(t *testing.T) {
	bal, err := nat.New(nat.Config{MaxConns: 100, PortMin: 5000, PortMax: 6000, Timeouts: nat.DefaultTimeouts(), Readers: 1})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("172.25.254.100")
	err = bal.Update(func(tx *nat.Tx) error {
		if err := tx.SetMarks(map[uint32]nat.Match{7: {Addr: vip, Protocol: nat.TCP, Ports: []nat.PortRange{{Lo: 80, Hi: 80}}}}); err != nil {
			return err
		}
		for _, sc := range []nat.ServiceConfig{
			{Name: "sticky", Mark: 7, Scheduler: "rr"},
			{Name: "all", Addr: vip, Protocol: nat.TCP, Scheduler: "rr", Persistence: nat.Persistence{Timeout: time.Minute}},
		} {
			s, err := tx.AddService(sc)
			if err != nil {
				return err
			}
			if _, err := tx.AddDest(s, netip.MustParseAddr("10.20.1.2"), 0, 1); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	compare(t, samples(t, New(bal, nil, nil), "tapvs_rs_weight"), `
		tapvs_rs_weight{rs="10.20.1.2:0",service="sticky",vip="FWM/7"} 1
		tapvs_rs_weight{rs="10.20.1.2:0",service="all",vip="TCP/172.25.254.100:0"} 1
	`)
}
