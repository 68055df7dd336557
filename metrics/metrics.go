// Package metrics exports tapvs's counters to Prometheus. Everything is read
// at scrape time from the counters the data path keeps anyway (per-reader
// frame counts, per-reader per-server traffic, connection counts), so a
// scrape costs the packet path nothing; the BGP speaker and the drain are
// read from the daemon through Cluster, as the control API reports them.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"github.com/tapvs/tapvs/connsync"
	"github.com/tapvs/tapvs/handoff"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/netstack"
)

// Health reports a real server's health as the checker sees it; ok is false
// when the server is not checked.
type Health func(*nat.Service, *nat.Dest) (up bool, checked bool)

// Cluster is an instance's BGP speaker and drain as the control API
// reports them (the daemon's): the metrics read them through it, and
// import no daemon.
type Cluster interface {
	// BGP reports the speaker; ok is false without a bgp: section.
	BGP() (b api.BGP, ok bool)
	DrainStatus() api.Drain
}

// Collector reads a running tapvs at every scrape.
type Collector struct {
	bal     *nat.Balancer
	st      *netstack.Stack
	health  Health
	cluster Cluster              // nil: no BGP or drain metrics
	handoff func() handoff.Stats // nil: no handoff: section
	sync    func() Sync          // nil: no sync: section
	quorum  Quorum               // nil: no quorum gauge
}

// Quorum reports whether a service has its keepalived quorum; known is
// false when nothing tracks it (no checked server).
type Quorum func(*nat.Service) (up, known bool)

// SetQuorum has the collector export each service's quorum state.
func (c *Collector) SetQuorum(q Quorum) { c.quorum = q }

