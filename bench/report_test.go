package bench

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/table.md from the current output")

// fixed is a run with round figures: tapvs is 2× HAProxy and 0.5× the
// kernel on one stream, the direct path was not chosen.
func fixed() []Result {
	return []Result{
		{Path: "direct"},
		{Path: "nftables", Gbps1: 20, Gbps4: 40, ShortCPS: 20000, KeepRPS: 100000, P50: 200 * time.Microsecond, P99: 2 * time.Millisecond,
			IdleP50: 50 * time.Microsecond, IdleP99: 100 * time.Microsecond, UDPpps: 160000, CPUPerGB: 0.25, CPUPerKConn: 0.05,
			Sustained: SustainedResult{Runs: 1, Seconds: 150, First: 12000, Whole: 11500, Ratio: 11500.0 / 12000, Slowest: 10000, TimeWait: 400,
				Windows: "12000 11000 10000", RunFirst: []float64{12000}, RunWhole: []float64{11500}}},
		{Path: "haproxy", Gbps1: 5, Gbps4: 10, ShortCPS: 10000, KeepRPS: 50000, P50: 400 * time.Microsecond, P99: 800 * time.Microsecond,
			IdleP50: 80 * time.Microsecond, IdleP99: 130 * time.Microsecond, CPUPerGB: 0.9, CPUPerKConn: 0.07},
		{Path: "tapvs", Gbps1: 10, Gbps4: 20, ShortCPS: 16000, ShortRuns: []float64{17000, 16000, 15000}, KeepRPS: 60000, P50: 500 * time.Microsecond, P99: 1650 * time.Microsecond,
			IdleP50: 60 * time.Microsecond, IdleP99: 500 * time.Microsecond, UDPpps: 80000, CPUPerGB: 0.46, CPUPerKConn: 0.082,
			Sustained: SustainedResult{Runs: 1, Seconds: 150, First: 8000, Whole: 2000, Ratio: 0.25, Slowest: 320, ConnectErrors: 12, TimeWait: 32000,
				Windows: "8000 7000 320", RunFirst: []float64{8000}, RunWhole: []float64{2000}}},
		// Runs 8500/17000, 14400/16000, 14250/15000: 0.50, 0.90, 0.95.
		{Path: "tapvs+sync", ShortCPS: 14250, ShortRuns: []float64{8500, 14400, 14250},
			Sync: []SyncRun{{CPS: 8500, Bytes: 301.5, Datagrams: 0.6, Records: 2.9, PeerApplied: 2.9, PeerCPUPerKConn: 0.021},
				{CPS: 14400, Bytes: 290, Datagrams: 0.5, Records: 2.8, PeerApplied: 2.8, PeerRefused: 3, PeerCPUPerKConn: 0.02},
				{CPS: 14250, Bytes: 280, Datagrams: 0.5, Records: 2.7, PeerApplied: 2.7, PeerCPUPerKConn: 0.019}}},
		{Path: "tapvs+syscalls", Gbps1: 8, Gbps4: 16, ShortCPS: 8000, KeepRPS: 40000, P50: 700 * time.Microsecond, P99: 2 * time.Millisecond,
			IdleP50: 90 * time.Microsecond, IdleP99: 600 * time.Microsecond, UDPpps: 40000, CPUPerGB: 0.6, CPUPerKConn: 0.15},
		{Path: "tapvs+synproxy", Gbps1: 10, Gbps4: 20, ShortCPS: 12000, KeepRPS: 60000, P50: 600 * time.Microsecond, P99: 2 * time.Millisecond,
			IdleP50: 60 * time.Microsecond, IdleP99: 2 * time.Millisecond, UDPpps: 80000, CPUPerGB: 0.43, CPUPerKConn: 0.091,
			Notes: "cookies 10, handshakes 10, server failures 0, SYN retries 0, server TIME_WAITs ended 0",
			Flood: FloodResult{Runs: 3, BaseCPS: 2616, FloodCPS: 260, Ratio: 0.1, SynPerSec: 70000, HalfOpenMax: 4, HalfOpenStuckMax: 0,
				Frames: 895244, TxDropped: 125792, RetransSegs: 172, SynRetrans: 58}},
		// HTTP only: its servers read a PROXY header first, which iperf3 cannot.
		{Path: "tapvs+proxy-v2", ShortCPS: 15200, KeepRPS: 57000, P50: 550 * time.Microsecond, P99: 1800 * time.Microsecond,
			IdleP50: 66 * time.Microsecond, IdleP99: 520 * time.Microsecond, CPUPerKConn: 0.09},
	}
}

