package nat

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
)

// timedLink records what the balancer sends, with when, from any
// goroutine (a delay line's).
type timedLink struct {
	mu    sync.Mutex
	sent  []timedFrame
	vnets []tun.VNetHdr // the virtio-net headers of the frames Send sent
	more  chan struct{} // a frame was recorded (buffered, 1)
}

func newTimedLink() *timedLink { return &timedLink{more: make(chan struct{}, 1)} }

// record keeps a frame sent. Under mu.
func (l *timedLink) record(tf timedFrame) {
	l.sent = append(l.sent, tf)
	select {
	case l.more <- struct{}{}:
	default:
	}
}

type timedFrame struct {
	at    time.Time
	side  Side
	kept  bool // by Send (a kept frame), not Transmit
	frame []byte
}

func (*timedLink) Resolve(*Dest) {}
func (l *timedLink) Transmit(side Side, f []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.record(timedFrame{time.Now(), side, false, append([]byte(nil), f...)})
}
func (l *timedLink) Send(side Side, f []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.vnets = append(l.vnets, append(tun.VNetHdr(nil), f[:tun.VNetHdrLen]...))
	l.record(timedFrame{time.Now(), side, true, append([]byte(nil), f[tun.VNetHdrLen:]...)})
}

// wait waits (bounded) until n frames have been sent, and returns them.
func (l *timedLink) wait(t *testing.T, n int) []timedFrame {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		l.mu.Lock()
		got := append([]timedFrame(nil), l.sent...)
		l.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-l.more:
		case <-deadline:
			t.Fatalf("%d frames sent, want %d", len(got), n)
		}
	}
}

func delayRig(t *testing.T) (*rig, *timedLink, netip.Addr, uint16) {
	r := newRig(t, TCP, "rr", nil)
	l := newTimedLink()
	r.b.Attach(l)
	rip, lport := r.open(t, 40000)
	t.Cleanup(func() { r.b.SetFaults(nil) })
	return r, l, rip, lport
}

func (r *rig) data(t *testing.T, seq uint32, n int) *Frame {
	return frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: seq, payload: make([]byte, n), srcMAC: macClient})
}

var svc80 = FaultTarget{Protocol: TCP, VIP: netip.AddrPortFrom(vip, 80)}

func TestFaultLatencyKeepsOrder(t *testing.T) {
	r, l, _, _ := delayRig(t)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Latency: 40 * time.Millisecond, Jitter: 20 * time.Millisecond})
	start := time.Now()
	const n = 30
	for i := range n {
		if v := r.b.Process(ClientSide, r.data(t, uint32(1+i*10), 10)); v != Stolen {
			t.Fatalf("frame %d: %v, want it kept", i, v)
		}
	}
	if len(l.sent) != 0 && time.Since(start) < 20*time.Millisecond {
		t.Fatal("a frame left before its latency")
	}
	got := l.wait(t, n)
	seq0 := seqOf(t, got[0])
	for i, s := range got {
		if s.side != ServerSide || !s.kept || seqOf(t, s)-seq0 != uint32(i*10) {
			t.Fatalf("frame %d: side %v kept %v seq +%d: out of order", i, s.side, s.kept, seqOf(t, s)-seq0)
		}
		if e := s.at.Sub(start); e < 20*time.Millisecond {
			t.Fatalf("frame %d left %v after it came, below latency - jitter", i, e)
		}
		if ok, _ := l4Verifies(s.frame); !ok {
			t.Fatalf("frame %d: bad checksum", i)
		}
	}
	if fs := r.b.Faults(); fs[0].Delayed != n || fs[0].Frames != n {
		t.Fatalf("counters %+v", fs[0])
	}
	// The other direction is not delayed.
	if v := r.b.Process(ServerSide, frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: 5000, proto: TCP, ack: true})); v == Stolen {
		t.Fatal("a to_client frame of a to_server fault was delayed")
	}
}

