package frag

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// udp4 is an IPv4 UDP datagram of n payload bytes.
func udp4(n int, id uint16) []byte {
	ip := make([]byte, wire.IPv4MinLen+wire.UDPLen+n)
	wire.IPv4(ip).Put(&wire.IPv4Fields{TotalLen: len(ip), ID: id, TTL: 64, Protocol: wire.ProtoUDP, Src: [4]byte{10, 0, 0, 1}, Dst: [4]byte{10, 0, 0, 2}})
	u := ip[wire.IPv4MinLen:]
	binary.BigEndian.PutUint16(u[0:], 53)
	binary.BigEndian.PutUint16(u[2:], 4000)
	binary.BigEndian.PutUint16(u[4:], uint16(wire.UDPLen+n))
	for i := range n {
		u[wire.UDPLen+i] = byte(i * 7)
	}
	binary.BigEndian.PutUint16(u[6:], csum.Checksum(u, csum.PseudoV4(ip[12:16], ip[16:20], wire.ProtoUDP, len(u))))
	return ip
}

// udp6 is an IPv6 UDP datagram of n payload bytes.
func udp6(n int) []byte {
	ip := make([]byte, wire.IPv6Len+wire.UDPLen+n)
	src, dst := make([]byte, 16), make([]byte, 16)
	src[0], src[1], src[15] = 0x20, 0x01, 1
	dst[0], dst[1], dst[15] = 0x20, 0x01, 2
	wire.IPv6(ip).Put(wire.UDPLen+n, wire.ProtoUDP, 64, src, dst)
	u := ip[wire.IPv6Len:]
	binary.BigEndian.PutUint16(u[0:], 53)
	binary.BigEndian.PutUint16(u[2:], 4000)
	binary.BigEndian.PutUint16(u[4:], uint16(wire.UDPLen+n))
	for i := range n {
		u[wire.UDPLen+i] = byte(i * 3)
	}
	binary.BigEndian.PutUint16(u[6:], csum.Checksum(u, csum.PseudoV6(src, dst, wire.ProtoUDP, len(u))))
	return ip
}

// split cuts ip for mtu.
func split(t testing.TB, ip []byte, mtu int, id uint32) [][]byte {
	t.Helper()
	s, ok := NewSplitter(ip, mtu, id)
	if !ok {
		t.Fatalf("splitter refused mtu %d", mtu)
	}
	var out [][]byte
	for range 1000 {
		buf := make([]byte, mtu)
		n := s.Next(buf)
		if n == 0 {
			return out
		}
		if n > mtu {
			t.Fatalf("fragment of %d bytes past mtu %d", n, mtu)
		}
		out = append(out, buf[:n])
	}
	t.Fatal("splitter never ends")
	return nil
}

// whole4 is ip as reassembly gives it back: no MF, no offset, checksum redone.
func same(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("reassembled %d bytes differ from the %d sent\n got %x\nwant %x", len(got), len(want), got[:min(60, len(got))], want[:min(60, len(want))])
	}
}

func feed(t *testing.T, r *Reassembler, frags [][]byte, order []int) ([]byte, Info) {
	t.Helper()
	out := make([]byte, 70000)
	for k, i := range order {
		res, info, reason := r.Add(frags[i], out, 0)
		if k < len(order)-1 {
			if res != Held {
				t.Fatalf("fragment %d: %v %v, want held", i, res, reason)
			}
			continue
		}
		if res != Done {
			t.Fatalf("last fragment %d: %v %v, want done", i, res, reason)
		}
		return out[:info.Len], info
	}
	return nil, Info{}
}