var (
	labelsSvc   = []string{"service", "vip"}
	labelsRS    = []string{"service", "vip", "rs"}
	labelsLIP   = []string{"service", "vip", "lip"}
	labelsQ     = []string{"side", "queue"}
	dConns      = prometheus.NewDesc("tapvs_connections", "Connections in the table.", nil, nil)
	dConnsMax   = prometheus.NewDesc("tapvs_connections_max", "Connection table limit.", nil, nil)
	dQuar       = prometheus.NewDesc("tapvs_ports_quarantined", "Closed connections' local ports held back from their real server (TIME_WAIT).", nil, nil)
	dFragBytes  = prometheus.NewDesc("tapvs_fragment_bytes", "Bytes charged to the fragments held for reassembly (bounded by 4 MiB by default).", nil, nil)
	dReasm      = prometheus.NewDesc("tapvs_fragments_reassembled_total", "Datagrams to a VIP or LIP made whole from fragments.", nil, nil)
	dFragTimeEx = prometheus.NewDesc("tapvs_fragment_time_exceeded_total", "ICMP time exceeded messages for datagrams given up at their reassembly timeout whose first fragment came: sent, or not_sent (past 100 a second, or to a multicast or broadcast source).", []string{"result"}, nil)
	dCreated    = prometheus.NewDesc("tapvs_connections_created_total", "Connections made.", nil, nil)
	dExpired    = prometheus.NewDesc("tapvs_connections_expired_total", "Connections that timed out.", nil, nil)
	dExpRST     = prometheus.NewDesc("tapvs_expired_resets_total", "RSTs sent to a client or real server when an established TCP connection timed out.", nil, nil)
	dDrops      = prometheus.NewDesc("tapvs_drops_total", "Packets dropped by the balancer, by reason.", []string{"reason"}, nil)
	dSPCookies  = prometheus.NewDesc("tapvs_synproxy_syn_cookies_total", "SYNs answered with a cookie.", nil, nil)
	dSPOpened   = prometheus.NewDesc("tapvs_synproxy_handshakes_total", "Client handshakes proved by a valid cookie.", nil, nil)
	dSPFailed   = prometheus.NewDesc("tapvs_synproxy_server_failures_total", "Server handshakes refused or unanswered.", nil, nil)
	dSPRetries  = prometheus.NewDesc("tapvs_synproxy_syn_retries_total", "SYNs re-sent to a silent server.", nil, nil)
	dSPTW       = prometheus.NewDesc("tapvs_synproxy_server_time_wait_total", "Server TIME_WAITs ended with an RST to reuse a local port.", nil, nil)
	dActive     = prometheus.NewDesc("tapvs_rs_active_connections", "ESTABLISHED connections (ipvsadm ActiveConn).", labelsRS, nil)
	dInactive   = prometheus.NewDesc("tapvs_rs_inactive_connections", "Other connections (ipvsadm InActConn).", labelsRS, nil)
	dSched      = prometheus.NewDesc("tapvs_rs_scheduled_total", "Connections the scheduler gave this server.", labelsRS, nil)
	dWeight     = prometheus.NewDesc("tapvs_rs_weight", "Scheduling weight (0: drained).", labelsRS, nil)
	dOverload   = prometheus.NewDesc("tapvs_rs_overloaded", "1 while the real server is at its upper connection threshold (ipvsadm -x) and not yet below its lower one (-y): no new connection goes to it; 0 otherwise.", labelsRS, nil)
	dUp         = prometheus.NewDesc("tapvs_rs_up", "Health check state (1 healthy, 0 failed); absent when unchecked.", labelsRS, nil)
	dPkts       = prometheus.NewDesc("tapvs_rs_packets_total", "Packets through tapvs, by direction (in: client to server).", append(labelsRS, "direction"), nil)
	dBytes      = prometheus.NewDesc("tapvs_rs_bytes_total", "IP bytes through tapvs, by direction.", append(labelsRS, "direction"), nil)
	dSvcConns   = prometheus.NewDesc("tapvs_service_connections_total", "Connections made to the service.", labelsSvc, nil)
	dSvcQuorum  = prometheus.NewDesc("tapvs_service_quorum_up", "1 while the weights of the service's up real servers reach its quorum (keepalived's quorum and hysteresis), 0 while below it (its real servers held out, the sorry server in); absent when nothing checks it.", labelsSvc, nil)
	dSvcHalf    = prometheus.NewDesc("tapvs_service_half_open", "Connections waiting for the client's ACK, counted while the service has a half_open limit.", labelsSvc, nil)
	dProxyHdrs  = prometheus.NewDesc("tapvs_proxy_headers_total", "PROXY protocol headers put in front of client segments toward real servers, re-sends included.", nil, nil)
	dProxyCut   = prometheus.NewDesc("tapvs_proxy_headers_cut_total", "Client segments that carried a PROXY header and were cut short at their end to fit the server side's MTU; the client sends the rest again.", nil, nil)
	dUntracked  = prometheus.NewDesc("tapvs_sources_untracked_total", "New connections let in without a per-source count: every entry of their source's set held open connections.", nil, nil)
	dTOA        = prometheus.NewDesc("tapvs_toa_total", "Client segments of TOA services that should carry the client's address: inserted, or sent without it for lack of room (options past 40 bytes, a packet past the server side's MTU).", []string{"result"}, nil)
	dLIPConns   = prometheus.NewDesc("tapvs_lip_connections", "Connections bound to the local address (ports in use).", labelsLIP, nil)
	dLIPConf    = prometheus.NewDesc("tapvs_lip_port_conflicts_total", "Candidate ports already in use toward the same server.", labelsLIP, nil)
	dLIPExh     = prometheus.NewDesc("tapvs_lip_port_exhausted_total", "Allocations that found no free port on this address.", labelsLIP, nil)
	dPollSleep  = prometheus.NewDesc("tapvs_busy_poll_sleeps_total", "Times the busy poller found every queue empty for interfaces.busy_poll and slept.", nil, nil)
	dURing      = prometheus.NewDesc("tapvs_tap_io_uring", "1 if the TAPs are read and written through io_uring (interfaces.io), 0 with read/write system calls.", nil, nil)
	dUEnters    = prometheus.NewDesc("tapvs_uring_enters_total", "io_uring_enter calls of the io_uring poller; divided by the frames read, its system calls per frame.", nil, nil)
	dUDPProxy   = prometheus.NewDesc("tapvs_udp_proxy_headers_total", "PROXY v2 headers put before UDP datagrams toward real servers (client_address: proxy-v2).", nil, nil)
	dFrames     = prometheus.NewDesc("tapvs_frames_total", "Frames per TAP queue, by what became of them.", append(labelsQ, "result"), nil)
	dPeerUp     = prometheus.NewDesc("tapvs_bgp_peer_up", "BGP session state (1 established, 0 not).", []string{"peer"}, nil)
	dPeerChg    = prometheus.NewDesc("tapvs_bgp_peer_state_changes_total", "BGP session state changes.", []string{"peer"}, nil)
	dPeerSess   = prometheus.NewDesc("tapvs_bgp_peer_sessions_total", "BGP sessions that came up (established).", []string{"peer"}, nil)
	dPeerMsgs   = prometheus.NewDesc("tapvs_bgp_peer_messages_total", "BGP messages, by direction (received, sent).", []string{"peer", "direction"}, nil)
	dRoutes     = prometheus.NewDesc("tapvs_bgp_routes_announced", "Prefixes announced now, by kind (vip, lip).", []string{"kind"}, nil)
	dAnnounce   = prometheus.NewDesc("tapvs_bgp_announcements_total", "Prefixes announced, once per change whatever the number of peers.", nil, nil)
	dWithdraw   = prometheus.NewDesc("tapvs_bgp_withdrawals_total", "Prefixes withdrawn, once per change whatever the number of peers.", nil, nil)
	dSyncRecs   = prometheus.NewDesc("tapvs_sync_records_total", "Connection records of connection sync (sync:): queued (to every peer), dropped (the send queue full), too_big, feed_dropped (a change the balancer's feed had no room for), received (from peers, checked), applied (put in the table or updating an entry), templates_applied (persistence templates made or refreshed, a takeover's included), adopted (a peer's connection this instance took over, its server's segments having come here), refused_<reason> (invalid, unknown_service, unknown_dest, unknown_lip, stale, table_full, conflict; a takeover's refusals count here too).", []string{"result"}, nil)
	dSyncDgram  = prometheus.NewDesc("tapvs_sync_datagrams_total", "Datagrams of connection sync: sent (UPDATEs, each to every peer), send_error, received (accepted), lost (peers' UPDATEs announced and never received), refused_<reason> (not_peer, short, long, magic, version, key, tag, stale_epoch, replay, bad_records).", []string{"result"}, nil)
	dSyncCopy   = prometheus.NewDesc("tapvs_sync_copies_total", "Full copies of connection sync: asked (of peers, retries included), done, failed (given up), served (to peers), busy (a request refused, one being served).", []string{"result"}, nil)
	dSyncBytes  = prometheus.NewDesc("tapvs_sync_bytes_total", "UDP payload bytes of connection sync's datagrams: sent (every datagram the kernel took, of every type, to every peer), received (every datagram accepted).", []string{"direction"}, nil)
	dSyncPeers  = prometheus.NewDesc("tapvs_sync_peers_alive", "Connection sync's peers heard from within the last second.", nil, nil)
	dSyncJoin   = prometheus.NewDesc("tapvs_sync_joined", "1 once this instance holds the table (its peers' full copies, or sync.join_timeout passed) and announces its routes; 0 while it joins, announcing none.", nil, nil)
	dHandoff    = prometheus.NewDesc("tapvs_handoff_frames_total", "Client frames handed between the cluster's instances (handoff:): sent (each to every peer), rate_limited and too_big (not sent), send_error (datagrams the kernel refused), received (checked, given to the balancer), refused_<reason> (short, long, magic, version, tag, not_peer), super_frame_dropped (received, but this instance's TAPs are plain).", []string{"result"}, nil)
	dFaults     = prometheus.NewDesc("tapvs_fault_frames_total", "Frames the faults in force (faults:) met, by result: seen (of the fault's target and direction), dropped (SYNs included), refused (SYNs answered with an RST), delayed (put on a delay line: latency, jitter, rate, duplicate, reorder; duplicates included). A fault's counters start when it is set and go with it.", []string{"target", "direction", "result"}, nil)
	dFaultRST   = prometheus.NewDesc("tapvs_fault_resets_total", "Connections the faults in force (faults:) ended with RSTs (reset_bytes, reset_after). A fault's counters start when it is set and go with it.", []string{"target", "direction"}, nil)
	dDraining   = prometheus.NewDesc("tapvs_draining", "1 while the instance is drained (its VIPs withdrawn from the routers), 0 otherwise.", nil, nil)
)

