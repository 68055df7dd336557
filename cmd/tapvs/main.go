// Command tapvs is a user-space LVS FULLNAT load balancer between two TAPs.
//
//	tapvs run -c config.yaml    the daemon
//	tapvs lab                   a whole lab in network namespaces, with traffic
//	tapvs lab --cluster 3       three tapvs behind an ECMP router (FRR) over BGP
//	tapvs soak --duration 10m   the lab under mixed traffic and faults, checked at the end
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tapvs/tapvs/bench"

	"github.com/spf13/cobra"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/daemon"
	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/rootless"
	"github.com/tapvs/tapvs/soak"
)

func main() {
	root := &cobra.Command{
		Use:           "tapvs",
		Short:         "A user-space LVS FULLNAT load balancer on TAP devices",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), labCmd(), benchCmd(), soakCmd(), healthzCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tapvs:", err)
		os.Exit(1)
	}
}

func newLogger(level, format string) *slog.Logger {
	var lv slog.Level
	lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// rootlessFlag adds --rootless to a command that needs TAPs and namespaces.
func rootlessFlag(c *cobra.Command) *string {
	return c.Flags().String("rootless", string(rootless.Auto),
		"run in a user+mount+network namespace of tapvs's own: auto (when not root), always, never")
}

// enterRootless runs the command again in a namespace of its own if the
// --rootless mode asks for one, and then exits with that run's code; it
// returns only to go on here (in the namespace, or where none is needed).
func enterRootless(mode string) error {
	m, err := rootless.ParseMode(mode)
	if err != nil {
		return err
	}
	reexeced, code, err := rootless.Enter(m)
	if err != nil {
		return err
	}
	if reexeced {
		os.Exit(code)
	}
	return nil
}

func runCmd() *cobra.Command {
	var path string
	var mode *string
	var takeOver bool
	c := &cobra.Command{
		Use:   "run",
		Short: "Run the balancer from a configuration file",
		Long: `run starts the balancer from a configuration file. Not root, it runs in a user,
mount and network namespace of its own (--rootless=auto): its TAPs, the
namespaces the file names and the control socket are there, not on the host.

With --takeover it takes the TAPs over from the tapvs already running with
the same configuration (a restart that keeps the interfaces: an upgrade, a
change that needs a restart), which exits once this one serves.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := enterRootless(*mode); err != nil {
				return err
			}
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			log := newLogger(cfg.LogLevel, cfg.LogFormat)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			start := daemon.Start
			if takeOver {
				start = daemon.StartTakeover
			}
			d, err := start(cfg, log)
			if err != nil {
				return err
			}
			// A successor may take this process over (tapvs run
			// --takeover): it then ends through Abandon, below.
			if err := d.ServeTakeover(); err != nil {
				d.Close()
				return err
			}
			// SIGHUP or a change to the file reloads it; a burst of writes
			// (an editor saving) is one reload.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			// A data path that failed for good (a TAP deleted under
			// tapvs) ends the daemon with its error: a supervisor
			// restarts it, which recreates the TAPs.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			handed := make(chan struct{})
			go func() {
				select {
				case <-d.Failed():
					cancel()
				case <-d.HandedOver():
					close(handed)
					cancel()
				case <-ctx.Done():
				}
			}()
			d.ReloadOn(ctx, hup, path)
			select {
			case <-handed:
				// A successor runs on the TAPs: let go, tear nothing down.
				d.Abandon()
				log.Info("taken over by a new tapvs: exiting")
				return nil
			default:
			}
			log.Info("shutting down")
			d.Close()
			return d.Err()
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "config.yaml", "configuration file")
	c.Flags().BoolVar(&takeOver, "takeover", false, "take the TAPs over from the tapvs running with this configuration (its takeover socket is beside control.socket), which then exits; if none runs, start as usual")
	mode = rootlessFlag(c)
	return c
}

// healthzCmd is a container's probe: images FROM scratch have no curl or
// wget, and podman kube play runs even an httpGet probe as a command inside
// the container, so the probe is tapvs itself asking its /healthz.
func healthzCmd() *cobra.Command {
	var addr string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "healthz",
		Short: "Exit 0 if the tapvs whose metrics listen on --addr is up (a container's probe)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl := &http.Client{Timeout: timeout}
			resp, err := cl.Get("http://" + addr + "/healthz")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s/healthz: %s", addr, resp.Status)
			}
			return nil
		},
	}
	c.Flags().StringVar(&addr, "addr", "127.0.0.1:9477", "metrics.listen of the tapvs to ask")
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for the answer")
	return c
}

func labCmd() *cobra.Command {
	o := lab.Options{Out: os.Stdout}
	co := lab.ClusterOptions{Out: os.Stdout}
	var mib int64
	var mode *string
	c := &cobra.Command{
		Use:   "lab",
		Short: "Build a lab in network namespaces, send traffic through tapvs, tear it down",
		Long: `lab builds, in network namespaces it creates itself, a client, tapvs between
two TAPs, a router, and two real servers on two subnets behind the router. It
sends requests from the client to the VIP, prints which real server answered
and which source address it saw (a LIP, never the client), measures bulk TCP
through tapvs against the kernel's routed path, and removes everything, also
on Ctrl-C. --keep leaves the lab up until Ctrl-C. Not root, it builds the lab
in a user, mount and network namespace of its own (--rootless=auto), which
needs /dev/net/tun open to the user and unprivileged user namespaces.

--cluster N builds a cluster lab instead: a router namespace running FRR
(--router bird: BIRD) between a client and the real servers, and N tapvs
processes (this binary), each in a namespace of its own, announcing the
VIP and their LIPs to the router over BGP. It prints the router's equal
paths and how long they took, spreads short connections over the
instances, drains one during long transfers, SIGKILLs another during long
transfers, and counts what survived: the instances hand each other the
segments of connections the router moved (handoff:), so only the killed
instance's break; --no-handoff shows plain ECMP, where the drained
instance's and the moved ones break too. Needs root and FRR or BIRD.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if co.Instances > 0 {
				bin, err := os.Executable()
				if err != nil {
					return err
				}
				co.TapvsBin, co.Keep, co.Requests = bin, o.Keep, o.Requests
				if !cmd.Flags().Changed("requests") {
					co.Requests = 300
				}
				ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return lab.RunCluster(ctx, co)
			}
			if err := enterRootless(*mode); err != nil {
				return err
			}
			o.BulkBytes = mib << 20
			if o.Keep && rootless.Inside() {
				// The commands --keep prints work inside this namespace only.
				fmt.Fprintf(o.Out, "rootless: the lab is in a namespace of its own; enter it with: nsenter -t %d -U -m -n --preserve-credentials\n", os.Getpid())
			}
			o.Log = newLogger("warn", "text")
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return lab.Run(ctx, o)
		},
	}
	c.Flags().StringVarP(&o.ConfigPath, "config", "c", "config.yaml", "configuration file (the shipped one describes the lab)")
	c.Flags().IntVarP(&o.Requests, "requests", "n", 10, "HTTP requests to send")
	c.Flags().Int64Var(&mib, "bulk-mib", 128, "MiB per bulk transfer for the throughput comparison (0 skips it)")
	c.Flags().BoolVar(&o.Keep, "keep", false, "leave the lab up until Ctrl-C")
	c.Flags().IntVar(&co.Instances, "cluster", 0, fmt.Sprintf("build a cluster lab of this many tapvs instances (2-%d) behind an ECMP router over BGP", lab.MaxClusterInstances))
	c.Flags().StringVar(&co.Router, "router", lab.RouterFRR, "the cluster lab's router: frr or bird")
	c.Flags().IntVar(&co.Flows, "flows", 45, "the cluster lab's long transfers during the drain and the kill")
	c.Flags().BoolVar(&co.NoHandoff, "no-handoff", false, "the cluster lab's instances without handoff: (plain ECMP: the drained instance's and the moved transfers break)")
	c.Flags().BoolVar(&co.Sync, "sync", false, "the cluster lab's instances with connection sync (sync:): the killed instance's transfers go on through the survivors")
	mode = rootlessFlag(c)
	return c
}

