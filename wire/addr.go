package wire

import "encoding/binary"

// Addresses in 16-byte form: the balancer keys both families alike, IPv4
// as the IPv4-mapped ::ffff:a.b.c.d (RFC 4291 2.5.5.2), which never
// appears on the wire, so the two cannot be confused.

// Is4 reports whether a is an IPv4 address in 16-byte form: two word
// compares, for it runs on every segment written and every cookie made or
// checked.
func Is4(a *[16]byte) bool {
	return binary.LittleEndian.Uint64(a[0:8]) == 0 && binary.BigEndian.Uint32(a[8:12]) == 0xffff
}

// Mapped4 reports whether a 16-byte slice holds an IPv4-mapped address.
func Mapped4(a []byte) bool { return Is4((*[16]byte)(a)) }

// Addr4 is the 16-byte form of an IPv4 address.
func Addr4(a [4]byte) [16]byte {
	return [16]byte{10: 0xff, 11: 0xff, 12: a[0], 13: a[1], 14: a[2], 15: a[3]}
}

// In16 is the 16-byte form of a 4-byte slice.
func In16(a []byte) [16]byte { return Addr4([4]byte(a)) }

// In4 is the 4 bytes of an IPv4 address in 16-byte form.
func In4(a *[16]byte) []byte { return a[12:16] }

// Short is the address as the wire carries it: 4 bytes for IPv4, 16 for
// IPv6.
func Short(a *[16]byte) []byte {
	if Is4(a) {
		return a[12:16]
	}
	return a[:]
}

// Halves is a's two 8-byte words in the machine's order, for hashing an
// address: two loads, whatever the family.
func Halves(a *[16]byte) (hi, lo uint64) {
	return binary.LittleEndian.Uint64(a[0:8]), binary.LittleEndian.Uint64(a[8:16])
}

// Accessors of a 16-byte address as numbers, for keys that compare or hash
// an address without copying it (package defence's source keys).

// V4 is the IPv4 address in a's last four bytes (a's IPv4-mapped form, see
// Is4) as a number, most significant byte first.
func V4(a *[16]byte) uint32 { return binary.BigEndian.Uint32(a[12:16]) }

// Net64 is a's first 64 bits as a number: an IPv6 address's /64 prefix.
func Net64(a *[16]byte) uint64 { return binary.BigEndian.Uint64(a[0:8]) }