// faultCounters exports what f has done through counter.
func faultCounters(f nat.FaultStats, counter func(d *prometheus.Desc, v uint64, l ...string)) {
	t, d := f.Target.String(), f.Dir.String()
	counter(dFaults, f.Frames, t, d, "seen")
	counter(dFaults, f.Dropped, t, d, "dropped")
	counter(dFaults, f.Refused, t, d, "refused")
	counter(dFaults, f.Delayed, t, d, "delayed")
	counter(dFaultRST, f.Reset, t, d)
}

// New returns a collector for a running tapvs.
func New(bal *nat.Balancer, st *netstack.Stack, health Health) *Collector {
	return &Collector{bal: bal, st: st, health: health}
}

// SetCluster has the collector export the BGP speaker's and the drain's
// metrics from cl. Call it before the collector is registered.
func (c *Collector) SetCluster(cl Cluster) { c.cluster = cl }

// SetHandoff has the collector export the handoff's counters.
func (c *Collector) SetHandoff(stats func() handoff.Stats) { c.handoff = stats }

// Sync is connection sync's state for the collector: its counters, the
// peers alive, and whether this instance has joined (holds the table).
type Sync struct {
	Stats  connsync.Stats
	Alive  int
	Joined bool
}

// SetSync has the collector export connection sync's counters and how
// many of its peers are alive, and whether it has joined.
func (c *Collector) SetSync(stats func() Sync) { c.sync = stats }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dConns, dConnsMax, dQuar, dFragBytes, dReasm, dFragTimeEx, dCreated, dExpired, dExpRST, dDrops, dSPCookies, dSPOpened, dSPFailed, dSPRetries, dSPTW, dProxyHdrs, dProxyCut, dUntracked, dSvcHalf, dSvcQuorum, dTOA,
		dActive, dInactive, dSched, dWeight, dOverload, dUp, dPkts, dBytes, dSvcConns, dLIPConns, dLIPConf, dLIPExh, dFrames, dPollSleep, dURing, dUEnters, dUDPProxy,
		dPeerUp, dPeerChg, dPeerSess, dPeerMsgs, dRoutes, dAnnounce, dWithdraw, dDraining, dHandoff, dSyncRecs, dSyncDgram, dSyncBytes, dSyncCopy, dSyncPeers, dSyncJoin, dFaults, dFaultRST} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge(dConns, float64(c.bal.Table().Len()))
	gauge(dConnsMax, float64(c.bal.MaxConns()))
	gauge(dQuar, float64(c.bal.Quarantined()))
	gauge(dFragBytes, float64(c.bal.FragmentBytes()))
	counter(dReasm, c.bal.Reassembled())
	sent, notSent := c.bal.Stats.FragTimeExceeded()
	counter(dFragTimeEx, sent, "sent")
	counter(dFragTimeEx, notSent, "not_sent")
	created, expired := c.bal.Stats.Conns()
	counter(dCreated, created)
	counter(dExpired, expired)
	counter(dExpRST, c.bal.Stats.ExpiredResets())
	for reason, n := range c.bal.Stats.Drops() {
		counter(dDrops, n, reason)
	}
	for _, f := range c.bal.Faults() {
		faultCounters(f, counter)
	}
	cookies, opened, failed, retries := c.bal.Stats.Synproxy()
	counter(dSPCookies, cookies)
	counter(dSPOpened, opened)
	counter(dSPFailed, failed)
	counter(dSPRetries, retries)
	counter(dSPTW, c.bal.Stats.SynproxyTimeWait())
	counter(dProxyHdrs, c.bal.Stats.ProxyHeaders())
	counter(dProxyCut, c.bal.Stats.ProxyCut())
	counter(dUntracked, c.bal.Stats.SourcesUntracked())
	counter(dUDPProxy, c.bal.Stats.UDPProxyHeaders())
	toa, toaNoRoom := c.bal.Stats.TOA()
	counter(dTOA, toa, "inserted")
	counter(dTOA, toaNoRoom, "no_room")
	if c.st != nil {
		if sleeps, polling := c.st.PollSleeps(); polling {
			counter(dPollSleep, sleeps)
		}
		enters, ring := c.st.RingEnters()
		if ring {
			gauge(dURing, 1)
			counter(dUEnters, enters)
		} else {
			gauge(dURing, 0)
		}
	}
	for _, s := range c.bal.Services() {
		vip := fmt.Sprintf("%s/%s", s.Protocol, netipPort(s))
		if s.Mark != 0 {
			vip = fmt.Sprintf("FWM/%d", s.Mark) // a match service (nat/match.go): VIP:0 is a port-0 service's
		}
		counter(dSvcConns, s.Traffic().Conns, s.Name(), vip)
		gauge(dSvcHalf, float64(s.HalfOpen()), s.Name(), vip)
		if c.quorum != nil {
			if up, known := c.quorum(s); known {
				gauge(dSvcQuorum, b2f(up), s.Name(), vip)
			}
		}
		for _, d := range s.Dests() {
			l := []string{s.Name(), vip, d.String()}
			a, ia, total := d.Conns()
			gauge(dActive, float64(a), l...)
			gauge(dInactive, float64(ia), l...)
			counter(dSched, total, l...)
			gauge(dWeight, float64(d.Weight()), l...)
			gauge(dOverload, b2f(d.Overloaded()), l...)
			if c.health != nil {
				if up, checked := c.health(s, d); checked {
					gauge(dUp, b2f(up), l...)
				}
			}
			t := d.Traffic()
			counter(dPkts, t.InPkts, append(l, "in")...)
			counter(dPkts, t.OutPkts, append(l, "out")...)
			counter(dBytes, t.InBytes, append(l, "in")...)
			counter(dBytes, t.OutBytes, append(l, "out")...)
		}
		for _, la := range s.LocalAddrs() {
			n, conf, ex := la.Stats()
			l := []string{s.Name(), vip, la.Addr.String()}
			gauge(dLIPConns, float64(n), l...)
			counter(dLIPConf, conf, l...)
			counter(dLIPExh, ex, l...)
		}
	}
	if c.st != nil {
		for _, side := range []struct {
			name string
			ep   *netstack.Endpoint
		}{{"client", c.st.Client}, {"server", c.st.Server}} {
			for q := range side.ep.Stats() {
				qs := &side.ep.Stats()[q]
				l := []string{side.name, strconv.Itoa(q)}
				counter(dFrames, qs.Received.Load(), append(l, "received")...)
				counter(dFrames, qs.Forwarded.Load(), append(l, "forwarded")...)
				counter(dFrames, qs.Replied.Load(), append(l, "replied")...)
				counter(dFrames, qs.Passed.Load(), append(l, "passed")...)
				counter(dFrames, qs.Stolen.Load(), append(l, "held")...)
				counter(dFrames, qs.Released.Load(), append(l, "released")...)
				counter(dFrames, qs.Dropped.Load(), append(l, "dropped")...)
				counter(dFrames, qs.Truncated.Load(), append(l, "truncated")...)
				counter(dFrames, qs.TxErrors.Load(), append(l, "tx_error")...)
				counter(dFrames, qs.Panics.Load(), append(l, "panic")...)
				counter(dFrames, qs.HandedOff.Load(), append(l, "handed_off")...)
			}
		}
	}
	if c.handoff != nil {
		h := c.handoff()
		for result, n := range map[string]uint64{"sent": h.Sent, "rate_limited": h.RateLimited, "too_big": h.TooBig,
			"send_error": h.SendErrors, "received": h.Received} {
			counter(dHandoff, n, result)
		}
		for reason, n := range h.Refused {
			counter(dHandoff, n, "refused_"+reason)
		}
		counter(dHandoff, c.st.HandoffDropped(), "super_frame_dropped")
	}
	if c.sync != nil {
		c.collectSync(gauge, counter)
	}
	if c.cluster != nil {
		c.collectCluster(gauge, counter)
	}
}

