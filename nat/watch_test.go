package nat

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// watched records a balancer's connection events.
type watched struct {
	mu sync.Mutex
	ev []ConnEvent
}

func watch(b *Balancer) *watched {
	w := &watched{}
	b.WatchConns(func(e ConnEvent) {
		w.mu.Lock()
		w.ev = append(w.ev, e)
		w.mu.Unlock()
	})
	return w
}

// take returns the events so far and forgets them.
func (w *watched) take() []ConnEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	ev := w.ev
	w.ev = nil
	return ev
}

func one(t *testing.T, w *watched, step ConnStep) ConnEvent {
	t.Helper()
	ev := w.take()
	if len(ev) != 1 || ev[0].Step != step {
		t.Fatalf("want one event of step %d, got %+v", step, ev)
	}
	return ev[0]
}

// TestWatchTCP: a plain TCP connection's opening, its close by FINs (on
// the second FIN only), its reset, and the sweep's expiries are told,
// with the connection's addresses, states and the side that moved it;
// the steps between are not.
func TestWatchTCP(t *testing.T) {
	mc := moveCases()[0]
	r := mc.rig(t)
	w := watch(r.b)
	cseq, sseq := mc.open(t, r)
	ci := r.b.Table().Conns()[0]
	e := one(t, w, ConnOpened)
	want := ConnEvent{Step: ConnOpened, Service: r.svc, Protocol: TCP, State: "NONE",
		Client: netip.AddrPortFrom(client, moveCport), VIP: netip.AddrPortFrom(vip, 80), Local: ci.LIP, Server: netip.AddrPortFrom(rs1, 8080)}
	if e != want {
		t.Fatalf("opened:\n got %+v\nwant %+v", e, want)
	}
	// The client's FIN half-closes it: nothing yet.
	mustForward(t, r, ClientSide, pframe(t, pktSpec{src: client, dst: vip, sport: moveCport, dport: 80, proto: TCP, fin: true, ack: true, seq: cseq, ackNum: sseq, srcMAC: macClient}))
	if ev := w.take(); len(ev) != 0 {
		t.Fatalf("a half-close told: %+v", ev)
	}
	mustForward(t, r, ServerSide, pframe(t, pktSpec{src: rs1, dst: ci.LIP.Addr(), sport: 8080, dport: ci.LIP.Port(), proto: TCP, fin: true, ack: true, seq: 0x7001, ackNum: 1002, srcMAC: macGateway}))
	e = one(t, w, ConnClosed)
	if e.State != "TIME_WAIT" || e.Prev != "CLOSE_WAIT" || e.From != ServerSide || e.Client != want.Client || e.Server != want.Server || e.Local != ci.LIP {
		t.Fatalf("closed: %+v", e)
	}
	// Its expiry, in TIME_WAIT, sends no RST.
	r.b.table.now.Store(int64(8 * time.Second))
	if n := r.b.Sweep(); n != 1 {
		t.Fatalf("swept %d", n)
	}
	e = one(t, w, ConnExpired)
	if e.State != "TIME_WAIT" || e.Resets != 0 || e.Client != want.Client {
		t.Fatalf("expired: %+v", e)
	}

	// A reset by the client.
	r = mc.rig(t)
	w = watch(r.b)
	cseq, sseq = mc.open(t, r)
	w.take()
	mustForward(t, r, ClientSide, pframe(t, pktSpec{src: client, dst: vip, sport: moveCport, dport: 80, proto: TCP, rst: true, ack: true, seq: cseq, ackNum: sseq, srcMAC: macClient}))
	e = one(t, w, ConnReset)
	if e.State != "CLOSE" || e.Prev != "ESTABLISHED" || e.From != ClientSide || e.Reason != "" {
		t.Fatalf("reset: %+v", e)
	}

	// An idle established connection expires with an RST to each side.
	r = mc.rig(t)
	r.b.Attach(recordLink{new([]sent)})
	w = watch(r.b)
	mc.open(t, r)
	w.take()
	r.b.table.now.Store(int64(100 * time.Second))
	r.b.Sweep()
	e = one(t, w, ConnExpired)
	if e.State != "ESTABLISHED" || e.Resets != 2 {
		t.Fatalf("expired established: %+v", e)
	}

	// Unwatched: nothing.
	r = mc.rig(t)
	w = watch(r.b)
	r.b.WatchConns(nil)
	mc.open(t, r)
	if ev := w.take(); len(ev) != 0 {
		t.Fatalf("told after WatchConns(nil): %+v", ev)
	}
}

