package netstack

import (
	"encoding/binary"
	"testing"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
)

// FuzzFinishChecksum: the virtio-net header's checksum start and offset come
// with the frame; whatever they say, finishing a partial checksum stays
// inside the frame, and when they point inside it the sum it covers then
// verifies against the pseudo-header sum the field held.
func FuzzFinishChecksum(f *testing.F) {
	f.Add([]byte{tun.VNetNeedsCsum, 0, 0, 0, 0, 0, 34, 0, 16, 0}, make([]byte, 74))
	f.Add([]byte{tun.VNetNeedsCsum, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, make([]byte, 60))
	f.Fuzz(func(t *testing.T, vnet, frame []byte) {
		if len(vnet) < tun.VNetHdrLen {
			return
		}
		h := tun.VNetHdr(vnet[:tun.VNetHdrLen])
		start, off := h.CsumStart(), h.CsumOffset()
		covered := h.NeedsCsum() && start+off+2 <= len(frame) && off&1 == 0
		var partial uint16
		if covered {
			partial = binary.BigEndian.Uint16(frame[start+off:])
		}
		finishChecksum(h, frame)
		// The field held the pseudo-header's sum; finished, the bytes it
		// covers sum to it again: with the pseudo-header, to zero.
		if c := csum.Checksum(frame[min(start, len(frame)):], 0); covered && c != partial && c^partial != 0xffff {
			t.Fatalf("start %d offset %d: residue %#04x, want the pseudo-header sum %#04x", start, off, c, partial)
		}
	})
}
