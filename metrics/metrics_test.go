package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// The metrics address is reachable by every local user: it serves metrics
// and a probe's /healthz, nothing else (profiles are on the owner-only
// control socket).
func TestMetricsOnlyOnTheMetricsAddress(t *testing.T) {
	bal, err := nat.New(nat.Config{MaxConns: 10, PortMin: 5000, PortMax: 6000})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Serve("127.0.0.1:0", New(bal, nil, nil), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `tapvs_drops_total{reason="bad_tcp_options"} 0`) {
		t.Fatalf("/metrics: %d\n%.300s", code, body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/profile?seconds=1", "/debug/pprof/heap"} {
		if code, _ := get(p); code != http.StatusNotFound {
			t.Fatalf("%s: %d, want 404", p, code)
		}
	}
}
