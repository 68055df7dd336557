package control

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// fuzzManager is a manager with one service (a LIP and two servers), on a
// balancer that knows tapvs's own addresses.
func fuzzManager(tb testing.TB) *Manager {
	b, err := nat.New(nat.Config{MaxConns: 16, PortMin: 5000, PortMax: 65535, Timeouts: nat.DefaultTimeouts(), Readers: 1,
		ClientNet: netip.MustParsePrefix("172.25.254.254/24"), ServerNet: netip.MustParsePrefix("172.25.84.4/24")})
	if err != nil {
		tb.Fatal(err)
	}
	m := NewManager(b, nil)
	svc := ServiceKey{Protocol: nat.TCP, Addr: netip.MustParseAddrPort("172.25.254.100:80")}
	err = m.Batch([]Op{
		{Kind: OpAddService, Service: ServiceSpec{ServiceKey: svc, Scheduler: "wrr"}},
		{Kind: OpAddLocalAddr, Service: ServiceSpec{ServiceKey: svc}, LocalAddr: netip.MustParseAddr("172.25.84.10")},
		{Kind: OpAddDest, Service: ServiceSpec{ServiceKey: svc}, Dest: DestSpec{Addr: netip.MustParseAddrPort("10.20.1.2:80")}},
		{Kind: OpAddDest, Service: ServiceSpec{ServiceKey: svc}, Dest: DestSpec{Addr: netip.MustParseAddrPort("10.20.2.2:80")}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	// Mark 1 for match services (nat/match.go), as marks: defines one.
	if err := m.Update(func(tx *nat.Tx) error {
		return tx.SetMarks(map[uint32]nat.Match{1: {Addr: netip.MustParseAddr("172.25.254.101"), Protocol: nat.TCP,
			Ports: []nat.PortRange{{Lo: 443, Hi: 443}, {Lo: 8000, Hi: 8099}}}})
	}); err != nil {
		tb.Fatal(err)
	}
	m.SetChecks(&validatingChecks{fakeChecks{set: map[ServiceKey]api.HealthCheck{}}})
	m.ServeFaults(validatingFaults{b})
	return m
}

// state is everything a request could change, as the API lists it.
func state(m *Manager) string {
	return fmt.Sprint(m.Services(), m.Timeouts(), m.checksOf(), m.faultsOf().Faults())
}

// FuzzAPI sends any method, path and body to the control API. Nothing
// panics, every answer is a status the API gives, a refused request
// changes nothing, and every service's name is one nat.CheckName takes.
// (Captures and profiles stream for seconds: the capture endpoint's
// parameters are checked by TestCaptureParameters.)
func FuzzAPI(f *testing.F) {
	for _, s := range []struct{ method, path, body string }{
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"172.25.254.101:80","scheduler":"rr"}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80", `{"scheduler":"rr","synproxy":true,"established_timeout":60}`},
		{"DELETE", "/v1/services/tcp/172.25.254.100:80", ``},
		{"POST", "/v1/services/tcp/172.25.254.100:80/dests", `{"addr":"10.20.3.2:80","weight":3}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80/dests/10.20.1.2:80", `{"weight":0}`},
		{"DELETE", "/v1/services/tcp/172.25.254.100:80/dests/10.20.1.2:80", ``},
		{"POST", "/v1/services/tcp/172.25.254.100:80/laddrs", `{"addr":"172.25.84.11"}`},
		{"DELETE", "/v1/services/tcp/172.25.254.100:80/laddrs/172.25.84.10", ``},
		{"PUT", "/v1/timeouts", `{"tcp":900,"tcpfin":120,"udp":300}`},
		{"POST", "/v1/batch", `{"ops":[{"op":"clear"},{"op":"add-service","service":{"protocol":"udp","addr":"172.25.254.100:53"}}]}`},
		{"GET", "/v1/services", ``},
		{"GET", "/v1/conns", ``},
		{"DELETE", "/v1/services", ``},
		{"POST", "/v1/zero", ``},
		{"POST", "/v1/batch", `{"ops":[{"op":"add-deny","service":{"protocol":"tcp","addr":"172.25.254.100:80"},"prefix":"10.0.0.0/8"},{"op":"add-allow","service":{"protocol":"tcp","addr":"172.25.254.100:80"},"prefix":"172.25.254.1"}]}`},
		{"POST", "/v1/batch", `{"ops":[{"op":"delete-deny","service":{"protocol":"tcp","addr":"172.25.254.100:80"},"prefix":"10.0.0.1/8"}]}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80", `{"limits":{"source_cps":10,"source_conns":2,"half_open":100}}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80", `{"limits":{"source_cps":4294967295}}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80", `{"scheduler":"sh","sched_flags":["sh-port","sh-fallback","flag-2"]}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80", `{"sched_flags":["mh-port",""]}`},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"172.25.254.101:80","scheduler":"lblcr","sched_flags":null}`},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"[2001:db8::1]:80","scheduler":"rr"}`},
		{"POST", "/v1/services/tcp/172.25.254.100:80/dests", `{"addr":"[fd00:20:1::2]:80"}`},
		{"POST", "/v1/services/tcp/172.25.254.100:80/laddrs", `{"addr":"fd00:25:84::10"}`},
		{"DELETE", "/v1/services/tcp/%5B2001:db8::1%5D:80/dests/%5Bfd00:20:1::2%5D:80", ``},
		{"DELETE", "/v1/services/tcp/%5Bfe80::1%25tc%5D:80", ``},
		// Issue 25: a real server's thresholds.
		{"PUT", "/v1/services/tcp/172.25.254.100:80/dests/10.20.1.2:80", `{"u_threshold":2,"l_threshold":1}`},
		{"POST", "/v1/services/tcp/172.25.254.100:80/dests", `{"addr":"10.20.3.2:80","u_threshold":1,"l_threshold":2}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80/dests/10.20.2.2:80", `{"l_threshold":4294967295,"u_threshold":-1}`},
		{"POST", "/v1/batch", `{"ops":[{"op":"add-service","service":{"protocol":"udp","addr":"[2001:db8::53]:53"}},{"op":"add-laddr","service":{"protocol":"udp","addr":"[2001:db8::53]:53"},"laddr":"[fd00:25:84::10]:0"},{"op":"add-dest","service":{"protocol":"udp","addr":"[2001:db8::53]:53"},"dest":{"addr":"[::ffff:10.20.1.2]:53"}}]}`},
		// Issue 20: names that became metrics labels unchecked.
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"172.25.254.101:80","name":"a\u0000\nb"}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80", `{"name":"` + strings.Repeat("n", 200) + `"}`},
		{"POST", "/v1/batch", `{"ops":[{"op":"edit-service","service":{"protocol":"tcp","addr":"172.25.254.100:80","name":"\u001b[0m"}}]}`},
		{"POST", "/v1/services/tcp/172.25.254.100:80/zero", ``},
		{"POST", "/v1/services/tcp/172.25.254.100:81/zero", ``},
		{"POST", "/v1/reload", ``},
		// Issue 25: a service's health check at run time.
		{"PUT", "/v1/services/tcp/172.25.254.100:80/health", `{"type":"http","http_path":"/healthz","http_status":200,"rise":2,"fall":3}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80/health", `{"type":"misc","script":["/bin/true","a\u0000"]}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80/health", `{"type":"dns","dns_name":"` + strings.Repeat("a", 70) + `.example","dns_type":"MX"}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80/health", `{"type":"udp","payload":"zz","interval":"1ns"}`},
		{"GET", "/v1/services/tcp/172.25.254.100:80/health", ``},
		{"DELETE", "/v1/services/udp/172.25.254.100:80/health", ``},
		// Issue 25: persistence, all-ports services.
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"172.25.254.101:0","scheduler":"rr","persistent":600,"persistence_netmask":"255.255.255.0"}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80", `{"persistent":0,"persistence_netmask":"24"}`},
		{"PUT", "/v1/services/tcp/172.25.254.100:80", `{"persistent":4294967295,"persistence_netmask":"255.255.0.255"}`},
		{"POST", "/v1/services/tcp/172.25.254.101:0/dests", `{"addr":"10.20.3.2:0"}`},
		// Issue 25: match services, by mark.
		{"POST", "/v1/services", `{"fwmark":1,"scheduler":"rr","persistent":600}`},
		{"POST", "/v1/services", `{"fwmark":4294967295,"protocol":"tcp","addr":"1.2.3.4:5"}`},
		{"POST", "/v1/services/fwm/1/dests", `{"addr":"10.20.3.2:0"}`},
		{"PUT", "/v1/services/fwm/01", `{"scheduler":"wrr","persistence_netmask":"255.255.255.0"}`},
		{"DELETE", "/v1/services/fwm/4294967296", ``},
		{"GET", "/v1/services/fwm/1/health", ``},
		{"POST", "/v1/batch", `{"ops":[{"op":"add-dest","service":{"fwmark":1},"dest":{"addr":"10.20.1.2:0"}}]}`},
		// Issue 26: faults.
		{"POST", "/v1/faults", `{"service":"tcp 172.25.254.100:80","direction":"to_client","loss":0.05}`},
		{"POST", "/v1/faults", `{"server":"[::ffff:10.20.1.2]:80","blackhole":true,"every":4294967296}`},
		{"PUT", "/v1/faults", `[{"client":"10.0.0.0/8","syn":"refuse"},{"service":"fwm 1","syn":"drop","direction":"to_client"}]`},
		{"PUT", "/v1/faults", `null`},
		{"DELETE", "/v1/faults?client=10.0.0.0%2F8&server=10.20.1.2:80", ``},
		{"DELETE", "/v1/faults", ``},
		{"GET", "/v1/faults", ``},
	} {
		f.Add(s.method, s.path, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		if strings.Contains(path, "capture") || strings.Contains(path, "pprof") || strings.ContainsAny(path, " \r\n") || !strings.HasPrefix(path, "/") {
			return
		}
		m := fuzzManager(t)
		h := NewServer(m, slog.New(slog.NewTextHandler(io.Discard, nil))).Handler()
		before := state(m)
		req, err := http.NewRequest(method, "http://tapvs"+path, strings.NewReader(string(body)))
		if err != nil {
			return // not a request a client could send
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch c := rec.Code; {
		case c == 200 || c == 204:
		case c == 301 || c == 307 || c == 308 || c == 400 || c == 404 || c == 405 || c == 409 || c == 413:
			if after := state(m); after != before {
				t.Fatalf("%s %s %q refused (%d) but changed the state:\n%s\n%s", method, path, body, c, before, after)
			}
		default:
			t.Fatalf("%s %s %q: status %d %s", method, path, body, c, rec.Body)
		}
		for _, s := range m.Services() {
			if err := nat.CheckName(s.Name); err != nil {
				t.Fatalf("%s %s %q: service %s named %q: the name %v", method, path, body, s.Addr, s.Name, err)
			}
		}
		if rec.Code >= 400 && rec.Header().Get("Content-Type") == "application/json" && strings.Count(strings.TrimSpace(rec.Body.String()), "\n") != 0 {
			t.Fatalf("a refusal in more than one line: %s", rec.Body)
		}
	})
}

// The capture endpoint refuses what it cannot do instead of picking a
// default.
func TestCaptureParameters(t *testing.T) {
	m := fuzzManager(t)
	h := NewServer(m, slog.New(slog.NewTextHandler(io.Discard, nil))).Handler()
	for q, want := range map[string]string{
		"count=0":         "count",
		"count=1000001":   "count",
		"count=x":         "count",
		"timeout=-1s":     "timeout",
		"timeout=10000h":  "timeout",
		"timeout=forever": "timeout",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/capture?proto=tcp&addr=172.25.254.100:80&"+q, nil))
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("%s: %d %s", q, rec.Code, rec.Body)
		}
	}
}
