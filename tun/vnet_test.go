package tun

import (
	"bytes"
	"testing"
)

// The typed header reads the kernel's layout (struct virtio_net_hdr,
// little-endian), and a missing header reads as a whole frame with full
// checksums.
func TestVNetHdrLayout(t *testing.T) {
	// What a TAP hands over for a TSO super-frame with a partial checksum:
	// flags NEEDS_CSUM, gso TCPv4, hdr_len 66, gso_size 1448, csum_start
	// 34, csum_offset 16.
	raw := []byte{1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0}
	h := VNetHdr(raw)
	if !h.NeedsCsum() || h.DataValid() || h.GSOType() != VNetGSOTCPv4 || h.HdrLen() != 66 || h.GSOSize() != 1448 ||
		h.CsumStart() != 34 || h.CsumOffset() != 16 {
		t.Fatalf("read %+v", []any{h.Flags(), h.GSOType(), h.HdrLen(), h.GSOSize(), h.CsumStart(), h.CsumOffset()})
	}
	built := make(VNetHdr, VNetHdrLen)
	built.SetNeedsCsum(34, 16)
	built.SetGSO(VNetGSOTCPv4, 66, 1448)
	if !bytes.Equal(built, raw) {
		t.Fatalf("built % x, want % x", []byte(built), raw)
	}
	h.Clear()
	if !bytes.Equal(raw, make([]byte, VNetHdrLen)) {
		t.Fatalf("cleared % x", raw)
	}
	for _, none := range []VNetHdr{nil, VNetHdr(raw[:4])} {
		if none.NeedsCsum() || none.DataValid() || none.GSOType() != VNetGSONone || none.CsumStart() != 0 || none.GSOSize() != 0 {
			t.Fatalf("a missing or short header reads as set: % x", []byte(none))
		}
		none.Clear() // no header: nothing to clear, and no panic
	}
	if !VNetHdr([]byte{VNetDataValid, 0, 0, 0, 0, 0, 0, 0, 0, 0}).DataValid() {
		t.Fatal("DATA_VALID")
	}
}

// TestFinishChecksumBounds: FinishChecksum finishes a checksum whose field
// ends at the frame's last byte and leaves alone one whose field would end
// past it (a virtio-net header is outside input too).
func TestFinishChecksumBounds(t *testing.T) {
	for _, c := range []struct {
		start, off int
		done       bool
	}{{10, 8, true}, {11, 8, false}, {10, 9, false}, {0, 18, true}, {0, 19, false}} {
		frame := make([]byte, 20)
		frame[19] = 1 // something to sum
		h := make(VNetHdr, VNetHdrLen)
		h.SetNeedsCsum(c.start, c.off)
		h.FinishChecksum(frame)
		if done := !bytes.Equal(frame, append(make([]byte, 19), 1)); done != c.done {
			t.Fatalf("start %d off %d: finished %v, want %v (% x)", c.start, c.off, done, c.done, frame)
		}
	}
}
