package nat

import "testing"

// The search looks at the word its cursor is in twice: from the cursor up
// first, and last, below the cursor. A port free only below the cursor in
// that word is found (not reported exhausted), and only after every other
// word has been looked at.
func TestPortMapCursorsOwnWord(t *testing.T) {
	for _, tc := range []struct {
		name        string
		span, start uint32
		free        []uint32 // given back once every port is held
		want        []uint32 // taken in this order, then none
	}{
		{"one word, below the cursor", 64, 10, []uint32{3}, []uint32{3}},
		{"one word, below the cursor, bit 0", 64, 10, []uint32{0}, []uint32{0}},
		{"one word, just below the cursor", 64, 10, []uint32{9}, []uint32{9}},
		{"one word, at and below the cursor", 64, 10, []uint32{10, 3}, []uint32{10, 3}},
		{"three words, below the cursor in the middle one", 130, 70, []uint32{66}, []uint32{66}},
		{"three words, other words first", 130, 70, []uint32{66, 129, 5}, []uint32{129, 5, 66}},
		{"a partial last word", 70, 68, []uint32{65, 2}, []uint32{2, 65}},
	} {
		m := newPortMap(tc.span, tc.start)
		for i := range tc.span {
			if got, ok := m.take(); !ok || got != (tc.start+i)%tc.span {
				t.Fatalf("%s: take %d: %d %v", tc.name, i, got, ok)
			}
		}
		for _, p := range tc.free {
			m.put(p)
		}
		for _, want := range tc.want {
			if got, ok := m.take(); !ok || got != want {
				t.Fatalf("%s: took %d %v, want %d", tc.name, got, ok, want)
			}
		}
		if got, ok := m.take(); ok {
			t.Fatalf("%s: took %d of a full map", tc.name, got)
		}
	}
}

// A map smaller than a word, and of exactly one word, hands out each port
// once and never the bits past its range.
func TestPortMapSmallRanges(t *testing.T) {
	for _, span := range []uint32{1, 2, 63, 64, 65} {
		m := newPortMap(span, span-1)
		seen := map[uint32]bool{}
		for range span {
			p, ok := m.take()
			if !ok || p >= span || seen[p] {
				t.Fatalf("span %d: took %d %v after %v", span, p, ok, seen)
			}
			seen[p] = true
		}
		if p, ok := m.take(); ok {
			t.Fatalf("span %d: took %d of a full map", span, p)
		}
	}
}
