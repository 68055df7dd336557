package nat

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/tcprw"
)

// moveCase is a kind of connection to move from one balancer to another.
type moveCase struct {
	name        string
	proto       Protocol
	synproxy    bool
	client, vip netip.Addr
	rig         func(t *testing.T) *rig // the same config each call
}

func moveCases() []moveCase {
	plain := func(t *testing.T) *rig { r := newRig(t, TCP, "rr", nil); r.setWeight(t, rs2, 8080, 0); return r }
	return []moveCase{
		{"tcp", TCP, false, client, vip, plain},
		{"tcp_ts_remove", TCP, false, client, vip, func(t *testing.T) *rig {
			r := plain(t)
			if err := r.b.Update(func(tx *Tx) error { return tx.SetTimestamps(r.svc, TimestampsRemove) }); err != nil {
				t.Fatal(err)
			}
			return r
		}},
		{"synproxy", TCP, true, client, vip, func(t *testing.T) *rig { r, _ := synproxyRig(t); return r }},
		{"toa", TCP, false, client, vip, func(t *testing.T) *rig { r, _ := toaRig(t, false); return r }},
		{"proxy_v1", TCP, false, client, vip, func(t *testing.T) *rig { return proxyRig(t, ClientAddrProxyV1, false) }},
		{"proxy_v2", TCP, false, client, vip, func(t *testing.T) *rig { return proxyRig(t, ClientAddrProxyV2, false) }},
		{"udp", UDP, false, client, vip, func(t *testing.T) *rig { r := newRig(t, UDP, "rr", nil); r.setWeight(t, rs2, 8080, 0); return r }},
		{"udp_proxy_v2", UDP, false, client, vip, func(t *testing.T) *rig { r := udpProxyRig(t, nil); r.setWeight(t, rs2, 8080, 0); return r }},
		{"nat64", TCP, false, client6, vip64, func(t *testing.T) *rig { r := newRig64(t, TCP, nil); r.setWeight(t, rs2, 8080, 0); return r }},
		{"nat64_synproxy", TCP, true, client6, vip64, func(t *testing.T) *rig { r, _ := rig64With(t, TCP, true, ClientAddrNone); return r }},
		{"nat64_toa", TCP, false, client6, vip64, func(t *testing.T) *rig { r, _ := rig64With(t, TCP, false, ClientAddrTOA); return r }},
		{"nat64_proxy_v2", TCP, false, client6, vip64, func(t *testing.T) *rig { r, _ := rig64With(t, TCP, false, ClientAddrProxyV2); return r }},
		{"nat64_synproxy_proxy_v1", TCP, true, client6, vip64, func(t *testing.T) *rig { r, _ := rig64With(t, TCP, true, ClientAddrProxyV1); return r }},
		{"nat46", TCP, false, client, vip, func(t *testing.T) *rig { r := newRig46(t, TCP, nil); r.setWeight(t, rs6b, 8080, 0); return r }},
		{"nat46_udp", UDP, false, client, vip, func(t *testing.T) *rig { r := newRig46(t, UDP, nil); r.setWeight(t, rs6b, 8080, 0); return r }},
		{"nat46_synproxy", TCP, true, client, vip, func(t *testing.T) *rig { r, _ := rig46With(t, TCP, true, ClientAddrNone, nil); return r }},
		{"nat46_toa", TCP, false, client, vip, func(t *testing.T) *rig { r, _ := rig46With(t, TCP, false, ClientAddrTOA, nil); return r }},
		{"nat46_synproxy_proxy_v1", TCP, true, client, vip, func(t *testing.T) *rig { r, _ := rig46With(t, TCP, true, ClientAddrProxyV1, nil); return r }},
		{"ipv6", TCP, false, client6, vip6, func(t *testing.T) *rig { r := newRig6(t, TCP, "rr", nil); r.setWeight(t, rs6b, 8080, 0); return r }},
	}
}

