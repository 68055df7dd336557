package connsync

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// clock is an injectable clock: tests move it, nothing sleeps.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// table is what one instance holds: the records applied, by content.
type table struct {
	mu   sync.Mutex
	recs map[string]PeerID
	up   map[PeerID]bool
	done []bool
}

func newTable() *table { return &table{recs: map[string]PeerID{}, up: map[PeerID]bool{}} }
func (tb *table) apply(from PeerID, r []byte) {
	tb.mu.Lock()
	tb.recs[string(r)] = from
	tb.mu.Unlock()
}
func (tb *table) len() int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return len(tb.recs)
}
func (tb *table) has(r []byte) bool {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	_, ok := tb.recs[string(r)]
	return ok
}
func (tb *table) alive(id PeerID) bool {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.up[id]
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// bind binds a UDP socket on ip (127.0.0.1, 127.0.0.2, …: loopback).
func bind(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func addr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// node is one instance under test: its syncer, table, clock and the
// records it would send in a copy.
type node struct {
	s     *Syncer
	tb    *table
	clk   *clock
	owned [][]byte
}

// start starts a manual (test-ticked) syncer with id on conn, peers with
// the others, and the tests' record format.
func start(t *testing.T, id PeerID, conn *net.UDPConn, peers []Peer, mod func(*Config)) *node {
	t.Helper()
	n := &node{tb: newTable(), clk: newClock()}
	cfg := Config{Conn: conn, ID: id, Peers: peers, Keys: []Key{{ID: 1, Secret: secret(1)}},
		RecordLen: fakeLen, Apply: n.tb.apply, Now: n.clk.Now, Log: quiet(), manual: true, Rate: 1 << 20,
		PeerState: func(from PeerID, alive bool) { n.tb.mu.Lock(); n.tb.up[from] = alive; n.tb.mu.Unlock() },
		CopyDone:  func(_ PeerID, ok bool) { n.tb.mu.Lock(); n.tb.done = append(n.tb.done, ok); n.tb.mu.Unlock() },
		Copy: func(yield func([]byte) bool) {
			n.tb.mu.Lock()
			owned := n.owned
			n.tb.mu.Unlock()
			for _, r := range owned {
				if !yield(r) {
					return
				}
			}
		}}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.s = s
	t.Cleanup(s.Close)
	return n
}

// pair starts instances 1 (on 127.0.0.1) and 2 (on 127.0.0.2).
func pair(t *testing.T, modA, modB func(*Config)) (a, b *node) {
	ca, cb := bind(t, "127.0.0.1"), bind(t, "127.0.0.2")
	a = start(t, 1, ca, []Peer{{Addr: addr(cb), ID: 2}}, modA)
	b = start(t, 2, cb, []Peer{{Addr: addr(ca), ID: 1}}, modB)
	return a, b
}

// waitFor waits, bounded, for an observable condition.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// own makes n hold records from..to and queues them; with queue false,
// it only holds them (for a copy).
func (n *node) own(from, to int, queue ...bool) {
	for i := from; i < to; i++ {
		r := rec(i)
		n.tb.mu.Lock() // the copy reads owned from its own goroutine
		n.owned = append(n.owned, r)
		n.tb.mu.Unlock()
		if len(queue) == 0 || queue[0] {
			n.s.Queue(r)
		}
	}
}

func (n *node) hasAll(recs [][]byte) bool {
	for _, r := range recs {
		if !n.tb.has(r) {
			return false
		}
	}
	return true
}

// Two instances exchange records both ways; each is applied once, with
// the sender's id; nothing is refused.
func TestExchange(t *testing.T) {
	a, b := pair(t, nil, nil)
	a.own(0, 500)
	b.own(1000, 1100)
	a.s.tick(a.clk.Now())
	b.s.tick(b.clk.Now())
	waitFor(t, "b to hold a's 500", func() bool { return b.tb.len() == 500 })
	waitFor(t, "a to hold b's 100", func() bool { return a.tb.len() == 100 })
	if !b.hasAll(a.owned) || !a.hasAll(b.owned) {
		t.Fatal("records altered")
	}
	b.tb.mu.Lock()
	from := b.tb.recs[string(rec(7))]
	b.tb.mu.Unlock()
	if from != 1 {
		t.Fatalf("record from %d, want 1", from)
	}
	sa, sb := a.s.Stats(), b.s.Stats()
	// 500 records of 6 bytes in datagrams of 1424 payload bytes: 3.
	if sa.Queued != 500 || sa.Sent != 3 || sa.SentRecords != 500 || sb.Applied != 500 {
		t.Fatalf("a %+v\nb %+v", sa, sb)
	}
	for _, s := range []Stats{sa, sb} {
		for r, n := range s.Refused {
			if n != 0 {
				t.Fatalf("%d refused as %s", n, r)
			}
		}
	}
	if !a.tb.alive(2) || !b.tb.alive(1) {
		t.Fatal("peers not alive after their datagrams")
	}
}

// The bytes counters count every datagram the kernel took, whatever its
// type, whole (header, records, tag), and the receiver every one it
// accepted: over loopback the two agree.
func TestBytesCounted(t *testing.T) {
	a, b := pair(t, nil, nil)
	a.own(0, 500)
	a.s.tick(a.clk.Now()) // 3 UPDATEs and the first HELLO
	waitFor(t, "b to accept a's 4 datagrams", func() bool { return b.s.Stats().Received == 4 })
	// 500 records of 6 bytes, 3 headers and tags, a HELLO.
	want := uint64(500*6 + 3*Overhead + Overhead + helloLen)
	if sa, sb := a.s.Stats(), b.s.Stats(); sa.SentBytes != want || sb.ReceivedBytes != want || sb.SentBytes != 0 || sa.ReceivedBytes != 0 {
		t.Fatalf("a sent %d, b received %d bytes, want %d each; a received %d, b sent %d, want 0", sa.SentBytes, sb.ReceivedBytes, want, sa.ReceivedBytes, sb.SentBytes)
	}
}

// Queue allocates nothing once its buffers exist: it runs for every
// connection's change.
func TestQueueAllocs(t *testing.T) {
	a, _ := pair(t, nil, nil)
	r := rec(1)
	if n := testing.AllocsPerRun(1000, func() { a.s.Queue(r); a.s.Queue(r) }); n != 0 {
		t.Fatalf("Queue: %v allocations", n)
	}
	if a.s.Stats().Dropped != 0 {
		t.Fatal("dropped below the bound")
	}
}

// The queue is bounded: past QueueLen full datagrams, records are dropped
// and counted; records too long for a datagram are refused.
func TestQueueBound(t *testing.T) {
	a, _ := pair(t, func(c *Config) { c.QueueLen = 2; c.MaxDatagram = Overhead + 12 }, nil)
	for i := range 10 {
		a.s.Queue(rec(i)) // 2 per datagram, 3 datagrams (2 queued, 1 filling)
	}
	a.s.Queue(make([]byte, 13))
	if s := a.s.Stats(); s.Queued != 6 || s.Dropped != 4 || s.TooBig != 1 {
		t.Fatalf("%+v: want 6 queued, 4 dropped, 1 too big", s)
	}
}

// The rate bounds datagrams sent: a tick sends what the bucket holds and
// keeps the rest queued; tokens come back with the clock.
func TestRateBound(t *testing.T) {
	var mu sync.Mutex
	updates := 0
	hook := func(d []byte, _ netip.AddrPort, send func([]byte)) {
		if Type(d[4]) == Update {
			mu.Lock()
			updates++
			mu.Unlock()
		}
		send(d)
	}
	a, b := pair(t, func(c *Config) { c.Rate = 5; c.MaxDatagram = Overhead + 12; c.hook = hook }, nil)
	a.own(0, 40) // 20 datagrams
	count := func() int { mu.Lock(); defer mu.Unlock(); return updates }
	now := a.clk.Now()
	a.s.tick(now)
	a.s.tick(now)
	if n := count(); n != 5 {
		t.Fatalf("%d datagrams in the first second at 5/s", n)
	}
	a.s.tick(a.clk.Add(600 * time.Millisecond))
	if n := count(); n != 8 {
		t.Fatalf("%d datagrams after 1.6 s at 5/s, want 8", n)
	}
	for range 10 {
		a.s.tick(a.clk.Add(time.Second))
	}
	if n := count(); n != 20 {
		t.Fatalf("%d datagrams in all, want 20", n)
	}
	waitFor(t, "all 40 records", func() bool { return b.tb.len() == 40 })
	if s := a.s.Stats(); s.Dropped != 0 {
		t.Fatalf("%+v: rate-bound datagrams wait, they are not dropped", s)
	}
}

// Loss: every 3rd UPDATE datagram is dropped. The next HELLO but one shows
// the receiver what it missed, it asks for a full copy, and ends with every
// record.
func TestLossRepairedByCopy(t *testing.T) {
	var mu sync.Mutex
	n := 0
	drop := func(d []byte, _ netip.AddrPort, send func([]byte)) {
		if Type(d[4]) == Update {
			mu.Lock()
			n++
			lose := n%3 == 0
			mu.Unlock()
			if lose {
				return
			}
		}
		send(d)
	}
	a, b := pair(t, func(c *Config) { c.MaxDatagram = Overhead + 60; c.hook = drop }, nil)
	a.own(0, 100) // 10 datagrams, 3 lost
	a.s.tick(a.clk.Now())
	waitFor(t, "7 datagrams and a HELLO", func() bool { return b.s.Stats().Received == 8 })
	if b.tb.len() != 70 || b.s.Stats().CopiesAsked != 0 {
		t.Fatalf("%d records, %+v", b.tb.len(), b.s.Stats())
	}
	a.s.tick(a.clk.Add(250 * time.Millisecond)) // the HELLO that shows the loss
	waitFor(t, "the copy", func() bool { return b.s.Stats().CopiesDone == 1 })
	if !b.hasAll(a.owned) {
		t.Fatalf("%d of 100 records after the copy", b.tb.len())
	}
	if s := b.s.Stats(); s.Lost != 3 || s.CopiesAsked != 1 {
		t.Fatalf("%+v: want 3 lost, 1 copy", s)
	}
	if a.s.Stats().CopiesServed != 1 {
		t.Fatal("copy not served")
	}
}

// Reordering: UPDATE datagrams arrive pairwise swapped; every record is
// applied, none is counted lost or refused, no copy is needed.
func TestReorderTolerated(t *testing.T) {
	var mu sync.Mutex
	var held []byte
	swap := func(d []byte, _ netip.AddrPort, send func([]byte)) {
		if Type(d[4]) != Update {
			send(d)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if held == nil {
			held = bytes.Clone(d)
			return
		}
		send(d)
		send(held)
		held = nil
	}
	a, b := pair(t, func(c *Config) { c.MaxDatagram = Overhead + 60; c.hook = swap }, nil)
	a.own(0, 100) // 10 datagrams
	a.s.tick(a.clk.Now())
	a.s.tick(a.clk.Add(250 * time.Millisecond))
	waitFor(t, "10 datagrams and 2 HELLOs", func() bool { return b.s.Stats().Received == 12 })
	if !b.hasAll(a.owned) {
		t.Fatalf("%d of 100 records", b.tb.len())
	}
	if s := b.s.Stats(); s.Lost != 0 || s.CopiesAsked != 0 || s.Refused["replay"] != 0 {
		t.Fatalf("%+v", s)
	}
}

// A copy whose datagram is lost ends short: it is asked again, under a new
// nonce, after CopyTimeout; one that never completes is given up after
// CopyRetries.
func TestCopyRetried(t *testing.T) {
	var mu sync.Mutex
	copies, dropAll := 0, false
	drop := func(d []byte, _ netip.AddrPort, send func([]byte)) {
		if Type(d[4]) == CopyData {
			mu.Lock()
			copies++
			lose := copies == 1 || dropAll
			mu.Unlock()
			if lose {
				return
			}
		}
		send(d)
	}
	a, b := pair(t, func(c *Config) { c.MaxDatagram = Overhead + nonceLen + 60; c.hook = drop }, func(c *Config) { c.CopyRetries = 2 })
	a.own(0, 50, false)
	if err := b.s.RequestCopy(1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first copy served", func() bool { return a.s.Stats().CopiesServed == 1 })
	waitFor(t, "its 4 datagrams and COPY_END", func() bool { return b.s.Stats().Received == 5 })
	if b.s.Stats().CopiesDone != 0 {
		t.Fatal("a copy short of a datagram completed")
	}
	b.s.tick(b.clk.Add(500 * time.Millisecond))
	if b.s.Stats().CopiesAsked != 1 {
		t.Fatal("asked again before the timeout")
	}
	b.s.tick(b.clk.Add(600 * time.Millisecond))
	waitFor(t, "the second copy", func() bool { return b.s.Stats().CopiesDone == 1 })
	if !b.hasAll(a.owned) || b.s.Stats().CopiesAsked != 2 {
		t.Fatalf("%d records, %+v", b.tb.len(), b.s.Stats())
	}
	// Now every COPY_DATA is lost: 1 ask and 2 retries, then given up.
	mu.Lock()
	dropAll = true
	mu.Unlock()
	if err := b.s.RequestCopy(1); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // after the first copy's 5 datagrams and the second's 6, each COPY_END
		waitFor(t, "a copy served", func() bool { return a.s.Stats().CopiesServed == uint64(3+i) })
		waitFor(t, "its COPY_END", func() bool { return b.s.Stats().Received == uint64(5+6+1+i) })
		b.s.tick(b.clk.Add(1100 * time.Millisecond))
	}
	if s := b.s.Stats(); s.CopiesAsked != 5 || s.CopiesFail != 1 || s.CopiesDone != 1 {
		t.Fatalf("%+v: want 5 asked, 1 given up", s)
	}
	b.tb.mu.Lock()
	defer b.tb.mu.Unlock()
	if len(b.tb.done) != 2 || !b.tb.done[0] || b.tb.done[1] {
		t.Fatalf("CopyDone told %v, want [true false]", b.tb.done)
	}
}

// A datagram sent again from the peer's own address is refused as a
// replay, and one of an older boot epoch as stale; neither is applied.
func TestReplayRefused(t *testing.T) {
	var mu sync.Mutex
	var captured []byte
	capture := func(d []byte, _ netip.AddrPort, send func([]byte)) {
		mu.Lock()
		if Type(d[4]) == Update && captured == nil {
			captured = bytes.Clone(d)
		}
		mu.Unlock()
		send(d)
	}
	a, b := pair(t, func(c *Config) { c.hook = capture }, nil)
	a.own(0, 3)
	a.s.tick(a.clk.Now())
	waitFor(t, "the update", func() bool { return b.tb.len() == 3 })
	b.tb.mu.Lock()
	clear(b.tb.recs)
	b.tb.mu.Unlock()
	to := b.s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	a.s.write(captured, to)
	waitFor(t, "the replay refused", func() bool { return b.s.Stats().Refused["replay"] == 1 })
	// Older epoch, a new sequence number, well sealed: stale.
	old := bytes.Clone(captured)
	h, p, _ := testOpener(1472).open(captured)
	_ = p
	h.Epoch--
	h.Seq = 1 << 40
	a.s.sendMu.Lock()
	a.s.write(a.s.sealer.seal(old, h), to)
	a.s.sendMu.Unlock()
	waitFor(t, "the stale epoch refused", func() bool { return b.s.Stats().Refused["stale_epoch"] == 1 })
	if b.tb.len() != 0 {
		t.Fatal("a refused datagram applied")
	}
}

// A restarted instance (same address and id, a newer boot epoch) is
// accepted, its window reset; it asks for a copy (JoinCopy) when it first
// hears its peer and ends with the peer's table; what the peer sent before
// is not counted lost. Its old life's datagrams are stale.
func TestRestartAsksForCopy(t *testing.T) {
	ca, cb := bind(t, "127.0.0.1"), bind(t, "127.0.0.2")
	addrB := addr(cb)
	a := start(t, 1, ca, []Peer{{Addr: addrB, ID: 2}}, nil)
	var mu sync.Mutex
	var oldHello []byte
	b := start(t, 2, cb, []Peer{{Addr: addr(ca), ID: 1}}, func(c *Config) {
		c.hook = func(d []byte, _ netip.AddrPort, send func([]byte)) {
			mu.Lock()
			if Type(d[4]) == Hello && oldHello == nil {
				oldHello = bytes.Clone(d)
			}
			mu.Unlock()
			send(d)
		}
	})
	a.own(0, 200)
	a.s.tick(a.clk.Now())
	b.s.tick(b.clk.Now())
	waitFor(t, "b to hold a's table", func() bool { return b.tb.len() == 200 })
	waitFor(t, "a to hear b", func() bool { return a.s.Stats().Received == 1 })
	b.s.Close()

	cb2, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addrB))
	if err != nil {
		t.Fatal(err)
	}
	b2 := start(t, 2, cb2, []Peer{{Addr: addr(ca), ID: 1}}, func(c *Config) {
		c.Now = func() time.Time { return time.Unix(1_900_000_000, 0) } // booted later
		c.JoinCopy = true
	})
	if b2.s.Epoch() <= b.s.Epoch() {
		t.Fatal("the restart's epoch is not newer")
	}
	b2.s.tick(b2.clk.Now()) // its HELLO, sequence 1 again
	waitFor(t, "a to accept the restarted b", func() bool { return a.s.Stats().Restarts == 1 })
	a.s.tick(a.clk.Add(time.Second)) // a's HELLO: b2 hears a, asks
	waitFor(t, "b2's copy", func() bool { return b2.s.Stats().CopiesDone == 1 })
	if !b2.hasAll(a.owned) {
		t.Fatalf("the restarted instance holds %d of 200", b2.tb.len())
	}
	if s := a.s.Stats(); s.Refused["replay"] != 0 || s.CopiesServed != 1 {
		t.Fatalf("%+v", s)
	}
	// What a sent before b2 listened is not loss: the next HELLOs ask
	// for no second copy.
	a.s.tick(a.clk.Add(time.Second))
	a.s.tick(a.clk.Add(time.Second))
	waitFor(t, "a's 3 HELLOs and the copy", func() bool { return b2.s.Stats().Received >= 5 })
	if s := b2.s.Stats(); s.Lost != 0 || s.CopiesAsked != 1 {
		t.Fatalf("%+v: want nothing lost, one copy", s)
	}
	// b's old life, replayed: refused.
	mu.Lock()
	cb2.WriteToUDPAddrPort(oldHello, addr(ca))
	mu.Unlock()
	waitFor(t, "the old epoch refused", func() bool { return a.s.Stats().Refused["stale_epoch"] == 1 })
}

// A datagram under another key is refused by its tag, one naming a key id
// not configured by the id; a second live key (rotation) is accepted.
func TestKeys(t *testing.T) {
	ca, cb := bind(t, "127.0.0.1"), bind(t, "127.0.0.2")
	a := start(t, 1, ca, []Peer{{Addr: addr(cb), ID: 2}}, func(c *Config) {
		c.Keys = []Key{{ID: 1, Secret: secret(1)}, {ID: 2, Secret: secret(2)}}
	})
	for i, key := range []Key{{ID: 1, Secret: secret(9)}, {ID: 3, Secret: secret(1)}, {ID: 2, Secret: secret(2)}} {
		c := cb
		if i > 0 {
			c = bindAt(t, addr(cb))
		}
		b := start(t, 2, c, []Peer{{Addr: addr(ca), ID: 1}}, func(c *Config) { c.Keys = []Key{key} })
		b.own(10*i, 10*i+10)
		b.s.tick(b.clk.Now())
		b.s.Close()
	}
	waitFor(t, "three verdicts", func() bool {
		s := a.s.Stats()
		return s.Refused["tag"] == 2 && s.Refused["key"] == 2 && s.Received == 2
	})
	if a.tb.len() != 10 || !a.tb.has(rec(20)) {
		t.Fatalf("%d records applied, want the rotated key's 10", a.tb.len())
	}
}

func bindAt(t *testing.T, at netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(at))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A datagram from an address that is not a peer's is refused before its
// tag; so is one from a peer's address naming another sender id.
func TestNotPeer(t *testing.T) {
	a, b := pair(t, nil, nil)
	stranger := start(t, 2, bind(t, "127.0.0.3"), []Peer{{Addr: addr(a.s.conn), ID: 1}}, nil)
	stranger.own(0, 5)
	stranger.s.tick(stranger.clk.Now())
	waitFor(t, "the stranger refused", func() bool { return a.s.Stats().Refused["not_peer"] == 2 }) // UPDATE, HELLO
	// b's address, another id.
	b.s.Close()
	imp := start(t, 3, bindAt(t, addr(b.s.conn)), []Peer{{Addr: addr(a.s.conn), ID: 1}}, nil)
	imp.own(0, 5)
	imp.s.tick(imp.clk.Now())
	waitFor(t, "the impostor refused", func() bool { return a.s.Stats().Refused["not_peer"] == 4 })
	if s := a.s.Stats(); a.tb.len() != 0 || s.Received != 0 || s.Refused["tag"] != 0 {
		t.Fatalf("%+v, %d applied", s, a.tb.len())
	}
}

// Liveness: a peer is alive from its first datagram, dead when silent past
// DeadAfter, alive again at its next HELLO; on the injected clock.
func TestHelloLiveness(t *testing.T) {
	a, b := pair(t, nil, nil)
	b.s.tick(b.clk.Now())
	waitFor(t, "b's HELLO", func() bool { return a.tb.alive(2) })
	a.s.tick(a.clk.Add(time.Second)) // exactly DeadAfter: still alive
	if !a.tb.alive(2) {
		t.Fatal("dead at DeadAfter")
	}
	b.s.tick(b.clk.Add(100 * time.Millisecond)) // not due: no HELLO
	a.s.tick(a.clk.Add(time.Millisecond))
	if a.tb.alive(2) {
		t.Fatal("alive past DeadAfter of silence")
	}
	b.s.tick(b.clk.Add(150 * time.Millisecond)) // 250 ms since its last
	waitFor(t, "b alive again", func() bool { return a.tb.alive(2) })
	if s := b.s.Stats(); s.Sent != 0 {
		t.Fatalf("%+v", s)
	}
	if s := a.s.Stats(); s.Received != 2 {
		t.Fatalf("%+v: want b's 2 HELLOs", s)
	}
}

// The HELLO payload is the UPDATE count; a copy's COPY_END its datagrams
// and records: pinned, as peers of other versions read them.
func TestBodies(t *testing.T) {
	var mu sync.Mutex
	bodies := map[Type][]byte{}
	keep := func(d []byte, _ netip.AddrPort, send func([]byte)) {
		mu.Lock()
		bodies[Type(d[4])] = bytes.Clone(d[Overhead:])
		mu.Unlock()
		send(d)
	}
	a, b := pair(t, func(c *Config) { c.hook = keep; c.MaxDatagram = Overhead + nonceLen + 12 }, nil)
	a.own(0, 5)
	a.s.tick(a.clk.Now())
	b.s.RequestCopy(1)
	waitFor(t, "the copy", func() bool { return b.s.Stats().CopiesDone == 1 })
	mu.Lock()
	defer mu.Unlock()
	if got := binary.BigEndian.Uint64(bodies[Hello]); got != 2 {
		t.Fatalf("HELLO announces %d UPDATEs, want 2", got)
	}
	e := bodies[CopyEnd]
	if binary.BigEndian.Uint64(e) != binary.BigEndian.Uint64(bodies[CopyData]) || binary.BigEndian.Uint32(e[8:]) != 3 || binary.BigEndian.Uint32(e[12:]) != 5 {
		t.Fatalf("COPY_END %x, COPY_DATA %x", e, bodies[CopyData])
	}
}

// One copy per asker is served at a time: a second request while the
// first is being walked is refused and counted; the asker's retry gets it.
func TestCopyBusy(t *testing.T) {
	release := make(chan struct{})
	a, b := pair(t, func(c *Config) {
		c.Copy = func(yield func([]byte) bool) {
			<-release
			yield(rec(1))
		}
	}, nil)
	b.s.RequestCopy(1)
	waitFor(t, "b's first request", func() bool { return a.s.Stats().Received == 1 })
	b.s.RequestCopy(1)
	waitFor(t, "the second refused as busy", func() bool { return a.s.Stats().CopyBusy == 1 })
	close(release)
	waitFor(t, "the first copy served", func() bool { return a.s.Stats().CopiesServed == 1 })
	if s := b.s.Stats(); s.CopiesDone != 0 {
		t.Fatalf("%+v: the first copy's nonce completed the second", s)
	}
	b.s.tick(b.clk.Add(1100 * time.Millisecond)) // the retry
	waitFor(t, "the retry's copy", func() bool { return b.s.Stats().CopiesDone == 1 })
	if !b.tb.has(rec(1)) {
		t.Fatal("copied record not applied")
	}
}

// Receiving allocates nothing per datagram: checks, window, delivery.
func TestAcceptAllocs(t *testing.T) {
	a, b := pair(t, func(c *Config) { c.Apply = func(PeerID, []byte) {} }, nil)
	from := addr(b.s.conn)
	o := testOpener(1472)
	s := sealer{id: 1, mac: o.macs[1]}
	const n = 300
	ds := make([][]byte, n+1)
	for i := range ds {
		d := append(make([]byte, Overhead), append(rec(1), rec(2)...)...)
		ds[i] = s.seal(d, Header{Type: Update, Sender: 2, Epoch: 100, Seq: uint64(i + 1), Count: 2})
	}
	ends := make([]int, 0, 8)
	if _, err := a.s.accept(o, ds[0], from, ends); err != nil {
		t.Fatal(err)
	}
	i := 1
	allocs := testing.AllocsPerRun(n-1, func() {
		var err error
		if ends, err = a.s.accept(o, ds[i], from, ends[:0]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("accept: %v allocations", allocs)
	}
	if _, err := a.s.accept(o, ds[1], from, ends[:0]); err != ErrReplay {
		t.Fatalf("again: %v, want ErrReplay", err)
	}
}
