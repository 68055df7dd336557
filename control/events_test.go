package control

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/events"
)

// TestEventsStream: GET /v1/events streams the events its filter selects
// as lines of JSON, from the moment its header is answered, and its
// subscription ends with the client.
func TestEventsStream(t *testing.T) {
	m := newManager(t)
	bus := events.New()
	m.SetEvents(bus)
	srv := NewServer(m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	sock := filepath.Join(t.TempDir(), "tapvs.sock")
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cl := api.Dial(sock)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	started := make(chan struct{})
	got := make(chan api.Event, 8)
	done := make(chan error, 1)
	go func() {
		done <- cl.Events(ctx, api.EventQuery{Kinds: []string{"server", "drops"}, Protocol: "tcp", Addr: "10.0.0.1:80", Buffer: 4},
			func() { close(started) },
			func(e api.Event) bool { got <- e; return e.Kind != string(events.ServerUp) })
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("stream ended: %v", err)
	case <-ctx.Done():
		t.Fatal("no answer")
	}
	if !bus.Active() {
		t.Fatal("no subscription once the header is answered")
	}
	rs := netip.MustParseAddrPort("10.1.0.1:8080")
	at := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	bus.Publish(events.Event{Kind: events.ServerDown, Service: "tcp 10.0.0.2:80", Server: rs}) // another service
	bus.Publish(events.Event{Kind: events.ReloadApplied, Service: "tcp 10.0.0.1:80"})          // another kind
	bus.Publish(events.Event{Kind: events.ServerDown, Time: at, Service: "tcp 10.0.0.1:80", Server: rs, Reason: "connection refused"})
	bus.Publish(events.Event{Kind: events.ServerUp, Service: "tcp 10.0.0.1:80", Server: rs})
	e := <-got
	want := api.Event{Kind: "server_down", Time: at, Service: "tcp 10.0.0.1:80", Server: "10.1.0.1:8080", Reason: "connection refused"}
	if e != want {
		t.Fatalf("got  %+v\nwant %+v", e, want)
	}
	if e := <-got; e.Kind != "server_up" {
		t.Fatalf("second: %+v", e)
	}
	if err := <-done; err != nil {
		t.Fatalf("stream: %v", err)
	}
	// The client gone, the server's subscription ends with its request.
	deadline := time.Now().Add(5 * time.Second)
	for bus.Active() {
		if time.Now().After(deadline) {
			t.Fatal("the subscription outlived its client")
		}
		bus.Publish(events.Event{Kind: events.ServerUp, Service: "tcp 10.0.0.1:80"}) // a write fails once the client is gone
		<-time.After(10 * time.Millisecond)
	}
}

func TestEventsRefused(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	if code, body := do("GET", "/v1/events", ""); code != 404 || !strings.Contains(body, "publishes none") {
		t.Fatalf("no bus: %d %s", code, body)
	}
	m.SetEvents(events.New())
	for _, c := range []struct{ q, want string }{
		{"kind=bogus", `kind: \"bogus\" is not an event kind`},
		{"kind=conn,lost", `kind: \"lost\" is not`},
		{"proto=tcp&addr=nope", "proto, addr:"},
		{"buffer=0", `buffer: \"0\" is not a number from 1 to 65536`},
		{"buffer=65537", "buffer:"},
		{"buffer=x", "buffer:"},
	} {
		if code, body := do("GET", "/v1/events?"+c.q, ""); code != 400 || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want 400 with %s", c.q, code, body, c.want)
		}
	}
}

func TestEventFilter(t *testing.T) {
	f, buf, err := EventFilter(map[string][]string{"kind": {"conn, reload_applied"}, "proto": {"fwm"}, "addr": {"3"}, "buffer": {"65536"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Kinds) != 5 || f.Kinds[4] != events.ReloadApplied || f.Service != "fwm 3" || buf != events.MaxBuffer {
		t.Fatalf("%+v %d", f, buf)
	}
	if f, buf, err := EventFilter(nil); err != nil || len(f.Kinds) != 0 || f.Service != "" || buf != 0 {
		t.Fatalf("none: %+v %d %v", f, buf, err)
	}
	if f, _, err := EventFilter(map[string][]string{"buffer": {"1"}, "proto": {"udp"}, "addr": {"10.0.0.1:53"}}); err != nil || f.Service != "udp 10.0.0.1:53" {
		t.Fatalf("%+v %v", f, err)
	}
}

func TestAPIEvent(t *testing.T) {
	e := APIEvent(events.Event{Kind: events.ConnExpired, Client: netip.MustParseAddrPort("1.2.3.4:5"), VIP: netip.MustParseAddrPort("10.0.0.1:80"),
		Local: netip.MustParseAddrPort("10.2.0.1:6000"), Server: netip.MustParseAddrPort("10.1.0.1:80"), Protocol: "tcp", State: "ESTABLISHED", Count: 2})
	if e.Client != "1.2.3.4:5" || e.VIP != "10.0.0.1:80" || e.Local != "10.2.0.1:6000" || e.Server != "10.1.0.1:80" || e.Count != 2 || e.State != "ESTABLISHED" || e.Protocol != "tcp" {
		t.Fatalf("%+v", e)
	}
	if e := APIEvent(events.Event{Kind: events.Drops}); e.Server != "" || e.Client != "" {
		t.Fatalf("zero addresses: %+v", e)
	}
}