func TestTableGolden(t *testing.T) {
	got := table(fixed(), "2 cores (test CPU), Linux 6.0, 2026-01-01", Options{Runs: 3, Duration: 5 * time.Second})
	golden := filepath.Join("testdata", "table.md")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("table changed (go test -run TestTableGolden -update ./bench/ to accept):\n%s", got)
	}
}

// The golden file pins the whole table; these say which cells matter and
// why, so a change to the golden file can be checked against them.
func TestTableCells(t *testing.T) {
	got := table(fixed(), "M", Options{Runs: 3, Duration: 5 * time.Second})
	for _, want := range []string{
		"Machine: M. Each cell: median of 3 run(s) of 5s.\n",
		// A path not measured is a row of dashes, not zeros.
		"| direct | — | — | — | — | — | — | — | — | — | — | — |\n",
		// Units: ms for the saturated latency, µs for one connection, kpps.
		"| tapvs | 10.00 | 20.00 | 16000 | 60000 | 0.50 | 1.65 | 60 | 500 | 80 | 0.46 | 0.082 |\n",
		// The flood: the ratio, and the counts that explain it; only the
		// paths it ran through have a row.
		"| tapvs+synproxy | 2616 | 260 | 0.10× | 70000 | 4 (0) | 125792 (of 895244, 14.1%) | 172 (58) |\n",
		// HAProxy's TCP mode cannot carry UDP.
		"| haproxy | 5.00 | 10.00 | 10000 | 50000 | 0.40 | 0.80 | 80 | 130 | n/a (TCP only) | 0.90 | 0.070 |\n",
		// tapvs / kernel; latency too is tapvs over the other, so > 1 is slower.
		"| kernel nftables FULLNAT | 0.50× | 0.50× | 0.80× | 0.60× | 2.50× | 1.20× | 0.50× |\n",
		// HAProxy has no UDP figure to compare with.
		"| HAProxy | 2.00× | 2.00× | 1.60× | 1.20× | 1.25× | 0.75× | — |\n",
		"| tapvs (synproxy vs without) | 1.00× | 1.00× | 0.75× | 1.00× | 1.20× | 1.00× | — |\n",
		// The PROXY path has no iperf3 figures: its ratios are HTTP's alone.
		"| tapvs+proxy-v2 | — | — | 15200 | 57000 | 0.55 | 1.80 | 66 | 520 | — | — | 0.090 |\n",
		"| tapvs (proxy-v2 vs without) | — | — | 0.95× | 0.95× | 1.10× | 1.10× | — |\n",
		"| proxy-v2 short conns/s vs without | 0.95× | ≥ 0.90× | met |\n",
		// Throughput targets are floors, latency targets ceilings.
		"| 1 stream vs HAProxy | 2.00× | ≥ 1.50× | met |\n",
		"| short conns/s vs kernel FULLNAT | 0.80× | ≥ 0.80× | met |\n",
		"| synproxy short conns/s vs without | 0.75× | ≥ 0.90× | **missed** |\n",
		"| keep-alive p50 latency vs kernel FULLNAT, 1 connection | 1.20× | ≤ 1.30× | met |\n",
		"| keep-alive p50 latency vs kernel FULLNAT, 32 connections (saturated) | 2.50× | ≤ 1.30× | **missed** |\n",
		"\ntapvs+synproxy counters during its runs: cookies 10, handshakes 10, server failures 0, SYN retries 0, server TIME_WAITs ended 0.\n",
		// The sustained workload: tapvs against its own first 10 s, and
		// against the kernel over the whole run; only the paths it ran
		// through have a row.
		"| sustained short conns/s, whole run vs its first 10 s | 0.25× | ≥ 0.90× | **missed** |\n",
		"for 150 s in 10-second windows (1 run(s)), the client with `net.ipv4.tcp_tw_reuse=1` and `net.ipv4.ip_local_port_range=1024 65000`",
		"| tapvs | 8000 | 2000 | 0.25× | 320 | 12 | 32000 |\n",
		"| nftables | 12000 | 11500 | 0.96× | 10000 | 0 | 400 |\n",
		"\ntapvs vs kernel nftables FULLNAT, whole run: 0.17× (medians).\n",
		"- tapvs: 8000 7000 320\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "busy polls") {
		t.Error("table mentions busy polling, which was off")
	}
}