// collectSync exports connection sync's counters, the balancer's side of
// them (its feed, its imports) with them.
func (c *Collector) collectSync(gauge func(*prometheus.Desc, float64, ...string), counter func(*prometheus.Desc, uint64, ...string)) {
	y := c.sync()
	s := y.Stats
	gauge(dSyncPeers, float64(y.Alive))
	gauge(dSyncJoin, b2f(y.Joined))
	for result, n := range map[string]uint64{"queued": s.Queued, "dropped": s.Dropped, "too_big": s.TooBig,
		"feed_dropped": c.bal.FeedDropped(), "received": s.Applied, "applied": c.bal.Stats.Imported(), "templates_applied": c.bal.Stats.TemplatesImported(), "adopted": c.bal.Stats.Adopted()} {
		counter(dSyncRecs, n, result)
	}
	for reason, n := range c.bal.Stats.ImportRefused() {
		counter(dSyncRecs, n, "refused_"+reason)
	}
	for result, n := range map[string]uint64{"sent": s.Sent, "send_error": s.SendErrors, "received": s.Received, "lost": s.Lost} {
		counter(dSyncDgram, n, result)
	}
	for reason, n := range s.Refused {
		counter(dSyncDgram, n, "refused_"+reason)
	}
	counter(dSyncBytes, s.SentBytes, "sent")
	counter(dSyncBytes, s.ReceivedBytes, "received")
	for result, n := range map[string]uint64{"asked": s.CopiesAsked, "done": s.CopiesDone, "failed": s.CopiesFail,
		"served": s.CopiesServed, "busy": s.CopyBusy} {
		counter(dSyncCopy, n, result)
	}
}