func TestReassembleOrders(t *testing.T) {
	for _, tc := range []struct {
		name string
		ip   []byte
		mtu  int
	}{{"v4", udp4(4000, 7), 1500}, {"v6", udp6(4000), 1280}, {"v4 small mtu", udp4(300, 9), 68}} {
		id := uint32(0x1234)
		if tc.ip[0]>>4 == 4 {
			id = uint32(wire.IPv4(tc.ip).ID()) // kept, so the datagram compares whole
		}
		frags := split(t, tc.ip, tc.mtu, id)
		n := len(frags)
		in, rev, odd := make([]int, n), make([]int, n), make([]int, 0, n)
		for i := range n {
			in[i], rev[i] = i, n-1-i
		}
		for i := 1; i < n; i += 2 {
			odd = append(odd, i)
		}
		for i := 0; i < n; i += 2 {
			odd = append(odd, i)
		}
		for _, order := range [][]int{in, rev, odd} {
			r := New(Config{})
			got, info := feed(t, r, frags, order)
			same(t, got, tc.ip)
			if info.MaxFrag != len(frags[0]) || info.DF {
				t.Fatalf("%s: info %+v, first fragment %d bytes", tc.name, info, len(frags[0]))
			}
			if r.Bytes() != 0 || r.Held() != 0 || r.Reassembled() != 1 {
				t.Fatalf("%s: after: %d bytes, %d held, %d done", tc.name, r.Bytes(), r.Held(), r.Reassembled())
			}
		}
	}
}

func TestDuplicateDroppedAlone(t *testing.T) {
	ip := udp4(3000, 1)
	frags := split(t, ip, 1500, 1)
	r := New(Config{})
	out := make([]byte, 70000)
	if res, _, _ := r.Add(frags[0], out, 0); res != Held {
		t.Fatal(res)
	}
	if res, _, reason := r.Add(frags[0], out, 0); res != Dropped || reason != Duplicate || r.Count(Duplicate) != 1 {
		t.Fatalf("duplicate: %v %v", res, reason)
	}
	got, _ := feed(t, r, frags, []int{1, 2})
	same(t, got, ip)
}

func TestOverlapGivesUp(t *testing.T) {
	ip := udp4(3000, 1)
	frags := split(t, ip, 1500, 1)
	r := New(Config{})
	out := make([]byte, 70000)
	r.Add(frags[0], out, 0)
	r.Add(frags[2], out, 0)
	// The second fragment, 8 bytes earlier: it overlaps the first's end.
	bad := bytes.Clone(frags[1])
	h := wire.IPv4(bad)
	binary.BigEndian.PutUint16(bad[wire.IPv4FragOff:], h.FragField()-1)
	if res, _, reason := r.Add(bad, out, 0); res != Dropped || reason != Overlap {
		t.Fatalf("overlap: %v %v", res, reason)
	}
	if r.Count(Overlap) != 3 || r.Held() != 0 || r.Bytes() != 0 {
		t.Fatalf("overlap counted %d (want the 2 held and the 1 refused), %d held, %d bytes", r.Count(Overlap), r.Held(), r.Bytes())
	}
	// Overlapping the next one's start too.
	r.Add(frags[1], out, 0)
	bad = bytes.Clone(frags[0])
	wire.IPv4(bad).SetTotalLen(len(bad) + 8)
	bad = append(bad, make([]byte, 8)...)
	if res, _, reason := r.Add(bad, out, 0); res != Dropped || reason != Overlap {
		t.Fatalf("overlap at the end: %v %v", res, reason)
	}
}

func TestOverlap6(t *testing.T) {
	ip := udp6(3000)
	frags := split(t, ip, 1280, 5)
	r := New(Config{})
	out := make([]byte, 70000)
	r.Add(frags[1], out, 0)
	bad := bytes.Clone(frags[0])
	// The first fragment made 8 bytes longer, into the second's start.
	bad = append(bad, make([]byte, 8)...)
	wire.IPv6(bad).SetPayloadLen(len(bad) - wire.IPv6Len)
	if res, _, reason := r.Add(bad, out, 0); res != Dropped || reason != Overlap {
		t.Fatalf("overlap: %v %v", res, reason)
	}
}

