// Package tcpopt reads the options of TCP headers that arrive from the
// network. Every walk over option bytes in tapvs goes through Walk, which
// checks each option's length against the bytes that are there and against
// the one length its kind may have before any caller reads a field, so no
// header an attacker writes can make a reader index past an option.
//
// The rules are Linux's (tcp_parse_options) made strict: EOL ends the list
// and what follows is padding; a length below 2 or past the end of the
// header ends it as malformed; and where Linux would quietly ignore an
// option of a kind it knows but of the wrong size, tapvs, which rewrites
// some of those options, calls the whole header malformed (RFC 9293 3.1: an
// implementation must be prepared for an illegal option length; tapvs drops
// and counts the segment rather than forward one it cannot rewrite).
package tcpopt

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/csum"
)

// Option kinds tapvs reads or writes (IANA TCP option kind numbers).
const (
	EOL           = 0
	NOP           = 1
	MSS           = 2
	WindowScale   = 3
	SACKPermitted = 4
	SACK          = 5
	Timestamps    = 8
)

// TOA (TCP Option Address) tells a real server behind FULLNAT the client's
// address: kind 254 (RFC 6994's shared experimental kind, which Alibaba's
// LVS took for it), length 8 for an IPv4 client (struct toa_data: port,
// address) or 20 for an IPv6 one (DPVS's struct toa_ip6_data). The Linux
// toa modules take the first option of that kind and length they find.
// Other builds of the module read more kinds (toaKinds): tapvs writes only
// kind 254, and blanks all of them in what clients send.
const (
	TOA     = 254
	LenTOA  = 8
	LenTOA6 = 20
)

// toaKinds are the (kind, length) pairs a toa module of some build reads as
// an address: 254/8 and 254/20 (Alibaba LVS, DPVS), 253/20 (TCPOPT_TOA_V6
// of Alibaba's and Huawei's IPv6 builds), 250/8 (TCPOPT_TOA_VIP), 252/20
// (TCPOPT_VTOA) and 249/40 (TCPOPT_V6VTOA) of Alibaba Cloud's vtoa. All are
// experimental or unassigned kinds: no other option is lost.
var toaKinds = [...][2]int{{TOA, LenTOA}, {TOA, LenTOA6}, {253, 20}, {250, 8}, {252, 20}, {249, 40}}

// Lengths of the options of fixed size, kind and length bytes included.
const (
	LenMSS           = 4
	LenWindowScale   = 3
	LenSACKPermitted = 2
	LenTimestamps    = 10
	// A SACK option is 2 bytes and 1 to 4 blocks of two 32-bit edges.
	lenSACKBase  = 2
	lenSACKBlock = 8
	MaxSACKLen   = lenSACKBase + 4*lenSACKBlock
)

// MaxLen is the most option bytes a TCP header can carry (data offset 15).
const MaxLen = 40

// Option is one option inside a header's option bytes: its kind, its offset
// from the start of the options and its whole length (1 for a NOP).
type Option struct {
	Kind byte
	Off  int
	Len  int
}

// Walker steps through a header's options; its zero value has none.
type Walker struct {
	opts []byte
	i    int
	bad  bool
}

// Walk starts a walk over opts: a TCP header's bytes after the fixed 20,
// up to its data offset.
func Walk(opts []byte) Walker { return Walker{opts: opts} }

// Next returns the next option other than a NOP, with its length checked:
// opts[o.Off : o.Off+o.Len] is inside the options, and an option of a kind
// in this package has the length that kind must have. ok is false at the
// end of the list, at EOL, and at the first option that does not fit
// (Malformed then reports true).
func (w *Walker) Next() (o Option, ok bool) {
	for w.i < len(w.opts) {
		k := w.opts[w.i]
		switch k {
		case EOL:
			w.i = len(w.opts)
			return o, false
		case NOP:
			w.i++
			continue
		}
		if w.i+1 >= len(w.opts) {
			w.bad = true
			return o, false
		}
		l := int(w.opts[w.i+1])
		if l < 2 || w.i+l > len(w.opts) || !lengthFits(k, l) {
			w.bad = true
			return o, false
		}
		o = Option{Kind: k, Off: w.i, Len: l}
		w.i += l
		return o, true
	}
	return o, false
}

