// Package bgptest is a router for tests of BGP speakers: a GoBGP on
// loopback that accepts one speaker's session and tells what it learned.
package bgptest

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Loopback addresses: the router listens on RouterAddr; the speaker under
// test connects from SpeakerAddr (its peer's local_address).
var (
	RouterAddr  = netip.MustParseAddr("127.0.0.1")
	SpeakerAddr = netip.MustParseAddr("127.0.0.2")
)

// RouterASN is the router's AS.
const RouterASN = 65000

// Router is a GoBGP playing the router.
type Router struct {
	Srv  *server.BgpServer
	Port uint16
}

// FreePort is a TCP port free on RouterAddr now.
func FreePort(t testing.TB) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(RouterAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// Start starts a router on RouterAddr that accepts a session from
// SpeakerAddr in AS peerASN (with TCP-MD5 password, if not ""); it stops
// when the test ends.
func Start(t testing.TB, peerASN uint32, password string) *Router {
	t.Helper()
	return start(t, peerASN, password, false)
}

// StartHelper is Start with the router a graceful restart helper (RFC
// 4724's Receiving Speaker, as FRR and BIRD are by default): a session
// that ends without a notification leaves the speaker's routes, stale,
// until its next session's End-of-RIB or the restart time.
func StartHelper(t testing.TB, peerASN uint32) *Router {
	t.Helper()
	return start(t, peerASN, "", true)
}

func start(t testing.TB, peerASN uint32, password string, helper bool) *Router {
	t.Helper()
	port := FreePort(t)
	srv := server.NewBgpServer(server.LoggerOption(slog.New(slog.NewTextHandler(io.Discard, nil)), new(slog.LevelVar)))
	go srv.Serve()
	if err := srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: RouterASN, RouterId: RouterAddr.String(), ListenPort: int32(port), ListenAddresses: []string{RouterAddr.String()},
	}}); err != nil {
		t.Fatal(err)
	}
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: SpeakerAddr.String(), PeerAsn: peerASN, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
		AfiSafis:  []*api.AfiSafi{family(api.Family_AFI_IP), family(api.Family_AFI_IP6)},
	}
	if helper {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, HelperOnly: true, RestartTime: 120}
		for _, f := range p.AfiSafis {
			f.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
	}
	if err := srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: p}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		srv.Stop()
	})
	return &Router{Srv: srv, Port: port}
}

func family(afi api.Family_Afi) *api.AfiSafi {
	return &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}
}

// Learned is what the router holds from the speaker (not its own routes):
// prefix → next hop.
func (r *Router) Learned(t testing.TB) map[netip.Prefix]netip.Addr {
	t.Helper()
	got := map[netip.Prefix]netip.Addr{}
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := r.Srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam},
			func(prefix bgp.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					if p.PeerAddress != SpeakerAddr {
						continue // the router's own
					}
					pfx, err := netip.ParsePrefix(prefix.String())
					if err != nil {
						t.Errorf("prefix %s: %v", prefix, err)
						continue
					}
					for _, a := range p.Attrs {
						switch a := a.(type) {
						case *bgp.PathAttributeNextHop:
							got[pfx] = a.Value
						case *bgp.PathAttributeMpReachNLRI:
							got[pfx] = a.Nexthop
						}
					}
				}
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// WaitLearned polls the router until it holds exactly want, for at most
// 15 s.
func (r *Router) WaitLearned(t testing.TB, want map[netip.Prefix]netip.Addr) {
	t.Helper()
	var got map[netip.Prefix]netip.Addr
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = r.Learned(t)
		if len(got) == len(want) {
			same := true
			for p, nh := range want {
				if n, ok := got[p]; !ok || n != nh {
					same = false
				}
			}
			if same {
				return
			}
		}
	}
	t.Fatalf("router holds %v, want %v", got, want)
}

// Established reports whether the speaker's session is up.
func (r *Router) Established(t testing.TB) bool {
	t.Helper()
	up := false
	err := r.Srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: SpeakerAddr.String()}, func(p *api.Peer) {
		up = p.State != nil && p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
	})
	if err != nil {
		t.Fatal(err)
	}
	return up
}

// RemoteGR is the graceful restart capability of the speaker's last OPEN
// (nil: it offered none).
func (r *Router) RemoteGR(t testing.TB) *api.GracefulRestartCapability {
	t.Helper()
	var gr *api.GracefulRestartCapability
	err := r.Srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: SpeakerAddr.String()}, func(p *api.Peer) {
		if p.State == nil {
			return
		}
		for _, c := range p.State.RemoteCap {
			if g := c.GetGracefulRestart(); g != nil {
				gr = g
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return gr
}

// Add announces a route of the router's own (what a speaker must refuse).
func (r *Router) Add(t testing.TB, p netip.Prefix) {
	t.Helper()
	nlri, _ := bgp.NewIPAddrPrefix(p)
	nh, _ := bgp.NewPathAttributeNextHop(RouterAddr)
	if _, err := r.Srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{{Family: bgp.RF_IPv4_UC, Nlri: nlri,
		Attrs: []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), nh}}}}); err != nil {
		t.Fatal(err)
	}
}

// MEDs is the MED of each path the router holds from the speaker, -1 for
// a path without one.
func (r *Router) MEDs(t testing.TB) map[netip.Prefix]int64 {
	t.Helper()
	got := map[netip.Prefix]int64{}
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := r.Srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam},
			func(prefix bgp.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					if p.PeerAddress != SpeakerAddr {
						continue
					}
					pfx, err := netip.ParsePrefix(prefix.String())
					if err != nil {
						t.Errorf("prefix %s: %v", prefix, err)
						continue
					}
					got[pfx] = -1
					for _, a := range p.Attrs {
						if m, ok := a.(*bgp.PathAttributeMultiExitDisc); ok {
							got[pfx] = int64(m.Value)
						}
					}
				}
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// WaitMEDs polls the router until the speaker's paths have exactly the
// MEDs of want (-1: none), for at most 15 s.
func (r *Router) WaitMEDs(t testing.TB, want map[netip.Prefix]int64) {
	t.Helper()
	var got map[netip.Prefix]int64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = r.MEDs(t); maps.Equal(got, want) {
			return
		}
	}
	t.Fatalf("router holds MEDs %v, want %v", got, want)
}
