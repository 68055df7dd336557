package wire

import "testing"

// The ICMP type maps of NAT64 (moved from nat, where they were written
// against their mutants, issue 20).

// Every ICMPv4 error type and code maps to ICMPv6's as RFC 7915 4.2's
// table says, and nothing else is translated: destination unreachable's
// codes 0, 1, 5-8, 11 and 12 are no route (1/0), 2 a parameter problem at
// the next header (4/1, pointer 6), 3 port unreachable (1/4), 4 a Packet
// Too Big of the MTU + 20 (at least 1280), 9, 10 and 13 administratively
// prohibited (1/1), 14, 15 and past them dropped; time exceeded's codes 0
// and 1 kept (3/code), the rest dropped; every other type dropped.
func TestICMP4to6Table(t *testing.T) {
	type out struct {
		t6, c6 uint8
		field  uint32
	}
	want := map[[2]uint8]out{
		{3, 0}: {1, 0, 0}, {3, 1}: {1, 0, 0}, {3, 2}: {4, 1, 6}, {3, 3}: {1, 4, 0},
		{3, 4}: {2, 0, 1280}, // MTU 1000 given: 1020, raised to IPv6's 1280
		{3, 5}: {1, 0, 0}, {3, 6}: {1, 0, 0}, {3, 7}: {1, 0, 0}, {3, 8}: {1, 0, 0},
		{3, 9}: {1, 1, 0}, {3, 10}: {1, 1, 0}, {3, 11}: {1, 0, 0}, {3, 12}: {1, 0, 0}, {3, 13}: {1, 1, 0},
		{11, 0}: {3, 0, 0}, {11, 1}: {3, 1, 0},
	}
	for typ := range 256 {
		for code := range 256 {
			t6, c6, field, ok := ICMP4to6(uint8(typ), uint8(code), 1000)
			w, translated := want[[2]uint8{uint8(typ), uint8(code)}]
			if ok != translated || ok && (out{t6, c6, field} != w) {
				t.Errorf("ICMPv4 %d/%d: %d/%d field %d ok %v, want %+v ok %v", typ, code, t6, c6, field, ok, w, translated)
			}
		}
	}
	// Fragmentation needed's MTU: 20 more in IPv6, never under 1280.
	for _, tc := range []struct {
		mtu  uint16
		want uint32
	}{{0, 1280}, {68, 1280}, {1259, 1280}, {1260, 1280}, {1261, 1281}, {1500, 1520}, {65535, 65555}} {
		if _, _, field, _ := ICMP4to6(3, 4, tc.mtu); field != tc.want {
			t.Errorf("fragmentation needed, MTU %d: Packet Too Big of %d, want %d", tc.mtu, field, tc.want)
		}
	}
}

// Every ICMPv6 error type and code maps to ICMPv4's as RFC 7915 5.2's table
// says: unreachable's codes 0, 2 and 3 are host unreachable (3/1), 1
// administratively prohibited (3/10), 4 port unreachable (3/3), the rest
// dropped; Packet Too Big is fragmentation needed (3/4) with the MTU less
// 20, between 68 and the server side's MTU; time exceeded's codes 0 and 1
// kept (11/code); a parameter problem's unrecognized next header (code 1)
// is protocol unreachable (3/2), its other codes dropped; every other type
// dropped.
func TestICMP6to4Table(t *testing.T) {
	type out struct{ t4, c4 uint8 }
	want := map[[2]uint8]out{
		{1, 0}: {3, 1}, {1, 1}: {3, 10}, {1, 2}: {3, 1}, {1, 3}: {3, 1}, {1, 4}: {3, 3},
		{3, 0}: {11, 0}, {3, 1}: {11, 1},
		{4, 1}: {3, 2},
	}
	for code := range 256 {
		want[[2]uint8{2, uint8(code)}] = out{3, 4} // Packet Too Big has no codes to tell apart
	}
	for typ := range 256 {
		for code := range 256 {
			t4, c4, mtu, ok := ICMP6to4(uint8(typ), uint8(code), 1500, 1500)
			w, translated := want[[2]uint8{uint8(typ), uint8(code)}]
			if ok != translated || ok && (out{t4, c4} != w) {
				t.Errorf("ICMPv6 %d/%d: %d/%d ok %v, want %+v ok %v", typ, code, t4, c4, ok, w, translated)
			}
			if ok && typ != 2 && mtu != 0 {
				t.Errorf("ICMPv6 %d/%d: next-hop MTU %d in an error that has none", typ, code, mtu)
			}
		}
	}
	for _, tc := range []struct {
		field  uint32
		maxMTU int
		want   uint16
	}{
		{1280, 1500, 1260}, {1500, 1500, 1480}, {1520, 1500, 1500}, {9000, 1500, 1500}, {1500, 1400, 1400},
		{0, 1500, 68}, {88, 1500, 68}, {89, 1500, 69}, {0xffffffff, 100000, 0xffff}, {65555, 100000, 65535}, {65556, 100000, 65535},
	} {
		if _, _, mtu, _ := ICMP6to4(2, 0, tc.field, tc.maxMTU); mtu != tc.want {
			t.Errorf("Packet Too Big of %d, server side's MTU %d: next-hop MTU %d, want %d", tc.field, tc.maxMTU, mtu, tc.want)
		}
	}
}
