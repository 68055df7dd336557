package bgp

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/tapvs/tapvs/bgp/bgptest"
)

func speakerConfig(r *bgptest.Router) Config {
	return Config{ASN: 65001, RouterID: netip.MustParseAddr("10.9.9.9"), HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
		ConnectRetry: time.Second, AnnounceLIPs: true,
		Peers: []Peer{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.Port, LocalAddress: bgptest.SpeakerAddr}}}
}

// announced starts a speaker from cfg that announces prefixes, closed when
// the test ends.
func announced(t *testing.T, cfg Config, prefixes ...netip.Prefix) *Speaker {
	t.Helper()
	s, err := Start(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Announce(Own(prefixes...)); err != nil {
		t.Fatal(err)
	}
	return s
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var (
	vip  = netip.MustParsePrefix("172.25.254.100/32")
	lip  = netip.MustParsePrefix("172.26.1.10/32")
	self = bgptest.SpeakerAddr
)

// The speaker announces with next-hop self, withdraws what it no longer
// wants, and withdraws everything on Close.
func TestAnnounceWithdrawClose(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	s, err := Start(speakerConfig(r), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Announce(Own(vip, lip)); err != nil {
		t.Fatal(err)
	}
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self, lip: self})
	if err := s.Announce(Own(lip)); err != nil {
		t.Fatal(err)
	}
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{lip: self})
	st := s.Status()
	if st.Announced != 2 || st.Withdrawn != 1 || len(st.Routes) != 1 || st.Routes[0].Prefix != lip {
		t.Fatalf("status %+v: want 2 announced, 1 withdrawn, route %s", st, lip)
	}
	if len(st.Peers) != 1 || st.Peers[0].State != "established" || st.Peers[0].Established != 1 || st.Peers[0].Received == 0 {
		t.Fatalf("peers %+v: want one established session that received messages", st.Peers)
	}
	// What the router sends is refused: the speaker's table holds its own
	// routes only.
	r.Add(t, netip.MustParsePrefix("10.0.0.0/8"))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if p := s.Status().Peers[0]; p.Received >= 4 { // OPEN, KEEPALIVE, our UPDATE's answer... and the router's UPDATE
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the router's update never arrived")
		}
	}
	var held []string
	s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
		func(prefix bgp.NLRI, _ []*apiutil.Path) { held = append(held, prefix.String()) })
	if !slices.Equal(held, []string{lip.String()}) {
		t.Fatalf("speaker's table %v, want only its own %s", held, lip)
	}
	s.Close()
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{})
	if err := s.Announce(Own(vip)); err != ErrClosed {
		t.Fatalf("Announce after Close: %v, want ErrClosed", err)
	}
}

// Attributes: a next hop, communities and MED as configured.
func TestAttributes(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	cfg := speakerConfig(r)
	cfg.NextHop = netip.MustParseAddr("10.1.1.2")
	cfg.Communities = []uint32{65001<<16 | 100}
	cfg.MED, cfg.HasMED = 50, true
	announced(t, cfg, vip)
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: cfg.NextHop})
	var comms []uint32
	var med int64 = -1
	r.Srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
		func(_ bgp.NLRI, paths []*apiutil.Path) {
			for _, a := range paths[0].Attrs {
				switch a := a.(type) {
				case *bgp.PathAttributeCommunities:
					comms = a.Value
				case *bgp.PathAttributeMultiExitDisc:
					med = int64(a.Value)
				}
			}
		})
	if !slices.Equal(comms, cfg.Communities) || med != 50 {
		t.Fatalf("communities %v MED %d, want %v 50", comms, med, cfg.Communities)
	}
}

