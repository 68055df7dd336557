package synproxy

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcpopt"
	"github.com/tapvs/tapvs/tcprw"
	"github.com/tapvs/tapvs/wire"
)

var flow = Flow{
	Src: netip.MustParseAddr("172.25.254.1").As16(), Dst: netip.MustParseAddr("172.25.254.100").As16(),
	Sport: 40000, Dport: 80,
}

var flow6 = Flow{
	Src: netip.MustParseAddr("2001:db8::1").As16(), Dst: netip.MustParseAddr("2001:db8::100").As16(),
	Sport: 40000, Dport: 80,
}

func TestCookieRoundTripsEveryOption(t *testing.T) {
	c := NewCookies()
	minute := uint32(1000)
	c.Minute = func() uint32 { return minute }
	for _, f := range []*Flow{&flow, &flow6} {
		for idx, mss := range MSSTableOf(f) {
			for ws := int8(-1); ws <= 14; ws++ {
				for bits := range 4 {
					in := Options{MSS: mss + uint16(idx%2), WScale: ws, SACK: bits&1 != 0, TS: bits&2 != 0}
					isn := rand.Uint32()
					cookie, kept := c.Make(f, isn, in)
					if kept.MSS != mss {
						t.Fatalf("MSS %d kept as %d, want %d", in.MSS, kept.MSS, mss)
					}
					got, ok := c.Check(f, isn, cookie)
					if !ok || got != kept {
						t.Fatalf("%+v: check gave %+v %v", kept, got, ok)
					}
				}
			}
		}
	}
}

func TestCookieMSSRoundsDown(t *testing.T) {
	c := NewCookies()
	for _, tc := range []struct {
		f       *Flow
		in, out uint16
	}{
		{&flow, 1459, 1452}, {&flow, 9000, 4312}, {&flow, 10, 64}, {&flow, 536, 536}, {&flow, 1461, 1460}, {&flow, 1440, 1440},
		// IPv6: each MTU's MSS is 20 less than IPv4's and is kept whole.
		{&flow6, 1440, 1440}, {&flow6, 1439, 1432}, {&flow6, 1432, 1432}, {&flow6, 1220, 1220}, {&flow6, 1419, 1220},
		{&flow6, 1420, 1420}, {&flow6, 8940, 8940}, {&flow6, 9000, 8940}, {&flow6, 4292, 4292}, {&flow6, 10, 64}, {&flow6, 1460, 1440},
	} {
		_, o := c.Make(tc.f, 1, Options{MSS: tc.in, WScale: -1})
		if o.MSS != tc.out {
			t.Errorf("%v: MSS %d -> %d, want %d", netip.AddrFrom16(tc.f.Src), tc.in, o.MSS, tc.out)
		}
	}
}

// The family is both addresses': a flow with one IPv4-mapped address is
// IPv6's, as Segment.Write sends it.
func TestMSSTableOf(t *testing.T) {
	mixed := flow6
	mixed.Src = flow.Src
	for _, c := range []struct {
		f    *Flow
		want []uint16
	}{{&flow, MSSTable[:]}, {&flow6, MSSTable6[:]}, {&mixed, MSSTable6[:]}} {
		if got := MSSTableOf(c.f); !slices.Equal(got, c.want) {
			t.Fatalf("%v -> %v: %v", netip.AddrFrom16(c.f.Src), netip.AddrFrom16(c.f.Dst), got)
		}
	}
	for _, tab := range [][]uint16{MSSTable[:], MSSTable6[:]} {
		if len(tab) > 16 || !slices.IsSorted(tab) {
			t.Fatalf("%v: more than 4 bits of index, or unsorted", tab)
		}
	}
}

// An IPv4 cookie is the same number it was before IPv6 (the flow hashed
// as 16 bytes, the IPv4 table): fixed keys and minute, a known cookie.
func TestCookieIPv4Unchanged(t *testing.T) {
	c := &Cookies{Minute: func() uint32 { return 29000000 }}
	k := &keys{k: [2]sipKey{{1, 2}, {3, 4}}}
	c.cur.Store(k)
	c.prev.Store(k)
	cookie, _ := c.Make(&flow, 0x12345678, Options{MSS: 1460, WScale: 7, SACK: true, TS: true})
	if cookie != goldenCookie {
		t.Fatalf("cookie %#x, want %#x", cookie, goldenCookie)
	}
}

