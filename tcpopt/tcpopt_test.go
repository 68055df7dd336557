package tcpopt

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/tapvs/tapvs/csum"
)

func TestWalkLayouts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []byte
		kinds []byte
		bad   bool
	}{
		{"empty", nil, nil, false},
		{"Linux SYN", []byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}, []byte{MSS, SACKPermitted, Timestamps, WindowScale}, false},
		{"NOP NOP TS", []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, []byte{Timestamps}, false},
		{"NOP TS NOP (odd offset)", []byte{1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1}, []byte{Timestamps}, false},
		{"EOL then junk is padding", []byte{1, 0, 8, 1, 2}, nil, false},
		{"unknown kind, any length", []byte{254, 8, 1, 2, 3, 4, 5, 6}, []byte{254}, false},
		{"4 SACK blocks", append([]byte{5, 34}, make([]byte, 32)...), []byte{SACK}, false},
		{"1 SACK block", []byte{1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2}, []byte{SACK}, false},
		{"SACK of no block", []byte{1, 1, 5, 2}, nil, true},
		{"TS length 8", []byte{8, 8, '0', '0', '0', '0', '0', '0'}, nil, true},
		{"TS length 2", []byte{1, 1, 8, 2}, nil, true},
		{"TS past the end", []byte{1, 1, 8, 10, 0, 0}, nil, true},
		{"SACK length 6", []byte{1, 1, 5, 6, 0, 0, 0, 0}, nil, true},
		{"SACK length 11", []byte{5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, true},
		{"SACK of 5 blocks", append([]byte{5, 42}, make([]byte, 40)...), nil, true},
		{"MSS length 3", []byte{2, 3, 5, 1}, nil, true},
		{"length 0", []byte{30, 0, 1, 2}, nil, true},
		{"length 1", []byte{30, 1, 1, 2}, nil, true},
		{"kind without length", []byte{1, 1, 1, 30}, nil, true},
		{"good then bad", []byte{2, 4, 5, 0xb4, 3, 9}, []byte{MSS}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var kinds []byte
			w := Walk(tc.opts)
			for {
				o, ok := w.Next()
				if !ok {
					break
				}
				kinds = append(kinds, o.Kind)
			}
			if !bytes.Equal(kinds, tc.kinds) || w.Malformed() != tc.bad || Valid(tc.opts) == tc.bad {
				t.Fatalf("kinds %v malformed %v, want %v %v", kinds, w.Malformed(), tc.kinds, tc.bad)
			}
			if _, ok := Parse(tc.opts); ok == tc.bad {
				t.Fatalf("Parse ok %v on a list malformed=%v", ok, tc.bad)
			}
		})
	}
}

// Parse reads each option's value, and reports an absent window scale as -1
// and an absent MSS as 0.
func TestParseReadsValues(t *testing.T) {
	p, ok := Parse([]byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7})
	if want := (Parsed{MSS: 1460, WScale: 7, SACKPerm: true, TS: true, TSval: 1, TSecr: 2}); !ok || p != want {
		t.Fatalf("Linux SYN: %+v %v, want %+v", p, ok, want)
	}
	p, ok = Parse([]byte{1, 1, 8, 10, 0xff, 0, 0, 1, 0x80, 0, 0, 2})
	if want := (Parsed{WScale: -1, TS: true, TSval: 0xff000001, TSecr: 0x80000002}); !ok || p != want {
		t.Fatalf("timestamps only: %+v %v, want %+v", p, ok, want)
	}
	if p, ok := Parse(nil); !ok || p != (Parsed{WScale: -1}) {
		t.Fatalf("no options: %+v %v", p, ok)
	}
}

func TestParseTakesTheLastOfTwo(t *testing.T) {
	p, ok := Parse([]byte{2, 4, 1, 0, 2, 4, 5, 0xb4, 3, 3, 20, 1})
	if !ok || p.MSS != 1460 || p.WScale != 14 || p.TS || p.SACKPerm {
		t.Fatalf("%+v %v", p, ok)
	}
}

// FuzzWalk: whatever the bytes, the walk stays inside them, yields options
// in order without overlap, each of a length its kind allows, and skips
// only NOPs between them; a walk that ends early without Malformed ended at
// an EOL.
func FuzzWalk(f *testing.F) {
	for _, s := range [][]byte{
		{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7},
		{1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1},
		{8, 8, '0', '0', '0', '0', '0', '0'},
		{1, 1, 8, 2},
		{5, 34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9},
		{254, 8, 0, 80, 10, 0, 0, 1},
		{1, 0, 8, 1},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, opts []byte) {
		if len(opts) > MaxLen {
			opts = opts[:MaxLen]
		}
		w := Walk(opts)
		next := 0
		for {
			o, ok := w.Next()
			if !ok {
				break
			}
			for i := next; i < o.Off; i++ {
				if opts[i] != NOP {
					t.Fatalf("skipped byte %d (%d) is not a NOP", i, opts[i])
				}
			}
			if o.Off < next || o.Len < 2 || o.Off+o.Len > len(opts) || opts[o.Off] != o.Kind || int(opts[o.Off+1]) != o.Len || !lengthFits(o.Kind, o.Len) {
				t.Fatalf("option %+v after %d in % x", o, next, opts)
			}
			next = o.Off + o.Len
		}
		if !w.Malformed() {
			i := next
			for i < len(opts) && opts[i] == NOP {
				i++
			}
			if i < len(opts) && opts[i] != EOL {
				t.Fatalf("walk ended at %d (%d) without EOL or Malformed in % x", i, opts[i], opts)
			}
		}
		if p, ok := Parse(opts); ok != !w.Malformed() || ok && p.WScale > 14 {
			t.Fatalf("Parse %+v %v, walk malformed %v", p, ok, w.Malformed())
		}
	})
}

