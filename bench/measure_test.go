package bench

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

// fakeClient answers each workload from a list, one entry per run, and
// records what it was asked to run.
type fakeClient struct {
	gbps1, gbps4 []float64 // Gbit/s per run
	short, keep  []wrkResult
	idle         []wrkResult
	udp          []float64
	calls        []string
	cpu          *float64 // the path's CPU clock, advanced by each workload
	fail         string   // a call that fails
	ff           floodFake
	sus          []sustainedRun
}

var errTool = errors.New("tool failed")

func (f *fakeClient) call(name string) error {
	f.calls = append(f.calls, name)
	if name == f.fail {
		return errTool
	}
	return nil
}

func pop[T any](v *[]T) T {
	x := (*v)[0]
	*v = (*v)[1:]
	return x
}

func (f *fakeClient) iperf(_ context.Context, to netip.AddrPort, streams int, sec string) (float64, float64, error) {
	if streams == 1 {
		if err := f.call("iperf1 " + to.String() + " " + sec); err != nil {
			return 0, 0, err
		}
		*f.cpu += 0.5      // half a CPU-second...
		g := pop(&f.gbps1) // ...for g Gbit/s for 2 s: g/4 GB
		return g * 1e9, g / 4 * 1e9, nil
	}
	if err := f.call("iperf4"); err != nil {
		return 0, 0, err
	}
	return pop(&f.gbps4) * 1e9, 0, nil
}

func (f *fakeClient) iperfUDP(context.Context, netip.AddrPort, string) (float64, error) {
	if err := f.call("udp"); err != nil {
		return 0, err
	}
	return pop(&f.udp), nil
}

func (f *fakeClient) wrk(_ context.Context, to netip.AddrPort, _ string, close bool, conns int) (wrkResult, error) {
	switch {
	case close && conns == 32:
		if err := f.call("short " + to.String()); err != nil {
			return wrkResult{}, err
		}
		*f.cpu += 2
		return pop(&f.short), nil
	case !close && conns == 32:
		if err := f.call("keepalive"); err != nil {
			return wrkResult{}, err
		}
		return pop(&f.keep), nil
	case !close && conns == 1:
		if err := f.call("latency"); err != nil {
			return wrkResult{}, err
		}
		return pop(&f.idle), nil
	}
	panic("unexpected wrk run")
}

func testPath(cpu *float64, udp bool) Path {
	return Path{
		Name: "p", HTTP: netip.MustParseAddrPort("10.0.0.1:80"), Iperf: netip.MustParseAddrPort("10.0.0.1:5201"), UDP: udp,
		cpuSeconds: func() float64 { return *cpu },
	}
}