// TestWatchServerReset: a reset from the server is told as the server's.
func TestWatchServerReset(t *testing.T) {
	mc := moveCases()[0]
	r := mc.rig(t)
	w := watch(r.b)
	mc.open(t, r)
	ci := r.b.Table().Conns()[0]
	w.take()
	mustForward(t, r, ServerSide, pframe(t, pktSpec{src: rs1, dst: ci.LIP.Addr(), sport: 8080, dport: ci.LIP.Port(), proto: TCP, rst: true, ack: true, seq: 0x7001, ackNum: 1001, srcMAC: macGateway}))
	if e := one(t, w, ConnReset); e.From != ServerSide || e.State != "CLOSE" {
		t.Fatalf("reset: %+v", e)
	}
}

// TestWatchUDP: a UDP entry is opened and expires in its one state.
func TestWatchUDP(t *testing.T) {
	r := newRig(t, UDP, "rr", nil)
	w := watch(r.b)
	mustForward(t, r, ClientSide, pframe(t, pktSpec{src: client, dst: vip, sport: 5000, dport: 80, proto: UDP, payload: []byte("x"), srcMAC: macClient}))
	if e := one(t, w, ConnOpened); e.State != "UDP" || e.Protocol != UDP {
		t.Fatalf("opened: %+v", e)
	}
	r.b.table.now.Store(int64(301 * time.Second))
	r.b.Sweep()
	if e := one(t, w, ConnExpired); e.State != "UDP" || e.Resets != 0 {
		t.Fatalf("expired: %+v", e)
	}
}

// TestWatchSynproxyRefused: a SYNPROXY connection the server refuses is
// told as a reset, with why.
func TestWatchSynproxyRefused(t *testing.T) {
	r, _ := synproxyRig(t)
	w := watch(r.b)
	openProxied(t, r, 41000)
	lport := r.b.Table().Conns()[0].LIP.Port()
	if e := one(t, w, ConnOpened); e.State != "SYN_SENT" {
		t.Fatalf("opened: %+v", e)
	}
	rst := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, rst: true, ack: true, seq: 0, ackNum: 5001, srcMAC: macGateway})
	r.b.Process(ServerSide, rst)
	e := one(t, w, ConnReset)
	if e.From != ServerSide || e.Reason == "" || e.Client != netip.AddrPortFrom(client, 41000) {
		t.Fatalf("reset: %+v", e)
	}
	// Released once: a second failure of the same connection tells nothing.
	r.b.Process(ServerSide, frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, rst: true, ack: true, seq: 0, ackNum: 5001, srcMAC: macGateway}))
	if ev := w.take(); len(ev) != 0 {
		t.Fatalf("told again: %+v", ev)
	}
}

// BenchmarkConnWatch is a connection's cost with and without a watcher:
// each iteration opens a TCP connection with a SYN, resets it, and every
// 1024 the sweep takes the reset ones off the table (an opened, a reset
// and an expired step each when watched). The packet path of an open
// connection has no hook: BenchmarkForward is its cost, watched or not.
func BenchmarkConnWatch(b *testing.B) {
	for _, watched := range []bool{false, true} {
		b.Run(fmt.Sprintf("watched=%v", watched), func(b *testing.B) {
			r := newRig(b, TCP, "rr", func(c *Config) { c.MaxConns = 4096; c.PortQuarantine = 0 })
			var n atomic.Uint64
			if watched {
				r.b.WatchConns(func(e ConnEvent) { n.Add(1) })
			}
			syn := frame(b, pktSpec{src: client, dst: vip, sport: 1, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
			rst := frame(b, pktSpec{src: client, dst: vip, sport: 1, dport: 80, proto: TCP, rst: true, ack: true, srcMAC: macClient})
			synB, rstB := append([]byte(nil), syn.Bytes()...), append([]byte(nil), rst.Bytes()...)
			now := int64(0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				port := uint16(i%1024) + 1
				for _, f := range []struct {
					fr   *Frame
					orig []byte
				}{{syn, synB}, {rst, rstB}} {
					copy(f.fr.Buf[f.fr.Off:], f.orig)
					f.fr.Len = len(f.orig)
					// The client's port; the checksum is not checked.
					binary.BigEndian.PutUint16(f.fr.Buf[f.fr.Off+14+20:], port)
					r.b.Process(ClientSide, f.fr)
				}
				if port == 1024 {
					now += int64(time.Minute)
					r.b.table.now.Store(now)
					r.b.Sweep()
				}
			}
			b.StopTimer()
			if created, _ := r.b.Stats.Conns(); created == 0 || watched && n.Load() < created {
				b.Fatalf("opened %d, told %d", created, n.Load())
			}
		})
	}
}
