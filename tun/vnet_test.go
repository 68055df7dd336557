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