const moveCport = 40123

// open opens mc's connection on r as clients and servers do: a handshake
// (SYNPROXY's, through the cookie), or a datagram each way. It returns the
// client's next sequence number and the server's (TCP).
func (mc moveCase) open(t *testing.T, r *rig) (cseq, sseq uint32) {
	t.Helper()
	if mc.synproxy {
		_, _, rsISN := establishProxiedFrom(t, r, mc.client, mc.vip, moveCport)
		return 5001, rsISN + 1
	}
	c := pktSpec{src: mc.client, dst: mc.vip, sport: moveCport, dport: 80, proto: mc.proto, srcMAC: macClient}
	if mc.proto == UDP {
		c.payload = []byte("ping")
		mustForward(t, r, ClientSide, pframe(t, c))
		ci := r.b.Table().Conns()[0]
		mustForward(t, r, ServerSide, pframe(t, pktSpec{src: ci.RIP.Addr(), dst: ci.LIP.Addr(), sport: ci.RIP.Port(), dport: ci.LIP.Port(),
			proto: UDP, payload: []byte("pong"), srcMAC: macGateway}))
		return 0, 0
	}
	c.syn, c.seq, c.opts = true, 1000, synOpts(1460, 7, 100)
	syn := pframe(t, c)
	mustForward(t, r, ClientSide, syn)
	toServer := decode(t, syn).tcp
	ci := r.b.Table().Conns()[0]
	mustForward(t, r, ServerSide, pframe(t, pktSpec{src: ci.RIP.Addr(), dst: ci.LIP.Addr(), sport: ci.RIP.Port(), dport: ci.LIP.Port(),
		proto: TCP, syn: true, ack: true, seq: 0x7000, ackNum: toServer.Seq + 1, srcMAC: macGateway, opts: synOpts(1400, 6, 9000)}))
	c.syn, c.ack, c.seq, c.ackNum, c.opts = false, true, 1001, 0x7001, []layers.TCPOption{nop, nop, tsOpt(101, 9000)}
	mustForward(t, r, ClientSide, pframe(t, c))
	return 1001, 0x7001
}

func mustForward(t *testing.T, r *rig, side Side, f *Frame) {
	t.Helper()
	if v := r.b.Process(side, f); v != Forward {
		t.Fatalf("%v: %v, drops %v", side, v, r.b.Stats.Drops())
	}
}

// exportAll is every record of b's table, copied.
func exportAll(b *Balancer) []connrec.Record {
	var out []connrec.Record
	b.ExportConns(func(r *connrec.Record) bool {
		out = append(out, *r)
		return true
	})
	return out
}

// moved exports mc's connection from a fresh balancer A, carries its
// record as bytes, imports it into a fresh B of the same config, and
// returns both and the record.
func (mc moveCase) moved(t *testing.T) (a, b *rig, rec connrec.Record, cseq, sseq uint32) {
	t.Helper()
	a, b = mc.rig(t), mc.rig(t)
	cseq, sseq = mc.open(t, a)
	recs := exportAll(a.b)
	if len(recs) != 1 {
		t.Fatalf("%d records exported, want 1", len(recs))
	}
	wire := recs[0].AppendTo(nil)
	rec, n, err := connrec.Decode(wire)
	if err != nil || n != len(wire) || rec != recs[0] {
		t.Fatalf("Decode: %v, %d of %d bytes, %+v != %+v", err, n, len(wire), rec, recs[0])
	}
	if err := b.b.ImportConn(&rec); err != nil {
		t.Fatalf("import: %v", err)
	}
	return a, b, rec, cseq, sseq
}

