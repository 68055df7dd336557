package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/bgp"
	"github.com/tapvs/tapvs/nat"
)

// typed is a configuration a program builds (as pkg/tapvs does): Default
// with both sides' names and addresses, the server side's route.
func typed() *Config {
	c := Default()
	c.Client.Name, c.Client.Address = "tc", netip.MustParsePrefix("172.25.254.254/24")
	c.Server.Name, c.Server.Address = "ts", netip.MustParsePrefix("172.25.84.4/24")
	c.Server.Routes = []Route{{Dst: netip.MustParsePrefix("10.20.0.0/16"), Via: netip.MustParseAddr("172.25.84.1")}}
	return c
}

// The file's defaults are Default's: a file that gives the same sides
// reads as the same Config a program builds and validates, to the last
// field (the SYN proxy's MSS derived from the server side's MTU included).
func TestDefaultIsTheFiles(t *testing.T) {
	file, err := ParseNoServices(valid[:strings.Index(valid, "services:")]) // valid's sides, as typed's
	if err != nil {
		t.Fatal(err)
	}
	c := typed()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(file, c) {
		t.Fatalf("the file's:\n%+v\na program's:\n%+v", file, c)
	}
	if c.Synproxy.MSS != 1460 {
		t.Fatalf("MSS %d, want the server side's MTU - 40", c.Synproxy.MSS)
	}
	c = typed()
	c.Server.MTU = 9000
	if err := c.Validate(); err != nil || c.Synproxy.MSS != 8960 {
		t.Fatalf("MTU 9000: MSS %d, %v", c.Synproxy.MSS, err)
	}
}

// A program's values are refused by the file's rules, each refusal
// naming the file's key, and the rules between values hold as well.
func TestValidateNamesTheField(t *testing.T) {
	peer := bgp.Peer{Address: netip.MustParseAddr("10.1.1.1"), ASN: 65000, Port: DefaultBGPPort}
	withBGP := func(f func(*bgp.Config)) func(*Config) {
		return func(c *Config) {
			b := DefaultBGP()
			b.ASN, b.RouterID, b.Peers = 65001, netip.MustParseAddr("10.1.1.2"), []bgp.Peer{peer}
			f(&b)
			c.BGP = &b
		}
	}
	for name, tc := range map[string]struct {
		change func(*Config)
		want   string
	}{
		"mtu":          {func(c *Config) { c.Client.MTU = 100 }, "interfaces.client.mtu: 100 is not an MTU"},
		"no address":   {func(c *Config) { c.Server.Address = netip.Prefix{} }, "interfaces.server.address: is not set"},
		"v6 address":   {func(c *Config) { c.Client.Address = netip.MustParsePrefix("fd00::4/64") }, "interfaces.client.address: fd00::4/64 is IPv6"},
		"tap name":     {func(c *Config) { c.Client.Name = "a/b" }, `interfaces.client.name: "a/b" is not an interface name`},
		"same names":   {func(c *Config) { c.Server.Name = "tc" }, `interfaces.server.name: "tc" is the client side's name too`},
		"via":          {func(c *Config) { c.Server.Routes[0].Via = netip.MustParseAddr("10.1.1.1") }, "interfaces.server.routes[0].via: 10.1.1.1 is not on-link"},
		"v6 route":     {func(c *Config) { c.Server.Routes[0].Dst = netip.MustParsePrefix("fd00:20::/48") }, "interfaces.server.routes[0].dst: fd00:20::/48 is IPv6 and this side has no address6"},
		"address6":     {func(c *Config) { c.Client.Address6 = netip.MustParsePrefix("fe80::4/64") }, "interfaces.client.address6: fe80::4/64 is link-local"},
		"ports":        {func(c *Config) { c.PortMin, c.PortMax = 6000, 5000 }, "limits.local_port_min: 6000 is above local_port_max 5000"},
		"port 0":       {func(c *Config) { c.PortMin = 0 }, "limits.local_port_min: 0 is not a port"},
		"max conns":    {func(c *Config) { c.MaxConns = 0 }, "limits.max_connections: 0 is out of range"},
		"sweep":        {func(c *Config) { c.Sweep = time.Hour }, `sweep_interval: "1h0m0s" is not a duration from 10ms to 1m`},
		"busy poll":    {func(c *Config) { c.BusyPoll = 2 * time.Second }, `interfaces.busy_poll: "2s" is not a duration from 0 to 1s`},
		"log":          {func(c *Config) { c.LogLevel = "" }, `log.level: "" is not one of`},
		"socket":       {func(c *Config) { c.ControlSocket = "tapvs.sock" }, `control.socket: "tapvs.sock" is not an absolute path`},
		"wscale":       {func(c *Config) { c.Synproxy.WScale = 15 }, "synproxy.wscale: 15 is not a window scale"},
		"mss":          {func(c *Config) { c.Server.MTU = 65535; c.Synproxy.MSS = 65535 }, "synproxy.mss: 65535 is not an MSS"},
		"bgp no peer":  {withBGP(func(b *bgp.Config) { b.Peers = nil }), "bgp.peers: no peer"},
		"bgp asn":      {withBGP(func(b *bgp.Config) { b.ASN = 23456 }), "bgp.asn: 23456 is not an AS number"},
		"bgp router":   {withBGP(func(b *bgp.Config) { b.RouterID = netip.IPv6Loopback() }), `bgp.router_id: "::1" is not an IPv4 address`},
		"bgp port":     {withBGP(func(b *bgp.Config) { b.Peers[0].Port = 0 }), "bgp.peers[0].port: 0 is not a port"},
		"bgp hold":     {withBGP(func(b *bgp.Config) { b.HoldTime = 1500 * time.Millisecond }), `bgp.hold_time: "1.5s" is not whole seconds`},
		"bgp keep":     {withBGP(func(b *bgp.Config) { b.Keepalive = 4 * time.Second }), "bgp.keepalive: 4s is more than a third of hold_time 9s"},
		"bgp local":    {withBGP(func(b *bgp.Config) { b.Peers[0].LocalAddress = netip.MustParseAddr("fd00::1") }), "bgp.peers[0].local_address: fd00::1 is not of the peer's family"},
		"bgp dup peer": {withBGP(func(b *bgp.Config) { b.Peers = append(b.Peers, peer) }), "bgp.peers[1].address: 10.1.1.1 is peers[0]'s address too"},
	} {
		c := typed()
		tc.change(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", name, err, tc.want)
		}
	}
	// The rules between values are the balancer's (the dry run): a VIP
	// that is tapvs's own address.
	c := typed()
	c.Services = []Service{{VIP: c.Client.Address.Addr(), Port: 80, Protocol: nat.TCP, Scheduler: "rr", Timeouts: c.Timeouts,
		LocalAddresses: []netip.Addr{netip.MustParseAddr("172.25.84.10")}}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "services[0]") {
		t.Errorf("a VIP that is tapvs's own address: %v", err)
	}
	if err := typed().Validate(); err != nil {
		t.Fatalf("the unchanged configuration: %v", err)
	}
}
