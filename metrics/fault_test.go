package metrics

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapvs/tapvs/nat"
)

// tapvs_fault_frames_total follows each fault in force, by target and
// direction; none is exported without faults.
func TestFaultCounters(t *testing.T) {
	bal := testBalancer(t)
	c := New(bal, nil, nil)
	compare(t, samples(t, c, "tapvs_fault_frames_total", "tapvs_fault_resets_total"), "")
	if err := bal.SetFaults([]nat.Fault{{Target: nat.FaultTarget{Protocol: nat.TCP, VIP: vip}, Dir: nat.FaultToServer, SYN: nat.SYNDrop},
		{Target: nat.FaultTarget{Client: netip.MustParsePrefix("10.0.0.0/8")}, Dir: nat.FaultBoth, Loss: 0.5}}); err != nil {
		t.Fatal(err)
	}
	syn := tcpFrame(t, client, vip, true, false, 1000, 0)
	if v := bal.Process(nat.ClientSide, &nat.Frame{Buf: syn, Len: len(syn)}); v != nat.Drop {
		t.Fatalf("a SYN under a SYN drop: %v", v)
	}
	compare(t, samples(t, c, "tapvs_fault_frames_total", "tapvs_fault_resets_total"), `
tapvs_fault_frames_total{direction="both",result="delayed",target="client 10.0.0.0/8"} 0
tapvs_fault_frames_total{direction="both",result="dropped",target="client 10.0.0.0/8"} 0
tapvs_fault_frames_total{direction="both",result="refused",target="client 10.0.0.0/8"} 0
tapvs_fault_frames_total{direction="both",result="seen",target="client 10.0.0.0/8"} 0
tapvs_fault_frames_total{direction="to_server",result="delayed",target="service TCP 172.25.254.100:80"} 0
tapvs_fault_frames_total{direction="to_server",result="dropped",target="service TCP 172.25.254.100:80"} 1
tapvs_fault_frames_total{direction="to_server",result="refused",target="service TCP 172.25.254.100:80"} 0
tapvs_fault_frames_total{direction="to_server",result="seen",target="service TCP 172.25.254.100:80"} 1
tapvs_fault_resets_total{direction="both",target="client 10.0.0.0/8"} 0
tapvs_fault_resets_total{direction="to_server",target="service TCP 172.25.254.100:80"} 0
`)
}

// Each of a fault's counters goes to its own sample, the delay and reset
// families' included.
func TestFaultCounterValues(t *testing.T) {
	f := nat.FaultStats{Fault: nat.Fault{Target: nat.FaultTarget{Mark: 7}, Dir: nat.FaultToClient, Latency: time.Millisecond},
		Frames: 1, Dropped: 2, Refused: 3, Delayed: 4, Reset: 5}
	var got []string
	faultCounters(f, func(d *prometheus.Desc, v uint64, l ...string) {
		name, _, _ := strings.Cut(strings.TrimPrefix(d.String(), `Desc{fqName: "`), `"`)
		got = append(got, fmt.Sprintf("%s %v %d", name, l, v))
	})
	want := []string{
		"tapvs_fault_frames_total [service fwm 7 to_client seen] 1",
		"tapvs_fault_frames_total [service fwm 7 to_client dropped] 2",
		"tapvs_fault_frames_total [service fwm 7 to_client refused] 3",
		"tapvs_fault_frames_total [service fwm 7 to_client delayed] 4",
		"tapvs_fault_resets_total [service fwm 7 to_client] 5",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("exported:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
