// Package tapvstest builds, for one test, a network with tapvs in it — a
// client, tapvs between two TAPs, a router, and real servers on one or
// more subnets behind it, each in a network namespace of its own — and
// removes all of it when the test ends, as net/http/httptest serves HTTP
// for a test.
//
// Labs share nothing, so tests that call t.Parallel each build their own:
// the namespaces and TAPs are named after Lab.Name, unique in the process,
// and everything else (addresses, bridges, sysctls) is per namespace. A lab
// takes about 0.1 s to build and 0.1 s to remove on two cores; ten built
// at once take about 1 s in all, against 2.4 s one after another (the
// kernel moves one network device between namespaces at a time, about 20
// ms each, and tapvs moves two a lab).
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

// Options shape a lab. The zero value is two real servers, each on a
// subnet of its own, running the built-in servers behind one TCP service
// on the VIP's port 80.
type Options struct {
	// RealServers is how many real servers; 0 is 2.
	RealServers int
	// Subnets is how many subnets the real servers are spread over, each a
	// bridge (a VLAN) of its own behind the router, 10.20.1.0/24,
	// 10.20.2.0/24, ...: rs1 on the first, rs2 on the second, and so on
	// round. 0 is the layout from before this option: rs1 on the first,
	// rs2 on the second, every other on the first.
	Subnets int
	// UDP loads, beside the TCP service, a UDP one (Lab.UDPService) on the
	// VIP's EchoPort over every real server's EchoPort, where the built-in
	// UDP server answers who it is. Not with NoService.
	UDP bool
	// Clients is how many IPv4 addresses the client has, 172.25.254.1
	// and on (Lab.ClientAddrs); 0 is 1. A Dialer with LocalAddr set dials from
	// one of them.
	Clients int
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
	// EchoPort echoes UDP datagrams, each answered with
	// "<name> saw <source address:port>: " and the datagram.
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
	// UDPService is, with Options.UDP, UDP VIP:EchoPort over every real
	// server's EchoPort.
	UDPService tapvs.ServiceKey
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
	// ClientAddrs are the client's addresses (Options.Clients), the first
	// the one it connects from unless told otherwise.
	ClientAddrs []netip.Addr
	RealServers []*RealServer
	// Name is what the lab's namespaces and TAPs are named after,
	// different for every lab of this process and, unless 2^24 random
	// names meet, of every other on the host.
	Name string
	// SetupTime is how long NewLab took.
	SetupTime time.Duration

	t testing.TB
}

// RealServer is one real server: a namespace with one address.
type RealServer struct {
	Name  string // rs1, rs2, ...
	Netns string
	Addr  netip.Addr
	// Addr6 is its IPv6 address, fd00:20:<subnet>::<host> beside Addr's
	// 10.20.<subnet>.<host> (invalid on a kernel without IPv6).
	Addr6 netip.Addr
	// Subnet is the subnet it is on, from 0: the router's bridge
	// lab.SubnetBridge(Subnet), 10.20.<Subnet+1>.0/24.
	Subnet int
	b      *lab.Backend
	t      testing.TB
}

// Requests is how many HTTP requests its built-in server has answered.
func (rs *RealServer) Requests() int64 {
	if rs.b == nil {
		return 0
	}
	return rs.b.Requests.Load()
}

