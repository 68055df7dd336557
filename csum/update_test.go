package csum

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// Replace of an address (4 or 16 bytes) anywhere at an even offset leaves
// the checksum a recount gives.
func TestReplaceMatchesRecount(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range 5000 {
		n := 4
		if i%2 == 1 {
			n = 16
		}
		b := make([]byte, 2+n+2*rng.IntN(10))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		initial := rng.Uint32() & 0xffff
		binary.BigEndian.PutUint16(b[0:], 0)
		binary.BigEndian.PutUint16(b[0:], Checksum(b, initial))
		off := 2 + 2*rng.IntN((len(b)-2-n)/2+1)
		old := append([]byte(nil), b[off:off+n]...)
		for j := range n {
			b[off+j] = byte(rng.Uint32())
		}
		Adjust(b[0:], Fold(Replace(0, old, b[off:off+n])))
		if r := Checksum(b, initial); r != 0 {
			t.Fatalf("% x: residue %#04x after Replace at %d", b, r, off)
		}
	}
}

// AdjustUDP keeps a UDP checksum of 0 (none was sent) and sends a computed
// 0 as 0xffff (RFC 768); otherwise it is Adjust.
func TestAdjustUDP(t *testing.T) {
	for _, tc := range []struct{ c, delta, want, plain uint16 }{
		{0x1234, 0x0001, 0x1233, 0x1233},
		{0x1234, 0x1234, 0xffff, 0x0000}, // the new sum is 0xffff: a checksum of 0
		{0x0000, 0x1234, 0x0000, 0xedcb}, // no checksum: left alone
		{0xffff, 0x0000, 0xffff, 0xffff},
	} {
		b := binary.BigEndian.AppendUint16(nil, tc.c)
		AdjustUDP(b, tc.delta)
		p := binary.BigEndian.AppendUint16(nil, tc.c)
		Adjust(p, tc.delta)
		if got, plain := binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(p); got != tc.want || plain != tc.plain {
			t.Errorf("%#04x + %#04x: AdjustUDP %#04x, Adjust %#04x; want %#04x and %#04x", tc.c, tc.delta, got, plain, tc.want, tc.plain)
		}
	}
}

// PseudoV4 sums the pseudo-header's 12 bytes as RFC 793 lays them out.
func TestPseudoV4Layout(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for range 5000 {
		var h [12]byte
		for j := range 8 {
			h[j] = byte(rng.Uint32())
		}
		proto, length := uint8(rng.Uint32()), int(rng.Uint32()&0xffff)
		h[9] = proto
		binary.BigEndian.PutUint16(h[10:], uint16(length))
		if got, want := Fold(PseudoV4(h[0:4], h[4:8], proto, length)), sum16(h[:], 0); got != want && got^want != 0xffff {
			t.Fatalf("length %d, protocol %d: %#04x, want %#04x", length, proto, got, want)
		}
	}
}
