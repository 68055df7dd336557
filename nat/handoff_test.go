package nat

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// With Config.Handoff, a client segment that no connection holds and that
// cannot open one is handed off (not counted as a drop: another instance
// may hold it); a SYN still opens a connection; without Handoff it is
// not_syn as before.
func TestHandoffVerdict(t *testing.T) {
	on := newRig(t, TCP, "rr", func(c *Config) { c.Handoff = true })
	off := newRig(t, TCP, "rr", nil)
	for _, seg := range []pktSpec{
		{ack: true},
		{ack: true, payload: []byte("data")},
		{fin: true, ack: true},
		{rst: true},
		{syn: true, ack: true},
	} {
		seg.src, seg.dst, seg.sport, seg.dport, seg.proto, seg.srcMAC = client, vip, 40000, 80, TCP, macClient
		f := frame(t, seg)
		before := bytes.Clone(f.Bytes())
		if v := on.b.Process(ClientSide, f); v != Handoff {
			t.Errorf("%+v with handoff: %v, want Handoff", seg, v)
		}
		if !bytes.Equal(f.Bytes(), before) {
			t.Errorf("%+v: a frame handed off was changed", seg)
		}
		if v := off.b.Process(ClientSide, frame(t, seg)); v != Drop {
			t.Errorf("%+v without handoff: %v, want Drop", seg, v)
		}
	}
	if n := on.b.Stats.Drop(DropNotSYN); n != 0 {
		t.Errorf("handoffs counted as not_syn drops: %d", n)
	}
	if n := off.b.Stats.Drop(DropNotSYN); n != 5 {
		t.Errorf("without handoff: not_syn %d, want 5", n)
	}
	if on.b.Table().Len() != 0 {
		t.Fatal("a handed-off segment made a connection")
	}
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	if v := on.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("SYN with handoff: %v, want Forward", v)
	}
}

// A frame handed over (Frame.HandedOff) continues a connection this
// balancer holds, exactly as the same frame from the client would; for
// any other tuple it is dropped as handoff_unknown, opens nothing (not
// even a SYN) and is never handed on.
func TestHandedOverFrames(t *testing.T) {
	r := newRig(t, TCP, "rr", func(c *Config) { c.Handoff = true })
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatal(v)
	}
	seg := pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, payload: []byte("x"), srcMAC: macClient}
	direct, handed := frame(t, seg), frame(t, seg)
	handed.HandedOff = true
	if v := r.b.Process(ClientSide, direct); v != Forward {
		t.Fatal(v)
	}
	if v := r.b.Process(ClientSide, handed); v != Forward {
		t.Fatalf("handed over on a held connection: %v, want Forward", v)
	}
	if !bytes.Equal(direct.Bytes(), handed.Bytes()) {
		t.Fatal("a handed-over frame was rewritten otherwise than the client's own")
	}
	for i, other := range []pktSpec{
		{ack: true, payload: []byte("x")},
		{syn: true},
		{rst: true},
	} {
		other.src, other.dst, other.sport, other.dport, other.proto, other.srcMAC = client, vip, 41000+uint16(i), 80, TCP, macClient
		f := frame(t, other)
		f.HandedOff = true
		if v := r.b.Process(ClientSide, f); v != Drop {
			t.Errorf("%+v handed over, no connection: %v, want Drop", other, v)
		}
	}
	if n := r.b.Stats.Drop(DropHandoffUnknown); n != 3 {
		t.Errorf("handoff_unknown %d, want 3", n)
	}
	if r.b.Table().Len() != 1 {
		t.Errorf("%d connections: a handed-over frame opened one", r.b.Table().Len())
	}
}

// On a SYNPROXY service a segment that is not a cookie of this instance's
// is handed off too (another instance may hold the connection); a SYN is
// still answered with a cookie here.
func TestHandoffSynproxy(t *testing.T) {
	r := newRig(t, TCP, "rr", func(c *Config) { c.Handoff = true })
	if err := r.b.Update(func(tx *Tx) error { return tx.SetSynproxy(r.svc, true) }); err != nil {
		t.Fatal(err)
	}
	for _, seg := range []pktSpec{{ack: true}, {ack: true, payload: []byte("x")}, {fin: true}} {
		seg.src, seg.dst, seg.sport, seg.dport, seg.proto, seg.srcMAC = client, vip, 40000, 80, TCP, macClient
		if v := r.b.Process(ClientSide, frame(t, seg)); v != Handoff {
			t.Errorf("%+v to a SYNPROXY VIP: %v, want Handoff", seg, v)
		}
	}
	if n := r.b.Stats.Drop(DropBadCookie); n != 0 {
		t.Errorf("bad_cookie %d: handed-off ACKs counted as bad cookies", n)
	}
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Reply {
		t.Fatalf("SYN: %v, want Reply (a cookie)", v)
	}
}