func TestFaultDuplicateAndReorder(t *testing.T) {
	r, l, _, _ := delayRig(t)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Duplicate: 1})
	for i := range 3 {
		if v := r.b.Process(ClientSide, r.data(t, uint32(1+i), 1)); v != Stolen {
			t.Fatalf("%v", v)
		}
	}
	got := l.wait(t, 6)
	seq0 := seqOf(t, got[0])
	for i, s := range got {
		if seqOf(t, s)-seq0 != uint32(i/2) {
			t.Fatalf("copy %d: seq +%d, want each frame twice in order", i, seqOf(t, s)-seq0)
		}
	}
	if fs := r.b.Faults(); fs[0].Delayed != 6 {
		t.Fatalf("delayed %d, want 6 (duplicates counted)", fs[0].Delayed)
	}

	// Every frame that can be held is: each pair swapped.
	l.mu.Lock()
	l.sent = nil
	l.mu.Unlock()
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Reorder: 1})
	for i := range 4 {
		r.b.Process(ClientSide, r.data(t, uint32(10+i), 1))
	}
	got = l.wait(t, 4)
	var seqs []uint32
	for _, s := range got {
		seqs = append(seqs, seqOf(t, s)-seq0-9+100) // seq 10, the first of this run, as 100
	}
	if want := []uint32{101, 100, 103, 102}; !slices.Equal(seqs, want) {
		t.Fatalf("order %v, want %v", seqs, want)
	}
	// A held frame with none to pass it leaves after ReorderHold.
	start := time.Now()
	r.b.Process(ClientSide, r.data(t, 20, 1))
	got = l.wait(t, 5)
	if e := got[4].at.Sub(start); e < ReorderHold {
		t.Fatalf("the lone held frame left after %v, want at least %v", e, ReorderHold)
	}
}

func seqOf(t *testing.T, s timedFrame) uint32 {
	t.Helper()
	return decode(t, &Frame{Buf: s.frame, Len: len(s.frame)}).tcp.Seq
}

func TestFaultRateSpacesAndBounds(t *testing.T) {
	r, l, _, _ := delayRig(t)
	const rate = 200_000 // bytes/s: a 1000-byte frame each 5 ms (with its headers: a little more)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Rate: rate})
	start := time.Now()
	sent := 0
	for i := range 400 {
		if v := r.b.Process(ClientSide, r.data(t, uint32(1+i*1000), 1000)); v == Stolen {
			sent++
		} else if v != Drop {
			t.Fatalf("frame %d: %v", i, v)
		}
	}
	// The queue holds rateBacklog of the rate (two super-frames' worth
	// here: 655 ms), the rest is dropped as a full queue drops.
	frameLen := 1000 + 54
	wantQueued := int(rateBacklog(rate)*rate/int64(time.Second))/frameLen + 1
	// What left meanwhile made room for as many more (a slow run).
	extra := int(time.Since(start)*rate/time.Second)/frameLen + 1
	if sent < wantQueued-1 || sent > wantQueued+extra || r.drops(DropFaultQueue) != uint64(400-sent) {
		t.Fatalf("queued %d (want %d), queue drops %d", sent, wantQueued, r.drops(DropFaultQueue))
	}
	got := l.wait(t, 20)
	// The 20th left no sooner than 20 frames' time at the rate.
	if e, min := got[19].at.Sub(start), time.Duration(20*frameLen)*time.Second/rate; e < min {
		t.Fatalf("20 frames in %v, faster than the rate allows (%v)", e, min)
	}
	// Clearing the fault sends what the line holds at once.
	r.setFaults(t)
	got = l.wait(t, sent)
	if e := got[sent-1].at.Sub(start); e > 400*time.Millisecond {
		t.Fatalf("the queue drained %v after the start: not at once", e)
	}
	if n := r.b.delayedBytes.Load(); n != 0 {
		t.Fatalf("%d bytes still counted as held", n)
	}
	if v := r.b.Process(ClientSide, r.data(t, 1, 1)); v != Forward {
		t.Fatalf("with the fault cleared: %v", v)
	}
}

func TestFaultDropFIN(t *testing.T) {
	r, _, _, _ := delayRig(t)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, DropFIN: true})
	fin := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, fin: true, seq: 1, srcMAC: macClient})
	if v := r.b.Process(ClientSide, fin); v != Drop {
		t.Fatalf("FIN: %v", v)
	}
	if v := r.b.Process(ClientSide, r.data(t, 1, 5)); v != Forward {
		t.Fatalf("data: %v", v)
	}
	if fs := r.b.Faults(); fs[0].Dropped != 1 || fs[0].Frames != 2 {
		t.Fatalf("counters %+v", fs[0])
	}
}

// conn40000 is the connection r.open(t, 40000) made.
func (r *rig) conn40000() *Conn {
	return r.b.table.lookup(&tupleKey{src: client.As16(), dst: vip.As16(), sport: 40000, dport: 80, proto: TCP})
}

// cutOut checks that Process forwarded f cut, with the receiver's RST to
// follow it, and returns both as they leave (the frame's virtio-net
// header left out).
func cutOut(t *testing.T, f *Frame, v Verdict) (cut, rst []byte) {
	t.Helper()
	if v != Forward || len(f.Follow) <= tun.VNetHdrLen {
		t.Fatalf("%v, follow %d bytes: want the frame cut and an RST to follow", v, len(f.Follow))
	}
	return append([]byte(nil), f.Bytes()...), f.Follow[tun.VNetHdrLen:]
}

