// Package bench measures tapvs side by side with the kernel and HAProxy in
// one run on one machine: the same lab topology, the same real servers
// (nginx, iperf3), the same client tools (iperf3, wrk), through five paths:
//
//	direct     client -> router -> RS                     (kernel routing)
//	nftables   client -> router[dnat+snat] -> RS          (kernel FULLNAT)
//	nftables+synproxy[-nots]  the same behind the kernel's SYNPROXY, with
//	           and without TCP timestamps
//	haproxy    client -> router[HAProxy TCP, 2 threads] -> RS
//	tapvs      client -> tapvs -> router -> RS
//	sync       the same tapvs, with connection sync to a second tapvs
//	           (sync.go)
//	synproxy   the same, through a SYNPROXY service
//	ts-remove  the same, through a service that removes TCP timestamps
//	           (tcp_timestamps: remove, as LVS FULLNAT does)
//
// and over IPv6: direct6, nftables6 (kernel FULLNAT, ip6 table), haproxy6,
// tapvs6, and tapvs-nat64 (an IPv6 VIP in front of the IPv4 servers).
//
// Figures drift between machines and runs; ratios within a run hold.
//
// A run has three phases, one file each: setup.go builds the lab and starts
// everything the paths need, measure.go runs every workload through every
// path, report.go turns the results into the table and the chart. The tools
// it drives (iperf3, wrk) are in tools.go, the CPU accounting in host.go.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Options are the bench command's.
type Options struct {
	Duration time.Duration // per measurement
	Runs     int           // measurements per cell; the median is reported
	OutDir   string        // results.md and chart.png
	Out      io.Writer
	Log      *slog.Logger
	// Paths and Workloads pick what to measure (nil: all); the table shows
	// "—" for the rest. Names: PathNames, WorkloadNames.
	Paths, Workloads []string
	// ProfileDir, when set, receives a CPU profile of tapvs per tapvs path
	// (<path>.pprof): the harness and tapvs share this process.
	ProfileDir string
	// BusyPoll is tapvs's interfaces.busy_poll for the run (0: off).
	BusyPoll time.Duration
	// IO is tapvs's interfaces.io for the run ("": the default, syscalls).
	IO string
	// Queues is tapvs's queues per TAP (interfaces.*.queues; 0: 1).
	Queues int
	// Pollers is tapvs's interfaces.pollers for the run (0: its default,
	// from the CPU count and the queues).
	Pollers int
	// Sustained is the length of the sustained workload (sustained.go),
	// at least MinSustained; 0 is that.
	Sustained time.Duration
	// TxQueueLen, when set, is tapvs's interfaces.*.txqueuelen for the run
	// (the kernel's default is 1000 frames): the TAPs' transmit queue is
	// where frames wait for tapvs to read them.
	TxQueueLen int
	// FloodRate, when set, paces the flood workload's spoofed SYNs at this
	// many a second from a raw socket, the same for every path, instead of
	// hping3 --flood's as-fast-as-it-can (paced.go says why).
	FloodRate int
}

// PathNames and WorkloadNames are what Options.Paths and Options.Workloads
// choose from.
var (
	PathNames = []string{"direct", "nftables", "nftables+synproxy", "nftables+synproxy-nots", "haproxy", "tapvs", "tapvs+sync", "tapvs+syscalls", "tapvs+synproxy", "tapvs+proxy-v2", "tapvs+ts-remove",
		"direct6", "nftables6", "haproxy6", "tapvs6", "tapvs-nat64"}
	// sustained runs minutes per path: only when asked for by name.
	WorkloadNames = []string{"iperf1", "iperf4", "short", "keepalive", "latency", "udp", "flood", "sustained"}
)

// Check names the first unknown path or workload.
func (o Options) Check() error {
	for _, p := range o.Paths {
		if !slices.Contains(PathNames, p) {
			return fmt.Errorf("paths: unknown path %q (have %s)", p, strings.Join(PathNames, ", "))
		}
	}
	if o.BusyPoll < 0 || o.BusyPoll > time.Second {
		return fmt.Errorf("busy-poll: %s is not from 0 to 1s", o.BusyPoll)
	}
	switch o.IO {
	case "", "auto", "uring", "syscalls":
	default:
		return fmt.Errorf("io: %q is not one of auto, uring, syscalls", o.IO)
	}
	if o.Queues < 0 || o.Queues > 64 {
		return fmt.Errorf("queues: %d is not a queue count (1-64, 0 for 1)", o.Queues)
	}
	if o.Pollers < 0 || o.Pollers > 64 {
		return fmt.Errorf("pollers: %d is not a poller count (1-64, 0 for tapvs's default)", o.Pollers)
	}
	if o.Pollers > 0 && o.IO == "syscalls" {
		return fmt.Errorf("pollers: %d io_uring pollers, but io is syscalls", o.Pollers)
	}
	if o.FloodRate < 0 || o.FloodRate > 1_000_000 {
		return fmt.Errorf("flood-rate: %d is not a rate of SYN/s (1-1000000, 0 for hping3 --flood)", o.FloodRate)
	}
	if o.Sustained != 0 && o.Sustained < MinSustained {
		return fmt.Errorf("sustained: %s is under %s: two of the client's TIME_WAIT periods (60 s) at least", o.Sustained, MinSustained)
	}
	if o.TxQueueLen < 0 || o.TxQueueLen > 100000 {
		return fmt.Errorf("tap-txqueuelen: %d is not from 0 to 100000", o.TxQueueLen)
	}
	for _, w := range o.Workloads {
		if !slices.Contains(WorkloadNames, w) {
			return fmt.Errorf("workloads: unknown workload %q (have %s)", w, strings.Join(WorkloadNames, ", "))
		}
	}
	return nil
}

