package frag

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/tapvs/tapvs/wire"
)

// The tests here pin each bound at its edge: the value at the bound is
// taken, one past it refused, with the reason counted.

// mk4 is an IPv4 UDP fragment of 10.0.0.1 (identification 1) carrying n
// zero bytes at byte off of the datagram's data, with MF if more.
func mk4(off, n int, more bool) []byte {
	ip := make([]byte, wire.IPv4MinLen+n)
	wire.IPv4(ip).Put(&wire.IPv4Fields{TotalLen: len(ip), ID: 1, TTL: 64, Protocol: wire.ProtoUDP, Src: [4]byte{10, 0, 0, 1}, Dst: [4]byte{10, 0, 0, 2}})
	ff := uint16(off / 8)
	if more {
		ff |= wire.IPv4MF
	}
	binary.BigEndian.PutUint16(ip[wire.IPv4FragOff:], ff)
	return ip
}

func add(t *testing.T, r *Reassembler, ip []byte, now int64, want Result, wantReason Reason) {
	t.Helper()
	res, _, reason := r.Add(ip, make([]byte, 70000), now)
	if res != want || (res == Dropped && reason != wantReason) {
		t.Fatalf("%v %v, want %v %v", res, reason, want, wantReason)
	}
}

func TestDefaultsOfZero(t *testing.T) {
	r := New(Config{MaxBytes: 1000})
	if r.cfg.MaxPerSource != 250 || r.cfg.Timeout != DefaultTimeout {
		t.Fatalf("%+v", r.cfg)
	}
	r = New(Config{})
	if r.cfg.MaxBytes != DefaultMaxBytes || r.cfg.MaxPerSource != DefaultMaxBytes/4 || r.cfg.Timeout != DefaultTimeout {
		t.Fatalf("%+v", r.cfg)
	}
}

// TestChargeExact: a first fragment of 1480 bytes is charged its entry,
// a 2048-byte chunk and a 128-byte chunk for its header; a later one the
// chunk alone; each bound takes exactly that and refuses a byte less.
func TestChargeExact(t *testing.T) {
	first := entrySize + 2048 + 128
	big := 1 << 30
	for _, tc := range []struct {
		name       string
		max, src   int
		want       Result
		wantReason Reason
	}{
		{"memory exact", first, big, Held, 0},
		{"memory one short", first - 1, big, Dropped, Memory},
		{"source exact", big, first, Held, 0},
		{"source one short", big, first - 1, Dropped, Source},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(Config{MaxBytes: tc.max, MaxPerSource: tc.src})
			add(t, r, mk4(0, 1480, true), 0, tc.want, tc.wantReason)
			if tc.want == Held && r.Bytes() != int64(first) {
				t.Fatalf("charged %d, want %d", r.Bytes(), first)
			}
			if tc.want == Dropped && (r.Count(tc.wantReason) != 1 || r.Bytes() != 0 || r.Held() != 0) {
				t.Fatalf("counted %d, %d bytes, %d held", r.Count(tc.wantReason), r.Bytes(), r.Held())
			}
		})
	}
	// Not the first: no header charged.
	r := New(Config{MaxBytes: entrySize + 2048, MaxPerSource: big})
	add(t, r, mk4(1480, 1480, true), 0, Held, 0)
	r = New(Config{MaxBytes: entrySize + 2047, MaxPerSource: big})
	add(t, r, mk4(1480, 1480, true), 0, Dropped, Memory)
	// A second fragment of a datagram held: no second entry charged.
	r = New(Config{MaxBytes: first + 2048, MaxPerSource: big})
	add(t, r, mk4(0, 1480, true), 0, Held, 0)
	add(t, r, mk4(1480, 1480, true), 0, Held, 0)
	if r.Bytes() != int64(first+2048) {
		t.Fatalf("charged %d", r.Bytes())
	}
	r = New(Config{MaxBytes: first + 2047, MaxPerSource: big})
	add(t, r, mk4(0, 1480, true), 0, Held, 0)
	add(t, r, mk4(1480, 1480, true), 0, Dropped, Memory)
	// 128 bytes take the smallest chunk, 136 the next.
	for _, tc := range []struct{ n, chunk int }{{128, 128}, {136, 256}, {8, 128}, {2048, 2048}, {2056, 4096}} {
		r = New(Config{MaxBytes: entrySize + tc.chunk, MaxPerSource: big})
		add(t, r, mk4(2048*8, tc.n, true), 0, Held, 0)
		if r.Bytes() != int64(entrySize+tc.chunk) {
			t.Fatalf("%d bytes charged %d", tc.n, r.Bytes()-int64(entrySize))
		}
	}
}

