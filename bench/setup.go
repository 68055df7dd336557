package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tapvs/tapvs/daemon"
	"github.com/tapvs/tapvs/lab"
)

var (
	vipNFT    = netip.MustParseAddr("10.98.0.1")
	vipHAP    = netip.MustParseAddr("10.98.0.2")
	vipSP     = netip.MustParseAddr("10.98.0.3") // kernel FULLNAT behind SYNPROXY
	vipSPNoTS = netip.MustParseAddr("10.98.0.4") // the same, SYNPROXY without timestamps
	vipNet    = netip.MustParsePrefix("10.98.0.0/24")
	directGW  = netip.MustParseAddr("10.99.0.1")
	directIP  = netip.MustParseAddr("10.99.0.2") // the client's end of the direct path
	// Each kernel NAT path leaves for the real servers from its own source
	// address (the router's own, HAProxy's, stays apart too). A real
	// server keeps a closed connection's tuple in TIME_WAIT for 60 s, and
	// with one client the paths' tuples differ only in that address: from a
	// shared one, the next path's connections reuse the last path's tuples,
	// whose TIME_WAITs refuse about half of their SYNs (the sequence number
	// or timestamp of another path's connection is unrelated). A client
	// whose SYN is refused ends the TIME_WAIT with an RST and retries in 1 s;
	// behind the kernel's SYN proxy the client is already connected, no one
	// sends that RST, and the connection hangs until wrk gives it up.
	snatNFT    = netip.MustParseAddr("10.97.0.1")
	snatSP     = netip.MustParseAddr("10.97.0.3")
	snatSPNoTS = netip.MustParseAddr("10.97.0.4")

	// The IPv6 paths' addresses on the router, as the IPv4 ones above:
	// kernel FULLNAT's and HAProxy's VIPs, reached over the client's
	// direct link (fd00:99::/64), and kernel FULLNAT's source.
	vipNFT6   = netip.MustParseAddr("fd00:98::1")
	vipHAP6   = netip.MustParseAddr("fd00:98::2")
	vipNet6   = netip.MustParsePrefix("fd00:98::/64")
	snatNFT6  = netip.MustParseAddr("fd00:97::1")
	directGW6 = netip.MustParseAddr("fd00:99::1")
)