// wants reports whether the run measures workload: every one but
// sustained when none is named.
func (o Options) wants(workload string) bool {
	if len(o.Workloads) == 0 {
		return workload != "sustained"
	}
	return slices.Contains(o.Workloads, workload)
}

// WantsIperf reports whether the run has a workload that needs iperf3.
func (o Options) WantsIperf() bool {
	return o.wants("iperf1") || o.wants("iperf4") || o.wants("udp")
}

// Path is one way from the client to the real servers.
type Path struct {
	Name       string
	HTTP       netip.AddrPort // nginx, behind the path
	Iperf      netip.AddrPort // iperf3 on RS1, behind the path; zero: none (the iperf workloads skip the path)
	UDP        bool           // the path carries UDP (HAProxy's TCP mode does not)
	Synproxy   bool           // a SYN proxy answers SYNs: the flood workload runs through it
	Dev        string         // the client's device towards the balancer, in its namespace
	cpuSeconds func() float64 // the balancer's CPU time so far; nil: not attributable
	// Sync: tapvs runs with connection sync for this path, and
	// syncCounters reads what sync counted (the short workload reports it).
	Sync bool
	// IO, when set, is tapvs's interfaces.io for this path, whatever the
	// run's (Options.IO): tapvs+syscalls is the same tapvs on read and
	// write system calls, measured beside the default's figures.
	IO           string
	syncCounters func() (syncCount, error)
	syncClosing  time.Duration // how long a closing connection stays in tapvs's table (closingTimeout)
}

// Result is one path's figures.
type Result struct {
	Path                  string
	Gbps1, Gbps4          float64         // iperf3, 1 and 4 streams
	ShortCPS              float64         // wrk, Connection: close
	ShortRuns             []float64       // each run's ShortCPS, in run order
	KeepRPS               float64         // wrk, keep-alive
	P50, P99              time.Duration   // keep-alive, 32 connections: saturated, so mostly queueing
	IdleP50, IdleP99      time.Duration   // keep-alive, one connection: the path's own latency
	UDPpps                float64         // iperf3 UDP, 64-byte payloads, packets/s received; 0: not measured
	CPUPerGB, CPUPerKConn float64         // balancer CPU-seconds per GB (iperf3 1 stream) and per 1000 short connections
	Notes                 string          // tapvs's drops and synproxy counters during the run
	Flood                 FloodResult     // the flood workload; zero: not measured
	Sustained             SustainedResult // the sustained workload; zero: not measured
	Sync                  []SyncRun       // the short workload's runs through a Sync path
}

// FloodResult is the flood workload's figures: medians of the runs, but
// HalfOpenMax and HalfOpenStuckMax, the most any run saw.
type FloodResult struct {
	Runs                    int
	Paced                   int     // the SYN/s asked for (Options.FloodRate); 0: hping3 --flood
	BaseCPS, FloodCPS       float64 // legitimate short connections/s without and with the flood
	Ratio                   float64 // FloodCPS/BaseCPS, the median of each run's
	SynPerSec               float64 // spoofed SYNs/s the flood sent
	HalfOpenMax             int     // the real servers' SYN-RECV sockets
	HalfOpenStuckMax        int     // of those, the ones that retransmitted their SYN-ACK: no one answered within 1 s
	Frames, TxDropped       float64 // frames the client-side device was given during the flood, and those it dropped
	RetransSegs, SynRetrans float64 // the legitimate clients' TCP retransmits, and of those SYNs
}

// Run builds the lab, measures every path, prints the table and writes the
// chart. Everything it starts is stopped and removed, also on error.
func Run(ctx context.Context, o Options) error {
	if err := o.Check(); err != nil {
		return err
	}
	tb, err := setup(ctx, o)
	if err != nil {
		return err
	}
	defer tb.close()
	results, err := tb.measureAll(ctx, o)
	if err != nil {
		return err
	}
	return report(o, results, machine())
}
