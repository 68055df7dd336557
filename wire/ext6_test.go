package wire

import "testing"

// ext6Seeds are IPv6 payloads that start with extension headers: good
// ones, and ones cut short at each length check.
var ext6Seeds = []struct {
	next uint8
	b    []byte
}{
	{ProtoTCP, nil},
	{IP6HopByHop, []byte{ProtoTCP, 0, 1, 4, 0, 0, 0, 0}},
	{IP6DestOpts, []byte{IP6Routing, 0, 1, 4, 0, 0, 0, 0, ProtoUDP, 0, 0, 0, 0, 0, 0, 0}},
	{IP6Routing, []byte{ProtoTCP, 0, 0, 1, 0, 0, 0, 0}},                 // segments left
	{IP6Fragment, []byte{ProtoTCP, 0, 0, 0x10, 0, 0, 0, 1, 1, 2, 3, 4}}, // a later fragment
	{IP6AH, []byte{ProtoTCP, 1, 0, 0, 0, 0, 0, 0}},
	{IP6HopByHop, []byte{ProtoTCP, 1, 0, 0, 0, 0, 0, 0}}, // says 16 bytes, has 8
	{IP6HopByHop, []byte{ProtoTCP, 0, 0}},                // shorter than any header
	{IP6Fragment, []byte{ProtoTCP, 0, 0}},
	{IP6HopByHop, []byte{IP6HopByHop, 0, 0, 0, 0, 0, 0, 0, IP6HopByHop, 0, 0, 0, 0, 0, 0, 0, IP6HopByHop, 0, 0, 0, 0, 0, 0, 0,
		IP6HopByHop, 0, 0, 0, 0, 0, 0, 0, IP6HopByHop, 0, 0, 0, 0, 0, 0, 0, IP6HopByHop, 0, 0, 0, 0, 0, 0, 0,
		IP6HopByHop, 0, 0, 0, 0, 0, 0, 0, IP6HopByHop, 0, 0, 0, 0, 0, 0, 0, ProtoTCP, 0, 0, 0, 0, 0, 0, 0}}, // more than IP6MaxExt
	{IP6NoNext, []byte{1, 2, 3}},
}

// TestWalk6 pins what the walk reports for each seed.
func TestWalk6(t *testing.T) {
	want := []Ext6{
		{Proto: ProtoTCP, L4: 0},
		{Proto: ProtoTCP, L4: 8},
		{Proto: ProtoUDP, L4: 16},
		{Proto: ProtoTCP, L4: 8, Ext: true},
		{Proto: ProtoTCP, L4: 8, Frag: true},
		{Proto: IP6AH, L4: 0, Ext: true},
		{Bad: true},
		{Bad: true},
		{Bad: true},
		{Proto: IP6HopByHop, L4: 64, Ext: true},
		{Proto: IP6NoNext, L4: 0},
	}
	for i, s := range ext6Seeds {
		if w := Walk6(s.b, s.next, 0); w != want[i] {
			t.Errorf("seed %d: %+v, want %+v", i, w, want[i])
		}
	}
	// The offset is where the walk starts, and out of range is bad.
	b := append(make([]byte, IPv6Len), ext6Seeds[1].b...)
	if w := Walk6(b, IP6HopByHop, IPv6Len); w != (Ext6{Proto: ProtoTCP, L4: IPv6Len + 8}) {
		t.Fatalf("at %d: %+v", IPv6Len, w)
	}
	// Cut short past a nonzero offset: every length is counted from off.
	for _, c := range []struct {
		name string
		next uint8
		tail []byte
		want Ext6
	}{
		{"one byte of a header", IP6HopByHop, []byte{ProtoTCP}, Ext6{Bad: true}},
		{"a header longer than what is left", IP6DestOpts, []byte{ProtoTCP, 1, 0, 0, 0, 0, 0, 0}, Ext6{Bad: true}},
		{"a fragment header cut short", IP6Fragment, []byte{ProtoTCP, 0, 0, 0, 0, 0, 0}, Ext6{Bad: true}},
		{"a fragment header and nothing after", IP6Fragment, []byte{ProtoTCP, 0, 0, 0, 0, 0, 0, 1}, Ext6{Proto: ProtoTCP, L4: IPv6Len + 8, Frag: true}},
	} {
		b := append(make([]byte, IPv6Len), c.tail...)
		if w := Walk6(b, c.next, IPv6Len); w != c.want {
			t.Errorf("%s at %d: %+v, want %+v", c.name, IPv6Len, w, c.want)
		}
	}
	if w := Walk6(b, IP6HopByHop, len(b)+1); !w.Bad {
		t.Fatal("an offset past the packet is not bad")
	}
	if w := Walk6(b, IP6HopByHop, -1); !w.Bad {
		t.Fatal("a negative offset is not bad")
	}
}

// FuzzWalk6: any bytes, any first header, any offset: the walk never
// panics, and what it reports lies inside the packet: the transport header
// starts between the offset and the end, each header crossed was whole,
// and a walk that is neither bad nor stopped (Ext, Frag) ends on a header
// that is not one it walks.
func FuzzWalk6(f *testing.F) {
	for _, s := range ext6Seeds {
		f.Add(s.b, s.next, 0)
	}
	f.Add(make([]byte, 60), IP6DestOpts, 40)
	f.Add([]byte{}, IP6HopByHop, 1)
	f.Fuzz(func(t *testing.T, b []byte, next uint8, off int) {
		w := Walk6(b, next, off)
		if w.Bad {
			return
		}
		if w.L4 < off || w.L4 > len(b) {
			t.Fatalf("L4 %d outside [%d, %d]", w.L4, off, len(b))
		}
		// Walk again by hand: every header between off and L4 fits.
		at, n := off, next
		for at < w.L4 {
			if n == IP6Fragment {
				if at+8 != w.L4 || !w.Frag {
					t.Fatalf("fragment header at %d, L4 %d", at, w.L4)
				}
				return
			}
			if n != IP6HopByHop && n != IP6DestOpts && n != IP6Routing {
				t.Fatalf("crossed header %d at %d", n, at)
			}
			l := (int(b[at+1]) + 1) * 8
			if at+l > len(b) {
				t.Fatalf("header at %d of %d bytes runs past %d", at, l, len(b))
			}
			n, at = b[at], at+l
		}
		if at != w.L4 || n != w.Proto {
			t.Fatalf("walk ends at %d on %d, reported %d on %d", at, n, w.L4, w.Proto)
		}
		if !w.Ext && !w.Frag && (n == IP6HopByHop || n == IP6DestOpts || n == IP6Routing || n == IP6Fragment || n == IP6AH) {
			t.Fatalf("stopped on extension header %d without Ext", n)
		}
	})
}
