package daemon

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/bgp/bgptest"
	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/health"
	"github.com/tapvs/tapvs/nat"
)

// matchBase is a match service (FWM 1) with one server on port 0 (the
// client's port) and one on a port of its own; nobody answers for them.
const matchBase = `
interfaces:
  client: {name: tvd-c, address: 172.25.254.254/24}
  server: {name: tvd-s, address: 172.25.84.4/24}
marks:
  - {mark: 1, vip: 172.25.254.100, protocol: tcp, ports: [80, 443]}
services:
  - fwmark: 1
    local_addresses: [172.25.84.10]
    real_servers: [{address: 172.25.84.20, weight: 3}, {address: 172.25.84.21, port: 8080}]
`

// A match service's check through the API (fwm/1): one that connects
// with no port of its own is refused, naming health_check.port, since a
// server is on port 0; with a port it is set, takes the failing servers
// out and lists them in the service's listing, follows a server added and
// deleted; cleared, they are back. A reload puts back what a runtime check
// held out and re-applies the file's check, which the checker keeps by
// the mark.
func TestMatchServiceRuntimeCheck(t *testing.T) {
	d, do := apiDaemon(t, matchBase)
	const path = "/v1/services/fwm/1/health"
	get := func() api.Health {
		t.Helper()
		code, body := do("GET", path, "")
		var h api.Health
		if code != 200 || json.Unmarshal([]byte(body), &h) != nil {
			t.Fatalf("GET: %d %s", code, body)
		}
		return h
	}
	weights := func() map[string]int {
		s, err := d.Balancer.MatchService(1)
		if err != nil {
			t.Fatal(err)
		}
		w := map[string]int{}
		for _, dst := range s.Dests() {
			w[dst.String()] = dst.Weight()
		}
		return w
	}
	filed := map[string]int{"172.25.84.20:0": 3, "172.25.84.21:8080": 1}
	out := map[string]int{"172.25.84.20:0": 0, "172.25.84.21:8080": 0}
	waitWeights := func(what string, want map[string]int) {
		t.Helper()
		eventually(5*time.Second, func() bool { return reflect.DeepEqual(weights(), want) })
		if w := weights(); !reflect.DeepEqual(w, want) {
			t.Fatalf("%s: weights %v, want %v", what, w, want)
		}
	}
	if h := get(); h.Source != "none" || len(h.Servers) != 0 {
		t.Fatalf("before any check: %+v", h)
	}
	for _, typ := range []string{"tcp", "http", "udp"} {
		code, msg := do("PUT", path, `{"type":"`+typ+`"}`)
		if code != 400 || !strings.Contains(msg, "health_check.port: is needed: real server 172.25.84.20:0 is on port 0") || strings.Contains(msg, `\n`) {
			t.Errorf("PUT %s without a port: %d %s, want 400 naming health_check.port", typ, code, msg)
		}
	}
	if h := get(); h.Source != "none" || d.checker.Load() != nil || !reflect.DeepEqual(weights(), filed) {
		t.Fatalf("refusals changed something: %+v", h)
	}

	set := api.HealthCheck{Type: "tcp", Port: 80, Interval: "50ms", Timeout: "40ms", Rise: 1, Fall: 1}
	b, _ := json.Marshal(set)
	if code, msg := do("PUT", path, string(b)); code != 200 || !strings.Contains(msg, "next reload") {
		t.Fatalf("PUT: %d %s", code, msg)
	}
	waitWeights("a runtime check of servers that do not answer", out)
	hc := get()
	if hc.Source != "runtime" || hc.Check == nil || !reflect.DeepEqual(*hc.Check, set) || len(hc.Servers) != 2 || hc.Servers[0].Healthy {
		t.Fatalf("GET after PUT: %+v", hc)
	}
	var listed []api.HealthView
	for _, s := range d.Manager.Services() {
		if s.FWMark == 1 {
			listed = s.Health
		}
	}
	if len(listed) != 2 || listed[0].Dest != "172.25.84.20:0" || listed[0].Healthy {
		t.Fatalf("the FWM 1 listing's checks: %+v", listed)
	}
	// A server added under the check is checked (its port 0 too: the
	// check has its own); deleted, it is no longer.
	added := netip.MustParseAddrPort("172.25.84.22:0")
	two := 2
	if err := d.Manager.AddDest(control.ServiceKey{Mark: 1}, control.DestSpec{Addr: added, Weight: &two}); err != nil {
		t.Fatal(err)
	}
	waitWeights("a server added under the runtime check", map[string]int{"172.25.84.20:0": 0, "172.25.84.21:8080": 0, added.String(): 0})
	if n := len(get().Servers); n != 3 {
		t.Fatalf("after adding a server: %d servers checked, want 3", n)
	}
	if err := d.Manager.DeleteDest(control.ServiceKey{Mark: 1}, added); err != nil {
		t.Fatal(err)
	}
	waitWeights("the added server deleted", out)
	if code, _ := do("DELETE", path, ""); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	waitWeights("cleared", filed)
	if code, _ := do("PUT", path, string(b)); code != 200 {
		t.Fatalf("PUT again: %d", code)
	}
	waitWeights("set again", out)

	// A reload: the servers the runtime check held out are back, and the
	// file's check (not probed yet: its warmup is its interval) is kept
	// by the mark.
	file := filepath.Join(t.TempDir(), "tapvs.yaml")
	withCheck := strings.Replace(matchBase, "    real_servers:", "    health_check: {type: tcp, port: 80, interval: 1h, timeout: 1s}\n    real_servers:", 1)
	if err := os.WriteFile(file, []byte(withCheck), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(file); err != nil {
		t.Fatal(err)
	}
	waitWeights("reloaded", filed)
	if h := get(); h.Source != "file" || len(h.Servers) != 2 {
		t.Fatalf("GET after reload: %+v", h)
	}
	tg := d.checker.Load().Targets(health.Key{Mark: 1})
	if len(tg) != 2 || tg[0].Mark != 1 || tg[0].VIP != netip.MustParseAddrPort("172.25.254.100:0") || tg[0].Spec.Port != 80 || tg[0].Spec.Interval != time.Hour {
		t.Fatalf("after reload, targets %+v", tg)
	}
}

// A match service's keepalived behaviour goes to the checker by its mark,
// and a reload keeps its lost quorum: the server held out is not put back
// at the file's weight, and the sorry server (on port 0) stays.
func TestMatchServiceReloadKeepsALostQuorum(t *testing.T) {
	const text = `
interfaces:
  client: {name: tvd-c, address: 172.25.254.254/24}
  server: {name: tvd-s, address: 172.25.84.4/24}
marks:
  - {mark: 1, vip: 172.25.254.100, protocol: tcp, ports: [80, 443]}
services:
  - fwmark: 1
    local_addresses: [172.25.84.10]
    sorry_server: '172.25.84.99:0'
    quorum: 3
    alpha: true
    real_servers:
      - {address: 172.25.84.20, weight: 5, health_check: {type: tcp, port: 80, interval: 1h}}
      - {address: 172.25.84.21}
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
	vip0 := netip.MustParseAddrPort("172.25.254.100:0")
	rs20, rs21, sorry := netip.MustParseAddrPort("172.25.84.20:0"), netip.MustParseAddrPort("172.25.84.21:0"), netip.MustParseAddrPort("172.25.84.99:0")
	weights := func(step string) {
		t.Helper()
		s, err := bal.MatchService(1)
		if err != nil {
			t.Fatal(err)
		}
		got := map[netip.AddrPort]int{}
		for _, d := range s.Dests() {
			got[netip.AddrPortFrom(d.Addr, d.Port)] = d.Weight()
		}
		if len(got) != 3 || got[rs20] != 0 || got[rs21] != 0 || got[sorry] != 1 {
			t.Fatalf("%s: weights %v, want %s and %s at 0, the sorry server %s at 1", step, got, rs20, rs21, sorry)
		}
	}
	targets, vs := healthTargets(cfg)
	if len(targets) != 1 || targets[0].Mark != 1 || targets[0].VIP != vip0 || targets[0].RS != rs20 || !targets[0].Alpha ||
		len(vs) != 1 || vs[0].Mark != 1 || vs[0].VIP != vip0 || vs[0].Sorry != sorry || vs[0].Quorum != 3 || len(vs[0].Servers) != 2 {
		t.Fatalf("targets %+v, vs %+v", targets, vs)
	}
	hc := health.New(bal, nil, 1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	hc.SetVS(vs)
	hc.Start(targets, nil) // alpha: rs20 down, 1 < quorum 3
	defer hc.Close()
	weights("started")
	d := &Daemon{}
	d.checker.Store(hc)
	if up, known := hc.Serving(health.Key{Mark: 1}); up || !known {
		t.Fatalf("FWM 1 serving %v (known %v): want below quorum", up, known)
	}
	next, err := config.Parse(strings.Replace(text, "{address: 172.25.84.21}", "{address: 172.25.84.21, weight: 2}", 1))
	if err != nil {
		t.Fatal(err)
	}
	res, _, err := decideReload(control.NewManager(bal, nil), cfg, next, d.heldDown)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Kept) != 1 || res.Kept[0] != "fwm 1 real server 172.25.84.99:0" || len(res.Reverted) != 0 {
		t.Fatalf("kept %q, reverted %q: want the sorry server kept, nothing reverted", res.Kept, res.Reverted)
	}
	weights("reloaded")
}

// Below quorum a match service's selector VIP is no longer announced, as
// a VIP:port service's VIP is not (TestAnnounceStopsBelowQuorum): its
// servers still up are held at 0; with its quorum back (a reload lowering
// it), announced again.
func TestAnnounceStopsBelowQuorumMatch(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	text := base + `  - fwmark: 1
    quorum: 2
    alpha: true
    local_addresses: [172.25.84.11]
    real_servers: [{address: 172.25.84.21, health_check: {type: tcp, port: 443, interval: 1h}}, {address: 172.25.84.22}]
marks:
  - {mark: 1, vip: 172.25.254.101, protocol: tcp, ports: [443, 8443]}
`
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
	g.expect(t, vip80, vip443, lip10, lip11) // no checker yet: every server at its weight
	hc := start(text, nil)                   // alpha: .21 down; .22 (weight 1) < quorum 2
	g.expect(t, vip80, lip10, lip11)
	hc.Close()
	hc = start(strings.Replace(text, "quorum: 2", "quorum: 1", 1), hc) // 1 >= 1
	defer hc.Close()
	g.expect(t, vip80, vip443, lip10, lip11)
}