// TestMovedConnectionTranslatesAlike is the test of the record: a
// connection of each kind, opened on balancer A, exported, encoded,
// decoded and imported into balancer B of the same config, is translated
// by B as by A: the next segments of both sides (data with timestamps
// from the client, an ack with SACK and timestamps from the server, then
// FINs) leave both byte for byte the same, and B counts it as A does.
func TestMovedConnectionTranslatesAlike(t *testing.T) {
	for _, mc := range moveCases() {
		t.Run(mc.name, func(t *testing.T) {
			a, b, rec, cseq, sseq := mc.moved(t)
			if got := exportAll(b.b); len(got) != 1 || got[0] != rec {
				t.Fatalf("B exports %+v, want %+v", got, rec)
			}
			if b.b.Table().Len() != 1 || b.b.Stats.Imported() != 1 {
				t.Fatalf("B: %d connections, %d imported", b.b.Table().Len(), b.b.Stats.Imported())
			}
			for i, d := range []*Dest{a.d1, a.d2} {
				e := []*Dest{b.d1, b.d2}[i]
				if d.active.Load() != e.active.Load() || d.inactive.Load() != e.inactive.Load() {
					t.Errorf("server %v: active/inactive %d/%d on A, %d/%d on B", d.Addr,
						d.active.Load(), d.inactive.Load(), e.active.Load(), e.inactive.Load())
				}
			}
			// The last acks (the RSTs of an expiry), which the segments
			// below move on both alike.
			key := tupleKey{src: rec.Client, dst: rec.VIP, sport: rec.CPort, dport: rec.VPort, proto: mc.proto}
			ca, cb := a.b.table.lookup(&key), b.b.table.lookup(&key)
			for dir := range ca.acks {
				if ca.acks[dir].Load() != cb.acks[dir].Load() {
					t.Errorf("last ack %d: %#x on A, %#x on B", dir, ca.acks[dir].Load(), cb.acks[dir].Load())
				}
			}
			if _, ok := ca.lastAck(dirIn); mc.proto == TCP && !mc.synproxy && !ok {
				t.Errorf("no ack recorded: the handshake's ACK should be")
			}
			lipA, lipB := a.svc.LocalAddrs()[0], b.svc.LocalAddrs()[0]
			if lipA.inUse.Load() != lipB.inUse.Load() {
				t.Errorf("LIP in use: %d on A, %d on B", lipA.inUse.Load(), lipB.inUse.Load())
			}
			cl := pktSpec{src: mc.client, dst: mc.vip, sport: rec.CPort, dport: 80, proto: mc.proto, srcMAC: macClient}
			sv := pktSpec{src: netip.AddrFrom16(rec.Server).Unmap(), dst: netip.AddrFrom16(rec.LIP).Unmap(),
				sport: rec.RPort, dport: rec.LPort, proto: mc.proto, srcMAC: macGateway}
			var steps []struct {
				side Side
				s    pktSpec
			}
			add := func(side Side, s pktSpec) {
				steps = append(steps, struct {
					side Side
					s    pktSpec
				}{side, s})
			}
			if mc.proto == UDP {
				c, s := cl, sv
				c.payload, s.payload = []byte("next from the client"), []byte("next from the server")
				add(ClientSide, c)
				add(ServerSide, s)
			} else {
				c := cl
				c.ack, c.seq, c.ackNum, c.payload = true, cseq, sseq, []byte("GET / HTTP/1.1\r\n\r\n")
				c.opts = []layers.TCPOption{nop, nop, tsOpt(150, 9001)}
				add(ClientSide, c)
				s := sv
				s.ack, s.seq, s.ackNum, s.payload = true, sseq, 0, []byte("HTTP/1.1 200 OK\r\n")
				s.opts = []layers.TCPOption{nop, nop, tsOpt(9100, 0)} // and a SACK block, below
				add(ServerSide, s)
				c2 := c
				c2.seq, c2.ackNum, c2.payload, c2.fin = cseq+uint32(len(c.payload)), sseq+uint32(len(s.payload)), nil, true
				c2.opts = append([]layers.TCPOption{nop, nop, tsOpt(160, 9100)}, sackOpt(sseq+100, sseq+200)...)
				add(ClientSide, c2)
				s2 := s
				s2.seq, s2.payload, s2.fin = sseq+uint32(len(s.payload)), nil, true
				add(ServerSide, s2)
			}
			var serverAck uint32 // the server's view of the client's stream, from A's output
			for i, st := range steps {
				s := st.s
				if st.side == ServerSide && s.proto == TCP {
					s.ackNum = serverAck
					s.opts = append(s.opts[:3:3], sackOpt(serverAck+10, serverAck+20)...)
				}
				fa, fb := pframe(t, s), pframe(t, s)
				va, vb := a.b.Process(st.side, fa), b.b.Process(st.side, fb)
				if va != Forward || vb != Forward {
					t.Fatalf("step %d: A %v, B %v (drops A %v, B %v)", i, va, vb, a.b.Stats.Drops(), b.b.Stats.Drops())
				}
				if !bytes.Equal(fa.Bytes(), fb.Bytes()) {
					t.Fatalf("step %d (%v): A sent\n%x\nB sent\n%x", i, st.side, fa.Bytes(), fb.Bytes())
				}
				d := decode(t, fa)
				if i == 0 { // what the case is about reaches the server
					var toas []layers.TCPOption
					if d.tcp != nil {
						toas, _ = toaOpts(d)
					}
					switch {
					case mc.name == "proxy_v1" && !bytes.Contains(d.tcp.Payload, []byte("PROXY TCP4 ")),
						mc.name == "proxy_v2" && !bytes.HasPrefix(d.tcp.Payload, []byte("\r\n\r\n\x00\r\nQUIT\n")),
						mc.name == "toa" && len(toas) != 1,
						mc.name == "udp_proxy_v2" && !bytes.HasPrefix(d.udp.Payload, []byte("\r\n\r\n\x00\r\nQUIT\n")):
						t.Fatalf("the client's segment on A lacks its %s", mc.name)
					}
				}
				if st.side == ClientSide && d.tcp != nil {
					serverAck = d.tcp.Seq + uint32(len(d.tcp.Payload))
				}
			}
			// And each ends where the other does.
			ra, rb := exportAll(a.b), exportAll(b.b)
			if len(ra) != 1 || len(rb) != 1 {
				t.Fatalf("A has %d, B %d connections", len(ra), len(rb))
			}
			ra[0].LifetimeMS, rb[0].LifetimeMS = 0, 0 // two clocks
			if ra[0] != rb[0] {
				t.Errorf("after the segments:\nA %+v\nB %+v", ra[0], rb[0])
			}
		})
	}
}

