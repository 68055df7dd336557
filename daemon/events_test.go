package daemon

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/events"
	"github.com/tapvs/tapvs/nat"
)

func eventsDaemon(t *testing.T) (*Daemon, *events.Sub) {
	t.Helper()
	bal, err := nat.New(nat.Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: nat.DefaultTimeouts()})
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Balancer: bal, events: events.New(), stop: make(chan struct{})}
	d.events.SetWatch(d.eventsActive)
	sub := d.events.Subscribe(events.Filter{}, 64)
	t.Cleanup(sub.Close)
	return d, sub
}

func waiting(s *events.Sub) []events.Event {
	var out []events.Event
	for {
		select {
		case e := <-s.C():
			out = append(out, e)
		default:
			return out
		}
	}
}

// Drops are published per reason that moved since the last reading, and
// only from the moment someone subscribes.
func TestEventsDrops(t *testing.T) {
	d, sub := eventsDaemon(t)
	// An IPv4 frame cut short: dropped as malformed.
	short := func() *nat.Frame {
		b := make([]byte, 20)
		b[12], b[13] = 0x08, 0x00
		return &nat.Frame{Buf: b, Len: len(b)}
	}
	d.Balancer.Process(nat.ClientSide, short())
	sub.Close()
	d.Balancer.Process(nat.ClientSide, short()) // nobody listens
	sub = d.events.Subscribe(events.Filter{}, 8)
	defer sub.Close()
	d.Balancer.Process(nat.ClientSide, short())
	d.Balancer.Process(nat.ClientSide, short())
	d.publishDrops()
	ev := waiting(sub)
	if len(ev) != 1 || ev[0].Kind != events.Drops || ev[0].Count != 2 || d.Balancer.Stats.Drops()[ev[0].Reason] != 4 {
		t.Fatalf("drops: %+v (counters %v)", ev, d.Balancer.Stats.Drops())
	}
	d.publishDrops()
	if ev := waiting(sub); len(ev) != 0 {
		t.Fatalf("nothing moved, yet: %+v", ev)
	}
}

func TestEventsConnSteps(t *testing.T) {
	d, sub := eventsDaemon(t)
	c := nat.ConnEvent{Protocol: nat.TCP, Client: netip.MustParseAddrPort("1.2.3.4:5"), VIP: netip.MustParseAddrPort("10.0.0.1:80"),
		Local: netip.MustParseAddrPort("10.2.0.1:6000"), Server: netip.MustParseAddrPort("10.1.0.1:80")}
	for _, s := range []struct {
		step        nat.ConnStep
		state, prev string
		from        nat.Side
		resets      int
		kind        events.Kind
		reason      string
		count       uint64
	}{
		{step: nat.ConnOpened, state: "NONE", kind: events.ConnOpened},
		{step: nat.ConnClosed, state: "TIME_WAIT", prev: "CLOSE_WAIT", from: nat.ServerSide, kind: events.ConnClosed, reason: "fin: the client closed first"},
		{step: nat.ConnClosed, state: "TIME_WAIT", prev: "FIN_WAIT", from: nat.ClientSide, kind: events.ConnClosed, reason: "fin: the server closed first"},
		{step: nat.ConnClosed, state: "TIME_WAIT", prev: "SYN_RECV", from: nat.ServerSide, kind: events.ConnClosed, reason: "fin from the server in SYN_RECV"},
		{step: nat.ConnReset, state: "CLOSE", prev: "ESTABLISHED", from: nat.ClientSide, kind: events.ConnReset, reason: "rst from the client"},
		{step: nat.ConnReset, state: "CLOSE", from: nat.ServerSide, kind: events.ConnReset, reason: "rst from the server"},
		{step: nat.ConnExpired, state: "ESTABLISHED", resets: 2, kind: events.ConnExpired, reason: "timeout in ESTABLISHED: RST sent to 2 side(s)", count: 2},
		{step: nat.ConnExpired, state: "TIME_WAIT", kind: events.ConnExpired, reason: "timeout in TIME_WAIT"},
	} {
		c.Step, c.State, c.Prev, c.From, c.Resets = s.step, s.state, s.prev, s.from, s.resets
		d.connEvent(c)
		ev := waiting(sub)
		if len(ev) != 1 || ev[0].Kind != s.kind || ev[0].Reason != s.reason || ev[0].Count != s.count || ev[0].State != s.state ||
			ev[0].Client != c.Client || ev[0].VIP != c.VIP || ev[0].Local != c.Local || ev[0].Server != c.Server || ev[0].Protocol != "tcp" {
			t.Errorf("%+v: %+v", s, ev)
		}
	}
	// A SYNPROXY give-up carries its own reason.
	c.Step, c.Reason = nat.ConnReset, "synproxy: gave up"
	d.connEvent(c)
	if ev := waiting(sub); len(ev) != 1 || ev[0].Reason != "synproxy: gave up" {
		t.Errorf("synproxy: %+v", ev)
	}
	c.Step, c.Protocol, c.State = nat.ConnOpened, nat.UDP, "UDP"
	d.connEvent(c)
	if ev := waiting(sub); len(ev) != 1 || ev[0].Protocol != "udp" || ev[0].State != "UDP" {
		t.Errorf("udp: %+v", ev)
	}
	if protoName(nat.Protocol(99)) != "proto(99)" {
		t.Errorf("an unknown protocol: %s", protoName(nat.Protocol(99)))
	}
	c.Step = 0
	d.connEvent(c)
	if ev := waiting(sub); len(ev) != 0 {
		t.Errorf("an unknown step published: %+v", ev)
	}
}

func TestEventsReload(t *testing.T) {
	d, sub := eventsDaemon(t)
	d.reloadEvent(api.Reload{Changes: 3, Reverted: []string{"a", "b"}}, nil)
	d.reloadEvent(api.Reload{}, errors.New("services[0].port: bad"))
	ev := waiting(sub)
	if len(ev) != 2 || ev[0].Kind != events.ReloadApplied || ev[0].Count != 3 || ev[0].Reason != "3 changes; reverted: a; b" ||
		ev[1].Kind != events.ReloadRefused || ev[1].Reason != "services[0].port: bad" {
		t.Fatalf("%+v", ev)
	}
}

// BenchmarkConnEvent is a connection step's cost past the nat hook with a
// subscriber reading: the event made and published (nat's
// BenchmarkConnWatch is the hook's side, with a watcher doing nothing).
// A real step also names its service: two small allocations more.
func BenchmarkConnEvent(b *testing.B) {
	bal, err := nat.New(nat.Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: nat.DefaultTimeouts()})
	if err != nil {
		b.Fatal(err)
	}
	d := &Daemon{Balancer: bal, events: events.New(), stop: make(chan struct{})}
	sub := d.events.Subscribe(events.Filter{}, events.MaxBuffer)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-sub.C():
			case <-done:
				return
			}
		}
	}()
	defer close(done)
	defer sub.Close()
	c := nat.ConnEvent{Step: nat.ConnClosed, Protocol: nat.TCP, State: "TIME_WAIT", Prev: "CLOSE_WAIT", Client: netip.MustParseAddrPort("1.2.3.4:5"),
		VIP: netip.MustParseAddrPort("10.0.0.1:80"), Local: netip.MustParseAddrPort("10.2.0.1:6000"), Server: netip.MustParseAddrPort("10.1.0.1:80")}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		d.connEvent(c)
	}
}
