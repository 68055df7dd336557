package soak

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/daemon"
	"github.com/tapvs/tapvs/netstack"
)

// drainFor bounds the wait for the table to empty: the soak's timeouts
// (soakExtra) end every closing connection within 2s and every UDP one
// within 2s of its last datagram; the sweep runs every 100ms.
const drainFor = 30 * time.Second

// drain waits until tapvs's connection table is empty.
func (s *soak) drain(ctx context.Context) error {
	t := s.d.Balancer.Table()
	deadline := time.Now().Add(drainFor)
	for t.Len() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	if n := t.Len(); n > 0 {
		var left []string
		for i, c := range t.Conns() {
			if i == 5 {
				left = append(left, "...")
				break
			}
			left = append(left, fmt.Sprintf("%s %s->%s %s", c.State, c.Client, c.VIP, c.RIP))
		}
		return fmt.Errorf("the connection table still holds %d connections %v after traffic stopped: %s", n, drainFor, strings.Join(left, ", "))
	}
	return ctx.Err()
}

// Sample is the process's resources at a quiet moment.
//
// HeapInuse, after a GC, is the bound that is checked tightly: it counts
// live Go objects and the spans they sit in, so a leak of connections,
// buffers or snapshots shows in it, and it does not depend on when the
// runtime gives pages back. VmRSS is checked loosely: it also sees what the
// heap does not (goroutine stacks, memory outside Go's heap), but lags the
// scavenger even after FreeOSMemory. Both are the whole process's: tapvs
// and the soak's own clients and servers, all stopped at both samples.
type Sample struct {
	Goroutines int
	HeapInuse  uint64
	RSS        uint64
}

