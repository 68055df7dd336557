package control

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// A match service through the API: added by its mark ({"fwmark": 1}),
// addressed by fwm/1 in paths, listed with its mark and selector and no
// protocol or addr; its health check reaches the daemon's checks by its
// mark alone; a mark not in marks:, a key naming both a mark and a
// VIP:port, a bad fwm path and a check of a mark with no service refused,
// one line each.
func TestAPIMatchService(t *testing.T) {
	m := newManager(t)
	vip := netip.MustParseAddr("10.0.0.1")
	if err := m.Update(func(tx *nat.Tx) error {
		return tx.SetMarks(map[uint32]nat.Match{1: {Addr: vip, Protocol: nat.TCP, Ports: []nat.PortRange{{Lo: 443, Hi: 443}, {Lo: 80, Hi: 80}}},
			2: {Addr: vip, Protocol: nat.UDP, Ports: []nat.PortRange{{Lo: 53, Hi: 53}}}})
	}); err != nil {
		t.Fatal(err)
	}
	checks := &fakeChecks{set: map[ServiceKey]api.HealthCheck{}}
	m.SetChecks(checks)
	do := serve(t, m)
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/services", `{"fwmark":2}`},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:9000"}`},
		{"POST", "/v1/services", `{"fwmark":1,"scheduler":"rr","persistent":600,"persistence_netmask":"255.255.255.0"}`},
		{"POST", "/v1/services/fwm/1/dests", `{"addr":"10.1.0.1:0"}`},
		{"POST", "/v1/services/fwm/1/laddrs", `{"addr":"10.2.0.1"}`},
		{"PUT", "/v1/services/fwm/1", `{"scheduler":"wrr"}`},
		{"PUT", "/v1/services/fwm/1/dests/10.1.0.1:0", `{"weight":3}`},
		{"POST", "/v1/services/fwm/1/zero", ``},
	} {
		if c, b := do(tc.method, tc.path, tc.body); c != 204 {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, c, b)
		}
	}
	// Listed VIP:port services first, then match services by mark, as
	// ipvsadm sorts them (fwmark first).
	svcs := m.Services()
	if len(svcs) != 3 || svcs[0].Addr != "10.0.0.1:9000" || svcs[1].FWMark != 1 || svcs[2].FWMark != 2 || svcs[2].Match.Protocol != "udp" {
		t.Fatalf("listed %+v", svcs)
	}
	s := svcs[1]
	if s.FWMark != 1 || s.Protocol != "" || s.Addr != "" || s.Match == nil || s.Match.VIP != "10.0.0.1" || s.Match.Ports != "80,443" ||
		s.Scheduler != "wrr" || s.Persistent != 600 || s.PersistenceNetmask != "255.255.255.0" || len(s.Dests) != 1 || s.Dests[0].Weight != 3 {
		t.Fatalf("listed as %+v", s)
	}
	if c, b := do("GET", "/v1/services/fwm/1/health", ""); c != 200 || !strings.Contains(b, `"source":"none"`) {
		t.Fatalf("GET /v1/services/fwm/1/health: %d %s", c, b)
	}
	if c, b := do("PUT", "/v1/services/fwm/1/health", `{"type":"tcp","port":443}`); c != 200 || !strings.Contains(b, "until the next reload") {
		t.Fatalf("PUT /v1/services/fwm/1/health: %d %s", c, b)
	}
	if hc, ok := checks.set[ServiceKey{Mark: 1}]; !ok || hc.Port != 443 || len(checks.set) != 1 {
		t.Fatalf("the checks got %+v, want fwm 1's tcp check on port 443", checks.set)
	}
	if c, b := do("GET", "/v1/services/fwm/1/health", ""); c != 200 || !strings.Contains(b, `"source":"runtime","check":{"type":"tcp","port":443}`) {
		t.Fatalf("GET /v1/services/fwm/1/health after PUT: %d %s", c, b)
	}
	if c, b := do("DELETE", "/v1/services/fwm/1/health", ""); c != 200 || len(checks.set) != 0 {
		t.Fatalf("DELETE /v1/services/fwm/1/health: %d %s, left %v", c, b, checks.set)
	}
	if c, b := do("GET", "/v1/services", ""); c != 200 || !strings.Contains(b, `"fwmark":1,"match":{"vip":"10.0.0.1","protocol":"tcp","ports":"80,443"}`) {
		t.Fatalf("GET /v1/services: %d %s", c, b)
	}
	for _, tc := range []struct{ method, path, body, want string }{
		{"POST", "/v1/services", `{"fwmark":3,"scheduler":"rr"}`, "mark 3 is not defined"},
		{"POST", "/v1/services", `{"fwmark":1,"protocol":"tcp","addr":"10.0.0.1:80"}`, "fwmark 1 names the service alone"},
		{"DELETE", "/v1/services/fwm/0", ``, `\"0\" is not a mark`},
		{"DELETE", "/v1/services/fwm/x", ``, `\"x\" is not a mark`},
		{"DELETE", "/v1/services/fwm/3", ``, "FWM 3: service not defined"},
		{"PUT", "/v1/services/fwm/3/health", `{"type":"tcp","port":80}`, "FWM 3: service not defined"},
		{"GET", "/v1/services/fwm/0/health", ``, `\"0\" is not a mark`},
	} {
		c, b := do(tc.method, tc.path, tc.body)
		if c < 400 || !strings.Contains(b, tc.want) || strings.Count(strings.TrimSpace(b), "\n") > 0 {
			t.Errorf("%s %s: %d %s, want a refusal with %q", tc.method, tc.path, c, b, tc.want)
		}
	}
	if c, b := do("DELETE", "/v1/services/fwm/1", ""); c != 204 {
		t.Fatalf("delete: %d %s", c, b)
	}
	if l := m.Services(); len(l) != 2 || l[1].FWMark != 2 {
		t.Fatalf("after DELETE /v1/services/fwm/1: %+v", l)
	}
}
