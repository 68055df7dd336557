package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// A client's packet translated to IPv4 gets DF only past 1260 bytes (RFC
// 7915 5.1): exactly 1260 is sent without it, 1261 with it.
func TestNAT64DFAt1260(t *testing.T) {
	if dfFor(1260) || !dfFor(1261) {
		t.Fatalf("dfFor(1260) %v, dfFor(1261) %v", dfFor(1260), dfFor(1261))
	}
	for _, tc := range []struct {
		proto   Protocol
		payload int // IPv4 20 + TCP 20 (UDP 8) + payload = total
		total   uint16
		df      bool
	}{
		{TCP, 1220, 1260, false}, {TCP, 1221, 1261, true},
		{UDP, 1232, 1260, false}, {UDP, 1233, 1261, true},
	} {
		r := newRig64(t, tc.proto, nil)
		f := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: tc.proto, syn: true, payload: make([]byte, tc.payload), srcMAC: macClient})
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("%v %d bytes: %v %v", tc.proto, tc.payload, v, nonZero(r.b.Stats.Drops()))
		}
		ip := f.Bytes()[wire.EtherLen:]
		total, flags := binary.BigEndian.Uint16(ip[2:]), binary.BigEndian.Uint16(ip[6:])
		if total != tc.total || (flags == wire.IPv4DF) != tc.df || flags&^wire.IPv4DF != 0 {
			t.Errorf("%v: IPv4 packet of %d bytes with flags %#04x, want %d bytes, DF %v", tc.proto, total, flags, tc.total, tc.df)
		}
		decode(t, f) // its checksums, from scratch
	}
}

// reheaded is f's bytes in a new buffer with headroom bytes before them,
// the last vnet of which are a virtio-net header (0xa5 each).
func reheaded(f *Frame, headroom, vnet int) *Frame {
	buf := make([]byte, headroom+f.Len+64)
	copy(buf[headroom:], f.Bytes())
	g := &Frame{Buf: buf, Off: headroom, Len: f.Len}
	if vnet > 0 {
		g.VNet = buf[headroom-vnet : headroom]
		for i := range g.VNet {
			g.VNet[i] = 0xa5
		}
	}
	return g
}

// An ICMPv4 error becomes an ICMPv6 error 40 bytes longer in front of the
// quoted transport header, which stays where it is: with exactly that much
// headroom before the frame (and its virtio-net header) it is translated,
// with a byte less it is dropped as nat64.
func TestNAT64ICMPHeadroomEdge(t *testing.T) {
	for _, tc := range []struct {
		headroom, vnet int
		ok             bool
	}{{40, 0, true}, {39, 0, false}, {52, 12, true}, {51, 12, false}} {
		r := newRig64(t, TCP, nil)
		open64(t, r, TCP, 40000, 5000)
		seg := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 5001, payload: []byte("x"), srcMAC: macClient})
		if v := r.b.Process(ClientSide, seg); v != Forward {
			t.Fatal(v)
		}
		e := reheaded(icmp4Err(t, netip.MustParseAddr("172.25.84.1"), 3, 3, 0, seg.Bytes()[14:14+28]), tc.headroom, tc.vnet)
		v := r.b.Process(ServerSide, e)
		if tc.ok {
			if v != Forward {
				t.Fatalf("headroom %d, virtio-net header %d: %v %v", tc.headroom, tc.vnet, v, nonZero(r.b.Stats.Drops()))
			}
			// The virtio-net header moved along, just before the frame,
			// and says plain (all checksums are complete).
			if e.Off != tc.vnet || len(e.VNet) != tc.vnet || tc.vnet > 0 && (&e.VNet[0] != &e.Buf[0] || !bytes.Equal(e.VNet, make([]byte, tc.vnet))) {
				t.Fatalf("headroom %d: frame at %d, virtio-net header % x", tc.headroom, e.Off, e.VNet)
			}
			decode(t, e)
		} else if v != Drop || r.b.Stats.Drop(DropNAT64) != 1 {
			t.Fatalf("headroom %d, virtio-net header %d: %v %v", tc.headroom, tc.vnet, v, nonZero(r.b.Stats.Drops()))
		}
	}
}