// goldenCookie is what the code before IPv6 made for the same inputs.
const goldenCookie = 0x6df1732a

func TestCookieExpires(t *testing.T) {
	c := NewCookies()
	start := uint32(0xfffffffe) // the counter wraps inside the window
	minute := start
	c.Minute = func() uint32 { return minute }
	cookie, _ := c.Make(&flow, 7, Options{MSS: 1460, WScale: 7})
	for age := uint32(0); age < 4; age++ {
		minute = start + age
		if _, ok := c.Check(&flow, 7, cookie); !ok {
			t.Fatalf("refused at age %d minutes", age)
		}
	}
	minute = start + 4
	if _, ok := c.Check(&flow, 7, cookie); ok {
		t.Fatal("accepted at 4 minutes")
	}
}

func TestCookieTamperRefused(t *testing.T) {
	c := NewCookies()
	isn := uint32(123456)
	cookie, _ := c.Make(&flow, isn, Options{MSS: 1460, WScale: 7, SACK: true, TS: true})
	accepted := 0
	// Bits 12-21 carry the options and are only range-checked (as in LVS and
	// Linux): a flip there can name another valid option set. Every other bit
	// is covered by the zero check, the age and the keyed hash.
	for bit := range 32 {
		if bit >= 12 && bit <= 21 {
			continue
		}
		if _, ok := c.Check(&flow, isn, cookie^1<<bit); ok {
			accepted++
		}
	}
	other := flow
	other.Sport++
	if _, ok := c.Check(&other, isn, cookie); ok {
		accepted++
	}
	if _, ok := c.Check(&flow, isn+1, cookie); ok {
		accepted++
	}
	if accepted != 0 {
		t.Fatalf("%d tampered cookies accepted", accepted)
	}
	// Random cookies: the 12 zero bits and the option ranges refuse nearly all.
	forged := 0
	for range 100000 {
		if _, ok := c.Check(&flow, isn, rand.Uint32()); ok {
			forged++
		}
	}
	if forged > 20 { // expect about 100000 * 4/256 * 1/4096 * 10/16 ≈ 0.2
		t.Fatalf("%d of 100000 random cookies accepted", forged)
	}
}

func TestCookieSurvivesOneRotation(t *testing.T) {
	c := NewCookies()
	cookie, _ := c.Make(&flow, 1, Options{MSS: 1460, WScale: -1})
	c.Rotate()
	if _, ok := c.Check(&flow, 1, cookie); !ok {
		t.Fatal("refused after one rotation")
	}
	c.Rotate()
	if _, ok := c.Check(&flow, 1, cookie); ok {
		t.Fatal("accepted after two rotations")
	}
}

func TestOptionsWriteParse(t *testing.T) {
	for _, o := range []SynOptions{
		{MSS: 1460, WScale: 7, SACKPerm: true, TS: true, TSval: 0xdeadbeef, TSecr: 42},
		{MSS: 536, WScale: -1},
		{MSS: 1400, WScale: 0, SACKPerm: true},
		{MSS: 1400, WScale: 14, TS: true, TSval: 1},
	} {
		var b [20]byte
		n := o.Write(b[:])
		if n%4 != 0 || n > 20 {
			t.Fatalf("length %d", n)
		}
		p, ok := tcpopt.Parse(b[:n])
		if !ok || p.MSS != o.MSS || p.WScale != o.WScale || p.SACKPerm != o.SACKPerm || p.TS != o.TS || p.TSval != o.TSval || p.TSecr != o.TSecr {
			t.Fatalf("%+v -> %+v %v", o, p, ok)
		}
	}
	if _, ok := tcpopt.Parse([]byte{2, 4, 5}); ok {
		t.Fatal("truncated MSS option accepted")
	}
	if _, ok := tcpopt.Parse([]byte{8, 1}); ok {
		t.Fatal("option length 1 accepted")
	}
}

