package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/bgp"
	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/tun"
)

// announceEvery is how often the announcer compares what should be
// announced with what is. A health check's verdict, a weight set to 0 or a
// drain reaches the routers within it (and their own processing: BGP's
// update, the FIB's change).
const announceEvery = 100 * time.Millisecond

// drainSettle is how long after a drain's withdrawal went out its count of
// connections is trusted as final: routers act on a withdrawal in tens of
// milliseconds (FRR 65-155 ms, BIRD 5 ms in the cluster lab), and a
// connection they sent here before they did is in the table by then.
const drainSettle = time.Second

// cluster is the instance's part in a cluster of tapvs behind ECMP routers:
// the BGP speaker, what it announces, the host routes that bring the
// routers' traffic on into the TAPs, and the drain. Its announcer goroutine
// is the only writer of the speaker's routes and of the host routes.
type cluster struct {
	d       *Daemon
	speaker atomic.Pointer[bgp.Speaker] // nil without a bgp: section
	sync    atomic.Pointer[connSync]    // connection sync, whose join holds the announcements back; nil without

	draining   atomic.Bool
	drainSince atomic.Int64 // unix nanoseconds
	kick       chan struct{}

	// mu guards the announcer's record of its last pass, read by the API.
	mu        sync.Mutex
	announced []bgp.Route // the last set handed to the speaker
	vips      map[netip.Prefix]bool
	empty     bool // a drain's "no connection left" was logged
	// withdrawnAt is when a drain's withdrawal was handed to the speaker
	// (zero: not yet, or no drain).
	withdrawnAt time.Time
	settle      time.Duration // drainSettle; a test's own

	routes   [2]*tun.HostRoutes // client side's (VIPs), server side's (LIPs); nil where not kept
	routeErr string             // the last pass's refusal of a host route, logged once
}

// newCluster starts the speaker if cfg has a bgp: section; the announcer
// runs until d.stop. A successor (tapvs run --takeover) restarts its
// predecessor's sessions: with graceful restart the routers kept the
// routes for it.
func newCluster(d *Daemon, cfg *config.Config, successor bool) (*cluster, error) {
	c := &cluster{d: d, kick: make(chan struct{}, 1), vips: map[netip.Prefix]bool{}, settle: drainSettle, routeErr: "<nil>"}
	if cfg.BGP != nil {
		bc := *cfg.BGP
		bc.Restarting = successor && bc.GracefulRestart > 0
		s, err := bgp.Start(bc, d.log)
		if err != nil {
			return nil, err
		}
		c.speaker.Store(s)
	}
	c.routes = hostRoutes(cfg)
	return c, nil
}

// hostRoutes makes the host-route keepers for the sides whose TAP's kernel
// end is in tapvs's own namespace with an address (peer_address,
// peer_address6): there the routers' traffic for a VIP or a LIP outside
// that address's prefix reaches this namespace's kernel, which needs the
// route on into the TAP, through tapvs's address of the family (address,
// address6); a family the kernel end has no address of gets none (it has
// no route to tapvs's). With bgp: and no peer address, the operator routes
// (a sidecar's publish, a host's own routes). They are kept while a
// speaker runs (with bgp:), and kept until shutdown if a reload removes
// it.
func hostRoutes(cfg *config.Config) (r [2]*tun.HostRoutes) {
	for i, side := range [2]config.Interface{cfg.Client, cfg.Server} {
		if side.Netns != "" || (!side.PeerAddress.IsValid() && !side.PeerAddress6.IsValid()) {
			continue
		}
		var via, via6 netip.Addr
		if side.PeerAddress.IsValid() {
			via = side.Address.Addr()
		}
		if side.PeerAddress6.IsValid() {
			via6 = side.Address6.Addr()
		}
		r[i] = tun.NewHostRoutes(side.Name, via, via6, side.PeerAddress.Masked(), side.PeerAddress6.Masked())
	}
	return r
}

