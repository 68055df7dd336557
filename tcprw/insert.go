package tcprw

import (
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcpopt"
	"github.com/tapvs/tapvs/wire"
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
	h := wire.TCP(tcp)
	w := at + wire.TCPOptValueOff
	for j := w; j+2*wire.TCPSACKEdgeLen <= at+olen; j += 2 * wire.TCPSACKEdgeLen {
		edge := h.OptionAt(j - wire.TCPOptValueOff) // the block, read as an option's values
		l := ClientEdge(edge.Value32(), sub, start, n)
		r := ClientEdge(edge.Second32(), sub, start, n)
		if l == r && n != 0 {
			continue
		}
		acc = csum.Put32At(acc, tcp, w, l)
		acc = csum.Put32At(acc, tcp, w+wire.TCPSACKEdgeLen, r)
		w += 2 * wire.TCPSACKEdgeLen
	}
	if w == at+olen {
		return acc
	}
	from := w
	if w == at+wire.TCPOptValueOff {
		from = at // nothing left: the option goes
	} else {
		acc = csum.Put16At(acc, tcp, at, uint16(tcpopt.SACK)<<8|uint16(w-at))
	}
	for k := from; k < at+olen; k += 2 {
		acc = csum.Put16At(acc, tcp, k, uint16(tcpopt.NOP)<<8|uint16(tcpopt.NOP))
	}
	return acc
}

// place decides where a client segment (tcp: the whole segment, client
// space, not yet translated; seq its sequence number, hl its header's
// length) goes against the inserted bytes, which take the server-space
// numbers [S, S+Insert) before the client's first byte, Start. The rule is
// the segment's sequence number against Start, so that no choice of
// sequence numbers puts a client's byte in [S, S+Insert): only tapvs's go
// there.
//
//   - at Start, not a SYN or RST: the segment carries the inserted bytes
//     (hdr), and its payload follows them (past);
//   - at or past Start: it moves past them (past);
//   - once the server has acknowledged them (Past), every segment moves
//     past them: [S, S+Insert) is behind the server, and a stream past
//     2 GiB compares as before Start;
//   - wholly before Start, the SYN included (a SYN counts one number, a
//     FIN one), with no urgent byte at or past it: it keeps its number and
//     stays before S, where a server takes it for an old duplicate: the
//     SYN, a keepalive probe at Start-1 with its byte of garbage;
//   - from before Start into the stream (a client that starts its data
//     Insert numbers early, to be read as the header; a SYN with data,
//     which a server with TCP Fast Open would take): ok false, dropped. No
//     client that follows TCP sends it.
func (r *Rewriter) place(tcp wire.TCP, seq uint32, flags uint8, hl int) (hdr, past, ok bool) {
	if d := int32(seq - r.Start); d >= 0 || r.Flags&Past != 0 {
		hdr, past, ok = d == 0 && flags&(tcpflag.SYN|tcpflag.RST) == 0, true, true
	} else {
		end := seq + uint32(len(tcp)-hl)
		if flags&tcpflag.SYN != 0 {
			end++
		}
		if flags&tcpflag.FIN != 0 {
			end++
		}
		ok = int32(end-r.Start) <= 0
	}
	if flags&tcpflag.URG != 0 && !hdr {
		// Its urgent byte (seq + urgent pointer - 1), which a server
		// takes out of the stream it reads, must not be one of the
		// inserted bytes, read or not (the caller that inserts them sees
		// to the segment that carries them).
		var shift uint32
		if past {
			shift = r.Insert
		}
		if u := seq + shift + uint32(tcp.Urgent()) - 1 - r.Start; u < r.Insert {
			return false, false, false
		}
	}
	return hdr, past, ok
}
