// Package tapvstest builds, for one test, a network with tapvs in it — a
// client, tapvs between two TAPs, a router, and real servers behind it,
// each in a network namespace of its own — and removes all of it when the
// test ends, as net/http/httptest serves HTTP for a test.
//
// It needs root, or root in a user namespace with its own mount and network
// namespaces (unshare -Urnm), plus /dev/net/tun and ip(8). Without them
// NewLab skips the test, or fails it when CI=true or TAPVS_REQUIRE=1 is set.
package tapvstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/pkg/tapvs"
)

// Options shape a lab. The zero value is two real servers running the
// built-in servers behind one TCP service on the VIP's port 80.
type Options struct {
	// RealServers is how many real servers; 0 is 2.
	RealServers int
	// NoBackends starts no built-in servers: the test runs its own in the
	// real servers' namespaces (RealServer.Listen, Lab.Run).
	NoBackends bool
	// NoService loads no service: the test adds its own (Lab.LB.AddService,
	// with Lab.LocalAddrs and the real servers' addresses).
	NoService bool
	// Scheduler is the default service's; "" is rr.
	Scheduler string
	// Marks are the selectors of match services (Config.Marks); the test
	// adds the services (Lab.LB.AddService with tapvs.MarkKey).
	Marks []tapvs.Mark
	// BGP, if not nil, is tapvs's BGP (Config.BGP): it dials its peers
	// from the test's own namespace.
	BGP *tapvs.BGP
	// Log receives tapvs's log; nil discards it.
	Log *slog.Logger
}

// The built-in servers' ports on every real server (unless NoBackends).
const (
	// HTTPPort answers every request with one line:
	// "<name> <address> saw <source address:port>", the source being the
	// local address tapvs connected from.
	HTTPPort = lab.HTTPPort
	// BulkPort takes an upload or sends a download (lab's bulk protocol).
	BulkPort = lab.BulkPort
	// EchoPort echoes UDP datagrams.
	EchoPort = lab.EchoPort
)

// Lab is one test's network with tapvs running in it.
type Lab struct {
	LB *tapvs.LB
	// VIP is the address services are reached at from the client.
	VIP netip.Addr
	// Service is the default service (unless NoService): TCP VIP:80 over
	// every real server's port 80.
	Service tapvs.ServiceKey
	// LocalAddrs are tapvs's addresses on the server side that a service
	// may connect to real servers from.
	LocalAddrs []netip.Addr
	// VIP6 and LocalAddrs6 are the same for IPv6 services (invalid and
	// empty on a kernel without IPv6). VIP6 with IPv4 local addresses and
	// real servers is NAT64.
	VIP6        netip.Addr
	LocalAddrs6 []netip.Addr
	// Client and Router are namespace names: the client's, and the router's
	// between tapvs and the real servers.
	Client, Router string
	RealServers    []*RealServer

	t testing.TB
}

// RealServer is one real server: a namespace with one address.
type RealServer struct {
	Name  string // rs1, rs2, ...
	Netns string
	Addr  netip.Addr
	// Addr6 is its IPv6 address: the first two real servers have one
	// (invalid for the others, and on a kernel without IPv6).
	Addr6 netip.Addr
	b     *lab.Backend
	t     testing.TB
}

// Requests is how many HTTP requests its built-in server has answered.
func (rs *RealServer) Requests() int64 {
	if rs.b == nil {
		return 0
	}
	return rs.b.Requests.Load()
}