const (
	iperfPort   = 5201
	spIperfPort = 5202
	spHTTPPort  = 8080
	// ppHTTPPort is web-pp's, on the VIP and on the real servers, whose
	// nginx there requires a PROXY header (listen ... proxy_protocol).
	ppHTTPPort = 8081
	// tsrHTTPPort is web-tsr's, a service that removes TCP timestamps
	// (tcp_timestamps: remove), in front of the servers' port 80.
	tsrHTTPPort = 8082
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
  - {name: web-pp, vip: 172.25.254.100, port: 8081, scheduler: rr, client_address: proxy-v2, local_addresses: [172.25.84.10, 172.25.84.11, 172.25.84.12, 172.25.84.13, 172.25.84.14, 172.25.84.15, 172.25.84.16, 172.25.84.17],
     real_servers: [{address: 10.20.1.2, port: 8081}, {address: 10.20.2.2, port: 8081}]}
  - {name: web-tsr, vip: 172.25.254.100, port: 8082, scheduler: rr, tcp_timestamps: remove, local_addresses: [172.25.84.10, 172.25.84.11, 172.25.84.12, 172.25.84.13, 172.25.84.14, 172.25.84.15, 172.25.84.16, 172.25.84.17],
     real_servers: [{address: 10.20.1.2, port: 80}, {address: 10.20.2.2, port: 80}]}
  - {name: iperf, vip: 172.25.254.100, port: 5201, scheduler: rr, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}
  - {name: iperf-udp, vip: 172.25.254.100, port: 5201, protocol: udp, scheduler: rr, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}
  - {name: iperf-udp-sp, vip: 172.25.254.100, port: 5202, protocol: udp, scheduler: rr, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}
  - {name: iperf-sp, vip: 172.25.254.100, port: 5202, scheduler: rr, synproxy: true, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}`
	// tapvsService6 are the IPv6 paths' services (with a host's IPv6).
	tapvsService6 = `
  - {name: web6, vip: "fd00:25:254::100", port: 80, scheduler: rr, local_addresses: ["fd00:25:84::10", "fd00:25:84::11", "fd00:25:84::12", "fd00:25:84::13", "fd00:25:84::14", "fd00:25:84::15", "fd00:25:84::16", "fd00:25:84::17"],
     real_servers: [{address: "fd00:20:1::2", port: 80}, {address: "fd00:20:2::2", port: 80}]}
  - {name: iperf6, vip: "fd00:25:254::100", port: 5201, scheduler: rr, local_addresses: ["fd00:25:84::10"],
     real_servers: [{address: "fd00:20:1::2", port: 5201}]}
  - {name: iperf-udp6, vip: "fd00:25:254::100", port: 5201, protocol: udp, scheduler: rr, local_addresses: ["fd00:25:84::10"],
     real_servers: [{address: "fd00:20:1::2", port: 5201}]}
  - {name: web64, vip: "fd00:25:254::64", port: 80, scheduler: rr, local_addresses: [172.25.84.10, 172.25.84.11, 172.25.84.12, 172.25.84.13, 172.25.84.14, 172.25.84.15, 172.25.84.16, 172.25.84.17],
     real_servers: [{address: 10.20.1.2, port: 80}, {address: 10.20.2.2, port: 80}]}
  - {name: iperf64, vip: "fd00:25:254::64", port: 5201, scheduler: rr, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}
  - {name: iperf-udp64, vip: "fd00:25:254::64", port: 5201, protocol: udp, scheduler: rr, local_addresses: [172.25.84.10],
     real_servers: [{address: 10.20.1.2, port: 5201}]}`
)

// testbed is what setup builds and measureAll runs on: the lab's
// namespaces, the real servers, kernel NAT and HAProxy on the router, tapvs
// in this process, and the paths through them.
type testbed struct {
	top   *lab.Topology
	work  string      // a temporary directory: the servers' configs and logs
	logf  *os.File    // the servers' output, quoted when a measurement fails
	procs []*exec.Cmd // the servers and HAProxy
	d     *daemon.Daemon
	// running is how d runs (with the tapvs+sync path's sync: section, a
	// path's own interfaces.io), and peer is its sync peer, once started
	// (sync.go).
	running variant
	peer    *exec.Cmd
	paths   []Path
	// undo holds what close runs, last first: each step of setup adds its
	// own undoing once it has succeeded, so a failed setup can undo exactly
	// what it did, and close after a run tears down in the reverse order.
	undo []func()
}

// close stops and removes everything setup started.
func (tb *testbed) close() {
	for i := len(tb.undo) - 1; i >= 0; i-- {
		tb.undo[i]()
	}
	tb.undo = nil
}

// setup checks the tools, builds the lab and starts every server and
// balancer the paths go through. On error what it started is undone.
func setup(ctx context.Context, o Options) (_ *testbed, err error) {
	for _, tool := range []string{"ip", "nft", "wrk", "haproxy", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is missing: apt-get install -y iproute2 nftables iperf3 wrk haproxy nginx-light", tool)
		}
	}
	if o.WantsIperf() {
		if _, err := exec.LookPath("iperf3"); err != nil {
			return nil, fmt.Errorf("iperf3 is missing (the iperf1, iperf4 and udp workloads'): apt-get install -y iperf3, or leave them out with --workloads")
		}
	}
	if o.wants("flood") && o.FloodRate == 0 {
		if _, err := exec.LookPath("hping3"); err != nil {
			return nil, fmt.Errorf("hping3 is missing (the flood workload's SYN flood): apt-get install -y hping3, or leave out --workloads flood")
		}
	}
	tb := &testbed{}
	defer func() {
		if err != nil {
			tb.close()
		}
	}()
	if tb.work, err = os.MkdirTemp("", "tapvs-bench"); err != nil {
		return nil, err
	}
	tb.undo = append(tb.undo, func() { os.RemoveAll(tb.work) })
	tb.top = lab.NewTopology(benchPrefix, tapClient, tapServer)
	tb.top.Socket = ""
	tb.top.Queues = o.Queues
	tb.top.TxQLen = o.TxQueueLen
	tb.top.IPv6 = lab.HasIPv6()
	fmt.Fprintf(o.Out, "building the bench lab (%s-*)...\n", benchPrefix)
	if err = tb.top.Build(); err != nil { // Build removes what it built on error
		return nil, err
	}
	tb.undo = append(tb.undo, func() { tb.top.Destroy() })
	tb.undo = append(tb.undo, tb.stopProcs)
	if tb.logf, err = os.Create(filepath.Join(tb.work, "servers.log")); err != nil {
		return nil, err
	}
	tb.undo = append(tb.undo, func() { tb.logf.Close() })
	if err = tb.startServers(o.WantsIperf()); err != nil {
		return nil, err
	}
	hap, err := tb.startKernelAndHAProxy()
	if err != nil {
		return nil, err
	}
	if err = tb.startTapvs(ctx, o, variant{}); err != nil {
		return nil, err
	}
	tb.undo = append(tb.undo, func() {
		if tb.d != nil { // nil after a failed restart (useSync)
			tb.d.Close()
		}
	})
	time.Sleep(500 * time.Millisecond) // the servers come up
	tb.paths = paths(hap.Process.Pid)
	for i := range tb.paths {
		if tb.paths[i].Sync {
			tb.paths[i].syncCounters = tb.syncCounters
			tb.paths[i].syncClosing = closingTimeout(tb.d.Config().Timeouts)
		}
	}
	if !lab.HasIPv6() {
		// A kernel without IPv6 (ipv6.disable=1): the IPv6 paths are left
		// out, and say so in the table as not measured.
		tb.paths = slices.DeleteFunc(tb.paths, func(p Path) bool { return p.ipv6() })
	}
	return tb, nil
}

// start runs args in namespace ns, its output into the servers' log, until
// close stops it.
func (tb *testbed) start(ns string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = tb.logf, tb.logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	tb.procs = append(tb.procs, cmd)
	return cmd, nil
}

func (tb *testbed) stopProcs() {
	for _, p := range tb.procs {
		p.Process.Signal(syscall.SIGTERM)
		p.Wait()
	}
	tb.procs = nil
}

// nsSysctls open every namespace of the bench to many short connections:
// the client reuses its own TIME_WAIT ports after 1 s when the connection
// had timestamps, and has most of the port space.
var nsSysctls = [][2]string{
	{"net.ipv4.tcp_tw_reuse", "1"},
	{"net.ipv4.ip_local_port_range", "1024 65000"},
	{"net.core.somaxconn", "8192"},
}

// startServers starts the real servers, nginx (a tiny answer) on both and,
// with iperf, iperf3 on the first, and opens every namespace to many short
// connections.
func (tb *testbed) startServers(iperf bool) error {
	for i, rs := range []netip.Addr{lab.RS1, lab.RS2} {
		dir := filepath.Join(tb.work, fmt.Sprintf("nginx%d", i))
		// nginx, as iperf3 below, also answers on the server's IPv6
		// address for the IPv6 paths.
		if err := writeNginx(dir, rs); err != nil {
			return err
		}
		if _, err := tb.start(tb.top.RS[i], "nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;"); err != nil {
			return err
		}
	}
	if iperf {
		if _, err := tb.start(tb.top.RS[0], "iperf3", "-s", "-B", lab.RS1.String(), "-p", strconv.Itoa(iperfPort)); err != nil {
			return err
		}
		if lab.HasIPv6() {
			if _, err := tb.start(tb.top.RS[0], "iperf3", "-s", "-B", lab.RS6(lab.RS1).String(), "-p", strconv.Itoa(iperfPort)); err != nil {
				return err
			}
		}
	}
	for _, ns := range []string{tb.top.Client, tb.top.RS[0], tb.top.RS[1], tb.top.Router} {
		for _, s := range nsSysctls {
			sysctl(ns, s[0], s[1])
		}
	}
	return nil
}

// startKernelAndHAProxy sets up the two balancers tapvs is compared with.
// The kernel's FULLNAT and HAProxy live on the router, reached by the
// client's direct link. It returns HAProxy's process, whose CPU time is
// HAProxy's cost.
func (tb *testbed) startKernelAndHAProxy() (*exec.Cmd, error) {
	steps := [][]string{
		{"-n", tb.top.Router, "addr", "add", vipNFT.String() + "/32", "dev", "lo"},
		{"-n", tb.top.Router, "addr", "add", vipHAP.String() + "/32", "dev", "lo"},
		{"-n", tb.top.Router, "addr", "add", vipSP.String() + "/32", "dev", "lo"},
		{"-n", tb.top.Router, "addr", "add", vipSPNoTS.String() + "/32", "dev", "lo"},
		{"-n", tb.top.Router, "addr", "add", snatNFT.String() + "/32", "dev", "lo"},
		{"-n", tb.top.Router, "addr", "add", snatSP.String() + "/32", "dev", "lo"},
		{"-n", tb.top.Router, "addr", "add", snatSPNoTS.String() + "/32", "dev", "lo"},
		{"-n", tb.top.Client, "route", "add", vipNet.String(), "via", directGW.String()},
		// The kernel's SYN-ACKs to the flood's random sources go back to the
		// client's namespace, as tapvs's do (its SYN-ACKs go back out of the
		// TAP they came in by): without a route the router would drop them
		// before sending, a saving tapvs cannot have.
		{"-n", tb.top.Router, "route", "add", "default", "via", directIP.String()},
	}
	if lab.HasIPv6() {
		steps = append(steps,
			[]string{"-n", tb.top.Router, "addr", "add", vipNFT6.String() + "/128", "dev", "lo"},
			[]string{"-n", tb.top.Router, "addr", "add", vipHAP6.String() + "/128", "dev", "lo"},
			[]string{"-n", tb.top.Router, "addr", "add", snatNFT6.String() + "/128", "dev", "lo"},
			[]string{"-n", tb.top.Client, "-6", "route", "add", vipNet6.String(), "via", directGW6.String()})
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	// The kernel's SYN proxy needs the handshake's last ACK, which matches
	// no connection yet, marked invalid rather than picked up mid-stream.
	sysctl(tb.top.Router, "net.netfilter.nf_conntrack_tcp_loose", "0")
	cmd := exec.Command("ip", "netns", "exec", tb.top.Router, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nftRules())
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nft: %v: %s", err, out)
	}
	hapCfg := filepath.Join(tb.work, "haproxy.cfg")
	if err := os.WriteFile(hapCfg, []byte(haproxyConfig()), 0o644); err != nil {
		return nil, err
	}
	return tb.start(tb.top.Router, "haproxy", "-db", "-f", hapCfg)
}

// startTapvs runs tapvs in this process, so its CPU time is this
// process's; with sync, with the tapvs+sync path's sync: section.
func (tb *testbed) startTapvs(ctx context.Context, o Options, v variant) error {
	cfg, err := tapvsConfig(tb.top, o, v)
	if err != nil {
		return err
	}
	if tb.d, err = tb.top.StartTapvs(ctx, cfg, o.Log); err != nil {
		return err
	}
	tb.running = v
	return nil
}

// variant is how a path has the bench tapvs run: with connection sync, and
// with an interfaces.io of its own ("": the run's).
type variant struct {
	sync bool
	io   string
}

func (p Path) variant() variant { return variant{sync: p.Sync, io: p.IO} }

// paths are the ways to the real servers, in PathNames' order; hap is
// HAProxy's process.
func paths(hap int) []Path {
	vip := lab.VIP
	return []Path{
		{Name: "direct", HTTP: netip.AddrPortFrom(lab.RS1, 80), Iperf: netip.AddrPortFrom(lab.RS1, iperfPort), UDP: true, Dev: "direct", cpuSeconds: softirqSeconds},
		{Name: "nftables", HTTP: netip.AddrPortFrom(vipNFT, 80), Iperf: netip.AddrPortFrom(vipNFT, iperfPort), UDP: true, Dev: "direct", cpuSeconds: softirqSeconds},
		{Name: "nftables+synproxy", HTTP: netip.AddrPortFrom(vipSP, 80), Iperf: netip.AddrPortFrom(vipSP, iperfPort), UDP: true, Synproxy: true, Dev: "direct", cpuSeconds: softirqSeconds},
		{Name: "nftables+synproxy-nots", HTTP: netip.AddrPortFrom(vipSPNoTS, 80), Iperf: netip.AddrPortFrom(vipSPNoTS, iperfPort), UDP: true, Synproxy: true, Dev: "direct", cpuSeconds: softirqSeconds},
		{Name: "haproxy", HTTP: netip.AddrPortFrom(vipHAP, 80), Iperf: netip.AddrPortFrom(vipHAP, iperfPort), Dev: "direct", cpuSeconds: func() float64 { return procSeconds(hap) }},
		{Name: "tapvs", HTTP: netip.AddrPortFrom(vip, 80), Iperf: netip.AddrPortFrom(vip, iperfPort), UDP: true, Dev: tapClient, cpuSeconds: selfSeconds},
		// The same tapvs, restarted with connection sync to a peer (sync.go).
		{Name: "tapvs+sync", HTTP: netip.AddrPortFrom(vip, 80), Iperf: netip.AddrPortFrom(vip, iperfPort), UDP: true, Dev: tapClient, cpuSeconds: selfSeconds, Sync: true},
		// The same tapvs, restarted on read and write system calls.
		{Name: "tapvs+syscalls", HTTP: netip.AddrPortFrom(vip, 80), Iperf: netip.AddrPortFrom(vip, iperfPort), UDP: true, Dev: tapClient, cpuSeconds: selfSeconds, IO: "syscalls"},
		{Name: "tapvs+synproxy", HTTP: netip.AddrPortFrom(vip, spHTTPPort), Iperf: netip.AddrPortFrom(vip, spIperfPort), UDP: true, Synproxy: true, Dev: tapClient, cpuSeconds: selfSeconds},
		// The servers behind PROXY v2: nginx reads the header; iperf3 would
		// take it for its own protocol, so the path has no iperf3.
		{Name: "tapvs+proxy-v2", HTTP: netip.AddrPortFrom(vip, ppHTTPPort), Dev: tapClient, cpuSeconds: selfSeconds},
		// Timestamps removed, as LVS FULLNAT does: HTTP only.
		{Name: "tapvs+ts-remove", HTTP: netip.AddrPortFrom(vip, tsrHTTPPort), Dev: tapClient, cpuSeconds: selfSeconds},
		// IPv6: the same servers at their IPv6 addresses (NAT64: at their
		// IPv4 ones, behind an IPv6 VIP).
		{Name: "direct6", HTTP: netip.AddrPortFrom(lab.RS6(lab.RS1), 80), Iperf: netip.AddrPortFrom(lab.RS6(lab.RS1), iperfPort), UDP: true, Dev: "direct", cpuSeconds: softirqSeconds},
		{Name: "nftables6", HTTP: netip.AddrPortFrom(vipNFT6, 80), Iperf: netip.AddrPortFrom(vipNFT6, iperfPort), UDP: true, Dev: "direct", cpuSeconds: softirqSeconds},
		{Name: "haproxy6", HTTP: netip.AddrPortFrom(vipHAP6, 80), Iperf: netip.AddrPortFrom(vipHAP6, iperfPort), Dev: "direct", cpuSeconds: func() float64 { return procSeconds(hap) }},
		{Name: "tapvs6", HTTP: netip.AddrPortFrom(lab.VIP6, 80), Iperf: netip.AddrPortFrom(lab.VIP6, iperfPort), UDP: true, Dev: tapClient, cpuSeconds: selfSeconds},
		{Name: "tapvs-nat64", HTTP: netip.AddrPortFrom(lab.VIP64, 80), Iperf: netip.AddrPortFrom(lab.VIP64, iperfPort), UDP: true, Dev: tapClient, cpuSeconds: selfSeconds},
	}
}

// nftRules is the kernel's FULLNAT on the router: DNAT to the real servers,
// SNAT to the path's own source address on the way out (see snatNFT); and
// the same behind the kernel's SYN proxy, with and without TCP timestamps
// (the ruleset of the nftables wiki's Synproxy page). The SYN proxy's SYNs are untracked, so prerouting's DNAT
// never sees them; the SYN it sends the server once the client's ACK
// carries a valid cookie leaves through the output hook, where it is
// DNATed like a local connection.
//
// The tables above load conntrack in the router's namespace, and it then
// tracks every flow the router forwards, tapvs's too: tapvs's LIPs to the
// real servers and back, tuples spread over 8 LIPs x 60 000 ports x 2
// servers, each new to the router and kept 120 s after its close
// (nf_conntrack_tcp_timeout_time_wait): 120 s of the sustained workload
// through tapvs took the router's table from 8 000 to 202 000 of its
// 262 144 entries (none dropped: insert_failed, drop and early_drop 0). A
// router in front of real servers does not track them, tapvs has its own
// table, and the bench measures tapvs, not the router's conntrack. The lips table leaves
// every frame from or to tapvs's server-side subnet (its LIPs)
// untracked, before conntrack's hook (raw priority); the kernel paths'
// flows (the client's direct link, the SNAT addresses) are still tracked
// and NATed.
//
// With timestamps the kernel's SYN proxy is slow here for a reason of its
// own, not of this ruleset: the ACK it sends the server to end the
// handshake has its timestamp echo translated twice (set to the server's
// SYN-ACK's, then offset again by the synproxy's post-routing hook), and
// the real servers' kernel (6.18 here) drops an ACK echoing a timestamp it
// never sent (TcpExtTSEcrRejected). The client's first data then has to
// complete the handshake, and is dropped too when the server's clock
// ticked meanwhile: about one connection in a hundred stalls until the
// server resends its SYN-ACK, 1 to 2 s, which with 32 connections is most
// of wrk's time. The -nots path has no timestamps and is the kernel's fair
// baseline.
func nftRules() string {
	return fmt.Sprintf(`table ip fnat {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    ip daddr { %[1]s, %[5]s, %[6]s } tcp dport 80 dnat to numgen inc mod 2 map { 0 : %[2]s, 1 : %[3]s }
    ip daddr { %[1]s, %[5]s, %[6]s } tcp dport %[4]d dnat to %[2]s
    ip daddr { %[1]s, %[5]s, %[6]s } udp dport %[4]d dnat to %[2]s
  }
  chain out { type nat hook output priority -100; policy accept;
    ip daddr { %[5]s, %[6]s } tcp dport 80 dnat to numgen inc mod 2 map { 0 : %[2]s, 1 : %[3]s }
    ip daddr { %[5]s, %[6]s } tcp dport %[4]d dnat to %[2]s
  }
  chain post { type nat hook postrouting priority srcnat; policy accept;
    ct original ip daddr %[1]s snat to %[7]s
    ct original ip daddr %[5]s snat to %[8]s
    ct original ip daddr %[6]s snat to %[9]s
  }
}
table ip sp {
  chain pre { type filter hook prerouting priority raw; policy accept;
    ip daddr { %[5]s, %[6]s } tcp dport { 80, %[4]d } tcp flags syn notrack
  }
  chain input { type filter hook input priority filter; policy accept;
    ip daddr %[5]s tcp dport { 80, %[4]d } ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    ip daddr %[6]s tcp dport { 80, %[4]d } ct state invalid,untracked synproxy mss 1460 wscale 7 sack-perm
    ip daddr { %[5]s, %[6]s } ct state invalid drop
  }
}
table ip lips {
  chain pre { type filter hook prerouting priority raw; policy accept;
    ip saddr %[10]s notrack
    ip daddr %[10]s notrack
  }
}
`, vipNFT, lab.RS1, lab.RS2, iperfPort, vipSP, vipSPNoTS, snatNFT, snatSP, snatSPNoTS, lab.RouterAddr.Masked()) + nftRules6()
}

// ipv6 reports whether the path is one of the IPv6 ones (NAT64's
// included: its client side is IPv6).
func (p Path) ipv6() bool { return p.HTTP.Addr().Is6() }

// nftRules6 is the kernel's FULLNAT over IPv6, as nftRules' first table,
// and tapvs's IPv6 LIPs untracked, as nftRules' lips table.
func nftRules6() string {
	if !lab.HasIPv6() {
		return ""
	}
	return fmt.Sprintf(`table ip6 fnat6 {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    ip6 daddr %[1]s tcp dport 80 dnat to numgen inc mod 2 map { 0 : %[2]s, 1 : %[3]s }
    ip6 daddr %[1]s tcp dport %[4]d dnat to %[2]s
    ip6 daddr %[1]s udp dport %[4]d dnat to %[2]s
  }
  chain post { type nat hook postrouting priority srcnat; policy accept;
    ct original ip6 daddr %[1]s snat to %[5]s
  }
}
table ip6 lips6 {
  chain pre { type filter hook prerouting priority raw; policy accept;
    ip6 saddr %[6]s notrack
    ip6 daddr %[6]s notrack
  }
}
`, vipNFT6, lab.RS6(lab.RS1), lab.RS6(lab.RS2), iperfPort, snatNFT6, lab.RouterAddr6.Masked())
}

// haproxyConfig is HAProxy in TCP mode with 2 threads, the same services.
func haproxyConfig() string {
	return fmt.Sprintf(`global
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
`, vipHAP, lab.RS1, lab.RS2, iperfPort) + haproxyConfig6()
}

// haproxyConfig6 is the same over IPv6.
func haproxyConfig6() string {
	if !lab.HasIPv6() {
		return ""
	}
	return fmt.Sprintf(`frontend web6
  bind [%[1]s]:80
  default_backend web6