// TestMovedRecordCarriesTheConnection pins what the export reads: the
// SYNPROXY connection's State and rewriter, its acks, its next hop.
func TestMovedRecordCarriesTheConnection(t *testing.T) {
	mc := moveCases()[2]
	a, b, rec, _, _ := mc.moved(t)
	ca, cb := a.b.table.lookup(&tupleKey{src: rec.Client, dst: rec.VIP, sport: rec.CPort, dport: rec.VPort, proto: TCP}),
		b.b.table.lookup(&tupleKey{src: rec.Client, dst: rec.VIP, sport: rec.CPort, dport: rec.VPort, proto: TCP})
	if ca == nil || cb == nil || cb.sp == nil || !cb.sp.Established() {
		t.Fatalf("A %v, B %v", ca, cb)
	}
	if *ca.sp.Rewriter().Load() != *cb.sp.Rewriter().Load() || ca.sp.Cookie != cb.sp.Cookie || ca.sp.ClientISN != cb.sp.ClientISN ||
		ca.sp.Opts != cb.sp.Opts || ca.sp.OurWScale != cb.sp.OurWScale || ca.sp.TSOn != cb.sp.TSOn {
		t.Errorf("SYNPROXY state differs")
	}
	if ca.clientMAC != cb.clientMAC || ca.acks[0].Load() != cb.acks[0].Load() || ca.acks[1].Load() != cb.acks[1].Load() {
		t.Errorf("next hop or acks differ")
	}
	if ca.inIPDelta != cb.inIPDelta || ca.inL4Delta != cb.inL4Delta || ca.outIPDelta != cb.outIPDelta || ca.outL4Delta != cb.outL4Delta {
		t.Errorf("checksum deltas differ")
	}
	if rec.Rewriter.Flags&tcprw.Storm == 0 || rec.Synproxy.ClientISN != 5000 || rec.Synproxy.WScale != 7 {
		t.Errorf("record %+v", rec)
	}
	// The port is held: it is never given to another connection.
	pm := b.d1.portMap(b.svc.LocalAddrs()[0], uint32(b.b.cfg.PortMax-b.b.cfg.PortMin)+1)
	if pm.claim(uint32(rec.LPort - b.b.cfg.PortMin)) {
		t.Errorf("LIP port %d not marked in use", rec.LPort)
	}
}

