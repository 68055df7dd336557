// Package config reads tapvs's configuration (YAML through viper, with TAPVS_
// environment overrides) and validates all of it before anything starts:
// an error names the field and the reason.
//
// A Config is two parts: RestartOnly, what only a restart changes (the
// interfaces, the limits, the SYN proxy, logging, the control socket...),
// and Reloadable, what a reload applies to a running tapvs (the services,
// the default timeouts, the bgp: section). Its defaults are Default's, and
// Validate checks any Config, a file's (Load, Parse) or one a program
// builds (pkg/tapvs), by one set of rules. Each section has its file:
// interfaces.go, globals.go (limits, logging, control, metrics, SYN proxy,
// fragments),
// services.go, health.go, timeouts.go, defence.go, bgp.go (bgp: and
// handoff:); load.go reads the file; apply.go makes a balancer what a
// Config says.
package config

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tapvs/tapvs/bgp"
	"github.com/tapvs/tapvs/frag"
	"github.com/tapvs/tapvs/nat"
)

// Config is a validated configuration. Its two parts are embedded, so
// that their fields read as its own (c.MaxConns, c.Services).
type Config struct {
	RestartOnly
	Reloadable
}

// Reloadable is what a reload changes under a running data path.
type Reloadable struct {
	Services []Service
	// Marks are the selectors match services name by number (marks:,
	// match.go); nil: none.
	Marks map[uint32]nat.Match
	// Faults are the faults: section (faults.go, nat/fault.go), set whole
	// at start and by every reload; nil: none.
	Faults   []nat.Fault
	Timeouts nat.Timeouts // the default timeouts, the services' base
	// BGP, if set, announces the VIPs that can serve and the LIPs to the
	// routers it names (package bgp); nil announces nothing. A reload
	// reconfigures the speaker, but for its ASN and router ID.
	BGP *bgp.Config
}

// Default is the configuration before a file or a program says anything:
// every default, no service, the sides without addresses. The file's
// defaults are these (setDefaults); pkg/tapvs starts from it.
func Default() *Config {
	sp := nat.DefaultSynproxy()
	sp.MSS = 0 // the server side's MTU - 40 (Validate)
	return &Config{
		RestartOnly: RestartOnly{
			Client:        Interface{Name: "tap-c", MTU: 1500, Queues: 1},
			Server:        Interface{Name: "tap-s", MTU: 1500, Queues: 1},
			Offload:       true,
			IO:            "auto",
			MaxConns:      1 << 20,
			PortMin:       5000,
			PortMax:       65535,
			Synproxy:      sp,
			Sweep:         time.Second,
			Fragments:     Fragments{Reassembly: true, HighThresh: frag.DefaultMaxBytes, Time: frag.DefaultTimeout},
			LogLevel:      "info",
			LogFormat:     "text",
			ControlSocket: "/run/tapvs/tapvs.sock",
		},
		Reloadable: Reloadable{Timeouts: nat.DefaultTimeouts()},
	}
}

// Validate fills in what derives from other values (the SYN proxy's MSS,
// from the server side's MTU; routes' destinations, masked) and checks c as a file's values are
// checked: each value, the rules between them, and the balancer's rules
// for the services (a dry run against an empty balancer). Each refusal
// names its field as the file writes it ("interfaces.client.mtu: ...").
// Load and Parse run the same checks on what they read; pkg/tapvs runs
// Validate on the Config it builds.
func (c *Config) Validate() error {
	var e errs
	c.check(&e)
	if err := e.err(); err != nil {
		return err
	}
	return dryRun(c)
}

