package synproxy

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpopt"
)

// Bytes tapvs inserts at the start of the client's stream toward the server
// (a PROXY protocol header, nat/proxy.go) take server-space sequence
// numbers the client never used: the client's first byte, start in the
// client's space, is start+sub-n at the server and everything from it on
// moves by sub (the client's whole offset, the n inserted bytes included).
// The server's acknowledgements come back through ClientEdge.

// ClientEdge maps a server's acknowledgement a of the client's stream (an
// ack, a SACK edge, a quoted sequence number) back to the client's space.
// An acknowledgement of the inserted bytes, or of part of them, is one of
// nothing the client sent: it maps to start. With n 0 it is a - sub.
func ClientEdge(a, sub, start, n uint32) uint32 {
	a -= sub
	if n != 0 && int32(a-start) < 0 && int32(a-start+n) >= 0 {
		return start
	}
	return a
}

// ClientSACK translates the blocks of the SACK option at tcp[at:at+olen]
// (tcp is the TCP header; at the option's offset in it) with ClientEdge,
// and returns acc plus the checksum change. A block that maps to nothing
// lies within the inserted bytes (a server's D-SACK of a header it got
// twice): it is taken out, as the client would discard it, the blocks
// after it move up and NOPs fill the end of the option; with no block left
// the whole option becomes NOPs.
func ClientSACK(tcp []byte, at, olen int, acc uint32, sub, start, n uint32) uint32 {
	w := at + 2
	for j := at + 2; j+8 <= at+olen; j += 8 {
		l := ClientEdge(binary.BigEndian.Uint32(tcp[j:]), sub, start, n)
		r := ClientEdge(binary.BigEndian.Uint32(tcp[j+4:]), sub, start, n)
		if l == r && n != 0 {
			continue
		}
		acc = csum.Put32At(acc, tcp, w, l)
		acc = csum.Put32At(acc, tcp, w+4, r)
		w += 8
	}
	if w == at+olen {
		return acc
	}
	from := w
	if w == at+2 {
		from = at // nothing left: the option goes
	} else {
		acc = csum.Put16At(acc, tcp, at, uint16(tcpopt.SACK)<<8|uint16(w-at))
	}
	for k := from; k < at+olen; k += 2 {
		acc = csum.Put16At(acc, tcp, k, uint16(tcpopt.NOP)<<8|uint16(tcpopt.NOP))
	}
	return acc
}