// run is the announcer: every announceEvery, or at once when kicked, it
// makes the speaker announce what can serve.
func (c *cluster) run() {
	t := time.NewTicker(announceEvery)
	defer t.Stop()
	for {
		c.pass()
		select {
		case <-c.d.stop:
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

// pass computes what to announce and hands it to the speaker if it changed.
// A VIP is announced while one of its services has a real server that can
// take a new connection (weight above 0: a failed health check quiesces or
// removes it) and the instance is not drained; a LIP while the balancer
// answers for it (also a deleted one whose connections are still open:
// their replies must come back here). The other instances' LIPs this one
// backs up (bgp: backup_lips) are answered for on the server side and
// announced with their backup rank while the speaker runs, drained or not,
// as this instance's own LIPs are. Nothing is announced while connection
// sync joins: not even a backup, which is worth nothing without the table.
func (c *cluster) pass() {
	bal := c.d.Balancer
	s := c.speaker.Load()
	rank := c.backups(s)
	vips, lips := bal.Addresses()
	var routeErrs []error
	for i, addrs := range [2][]netip.Addr{vips, lips} {
		if r := c.routes[i]; r != nil && s != nil {
			routeErrs = append(routeErrs, r.Set(addrs))
		}
	}
	// A route the kernel refuses is tried again every pass: said once,
	// and again when the refusal changes.
	if msg := fmt.Sprint(errors.Join(routeErrs...)); msg != c.routeErr {
		if msg != "<nil>" {
			c.d.log.Warn("host routes", "err", msg)
		}
		c.routeErr = msg
	}
	// While connection sync joins, nothing: a flow or a reply the
	// router sent here would find no connection (connSync's join).
	joining := c.joining()
	serving := map[netip.Prefix]bool{}
	if !c.draining.Load() && !joining {
		for _, svc := range bal.Services() {
			for _, dst := range svc.Dests() {
				if dst.Weight() > 0 {
					// A match service's selector prefix is one route, not
					// one per address (its addresses' host routes are
					// the balancer's Addresses, above).
					serving[svc.VIPPrefix()] = true
					break
				}
			}
		}
	}
	want := make([]bgp.Route, 0, len(serving)+len(lips))
	for p := range serving {
		want = append(want, bgp.Route{Prefix: p})
	}
	if s != nil && s.Config().AnnounceLIPs && !joining {
		for _, a := range lips {
			want = append(want, bgp.Route{Prefix: hostPrefix(a), Backup: rank[a]})
		}
	}
	slices.SortFunc(want, func(a, b bgp.Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	want = slices.Compact(want)
	c.mu.Lock()
	same := slices.Equal(want, c.announced)
	c.mu.Unlock()
	if s != nil && !same {
		if err := s.Announce(want); err != nil {
			if !errors.Is(err, bgp.ErrClosed) { // a shutdown or reload took it
				c.d.log.Warn("bgp: announce", "err", err)
			}
			return // tried again next pass
		}
		c.mu.Lock()
		c.announced, c.vips = want, serving
		c.mu.Unlock()
	}
	c.drainProgress()
}

// joining reports whether connection sync has yet to join (false without
// a sync: section).
func (c *cluster) joining() bool {
	cs := c.sync.Load()
	return cs != nil && !cs.Joined()
}

// backups has the balancer answer for the LIPs the speaker s backs up
// (none without one) and returns their ranks. The announcer's, and once
// at start before connection sync imports a record on one of them.
func (c *cluster) backups(s *bgp.Speaker) map[netip.Addr]int {
	rank := map[netip.Addr]int{}
	var backups []netip.Addr
	if s != nil {
		for _, b := range s.Config().BackupLIPs {
			rank[b.Addr] = b.Rank
			backups = append(backups, b.Addr)
		}
	}
	if c.d.Balancer.SetBackupLIPs(backups) && c.d.Stack != nil { // (a daemon without TAPs has none)
		// The stack answers ARP and neighbour discovery for them from
		// now on (or no longer).
		if err := c.d.sync(); err != nil {
			c.d.log.Warn("backup LIPs: stack addresses", "err", err)
		}
	}
	return rank
}

// drainProgress notes when a drain's withdrawal has gone out (this pass
// announced no VIP) and logs, once, when the drained instance holds no
// connection any more.
func (c *cluster) drainProgress() {
	c.mu.Lock()
	if !c.draining.Load() {
		c.mu.Unlock()
		return
	}
	if c.withdrawnAt.IsZero() && len(c.vips) == 0 {
		c.withdrawnAt = time.Now()
	}
	c.mu.Unlock()
	if d := c.DrainStatus(); d.Empty {
		c.mu.Lock()
		first := !c.empty
		c.empty = true
		c.mu.Unlock()
		if first {
			c.d.log.Warn("drain: no connection left: this instance can be stopped without breaking any")
		}
	}
}

func hostPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// poke has the announcer pass now rather than at its next tick.
func (c *cluster) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// withdraw withdraws everything and stops the speaker: on shutdown, before
// the TAPs close, so that routers stop sending here while this instance can
// still answer.
func (c *cluster) withdraw() {
	if s := c.speaker.Swap(nil); s != nil {
		s.Close()
	}
}

// leave stops the speaker for a successor: with graceful restart the
// routes stay at the routers (bgp.Speaker.Leave), without it they are
// withdrawn as on shutdown.
func (c *cluster) leave() {
	if s := c.speaker.Swap(nil); s != nil {
		s.Leave()
	}
}

// clearRoutes removes the host routes, once the announcer has stopped.
func (c *cluster) clearRoutes() {
	for _, r := range c.routes {
		if r != nil {
			if err := r.Clear(); err != nil {
				c.d.log.Warn("host routes", "err", err)
			}
		}
	}
}

// reload makes the speaker what next says: started if next adds a bgp:
// section, stopped (everything withdrawn) if it removes it, reconfigured
// otherwise, peers whose settings are unchanged keeping their sessions. It
// returns the fields that only a restart changes.
func (c *cluster) reload(next *config.Config) (restart []string, err error) {
	s := c.speaker.Load()
	switch {
	case next.BGP == nil && s == nil:
		return nil, nil
	case next.BGP == nil:
		c.speaker.Store(nil)
		s.Close()
		return nil, nil
	case s == nil:
		s, err := bgp.Start(*next.BGP, c.d.log)
		if err != nil {
			return nil, err
		}
		c.speaker.Store(s)
		c.mu.Lock()
		c.announced = nil // announce everything to the new speaker
		c.mu.Unlock()
		c.poke()
		return nil, nil
	}
	run := s.Config()
	if run.ASN != next.BGP.ASN || run.RouterID != next.BGP.RouterID {
		keep := *next.BGP
		keep.ASN, keep.RouterID = run.ASN, run.RouterID
		next.BGP = &keep
		restart = append(restart, "bgp.asn/router_id")
	}
	kept, added, removed, err := s.Reconfigure(*next.BGP)
	if err != nil {
		return restart, err
	}
	c.d.log.Info("bgp: reloaded", "kept", kept, "added", added, "removed", removed)
	c.poke()
	return restart, nil
}

// BGP reports the speaker to the API.
func (c *cluster) BGP() (api.BGP, bool) {
	s := c.speaker.Load()
	if s == nil {
		return api.BGP{}, false
	}
	st := s.Status()
	b := api.BGP{ASN: st.ASN, RouterID: st.RouterID.String(), Announced: st.Announced, Withdrawn: st.Withdrawn,
		Draining: c.draining.Load(), Joining: c.joining(), Peers: []api.BGPPeer{}, Routes: []api.BGPRoute{}}
	for _, p := range st.Peers {
		b.Peers = append(b.Peers, api.BGPPeer{Address: p.Address.String(), ASN: p.ASN, State: p.State,
			Since: p.Since.UTC().Format(time.RFC3339), Changes: p.Changes, Established: p.Established,
			Received: p.Received, Sent: p.Sent, LastError: p.LastError})
	}
	c.mu.Lock()
	vips := c.vips
	c.mu.Unlock()
	for _, r := range st.Routes {
		kind := "lip"
		if vips[r.Prefix] {
			kind = "vip"
		}
		b.Routes = append(b.Routes, api.BGPRoute{Prefix: r.Prefix.String(), Kind: kind, Backup: r.Backup, Since: r.Since.UTC().Format(time.RFC3339)})
	}
	return b, true
}

// Drain starts or ends a drain: its VIPs are withdrawn from every peer (its
// LIPs stay, for the replies of the connections it still holds) and come
// back when it ends.
func (c *cluster) Drain(on bool) api.Drain {
	if c.draining.Swap(on) != on {
		if on {
			c.drainSince.Store(time.Now().UnixNano())
			c.d.log.Warn("drain: withdrawing the VIPs; open connections go on", "conns", c.d.Balancer.Table().Len())
		} else {
			c.d.log.Warn("drain ended: announcing the VIPs again")
		}
		c.mu.Lock()
		c.empty, c.withdrawnAt = false, time.Time{}
		c.mu.Unlock()
		c.poke()
	}
	return c.DrainStatus()
}

// DrainStatus reports the drain. It is empty when the table holds no
// connection once the withdrawal has gone out and c.settle has passed
// (at once without a speaker: no router to wait for).
func (c *cluster) DrainStatus() api.Drain {
	n := c.d.Balancer.Table().Len()
	d := api.Drain{Draining: c.draining.Load(), Conns: n, Withdrawn: []string{}}
	if !d.Draining {
		return d
	}
	d.Since = time.Unix(0, c.drainSince.Load()).UTC().Format(time.RFC3339)
	if c.speaker.Load() == nil {
		d.Empty = n == 0
		return d // nothing announced, nothing withdrawn: the count only
	}
	c.mu.Lock()
	at := c.withdrawnAt
	c.mu.Unlock()
	if !at.IsZero() {
		d.WithdrawnAt = at.UTC().Format(time.RFC3339Nano)
		d.Empty = n == 0 && time.Since(at) >= c.settle
	}
	vips, _ := c.d.Balancer.Addresses()
	for _, v := range vips {
		d.Withdrawn = append(d.Withdrawn, v.String())
	}
	return d
}
