package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tapvs/tapvs/control/api"
)

// A cluster lab: one router namespace between a client and several tapvs
// instances, each tapvs a process of its own in a namespace of its own,
// announcing the VIP to the router over BGP (the speaker's TCP session on
// that namespace's kernel stack); the router (FRR or BIRD) installs what
// it learns as one ECMP route, and the two real servers sit behind it.
//
//	client 10.0.0.2 ── 10.0.0.1 router 10.1.N.1 ── 10.1.N.2 instance N (tapvs: VIP 172.25.254.100,
//	                              │                              LIPs 172.26.N.10, .11)
//	                              ├ 10.20.1.1 ── rs1 10.20.1.2
//	                              └ 10.20.2.1 ── rs2 10.20.2.2
//
// Inside instance N, tapvs's client TAP is 172.25.254.254/24 with the
// kernel's end 172.25.254.1/24 (peer_address; the VIP is on-link there),
// and its server TAP 172.26.N.4/24 with the kernel's end 172.26.N.1/24.
var (
	ClusterClient     = netip.MustParsePrefix("10.0.0.2/24")
	ClusterClientGW   = netip.MustParsePrefix("10.0.0.1/24")
	clusterRouterID   = netip.MustParseAddr("10.0.0.1")
	clusterInstanceNW = netip.MustParsePrefix("10.1.0.0/16") // 10.1.N.0/24 per instance
)

// The cluster's autonomous systems: the router's, and every instance's.
const (
	ClusterRouterASN = 65000
	ClusterTapvsASN  = 65001
)

// Routers a cluster can run.
const (
	RouterFRR  = "frr"
	RouterBIRD = "bird"
	// RouterStatic installs the VIP's ECMP route by hand, with no BGP at
	// all: the data path alone, for a tapvs without a bgp: section.
	RouterStatic = "static"
)

// MaxClusterInstances bounds Cluster.Instances: the routers are
// configured for up to 8 equal paths.
const MaxClusterInstances = 8

// Cluster is one cluster lab. Set the exported fields, then Build and
// Start; Destroy removes everything, whatever state it is in.
type Cluster struct {
	Prefix    string // names every namespace: <p>-r, <p>-c, <p>-tN, <p>-rs1, <p>-rs2
	Instances int    // tapvs instances, 1 to MaxClusterInstances
	Router    string // RouterFRR (default), RouterBIRD or RouterStatic
	TapvsBin  string // the tapvs binary each instance runs
	// Dir holds the configurations, sockets and logs; Build makes a
	// temporary one (and Destroy removes it) when empty.
	Dir string
	// Logs, if set, gets each instance's standard error (its log) too,
	// prefixed "tN ".
	Logs io.Writer
	// NoHandoff leaves the handoff: section out: a segment of a flow the
	// router moved to an instance that does not hold it is dropped there,
	// as on one box, rather than handed to the instance that does.
	NoHandoff bool
	// Sync adds the sync: section (connection sync between the
	// instances, ClusterSync): a killed instance's connections go on
	// through the survivors, which hold them as shadows.
	Sync bool
	// FlowPort is the VIP's port the flows of a drain or a kill go to:
	// BulkPort when 0, ClusterSynproxyBulkPort for the same transfers
	// behind SYNPROXY (a service only a Sync cluster has).
	FlowPort uint16
	// GracefulRestart, if set, is each instance's bgp.graceful_restart:
	// a takeover (Instance.Takeover) leaves its routes at the router.
	GracefulRestart time.Duration
	// FlowShape is how each flow of a drain or a kill sends: ShortFlows
	// when zero, LongFlows for hundreds of them.
	FlowShape FlowShape

	Client, RouterNS string
	RS               [2]string
	Inst             []*Instance
	Backends         [2]*Backend
	// Started is when Start started the instances: the router's ECMP
	// route over all of them is measured from here.
	Started time.Time

	built   []string
	ownDir  bool
	daemons []*routerProc // the router's
}

