// Package tapvs runs a tapvs load balancer inside the calling process, for
// other projects' tests and tools: start it from a Config value, change its
// services and real servers while it forwards, read its connections and
// counters, and close it.
//
// It changes what tapvsadm changes (services and their settings, real
// servers' weights and thresholds, local addresses, allow and deny lists,
// timeouts, counters, health checks, drain), through the control plane
// tapvsadm's requests go through, so a change is refused or applied as it
// would be there. A change is all or nothing, and a refusal names the field
// of the caller's value it is about:
//
//	tapvs: ServiceEdit.Scheduler: service tcp 172.25.254.100:80: "foo" is not a scheduler (one of [rr wrr ...])
//
// Its types are its own, not tapvs's internal ones, so that the internals
// can change without breaking the programs that import it. The network
// namespaces tapvs's two TAPs move into are the caller's to make (package
// tapvstest builds a whole lab for a test). Running tapvs needs
// CAP_NET_ADMIN over those namespaces and /dev/net/tun: root, or root in a
// user namespace (unshare -Urnm) that owns them.
package tapvs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/daemon"
	"github.com/tapvs/tapvs/nat"
)

// Protocol is a service's transport protocol.
type Protocol string

// The protocols tapvs balances.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

func (p Protocol) nat() (nat.Protocol, error) {
	switch p {
	case TCP, "":
		return nat.TCP, nil
	case UDP:
		return nat.UDP, nil
	}
	return 0, fmt.Errorf("protocol %q: tcp or udp", string(p))
}

func protocolOf(p nat.Protocol) Protocol {
	if p == nat.UDP {
		return UDP
	}
	return TCP
}

// Config is what Start runs.
type Config struct {
	// Client is the side the clients reach the VIPs on; Server the side
	// tapvs reaches the real servers on, from the local addresses.
	Client, Server Side
	Services       []Service
	// Marks are the selectors of the match services (Services with a
	// ServiceKey.Mark), by number.
	Marks []Mark
	// Faults are set once the services are in (LB.SetFaults): a test
	// that starts with a broken network.
	Faults []Fault
	// NoOffload opens plain TAPs (one frame per system call) instead of
	// asking the kernel for checksum and TSO offload.
	NoOffload bool
	// BGP, if not nil, has tapvs announce its VIPs and local addresses to
	// routers; LB.Drain withdraws the VIPs.
	BGP *BGP
	// Log receives tapvs's log; nil discards it.
	Log *slog.Logger
}

// Side is one of tapvs's two TAPs.
type Side struct {
	// TAP is the device's name (at most 15 bytes). tapvs creates it and
	// moves its kernel end into Netns; the address of that kernel end (the
	// client's, the router's) is the caller's to set, after Start.
	TAP   string
	Netns string // "" leaves the TAP in the caller's namespace
	// Addr is tapvs's own address on this side: the VIPs and local
	// addresses are answered for besides it.
	Addr netip.Prefix
	// Addr6 is tapvs's own IPv6 address on this side (optional): IPv6
	// VIPs (client side) and local addresses (server side) need it.
	Addr6  netip.Prefix
	Routes []Route // IPv4 and IPv6 routes alike
	MTU    int     // 0: 1500
}

// Route is a route out of one side: tapvs sends what is for Dst to Via
// (zero: Dst is on-link), as a route of the file's without via.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// ServiceKey names a service: protocol and VIP:port, or a match
// service's mark alone (tapvsadm -f).
type ServiceKey struct {
	Protocol Protocol // "" is TCP
	VIP      netip.AddrPort
	// Mark names a match service, whose selector is Config.Marks' with
	// that number; Protocol and VIP are then zero.
	Mark uint32
}

// MarkKey is the key of the match service on mark.
func MarkKey(mark uint32) ServiceKey { return ServiceKey{Mark: mark} }

