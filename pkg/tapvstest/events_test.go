package tapvstest_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// serve accepts and closes connections on ln until it is closed: enough
// for a tcp check.
func serve(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// weight is rs's weight in svc, as tapvs lists it now.
func weight(t *testing.T, l *tapvstest.Lab, svc tapvs.ServiceKey, rs netip.AddrPort) int {
	t.Helper()
	for _, s := range l.LB.RealServers() {
		if s.Service == svc && s.Addr == rs {
			return s.Weight
		}
	}
	t.Fatalf("%s is not a real server of %s", rs, svc)
	return 0
}

// A real server whose listener stops is taken out by its health check,
// and put back when it listens again: the test waits on the events, not
// on the listing, and the listing agrees the moment each event arrives.
func TestWaitServerDownAndUp(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{NoBackends: true})
	rs1 := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
	var ln net.Listener
	for i, rs := range l.RealServers {
		x, err := rs.Listen("tcp4", tapvstest.HTTPPort)
		if err != nil {
			t.Fatal(err)
		}
		serve(x)
		if i == 0 {
			ln = x
		}
	}
	w := l.Watch(tapvs.EventFilter{Kinds: []tapvs.EventKind{"server"}, Service: l.Service})
	if err := l.LB.SetHealthCheck(l.Service, tapvs.HealthCheck{Type: "tcp", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 2}); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	e := w.WaitServerDown(l.Service, rs1, 10*time.Second)
	if e.Reason == "" || e.Time.IsZero() || e.Service != l.Service {
		t.Errorf("down event without its reason, time or service: %+v", e)
	}
	if got := weight(t, l, l.Service, rs1); got != 0 {
		t.Errorf("rs1 down, its weight %d, want 0 (quiesced)", got)
	}
	ln, err := l.RealServers[0].Listen("tcp4", tapvstest.HTTPPort)
	if err != nil {
		t.Fatal(err)
	}
	serve(ln)
	w.WaitServerUp(l.Service, rs1, 10*time.Second)
	if got := weight(t, l, l.Service, rs1); got != 1 {
		t.Errorf("rs1 up, its weight %d, want 1", got)
	}
}

// A connection the client closes is seen opened, then closed by FINs,
// the client's first, with its addresses: waited on, not polled.
func TestWaitConnClosed(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.LB.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	w := l.Watch(tapvs.EventFilter{Kinds: []tapvs.EventKind{"conn"}, Service: l.Service})
	c, err := l.Dial(ctx, "tcp4", netip.AddrPortFrom(l.VIP, tapvstest.HTTPPort).String())
	if err != nil {
		t.Fatal(err)
	}
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	opened := w.WaitConnOpened(client, 10*time.Second)
	if opened.VIP != netip.AddrPortFrom(l.VIP, tapvstest.HTTPPort) || opened.Protocol != tapvs.TCP || !opened.Local.IsValid() {
		t.Errorf("opened: %+v", opened)
	}
	c.Close()
	e := w.WaitConnClosed(client, 10*time.Second)
	if e.Kind != tapvs.EventConnClosed || e.Reason != "fin: the client closed first" || e.State != "TIME_WAIT" ||
		e.Server != opened.Server || e.Local != opened.Local || e.Service != l.Service {
		t.Errorf("closed: %+v (opened %+v)", e, opened)
	}
	srv := false
	for _, rs := range l.RealServers {
		srv = srv || e.Server == netip.AddrPortFrom(rs.Addr, tapvstest.HTTPPort)
	}
	if !srv {
		t.Errorf("closed on %s, not a real server", e.Server)
	}
}

// Subscribe refuses a filter it cannot honour, naming the field.
func TestSubscribeRefused(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 1, NoBackends: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, c := range []struct {
		f    tapvs.EventFilter
		want string
	}{
		{tapvs.EventFilter{Kinds: []tapvs.EventKind{"server_down", "bogus"}}, `EventFilter.Kinds[1]: "bogus" is not an event kind`},
		{tapvs.EventFilter{Service: tapvs.ServiceKey{Protocol: "sctp", VIP: netip.MustParseAddrPort("10.0.0.1:80")}}, "EventFilter.Service: protocol"},
		{tapvs.EventFilter{Buffer: -1}, "EventFilter.Buffer: -1"},
		{tapvs.EventFilter{Buffer: 1 << 17}, "EventFilter.Buffer: 131072"},
	} {
		if _, err := l.LB.Subscribe(ctx, c.f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %s", c.f, err, c.want)
		}
	}
	// A subscription ends, its channel closed, with its context.
	ch, err := l.LB.Subscribe(ctx, tapvs.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range ch {
	}
	if _, err := l.LB.Subscribe(ctx, tapvs.EventFilter{}); err == nil {
		t.Error("subscribed on an ended context")
	}
}

// Frames dropped are told as Drops events, aggregated per reason: SYNs
// to a port of the VIP with no service are no_service drops.
func TestWaitDrops(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 1})
	w := l.Watch(tapvs.EventFilter{Kinds: []tapvs.EventKind{tapvs.EventDrops}})
	before := l.LB.Counters().Drops["no_service"]
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if c, err := l.Dial(ctx, "tcp4", netip.AddrPortFrom(l.VIP, 81).String()); err == nil {
		c.Close()
		t.Fatal("connected to a port of the VIP with no service")
	}
	// The client's SYN, and any it sent again, were dropped.
	got := w.WaitDrops("no_service", 1, 5*time.Second)
	if after := l.LB.Counters().Drops["no_service"]; got < 1 || got > after-before {
		t.Errorf("drops events counted %d no_service drops, the counter moved by %d", got, after-before)
	}
}
