package takeover

import (
	"bytes"
	"net/netip"
	"testing"
)

// The old process's messages are outside input to the new one (and HELLO
// the other way): each parser refuses what it cannot check whole, never
// panics, and what it accepts encodes back to the same bytes.
func FuzzMessages(f *testing.F) {
	qs := []Queue{{Side: 0, Index: 0, VNetHdrLen: 10, MAC: [6]byte{2, 1, 2, 3, 4, 5}, Name: "tapvs-c"},
		{Side: 1, Index: 0, VNetHdrLen: 10, MAC: [6]byte{2, 1, 2, 3, 4, 6}, Name: "tapvs-s"}}
	good, _ := appendQueues(nil, qs)
	f.Add(good, 2)
	f.Add(appendHello(nil, 1, 1), 0)
	f.Add([]byte{msgRecords, 0, 3, 'a', 'b', 'c', 0, 1, 'd'}, 0)
	f.Add([]byte{msgRecords, 0, 9, 'a'}, 0)
	f.Add(good[:len(good)-3], 2)
	f.Add([]byte{msgQueues, 200}, 200)
	f.Add(append([]byte{msgNextHops}, append(netip.MustParseAddr("::ffff:10.20.1.2").AsSlice(), 2, 0, 0, 0, 0, 1)...), 0)
	f.Add(append([]byte{msgKeys}, make([]byte, 68)...), 0)
	f.Fuzz(func(t *testing.T, m []byte, fds int) {
		if q, err := parseQueues(m, fds); err == nil {
			back, err := appendQueues(nil, q)
			if err != nil || !bytes.Equal(back, m) {
				t.Fatalf("QUEUES %x accepted as %+v, encodes to %x (%v)", m, q, back, err)
			}
		}
		if k, err := parseKeys(m, MaxVersion); err == nil && (len(k) == 0 || len(k) > MaxKeys || !bytes.Equal(append([]byte{msgKeys}, k...), m)) {
			t.Fatalf("KEYS %x accepted as %x", m, k)
		}
		if lo, hi, err := parseHello(m); err == nil && !bytes.Equal(appendHello(nil, lo, hi), m) {
			t.Fatalf("HELLO %x accepted as %d..%d", m, lo, hi)
		}
		if len(m) > 0 {
			parseNextHops(m, func(h NextHop) {
				if !h.Addr.IsGlobalUnicast() {
					t.Fatalf("next hop %v passed", h.Addr)
				}
			})
			total := 0
			parseRecords(m, 64, func(r []byte) error {
				if len(r) == 0 || len(r) > 64 {
					t.Fatalf("a record of %d bytes passed", len(r))
				}
				total += 2 + len(r)
				return nil
			})
			if total > len(m)-1 {
				t.Fatalf("%d bytes of records in a %d-byte message", total, len(m))
			}
		}
	})
}