// TestSourceRelease: a datagram given up gives its source its bytes back,
// no more and no less, and a source with nothing held is forgotten.
func TestSourceRelease(t *testing.T) {
	first := entrySize + 2048 + 128
	r := New(Config{MaxBytes: 1 << 30, MaxPerSource: 2 * first, Timeout: time.Second})
	a, b, c, d := mk4(0, 1480, true), mk4(0, 1480, true), mk4(0, 1480, true), mk4(0, 1480, true)
	for i, ip := range [][]byte{a, b, c, d} {
		binary.BigEndian.PutUint16(ip[ipv4IDOff:], uint16(10+i))
	}
	add(t, r, a, 0, Held, 0)
	add(t, r, b, 1, Held, 0)
	if n := r.Sweep(int64(time.Second) + 1); n != 1 {
		t.Fatalf("swept %d", n)
	}
	add(t, r, c, 2, Held, 0)
	add(t, r, d, 2, Dropped, Source)
	if n := r.Sweep(int64(time.Hour)); n != 2 || r.Bytes() != 0 {
		t.Fatalf("swept %d, %d bytes", n, r.Bytes())
	}
	for i := range r.shards {
		if len(r.shards[i].sources) != 0 {
			t.Fatalf("shard %d remembers %v", i, r.shards[i].sources)
		}
	}
}

func TestTimeoutOnAddAtDeadline(t *testing.T) {
	r := New(Config{Timeout: time.Second})
	add(t, r, mk4(0, 8, true), 0, Held, 0)
	add(t, r, mk4(8, 8, true), int64(time.Second), Held, 0)
	add(t, r, mk4(16, 8, false), int64(time.Second), Done, 0)
	if r.Count(Timeout) != 0 {
		t.Fatal(r.Count(Timeout))
	}
}

func TestLastFragmentEdges(t *testing.T) {
	// The last fragment again: a duplicate, not two ends.
	r := New(Config{})
	add(t, r, mk4(1480, 1528, false), 0, Held, 0)
	add(t, r, mk4(1480, 1528, false), 0, Dropped, Duplicate)
	add(t, r, mk4(0, 1480, true), 0, Done, 0)
	// A last fragment ending past the known end: two ends.
	r = New(Config{})
	add(t, r, mk4(1480, 1480, false), 0, Held, 0)
	add(t, r, mk4(1480, 1528, false), 0, Dropped, Malformed)
	if r.Count(Malformed) != 2 || r.Held() != 0 {
		t.Fatal(r.Count(Malformed), r.Held())
	}
	// A last fragment ending where a held one ends is not past it: it
	// overlaps.
	r = New(Config{})
	add(t, r, mk4(1480, 1480, true), 0, Held, 0)
	add(t, r, mk4(1488, 1472, false), 0, Dropped, Overlap)
	// A fragment with MF ending exactly at the known end is not past it:
	// it overlaps the last one.
	r = New(Config{})
	add(t, r, mk4(1480, 1528, false), 0, Held, 0)
	add(t, r, mk4(1488, 1520, true), 0, Dropped, Overlap)
	if r.Count(Overlap) != 2 || r.Count(Malformed) != 0 {
		t.Fatal(r.Count(Overlap), r.Count(Malformed))
	}
}

func TestDatagramLimitExact(t *testing.T) {
	// A fragment ending at 65535 with its header, and one a byte past.
	r := New(Config{})
	add(t, r, mk4(65488, 27, false), 0, Held, 0)
	add(t, r, mk4(65488, 28, false), 0, Dropped, TooBig)
	// A datagram of exactly 65535 bytes is made whole.
	ip := udp4(MaxDatagram-wire.IPv4MinLen-wire.UDPLen, 5)
	got, info := feed(t, New(Config{}), split(t, ip, 1500, 5), func() []int {
		o := make([]int, 45)
		for i := range o {
			o[i] = i
		}
		return o
	}())
	if info.Len != MaxDatagram {
		t.Fatal(info.Len)
	}
	same(t, got, ip)
	// The first fragment's options make it 4 bytes too long.
	r = New(Config{})
	first := mk4(0, 1480, true)
	first = append(first[:wire.IPv4MinLen:wire.IPv4MinLen], append([]byte{1, 1, 1, 1}, first[wire.IPv4MinLen:]...)...)
	first[0] = 0x46
	wire.IPv4(first).SetTotalLen(len(first))
	add(t, r, first, 0, Held, 0)
	add(t, r, mk4(1480, 65515-1480, false), 0, Dropped, TooBig)
	if r.Count(TooBig) != 2 || r.Held() != 0 {
		t.Fatal(r.Count(TooBig), r.Held())
	}
}