// ModuleTOA reads as the Linux toa module does: the first kind-254 option
// of length 8 or 20, stepping over every other option by its length (a
// malformed MSS too), nothing after an EOL or at a bad length.
func TestModuleTOA(t *testing.T) {
	toa4 := []byte{254, 8, 1, 2, 10, 0, 0, 1}
	toa6 := append([]byte{254, 20, 1, 2}, make([]byte, 16)...)
	for _, c := range []struct {
		name string
		opts []byte
		want []byte
	}{
		{"none", nil, nil},
		{"first", toa4, toa4},
		{"IPv6", toa6, toa6},
		{"after NOPs", append([]byte{1, 1}, toa4...), toa4},
		{"after a long MSS", append([]byte{2, 8, 0, 0, 0, 0, 0, 0}, toa4...), toa4},
		{"after an unknown kind", append([]byte{99, 3, 0}, toa4...), toa4},
		{"the first of two", append(append([]byte{}, toa6...), toa4...), toa6},
		{"other lengths of 254 stepped over", append([]byte{254, 4, 0, 0}, toa4...), toa4},
		{"an IPv6 TOA of kind 253", append([]byte{253, 20}, toa6[2:]...), append([]byte{253, 20}, toa6[2:]...)},
		{"a vtoa", append([]byte{252, 20}, toa6[2:]...), append([]byte{252, 20}, toa6[2:]...)},
		{"a TOA_VIP", []byte{250, 8, 0, 80, 10, 0, 0, 1}, []byte{250, 8, 0, 80, 10, 0, 0, 1}},
		{"a v6vtoa", append([]byte{249, 40}, make([]byte, 38)...), append([]byte{249, 40}, make([]byte, 38)...)},
		{"253 of another length stepped over", append([]byte{253, 8, 0, 0, 0, 0, 0, 0}, toa4...), toa4},
		{"after an EOL", append([]byte{0}, toa4...), nil},
		{"after a length below 2", append([]byte{99, 1}, toa4...), nil},
		{"cut short", toa4[:7], nil},
		{"cut short after a NOP", append([]byte{1}, toa4[:7]...), nil},
		{"after a SACK-permitted (length 2)", append([]byte{4, 2}, toa4...), toa4},
		{"a kind with no length", []byte{1, 99}, nil},
	} {
		got, ok := ModuleTOA(c.opts)
		if ok != (c.want != nil) || string(got) != string(c.want) {
			t.Errorf("%s: %x %v, want %x", c.name, got, ok, c.want)
		}
	}
}

// Blank writes NOPs over exactly the option, at even and odd offsets, and
// the checksum change it returns is the one a recount gives; ForgedTOA
// names the TOA lengths only.
func TestBlankAndForgedTOA(t *testing.T) {
	for _, at := range []int{0, 1, 2, 3} {
		tcp := make([]byte, 20+4+8+4)
		for i := range tcp {
			tcp[i] = byte(i*37 + 11)
		}
		copy(tcp[20+at:], []byte{254, 8, 1, 2, 3, 4, 5, 6})
		before := csum.Checksum(tcp, 0)
		o := Option{Kind: 254, Off: at, Len: 8}
		acc := Blank(tcp, o, 0)
		for i := 20 + at; i < 20+at+8; i++ {
			if tcp[i] != NOP {
				t.Fatalf("offset %d: byte %d is %d, not a NOP", at, i, tcp[i])
			}
		}
		if tcp[20+at+8] != byte((20+at+8)*37+11) || at > 0 && tcp[20+at-1] != byte((20+at-1)*37+11) {
			t.Fatalf("offset %d: a byte outside the option changed", at)
		}
		b := make([]byte, 2)
		binary.BigEndian.PutUint16(b, before)
		csum.Adjust(b, csum.Fold(acc))
		if got, want := binary.BigEndian.Uint16(b), csum.Checksum(tcp, 0); got != want {
			t.Fatalf("offset %d: adjusted checksum %#04x, recount %#04x", at, got, want)
		}
	}
	for l, want := range map[int]bool{8: true, 20: true, 4: false, 10: false} {
		if ForgedTOA(Option{Kind: TOA, Len: l}) != want || ForgedTOA(Option{Kind: Timestamps, Len: l}) {
			t.Errorf("ForgedTOA of length %d", l)
		}
	}
	for _, o := range []Option{{Kind: 253, Len: 20}, {Kind: 250, Len: 8}, {Kind: 252, Len: 20}, {Kind: 249, Len: 40}} {
		if !ForgedTOA(o) {
			t.Errorf("ForgedTOA(%d/%d) false: a toa build reads it", o.Kind, o.Len)
		}
	}
	for _, o := range []Option{{Kind: 253, Len: 8}, {Kind: 250, Len: 20}, {Kind: 251, Len: 8}, {Kind: 249, Len: 20}} {
		if ForgedTOA(o) {
			t.Errorf("ForgedTOA(%d/%d) true: no toa build reads it", o.Kind, o.Len)
		}
	}
}
