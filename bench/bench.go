// Package bench measures tapvs side by side with the kernel and HAProxy in
// one run on one machine: the same lab topology, the same real servers
// (nginx, iperf3), the same client tools (iperf3, wrk), through five paths:
//
//	direct     client -> router -> RS                     (kernel routing)
//	nftables   client -> router[dnat+snat] -> RS          (kernel FULLNAT)
//	haproxy    client -> router[HAProxy TCP, 2 threads] -> RS
//	tapvs      client -> tapvs -> router -> RS
//	synproxy   the same, through a SYNPROXY service
//
// Figures drift between machines and runs; ratios within a run hold.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/lab"
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
}

// PathNames and WorkloadNames are what Options.Paths and Options.Workloads
// choose from.
var (
	PathNames     = []string{"direct", "nftables", "haproxy", "tapvs", "tapvs+synproxy"}
	WorkloadNames = []string{"iperf1", "iperf4", "short", "keepalive", "latency", "udp"}
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
	for _, w := range o.Workloads {
		if !slices.Contains(WorkloadNames, w) {
			return fmt.Errorf("workloads: unknown workload %q (have %s)", w, strings.Join(WorkloadNames, ", "))
		}
	}
	return nil
}

func (o Options) wants(workload string) bool {
	return len(o.Workloads) == 0 || slices.Contains(o.Workloads, workload)
}

// Path is one way from the client to the real servers.
type Path struct {
	Name       string
	HTTP       netip.AddrPort // nginx, behind the path
	Iperf      netip.AddrPort // iperf3 on RS1, behind the path
	UDP        bool           // the path carries UDP (HAProxy's TCP mode does not)
	cpuSeconds func() float64 // the balancer's CPU time so far; nil: not attributable
}

// Result is one path's figures.
type Result struct {
	Path                  string
	Gbps1, Gbps4          float64       // iperf3, 1 and 4 streams
	ShortCPS              float64       // wrk, Connection: close
	KeepRPS               float64       // wrk, keep-alive
	P50, P99              time.Duration // keep-alive, 32 connections: saturated, so mostly queueing
	IdleP50, IdleP99      time.Duration // keep-alive, one connection: the path's own latency
	UDPpps                float64       // iperf3 UDP, 64-byte payloads, packets/s received; 0: not measured
	CPUPerGB, CPUPerKConn float64       // balancer CPU-seconds per GB (iperf3 1 stream) and per 1000 short connections
	Notes                 string        // tapvs's drops and synproxy counters during the run
}

var (
	vipNFT   = netip.MustParseAddr("10.98.0.1")
	vipHAP   = netip.MustParseAddr("10.98.0.2")
	vipNet   = netip.MustParsePrefix("10.98.0.0/24")
	directGW = netip.MustParseAddr("10.99.0.1")
)

const (
	iperfPort   = 5201
	spIperfPort = 5202
	spHTTPPort  = 8080
	benchPrefix = "tvb"
	tapClient   = "tvb-c"
	tapServer   = "tvb-s"
	// 8 LIPs: with the 60s port quarantine, 8 x 60k ports x 2 servers / 60s
	// sustain 16k new connections/s per service.
	tapvsService = `
  - {name: web, vip: 172.25.254.100, port: 80, scheduler: rr, local_addresses: [172.25.84.10, 172.25.84.11, 172.25.84.12, 172.25.84.13, 172.25.84.14, 172.25.84.15, 172.25.84.16, 172.25.84.17],
     real_servers: [{address: 10.20.1.2, port: 80}, {address: 10.20.2.2, port: 80}]}
  - {name: web-sp, vip: 172.25.254.100, port: 8080, scheduler: rr, synproxy: true, local_addresses: [172.25.84.10, 172.25.84.11, 172.25.84.12, 172.25.84.13, 172.25.84.14, 172.25.84.15, 172.25.84.16, 172.25.84.17],
     real_servers: [{address: 10.20.1.2, port: 80}, {address: 10.20.2.2, port: 80}]}
  - {name: iperf, vip: 172.25.254.100, port: 5201, scheduler: rr, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}
  - {name: iperf-udp, vip: 172.25.254.100, port: 5201, protocol: udp, scheduler: rr, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}
  - {name: iperf-udp-sp, vip: 172.25.254.100, port: 5202, protocol: udp, scheduler: rr, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}
  - {name: iperf-sp, vip: 172.25.254.100, port: 5202, scheduler: rr, synproxy: true, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}`
)

