package metrics

import (
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// tapvs_rs_overloaded is 1 for a real server at its upper connection
// threshold (ipvsadm -x), 0 for one below it or without one.
func TestOverloadedGauge(t *testing.T) {
	bal := testBalancer(t)
	err := bal.Update(func(tx *nat.Tx) error {
		s, err := tx.Service(nat.TCP, vip.Addr(), vip.Port())
		if err != nil {
			return err
		}
		return tx.SetThresholds(s, rs1.Addr(), rs1.Port(), nat.Thresholds{Upper: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	c := New(bal, nil, nil)
	compare(t, samples(t, c, "tapvs_rs_overloaded"), `
tapvs_rs_overloaded{rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
tapvs_rs_overloaded{rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
`)
	handshake(t, bal) // one connection to rs1: at its threshold
	compare(t, samples(t, c, "tapvs_rs_overloaded"), `
tapvs_rs_overloaded{rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 1
tapvs_rs_overloaded{rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
`)
}
