// Package bgp announces tapvs's addresses to routers: a VIP as a host route
// while it can serve, each LIP as a host route so that real servers' replies
// come back to the instance that holds the connection. It is GoBGP embedded
// as a library (no BGP of its own); this package only says what to announce
// and keeps the peers the configuration names.
//
// The speaker's TCP sessions live on the kernel stack of the namespace tapvs
// runs in, as MetalLB's and Cilium's speakers do, not on the gVisor stack of
// the TAPs: GoBGP opens its own kernel sockets (it cannot be handed another
// stack's), TCP-MD5 (RFC 2385) is a kernel socket option gVisor does not
// have, and the routers a cluster peers with already reach that namespace
// (a host's or a pod's address). tapvs dials out and never listens (GoBGP's
// listen port -1), so an unprivileged tapvs needs no port below 1024 and a
// peer cannot open a session to it uninvited.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Config is the bgp: section, validated (config.Config.BGP).
type Config struct {
	ASN      uint32
	RouterID netip.Addr // IPv4, as BGP's identifier is
	// HoldTime and Keepalive are proposed to every peer (BGP takes the
	// smaller hold time of the two sides); ConnectRetry is how long an
	// unanswered or refused session waits before the next attempt.
	HoldTime, Keepalive, ConnectRetry time.Duration
	// GracefulRestart, if set, is the Restart Time (RFC 4724) every peer
	// is offered: a session that ends without a notification (Leave, and
	// also a crash) leaves this speaker's routes at the router, stale, up
	// to this long, until a new session replaces them.
	GracefulRestart time.Duration
	// Restarting says this speaker replaces one that left its routes
	// stale (a takeover's successor): its OPEN sets the Restart State and
	// Forwarding State bits, so that a router keeps them until this
	// speaker's End-of-RIB, and it announces once it has every peer's
	// End-of-RIB (at most restartDeferral later). Only with
	// GracefulRestart.
	Restarting bool
	// NextHop and NextHop6, if set, are the next hop of announced IPv4 and
	// IPv6 routes; unset, each peer is told the session's own address
	// (next-hop self), which is what a router one hop away needs.
	NextHop, NextHop6 netip.Addr
	Communities       []uint32 // standard communities (AA:NN as AA<<16|NN)
	MED               uint32
	HasMED            bool
	// AnnounceLIPs announces each LIP as a host route beside the VIPs.
	AnnounceLIPs bool
	// BackupLIPs are the other instances' LIPs this one announces as
	// their backup (Route.Backup): a router sends their replies here only
	// once the owner's path is gone.
	BackupLIPs []BackupLIP
	Peers      []Peer
}

// BackupLIP is a peer instance's LIP and this instance's place among its
// backups: 1 is the first, whose path wins once the owner's is gone.
type BackupLIP struct {
	Addr netip.Addr
	Rank int // 1-MaxBackupRank
}

// MaxBackupRank is the largest backup rank: with the 100 that sets every
// backup behind every owner, a path's MED is at most MED+200.
const MaxBackupRank = 100

// BackupMED is what a backup's MED adds to the configured one: 100 puts
// every backup behind every owner (whose MED is the configured one), and
// the rank orders the backups among themselves.
func BackupMED(rank int) uint32 { return uint32(100 + rank) }

// Peer is one router to announce to.
type Peer struct {
	Address      netip.Addr
	ASN          uint32
	Port         uint16     // 179 unless set
	LocalAddress netip.Addr // the session's source; unset: the kernel picks
	Password     string     // TCP-MD5; "" for none
}

// ErrClosed is Announce's error once Close has run.
var ErrClosed = errors.New("bgp: speaker closed")

// Speaker is the embedded BGP speaker.
type Speaker struct {
	srv *server.BgpServer
	log *slog.Logger

	// mu guards cfg, routes and peers: Announce (the daemon's announcer),
	// Reconfigure (a reload) and the status readers (the API, metrics).
	mu     sync.Mutex
	cfg    Config
	routes map[netip.Prefix]Route // announced: with what rank, since when
	peers  map[netip.Addr]*peerState

	announced, withdrawn atomic.Uint64 // routes, counted once per change
	closed               atomic.Bool
	cancelWatch          context.CancelFunc
}

// peerState is what the speaker remembers of a peer between listings: the
// state GoBGP reported last and since when.
type peerState struct {
	conf    Peer
	state   string
	since   time.Time
	changes uint64 // state changes seen
	ups     uint64 // times it reached established
}

