package daemon

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/health"
	"github.com/tapvs/tapvs/nat"
)

// checkedBase has two real servers nobody answers for (the server TAP has
// no peer): every probe of a check fails.
const checkedBase = `
interfaces:
  client: {name: tvd-c, address: 172.25.254.254/24}
  server: {name: tvd-s, address: 172.25.84.4/24}
services:
  - vip: 172.25.254.100
    port: 80
    local_addresses: [172.25.84.10]
    real_servers: [{address: 172.25.84.20, port: 8080, weight: 3}, {address: 172.25.84.21, port: 8080}]
`

// A check set through the API replaces the file's for its service until a
// reload: refused by the file's rules with the field named and nothing
// changed; set, it reads back as it was set, takes failing servers out,
// and cleared puts them back; a reload re-applies the file, which puts
// back what a runtime check held out and restarts the file's own check.
func TestRuntimeHealthCheck(t *testing.T) {
	d, do := apiDaemon(t, checkedBase)
	const path = "/v1/services/tcp/172.25.254.100:80/health"
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
		s, err := d.Balancer.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
		if err != nil {
			t.Fatal(err)
		}
		w := map[string]int{}
		for _, dst := range s.Dests() {
			w[dst.String()] = dst.Weight()
		}
		return w
	}
	filed := map[string]int{"172.25.84.20:8080": 3, "172.25.84.21:8080": 1}
	out := map[string]int{"172.25.84.20:8080": 0, "172.25.84.21:8080": 0}
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

	// Refused as the file refuses, by the field's name; nothing changes.
	for body, field := range map[string]string{
		`{"type":"icmp"}`:                               "health_check.type",
		`{"type":"tcp","rise":0,"fall":101}`:            "health_check.fall",
		`{"type":"http","http_path":"healthz"}`:         "health_check.http_path",
		`{"type":"tcp","interval":"1s","timeout":"2s"}`: "health_check.timeout",
		`{"type":"tcp","script":["/bin/true"]}`:         "health_check.script",
	} {
		code, msg := do("PUT", path, body)
		if code != 400 || !strings.Contains(msg, field+": ") || strings.Contains(msg, `\n`) {
			t.Errorf("PUT %s: %d %s, want 400 naming %s on one line", body, code, msg, field)
		}
	}
	if code, msg := do("PUT", path, `{"type":"tcp","rize":2}`); code != 400 || !strings.Contains(msg, "rize") {
		t.Errorf("an unknown field: %d %s", code, msg)
	}
	if code, msg := do("PUT", "/v1/services/tcp/172.25.254.100:81/health", `{"type":"tcp"}`); code != 404 || !strings.Contains(msg, api.CodeNoService) {
		t.Errorf("no such service: %d %s", code, msg)
	}
	if h := get(); h.Source != "none" || d.checker.Load() != nil || !reflect.DeepEqual(weights(), filed) {
		t.Fatalf("refusals changed something: %+v", h)
	}

	// Set: it reads back as set, and takes the failing servers out.
	set := api.HealthCheck{Type: "tcp", Interval: "50ms", Timeout: "40ms", Rise: 1, Fall: 1}
	b, _ := json.Marshal(set)
	code, msg := do("PUT", path, string(b))
	if code != 200 || !strings.Contains(msg, "next reload") {
		t.Fatalf("PUT: %d %s, want 200 with the note that a reload re-applies the file", code, msg)
	}
	hc := get()
	if hc.Source != "runtime" || hc.Check == nil || !reflect.DeepEqual(*hc.Check, set) || len(hc.Servers) != 2 {
		t.Fatalf("GET after PUT: %+v", hc)
	}
	waitWeights("a runtime check of servers that do not answer", out)
	for _, s := range get().Servers {
		if s.Healthy || s.Reason == "" {
			t.Errorf("%s: healthy %v (%q), want down with a reason", s.Dest, s.Healthy, s.Reason)
		}
	}

	// A server added after the check was set is checked too: nothing
	// answers there either, so it goes out; deleted, it is not listed.
	added := netip.MustParseAddrPort("172.25.84.22:8080")
	two := 2
	if err := d.Manager.AddDest(control.ServiceKey{Protocol: nat.TCP, Addr: netip.MustParseAddrPort("172.25.254.100:80")}, control.DestSpec{Addr: added, Weight: &two}); err != nil {
		t.Fatal(err)
	}
	waitWeights("a server added under the runtime check", map[string]int{"172.25.84.20:8080": 0, "172.25.84.21:8080": 0, added.String(): 0})
	if n := len(get().Servers); n != 3 {
		t.Fatalf("after -a: %d servers checked, want 3", n)
	}
	if err := d.Manager.DeleteDest(control.ServiceKey{Protocol: nat.TCP, Addr: netip.MustParseAddrPort("172.25.254.100:80")}, added); err != nil {
		t.Fatal(err)
	}
	waitWeights("the added server deleted", out)
	// Cleared at once: the deleted server is not put back (the clear
	// catches up with the delete if the checker has not yet).

	// Cleared: no check, and the servers are back with their weights.
	if code, msg := do("DELETE", path, ""); code != 200 || !strings.Contains(msg, "next reload") {
		t.Fatalf("DELETE: %d %s", code, msg)
	}
	waitWeights("cleared", filed)
	if h := get(); h.Source != "runtime" || h.Check != nil || len(h.Servers) != 0 || d.checker.Load() != nil {
		t.Fatalf("GET after DELETE: %+v, checker %v (want none: nothing is checked)", h, d.checker.Load())
	}

	// A reload re-applies the file: its check (one that has not probed
	// yet: warmup is its interval), in place of the runtime one, and the
	// servers the runtime check held out are back.
	if code, _ := do("PUT", path, string(b)); code != 200 {
		t.Fatalf("PUT again: %d", code)
	}
	waitWeights("set again", out)
	file := filepath.Join(t.TempDir(), "tapvs.yaml")
	withCheck := strings.Replace(checkedBase, "    real_servers:", "    health_check: {type: tcp, interval: 1h, timeout: 1s}\n    real_servers:", 1)
	if err := os.WriteFile(file, []byte(withCheck), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(file); err != nil {
		t.Fatal(err)
	}
	waitWeights("reloaded", filed)
	if h := get(); h.Source != "file" || h.Check != nil || len(h.Servers) != 2 || !h.Servers[0].Healthy || !h.Servers[1].Healthy {
		t.Fatalf("GET after reload: %+v", h)
	}
	for _, tg := range d.checker.Load().Targets(health.Key{Proto: nat.TCP, VIP: netip.MustParseAddrPort("172.25.254.100:80")}) {
		if tg.Spec.Interval != time.Hour {
			t.Fatalf("after reload, %s is checked every %v, not the file's 1h", tg.RS, tg.Spec.Interval)
		}
	}
}
