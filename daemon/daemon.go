// Package daemon assembles a running tapvs from a validated configuration:
// TAP devices, the balancer with its services, and the stack around them.
package daemon

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/events"
	"github.com/tapvs/tapvs/handoff"
	"github.com/tapvs/tapvs/health"
	"github.com/tapvs/tapvs/hostnft"

	"github.com/tapvs/tapvs/metrics"

	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/control/api"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/netstack"
	"github.com/tapvs/tapvs/takeover"
	"github.com/tapvs/tapvs/tun"
)

// Daemon is a running tapvs.
type Daemon struct {
	Balancer *nat.Balancer
	Stack    *netstack.Stack
	Manager  *control.Manager
	cfg      atomic.Pointer[config.Config] // replaced whole by Reload

	// Metrics serves Prometheus metrics when metrics.listen is set.
	Metrics *metrics.Server

	control  *control.Server
	cluster  *cluster                       // BGP announcements, host routes, drain
	checker  atomic.Pointer[health.Checker] // replaced by Reload; read by metrics and the API
	reloadMu sync.Mutex
	synced   atomic.Uint64 // the balancer's Generation whose addresses the stack answers for
	syncMu   sync.Mutex    // one sync at a time: the control API's and the one every second
	log      *slog.Logger
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
	unmasq   []func() error   // removes the nftables tables Start made
	handoff  *handoff.Handoff // the cluster's other instances; nil without a handoff: section
	connSync *connSync        // connection sync with them; nil without a sync: section

	takeover *takeover.Server // hands this process over to a successor; nil without a control socket
	timers   timers           // the balancer's, stopped while a takeover is frozen

	// runtimeChecks are the services' health checks set through the API
	// (checks.go), until a reload; guarded by reloadMu.
	runtimeChecks map[control.ServiceKey]runtimeCheck
	// runtimeFaults are the targets of the faults set through the API
	// (faults.go), until a reload; guarded by reloadMu.
	runtimeFaults map[nat.FaultTarget]bool
	// serversChanged is poked after every operator change (sync), for
	// reconcile to extend the runtime checks to servers added since.
	serversChanged chan struct{}

	// events is the event bus (events.go); dropsBase the drop counters
	// its last Drops events were counted from.
	events    *events.Bus
	dropsMu   sync.Mutex
	dropsBase map[string]uint64
}

// Start builds everything from cfg and starts forwarding: it opens the two
// sides, makes an empty balancer and loads the services into it the way
// Reload changes them (config.Apply from nothing, one transaction), then
// puts the stack around it. On error nothing is left behind: the TAPs
// opened so far are closed (and so removed).
func Start(cfg *config.Config, log *slog.Logger) (_ *Daemon, err error) {
	nics, err := openSides(cfg, log)
	if err != nil {
		return nil, err
	}
	return start(cfg, log, nics, nil)
}