func TestTiny(t *testing.T) {
	// A TCP first fragment of 16 bytes: the header is 20.
	ip := udp4(100, 3)
	ip[9] = wire.ProtoTCP
	ip[wire.IPv4MinLen+12] = 5 << 4
	frags := split(t, ip, 36, 3)
	r := New(Config{})
	if res, _, reason := r.Add(frags[0], make([]byte, 70000), 0); res != Dropped || reason != Tiny {
		t.Fatalf("tiny: %v %v", res, reason)
	}
	// 24 bytes hold it, but not options it says it has (data offset 8).
	ip[wire.IPv4MinLen+12] = 8 << 4
	frags = split(t, ip, 44, 3)
	if res, _, reason := r.Add(frags[0], make([]byte, 70000), 0); res != Dropped || reason != Tiny {
		t.Fatalf("tiny with options: %v %v", res, reason)
	}
	ip[wire.IPv4MinLen+12] = 6 << 4
	frags = split(t, ip, 44, 3)
	if res, _, reason := r.Add(frags[0], make([]byte, 70000), 0); res != Held {
		t.Fatalf("24 bytes of a 24-byte header: %v %v", res, reason)
	}
}

func TestTiny6(t *testing.T) {
	// A destination options header of 8 bytes ahead of UDP in the
	// fragmentable part, and a first fragment of 8 bytes: no UDP header.
	ip := udp6(64)
	ext := append([]byte{wire.ProtoUDP, 0, 1, 4, 0, 0, 0, 0}, ip[wire.IPv6Len:]...)
	ip = append(ip[:wire.IPv6Len:wire.IPv6Len], ext...)
	wire.IPv6(ip).SetNextHeader(wire.IP6DestOpts)
	wire.IPv6(ip).SetPayloadLen(len(ip) - wire.IPv6Len)
	frags := split(t, ip, wire.IPv6Len+8+8, 1)
	r := New(Config{})
	if res, _, reason := r.Add(frags[0], make([]byte, 70000), 0); res != Dropped || reason != Tiny || r.Count(Tiny) != 1 {
		t.Fatalf("tiny: %v %v", res, reason)
	}
	frags = split(t, ip, wire.IPv6Len+8+16, 1)
	if res, _, reason := r.Add(frags[0], make([]byte, 70000), 0); res != Held {
		t.Fatalf("16 bytes: %v %v", res, reason)
	}
}

func TestTooBig(t *testing.T) {
	ip := udp4(100, 3)
	frags := split(t, ip, 60, 3)
	last := bytes.Clone(frags[len(frags)-1])
	// The last fragment moved to the end of the offset's range.
	binary.BigEndian.PutUint16(last[wire.IPv4FragOff:], wire.IPv4FragMask)
	r := New(Config{})
	if res, _, reason := r.Add(last, make([]byte, 70000), 0); res != Dropped || reason != TooBig {
		t.Fatalf("too big: %v %v", res, reason)
	}
	// 65535 exactly is not: 27 bytes at 65488, after a 20-byte header.
	last = last[:wire.IPv4MinLen+27]
	wire.IPv4(last).SetTotalLen(len(last))
	binary.BigEndian.PutUint16(last[wire.IPv4FragOff:], 65488/8)
	if res, _, reason := r.Add(last, make([]byte, 70000), 0); res != Held {
		t.Fatalf("ending at 65535: %v %v", res, reason)
	}
	// out too small for the whole: given up, counted.
	frags = split(t, udp4(3000, 4), 1500, 4)
	r.Add(frags[0], make([]byte, 100), 0)
	r.Add(frags[1], make([]byte, 100), 0)
	if res, _, reason := r.Add(frags[2], make([]byte, 100), 0); res != Dropped || reason != TooBig || r.Count(TooBig) != 4 {
		t.Fatalf("out too small: %v %v %d", res, reason, r.Count(TooBig))
	}
}

