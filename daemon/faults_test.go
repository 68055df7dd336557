package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// The faults through the API: the file's listed as "file"; one added,
// replaced on its target, removed by its target; a list put whole and
// cleared; refusals naming the field, or 404 for no such service, server
// or fault; a reload sets the file's again, replacing the runtime ones.
func TestFaultsAPI(t *testing.T) {
	file := matchBase + "faults:\n  - {service: fwm 1, syn: refuse}\n"
	d, do := apiDaemon(t, file)
	list := func() []api.FaultView {
		t.Helper()
		code, body := do("GET", "/v1/faults", "")
		var out []api.FaultView
		if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("GET: %d %s", code, body)
		}
		return out
	}
	targets := func() string {
		var s []string
		for _, f := range list() {
			s = append(s, f.Service+f.Server+f.Client+"="+f.Source)
		}
		return strings.Join(s, " ")
	}
	if got := list(); len(got) != 1 || got[0].Service != "fwm 1" || got[0].SYN != "refuse" || got[0].Direction != "both" || got[0].Source != "file" {
		t.Fatalf("the file's fault: %+v", got)
	}
	if code, body := do("POST", "/v1/faults", `{"server": "172.25.84.21:8080", "direction": "to_client", "loss": 0.25}`); code != 200 || !strings.Contains(body, "until the next reload") {
		t.Fatalf("POST: %d %s", code, body)
	}
	if got := targets(); got != "fwm 1=file 172.25.84.21:8080=runtime" {
		t.Fatalf("after POST: %s", got)
	}
	// The same target again replaces it.
	if code, body := do("POST", "/v1/faults", `{"server": "172.25.84.21:8080", "every": 3}`); code != 200 {
		t.Fatalf("POST again: %d %s", code, body)
	}
	if got := list(); len(got) != 2 || got[1].Every != 3 || got[1].Loss != 0 || got[1].Direction != "both" {
		t.Fatalf("replaced: %+v", got)
	}
	// The delay and reset families' fields, listed as the file writes them.
	if code, body := do("POST", "/v1/faults", `{"client": "172.25.254.7", "latency": "80ms", "jitter": "0.02s", "rate": "1000kbit", "duplicate": 0.01, "reorder": 0.02, "drop_fin": true, "reset_bytes": 1024, "reset_after": "90s"}`); code != 200 {
		t.Fatalf("POST the new fields: %d %s", code, body)
	}
	want := api.Fault{Client: "172.25.254.7/32", Direction: "both", Latency: "80ms", Jitter: "20ms", Rate: "1mbit", Duplicate: 0.01, Reorder: 0.02,
		DropFIN: true, ResetBytes: 1024, ResetAfter: "1m30s"}
	if got := list(); len(got) != 3 || got[2].Fault != want || got[2].Source != "runtime" {
		t.Fatalf("the new fields listed as %+v, want %+v", got, want)
	}
	if code, body := do("DELETE", "/v1/faults?client=172.25.254.7", ""); code != 200 {
		t.Fatalf("DELETE the new fields' fault: %d %s", code, body)
	}
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"client": "10.0.0.0/8", "latency": "5x"}`, 400, `fault.latency: \"5x\" is not a duration from 0 to 1m (50ms, 1.5s)`},
		{`{"client": "10.0.0.0/8", "rate": "8mbits"}`, 400, `fault.rate: \"8mbits\" is not a rate`},
		{`{"client": "10.0.0.0/8", "reset_bytes": -1}`, 400, `reset_bytes`},
		{`{"client": "10.0.0.0/8", "reset_after": "25h"}`, 400, `fault.reset_after: \"25h\" is not a duration from 0 to 24h`},
		{`{"client": "10.0.0.0/8", "reorder": 2, "duplicate": -1}`, 400, `fault.duplicate: -1 is not a probability (0 to 1: 0.01 sends 1% of frames twice); fault.reorder: 2 is not a probability`},
		{`{"server": "172.25.84.22:80", "blackhole": true}`, 404, "fault.server: 172.25.84.22:80 is no service's real server"},
		{`{"service": "tcp 172.25.254.100:81", "blackhole": true}`, 404, "fault.service: "},
		{`{"service": "fwm 2", "blackhole": true}`, 404, "fault.service: "},
		{`{"client": "10.0.0.0/8", "loss": 2}`, 400, "fault.loss: 2 is not a probability"},
		{`{"client": "10.0.0.0/8"}`, 400, "fault: does nothing"},
		{`{"client": "10.0.0.0/8", "server": "172.25.84.20:0", "blackhole": true}`, 400, "fault: names 2 targets"},
		{`{"client": "10.0.0.0/8", "blackhole": true, "colour": "red"}`, 400, `unknown field \"colour\"`},
	} {
		code, body := do("POST", "/v1/faults", c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("POST %s: %d %s, want %d %q", c.body, code, body, c.code, c.want)
		}
	}
	if len(list()) != 2 {
		t.Fatal("a refused POST changed the faults")
	}
	// Removed by target; a target with none is 404.
	if code, body := do("DELETE", "/v1/faults?server=172.25.84.21:8080", ""); code != 200 {
		t.Fatalf("DELETE one: %d %s", code, body)
	}
	if code, body := do("DELETE", "/v1/faults?server=172.25.84.21:8080", ""); code != 404 || !strings.Contains(body, api.CodeNoFault) {
		t.Fatalf("DELETE it again: %d %s", code, body)
	}
	if got := targets(); got != "fwm 1=file" {
		t.Fatalf("after DELETE: %s", got)
	}
	// A whole list, refused whole for one bad entry, then cleared.
	if code, body := do("PUT", "/v1/faults", `[{"client": "172.25.254.0/24", "blackhole": true}, {"client": "172.25.254.9", "every": 0}]`); code != 400 || !strings.Contains(body, "faults[1]: fault: does nothing") {
		t.Fatalf("PUT a bad list: %d %s", code, body)
	}
	if code, body := do("PUT", "/v1/faults", `[{"client": "172.25.254.0/24", "blackhole": true}, {"service": "fwm 1", "syn": "refuse"}]`); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if got := targets(); got != "172.25.254.0/24=runtime fwm 1=file" {
		t.Fatalf("after PUT: %s", got)
	}
	if code, body := do("DELETE", "/v1/faults", ""); code != 200 || len(list()) != 0 || d.Balancer.Faults() != nil {
		t.Fatalf("DELETE all: %d %s, %+v", code, body, list())
	}
	// A reload sets the file's faults again.
	do("POST", "/v1/faults", `{"client": "172.25.254.0/24", "blackhole": true}`)
	path := filepath.Join(t.TempDir(), "tapvs.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(path); err != nil {
		t.Fatal(err)
	}
	if got := targets(); got != "fwm 1=file" {
		t.Fatalf("after the reload: %s", got)
	}
	// A file without faults: clears them.
	if err := os.WriteFile(path, []byte(matchBase), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(path); err != nil {
		t.Fatal(err)
	}
	if len(list()) != 0 {
		t.Fatalf("a file without faults left %+v", list())
	}
}

// faultView lists every counter of a fault, the delay and reset families'
// included.
func TestFaultView(t *testing.T) {
	fs := nat.FaultStats{Fault: nat.Fault{Target: nat.FaultTarget{Mark: 1}, Dir: nat.FaultToServer, Rate: 1514},
		Frames: 1, Dropped: 2, Refused: 3, Delayed: 4, Reset: 5}
	want := api.FaultView{Fault: api.Fault{Service: "fwm 1", Direction: "to_server", Rate: "1514"}, Source: "file", Frames: 1, Dropped: 2, Refused: 3, Delayed: 4, Reset: 5}
	if got := faultView(fs, "file"); got != want {
		t.Fatalf("%+v listed as %+v, want %+v", fs, got, want)
	}
}