backend web6
  balance roundrobin
  server rs1 [%[2]s]:80
  server rs2 [%[3]s]:80
frontend iperf6
  bind [%[1]s]:%[4]d
  default_backend iperf6
backend iperf6
  server rs1 [%[2]s]:%[4]d
`, vipHAP6, lab.RS6(lab.RS1), lab.RS6(lab.RS2), iperfPort)
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
  server { listen %[2]s:80 backlog=8192; %[4]s location / { return 200 "ok\n"; } }
  # tapvs+proxy-v2: a connection must start with a PROXY header (nginx
  # closes one without); the answer is as long as the plain one's.
  server { listen %[2]s:%[3]d proxy_protocol backlog=8192; location / { return 200 "ok\n"; } }
}
`, dir, rs, ppHTTPPort, listen6(rs))
	return os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
}

// listen6 is nginx's listen on the real server's IPv6 address, for the
// IPv6 paths ("" on a host without IPv6).
func listen6(rs netip.Addr) string {
	if !lab.HasIPv6() {
		return ""
	}
	return fmt.Sprintf("listen [%s]:80 backlog=8192;", lab.RS6(rs))
}

func sysctl(ns, key, value string) {
	lab.InNetns(ns, func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(key, ".", "/"), []byte(value), 0o644)
	})
}
