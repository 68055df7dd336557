package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tapvs/tapvs/defence"
)

func prefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// clientSource is what the source tracker counts the rig's client under.
func clientSource() defence.Source {
	a := client.As16()
	return defence.SourceOf(&a)
}

func (r *rig) defend(t testing.TB, fn func(tx *Tx) error) {
	t.Helper()
	if err := r.b.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// syn sends a SYN from src:sport and returns the verdict.
func (r *rig) syn(t testing.TB, src netip.Addr, sport uint16) Verdict {
	t.Helper()
	return r.b.Process(ClientSide, frame(t, pktSpec{src: src, dst: vip, sport: sport, dport: 80, proto: TCP, syn: true, srcMAC: macClient}))
}

func (r *rig) ack(t testing.TB, src netip.Addr, sport uint16) Verdict {
	t.Helper()
	return r.b.Process(ClientSide, frame(t, pktSpec{src: src, dst: vip, sport: sport, dport: 80, proto: TCP, ack: true, srcMAC: macClient}))
}

func TestDenyAndAllow(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	other := netip.MustParseAddr("172.25.254.2")
	// An open connection is not touched by a later deny: only new ones are.
	if v := r.syn(t, client, 40000); v != Forward {
		t.Fatalf("before the deny: %v", v)
	}
	r.defend(t, func(tx *Tx) error { return tx.SetDeny(r.svc, prefixes(t, "172.25.254.1/32")) })
	if v := r.ack(t, client, 40000); v != Forward {
		t.Fatalf("open connection after the deny: %v, drops %v", v, r.b.Stats.Drops())
	}
	if v := r.syn(t, client, 40001); v != Drop || r.b.Stats.Drop(DropDenied) != 1 {
		t.Fatalf("denied SYN: %v, denied %d", v, r.b.Stats.Drop(DropDenied))
	}
	// A denied source's bare ACK is counted denied too: the lists come first.
	if v := r.ack(t, client, 40002); v != Drop || r.b.Stats.Drop(DropDenied) != 2 {
		t.Fatalf("denied ACK: %v, denied %d", v, r.b.Stats.Drop(DropDenied))
	}
	if v := r.syn(t, other, 40000); v != Forward {
		t.Fatalf("another source: %v", v)
	}
	// An allow list lets in only its sources; the deny list still wins.
	r.defend(t, func(tx *Tx) error {
		if err := tx.SetDeny(r.svc, nil); err != nil {
			return err
		}
		return tx.SetAllow(r.svc, prefixes(t, "172.25.254.0/31"))
	})
	if v := r.syn(t, other, 40001); v != Drop || r.b.Stats.Drop(DropNotAllowed) != 1 {
		t.Fatalf("source outside the allow list: %v, not_allowed %d", v, r.b.Stats.Drop(DropNotAllowed))
	}
	if v := r.syn(t, client, 40003); v != Forward {
		t.Fatalf("allowed source: %v", v)
	}
	r.defend(t, func(tx *Tx) error { return tx.SetDeny(r.svc, prefixes(t, "172.25.254.0/24")) })
	if v := r.syn(t, client, 40004); v != Drop || r.b.Stats.Drop(DropDenied) != 3 {
		t.Fatalf("denied and allowed: %v, denied %d", v, r.b.Stats.Drop(DropDenied))
	}
	if got := r.svc.Allow(); len(got) != 1 || got[0].String() != "172.25.254.0/31" {
		t.Fatalf("Allow() %v", got)
	}
	// Clearing both restores the service as it was; nothing is left to check.
	r.defend(t, func(tx *Tx) error {
		if err := tx.SetDeny(r.svc, nil); err != nil {
			return err
		}
		return tx.SetAllow(r.svc, nil)
	})
	if r.svc.def.pol.Load() != nil {
		t.Fatal("an empty policy is still published")
	}
	if v := r.syn(t, other, 40002); v != Forward {
		t.Fatalf("after clearing: %v", v)
	}
}

func TestDenyAppliesToUDPAndSynproxy(t *testing.T) {
	u := newRig(t, UDP, "rr", nil)
	u.defend(t, func(tx *Tx) error { return tx.SetDeny(u.svc, prefixes(t, "172.25.254.0/24")) })
	f := frame(t, pktSpec{src: client, dst: vip, sport: 4000, dport: 80, proto: UDP, srcMAC: macClient})
	if v := u.b.Process(ClientSide, f); v != Drop || u.b.Stats.Drop(DropDenied) != 1 {
		t.Fatalf("UDP: %v", v)
	}
	s, _ := synproxyRig(t)
	s.defend(t, func(tx *Tx) error { return tx.SetDeny(s.svc, prefixes(t, "172.25.254.0/24")) })
	// No cookie is sent to a denied source.
	if v := s.syn(t, client, 4000); v != Drop || s.b.Stats.Drop(DropDenied) != 1 {
		t.Fatalf("synproxy SYN: %v", v)
	}
}

func TestSourceConnLimit(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.defend(t, func(tx *Tx) error { return tx.SetLimits(r.svc, Limits{SourceConns: 2}) })
	other := netip.MustParseAddr("172.25.254.2")
	for port := uint16(1); port <= 2; port++ {
		if v := r.syn(t, client, port); v != Forward {
			t.Fatalf("connection %d: %v", port, v)
		}
	}
	if v := r.syn(t, client, 3); v != Drop || r.b.Stats.Drop(DropSrcConnLimit) != 1 {
		t.Fatalf("third connection: %v, src_conn_limit %d", v, r.b.Stats.Drop(DropSrcConnLimit))
	}
	// A retransmitted SYN of an open connection is that connection's.
	if v := r.syn(t, client, 1); v != Forward {
		t.Fatalf("retransmitted SYN: %v", v)
	}
	if v := r.syn(t, other, 1); v != Forward {
		t.Fatalf("another source: %v", v)
	}
	// A release gives the count back.
	id := clientSource()
	if n := r.svc.policy().src.Conns(id); n != 2 {
		t.Fatalf("counted %d", n)
	}
	r.b.table.now.Store(int64(time.Minute))
	r.b.Sweep()
	if n := r.svc.policy().src.Conns(id); n != 0 {
		t.Fatalf("counted %d after expiry", n)
	}
	if v := r.syn(t, client, 3); v != Forward {
		t.Fatalf("after the others expired: %v", v)
	}
	// The counts survive a change of limits.
	r.defend(t, func(tx *Tx) error { return tx.SetLimits(r.svc, Limits{SourceConns: 1, SourceCPS: 100}) })
	if v := r.syn(t, client, 4); v != Drop || r.b.Stats.Drop(DropSrcConnLimit) != 2 {
		t.Fatalf("over the new limit: %v", v)
	}
}

// A per-source limit counts the connections a client holds: one closed
// by both sides (TIME_WAIT) or reset (CLOSE) no longer counts while its
// entry lingers, so sequential connections under source_conns 1 go
// through; a SYN that reopens a lingering entry counts it again.
func TestSourceConnLimitCountsHeldConnections(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.defend(t, func(tx *Tx) error { return tx.SetLimits(r.svc, Limits{SourceConns: 1}) })
	id := clientSource()
	send := func(side Side, s pktSpec) {
		t.Helper()
		if side == ClientSide {
			s.src, s.dst, s.dport, s.srcMAC = client, vip, 80, macClient
		}
		if v := r.b.Process(side, frame(t, s)); v != Forward {
			t.Fatalf("%v %+v: %v, drops %v", side, s, v, r.b.Stats.Drops())
		}
	}
	// open makes a connection from sport and returns its server side.
	open := func(sport uint16) (netip.Addr, uint16) {
		t.Helper()
		send(ClientSide, pktSpec{sport: sport, proto: TCP, syn: true})
		for _, c := range r.b.Table().Conns() {
			if c.Client.Port() == sport {
				rip, lport := c.RIP.Addr(), c.LIP.Port()
				send(ServerSide, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true})
				send(ClientSide, pktSpec{sport: sport, proto: TCP, ack: true})
				return rip, lport
			}
		}
		t.Fatalf("no connection from port %d", sport)
		return netip.Addr{}, 0
	}
	state := func(sport uint16) string {
		for _, c := range r.b.Table().Conns() {
			if c.Client.Port() == sport {
				return c.State
			}
		}
		return "gone"
	}
	rip, lport := open(1)
	if v := r.syn(t, client, 2); v != Drop || r.b.Stats.Drop(DropSrcConnLimit) != 1 {
		t.Fatalf("second connection while the first is open: %v", v)
	}
	// Half-closed (the client's FIN): the client still holds it.
	send(ClientSide, pktSpec{sport: 1, proto: TCP, fin: true, ack: true})
	if v := r.syn(t, client, 2); v != Drop || r.b.Stats.Drop(DropSrcConnLimit) != 2 {
		t.Fatalf("second connection while the first is half-closed: %v", v)
	}
	send(ServerSide, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, fin: true, ack: true})
	if st := state(1); st != "TIME_WAIT" {
		t.Fatalf("after both FINs: %s", st)
	}
	if n := r.svc.policy().src.Conns(id); n != 0 {
		t.Fatalf("a TIME_WAIT entry counted: %d", n)
	}
	// The next connection goes through while the first lingers; a reset
	// one (CLOSE) gives its place back too.
	rip, lport = open(2)
	send(ServerSide, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, rst: true})
	if st := state(2); st != "CLOSE" {
		t.Fatalf("after the server's RST: %s", st)
	}
	open(3)
	if n := r.svc.policy().src.Conns(id); n != 1 {
		t.Fatalf("counted %d, want the one open connection", n)
	}
	if v := r.syn(t, client, 4); v != Drop || r.b.Stats.Drop(DropSrcConnLimit) != 3 {
		t.Fatalf("a second held connection: %v", v)
	}
	// A SYN on the lingering entry of port 1 reopens it: it counts again
	// (it found its connection, so no limit refused it).
	send(ClientSide, pktSpec{sport: 1, proto: TCP, syn: true})
	if st := state(1); st != "SYN_RECV" {
		t.Fatalf("reopened: %s", st)
	}
	if n := r.svc.policy().src.Conns(id); n != 2 {
		t.Fatalf("counted %d after the reopen, want 2", n)
	}
	// Expiry and release give back exactly what is counted: the lingering
	// entry of port 2 nothing, the others one each.
	r.b.table.now.Store(int64(time.Hour))
	r.b.Sweep()
	if n := r.svc.policy().src.Conns(id); n != 0 || r.b.Table().Len() != 0 {
		t.Fatalf("after expiry: counted %d, %d in the table", n, r.b.Table().Len())
	}
	if v := r.syn(t, client, 5); v != Forward {
		t.Fatalf("after expiry: %v", v)
	}
}