// Blank overwrites option o of a TCP header (tcp: the header from its first
// byte; o from a walk of its options) with NOPs and returns acc plus the
// checksum change. o.Len must be even: every option tapvs blanks is
// (timestamps, TOA).
func Blank(tcp []byte, o Option, acc uint32) uint32 {
	const nops = uint16(NOP)<<8 | NOP
	for j := 20 + o.Off; j+1 < 20+o.Off+o.Len; j += 2 {
		acc = csum.Put16At(acc, tcp, j, nops)
	}
	return acc
}

// ForgedTOA reports whether o is an option that a toa module of some build
// would read as an address (toaKinds): in a segment from a client, one the
// client wrote itself.
func ForgedTOA(o Option) bool {
	for _, k := range toaKinds {
		if int(o.Kind) == k[0] && o.Len == k[1] {
			return true
		}
	}
	return false
}

// ModuleTOA is what a Linux toa module reads from a TCP header's options
// (opts: the bytes after the fixed 20), the way its get_toa_data walks
// them (Alibaba LVS's and DPVS's toa.ko, and the builds that read more
// kinds): the first option of kind 254 and length 8 or 20, 253/20, 250/8,
// 252/20 or 249/40, whole; an EOL, or a length below 2 or past the end,
// ends the walk with nothing; every other length is stepped over, whatever
// its kind, which is more lenient than Walk. tapvs never reads client
// options this way: its tests hold what it forwards against this reader,
// the one a real server uses.
func ModuleTOA(opts []byte) (opt []byte, ok bool) {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case EOL:
			return nil, false
		case NOP:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return nil, false
		}
		size := int(opts[i+1])
		if size < 2 || size > len(opts)-i {
			return nil, false
		}
		switch kind := opts[i]; {
		case kind == 254 && (size == 8 || size == 20), kind == 253 && size == 20, kind == 250 && size == 8,
			kind == 252 && size == 20, kind == 249 && size == 40:
			return opts[i : i+size], true
		}
		i += size
	}
	return nil, false
}

// Malformed reports whether the walk stopped at an option that does not fit.
func (w *Walker) Malformed() bool { return w.bad }

func lengthFits(kind byte, l int) bool {
	switch kind {
	case MSS:
		return l == LenMSS
	case WindowScale:
		return l == LenWindowScale
	case SACKPermitted:
		return l == LenSACKPermitted
	case Timestamps:
		return l == LenTimestamps
	case SACK:
		return l >= lenSACKBase+lenSACKBlock && l <= MaxSACKLen && (l-lenSACKBase)%lenSACKBlock == 0
	}
	return true
}

// Valid reports whether opts walk to their end without a malformed option.
func Valid(opts []byte) bool {
	w := Walk(opts)
	for {
		if _, ok := w.Next(); !ok {
			return !w.Malformed()
		}
	}
}

// Parsed are the options of one header that a SYN proxy reads.
type Parsed struct {
	MSS          uint16 // 0: absent
	WScale       int8   // -1: absent; larger shifts are read as 14 (RFC 7323)
	SACKPerm     bool
	TS           bool
	TSval, TSecr uint32
}

// Parse reads a header's options (the bytes after the fixed 20). ok is
// false when they are malformed (see Walker.Next). An option given twice
// counts as its last, as Linux reads it.
func Parse(opts []byte) (p Parsed, ok bool) {
	p.WScale = -1
	w := Walk(opts)
	for {
		o, more := w.Next()
		if !more {
			return p, !w.Malformed()
		}
		v := opts[o.Off : o.Off+o.Len]
		switch o.Kind {
		case MSS:
			p.MSS = binary.BigEndian.Uint16(v[2:])
		case WindowScale:
			p.WScale = int8(min(v[2], 14))
		case SACKPermitted:
			p.SACKPerm = true
		case Timestamps:
			p.TS = true
			p.TSval = binary.BigEndian.Uint32(v[2:])
			p.TSecr = binary.BigEndian.Uint32(v[6:])
		}
	}
}
