package metrics

import (
	"sync"
	"testing"

	"github.com/tapvs/tapvs/connsync"
	"github.com/tapvs/tapvs/control/api"
)

// fakeCluster is the daemon's BGP speaker and drain as SetCluster takes
// them; bgp nil is a tapvs without a bgp: section.
type fakeCluster struct {
	mu    sync.Mutex
	bgp   *api.BGP
	drain api.Drain
}

func (f *fakeCluster) BGP() (api.BGP, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bgp == nil {
		return api.BGP{}, false
	}
	return *f.bgp, true
}

func (f *fakeCluster) DrainStatus() api.Drain {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.drain
}

var clusterNames = []string{"tapvs_bgp_peer_up", "tapvs_bgp_peer_state_changes_total", "tapvs_bgp_peer_sessions_total",
	"tapvs_bgp_peer_messages_total", "tapvs_bgp_routes_announced", "tapvs_bgp_announcements_total",
	"tapvs_bgp_withdrawals_total", "tapvs_draining"}

// Issue 21: each peer's session, the routes by kind, the route changes and
// the drain, exactly as Prometheus reads them.
func TestExpositionOfBGPAndDrain(t *testing.T) {
	f := &fakeCluster{bgp: &api.BGP{ASN: 65001, RouterID: "10.0.0.1", Announced: 7, Withdrawn: 2,
		Peers: []api.BGPPeer{
			{Address: "10.0.0.254", ASN: 65000, State: "established", Changes: 5, Established: 2, Received: 131, Sent: 129},
			{Address: "fd00::fe", ASN: 65000, State: "active", Changes: 3, Established: 1, Received: 10, Sent: 12, LastError: "hold timer expired"},
			{Address: "10.0.0.254", State: "idle", Changes: 99}, // the configuration refuses it; the scrape stays whole
		},
		Routes: []api.BGPRoute{{Prefix: "172.25.254.100/32", Kind: "vip"}, {Prefix: "2001:db8::1/128", Kind: "vip"},
			{Prefix: "172.25.84.10/32", Kind: "lip"}, {Prefix: "192.0.2.1/32", Kind: "other"}}}}
	c := New(testBalancer(t), nil, nil)
	c.SetCluster(f)
	compare(t, samples(t, c, clusterNames...), `
tapvs_bgp_peer_up{peer="10.0.0.254"} 1
tapvs_bgp_peer_up{peer="fd00::fe"} 0
tapvs_bgp_peer_state_changes_total{peer="10.0.0.254"} 5
tapvs_bgp_peer_state_changes_total{peer="fd00::fe"} 3
tapvs_bgp_peer_sessions_total{peer="10.0.0.254"} 2
tapvs_bgp_peer_sessions_total{peer="fd00::fe"} 1
tapvs_bgp_peer_messages_total{direction="received",peer="10.0.0.254"} 131
tapvs_bgp_peer_messages_total{direction="sent",peer="10.0.0.254"} 129
tapvs_bgp_peer_messages_total{direction="received",peer="fd00::fe"} 10
tapvs_bgp_peer_messages_total{direction="sent",peer="fd00::fe"} 12
tapvs_bgp_routes_announced{kind="vip"} 2
tapvs_bgp_routes_announced{kind="lip"} 1
tapvs_bgp_announcements_total 7
tapvs_bgp_withdrawals_total 2
tapvs_draining 0
`)
	// Drained: the VIPs gone from the speaker's routes, the LIP kept.
	f.mu.Lock()
	f.drain = api.Drain{Draining: true, Conns: 3}
	f.bgp.Routes, f.bgp.Withdrawn, f.bgp.Draining = f.bgp.Routes[2:3], 4, true
	f.mu.Unlock()
	got := samples(t, c, "tapvs_draining", "tapvs_bgp_routes_announced", "tapvs_bgp_withdrawals_total")
	compare(t, got, `
tapvs_bgp_routes_announced{kind="vip"} 0
tapvs_bgp_routes_announced{kind="lip"} 1
tapvs_bgp_withdrawals_total 4
tapvs_draining 1
`)
}

// Without a bgp: section a drain still counts connections: tapvs_draining
// is there, the BGP families are not. Without SetCluster (a collector
// that is not the daemon's) neither is.
func TestDrainWithoutBGP(t *testing.T) {
	c := New(testBalancer(t), nil, nil)
	c.SetCluster(&fakeCluster{drain: api.Drain{Draining: true}})
	compare(t, samples(t, c, clusterNames...), "tapvs_draining 1")
	compare(t, samples(t, New(testBalancer(t), nil, nil), clusterNames...), "")
}

// Connection sync's bytes are exported by direction, from the syncer's
// counters.
func TestSyncBytes(t *testing.T) {
	c := New(testBalancer(t), nil, nil)
	c.SetSync(func() Sync { return Sync{Stats: connsync.Stats{SentBytes: 1500, ReceivedBytes: 700}, Alive: 1} })
	compare(t, samples(t, c, "tapvs_sync_bytes_total"),
		`tapvs_sync_bytes_total{direction="received"} 700
tapvs_sync_bytes_total{direction="sent"} 1500`)
}

// Connection sync's join is a gauge: 0 while the instance joins (it
// announces nothing), 1 once it holds the table; its peers alive beside it.
func TestSyncJoined(t *testing.T) {
	names := []string{"tapvs_sync_joined", "tapvs_sync_peers_alive"}
	for _, joined := range []bool{false, true} {
		c := New(testBalancer(t), nil, nil)
		c.SetSync(func() Sync { return Sync{Alive: 2, Joined: joined} })
		want := "tapvs_sync_joined 0\ntapvs_sync_peers_alive 2"
		if joined {
			want = "tapvs_sync_joined 1\ntapvs_sync_peers_alive 2"
		}
		compare(t, samples(t, c, names...), want)
	}
}
