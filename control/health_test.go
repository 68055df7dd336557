package control

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// fakeChecks records what the API asked of the daemon's checks.
type fakeChecks struct {
	set     map[ServiceKey]api.HealthCheck
	refusal error
}

func (f *fakeChecks) HealthCheck(k ServiceKey) (api.Health, error) {
	if hc, ok := f.set[k]; ok {
		return api.Health{Source: "runtime", Check: &hc, Servers: []api.HealthView{}}, nil
	}
	return api.Health{Source: "none", Servers: []api.HealthView{}}, nil
}

func (f *fakeChecks) SetHealthCheck(k ServiceKey, hc api.HealthCheck) ([]string, error) {
	if f.refusal != nil {
		return nil, f.refusal
	}
	f.set[k] = hc
	return []string{"until the next reload"}, nil
}

func (f *fakeChecks) ClearHealthCheck(k ServiceKey) ([]string, error) {
	delete(f.set, k)
	return []string{"until the next reload"}, nil
}

// validatingChecks validate a check as the daemon does (the file's
// rules) and keep what they accept: FuzzAPI's.
type validatingChecks struct{ fakeChecks }

func (v *validatingChecks) SetHealthCheck(k ServiceKey, hc api.HealthCheck) ([]string, error) {
	if _, err := config.RuntimeHealthCheck(hc); err != nil {
		return nil, err
	}
	return v.fakeChecks.SetHealthCheck(k, hc)
}

// The health routes' HTTP edge: the service is looked up before the
// daemon is asked, a body with an unknown field never reaches it, a
// refusal is a 400 with its message, a change answers its notes; without
// a daemon behind the API the routes say so.
func TestHealthRoutes(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	const path = "/v1/services/tcp/10.0.0.1:80/health"
	if c, body := do("GET", path, ""); c != 501 || !strings.Contains(body, "no health checks") {
		t.Fatalf("without Checks: %d %s", c, body)
	}
	f := &fakeChecks{set: map[ServiceKey]api.HealthCheck{}}
	m.SetChecks(f)
	if c, body := do("PUT", path, `{"type":"tcp"}`); c != 404 || !strings.Contains(body, api.CodeNoService) {
		t.Fatalf("no such service: %d %s", c, body)
	}
	if c, _ := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80"}`); c != 204 {
		t.Fatalf("add: %d", c)
	}
	k := ServiceKey{Protocol: nat.TCP, Addr: netip.MustParseAddrPort("10.0.0.1:80")}
	for _, tc := range []struct{ method, path, body, want string }{
		{"PUT", path, `{"type":"tcp","rize":2}`, `unknown field \"rize\"`},
		{"PUT", path, `{"type":"tcp"} {}`, "more after the JSON value"},
		{"PUT", "/v1/services/tcp/10.0.0.1/health", `{"type":"tcp"}`, api.CodeInvalid},
		{"GET", "/v1/services/sctp/10.0.0.1:80/health", "", api.CodeInvalid},
	} {
		if c, body := do(tc.method, tc.path, tc.body); c != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s %s: %d %s, want 400 with %s", tc.method, tc.path, tc.body, c, body, tc.want)
		}
	}
	if len(f.set) != 0 {
		t.Fatalf("a refused request reached the checks: %v", f.set)
	}
	f.refusal = errors.New("health_check.rise: 0 is out of range 1-100")
	if c, body := do("PUT", path, `{"type":"tcp","rise":0}`); c != 400 || !strings.Contains(body, "health_check.rise: 0 is out of range") {
		t.Fatalf("a refusal: %d %s", c, body)
	}
	f.refusal = nil
	if c, body := do("PUT", path, `{"type":"http","http_path":"/healthz","rise":3}`); c != 200 || !strings.Contains(body, `"notes":["until the next reload"]`) {
		t.Fatalf("PUT: %d %s", c, body)
	}
	if hc := f.set[k]; hc.Type != "http" || hc.Path != "/healthz" || hc.Rise != 3 {
		t.Fatalf("the daemon got %+v", hc)
	}
	if c, body := do("GET", path, ""); c != 200 || !strings.Contains(body, `"source":"runtime","check":{"type":"http","rise":3,"http_path":"/healthz"}`) {
		t.Fatalf("GET: %d %s", c, body)
	}
	if c, _ := do("DELETE", path, ""); c != 200 || len(f.set) != 0 {
		t.Fatalf("DELETE: %d, left %v", c, f.set)
	}
}
