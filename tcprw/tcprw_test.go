package tcprw

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcpopt"
	"github.com/tapvs/tapvs/wire"
)

// pseudo stands in for a pseudo-header's sum: the checksum a translation
// keeps covers it.
const pseudo = 0x4321

// seg is a TCP segment: the fixed header, opts (padded with NOPs to a
// multiple of 4), payload, and a checksum that verifies.
func seg(seq, ack uint32, flags uint8, win uint16, opts []byte, payload []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, tcpopt.NOP)
	}
	h := make([]byte, 20, 20+len(opts)+len(payload))
	binary.BigEndian.PutUint32(h[4:], seq)
	binary.BigEndian.PutUint32(h[8:], ack)
	h[12], h[13] = byte((20+len(opts))/4)<<4, flags
	binary.BigEndian.PutUint16(h[14:], win)
	h = append(append(h, opts...), payload...)
	binary.BigEndian.PutUint16(h[16:], csum.Checksum(h, pseudo))
	return h
}

func tsOpt(val, ecr uint32) []byte {
	o := []byte{tcpopt.NOP, tcpopt.NOP, tcpopt.Timestamps, 10}
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(o, val), ecr)
}

func sackOpt(edges ...uint32) []byte {
	o := []byte{tcpopt.NOP, tcpopt.NOP, tcpopt.SACK, byte(2 + 4*len(edges))}
	for _, e := range edges {
		o = binary.BigEndian.AppendUint32(o, e)
	}
	return o
}

func mssOpt(mss uint16) []byte { return binary.BigEndian.AppendUint16([]byte{tcpopt.MSS, 4}, mss) }

// Out is one translation's results, for the tests.
type Out struct {
	Acc      uint32
	Fault    Result
	Header   bool
	TSFixed  bool
	TSClient uint32
	TSSent   uint32 // 0 unless a TSval went shifted (TSSent)
	Print    uint64
}

func toServer(r *Rewriter) func(wire.TCP, uint32) Out {
	return func(tcp wire.TCP, acc uint32) Out {
		sum, res, tsc, sent := r.ToServer(tcp, acc)
		if res&TSSent == 0 && sent != 0 {
			panic("a TSval reported sent without TSSent")
		}
		return Out{Acc: sum, Fault: res.Fault(), Header: res&Header != 0, TSFixed: res&TSFixed != 0, TSClient: tsc, TSSent: sent}
	}
}

func toClient(r *Rewriter) func(wire.TCP, uint32) Out {
	return func(tcp wire.TCP, acc uint32) Out {
		sum, res, fp := r.ToClient(tcp, acc)
		return Out{Acc: sum, Fault: res.Fault(), Print: fp}
	}
}

// OK is a translation without a fault.
const OK Result = 0

// apply runs a translation and finishes the checksum, failing the test
// on a fault or a checksum that no longer verifies.
func apply(t *testing.T, h []byte, dir func(wire.TCP, uint32) Out) Out {
	t.Helper()
	out := dir(h, 0)
	if out.Fault != OK {
		t.Fatalf("% x refused: fault %d", h, out.Fault)
	}
	csum.Adjust(h[16:], csum.Fold(out.Acc))
	if c := csum.Checksum(h, pseudo); c != 0 {
		t.Fatalf("checksum residue %#04x after translation: % x", c, h)
	}
	return out
}

func u32(b []byte, at int) uint32 { return binary.BigEndian.Uint32(b[at:]) }

