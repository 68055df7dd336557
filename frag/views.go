package frag

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/wire"
)

// The headers fragmenting reads and writes that package wire has no view
// of: an IPv6 Fragment header, the generic extension header, and the IPv4
// identification.

// frag6 is an IPv6 Fragment header (RFC 8200 4.5): next header, reserved,
// the offset in 8-byte units with the M flag in its low bit, and the
// identification.
type frag6 []byte

const (
	frag6Len      = 8
	frag6OffMOff  = 2
	frag6IDOff    = 4
	frag6MoreFlag = 1
	frag6OffMask  = 0xfff8
)

func (h frag6) Next() uint8 { return h[0] }
func (h frag6) Off() int    { return int(binary.BigEndian.Uint16(h[frag6OffMOff:]) & frag6OffMask) }
func (h frag6) More() bool  { return binary.BigEndian.Uint16(h[frag6OffMOff:])&frag6MoreFlag != 0 }
func (h frag6) ID() uint32  { return binary.BigEndian.Uint32(h[frag6IDOff:]) }

// Put writes the header: off is in bytes, a multiple of 8.
func (h frag6) Put(next uint8, off int, more bool, id uint32) {
	h[0], h[1] = next, 0
	om := uint16(off)
	if more {
		om |= frag6MoreFlag
	}
	binary.BigEndian.PutUint16(h[frag6OffMOff:], om)
	binary.BigEndian.PutUint32(h[frag6IDOff:], id)
}

// ext6 is a hop-by-hop, destination options or routing header: next
// header, then its length in 8-byte units past the first 8.
type ext6 []byte

const ext6Unit = 8

func (h ext6) Next() uint8 { return h[0] }
func (h ext6) Len() int    { return (int(h[1]) + 1) * ext6Unit }

// crossable reports whether an extension header may come before a
// Fragment header (RFC 8200 4.1: hop-by-hop, destination options,
// routing).
func crossable(next uint8) bool {
	return next == wire.IP6HopByHop || next == wire.IP6DestOpts || next == wire.IP6Routing
}

// version is an IP packet's version, 0 (neither 4 nor 6) for an empty one.
func version(ip []byte) uint8 {
	if len(ip) == 0 {
		return 0
	}
	return ip[0] >> 4
}

// ipv4IDOff is the IPv4 identification's offset (wire.IPv4 reads it, as
// ID, but does not write it).
const ipv4IDOff = 4