func TestMalformed(t *testing.T) {
	frags := split(t, udp4(3000, 1), 1500, 1)
	r := New(Config{})
	out := make([]byte, 70000)
	odd := bytes.Clone(frags[0][:len(frags[0])-1])
	wire.IPv4(odd).SetTotalLen(len(odd))
	if res, _, reason := r.Add(odd, out, 0); res != Dropped || reason != Malformed {
		t.Fatalf("not a multiple of 8: %v %v", res, reason)
	}
	// Two different ends.
	r.Add(frags[2], out, 0)
	end := bytes.Clone(frags[1])
	binary.BigEndian.PutUint16(end[wire.IPv4FragOff:], wire.IPv4(end).FragField()&wire.IPv4FragMask)
	if res, _, reason := r.Add(end, out, 0); res != Dropped || reason != Malformed || r.Held() != 0 {
		t.Fatalf("an earlier last fragment: %v %v", res, reason)
	}
	// A fragment past the known end.
	r.Add(frags[2], out, 0)
	past := bytes.Clone(frags[1])
	binary.BigEndian.PutUint16(past[wire.IPv4FragOff:], wire.IPv4MF|uint16(wire.IPv4(frags[2]).FragField()&wire.IPv4FragMask+200))
	if res, _, reason := r.Add(past, out, 0); res != Dropped || reason != Malformed || r.Held() != 0 {
		t.Fatalf("past the end: %v %v", res, reason)
	}
	// A last fragment before a held one's end.
	r.Add(frags[1], out, 0)
	early := bytes.Clone(frags[1][:wire.IPv4MinLen+8])
	wire.IPv4(early).SetTotalLen(len(early))
	binary.BigEndian.PutUint16(early[wire.IPv4FragOff:], 1)
	if res, _, reason := r.Add(early, out, 0); res != Dropped || reason != Malformed {
		t.Fatalf("a last fragment before a held end: %v %v", res, reason)
	}
	// Offset 0 without MF is no fragment.
	if res, _, reason := r.Add(udp4(10, 1), out, 0); res != Dropped || reason != Malformed {
		t.Fatalf("whole datagram: %v %v", res, reason)
	}
}

func TestMemoryBounds(t *testing.T) {
	r := New(Config{MaxBytes: 64 << 10, MaxPerSource: 16 << 10})
	out := make([]byte, 70000)
	held := 0
	for id := range 100 {
		frags := split(t, udp4(3000, uint16(id)), 1500, uint32(id))
		res, _, reason := r.Add(frags[0], out, 0)
		if res == Dropped {
			if reason != Source {
				t.Fatalf("one source past its bound: %v", reason)
			}
			break
		}
		held++
		if r.Bytes() > 16<<10 {
			t.Fatalf("%d bytes from one source", r.Bytes())
		}
	}
	if held == 0 || held == 100 {
		t.Fatalf("held %d", held)
	}
	// Other sources fill the rest, then Memory.
	sawMemory := false
	for src := range 200 {
		ip := udp4(3000, 1)
		ip[12] = byte(20 + src)
		wire.IPv4(ip).SetChecksum(0)
		frags := split(t, ip, 1500, 1)
		if res, _, reason := r.Add(frags[0], out, 0); res == Dropped {
			if reason != Memory && reason != Source {
				t.Fatal(reason)
			}
			sawMemory = sawMemory || reason == Memory
		}
		if r.Bytes() > 64<<10 {
			t.Fatalf("%d bytes held past the bound", r.Bytes())
		}
	}
	if !sawMemory || r.Count(Memory) == 0 {
		t.Fatal("no memory refusal")
	}
	if n := r.Sweep(int64(DefaultTimeout) + 1); n == 0 || r.Bytes() != 0 || r.Held() != 0 {
		t.Fatalf("sweep: %d, %d bytes left, %d held", n, r.Bytes(), r.Held())
	}
}

func TestTimeout(t *testing.T) {
	frags := split(t, udp6(3000), 1280, 9)
	r := New(Config{Timeout: time.Second})
	out := make([]byte, 70000)
	r.Add(frags[0], out, 0)
	r.Add(frags[1], out, 0)
	if n := r.Sweep(int64(time.Second)); n != 0 {
		t.Fatalf("swept at its deadline: %d", n)
	}
	if n := r.Sweep(int64(time.Second) + 1); n != 1 || r.Count(Timeout) != 2 || r.Bytes() != 0 {
		t.Fatalf("sweep: %d, %d timed out, %d bytes", n, r.Count(Timeout), r.Bytes())
	}
	// Expired when the next fragment comes, before any sweep: it starts over.
	r.Add(frags[0], out, 0)
	r.Add(frags[1], out, int64(time.Second)+1)
	if r.Count(Timeout) != 3 || r.Held() != 1 {
		t.Fatalf("expired on add: %d timed out, %d held", r.Count(Timeout), r.Held())
	}
}

