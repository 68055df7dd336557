package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/netstack"
)

// measureAll measures the chosen paths in PathNames' order. A path not
// chosen gets an empty Result, so the table still has its row. tapvs and
// tapvs+sync, when both are chosen, are measured together, their runs
// alternating (measureSyncPair).
func (tb *testbed) measureAll(ctx context.Context, o Options) ([]Result, error) {
	chosen := func(name string) bool { return len(o.Paths) == 0 || slices.Contains(o.Paths, name) }
	paired := chosen("tapvs") && chosen("tapvs+sync")
	var pair map[string]Result
	var results []Result
	for _, p := range tb.paths {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !chosen(p.Name) {
			results = append(results, Result{Path: p.Name})
			continue
		}
		if paired && (p.Name == "tapvs" || p.Sync) {
			if pair == nil {
				var err error
				if pair, err = tb.measureSyncPair(ctx, o); err != nil {
					return nil, err
				}
			}
			results = append(results, pair[p.Name])
			continue
		}
		// tapvs runs with sync for the Sync path alone, on read and
		// write system calls for tapvs+syscalls alone.
		if strings.HasPrefix(p.Name, "tapvs") {
			if err := tb.useVariant(ctx, o, p.variant()); err != nil {
				return nil, fmt.Errorf("%s: %w", p.Name, err)
			}
		}
		r, err := tb.measurePath(ctx, p, o)
		if err != nil {
			return nil, err
		}
		results = append(results, r)
	}
	return results, nil
}

// measureSyncPair measures tapvs and tapvs+sync a run of each at a time,
// in the order ABBA (tapvs first in odd runs, tapvs+sync in even ones),
// tapvs restarted with or without sync at each switch. Measured one path
// after the other, the path measured second gained 10-20% on this machine
// (either way round: the first runs after the lab is built are slower),
// which is the size of what sync costs; alternating cancels a drift of
// the machine that is steady over a few runs.
func (tb *testbed) measureSyncPair(ctx context.Context, o Options) (map[string]Result, error) {
	var ps []Path
	for _, p := range tb.paths {
		if p.Name == "tapvs" || p.Sync {
			ps = append(ps, p)
		}
	}
	if len(ps) != 2 || ps[0].Sync {
		return nil, fmt.Errorf("the sync pair: paths %v", ps)
	}
	one := o
	one.Runs = 1
	s := make([]samples, 2)
	notes := make([][]string, 2)
	for run := range max(o.Runs, 1) {
		order := []int{0, 1}
		if run%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			p := ps[i]
			if err := tb.useVariant(ctx, o, p.variant()); err != nil {
				return nil, fmt.Errorf("%s: %w", p.Name, err)
			}
			n, err := tb.measureRuns(ctx, p, one, &s[i], fmt.Sprintf("%s.run%d", p.Name, run+1))
			if n != "" {
				notes[i] = append(notes[i], fmt.Sprintf("run %d: %s", run+1, n))
			}
			if err != nil {
				return nil, err
			}
		}
	}
	out := map[string]Result{}
	for i, p := range ps {
		r := s[i].result(p.Name)
		r.Notes = strings.Join(notes[i], "; ")
		out[p.Name] = r
	}
	return out, nil
}

// measurePath runs every chosen workload through p, o.Runs times.
func (tb *testbed) measurePath(ctx context.Context, p Path, o Options) (Result, error) {
	var s samples
	notes, err := tb.measureRuns(ctx, p, o, &s, p.Name)
	if err != nil {
		return Result{Path: p.Name, Notes: notes}, err
	}
	r := s.result(p.Name)
	r.Notes = notes
	return r, nil
}

// measureRuns runs every chosen workload through p into s, under a CPU
// profile (<prof>.pprof) when asked. For the tapvs paths it returns what
// tapvs counted meanwhile, also when a workload failed: drops are often
// why.
func (tb *testbed) measureRuns(ctx context.Context, p Path, o Options, s *samples, prof string) (notes string, err error) {
	fmt.Fprintf(o.Out, "measuring %s...\n", p.Name)
	before := tb.counters()
	stopProfile, err := profile(o.ProfileDir, prof)
	if err != nil {
		return "", err
	}
	err = measureInto(ctx, netnsClient{ns: tb.top.Client, servers: tb.top.RS[:]}, p, o, s)
	stopProfile()
	if strings.HasPrefix(p.Name, "tapvs") {
		notes = tb.counters().since(before)
		fmt.Fprintf(o.Out, "  tapvs counters during %s: %s\n", p.Name, notes)
	}
	if err != nil {
		logs, _ := os.ReadFile(tb.logf.Name())
		return notes, fmt.Errorf("%s: %w\nserver logs:\n%s", p.Name, err, logs)
	}
	return notes, nil
}

