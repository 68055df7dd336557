package control

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// A real server's thresholds through the API: set on add and edit
// (u_threshold, l_threshold; one given keeps the other), listed with the
// overloaded flag, and IPVS's refusal of a lower above the upper a 400
// naming the server that changes nothing.
func TestThresholdsAPI(t *testing.T) {
	m := fuzzManager(t)
	h := NewServer(m, slog.New(slog.NewTextHandler(io.Discard, nil))).Handler()
	do := func(method, path, body string) int {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "http://tapvs"+path, strings.NewReader(body)))
		if rec.Code >= 400 && !strings.Contains(rec.Body.String(), "real server") {
			t.Errorf("%s %s %s: %d %s", method, path, body, rec.Code, rec.Body)
		}
		return rec.Code
	}
	listed := func() map[string]api.Dest {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://tapvs/v1/services", nil))
		var svcs []api.Service
		if err := json.Unmarshal(rec.Body.Bytes(), &svcs); err != nil {
			t.Fatal(err)
		}
		out := map[string]api.Dest{}
		for _, s := range svcs {
			for _, d := range s.Dests {
				out[d.Addr] = d
			}
		}
		return out
	}
	const dests = "/v1/services/tcp/172.25.254.100:80/dests"
	if c := do("POST", dests, `{"addr":"10.20.3.2:80","u_threshold":100,"l_threshold":50}`); c != 200 && c != 204 {
		t.Fatalf("add with thresholds: %d", c)
	}
	if c := do("PUT", dests+"/10.20.1.2:80", `{"u_threshold":2}`); c != 200 && c != 204 {
		t.Fatalf("edit: %d", c)
	}
	if c := do("PUT", dests+"/10.20.1.2:80", `{"l_threshold":1}`); c != 200 && c != 204 {
		t.Fatalf("edit the lower alone: %d", c)
	}
	got := listed()
	for addr, want := range map[string][2]uint32{"10.20.3.2:80": {100, 50}, "10.20.1.2:80": {2, 1}, "10.20.2.2:80": {0, 0}} {
		if d := got[addr]; d.UThreshold != want[0] || d.LThreshold != want[1] || d.Overloaded {
			t.Errorf("%s listed %+v, want -x %d -y %d, not overloaded", addr, d, want[0], want[1])
		}
	}
	before := state(m)
	if c := do("PUT", dests+"/10.20.1.2:80", `{"l_threshold":3,"weight":5}`); c != 400 {
		t.Fatalf("lower 3 above upper 2: %d, want 400", c)
	}
	if state(m) != before {
		t.Fatal("a refused edit changed the state")
	}
}