func TestTooMany(t *testing.T) {
	frags := split(t, udp4(65*8+100, 2), wire.IPv4MinLen+8, 2)
	r := New(Config{})
	out := make([]byte, 70000)
	for i := range MaxFragments {
		if res, _, reason := r.Add(frags[i], out, 0); res != Held {
			t.Fatalf("fragment %d: %v %v", i, res, reason)
		}
	}
	if res, _, reason := r.Add(frags[MaxFragments], out, 0); res != Dropped || reason != TooMany || r.Count(TooMany) != MaxFragments+1 || r.Held() != 0 {
		t.Fatalf("65th: %v %v %d", res, reason, r.Count(TooMany))
	}
}

func TestAtomic6(t *testing.T) {
	ip := udp6(100)
	frags := split(t, ip, 1280, 3)
	if len(frags) != 1 {
		t.Fatal(len(frags))
	}
	r := New(Config{})
	// In place, as the balancer calls it.
	buf := make([]byte, 70000)
	copy(buf, frags[0])
	res, info, _ := r.Add(buf[:len(frags[0])], buf, 0)
	if res != Done || info.MaxFrag != len(ip) {
		t.Fatal(res, info)
	}
	same(t, buf[:info.Len], ip)
}

func TestInPlace(t *testing.T) {
	// The last fragment is read from the buffer the datagram is written to.
	ip := udp4(4000, 7)
	frags := split(t, ip, 1500, 7)
	r := New(Config{})
	buf := make([]byte, 70000)
	for i, f := range frags {
		copy(buf, f)
		res, info, _ := r.Add(buf[:len(f)], buf, 0)
		if i == len(frags)-1 {
			if res != Done {
				t.Fatal(res)
			}
			same(t, buf[:info.Len], ip)
		}
	}
}

func TestDF(t *testing.T) {
	ip := udp4(3000, 7)
	frags := split(t, ip, 1500, 7)
	frags[1][wire.IPv4FragOff] |= wire.IPv4DF >> 8
	r := New(Config{})
	got, info := feed(t, r, frags, []int{0, 1, 2})
	if !info.DF || wire.IPv4(got).FragField() != wire.IPv4DF || csum.Checksum(got[:20], 0) != 0 {
		t.Fatalf("DF: %+v %x", info, wire.IPv4(got).FragField())
	}
}

func TestNoAllocs(t *testing.T) {
	ip := udp4(3000, 7)
	frags := split(t, ip, 1500, 7)
	r := New(Config{})
	out := make([]byte, 70000)
	for range 10 {
		feed(t, r, frags, []int{0, 1, 2})
	}
	n := testing.AllocsPerRun(100, func() {
		for _, f := range frags {
			r.Add(f, out, 0)
		}
	})
	if n > 0.1 {
		t.Fatalf("%v allocations per datagram", n)
	}
}

func TestSplitterRefuses(t *testing.T) {
	if _, ok := NewSplitter(udp4(100, 1), wire.IPv4MinLen+7, 1); ok {
		t.Fatal("mtu without room for 8 bytes")
	}
	if _, ok := NewSplitter(udp4(100, 1), wire.IPv4MinLen+8, 1); !ok {
		t.Fatal("mtu with room for 8 bytes")
	}
	if _, ok := NewSplitter(udp6(100), wire.IPv6Len+15, 1); ok {
		t.Fatal("v6 mtu without room for 8 bytes")
	}
	if _, ok := NewSplitter(udp6(100), wire.IPv6Len+16, 1); !ok {
		t.Fatal("v6 mtu with room for 8 bytes")
	}
	if _, ok := NewSplitter(nil, 1500, 1); ok {
		t.Fatal("empty")
	}
}

