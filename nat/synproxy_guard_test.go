package nat

import (
	"testing"
	"time"

	"github.com/google/gopacket/layers"
)

// An ACK storm on a proxied connection is cut in the data path: the server
// repeating one pure ACK (same seq, ack, window and timestamp) gets
// AckStorm of them through and the rest dropped and counted. Any change
// (a new ack number, a window update, a new TSval) passes and starts the
// count again, and a repeated segment that carries data (a retransmission)
// is never taken for a storm.
func TestSynproxyAckStormDropped(t *testing.T) {
	r, _ := synproxyRig(t)
	cookie, lport, rsISN := establishProxied(t, r, 48000)
	limit := int(r.b.cfg.Synproxy.AckStorm)
	if limit < 2 {
		t.Fatalf("AckStorm %d: too small to tell a storm from a repeat", limit)
	}
	type ackSpec struct {
		ack    uint32
		window uint16
		tsval  uint32
		data   []byte
	}
	send := func(a ackSpec) Verdict {
		t.Helper()
		f := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: a.ack, window: a.window,
			payload: a.data, srcMAC: macGateway, opts: []layers.TCPOption{nop, nop, tsOpt(a.tsval, 101)}})
		v := r.b.Process(ServerSide, f)
		if v == Forward {
			if d := decode(t, f); d.tcp.Seq != cookie+1 || addr(d.ip.DstIP) != client || uint16(d.tcp.DstPort) != 48000 {
				t.Fatalf("ACK to the client: seq %#x (want %#x) to %v:%d", d.tcp.Seq, cookie+1, d.ip.DstIP, d.tcp.DstPort)
			}
		}
		return v
	}
	// storm sends a limit times, then twice more: the first limit pass, the
	// rest are dropped and counted.
	storm := func(name string, a ackSpec) {
		t.Helper()
		before := r.b.Stats.Drop(DropAckStorm)
		for i := range limit + 2 {
			want := Forward
			if i >= limit {
				want = Drop
			}
			if v := send(a); v != want {
				t.Fatalf("%s: identical ACK %d of %d: verdict %v, want %v (AckStorm %d), drops %v", name, i+1, limit+2, v, want, limit, r.b.Stats.Drops())
			}
		}
		if got := r.b.Stats.Drop(DropAckStorm) - before; got != 2 {
			t.Fatalf("%s: %d counted as %v, want 2", name, got, DropAckStorm)
		}
	}

	first := ackSpec{ack: 5001, window: 200, tsval: 9001}
	storm("first ACK", first)
	newAck := first
	newAck.ack = 5002
	storm("new ack number", newAck)
	newWin := newAck
	newWin.window = 300
	storm("window update", newWin)
	newTS := newWin
	newTS.tsval = 9002
	storm("new TSval", newTS)

	// Data repeated (retransmitted) passes however often it comes.
	data := newTS
	data.data = []byte("again")
	before := r.b.Stats.Drop(DropAckStorm)
	for i := range limit + 2 {
		if v := send(data); v != Forward {
			t.Fatalf("data segment sent again %d times: verdict %v", i+1, v)
		}
	}
	if r.b.Stats.Drop(DropAckStorm) != before {
		t.Fatal("a retransmitted data segment was counted as an ACK storm")
	}
}

// The cookie keys rotate every half hour (synproxyTick asks
// synproxy.Cookies.Due), and a cookie made under the previous keys still
// checks (Check tries the current and the previous ones): a handshake a
// rotation cut in half still completes. Ticks within the half hour leave
// the keys alone. (A cookie two rotations old is refused by its age before
// its keys; synproxy's TestCookieSurvivesOneRotation refuses it by keys.)
func TestSynproxyCookieSurvivesOneRotation(t *testing.T) {
	r, _ := synproxyRig(t)
	minute := r.b.sp.cookies.Minute() // the minute the keys were drawn
	r.b.sp.cookies.Minute = func() uint32 { return minute }
	now := int64(0)
	tick := func() {
		t.Helper()
		now += int64(time.Second) // past the 100ms between ticks
		r.b.table.now.Store(now)
		r.b.synproxyTick()
	}
	synAck := func(cport uint16) uint32 {
		t.Helper()
		syn := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, syn: true, seq: 5000, srcMAC: macClient, opts: synOpts(1460, 7, 1)})
		if v := r.b.Process(ClientSide, syn); v != Reply {
			t.Fatalf("SYN from port %d: %v", cport, v)
		}
		return decode(t, syn).tcp.Seq
	}
	ack := func(cport uint16, cookie uint32) Verdict {
		t.Helper()
		return r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: 5001, ackNum: cookie + 1, srcMAC: macClient}))
	}
	opens := func(name string, cport uint16, cookie uint32) {
		t.Helper()
		if v := ack(cport, cookie); v != Forward {
			t.Fatalf("%s: cookie ACK: %v, drops %v", name, v, r.b.Stats.Drops())
		}
		if c := r.b.table.lookup(&tupleKey{src: client.As16(), dst: vip.As16(), sport: cport, dport: 80, proto: TCP}); c == nil || c.sp == nil {
			t.Fatalf("%s: the cookie ACK opened no proxied connection", name)
		}
	}

	// Ticks within the half hour rotate nothing: the same SYN in the same
	// minute gets the same cookie, and it checks.
	unrotated := synAck(49000)
	for range 3 {
		tick()
	}
	if again := synAck(49000); again != unrotated {
		t.Fatalf("ticks within the half hour changed the cookie keys (cookie %#x, then %#x)", unrotated, again)
	}
	opens("after ticks within the half hour", 49000, unrotated)

	// Half an hour on, a SYN is answered before the tick rotates the keys;
	// the same SYN in the same minute after it gets another cookie.
	minute += 30
	old := synAck(49001)
	tick()
	if fresh := synAck(49001); fresh == old {
		t.Fatal("the cookie keys did not rotate after half an hour")
	}
	opens("one rotation later", 49001, old)
	opens("a fresh cookie after the rotation", 49003, synAck(49003))
}
