package tapvstest_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// A failover test that waits on events instead of polling: watch first,
// then break a real server, then wait for its health check to take it
// out. A wait past its deadline fails the test with the events it saw.
func ExampleWatcher() {
	testFailover := func(t *testing.T) {
		l := tapvstest.NewLab(t, tapvstest.Options{NoBackends: true})
		lns := make([]interface{ Close() error }, len(l.RealServers))
		for i, rs := range l.RealServers {
			ln, err := rs.Listen("tcp4", tapvstest.HTTPPort)
			if err != nil {
				t.Fatal(err)
			}
			lns[i] = ln
			// ... serve ln ...
		}
		w := l.Watch(tapvs.EventFilter{Service: l.Service}) // before the failure
		err := l.LB.SetHealthCheck(l.Service, tapvs.HealthCheck{Type: "tcp", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Fall: 2})
		if err != nil {
			t.Fatal(err)
		}
		lns[0].Close() // rs1 stops listening
		rs1 := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
		e := w.WaitServerDown(l.Service, rs1, 10*time.Second)
		t.Logf("rs1 out: %s", e.Reason) // its weight is already 0: the event follows the move
	}
	_ = testFailover
}