// TestConcurrentReaders: the fragments of each datagram arrive on several
// goroutines (TAP queues) at once; each datagram is made whole once, and
// nothing is left held (run with -race).
func TestConcurrentReaders(t *testing.T) {
	r := New(Config{MaxBytes: 64 << 20, MaxPerSource: 64 << 20}) // all from one source, all held at once
	const datagrams, readers = 200, 3
	frags := make([][][]byte, datagrams)
	for i := range frags {
		frags[i] = split(t, udp4(4000, uint16(i)), 1500, uint32(i))
	}
	done := make(chan int, readers)
	for q := range readers {
		go func() {
			out := make([]byte, 70000)
			n := 0
			for i := range datagrams {
				for k, f := range frags[i] {
					if (k+i)%readers == q {
						if res, _, _ := r.Add(f, out, 0); res == Done {
							n++
						}
					}
				}
			}
			done <- n
		}()
	}
	total := 0
	for range readers {
		total += <-done
	}
	if total != datagrams || r.Reassembled() != datagrams || r.Held() != 0 || r.Bytes() != 0 {
		t.Fatalf("%d made whole by the readers, %d counted, %d held, %d bytes", total, r.Reassembled(), r.Held(), r.Bytes())
	}
}

// TestSplitHopByHop: a hop-by-hop header stays in front of every fragment
// (the unfragmentable part), a destination options header after it goes
// into the fragments, and reassembly gives the datagram back.
func TestSplitHopByHop(t *testing.T) {
	ip := udp6(3000)
	hbh := []byte{wire.IP6DestOpts, 0, 1, 4, 0, 0, 0, 0}
	dst := []byte{wire.ProtoUDP, 0, 1, 4, 0, 0, 0, 0}
	ip = append(append(append(bytes.Clone(ip[:wire.IPv6Len]), hbh...), dst...), ip[wire.IPv6Len:]...)
	wire.IPv6(ip).SetNextHeader(wire.IP6HopByHop)
	wire.IPv6(ip).SetPayloadLen(len(ip) - wire.IPv6Len)
	frags := split(t, ip, 1280, 42)
	for i, f := range frags {
		if f[wire.IPv6NextHdrOff] != wire.IP6HopByHop || f[wire.IPv6Len] != wire.IP6Fragment {
			t.Fatalf("fragment %d: next headers %d then %d", i, f[wire.IPv6NextHdrOff], f[wire.IPv6Len])
		}
		fh := frag6(f[wire.IPv6Len+8:])
		if fh.Next() != wire.IP6DestOpts || fh.ID() != 42 || fh.More() != (i < len(frags)-1) {
			t.Fatalf("fragment %d: header %x", i, f[wire.IPv6Len+8:wire.IPv6Len+16])
		}
	}
	got, _ := feed(t, New(Config{}), frags, []int{2, 0, 1})
	same(t, got, ip)
}

// TestSplitterCount: Count says how many fragments Next makes and how long
// the largest is, before any is made (a caller sizes its buffer by it).
func TestSplitterCount(t *testing.T) {
	for _, c := range []struct {
		ip  []byte
		mtu int
	}{
		{udp4(3000, 1), 1500}, {udp4(1472, 1), 1500}, {udp4(1473, 1), 1500}, {udp4(1, 1), 28},
		{udp6(3000), 1280}, {udp6(1224), 1280}, {udp6(1225), 1280}, {udp6(100), 1500},
	} {
		s, _ := NewSplitter(c.ip, c.mtu, 1)
		n, size := s.Count()
		frags := split(t, c.ip, c.mtu, 1)
		most := 0
		for _, f := range frags {
			most = max(most, len(f))
		}
		if n != len(frags) || size != most {
			t.Fatalf("%d bytes for %d: Count %d of %d bytes, Next made %d of %d", len(c.ip), c.mtu, n, size, len(frags), most)
		}
	}
}

// expired records what Config.Expired is given.
type expired struct {
	quotes [][]byte
	from   []uint64
}

func (x *expired) add(first []byte, from uint64) {
	x.quotes = append(x.quotes, bytes.Clone(first))
	x.from = append(x.from, from)
}