// tcpHeader builds a TCP header with NOP NOP TS and an optional SACK option,
// and a valid checksum over a pseudo-header.
func tcpHeader(seq, ack, tsval, tsecr uint32, sack []uint32, win uint16) []byte {
	opts := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(opts[4:], tsval)
	binary.BigEndian.PutUint32(opts[8:], tsecr)
	if len(sack) > 0 {
		opts = append(opts, 1, 1, 5, byte(2+4*len(sack)))
		for _, e := range sack {
			opts = binary.BigEndian.AppendUint32(opts, e)
		}
	}
	h := make([]byte, 20, 20+len(opts))
	binary.BigEndian.PutUint32(h[4:], seq)
	binary.BigEndian.PutUint32(h[8:], ack)
	h[12] = byte((20+len(opts))/4) << 4
	h[13] = tcpflag.ACK
	binary.BigEndian.PutUint16(h[14:], win)
	h = append(h, opts...)
	binary.BigEndian.PutUint16(h[16:], csum.Checksum(h, pseudo))
	return h
}

const pseudo = 0x1234

// translate runs one direction's translation on h and applies the checksum
// change it reports.
func translate(t *testing.T, h []byte, dir func([]byte, uint32) (uint32, bool)) {
	t.Helper()
	acc, ok := dir(h, 0)
	if !ok {
		t.Fatalf("header % x refused", h)
	}
	csum.Adjust(h[16:], csum.Fold(acc))
}

func verify(t *testing.T, h []byte) {
	t.Helper()
	if c := csum.Checksum(h, pseudo); c != 0 {
		t.Fatalf("checksum does not verify after translation (residue %#x)", c)
	}
}

func established(t *testing.T, serverISN, serverTS uint32) *State {
	s := &State{Opts: Options{MSS: 1460, WScale: 7, SACK: true, TS: true}, ClientISN: 100,
		Cookie: 0xfffffff0, TSOn: true, ClientTSval: 5000, OurTSval: 0xfffffff0, OurWScale: 7}
	s.Establish(serverISN, tcpopt.Parsed{WScale: 7, SACKPerm: true, TS: true, TSval: serverTS, TSecr: 5000})
	return s
}

func TestTranslationWrapsAndCoversSACKAndTimestamps(t *testing.T) {
	// The cookie sits just below 2^32 and the server's ISN just above 0, so
	// translated numbers wrap in both directions.
	s := established(t, 0x20, 0x10)
	ck := s.Cookie // 0xfffffff0: just below 2^32
	if s.ServerISN() != 0x20 {
		t.Fatal("server ISN")
	}
	// Client -> server: ack, every SACK edge and TSecr move back by the deltas.
	h := tcpHeader(101, ck+1+3000, 6000, ck+7, []uint32{ck + 5000, ck + 6000, ck + 9000, ck + 9500}, 1000)
	translate(t, h, s.ToServer)
	verify(t, h)
	if got := binary.BigEndian.Uint32(h[8:]); got != 0x20+1+3000 {
		t.Fatalf("ack %#x", got)
	}
	if got := binary.BigEndian.Uint32(h[20+8:]); got != 0x10+7 {
		t.Fatalf("TSecr %#x, want the server's own clock %#x", got, 0x10+7)
	}
	for i, want := range []uint32{0x20 + 5000, 0x20 + 6000, 0x20 + 9000, 0x20 + 9500} {
		if got := binary.BigEndian.Uint32(h[20+16+4*i:]); got != want {
			t.Fatalf("SACK edge %d %#x, want %#x", i, got, want)
		}
	}
	if binary.BigEndian.Uint32(h[4:]) != 101 || binary.BigEndian.Uint32(h[20+4:]) != 6000 {
		t.Fatal("client's own numbers changed")
	}
	// Server -> client: seq and TSval move forward.
	h = tcpHeader(0x20+1, 101, 0x10+50, 6000, []uint32{200, 300}, 1000)
	translate(t, h, s.ToClient)
	verify(t, h)
	if got := binary.BigEndian.Uint32(h[4:]); got != ck+1 {
		t.Fatalf("seq %#x", got)
	}
	if got := binary.BigEndian.Uint32(h[20+4:]); got != ck+50 {
		t.Fatalf("TSval %#x", got)
	}
	if binary.BigEndian.Uint32(h[20+16:]) != 200 || binary.BigEndian.Uint32(h[8:]) != 101 {
		t.Fatal("client-space numbers changed")
	}
}