// collectCluster exports the drain, and the speaker if there is one.
func (c *Collector) collectCluster(gauge func(*prometheus.Desc, float64, ...string), counter func(*prometheus.Desc, uint64, ...string)) {
	gauge(dDraining, b2f(c.cluster.DrainStatus().Draining))
	b, ok := c.cluster.BGP()
	if !ok {
		return
	}
	counter(dAnnounce, b.Announced)
	counter(dWithdraw, b.Withdrawn)
	// A peer twice would fail the whole scrape (the same labels twice);
	// the configuration refuses it, and this keeps a scrape whole anyway.
	seen := map[string]bool{}
	for _, p := range b.Peers {
		if seen[p.Address] {
			continue
		}
		seen[p.Address] = true
		gauge(dPeerUp, b2f(p.State == "established"), p.Address)
		counter(dPeerChg, p.Changes, p.Address)
		counter(dPeerSess, p.Established, p.Address)
		counter(dPeerMsgs, p.Received, p.Address, "received")
		counter(dPeerMsgs, p.Sent, p.Address, "sent")
	}
	kinds := map[string]int{"vip": 0, "lip": 0}
	for _, r := range b.Routes {
		if _, ok := kinds[r.Kind]; ok {
			kinds[r.Kind]++
		}
	}
	for k, n := range kinds {
		gauge(dRoutes, float64(n), k)
	}
}

func netipPort(s *nat.Service) string {
	return net.JoinHostPort(s.Addr.String(), strconv.Itoa(int(s.Port)))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Server serves /metrics.
type Server struct {
	srv  *http.Server
	addr net.Addr
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.addr.String() }

// Serve listens on addr and serves the collector with Go's and the
// process's own metrics.
func Serve(addr string, c *Collector, log *slog.Logger) (*Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	// Any local user may reach this address: a scrape walks every server
	// of every service, so at most two run at once (more get 503), and
	// slow or idle connections are cut.
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), MaxRequestsInFlight: 2}))
	// A probe's endpoint (a pod's readiness and liveness): this server
	// starts last, once the TAPs, services and stack are up, and tapvs run
	// exits when its data path fails; it walks nothing, unlike /metrics.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: time.Minute, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}, addr: ln.Addr()}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return s, nil
}

// Close stops the server.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}