// Instance is one tapvs of a cluster.
type Instance struct {
	N      int
	NS     string
	Addr   netip.Addr // 10.1.N.2: where its BGP session comes from
	LIPs   [2]netip.Addr
	Socket string // its control socket
	Config string // its configuration file
	Log    string // its standard error

	bin  string
	logs io.Writer
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// ClusterServices is the services of instance n: HTTP and bulk over both
// real servers, from the instance's own LIPs, with a fast TCP health check.
func ClusterServices(n int) string {
	return fmt.Sprintf(`  - name: web
    vip: %[1]s
    port: %[2]d
    scheduler: rr
    local_addresses: [%[3]s, %[4]s]
    health_check: {type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 2}
    real_servers:
      - {address: %[5]s, port: %[2]d}
      - {address: %[6]s, port: %[2]d}
  - name: bulk
    vip: %[1]s
    port: %[7]d
    scheduler: rr
    local_addresses: [%[3]s]
    health_check: {type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 2}
    real_servers:
      - {address: %[5]s, port: %[7]d}
      - {address: %[6]s, port: %[7]d}
`, VIP, HTTPPort, ClusterLIP(n, 0), ClusterLIP(n, 1), RS1, RS2, BulkPort)
}

// ClusterBGP is the bgp: section of instance n of instances: AS 65001
// toward the router's 10.1.N.1 in AS 65000, with short timers for a lab,
// and every other instance's LIPs as its backups (ClusterBackupRank).
func ClusterBGP(n, instances int) string {
	var backups strings.Builder
	for m := 1; m <= instances; m++ {
		if m == n {
			continue
		}
		if backups.Len() == 0 {
			backups.WriteString("  backup_lips:\n")
		}
		for i := range 2 {
			fmt.Fprintf(&backups, "    - {address: %s, rank: %d}\n", ClusterLIP(m, i), ClusterBackupRank(n, m, instances))
		}
	}
	return fmt.Sprintf(`bgp:
  asn: %d
  router_id: %s
  hold_time: 3s
  keepalive: 1s
  connect_retry: 1s
%s  peers:
    - {address: %s, asn: %d}
`, ClusterTapvsASN, instanceAddr(n), backups.String(), routerAddr(n), ClusterRouterASN)
}

// ClusterBackupRank is instance n's rank among the backups of instance
// home's LIPs: the instances after home in a ring, (n - home - 1) mod N,
// counted from 1 (the instance after home is its first backup), so that
// the LIPs of different dead instances go to different survivors.
func ClusterBackupRank(n, home, instances int) int {
	return ((n-home-1)%instances+instances)%instances + 1
}

// ClusterHandoffPort is the UDP port of every instance's handoff.
const ClusterHandoffPort = 7700

// clusterHandoffKey is the lab's shared handoff key. A real cluster's is
// its own secret (`openssl rand -hex 32`).
const clusterHandoffKey = "6c61622d6b65792d6e6f742d612d7365637265742d6c61622d6b65792d6e6f74"

// ClusterHandoff is the handoff: section of instance n of instances: its
// own address on the router's link, and every other instance's.
func ClusterHandoff(n, instances int) string {
	var peers []string
	for m := 1; m <= instances; m++ {
		if m != n {
			peers = append(peers, netip.AddrPortFrom(instanceAddr(m), ClusterHandoffPort).String())
		}
	}
	return fmt.Sprintf("handoff:\n  listen: %s\n  peers: [%s]\n  key: %s\n",
		netip.AddrPortFrom(instanceAddr(n), ClusterHandoffPort), strings.Join(peers, ", "), clusterHandoffKey)
}

// ClusterSyncPort is the UDP port of every instance's connection sync.
const ClusterSyncPort = 7701

// ClusterSync is the sync: section of instance n of instances: its own
// address on the router's link and id n, every other instance's, and the
// lab's key.
func ClusterSync(n, instances int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sync:\n  listen: %s\n  id: %d\n  peers:\n", netip.AddrPortFrom(instanceAddr(n), ClusterSyncPort), n)
	for m := 1; m <= instances; m++ {
		if m != n {
			fmt.Fprintf(&b, "    - {address: %s, id: %d}\n", netip.AddrPortFrom(instanceAddr(m), ClusterSyncPort), m)
		}
	}
	fmt.Fprintf(&b, "  keys: [{id: 1, key: %s}]\n", clusterHandoffKey)
	return b.String()
}

// ClusterSynproxyBulkPort is the VIP's port of the bulk servers behind
// SYNPROXY in a Sync cluster.
const ClusterSynproxyBulkPort = 9010

// clusterSynproxyBulk is the bulk service behind SYNPROXY of instance n.
func clusterSynproxyBulk(n int) string {
	return fmt.Sprintf(`  - name: bulk-synproxy
    vip: %s
    port: %d
    scheduler: rr
    synproxy: true
    local_addresses: [%s]
    health_check: {type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 2}
    real_servers:
      - {address: %s, port: %d}
      - {address: %s, port: %d}
`, VIP, ClusterSynproxyBulkPort, ClusterLIP(n, 0), RS1, BulkPort, RS2, BulkPort)
}

// flowPort is c.FlowPort, or BulkPort.
func (c *Cluster) flowPort() uint16 {
	if c.FlowPort != 0 {
		return c.FlowPort
	}
	return BulkPort
}

// ClusterLIP is instance n's LIP i (0 or 1): 172.26.N.10 and .11.
func ClusterLIP(n, i int) netip.Addr { return netip.AddrFrom4([4]byte{172, 26, byte(n), byte(10 + i)}) }

func instanceAddr(n int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, byte(n), 2}) }
func routerAddr(n int) netip.Addr   { return netip.AddrFrom4([4]byte{10, 1, byte(n), 1}) }
func serverNet(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 26, byte(n), 0}), 24)
}

// InstanceOf names the instance whose address is a (10.1.N.2, a next hop
// in the router's FIB) or one of whose LIPs it is (172.26.N.x): 0 for
// any other address.
func InstanceOf(a netip.Addr) int {
	if !a.Is4() {
		return 0
	}
	b := a.As4()
	switch {
	case b[0] == 10 && b[1] == 1 && b[3] == 2:
		return int(b[2])
	case b[0] == 172 && b[1] == 26:
		return int(b[2])
	}
	return 0
}

