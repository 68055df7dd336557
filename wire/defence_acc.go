package wire

import "encoding/binary"

// Accessors of a 16-byte address as numbers, for keys that compare or hash
// an address without copying it (package defence's source keys).

// V4 is the IPv4 address in a's last four bytes (a's IPv4-mapped form, see
// Is4) as a number, most significant byte first.
func V4(a *[16]byte) uint32 { return binary.BigEndian.Uint32(a[12:16]) }

// Net64 is a's first 64 bits as a number: an IPv6 address's /64 prefix.
func Net64(a *[16]byte) uint64 { return binary.BigEndian.Uint64(a[0:8]) }