func (m Sample) String() string {
	return fmt.Sprintf("%d goroutines, heap in use %.1f MiB, RSS %.1f MiB", m.Goroutines, mib(m.HeapInuse), mib(m.RSS))
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// The bounds, over the baseline taken after the warm-up.
const (
	goroutineSlack = 4 // the runtime's and net/http's goroutines that exit a little late
	heapSlack      = 8 << 20
	rssSlack       = 32 << 20
)

func heapBound(base uint64) uint64 { return base + base/4 + heapSlack }
func rssBound(base uint64) uint64  { return base + base/2 + rssSlack }

// measure samples the resources after a GC. With a baseline, it gives the
// goroutines that end with the traffic (HTTP transports' connection
// goroutines, closing sockets) up to 10s to go.
func (s *soak) measure(base *Sample) Sample {
	if base != nil {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > base.Goroutines+goroutineSlack && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Sample{Goroutines: runtime.NumGoroutine(), HeapInuse: ms.HeapInuse, RSS: vmRSS()}
}

// vmRSS reads this process's resident set size from /proc; 0 if it cannot.
func vmRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// snapshot is tapvs's counters at one moment.
type snapshot struct {
	drops                            map[string]uint64
	queueDropped, txErrors           uint64
	created                          uint64
	cookies, opened, failed, retries uint64
}

func counters(d *daemon.Daemon) snapshot {
	s := snapshot{drops: d.Balancer.Stats.Drops()}
	for _, qs := range [][]netstack.QueueStats{d.Stack.Client.Stats(), d.Stack.Server.Stats()} {
		for i := range qs {
			s.queueDropped += qs[i].Dropped.Load()
			s.txErrors += qs[i].TxErrors.Load()
		}
	}
	s.created, _ = d.Balancer.Stats.Conns()
	s.cookies, s.opened, s.failed, s.retries = d.Balancer.Stats.Synproxy()
	return s
}

// allowedDrops are the drop reasons the soak's faults explain, each with
// its explanation and the condition under which it holds; a reason that
// moves and is not here, or whose condition does not hold, fails the soak.
//
// A restarted real server cuts its open HTTP connections and refuses the
// SYNs that reach it while it is down. A 10-minute run (9 restarts) saw 4
// not_syn and 1 synproxy_queue_full drops and no other reason; the likely
// cause is the restarts: late segments of a connection the cut had closed
// (its entry, in CLOSE for 1s, gone), and a client's retransmissions held
// behind a SYNPROXY handshake the restarting server had not answered (more
// than max_queued). That is not proven, so each is allowed only when every
// move of its counter was sampled within a restart window; a move outside
// one fails the soak.
var allowedDrops = map[string]struct {
	why  string
	when func(r *Report) bool
}{
	"not_syn": {"late segments of connections a real-server restart cut", func(r *Report) bool { return r.DuringRestart["not_syn"] }},
	// A client's segments past max_queued (3) while the real server has not
	// yet answered the SYNPROXY's SYN are dropped by design, as LVS and
	// DPVS drop them: the client sends them again. On a loaded machine a
	// server's SYN-ACK can take longer than a client's retransmission
	// timeout without any fault, so a few are allowed anywhere (at most one
	// per thousand proved handshakes, and at least one); more, outside a
	// restart, fail the soak.
	"synproxy_queue_full": {"client retransmissions past max_queued while a slow or restarting server had not answered the synproxy's SYN",
		func(r *Report) bool {
			return r.DuringRestart["synproxy_queue_full"] || r.Drops["synproxy_queue_full"] <= max(1, r.Opened/1000)
		}},
}

// Report is what a soak did and what it found.
type Report struct {
	Seed     uint64
	Duration time.Duration // of the soak phase (after the warm-up)

	Requests, Bytes map[string]int64            // by kind of traffic (errors included in Requests)
	Explained       map[string]map[string]int64 // kind -> cause -> errors
	Unexplained     map[string]int64
	Samples         string // the first unexplained errors

	Drops                     map[string]uint64 // reasons that moved
	QueueDropped, TxErrors    uint64
	Conns                     uint64
	Cookies, Opened, SPFailed uint64

	Reloads, Restarts int
	Flood             Flood
	Loss              string // the kernel's loss counters that moved
	// DuringRestart says, by drop reason, whether every move of its counter
	// was seen during a real-server restart.
	DuringRestart map[string]bool

	Base, End Sample
	Failures  []string
}

func (s *soak) report(base, end Sample, c0, c1 snapshot, d time.Duration, drainErr error) *Report {
	t := s.tally
	t.mu.Lock()
	r := &Report{Seed: s.o.Seed, Duration: d, Requests: t.requests, Bytes: t.bytes, Explained: t.explainedN, Unexplained: t.unexplN,
		Drops: map[string]uint64{}, QueueDropped: c1.queueDropped - c0.queueDropped, TxErrors: c1.txErrors - c0.txErrors,
		Conns: c1.created - c0.created, Cookies: c1.cookies - c0.cookies, Opened: c1.opened - c0.opened, SPFailed: c1.failed - c0.failed,
		Reloads: s.reloads, Flood: s.flood, Loss: s.loss.String(), Base: base, End: end}
	t.mu.Unlock()
	r.Samples = t.unexplainedErrors()
	s.mu.Lock()
	r.Restarts = len(s.restarts)
	r.DuringRestart = s.loss.dropsDuring(s.restarts)
	s.mu.Unlock()
	fail := func(format string, a ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, a...)) }

	var reasonSum uint64
	for k, v := range c1.drops {
		if dv := v - c0.drops[k]; dv > 0 {
			r.Drops[k] = dv
			reasonSum += dv
			if a, ok := allowedDrops[k]; !ok || !a.when(r) {
				fail("%d packets dropped as %s: nothing the soak did explains that", dv, k)
			}
		}
	}
	if reasonSum != r.QueueDropped {
		fail("the readers dropped %d frames but the reasons add up to %d", r.QueueDropped, reasonSum)
	}
	if r.TxErrors > 0 {
		fail("%d frames refused by a TAP on the way out", r.TxErrors)
	}
	for _, k := range kinds {
		if n := r.Unexplained[k]; n > 0 {
			fail("%d %s errors with no fault to explain them", n, k)
		}
		var ok int64 = r.Requests[k] - r.Unexplained[k]
		for _, n := range r.Explained[k] {
			ok -= n
		}
		if ok == 0 {
			fail("no %s request succeeded", k)
		}
	}
	if r.Reloads == 0 || r.Restarts == 0 || !r.Flood.Injected {
		fail("not every fault happened: %d reloads, %d restarts, flood %t", r.Reloads, r.Restarts, r.Flood.Injected)
	}
	if r.Flood.Spoofed > 0 {
		fail("%d connection entries of spoofed sources right after the SYN flood", r.Flood.Spoofed)
	}
	if r.Flood.Sent < r.Flood.Built*9/10 {
		fail("the SYN flood reached the TAP with only %d of %d frames", r.Flood.Sent, r.Flood.Built)
	}
	if drainErr != nil {
		fail("%v", drainErr)
	}
	if end.Goroutines > base.Goroutines+goroutineSlack {
		fail("%d goroutines at the end, %d after the warm-up (bound +%d)", end.Goroutines, base.Goroutines, goroutineSlack)
	}
	if end.HeapInuse > heapBound(base.HeapInuse) {
		fail("heap in use %.1f MiB at the end, %.1f MiB after the warm-up (bound %.1f MiB: +25%% +8 MiB)", mib(end.HeapInuse), mib(base.HeapInuse), mib(heapBound(base.HeapInuse)))
	}
	if base.RSS > 0 && end.RSS > rssBound(base.RSS) {
		fail("RSS %.1f MiB at the end, %.1f MiB after the warm-up (bound %.1f MiB: +50%% +32 MiB)", mib(end.RSS), mib(base.RSS), mib(rssBound(base.RSS)))
	}
	sort.Strings(r.Failures)
	return r
}

