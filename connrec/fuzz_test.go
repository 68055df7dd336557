package connrec

import (
	"bytes"
	"testing"
)

// FuzzDecode: Decode never panics, refuses a record whole (nothing
// returned), and a record it accepts re-encodes to the bytes it read,
// without allocating. Seeds: every kind of record (samples), one with
// unknown skippable extensions.
func FuzzDecode(f *testing.F) {
	for _, r := range samples() {
		f.Add(r.AppendTo(nil))
	}
	r := samples()["synproxy"]
	b := r.AppendTo(nil)
	b = append(b, 0x80, 2, 9, 9, 0xa0, 0, 0, 0)
	b[3] += 8
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := Decode(b)
		if err != nil {
			if n != 0 || r != (Record{}) {
				t.Fatalf("refused (%v) but returned %d bytes", err, n)
			}
			return
		}
		if n > len(b) || n > MaxLen || n != r.Len() {
			t.Fatalf("n %d, Len %d, input %d", n, r.Len(), len(b))
		}
		if re := r.AppendTo(nil); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded\n %x\nfrom %x", re, b[:n])
		}
		if err := r.Check(); err != nil {
			t.Fatalf("Check of a decoded record: %v", err)
		}
		if a := testing.AllocsPerRun(1, func() { _, _, _ = Decode(b) }); a != 0 {
			t.Fatalf("Decode allocated %v times", a)
		}
	})
}