func TestFaultResetBytes(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	l := newTimedLink()
	r.b.Attach(l)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToClient, ResetBytes: 100})
	rip, lport := r.open(t, 40000) // the SYN-ACK's seq is 0: the stream starts at 1
	fromServer := func(seq uint32, n int, fin bool) (*Frame, Verdict) {
		f := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, fin: fin, seq: seq, ackNum: 2001, payload: make([]byte, n)})
		return f, r.b.Process(ServerSide, f)
	}
	if _, v := fromServer(1, 60, false); v != Forward {
		t.Fatalf("60 bytes: %v", v)
	}
	// A retransmission within the limit passes.
	if _, v := fromServer(1, 60, false); v != Forward {
		t.Fatalf("60 bytes again: %v", v)
	}
	f, v := fromServer(61, 80, true)
	cutB, rstB := cutOut(t, f, v)
	cut := decode(t, &Frame{Buf: cutB, Len: len(cutB)})
	if cut.tcp.Seq != 61 || len(cut.tcp.Payload) != 40 || cut.tcp.FIN || cut.tcp.RST {
		t.Fatalf("the cut segment: seq %d len %d fin %v", cut.tcp.Seq, len(cut.tcp.Payload), cut.tcp.FIN)
	}
	rst := decode(t, &Frame{Buf: rstB, Len: len(rstB)})
	if !rst.tcp.RST || rst.tcp.Seq != 101 || rst.tcp.DstPort != 40000 || rst.ip.DstIP.String() != client.String() {
		t.Fatalf("the client's RST: %+v", rst.tcp)
	}
	got := l.wait(t, 1)
	srv := decode(t, &Frame{Buf: got[0].frame, Len: len(got[0].frame)})
	if got[0].side != ServerSide || !srv.tcp.RST || srv.tcp.Seq != 2001 || srv.ip.DstIP.String() != rip.String() || srv.tcp.DstPort != 8080 {
		t.Fatalf("the server's RST: side %v %+v", got[0].side, srv.tcp)
	}
	for _, b := range [][]byte{cutB, rstB, got[0].frame} {
		if ok, has := l4Verifies(b); !has || !ok {
			t.Fatal("a bad checksum")
		}
	}
	// Past the limit nothing goes; below it a retransmission still does.
	if _, v := fromServer(141, 10, false); v != Drop {
		t.Fatalf("past the limit: %v", v)
	}
	// The cut segment again (the RST lost): cut and reset again, counted once.
	f, v = fromServer(61, 80, true)
	cutOut(t, f, v)
	l.wait(t, 2)
	if fs := r.b.Faults(); fs[0].Reset != 1 {
		t.Fatalf("resets %d", fs[0].Reset)
	}
	if st := r.b.Table().Conns()[0].State; st != "CLOSE" {
		t.Fatalf("state %s after the reset", st)
	}
}

func TestFaultResetAfter(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	l := newTimedLink()
	r.b.Attach(l)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultBoth, ResetAfter: 30 * time.Millisecond})
	start := time.Now()
	r.open(t, 40000)
	got := l.wait(t, 2)
	if e := got[0].at.Sub(start); e < 30*time.Millisecond {
		t.Fatalf("reset after %v", e)
	}
	sides := map[Side]bool{}
	for _, s := range got {
		d := decode(t, &Frame{Buf: s.frame, Len: len(s.frame)})
		if !d.tcp.RST {
			t.Fatalf("%+v", d.tcp)
		}
		sides[s.side] = true
	}
	if !sides[ClientSide] || !sides[ServerSide] {
		t.Fatalf("RSTs to %v, want both sides", sides)
	}
	if fs := r.b.Faults(); fs[0].Reset != 1 {
		t.Fatalf("resets %d", fs[0].Reset)
	}
	if st := r.b.Table().Conns()[0].State; st != "CLOSE" {
		t.Fatalf("state %s after the reset", st)
	}
}

