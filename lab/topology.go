package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// The lab's addresses. The shipped config.yaml describes tapvs in exactly this
// network; Config renders the same for another namespace prefix.
var (
	ClientAddr  = netip.MustParsePrefix("172.25.254.1/24")   // the client, on tap-c
	TapvsClient = netip.MustParsePrefix("172.25.254.254/24") // tapvs's client side
	VIP         = netip.MustParseAddr("172.25.254.100")
	VIP46       = netip.MustParseAddr("172.25.254.46")    // a VIP for NAT46 (IPv4 clients, IPv6 real servers)
	RouterAddr  = netip.MustParsePrefix("172.25.84.1/24") // the router, on tap-s
	TapvsServer = netip.MustParsePrefix("172.25.84.4/24") // tapvs's server side
	LIP1        = netip.MustParseAddr("172.25.84.10")
	LIP2        = netip.MustParseAddr("172.25.84.11")
	RSNet       = netip.MustParsePrefix("10.20.0.0/16")
	RS1         = netip.MustParseAddr("10.20.1.2") // VLAN A, behind the router
	RS2         = netip.MustParseAddr("10.20.2.2") // VLAN B, behind the router
	rs1GW       = netip.MustParsePrefix("10.20.1.1/24")
	rs2GW       = netip.MustParsePrefix("10.20.2.1/24")
	// A plain routed path from the client to the servers that bypasses
	// tapvs: the kernel baseline for throughput.
	directClient = netip.MustParsePrefix("10.99.0.2/30")
	directRouter = netip.MustParsePrefix("10.99.0.1/30")
)

// The lab's IPv6 addresses, beside the IPv4 ones: every namespace is
// dual-stack. The client side is fd00:25:254::/64, the server side
// fd00:25:84::/64, and the real servers sit on fd00:20:1::/64 and
// fd00:20:2::/64 behind the router, as 10.20.1.0/24 and 10.20.2.0/24 do.
var (
	ClientAddr6  = netip.MustParsePrefix("fd00:25:254::1/64")  // the client, on tap-c
	TapvsClient6 = netip.MustParsePrefix("fd00:25:254::fe/64") // tapvs's client side (address6)
	VIP6         = netip.MustParseAddr("fd00:25:254::100")
	VIP64        = netip.MustParseAddr("fd00:25:254::64")    // a VIP for NAT64 (IPv6 clients, IPv4 real servers)
	RouterAddr6  = netip.MustParsePrefix("fd00:25:84::1/64") // the router, on tap-s
	TapvsServer6 = netip.MustParsePrefix("fd00:25:84::4/64") // tapvs's server side (address6)
	LIP1v6       = netip.MustParseAddr("fd00:25:84::10")
	LIP2v6       = netip.MustParseAddr("fd00:25:84::11")
	RSNet6       = netip.MustParsePrefix("fd00:20::/32")
	RS1v6        = netip.MustParseAddr("fd00:20:1::2") // VLAN A, beside RS1
	RS2v6        = netip.MustParseAddr("fd00:20:2::2") // VLAN B, beside RS2
	rs1GW6       = netip.MustParsePrefix("fd00:20:1::1/64")
	rs2GW6       = netip.MustParsePrefix("fd00:20:2::1/64")
	// The direct, kernel-routed path for IPv6 as well.
	directClient6 = netip.MustParsePrefix("fd00:99::2/64")
	directRouter6 = netip.MustParsePrefix("fd00:99::1/64")
)

// HasIPv6 reports whether this host's kernel has IPv6 (it may be disabled
// at boot: ipv6.disable=1). Without it the lab is IPv4 only: Build,
// AddressTAPs and StartBackend leave out everything IPv6.
func HasIPv6() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

// RS6 returns the IPv6 address of the real server whose IPv4 address is
// rs (RS1 or RS2), or the zero Addr for any other address.
func RS6(rs netip.Addr) netip.Addr {
	switch rs {
	case RS1:
		return RS1v6
	case RS2:
		return RS2v6
	}
	return netip.Addr{}
}

// Ports of the built-in servers on each real server.
const (
	HTTPPort     = 80
	BulkPort     = 9000
	EchoPort     = 9001
	SynproxyPort = 8080 // config.yaml's web-synproxy: the HTTP servers behind SYNPROXY
	// The same servers behind a PROXY protocol header (v1 or v2), which
	// they require: what each answers or echoes names the client the header
	// told them of next to the LIP the connection came from.
	ProxyHTTPPort = 8081
	ProxyBulkPort = 9002
	ProxyEchoPort = 9003
)

// Topology names the namespaces and TAPs of one lab.
type Topology struct {
	Prefix               string
	Client, Router       string // namespaces
	RS                   [2]string
	TapClient, TapServer string // TAP names
	Queues               int    // TAP queues per side in Config; 0 means 1
	TxQLen               int    // the TAPs' txqueuelen in Config; 0: the kernel's
	Socket               string // control socket in Config; "" turns the control API off
	NoOffload            bool   // plain TAPs in Config (one frame per system call)
	// IPv6 has Config give tapvs its IPv6 addresses too (address6 on each
	// side) and the route to RSNet6. The namespaces are dual-stack either
	// way; this is only what tapvs is told.
	IPv6  bool
	built []string
}