func TestTableNotMeasured(t *testing.T) {
	// Only tapvs measured: every ratio and target lacks its other side.
	rs := []Result{{Path: "nftables"}, {Path: "haproxy"}, {Path: "tapvs", Gbps1: 10, ShortCPS: 1000}, {Path: "tapvs+synproxy"}}
	got := table(rs, "M", Options{Duration: time.Second, BusyPoll: 200 * time.Microsecond})
	for _, want := range []string{
		"median of 1 run(s) of 1s. tapvs busy polls (interfaces.busy_poll: 200µs).\n", // Runs 0 is one run
		"| kernel nftables FULLNAT | — | — | — | — | — | — | — |\n",
		"| 1 stream vs HAProxy | — | | not measured |\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "×") {
		t.Errorf("a ratio with nothing to compare:\n%s", got)
	}
	if strings.Contains(got, "counters during") {
		t.Errorf("notes for a run without any:\n%s", got)
	}
	if strings.Contains(got, "queues per TAP") || strings.Contains(got, "pollers") {
		t.Errorf("the defaults' queues and pollers named:\n%s", got)
	}
	if got := table(rs, "M", Options{Duration: time.Second, Queues: 1}); strings.Contains(got, "queues per TAP") {
		t.Errorf("the CLI's default of one queue named:\n%s", got)
	}
	got = table(rs, "M", Options{Duration: time.Second, Queues: 2, Pollers: 2})
	if want := "median of 1 run(s) of 1s. tapvs's queues per TAP: 2. tapvs's io_uring pollers: 2.\n"; !strings.Contains(got, want) {
		t.Errorf("table lacks %q:\n%s", want, got)
	}
	// No more pollers than queues run: the header says what ran.
	got = table(rs, "M", Options{Duration: time.Second, Queues: 1, Pollers: 4})
	if want := "median of 1 run(s) of 1s. tapvs's io_uring pollers: 1.\n"; !strings.Contains(got, want) {
		t.Errorf("table lacks %q:\n%s", want, got)
	}
}

