package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// fakeFaults is what the fake daemon's GET /v1/faults answers, and
// fakeFaultsSet what its changes were asked, one line each.
var (
	fakeFaults    []api.FaultView
	fakeFaultsSet []string
)

// fakeFaultRoutes serves /v1/faults from fakeFaults, under mu.
func fakeFaultRoutes(mux *http.ServeMux, mu *sync.Mutex) {
	mux.HandleFunc("GET /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fs := fakeFaults
		mu.Unlock()
		if fs == nil {
			fs = []api.FaultView{}
		}
		json.NewEncoder(w).Encode(fs)
	})
	record := func(w http.ResponseWriter, r *http.Request, line string) {
		mu.Lock()
		fakeFaultsSet = append(fakeFaultsSet, line)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}
	mux.HandleFunc("POST /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		var f api.Fault
		json.NewDecoder(r.Body).Decode(&f)
		b, _ := json.Marshal(f)
		record(w, r, "POST "+string(b))
	})
	mux.HandleFunc("PUT /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		var fs []api.Fault
		json.NewDecoder(r.Body).Decode(&fs)
		b, _ := json.Marshal(fs)
		record(w, r, "PUT "+string(b))
	})
	mux.HandleFunc("DELETE /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		record(w, r, "DELETE "+r.URL.RawQuery)
	})
}

var faultsInForce = []api.FaultView{
	{Fault: api.Fault{Service: "tcp 172.25.254.100:80", Direction: "to_client", Loss: 0.05}, Source: "runtime", Frames: 200, Dropped: 9},
	{Fault: api.Fault{Service: "fwm 1", Direction: "both", SYN: "refuse"}, Source: "file", Frames: 3, Refused: 3},
	{Fault: api.Fault{Server: "10.20.1.2:80", Direction: "both", Blackhole: true}, Source: "runtime"},
	{Fault: api.Fault{Client: "172.25.254.0/28", Direction: "to_server", Every: 10}, Source: "runtime", Frames: 20, Dropped: 2},
	{Fault: api.Fault{Client: "172.25.254.16/28", Direction: "both", DropFIN: true, Latency: "80ms", Jitter: "20ms", Rate: "8mbit", Duplicate: 0.01, Reorder: 0.02,
		ResetBytes: 1048576, ResetAfter: "1m30s"}, Source: "runtime", Frames: 40, Dropped: 1, Delayed: 41, Reset: 3},
}

const faultLines = `--fault -t 172.25.254.100:80 --with direction=to_client,loss=0.05  runtime  seen 200 dropped 9 refused 0
--fault -f 1 --with direction=both,syn=refuse  file  seen 3 dropped 0 refused 3
--fault -r 10.20.1.2:80 --with direction=both,blackhole=true  runtime  seen 0 dropped 0 refused 0
--fault --client 172.25.254.0/28 --with direction=to_server,every=10  runtime  seen 20 dropped 2 refused 0
--fault --client 172.25.254.16/28 --with direction=both,drop_fin=true,latency=80ms,jitter=20ms,rate=8mbit,duplicate=0.01,reorder=0.02,reset_bytes=1048576,reset_after=1m30s  runtime  delayed 41 reset 3  seen 40 dropped 1 refused 0
`

