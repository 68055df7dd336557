package tcpopt

import (
	"bytes"
	"testing"
)

// TestAppenders pins each option's bytes and that every appended option
// reads back through Walk whole (which steps over NOPs).
func TestAppenders(t *testing.T) {
	var b []byte
	b = AppendMSS(b, 1460)
	b = AppendNOPs(b, 1)
	b = AppendWindowScale(b, 7)
	b = AppendSACKPermitted(b)
	b = AppendTimestamps(b, 0x01020304, 0x05060708)
	b = AppendTOA(b, 0x1234, []byte{10, 0, 0, 1})
	b = AppendTOA(b, 80, bytes.Repeat([]byte{0xfe}, 16))
	want := []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8,
		254, 8, 0x12, 0x34, 10, 0, 0, 1, 254, 20, 0, 80}
	want = append(want, bytes.Repeat([]byte{0xfe}, 16)...)
	if !bytes.Equal(b, want) {
		t.Fatalf("% x\nwant % x", b, want)
	}
	kinds := []byte{}
	for w := Walk(b); ; {
		o, ok := w.Next()
		if !ok {
			if w.Malformed() {
				t.Fatal("appended options do not walk")
			}
			break
		}
		kinds = append(kinds, o.Kind)
	}
	if !bytes.Equal(kinds, []byte{MSS, WindowScale, SACKPermitted, Timestamps, TOA, TOA}) {
		t.Fatalf("kinds %v", kinds)
	}
}