func benchCmd() *cobra.Command {
	o := bench.Options{Out: os.Stdout}
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure tapvs side by side with kernel FULLNAT and HAProxy in one run",
		Long: `bench builds a lab in network namespaces with nginx and iperf3 on two real
servers and measures, through every path (direct routing, kernel nftables
FULLNAT, the same behind the kernel's SYNPROXY with and without timestamps,
HAProxy TCP mode, tapvs, tapvs with SYNPROXY or PROXY v2; and over IPv6:
direct, nftables, HAProxy, tapvs and tapvs's NAT64), iperf3 with 1 and 4 streams,
short connections/s and keep-alive requests/s with p50/p99 latency (wrk),
the balancer's CPU per GB and per 1000 connections, and through the SYN
proxies the short connections/s during an hping3 SYN flood from random
sources (the flood workload); with --workloads sustained, minutes of short
connections from one client with tcp_tw_reuse on, the whole run's rate
against its first 10 seconds'. It prints a Markdown table with ratios and the
targets, and writes results.md and chart.png to --out. Needs root and
iproute2 nftables iperf3 wrk haproxy nginx-light, and hping3 for the flood
(installed with apt-get if missing).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Check(); err != nil {
				return err
			}
			if err := ensurePackages(o.FloodRate == 0 && (len(o.Workloads) == 0 || slices.Contains(o.Workloads, "flood")), o.WantsIperf()); err != nil {
				return err
			}
			o.Log = newLogger("warn", "text")
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return bench.Run(ctx, o)
		},
	}
	c.Flags().DurationVar(&o.Duration, "duration", 5*time.Second, "length of each measurement")
	c.Flags().IntVar(&o.Runs, "runs", 1, "measurements per cell (the median is reported)")
	c.Flags().StringVar(&o.OutDir, "out", "bench/results", "directory for results.md and chart.png")
	c.Flags().StringSliceVar(&o.Paths, "paths", nil, "measure only these paths: "+strings.Join(bench.PathNames, ","))
	c.Flags().StringSliceVar(&o.Workloads, "workloads", nil, "run only these workloads: "+strings.Join(bench.WorkloadNames, ","))
	c.Flags().DurationVar(&o.BusyPoll, "busy-poll", 0, "tapvs's interfaces.busy_poll during the run (0: a reader per queue)")
	c.Flags().StringVar(&o.IO, "io", "", "tapvs's interfaces.io during the run: syscalls, uring or auto (empty: the default)")
	c.Flags().IntVar(&o.Queues, "queues", 1, "tapvs's queues per TAP (interfaces.*.queues)")
	c.Flags().IntVar(&o.Pollers, "pollers", 0, "tapvs's interfaces.pollers: io_uring poller threads sharing the queues (0: tapvs's default, half the CPUs, at most one per queue)")
	c.Flags().IntVar(&o.TxQueueLen, "tap-txqueuelen", 0, "tapvs's interfaces.*.txqueuelen: the TAPs' transmit queue in frames, where they wait for tapvs (0: the kernel's default, 1000)")
	c.Flags().IntVar(&o.FloodRate, "flood-rate", 0, "pace the flood workload's spoofed SYNs at this many a second, the same for every path (0: hping3 --flood, as fast as it sends)")
	c.Flags().DurationVar(&o.Sustained, "sustained", 150*time.Second, "length of the sustained workload (--workloads sustained), at least 2m")
	c.Flags().StringVar(&o.ProfileDir, "cpuprofile", "", "write a CPU profile of tapvs per tapvs path into this directory")
	return c
}

func soakCmd() *cobra.Command {
	o := soak.Options{Out: os.Stdout, Prefix: "tvk"}
	c := &cobra.Command{
		Use:   "soak",
		Short: "Run tapvs in a lab under mixed traffic and faults for a while, and check it comes back clean",
		Long: `soak builds a lab in network namespaces (as lab does) and runs, for --duration,
short HTTP connections to a plain and a SYNPROXY VIP, long TCP connections
streaming data both ways (SHA-256 checked) and UDP echo, while it reloads the
configuration every few seconds (weights change, a real server leaves and
comes back), restarts a real server now and then and sends one spoofed SYN
flood burst. A warm-up of a sixth of the duration (5s to 30s) comes first and
sets the baseline. At the end it stops the traffic and checks: the connection
table drained, goroutines and memory back within a stated bound of the
baseline, every client error explained by a fault, every tapvs drop reason
that moved explained by what the soak did. It prints a report and exits 1 on
any failure. Needs root.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Check(); err != nil {
				return err
			}
			o.Log = newLogger("warn", "text")
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			_, err := soak.Run(ctx, o)
			return err
		},
	}
	c.Flags().DurationVar(&o.Duration, "duration", 10*time.Minute, "how long the traffic runs, warm-up included (30s at least)")
	c.Flags().Uint64Var(&o.Seed, "seed", 0, "seed of the faults' order (0: a random one, printed)")
	c.Flags().StringVar(&o.Prefix, "prefix", o.Prefix, "namespace and TAP name prefix (1-12 characters)")
	return c
}

// ensurePackages installs the bench's tools from Debian if any is missing;
// hping3 only when the flood workload runs, iperf3 only when an iperf
// workload does.
func ensurePackages(flood, iperf bool) error {
	need := map[string]string{"nft": "nftables", "wrk": "wrk", "haproxy": "haproxy", "nginx": "nginx-light"}
	if flood {
		need["hping3"] = "hping3"
	}
	if iperf {
		need["iperf3"] = "iperf3"
	}
	var pkgs []string
	for bin, pkg := range need {
		if _, err := exec.LookPath(bin); err != nil {
			pkgs = append(pkgs, pkg)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	fmt.Println("installing", pkgs)
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, pkgs...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", args[0], err)
		}
	}
	return nil
}