func TestWindowScaleMismatch(t *testing.T) {
	s := &State{Opts: Options{WScale: 7}, Cookie: 1, OurWScale: 7}
	s.Establish(1, tcpopt.Parsed{WScale: 9}) // the server scales by 9, the client expects 7
	h := tcpHeader(1, 1, 0, 0, nil, 100)
	translate(t, h, s.ToClient)
	verify(t, h)
	if w := binary.BigEndian.Uint16(h[14:]); w != 400 {
		t.Fatalf("window %d, want 400 (100<<9>>7)", w)
	}
	s = &State{Opts: Options{WScale: 7}, Cookie: 1, OurWScale: 7}
	s.Establish(1, tcpopt.Parsed{WScale: -1}) // the server does not scale at all
	for _, tc := range []struct{ in, want uint16 }{{100, 12800}, {1000, 0xffff}} {
		h = tcpHeader(1, 1, 0, 0, nil, tc.in)
		translate(t, h, s.ToServer)
		verify(t, h)
		if w := binary.BigEndian.Uint16(h[14:]); w != tc.want {
			t.Fatalf("client window %d to an unscaled server: %d, want %d (<<7, clamped)", tc.in, w, tc.want)
		}
	}
}

// ack is a pure ACK's TCP header; sackRight > 0 adds a SACK block ending there.
func ack(seq, ackNo uint32, window uint16, sackRight uint32) []byte {
	h := make([]byte, 20, 32)
	binary.BigEndian.PutUint32(h[4:], seq)
	binary.BigEndian.PutUint32(h[8:], ackNo)
	binary.BigEndian.PutUint16(h[14:], window)
	h[12] = 5 << 4
	if sackRight > 0 {
		h = append(h, 1, 1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(h[24:], sackRight-100)
		binary.BigEndian.PutUint32(h[28:], sackRight)
		h[12] = 8 << 4
	}
	return h
}

func TestStorm(t *testing.T) {
	var s State
	for i := range 10 { // seen 10 times: still passed
		if s.Storm(tcprw.Fingerprint(ack(1, 2, 500, 0)), 10) {
			t.Fatalf("storm after %d", i)
		}
	}
	if !s.Storm(tcprw.Fingerprint(ack(1, 2, 500, 0)), 10) {
		t.Fatal("no storm at the 11th repeat")
	}
	if !s.Storm(tcprw.Fingerprint(ack(1, 2, 500, 0)), 10) {
		t.Fatal("the storm stopped at the 12th repeat")
	}
	if s.Storm(tcprw.Fingerprint(ack(1, 3, 500, 0)), 10) {
		t.Fatal("a new ack is not a storm")
	}
	for w := range uint16(20) { // window updates: same seq and ack, a new window each
		if s.Storm(tcprw.Fingerprint(ack(1, 3, 600+w, 0)), 10) {
			t.Fatalf("window update %d taken for a storm", w)
		}
	}
	for i := range uint32(30) { // duplicate ACKs in loss recovery: each SACKs more
		if s.Storm(tcprw.Fingerprint(ack(1, 3, 700, 5000+100*i)), 10) {
			t.Fatalf("duplicate ACK %d with a new SACK block taken for a storm", i)
		}
	}
	for i := range 12 { // the same SACK again and again is a storm
		if got := s.Storm(tcprw.Fingerprint(ack(1, 3, 700, 9000)), 10); got != (i >= 10) {
			t.Fatalf("repeat %d of the same SACK: storm %v", i, got)
		}
	}
	// Zero-window probes: the same ACK seconds apart, a new TSval each.
	probe := func(tsval uint32) []byte {
		h := ack(5, 6, 0, 0)
		h = append(h, 1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 7)
		binary.BigEndian.PutUint32(h[24:], tsval)
		h[12] = 8 << 4
		return h
	}
	for i := range uint32(20) {
		if s.Storm(tcprw.Fingerprint(probe(1000+200*i)), 10) {
			t.Fatalf("zero-window probe %d taken for a storm", i)
		}
	}
	for i := range 12 { // a storm within one tick of the timestamp clock
		if got := s.Storm(tcprw.Fingerprint(probe(9999)), 10); got != (i >= 10) {
			t.Fatalf("repeat %d within one TSval: storm %v", i, got)
		}
	}
}

func BenchmarkCookieMake(b *testing.B) {
	c := NewCookies()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Make(&flow, uint32(i), Options{MSS: 1460, WScale: 7, SACK: true, TS: true})
	}
}

func BenchmarkCookieCheck(b *testing.B) {
	c := NewCookies()
	cookie, _ := c.Make(&flow, 1, Options{MSS: 1460, WScale: 7, SACK: true, TS: true})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, ok := c.Check(&flow, 1, cookie); !ok {
			b.Fatal("refused")
		}
	}
}

