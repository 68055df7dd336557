// Package failover is a failover test written the way a user of tapvs
// would write one for their own service: one of two real servers goes
// dark (a blackhole tapvs makes on the packet path, as a dead host or a
// cut cable would), the health check notices and takes it out, and from
// then on no request fails. It waits on tapvs's events, never on a sleep.
// A second test makes the network slow (latency on the answers) and
// checks that a client with a deadline gives up rather than hangs.
package failover

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

func TestFailoverWhenAServerGoesDark(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 2})
	// keepalived's TCP_CHECK: every 100ms, out after 2 failures.
	check := tapvs.HealthCheck{Type: "tcp", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 2}
	if err := l.LB.SetHealthCheck(l.Service, check); err != nil {
		t.Fatal(err)
	}
	hc := l.HTTPClient()
	ask := func() (string, error) {
		resp, err := hc.Get("http://" + netip.AddrPortFrom(l.VIP, tapvstest.HTTPPort).String() + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return strings.Fields(string(b) + " ")[0], err
	}
	// Both servers answer before anything breaks.
	seen := map[string]bool{}
	for range 4 {
		who, err := ask()
		if err != nil {
			t.Fatal(err)
		}
		seen[who] = true
	}
	if len(seen) != 2 {
		t.Fatalf("answers from %v before the fault, want both servers", seen)
	}

	rs1 := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
	w := l.Watch(tapvs.EventFilter{Kinds: []tapvs.EventKind{"server"}})
	if err := l.LB.SetFault(tapvs.Fault{Server: rs1, Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	down := w.WaitServerDown(l.Service, rs1, 10*time.Second)
	t.Logf("%s taken out: %s", rs1, down.Reason)

	// From here on, no request fails: every one is rs2's.
	for i := range 50 {
		who, err := ask()
		if err != nil {
			t.Fatalf("request %d after %s was taken out: %v", i, rs1, err)
		}
		if who != l.RealServers[1].Name {
			t.Fatalf("request %d answered by %s", i, who)
		}
	}

	// The network heals: the check puts rs1 back.
	if err := l.LB.ClearFaults(); err != nil {
		t.Fatal(err)
	}
	w.WaitServerUp(l.Service, rs1, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.LB.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// A slow network, and a client with a deadline: the service's answers
// take 300ms more to arrive (latency tapvs adds on the packet path), so a
// client that waits 100ms gives up with a timeout rather than hanging;
// once the network is fast again the same client succeeds.
func TestClientGivesUpOnASlowService(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 2})
	impatient := l.HTTPClient()
	impatient.Timeout = 100 * time.Millisecond
	url := "http://" + netip.AddrPortFrom(l.VIP, tapvstest.HTTPPort).String() + "/"
	if err := l.LB.SetFault(tapvs.Fault{Service: l.Service, Direction: "to_client", Latency: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	_, err := impatient.Get(url)
	var ne interface{ Timeout() bool }
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a 100ms client against a 300ms network: %v, want a timeout", err)
	}
	if err := l.LB.ClearFaults(); err != nil {
		t.Fatal(err)
	}
	resp, err := impatient.Get(url)
	if err != nil {
		t.Fatalf("the network fast again: %v", err)
	}
	resp.Body.Close()
}