// start is Start on sides already open: its own, or a takeover's (then
// succ is the session with the old process, told DONE once the data path
// runs here, and waited for before the control socket, the metrics port,
// BGP and the handoff are opened, which the old process holds until it
// exits).
func start(cfg *config.Config, log *slog.Logger, nics [2]netstack.NICConfig, succ *successor) (_ *Daemon, err error) {
	owned := true // the TAPs are Start's to close until the stack has them
	defer func() {
		if err != nil && owned {
			closeNICs(nics)
		}
	}()
	// A successor replaces the old process's nftables tables (atomically)
	// only once it has let go: until then they are the old one's, which
	// serves on if the takeover fails.
	var unmasq []func() error
	if succ == nil {
		unmasq, err = masquerade(cfg, log)
	}
	if err != nil {
		removeMasquerade(unmasq, log)
		return nil, err
	}
	defer func() {
		if err != nil {
			removeMasquerade(unmasq, log)
		}
	}()
	reasm, noReasm := cfg.Fragments.NAT()
	bal, err := nat.New(nat.Config{
		MaxConns: cfg.MaxConns, PortMin: cfg.PortMin, PortMax: cfg.PortMax, Timeouts: cfg.Timeouts, PortQuarantine: cfg.PortQuarantine,
		ClientMAC: nics[0].MAC, ServerMAC: nics[1].MAC,
		Synproxy: cfg.Synproxy, ServerMTU: cfg.Server.MTU, ClientMTU: cfg.Client.MTU,
		Reassembly: reasm, NoReassembly: noReasm,
		ClientNet: cfg.Client.Address, ServerNet: cfg.Server.Address,
		ClientNet6: cfg.Client.Address6, ServerNet6: cfg.Server.Address6,
		// The handoff's receiver is a reader of its own (the last).
		Readers:  len(nics[0].Devs) + len(nics[1].Devs) + handoffReaders(cfg),
		Handoff:  cfg.Handoff != nil,
		SyncFeed: syncFeedLen(cfg),
		// A cluster's instances check each other's cookies.
		CookieSecret: cfg.CookieSecret(),
	})
	if err != nil {
		return nil, err
	}
	if err := bal.Update(func(tx *nat.Tx) error { return cfg.Apply(tx, nil) }); err != nil {
		return nil, err
	}
	if err := bal.SetFaults(cfg.Faults); err != nil {
		return nil, fmt.Errorf("faults: %w", err)
	}
	logFaults(log, cfg.Faults, 0)
	st, err := netstack.New(bal, nics[0], nics[1], log) // attaches itself as the balancer's nat.Link
	if err != nil {
		return nil, err
	}
	owned = false
	d := &Daemon{Balancer: bal, Stack: st, stop: make(chan struct{}), serversChanged: make(chan struct{}, 1), log: log, unmasq: unmasq, events: events.New()}
	d.cfg.Store(cfg)
	d.Manager = control.NewManager(bal, d.sync)
	d.Manager.SetEvents(d.events)
	// The stack answers for the VIPs and LIPs before the first frame is read;
	// an address it refuses is a start-up error, not a half-configured tapvs.
	if err := d.syncStack(true); err != nil {
		d.Close()
		return nil, err
	}
	if succ != nil {
		// The connections taken over are in the table before the first
		// frame of theirs is read.
		succ.importTable(bal, log)
	}
	if err := st.StartIO(netstack.IOMode(cfg.IO), cfg.BusyPoll, cfg.Pollers, cfg.PollGroups); err != nil {
		d.Close()
		return nil, err
	}
	d.startTimers()
	d.startEvents()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.reconcile()
	}()
	if succ != nil {
		// The data path runs here: the old process may go, and must
		// before the control socket, the metrics port and BGP are opened.
		if err := succ.handedOver(log); err != nil {
			d.Close()
			return nil, err
		}
		if d.unmasq, err = masquerade(cfg, log); err != nil {
			d.Close()
			return nil, err
		}
	}
	if cfg.ControlSocket != "" {
		d.control = control.NewServer(d.Manager, log)
		if err := d.control.Listen(cfg.ControlSocket); err != nil {
			d.Close()
			return nil, err
		}
	}
	if lo, hi := cfg.OwnPorts(); lo != 0 {
		if err := st.SetOwnPorts(lo, hi); err != nil {
			d.Close()
			return nil, err
		}
	}
	d.startHealth(cfg, nil, false)
	d.Manager.SetHealth(d.healthViews)
	d.Manager.SetChecks(d.Checks())
	d.Manager.ServeFaults(d.Faults())
	// The speaker starts after the services and their health checks: its
	// first announcement is of what can serve, never of a VIP that cannot.
	if d.cluster, err = newCluster(d, cfg, succ != nil); err != nil {
		d.Close()
		return nil, err
	}
	d.Manager.SetCluster(d.cluster)
	if cfg.Handoff != nil {
		st.SetHandoffQueue(len(nics[0].Devs) + len(nics[1].Devs))
		if d.handoff, err = handoff.Start(*cfg.Handoff, st.HandedOver, log); err != nil {
			d.Close()
			return nil, err
		}
		st.SetHandoff(d.handoff)
	}
	if cfg.Sync != nil {
		// The backup LIPs first: a peer's record on one is kept as a
		// shadow, on another LIP refused.
		d.cluster.backups(d.cluster.speaker.Load())
		// Joining: the announcer announces nothing until it has
		// joined, and at once when it has.
		if d.connSync, err = startSync(cfg.Sync, bal, log, d.cluster.poke); err != nil {
			d.Close()
			return nil, err
		}
		d.cluster.sync.Store(d.connSync)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.cluster.run()
	}()
	if cfg.MetricsListen != "" {
		mc := metrics.New(bal, st, d.health)
		mc.SetCluster(d.cluster)
		mc.SetQuorum(d.quorum)
		if d.handoff != nil {
			mc.SetHandoff(d.handoff.Stats)
		}
		if d.connSync != nil {
			mc.SetSync(d.connSync.Stats)
		}
		if d.Metrics, err = metrics.Serve(cfg.MetricsListen, mc, log); err != nil {
			d.Close()
			return nil, err
		}
	}
	log.Info("tapvs running", "client", cfg.Client.Name, "server", cfg.Server.Name, "services", len(cfg.Services))
	return d, nil
}