// FuzzTranslate: any header, any established state. Translation never
// reads past the header; when it accepts a header, the checksum it reports
// verifies from scratch and only the fields it translates have changed (a
// client's own TOA option, toward the server, into NOPs).
func FuzzTranslate(f *testing.F) {
	f.Add(tcpHeader(101, 3001, 6000, 0xfffffff7, []uint32{1, 2, 3, 4}, 1000), uint32(0x20), uint32(0x10), int8(7), int8(9), true)
	f.Add(append(tcpHeader(1, 2, 3, 4, nil, 5)[:20:20], 8, 8, '0', '0', '0', '0', '0', '0'), uint32(1), uint32(2), int8(-1), int8(7), true)
	f.Add([]byte{0, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x70, 0x10, 1, 0, 0, 0, 0, 0, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1}, uint32(5), uint32(6), int8(0), int8(14), true)
	f.Fuzz(func(t *testing.T, h []byte, serverISN, serverTS uint32, clientWS, serverWS int8, ts bool) {
		clientWS, serverWS = max(min(clientWS, 14), -1), max(min(serverWS, 14), -1)
		if len(h) < 20 {
			return
		}
		binary.BigEndian.PutUint16(h[16:], 0)
		binary.BigEndian.PutUint16(h[16:], csum.Checksum(h, pseudo))
		for dir := range 2 {
			s := &State{Opts: Options{MSS: 1460, WScale: clientWS, TS: ts}, ClientISN: 100, Cookie: 0x12345678, TSOn: ts, OurTSval: 77, OurWScale: 7}
			s.Establish(serverISN, tcpopt.Parsed{WScale: serverWS, TS: ts, TSval: serverTS})
			b := slices.Clone(h)
			translateDir := s.ToServer
			if dir == 1 {
				translateDir = s.ToClient
			}
			acc, ok := translateDir(b, 0)
			if !ok {
				continue
			}
			csum.Adjust(b[16:], csum.Fold(acc))
			if c := csum.Checksum(b, pseudo); c != 0 {
				t.Fatalf("direction %d: residue %#04x", dir, c)
			}
			may := map[int]bool{16: true, 17: true, 14: true, 15: true}
			span := func(from, n int) {
				for i := from; i < from+n; i++ {
					may[i] = true
				}
			}
			if dir == 0 {
				span(8, 4)
			} else {
				span(4, 4)
			}
			w := tcpopt.Walk(h[20 : int(h[12]>>4)*4])
			for {
				o, more := w.Next()
				if !more {
					break
				}
				switch {
				case o.Kind == tcpopt.Timestamps && dir == 0:
					span(20+o.Off+6, 4)
				case o.Kind == tcpopt.Timestamps:
					span(20+o.Off+2, 4)
				case o.Kind == tcpopt.SACK && dir == 0:
					span(20+o.Off+2, o.Len-2)
				case tcpopt.ForgedTOA(o) && dir == 0:
					// A client's own TOA goes to the server as NOPs.
					for i := 20 + o.Off; i < 20+o.Off+o.Len; i++ {
						if b[i] != tcpopt.NOP {
							t.Fatalf("direction 0 left byte %d of a client's TOA option (% x): % x", i, h[20+o.Off:20+o.Off+o.Len], b)
						}
					}
					span(20+o.Off, o.Len)
				}
			}
			for i := range b {
				if b[i] != h[i] && !may[i] {
					t.Fatalf("direction %d changed byte %d of % x", dir, i, h)
				}
			}
		}
	})
}

