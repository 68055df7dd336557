package nat

import "testing"

// A mode past the known ones prints as a number (and is refused), never
// as a neighbour's name.
func TestClientAddrUnknown(t *testing.T) {
	if got := ClientAddr(4).String(); got != "ClientAddr(4)" {
		t.Fatalf("ClientAddr(4) is %q", got)
	}
	if ClientAddr(4).check(TCP) == nil {
		t.Fatal("ClientAddr(4) allowed")
	}
}

// open's edges: room for 0 bytes is refused; at 0 (before every header)
// and at the frame's end are allowed; the headroom used to its last byte
// is allowed, one byte more refused.
func TestFrameOpenEdges(t *testing.T) {
	mk := func(headroom int) *Frame {
		buf := make([]byte, headroom+10)
		for i := range 10 {
			buf[headroom+i] = byte(i + 1)
		}
		return &Frame{Buf: buf, Off: headroom, Len: 10}
	}
	for _, tc := range []struct {
		name            string
		headroom, at, n int
		ok              bool
		wantOff         int
	}{
		{"0 bytes", 8, 3, 0, false, 8},
		{"at 0", 8, 0, 4, true, 4},
		{"at the end", 8, 10, 4, true, 4},
		{"past the end", 8, 11, 4, false, 8},
		{"before the start", 8, -1, 4, false, 8},
		{"the whole headroom", 8, 3, 8, true, 0},
		{"a byte past the headroom", 8, 3, 9, false, 8},
	} {
		f := mk(tc.headroom)
		if ok := f.open(tc.at, tc.n); ok != tc.ok || f.Off != tc.wantOff {
			t.Errorf("%s: open(%d, %d) %v, off %d; want %v, off %d", tc.name, tc.at, tc.n, ok, f.Off, tc.ok, tc.wantOff)
			continue
		}
		if tc.ok {
			b := f.Bytes()
			// The at bytes moved to the start, the rest stayed put.
			for i := range tc.at {
				if b[i] != byte(i+1) {
					t.Errorf("%s: byte %d is %d", tc.name, i, b[i])
				}
			}
			if tc.at < 10 && b[tc.at+tc.n] != byte(tc.at+1) {
				t.Errorf("%s: the payload moved", tc.name)
			}
		}
	}
}