// counters are tapvs's drop and SYN proxy counters at one moment, and
// its TAP I/O's: frames read, and io_uring_enter calls when on the ring.
type counters struct {
	drops                                      map[string]uint64
	cookies, opened, failed, retries, timeWait uint64
	frames, enters                             uint64
	ring                                       bool
}

func (tb *testbed) counters() counters {
	s := &tb.d.Balancer.Stats
	c := counters{drops: s.Drops(), timeWait: s.SynproxyTimeWait()}
	c.cookies, c.opened, c.failed, c.retries = s.Synproxy()
	for _, e := range []*netstack.Endpoint{tb.d.Stack.Client, tb.d.Stack.Server} {
		for i := range e.Stats() {
			c.frames += e.Stats()[i].Received.Load()
		}
	}
	c.enters, c.ring = tb.d.Stack.RingEnters()
	return c
}

// since says what rose from c0 to c: each drop reason, and the SYN proxy's
// counters when it sent cookies (a path without the SYN proxy sends none),
// sorted so runs compare line by line.
func (c counters) since(c0 counters) string {
	var notes []string
	for k, v := range c.drops {
		if v > c0.drops[k] {
			notes = append(notes, fmt.Sprintf("%s %d", k, v-c0.drops[k]))
		}
	}
	if c.ring && c.frames > c0.frames {
		// Every system call of the ring path's I/O is an io_uring_enter
		// (the readers' path makes a read per frame and a write per
		// frame written).
		notes = append(notes, fmt.Sprintf("io_uring_enter %.3f per frame read (%d frames)",
			float64(c.enters-c0.enters)/float64(c.frames-c0.frames), c.frames-c0.frames))
	}
	if c.cookies > c0.cookies {
		notes = append(notes, fmt.Sprintf("cookies %d, handshakes %d, server failures %d, SYN retries %d, server TIME_WAITs ended %d",
			c.cookies-c0.cookies, c.opened-c0.opened, c.failed-c0.failed, c.retries-c0.retries, c.timeWait-c0.timeWait))
	}
	sort.Strings(notes)
	return strings.Join(notes, "; ")
}

// client runs the load generators; netnsClient in the lab, a fake in tests.
type client interface {
	iperf(ctx context.Context, to netip.AddrPort, streams int, sec string) (bps, bytes float64, err error)
	iperfUDP(ctx context.Context, to netip.AddrPort, sec string) (pps float64, err error)
	wrk(ctx context.Context, to netip.AddrPort, sec string, close bool, conns int) (wrkResult, error)
	// The flood workload's (flood.go).
	shortUnderFlood(ctx context.Context, to netip.AddrPort, sec string) (wrkResult, error)
	// flood floods to with hping3 --flood, or at rate SYN/s when rate > 0
	// (paced.go).
	flood(ctx context.Context, to netip.AddrPort, rate int) (stop func() (synPerSec float64, err error), err error)
	halfOpen(ctx context.Context) (halfOpen, error)
	probe(ctx context.Context, dev string) (probe, error)
	// The sustained workload's (sustained.go).
	sustained(ctx context.Context, to netip.AddrPort, d time.Duration) (sustainedRun, error)
}

// measure runs every chosen workload through one path, o.Runs times each,
// and keeps the medians: one run can be disturbed by the machine, the
// median of three rarely is.
func measure(ctx context.Context, c client, p Path, o Options) (Result, error) {
	var s samples
	if err := measureInto(ctx, c, p, o, &s); err != nil {
		return Result{Path: p.Name}, err
	}
	return s.result(p.Name), nil
}