func TestOutExact(t *testing.T) {
	ip := udp4(3000, 1)
	frags := split(t, ip, 1500, 1)
	for _, n := range []int{len(ip), len(ip) - 1} {
		r := New(Config{})
		out := make([]byte, n)
		r.Add(frags[0], out, 0)
		r.Add(frags[1], out, 0)
		res, info, reason := r.Add(frags[2], out, 0)
		if n == len(ip) && (res != Done || info.Len != n) || n < len(ip) && (res != Dropped || reason != TooBig) {
			t.Fatalf("out of %d: %v %v", n, res, reason)
		}
	}
	// An atomic fragment too.
	ip = udp6(100)
	frags = split(t, ip, 1280, 1)
	for _, n := range []int{len(ip), len(ip) - 1} {
		r := New(Config{})
		res, _, reason := r.Add(frags[0], make([]byte, n), 0)
		if n == len(ip) && res != Done || n < len(ip) && (res != Dropped || reason != TooBig || r.Count(TooBig) != 1) {
			t.Fatalf("atomic, out of %d: %v %v", n, res, reason)
		}
	}
}

// TestTruncatedHeaders: packets that end inside their headers are refused,
// not read past their end.
func TestTruncatedHeaders(t *testing.T) {
	r := New(Config{})
	add(t, r, nil, 0, Dropped, Malformed)
	add(t, r, []byte{0x45}, 0, Dropped, Malformed)
	v6 := func(next uint8, rest ...byte) []byte {
		ip := make([]byte, wire.IPv6Len, wire.IPv6Len+len(rest))
		wire.IPv6(ip).Put(len(rest), next, 64, make([]byte, 16), make([]byte, 16))
		return append(ip, rest...)
	}
	add(t, r, v6(wire.IP6HopByHop), 0, Dropped, Malformed)
	add(t, r, v6(wire.IP6HopByHop, 0), 0, Dropped, Malformed)
	add(t, r, v6(wire.IP6Fragment, wire.ProtoUDP, 0, 0, 0), 0, Dropped, Malformed)
	// A hop-by-hop header longer than the packet.
	add(t, r, v6(wire.IP6HopByHop, wire.IP6Fragment, 1, 0, 0, 0, 0, 0, 0), 0, Dropped, Malformed)
	if r.Count(Malformed) != 6 {
		t.Fatal(r.Count(Malformed))
	}
}

// TestTCPHeaderExact: a first fragment of exactly a 20-byte TCP header
// holds it.
func TestTCPHeaderExact(t *testing.T) {
	ip := udp6(wire.TCPMinLen - wire.UDPLen)
	ip[wire.IPv6NextHdrOff] = wire.ProtoTCP
	ip[wire.IPv6Len+12] = 5 << 4
	frags := split(t, ip, 1280, 1)
	r := New(Config{})
	add(t, r, frags[0], 0, Done, 0)
	ip[wire.IPv6Len+12] = 6 << 4
	frags = split(t, ip, 1280, 1)
	add(t, r, frags[0], 0, Dropped, Tiny)
}

// TestShardsSpread: sources are spread over the shards (their locks), not
// piled into a few.
func TestShardsSpread(t *testing.T) {
	seen := map[uint64]bool{}
	for i := range shards {
		var src [16]byte
		src[12], src[13], src[15] = 10, 0, byte(i+1)
		seen[hashSrc(&src)&(shards-1)] = true
	}
	if len(seen) < shards/2 {
		t.Fatalf("%d sources in %d shards", shards, len(seen))
	}
}