// Listen listens on the real server's address and port inside its
// namespace; the listener is closed when the test ends.
func (rs *RealServer) Listen(network string, port uint16) (net.Listener, error) {
	var l net.Listener
	err := lab.InNetns(rs.Netns, func() (err error) {
		l, err = net.Listen(network, netip.AddrPortFrom(rs.Addr, port).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tapvstest: listen in %s: %w", rs.Netns, err)
	}
	rs.t.Cleanup(func() { l.Close() })
	return l, nil
}

// rsAddr is real server i's address: the lab's two, then more on the
// first one's subnet (the router's br-a).
func rsAddr(i int) netip.Addr {
	switch i {
	case 0:
		return lab.RS1
	case 1:
		return lab.RS2
	}
	return netip.AddrFrom4([4]byte{10, 20, 1, byte(i + 1)})
}

// MaxRealServers bounds Options.RealServers: the extra ones share a /24.
const MaxRealServers = 253

// NewLab builds a lab for t and starts tapvs in it. Everything is removed
// when t ends, whatever its outcome.
func NewLab(t testing.TB, o Options) *Lab {
	t.Helper()
	need(t)
	n := o.RealServers
	if n == 0 {
		n = 2
	}
	if n < 1 || n > MaxRealServers {
		t.Fatalf("tapvstest: %d real servers: 1 to %d", n, MaxRealServers)
	}
	if err := netnsDir(); err != nil {
		t.Fatalf("tapvstest: %v", err)
	}
	// A random prefix keeps the namespaces and TAPs of tests running at the
	// same time (and of other packages' test binaries) apart.
	var rnd [3]byte
	rand.Read(rnd[:])
	prefix := "tvl" + hex.EncodeToString(rnd[:])
	top := lab.NewTopology(prefix, prefix+"c", prefix+"s")
	if err := top.Build(); err != nil {
		t.Fatalf("tapvstest: %v", err)
	}
	var extra []string
	t.Cleanup(func() {
		for _, ns := range extra {
			if err := ip("netns", "del", ns); err != nil {
				t.Errorf("tapvstest: teardown: %v", err)
			}
		}
		if err := top.Destroy(); err != nil {
			t.Errorf("tapvstest: teardown: %v", err)
		}
	})
	l := &Lab{VIP: lab.VIP, LocalAddrs: []netip.Addr{lab.LIP1, lab.LIP2}, Client: top.Client, Router: top.Router, t: t}
	for i := range n {
		rs := &RealServer{Name: fmt.Sprintf("rs%d", i+1), Addr: rsAddr(i), t: t}
		if lab.HasIPv6() {
			rs.Addr6 = lab.RS6(rs.Addr) // the lab's two are dual-stack
		}
		if i < 2 {
			rs.Netns = top.RS[i]
		} else {
			rs.Netns = fmt.Sprintf("%s-rs%d", prefix, i+1)
			extra = append(extra, rs.Netns)
			if err := addRS(top.Router, rs.Netns, i, rs.Addr); err != nil {
				t.Fatalf("tapvstest: %v", err)
			}
		}
		l.RealServers = append(l.RealServers, rs)
	}
	cfg := tapvs.Config{
		Client:    tapvs.Side{TAP: top.TapClient, Netns: top.Client, Addr: lab.TapvsClient},
		Server:    tapvs.Side{TAP: top.TapServer, Netns: top.Router, Addr: lab.TapvsServer, Routes: []tapvs.Route{{Dst: lab.RSNet, Via: lab.RouterAddr.Addr()}}},
		NoOffload: false,
		BGP:       o.BGP,
		Marks:     o.Marks,
		Log:       o.Log,
	}
	if lab.HasIPv6() {
		// The lab is dual-stack: tapvs gets its IPv6 addresses too.
		cfg.Client.Addr6, cfg.Server.Addr6 = lab.TapvsClient6, lab.TapvsServer6
		cfg.Server.Routes = append(cfg.Server.Routes, tapvs.Route{Dst: lab.RSNet6, Via: lab.RouterAddr6.Addr()})
		l.VIP6, l.LocalAddrs6 = lab.VIP6, []netip.Addr{lab.LIP1v6, lab.LIP2v6}
	}
	if !o.NoService {
		sched := o.Scheduler
		if sched == "" {
			sched = "rr"
		}
		l.Service = tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.AddrPortFrom(l.VIP, HTTPPort)}
		svc := tapvs.Service{ServiceKey: l.Service, Name: "web", Scheduler: sched, LocalAddrs: l.LocalAddrs}
		for _, rs := range l.RealServers {
			svc.RealServers = append(svc.RealServers, tapvs.RealServer{Addr: netip.AddrPortFrom(rs.Addr, HTTPPort)})
		}
		cfg.Services = []tapvs.Service{svc}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lb, err := tapvs.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("tapvstest: %v", err)
	}
	t.Cleanup(func() { lb.Close() }) // before the namespaces go: cleanups run last first
	l.LB = lb
	if err := top.AddressTAPs(); err != nil {
		t.Fatalf("tapvstest: %v", err)
	}
	if !o.NoBackends {
		for _, rs := range l.RealServers {
			b, err := lab.StartBackend(rs.Netns, rs.Name, rs.Addr)
			if err != nil {
				t.Fatalf("tapvstest: %s: %v", rs.Name, err)
			}
			rs.b = b
			t.Cleanup(b.Close)
		}
	}
	if err := lb.WaitReady(ctx); err != nil {
		t.Fatalf("tapvstest: %v", err)
	}
	return l
}

// addRS makes real server i's namespace ns with addr, on the router's
// br-a beside the first one.
func addRS(router, ns string, i int, addr netip.Addr) error {
	veth := fmt.Sprintf("to-rs%d", i+1)
	steps := [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", router, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", router, "link", "set", veth, "master", "br-a", "up"},
		{"-n", ns, "addr", "add", netip.PrefixFrom(addr, 24).String(), "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", "default", "via", "10.20.1.1"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// Run runs fn on a thread inside namespace ns (l.Client, l.Router, a real
// server's Netns). Sockets fn opens stay in that namespace.
func (l *Lab) Run(ns string, fn func() error) error { return lab.InNetns(ns, fn) }

// Dial connects from the client's namespace.
func (l *Lab) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return lab.Dial(ctx, l.Client, network, addr)
}

// HTTPClient is an HTTP client in the client's namespace, one connection
// per request so that each is balanced on its own.
func (l *Lab) HTTPClient() *http.Client { return lab.HTTPClient(l.Client, 10*time.Second) }

// URL is the default service's: "http://172.25.254.100:80".
func (l *Lab) URL() string { return "http://" + netip.AddrPortFrom(l.VIP, HTTPPort).String() }

// ip runs ip(8), its error carrying its output.
func ip(args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// need skips (or, when the environment says a skip is a failure, fails) a
// test that cannot build a lab here.
func need(t testing.TB) {
	t.Helper()
	var why []string
	if os.Geteuid() != 0 {
		why = append(why, "not root (run as root, or under unshare -Urnm)")
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		why = append(why, fmt.Sprintf("/dev/net/tun: %v", err))
	} else {
		f.Close()
	}
	if _, err := exec.LookPath("ip"); err != nil {
		why = append(why, "no ip(8) (iproute2)")
	}
	if len(why) == 0 {
		return
	}
	msg := "tapvstest cannot build a lab here: " + strings.Join(why, ", ")
	if os.Getenv("CI") == "true" || os.Getenv("TAPVS_REQUIRE") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg + " (with CI=true or TAPVS_REQUIRE=1 this fails)")
}

var netnsOnce struct {
	sync.Once
	err error
}

// netnsDir makes sure ip netns add can work: it makes files in /run/netns.
// Under unshare -Urnm, /run (and a /run/netns there already) is the real
// root's and not writable; since the mount namespace is this process's
// own, a tmpfs over /run is seen by no one else and goes with the process.
func netnsDir() error {
	netnsOnce.Do(func() {
		err := writable("/run/netns")
		if err == nil || !inUserNS() {
			netnsOnce.err = err
			return
		}
		if merr := unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); merr != nil {
			netnsOnce.err = fmt.Errorf("%w; and a tmpfs over /run: %w (run under unshare -Urnm, with a mount namespace of its own)", err, merr)
			return
		}
		netnsOnce.err = writable("/run/netns")
	})
	return netnsOnce.err
}

// writable makes dir if it is missing and says whether files can be made in it.
func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return nil
}

// inUserNS reports whether this process is in a user namespace other than
// the initial one, whose uid map covers every uid.
func inUserNS() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}