// check is Validate without the dry run, adding to e.
func (c *Config) check(e *errs) {
	c.Client.check(e, "interfaces.client")
	c.Server.check(e, "interfaces.server")
	if len(c.Server.Publish) > 0 {
		e.add("interfaces.server.publish", "is the client side's: clients reach the VIPs there")
	}
	if c.Client.Name == c.Server.Name && c.Client.Name != "" {
		e.add("interfaces.server.name", "%q is the client side's name too", c.Server.Name)
	}
	c.checkGlobals(e)
	checkBGP(e, c.BGP)
	lips, vips := map[netip.Addr]string{}, map[netip.Addr]string{}
	for i, s := range c.Services {
		vips[s.VIP.Unmap()] = fmt.Sprintf("services[%d]", i)
		for _, l := range s.LocalAddresses {
			lips[l.Unmap()] = fmt.Sprintf("services[%d]", i)
		}
	}
	c.checkMasquerade4(e)
	checkBackups(e, c.BGP, lips, vips, [2]netip.Prefix{c.Server.Address, c.Server.Address6})
	checkHandoff(e, c.Handoff)
	checkSync(e, c.Sync)
	if c.Handoff != nil && c.Client.Queues+c.Server.Queues >= nat.MaxQueues {
		e.add("handoff", "its receiver is a reader of its own: the two sides' queues (%d) must leave one of %d", c.Client.Queues+c.Server.Queues, nat.MaxQueues)
	}
	if c.HasHealthChecks() && c.PortMin != 0 && c.PortMax != 0 && c.PortMin <= c.PortMax {
		if lo, _ := c.OwnPorts(); lo == 0 {
			e.add("limits.local_port_min", "health checks need ports for tapvs's own connections outside %d-%d: start the range at 2048 or later, or end it before 64512", c.PortMin, c.PortMax)
		}
	}
}

// dryRun applies the rules between values (no address both a VIP and a
// LIP, none of them tapvs's own, no real server twice, a LIP in its side's
// prefix), which are the balancer's: the configuration is applied to an
// empty one, and every refusal named.
func dryRun(c *Config) error {
	nc := nat.Config{Timeouts: c.Timeouts, ClientNet: c.Client.Address, ServerNet: c.Server.Address, ClientNet6: c.Client.Address6, ServerNet6: c.Server.Address6}
	return nat.DryRun(nc, func(tx *nat.Tx) error { return c.Apply(tx, nil) })
}

// HasHealthChecks reports whether any real server is checked.
func (c *Config) HasHealthChecks() bool {
	for _, s := range c.Services {
		for _, rs := range s.RealServers {
			if rs.Health != nil {
				return true
			}
		}
	}
	return false
}

// OwnPorts is the port range for tapvs's own connections from LIPs (health
// checks): outside the balancer's local port range, so a check's replies are
// never taken for a balanced connection's. lo is 0 if there is no room.
func (c *Config) OwnPorts() (lo, hi uint16) {
	switch {
	case c.PortMin >= 2048:
		return 1024, c.PortMin - 1
	case c.PortMax <= 64511:
		return c.PortMax + 1, 65535
	}
	return 0, 0
}

// checkMasquerade4 refuses a server side that masquerades IPv6 only
// (peer_address6 without peer_address) while a service has an IPv4 LIP:
// the kernel end has no IPv4 address, so the LIP's packets have no route
// there and would leave unmasqueraded, with no way back. (A side's IPv4
// routes are refused by Interface.check; this is the refusal's one line
// if they were not.)
func (c *Config) checkMasquerade4(e *errs) {
	const f = "interfaces.server"
	s := &c.Server
	hasPeer := s.PeerAddress.IsValid() || e.refused(f+".peer_address")
	hasPeer6 := s.PeerAddress6.IsValid() || e.refused(f+".peer_address6")
	if !s.Masquerade || hasPeer || !hasPeer6 {
		return
	}
	for i, svc := range c.Services {
		for _, l := range svc.LocalAddresses {
			if l.Is4() {
				e.add(f+".masquerade", "services[%d]'s local address %s is IPv4 but this side has no peer_address: the kernel end has no IPv4 address to route it by, and it would leave unmasqueraded; give peer_address", i, l)
				return
			}
		}
	}
}