// The quoted transport header's checksum is adjusted when the quote holds
// it whole (UDP's at 6-7: a quote of exactly 8 bytes; TCP's at 16-17: 18
// bytes), and left alone when the quote ends before it; either way the
// client gets back the bytes it sent. (A quote ending inside the checksum
// keeps its one byte: adjusting it needs the other, for the carry.) A quoted IPv4 header whose total
// length is its own length is translated; one shorter is malformed.
func TestNAT64ICMPQuoteEdges(t *testing.T) {
	for _, tc := range []struct {
		proto Protocol
		quote int // transport bytes quoted
	}{{UDP, 8}, {TCP, 8}, {TCP, 15}, {TCP, 16}, {TCP, 17}, {TCP, 18}} {
		r := newRig64(t, tc.proto, nil)
		rip, _ := open64(t, r, tc.proto, 40000, 5000)
		seg := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: tc.proto, ack: true, seq: 5001, payload: []byte("hello"), srcMAC: macClient})
		sent := append([]byte(nil), seg.Bytes()[14:]...)
		if v := r.b.Process(ClientSide, seg); v != Forward {
			t.Fatal(v)
		}
		e := icmp4Err(t, rip, 3, 3, 0, seg.Bytes()[14:14+20+tc.quote])
		if v := r.b.Process(ServerSide, e); v != Forward {
			t.Fatalf("%v quote of %d: %v %v", tc.proto, tc.quote, v, nonZero(r.b.Stats.Drops()))
		}
		q, want := e.Bytes()[54+8:], sent[:40+tc.quote]
		if tc.proto == TCP && tc.quote == 17 {
			q, want = q[:len(q)-1], want[:len(want)-1]
		}
		if !bytes.Equal(q, want) {
			t.Errorf("%v quote of %d:\n got % x\nwant % x", tc.proto, tc.quote, q, want)
		}
	}
	for _, tc := range []struct {
		total uint16
		ok    bool
	}{{20, true}, {19, false}} {
		r := newRig64(t, UDP, nil)
		rip, _ := open64(t, r, UDP, 40000, 0)
		dg := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: UDP, payload: []byte("query"), srcMAC: macClient})
		if v := r.b.Process(ClientSide, dg); v != Forward {
			t.Fatal(v)
		}
		q := append([]byte(nil), dg.Bytes()[14:14+28]...)
		binary.BigEndian.PutUint16(q[2:], tc.total)
		v := r.b.Process(ServerSide, icmp4Err(t, rip, 3, 3, 0, q))
		if tc.ok && v != Forward || !tc.ok && (v != Drop || r.b.Stats.Drop(DropMalformed) != 1) {
			t.Errorf("quoted total length %d: %v %v", tc.total, v, nonZero(r.b.Stats.Drops()))
		}
	}
}

// A quoted TCP segment whose checksum is 0x0000 (a TCP checksum that sums
// to zero is sent as 0, unlike UDP's) is adjusted like any other: 0 is
// "no checksum" for UDP only.
func TestNAT64ICMPQuotedTCPChecksumZero(t *testing.T) {
	r := newRig64(t, TCP, nil)
	rip, _ := open64(t, r, TCP, 40000, 5000)
	send := func(last uint16) (sent, out []byte) {
		payload := []byte{'h', 'i', 0, 0}
		binary.BigEndian.PutUint16(payload[2:], last)
		seg := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 5001, payload: payload, srcMAC: macClient})
		sent = append([]byte(nil), seg.Bytes()[14:]...)
		if v := r.b.Process(ClientSide, seg); v != Forward {
			t.Fatal(v)
		}
		return sent, seg.Bytes()[14:]
	}
	// The payload's last word, added to the sum, takes the server side's
	// checksum from c to 0 when it is c itself.
	_, out := send(0)
	sent, out := send(binary.BigEndian.Uint16(out[20+16:]))
	if c := binary.BigEndian.Uint16(out[20+16:]); c != 0 {
		t.Fatalf("server side's checksum %#04x, want 0 (bad test)", c)
	}
	e := icmp4Err(t, rip, 3, 3, 0, out[:20+20])
	if v := r.b.Process(ServerSide, e); v != Forward {
		t.Fatalf("%v %v", v, nonZero(r.b.Stats.Drops()))
	}
	if q := e.Bytes()[54+8:]; !bytes.Equal(q, sent[:60]) {
		t.Fatalf("quote:\n got % x\nwant % x", q, sent[:60])
	}
}

// An ICMPv6 error from the client becomes an ICMPv4 error with DF only
// past 1260 bytes, like any translated packet: a quote of the server's
// segment that makes it 1260 bytes goes without DF, one byte more with it.
// A quoted packet whose payload length says 0 (nothing after its header)
// is translated, quoted as an IPv4 packet of 20 bytes, not malformed.
func TestNAT64ICMPFromClientDFAndLength(t *testing.T) {
	for _, tc := range []struct {
		payload int  // the server's; the quote is its whole segment of 20 + payload
		zeroLen bool // the quoted payload length says 0
		total   uint16
		df      bool
	}{{1192, false, 1260, false}, {1193, false, 1261, true}, {11, true, 20 + 8 + 20 + 31, false}} {
		r := newRig64(t, TCP, nil)
		rip, lport := open64(t, r, TCP, 40000, 100)
		back := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 9000, ackNum: 1, payload: make([]byte, tc.payload), srcMAC: macGateway})
		if v := r.b.Process(ServerSide, back); v != Forward {
			t.Fatal(v)
		}
		quoted := append([]byte(nil), back.Bytes()[14:]...)
		if tc.zeroLen {
			binary.BigEndian.PutUint16(quoted[4:], 0)
		}
		e := icmp6Error(t, client6, vip64, macClient, 1, 4, 0, quoted)
		if v := r.b.Process(ClientSide, e); v != Forward {
			t.Fatalf("server payload %d: %v %v", tc.payload, v, nonZero(r.b.Stats.Drops()))
		}
		ip := e.Bytes()[wire.EtherLen:]
		total, flags := binary.BigEndian.Uint16(ip[2:]), binary.BigEndian.Uint16(ip[6:])
		if total != tc.total || (flags == wire.IPv4DF) != tc.df || flags&^wire.IPv4DF != 0 || csum.Checksum(ip[:20], 0) != 0 {
			t.Errorf("server payload %d: ICMPv4 error of %d bytes, flags %#04x; want %d, DF %v", tc.payload, total, flags, tc.total, tc.df)
		}
		if ql := binary.BigEndian.Uint16(ip[20+8+2:]); tc.zeroLen && ql != 20 {
			t.Errorf("quoted total length %d, want 20", ql)
		}
	}
}