// Toward the server: seq by Client, ack and every SACK edge back by
// Server, the window scaled by WinIn, TSval by TSClient and TSecr back by
// TSServer; each across the 2^32 wrap.
func TestToServerShifts(t *testing.T) {
	r := Rewriter{Client: 0x20, Server: 0x10, TSClient: 7, TSServer: 0x30, WinIn: 3, Flags: TSClientOn | TSServerOn}
	h := seg(0xfffffff0, 5, tcpflag.ACK, 1000, append(tsOpt(0xfffffffe, 0x20), sackOpt(0x11, 0x20, 0x5, 0x8)...), []byte("data"))
	if out := apply(t, h, toServer(&r)); out.TSSent != 5 {
		t.Fatalf("TSval sent reported as %d, want 5", out.TSSent)
	}
	tcp := wire.TCP(h)
	if tcp.Seq() != 0x10 || tcp.Ack() != 0xfffffff5 || tcp.Window() != 8000 {
		t.Fatalf("seq %#x ack %#x window %d, want 0x10 0xfffffff5 8000", tcp.Seq(), tcp.Ack(), tcp.Window())
	}
	if v, e := u32(h, 24), u32(h, 28); v != 5 || e != 0xfffffff0 {
		t.Fatalf("TSval %#x TSecr %#x, want 5 0xfffffff0", v, e)
	}
	for i, want := range []uint32{1, 0x10, 0xfffffff5, 0xfffffff8} {
		if got := u32(h, 36+4*i); got != want {
			t.Errorf("SACK edge %d: %#x, want %#x", i, got, want)
		}
	}
	if !bytes.Equal(h[len(h)-4:], []byte("data")) {
		t.Fatal("payload changed")
	}
	// Without ACK the ack field is not one: it stays.
	h = seg(1, 99, 0, 10, nil, nil)
	apply(t, h, toServer(&r))
	if wire.TCP(h).Ack() != 99 {
		t.Fatalf("ack of a segment without ACK moved to %d", wire.TCP(h).Ack())
	}
}

// Toward the client: seq by Server, ack and SACK edges back by Client (an
// edge within the inserted bytes maps to Start, a block within them goes),
// the window rescaled, TSval by TSServer, TSecr back by TSClient (with ACK
// only: without, TSecr is not an echo).
func TestToClientShifts(t *testing.T) {
	r := Rewriter{Client: 130, Server: 0x100, Start: 1000, Insert: 30, TSClient: 50, TSServer: 9, WinOut: 7, WinOutR: 5, Flags: TSClientOn | TSServerOn}
	h := seg(1, 1100+70, tcpflag.ACK, 100, append(tsOpt(10, 1050), sackOpt(1105, 1120, 1200, 1300)...), nil)
	apply(t, h, toClient(&r))
	tcp := wire.TCP(h)
	if tcp.Seq() != 0x101 || tcp.Ack() != 1040 || tcp.Window() != 400 {
		t.Fatalf("seq %#x ack %d window %d, want 0x101 1040 400", tcp.Seq(), tcp.Ack(), tcp.Window())
	}
	if v, e := u32(h, 24), u32(h, 28); v != 19 || e != 1000 {
		t.Fatalf("TSval %d TSecr %d, want 19 1000", v, e)
	}
	// The block 1105-1120 is within the header (server-space 1100-1129):
	// out; 1200-1300 moves up.
	if h[34] != tcpopt.SACK || h[35] != 10 || u32(h, 36) != 1070 || u32(h, 40) != 1170 {
		t.Fatalf("SACK option % x", h[32:])
	}
	// The ack of part of the header is of nothing: Start.
	h = seg(1, 1100+10, tcpflag.ACK, 100, nil, nil)
	apply(t, h, toClient(&r))
	if a := wire.TCP(h).Ack(); a != 1000 {
		t.Fatalf("ack within the header maps to %d, want 1000", a)
	}
	// No ACK: TSecr and ack stay.
	h = seg(1, 77, 0, 100, tsOpt(10, 1050), nil)
	apply(t, h, toClient(&r))
	if a, e := wire.TCP(h).Ack(), u32(h, 28); a != 77 || e != 1050 {
		t.Fatalf("without ACK: ack %d TSecr %d moved", a, e)
	}
	// The window: shifted left, then right, at most 65535.
	r = Rewriter{WinOut: 14}
	h = seg(1, 1, tcpflag.ACK, 100, nil, nil)
	apply(t, h, toClient(&r))
	if w := wire.TCP(h).Window(); w != 0xffff {
		t.Fatalf("window %d, want 65535", w)
	}
}