// A super-frame from the server, offloaded (a partial checksum, TSO),
// cut at the limit: what is left stays a super-frame while longer than
// one segment, becomes one frame when not, and its partial checksum
// holds the shorter length's pseudo-header sum.
func TestFaultResetBytesOffloaded(t *testing.T) {
	for _, c := range []struct {
		limit uint64
		gso   bool // left a super-frame
	}{{2000, true}, {1401, true}, {1400, false}, {1000, false}} {
		r := newRig(t, TCP, "rr", nil)
		l := newTimedLink()
		r.b.Attach(l)
		r.setFaults(t, Fault{Target: svc80, Dir: FaultToClient, ResetBytes: c.limit})
		rip, lport := r.open(t, 40000)
		f := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 1, ackNum: 2001, payload: make([]byte, 3000)})
		makePartial(f).SetGSO(tun.VNetGSOTCPv4, 14+20+20, 1400)
		q, rst := cutOut(t, f, r.b.Process(ServerSide, f))
		vnet := f.VNet
		if !vnet.NeedsCsum() || (vnet.GSOType() != tun.VNetGSONone) != c.gso {
			t.Fatalf("limit %d: virtio-net header %v, want a super-frame %v", c.limit, vnet, c.gso)
		}
		csum.Finish(q[vnet.CsumStart():], vnet.CsumOffset())
		d := decode(t, &Frame{Buf: q, Len: len(q)})
		if uint64(len(d.tcp.Payload)) != c.limit || d.ip.Length != uint16(20+20+c.limit) {
			t.Fatalf("limit %d: %d bytes, IP length %d", c.limit, len(d.tcp.Payload), d.ip.Length)
		}
		if ok, has := l4Verifies(q); !has || !ok {
			t.Fatalf("limit %d: the finished checksum does not verify", c.limit)
		}
		if ok, _ := l4Verifies(rst); !ok || decode(t, &Frame{Buf: rst, Len: len(rst)}).tcp.Seq != 1+uint32(c.limit) {
			t.Fatalf("limit %d: the client's RST", c.limit)
		}
	}
}

// From the client over IPv6: the stream toward the server is cut, the
// server gets the bytes and an RST at their end, the client an RST at its
// last ack; a corrupt segment that would be cut is dropped instead.
func TestFaultResetBytesToServer6(t *testing.T) {
	r := newRig6(t, TCP, "rr", nil)
	l := newTimedLink()
	r.b.Attach(l)
	r.setFaults(t, Fault{Target: FaultTarget{Protocol: TCP, VIP: netip.AddrPortFrom(vip6, 80)}, Dir: FaultToServer, ResetBytes: 10})
	data := func(seq uint32, payload string) *Frame {
		return frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: TCP, ack: true, seq: seq, ackNum: 500, payload: []byte(payload), srcMAC: macClient})
	}
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 100, srcMAC: macClient})); v != Forward {
		t.Fatalf("SYN: %v", v)
	}
	if v := r.b.Process(ClientSide, data(101, "0123")); v != Forward {
		t.Fatalf("4 bytes: %v", v)
	}
	bad := data(105, "456789abcd")
	bad.Bytes()[len(bad.Bytes())-1] ^= 1 // the checksum no longer verifies
	if v := r.b.Process(ClientSide, bad); v != Drop {
		t.Fatalf("a corrupt segment over the limit: %v", v)
	}
	f := data(105, "456789abcd")
	cutB, rstB := cutOut(t, f, r.b.Process(ClientSide, f))
	cut := decode(t, &Frame{Buf: cutB, Len: len(cutB)})
	if string(cut.tcp.Payload) != "456789" || !l4Verifies6(cutB) {
		t.Fatalf("the cut segment: payload %q", cut.tcp.Payload)
	}
	rst := decode(t, &Frame{Buf: rstB, Len: len(rstB)})
	if !rst.tcp.RST || rst.tcp.Seq != cut.tcp.Seq+6 || !l4Verifies6(rstB) {
		t.Fatalf("the server's RST: %+v", rst.tcp)
	}
	got := l.wait(t, 1)
	cl := decode(t, &Frame{Buf: got[0].frame, Len: len(got[0].frame)})
	if got[0].side != ClientSide || !cl.tcp.RST || cl.tcp.Seq != 500 || cl.tcp.DstPort != 40000 || !l4Verifies6(got[0].frame) {
		t.Fatalf("the client's RST: side %v %+v", got[0].side, cl.tcp)
	}
}

// IPv6 targets are found: a service by its VIP, a real server by its
// address (the keys are the table's 16-byte form, not the first 4 bytes).
func TestFaultIPv6Targets(t *testing.T) {
	for _, target := range []FaultTarget{
		{Protocol: TCP, VIP: netip.AddrPortFrom(vip6, 80)},
		{Server: netip.AddrPortFrom(rs6a, 8080)},
	} {
		r := newRig6(t, TCP, "rr", func(c *Config) {})
		r.setWeight(t, rs6b, 8080, 0)
		r.setFaults(t, Fault{Target: target, Dir: FaultToServer, Every: 1})
		if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})); v != Drop {
			t.Fatalf("%s: %v", target, v)
		}
		if fs := r.b.Faults(); fs[0].Dropped != 1 {
			t.Fatalf("%s: %+v", target, fs[0])
		}
	}
}