func TestSourceRateLimit(t *testing.T) {
	r := newRig(t, UDP, "rr", nil)
	r.defend(t, func(tx *Tx) error { return tx.SetLimits(r.svc, Limits{SourceCPS: 3}) })
	now := int64(time.Hour)
	r.b.table.now.Store(now)
	send := func(sport uint16) Verdict {
		return r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: sport, dport: 80, proto: UDP, srcMAC: macClient}))
	}
	for port := uint16(1); port <= 3; port++ {
		if v := send(port); v != Forward {
			t.Fatalf("flow %d: %v", port, v)
		}
	}
	if v := send(4); v != Drop || r.b.Stats.Drop(DropSrcRateLimit) != 1 {
		t.Fatalf("fourth in a burst: %v, src_rate_limit %d", v, r.b.Stats.Drop(DropSrcRateLimit))
	}
	// Packets of open flows are not new connections.
	if v := send(1); v != Forward {
		t.Fatalf("open flow: %v", v)
	}
	// A third of a second later, one more.
	r.b.table.now.Store(now + int64(time.Second/3) + 1)
	if v := send(5); v != Forward {
		t.Fatalf("after an interval: %v", v)
	}
	if v := send(6); v != Drop || r.b.Stats.Drop(DropSrcRateLimit) != 2 {
		t.Fatalf("then none: %v", v)
	}
}