// A pending timestamp offset is fixed by the client's SYN: its TSval goes
// out as the server side's first (TSClient), and Out carries the offset
// for the caller to publish; a segment other than a SYN leaves it pending
// and its TSval as it is. TSRemove blanks a SYN's option, and only a SYN's.
func TestTimestampsPendingAndRemoved(t *testing.T) {
	r := Rewriter{TSClient: 5000, Flags: TSPending}
	h := seg(1, 0, tcpflag.ACK, 100, tsOpt(300, 0), nil)
	if out := apply(t, h, toServer(&r)); out.TSFixed || out.TSSent != 0 || u32(h, 24) != 300 {
		t.Fatalf("a non-SYN fixed the offset or reported a TSval sent (%+v) or moved TSval to %d", out, u32(h, 24))
	}
	h = seg(1, 0, tcpflag.SYN, 100, tsOpt(300, 0), nil)
	out := apply(t, h, toServer(&r))
	if !out.TSFixed || out.TSClient != 4700 || out.TSSent != 5000 || u32(h, 24) != 5000 {
		t.Fatalf("SYN: %+v, TSval %d; want fixed at 4700, TSval 5000", out, u32(h, 24))
	}
	r.FixTS(out.TSClient)
	if r.Flags != TSClientOn || r.TSClient != 4700 {
		t.Fatalf("FixTS left %+v", r)
	}
	h = seg(2, 0, tcpflag.ACK, 100, tsOpt(301, 0), nil)
	if out := apply(t, h, toServer(&r)); u32(h, 24) != 5001 || out.TSSent != 5001 {
		t.Fatalf("TSval %d after the fix, reported %d; want 5001", u32(h, 24), out.TSSent)
	}
	// Two timestamp options on a SYN: the first fixes, the second follows it.
	r = Rewriter{TSClient: 5000, Flags: TSPending}
	h = seg(1, 0, tcpflag.SYN, 100, append(tsOpt(300, 0), tsOpt(310, 0)...), nil)
	if out := apply(t, h, toServer(&r)); out.TSClient != 4700 || out.TSSent != 5010 || u32(h, 24) != 5000 || u32(h, 36) != 5010 {
		t.Fatalf("two options: %+v, TSvals %d %d", out, u32(h, 24), u32(h, 36))
	}
	r = Rewriter{Flags: TSRemove}
	h = seg(1, 0, tcpflag.SYN, 100, tsOpt(300, 9), nil)
	if out := apply(t, h, toServer(&r)); out.TSSent != 0 {
		t.Fatalf("a blanked option reported TSval %d sent", out.TSSent)
	}
	if !bytes.Equal(h[20:32], bytes.Repeat([]byte{tcpopt.NOP}, 12)) {
		t.Fatalf("SYN's timestamp option not blanked: % x", h[20:32])
	}
	h = seg(2, 0, tcpflag.ACK, 100, tsOpt(300, 9), nil)
	want := slices.Clone(h)
	apply(t, h, toServer(&r))
	if !bytes.Equal(h, want) {
		t.Fatalf("a later segment's option changed: % x", h)
	}
}

