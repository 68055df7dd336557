package tapvs_test

import (
	"context"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// Faults through the Go API on real traffic: SYNs refused on the default
// service (connection refused), every connection to a blackholed server
// lost while the other's work, then cleared; listed with their counts;
// each refusal naming its field.
func TestFaults(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	web := netip.AddrPortFrom(l.VIP, tapvstest.HTTPPort)
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := l.Dial(ctx, "tcp4", web.String())
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := l.LB.SetFault(tapvs.Fault{Service: l.Service, SYN: "refuse"}); err != nil {
		t.Fatal(err)
	}
	if err := dial(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a refused SYN: %v", err)
	}
	fs := l.LB.Faults()
	if len(fs) != 1 || fs[0].Service != l.Service || fs[0].SYN != "refuse" || fs[0].Direction != "" || fs[0].Refused != 1 || fs[0].Frames != 1 {
		t.Fatalf("listed: %+v", fs)
	}
	if err := l.LB.ClearFault(tapvs.Fault{Service: l.Service}); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Fatalf("cleared: %v", err)
	}

	// rs1 blackholed: rr sends every other connection to it, and those
	// time out; the others reach rs2.
	rs1 := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
	if err := l.LB.SetFaults([]tapvs.Fault{{Server: rs1, Blackhole: true}}); err != nil {
		t.Fatal(err)
	}
	ok, lost := 0, 0
	for range 4 {
		if connects(t, l, web) {
			ok++
		} else {
			lost++
		}
	}
	if ok != 2 || lost != 2 {
		t.Fatalf("rs1 blackholed: %d connections made, %d lost", ok, lost)
	}
	if fs := l.LB.Faults(); len(fs) != 1 || fs[0].Server != rs1 || !fs[0].Blackhole || fs[0].Dropped == 0 {
		t.Fatalf("listed: %+v", fs)
	}
	if err := l.LB.ClearFaults(); err != nil || len(l.LB.Faults()) != 0 {
		t.Fatalf("cleared: %v, %+v", err, l.LB.Faults())
	}
	for range 4 {
		if !connects(t, l, web) {
			t.Fatal("a connection lost with no fault")
		}
	}

	for _, c := range []struct {
		f    tapvs.Fault
		want string
	}{
		{tapvs.Fault{Blackhole: true}, "tapvs: set fault: Fault: names 0 targets: one of service, server or client"},
		{tapvs.Fault{Service: l.Service, Server: rs1, Blackhole: true}, "tapvs: set fault: Fault: names 2 targets: one of service, server or client"},
		{tapvs.Fault{Service: l.Service, Loss: 2}, "tapvs: set fault: Fault.Loss: 2 is not a probability (0 to 1: 0.05 drops 5% of frames)"},
		{tapvs.Fault{Service: l.Service, SYN: "reject"}, `tapvs: set fault: Fault.SYN: "reject" is not a SYN fault (drop, refuse)`},
		{tapvs.Fault{Service: l.Service, Direction: "up", Blackhole: true}, `tapvs: set fault: Fault.Direction: "up" is not a direction (to_server, to_client, both)`},
		{tapvs.Fault{Service: l.Service}, "tapvs: set fault: Fault: does nothing: set blackhole, loss, every, syn, drop_fin, latency, rate, duplicate, reorder, reset_bytes or reset_after"},
		{tapvs.Fault{Server: netip.MustParseAddrPort("10.9.9.9:80"), Blackhole: true}, "tapvs: set fault: Fault.Server: 10.9.9.9:80 is no service's real server: ..."},
		{tapvs.Fault{Service: tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.AddrPortFrom(l.VIP, 81)}, Blackhole: true}, "tapvs: set fault: Fault.Service: ..."},
	} {
		refused(t, c.want, l.LB.SetFault(c.f), c.want)
	}
	refused(t, "a list with a bad fault", l.LB.SetFaults([]tapvs.Fault{{Client: netip.MustParsePrefix("10.0.0.0/8"), Every: 1}, {Client: netip.MustParsePrefix("10.0.0.0/16")}}),
		"tapvs: set faults: Faults[1]: Fault: does nothing: set blackhole, loss, every, syn, drop_fin, latency, rate, duplicate, reorder, reset_bytes or reset_after")
	refused(t, "no fault there", l.LB.ClearFault(tapvs.Fault{Server: rs1}), "tapvs: clear fault: server "+rs1.String()+": no fault on that target")
	if len(l.LB.Faults()) != 0 {
		t.Fatal("a refused change set a fault")
	}
}

// Config.Faults are set once the services are in; a bad one stops Start.
func TestStartWithFaults(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{NoService: true})
	side := func(tap, ns, addr string) tapvs.Side {
		return tapvs.Side{TAP: tap, Netns: ns, Addr: netip.MustParsePrefix(addr)}
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr("172.25.254.100"), 80)
	rs := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
	cfg := tapvs.Config{Client: side("tvfc", l.Client, "172.25.254.254/24"), Server: side("tvfs", l.Router, "172.25.84.4/24"),
		Services: []tapvs.Service{{ServiceKey: tapvs.ServiceKey{VIP: vip}, LocalAddrs: []netip.Addr{netip.MustParseAddr("172.25.84.10")},
			RealServers: []tapvs.RealServer{{Addr: rs}}}},
		Faults: []tapvs.Fault{{Server: rs, Direction: "to_client", Every: 2}, {Client: netip.MustParsePrefix("172.25.254.0/24"), Loss: 3}}}
	lb, err := tapvs.Start(context.Background(), cfg)
	if err == nil {
		lb.Close()
	}
	refused(t, "a bad fault at start", err, "tapvs: set faults: Faults[1]: Fault.Loss: 3 is not a probability (0 to 1: 0.05 drops 5% of frames) (Config.Faults)")
	cfg.Faults[1].Loss = 0.5
	lb, err = tapvs.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	fs := lb.Faults()
	if len(fs) != 2 || fs[0].Server != rs || fs[0].Every != 2 || fs[0].Direction != "to_client" || fs[1].Client != cfg.Faults[1].Client || fs[1].Loss != 0.5 {
		t.Fatalf("started with %+v", fs)
	}
}