// handoffReaders is the balancer's readers besides the TAPs' queues: the
// handoff's receiver, if there is one.
func handoffReaders(cfg *config.Config) int {
	if cfg.Handoff != nil {
		return 1
	}
	return 0
}

// Failed is closed when the data path has failed for good (a TAP deleted
// under tapvs); Err says why. tapvs run exits with that error.
func (d *Daemon) Failed() <-chan struct{} { return d.Stack.Failed() }

// Err is why Failed was closed, or nil.
func (d *Daemon) Err() error { return d.Stack.Err() }

// Cluster is the instance's BGP speaker and drain (what /v1/bgp and
// /v1/drain answer from).
func (d *Daemon) Cluster() control.Cluster { return d.cluster }

// Config is the configuration running now (the last one loaded).
func (d *Daemon) Config() *config.Config { return d.cfg.Load() }

// health reports a server's health-check state to the metrics.
func (d *Daemon) health(s *nat.Service, dst *nat.Dest) (up, checked bool) {
	hc := d.checker.Load()
	if hc == nil {
		return false, false
	}
	up, checked, _ = hc.Up(health.KeyOf(s), netip.AddrPortFrom(dst.Addr, dst.Port))
	return up, checked
}

// quorum reports a service's quorum state to the metrics.
func (d *Daemon) quorum(s *nat.Service) (up, known bool) {
	hc := d.checker.Load()
	if hc == nil {
		return false, false
	}
	return hc.Serving(health.KeyOf(s))
}

// healthViews reports a service's checks to the control API's listings.
func (d *Daemon) healthViews(s *nat.Service) []api.HealthView {
	views := d.checkViews(controlKey(health.KeyOf(s)))
	if len(views) == 0 {
		return nil
	}
	return views
}

// startHealth runs cfg's health checks, with the runtime checks in place
// of the file's for their services (targets), taking over the state of
// the checker it replaces: a server it held down stays out, but for those
// release selects (a service whose check changed), which are put back and
// checked afresh (health.Checker.Release); readd adds back one it removed.
// Called with reloadMu held, or before the API serves.
func (d *Daemon) startHealth(cfg *config.Config, release func(health.Target) bool, readd bool) {
	prev := d.checker.Swap(nil)
	if prev != nil {
		prev.Close() // stopped before its state is read
	}
	if prev != nil && release != nil {
		prev.Release(release, readd)
	}
	targets, vs := d.targets(cfg), quorums(cfg)
	if len(targets) == 0 {
		return
	}
	next := health.New(d.Balancer, d.Stack.Stack(), netstack.ServerNIC, d.log)
	next.SetVS(vs)
	next.SetEvents(d.events)
	// A server put back has just answered a check through the stack, so
	// its next hop is in the stack's neighbour table: no wait is needed,
	// and a short one bounds the checker's pause if it is not.
	next.SetNextHop(func(a netip.Addr) ([6]byte, error) { return d.Stack.NextHopMAC(a, 100*time.Millisecond) })
	next.Start(targets, prev)
	d.checker.Store(next)
}

