package wire

import "encoding/binary"

// A TCP header's options by name (the rewriter, package tcprw, reads and
// shifts their values in place), and the fields only it reads.

// Urgent is the urgent pointer: with URG set, seq + Urgent - 1 is the
// urgent byte.
func (b TCP) Urgent() uint16 { return binary.BigEndian.Uint16(b[TCPUrgentOff:]) }

// SetUrgent sets the urgent pointer.
func (b TCP) SetUrgent(u uint16) { binary.BigEndian.PutUint16(b[TCPUrgentOff:], u) }

// OptionAt is the option at off in the header (off counted from the
// header's first byte, as csum.Put32At counts it): a view that starts at
// the option's kind byte. The caller has checked its length (tcpopt.Walk).
func (b TCP) OptionAt(off int) TCPOption { return TCPOption(b[off:]) }

// TCPOption is one TCP option from its kind byte.
type TCPOption []byte

// Value16 and Value32 read the option's first value (an MSS, a TSval, a
// SACK block's left edge), after the kind and length bytes; Second32 the
// 32 bits after that (a TSecr, a SACK block's right edge).
func (o TCPOption) Value16() uint16  { return binary.BigEndian.Uint16(o[2:]) }
func (o TCPOption) Value32() uint32  { return binary.BigEndian.Uint32(o[2:]) }
func (o TCPOption) Second32() uint32 { return binary.BigEndian.Uint32(o[6:]) }

// Offsets of an option's values from its kind byte.
const (
	TCPOptValueOff  = 2 // the first value: MSS, TSval, the first SACK edge
	TCPOptSecondOff = 6 // TSecr
	TCPSACKEdgeLen  = 4 // each SACK edge; a block is two
)

// OffsetFlags is the 16 bits of the data offset, the reserved bits and the
// flags: the word a checksum update of a longer header changes.
func (b TCP) OffsetFlags() uint16 { return binary.BigEndian.Uint16(b[TCPDataOffOff:]) }
