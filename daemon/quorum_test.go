package daemon

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/bgp/bgptest"
	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/health"
	"github.com/tapvs/tapvs/nat"
)

// A service's keepalived behaviour goes from the file to the checker
// (targets and quorums), and a reload keeps a lost quorum: the server it holds
// out (up, unchecked) is not put back at the file's weight, and the sorry
// server stays.
func TestReloadKeepsALostQuorum(t *testing.T) {
	const text = `
interfaces:
  client: {name: tvd-c, address: 172.25.254.254/24}
  server: {name: tvd-s, address: 172.25.84.4/24}
services:
  - vip: 172.25.254.100
    port: 80
    local_addresses: [172.25.84.10]
    sorry_server: '172.25.84.99:8080'
    quorum: 3
    alpha: true
    real_servers:
      - {address: 172.25.84.20, port: 8080, weight: 5, health_check: {type: tcp, interval: 1h}}
      - {address: 172.25.84.21, port: 8080}
`
	cfg, err := config.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	bal, err := nat.New(nat.Config{MaxConns: cfg.MaxConns, PortMin: cfg.PortMin, PortMax: cfg.PortMax, Timeouts: cfg.Timeouts,
		ClientNet: cfg.Client.Address, ServerNet: cfg.Server.Address, Readers: 1,
		ClientMAC: [6]byte{2, 0, 0, 0, 0, 1}, ServerMAC: [6]byte{2, 0, 0, 0, 0, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bal.Update(func(tx *nat.Tx) error { return cfg.Apply(tx, nil) }); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddrPort("172.25.254.100:80")
	rs20, rs21, sorry := netip.MustParseAddrPort("172.25.84.20:8080"), netip.MustParseAddrPort("172.25.84.21:8080"), netip.MustParseAddrPort("172.25.84.99:8080")
	weights := func(step string) {
		t.Helper()
		s, err := bal.Service(nat.TCP, vip.Addr(), vip.Port())
		if err != nil {
			t.Fatal(err)
		}
		got := map[netip.AddrPort]int{}
		for _, d := range s.Dests() {
			got[netip.AddrPortFrom(d.Addr, d.Port)] = d.Weight()
		}
		want := map[netip.AddrPort]int{rs20: 0, rs21: 0, sorry: 1}
		if len(got) != len(want) || got[rs20] != 0 || got[rs21] != 0 || got[sorry] != 1 {
			t.Fatalf("%s: weights %v, want %v", step, got, want)
		}
	}
	targets, vs := healthTargets(cfg)
	if len(targets) != 1 || !targets[0].Alpha || targets[0].RS != rs20 || len(vs) != 1 || vs[0].Sorry != sorry || vs[0].Quorum != 3 || len(vs[0].Servers) != 2 {
		t.Fatalf("targets %+v, vs %+v", targets, vs)
	}
	hc := health.New(bal, nil, 1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	hc.SetVS(vs)
	hc.Start(targets, nil) // alpha: rs20 down, 1 < quorum 3
	defer hc.Close()
	weights("started")
	d := &Daemon{}
	d.checker.Store(hc)
	// The file changes rs21's weight: a reload would set it, were it not held.
	next, err := config.Parse(strings.Replace(text, "port: 8080}", "port: 8080, weight: 2}", 1))
	if err != nil {
		t.Fatal(err)
	}
	res, _, err := decideReload(control.NewManager(bal, nil), cfg, next, d.heldDown)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Kept) != 1 || res.Kept[0] != "tcp 172.25.254.100:80 real server 172.25.84.99:8080" || len(res.Reverted) != 0 {
		t.Fatalf("kept %q, reverted %q: want the sorry server kept, nothing reverted", res.Kept, res.Reverted)
	}
	weights("reloaded")
}

// A service below quorum is no longer announced: its servers still up are
// held at 0, so no service of its VIP has a weight above 0 (cluster.go's
// pass); with its quorum back (here a reload lowering it), announced again.
func TestAnnounceStopsBelowQuorum(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	text := strings.Replace(clusterBase, "port: 443\n", "port: 443\n    quorum: 2\n    alpha: true\n", 1)
	text = strings.Replace(text, "{address: 172.25.84.21, port: 8443}", "{address: 172.25.84.21, port: 8443, health_check: {type: tcp, interval: 1h}}", 1)
	g := newClusterRigFrom(t, r, text+bgpSection(r))
	start := func(text string, prev *health.Checker) *health.Checker {
		cfg, err := config.Parse(text + bgpSection(r))
		if err != nil {
			t.Fatal(err)
		}
		targets, vs := healthTargets(cfg)
		hc := health.New(g.d.Balancer, nil, 1, g.d.log)
		hc.SetVS(vs)
		hc.Start(targets, prev)
		return hc
	}
	hc := start(text, nil) // alpha: .21 down; .22 (weight 1) < quorum 2
	g.expect(t, vip80, lip10, lip11)
	hc.Close()
	hc = start(strings.Replace(text, "quorum: 2", "quorum: 1", 1), hc) // 1 >= 1
	defer hc.Close()
	g.expect(t, vip80, vip443, lip10, lip11)
}

// Only a service with a checked server gets a quorum: without one nothing
// moves, and no quorum gauge is exported for it.
func TestHealthTargetsOnlyCheckedServices(t *testing.T) {
	cfg, err := config.Parse(clusterBase)
	if err != nil {
		t.Fatal(err)
	}
	if targets, vs := healthTargets(cfg); len(targets) != 0 || len(vs) != 0 {
		t.Fatalf("no check: targets %+v, vs %+v", targets, vs)
	}
	text := strings.Replace(clusterBase, "{address: 172.25.84.21, port: 8443}", "{address: 172.25.84.21, port: 8443, health_check: {type: tcp}}", 1)
	if cfg, err = config.Parse(text); err != nil {
		t.Fatal(err)
	}
	targets, vs := healthTargets(cfg)
	if len(targets) != 1 || len(vs) != 1 || vs[0].VIP != netip.MustParseAddrPort("172.25.254.101:443") || len(vs[0].Servers) != 2 {
		t.Fatalf("targets %+v, vs %+v: want the 443 service only", targets, vs)
	}
}

// healthTargets is what startHealth gives a checker for cfg, with no
// runtime check set.
func healthTargets(cfg *config.Config) ([]health.Target, []health.VS) {
	return (&Daemon{}).targets(cfg), quorums(cfg)
}
