package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// hping3-flood.txt is hping3 3.0.0's output when interrupted in flood mode
// (its banner on stderr, after the statistics on stdout); nstat.txt is
// iproute2 6.1's nstat -asz; ss-syn-recv.txt is ss -Htan state syn-recv's
// format (written by hand: a real server behind a SYN proxy has none).
func TestParseHping(t *testing.T) {
	n, err := parseHping(testdata(t, "hping3-flood.txt"))
	if err != nil || n != 45567 {
		t.Errorf("got %d, %v; want 45567", n, err)
	}
	// Killed before it printed its statistics: no figure rather than 0 SYNs.
	if _, err := parseHping([]byte("HPING 10.0.0.1 (eth0 10.0.0.1): S set, 40 headers + 0 data bytes\nhping in flood mode, no replies will be shown\n")); err == nil {
		t.Error("no error for output without statistics")
	}
}

func TestFloodArgs(t *testing.T) {
	got := floodArgs(netip.MustParseAddrPort("172.25.254.100:8080"))
	want := []string{"hping3", "-S", "--flood", "--rand-source", "-p", "8080", "172.25.254.100"}
	if !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
}

func TestCountSS(t *testing.T) {
	if n := countSS(testdata(t, "ss-syn-recv.txt")); n != 3 {
		t.Errorf("%d sockets, want 3", n)
	}
	for _, empty := range []string{"", "\n", "  \n\n"} {
		if n := countSS([]byte(empty)); n != 0 {
			t.Errorf("%q: %d sockets, want 0", empty, n)
		}
	}
}

// ss -Htano's SYN-RECV lines (iproute2 6.x, testdata/ss-syn-recv-timers.txt):
// every line is a half-open socket, and stuck when its timer shows a
// SYN-ACK retransmit.
func TestCountSynRecv(t *testing.T) {
	if h := countSynRecv(testdata(t, "ss-syn-recv-timers.txt")); h != (halfOpen{open: 4, stuck: 2}) {
		t.Errorf("%+v, want 4 open, 2 stuck", h)
	}
	for in, want := range map[string]halfOpen{
		"":                                   {},
		"  \n\n":                             {},
		"0 0 10.0.0.1:80 10.0.0.2:1\n":       {open: 1}, // no timer
		"0 0 a b timer:(on,1.2sec,1\n":       {open: 1}, // cut short
		"0 0 a b timer:(on,1.2sec,x)\n":      {open: 1},
		"0 0 a b timer:(on,1.2sec,0)\n":      {open: 1},
		"0 0 a b timer:(on,1.2sec,12)\nx\n":  {open: 2, stuck: 1},
		"0 0 a b timer:(on,1.2sec,1) zz\n\n": {open: 1, stuck: 1},
	} {
		if h := countSynRecv([]byte(in)); h != want {
			t.Errorf("%q: %+v, want %+v", in, h, want)
		}
	}
}

func TestParseNstat(t *testing.T) {
	m, err := parseNstat(testdata(t, "nstat.txt"), "TcpRetransSegs", "TcpExtTCPSynRetrans")
	if err != nil {
		t.Fatal(err)
	}
	if m["TcpRetransSegs"] != 172 || m["TcpExtTCPSynRetrans"] != 58 {
		t.Errorf("got %v", m)
	}
	// A counter this kernel does not have must not read as 0 retransmits.
	if _, err := parseNstat(testdata(t, "nstat.txt"), "TcpRetransSegs", "TcpExtTCPSynFastOpen"); err == nil || !strings.Contains(err.Error(), "TcpExtTCPSynFastOpen") {
		t.Errorf("a missing counter: %v", err)
	}
	if _, err := parseNstat([]byte("#kernel\nTcpRetransSegs x 0.0\n"), "TcpRetransSegs"); err == nil {
		t.Error("no error for a value that is not a number")
	}
}

