package health

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/nat"
)

// retry tries a failing probe Retry more times, DelayBeforeRetry apart,
// and returns its last error; a pass ends it; a stopping checker ends the
// wait.
func TestRetry(t *testing.T) {
	c := New(nil, nil, nic, quiet)
	for _, tc := range []struct {
		retry, failures, calls int
		pass                   bool
	}{
		{0, 100, 1, false}, {2, 100, 3, false}, {2, 2, 3, true}, {2, 1, 2, true}, {2, 0, 1, true}, {3, 3, 4, true},
	} {
		calls := 0
		var at []time.Time
		err := c.retry(Spec{Retry: tc.retry, DelayBeforeRetry: 20 * time.Millisecond}, func() error {
			calls++
			at = append(at, time.Now())
			if calls <= tc.failures {
				return errors.New("failure " + strconv.Itoa(calls))
			}
			return nil
		})
		if calls != tc.calls || (err == nil) != tc.pass {
			t.Errorf("retry %d, %d failures: %d calls, err %v; want %d calls, pass %v", tc.retry, tc.failures, calls, err, tc.calls, tc.pass)
		}
		if !tc.pass && (err == nil || err.Error() != "failure "+strconv.Itoa(calls)) {
			t.Errorf("retry %d: returned %v, want the last failure", tc.retry, err)
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < 20*time.Millisecond {
				t.Errorf("retry %d: try %d came %s after the one before, under delay_before_retry", tc.retry, i+1, gap)
			}
		}
	}
	close(c.stop)
	calls := 0
	err := c.retry(Spec{Retry: 5, DelayBeforeRetry: time.Hour}, func() error { calls++; return errProbe })
	if calls != 1 || err != errProbe {
		t.Fatalf("stopped checker: %d calls, err %v; want 1 and the failure", calls, err)
	}
}

// script writes a shell script to dir and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "check.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A misc check's exit code as keepalived reads it: 0 passes, 1 fails,
// 2-255 fail unless misc_dynamic, which makes them pass with weight
// code-2; a signal fails; a script past its timeout fails and its whole
// process group is killed. It runs without a shell, with the server and
// the service in its environment.
func TestMisc(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	target := func(s Spec) Target {
		s.Type = "misc"
		if s.Timeout == 0 {
			s.Timeout = 5 * time.Second
		}
		return Target{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: s, Weight: 5}
	}
	exit := func(code int) []string { return []string{script(t, "exit "+strconv.Itoa(code))} }
	cases := []struct {
		name   string
		spec   Spec
		weight int
		want   string // "" passes
	}{
		{"exit 0", Spec{Script: exit(0)}, -1, ""},
		{"exit 0, dynamic", Spec{Script: exit(0), MiscDynamic: true}, -1, ""},
		{"exit 1", Spec{Script: exit(1)}, -1, "exited 1"},
		{"exit 1, dynamic", Spec{Script: exit(1), MiscDynamic: true}, -1, "exited 1"},
		{"exit 2", Spec{Script: exit(2)}, -1, "exited 2"},
		{"exit 2, dynamic", Spec{Script: exit(2), MiscDynamic: true}, 0, ""},
		{"exit 200, dynamic", Spec{Script: exit(200), MiscDynamic: true}, 198, ""},
		{"exit 255, dynamic", Spec{Script: exit(255), MiscDynamic: true}, 253, ""},
		{"killed by a signal", Spec{Script: []string{script(t, "kill -9 $$")}, MiscDynamic: true}, -1, "signal: killed"},
		{"no such program", Spec{Script: []string{"/nonexistent/check"}}, -1, "misc: fork/exec /nonexistent/check"},
		{"no shell", Spec{Script: []string{"/bin/echo", "; exit 1"}}, -1, ""},
		{"arguments", Spec{Script: []string{script(t, `[ "$1" = "a b" ] && [ "$2" = "" ] && [ $# = 2 ]`), "a b", ""}}, -1, ""},
		{"environment", Spec{Port: 8080, Script: []string{script(t, `[ "$TAPVS_RS_ADDR $TAPVS_RS_PORT $TAPVS_VIP_ADDR $TAPVS_VIP_PORT $TAPVS_PROTO" = "10.20.1.2 8080 172.25.254.100 80 tcp" ]`)}}, -1, ""},
		{"environment, server's port", Spec{Script: []string{script(t, `[ "$TAPVS_RS_PORT" = 80 ]`)}}, -1, ""},
		{"timeout", Spec{Timeout: 100 * time.Millisecond, Script: []string{script(t, "sleep 30 & echo $! > "+out+"; wait")}}, -1, "timed out after 100ms"},
	}
	for _, tc := range cases {
		w, err := runMisc(target(tc.spec))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want a pass", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		case w != tc.weight:
			t.Errorf("%s: weight %d, want %d", tc.name, w, tc.weight)
		}
	}
	// The timed-out script's background child went with it.
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the script's child killed", func() bool {
		if syscall.Kill(pid, 0) != nil {
			return true
		}
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return strings.Contains(string(st), ") Z ") // killed, not yet reaped by init
	})
}

