package control

import (
	"strings"
	"testing"
)

// The lists change one prefix at a time through a batch, the limits with
// the service; refusals name what is wrong and change nothing.
func TestDefenceOps(t *testing.T) {
	m := fuzzManager(t)
	do := serve(t, m)
	svc := `"service":{"protocol":"tcp","addr":"172.25.254.100:80"}`
	op := func(kind, prefix string) string {
		return `{"ops":[{"op":"` + kind + `",` + svc + `,"prefix":"` + prefix + `"}]}`
	}
	for _, b := range []string{op("add-deny", "10.0.0.0/8"), op("add-deny", "192.0.2.7"), op("add-allow", "172.25.254.0/24")} {
		if c, body := do("POST", "/v1/batch", b); c != 204 {
			t.Fatalf("%s: %d %s", b, c, body)
		}
	}
	if c, body := do("PUT", "/v1/services/tcp/172.25.254.100:80", `{"limits":{"source_conns":2,"half_open":50}}`); c != 204 {
		t.Fatalf("limits: %d %s", c, body)
	}
	// An edit that sets one limit leaves the others.
	if c, body := do("PUT", "/v1/services/tcp/172.25.254.100:80", `{"limits":{"source_cps":9}}`); c != 204 {
		t.Fatalf("limits: %d %s", c, body)
	}
	s := m.Services()[0]
	if strings.Join(s.Deny, " ") != "10.0.0.0/8 192.0.2.7/32" || strings.Join(s.Allow, " ") != "172.25.254.0/24" ||
		s.Limits.SourceConns != 2 || s.Limits.HalfOpen != 50 || s.Limits.SourceCPS != 9 {
		t.Fatalf("listed %v %v %+v", s.Deny, s.Allow, s.Limits)
	}
	before := state(m)
	for _, tc := range []struct{ method, path, body, want string }{
		{"POST", "/v1/batch", op("add-deny", "10.0.0.0/8"), "10.0.0.0/8 is in its deny list already"},
		{"POST", "/v1/batch", op("delete-allow", "10.0.0.0/8"), "10.0.0.0/8 is not in its allow list"},
		{"POST", "/v1/batch", op("add-deny", "10.0.0.0/33"), `prefix: \"10.0.0.0/33\" is not an IPv4 or IPv6 prefix`},
		{"POST", "/v1/batch", op("add-deny", "2001:db8::/32"), "deny: 2001:db8::/32 is IPv6, and this service's clients are IPv4"},
		{"PUT", "/v1/services/tcp/172.25.254.100:80", `{"limits":{"source_conns":4294967295}}`, "source_conns 4294967295 is out of range"},
	} {
		c, body := do(tc.method, tc.path, tc.body)
		if c != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %q", tc.body, c, body, tc.want)
		}
	}
	if state(m) != before {
		t.Fatal("a refused change was applied")
	}
	if c, body := do("POST", "/v1/batch", op("delete-deny", "10.0.0.0/8")); c != 204 {
		t.Fatalf("delete: %d %s", c, body)
	}
	if s := m.Services()[0]; strings.Join(s.Deny, " ") != "192.0.2.7/32" {
		t.Fatalf("after delete: %v", s.Deny)
	}
}