// The SYNs' MSS: toward the server clamped to MSSToServer; toward the
// client less Insert (when larger), then clamped to MSSToClient. Only a
// SYN's option is one.
func TestMSSClamp(t *testing.T) {
	for _, tc := range []struct {
		name      string
		r         Rewriter
		toServer  bool
		flags     uint8
		mss, want uint16
	}{
		{"client SYN clamped", Rewriter{MSSToServer: 1420}, true, tcpflag.SYN, 1460, 1420},
		{"client SYN under the clamp", Rewriter{MSSToServer: 1420}, true, tcpflag.SYN, 1400, 1400},
		{"no clamp", Rewriter{}, true, tcpflag.SYN, 9000, 9000},
		{"not a SYN", Rewriter{MSSToServer: 1420}, true, tcpflag.ACK, 1460, 1460},
		{"server SYN-ACK clamped", Rewriter{MSSToClient: 1432}, false, tcpflag.SYN | tcpflag.ACK, 1460, 1432},
		{"server SYN-ACK less a header", Rewriter{Insert: 56, Client: 56}, false, tcpflag.SYN | tcpflag.ACK, 1460, 1404},
		{"a header longer than the MSS", Rewriter{Insert: 56, Client: 56}, false, tcpflag.SYN | tcpflag.ACK, 40, 40},
		{"less a header, then clamped", Rewriter{Insert: 56, Client: 56, MSSToClient: 1000}, false, tcpflag.SYN | tcpflag.ACK, 1460, 1000},
		{"server ACK", Rewriter{MSSToClient: 1432}, false, tcpflag.ACK, 1460, 1460},
	} {
		h := seg(1, 1, tc.flags, 100, mssOpt(tc.mss), nil)
		dir := toClient(&tc.r)
		if tc.toServer {
			dir = toServer(&tc.r)
		}
		apply(t, h, dir)
		if got := binary.BigEndian.Uint16(h[22:]); got != tc.want {
			t.Errorf("%s: MSS %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A client's own TOA option (every kind a toa module reads) reaches the
// server as NOPs; toward the client it is not looked at.
func TestForgedTOABlanked(t *testing.T) {
	var r Rewriter
	toa := []byte{tcpopt.TOA, tcpopt.LenTOA, 0, 80, 10, 0, 0, 1}
	h := seg(1, 1, tcpflag.ACK, 100, toa, nil)
	apply(t, h, toServer(&r))
	if !bytes.Equal(h[20:28], bytes.Repeat([]byte{tcpopt.NOP}, 8)) {
		t.Fatalf("client TOA left: % x", h[20:28])
	}
	h = seg(1, 1, tcpflag.ACK, 100, toa, nil)
	apply(t, h, toClient(&r))
	if !bytes.Equal(h[20:28], toa) {
		t.Fatalf("a server's option changed: % x", h[20:28])
	}
}

// Malformed options or headers are refused both ways, as tcpopt.Walk
// calls them: the caller drops the segment (DropBadOptions).
func TestMalformedRefused(t *testing.T) {
	r := Rewriter{Client: 1, Server: 1, Flags: TSClientOn | Storm}
	for _, opts := range [][]byte{
		{tcpopt.MSS, 3, 0, 0},              // MSS of the wrong length
		{tcpopt.Timestamps, 12, 0, 0},      // past the end
		{tcpopt.SACK, 7, 0, 0, 0, 0, 0, 0}, // not a whole block
		{99, 1, 0, 0},                      // length below 2
		{tcpopt.NOP, tcpopt.NOP, tcpopt.NOP, 200},
	} {
		for dir, f := range []func(wire.TCP, uint32) Out{toServer(&r), toClient(&r)} {
			h := seg(1, 1, tcpflag.ACK, 100, opts, nil)
			if out := f(h, 0); out.Fault != BadOptions {
				t.Errorf("direction %d: options % x: fault %d, want BadOptions", dir, opts, out.Fault)
			}
		}
	}
	for _, h := range [][]byte{make([]byte, 19), seg(1, 1, 0, 0, nil, nil)[:20:20]} {
		if len(h) == 20 {
			h[12] = 6 << 4 // a data offset past the bytes
		}
		if toServer(&r)(h, 0).Fault != BadOptions || toClient(&r)(h, 0).Fault != BadOptions {
			t.Errorf("header % x accepted", h)
		}
	}
}

// Where a client segment goes against Insert bytes before Start: at Start
// it carries them; past Start it moves past them; wholly before Start it
// stays; from before Start into the stream it is refused, and so is an
// urgent byte among them; once Past, everything moves past them.
func TestPlace(t *testing.T) {
	r := Rewriter{Client: 100 + 30, Start: 1000, Insert: 30}
	for _, tc := range []struct {
		name    string
		seq     uint32
		flags   uint8
		urg     uint16
		payload int
		past    bool
		fault   Result
		hdr     bool
		wantSeq uint32
	}{
		{"the handshake ACK", 1000, tcpflag.ACK, 0, 0, false, OK, true, 1130},
		{"first data", 1000, tcpflag.ACK, 0, 5, false, OK, true, 1130},
		{"later data", 1005, tcpflag.ACK, 0, 5, false, OK, false, 1135},
		{"the SYN", 999, tcpflag.SYN, 0, 0, false, OK, false, 1099},
		{"a keepalive probe", 999, tcpflag.ACK, 0, 1, false, OK, false, 1099},
		{"data from before the start", 990, tcpflag.ACK, 0, 20, false, Overlap, false, 0},
		{"a SYN with data", 999, tcpflag.SYN, 0, 1, false, Overlap, false, 0},
		{"a RST at the start", 1000, tcpflag.RST, 0, 0, false, OK, false, 1130},
		{"an urgent byte in the header", 995, tcpflag.ACK | tcpflag.URG, 8, 0, false, Overlap, false, 0},
		{"an urgent byte before it", 995, tcpflag.ACK | tcpflag.URG, 2, 0, false, OK, false, 1095},
		{"an urgent byte after it", 1000 + 5, tcpflag.ACK | tcpflag.URG, 3, 3, false, OK, false, 1135},
		{"past 2 GiB, once acknowledged", 1000 + 1<<31 + 5, tcpflag.ACK, 0, 5, true, OK, false, 1000 + 1<<31 + 135},
		{"past 2 GiB, not acknowledged: taken for an old one", 1000 + 1<<31 + 5, tcpflag.ACK, 0, 5, false, OK, false, 1000 + 1<<31 + 105},
	} {
		rr := r
		if tc.past {
			rr.Flags |= Past
		}
		h := seg(tc.seq, 1, tc.flags, 100, nil, make([]byte, tc.payload))
		binary.BigEndian.PutUint16(h[18:], tc.urg)
		binary.BigEndian.PutUint16(h[16:], 0)
		binary.BigEndian.PutUint16(h[16:], csum.Checksum(h, pseudo))
		out := toServer(&rr)(h, 0)
		if out.Fault != tc.fault || out.Header != tc.hdr {
			t.Errorf("%s: fault %d header %v, want %d %v", tc.name, out.Fault, out.Header, tc.fault, tc.hdr)
			continue
		}
		if tc.fault == OK && wire.TCP(h).Seq() != tc.wantSeq {
			t.Errorf("%s: seq %d, want %d", tc.name, wire.TCP(h).Seq(), tc.wantSeq)
		}
	}
}

// Acked: an ack at or past the header's end (in the server's numbers) and
// within 1 GiB of it; never again once Past, never without a header.
func TestAcked(t *testing.T) {
	r := Rewriter{Client: 130, Start: 1000, Insert: 30} // the header at 1100-1129
	if r.HeaderStart() != 1100 {
		t.Fatalf("HeaderStart %d", r.HeaderStart())
	}
	for ack, want := range map[uint32]bool{1100: false, 1129: false, 1130: true, 1130 + 1<<29: true, 1130 + 1<<30: false} {
		if got := r.Acked(ack); got != want {
			t.Errorf("Acked(%d) = %v, want %v", ack, got, want)
		}
	}
	r.Flags |= Past
	if r.Acked(1130) {
		t.Error("Acked once Past")
	}
	if (&Rewriter{Client: 5}).Acked(100) {
		t.Error("Acked without a header")
	}
}

// The storm fingerprint: the same seq, ack, window, first SACK block's
// right edge and TSval give the same one; any of them changed, another;
// a second SACK or timestamp option is not part of it; computed from the
// numbers as they came, whatever the translation.
func TestFingerprint(t *testing.T) {
	base := func(seq, ack uint32, win uint16, right, tsval, tail uint32) []byte {
		o := append(sackOpt(1, right), tsOpt(tsval, 0)...)
		return seg(seq, ack, tcpflag.ACK, win, append(o, sackOpt(1, tail)...), nil)
	}
	p := Fingerprint(base(1, 2, 3, 4, 5, 6))
	for i, h := range [][]byte{base(9, 2, 3, 4, 5, 6), base(1, 9, 3, 4, 5, 6), base(1, 2, 9, 4, 5, 6), base(1, 2, 3, 9, 5, 6), base(1, 2, 3, 4, 9, 6)} {
		if Fingerprint(h) == p {
			t.Errorf("change %d: same fingerprint", i)
		}
	}
	if Fingerprint(base(1, 2, 3, 4, 5, 99)) != p {
		t.Error("a second SACK option changed the fingerprint")
	}
	r := Rewriter{Server: 77, Client: 5, TSServer: 3, Flags: Storm | TSServerOn}
	h := base(1, 2, 3, 4, 5, 6)
	if out := apply(t, h, toClient(&r)); out.Print != p {
		t.Error("ToClient's fingerprint is not the segment's as it came")
	}
}

// ClientAck is ClientEdge with the record's numbers.
func TestClientAck(t *testing.T) {
	r := Rewriter{Client: 100, Start: 1000, Insert: 30}
	for a, want := range map[uint32]uint32{1100: 1000, 1080: 1000, 1069: 969, 1200: 1100} {
		if got := r.ClientAck(a); got != want {
			t.Errorf("ClientAck(%d) = %d, want %d", a, got, want)
		}
	}
}

// The walk allocates nothing.
func TestNoAllocations(t *testing.T) {
	r := Rewriter{Client: 1, Server: 2, Start: 1, Insert: 3, TSClient: 4, TSServer: 5, Flags: TSClientOn | TSServerOn | Storm}
	h := seg(10, 20, tcpflag.ACK, 100, append(tsOpt(1, 2), sackOpt(30, 40)...), make([]byte, 100))
	if a := testing.AllocsPerRun(1000, func() {
		r.ToServer(h, 0)
		r.ToClient(h, 0)
	}); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}

// FuzzRewriter: any header, any record. A translation never panics and
// never reads past the header (the segment has no capacity beyond its
// bytes); a header whose options tcpopt.Walk calls malformed is refused
// as BadOptions, and one it accepts is not; an accepted one's checksum
// verifies from scratch, and nothing past the options changes.
func FuzzRewriter(f *testing.F) {
	f.Add(seg(1, 2, tcpflag.ACK, 3, append(tsOpt(4, 5), sackOpt(6, 7)...), []byte("x")), uint32(1), uint32(2), uint32(0), uint32(0), uint32(3), uint32(4), uint16(0), uint16(0), int8(0), int8(0), int8(0), uint8(TSClientOn|TSServerOn), true)
	f.Add(seg(1000, 2, tcpflag.ACK, 3, nil, []byte("hello")), uint32(130), uint32(0), uint32(1000), uint32(30), uint32(0), uint32(0), uint16(0), uint16(0), int8(0), int8(0), int8(0), uint8(0), true)
	f.Add(seg(1, 2, tcpflag.SYN, 3, append(mssOpt(1460), tsOpt(9, 0)...), nil), uint32(1), uint32(0), uint32(0), uint32(0), uint32(500), uint32(0), uint16(1400), uint16(1300), int8(2), int8(7), int8(3), uint8(TSPending), false)
	f.Add([]byte{0, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x70, 0x10, 1, 0, 0, 0, 0, 0, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1}, uint32(5), uint32(6), uint32(0), uint32(0), uint32(0), uint32(0), uint16(0), uint16(0), int8(0), int8(14), int8(0), uint8(0xff), true)
	f.Add(seg(1, 2, tcpflag.ACK, 3, []byte{tcpopt.TOA, 8, 0, 80, 1, 2, 3, 4}, nil), uint32(0), uint32(0), uint32(0), uint32(0), uint32(0), uint32(0), uint16(0), uint16(0), int8(0), int8(0), int8(0), uint8(TSRemove), true)
	f.Fuzz(func(t *testing.T, h []byte, client, server, start, insert, tsc, tss uint32, mssS, mssC uint16, winIn, winOut, winOutR int8, flags uint8, towardServer bool) {
		r := Rewriter{Client: client, Server: server, Start: start, Insert: insert, TSClient: tsc, TSServer: tss,
			MSSToServer: mssS, MSSToClient: mssC, WinIn: max(min(winIn, 14), 0), WinOut: max(min(winOut, 14), 0), WinOutR: max(min(winOutR, 14), 0), Flags: flags}
		h = slices.Clip(h)
		if len(h) >= 20 {
			binary.BigEndian.PutUint16(h[16:], 0)
			binary.BigEndian.PutUint16(h[16:], csum.Checksum(h, pseudo))
		}
		b := slices.Clip(slices.Clone(h))
		dir := toClient(&r)
		if towardServer {
			dir = toServer(&r)
		}
		out := dir(b, 0)
		hl := 0
		if len(h) >= 20 {
			hl = int(h[12]>>4) * 4
		}
		if len(h) < 20 || hl < 20 || hl > len(h) {
			if out.Fault != BadOptions {
				t.Fatalf("header % x not refused", h)
			}
			return
		}
		valid := tcpopt.Valid(h[20:hl])
		switch {
		case out.Fault == Overlap:
			if !towardServer || insert == 0 {
				t.Fatalf("Overlap without inserted bytes toward the server")
			}
			return
		case valid != (out.Fault == OK):
			t.Fatalf("options % x: valid %v, fault %d", h[20:hl], valid, out.Fault)
		case !valid:
			return
		}
		csum.Adjust(b[16:], csum.Fold(out.Acc))
		if c := csum.Checksum(b, pseudo); c != 0 {
			t.Fatalf("residue %#04x: % x -> % x", c, h, b)
		}
		if !bytes.Equal(b[hl:], h[hl:]) || !bytes.Equal(b[:4], h[:4]) || b[12] != h[12] || b[13] != h[13] {
			t.Fatalf("ports, data offset, flags or payload changed: % x -> % x", h, b)
		}
	})
}