// --fault lists, sets, clears one and clears all; -L ends with the faults
// in force (none: nothing more); -S writes the runtime ones and -R puts
// them back after its rules.
func TestFaultCommand(t *testing.T) {
	t.Cleanup(func() { fakeFaults, fakeFaultsSet = nil, nil })
	sock, batches := fakeDaemon(t, svcs25, nil)
	plain := tapvsadm(t, sock, "", "-ln")
	if strings.Contains(plain, "Fault") {
		t.Fatalf("-ln without faults:\n%s", plain)
	}
	fakeFaults = faultsInForce
	if got := tapvsadm(t, sock, "", "--fault"); got != faultLines {
		t.Fatalf("--fault:\n%s\nwant:\n%s", got, faultLines)
	}
	if got := tapvsadm(t, sock, "", "--fault", "-f", "1"); got != strings.SplitAfter(faultLines, "\n")[1] {
		t.Fatalf("--fault -f 1:\n%s", got)
	}
	if got, want := tapvsadm(t, sock, "", "-ln"), plain+"Faults in force (5; tapvsadm --fault --off clears them):\n"+faultLines; got != want {
		t.Fatalf("-ln with faults:\n%s\nwant:\n%s", got, want)
	}
	for _, args := range [][]string{
		{"--fault", "-t", "172.25.254.100:80", "--with", "loss=0.05,direction=to_client"},
		{"--fault", "-u", "172.25.254.100:53", "--with", "every=3"},
		{"--fault", "-f", "1", "--with", "syn=refuse"},
		{"--fault", "-r", "10.20.1.2:80", "--with", "blackhole=true"},
		{"--fault", "--client", "172.25.254.0/28", "--with", "blackhole=1,direction=to_server"},
		{"--fault", "-r", "10.20.1.2:80", "--with", "latency=50ms, jitter=1ms,rate=1mbps,duplicate=0.5,reorder=1,drop_fin=true,reset_bytes=10,reset_after=2s"},
		{"--fault", "-r", "10.20.1.2:80", "--off"},
		{"--fault", "--client", "fd00::/64", "--off"},
		{"--fault", "-f", "7", "--off"},
		{"--fault", "--off"},
	} {
		tapvsadm(t, sock, "", args...)
	}
	want := `POST {"service":"tcp 172.25.254.100:80","direction":"to_client","loss":0.05}
POST {"service":"udp 172.25.254.100:53","every":3}
POST {"service":"fwm 1","syn":"refuse"}
POST {"server":"10.20.1.2:80","blackhole":true}
POST {"client":"172.25.254.0/28","direction":"to_server","blackhole":true}
POST {"server":"10.20.1.2:80","drop_fin":true,"latency":"50ms","jitter":"1ms","rate":"1mbps","duplicate":0.5,"reorder":1,"reset_bytes":10,"reset_after":"2s"}
DELETE server=10.20.1.2%3A80
DELETE client=fd00%3A%3A%2F64
DELETE service=fwm+7
PUT []`
	if got := strings.Join(fakeFaultsSet, "\n"); got != want {
		t.Fatalf("asked:\n%s\nwant:\n%s", got, want)
	}
	fakeFaultsSet = nil
	saved := tapvsadm(t, sock, "", "-S", "-n")
	wantSaved := "--fault -t 172.25.254.100:80 --with direction=to_client,loss=0.05\n--fault -r 10.20.1.2:80 --with direction=both,blackhole=true\n--fault --client 172.25.254.0/28 --with direction=to_server,every=10\n" +
		"--fault --client 172.25.254.16/28 --with direction=both,drop_fin=true,latency=80ms,jitter=20ms,rate=8mbit,duplicate=0.01,reorder=0.02,reset_bytes=1048576,reset_after=1m30s\n"
	if !strings.HasSuffix(saved, "\n"+wantSaved) || strings.Count(saved, "--fault") != 4 {
		t.Fatalf("-S -n:\n%s\nwant it to end with:\n%s", saved, wantSaved)
	}
	tapvsadm(t, sock, saved, "-R")
	if b := batches(); len(b) != 1 {
		t.Fatalf("-R's batch: %+v", b)
	}
	wantRestored := `POST {"service":"tcp 172.25.254.100:80","direction":"to_client","loss":0.05}
POST {"server":"10.20.1.2:80","direction":"both","blackhole":true}
POST {"client":"172.25.254.0/28","direction":"to_server","every":10}
POST {"client":"172.25.254.16/28","direction":"both","drop_fin":true,"latency":"80ms","jitter":"20ms","rate":"8mbit","duplicate":0.01,"reorder":0.02,"reset_bytes":1048576,"reset_after":"1m30s"}`
	if got := strings.Join(fakeFaultsSet, "\n"); got != wantRestored {
		t.Fatalf("-R's faults:\n%s\nwant:\n%s", got, wantRestored)
	}
}

// A fault's line says its delayed frames when it has a key of the delay
// family, its resets when it has one of the reset family, and ends with
// the counters every fault has.
func TestPrintFaultCounters(t *testing.T) {
	for _, c := range []struct {
		f    api.Fault
		want string
	}{
		{api.Fault{DropFIN: true}, "drop_fin=true  file  seen 1 dropped 2 refused 3\n"},
		{api.Fault{Latency: "1ms"}, "latency=1ms  file  delayed 4  seen 1 dropped 2 refused 3\n"},
		{api.Fault{Jitter: "1ms"}, "jitter=1ms  file  delayed 4  seen 1 dropped 2 refused 3\n"},
		{api.Fault{Rate: "1514"}, "rate=1514  file  delayed 4  seen 1 dropped 2 refused 3\n"},
		{api.Fault{Duplicate: 0.5}, "duplicate=0.5  file  delayed 4  seen 1 dropped 2 refused 3\n"},
		{api.Fault{Reorder: 0.5}, "reorder=0.5  file  delayed 4  seen 1 dropped 2 refused 3\n"},
		{api.Fault{ResetBytes: 9}, "reset_bytes=9  file  reset 5  seen 1 dropped 2 refused 3\n"},
		{api.Fault{ResetAfter: "1s"}, "reset_after=1s  file  reset 5  seen 1 dropped 2 refused 3\n"},
		{api.Fault{Latency: "1ms", ResetAfter: "1s"}, "latency=1ms,reset_after=1s  file  delayed 4 reset 5  seen 1 dropped 2 refused 3\n"},
	} {
		c.f.Client = "10.0.0.0/8"
		var b strings.Builder
		printFault(&b, api.FaultView{Fault: c.f, Source: "file", Frames: 1, Dropped: 2, Refused: 3, Delayed: 4, Reset: 5})
		if want := "--fault --client 10.0.0.0/8 --with " + c.want; b.String() != want {
			t.Errorf("%+v: %q, want %q", c.f, b.String(), want)
		}
	}
}