func TestHalfOpenLimit(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.defend(t, func(tx *Tx) error { return tx.SetLimits(r.svc, Limits{HalfOpen: 2}) })
	for port := uint16(1); port <= 2; port++ {
		if v := r.syn(t, client, port); v != Forward {
			t.Fatalf("SYN %d: %v", port, v)
		}
	}
	if v := r.syn(t, client, 3); v != Drop || r.b.Stats.Drop(DropHalfOpenLimit) != 1 {
		t.Fatalf("third half-open: %v, half_open_limit %d", v, r.b.Stats.Drop(DropHalfOpenLimit))
	}
	// The client's ACK ends one handshake: room for another SYN.
	if v := r.ack(t, client, 1); v != Forward || r.svc.HalfOpen() != 1 {
		t.Fatalf("ACK: %v, half-open %d", v, r.svc.HalfOpen())
	}
	if v := r.syn(t, client, 3); v != Forward {
		t.Fatalf("after an ACK: %v", v)
	}
	// Expiry gives half-open counts back.
	r.b.table.now.Store(int64(40 * time.Second))
	r.b.Sweep()
	if r.svc.HalfOpen() != 0 {
		t.Fatalf("half-open %d after expiry", r.svc.HalfOpen())
	}
	// A SYN proxy holds no half-open state: the limit does not apply.
	setSynproxy(t, r)
	for port := uint16(10); port < 15; port++ {
		if v := r.syn(t, client, port); v != Reply {
			t.Fatalf("synproxy SYN: %v", v)
		}
	}
}