// Service is a virtual service.
type Service struct {
	ServiceKey
	Name      string
	Scheduler string // rr, wrr, lc, wlc, sh, ...; "" is wlc
	// SchedFlags are the scheduler's flags as ipvsadm names them
	// (sh-port, sh-fallback; mh-port, mh-fallback); only sh and mh take any.
	SchedFlags []string
	// LocalAddrs are the source addresses tapvs opens the connections to
	// the real servers from (FULLNAT); at least one.
	LocalAddrs  []netip.Addr
	RealServers []RealServer
	// Synproxy has tapvs answer the clients' handshakes itself and open
	// the real server's connection only once a client finished its own
	// (TCP only).
	Synproxy   bool
	ClientAddr ClientAddr // "": none
	Timestamps Timestamps // "": translate
	// Persistence (-p), whole seconds, sends a client network's new
	// connections to the server its last one went to while it has one
	// open or for Persistence after; 0 is none. PersistenceMask is that
	// network's prefix length (-M; 24 for 255.255.255.0); 0 is the
	// client's address alone.
	Persistence     time.Duration
	PersistenceMask int
	// EstablishedTimeout is the ESTABLISHED (and UDP) timeout of the
	// service's connections (-V), whole seconds; 0 is Timeouts'.
	EstablishedTimeout time.Duration
	Limits             Limits
	// Allow, when not empty, are the only sources that may open
	// connections to the service; Deny's never may (IPv4 prefixes without
	// host bits).
	Allow, Deny []netip.Prefix
}

// RealServer is one server behind a service.
type RealServer struct {
	Addr   netip.AddrPort
	Weight int // 0 is 1
	// UThreshold and LThreshold are its connection thresholds (ipvsadm
	// -x and -y): at UThreshold connections it takes no new one until
	// below LThreshold (0: below 3/4 of UThreshold). 0 and 0: no limit.
	UThreshold, LThreshold uint32
}

// LB is a running tapvs.
type LB struct {
	d *daemon.Daemon
	// ctx ends when the LB is closed: the subscriptions end with it.
	ctx    context.Context
	cancel context.CancelFunc
}