// Under a flood, connect errors are part of the figure: scanWrk reports
// them where parseWrk fails.
func TestScanWrkKeepsConnectErrors(t *testing.T) {
	out := strings.Replace(string(testdata(t, "wrk-close.txt")), "Requests/sec:", "  Socket errors: connect 300, read 0, write 0, timeout 12\nRequests/sec:", 1)
	w, err := scanWrk([]byte(out), to)
	if err != nil || w.connectErrors != 300 || w.rps != 724.49 {
		t.Errorf("got %+v, %v", w, err)
	}
	if _, err := parseWrk([]byte(out), to); err == nil || !strings.Contains(err.Error(), "300 connect errors") {
		t.Errorf("parseWrk: %v", err)
	}
}

// floodFake is the flood workload's side of fakeClient: each run's figures
// from a list.
type floodFake struct {
	mu          sync.Mutex
	underFlood  []wrkResult
	synPerSec   []float64
	halfOpens   []halfOpen // one run's sample; every sample of the run reads it
	probes      []probe
	flooding    bool
	halfOpenRun int
	samples     int
}

func (f *fakeClient) shortUnderFlood(_ context.Context, to netip.AddrPort, _ string) (wrkResult, error) {
	f.ff.mu.Lock()
	defer f.ff.mu.Unlock()
	if !f.ff.flooding {
		panic("wrk under flood without a flood")
	}
	if err := f.call("flood-wrk " + to.String()); err != nil {
		return wrkResult{}, err
	}
	return pop(&f.ff.underFlood), nil
}

func (f *fakeClient) flood(_ context.Context, to netip.AddrPort, rate int) (func() (float64, error), error) {
	f.ff.mu.Lock()
	defer f.ff.mu.Unlock()
	name := "hping3 "
	if rate > 0 {
		name = fmt.Sprintf("paced %d ", rate)
	}
	if err := f.call(name + to.String()); err != nil {
		return nil, err
	}
	f.ff.flooding = true
	stopped := false
	return func() (float64, error) {
		f.ff.mu.Lock()
		defer f.ff.mu.Unlock()
		if stopped { // measureFlood's deferred stop after the real one
			return 0, nil
		}
		stopped, f.ff.flooding = true, false
		f.calls = append(f.calls, "stop")
		return pop(&f.ff.synPerSec), nil
	}, nil
}

func (f *fakeClient) halfOpen(context.Context) (halfOpen, error) {
	f.ff.mu.Lock()
	defer f.ff.mu.Unlock()
	f.ff.samples++
	return f.ff.halfOpens[f.ff.halfOpenRun], nil
}

func (f *fakeClient) probe(_ context.Context, dev string) (probe, error) {
	f.ff.mu.Lock()
	defer f.ff.mu.Unlock()
	if err := f.call("probe " + dev); err != nil {
		return probe{}, err
	}
	if !f.ff.flooding && len(f.ff.probes)%2 == 1 { // the after-probe ends a run
		defer func() { f.ff.halfOpenRun++ }()
	}
	return pop(&f.ff.probes), nil
}

func floodPath() Path {
	cpu := 0.0
	p := testPath(&cpu, false)
	p.Synproxy, p.Dev = true, "tap-c"
	return p
}

