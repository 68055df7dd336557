package bench

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The sustained workload: short connections (wrk, 16 connections,
// Connection: close) from one client for minutes, not seconds, with the
// client set up as a user chasing connections/s sets it up: tcp_tw_reuse
// on and a wide local port range. Its own TIME_WAIT sockets then hold a
// client's ports for 60 s, and it can reuse one sooner only when the
// connection had TCP timestamps (tcp_tw_reuse needs them): a path that
// takes the timestamps away runs well until the client's ports are all in
// TIME_WAIT, then at what the expiring ones free. A 5-second window never
// sees that; this one is cut into 10-second windows, each a wrk run of its
// own right after the last, and compares the whole run's rate with the
// first window's.

// sustainedWindow is the length of each wrk run of the sustained workload.
const sustainedWindow = 10 * time.Second

// sustainedConns is wrk's connections in the sustained workload.
const sustainedConns = 16

// MinSustained is the shortest sustained run: two of the client's 60 s
// TIME_WAIT periods.
const MinSustained = 2 * time.Minute

// sustainedRun is one sustained run's raw figures.
type sustainedRun struct {
	windows       []float64 // connections/s of each window
	requests      float64   // all windows'
	elapsed       time.Duration
	connectErrors int
	timeWait      int // the client's TIME_WAIT sockets at the end
}

// SustainedResult is the sustained workload's figures: medians of the
// runs, but TimeWait, the most any run ended with, and RunFirst, RunWhole
// and Windows, each run's.
type SustainedResult struct {
	Runs          int
	Seconds       float64 // the length of a run
	First, Whole  float64 // connections/s in the first window, and over the whole run
	Ratio         float64 // Whole/First, the median of each run's
	Slowest       float64 // the slowest window's connections/s
	ConnectErrors int     // wrk's connect errors
	TimeWait      int     // the client's TIME_WAIT sockets at the end
	Windows       string  // each window's connections/s, in order, runs apart by " | "
	// RunFirst and RunWhole are each run's First and Whole, in order: on a
	// shared machine one run's ratio says little, the spread says more.
	RunFirst, RunWhole []float64
}

// sustainedResult is the median of each figure's runs.
func sustainedResult(runs []sustainedRun) SustainedResult {
	if len(runs) == 0 {
		return SustainedResult{}
	}
	r := SustainedResult{Runs: len(runs)}
	var secs, first, whole, ratio, slowest, errs []float64
	var windows []string
	for _, s := range runs {
		if len(s.windows) == 0 || s.elapsed <= 0 {
			continue
		}
		w := s.requests / s.elapsed.Seconds()
		secs, first, whole = append(secs, s.elapsed.Seconds()), append(first, s.windows[0]), append(whole, w)
		if s.windows[0] > 0 {
			ratio = append(ratio, w/s.windows[0])
		}
		low := s.windows[0]
		for _, v := range s.windows {
			low = min(low, v)
		}
		slowest, errs = append(slowest, low), append(errs, float64(s.connectErrors))
		r.TimeWait = max(r.TimeWait, s.timeWait)
		f := make([]string, len(s.windows))
		for i, v := range s.windows {
			f[i] = strconv.FormatFloat(v, 'f', 0, 64)
		}
		windows = append(windows, strings.Join(f, " "))
	}
	// median sorts its argument: the runs' order is kept in copies.
	r.Windows, r.RunFirst, r.RunWhole = strings.Join(windows, " | "), slices.Clone(first), slices.Clone(whole)
	r.Seconds, r.First, r.Whole, r.Ratio = median(secs), median(first), median(whole), median(ratio)
	r.Slowest, r.ConnectErrors = median(slowest), int(median(errs))
	return r
}

// sustained runs the sustained workload once toward to, for d: the
// client's TIME_WAIT sockets of earlier workloads left to expire (a path
// starts as the first would), then wrk window after window. The client
// has tcp_tw_reuse and the wide port range from setup (nsSysctls).
func (c netnsClient) sustained(ctx context.Context, to netip.AddrPort, d time.Duration) (sustainedRun, error) {
	var r sustainedRun
	// The TIME_WAIT sockets of the workloads before expire in 60 s; a
	// path must not start with fewer ports than the one before it had.
	for deadline := time.Now().Add(75 * time.Second); ; {
		n, err := c.timeWait(ctx)
		if err != nil {
			return r, err
		}
		if n <= 1000 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	sec := strconv.Itoa(int(sustainedWindow.Seconds()))
	start := time.Now()
	for n := int((d + sustainedWindow - 1) / sustainedWindow); n > 0; n-- {
		// scanWrk: connect errors are part of what this measures.
		out, err := run(ctx, c.ns, wrkArgs(to, sec, true, sustainedConns)...)
		if err != nil {
			return r, err
		}
		w, err := scanWrk(out, to)
		if err != nil {
			return r, err
		}
		r.windows = append(r.windows, w.rps)
		r.requests += w.requests
		r.connectErrors += w.connectErrors
	}
	r.elapsed = time.Since(start)
	var err error
	r.timeWait, err = c.timeWait(ctx)
	return r, err
}

// timeWait counts the client's TIME_WAIT sockets.
func (c netnsClient) timeWait(ctx context.Context) (int, error) {
	out, err := run(ctx, c.ns, "ss", "-Htan", "state", "time-wait")
	if err != nil {
		return 0, err
	}
	return countSS(out), nil
}