// quorums is the keepalived behaviour (sorry server, quorum, omega) of
// each of cfg's services with a checked real server in the file (without
// one, nothing ever moves); the checked servers themselves, alpha and
// notify scripts included, are Daemon.targets'.
func quorums(cfg *config.Config) []health.VS {
	var vs []health.VS
	for _, sc := range cfg.Services {
		v := health.VS{Proto: sc.Protocol, VIP: netip.AddrPortFrom(sc.VIP, sc.Port), Mark: sc.Mark, Sorry: sc.Sorry, SorryInhibit: sc.SorryInhibit,
			Quorum: sc.Quorum, Hysteresis: sc.Hysteresis, QuorumUp: sc.QuorumUp, QuorumDown: sc.QuorumDown, Omega: sc.Omega}
		checked := false
		for _, rs := range sc.RealServers {
			v.Servers = append(v.Servers, health.Server{RS: netip.AddrPortFrom(rs.Address, rs.Port), Weight: rs.Weight, Thresholds: rs.Thresholds})
			checked = checked || rs.Health != nil
		}
		if checked {
			vs = append(vs, v)
		}
	}
	return vs
}

// sync makes the stack answer for exactly the balancer's VIPs and LIPs and
// asks for the next hops of the real servers the last changes published.
// It runs after every control change: an ipvsadm script's command costs
// its own change, not a pass over every service.
func (d *Daemon) sync() error {
	err := d.syncStack(false)
	select {
	case d.serversChanged <- struct{}{}: // not here: the API's caller holds the manager's lock
	default:
	}
	return err
}

// syncStack is sync; all also asks for every real server's next hop still
// unknown (the pass every second, which also lets go of addresses whose
// last connection ended).
func (d *Daemon) syncStack(all bool) error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	// The addresses change only when the balancer publishes, and then by
	// what it changed: with many services, comparing the whole lists with
	// the stack's would be most of what a change or an idle tapvs does.
	var err error
	synced := d.synced.Load()
	changes, gen, ok := d.Balancer.Changes(synced)
	if gen != synced {
		if !ok || d.Stack.ChangeAddresses(changes) != nil {
			vips, lips := d.Balancer.Addresses()
			err = errors.Join(d.Stack.SetAddresses(nat.ClientSide, vips), d.Stack.SetAddresses(nat.ServerSide, lips))
			all = true
		}
		if err == nil {
			d.synced.Store(gen)
		}
	}
	if !all {
		for _, c := range changes {
			if c.Dest == nil {
				continue
			}
			if _, known := c.Dest.NextHopMAC(); !known {
				d.Stack.Resolve(c.Dest)
			}
		}
		return err
	}
	for _, s := range d.Balancer.Services() {
		for _, dst := range s.Dests() {
			if _, ok := dst.NextHopMAC(); !ok {
				d.Stack.Resolve(dst)
			}
		}
	}
	return err
}

func (d *Daemon) reconcile() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			if err := d.syncStack(true); err != nil {
				d.log.Warn("address sync", "err", err)
			}
		case <-d.serversChanged:
			d.followServers()
		}
	}
}

// Close stops forwarding and removes the TAPs and the control socket.
func (d *Daemon) Close() { d.shutdown(true) }