// Start runs tapvs from cfg: it creates both TAPs, moves them into their
// namespaces and loads cfg's services. It returns once tapvs forwards; on
// error nothing of it is left. ctx bounds the start only.
func Start(ctx context.Context, cfg Config) (*LB, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, s := range []struct {
		name string
		side Side
	}{{"client", cfg.Client}, {"server", cfg.Server}} {
		if s.side.TAP == "" || !s.side.Addr.IsValid() {
			return nil, fmt.Errorf("tapvs: the %s side needs a TAP name and tapvs's address (Side.TAP, Side.Addr)", s.name)
		}
	}
	// The services are checked before any TAP is made.
	var cs []change
	for i, s := range cfg.Services {
		c, err := serviceChanges(s, fmt.Sprintf("Config.Services[%d]", i))
		if err != nil {
			return nil, err
		}
		cs = append(cs, c...)
	}
	c, err := cfg.config()
	if err != nil {
		return nil, fmt.Errorf("tapvs: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d, err := daemon.Start(c, log)
	if err != nil {
		return nil, fmt.Errorf("tapvs: start: %w", err)
	}
	lb := &LB{d: d}
	lb.ctx, lb.cancel = context.WithCancel(context.Background())
	// The services go in as one batch through the control plane, the way
	// they would at run time: one refused leaves tapvs not started.
	if len(cs) > 0 {
		if err := lb.apply(cs); err != nil {
			d.Close()
			return nil, err
		}
	}
	if len(cfg.Faults) > 0 {
		if err := lb.SetFaults(cfg.Faults); err != nil {
			d.Close()
			return nil, fmt.Errorf("%w (Config.Faults)", err)
		}
	}
	return lb, nil
}

// config is cfg as tapvs's configuration: config.Default with cfg's
// sides, offload and BGP, checked by config's Validate as a file's values
// are (each refusal names the file's key: "interfaces.client.mtu: ...").
// It has no services: Start loads them through the control plane, which
// says which one is refused and why.
func (cfg Config) config() (*config.Config, error) {
	c := config.Default()
	c.Client = cfg.Client.iface(c.Client)
	c.Server = cfg.Server.iface(c.Server)
	c.Offload = !cfg.NoOffload
	// No control socket: the caller holds the LB; a socket at the default
	// path would collide between tests running at once.
	c.ControlSocket = ""
	if cfg.BGP != nil {
		b := cfg.BGP.config()
		c.BGP = &b
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// After Validate, which reads the file's fields: these are the
	// caller's, named as such.
	m, err := cfg.marks()
	if err != nil {
		return nil, err
	}
	c.Marks = m
	return c, nil
}

// iface is s on def, the side's defaults.
func (s Side) iface(def config.Interface) config.Interface {
	i := def
	i.Name, i.Netns, i.Address, i.Address6 = s.TAP, s.Netns, s.Addr, s.Addr6
	if s.MTU != 0 {
		i.MTU = s.MTU
	}
	for _, r := range s.Routes {
		i.Routes = append(i.Routes, config.Route{Dst: r.Dst, Via: r.Via})
	}
	return i
}

func (k ServiceKey) control() (control.ServiceKey, error) {
	if k.Mark != 0 {
		if k.Protocol != "" || k.VIP.IsValid() {
			return control.ServiceKey{}, fmt.Errorf("mark %d names the service alone: leave Protocol and VIP out (Config.Marks has them)", k.Mark)
		}
		return control.ServiceKey{Mark: k.Mark}, nil
	}
	p, err := k.Protocol.nat()
	if err != nil {
		return control.ServiceKey{}, err
	}
	if !k.VIP.IsValid() {
		return control.ServiceKey{}, errors.New("service without a VIP:port")
	}
	if err := control.CheckAddr(k.VIP.Addr()); err != nil {
		return control.ServiceKey{}, fmt.Errorf("VIP: %w", err)
	}
	return control.ServiceKey{Protocol: p, Addr: k.VIP}, nil
}

// String is "tcp 172.25.254.100:80", or "fwm 1".
func (k ServiceKey) String() string {
	if k.Mark != 0 {
		return fmt.Sprintf("fwm %d", k.Mark)
	}
	p := k.Protocol
	if p == "" {
		p = TCP
	}
	return string(p) + " " + k.VIP.String()
}

func destSpec(rs RealServer) control.DestSpec {
	w := max(rs.Weight, 1)
	u, l := rs.UThreshold, rs.LThreshold
	return control.DestSpec{Addr: rs.Addr, Weight: &w, UThreshold: &u, LThreshold: &l}
}

// AddService adds s with its settings, local addresses, real servers and
// source lists, all or nothing. A refusal names the field of s it is
// about: "tapvs: Service.Scheduler: ...".
func (lb *LB) AddService(s Service) error {
	cs, err := serviceChanges(s, "Service")
	if err != nil {
		return err
	}
	return lb.apply(cs)
}

// RemoveServices removes every service (tapvsadm -C).
func (lb *LB) RemoveServices() error {
	if err := lb.d.Manager.Clear(); err != nil {
		return fmt.Errorf("tapvs: remove services: %w", err)
	}
	return nil
}

// RemoveService removes a service; its connections go with it.
func (lb *LB) RemoveService(k ServiceKey) error {
	ck, err := k.control()
	if err == nil {
		err = lb.d.Manager.DeleteService(ck)
	}
	if err != nil {
		return fmt.Errorf("tapvs: remove service %s: %w", k, err)
	}
	return nil
}

// AddRealServer adds a real server to a service; new connections may go
// to it at once.
func (lb *LB) AddRealServer(k ServiceKey, rs RealServer) error {
	ck, err := k.control()
	if err == nil {
		err = control.CheckAddr(rs.Addr.Addr())
	}
	if err == nil {
		err = lb.d.Manager.AddDest(ck, destSpec(rs))
	}
	if err != nil {
		return fmt.Errorf("tapvs: add real server %s to %s: %w", rs.Addr, k, err)
	}
	return nil
}

// RemoveRealServer removes a real server from a service.
func (lb *LB) RemoveRealServer(k ServiceKey, addr netip.AddrPort) error {
	ck, err := k.control()
	if err == nil {
		err = lb.d.Manager.DeleteDest(ck, addr)
	}
	if err != nil {
		return fmt.Errorf("tapvs: remove real server %s from %s: %w", addr, k, err)
	}
	return nil
}

// WaitReady waits until tapvs knows the next hop (the MAC address) of
// every real server, or ctx ends. Call it once the kernel ends of the TAPs
// have their addresses: before then nothing answers tapvs's ARP.
func (lb *LB) WaitReady(ctx context.Context) error {
	for {
		err := lb.d.Stack.ResolveAll(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tapvs: real servers' next hop: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Conn is one connection through tapvs.
type Conn struct {
	Protocol Protocol
	State    string // the TCP state (ESTABLISHED, TIME_WAIT, ...); UDP for UDP
	Client   netip.AddrPort
	VIP      netip.AddrPort
	Local    netip.AddrPort // the local address and port tapvs opened it from
	Real     netip.AddrPort // the real server
	// Expires is how long the entry has left without a packet (its
	// state's timeout, counting down).
	Expires time.Duration
}

// Connections is a snapshot of the connection table.
func (lb *LB) Connections() []Conn {
	var out []Conn
	for _, c := range lb.d.Balancer.Table().Conns() {
		out = append(out, Conn{Protocol: protocolOf(c.Protocol), State: c.State, Client: c.Client, VIP: c.VIP, Local: c.LIP, Real: c.RIP, Expires: c.Expires})
	}
	return out
}

// Counters are tapvs's totals since it started.
type Counters struct {
	ConnsCreated, ConnsExpired uint64
	Conns                      int // in the table now
	// Drops counts the frames dropped, by reason.
	Drops map[string]uint64
}

// Counters reads the totals.
func (lb *LB) Counters() Counters {
	created, expired := lb.d.Balancer.Stats.Conns()
	return Counters{ConnsCreated: created, ConnsExpired: expired, Conns: lb.d.Balancer.Table().Len(), Drops: lb.d.Balancer.Stats.Drops()}
}

// RealServerStats is what went through one real server of a service.
type RealServerStats struct {
	Service                    ServiceKey
	Addr                       netip.AddrPort
	Weight                     int
	UThreshold, LThreshold     uint32
	Overloaded                 bool // at UThreshold, not yet below LThreshold: no new connection
	ActiveConns, InactiveConns int64
	// PersistConns is how many persistence templates send clients to it
	// (tapvsadm --persistent-conn).
	PersistConns          int64
	Conns                 uint64 // every connection scheduled to it
	InPackets, OutPackets uint64 // In: client to server
	InBytes, OutBytes     uint64
	Rate                  Rate
}

// Rate is traffic per second over the last 2 second period (tapvsadm
// --rate); In is client to server, bytes are IP bytes.
type Rate struct {
	CPS           float64 // new connections
	InPPS, OutPPS float64 // packets
	InBPS, OutBPS float64 // bytes
}

func rateOf(r nat.Rate) Rate {
	return Rate{CPS: r.CPS, InPPS: r.InPPS, OutPPS: r.OutPPS, InBPS: r.InBPS, OutBPS: r.OutBPS}
}

// RealServers lists every real server of every service with its counters.
func (lb *LB) RealServers() []RealServerStats {
	var out []RealServerStats
	for _, s := range lb.d.Balancer.Services() {
		k := ServiceKey{Protocol: protocolOf(s.Protocol), VIP: netip.AddrPortFrom(s.Addr, s.Port)}
		for _, d := range s.Dests() {
			a, ia, _ := d.Conns()
			t := d.Traffic()
			th := d.Thresholds()
			out = append(out, RealServerStats{Service: k, Addr: netip.AddrPortFrom(d.Addr, d.Port), Weight: d.Weight(),
				UThreshold: th.Upper, LThreshold: th.Lower, Overloaded: d.Overloaded(),
				ActiveConns: a, InactiveConns: ia, PersistConns: d.PersistConns(), Conns: t.Conns, InPackets: t.InPkts, OutPackets: t.OutPkts, InBytes: t.InBytes, OutBytes: t.OutBytes, Rate: rateOf(d.Rate())})
		}
	}
	return out
}

// Close stops tapvs and removes its TAPs. It is safe to call more than once.
func (lb *LB) Close() error {
	lb.cancel()
	lb.d.Close()
	return nil
}
