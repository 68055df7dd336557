package daemon

import (
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/bgp/bgptest"
	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// clusterRig is a cluster (the announcer) over a balancer with no TAPs, its
// speaker peering with a GoBGP router on loopback: what is announced,
// withdrawn and drained, pass by pass.
type clusterRig struct {
	r   *bgptest.Router
	d   *Daemon
	c   *cluster
	cfg *config.Config
}

const clusterBase = base + `  - vip: 172.25.254.101
    port: 443
    local_addresses: [172.25.84.11]
    real_servers: [{address: 172.25.84.21, port: 8443}, {address: 172.25.84.22, port: 8443}]
`

func bgpSection(r *bgptest.Router) string {
	return "bgp:\n  asn: 65001\n  router_id: 10.9.9.9\n  connect_retry: 1s\n  peers:\n    - {address: 127.0.0.1, asn: 65000, local_address: 127.0.0.2, port: " +
		strconv.Itoa(int(r.Port)) + "}\n"
}

func newClusterRig(t *testing.T) *clusterRig {
	t.Helper()
	r := bgptest.Start(t, 65001, "")
	return newClusterRigFrom(t, r, clusterBase+bgpSection(r))
}

// newClusterRigFrom is newClusterRig with text as the configuration, its
// bgp: section toward r.
func newClusterRigFrom(t *testing.T, r *bgptest.Router, text string) *clusterRig {
	t.Helper()
	cfg, err := config.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	bal, err := nat.New(nat.Config{MaxConns: 100, PortMin: cfg.PortMin, PortMax: cfg.PortMax, Timeouts: cfg.Timeouts,
		ClientNet: cfg.Client.Address, ServerNet: cfg.Server.Address})
	if err != nil {
		t.Fatal(err)
	}
	if err := bal.Update(func(tx *nat.Tx) error { return cfg.Apply(tx, nil) }); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Balancer: bal, log: slog.New(slog.DiscardHandler), stop: make(chan struct{})}
	d.cfg.Store(cfg)
	c, err := newCluster(d, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.withdraw)
	return &clusterRig{r: r, d: d, c: c, cfg: cfg}
}

var (
	vip80  = netip.MustParsePrefix("172.25.254.100/32")
	vip443 = netip.MustParsePrefix("172.25.254.101/32")
	lip10  = netip.MustParsePrefix("172.25.84.10/32")
	lip11  = netip.MustParsePrefix("172.25.84.11/32")
)

// expect runs a pass and waits for the router to hold exactly prefixes,
// each with the speaker's own address as next hop.
func (g *clusterRig) expect(t *testing.T, prefixes ...netip.Prefix) {
	t.Helper()
	g.c.pass()
	want := map[netip.Prefix]netip.Addr{}
	for _, p := range prefixes {
		want[p] = bgptest.SpeakerAddr
	}
	g.r.WaitLearned(t, want)
}