// Run builds the lab, measures every path, prints the table and writes the
// chart. Everything it starts is stopped and removed, also on error.
func Run(ctx context.Context, o Options) (err error) {
	if err := o.Check(); err != nil {
		return err
	}
	for _, tool := range []string{"ip", "nft", "iperf3", "wrk", "haproxy", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing: apt-get install -y iproute2 nftables iperf3 wrk haproxy nginx-light", tool)
		}
	}
	work, err := os.MkdirTemp("", "tapvs-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	top := lab.NewTopology(benchPrefix, tapClient, tapServer)
	top.Socket = ""
	fmt.Fprintf(o.Out, "building the bench lab (%s-*)...\n", benchPrefix)
	if err := top.Build(); err != nil {
		return err
	}
	defer top.Destroy()
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Signal(syscall.SIGTERM)
			p.Wait()
		}
	}()
	logf, err := os.Create(filepath.Join(work, "servers.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	start := func(ns string, args ...string) (*exec.Cmd, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
		}
		procs = append(procs, cmd)
		return cmd, nil
	}

	// Real servers: nginx (a tiny answer) and iperf3.
	for i, rs := range []netip.Addr{lab.RS1, lab.RS2} {
		dir := filepath.Join(work, fmt.Sprintf("nginx%d", i))
		if err := writeNginx(dir, rs); err != nil {
			return err
		}
		if _, err := start(top.RS[i], "nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;"); err != nil {
			return err
		}
	}
	if _, err := start(top.RS[0], "iperf3", "-s", "-B", lab.RS1.String(), "-p", strconv.Itoa(iperfPort)); err != nil {
		return err
	}
	for _, ns := range []string{top.Client, top.RS[0], top.RS[1], top.Router} {
		sysctl(ns, "net.ipv4.tcp_tw_reuse", "1")
		sysctl(ns, "net.ipv4.ip_local_port_range", "1024 65000")
		sysctl(ns, "net.core.somaxconn", "8192")
	}

	// The kernel's FULLNAT and HAProxy live on the router, reached by the
	// client's direct link.
	steps := [][]string{
		{"-n", top.Router, "addr", "add", vipNFT.String() + "/32", "dev", "lo"},
		{"-n", top.Router, "addr", "add", vipHAP.String() + "/32", "dev", "lo"},
		{"-n", top.Client, "route", "add", vipNet.String(), "via", directGW.String()},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	nft := fmt.Sprintf(`table ip fnat {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    ip daddr %[1]s tcp dport 80 dnat to numgen inc mod 2 map { 0 : %[2]s, 1 : %[3]s }
    ip daddr %[1]s tcp dport %[4]d dnat to %[2]s
    ip daddr %[1]s udp dport %[4]d dnat to %[2]s
  }
  chain post { type nat hook postrouting priority srcnat; policy accept;
    ct original ip daddr %[1]s masquerade
  }
}
`, vipNFT, lab.RS1, lab.RS2, iperfPort)
	cmd := exec.Command("ip", "netns", "exec", top.Router, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nft)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, out)
	}
	hapCfg := filepath.Join(work, "haproxy.cfg")
	if err := os.WriteFile(hapCfg, []byte(fmt.Sprintf(`global
  nbthread 2
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend web
  bind %[1]s:80
  default_backend web
backend web
  balance roundrobin
  server rs1 %[2]s:80
  server rs2 %[3]s:80
frontend iperf
  bind %[1]s:%[4]d
  default_backend iperf
backend iperf
  server rs1 %[2]s:%[4]d
`, vipHAP, lab.RS1, lab.RS2, iperfPort)), 0o644); err != nil {
		return err
	}
	hap, err := start(top.Router, "haproxy", "-db", "-f", hapCfg)
	if err != nil {
		return err
	}

	// tapvs, in this process.
	cfg, err := config.Parse(top.Config(tapvsService, "log: {level: warn}\n"))
	if err != nil {
		return err
	}
	cfg.BusyPoll = o.BusyPoll
	d, err := top.StartTapvs(ctx, cfg, o.Log)
	if err != nil {
		return err
	}
	defer d.Close()
	time.Sleep(500 * time.Millisecond) // the servers come up

	vip := lab.VIP
	paths := []Path{
		{Name: "direct", HTTP: netip.AddrPortFrom(lab.RS1, 80), Iperf: netip.AddrPortFrom(lab.RS1, iperfPort), UDP: true, cpuSeconds: softirqSeconds},
		{Name: "nftables", HTTP: netip.AddrPortFrom(vipNFT, 80), Iperf: netip.AddrPortFrom(vipNFT, iperfPort), UDP: true, cpuSeconds: softirqSeconds},
		{Name: "haproxy", HTTP: netip.AddrPortFrom(vipHAP, 80), Iperf: netip.AddrPortFrom(vipHAP, iperfPort), cpuSeconds: func() float64 { return procSeconds(hap.Process.Pid) }},
		{Name: "tapvs", HTTP: netip.AddrPortFrom(vip, 80), Iperf: netip.AddrPortFrom(vip, iperfPort), UDP: true, cpuSeconds: selfSeconds},
		{Name: "tapvs+synproxy", HTTP: netip.AddrPortFrom(vip, spHTTPPort), Iperf: netip.AddrPortFrom(vip, spIperfPort), UDP: true, cpuSeconds: selfSeconds},
	}
	var results []Result
	for _, p := range paths {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if len(o.Paths) > 0 && !slices.Contains(o.Paths, p.Name) {
			results = append(results, Result{Path: p.Name})
			continue
		}
		fmt.Fprintf(o.Out, "measuring %s...\n", p.Name)
		drops0 := d.Balancer.Stats.Drops()
		c0, op0, f0, rt0 := d.Balancer.Stats.Synproxy()
		tw0 := d.Balancer.Stats.SynproxyTimeWait()
		stopProfile, err := profile(o.ProfileDir, p.Name)
		if err != nil {
			return err
		}
		r, err := measure(ctx, top.Client, p, o)
		stopProfile()
		if strings.HasPrefix(p.Name, "tapvs") {
			var notes []string
			for k, v := range d.Balancer.Stats.Drops() {
				if v > drops0[k] {
					notes = append(notes, fmt.Sprintf("%s %d", k, v-drops0[k]))
				}
			}
			c1, op1, f1, rt1 := d.Balancer.Stats.Synproxy()
			if c1 > c0 {
				notes = append(notes, fmt.Sprintf("cookies %d, handshakes %d, server failures %d, SYN retries %d, server TIME_WAITs ended %d",
					c1-c0, op1-op0, f1-f0, rt1-rt0, d.Balancer.Stats.SynproxyTimeWait()-tw0))
			}
			sort.Strings(notes)
			r.Notes = strings.Join(notes, "; ")
			fmt.Fprintf(o.Out, "  tapvs counters during %s: %s\n", p.Name, r.Notes)
		}
		if err != nil {
			logs, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("%s: %w\nserver logs:\n%s", p.Name, err, logs)
		}
		results = append(results, r)
	}
	md := table(results, machine(), o)
	fmt.Fprint(o.Out, "\n"+md)
	if o.OutDir != "" {
		if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.OutDir, "results.md"), []byte(md), 0o644); err != nil {
			return err
		}
		if err := chart(results, filepath.Join(o.OutDir, "chart.png")); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "\nwritten: %s, %s\n", filepath.Join(o.OutDir, "results.md"), filepath.Join(o.OutDir, "chart.png"))
	}
	return nil
}

