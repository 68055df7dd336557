package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/shlex"

	"github.com/tapvs/tapvs/control/api"
)

// --health's listing, and its check written as --check reads it back
// (shell-quoted where a value needs it).
func TestHealthListing(t *testing.T) {
	hc := api.HealthCheck{Type: "misc", Interval: "2s", Rise: 2, Fall: 3, Script: []string{"/usr/local/bin/check", "--name", "a b"}, MiscDynamic: true}
	var out bytes.Buffer
	printHealth(&out, &command{proto: "tcp", service: "172.25.254.100:80"}, api.Health{Source: "runtime", Check: &hc, Servers: []api.HealthView{
		{Dest: "10.20.1.2:80", Healthy: true}, {Dest: "10.20.2.2:80", Reason: "exit status 1"}}})
	want := `TCP  172.25.254.100:80 health runtime --check 'type=misc,interval=2s,rise=2,fall=3,script=/usr/local/bin/check --name '"'"'a b'"'"',misc_dynamic=true'
  -> 10.20.1.2:80                 up
  -> 10.20.2.2:80                 down: exit status 1
`
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	args, err := shlex.Split("--health -t 172.25.254.100:80 --check " + checkText(hc))
	if err != nil {
		t.Fatal(err)
	}
	c, err := parse(args)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkText(*c.healthCheck); got != checkText(hc) {
		t.Fatalf("read back as %s, want %s", got, checkText(hc))
	}
	out.Reset()
	printHealth(&out, &command{proto: "udp", service: "10.0.0.1:53"}, api.Health{Source: "runtime"})
	if out.String() != "UDP  10.0.0.1:53 health runtime --off\n" {
		t.Fatalf("stopped at run time: %q", out.String())
	}
	out.Reset()
	printHealth(&out, &command{proto: "udp", service: "10.0.0.1:53"}, api.Health{Source: "none"})
	if out.String() != "UDP  10.0.0.1:53 health none\n" {
		t.Fatalf("no check: %q", out.String())
	}
}

// fakeHealth is the fake daemon's runtime checks by "proto addr" (none
// for a service not in it); fakeHealthSet is what PUT and DELETE sent,
// in order ("" for a DELETE).
var (
	fakeHealth    = map[string]api.Health{}
	fakeHealthSet []string
)

// fakeHealthRoutes serves .../health from fakeHealth, under mu.
func fakeHealthRoutes(mux *http.ServeMux, mu *sync.Mutex) {
	key := func(r *http.Request) string { return r.PathValue("proto") + " " + r.PathValue("addr") }
	mux.HandleFunc("GET /v1/services/{proto}/{addr}/health", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h, ok := fakeHealth[key(r)]
		mu.Unlock()
		if !ok {
			h = api.Health{Source: "none", Servers: []api.HealthView{}}
		}
		json.NewEncoder(w).Encode(h)
	})
	mux.HandleFunc("PUT /v1/services/{proto}/{addr}/health", func(w http.ResponseWriter, r *http.Request) {
		var hc api.HealthCheck
		json.NewDecoder(r.Body).Decode(&hc)
		mu.Lock()
		fakeHealthSet = append(fakeHealthSet, key(r)+" "+checkText(hc))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /v1/services/{proto}/{addr}/health", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fakeHealthSet = append(fakeHealthSet, key(r)+" off")
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
}

// -S writes the checks set or stopped at run time after the rules, and
// -R applies them after the rules' batch.
func TestSaveRestoresChecks(t *testing.T) {
	hc := api.HealthCheck{Type: "misc", Script: []string{"/bin/check", "a b"}, Rise: 3}
	fakeHealth = map[string]api.Health{
		"tcp 172.25.254.100:80": {Source: "runtime", Check: &hc},
		"udp 172.25.254.100:53": {Source: "runtime"},
		"tcp 172.25.254.99:443": {Source: "file"},
	}
	fakeHealthSet = nil
	t.Cleanup(func() { fakeHealth, fakeHealthSet = map[string]api.Health{}, nil })
	sock, batches := fakeDaemon(t, svcs25, nil)
	saved := tapvsadm(t, sock, "", "-S", "-n")
	want := "--health -t 172.25.254.100:80 --check 'type=misc,rise=3,script=/bin/check '\"'\"'a b'\"'\"''\n--health -u 172.25.254.100:53 --off\n"
	if !strings.HasSuffix(saved, "\n"+want) || strings.Count(saved, "--health") != 2 {
		t.Fatalf("-S -n:\n%s\nwant it to end with:\n%s", saved, want)
	}
	tapvsadm(t, sock, saved, "-R")
	if b := batches(); len(b) != 1 || len(b[0].Ops) != 12 {
		t.Fatalf("-R's batch: %+v", b)
	}
	if got := strings.Join(fakeHealthSet, "\n"); got != "tcp 172.25.254.100:80 "+checkText(hc)+"\nudp 172.25.254.100:53 off" {
		t.Fatalf("-R's checks:\n%s", got)
	}
}
