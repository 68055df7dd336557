package e2e

import (
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/internal/logbuf"
	"github.com/tapvs/tapvs/lab"
)

// httpGet asks addr:port for / and returns the body.
func httpGet(hc *http.Client, addr netip.Addr, port uint16) (string, error) {
	resp, err := hc.Get("http://" + netip.AddrPortFrom(addr, port).String() + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// cpuTime is the CPU this process (tapvs runs in it) has used so far.
func cpuTime(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A TAP deleted under a running tapvs (ip link del in its namespace) ends
// its readers with one error naming it, reported by the daemon; nothing
// spins, and Close still returns.
func TestFaultTAPDeleted(t *testing.T) {
	t.Run("default", func(t *testing.T) { testTAPDeleted(t, topoOpts{}) })
	t.Run("busy-poll", func(t *testing.T) { testTAPDeleted(t, topoOpts{io: "syscalls", busyPoll: 50 * time.Microsecond}) })
	t.Run("read-write", func(t *testing.T) { testTAPDeleted(t, topoOpts{io: "syscalls"}) })
	t.Run("io_uring", func(t *testing.T) { testTAPDeleted(t, topoOpts{io: "uring"}) })
}

func testTAPDeleted(t *testing.T, o topoOpts) {
	var logs logbuf.Buffer // the daemon's log, to find the error in
	o.queues, o.log = 1, &logs
	e := setupWith(t, o, services("rr", 1, 1), "")
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	if _, err := httpGet(hc, lab.VIP, lab.HTTPPort); err != nil {
		t.Fatalf("before the delete: %v", err)
	}
	select {
	case <-e.d.Failed():
		t.Fatalf("the daemon failed before anything happened: %v", e.d.Err())
	default:
	}

	if out, err := exec.Command("ip", "-n", e.top.Client, "link", "del", e.top.TapClient).CombinedOutput(); err != nil {
		t.Fatalf("ip link del: %v: %s", err, out)
	}
	select {
	case <-e.d.Failed():
	case <-time.After(5 * time.Second):
		t.Fatal("5s after its TAP was deleted the daemon reports nothing")
	}
	err := e.d.Err()
	if err == nil || !strings.Contains(err.Error(), e.top.TapClient) {
		t.Fatalf("the daemon's error does not name the TAP %s: %v", e.top.TapClient, err)
	}
	t.Logf("the daemon reports: %v", err)

	// Nothing spins: over a second the whole process (tapvs, the
	// backends, this test) stays far below one busy core.
	c0, w0 := cpuTime(t), time.Now()
	time.Sleep(time.Second) // a measurement window: CPU used over it, not a wait for an event
	used, wall := cpuTime(t)-c0, time.Since(w0)
	t.Logf("CPU over %v after the delete: %v", wall.Round(time.Millisecond), used)
	if used > wall/5 {
		t.Errorf("tapvs used %v of CPU in %v after its TAP was deleted: something spins", used, wall)
	}
	if n := strings.Count(logs.String(), "read failed"); n > 1 {
		t.Errorf("%d \"read failed\" lines: the reader goes on reading a dead TAP", n)
	}
	if n := strings.Count(logs.String(), "reader stopped"); n != 1 {
		t.Errorf("%d \"reader stopped\" lines in the log, want 1 (one reader on the deleted TAP)", n)
	}

	done := make(chan struct{})
	start := time.Now()
	go func() { e.d.Close(); close(done) }()
	select {
	case <-done:
		t.Logf("Close returned in %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("Close has not returned 10s after the TAP was deleted")
	}
}