// Three flood runs: the ratio is the median of each run's, the counts are
// the medians of their rises during the flood, the half-open count the most
// any run saw.
func TestMeasureFlood(t *testing.T) {
	var cpu float64
	f := &fakeClient{cpu: &cpu, short: []wrkResult{{rps: 1000, requests: 1}, {rps: 2000, requests: 1}, {rps: 1000, requests: 1}}}
	f.ff.underFlood = []wrkResult{{rps: 100}, {rps: 1000}, {rps: 500}} // ratios 0.1, 0.5, 0.5
	f.ff.synPerSec = []float64{70000, 60000, 80000}
	f.ff.halfOpens = []halfOpen{{0, 0}, {3, 0}, {1, 1}}
	f.ff.probes = []probe{
		{txPackets: 10, txDropped: 1, retransSegs: 5, synRetrans: 2}, {txPackets: 1010, txDropped: 101, retransSegs: 205, synRetrans: 62}, // 1100 frames, 100 dropped, 200 (60)
		{txPackets: 0, txDropped: 0}, {txPackets: 500, txDropped: 0, retransSegs: 10, synRetrans: 0}, // 500, 0, 10 (0)
		{txPackets: 0}, {txPackets: 3000, txDropped: 1000, retransSegs: 400, synRetrans: 100}, // 4000, 1000, 400 (100)
	}
	r, err := measure(context.Background(), f, floodPath(), Options{Runs: 3, Duration: time.Second, Workloads: []string{"flood"}})
	if err != nil {
		t.Fatal(err)
	}
	want := FloodResult{Runs: 3, BaseCPS: 1000, FloodCPS: 500, Ratio: 0.5, SynPerSec: 70000, HalfOpenMax: 3, HalfOpenStuckMax: 1,
		Frames: 1100, TxDropped: 100, RetransSegs: 200, SynRetrans: 60}
	if r.Flood != want {
		t.Errorf("got  %+v\nwant %+v", r.Flood, want)
	}
	// The no-flood run right before the flood, the counters read around the
	// flood, the flood stopped before the counters are read again.
	run := []string{"short 10.0.0.1:80", "probe tap-c", "hping3 10.0.0.1:80", "flood-wrk 10.0.0.1:80", "stop", "probe tap-c"}
	if wantCalls := slices.Concat(run, run, run); !slices.Equal(f.calls, wantCalls) {
		t.Errorf("ran %q\nwant %q", f.calls, wantCalls)
	}
	if f.ff.samples < 3 {
		t.Errorf("%d half-open samples in 3 runs", f.ff.samples)
	}
}

// Only a path with a SYN proxy is flooded: without one the flood measures
// the real servers' SYN backlog, not the balancer.
func TestMeasureFloodOnlySynproxy(t *testing.T) {
	var cpu float64
	f := &fakeClient{cpu: &cpu}
	r, err := measure(context.Background(), f, testPath(&cpu, true), Options{Duration: time.Second, Workloads: []string{"flood"}})
	if err != nil || len(f.calls) != 0 || r.Flood.Runs != 0 {
		t.Errorf("a path without a SYN proxy: ran %q, %+v, %v", f.calls, r.Flood, err)
	}
}

// A failure while flooding stops the flood and fails the measurement.
func TestMeasureFloodFailureStopsFlood(t *testing.T) {
	var cpu float64
	f := &fakeClient{cpu: &cpu, short: []wrkResult{{rps: 1000, requests: 1}}, fail: "flood-wrk 10.0.0.1:80"}
	f.ff.synPerSec, f.ff.halfOpens, f.ff.probes = []float64{1}, []halfOpen{{}}, []probe{{}, {}}
	_, err := measure(context.Background(), f, floodPath(), Options{Duration: time.Second, Workloads: []string{"flood"}})
	if err == nil || !strings.Contains(err.Error(), "flood") {
		t.Errorf("error %v, want the flood's", err)
	}
	if f.ff.flooding {
		t.Error("the flood was left running")
	}
	if !errors.Is(err, errTool) {
		t.Errorf("the tool's error is not wrapped: %v", err)
	}
}

// With --flood-rate the flood is the paced one at that rate, and the
// report says so.
func TestMeasureFloodPaced(t *testing.T) {
	var cpu float64
	f := &fakeClient{cpu: &cpu, short: []wrkResult{{rps: 1000, requests: 1}}}
	f.ff.underFlood = []wrkResult{{rps: 700}}
	f.ff.synPerSec, f.ff.halfOpens, f.ff.probes = []float64{29990}, []halfOpen{{}}, []probe{{}, {}}
	r, err := measure(context.Background(), f, floodPath(), Options{Runs: 1, Duration: time.Second, Workloads: []string{"flood"}, FloodRate: 30000})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.calls, "paced 30000 10.0.0.1:80") || slices.Contains(f.calls, "hping3 10.0.0.1:80") {
		t.Errorf("ran %q, want the paced flood", f.calls)
	}
	if r.Flood.Paced != 30000 || r.Flood.SynPerSec != 29990 || r.Flood.Ratio != 0.7 {
		t.Errorf("%+v", r.Flood)
	}
	var b strings.Builder
	floodTable(&b, []Result{r})
	if !strings.Contains(b.String(), "paced at 30000 SYN/s") || strings.Contains(b.String(), "hping3") {
		t.Errorf("the table does not say the flood was paced:\n%s", b.String())
	}
}
