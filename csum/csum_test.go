package csum

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// An incremental update at any offset, odd ones included, leaves the same
// checksum as summing the changed bytes from scratch.
func TestPutAtAnyOffset(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		n := 8 + rng.IntN(60)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		initial := rng.Uint32() & 0xffff
		binary.BigEndian.PutUint16(b[0:], 0)
		binary.BigEndian.PutUint16(b[0:], Checksum(b, initial))
		var acc uint32
		for range 1 + rng.IntN(4) {
			if rng.IntN(2) == 0 {
				off := 2 + rng.IntN(n-2-4+1)
				acc = Put32At(acc, b, off, rng.Uint32())
			} else {
				off := 2 + rng.IntN(n-2-2+1)
				acc = Put16At(acc, b, off, uint16(rng.Uint32()))
			}
		}
		Adjust(b[0:], Fold(acc))
		if r := Checksum(b, initial); r != 0 {
			t.Fatalf("% x: residue %#04x after an incremental update", b, r)
		}
	}
}

func FuzzPutAt(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 3, 4, 5, 6, 7}, uint8(3), uint32(0xdeadbeef), uint16(0x1234))
	f.Add([]byte{0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint8(2), uint32(0), uint16(0xffff))
	f.Fuzz(func(t *testing.T, b []byte, off uint8, v32 uint32, initial uint16) {
		if len(b) < 6 {
			return
		}
		o := 2 + int(off)%(len(b)-2-4+1)
		binary.BigEndian.PutUint16(b[0:], 0)
		binary.BigEndian.PutUint16(b[0:], Checksum(b, uint32(initial)))
		Adjust(b[0:], Fold(Put32At(0, b, o, v32)))
		if r := Checksum(b, uint32(initial)); r != 0 {
			t.Fatalf("offset %d: residue %#04x", o, r)
		}
	})
}