// shutdown stops everything this process runs. With teardown it also
// removes what it made outside itself (the host routes, the nftables
// tables; the TAPs go with its last queue); without (Abandon), a successor
// holds those, and the takeover session ends last.
func (d *Daemon) shutdown(teardown bool) {
	d.once.Do(func() {
		if d.takeover != nil && teardown {
			d.takeover.Close() // no session starts during the teardown
		}
		// The routers first: the VIPs and LIPs are withdrawn while this
		// instance still answers, so that nothing is sent here after the
		// TAPs close.
		switch {
		case d.cluster != nil && teardown:
			d.cluster.withdraw()
		case d.cluster != nil:
			d.cluster.leave() // a successor's sessions replace these
		}
		if d.control != nil {
			d.control.Close()
		}
		if d.Metrics != nil {
			d.Metrics.Close()
		}
		switch hc := d.checker.Load(); {
		case hc != nil && teardown:
			hc.Shutdown() // keepalived's omega scripts, where asked
		case hc != nil:
			hc.Close() // a successor serves on: nothing went down
		}
		close(d.stop)
		d.wg.Wait()
		d.stopTimers()
		if d.cluster != nil && teardown {
			d.cluster.clearRoutes() // the announcer that kept them has stopped
		}
		if d.handoff != nil {
			d.Stack.SetHandoff(nil)
			d.handoff.Close()
		}
		if d.connSync != nil {
			d.connSync.Close()
		}
		d.Stack.Close() // after a takeover: this process's copies, the queues stay attached
		if !teardown {
			// Last: ending the session tells the successor it may
			// open what was closed above.
			d.takeover.Close()
			return
		}
		removeMasquerade(d.unmasq, d.log)
	})
}

// masquerade installs the sides' nftables rules for a sidecar: masquerade
// (interfaces.*.masquerade) and published ports (interfaces.client.publish).
func masquerade(cfg *config.Config, log *slog.Logger) (remove []func() error, err error) {
	for _, side := range [2]config.Interface{cfg.Client, cfg.Server} {
		// Each family whose kernel end has an address (config checks that
		// address6 comes with peer_address6 here).
		var src4, src6 netip.Prefix
		if side.PeerAddress.IsValid() {
			src4 = side.Address
		}
		if side.PeerAddress6.IsValid() {
			src6 = side.Address6
		}
		need4, need6 := side.Masquerade && src4.IsValid(), side.Masquerade && src6.IsValid()
		if side.Masquerade {
			r, err := hostnft.Masquerade(side.Name, src4, src6, side.Netns)
			if err != nil {
				return remove, err
			}
			remove = append(remove, r)
		}
		if len(side.Publish) > 0 {
			var ports []hostnft.PublishedPort
			for _, p := range side.Publish {
				ports = append(ports, hostnft.PublishedPort{Protocol: p.Protocol, Port: p.Port, VIP: p.VIP})
				need4, need6 = need4 || p.VIP.Is4(), need6 || p.VIP.Is6()
			}
			r, err := hostnft.Publish(side.Name, ports, side.Netns)
			if err != nil {
				return remove, err
			}
			remove = append(remove, r)
		}
		if need4 || need6 {
			warnForwarding(side, need4, need6, log)
		}
	}
	return remove, nil
}

// warnForwarding says which family the namespace of side's kernel end does
// not forward that its masquerade or published ports need: tapvs does not
// set the sysctls (a pod's own sysctls do), and without them the tables
// are there but nothing passes.
func warnForwarding(side config.Interface, need4, need6 bool, log *slog.Logger) {
	v4, v6, err := hostnft.Forwarding(side.Netns)
	if err != nil {
		log.Warn("cannot read the forwarding sysctls that masquerade and publish need", "interface", side.Name, "err", err)
		return
	}
	if need4 && !v4 {
		log.Warn("net.ipv4.ip_forward is 0 in the TAP's namespace: IPv4 masquerade and publish pass nothing until it is 1", "interface", side.Name)
	}
	if need6 && !v6 {
		log.Warn("net.ipv6.conf.all.forwarding is 0 in the TAP's namespace: IPv6 masquerade and publish pass nothing until it is 1", "interface", side.Name)
	}
}

