package nat

import (
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/synproxy"
)

// drained is every record DrainChanges yields, copied.
func drained(b *Balancer) []connrec.Record {
	var out []connrec.Record
	b.DrainChanges(func(r *connrec.Record) { out = append(out, *r) })
	return out
}

func feedRig(t *testing.T) *rig {
	r := newRig(t, TCP, "rr", func(c *Config) { c.SyncFeed = 64 })
	r.setWeight(t, rs2, 8080, 0)
	return r
}

// TestFeedSendsStateChanges: the feed yields a connection once it is
// ESTABLISHED (not its handshake), again at each later state step with a
// newer version, and a tombstone when it leaves the table; nothing twice,
// and no next hop (a peer's is its own).
func TestFeedSendsStateChanges(t *testing.T) {
	r := feedRig(t)
	mustForward(t, r, ClientSide, pframe(t, pktSpec{src: client, dst: vip, sport: moveCport, dport: 80, proto: TCP, syn: true, seq: 1000, srcMAC: macClient}))
	if recs := drained(r.b); len(recs) != 0 {
		t.Fatalf("a half-open connection fed: %+v", recs)
	}
	mc := moveCases()[0]
	r = feedRig(t)
	cseq, _ := mc.open(t, r)
	recs := drained(r.b)
	if len(recs) != 1 || recs[0].Kind != connrec.KindOpen || recs[0].State != connrec.StateEstablished || recs[0].Version != 1 ||
		recs[0].Ext&connrec.ExtNextHop != 0 || recs[0].Ext&connrec.ExtRewriter == 0 {
		t.Fatalf("after the handshake: %+v", recs)
	}
	if recs := drained(r.b); len(recs) != 0 {
		t.Fatalf("drained twice: %+v", recs)
	}
	mustForward(t, r, ClientSide, pframe(t, pktSpec{src: client, dst: vip, sport: moveCport, dport: 80, proto: TCP, fin: true, ack: true, seq: cseq, ackNum: 0x7001, srcMAC: macClient}))
	recs = drained(r.b)
	if len(recs) != 1 || recs[0].State != connrec.StateCloseWait || recs[0].Version != 2 {
		t.Fatalf("after the client's FIN: %+v", recs)
	}
	c := r.b.table.lookup(&tupleKey{src: recs[0].Client, dst: recs[0].VIP, sport: recs[0].CPort, dport: recs[0].VPort, proto: TCP})
	if !r.b.release(c) {
		t.Fatal("not released")
	}
	recs = drained(r.b)
	if len(recs) != 1 || recs[0].Kind != connrec.KindClosed || recs[0].Version != 3 {
		t.Fatalf("after the end: %+v", recs)
	}
	if err := recs[0].Check(); err != nil {
		t.Fatalf("tombstone: %v", err)
	}
	if r.b.FeedDropped() != 0 {
		t.Errorf("dropped %d", r.b.FeedDropped())
	}
}

// TestFeedFullDrops: a ring full drops the change, counted, and the
// connection is fed again at its next step.
func TestFeedFullDrops(t *testing.T) {
	r := newRig(t, UDP, "rr", func(c *Config) { c.SyncFeed = 1 })
	for _, port := range []uint16{16, 32} { // one ring (port mod 16)
		mustForward(t, r, ClientSide, pframe(t, pktSpec{src: client, dst: vip, sport: port, dport: 80, proto: UDP, payload: []byte("x"), srcMAC: macClient}))
	}
	if r.b.FeedDropped() != 1 {
		t.Fatalf("dropped %d, want 1", r.b.FeedDropped())
	}
	if recs := drained(r.b); len(recs) != 1 || recs[0].CPort != 16 {
		t.Fatalf("%+v", recs)
	}
}