// measureInto runs every chosen workload through p, o.Runs times each,
// adding each run's figures to s.
func measureInto(ctx context.Context, c client, p Path, o Options, s *samples) error {
	runs := max(o.Runs, 1)
	sec := strconv.Itoa(int(o.Duration.Seconds()))
	for range runs {
		if p.Iperf.IsValid() && o.wants("iperf1") {
			c0 := p.cpuSeconds()
			bps, bytes, err := c.iperf(ctx, p.Iperf, 1, sec)
			if err != nil {
				return err
			}
			s.gbps1 = append(s.gbps1, bps/1e9)
			s.cpuGB = append(s.cpuGB, (p.cpuSeconds()-c0)/(bytes/1e9))
		}
		if p.Iperf.IsValid() && o.wants("iperf4") {
			bps, _, err := c.iperf(ctx, p.Iperf, 4, sec)
			if err != nil {
				return err
			}
			s.gbps4 = append(s.gbps4, bps/1e9)
		}
		if o.wants("short") {
			var sc0 syncCount
			if p.Sync {
				var err error
				if sc0, err = p.syncCounters(); err != nil {
					return err
				}
			}
			c0 := p.cpuSeconds()
			w, err := c.wrk(ctx, p.HTTP, sec, true, 32)
			if err != nil {
				return err
			}
			s.short = append(s.short, w.rps)
			s.cpuK = append(s.cpuK, (p.cpuSeconds()-c0)/(w.requests/1000))
			if p.Sync {
				sc1, err := syncSettle(ctx, p.syncCounters, sc0, p.syncClosing)
				if err != nil {
					return err
				}
				r, err := syncRun(w, sc0, sc1)
				if err != nil {
					return fmt.Errorf("short: %w", err)
				}
				s.sync = append(s.sync, r)
			}
		}
		if o.wants("keepalive") {
			w, err := c.wrk(ctx, p.HTTP, sec, false, 32)
			if err != nil {
				return err
			}
			s.keep, s.p50, s.p99 = append(s.keep, w.rps), append(s.p50, float64(w.p50)), append(s.p99, float64(w.p99))
		}
		if o.wants("latency") {
			w, err := c.wrk(ctx, p.HTTP, sec, false, 1)
			if err != nil {
				return err
			}
			s.idle50, s.idle99 = append(s.idle50, float64(w.p50)), append(s.idle99, float64(w.p99))
		}
		if p.UDP && p.Iperf.IsValid() && o.wants("udp") {
			pps, err := c.iperfUDP(ctx, p.Iperf, sec)
			if err != nil {
				return err
			}
			s.udp = append(s.udp, pps)
		}
		if p.Synproxy && o.wants("flood") {
			f, err := measureFlood(ctx, c, p, sec, o.FloodRate)
			if err != nil {
				return fmt.Errorf("flood: %w", err)
			}
			s.flood, s.floodRate = append(s.flood, f), o.FloodRate
		}
		if o.wants("sustained") {
			r, err := c.sustained(ctx, p.HTTP, max(o.Sustained, MinSustained))
			if err != nil {
				return fmt.Errorf("sustained: %w", err)
			}
			s.sustained = append(s.sustained, r)
		}
	}
	return nil
}

// samples are one path's figures, one per run.
type samples struct {
	gbps1, gbps4, short, keep, p50, p99, idle50, idle99, cpuGB, cpuK, udp []float64
	flood                                                                 []floodStats
	sustained                                                             []sustainedRun
	sync                                                                  []SyncRun
	floodRate                                                             int // Options.FloodRate of the flood runs
}

// result is the median of each figure's runs.
func (s *samples) result(path string) Result {
	var shortRuns []float64
	if len(s.short) > 0 {
		shortRuns = slices.Clone(s.short) // before median sorts them
	}
	return Result{
		Path: path, ShortRuns: shortRuns, Sync: s.sync,
		Gbps1: median(s.gbps1), Gbps4: median(s.gbps4), ShortCPS: median(s.short), KeepRPS: median(s.keep), UDPpps: median(s.udp),
		P50: time.Duration(median(s.p50)), P99: time.Duration(median(s.p99)),
		IdleP50: time.Duration(median(s.idle50)), IdleP99: time.Duration(median(s.idle99)),
		CPUPerGB: median(s.cpuGB), CPUPerKConn: median(s.cpuK),
		Flood: s.floodResult(), Sustained: sustainedResult(s.sustained),
	}
}

// floodResult is the median of each flood figure's runs, but the
// half-open counts are the most any run saw: a SYN proxy must keep the
// stuck ones at 0.
func (s *samples) floodResult() FloodResult {
	if len(s.flood) == 0 {
		return FloodResult{}
	}
	var base, flood, ratio, syn, frames, dropped, retrans, synRetrans []float64
	r := FloodResult{Runs: len(s.flood), Paced: s.floodRate}
	for _, f := range s.flood {
		base, flood, syn = append(base, f.base), append(flood, f.flood), append(syn, f.synPerSec)
		if f.base > 0 {
			ratio = append(ratio, f.flood/f.base)
		}
		frames, dropped = append(frames, float64(f.txPackets+f.txDropped)), append(dropped, float64(f.txDropped))
		retrans, synRetrans = append(retrans, float64(f.retransSegs)), append(synRetrans, float64(f.synRetrans))
		r.HalfOpenMax, r.HalfOpenStuckMax = max(r.HalfOpenMax, f.halfOpen.open), max(r.HalfOpenStuckMax, f.halfOpen.stuck)
	}
	r.BaseCPS, r.FloodCPS, r.Ratio, r.SynPerSec = median(base), median(flood), median(ratio), median(syn)
	r.Frames, r.TxDropped = median(frames), median(dropped)
	r.RetransSegs, r.SynRetrans = median(retrans), median(synRetrans)
	return r
}

// median is 0 for a workload that was not measured. It sorts v.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

// profile starts a CPU profile of this process into dir/<name>.pprof when
// dir is set and name is a tapvs path; the returned func stops it.
func profile(dir, name string) (func(), error) {
	if dir == "" || !strings.HasPrefix(name, "tapvs") {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