func TestFaultDelayRefusals(t *testing.T) {
	udp := FaultTarget{Protocol: UDP, VIP: netip.AddrPortFrom(vip, 53)}
	for _, c := range []struct {
		f    Fault
		want string
	}{
		{Fault{Target: svc80, Dir: FaultBoth, Duplicate: 1.5}, "duplicate"},
		{Fault{Target: svc80, Dir: FaultBoth, Duplicate: -0.1}, "duplicate"},
		{Fault{Target: svc80, Dir: FaultBoth, Reorder: 1.01}, "reorder"},
		{Fault{Target: svc80, Dir: FaultBoth, Latency: -time.Millisecond}, "latency"},
		{Fault{Target: svc80, Dir: FaultBoth, Latency: MaxLatency + 1}, "latency"},
		{Fault{Target: svc80, Dir: FaultBoth, Latency: time.Millisecond, Jitter: time.Millisecond + 1}, "jitter"},
		{Fault{Target: svc80, Dir: FaultBoth, Latency: time.Millisecond, Jitter: -1}, "jitter"},
		{Fault{Target: svc80, Dir: FaultBoth, ResetAfter: -1}, "reset_after"},
		{Fault{Target: svc80, Dir: FaultBoth, ResetAfter: MaxResetAge + 1}, "reset_after"},
		{Fault{Target: svc80, Dir: FaultBoth, Rate: MinRate - 1}, "rate"},
		{Fault{Target: svc80, Dir: FaultBoth, Rate: MaxRate + 1}, "rate"},
		{Fault{Target: svc80, Dir: FaultBoth, ResetBytes: MaxResetBytes + 1}, "reset_bytes"},
		{Fault{Target: udp, Dir: FaultBoth, ResetBytes: 1}, "not TCP"},
		{Fault{Target: udp, Dir: FaultBoth, ResetAfter: time.Second}, "not TCP"},
		{Fault{Target: udp, Dir: FaultBoth, DropFIN: true}, "not TCP"},
		{Fault{Target: svc80, Dir: FaultBoth, Blackhole: true, Latency: time.Second}, "blackhole"},
		{Fault{Target: svc80, Dir: FaultBoth, Blackhole: true, DropFIN: true}, "blackhole"},
		{Fault{Target: svc80, Dir: FaultBoth, Blackhole: true, ResetBytes: 1}, "blackhole"},
	} {
		if err := c.f.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.f, err, c.want)
		}
	}
	for _, f := range []Fault{
		{Target: svc80, Dir: FaultBoth, Duplicate: 1},
		{Target: svc80, Dir: FaultBoth, Reorder: 1},
		{Target: svc80, Dir: FaultBoth, Latency: MaxLatency, Jitter: MaxLatency},
		{Target: svc80, Dir: FaultBoth, Jitter: 0, Latency: 1},
		{Target: svc80, Dir: FaultBoth, ResetAfter: MaxResetAge},
		{Target: svc80, Dir: FaultBoth, Rate: MinRate},
		{Target: svc80, Dir: FaultBoth, Rate: MaxRate},
		{Target: svc80, Dir: FaultBoth, ResetBytes: MaxResetBytes},
		{Target: svc80, Dir: FaultBoth, DropFIN: true},
		{Target: FaultTarget{Server: netip.AddrPortFrom(rs1, 53)}, Dir: FaultBoth, ResetBytes: 1},
		{Target: udp, Dir: FaultBoth, Latency: time.Millisecond},
	} {
		if err := f.Check(); err != nil {
			t.Errorf("%+v: %v", f, err)
		}
	}
}

func TestFrameBufSizes(t *testing.T) {
	for _, c := range []struct{ n, want int }{
		{1, tinyFrameBuf}, {tinyFrameBuf, tinyFrameBuf}, {tinyFrameBuf + 1, smallFrameBuf},
		{smallFrameBuf, smallFrameBuf}, {smallFrameBuf + 1, bigFrameBuf}, {bigFrameBuf, bigFrameBuf},
	} {
		b := getFrameBuf(c.n)
		if b == nil || len(*b) != c.want || frameBufLen(c.n) != c.want {
			t.Fatalf("a buffer for %d bytes: %v (frameBufLen %d), want %d", c.n, b, frameBufLen(c.n), c.want)
		}
		putFrameBuf(b)
	}
}