// Three runs of every workload: each figure is the median of its three,
// whichever run it came from.
func TestMeasureMedians(t *testing.T) {
	var cpu float64
	ms := time.Millisecond
	f := &fakeClient{
		gbps1: []float64{8, 2, 4}, gbps4: []float64{1, 3, 2},
		short: []wrkResult{{rps: 300, requests: 1000}, {rps: 100, requests: 4000}, {rps: 200, requests: 2000}},
		keep:  []wrkResult{{rps: 5, p50: 3 * ms, p99: 30 * ms}, {rps: 9, p50: 1 * ms, p99: 10 * ms}, {rps: 7, p50: 2 * ms, p99: 20 * ms}},
		idle:  []wrkResult{{p50: 60 * time.Microsecond, p99: 90 * time.Microsecond}, {p50: 40 * time.Microsecond, p99: 70 * time.Microsecond}, {p50: 50 * time.Microsecond, p99: 80 * time.Microsecond}},
		udp:   []float64{10, 30, 20},
		cpu:   &cpu,
	}
	r, err := measure(context.Background(), f, testPath(&cpu, true), Options{Runs: 3, Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{
		Path: "p", Gbps1: 4, Gbps4: 2, ShortCPS: 200, ShortRuns: []float64{300, 100, 200}, KeepRPS: 7, P50: 2 * ms, P99: 20 * ms,
		IdleP50: 50 * time.Microsecond, IdleP99: 80 * time.Microsecond, UDPpps: 20,
		// 0.5 CPU-s per 8/4, 2/4, 4/4 GB: 0.25, 1, 0.5. 2 CPU-s per 1, 4, 2 thousand connections: 2, 0.5, 1.
		CPUPerGB: 0.5, CPUPerKConn: 1,
	}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got  %+v\nwant %+v", r, want)
	}
	// The runs interleave the workloads, so each run sees the same machine.
	run := []string{"iperf1 10.0.0.1:5201 2", "iperf4", "short 10.0.0.1:80", "keepalive", "latency", "udp"}
	if wantCalls := slices.Concat(run, run, run); !slices.Equal(f.calls, wantCalls) {
		t.Errorf("ran %q, want %q", f.calls, wantCalls)
	}
}

func TestMeasureChosenWorkloads(t *testing.T) {
	var cpu float64
	f := &fakeClient{short: []wrkResult{{rps: 100, requests: 1000}}, udp: []float64{1}, cpu: &cpu}
	// udp is chosen but the path cannot carry it; Runs 0 is one run.
	r, err := measure(context.Background(), f, testPath(&cpu, false), Options{Duration: time.Second, Workloads: []string{"short", "udp"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.calls, []string{"short 10.0.0.1:80"}) {
		t.Errorf("ran %q, want only the short connections", f.calls)
	}
	if want := (Result{Path: "p", ShortCPS: 100, ShortRuns: []float64{100}, CPUPerKConn: 2}); !reflect.DeepEqual(r, want) {
		t.Errorf("got  %+v\nwant %+v", r, want)
	}
}

// A path without iperf3 (its servers read a PROXY header first) runs the
// HTTP workloads alone.
func TestMeasureNoIperf(t *testing.T) {
	var cpu float64
	f := &fakeClient{short: []wrkResult{{rps: 100, requests: 1000}}, udp: []float64{1}, cpu: &cpu}
	p := testPath(&cpu, true)
	p.Iperf = netip.AddrPort{}
	r, err := measure(context.Background(), f, p, Options{Duration: time.Second, Workloads: []string{"iperf1", "iperf4", "short", "udp"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.calls, []string{"short 10.0.0.1:80"}) {
		t.Errorf("ran %q, want only the short connections", f.calls)
	}
	if r.ShortCPS != 100 || r.Gbps1 != 0 || r.UDPpps != 0 {
		t.Errorf("got %+v", r)
	}
}

func TestMeasureStopsAtFailure(t *testing.T) {
	var cpu float64
	f := &fakeClient{gbps1: []float64{1, 1}, gbps4: []float64{1, 1}, short: []wrkResult{{rps: 1, requests: 1}}, cpu: &cpu, fail: "keepalive"}
	r, err := measure(context.Background(), f, testPath(&cpu, true), Options{Runs: 2, Duration: time.Second})
	if err == nil {
		t.Fatal("no error from a failed workload")
	}
	if !reflect.DeepEqual(r, Result{Path: "p"}) {
		t.Errorf("a failed measurement returned figures: %+v", r)
	}
	if want := []string{"iperf1 10.0.0.1:5201 1", "iperf4", "short 10.0.0.1:80", "keepalive"}; !slices.Equal(f.calls, want) {
		t.Errorf("ran %q, want %q", f.calls, want)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		v    []float64
		want float64
	}{
		{nil, 0}, // not measured
		{[]float64{7}, 7},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 3}, // even: the upper middle, a figure that was measured
	} {
		if got := median(slices.Clone(c.v)); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.v, got, c.want)
		}
	}
}

func TestCountersSince(t *testing.T) {
	c0 := counters{drops: map[string]uint64{"no_route": 5, "ack_storm": 1, "bad_csum": 2}, cookies: 10, opened: 9, failed: 1, retries: 2, timeWait: 3}
	c := counters{drops: map[string]uint64{"no_route": 5, "ack_storm": 44, "bad_csum": 3, "table_full": 7}, cookies: 110, opened: 99, failed: 1, retries: 4, timeWait: 8}
	want := "ack_storm 43; bad_csum 1; cookies 100, handshakes 90, server failures 0, SYN retries 2, server TIME_WAITs ended 5; table_full 7"
	if got := c.since(c0); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	// No cookies sent: the SYN proxy was not in the path, say nothing of it.
	c.cookies = c0.cookies
	if got := c.since(c0); got != "ack_storm 43; bad_csum 1; table_full 7" {
		t.Errorf("without cookies: %q", got)
	}
	if got := c0.since(c0); got != "" {
		t.Errorf("nothing changed: %q", got)
	}
	// On the ring: its io_uring_enter calls per frame read; on the
	// readers' path (ring false) nothing of it.
	r0, r := counters{frames: 1000, enters: 50, ring: true}, counters{frames: 9000, enters: 450, ring: true}
	if got := r.since(r0); got != "io_uring_enter 0.050 per frame read (8000 frames)" {
		t.Errorf("on the ring: %q", got)
	}
	r0.ring, r.ring = false, false
	if got := r.since(r0); got != "" {
		t.Errorf("on the readers' path: %q", got)
	}
}

func (f *fakeClient) sustained(_ context.Context, to netip.AddrPort, d time.Duration) (sustainedRun, error) {
	if err := f.call("sustained " + to.String() + " " + d.String()); err != nil {
		return sustainedRun{}, err
	}
	return pop(&f.sus), nil
}

// The sustained workload runs only when named, for at least MinSustained,
// and its figures are the runs' medians: the first window's rate, the
// whole run's (all requests over all the time, gaps between windows
// included), their ratio, the slowest window, and the most TIME_WAIT
// sockets any run ended with.
func TestMeasureSustained(t *testing.T) {
	var cpu float64
	s := time.Second
	f := &fakeClient{cpu: &cpu, short: []wrkResult{{rps: 1, requests: 1}}, sus: []sustainedRun{
		// A cliff: 1000/s, then 100/s.
		{windows: []float64{1000, 1000, 100, 100}, requests: 22000, elapsed: 40 * s, timeWait: 30000, connectErrors: 7},
		// Steady.
		{windows: []float64{900, 880, 910, 905}, requests: 35950, elapsed: 40 * s, timeWait: 400},
		{windows: []float64{950, 800, 900, 850}, requests: 35000, elapsed: 40 * s, timeWait: 500},
	}}
	if _, err := measure(context.Background(), f, testPath(&cpu, false), Options{Duration: s, Workloads: []string{"short"}}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.calls, []string{"short 10.0.0.1:80"}) {
		t.Fatalf("ran %q without sustained named", f.calls)
	}
	f.calls = nil
	r, err := measure(context.Background(), f, testPath(&cpu, false), Options{Runs: 3, Duration: s, Workloads: []string{"sustained"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "sustained 10.0.0.1:80 2m0s"; len(f.calls) != 3 || f.calls[0] != want {
		t.Fatalf("ran %q, want %q three times", f.calls, want)
	}
	want := SustainedResult{Runs: 3, Seconds: 40, First: 950, Whole: 875, Ratio: 875.0 / 950, Slowest: 800, ConnectErrors: 0,
		TimeWait: 30000, Windows: "1000 1000 100 100 | 900 880 910 905 | 950 800 900 850",
		RunFirst: []float64{1000, 900, 950}, RunWhole: []float64{550, 898.75, 875}}
	if !reflect.DeepEqual(r.Sustained, want) {
		t.Fatalf("got  %+v\nwant %+v", r.Sustained, want)
	}
}