// TestSplitterHeadersOnly: a datagram that is all headers parses (every
// header is there, exactly); one that ends inside a header does not.
func TestSplitterHeadersOnly(t *testing.T) {
	v4 := udp4(0, 1)[:wire.IPv4MinLen]
	wire.IPv4(v4).SetTotalLen(len(v4))
	v4opt := append(append([]byte{}, v4...), 1, 1, 1, 1)
	v4opt[0] = 0x46
	v6 := func(next uint8, rest ...byte) []byte {
		ip := make([]byte, wire.IPv6Len, wire.IPv6Len+len(rest))
		wire.IPv6(ip).Put(len(rest), next, 64, make([]byte, 16), make([]byte, 16))
		return append(ip, rest...)
	}
	for _, tc := range []struct {
		name string
		ip   []byte
		ok   bool
	}{
		{"v4 header", v4, true},
		{"v4 header with options", v4opt, true},
		{"v4 options cut", v4opt[:wire.IPv4MinLen+2], false},
		{"v6 header", v6(wire.ProtoUDP), true},
		{"v6 hop-by-hop", v6(wire.IP6HopByHop, 59, 0, 1, 4, 0, 0, 0, 0), true},
		{"v6 hop-by-hop missing", v6(wire.IP6HopByHop), false},
		{"v6 hop-by-hop cut", v6(wire.IP6HopByHop, 59, 0, 1, 4), false},
		{"v6 hop-by-hop longer than the packet", v6(wire.IP6HopByHop, 59, 1, 1, 4, 0, 0, 0, 0), false},
	} {
		s, ok := NewSplitter(tc.ip, 1280, 1)
		if ok != tc.ok {
			t.Fatalf("%s: ok %v", tc.name, ok)
		}
		if ok {
			if n := s.Next(make([]byte, 1280)); n != 0 {
				t.Fatalf("%s: a fragment of %d bytes with no data", tc.name, n)
			}
		}
	}
}

// TestChargeLongHeader: an IPv6 first fragment whose unfragmentable part
// (a 96-byte hop-by-hop header) passes 128 bytes is charged a 256-byte
// chunk for it.
func TestChargeLongHeader(t *testing.T) {
	ip := udp6(3000)
	hbh := make([]byte, 96)
	hbh[0], hbh[1] = wire.ProtoUDP, 96/8-1
	ip = append(append(append([]byte{}, ip[:wire.IPv6Len]...), hbh...), ip[wire.IPv6Len:]...)
	wire.IPv6(ip).SetNextHeader(wire.IP6HopByHop)
	wire.IPv6(ip).SetPayloadLen(len(ip) - wire.IPv6Len)
	frags := split(t, ip, 1280, 1)
	if n := len(frags[0]) - wire.IPv6Len - 96 - frag6Len; n != 1136 {
		t.Fatalf("first fragment's data %d bytes", n)
	}
	want := entrySize + 2048 + 256
	r := New(Config{MaxBytes: want, MaxPerSource: want})
	add(t, r, frags[0], 0, Held, 0)
	if r.Bytes() != int64(want) {
		t.Fatalf("charged %d, want %d", r.Bytes(), want)
	}
	r = New(Config{MaxBytes: want - 1, MaxPerSource: want})
	add(t, r, frags[0], 0, Dropped, Memory)
	got, _ := feed(t, New(Config{}), frags, []int{1, 2, 0})
	same(t, got, ip)
}

