package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
)

// eventsDaemon serves GET /v1/events: evs, one a line, then holds the
// stream open until the client goes; queries gets each request's query.
func eventsDaemon(t *testing.T, evs []api.Event, queries chan<- string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "tapvs.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		queries <- r.URL.RawQuery
		if r.URL.Query().Get("kind") == "bogus" {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(api.Error{Code: api.CodeInvalid, Message: `kind: "bogus" is not an event kind`})
			return
		}
		enc := json.NewEncoder(w)
		for _, e := range evs {
			enc.Encode(e)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestEventsCommand(t *testing.T) {
	at := time.Date(2026, 12, 7, 5, 1, 2, 345678000, time.UTC)
	evs := []api.Event{
		{Kind: "server_down", Time: at, Service: "tcp 172.25.254.100:80", Server: "10.20.1.2:80", Reason: "dial tcp: connection refused"},
		{Kind: "conn_closed", Time: at, Service: "tcp 172.25.254.100:80", Server: "10.20.1.2:80", Protocol: "tcp", Client: "172.25.254.1:40000",
			VIP: "172.25.254.100:80", Local: "172.25.84.10:5000", State: "TIME_WAIT", Reason: "fin: the client closed first"},
		{Kind: "drops", Time: at, Reason: "no_service", Count: 7},
		{Kind: "lost", Time: at, Count: 2},
	}
	queries := make(chan string, 4)
	sock := eventsDaemon(t, evs, queries)
	var out, errOut bytes.Buffer
	code := run([]string{"--events", "--kind", "server,conn_closed", "-t", "172.25.254.100:80", "--count", "4", "--socket", sock}, nil, &out, &errOut)
	want := `05:01:02.345678 server_down service="tcp 172.25.254.100:80" server=10.20.1.2:80 reason="dial tcp: connection refused"
05:01:02.345678 conn_closed service="tcp 172.25.254.100:80" server=10.20.1.2:80 proto=tcp client=172.25.254.1:40000 vip=172.25.254.100:80 local=172.25.84.10:5000 state=TIME_WAIT reason="fin: the client closed first"
05:01:02.345678 drops count=7 reason=no_service
05:01:02.345678 lost count=2
`
	if code != 0 || out.String() != want || errOut.Len() != 0 {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errOut.String(), out.String(), want)
	}
	if q := <-queries; q != "addr=172.25.254.100%3A80&kind=server%2Cconn_closed&proto=tcp" {
		t.Fatalf("query %q", q)
	}
	// A match service is named by its mark; --count stops early.
	out.Reset()
	if code := run([]string{"--events", "-f", "3", "--count", "1", "--socket", sock}, nil, &out, &errOut); code != 0 || out.String() != want[:bytes.IndexByte([]byte(want), '\n')+1] {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if q := <-queries; q != "addr=3&proto=fwm" {
		t.Fatalf("query %q", q)
	}
	// The API's refusal is the command's.
	out.Reset()
	errOut.Reset()
	if code := run([]string{"--events", "--kind", "bogus", "--socket", sock}, nil, &out, &errOut); code != 1 || errOut.String() != "kind: \"bogus\" is not an event kind\n" {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	<-queries
}