// misc_dynamic's weight: set at once on an up server, and what a down
// server is restored with.
func TestMiscDynamicWeight(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	s := newState(c, rs1, Spec{Type: "misc", Rise: 1, Fall: 1, MiscDynamic: true}, 5)
	c.setDynamic(s, 9)
	if w, _ := weightOf(t, svc, rs1); w != 9 {
		t.Fatalf("up server: weight %d after a dynamic 9", w)
	}
	c.record(svc, s, errProbe)
	if w, _ := weightOf(t, svc, rs1); w != 0 {
		t.Fatalf("down: weight %d, want quiesced", w)
	}
	c.setDynamic(s, 3)
	if w, _ := weightOf(t, svc, rs1); w != 0 {
		t.Fatalf("down server: a dynamic weight set it to %d", w)
	}
	c.record(svc, s, nil)
	if w, _ := weightOf(t, svc, rs1); w != 3 {
		t.Fatalf("recovered with weight %d, want the script's 3", w)
	}
	if w, _ := weightOf(t, svc, rs2); w != 5 {
		t.Fatalf("the other server's weight moved to %d", w)
	}
}

// The running loop: the first probe comes after the warmup (not an
// interval of an hour), a failure is tried again retry times, the
// last counting once, and a misc_dynamic pass sets the weight.
func TestLoopWarmupRetryAndDynamic(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	fail := script(t, "echo x >> "+count+"; exit 1")
	dyn := script(t, "exit 9")
	c := New(bal, nil, nic, quiet)
	c.Start([]Target{
		{Proto: nat.TCP, VIP: vip, RS: rs1, Weight: 5, Spec: Spec{Type: "misc", Script: []string{fail}, Interval: time.Hour, Timeout: 5 * time.Second,
			Rise: 1, Fall: 1, Retry: 2, DelayBeforeRetry: 10 * time.Millisecond, Warmup: 20 * time.Millisecond}},
		{Proto: nat.TCP, VIP: vip, RS: rs2, Weight: 5, Spec: Spec{Type: "misc", Script: []string{dyn}, MiscDynamic: true, Interval: time.Hour, Timeout: 5 * time.Second,
			Rise: 1, Fall: 1, Warmup: 20 * time.Millisecond}},
	}, nil)
	defer c.Close()
	waitFor(t, "rs1 down", func() bool { up, _, _ := c.Up(tcpVIP, rs1); return !up })
	b, _ := os.ReadFile(count)
	if n := strings.Count(string(b), "x"); n != 3 {
		t.Fatalf("the script ran %d times before the server went down, want 1 + retry 2", n)
	}
	c.mu.Lock()
	ko := c.state[stateKey{tcpVIP, rs1}].ko
	c.mu.Unlock()
	if ko != 1 {
		t.Fatalf("%d failures counted, want the retries' last one only", ko)
	}
	waitFor(t, "rs2's weight set by its script", func() bool { w, _ := weightOf(t, svc, rs2); return w == 7 })
}