// Start starts the speaker and adds cfg's peers. It announces nothing yet:
// the caller's first Announce does.
func Start(cfg Config, log *slog.Logger) (*Speaker, error) {
	lvl := new(slog.LevelVar)
	lvl.Set(slog.LevelWarn) // GoBGP's own log: its warnings and errors only
	srv := server.NewBgpServer(server.LoggerOption(log.With("component", "gobgp"), lvl))
	go srv.Serve()
	s := &Speaker{srv: srv, log: log, cfg: cfg, routes: map[netip.Prefix]Route{}, peers: map[netip.Addr]*peerState{}}
	ctx := context.Background()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.ASN, RouterId: cfg.RouterID.String(),
		ListenPort: -1, // dial out only: see the package comment
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	// Routes a peer sends are refused on arrival: tapvs installs none, and a
	// router's full table would otherwise sit in memory. The policy is the
	// global import one, which locally made paths pass too: it accepts
	// those (route type local) and rejects the rest.
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: "tapvs-local-only", Statements: []*api.Statement{{
		Name:       "tapvs-accept-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: import policy: %w", err)
	}
	if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies:      []*api.Policy{{Name: "tapvs-local-only"}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: import policy: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	s.cancelWatch = cancel
	err := srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.peerEvent}, server.WatchPeer())
	if err != nil {
		cancel()
		srv.Stop()
		return nil, fmt.Errorf("bgp: watch peers: %w", err)
	}
	s.mu.Lock()
	for _, p := range cfg.Peers {
		if err = s.addPeer(p); err != nil {
			break
		}
	}
	s.mu.Unlock()
	if err != nil {
		s.Close()
		return nil, err
	}
	log.Info("bgp: speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID, "peers", len(cfg.Peers))
	return s, nil
}

// addPeer adds p to GoBGP and to s.peers. s.mu is held.
func (s *Speaker) addPeer(p Peer) error {
	if err := s.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
		return fmt.Errorf("bgp: peer %s: %w", p.Address, err)
	}
	s.peers[p.Address] = &peerState{conf: p, state: "idle", since: time.Now()}
	s.log.Info("bgp: peer added", "peer", p.Address, "asn", p.ASN)
	return nil
}

func (s *Speaker) apiPeer(p Peer) *api.Peer {
	port := p.Port
	if port == 0 {
		port = 179
	}
	t := &api.Transport{RemotePort: uint32(port)}
	if p.LocalAddress.IsValid() {
		t.LocalAddress = p.LocalAddress.String()
	}
	gr := s.cfg.GracefulRestart > 0
	families := []*api.AfiSafi{family(api.Family_AFI_IP, gr)}
	if p.Address.Is6() || s.cfg.NextHop6.IsValid() {
		families = append(families, family(api.Family_AFI_IP6, gr))
	}
	var restart *api.GracefulRestart
	if gr {
		restart = &api.GracefulRestart{
			Enabled: true, RestartTime: uint32(seconds(s.cfg.GracefulRestart)),
			// A successor's OPEN carries the Restart State bit and, per
			// family, the Forwarding State bit (GoBGP sets it while
			// restarting): the router keeps the stale routes until this
			// speaker's End-of-RIB instead of dropping them at the OPEN.
			LocalRestarting: s.cfg.Restarting,
			DeferralTime:    uint32(seconds(restartDeferral)),
		}
	}
	return &api.Peer{
		GracefulRestart: restart,
		Conf:            &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: seconds(s.cfg.HoldTime), KeepaliveInterval: seconds(s.cfg.Keepalive),
			ConnectRetry: seconds(s.cfg.ConnectRetry),
			// After a session ends, the next attempt waits ConnectRetry,
			// not GoBGP's 30 s idle hold: a router that restarts is
			// announced to again as soon as it listens.
			IdleHoldTimeAfterReset: seconds(s.cfg.ConnectRetry),
		}},
		Transport: t,
		AfiSafis:  families,
	}
}

func family(afi api.Family_Afi, gr bool) *api.AfiSafi {
	f := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}
	if gr {
		f.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	return f
}

// restartDeferral bounds how long a restarting speaker (Config.Restarting)
// waits for its peers' End-of-RIB before it announces (RFC 4724's
// Selection_Deferral_Timer; GoBGP's default is 6 minutes): a router sends
// its End-of-RIB within milliseconds of the session, and one that is down
// must not hold the announcement for long (the stale routes it would
// replace point here anyway).
const restartDeferral = 5 * time.Second

// seconds rounds d up to whole seconds, BGP's unit for timers.
func seconds(d time.Duration) uint64 { return uint64((d + time.Second - 1) / time.Second) }