// TestExpired: a datagram given up at its timeout is passed to
// Config.Expired with its first fragment as it came (at most MaxQuote
// bytes; IPv6's Fragment header rebuilt) and the from its Add was given,
// only if the first fragment came (Linux's ip_expire); by Sweep and by an
// AddFrom that finds it expired alike. A datagram made whole or given up
// for another reason is not.
func TestExpired(t *testing.T) {
	var x expired
	r := New(Config{Timeout: time.Second, Expired: x.add})
	out := make([]byte, 70000)
	f4 := split(t, udp4(3000, 7), 1500, 7)
	f6 := split(t, udp6(3000), 1280, 8)
	r.AddFrom(f4[0], out, 0, 41)
	r.AddFrom(f4[1], out, 0, 42)
	r.AddFrom(f6[0], out, 0, 61)
	r.AddFrom(f6[2], out, 0, 62)
	g := split(t, udp4(3000, 9), 1500, 9) // no first fragment
	r.AddFrom(g[1], out, 0, 91)
	done := split(t, udp4(3000, 10), 1500, 10) // made whole
	for _, f := range done {
		r.AddFrom(f, out, 0, 100)
	}
	if n := r.Sweep(int64(time.Second)); n != 0 || len(x.quotes) != 0 {
		t.Fatalf("at the deadline: %d given up, %d expired", n, len(x.quotes))
	}
	if n := r.Sweep(int64(time.Second) + 1); n != 3 || len(x.quotes) != 2 {
		t.Fatalf("past it: %d given up, %d expired, want 3 and 2", n, len(x.quotes))
	}
	for i, q := range x.quotes {
		want, from := f4[0][:MaxQuote], uint64(41)
		if q[0]>>4 == 6 {
			want, from = f6[0][:MaxQuote], 61
		}
		if !bytes.Equal(q, want) || x.from[i] != from {
			t.Fatalf("expired %d: from %d, %d bytes %x, want from %d, %d bytes of the first fragment", i, x.from[i], len(q), q[:min(len(q), 60)], from, len(want))
		}
	}
	// Found expired by the next fragment of its datagram.
	x = expired{}
	r.AddFrom(f4[0], out, 0, 43)
	if res, _, _ := r.AddFrom(f4[1], out, int64(time.Second)+1, 44); res != Held || len(x.quotes) != 1 || x.from[0] != 43 || !bytes.Equal(x.quotes[0], f4[0][:MaxQuote]) {
		t.Fatalf("%v, %d expired", res, len(x.quotes))
	}
	// A first fragment of IPv6 whose headers fill the quote: no room for
	// the Fragment header, the headers alone; with 8 bytes of room, the
	// Fragment header and nothing of its data.
	for _, c := range []struct{ hdr, want int }{{MaxQuote, MaxQuote}, {MaxQuote - 8, MaxQuote}, {MaxQuote - 16, MaxQuote}} {
		x = expired{}
		r = New(Config{Timeout: time.Second, Expired: x.add})
		ip := udp6(3000)
		hbh := make([]byte, c.hdr-wire.IPv6Len)
		hbh[0], hbh[1] = wire.ProtoUDP, byte(len(hbh)/8-1)
		ip = append(append(bytes.Clone(ip[:wire.IPv6Len]), hbh...), ip[wire.IPv6Len:]...)
		wire.IPv6(ip).SetNextHeader(wire.IP6HopByHop)
		wire.IPv6(ip).SetPayloadLen(len(ip) - wire.IPv6Len)
		first := split(t, ip, 1280+c.hdr, 11)[0]
		if res, _, reason := r.AddFrom(first, out, 0, 1); res != Held {
			t.Fatalf("headers of %d: %v %v", c.hdr, res, reason)
		}
		r.Sweep(int64(time.Second) + 1)
		if len(x.quotes) != 1 || len(x.quotes[0]) != c.want || !bytes.Equal(x.quotes[0][:c.hdr], first[:c.hdr]) {
			t.Fatalf("headers of %d: %d expired", c.hdr, len(x.quotes))
		}
		q := x.quotes[0]
		if fits := c.hdr+8 <= MaxQuote; fits && (q[c.hdr] != wire.ProtoUDP || frag6(q[c.hdr:]).Off() != 0 || !frag6(q[c.hdr:]).More() || frag6(q[c.hdr:]).ID() != 11) {
			t.Fatalf("headers of %d: fragment header %x", c.hdr, q[c.hdr:c.hdr+8])
		}
	}
}