// A frame larger than any buffer is not taken (counted by the caller); a
// frame the byte bound refuses does not count against the rate cap.
func TestFaultLineRefusals(t *testing.T) {
	r, _, _, _ := delayRig(t)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Rate: MinRate})
	line := r.b.faults.Load().rules[0].lines[0]
	huge := &Frame{Buf: make([]byte, bigFrameBuf), Len: bigFrameBuf - tun.VNetHdrLen + 1}
	if line.put(ServerSide, huge, nil) {
		t.Fatal("a frame past the largest buffer was taken")
	}
	r.b.delayedBytes.Store(MaxDelayed) // the lines full
	if line.put(ServerSide, r.data(t, 1, 10), nil) {
		t.Fatal("a frame past MaxDelayed was taken")
	}
	line.mu.Lock()
	free := line.free
	line.mu.Unlock()
	r.b.delayedBytes.Store(0)
	if free != 0 {
		t.Fatalf("a refused frame moved the rate cap's clock to %d", free)
	}
}

func TestRateBacklog(t *testing.T) {
	for _, c := range []struct {
		rate uint64
		want time.Duration
	}{
		{1_000_000, MaxRateQueue},                   // 250ms of it is more than two super-frames
		{200_000, 655_360 * time.Microsecond},       // two super-frames take longer than 250ms
		{524_288, 250 * time.Millisecond},           // exactly 250ms both ways
		{MinRate, 86_573_315_719 * time.Nanosecond}, // 131072 bytes at 1514 a second
	} {
		if got := time.Duration(rateBacklog(c.rate)); got != c.want {
			t.Errorf("rateBacklog(%d) = %v, want %v", c.rate, got, c.want)
		}
	}
}

// The lines hold MaxDelayed bytes and not one more: frames of 2048
// bytes with their header fill it exactly.
func TestFaultDelayedBoundExact(t *testing.T) {
	r, l, _, _ := delayRig(t)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Latency: time.Minute})
	const frameBytes = 2048
	payload := frameBytes - tun.VNetHdrLen - 14 - 20 - 20
	fits := MaxDelayed / frameBytes
	kept := 0
	for i := range fits + 3 {
		if r.b.Process(ClientSide, r.data(t, uint32(1+i), payload)) == Stolen {
			kept++
		}
	}
	if kept != fits || r.b.delayedBytes.Load() != MaxDelayed || r.drops(DropFaultQueue) != 3 {
		t.Fatalf("kept %d of %d that fit, %d bytes held, %d dropped", kept, fits, r.b.delayedBytes.Load(), r.drops(DropFaultQueue))
	}
	r.setFaults(t)
	l.wait(t, kept)
}

// A delayed frame keeps its virtio-net header: an offloaded frame leaves
// partial, a plain one with a zero header.
func TestFaultDelayKeepsVNet(t *testing.T) {
	r, l, _, _ := delayRig(t)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Latency: time.Millisecond})
	f := r.data(t, 1, 100)
	makePartial(f)
	if v := r.b.Process(ClientSide, f); v != Stolen {
		t.Fatalf("%v", v)
	}
	plain := r.data(t, 101, 100)
	if v := r.b.Process(ClientSide, plain); v != Stolen {
		t.Fatalf("%v", v)
	}
	l.wait(t, 2)
	l.mu.Lock()
	defer l.mu.Unlock()
	if v := l.vnets[0]; !v.NeedsCsum() || v.CsumStart() != 34 || v.CsumOffset() != 16 {
		t.Fatalf("the offloaded frame's header: %v", v)
	}
	if v := l.vnets[1]; string(v) != string(make([]byte, tun.VNetHdrLen)) {
		t.Fatalf("the plain frame's header: %v", v)
	}
}

// Jitter spreads a frame's due time evenly over latency ± jitter: on
// fresh lines (nothing ahead), some frames earlier than the latency, some
// later, none outside.
func TestFaultJitterSpread(t *testing.T) {
	r, _, _, _ := delayRig(t)
	const lat, jit = int64(50 * time.Millisecond), int64(20 * time.Millisecond)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Latency: time.Duration(lat), Jitter: time.Duration(jit)})
	line := r.b.faults.Load().rules[0].lines[0]
	early, late := 0, 0
	for i := range 200 {
		line.mu.Lock()
		line.tail = 0 // as if nothing were ahead
		line.mu.Unlock()
		before := monoNow()
		if !line.put(ServerSide, r.data(t, uint32(i), 1), nil) {
			t.Fatal("not queued")
		}
		after := monoNow()
		line.mu.Lock()
		at := line.q[len(line.q)-1].at
		line.mu.Unlock()
		if at < before+lat-jit || at > after+lat+jit {
			t.Fatalf("due %v after it came: outside %v ± %v", time.Duration(at-before), time.Duration(lat), time.Duration(jit))
		}
		if at < before+lat-jit/2 {
			early++
		}
		if at > after+lat+jit/2 {
			late++
		}
	}
	if early < 20 || late < 20 {
		t.Fatalf("%d of 200 in the first quarter of the spread, %d in the last: not even", early, late)
	}
}