// NewTopology names a lab's parts after prefix. TAP names are created in the
// caller's namespace before they move, so they carry the prefix too unless
// they are the lab's own tap-c and tap-s.
func NewTopology(prefix string, tapClient, tapServer string) *Topology {
	return &Topology{
		Prefix: prefix, Client: prefix + "-client", Router: prefix + "-router",
		RS:        [2]string{prefix + "-rs1", prefix + "-rs2"},
		TapClient: tapClient, TapServer: tapServer,
	}
}

// Namespaces lists every namespace of the lab.
func (t *Topology) Namespaces() []string {
	return []string{t.Client, t.Router, t.RS[0], t.RS[1]}
}

// Build creates the namespaces and everything in them but the TAPs, which
// tapvs creates and moves in itself (see AddressTAPs): the client, the
// router, and rs1 and rs2 on two subnets behind it (SubnetBridge(0) and
// SubnetBridge(1), br-a and br-b).
func (t *Topology) Build() error { return t.build(true) }

// BuildBare is Build without the real servers: the client, the router and
// the direct path between them, and no subnet behind the router.
// AddSubnet and AddRealServer add them; t.RS is not used.
func (t *Topology) BuildBare() error { return t.build(false) }

func (t *Topology) build(servers bool) (err error) {
	defer func() {
		if err != nil {
			t.Destroy()
		}
	}()
	for _, ns := range []string{t.Client, t.Router} {
		if err := t.addNetns(ns); err != nil {
			return err
		}
	}
	v6 := HasIPv6()
	if err := sysctl(t.Router, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	if v6 {
		if err := sysctl(t.Router, "net.ipv6.conf.all.forwarding", "1"); err != nil {
			return err
		}
	}
	steps := [][]string{
		// The direct, kernel-routed path for the baseline.
		{"-n", t.Client, "link", "add", "direct", "type", "veth", "peer", "name", "direct", "netns", t.Router},
		{"-n", t.Client, "addr", "add", directClient.String(), "dev", "direct"},
		{"-n", t.Router, "addr", "add", directRouter.String(), "dev", "direct"},
		{"-n", t.Client, "link", "set", "direct", "up"},
		{"-n", t.Router, "link", "set", "direct", "up"},
		{"-n", t.Client, "route", "add", RSNet.String(), "via", directRouter.Addr().String()},
	}
	steps6 := [][]string{
		{"-n", t.Client, "addr", "add", directClient6.String(), "dev", "direct", "nodad"},
		{"-n", t.Router, "addr", "add", directRouter6.String(), "dev", "direct", "nodad"},
		{"-n", t.Client, "-6", "route", "add", RSNet6.String(), "via", directRouter6.Addr().String()},
	}
	if v6 {
		steps = append(steps, steps6...)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	if !servers {
		return nil
	}
	// Each server subnet is its own bridge (VLAN) on the router.
	for k := range 2 {
		if err := t.AddSubnet(k); err != nil {
			return err
		}
	}
	for i, a := range []netip.Addr{RS1, RS2} {
		a6 := netip.Addr{}
		if v6 {
			a6 = RS6(a)
		}
		if err := t.AddRealServer(t.RS[i], i, fmt.Sprintf("to-rs%d", i+1), a, a6); err != nil {
			return err
		}
	}
	return nil
}

// addNetns makes namespace ns, noted for Destroy, with its loopback up.
// IPv6 addresses are usable at once (no duplicate address detection) and
// nothing configures itself from router advertisements: the defaults are
// set before any link is made, so every link has them.
func (t *Topology) addNetns(ns string) error {
	if err := ip("netns", "add", ns); err != nil {
		return err
	}
	t.built = append(t.built, ns)
	if err := ip("-n", ns, "link", "set", "lo", "up"); err != nil {
		return err
	}
	if !HasIPv6() {
		return nil
	}
	for _, k := range []string{"accept_dad", "accept_ra", "autoconf"} {
		for _, c := range []string{"all", "default"} {
			if err := sysctl(ns, "net.ipv6.conf."+c+"."+k, "0"); err != nil {
				return err
			}
		}
	}
	return nil
}

// MaxSubnets bounds the real servers' subnets: 10.20.1.0/24 to
// 10.20.254.0/24 in RSNet.
const MaxSubnets = 254

// SubnetBridge names the router's bridge of subnet k (from 0): br-a to
// br-z, then br-27, br-28, ...
func SubnetBridge(k int) string {
	if k < 26 {
		return "br-" + string(rune('a'+k))
	}
	return fmt.Sprintf("br-%d", k+1)
}

// SubnetGW is the router's address on subnet k (from 0), 10.20.<k+1>.1/24
// and fd00:20:<k+1>::1/64 (k+1 in hex): subnet 0 is rs1's, 1 is rs2's.
func SubnetGW(k int) (v4, v6 netip.Prefix) {
	a, a6 := SubnetAddr(k, 1)
	return netip.PrefixFrom(a, 24), netip.PrefixFrom(a6, 64)
}

// SubnetAddr is host h's addresses on subnet k (from 0): 10.20.<k+1>.<h>
// and fd00:20:<k+1>::<h>. SubnetAddr(0, 2) is RS1 and RS1v6, SubnetAddr(1,
// 2) RS2 and RS2v6.
func SubnetAddr(k, h int) (v4, v6 netip.Addr) {
	v4 = netip.AddrFrom4([4]byte{10, 20, byte(k + 1), byte(h)})
	v6 = netip.AddrFrom16([16]byte{0: 0xfd, 3: 0x20, 5: byte(k + 1), 15: byte(h)})
	return v4, v6
}

// AddSubnet adds subnet k (from 0) behind the router: a bridge
// (SubnetBridge(k)) with the router's SubnetGW(k) addresses on it.
func (t *Topology) AddSubnet(k int) error {
	if k < 0 || k >= MaxSubnets {
		return fmt.Errorf("subnet %d: 0 to %d", k, MaxSubnets-1)
	}
	br := SubnetBridge(k)
	gw, gw6 := SubnetGW(k)
	steps := [][]string{
		{"-n", t.Router, "link", "add", br, "type", "bridge"},
		{"-n", t.Router, "addr", "add", gw.String(), "dev", br},
	}
	if HasIPv6() {
		steps = append(steps, []string{"-n", t.Router, "addr", "add", gw6.String(), "dev", br, "nodad"})
	}
	steps = append(steps, []string{"-n", t.Router, "link", "set", br, "up"})
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// AddRealServer makes namespace ns (removed by Destroy) a real server on
// subnet k, which AddSubnet made: a veth from the router's bridge (the
// router's end named veth) to its eth0 with addr, and addr6 too if it is
// valid, and default routes through the router.
func (t *Topology) AddRealServer(ns string, k int, veth string, addr, addr6 netip.Addr) error {
	if err := t.addNetns(ns); err != nil {
		return err
	}
	gw, gw6 := SubnetGW(k)
	steps := [][]string{
		{"-n", t.Router, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", t.Router, "link", "set", veth, "master", SubnetBridge(k), "up"},
		{"-n", ns, "addr", "add", netip.PrefixFrom(addr, 24).String(), "dev", "eth0"},
	}
	if addr6.IsValid() {
		steps = append(steps, []string{"-n", ns, "addr", "add", netip.PrefixFrom(addr6, 64).String(), "dev", "eth0", "nodad"})
	}
	steps = append(steps,
		[]string{"-n", ns, "link", "set", "eth0", "up"},
		[]string{"-n", ns, "route", "add", "default", "via", gw.Addr().String()})
	if addr6.IsValid() {
		steps = append(steps, []string{"-n", ns, "-6", "route", "add", "default", "via", gw6.Addr().String()})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// AddressTAPs gives the kernel ends of the TAPs, once tapvs has moved them in,
// their addresses: the client's and the router's, IPv4 and IPv6.
func (t *Topology) AddressTAPs() error {
	steps := [][]string{
		{"-n", t.Client, "addr", "add", ClientAddr.String(), "dev", t.TapClient},
		{"-n", t.Router, "addr", "add", RouterAddr.String(), "dev", t.TapServer},
	}
	if HasIPv6() {
		steps = append(steps,
			[]string{"-n", t.Client, "addr", "add", ClientAddr6.String(), "dev", t.TapClient, "nodad"},
			[]string{"-n", t.Router, "addr", "add", RouterAddr6.String(), "dev", t.TapServer, "nodad"})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// Destroy removes every namespace Build made; what was inside goes with it.
func (t *Topology) Destroy() error {
	var errs []error
	for _, ns := range t.built {
		if err := ip("netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	t.built = nil
	return errors.Join(errs...)
}

func sysctl(ns, key, value string) error {
	return InNetns(ns, func() error {
		path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, ns, err)
		}
		return nil
	})
}

// Config renders tapvs's configuration for this topology. extra is appended
// YAML (more services, timeouts, limits) for tests.
func (t *Topology) Config(services string, extra string) string {
	q := max(t.Queues, 1)
	var c6, s6, r6 string
	if t.IPv6 {
		c6 = fmt.Sprintf("\n    address6: %s", TapvsClient6)
		s6 = fmt.Sprintf("\n    address6: %s", TapvsServer6)
		r6 = fmt.Sprintf("\n      - {dst: %s, via: %s}", RSNet6, RouterAddr6.Addr())
	}
	return fmt.Sprintf(`interfaces:
  offload: %t
  client:
    name: %s
    netns: %s
    address: %s%s
    queues: %d
    txqueuelen: %d
  server:
    name: %s
    netns: %s
    address: %s%s
    queues: %d
    txqueuelen: %d
    routes:
      - {dst: %s, via: %s}%s
services:
%s
sweep_interval: 100ms
control: {socket: %q}
%s`, !t.NoOffload, t.TapClient, t.Client, TapvsClient, c6, q, t.TxQLen, t.TapServer, t.Router, TapvsServer, s6, q, t.TxQLen, RSNet, RouterAddr.Addr(), r6, services, t.Socket, extra)
}