// A segment reassembled from fragments and handed off carries its mark
// (Frame.Mark: the largest fragment's length, bit 16 for IPv6); a frame
// that came whole carries none. Handed over with it, the segment leaves
// cut as the fragments came (refragment), or, IPv6 or IPv4 with DF whose
// fragments would not fit, is answered to the client as it would have
// been where it came.
func TestHandoffFragmentMark(t *testing.T) {
	for _, c := range []struct {
		name      string
		rig       func(testing.TB, Protocol, string, func(*Config)) *rig
		src, dst  netip.Addr
		cutAt     int
		mark      FragMark
		serverMTU int
		df        bool
		wantPTB   bool
	}{
		{"v4", newRig, client, vip, 1000, 996, 1500, false, false},
		{"v6", newRig6, client6, vip6, 1000, 1000 | 1<<16, 1500, false, false},
		{"v4 DF too big there", newRig, client, vip, 1500, 1500, 1400, true, true},
		{"v6 too big there", newRig6, client6, vip6, 1500, 1496 | 1<<16, 1400, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			seg := pktSpec{src: c.src, dst: c.dst, sport: 40000, dport: 80, proto: TCP, ack: true, payload: payload(3000), srcMAC: macClient}
			here := c.rig(t, TCP, "rr", func(cfg *Config) { cfg.Handoff = true })
			var out []sent
			frags := cut(t, frame(t, seg), c.cutAt, 1)
			if c.df {
				for _, f := range frags {
					b := f.Bytes()
					b[wire.EtherLen+wire.IPv4FragOff] |= wire.IPv4DF >> 8
					fixIPChecksum(b)
				}
			}
			var f *Frame
			for _, f = range frags {
				f.Mark = 7 // Process sets it
				emit(here.b, &out, ClientSide, f)
			}
			if f.Mark != c.mark {
				t.Fatalf("handed off with mark %#x, want %#x", f.Mark, c.mark)
			}
			whole := frame(t, seg)
			if v := here.b.Process(ClientSide, whole); v != Handoff || whole.Mark != 0 {
				t.Fatalf("whole: %v, mark %#x", v, whole.Mark)
			}

			there := c.rig(t, TCP, "rr", func(cfg *Config) { cfg.Handoff = true; cfg.ServerMTU = c.serverMTU })
			there.b.Attach(recordLink{&out})
			syn := seg
			syn.ack, syn.syn, syn.payload = false, true, nil
			if v := there.b.Process(ClientSide, frame(t, syn)); v != Forward {
				t.Fatal(v)
			}
			over := withHeadroom(f.Bytes())
			over.HandedOff, over.Mark = true, f.Mark
			out = out[:0]
			v := emit(there.b, &out, ClientSide, over)
			if c.wantPTB {
				if v != Drop || len(out) != 1 || out[0].side != ClientSide || there.b.Stats.Drop(DropFragPathMTU) != 1 {
					t.Fatalf("%v, %d sent, %v", v, len(out), nonZero(there.b.Stats.Drops()))
				}
				return
			}
			if v != Forward || len(out) != len(frags) || largest(out) != len(frags[0].Bytes())-wire.EtherLen {
				t.Fatalf("%v, %d fragments of at most %d bytes, want %d as they came", v, len(out), largest(out), len(frags))
			}
			// A mark of no length is none: the segment leaves whole.
			over = withHeadroom(f.Bytes())
			over.HandedOff, over.Mark = true, 1<<16
			out = out[:0]
			if v := emit(there.b, &out, ClientSide, over); v != Forward || len(out) != 0 || over.Frags != nil {
				t.Fatalf("a mark of no length: %v, %d fragments", v, len(out))
			}
		})
	}
}

// TestHandoffHostileMark: a peer is outside input, its fragment mark too.
// A mark no reassembly could have given the datagram handed over is
// refused (handoff_mark) and nothing is sent: fragments too small to have
// carried it in frag.MaxFragments (the bound is exact: 48 bytes of data
// each carry 3072 in 64), less than 8 bytes of data a fragment, the other
// family's bit, a partial checksum or a TSO header from the peer. One
// that could have been given is honoured.
func TestHandoffHostileMark(t *testing.T) {
	for _, c := range []struct {
		name string
		mark FragMark
		vnet func(tun.VNetHdr)
		want Verdict
		sent int
		size int // of the segment's data: 3052 if 0
	}{
		{"could have been", 68, nil, Forward, 64, 0},
		{"one byte short", 67, nil, Drop, 0, 0},
		{"a peer's 28", 28, nil, Drop, 0, 0},
		{"7 bytes a fragment", 27, nil, Drop, 0, 100}, // 64 of 7 would carry 120
		{"8 bytes a fragment", 28, nil, Forward, 15, 100},
		{"IPv6 bit on IPv4", 1500 | 1<<16, nil, Drop, 0, 0},
		{"partial checksum", 1000, func(h tun.VNetHdr) { h.SetNeedsCsum(wire.EtherLen+wire.IPv4MinLen, 16) }, Drop, 0, 0},
		{"TSO", 1000, func(h tun.VNetHdr) { h.SetGSO(tun.VNetGSOTCPv4, 54, 1448) }, Drop, 0, 0},
		{"no mark", 0, nil, Forward, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			// 3052 bytes of data behind a 20-byte TCP header: 3072 bytes
			// to carry.
			size := c.size
			if size == 0 {
				size = 3052
			}
			seg := pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, payload: payload(size), srcMAC: macClient}
			there := newRig(t, TCP, "rr", func(cfg *Config) { cfg.Handoff = true; cfg.ServerMTU = 9000 })
			var out []sent
			there.b.Attach(recordLink{&out})
			syn := seg
			syn.ack, syn.syn, syn.payload = false, true, nil
			if v := there.b.Process(ClientSide, frame(t, syn)); v != Forward {
				t.Fatal(v)
			}
			over := withHeadroom(frame(t, seg).Bytes())
			over.HandedOff, over.Mark = true, c.mark
			if c.vnet != nil {
				over.VNet = make(tun.VNetHdr, tun.VNetHdrLen)
				c.vnet(over.VNet)
			}
			v := emit(there.b, &out, ClientSide, over)
			if v != c.want || len(out) != c.sent || (c.want == Drop) != (there.b.Stats.Drop(DropHandoffMark) == 1) {
				t.Fatalf("%v, %d sent, drops %v; want %v, %d sent", v, len(out), nonZero(there.b.Stats.Drops()), c.want, c.sent)
			}
		})
	}
}