func TestLimitsChecked(t *testing.T) {
	r := newRig(t, UDP, "rr", nil)
	for _, l := range []Limits{{SourceCPS: -1}, {SourceConns: MaxSourceLimit + 1}, {HalfOpen: 5}} {
		err := r.b.Update(func(tx *Tx) error { return tx.SetLimits(r.svc, l) })
		if err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
	if r.svc.Limits() != (Limits{}) {
		t.Fatal("a refused change was applied")
	}
}

// A denied SYN costs no allocation: the lists are looked up in place.
func TestDeniedSYNAllocs(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.defend(t, func(tx *Tx) error {
		if err := tx.SetDeny(r.svc, prefixes(t, "10.0.0.0/8", "172.25.254.0/24", "192.168.0.0/16")); err != nil {
			return err
		}
		return tx.SetLimits(r.svc, Limits{SourceCPS: 10, SourceConns: 10, HalfOpen: 10})
	})
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	orig := append([]byte(nil), syn.Bytes()...)
	allocs := totalAllocs(1000, func() {
		copy(syn.Bytes(), orig)
		if r.b.Process(ClientSide, syn) != Drop {
			t.Fatal("not dropped")
		}
	})
	if allocs != 0 {
		t.Fatalf("%d allocations over 1000 denied SYNs", allocs)
	}
	// And a SYN refused by a per-source limit.
	r.defend(t, func(tx *Tx) error { return tx.SetDeny(r.svc, nil) })
	for port := uint16(1); port <= 10; port++ {
		r.syn(t, client, port)
	}
	allocs = totalAllocs(1000, func() {
		copy(syn.Bytes(), orig)
		if r.b.Process(ClientSide, syn) != Drop {
			t.Fatal("not dropped")
		}
	})
	if allocs != 0 {
		t.Fatalf("%d allocations over 1000 limited SYNs", allocs)
	}
}

// A source let in uncounted, its tracker set full of held connections,
// is counted in Stats.SourcesUntracked (defence.Tracker.Admit's tracked).
func TestSourcesUntrackedCounted(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.defend(t, func(tx *Tx) error { return tx.SetLimits(r.svc, Limits{SourceConns: 1}) })
	tr := r.svc.policy().src
	// Pin every entry of the tracker with a held connection of some
	// other source: 4 times as many sources as entries fill every set.
	for ip := uint32(1); ip <= 4*defence.MaxTrackedSources; ip++ {
		a := netip.AddrFrom4([4]byte{10, byte(ip >> 16), byte(ip >> 8), byte(ip)}).As16()
		tr.Open(defence.SourceOf(&a))
	}
	if v := r.syn(t, client, 1); v != Forward || r.b.Stats.SourcesUntracked() != 1 {
		t.Fatalf("a source with its set full: %v, untracked %d", v, r.b.Stats.SourcesUntracked())
	}
	if n := tr.Conns(clientSource()); n != 0 {
		t.Fatalf("the untracked source counted %d", n)
	}
}
