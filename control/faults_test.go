package control

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/events"
	"github.com/tapvs/tapvs/nat"
)

// validatingFaults serves /v1/faults as the daemon does, without its
// checks of what runs: each fault read by config.ParseFault and put on
// the balancer.
type validatingFaults struct{ b *nat.Balancer }

func (v validatingFaults) Faults() []api.FaultView {
	var out []api.FaultView
	for _, f := range v.b.Faults() {
		out = append(out, api.FaultView{Fault: config.FaultSpec(f.Fault), Source: "runtime", Frames: f.Frames, Dropped: f.Dropped, Refused: f.Refused,
			Delayed: f.Delayed, Reset: f.Reset})
	}
	return out
}

func (v validatingFaults) SetFaults(fs []api.Fault) ([]string, error) {
	var list []nat.Fault
	for i, in := range fs {
		f, err := config.ParseFault(in)
		if err != nil {
			return nil, fmt.Errorf("faults[%d]: %s", i, strings.ReplaceAll(err.Error(), "\n", "; "))
		}
		list = append(list, f)
	}
	return []string{"note"}, v.b.SetFaults(list)
}

func (v validatingFaults) AddFault(in api.Fault) ([]string, error) {
	f, err := config.ParseFault(in)
	if err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return []string{"note"}, v.b.SetFault(f)
}

func (v validatingFaults) RemoveFault(in api.Fault) ([]string, error) {
	t, err := config.ParseFaultTarget(in)
	if err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if !v.b.ClearFault(t) {
		return nil, ErrNoFault
	}
	return []string{"note"}, nil
}

// The fault routes' edge: bodies and queries read, refusals one line with
// their status, GET answering [] with no faults and without a daemon.
func TestFaultRoutes(t *testing.T) {
	m := fuzzManager(t)
	h := NewServer(m, slog.New(slog.NewTextHandler(io.Discard, nil))).Handler()
	do := func(method, path, body string) (int, string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
		return w.Code, strings.TrimSpace(w.Body.String())
	}
	if code, body := do("GET", "/v1/faults", ""); code != 200 || body != "[]" {
		t.Fatalf("GET with none: %d %s", code, body)
	}
	for _, c := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"POST", "/v1/faults", `{"service": "tcp 172.25.254.100:80", "loss": 0.5}`, 200, `{"notes":["note"]}`},
		{"GET", "/v1/faults", ``, 200, `[{"service":"tcp 172.25.254.100:80","direction":"both","loss":0.5,"source":"runtime","frames":0,"dropped":0,"refused":0,"delayed":0,"reset":0}]`},
		{"POST", "/v1/faults", `{"service": "tcp 172.25.254.100:80", "latency": "0.5s", "jitter": "1ms", "rate": "8MBIT", "duplicate": 0.5, "reorder": 0.25, "drop_fin": true, "reset_bytes": 7, "reset_after": "60s"}`, 200, `{"notes":["note"]}`},
		{"GET", "/v1/faults", ``, 200, `[{"service":"tcp 172.25.254.100:80","direction":"both","drop_fin":true,"latency":"500ms","jitter":"1ms","rate":"8mbit","duplicate":0.5,"reorder":0.25,"reset_bytes":7,"reset_after":"1m0s","source":"runtime","frames":0,"dropped":0,"refused":0,"delayed":0,"reset":0}]`},
		{"POST", "/v1/faults", `{"client": "10.0.0.0/8", "reset_bytes": -1}`, 400, `{"code":"invalid","error":"request body: json: cannot unmarshal number -1 into Go struct field Fault.reset_bytes of type uint64"}`},
		{"POST", "/v1/faults", `{"client": "10.0.0.0/8", "rate": "fast"}`, 400, `{"code":"invalid","error":"fault.rate: \"fast\" is not a rate (bytes a second, or a whole number of bit, kbit, mbit, gbit, bps, kbps, mbps, gbps: 8mbit, 250000)"}`},
		{"POST", "/v1/faults", `{"service": "tcp 172.25.254.100:80"`, 400, `{"code":"invalid","error":"request body: unexpected EOF"}`},
		{"POST", "/v1/faults", `{"client": "10.0.0.0/8", "every": -1}`, 400, `{"code":"invalid","error":"fault.every: -1 is not a count (1: every frame, up to 1048576)"}`},
		{"PUT", "/v1/faults", `[{"client": "10.0.0.0/8", "every": 2}, {}]`, 400, `{"code":"invalid","error":"faults[1]: fault: names 0 targets: one of service, server or client"}`},
		{"DELETE", "/v1/faults?server=10.20.1.2:80", ``, 404, `{"code":"no_fault","error":"no fault on that target"}`},
		{"DELETE", "/v1/faults?server=nowhere", ``, 400, `{"code":"invalid","error":"fault.server: \"nowhere\" is not an address:port (10.20.1.2:8080, [fd00::2]:8080; port 0 for a match service's server)"}`},
		{"DELETE", "/v1/faults?service=tcp+172.25.254.100:80", ``, 200, `{"notes":["note"]}`},
		{"GET", "/v1/faults", ``, 200, `[]`},
		{"PUT", "/v1/faults", `[{"client": "10.0.0.0/8", "every": 2}]`, 200, `{"notes":["note"]}`},
		{"DELETE", "/v1/faults", ``, 200, `{"notes":["note"]}`},
		{"GET", "/v1/faults", ``, 200, `[]`},
	} {
		if code, body := do(c.method, c.path, c.body); code != c.code || body != c.want {
			t.Errorf("%s %s %s: %d %s, want %d %s", c.method, c.path, c.body, code, body, c.code, c.want)
		}
	}
	// Without a daemon behind the API: none to list, none to change.
	bare := NewServer(NewManager(m.bal, nil), slog.New(slog.NewTextHandler(io.Discard, nil))).Handler()
	w := httptest.NewRecorder()
	bare.ServeHTTP(w, httptest.NewRequest("GET", "/v1/faults", nil))
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != "[]" {
		t.Fatalf("GET without a daemon: %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	bare.ServeHTTP(w, httptest.NewRequest("POST", "/v1/faults", strings.NewReader(`{"client": "10.0.0.0/8", "every": 2}`)))
	if w.Code != 501 {
		t.Fatalf("POST without a daemon: %d %s", w.Code, w.Body)
	}
}

// FuzzEventFilter: GET /v1/events's query, read without a panic; a
// refusal names its parameter and an accepted buffer is in range.
func FuzzEventFilter(f *testing.F) {
	for _, q := range []string{"", "kind=server_down,conn&proto=tcp&addr=172.25.254.100:80&buffer=10",
		"kind=,,&buffer=0", "proto=fwm&addr=1", "proto=fwm&addr=4294967296", "addr=%5B::1%5D:53&proto=udp&buffer=65537",
		"kind=reload&kind=quorum&buffer=-1", "kind=nothing"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		_, buffer, err := EventFilter(q)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "kind: ") && !strings.HasPrefix(msg, "proto, addr: ") && !strings.HasPrefix(msg, "buffer: ") {
				t.Fatalf("%q: a refusal that names no parameter: %v", raw, err)
			}
			return
		}
		if buffer < 0 || buffer > events.MaxBuffer {
			t.Fatalf("%q: buffer %d accepted", raw, buffer)
		}
	})
}