// A reload that keeps a peer's settings keeps its session; a changed
// community re-announces under the new attributes; a removed peer is gone.
func TestReconfigure(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	cfg := speakerConfig(r)
	s := announced(t, cfg, vip)
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self})
	kept, added, removed, err := s.Reconfigure(cfg)
	if err != nil || len(kept) != 1 || len(added)+len(removed) != 0 {
		t.Fatalf("same config: kept %v added %v removed %v err %v", kept, added, removed, err)
	}
	if p := s.Status().Peers[0]; p.Established != 1 || p.State != "established" {
		t.Fatalf("after a reload that kept it: %+v, want the first session still up", p)
	}
	next := cfg
	next.Peers = nil
	if _, _, removed, err = s.Reconfigure(next); err != nil || len(removed) != 1 {
		t.Fatalf("peer removed: %v %v", removed, err)
	}
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{})
	if _, _, _, err := s.Reconfigure(Config{ASN: 65002, RouterID: cfg.RouterID}); err == nil {
		t.Fatal("an ASN change was accepted without a restart")
	}
}

// A TCP-MD5 key the router shares, set by a reload after a wrong one,
// brings the session up.
func TestPasswordChangeConnects(t *testing.T) {
	r := bgptest.Start(t, 65001, "router-secret")
	cfg := speakerConfig(r)
	cfg.Peers[0].Password = "other"
	s, err := Start(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Announce(Own(vip))
	cfg.Peers[0].Password = "router-secret"
	if _, _, _, err := s.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self})
}

// IPv6 VIPs over an IPv4 session go out with next_hop6 (an IPv4 session has
// no IPv6 address of its own to offer as next hop).
func TestIPv6OverIPv4Session(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	cfg := speakerConfig(r)
	cfg.NextHop6 = netip.MustParseAddr("fd00:1::2")
	vip6 := netip.MustParsePrefix("fd00:25:254::100/128")
	s := announced(t, cfg, vip, vip6)
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self, vip6: cfg.NextHop6})
	if err := s.Announce(Own(vip)); err != nil {
		t.Fatal(err)
	}
	r.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self})
}

// A backup LIP goes out with MED = med + 100 + rank, the own routes with
// the configured MED (0 when unset, once backups are configured); a rank
// that changes re-announces the path with its new MED, and a backup that
// becomes an own route gets the owner's.
func TestBackupMED(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	cfg := speakerConfig(r)
	peerLIP := netip.MustParsePrefix("172.26.1.11/32")
	cfg.BackupLIPs = []BackupLIP{{Addr: peerLIP.Addr(), Rank: 1}}
	s := announced(t, cfg)
	if err := s.Announce([]Route{{Prefix: vip}, {Prefix: lip}, {Prefix: peerLIP, Backup: 1}}); err != nil {
		t.Fatal(err)
	}
	r.WaitMEDs(t, map[netip.Prefix]int64{vip: 0, lip: 0, peerLIP: 101})
	if err := s.Announce([]Route{{Prefix: vip}, {Prefix: lip}, {Prefix: peerLIP, Backup: 3}}); err != nil {
		t.Fatal(err)
	}
	r.WaitMEDs(t, map[netip.Prefix]int64{vip: 0, lip: 0, peerLIP: 103})
	if st := s.Status(); st.Announced != 4 || st.Routes[2].Backup != 3 {
		t.Fatalf("status %+v: want 4 announcements (3, then the new rank), the route at rank 3", st)
	}
	// A configured MED is the base of both.
	cfg.MED, cfg.HasMED = 50, true
	if _, _, _, err := s.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	r.WaitMEDs(t, map[netip.Prefix]int64{vip: 50, lip: 50, peerLIP: 153})
	if err := s.Announce([]Route{{Prefix: vip}, {Prefix: lip}, {Prefix: peerLIP}}); err != nil {
		t.Fatal(err)
	}
	r.WaitMEDs(t, map[netip.Prefix]int64{vip: 50, lip: 50, peerLIP: 50})
	// Without backups and a MED, no MED at all, as before.
	cfg.BackupLIPs, cfg.HasMED, cfg.MED = nil, false, 0
	if _, _, _, err := s.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	r.WaitMEDs(t, map[netip.Prefix]int64{vip: -1, lip: -1, peerLIP: -1})
}
