package synproxy

import "encoding/binary"

// TCP option kinds.
const (
	optEOL      = 0
	optNOP      = 1
	optMSS      = 2
	optWScale   = 3
	optSACKPerm = 4
	optSACK     = 5
	optTS       = 8
)

// Parsed are the options of one TCP header that synproxy cares about.
type Parsed struct {
	MSS          uint16 // 0: absent
	WScale       int8   // -1: absent
	SACKPerm     bool
	TS           bool
	TSval, TSecr uint32
}

// Parse reads a TCP header's options (the bytes after the fixed 20). ok is
// false when an option's length runs past the end or is below 2.
func Parse(opts []byte) (p Parsed, ok bool) {
	p.WScale = -1
	for i := 0; i < len(opts); {
		k := opts[i]
		if k == optEOL {
			break
		}
		if k == optNOP {
			i++
			continue
		}
		if i+1 >= len(opts) {
			return p, false
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			return p, false
		}
		switch {
		case k == optMSS && l == 4:
			p.MSS = binary.BigEndian.Uint16(opts[i+2:])
		case k == optWScale && l == 3:
			p.WScale = int8(min(opts[i+2], 14))
		case k == optSACKPerm && l == 2:
			p.SACKPerm = true
		case k == optTS && l == 10:
			p.TS = true
			p.TSval = binary.BigEndian.Uint32(opts[i+2:])
			p.TSecr = binary.BigEndian.Uint32(opts[i+6:])
		}
		i += l
	}
	return p, true
}

// find returns the offset in opts of the first option of kind, or -1. The
// common Linux layout (NOP NOP TS) is tried first.
func find(opts []byte, kind byte) int {
	if kind == optTS && len(opts) >= 12 && opts[0] == optNOP && opts[1] == optNOP && opts[2] == optTS && opts[3] == 10 {
		return 2
	}
	for i := 0; i < len(opts); {
		k := opts[i]
		switch k {
		case optEOL:
			return -1
		case optNOP:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return -1
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			return -1
		}
		if k == kind {
			return i
		}
		i += l
	}
	return -1
}

// SynOptions are the options to put on a SYN or SYN-ACK.
type SynOptions struct {
	MSS          uint16
	WScale       int8 // -1: none
	SACKPerm     bool
	TS           bool
	TSval, TSecr uint32
}

// Write lays the options out as Linux does (MSS, SACK-permitted, timestamps,
// window scale, padded with NOPs) into b, which has room for 20 bytes, and
// returns their length, a multiple of 4.
func (o *SynOptions) Write(b []byte) int {
	n := 0
	b[0], b[1] = optMSS, 4
	binary.BigEndian.PutUint16(b[2:], o.MSS)
	n = 4
	switch {
	case o.TS:
		if o.SACKPerm {
			b[n], b[n+1] = optSACKPerm, 2
		} else {
			b[n], b[n+1] = optNOP, optNOP
		}
		b[n+2], b[n+3] = optTS, 10
		binary.BigEndian.PutUint32(b[n+4:], o.TSval)
		binary.BigEndian.PutUint32(b[n+8:], o.TSecr)
		n += 12
	case o.SACKPerm:
		b[n], b[n+1], b[n+2], b[n+3] = optNOP, optNOP, optSACKPerm, 2
		n += 4
	}
	if o.WScale >= 0 {
		b[n], b[n+1], b[n+2], b[n+3] = optNOP, optWScale, 3, byte(o.WScale)
		n += 4
	}
	return n
}