// A frame whose fault is cleared while it is on its way to the line goes
// on at once rather than being dropped.
func TestFaultClearedOnTheWay(t *testing.T) {
	r, _, _, _ := delayRig(t)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Latency: time.Minute})
	line := r.b.faults.Load().rules[0].lines[0]
	line.stop() // as ClearFault does, between the frame's lookup and its put
	if v := r.b.Process(ClientSide, r.data(t, 1, 10)); v != Forward {
		t.Fatalf("%v, want it forwarded", v)
	}
	if r.drops(DropFaultQueue) != 0 {
		t.Fatal("counted as a queue drop")
	}
}

// The limit's edges: a segment ending exactly at it passes whole, one
// starting at it (after the reset) is dropped; a fault without
// reset_after starts no timer.
func TestFaultResetBytesEdges(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	l := newTimedLink()
	r.b.Attach(l)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToClient, ResetBytes: 100})
	rip, lport := r.open(t, 40000) // the stream starts at 1
	fromServer := func(seq uint32, n int) (*Frame, Verdict) {
		f := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: seq, ackNum: 2001, payload: make([]byte, n)})
		return f, r.b.Process(ServerSide, f)
	}
	if f, v := fromServer(1, 100); v != Forward || f.Follow != nil {
		t.Fatalf("100 bytes of 100: %v, want them whole", v)
	}
	c := r.conn40000()
	if cf := c.fault.Load(); cf == nil || cf.timer != nil {
		t.Fatalf("the connection's fault state %+v: want one, without a timer", cf)
	}
	if len(l.sent) != 0 {
		t.Fatal("something sent within the limit")
	}
	f, v := fromServer(1, 101)
	cut, _ := cutOut(t, f, v)
	if _, v := fromServer(101, 1); v != Drop {
		t.Fatalf("a byte at the limit, after the reset: %v", v)
	}
	if d := decode(t, &Frame{Buf: cut, Len: len(cut)}); len(d.tcp.Payload) != 100 {
		t.Fatalf("cut to %d bytes", len(d.tcp.Payload))
	}
}

// reset_after on a connection whose sides have acknowledged nothing (a
// SYN only): no RST can carry a number they take, none is sent or
// counted, and the entry closes.
func TestFaultResetAfterNothingAcked(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	l := newTimedLink()
	r.b.Attach(l)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultBoth, ResetAfter: 10 * time.Millisecond})
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})); v != Forward {
		t.Fatalf("SYN: %v", v)
	}
	// The timer's goroutine closes the entry: its state is what to watch.
	tick, deadline := time.NewTicker(time.Millisecond), time.After(5*time.Second)
	defer tick.Stop()
	for r.b.Table().Conns()[0].State != "CLOSE" {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("state %s", r.b.Table().Conns()[0].State)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if fs := r.b.Faults(); fs[0].Reset != 0 || len(l.sent) != 0 {
		t.Fatalf("resets %d, %d frames sent", fs[0].Reset, len(l.sent))
	}
}

// reset_bytes with latency: the cut segment and the receiver's RST both
// take the line, in that order; the sender's RST does not.
func TestFaultResetBytesDelayed(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	l := newTimedLink()
	r.b.Attach(l)
	t.Cleanup(func() { r.b.SetFaults(nil) })
	rip, lport := r.open(t, 40000)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToClient, ResetBytes: 10, Latency: 5 * time.Millisecond})
	start := time.Now()
	if v := r.b.Process(ServerSide, frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 1, ackNum: 2001, payload: make([]byte, 20)})); v != Stolen {
		t.Fatalf("%v", v)
	}
	got := l.wait(t, 3)
	var kept []timedFrame
	for _, s := range got {
		if s.kept {
			kept = append(kept, s)
		} else if s.side != ServerSide {
			t.Fatal("the client's RST left the line")
		}
	}
	if len(kept) != 2 {
		t.Fatalf("%d frames on the line, want the cut segment and the RST", len(kept))
	}
	cut, rst := decode(t, &Frame{Buf: kept[0].frame, Len: len(kept[0].frame)}), decode(t, &Frame{Buf: kept[1].frame, Len: len(kept[1].frame)})
	if len(cut.tcp.Payload) != 10 || !rst.tcp.RST || rst.tcp.Seq != 11 || kept[0].at.Sub(start) < 5*time.Millisecond {
		t.Fatalf("on the line: payload %d, then rst %v seq %d, after %v", len(cut.tcp.Payload), rst.tcp.RST, rst.tcp.Seq, kept[0].at.Sub(start))
	}
}