// Namespaces lists the cluster's namespaces.
func (c *Cluster) Namespaces() []string {
	ns := []string{c.RouterNS, c.Client, c.RS[0], c.RS[1]}
	for _, in := range c.Inst {
		ns = append(ns, in.NS)
	}
	return ns
}

func (c *Cluster) check() error {
	switch {
	case c.Prefix == "" || len(c.Prefix)+4 > 15 || strings.ContainsAny(c.Prefix, "/ \t"):
		return fmt.Errorf("cluster prefix %q: 1 to 11 characters, no '/' or space", c.Prefix)
	case c.Instances < 1 || c.Instances > MaxClusterInstances:
		return fmt.Errorf("cluster instances %d: 1 to %d", c.Instances, MaxClusterInstances)
	case c.TapvsBin == "":
		return errors.New("cluster: no tapvs binary")
	}
	switch c.Router {
	case "":
		c.Router = RouterFRR
	case RouterFRR, RouterBIRD, RouterStatic:
	default:
		return fmt.Errorf("cluster router %q: frr, bird or static", c.Router)
	}
	return nil
}

// Build creates the namespaces, their links and addresses, and writes each
// instance's configuration; nothing runs yet (see Start).
func (c *Cluster) Build() (err error) {
	if err := c.check(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.Destroy()
		}
	}()
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", clusterDirPattern); err != nil {
			return err
		}
		c.ownDir = true
		// FRR's daemons change to their own user, which ends the parent
		// death signal: if this process is killed, SweepClusters finds
		// them by this file.
		if err := os.WriteFile(filepath.Join(c.Dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return err
		}
	}
	c.RouterNS, c.Client = c.Prefix+"-r", c.Prefix+"-c"
	c.RS = [2]string{c.Prefix + "-rs1", c.Prefix + "-rs2"}
	c.Inst = nil
	for n := 1; n <= c.Instances; n++ {
		c.Inst = append(c.Inst, &Instance{
			N: n, NS: fmt.Sprintf("%s-t%d", c.Prefix, n), Addr: instanceAddr(n),
			LIPs:   [2]netip.Addr{ClusterLIP(n, 0), ClusterLIP(n, 1)},
			Socket: filepath.Join(c.Dir, fmt.Sprintf("t%d.sock", n)),
			Config: filepath.Join(c.Dir, fmt.Sprintf("t%d.yaml", n)),
			Log:    filepath.Join(c.Dir, fmt.Sprintf("t%d.log", n)),
			bin:    c.TapvsBin, logs: c.Logs,
		})
	}
	for _, ns := range c.Namespaces() {
		if err := ip("netns", "add", ns); err != nil {
			return err
		}
		c.built = append(c.built, ns)
		if err := ip("-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	r := c.RouterNS
	// The router forwards, and spreads flows over equal paths by their
	// addresses, protocol and ports, as a datacenter router does. Not hash
	// policy 1 (L4): a packet that already carries an L4 hash is sent by
	// that, and a packet from a socket in another namespace of this host
	// carries its socket's random one (sk_txhash), which TCP picks anew on
	// a retransmission timeout: a flow would jump to another instance
	// whenever it stalls (measured: a third of the transfers that should
	// have stayed on a survivor broke), which a router whose NIC hashes
	// the headers never does. Policy 3 hashes the fields named (0x37: source and
	// destination address, protocol, source and destination port) from
	// the headers, always.
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"},
		{"net.ipv4.fib_multipath_hash_policy", "3"}, {"net.ipv4.fib_multipath_hash_fields", "0x0037"}} {
		if err := sysctl(r, kv[0], kv[1]); err != nil {
			return err
		}
	}
	link := func(dev string, a netip.Prefix, peerNS string, pa netip.Prefix, gw netip.Addr) [][]string {
		return [][]string{
			{"-n", r, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", peerNS},
			{"-n", r, "addr", "add", a.String(), "dev", dev},
			{"-n", peerNS, "addr", "add", pa.String(), "dev", "eth0"},
			{"-n", r, "link", "set", dev, "up"},
			{"-n", peerNS, "link", "set", "eth0", "up"},
			{"-n", peerNS, "route", "add", "default", "via", gw.String()},
		}
	}
	steps := link("c", ClusterClientGW, c.Client, ClusterClient, ClusterClientGW.Addr())
	steps = append(steps, link("rs1", rs1GW, c.RS[0], netip.PrefixFrom(RS1, 24), rs1GW.Addr())...)
	steps = append(steps, link("rs2", rs2GW, c.RS[1], netip.PrefixFrom(RS2, 24), rs2GW.Addr())...)
	if HasIPv6() {
		// StartBackend listens on the real servers' IPv6 addresses too.
		steps = append(steps,
			[]string{"-n", c.RS[0], "addr", "add", netip.PrefixFrom(RS1v6, 64).String(), "dev", "eth0", "nodad"},
			[]string{"-n", c.RS[1], "addr", "add", netip.PrefixFrom(RS2v6, 64).String(), "dev", "eth0", "nodad"})
	}
	for _, in := range c.Inst {
		steps = append(steps, link(fmt.Sprintf("t%d", in.N), netip.PrefixFrom(routerAddr(in.N), 24),
			in.NS, netip.PrefixFrom(in.Addr, 24), routerAddr(in.N))...)
		// tapvs's answers from the VIP and its LIPs' packets cross the
		// instance's kernel, between its TAPs and the router.
		if err := sysctl(in.NS, "net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
	}
	if c.Router == RouterStatic {
		// No BGP: the VIP over every instance, and each instance's server
		// subnet (its LIPs) to it, by hand.
		mp := []string{"-n", r, "route", "add", netip.PrefixFrom(VIP, 32).String()}
		for _, in := range c.Inst {
			mp = append(mp, "nexthop", "via", in.Addr.String())
			steps = append(steps, []string{"-n", r, "route", "add", serverNet(in.N).String(), "via", in.Addr.String()})
		}
		steps = append(steps, mp)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	for _, in := range c.Inst {
		if err := os.WriteFile(in.Config, []byte(c.config(in.N, "")), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// config renders instance n's configuration, with more services (YAML
// list items) after ClusterServices: its TAPs stay in its own namespace,
// whose kernel ends (peer_address) route between them and the router.
func (c *Cluster) config(n int, extra string) string {
	bgp := ""
	if c.Router != RouterStatic {
		bgp = ClusterBGP(n, c.Instances)
		if c.GracefulRestart > 0 {
			bgp = strings.Replace(bgp, "bgp:\n", fmt.Sprintf("bgp:\n  graceful_restart: %ds\n", int(c.GracefulRestart/time.Second)), 1)
		}
	}
	if !c.NoHandoff && c.Instances > 1 {
		bgp += ClusterHandoff(n, c.Instances)
	}
	more := ""
	if c.Sync && c.Instances > 1 {
		bgp += ClusterSync(n, c.Instances)
		more = clusterSynproxyBulk(n)
	}
	srv := serverNet(n).Addr().As4()
	addr := func(last byte) netip.Addr { a := srv; a[3] = last; return netip.AddrFrom4(a) }
	return fmt.Sprintf(`interfaces:
  offload: true
  client:
    name: tap-c
    address: %s
    peer_address: %s
    routes:
      - {dst: 0.0.0.0/0, via: %s}
  server:
    name: tap-s
    address: %s
    peer_address: %s
    routes:
      - {dst: %s, via: %s}
services:
%s
# A lab's short timeouts: a drained instance's table empties within
# seconds of its last connection, broken ones included.
timeouts:
  tcp: {established: 5s, fin_wait: 1s, time_wait: 1s, close: 1s, close_wait: 1s, last_ack: 1s}
sweep_interval: 100ms
control: {socket: %q}
metrics: {listen: %s}
log: {level: info}
%s`, TapvsClient, ClientAddr, ClientAddr.Addr(),
		netip.PrefixFrom(addr(4), 24), netip.PrefixFrom(addr(1), 24), RSNet, addr(1),
		ClusterServices(n)+more+extra, filepath.Join(c.Dir, fmt.Sprintf("t%d.sock", n)), clusterMetrics, bgp)
}

// Start runs the real servers' backends, the router, and every instance,
// and returns once each instance answers on its control socket. It does
// not wait for BGP: see WaitNextHops.
func (c *Cluster) Start(ctx context.Context) error {
	for i, a := range []netip.Addr{RS1, RS2} {
		b, err := StartBackend(c.RS[i], fmt.Sprintf("rs%d", i+1), a)
		if err != nil {
			return err
		}
		c.Backends[i] = b
	}
	if err := c.StartRouter(ctx); err != nil {
		return err
	}
	c.Started = time.Now()
	for _, in := range c.Inst {
		if err := in.Start(); err != nil {
			return err
		}
	}
	for _, in := range c.Inst {
		if err := in.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Start runs the instance's tapvs as a process of its own in its namespace:
// GoBGP's sockets and goroutines all live there, and the process can be
// killed alone.
func (in *Instance) Start() error {
	if in.cmd != nil && !in.Exited() {
		return fmt.Errorf("instance t%d is running", in.N)
	}
	return in.spawn()
}

// spawn starts `tapvs run` with the instance's file and args; in.cmd and
// in.done become the new process's.
func (in *Instance) spawn(args ...string) error {
	f, err := os.OpenFile(in.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", in.NS, in.bin, "run", "-c", in.Config, "--rootless", "never"}, args...)...)
	// A lab whose process is killed leaves no tapvs behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var w io.Writer = f
	if in.logs != nil {
		w = io.MultiWriter(f, &prefixWriter{w: in.logs, prefix: fmt.Sprintf("t%d ", in.N)})
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("instance t%d: %w", in.N, err)
	}
	done := make(chan struct{}) // this process's: a takeover's successor gets its own
	in.cmd, in.done = cmd, done
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	return nil
}

// WaitReady waits until the instance answers on its control socket, or
// its process exits, or ctx ends (10s at most).
func (in *Instance) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cl := api.Dial(in.Socket)
	for {
		if _, err := cl.Info(); err == nil {
			return nil
		}
		select {
		case <-in.done:
			return fmt.Errorf("instance t%d exited: %s", in.N, in.tailLog())
		case <-ctx.Done():
			return fmt.Errorf("instance t%d: no answer on %s: %w", in.N, in.Socket, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Reload rewrites instance n's configuration with more services (YAML list
// items, "" for none) after ClusterServices and has it reload the file.
func (c *Cluster) Reload(n int, more string) (api.Reload, error) {
	in := c.Inst[n-1]
	if err := os.WriteFile(in.Config, []byte(c.config(n, more)), 0o600); err != nil {
		return api.Reload{}, err
	}
	return in.API().Reload()
}

// API is a client of the instance's control socket.
func (in *Instance) API() *api.Client { return api.Dial(in.Socket) }

// Exited reports whether the instance's process has ended.
func (in *Instance) Exited() bool {
	if in.done == nil {
		return true
	}
	select {
	case <-in.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the instance's tapvs.
func (in *Instance) Signal(sig syscall.Signal) error {
	if in.cmd == nil || in.Exited() {
		return fmt.Errorf("instance t%d is not running", in.N)
	}
	return in.cmd.Process.Signal(sig)
}

// Kill ends the instance with SIGKILL and waits for its process to go: the
// kernel closes its BGP session (and its TAPs) for it.
func (in *Instance) Kill() error {
	if err := in.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-in.done
	return nil
}

// Stop ends the instance with SIGTERM (SIGKILL after 10s) and waits.
func (in *Instance) Stop() {
	if in.Exited() {
		return
	}
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.done:
	case <-time.After(10 * time.Second):
		in.cmd.Process.Kill()
		<-in.done
	}
}

// LoggedAt returns the time of the last line of the instance's log that
// has every one of words (tapvs's text log: time=... first), or false.
func (in *Instance) LoggedAt(words ...string) (time.Time, bool) {
	at, _, found := in.LastLogged(words...)
	return at, found
}

// LastLogged is LoggedAt with the line.
func (in *Instance) LastLogged(words ...string) (at time.Time, line string, found bool) {
	b, err := os.ReadFile(in.Log)
	if err != nil {
		return time.Time{}, "", false
	}
	for _, l := range strings.Split(string(b), "\n") {
		ok := strings.HasPrefix(l, "time=")
		for _, w := range words {
			ok = ok && strings.Contains(l, w)
		}
		if !ok {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(l, "time="), " ")
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			at, line, found = t, l, true
		}
	}
	return at, line, found
}

func (in *Instance) tailLog() string {
	b, _ := os.ReadFile(in.Log)
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(l) > 10 {
		l = l[len(l)-10:]
	}
	return strings.Join(l, "\n")
}

// Destroy stops the instances and the router and removes the namespaces
// (and Dir, if Build made it).
func (c *Cluster) Destroy() error {
	var errs []error
	for _, in := range c.Inst {
		in.Stop()
	}
	c.stopRouter()
	for _, b := range c.Backends {
		if b != nil {
			b.Close()
		}
	}
	c.Backends = [2]*Backend{}
	for _, ns := range c.built {
		if err := ip("netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	c.built = nil
	if c.ownDir {
		os.RemoveAll(c.Dir)
		c.ownDir = false
	}
	return errors.Join(errs...)
}

// clusterDirPattern names the directories Build makes (os.MkdirTemp).
const clusterDirPattern = "tapvs-cluster-"

// SweepClusters removes what cluster labs of processes that are gone left
// behind (a test binary killed, say): their router daemons, found by their
// pid files (and killed only if the process still runs from that lab's
// directory), and the directory. Their namespaces are the caller's to
// remove (they are named after its prefix).
func SweepClusters() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), clusterDirPattern+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(string(b)); err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		pids, _ := filepath.Glob(filepath.Join(dir, "*", "*.pid"))
		for _, pf := range pids {
			b, err := os.ReadFile(pf)
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 1 {
				continue
			}
			// The pid may have been reused since: kill it only if it is
			// still a daemon of this lab (its command line names the
			// directory).
			if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmd, []byte(dir)) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		os.RemoveAll(dir)
	}
}

// StartRouter runs the router's BGP daemons in its namespace and waits until
// they listen on port 179 (10s at most).
func (c *Cluster) StartRouter(ctx context.Context) error {
	switch c.Router {
	case RouterStatic:
		return nil
	case RouterFRR:
		if err := c.startFRR(); err != nil {
			return err
		}
	case RouterBIRD:
		if err := c.startBIRD(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if c.routerListens() {
			return nil
		}
		for _, d := range c.daemons {
			select {
			case <-d.done:
				return fmt.Errorf("%s in %s exited: %s", d.name, c.RouterNS, d.cmd.ProcessState)
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s in %s: nothing listens on port 179: %w", c.Router, c.RouterNS, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// routerListens reports whether a socket listens on TCP port 179 in the
// router's namespace.
func (c *Cluster) routerListens() bool {
	out, err := exec.Command("ip", "netns", "exec", c.RouterNS, "ss", "-Htln", "sport = :179").Output()
	return err == nil && len(bytes.TrimSpace(out)) > 0
}

// routerDir is where the router's configuration, sockets and pid files
// live.
func (c *Cluster) routerDir() string { return filepath.Join(c.Dir, c.Router) }

// FRRConfig is the router's frr.conf: AS 65000 accepting any instance in
// 10.1.0.0/16 (bgp listen range, AS 65001), installing up to 8 equal paths.
func FRRConfig(routerID netip.Addr) string {
	return fmt.Sprintf(`frr defaults datacenter
hostname tapvs-lab-router
log stdout informational
!
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 neighbor tapvs peer-group
 neighbor tapvs remote-as %d
 bgp listen range %s peer-group tapvs
 address-family ipv4 unicast
  maximum-paths %d
 exit-address-family
!
`, ClusterRouterASN, routerID, ClusterTapvsASN, clusterInstanceNW, MaxClusterInstances)
}

// BIRDConfig is the router's bird.conf: one passive session per instance
// (tapvs dials, the router waits), everything learned exported to the
// kernel, equal paths merged into one multipath route.
func BIRDConfig(routerID netip.Addr, instances int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `router id %s;
protocol device { }
protocol kernel {
  ipv4 { export all; };
  merge paths on limit %d;
}
`, routerID, MaxClusterInstances)
	for n := 1; n <= instances; n++ {
		fmt.Fprintf(&b, `protocol bgp t%d {
  local %s as %d;
  neighbor %s as %d;
  passive on;
  hold time 9;
  ipv4 { import all; export none; };
}
`, n, routerAddr(n), ClusterRouterASN, instanceAddr(n), ClusterTapvsASN)
	}
	return b.String()
}

// startFRR runs zebra and bgpd in the router's namespace as children of
// this process, with their own pathspace (-N), sockets and pid files in a
// directory of this cluster's: several routers and the host's own FRR do
// not meet. FRR drops to its user frr, which must reach that directory.
func (c *Cluster) startFRR() error {
	dir := c.routerDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(dir, "frr.conf")
	if err := os.WriteFile(conf, []byte(FRRConfig(clusterRouterID)), 0o644); err != nil {
		return err
	}
	if err := chownFRR(c.Dir, dir, conf); err != nil {
		return err
	}
	for _, d := range []string{"zebra", "bgpd"} {
		args := []string{"netns", "exec", c.RouterNS, "/usr/lib/frr/" + d,
			"-N", c.Prefix, "-f", conf, "-i", filepath.Join(dir, d+".pid"),
			"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir, "-P", "0"}
		if err := c.runDaemon(d, args); err != nil {
			return err
		}
		if d == "zebra" {
			// bgpd connects to zebra's socket at start.
			if err := waitFile(filepath.Join(dir, "zserv.api"), 10*time.Second); err != nil {
				return fmt.Errorf("zebra in %s: %w", c.RouterNS, err)
			}
		}
	}
	return nil
}

// chownFRR gives FRR's user the state directory (and lets it through the
// directories above).
func chownFRR(top string, paths ...string) error {
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("FRR's user: %w (is FRR installed?)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chmod(top, 0o755); err != nil {
		return err
	}
	for _, p := range paths {
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) startBIRD() error {
	dir := c.routerDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(BIRDConfig(clusterRouterID, c.Instances)), 0o644); err != nil {
		return err
	}
	return c.runDaemon("bird", []string{"netns", "exec", c.RouterNS, "bird", "-f",
		"-c", conf, "-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid")})
}

// runDaemon starts one of the router's daemons in the foreground, its
// output in a log file of the router's directory.
func (c *Cluster) runDaemon(name string, args []string) error {
	f, err := os.OpenFile(filepath.Join(c.routerDir(), name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = f, f
	// A lab whose process is killed leaves no router behind (BIRD; FRR's
	// daemons forget this when they change to their own user).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	d := &routerProc{name: name, cmd: cmd, done: make(chan struct{})}
	c.daemons = append(c.daemons, d)
	go func() { cmd.Wait(); close(d.done) }()
	return nil
}

// routerProc is one of the router's processes.
type routerProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

func (c *Cluster) stopRouter() {
	for i := len(c.daemons) - 1; i >= 0; i-- {
		d := c.daemons[i]
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
	}
	c.daemons = nil
}

func waitFile(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RouterState is the router's own account of its BGP sessions (vtysh's
// or birdc's), for a log.
func (c *Cluster) RouterState() string {
	var cmd *exec.Cmd
	switch c.Router {
	case RouterFRR:
		cmd = exec.Command("vtysh", "--vty_socket", c.routerDir(), "-c", "show bgp ipv4 unicast summary", "-c", "show ip route bgp")
	case RouterBIRD:
		cmd = exec.Command("birdc", "-s", filepath.Join(c.routerDir(), "bird.ctl"), "show", "protocols")
	default:
		return "static routes, no BGP"
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s: %v: %s", cmd, err, out)
	}
	return string(out)
}

// NextHops returns the instances (by number) the router's FIB sends dst to,
// sorted: nil when it has no route of its own to dst/32.
func (c *Cluster) NextHops(dst netip.Addr) ([]int, error) {
	hops, err := c.FIBNextHops(dst)
	slices.Sort(hops)
	return hops, err
}

// FIBNextHops is NextHops in the FIB's order, the order hash-threshold
// multipath gives each next hop its range of hashes in: when the first or
// the last leaves, some flows move between the others; when one in the
// middle leaves, none do.
func (c *Cluster) FIBNextHops(dst netip.Addr) ([]int, error) {
	h, err := netns.GetFromName(c.RouterNS)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", c.RouterNS, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", c.RouterNS, err)
	}
	defer nl.Close()
	rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{
		Dst: &net.IPNet{IP: dst.AsSlice(), Mask: net.CIDRMask(32, 32)}, Table: syscall.RT_TABLE_MAIN,
	}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("routes to %s in %s: %w", dst, c.RouterNS, err)
	}
	var hops []int
	add := func(gw net.IP) {
		if a, ok := netip.AddrFromSlice(gw); ok {
			hops = append(hops, InstanceOf(a.Unmap()))
		}
	}
	for _, r := range rs {
		if r.Gw != nil {
			add(r.Gw)
		}
		for _, nh := range r.MultiPath {
			add(nh.Gw)
		}
	}
	return hops, nil
}

// WaitNextHops polls the router's FIB until its route to dst goes to
// exactly the instances want (none: no route), and returns how long that
// took; ctx bounds the wait.
func (c *Cluster) WaitNextHops(ctx context.Context, dst netip.Addr, want ...int) (time.Duration, error) {
	start := time.Now()
	slices.Sort(want)
	var have []int
	for {
		var err error
		have, err = c.NextHops(dst)
		if err != nil {
			return 0, err
		}
		if slices.Equal(have, want) {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("the router's route to %s goes to instances %v, not %v: %w", dst, have, want, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// FlowHop returns the instance the router sends a TCP flow from the client
// to the VIP to, by the kernel's own multipath hash (ip route get with the
// flow's ports): 0 if it has no route.
func (c *Cluster) FlowHop(sport, dport uint16) (int, error) {
	out, err := exec.Command("ip", append([]string{"-n", c.RouterNS, "-o"}, flowRouteGet(sport, dport)...)...).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("unreachable")) {
			return 0, nil
		}
		return 0, fmt.Errorf("ip route get: %w: %s", err, bytes.TrimSpace(out))
	}
	return hopOf(out)
}

// FlowHops is FlowHop for many flows at once: one ip for all of them
// (ip -batch; an ip per flow takes 10-20 ms, seconds for hundreds), or,
// when some has no route (its answer is missing from the batch's), one
// each.
func (c *Cluster) FlowHops(sports []uint16, dport uint16) ([]int, error) {
	var in strings.Builder
	for _, p := range sports {
		in.WriteString(strings.Join(flowRouteGet(p, dport), " ") + "\n")
	}
	cmd := exec.Command("ip", "-n", c.RouterNS, "-o", "-force", "-batch", "-")
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	hops := make([]int, len(sports))
	if err == nil && len(lines) == len(sports) {
		for i, l := range lines {
			if hops[i], err = hopOf([]byte(l)); err != nil {
				return nil, err
			}
		}
		return hops, nil
	}
	for i, p := range sports {
		if hops[i], err = c.FlowHop(p, dport); err != nil {
			return nil, err
		}
	}
	return hops, nil
}

// flowRouteGet is ip's arguments that ask the router's route for a TCP
// flow from the client to the VIP.
func flowRouteGet(sport, dport uint16) []string {
	return []string{"route", "get", VIP.String(), "from", ClusterClient.Addr().String(),
		"iif", "c", "ipproto", "tcp", "sport", strconv.Itoa(int(sport)), "dport", strconv.Itoa(int(dport))}
}

// hopOf reads the instance from one line of ip route get: 0 for a route
// with no next hop.
func hopOf(out []byte) (int, error) {
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			a, err := netip.ParseAddr(f[i+1])
			if err != nil {
				return 0, fmt.Errorf("ip route get: %q", out)
			}
			return InstanceOf(a), nil
		}
	}
	return 0, nil
}

// prefixWriter writes each line with a prefix; a line is written whole or
// not at all per Write call (tapvs's log writes whole lines).
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	var out []byte
	for _, l := range bytes.SplitAfter(b, []byte("\n")) {
		if len(l) > 0 {
			out = append(append(out, p.prefix...), l...)
		}
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// clusterMetrics is where each instance serves its metrics, in its own
// namespace (Instance.Drops).
const clusterMetrics = "127.0.0.1:9477"

// Drops is the instance's count of drops for reason (its metrics'
// tapvs_drops_total), read in its namespace.
func (in *Instance) Drops(reason string) (uint64, error) {
	return in.Metric(fmt.Sprintf("tapvs_drops_total{reason=%q}", reason))
}

// Metric is the value of one sample of the instance's metrics, named as
// the exposition writes it (name{label="value"}), read in its namespace:
// 0 if it is not there yet.
func (in *Instance) Metric(sample string) (uint64, error) {
	body, err := ScrapeMetrics(in.NS, clusterMetrics)
	if err != nil {
		return 0, fmt.Errorf("t%d's metrics: %w", in.N, err)
	}
	return uint64(MetricSum(body, sample+" ")), nil
}

// MetricLines is the samples of the instance's metrics whose names start
// with prefix, one a line: for a failure's message.
func (in *Instance) MetricLines(prefix string) string {
	body, err := ScrapeMetrics(in.NS, clusterMetrics)
	if err != nil {
		return err.Error()
	}
	var out []string
	for l := range strings.Lines(body) {
		if strings.HasPrefix(l, prefix) {
			out = append(out, strings.TrimSuffix(l, "\n"))
		}
	}
	return strings.Join(out, "\n")
}

// ScrapeMetrics reads the Prometheus text a tapvs serves at addr in
// namespace ns.
func ScrapeMetrics(ns, addr string) (string, error) {
	var body []byte
	err := InNetns(ns, func() error {
		conn, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: tapvs\r\n\r\n"); err != nil {
			return err
		}
		body, err = io.ReadAll(conn)
		return err
	})
	return string(body), err
}

// MetricSum is the sum of the samples in body whose line starts with
// prefix (a whole series, "name{label=\"v\"} ", or the start of several);
// 0 when none is there yet.
func MetricSum(body, prefix string) float64 {
	var sum float64
	for l := range strings.Lines(body) {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// BGPPath is one path the router holds for a prefix: the instance it came
// from, its MED, and whether the router chose it as best.
type BGPPath struct {
	Instance int
	MED      int64
	Best     bool
	Stale    bool // kept for a peer restarting gracefully (FRR's table only)
}

// BGPPaths returns the paths the router's BGP table holds for dst/32
// (FRR: vtysh's "show ip bgp dst/32 json"; BIRD: birdc's "show route for
// dst/32 all"), sorted by instance.
func (c *Cluster) BGPPaths(dst netip.Addr) ([]BGPPath, error) {
	p := netip.PrefixFrom(dst, 32).String()
	switch c.Router {
	case RouterFRR:
	case RouterBIRD:
		return c.birdPaths(p)
	default:
		return nil, fmt.Errorf("BGPPaths reads FRR's or BIRD's table, not %s's", c.Router)
	}
	out, err := exec.Command("vtysh", "--vty_socket", c.routerDir(), "-c", "show ip bgp "+p+" json").Output()
	if err != nil {
		return nil, fmt.Errorf("vtysh show ip bgp %s: %w", p, err)
	}
	var r struct {
		Paths []struct {
			Metric   int64 `json:"metric"`
			Bestpath struct {
				Overall bool `json:"overall"`
			} `json:"bestpath"`
			Peer struct {
				PeerID string `json:"peerId"`
			} `json:"peer"`
			Stale bool `json:"stale"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("vtysh show ip bgp %s: %w: %s", p, err, out)
	}
	var paths []BGPPath
	for _, q := range r.Paths {
		a, _ := netip.ParseAddr(q.Peer.PeerID)
		paths = append(paths, BGPPath{Instance: InstanceOf(a), MED: q.Metric, Best: q.Bestpath.Overall, Stale: q.Stale})
	}
	slices.SortFunc(paths, func(a, b BGPPath) int { return a.Instance - b.Instance })
	return paths, nil
}

// birdPaths is BGPPaths from birdc: each route of the prefix starts with a
// line "... unicast [protocol time] * (pref) [AS...]" ("*": the best),
// and its own lines follow: "via 10.1.N.2 on tN", "BGP.med: M".
func (c *Cluster) birdPaths(p string) ([]BGPPath, error) {
	out, err := exec.Command("birdc", "-s", filepath.Join(c.routerDir(), "bird.ctl"), "show", "route", "for", p, "all").Output()
	if err != nil {
		return nil, fmt.Errorf("birdc show route for %s: %w", p, err)
	}
	var paths []BGPPath
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case slices.Contains(f, "unicast"):
			_, after, _ := strings.Cut(l, "]")
			paths = append(paths, BGPPath{Best: strings.HasPrefix(strings.TrimSpace(after), "*")})
		case len(paths) == 0:
		case len(f) >= 2 && f[0] == "via":
			a, _ := netip.ParseAddr(f[1])
			paths[len(paths)-1].Instance = InstanceOf(a)
		case len(f) == 2 && f[0] == "BGP.med:":
			paths[len(paths)-1].MED, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	slices.SortFunc(paths, func(a, b BGPPath) int { return a.Instance - b.Instance })
	return paths, nil
}
