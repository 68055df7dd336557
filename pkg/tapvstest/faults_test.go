package tapvstest_test

import (
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// connectTimes connects n times and returns each connect's time (SYN to
// SYN-ACK: one round trip), sorted.
func connectTimes(t *testing.T, l *tapvstest.Lab, n int) []time.Duration {
	t.Helper()
	d := l.Dialer(l.Client)
	var out []time.Duration
	for range n {
		start := time.Now()
		c, err := d.DialContext(t.Context(), "tcp4", l.URL()[len("http://"):])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(start))
		c.Close()
	}
	slices.Sort(out)
	return out
}

// Faults of the delay and reset families through pkg/tapvs's typed API,
// on a lab's real traffic: latency on the answers adds itself to each
// connect within ±10%, and a connection reset after a time is reset.
func TestFaultsThroughTheAPI(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 1})
	base := connectTimes(t, l, 21)[10]
	const lat = 30 * time.Millisecond
	if err := l.LB.SetFault(tapvs.Fault{Service: l.Service, Direction: "to_client", Latency: lat}); err != nil {
		t.Fatal(err)
	}
	got := connectTimes(t, l, 21)
	added := got[10] - base
	t.Logf("a connect: %v, %v with %v of latency on the answers (%v added)", base, got[10], lat, added)
	if added < lat*9/10 || added > lat*11/10 {
		t.Fatalf("%v of latency added %v to a connect: outside ±10%%", lat, added)
	}
	if fs := l.LB.Faults(); len(fs) != 1 || fs[0].Delayed == 0 || fs[0].Latency != lat {
		t.Fatalf("faults listed: %+v", fs)
	}

	// An open connection reset 200ms after the fault saw it.
	if err := l.LB.SetFault(tapvs.Fault{Service: l.Service, ResetAfter: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	c, err := l.Dialer(l.Client).DialContext(t.Context(), "tcp4", l.URL()[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if took := time.Since(start); !errors.Is(err, syscall.ECONNRESET) || took < 150*time.Millisecond {
		t.Fatalf("an idle connection: %v after %v, want a reset after 200ms", err, took)
	}
	if err := l.LB.ClearFaults(); err != nil {
		t.Fatal(err)
	}
	if again := connectTimes(t, l, 11)[5]; again > base+lat/3 {
		t.Fatalf("cleared: a connect takes %v, %v before", again, base)
	}
}