// withOptions is ip (IPv4, no options) with opts (a multiple of 4 bytes)
// as its options.
func withOptions(ip, opts []byte) []byte {
	out := append(append(bytes.Clone(ip[:wire.IPv4MinLen]), opts...), ip[wire.IPv4MinLen:]...)
	out[0] = 0x40 | byte((wire.IPv4MinLen+len(opts))/4)
	h := wire.IPv4(out)
	h.SetTotalLen(len(out))
	h.SetChecksum(0)
	h.SetChecksum(csum.Checksum(out[:h.HeaderLen()], 0))
	return out
}

// TestSplitOptions: the first fragment carries every IPv4 option; the
// later ones only those with the copied flag (RFC 791), the others
// overwritten with NOPs as Linux's ip_options_fragment does, the header's
// length kept; an option list that does not parse is left as it is from
// where it stops; the datagram reassembles to the first fragment's header.
func TestSplitOptions(t *testing.T) {
	ra := []byte{0x94, 4, 0, 0}                                                // router alert: copied
	rr := []byte{0x07, 7, 4, 0, 0, 0, 0}                                       // record route: not copied
	lsrr := []byte{0x83, 7, 4, 1, 2, 3, 4}                                     // loose source route: copied
	opts := append(append(append(append([]byte{}, ra...), rr...), 1), lsrr...) // 4+7+1+7 = 19
	opts = append(opts, 0)                                                     // EOL: 20 bytes
	later := append(append(append(append([]byte{}, ra...), 1, 1, 1, 1, 1, 1, 1), 1), lsrr...)
	later = append(later, 0)
	ip := withOptions(udp4(3000, 5), opts)
	frags := split(t, ip, 1500, 5)
	if len(frags) != 3 {
		t.Fatalf("%d fragments", len(frags))
	}
	for i, f := range frags {
		h := wire.IPv4(f)
		want := later
		if i == 0 {
			want = opts
		}
		if h.HeaderLen() != wire.IPv4MinLen+20 || !bytes.Equal(f[wire.IPv4MinLen:h.HeaderLen()], want) || csum.Checksum(f[:h.HeaderLen()], 0) != 0 {
			t.Fatalf("fragment %d: options %x, want %x", i, f[wire.IPv4MinLen:h.HeaderLen()], want)
		}
	}
	got, _ := feed(t, New(Config{}), frags, []int{2, 1, 0})
	same(t, got, ip)

	for _, c := range []struct {
		name       string
		opts, want []byte
	}{
		{"a length past the header", []byte{0x07, 3, 4, 0x07, 6, 0, 0, 0}, []byte{1, 1, 1, 0x07, 6, 0, 0, 0}},
		{"a length to the header's end", []byte{0x07, 3, 4, 0x07, 5, 0, 0, 0}, []byte{1, 1, 1, 1, 1, 1, 1, 1}},
		{"a length of 1", []byte{0x07, 3, 4, 0x07, 1, 0, 0, 0}, []byte{1, 1, 1, 0x07, 1, 0, 0, 0}},
		{"a type with no room for its length", []byte{0x07, 7, 4, 0, 0, 0, 0, 0x07}, []byte{1, 1, 1, 1, 1, 1, 1, 0x07}},
		{"NOPs then EOL", []byte{1, 1, 0, 0x07, 4, 0, 0, 0}, []byte{1, 1, 0, 0x07, 4, 0, 0, 0}},
		{"a 2-byte option first", []byte{0x0a, 2, 1, 1}, []byte{1, 1, 1, 1}},
		{"a 2-byte option last", []byte{1, 1, 0x0a, 2}, []byte{1, 1, 1, 1}},
		{"an option exactly to the end", []byte{0x07, 8, 4, 0, 0, 0, 0, 0}, []byte{1, 1, 1, 1, 1, 1, 1, 1}},
	} {
		f := split(t, withOptions(udp4(3000, 6), c.opts), 1500, 6)[1]
		if got := f[wire.IPv4MinLen : wire.IPv4MinLen+len(c.opts)]; !bytes.Equal(got, c.want) {
			t.Errorf("%s: later options %x, want %x", c.name, got, c.want)
		}
	}
}