func writeNginx(dir string, rs netip.Addr) error {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o777); err != nil {
		return err
	}
	conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp; uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
  keepalive_requests 1000000;
  server { listen %[2]s:80 backlog=8192; location / { return 200 "ok\n"; } }
}
`, dir, rs)
	return os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
}

func sysctl(ns, key, value string) {
	lab.InNetns(ns, func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(key, ".", "/"), []byte(value), 0o644)
	})
}

// measure runs every workload through one path, each o.Runs times, and
// keeps the medians.
func measure(ctx context.Context, ns string, p Path, o Options) (Result, error) {
	r := Result{Path: p.Name}
	runs := max(o.Runs, 1)
	sec := strconv.Itoa(int(o.Duration.Seconds()))
	var g1, g4, short, keep, p50, p99, idle50, idle99, cpuGB, cpuK, udp []float64
	for range runs {
		if o.wants("iperf1") {
			c0 := p.cpuSeconds()
			bps, bytes, err := iperf(ctx, ns, p.Iperf, 1, sec)
			if err != nil {
				return r, err
			}
			g1 = append(g1, bps/1e9)
			cpuGB = append(cpuGB, (p.cpuSeconds()-c0)/(bytes/1e9))
		}
		if o.wants("iperf4") {
			bps, _, err := iperf(ctx, ns, p.Iperf, 4, sec)
			if err != nil {
				return r, err
			}
			g4 = append(g4, bps/1e9)
		}
		if o.wants("short") {
			c0 := p.cpuSeconds()
			w, err := wrk(ctx, ns, p.HTTP, sec, true, 32)
			if err != nil {
				return r, err
			}
			short = append(short, w.rps)
			cpuK = append(cpuK, (p.cpuSeconds()-c0)/(w.requests/1000))
		}
		if o.wants("keepalive") {
			w, err := wrk(ctx, ns, p.HTTP, sec, false, 32)
			if err != nil {
				return r, err
			}
			keep, p50, p99 = append(keep, w.rps), append(p50, float64(w.p50)), append(p99, float64(w.p99))
		}
		if o.wants("latency") {
			w, err := wrk(ctx, ns, p.HTTP, sec, false, 1)
			if err != nil {
				return r, err
			}
			idle50, idle99 = append(idle50, float64(w.p50)), append(idle99, float64(w.p99))
		}
		if p.UDP && o.wants("udp") {
			pps, err := iperfUDP(ctx, ns, p.Iperf, sec)
			if err != nil {
				return r, err
			}
			udp = append(udp, pps)
		}
	}
	r.Gbps1, r.Gbps4, r.ShortCPS, r.KeepRPS, r.UDPpps = median(g1), median(g4), median(short), median(keep), median(udp)
	r.P50, r.P99 = time.Duration(median(p50)), time.Duration(median(p99))
	r.IdleP50, r.IdleP99 = time.Duration(median(idle50)), time.Duration(median(idle99))
	r.CPUPerGB, r.CPUPerKConn = median(cpuGB), median(cpuK)
	return r, nil
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

// median is 0 for a workload that was not measured.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func iperf(ctx context.Context, ns string, to netip.AddrPort, streams int, sec string) (bps, bytes float64, err error) {
	out, err := run(ctx, ns, "iperf3", "-c", to.Addr().String(), "-p", strconv.Itoa(int(to.Port())), "-t", sec, "-P", strconv.Itoa(streams), "-J")
	if err != nil {
		return 0, 0, err
	}
	var j struct {
		End struct {
			SumReceived struct {
				Bps   float64 `json:"bits_per_second"`
				Bytes float64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &j); err != nil || j.Error != "" {
		return 0, 0, fmt.Errorf("iperf3 to %s: %v %s", to, err, j.Error)
	}
	return j.End.SumReceived.Bps, j.End.SumReceived.Bytes, nil
}

// iperfUDP sends 64-byte UDP datagrams as fast as iperf3 can and returns the
// packets per second the server received.
func iperfUDP(ctx context.Context, ns string, to netip.AddrPort, sec string) (float64, error) {
	out, err := run(ctx, ns, "iperf3", "-c", to.Addr().String(), "-p", strconv.Itoa(int(to.Port())), "-t", sec, "-u", "-b", "0", "-l", "64", "-J")
	if err != nil {
		return 0, err
	}
	var j struct {
		End struct {
			Sum struct {
				Packets int64   `json:"packets"`
				Lost    int64   `json:"lost_packets"`
				Seconds float64 `json:"seconds"`
			} `json:"sum"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &j); err != nil || j.Error != "" || j.End.Sum.Seconds == 0 {
		return 0, fmt.Errorf("iperf3 -u to %s: %v %s", to, err, j.Error)
	}
	return float64(j.End.Sum.Packets-j.End.Sum.Lost) / j.End.Sum.Seconds, nil
}

