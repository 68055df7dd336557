package frag

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// MaxSplit is the most fragments a Splitter makes of a datagram: 8 bytes
// of data each.
const MaxSplit = MaxDatagram / 8

// Splitter cuts one IPv4 or IPv6 datagram into fragments no longer than an
// MTU, one per Next, into a buffer of the caller's: it holds nothing of its
// own, so fragmenting allocates nothing.
//
// IPv4 fragments each carry the datagram's header with its offset, MF and
// checksum; the first all its options, the later ones only those with the
// copied flag (RFC 791), the others overwritten with NOPs, as Linux's
// ip_options_fragment does (the header keeps its length). IPv6 fragments
// carry the unfragmentable part (the
// fixed header, a hop-by-hop header, and the headers up to a routing header)
// and a Fragment header (RFC 8200 4.5).
type Splitter struct {
	ip     []byte
	hdrLen int // IPv4: the header; IPv6: the unfragmentable part
	nhOff  int // IPv6: the next header field of the unfragmentable part's last header
	next   uint8
	per    int // data bytes per fragment, a multiple of 8
	off    int
	id     uint32
	v6     bool
	later  [wire.IPv4MaxLen]byte // IPv4: the later fragments' header (laterHeader)
}

// NewSplitter prepares ip (one whole datagram, trimmed to its length) to be
// cut for mtu with identification id (16 bits of it for IPv4). ok is
// false when it cannot be: an MTU too small for its headers and 8 bytes of
// data, or headers that do not parse.
func NewSplitter(ip []byte, mtu int, id uint32) (s Splitter, ok bool) {
	s = Splitter{ip: ip, id: id}
	switch version(ip) {
	case 4:
		if len(ip) < wire.IPv4MinLen {
			return s, false
		}
		s.hdrLen = wire.IPv4(ip).HeaderLen()
		if s.hdrLen < wire.IPv4MinLen || s.hdrLen > len(ip) {
			return s, false
		}
		s.per = (mtu - s.hdrLen) &^ 7
		laterHeader(s.later[:s.hdrLen], ip[:s.hdrLen])
	case 6:
		if len(ip) < wire.IPv6Len {
			return s, false
		}
		s.v6 = true
		s.hdrLen, s.nhOff = wire.IPv6Len, wire.IPv6NextHdrOff
		next, off := wire.IPv6(ip).NextHeader(), wire.IPv6Len
		for range wire.IP6MaxExt {
			if !crossable(next) {
				break
			}
			if len(ip)-off < ext6Unit || len(ip)-off < ext6(ip[off:]).Len() {
				return s, false
			}
			x := ext6(ip[off:])
			if next == wire.IP6HopByHop || next == wire.IP6Routing {
				s.hdrLen, s.nhOff = off+x.Len(), off
			}
			next, off = x.Next(), off+x.Len()
		}
		// The next header field of the unfragmentable part's last header:
		// the fixed header's, or an extension header's first byte.
		s.next = ip[s.nhOff]
		s.per = (mtu - s.hdrLen - frag6Len) &^ 7
	default:
		return s, false
	}
	return s, s.per >= 8
}

// laterHeader writes into to (as long as hdr) the IPv4 header hdr as the
// fragments after the first carry it: each option without the copied flag
// (the type's high bit) overwritten with NOPs, as Linux's
// ip_options_fragment. An option list that does not parse is left as it
// is from there, as Linux leaves it.
func laterHeader(to, hdr []byte) {
	copy(to, hdr)
	opts := to[wire.IPv4MinLen:]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case ipoptEnd:
			return
		case ipoptNOP:
			i++
			continue
		}
		if len(opts)-i < 2 {
			return
		}
		n := int(opts[i+1])
		if n < 2 || n > len(opts)-i {
			return
		}
		if opts[i]&ipoptCopied == 0 {
			for k := range n {
				opts[i+k] = ipoptNOP
			}
		}
		i += n
	}
}

// IPv4 option types (RFC 791).
const (
	ipoptEnd    = 0
	ipoptNOP    = 1
	ipoptCopied = 0x80
)

// Count is how many fragments Next makes of the datagram, and the length
// of the largest (the first).
func (s *Splitter) Count() (n, size int) {
	data := len(s.ip) - s.hdrLen
	n = (data + s.per - 1) / s.per
	size = s.hdrLen + min(s.per, data)
	if s.v6 {
		size += frag6Len
	}
	return n, size
}

// Next writes the next fragment into buf (which must hold the MTU) and
// returns its length, 0 when the datagram is all out.
func (s *Splitter) Next(buf []byte) int {
	data := len(s.ip) - s.hdrLen
	if s.off >= data {
		return 0
	}
	n := min(s.per, data-s.off)
	more := s.off+n < data
	if !s.v6 {
		if s.off == 0 {
			copy(buf, s.ip[:s.hdrLen])
		} else {
			copy(buf, s.later[:s.hdrLen])
		}
		copy(buf[s.hdrLen:], s.ip[s.hdrLen+s.off:s.hdrLen+s.off+n])
		h := wire.IPv4(buf)
		h.SetTotalLen(s.hdrLen + n)
		ff := uint16(s.off / 8)
		if more {
			ff |= wire.IPv4MF
		}
		binary.BigEndian.PutUint16(buf[ipv4IDOff:], uint16(s.id))
		binary.BigEndian.PutUint16(buf[wire.IPv4FragOff:], ff)
		h.SetChecksum(0)
		h.SetChecksum(csum.Checksum(buf[:s.hdrLen], 0))
		s.off += n
		return s.hdrLen + n
	}
	copy(buf, s.ip[:s.hdrLen])
	buf[s.nhOff] = wire.IP6Fragment // the next header field, as NewSplitter found it
	frag6(buf[s.hdrLen:s.hdrLen+frag6Len]).Put(s.next, s.off, more, s.id)
	copy(buf[s.hdrLen+frag6Len:], s.ip[s.hdrLen+s.off:s.hdrLen+s.off+n])
	wire.IPv6(buf).SetPayloadLen(s.hdrLen + frag6Len + n - wire.IPv6Len)
	s.off += n
	return s.hdrLen + frag6Len + n
}
