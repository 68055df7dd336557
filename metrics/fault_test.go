package metrics

import (
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// tapvs_fault_frames_total follows each fault in force, by target and
// direction; none is exported without faults.
func TestFaultCounters(t *testing.T) {
	bal := testBalancer(t)
	c := New(bal, nil, nil)
	compare(t, samples(t, c, "tapvs_fault_frames_total"), "")
	if err := bal.SetFaults([]nat.Fault{{Target: nat.FaultTarget{Protocol: nat.TCP, VIP: vip}, Dir: nat.FaultToServer, SYN: nat.SYNDrop},
		{Target: nat.FaultTarget{Client: netip.MustParsePrefix("10.0.0.0/8")}, Dir: nat.FaultBoth, Loss: 0.5}}); err != nil {
		t.Fatal(err)
	}
	syn := tcpFrame(t, client, vip, true, false, 1000, 0)
	if v := bal.Process(nat.ClientSide, &nat.Frame{Buf: syn, Len: len(syn)}); v != nat.Drop {
		t.Fatalf("a SYN under a SYN drop: %v", v)
	}
	compare(t, samples(t, c, "tapvs_fault_frames_total"), `
tapvs_fault_frames_total{direction="both",result="dropped",target="client 10.0.0.0/8"} 0
tapvs_fault_frames_total{direction="both",result="refused",target="client 10.0.0.0/8"} 0
tapvs_fault_frames_total{direction="both",result="seen",target="client 10.0.0.0/8"} 0
tapvs_fault_frames_total{direction="to_server",result="dropped",target="service TCP 172.25.254.100:80"} 1
tapvs_fault_frames_total{direction="to_server",result="refused",target="service TCP 172.25.254.100:80"} 0
tapvs_fault_frames_total{direction="to_server",result="seen",target="service TCP 172.25.254.100:80"} 1
`)
}
