package nat

import "encoding/binary"

// Checksums are updated incrementally (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
// A connection's address and port rewrite is the same for every packet of one
// direction, so the sum of ~m + m' over the changed words is computed once when
// the connection is created and each packet costs one add and a fold.

// fold reduces a 32-bit one's-complement accumulator to 16 bits.
func fold(s uint32) uint16 {
	s = (s & 0xffff) + (s >> 16)
	s = (s & 0xffff) + (s >> 16)
	return uint16(s)
}

// sumReplace adds to acc the change of replacing old by new, 16 bits at a time.
// old and new have the same, even, length.
func sumReplace(acc uint32, old, new []byte) uint32 {
	for i := 0; i+1 < len(old); i += 2 {
		acc += uint32(^binary.BigEndian.Uint16(old[i:])) + uint32(binary.BigEndian.Uint16(new[i:]))
	}
	return acc
}

// sumReplace16 is sumReplace for one 16-bit value.
func sumReplace16(acc uint32, old, new uint16) uint32 {
	return acc + uint32(^old) + uint32(new)
}

// adjust applies a folded delta to the checksum stored at b[0:2].
func adjust(b []byte, delta uint16) {
	c := binary.BigEndian.Uint16(b)
	binary.BigEndian.PutUint16(b, ^fold(uint32(^c)+uint32(delta)))
}

// adjustUDP is adjust for a UDP checksum, where 0 means "no checksum" (IPv4) and
// a computed 0 is sent as 0xffff (RFC 768).
func adjustUDP(b []byte, delta uint16) {
	c := binary.BigEndian.Uint16(b)
	if c == 0 {
		return
	}
	n := ^fold(uint32(^c) + uint32(delta))
	if n == 0 {
		n = 0xffff
	}
	binary.BigEndian.PutUint16(b, n)
}

// checksum computes the Internet checksum of b from scratch. Only the rare paths
// (ICMP errors) use it; packets of a connection are updated incrementally.
func checksum(b []byte, initial uint32) uint16 {
	s := initial
	n := len(b) &^ 1
	for i := 0; i < n; i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)&1 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return ^fold(s)
}