// Print writes the report as a few aligned tables.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\nsoak report (seed %d, %v after the warm-up)\n", r.Seed, r.Duration.Round(time.Second))
	fmt.Fprintf(w, "  %-14s %9s %10s  %s\n", "traffic", "requests", "MiB", "errors")
	var tot int64
	for _, k := range kinds {
		var errs []string
		for cause, n := range r.Explained[k] {
			errs = append(errs, fmt.Sprintf("%d %s", n, cause))
		}
		if n := r.Unexplained[k]; n > 0 {
			errs = append(errs, fmt.Sprintf("%d UNEXPLAINED", n))
		}
		sort.Strings(errs)
		if len(errs) == 0 {
			errs = []string{"none"}
		}
		tot += r.Requests[k]
		fmt.Fprintf(w, "  %-14s %9d %10.1f  %s\n", k, r.Requests[k], mib(uint64(r.Bytes[k])), strings.Join(errs, ", "))
	}
	if r.Samples != "" {
		fmt.Fprintf(w, "  unexplained errors (first few): %s\n", r.Samples)
	}
	fmt.Fprintf(w, "  faults: %d reloads, %d real-server restarts, SYN flood at %v: %d spoofed SYNs taken by the TAP (%d built), %d cookies sent meanwhile\n",
		r.Reloads, r.Restarts, r.Flood.At.Round(time.Second), r.Flood.Sent, r.Flood.Built, r.Flood.Cookies)
	fmt.Fprintf(w, "  losses the kernel counted: %s\n", r.Loss)
	fmt.Fprintf(w, "  tapvs: %d connections made, synproxy: %d cookies, %d handshakes proved, %d server handshakes failed\n", r.Conns, r.Cookies, r.Opened, r.SPFailed)
	var reasons []string
	for k := range r.Drops {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	none := ""
	if len(reasons) == 0 {
		none = " (none)"
	}
	fmt.Fprintf(w, "  drops: %d frames%s\n", r.QueueDropped, none)
	for _, k := range reasons {
		why := "NOT EXPLAINED"
		if a, ok := allowedDrops[k]; ok && a.when(r) {
			why = a.why
		}
		fmt.Fprintf(w, "    %-20s %8d  %s\n", k, r.Drops[k], why)
	}
	fmt.Fprintf(w, "  after the warm-up: %s\n", r.Base)
	fmt.Fprintf(w, "  at the end:        %s\n", r.End)
	fmt.Fprintf(w, "  bounds: goroutines +%d, heap in use +25%% +8 MiB, RSS +50%% +32 MiB\n", goroutineSlack)
	if len(r.Failures) == 0 {
		fmt.Fprintf(w, "PASS: %d requests, every error and drop explained, table drained, resources back within bounds\n", tot)
		return
	}
	fmt.Fprintln(w, "FAIL:")
	for _, f := range r.Failures {
		fmt.Fprintln(w, "  -", f)
	}
}