// TestShadowOnBackupLIP: a peer's record on a LIP this balancer does not
// back up is refused (unknown_lip); once the LIP is a backup one it is
// kept as a shadow, which continues the connection both ways: the
// client's segments to the server from the peer's LIP:lport, sending
// nothing; the server's replies to the peer's LIP to the client through
// this box's next hop (the record carries none), adopting it.
func TestShadowOnBackupLIP(t *testing.T) {
	a := feedRig(t)
	mc := moveCases()[0]
	cseq, sseq := mc.open(t, a)
	recs := drained(a.b)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	rec := recs[0]
	lip2 := netip.MustParseAddr("172.25.84.11")
	b := newRigAt(t, TCP, "rr", func(c *Config) { c.SyncFeed = 64 }, vip, lip2, rs1, rs2)
	if err := b.b.ImportConn(&rec); err == nil || b.b.Stats.ImportRefused()["unknown_lip"] != 1 {
		t.Fatalf("not a backup LIP: %v, %v", err, b.b.Stats.ImportRefused())
	}
	b.b.SetBackupLIPs([]netip.Addr{lip1})
	if err := b.b.ImportConn(&rec); err != nil {
		t.Fatalf("shadow: %v", err)
	}
	// This box's own connection teaches it its client-side next hop.
	hop := [6]byte{0x02, 0, 0, 0, 0, 0x77}
	mustForward(t, b, ClientSide, pframe(t, pktSpec{src: client, dst: vip, sport: 999, dport: 80, proto: TCP, syn: true, srcMAC: hop}))

	seg := pframe(t, pktSpec{src: client, dst: vip, sport: moveCport, dport: 80, proto: TCP, ack: true, seq: cseq, ackNum: 0x7001, payload: []byte("ping"), srcMAC: macClient})
	mustForward(t, b, ClientSide, seg)
	if got := decode(t, seg); got.ip.SrcIP.String() != lip1.String() || uint16(got.tcp.SrcPort) != rec.LPort {
		t.Errorf("segment from %v:%d, want %v:%d", got.ip.SrcIP, got.tcp.SrcPort, lip1, rec.LPort)
	}
	// A shadow sends nothing (its owner does), nor does a half-open
	// handshake.
	if recs := drained(b.b); len(recs) != 0 {
		t.Errorf("shadow fed: %+v", recs)
	}
	// A real server's segment to the peer's LIP: the router sends it here,
	// so the owner is gone. The shadow goes on and is adopted: sent from
	// now on, once, with a newer version.
	reply := pframe(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: rec.LPort, proto: TCP, ack: true, seq: sseq, ackNum: cseq, payload: []byte("pong"), srcMAC: macGateway})
	mustForward(t, b, ServerSide, reply)
	if got := decode(t, reply); got.ip.DstIP.String() != client.String() || got.eth.DstMAC.String() != "02:00:00:00:00:77" {
		t.Errorf("reply to %v via %v", got.ip.DstIP, got.eth.DstMAC)
	}
	recs = drained(b.b)
	if len(recs) != 1 || recs[0].Version != rec.Version+1 || recs[0].LIP != rec.LIP || b.b.Stats.Adopted() != 1 {
		t.Fatalf("adopted: %+v, %d", recs, b.b.Stats.Adopted())
	}
	mustForward(t, b, ServerSide, pframe(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: rec.LPort, proto: TCP, ack: true, seq: sseq + 4, ackNum: cseq, srcMAC: macGateway}))
	if recs := drained(b.b); len(recs) != 0 || b.b.Stats.Adopted() != 1 {
		t.Errorf("adopted twice: %+v", recs)
	}
}

// TestSteadyStateAllocsWithSync: with the change feed on, packets of an
// established connection allocate nothing (no state step, nothing fed).
func TestSteadyStateAllocsWithSync(t *testing.T) {
	r := steadyStateAllocs(t, func(c *Config) { c.SyncFeed = 64 })
	if recs := drained(r.b); len(recs) != 1 || recs[0].State != connrec.StateEstablished {
		t.Fatalf("fed %+v", recs)
	}
}

// TestImportOnOwnLIPIsFed: a connection imported onto a LIP of this
// balancer's own (a takeover, or a peer's copy after a restart) is this
// instance's to send: it is fed at once, with a newer version.
func TestImportOnOwnLIPIsFed(t *testing.T) {
	a := feedRig(t)
	moveCases()[0].open(t, a)
	recs := drained(a.b)
	b := feedRig(t) // the same LIP: a restarted a
	if err := b.b.ImportConn(&recs[0]); err != nil {
		t.Fatal(err)
	}
	got := drained(b.b)
	if len(got) != 1 || got[0].Version != recs[0].Version+1 {
		t.Fatalf("fed %+v", got)
	}
}