// TestImportRefusals: a record that cannot be applied is refused under
// its reason, counted, and changes nothing in B; the same record twice is
// stale.
func TestImportRefusals(t *testing.T) {
	mc := moveCases()[0]
	_, b, rec, _, _ := mc.moved(t)
	if err := b.b.ImportConn(&rec); !isReason(err, ImportStale) {
		t.Fatalf("import twice: %v, want stale", err)
	}
	older := rec
	older.Version--
	if err := b.b.ImportConn(&older); !isReason(err, ImportStale) {
		t.Fatalf("older: %v, want stale", err)
	}
	other := func(f func(r *connrec.Record)) connrec.Record {
		r := rec
		r.CPort++ // another connection
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name string
		r    connrec.Record
		want ImportReason
	}{
		{"invalid", other(func(r *connrec.Record) { r.LPort = 0 }), ImportInvalid},
		{"proxy length", other(func(r *connrec.Record) { r.Rewriter.Insert, r.LPort = 5, r.LPort+3 }), ImportInvalid},
		{"service", other(func(r *connrec.Record) { r.VPort = 81 }), ImportUnknownService},
		{"dest", other(func(r *connrec.Record) { r.RPort = 9090 }), ImportUnknownDest},
		{"lip", other(func(r *connrec.Record) { r.LIP[15]++ }), ImportUnknownLIP},
		{"port range", other(func(r *connrec.Record) { r.LPort = 4999 }), ImportUnknownLIP},
		{"reply tuple held", other(func(r *connrec.Record) {}), ImportConflict},
		{"same client tuple, another connection", func() connrec.Record { r := rec; r.Version++; r.LPort++; return r }(), ImportConflict},
	} {
		before := snapshotOf(b)
		err := b.b.ImportConn(&tc.r)
		if !isReason(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if after := snapshotOf(b); after != before {
			t.Errorf("%s: B changed: %+v -> %+v", tc.name, before, after)
		}
	}
	// The port of a record whose reply tuple is free but whose port map
	// says held (another connection toward the same server) conflicts too.
	free := other(func(r *connrec.Record) { r.LPort += 7 })
	pm := b.d1.portMap(b.svc.LocalAddrs()[0], uint32(b.b.cfg.PortMax-b.b.cfg.PortMin)+1)
	pm.claim(uint32(free.LPort - b.b.cfg.PortMin))
	if err := b.b.ImportConn(&free); !isReason(err, ImportConflict) {
		t.Errorf("held port: %v", err)
	}
	pm.put(uint32(free.LPort - b.b.cfg.PortMin))

	full := newRig(t, TCP, "rr", func(c *Config) { c.MaxConns = 1 })
	full.setWeight(t, rs2, 8080, 0)
	mc.open(t, full)
	r2 := other(func(r *connrec.Record) { r.LPort += 9 })
	if err := full.b.ImportConn(&r2); !isReason(err, ImportTableFull) || full.b.Table().Len() != 1 {
		t.Errorf("full table: %v, %d connections", err, full.b.Table().Len())
	}

	want := map[string]uint64{"invalid": 2, "unknown_service": 1, "unknown_dest": 1, "unknown_lip": 2, "stale": 2, "conflict": 3, "table_full": 0}
	for name, n := range b.b.Stats.ImportRefused() {
		if n != want[name] {
			t.Errorf("refused %s: %d, want %d", name, n, want[name])
		}
	}
	if full.b.Stats.ImportRefusal(ImportTableFull) != 1 {
		t.Errorf("table_full not counted")
	}
	// A newer record updates the entry; a newer tombstone takes it off.
	newer := rec
	newer.Version++
	newer.State = connrec.StateFinWait
	if err := b.b.ImportConn(&newer); err != nil || b.d1.active.Load() != 0 || b.d1.inactive.Load() != 1 {
		t.Fatalf("newer: %v, active %d inactive %d", err, b.d1.active.Load(), b.d1.inactive.Load())
	}
	tomb := newer
	tomb.Kind, tomb.Ext, tomb.Version = connrec.KindClosed, 0, newer.Version+1
	if err := b.b.ImportConn(&tomb); err != nil || b.b.Table().Len() != 0 || b.d1.inactive.Load() != 0 {
		t.Fatalf("tombstone: %v, %d connections", err, b.b.Table().Len())
	}
}

type bState struct {
	conns          int64
	active, inact  int64
	inUse          int64
	created, total uint64
}

func snapshotOf(r *rig) bState {
	created, _ := r.b.Stats.Conns()
	return bState{r.b.table.count.Load(), r.d1.active.Load(), r.d1.inactive.Load(), r.svc.LocalAddrs()[0].inUse.Load(), created, r.d1.total.Load()}
}

func isReason(err error, want ImportReason) bool {
	var ie *ImportError
	return errors.As(err, &ie) && ie.Reason == want
}

// TestRecordEnums: the record's state and client address numbers are
// pinned to IPVS's names; nat's own must map to them as export.go
// converts them (a plain number conversion).
func TestRecordEnums(t *testing.T) {
	states := map[uint32]connrec.State{
		stNone: connrec.StateNone, stEstablished: connrec.StateEstablished, stSynSent: connrec.StateSynSent,
		stSynRecv: connrec.StateSynRecv, stFinWait: connrec.StateFinWait, stTimeWait: connrec.StateTimeWait,
		stClose: connrec.StateClose, stCloseWait: connrec.StateCloseWait, stLastAck: connrec.StateLastAck,
		stListen: connrec.StateListen, stSynAck: connrec.StateSynAck,
	}
	if len(states) != int(numTCPStates) || int(connrec.NumStates) != int(numTCPStates) {
		t.Fatalf("%d states here, %d in the record", numTCPStates, connrec.NumStates)
	}
	for st, want := range states {
		if connrec.State(st) != want {
			t.Errorf("state %s is %d in the record, %d here", StateName(st), want, st)
		}
	}
	for c, want := range map[ClientAddr]connrec.ClientAddr{ClientAddrNone: connrec.ClientAddrNone,
		ClientAddrTOA: connrec.ClientAddrTOA, ClientAddrProxyV1: connrec.ClientAddrProxyV1, ClientAddrProxyV2: connrec.ClientAddrProxyV2} {
		if connrec.ClientAddr(c) != want {
			t.Errorf("client address %v is %d in the record", c, want)
		}
	}
}

// TestImportCountsAtTheSource: an imported connection the client holds is
// counted at its source as one made here would be, and an established one
// is not half-open; one in TIME_WAIT is not counted until a SYN reopens
// it; a release gives every count back.
func TestImportCountsAtTheSource(t *testing.T) {
	mc := moveCases()[0]
	plain := mc.rig
	limited := func(t *testing.T) *rig {
		r := plain(t)
		r.defend(t, func(tx *Tx) error { return tx.SetLimits(r.svc, Limits{SourceConns: 5, HalfOpen: 5}) })
		return r
	}
	mc.rig = limited
	_, b, rec, _, _ := mc.moved(t)
	id := clientSource()
	if n := b.svc.policy().src.Conns(id); n != 1 || b.svc.HalfOpen() != 0 {
		t.Fatalf("established: %d at the source, %d half-open; want 1, 0", n, b.svc.HalfOpen())
	}
	tw := rec
	tw.CPort, tw.LPort, tw.State = rec.CPort+1, rec.LPort+1, connrec.StateTimeWait
	if err := b.b.ImportConn(&tw); err != nil {
		t.Fatal(err)
	}
	if n := b.svc.policy().src.Conns(id); n != 1 {
		t.Fatalf("with one in TIME_WAIT: %d at the source, want 1", n)
	}
	// A SYN on the TIME_WAIT entry reopens it: held again, counted.
	syn := pframe(t, pktSpec{src: client, dst: vip, sport: tw.CPort, dport: 80, proto: TCP, syn: true, seq: 90000, srcMAC: macClient})
	mustForward(t, b, ClientSide, syn)
	if n := b.svc.policy().src.Conns(id); n != 2 {
		t.Fatalf("reopened: %d at the source, want 2", n)
	}
	half := rec
	half.CPort, half.LPort, half.State = rec.CPort+2, rec.LPort+2, connrec.StateSynRecv
	if err := b.b.ImportConn(&half); err != nil || b.svc.HalfOpen() != 1 {
		t.Fatalf("SYN_RECV: %v, %d half-open", err, b.svc.HalfOpen())
	}
	b.b.table.now.Store(int64(rec.LifetimeMS)*1e6 + int64(time.Minute)) // past every lifetime here
	b.b.Sweep()
	if n := b.svc.policy().src.Conns(id); n != 0 || b.svc.HalfOpen() != 0 || b.b.Table().Len() != 0 {
		t.Fatalf("after expiry: %d at the source, %d half-open, %d connections", n, b.svc.HalfOpen(), b.b.Table().Len())
	}
}

// TestExportImportBesideThePacketPath: ExportConns and ImportConn (newer
// records of the connection, updates) run while both sides' segments of
// it go through: under -race, no field is read or written unguarded, and
// every record exported is whole (it decodes).
func TestExportImportBesideThePacketPath(t *testing.T) {
	mc := moveCases()[0]
	a, b, rec, cseq, sseq := mc.moved(t)
	cl := pktSpec{src: client, dst: vip, sport: rec.CPort, dport: 80, proto: TCP, srcMAC: macClient, ack: true,
		opts: []layers.TCPOption{nop, nop, tsOpt(150, 9001)}}
	sv := pktSpec{src: rs1, dst: lip1, sport: rec.RPort, dport: rec.LPort, proto: TCP, srcMAC: macGateway, ack: true,
		opts: []layers.TCPOption{nop, nop, tsOpt(9100, 150)}}
	const n = 200
	done := make(chan error, 2)
	go func() {
		for range n {
			var err error
			a.b.ExportConns(func(r *connrec.Record) bool {
				_, _, err = connrec.Decode(r.AppendTo(nil))
				return err == nil
			})
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	go func() {
		up := rec
		for range n {
			up.Version++
			if err := b.b.ImportConn(&up); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range uint32(n) {
		for _, r := range []*rig{a, b} {
			c, s := cl, sv
			c.seq, c.ackNum, s.seq, s.ackNum = cseq+i, sseq+i, sseq+i, 0x10000+i
			mustForward(t, r, ClientSide, pframe(t, c))
			mustForward(t, r, ServerSide, pframe(t, s))
		}
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := exportAll(b.b); len(got) != 1 || got[0].Version != rec.Version+n {
		t.Fatalf("B ends with %+v", got)
	}
}

// TestImportEdges: the edges ImportConn decides on: the port range's both
// ends, a table filled to its last place, a version past the wrap, the
// lifetime carried in milliseconds, a newer record's rewriter and acks
// applied, the next hop asked for when unknown.
func TestImportEdges(t *testing.T) {
	mc := moveCases()[0]
	_, b, rec, _, _ := mc.moved(t)
	if rec.LifetimeMS != 90000 {
		t.Errorf("lifetime %d ms, want 90000 (ESTABLISHED, at the clock's start)", rec.LifetimeMS)
	}
	key := tupleKey{src: rec.Client, dst: rec.VIP, sport: rec.CPort, dport: rec.VPort, proto: TCP}
	c := b.b.table.lookup(&key)
	if d := c.deadline.Load(); d != int64(90*time.Second) {
		t.Errorf("deadline %d, want 90 s", d)
	}
	// Both ends of the local port range, each on a port map the import
	// makes (the second server's: weight 0 still matches).
	for i, lport := range []uint16{b.b.cfg.PortMin, b.b.cfg.PortMax} {
		r := rec
		r.CPort, r.LPort, r.Server = rec.CPort+1+uint16(i), lport, rs2.As16()
		if err := b.b.ImportConn(&r); err != nil {
			t.Errorf("lport %d: %v", lport, err)
		}
	}
	// A newer record: its rewriter and acks replace the entry's; a version
	// past the 32-bit wrap is newer (serial arithmetic).
	c.version.Store(0xffffffff)
	newer := rec
	newer.Version, newer.Rewriter.Server, newer.Acks = 0, rec.Rewriter.Server+5, connrec.Acks{Valid: [2]bool{true, true}, Ack: [2]uint32{1, 2}}
	if err := b.b.ImportConn(&newer); err != nil {
		t.Fatalf("a version past the wrap: %v", err)
	}
	if *c.rw.Load() != newer.Rewriter || c.acks[0].Load() != ackValid|1 || c.acks[1].Load() != ackValid|2 {
		t.Errorf("the newer record's rewriter or acks not applied")
	}
	// A table filled to its last place by imports.
	two := newRig(t, TCP, "rr", func(c *Config) { c.MaxConns = 2 })
	for i := range 3 {
		r := rec
		r.CPort, r.LPort = rec.CPort+uint16(i), rec.LPort+uint16(i)
		err := two.b.ImportConn(&r)
		if (i < 2) != (err == nil) {
			t.Errorf("import %d into a table of 2: %v", i+1, err)
		}
	}
	// A real server whose next hop is unknown is asked for, as a new
	// connection's is; a known one is not.
	for _, known := range []bool{false, true} {
		asked := 0
		r := newRig(t, TCP, "rr", nil)
		r.b.Attach(countLink{&asked})
		if !known {
			r.d1.mac.Store(0)
		}
		if err := r.b.ImportConn(&rec); err != nil || asked != map[bool]int{false: 1, true: 0}[known] {
			t.Errorf("next hop known %v: %v, asked %d times", known, err, asked)
		}
	}
}

// TestImportShortensLifetime: a newer record with less lifetime left
// files the entry for its earlier deadline: the sweep then takes it.
func TestImportShortensLifetime(t *testing.T) {
	mc := moveCases()[0]
	_, b, rec, _, _ := mc.moved(t)
	newer := rec
	newer.Version, newer.LifetimeMS = rec.Version+1, 1000
	if err := b.b.ImportConn(&newer); err != nil {
		t.Fatal(err)
	}
	b.b.table.now.Store(int64(2 * time.Second))
	b.b.Sweep()
	if n := b.b.Table().Len(); n != 0 {
		t.Fatalf("%d connections left past the shortened lifetime", n)
	}
}