type wrkResult struct {
	rps, requests float64
	p50, p99      time.Duration
}

var (
	reRPS  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reReqs = regexp.MustCompile(`([0-9]+) requests in`)
	reErr  = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
	reLat  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)
)

// wrk runs conns connections (on up to 2 threads) for sec seconds.
func wrk(ctx context.Context, ns string, to netip.AddrPort, sec string, close bool, conns int) (wrkResult, error) {
	args := []string{"wrk", fmt.Sprintf("-t%d", min(conns, 2)), fmt.Sprintf("-c%d", conns), "-d" + sec + "s", "--latency"}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	out, err := run(ctx, ns, append(args, "http://"+to.String()+"/")...)
	if err != nil {
		return wrkResult{}, err
	}
	var w wrkResult
	m := reRPS.FindSubmatch(out)
	n := reReqs.FindSubmatch(out)
	if m == nil || n == nil {
		return w, fmt.Errorf("wrk to %s: no result in %q", to, out)
	}
	w.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	w.requests, _ = strconv.ParseFloat(string(n[1]), 64)
	if e := reErr.FindSubmatch(out); e != nil {
		if c, _ := strconv.Atoi(string(e[1])); c > int(w.requests/100) {
			return w, fmt.Errorf("wrk to %s: %s", to, e[0])
		}
	}
	for _, l := range reLat.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(l[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(l[3])]
		if string(l[1]) == "50" {
			w.p50 = time.Duration(v * float64(unit))
		} else {
			w.p99 = time.Duration(v * float64(unit))
		}
	}
	return w, nil
}

func run(ctx context.Context, ns string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out, fmt.Errorf("%s: %v: %s%s", args[0], err, out, ee.Stderr)
		}
		return out, err
	}
	return out, nil
}

// CPU accounting. tapvs: this process (the harness idles while it runs).
// HAProxy: its process. The kernel paths: softirq time of the whole machine,
// where their forwarding and NAT run.
func selfSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func procSeconds(pid int) float64 {
	var total float64
	// ip netns exec starts the program as its child: count the tree.
	for _, p := range append([]int{pid}, children(pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		total += (ut + st) / 100
	}
	return total
}

func children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		c, _ := strconv.Atoi(f)
		out = append(out, c)
		out = append(out, children(c)...)
	}
	return out
}

func softirqSeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	v, _ := strconv.ParseFloat(f[7], 64) // cpu user nice system idle iowait irq softirq
	return v / 100
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.+)$`).FindSubmatch(b); m != nil {
			model = strings.TrimSpace(string(m[1]))
		}
	}
	var u syscall.Utsname
	syscall.Uname(&u)
	rel := make([]byte, 0, 65)
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	return fmt.Sprintf("%d cores (%s), Linux %s, %s", runtime.NumCPU(), model, rel, time.Now().Format("2006-01-02"))
}