// TestImportedOnlyLearnsTheClientHop: a restarted instance whose table
// holds only a peer's copy of its connections (records without a next
// hop: connection sync's) and has made no connection of its own yet
// sends the server's replies to the client side's hop the client's
// segments came from, not to a MAC of zeros.
func TestImportedOnlyLearnsTheClientHop(t *testing.T) {
	a := feedRig(t)
	cseq, sseq := moveCases()[0].open(t, a)
	rec := drained(a.b)[0]
	rec.Ext &^= connrec.ExtNextHop // as the peer sends it (daemon's peerRecord)
	rec.NextHop = [6]byte{}
	b := feedRig(t) // the same LIP: a restarted a
	if err := b.b.ImportConn(&rec); err != nil {
		t.Fatal(err)
	}
	hop := [6]byte{0x02, 0, 0, 0, 0, 0x78}
	mustForward(t, b, ClientSide, pframe(t, pktSpec{src: client, dst: vip, sport: moveCport, dport: 80, proto: TCP, ack: true,
		seq: cseq, ackNum: 0x7001, payload: []byte("ping"), srcMAC: hop}))
	reply := pframe(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: rec.LPort, proto: TCP, ack: true, seq: sseq, ackNum: cseq, payload: []byte("pong"), srcMAC: macGateway})
	mustForward(t, b, ServerSide, reply)
	if got := decode(t, reply); got.ip.DstIP.String() != client.String() || got.eth.DstMAC.String() != "02:00:00:00:00:78" {
		t.Errorf("reply to %v via %v, want via the client's segments' hop", got.ip.DstIP, got.eth.DstMAC)
	}
}

// A tombstone names its connection as the peer's shadow has it: the
// state a closed entry of its protocol has (TCP's CLOSE; UDP has none
// but ESTABLISHED), and the flags its open record had: an IPv6 client or
// server, SYNPROXY, timestamps removed. Each passes connrec's checks.
func TestTombstoneFlags(t *testing.T) {
	v4c, v4s := netip.MustParseAddr("::ffff:172.25.254.1").As16(), netip.MustParseAddr("::ffff:172.25.84.20").As16()
	v6c, v6s := netip.MustParseAddr("2001:db8::1").As16(), netip.MustParseAddr("fd00::20").As16()
	vip4, lip4 := netip.MustParseAddr("::ffff:172.25.254.100").As16(), netip.MustParseAddr("::ffff:172.25.84.10").As16()
	vip6, lip6 := netip.MustParseAddr("2001:db8::100").As16(), netip.MustParseAddr("fd00::10").As16()
	conn := func(proto Protocol, client, vip, lip, server [16]byte) *Conn {
		return &Conn{in: tupleKey{src: client, dst: vip, sport: 40000, dport: 80, proto: proto},
			out: tupleKey{src: server, dst: lip, sport: 8080, dport: 20000, proto: proto}}
	}
	for _, tc := range []struct {
		name  string
		c     *Conn
		state connrec.State
		flags connrec.Flags
	}{
		{"tcp", conn(TCP, v4c, vip4, lip4, v4s), connrec.StateClose, 0},
		{"udp", conn(UDP, v4c, vip4, lip4, v4s), connrec.StateEstablished, 0},
		{"ipv6", conn(TCP, v6c, vip6, lip6, v6s), connrec.StateClose, connrec.FlagClient6 | connrec.FlagServer6},
		{"nat64", conn(TCP, v6c, vip6, lip4, v4s), connrec.StateClose, connrec.FlagClient6},
		{"nat46", conn(TCP, v4c, vip4, lip6, v6s), connrec.StateClose, connrec.FlagServer6},
		{"synproxy", func() *Conn { c := conn(TCP, v4c, vip4, lip4, v4s); c.sp = new(synproxy.State); return c }(), connrec.StateClose, connrec.FlagSynproxy},
		{"ts remove", func() *Conn { c := conn(TCP, v4c, vip4, lip4, v4s); c.timestamps = TimestampsRemove; return c }(), connrec.StateClose, connrec.FlagTSRemove},
	} {
		var r connrec.Record
		tc.c.tombstone(&r)
		if r.Kind != connrec.KindClosed || r.State != tc.state || r.Flags != tc.flags {
			t.Errorf("%s: kind %v, state %v, flags %#x; want closed, %v, %#x", tc.name, r.Kind, r.State, r.Flags, tc.state, tc.flags)
		}
		if err := r.Check(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