// peerEvent logs a peer's state change, one line each, and remembers it.
func (s *Speaker) peerEvent(e *apiutil.WatchEventMessage_PeerEvent, t time.Time) {
	if e.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr := e.Peer.State.NeighborAddress
	state := fsmName(e.Peer.State.SessionState)
	s.mu.Lock()
	p, ok := s.peers[addr]
	if !ok || p.state == state {
		s.mu.Unlock()
		return
	}
	was := p.state
	p.state, p.since = state, t
	p.changes++
	if state == "established" {
		p.ups++
	}
	s.mu.Unlock()
	attrs := []any{"peer", addr, "from", was, "to", state}
	if e.Peer.State.DisconnectMessage != "" {
		attrs = append(attrs, "reason", e.Peer.State.DisconnectMessage)
	}
	if state == "established" || was == "established" {
		s.log.Warn("bgp: peer state", attrs...)
	} else {
		s.log.Info("bgp: peer state", attrs...)
	}
}

// fsmName is RFC 4271's name of a session state, in lower case.
func fsmName(st bgp.FSMState) string {
	switch st {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return fmt.Sprintf("state %d", st)
}

// Route is a prefix to announce (a host route: /32 or /128) and its place:
// Backup 0 is this instance's own (a VIP, its LIP), announced with the
// configured attributes; Backup r > 0 is another instance's LIP, announced
// as its r-th backup. Since is when it was announced (Status; Announce
// ignores it).
type Route struct {
	Prefix netip.Prefix
	Backup int
	Since  time.Time
}

// Own is prefixes as this instance's own routes (Backup 0).
func Own(prefixes ...netip.Prefix) []Route {
	r := make([]Route, len(prefixes))
	for i, p := range prefixes {
		r[i] = Route{Prefix: p}
	}
	return r
}

// Announce makes the announced routes exactly want, announcing what is new
// or whose backup rank changed (its path replaced) and withdrawing what is
// gone. It is called by one goroutine at a time (the daemon's announcer).
func (s *Speaker) Announce(want []Route) error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	wanted := make(map[netip.Prefix]bool, len(want))
	for _, r := range want {
		p := r.Prefix
		wanted[p] = true
		if have, ok := s.routes[p]; ok && have.Backup == r.Backup {
			continue
		}
		if err := s.add(p, r.Backup); err != nil {
			errs = append(errs, err)
			continue
		}
		s.routes[p] = Route{Prefix: p, Backup: r.Backup, Since: time.Now()}
		s.announced.Add(1)
		s.log.Info("bgp: announce", "prefix", p, "backup", r.Backup)
	}
	for p := range s.routes {
		if wanted[p] {
			continue
		}
		if err := s.del(p); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.routes, p)
		s.withdrawn.Add(1)
		s.log.Info("bgp: withdraw", "prefix", p)
	}
	return errors.Join(errs...)
}

// med is the MED of a path of the given backup rank, and whether it has
// one. A backup's is the configured one (0 unset) + BackupMED(rank). With
// backups configured, the own paths carry the configured MED, 0 if unset,
// rather than none: a router told "bgp bestpath med missing-as-worst"
// would otherwise rank the owner behind its backups.
func (s *Speaker) med(backup int) (uint32, bool) {
	if backup > 0 {
		return s.cfg.MED + BackupMED(backup), true
	}
	return s.cfg.MED, s.cfg.HasMED || len(s.cfg.BackupLIPs) > 0
}

// path is prefix's path with the configured attributes and the MED of its
// backup rank; the next hop left unspecified is GoBGP's next-hop self.
//
// The backup's preference is its MED, not a longer AS path or a
// LOCAL_PREF: MED orders paths on eBGP sessions when the instances share
// an AS (FRR and BIRD compare it between paths from the same neighbouring
// AS, which they are) and on iBGP ones, where a prepended AS path would
// carry the router's own AS and be dropped by its loop check.
func (s *Speaker) path(p netip.Prefix, backup int) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, fmt.Errorf("bgp: %s: %w", p, err)
	}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	fam := bgp.RF_IPv4_UC
	if p.Addr().Is4() {
		nh := s.cfg.NextHop
		if !nh.IsValid() {
			nh = netip.IPv4Unspecified()
		}
		a, err := bgp.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, fmt.Errorf("bgp: %s next hop: %w", p, err)
		}
		attrs = append(attrs, a)
	} else {
		fam = bgp.RF_IPv6_UC
		nh := s.cfg.NextHop6
		if !nh.IsValid() {
			nh = netip.IPv6Unspecified()
		}
		a, err := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, fmt.Errorf("bgp: %s next hop: %w", p, err)
		}
		attrs = append(attrs, a)
	}
	if med, ok := s.med(backup); ok {
		attrs = append(attrs, bgp.NewPathAttributeMultiExitDisc(med))
	}
	if len(s.cfg.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(slices.Clone(s.cfg.Communities)))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs}, nil
}

