// Package csum updates Internet checksums (RFC 1071) incrementally (RFC 1624).
//
// A rewrite that replaces 16-bit words m by m' changes a checksum HC to
// HC' = ~(~HC + ~m + m'). Delta accumulates ~m + m' over every replaced word
// of a packet (addresses, ports, sequence numbers, options) in a uint32, so a
// packet's checksum is touched once however many fields change.
package csum

import (
	"encoding/binary"
	"math/bits"
)

// Fold reduces a 32-bit one's-complement accumulator to 16 bits.
func Fold(s uint32) uint16 {
	s = (s & 0xffff) + (s >> 16)
	s = (s & 0xffff) + (s >> 16)
	return uint16(s)
}

// Replace adds to acc the change of replacing old by new, 16 bits at a time.
// old and new have the same even length.
func Replace(acc uint32, old, new []byte) uint32 {
	for i := 0; i+1 < len(old); i += 2 {
		acc += uint32(^binary.BigEndian.Uint16(old[i:])) + uint32(binary.BigEndian.Uint16(new[i:]))
	}
	return acc
}

// Replace16 adds the change of one 16-bit word.
func Replace16(acc uint32, old, new uint16) uint32 {
	return acc + uint32(^old) + uint32(new)
}

// Replace32 adds the change of one 32-bit word (a sequence number, a
// timestamp), as two 16-bit words.
func Replace32(acc uint32, old, new uint32) uint32 {
	return acc + uint32(^uint16(old>>16)) + uint32(new>>16) + uint32(^uint16(old)) + uint32(uint16(new))
}

// Put32At writes v at b[off:off+4] and adds the change to acc. b starts
// where the checksum's sum starts (a TCP header), so off says how the field
// sits in its 16-bit words: a field at an odd offset (a timestamp after a
// single NOP) straddles three of them, and by the sum's byte-order
// independence (RFC 1071 2.B) its change is the aligned change with its two
// bytes swapped.
func Put32At(acc uint32, b []byte, off int, v uint32) uint32 {
	d := Replace32(0, binary.BigEndian.Uint32(b[off:]), v)
	binary.BigEndian.PutUint32(b[off:], v)
	return acc + aligned(d, off)
}

// Put16At writes v at b[off:off+2] and adds the change to acc; off as for
// Put32At.
func Put16At(acc uint32, b []byte, off int, v uint16) uint32 {
	d := Replace16(0, binary.BigEndian.Uint16(b[off:]), v)
	binary.BigEndian.PutUint16(b[off:], v)
	return acc + aligned(d, off)
}

// aligned turns the change d of a field at offset off into the change of
// the sum's 16-bit words.
func aligned(d uint32, off int) uint32 {
	if off&1 == 0 {
		return d
	}
	return uint32(bits.ReverseBytes16(Fold(d)))
}

// Adjust applies a folded delta to the checksum stored at b[0:2].
func Adjust(b []byte, delta uint16) {
	c := binary.BigEndian.Uint16(b)
	binary.BigEndian.PutUint16(b, ^Fold(uint32(^c)+uint32(delta)))
}

// AdjustUDP is Adjust for a UDP checksum, where 0 means "no checksum" (IPv4)
// and a computed 0 is sent as 0xffff (RFC 768).
func AdjustUDP(b []byte, delta uint16) {
	c := binary.BigEndian.Uint16(b)
	if c == 0 {
		return
	}
	n := ^Fold(uint32(^c) + uint32(delta))
	if n == 0 {
		n = 0xffff
	}
	binary.BigEndian.PutUint16(b, n)
}

// Sum adds b to a one's-complement accumulator. It adds 64 bits at a time
// with the carries added back in (RFC 1071 2.C: the sum does not depend on
// the word size), then folds to the 32-bit accumulator.
func Sum(b []byte, acc uint32) uint32 {
	var s, c, carry uint64
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), 0)
		carry += c
		b = b[8:]
	}
	if len(b) >= 4 {
		s, c = bits.Add64(s, uint64(binary.BigEndian.Uint32(b)), 0)
		carry += c
		b = b[4:]
	}
	if len(b) >= 2 {
		s, c = bits.Add64(s, uint64(binary.BigEndian.Uint16(b)), 0)
		carry += c
		b = b[2:]
	}
	if len(b) == 1 {
		s, c = bits.Add64(s, uint64(b[0])<<8, 0)
		carry += c
	}
	s, c = bits.Add64(s, carry, 0)
	s += c // cannot carry again: carry is far below 2^64
	s32, c32 := bits.Add32(uint32(s>>32), uint32(s), 0)
	s32 += c32
	r, c32 := bits.Add32(uint32(Fold(s32)), acc, 0)
	return r + c32 // an accumulator near 2^32 keeps its carry
}

// Checksum is the Internet checksum of b, starting from initial (a
// pseudo-header sum, or 0).
func Checksum(b []byte, initial uint32) uint16 {
	return ^Fold(Sum(b, initial))
}

// PseudoV4 is the sum of an IPv4 pseudo-header.
func PseudoV4(src, dst []byte, proto uint8, length int) uint32 {
	return Sum(src, Sum(dst, uint32(proto)+uint32(length)))
}

// PseudoV6 is the sum of an IPv6 pseudo-header (RFC 8200 8.1): the two
// 16-byte addresses, the upper-layer length as 32 bits and the next header
// value in the low byte of another 32 (its three zero bytes add nothing).
// The length's two words are added apart so a jumbogram's (RFC 2675) is
// counted whole.
func PseudoV6(src, dst []byte, proto uint8, length int) uint32 {
	return Sum(src, Sum(dst, uint32(proto)+uint32(length>>16&0xffff)+uint32(length&0xffff)))
}

// AdjustPartial applies a folded delta to a partial checksum at b[0:2]: the
// uncomplemented pseudo-header sum a sender leaves for offload
// (CHECKSUM_PARTIAL, virtio-net NEEDS_CSUM). Only pseudo-header fields
// (addresses) belong in delta: the rest is summed when the checksum is
// finished.
func AdjustPartial(b []byte, delta uint16) {
	binary.BigEndian.PutUint16(b, Fold(uint32(binary.BigEndian.Uint16(b))+uint32(delta)))
}

// Finish completes a partial checksum: l4 starts where the sum starts and
// off is where the checksum field is within it.
func Finish(l4 []byte, off int) {
	binary.BigEndian.PutUint16(l4[off:], Checksum(l4, 0))
}
