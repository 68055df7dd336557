package tcprw

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/tapvs/tapvs/csum"
)

// ClientEdge: with n bytes inserted before the client's first byte (start,
// in the client's space) and the client's whole offset sub, a server's
// acknowledgement a is a - sub, except that one of the inserted bytes (from
// start-n up to start, exclusive, once less sub) is of nothing the client
// sent and maps to start. Across the 2^32 wrap too.
func TestClientEdge(t *testing.T) {
	for _, tc := range []struct {
		a, sub, start, n, want uint32
	}{
		{1100, 100, 1000, 30, 1000}, // the client's first byte
		{1101, 100, 1000, 30, 1001},
		{1099, 100, 1000, 30, 1000}, // the header's last byte
		{1071, 100, 1000, 30, 1000},
		{1070, 100, 1000, 30, 1000}, // the header's first byte: nothing acknowledged yet
		{1069, 100, 1000, 30, 969},  // before the header: left as it is
		{1099, 100, 1000, 0, 999},   // nothing inserted: a - sub
		{1070, 100, 1000, 0, 970},
		{5, 0x20, 0xfffffff0, 0x20, 0xfffffff0},          // 5 - 0x20 = start - 0xb: inside, across the wrap
		{0x10, 0x20, 0xfffffff0, 0x20, 0xfffffff0},       // a - sub = start: the client's first byte
		{0x11, 0x20, 0xfffffff0, 0x20, 0xfffffff1},       // past it, across the wrap
		{0xffffffff, 0x20, 0xfffffff0, 0x20, 0xfffffff0}, // a - sub = start - 0x11
	} {
		if got := ClientEdge(tc.a, tc.sub, tc.start, tc.n); got != tc.want {
			t.Errorf("ClientEdge(%#x, sub %#x, start %#x, n %d) = %#x, want %#x", tc.a, tc.sub, tc.start, tc.n, got, tc.want)
		}
	}
}

// ClientSACK maps each SACK block's edges with ClientEdge; a block inside
// the inserted bytes is taken out, the rest move up and NOPs fill the end
// (the option's length shrinking); with none left the option is all NOPs;
// with nothing inserted no block goes. The checksum change it returns
// leaves a checksum that verifies from scratch.
func TestClientSACK(t *testing.T) {
	const sub, start = 100, 1000
	block := func(l, r uint32) []byte {
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, l), r)
	}
	sack := func(blocks ...[]byte) []byte {
		o := []byte{5, byte(2 + 8*len(blocks))}
		for _, b := range blocks {
			o = append(o, b...)
		}
		return o
	}
	nops := func(k int) []byte { return bytes.Repeat([]byte{1}, k) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		n    uint32
		opt  []byte
		want []byte
	}{
		{"middle block inside the header", 30,
			sack(block(1150, 1160), block(1075, 1090), block(1200, 1300)),
			cat(sack(block(1050, 1060), block(1100, 1200)), nops(8))},
		{"first block inside the header", 30,
			sack(block(1070, 1100), block(1200, 1300)),
			cat(sack(block(1100, 1200)), nops(8))},
		{"every block inside the header", 30,
			sack(block(1070, 1080), block(1090, 1099)),
			nops(18)},
		{"none inside", 30,
			sack(block(1100, 1110), block(1120, 1130), block(1140, 1150), block(1160, 1170)),
			sack(block(1000, 1010), block(1020, 1030), block(1040, 1050), block(1060, 1070))},
		{"nothing inserted, an empty block kept", 0,
			sack(block(1100, 1100), block(1075, 1090)),
			sack(block(1000, 1000), block(975, 990))},
	} {
		tcp := cat(make([]byte, 20), nops(2), tc.opt, nops(2))
		tcp[12] = byte(len(tcp)/4) << 4
		const initial = 0x1234
		binary.BigEndian.PutUint16(tcp[16:], csum.Checksum(tcp, initial))
		acc := ClientSACK(tcp, 22, len(tc.opt), 0, sub, start, tc.n)
		csum.Adjust(tcp[16:], csum.Fold(acc))
		if got := tcp[22 : 22+len(tc.opt)]; !bytes.Equal(got, tc.want) {
			t.Errorf("%s: option % x, want % x", tc.name, got, tc.want)
		}
		if r := csum.Checksum(tcp, initial); r != 0 {
			t.Errorf("%s: checksum residue %#04x", tc.name, r)
		}
	}
}