// The lines' bound counts the buffer a frame takes: a 100-byte frame
// holds a 2 KiB buffer.
func TestFaultDelayedChargesBuffers(t *testing.T) {
	r, _, _, _ := delayRig(t)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToServer, Latency: time.Minute})
	if v := r.b.Process(ClientSide, r.data(t, 1, 100)); v != Stolen {
		t.Fatalf("%v", v)
	}
	if n := r.b.delayedBytes.Load(); n != tinyFrameBuf {
		t.Fatalf("a 100-byte frame charged %d bytes, want its buffer's %d", n, tinyFrameBuf)
	}
}

// A reset_after timer is stopped when its connection leaves the table: it
// would hold the connection until it fired.
func TestFaultResetAfterTimerStopped(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.b.Attach(newTimedLink())
	r.setFaults(t, Fault{Target: svc80, Dir: FaultBoth, ResetAfter: time.Hour})
	r.open(t, 40000)
	c := r.conn40000()
	cf := c.fault.Load()
	if cf == nil || cf.timer == nil {
		t.Fatal("no timer")
	}
	if !r.b.release(c) {
		t.Fatal("not released")
	}
	if cf.timer.Stop() {
		t.Fatal("the timer was still running after the connection left the table")
	}
}

// A line full when a stream is cut: the cut segment leaves in the batch
// with its RST to follow, neither queued again nor dropped.
func TestFaultResetBytesLineFull(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.b.Attach(newTimedLink())
	t.Cleanup(func() { r.b.SetFaults(nil) })
	rip, lport := r.open(t, 40000)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToClient, ResetBytes: 10, Latency: time.Millisecond})
	r.b.delayedBytes.Store(MaxDelayed)
	defer r.b.delayedBytes.Store(0)
	f := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 1, ackNum: 2001, payload: make([]byte, 20)})
	cut, _ := cutOut(t, f, r.b.Process(ServerSide, f))
	if d := decode(t, &Frame{Buf: cut, Len: len(cut)}); len(d.tcp.Payload) != 10 || r.drops(DropFaultQueue) != 0 {
		t.Fatalf("cut to %d bytes, %d queue drops", len(d.tcp.Payload), r.drops(DropFaultQueue))
	}
}

// With reorder on the line too, the cut segment is never the frame held
// back: a frame held before it leaves ahead of it, and the RST last.
func TestFaultResetBytesReorder(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	l := newTimedLink()
	r.b.Attach(l)
	t.Cleanup(func() { r.b.SetFaults(nil) })
	rip, lport := r.open(t, 40000)
	r.setFaults(t, Fault{Target: svc80, Dir: FaultToClient, ResetBytes: 10, Latency: time.Millisecond, Reorder: 1})
	for _, seg := range []struct {
		seq uint32
		n   int
	}{{1, 5}, {6, 20}} {
		if v := r.b.Process(ServerSide, frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: seg.seq, ackNum: 2001, payload: make([]byte, seg.n)})); v != Stolen {
			t.Fatalf("seq %d: %v", seg.seq, v)
		}
	}
	got := l.wait(t, 4)
	var order []string
	for _, s := range got {
		if !s.kept {
			continue // the server's RST
		}
		d := decode(t, &Frame{Buf: s.frame, Len: len(s.frame)})
		order = append(order, fmt.Sprintf("%d+%d rst=%v", d.tcp.Seq, len(d.tcp.Payload), d.tcp.RST))
	}
	if want := []string{"1+5 rst=false", "6+5 rst=false", "11+0 rst=true"}; !slices.Equal(order, want) {
		t.Fatalf("the line sent %v, want %v", order, want)
	}
}

// A fault replaced while a connection holds the old one's timer: the next
// frame gives the connection the new fault's state and stops the old
// timer.
func TestFaultResetAfterReplaced(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.b.Attach(newTimedLink())
	r.setFaults(t, Fault{Target: svc80, Dir: FaultBoth, ResetAfter: time.Hour})
	r.open(t, 40000)
	c := r.conn40000()
	old := c.fault.Load()
	r.setFaults(t, Fault{Target: svc80, Dir: FaultBoth, ResetAfter: 2 * time.Hour})
	if v := r.b.Process(ClientSide, r.data(t, 1, 1)); v != Forward {
		t.Fatalf("%v", v)
	}
	if cf := c.fault.Load(); cf == old || cf.timer == nil {
		t.Fatal("the connection kept the old fault's state")
	}
	if old.timer.Stop() {
		t.Fatal("the replaced fault's timer was still running")
	}
}