// The delay and reset families' fields go in and come back as set; a bad
// one is refused naming it, and nothing changes. (What they do to traffic
// is nat's and the e2e tests'.)
func TestFaultFields(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	rs1 := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
	set := []tapvs.Fault{
		{Service: l.Service, Direction: "to_client", Latency: 80 * time.Millisecond, Jitter: 20 * time.Millisecond, Rate: 1_000_000, Duplicate: 0.01, Reorder: 0.02},
		{Server: rs1, DropFIN: true, ResetBytes: 1 << 20, ResetAfter: 90 * time.Second, Rate: 1514},
		{Client: netip.MustParsePrefix("172.25.254.0/24"), Direction: "to_server", Latency: time.Minute, Jitter: time.Minute, Rate: 12_500_000_000, Duplicate: 1, Reorder: 1},
	}
	if err := l.LB.SetFaults(set); err != nil {
		t.Fatal(err)
	}
	fs := l.LB.Faults()
	if len(fs) != len(set) {
		t.Fatalf("listed %+v", fs)
	}
	for i := range set {
		if fs[i].Fault != set[i] {
			t.Errorf("faults[%d] set as %+v, listed as %+v", i, set[i], fs[i].Fault)
		}
	}
	if err := l.LB.SetFault(tapvs.Fault{Server: rs1, ResetAfter: time.Second}); err != nil {
		t.Fatal(err)
	}
	if fs := l.LB.Faults(); len(fs) != 3 || fs[1].Fault != (tapvs.Fault{Server: rs1, ResetAfter: time.Second}) {
		t.Fatalf("replaced: %+v", fs)
	}
	svc := l.Service
	for _, c := range []struct {
		f    tapvs.Fault
		want string
	}{
		{tapvs.Fault{Service: svc, Latency: -time.Millisecond}, `tapvs: set fault: Fault.Latency: "-1ms" is not a duration from 0 to 1m (50ms, 1.5s)`},
		{tapvs.Fault{Service: svc, Latency: time.Minute + 1}, `tapvs: set fault: Fault.Latency: "1m0.000000001s" is not a duration from 0 to 1m (50ms, 1.5s)`},
		{tapvs.Fault{Service: svc, Latency: time.Second, Jitter: -time.Second}, `tapvs: set fault: Fault.Jitter: "-1s" is not a duration from 0 to 1m (50ms, 1.5s)`},
		{tapvs.Fault{Service: svc, Latency: time.Second, Jitter: 2 * time.Second}, "tapvs: set fault: Fault.Jitter: 2s is not within 0 to the latency (1s)"},
		{tapvs.Fault{Service: svc, Rate: 1513}, "tapvs: set fault: Fault.Rate: 1513 bytes/s is below 1514 (a full-sized frame a second)"},
		{tapvs.Fault{Service: svc, Rate: 12_500_000_001}, `tapvs: set fault: Fault.Rate: "12500000001" is above 100gbit (12500000000 bytes a second)`},
		{tapvs.Fault{Service: svc, Duplicate: 1.5}, "tapvs: set fault: Fault.Duplicate: 1.5 is not a probability (0 to 1: 0.01 sends 1% of frames twice)"},
		{tapvs.Fault{Service: svc, Reorder: -0.1}, "tapvs: set fault: Fault.Reorder: -0.1 is not a probability (0 to 1: 0.01 holds 1% of frames back)"},
		{tapvs.Fault{Service: svc, ResetAfter: 25 * time.Hour}, `tapvs: set fault: Fault.ResetAfter: "25h0m0s" is not a duration from 0 to 24h (30s, 1.5m)`},
		{tapvs.Fault{Service: svc, Blackhole: true, DropFIN: true}, "tapvs: set fault: Fault.Blackhole: drops every frame, so nothing else can act; set it alone (or with syn)"},
		{tapvs.Fault{Service: svc, SYN: "drop", Direction: "to_client"}, "tapvs: set fault: Fault.SYN: SYNs go to the server, and the direction is to_client"},
	} {
		refused(t, c.want, l.LB.SetFault(c.f), c.want)
	}
	refused(t, "a list with a bad fault", l.LB.SetFaults([]tapvs.Fault{{Client: netip.MustParsePrefix("10.0.0.0/8"), DropFIN: true}, {Client: netip.MustParsePrefix("10.0.0.0/16"), Reorder: 2}}),
		"tapvs: set faults: Faults[1]: Fault.Reorder: 2 is not a probability (0 to 1: 0.01 holds 1% of frames back)")
	if fs := l.LB.Faults(); len(fs) != 3 || fs[1].Fault != (tapvs.Fault{Server: rs1, ResetAfter: time.Second}) {
		t.Fatalf("a refused change changed the faults: %+v", fs)
	}
}