func (g *clusterRig) setWeight(t *testing.T, vip netip.Addr, port uint16, rs string, rsPort uint16, w int) {
	t.Helper()
	err := g.d.Balancer.Update(func(tx *nat.Tx) error {
		s, err := g.d.Balancer.Service(nat.TCP, vip, port)
		if err != nil {
			return err
		}
		return tx.SetWeight(s, netip.MustParseAddr(rs), rsPort, w)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A VIP is announced while one of its real servers has weight > 0, and
// only then; LIPs are announced whatever the weights.
func TestAnnounceFollowsWeights(t *testing.T) {
	g := newClusterRig(t)
	g.expect(t, vip80, vip443, lip10, lip11)
	v443 := vip443.Addr()
	g.setWeight(t, v443, 443, "172.25.84.21", 8443, 0)
	g.expect(t, vip80, vip443, lip10, lip11) // one server left: still serving
	g.setWeight(t, v443, 443, "172.25.84.22", 8443, 0)
	g.expect(t, vip80, lip10, lip11) // none: withdrawn, its LIP stays
	g.setWeight(t, v443, 443, "172.25.84.22", 8443, 3)
	g.expect(t, vip80, vip443, lip10, lip11)
	b, ok := g.c.BGP()
	if !ok || b.Announced != 5 || b.Withdrawn != 1 || len(b.Routes) != 4 || b.Routes[0].Kind != "lip" || b.Routes[2].Kind != "vip" {
		t.Fatalf("BGP() = %+v, %v: want 5 announced, 1 withdrawn, 4 routes (LIPs first)", b, ok)
	}
}

// The last real server deleted withdraws the VIP; the service deleted, its
// VIP stays withdrawn and its LIP goes too once no connection holds it.
func TestAnnounceFollowsDeletes(t *testing.T) {
	g := newClusterRig(t)
	g.expect(t, vip80, vip443, lip10, lip11)
	err := g.d.Balancer.Update(func(tx *nat.Tx) error {
		s, err := g.d.Balancer.Service(nat.TCP, vip80.Addr(), 80)
		if err != nil {
			return err
		}
		return tx.DeleteDest(s, netip.MustParseAddr("172.25.84.20"), 8080)
	})
	if err != nil {
		t.Fatal(err)
	}
	g.expect(t, vip443, lip10, lip11)
	if err := g.d.Balancer.Update(func(tx *nat.Tx) error {
		s, err := tx.Service(nat.TCP, vip443.Addr(), 443)
		if err == nil {
			tx.DeleteService(s)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	g.expect(t, lip10)
}

// A drain withdraws every VIP and keeps the LIPs; its end announces them
// again. DrainStatus says what it took back and that nothing is left.
func TestDrain(t *testing.T) {
	g := newClusterRig(t)
	g.expect(t, vip80, vip443, lip10, lip11)
	g.c.settle = time.Hour
	d := g.c.Drain(true)
	if !d.Draining || d.Empty || d.WithdrawnAt != "" || d.Conns != 0 || d.Since == "" || !slices.Equal(d.Withdrawn, []string{"172.25.254.100", "172.25.254.101"}) {
		t.Fatalf("Drain(true) = %+v: want draining, not empty before the withdrawal has gone out", d)
	}
	g.expect(t, lip10, lip11)
	if d := g.c.DrainStatus(); d.Empty || d.WithdrawnAt == "" {
		t.Fatalf("DrainStatus() = %+v: want the withdrawal's time, and not empty before the routers settle", d)
	}
	g.c.settle = 0
	if d := g.c.DrainStatus(); !d.Empty {
		t.Fatalf("DrainStatus() = %+v: want empty once settled with no connection", d)
	}
	if b, _ := g.c.BGP(); !b.Draining {
		t.Fatal("BGP() does not say draining")
	}
	if d := g.c.Drain(false); d.Draining || d.Empty || d.WithdrawnAt != "" || len(d.Withdrawn) != 0 {
		t.Fatalf("Drain(false) = %+v", d)
	}
	g.expect(t, vip80, vip443, lip10, lip11)
}

// Backup LIPs (bgp.backup_lips) go out beside the own routes with MED
// 100 + rank (the own ones with 0), are answered for by the balancer, stay
// during a drain, and go when a reload takes them off.
func TestAnnounceBackupLIPs(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	peerLIP := netip.MustParsePrefix("172.26.84.50/32")
	withBackup := strings.Replace(bgpSection(r), "  peers:", "  backup_lips: [{address: 172.26.84.50, rank: 2}]\n  peers:", 1)
	g := newClusterRigFrom(t, r, clusterBase+withBackup)
	g.expect(t, vip80, vip443, lip10, lip11, peerLIP)
	g.r.WaitMEDs(t, map[netip.Prefix]int64{vip80: 0, vip443: 0, lip10: 0, lip11: 0, peerLIP: 102})
	if got := g.d.Balancer.BackupLIPs(); !slices.Equal(got, []netip.Addr{peerLIP.Addr()}) {
		t.Fatalf("the balancer's backup LIPs %v, want [%s]", got, peerLIP.Addr())
	}
	if _, lips := g.d.Balancer.Addresses(); !slices.Contains(lips, peerLIP.Addr()) {
		t.Fatalf("LIPs answered for %v: no backup %s", lips, peerLIP.Addr())
	}
	b, _ := g.c.BGP()
	if i := slices.IndexFunc(b.Routes, func(r api.BGPRoute) bool { return r.Prefix == peerLIP.String() }); i < 0 || b.Routes[i].Backup != 2 || b.Routes[i].Kind != "lip" {
		t.Fatalf("BGP() routes %+v: want %s a lip at backup rank 2", b.Routes, peerLIP)
	}
	g.c.Drain(true)
	g.expect(t, lip10, lip11, peerLIP)
	g.c.Drain(false)
	noBackup, err := config.Parse(clusterBase + bgpSection(r))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.c.reload(noBackup); err != nil {
		t.Fatal(err)
	}
	g.expect(t, vip80, vip443, lip10, lip11)
	if got := g.d.Balancer.BackupLIPs(); len(got) != 0 {
		t.Fatalf("backup LIPs %v after the reload took them off", got)
	}
}

// Without announce_lips only the VIPs go out.
func TestAnnounceNoLIPs(t *testing.T) {
	g := newClusterRig(t)
	next := *g.cfg.BGP
	next.AnnounceLIPs = false
	g.c.speaker.Load().Reconfigure(next)
	g.expect(t, vip80, vip443)
}

// A reload that removes the bgp: section withdraws everything; one that
// adds it back announces again.
func TestClusterReload(t *testing.T) {
	g := newClusterRig(t)
	g.expect(t, vip80, vip443, lip10, lip11)
	noBGP, err := config.Parse(clusterBase)
	if err != nil {
		t.Fatal(err)
	}
	if restart, err := g.c.reload(noBGP); err != nil || len(restart) != 0 {
		t.Fatalf("reload without bgp: %v %v", restart, err)
	}
	if _, ok := g.c.BGP(); ok {
		t.Fatal("the speaker still reports after its section went")
	}
	g.expect(t)
	if restart, err := g.c.reload(g.cfg); err != nil || len(restart) != 0 {
		t.Fatalf("reload with bgp: %v %v", restart, err)
	}
	g.expect(t, vip80, vip443, lip10, lip11)
	other, err := config.Parse(clusterBase + bgpSection(g.r) + "")
	if err != nil {
		t.Fatal(err)
	}
	other.BGP.ASN = 65002
	restart, err := g.c.reload(other)
	if err != nil || !slices.Equal(restart, []string{"bgp.asn/router_id"}) {
		t.Fatalf("reload with a new ASN: %v %v, want it named as a restart", restart, err)
	}
	if b, _ := g.c.BGP(); b.ASN != 65001 {
		t.Fatalf("ASN %d after a reload that cannot change it", b.ASN)
	}
}