func removeMasquerade(remove []func() error, log *slog.Logger) {
	for _, r := range remove {
		if err := r(); err != nil {
			log.Warn("masquerade", "err", err)
		}
	}
}

// openSides opens the client and server TAPs. Offload is both or neither:
// a frame leaves with the virtio-net header it came with, so if the kernel
// refuses it on one side both are opened plain.
func openSides(cfg *config.Config, log *slog.Logger) ([2]netstack.NICConfig, error) {
	nics, err := openBoth(cfg, cfg.Offload, log)
	if errors.Is(err, tun.ErrOffloadRefused) {
		log.Warn("TAP offload refused: plain TAPs, one frame per system call", "err", err)
		nics, err = openBoth(cfg, false, log)
	}
	if err == nil && cfg.Offload && nics[0].Devs[0].VNetHdrLen() > 0 {
		log.Info("TAP offload on: checksum and TSO super-frames")
	}
	return nics, err
}

// openBoth opens both sides, or neither.
func openBoth(cfg *config.Config, offload bool, log *slog.Logger) (nics [2]netstack.NICConfig, err error) {
	for i, side := range [2]config.Interface{cfg.Client, cfg.Server} {
		if nics[i], err = openSide(side, offload, log); err != nil {
			closeNICs(nics)
			return [2]netstack.NICConfig{}, err
		}
	}
	return nics, nil
}

// openTAP opens a TAP; a variable so that a test can make the kernel
// refuse offload on one side (daemon/fallback_test.go).
var openTAP = tun.OpenTAP

// setupLink configures a TAP's link; a variable so that a test can make the
// kernel refuse its qdisc (daemon/fallback_test.go).
var setupLink = tun.SetupLink

// openSide opens one side's TAP, brings its link up (MTU, namespace) and
// describes it to the stack.
func openSide(side config.Interface, offload bool, log *slog.Logger) (netstack.NICConfig, error) {
	devs, err := openTAP(tun.TAPConfig{Name: side.Name, Queues: side.Queues, Offload: offload})
	if err != nil {
		return netstack.NICConfig{}, err
	}
	nic := netstack.NICConfig{Devs: devs, MTU: uint32(side.MTU), Address: side.Address, Address6: side.Address6}
	err = setupLink(side.Name, tun.LinkConfig{MTU: side.MTU, TxQLen: side.TxQLen, Netns: side.Netns, PeerAddress: side.PeerAddress, PeerAddress6: side.PeerAddress6})
	if errors.Is(err, tun.ErrQdisc) {
		log.Warn("the TAP keeps the kernel's default qdisc: a pass through it per frame", "interface", side.Name, "err", err)
		err = nil
	}
	if err != nil {
		closeNICs([2]netstack.NICConfig{nic})
		return netstack.NICConfig{}, err
	}
	if len(side.MAC) == 6 {
		nic.MAC = [6]byte(side.MAC)
	} else if nic.MAC, err = randomMAC(); err != nil {
		closeNICs([2]netstack.NICConfig{nic})
		return netstack.NICConfig{}, err
	}
	for _, r := range side.Routes {
		nic.Routes = append(nic.Routes, netstack.Route{Dst: r.Dst, Via: r.Via})
	}
	return nic, nil
}

// closeNICs closes the sides' queues: a TAP goes away with its last one.
func closeNICs(nics [2]netstack.NICConfig) {
	for _, n := range nics {
		for _, d := range n.Devs {
			d.Close()
		}
	}
}

func randomMAC() ([6]byte, error) {
	var m [6]byte
	if _, err := rand.Read(m[:]); err != nil {
		return m, errors.New("random MAC: " + err.Error())
	}
	m[0] = m[0]&^1 | 2 // unicast, locally administered
	return m, nil
}
