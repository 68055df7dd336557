package tapvstest

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
)

// fatalT records a Fatalf and ends the goroutine, as testing's does.
type fatalT struct {
	testing.TB
	msg string
}

func (f *fatalT) Helper() {}
func (f *fatalT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run runs fn as a test that may fail, and returns its failure.
func run(t *testing.T, fn func(*fatalT)) string {
	f := &fatalT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

var (
	svc = tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.MustParseAddrPort("172.25.254.100:80")}
	rs1 = netip.MustParseAddrPort("10.20.1.2:80")
	rs2 = netip.MustParseAddrPort("10.20.2.2:80")
)

// A wait takes the first matching event, keeps the others for later
// waits, and when the deadline passes fails with what it saw.
func TestWatcherWaitFor(t *testing.T) {
	ch := make(chan tapvs.Event, 8)
	at := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	ch <- tapvs.Event{Kind: tapvs.EventServerDown, Time: at, Service: svc, Server: rs2, Reason: "refused"}
	ch <- tapvs.Event{Kind: tapvs.EventLost, Time: at, Count: 3}
	ch <- tapvs.Event{Kind: tapvs.EventServerDown, Time: at, Service: svc, Server: rs1}
	msg := run(t, func(f *fatalT) {
		w := &Watcher{t: f, ch: ch}
		if e := w.WaitServerDown(svc, rs1, time.Second); e.Server != rs1 {
			t.Errorf("took %+v", e)
		}
		// rs2's, received before, is kept for this wait.
		if e := w.WaitServerDown(svc, rs2, 0); e.Reason != "refused" {
			t.Errorf("took %+v", e)
		}
		w.WaitServerUp(svc, rs1, 10*time.Millisecond)
		t.Error("the wait did not fail")
	})
	for _, want := range []string{
		"tapvstest: no server_up of tcp 172.25.254.100:80 10.20.1.2:80 within 10ms",
		"3 events were lost",
		"the last 3 events seen:\n\t05:00:00.000000 server_down service=\"tcp 172.25.254.100:80\" server=10.20.2.2:80 reason=refused\n\t05:00:00.000000 lost count=3\n",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure %q\nlacks %q", msg, want)
		}
	}
	// A closed subscription fails the wait at once.
	close(ch)
	msg = run(t, func(f *fatalT) {
		(&Watcher{t: f, ch: ch}).WaitConnClosed(rs1, time.Hour)
	})
	if !strings.Contains(msg, "the subscription ended") || !strings.Contains(msg, "no event seen") {
		t.Errorf("closed: %q", msg)
	}
}

func TestWatcherWaitDrops(t *testing.T) {
	ch := make(chan tapvs.Event, 8)
	ch <- tapvs.Event{Kind: tapvs.EventDrops, Reason: "no_service", Count: 2}
	ch <- tapvs.Event{Kind: tapvs.EventDrops, Reason: "malformed", Count: 9}
	ch <- tapvs.Event{Kind: tapvs.EventDrops, Reason: "no_service", Count: 3}
	ch <- tapvs.Event{Kind: tapvs.EventDrops, Reason: "no_service", Count: 1}
	var got uint64
	msg := run(t, func(f *fatalT) {
		w := &Watcher{t: f, ch: ch}
		got = w.WaitDrops("no_service", 5, time.Second)
		if n := w.WaitDrops("malformed", 9, 0); n != 9 {
			t.Errorf("malformed %d", n)
		}
		w.WaitDrops("no_service", 2, 10*time.Millisecond) // 1 left
	})
	if got != 5 {
		t.Errorf("counted %d, want 5", got)
	}
	if !strings.Contains(msg, "no 1 more dropped frames of reason no_service") {
		t.Errorf("failure %q", msg)
	}
}