// TestSplitMTUEdges: a datagram exactly as long as the MTU (IPv6: with
// the fragment header) comes out as one fragment; a byte longer, as two,
// the first's data a multiple of 8 and the last's the rest.
func TestSplitMTUEdges(t *testing.T) {
	ip := udp4(1000, 3) // 1028 bytes
	one := split(t, ip, len(ip), 3)
	if len(one) != 1 {
		t.Fatalf("%d fragments at the MTU", len(one))
	}
	same(t, one[0], ip) // offset 0, no MF: the datagram itself
	two := split(t, ip, len(ip)-1, 3)
	per := (len(ip) - 1 - wire.IPv4MinLen) &^ 7 // 1000
	if len(two) != 2 || len(two[0]) != wire.IPv4MinLen+per || len(two[1]) != len(ip)-per {
		t.Fatalf("a byte past the MTU: %d fragments", len(two))
	}
	if ff := wire.IPv4(two[0]).FragField(); ff != wire.IPv4MF {
		t.Fatalf("first: %x", ff)
	}
	if ff := wire.IPv4(two[1]).FragField(); ff != uint16(per/8) {
		t.Fatalf("last: %x", ff)
	}
	v6 := udp6(1000)
	if n := len(split(t, v6, len(v6)+frag6Len, 1)); n != 1 {
		t.Fatalf("v6 at the MTU: %d fragments", n)
	}
	two = split(t, v6, len(v6)+frag6Len-1, 1)
	per = (len(v6) + frag6Len - 1 - wire.IPv6Len - frag6Len) &^ 7
	if len(two) != 2 || len(two[0]) != wire.IPv6Len+frag6Len+per || len(two[1]) != len(v6)+frag6Len-per {
		t.Fatalf("v6 a byte past the MTU: %d fragments", len(two))
	}
	if fh := frag6(two[1][wire.IPv6Len:]); fh.Off() != per || fh.More() || !frag6(two[0][wire.IPv6Len:]).More() {
		t.Fatalf("v6 fragment headers %x %x", two[0][wire.IPv6Len:wire.IPv6Len+8], two[1][wire.IPv6Len:wire.IPv6Len+8])
	}
	got, _ := feed(t, New(Config{}), two, []int{1, 0})
	same(t, got, v6)
}

// TestGlobalBoundConcurrent: readers on different shards adding at once
// cannot pass MaxBytes together: each reserves its bytes before it copies
// its fragment, so of 8 first fragments of 64 KiB that arrive together
// with room for 2, exactly 2 are held and the rest refused for memory,
// round after round.
func TestGlobalBoundConcurrent(t *testing.T) {
	const readers, rounds = 8, 100
	one := entrySize + 65536 + 128 // the entry, a 64 KiB chunk, the header's
	frags := make([][]byte, readers)
	for i := range frags {
		frags[i] = mk4(0, 65512, true)
		frags[i][15] = byte(i + 1) // a source of its own, on its own shard mostly
	}
	outs := make([][]byte, readers)
	for i := range outs {
		outs[i] = make([]byte, 70000)
	}
	for round := range rounds {
		r := New(Config{MaxBytes: 2 * one, MaxPerSource: 1 << 30})
		start := make(chan struct{})
		done := make(chan struct{}, readers)
		for i := range readers {
			go func() {
				<-start
				r.Add(frags[i], outs[i], 0)
				done <- struct{}{}
			}()
		}
		close(start)
		for range readers {
			<-done
		}
		if r.Held() != 2 || r.Bytes() != int64(2*one) || r.Count(Memory) != readers-2 {
			t.Fatalf("round %d: %d held, %d bytes charged (bound %d), %d refused for memory", round, r.Held(), r.Bytes(), 2*one, r.Count(Memory))
		}
	}
}

// TestSourceIsSlash64: one IPv6 source is a /64, as package defence counts
// clients: a second address of the /64 shares the first's bound, an
// address of another /64 has its own, and the /64's bytes come back when
// its datagram is given up.
func TestSourceIsSlash64(t *testing.T) {
	first := entrySize + 2048 + 128 // a 1280-byte first fragment: 1232 bytes of data, 48 of header
	from := func(last, seventh byte, id uint32) []byte {
		f := bytes.Clone(split(t, udp6(3000), 1280, id)[0])
		f[8+7], f[8+15] = seventh, last // the source address's 8th and 16th bytes
		return f
	}
	r := New(Config{MaxBytes: 1 << 30, MaxPerSource: first, Timeout: time.Second})
	add(t, r, from(1, 0, 1), 0, Held, 0)
	add(t, r, from(2, 0, 2), 0, Dropped, Source) // the same /64
	add(t, r, from(1, 1, 3), 0, Held, 0)         // another /64
	if r.Sweep(int64(time.Second)+1) != 2 || r.Bytes() != 0 {
		t.Fatal("not given up")
	}
	add(t, r, from(2, 0, 4), int64(time.Second)+1, Held, 0)
	// An IPv4 source is its address: two of one /24 are two sources.
	r = New(Config{MaxBytes: 1 << 30, MaxPerSource: first})
	a, b := mk4(0, 1480, true), mk4(0, 1480, true)
	b[15] = 9
	add(t, r, a, 0, Held, 0)
	add(t, r, b, 0, Held, 0)
}