// FuzzCookie: a cookie made for a handshake checks for it and gives back
// the options it carried (the MSS rounded down to the table); one with any
// of its 12 always-zero data bits flipped does not; and checking any value
// at all never panics and gives options inside their ranges.
func FuzzCookie(f *testing.F) {
	f.Add([]byte{10, 0, 0, 1}, uint16(40000), uint32(12345), uint16(1460), int8(7), true, true, uint32(0xdeadbeef), uint8(3))
	f.Add([]byte{172, 25, 254, 1}, uint16(1), uint32(0xffffffff), uint16(0), int8(-1), false, false, uint32(0), uint8(0))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1}, uint16(40000), uint32(1), uint16(1440), int8(7), true, true, uint32(1), uint8(5))
	f.Add([]byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(40000), uint32(1), uint16(8940), int8(14), true, false, uint32(7), uint8(11))
	c := NewCookies()
	c.Minute = func() uint32 { return 777 }
	f.Fuzz(func(t *testing.T, src []byte, sport uint16, isn uint32, mss uint16, ws int8, sack, ts bool, any uint32, bit uint8) {
		var fl Flow
		copy(fl.Src[:], src)
		fl.Dst[15], fl.Sport, fl.Dport = 100, sport, 80
		if wire.Is4(&fl.Src) { // an IPv4 client: an IPv4 VIP, the IPv4 table
			fl.Dst = wire.Addr4([4]byte{172, 25, 254, 100})
		}
		table := MSSTableOf(&fl)
		ws = max(ws, -1)
		in := Options{MSS: mss, WScale: ws, SACK: sack, TS: ts}
		cookie, kept := c.Make(&fl, isn, in)
		got, ok := c.Check(&fl, isn, cookie)
		if !ok || got != kept {
			t.Fatalf("%+v: cookie %#x checks %v with %+v, want %+v", in, cookie, ok, got, kept)
		}
		if kept.MSS > max(mss, table[0]) || kept.WScale > 14 || !slices.Contains(table, kept.MSS) {
			t.Fatalf("kept %+v from %+v", kept, in)
		}
		if _, ok := c.Check(&fl, isn, cookie^1<<(bit%12)); ok {
			t.Fatalf("cookie %#x with bit %d flipped checks", cookie, bit%12)
		}
		if o, ok := c.Check(&fl, isn, any); ok {
			if o.WScale > 14 || o.WScale < -1 || !slices.Contains(table, o.MSS) {
				t.Fatalf("any %#x checks with %+v", any, o)
			}
		}
	})
}

// A cookie whose MSS index is past its family's table is refused, not read
// out of range: IPv6's longer table must not lend IPv4 cookies its indexes.
func TestCookieIndexPastTableRefused(t *testing.T) {
	c := NewCookies()
	minute := uint32(500)
	c.Minute = func() uint32 { return minute }
	k := c.cur.Load()
	for _, f := range []*Flow{&flow, &flow6} {
		for idx := range 16 {
			data := uint32(idx)<<12 | noWScale<<16
			cookie := k.hash(f, 0, 0) + 1 + minute<<cookieBits + (k.hash(f, minute, 1)+data)&cookieMask
			o, ok := c.Check(f, 1, cookie)
			if want := idx < len(MSSTableOf(f)); ok != want || ok && o.MSS != MSSTableOf(f)[idx] {
				t.Fatalf("%v: index %d checks %v (%+v), want %v", netip.AddrFrom16(f.Src), idx, ok, o, want)
			}
		}
	}
}

func TestCookieNoAllocations(t *testing.T) {
	c := NewCookies()
	for _, f := range []*Flow{&flow, &flow6} {
		if n := testing.AllocsPerRun(100, func() {
			cookie, _ := c.Make(f, 1, Options{MSS: 1440, WScale: 7, SACK: true, TS: true})
			c.Check(f, 1, cookie)
		}); n != 0 {
			t.Fatalf("%v: %v allocations a cookie", netip.AddrFrom16(f.Src), n)
		}
	}
}

// TestOptionsLinuxLayout pins the bytes: Linux's order and padding
// (tcp_options_write), which servers and middleboxes are used to.
func TestOptionsLinuxLayout(t *testing.T) {
	for _, c := range []struct {
		o    SynOptions
		want []byte
	}{
		{SynOptions{MSS: 1460, WScale: 7, SACKPerm: true, TS: true, TSval: 0x01020304, TSecr: 0x05060708},
			[]byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 3, 7}},
		{SynOptions{MSS: 1400, WScale: -1, TS: true, TSval: 9},
			[]byte{2, 4, 0x05, 0x78, 1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0}},
		{SynOptions{MSS: 536, WScale: 0, SACKPerm: true},
			[]byte{2, 4, 0x02, 0x18, 1, 1, 4, 2, 1, 3, 3, 0}},
		{SynOptions{MSS: 536, WScale: -1}, []byte{2, 4, 0x02, 0x18}},
	} {
		var b [20]byte
		if got := b[:c.o.Write(b[:])]; !bytes.Equal(got, c.want) {
			t.Errorf("%+v: % x, want % x", c.o, got, c.want)
		}
	}
}