func TestRatio(t *testing.T) {
	for _, c := range []struct {
		a, b float64
		want string
	}{{3, 2, "1.50×"}, {1, 3, "0.33×"}, {0, 2, "—"}, {2, 0, "—"}} {
		if got := ratio(c.a, c.b); got != c.want {
			t.Errorf("ratio(%v, %v) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

func TestReportWrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "results") // made by report
	var out bytes.Buffer
	o := Options{Runs: 1, Duration: time.Second, OutDir: dir, Out: &out}
	if err := report(o, fixed(), "M"); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	if want := table(fixed(), "M", o); string(md) != want {
		t.Errorf("results.md is not the table:\n%s", md)
	}
	png, err := os.ReadFile(filepath.Join(dir, "chart.png"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("chart.png is not a PNG: % x", png[:min(len(png), 8)])
	}
	wantOut := "\n" + string(md) + "\nwritten: " + filepath.Join(dir, "results.md") + ", " + filepath.Join(dir, "chart.png") + "\n"
	if out.String() != wantOut {
		t.Errorf("printed %q, want %q", out.String(), wantOut)
	}
}

func TestReportNoOutDir(t *testing.T) {
	t.Chdir(t.TempDir())
	var out bytes.Buffer
	if err := report(Options{Out: &out}, fixed(), "M"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "written:") {
		t.Errorf("claims to have written files: %q", out.String())
	}
	if ents, _ := os.ReadDir("."); len(ents) != 0 {
		t.Errorf("wrote %v without an output directory", ents)
	}
}

// With several runs the sustained table gives each run's first → whole
// and tapvs/kernel run by run (run i of one path against run i of the
// other), and every run's windows.
func TestSustainedTableRunByRun(t *testing.T) {
	rs := []Result{
		{Path: "nftables", Sustained: SustainedResult{Runs: 2, Seconds: 150, First: 9000, Whole: 9000, Ratio: 1, Slowest: 8000,
			Windows: "8000 9000 | 10000 9000", RunFirst: []float64{8000, 10000}, RunWhole: []float64{8000, 10000}}},
		{Path: "tapvs", Sustained: SustainedResult{Runs: 2, Seconds: 150, First: 4500, Whole: 4000, Ratio: 0.9, Slowest: 3000,
			Windows: "4000 3000 | 5000 4000", RunFirst: []float64{4000, 5000}, RunWhole: []float64{4000, 2500}}},
	}
	// The target is the median of the runs' ratios (0.90×), not the
	// median whole over the median first (4000 / 4500 = 0.89×).
	if want := "| sustained short conns/s, whole run vs its first 10 s | 0.90× | ≥ 0.90× | met |\n"; !strings.Contains(table(rs, "M", Options{Runs: 2, Duration: 5 * time.Second}), want) {
		t.Errorf("table lacks %q", want)
	}
	var b strings.Builder
	sustainedTable(&b, rs)
	for _, want := range []string{
		"whole run: 0.44× (medians); run by run 0.50×, 0.25×.\n",
		"- tapvs: 4000 → 4000 (1.00×), 5000 → 2500 (0.50×)\n",
		"- nftables: 8000 → 8000 (1.00×), 10000 → 10000 (1.00×)\n",
		"- tapvs: 4000 3000 | 5000 4000\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// The flood's targets: tapvs+synproxy keeps 0.6× of its own rate, and at
// least the kernel SYNPROXY's ratio in the same run (nftables+synproxy's,
// or without it the no-timestamps variant's).
func TestTableFloodTargets(t *testing.T) {
	fl := func(path string, ratio float64) Result {
		return Result{Path: path, Flood: FloodResult{Runs: 3, BaseCPS: 1000, FloodCPS: 1000 * ratio, Ratio: ratio}}
	}
	for _, c := range []struct {
		rs   []Result
		want []string
	}{
		{[]Result{fl("tapvs+synproxy", 0.86), fl("nftables+synproxy-nots", 0.94)}, []string{
			"| synproxy short conns/s under the flood vs without | 0.86× | ≥ 0.60× | met |\n",
			"| synproxy's flood ratio vs the kernel SYNPROXY's | 0.86× against 0.94× | ≥ the kernel's | **missed** |\n"}},
		{[]Result{fl("tapvs+synproxy", 0.5), fl("nftables+synproxy", 0.25), fl("nftables+synproxy-nots", 0.94)}, []string{
			"| synproxy short conns/s under the flood vs without | 0.50× | ≥ 0.60× | **missed** |\n",
			"| synproxy's flood ratio vs the kernel SYNPROXY's | 0.50× against 0.25× | ≥ the kernel's | met |\n"}},
		// A flood that left no connection is measured, and missed; the
		// kernel's doing as badly is met.
		{[]Result{fl("tapvs+synproxy", 0), fl("nftables+synproxy", 0)}, []string{
			"| synproxy short conns/s under the flood vs without | 0.00× | ≥ 0.60× | **missed** |\n",
			"| synproxy's flood ratio vs the kernel SYNPROXY's | 0.00× against 0.00× | ≥ the kernel's | met |\n"}},
		{[]Result{fl("tapvs+synproxy", 0.5)}, []string{"| synproxy's flood ratio vs the kernel SYNPROXY's | — | | not measured |\n"}},
	} {
		got := table(c.rs, "M", Options{Duration: time.Second})
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("table lacks %q:\n%s", w, got)
			}
		}
	}
	if got := table([]Result{{Path: "tapvs+synproxy", ShortCPS: 1}}, "M", Options{Duration: time.Second}); strings.Contains(got, "under the flood") {
		t.Errorf("flood targets without a flood run:\n%s", got)
	}
}