func (s *Speaker) add(p netip.Prefix, backup int) error {
	path, err := s.path(p, backup)
	if err != nil {
		return err
	}
	if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("bgp: announce %s: %w", p, err)
	}
	return nil
}

func (s *Speaker) del(p netip.Prefix) error {
	path, err := s.path(p, 0)
	if err != nil {
		return err
	}
	if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("bgp: withdraw %s: %w", p, err)
	}
	return nil
}

// Reconfigure makes the speaker what next says: peers that are gone are
// deleted (their sessions closed), new ones added, changed ones replaced;
// a peer whose settings are the same keeps its session. The global
// settings (ASN, router id) cannot change without a restart, and timers,
// next hops, communities and MED apply to every peer and path, so a change
// of any of them re-adds every peer and re-announces every route.
func (s *Speaker) Reconfigure(next Config) (kept, added, removed []netip.Addr, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.cfg
	if next.ASN != prev.ASN || next.RouterID != prev.RouterID {
		return nil, nil, nil, fmt.Errorf("bgp: asn and router_id change only with a restart (running: %d %s)", prev.ASN, prev.RouterID)
	}
	global := !sameGlobal(prev, next)
	// A restart is over once running: peers added from now on open as
	// any speaker does.
	next.Restarting = false
	s.cfg = next
	var errs []error
	if global {
		// Paths first: withdrawn under the old attributes, announced
		// under the new ones below.
		for p := range s.routes {
			s.cfg = prev
			if err := s.del(p); err != nil {
				errs = append(errs, err)
			}
			s.cfg = next
		}
	}
	nextPeers := map[netip.Addr]Peer{}
	for _, p := range next.Peers {
		nextPeers[p.Address] = p
	}
	for addr, st := range s.peers {
		np, ok := nextPeers[addr]
		if ok && np == st.conf && !global {
			kept = append(kept, addr)
			continue
		}
		if err := s.srv.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: delete peer %s: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		s.log.Info("bgp: peer removed", "peer", addr)
		if !ok {
			removed = append(removed, addr)
		}
	}
	for _, p := range next.Peers {
		if _, ok := s.peers[p.Address]; ok {
			continue
		}
		if err := s.addPeer(p); err != nil {
			errs = append(errs, err)
			continue
		}
		added = append(added, p.Address)
	}
	if global {
		for p, r := range s.routes {
			if err := s.add(p, r.Backup); err != nil {
				errs = append(errs, err)
			}
		}
	}
	slices.SortFunc(kept, netip.Addr.Compare)
	slices.SortFunc(added, netip.Addr.Compare)
	slices.SortFunc(removed, netip.Addr.Compare)
	return kept, added, removed, errors.Join(errs...)
}

// sameGlobal reports whether a and b agree on everything that is not a
// peer's own.
func sameGlobal(a, b Config) bool {
	return a.HoldTime == b.HoldTime && a.Keepalive == b.Keepalive && a.ConnectRetry == b.ConnectRetry && a.GracefulRestart == b.GracefulRestart &&
		a.NextHop == b.NextHop && a.NextHop6 == b.NextHop6 && slices.Equal(a.Communities, b.Communities) &&
		a.MED == b.MED && a.HasMED == b.HasMED && (len(a.BackupLIPs) > 0) == (len(b.BackupLIPs) > 0)
}

// Config is the configuration the speaker runs.
func (s *Speaker) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Leave stops the speaker for a successor (tapvs run --takeover) with
// graceful restart (Config.GracefulRestart): nothing is withdrawn and the
// sessions close without a notification, so that the routers keep the
// routes, stale, until the successor's sessions replace them. Without
// graceful restart it is Close.
func (s *Speaker) Leave() {
	if s.Config().GracefulRestart == 0 {
		s.Close()
		return
	}
	if s.closed.Swap(true) {
		return
	}
	s.cancelWatch()
	if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
		s.log.Warn("bgp: stop for a successor", "err", err)
	}
	s.mu.Lock()
	n := len(s.routes)
	s.mu.Unlock()
	s.log.Info("bgp: speaker left its routes to a successor (graceful restart)", "routes", n)
}

// Close withdraws every route, closes the sessions (a Cease notification,
// which has a router drop the routes at once even if the withdrawal had not
// reached it) and stops the speaker.
func (s *Speaker) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.mu.Lock()
	n := len(s.routes)
	if n > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true}); err != nil {
			s.log.Warn("bgp: withdraw all", "err", err)
		}
		s.withdrawn.Add(uint64(n))
		clear(s.routes)
	}
	s.mu.Unlock()
	s.cancelWatch()
	s.srv.Stop() // StopBgp (a Cease to every peer), then GoBGP's other servers
	s.log.Info("bgp: speaker stopped", "withdrawn", n)
}