// Echoes is how many UDP datagrams its built-in server has answered on
// EchoPort.
func (rs *RealServer) Echoes() int64 {
	if rs.b == nil {
		return 0
	}
	return rs.b.Echoes.Load()
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

// place is real server i's subnet and host number there: round the
// subnets, or (subnets 0) rs2 alone on the second and the rest on the
// first, hosts numbered from 2 (the router is 1).
func place(i, subnets int) (subnet, host int) {
	if subnets == 0 {
		if i == 1 {
			return 1, 2
		}
		return 0, max(i+1, 2)
	}
	return i % subnets, 2 + i/subnets
}

// MaxRealServers bounds Options.RealServers.
const MaxRealServers = 253

// MaxClients bounds Options.Clients: 172.25.254.1 to .99, below the VIP.
const MaxClients = 99

// labs are the names of this process's labs, so that no two are alike.
var labs struct {
	sync.Mutex
	names map[string]bool
}

// newName is a lab name no lab of this process has had and, as far as
// /run/netns tells, no other's has now: "tvl" and 6 random hex digits, so
// that the TAP names (the name and one letter) fit IFNAMSIZ.
func newName() string {
	labs.Lock()
	defer labs.Unlock()
	if labs.names == nil {
		labs.names = map[string]bool{}
	}
	for {
		var rnd [3]byte
		rand.Read(rnd[:])
		name := "tvl" + hex.EncodeToString(rnd[:])
		if labs.names[name] {
			continue
		}
		if _, err := os.Stat("/run/netns/" + name + "-client"); err == nil {
			continue // another process's lab
		}
		labs.names[name] = true
		return name
	}
}

// NewLab builds a lab for t and starts tapvs in it. Everything is removed
// when t ends, whatever its outcome. Labs of tests running at once (t.Parallel)
// share nothing: each has its own namespaces, TAPs and tapvs.
func NewLab(t testing.TB, o Options) *Lab {
	t.Helper()
	start := time.Now()
	need(t)
	n := o.RealServers
	if n == 0 {
		n = 2
	}
	if n < 1 || n > MaxRealServers {
		t.Fatalf("tapvstest: Options.RealServers: %d real servers: 1 to %d", n, MaxRealServers)
	}
	if o.Subnets < 0 || o.Subnets > min(n, lab.MaxSubnets) {
		t.Fatalf("tapvstest: Options.Subnets: %d subnets for %d real servers: 0 to %d (a subnet has one at least)", o.Subnets, n, min(n, lab.MaxSubnets))
	}
	clients := o.Clients
	if clients == 0 {
		clients = 1
	}
	if clients < 1 || clients > MaxClients {
		t.Fatalf("tapvstest: Options.Clients: %d client addresses: 1 to %d", clients, MaxClients)
	}
	if o.UDP && o.NoService {
		t.Fatalf("tapvstest: Options.UDP: a UDP service with NoService: the test adds its own")
	}
	if err := netnsDir(); err != nil {
		t.Fatalf("tapvstest: %v", err)
	}
	// The name keeps the namespaces and TAPs of labs up at the same time
	// (this process's and other test binaries') apart; nothing else is
	// shared: the addresses, the bridges and veths are per namespace, and
	// pkg/tapvs opens no control socket and no metrics port.
	var name string
	var top *lab.Topology
	for try := 0; ; try++ {
		name = newName()
		top = lab.NewTopology(name, name+"c", name+"s")
		err := top.BuildBare()
		if err == nil {
			break
		}
		// Another process took the name between newName's look and
		// here: BuildBare removed what it made, and another name will do.
		if !strings.Contains(err.Error(), "File exists") || try == 2 {
			t.Fatalf("tapvstest: %v", err)
		}
	}
	t.Cleanup(func() {
		if err := top.Destroy(); err != nil {
			t.Errorf("tapvstest: teardown: %v", err)
		}
	})
	l := &Lab{VIP: lab.VIP, LocalAddrs: []netip.Addr{lab.LIP1, lab.LIP2}, Client: top.Client, Router: top.Router, Name: name, t: t}
	v6 := lab.HasIPv6()
	subnets := o.Subnets
	if subnets == 0 {
		subnets = min(n, 2)
	}
	for k := range subnets {
		if err := top.AddSubnet(k); err != nil {
			t.Fatalf("tapvstest: %v", err)
		}
	}
	for i := range n {
		k, h := place(i, o.Subnets)
		rs := &RealServer{Name: fmt.Sprintf("rs%d", i+1), Netns: fmt.Sprintf("%s-rs%d", name, i+1), Subnet: k, t: t}
		a, a6 := lab.SubnetAddr(k, h)
		rs.Addr = a
		if v6 {
			rs.Addr6 = a6
		}
		if err := top.AddRealServer(rs.Netns, k, fmt.Sprintf("to-rs%d", i+1), rs.Addr, rs.Addr6); err != nil {
			t.Fatalf("tapvstest: %v", err)
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
	if v6 {
		// The lab is dual-stack: tapvs gets its IPv6 addresses too.
		cfg.Client.Addr6, cfg.Server.Addr6 = lab.TapvsClient6, lab.TapvsServer6
		cfg.Server.Routes = append(cfg.Server.Routes, tapvs.Route{Dst: lab.RSNet6, Via: lab.RouterAddr6.Addr()})
		l.VIP6, l.LocalAddrs6 = lab.VIP6, []netip.Addr{lab.LIP1v6, lab.LIP2v6}
	}
	var services []tapvs.Service
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
		services = []tapvs.Service{svc}
		if o.UDP {
			l.UDPService = tapvs.ServiceKey{Protocol: tapvs.UDP, VIP: netip.AddrPortFrom(l.VIP, EchoPort)}
			usvc := tapvs.Service{ServiceKey: l.UDPService, Name: "echo", Scheduler: sched, LocalAddrs: l.LocalAddrs}
			for _, rs := range l.RealServers {
				usvc.RealServers = append(usvc.RealServers, tapvs.RealServer{Addr: netip.AddrPortFrom(rs.Addr, EchoPort)})
			}
			services = append(services, usvc)
		}
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
	l.ClientAddrs = []netip.Addr{lab.ClientAddr.Addr()}
	for c := 2; c <= clients; c++ {
		a := netip.AddrFrom4([4]byte{172, 25, 254, byte(c)})
		if err := ip("-n", top.Client, "addr", "add", netip.PrefixFrom(a, 24).String(), "dev", top.TapClient); err != nil {
			t.Fatalf("tapvstest: %v", err)
		}
		l.ClientAddrs = append(l.ClientAddrs, a)
	}
	// The services go in once the router has its address: a real server
	// known at Start has tapvs ask for the router's MAC before anything
	// can answer, and the neighbour table asks again only a second later.
	for _, svc := range services {
		if err := lb.AddService(svc); err != nil {
			t.Fatalf("tapvstest: %v", err)
		}
	}
	if !o.NoBackends {
		for _, rs := range l.RealServers {
			b, err := lab.StartBackendAt(rs.Netns, rs.Name, rs.Addr, rs.Addr6)
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
	l.SetupTime = time.Since(start)
	return l
}

// Run runs fn on a thread inside namespace ns (l.Client, l.Router, a real
// server's Netns). Sockets fn opens stay in that namespace.
func (l *Lab) Run(ns string, fn func() error) error { return lab.InNetns(ns, fn) }

// Dial connects from the client's namespace.
func (l *Lab) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return lab.Dial(ctx, l.Client, network, addr)
}

// Dialer opens sockets in namespace ns (l.Client, l.Router, a real
// server's Netns): for a test that drives the client itself, connection
// by connection and byte by byte, with its own deadlines.
func (l *Lab) Dialer(ns string) *Dialer { return &Dialer{Netns: ns} }

// Command is name run with args inside namespace ns (ip netns exec), for
// the tools a test would rather not write: curl, nc, ss.
func (l *Lab) Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Dialer opens sockets inside one namespace. Its DialContext fits
// http.Transport's and grpc's dialers; the sockets stay in the namespace
// and are the caller's to close.
type Dialer struct {
	Netns string
	// LocalAddr, if valid, is the source address (one of
	// Lab.ClientAddrs, for the client); the port is the kernel's choice.
	LocalAddr netip.Addr
	// Timeout bounds a connect (net.Dialer's); 0: the context's alone.
	Timeout time.Duration
}

// DialContext connects to addr over network ("tcp4", "udp4", "tcp6", ...).
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := lab.InNetns(d.Netns, func() (err error) {
		nd := net.Dialer{Timeout: d.Timeout}
		if d.LocalAddr.IsValid() {
			if nd.LocalAddr, err = localAddr(network, d.LocalAddr); err != nil {
				return err
			}
		}
		c, err = nd.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tapvstest: dial %s %s in %s: %w", network, addr, d.Netns, err)
	}
	return c, nil
}

// ListenPacket opens an unconnected packet socket on addr (":0" for any
// port; LocalAddr's if addr is "" and LocalAddr is set): a UDP client
// that sends to several addresses from one port, or reads what comes back
// from anywhere.
func (d *Dialer) ListenPacket(network, addr string) (net.PacketConn, error) {
	if addr == "" && d.LocalAddr.IsValid() {
		addr = netip.AddrPortFrom(d.LocalAddr, 0).String()
	}
	var c net.PacketConn
	err := lab.InNetns(d.Netns, func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tapvstest: listen %s %s in %s: %w", network, addr, d.Netns, err)
	}
	return c, nil
}

// Listen listens on addr inside the namespace.
func (d *Dialer) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := lab.InNetns(d.Netns, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tapvstest: listen %s %s in %s: %w", network, addr, d.Netns, err)
	}
	return ln, nil
}

// localAddr is a as the source address for network's sockets.
func localAddr(network string, a netip.Addr) (net.Addr, error) {
	ap := netip.AddrPortFrom(a, 0)
	switch network {
	case "tcp", "tcp4", "tcp6":
		return net.TCPAddrFromAddrPort(ap), nil
	case "udp", "udp4", "udp6":
		return net.UDPAddrFromAddrPort(ap), nil
	}
	return nil, fmt.Errorf("Dialer.LocalAddr with network %q: tcp or udp", network)
}

// Echo sends msg to the UDP service (Options.UDP) from the client, from a
// port of its own (a new connection through tapvs), and returns the name
// of the real server that answered and the answer's text after its
// "<name> saw <source>: " prefix.
func (l *Lab) Echo(ctx context.Context, msg string) (server, reply string, err error) {
	if !l.UDPService.VIP.IsValid() {
		return "", "", fmt.Errorf("tapvstest: Echo: the lab has no UDP service (Options.UDP)")
	}
	c, err := l.Dialer(l.Client).DialContext(ctx, "udp4", l.UDPService.VIP.String())
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(5 * time.Second)
	}
	c.SetDeadline(dl)
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", "", fmt.Errorf("tapvstest: Echo: %w", err)
	}
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return "", "", fmt.Errorf("tapvstest: Echo: %w", err)
	}
	server, rest, ok := strings.Cut(string(buf[:n]), " saw ")
	if !ok {
		return "", "", fmt.Errorf("tapvstest: Echo: answer %q", buf[:n])
	}
	_, reply, ok = strings.Cut(rest, ": ")
	if !ok {
		return "", "", fmt.Errorf("tapvstest: Echo: answer %q", buf[:n])
	}
	return server, reply, nil
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
