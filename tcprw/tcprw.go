// Package tcprw is the one TCP rewriter of a connection: what tapvs changes
// in the TCP headers of a connection's segments on their way through, kept
// as one plain record (Rewriter) that the connection carries, and applied
// to a segment's header in one walk over its options.
//
// Every number tapvs shifts lives here: each side's sequence offset (tapvs's
// own ISN toward a plain connection's server, SYNPROXY's cookie toward a
// proxied connection's client), the bytes it inserts at the start of the
// client's stream (a PROXY protocol header) and where they go, both sides'
// timestamp offsets, SYNPROXY's window rescaling, the MSS clamps of the
// SYNs (TOA's room, a PROXY header's, NAT64's 20 bytes) and the ack of the
// client segments that get TOA. A connection whose record another instance
// has can be continued there (connection sync): the record is the whole of
// the translation, with no pointer in it.
//
// Why a package of its own, below both nat and synproxy: plain TCP, NAT64,
// TOA and PROXY connections use it without any SYNPROXY, and SYNPROXY's
// State fixes a record once its server answers; the rewriter needs nothing
// of either (only tcpopt's walk, csum and the wire views).
//
// A Rewriter is never changed while it is shared: a connection publishes
// a new copy (an atomic pointer in its holder), so a reader translating a
// segment sees one consistent record.
package tcprw

import (
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcpopt"
	"github.com/tapvs/tapvs/wire"
)

// Flags of a Rewriter.
const (
	// TSPending: the client's SYN fixes TSClient from its own TSval;
	// TSClient holds the TSval the server side starts at until then.
	TSPending uint8 = 1 << iota
	// TSClientOn: the client's TSval goes to the server plus TSClient, and
	// the server's echo of it (TSecr) comes back less TSClient.
	TSClientOn
	// TSServerOn: the server's TSval goes to the client plus TSServer, and
	// the client's echo of it comes back less TSServer.
	TSServerOn
	// TSRemove: the client's SYN's timestamp option is blanked (LVS's
	// tcp_timestamps remove): the connection runs without timestamps.
	TSRemove
	// Past: the server has acknowledged the inserted bytes (Insert): every
	// client segment moves past them however far the stream has gone.
	Past
	// TOAKnown: TOAAck is known.
	TOAKnown
	// Storm: ToClient fingerprints the server's segment (its third result) for
	// SYNPROXY's ACK storm guard.
	Storm
)

// Rewriter is one TCP connection's translation: a plain value, the same in
// both directions' readers, serialisable as it is.
type Rewriter struct {
	// Client is added to the client's sequence numbers toward the server,
	// Insert included, and taken out of the server's acknowledgements of
	// them (ack, SACK blocks: ClientEdge).
	Client uint32
	// Server is added to the server's sequence numbers toward the client
	// and taken out of the client's acknowledgements of them.
	Server uint32
	// Start is the client-space sequence number of the client's first
	// byte (its ISN + 1), before which Insert bytes of tapvs's own go.
	Start uint32
	// Insert is how many bytes tapvs puts at the start of the client's
	// stream toward the server (a PROXY protocol header), 0 for none.
	Insert uint32
	// TSClient is added to the client's TSval toward the server
	// (TSClientOn), or, with TSPending, the server side's first TSval.
	TSClient uint32
	// TSServer is added to the server's TSval toward the client
	// (TSServerOn).
	TSServer uint32
	// TOAAck is, with TOAKnown, the ack (as the server sees it) of the
	// client segments that get a TOA option: the server's ISN + 1.
	TOAAck uint32
	// MSSToServer is the most MSS a client's SYN may announce to the
	// server (NAT64), 0 for no clamp.
	MSSToServer uint16
	// MSSToClient is the most MSS a server's SYN may announce to the
	// client, after Insert is taken off it (TOA's room, NAT64), 0 for no
	// clamp.
	MSSToClient uint16
	// WinIn shifts the client's window left toward a server that does not
	// scale (SYNPROXY), 0 for none.
	WinIn int8
	// WinOut and WinOutR rescale the server's window toward the client:
	// left by WinOut, then right by WinOutR (SYNPROXY).
	WinOut, WinOutR int8
	// Flags are the bits above.
	Flags uint8
}

// Result is what a translation found besides the checksum: a fault, for
// which the segment is dropped, or what the caller acts on. A scalar, not
// a struct: a struct result costs the packet path a store-forwarding stall
// in every caller (its fields stored one by one, then copied whole).
type Result uint8

const (
	// BadOptions: the header or its options do not parse
	// (tcpopt.Walker.Next); the segment is dropped and counted (nat's
	// DropBadOptions): a server could read an option past the bad one
	// that tapvs never saw.
	BadOptions Result = 1 << iota
	// Overlap: the segment runs from before the client's first byte into
	// the stream, where the inserted bytes go (nat's DropProxyOverlap).
	Overlap
	// Header (ToServer): the segment starts the client's stream, and the
	// inserted bytes go in front of its payload; its seq is already where
	// its payload goes, after them.
	Header
	// TSFixed (ToServer): a client SYN fixed a pending timestamp offset,
	// which ToServer returns: the caller publishes it (FixTS).
	TSFixed
	// TSSent (ToServer): the segment's TSval went to the server shifted
	// (TSClientOn, or a SYN fixing the offset), and ToServer returns the
	// value sent: the caller keeps the highest, where the next connection
	// on the tuple must start past (a server in TIME_WAIT refuses an
	// older one).
	TSSent
)

// Fault is x's fault (BadOptions or Overlap), 0 when the segment was
// translated.
func (x Result) Fault() Result { return x & (BadOptions | Overlap) }

// FixTS records the timestamp offset a client SYN fixed (ToServer's, with
// TSFixed).
func (r *Rewriter) FixTS(off uint32) {
	r.TSClient, r.Flags = off, r.Flags&^TSPending|TSClientOn
}

// HeaderStart is the server-space number of the first inserted byte.
func (r *Rewriter) HeaderStart() uint32 { return r.Start + r.Client - r.Insert }

// Acked reports whether a server's ack (its own numbers) newly passes the
// inserted bytes: at or past their end, and not half the number space
// away. The caller then publishes the record with Past set.
func (r *Rewriter) Acked(ack uint32) bool {
	if r.Insert == 0 || r.Flags&Past != 0 {
		return false
	}
	d := ack - r.HeaderStart() - r.Insert
	return int32(d) >= 0 && d < 1<<30
}

// ClientAck maps a server's acknowledgement of the client's stream (an
// ack, a SACK edge, a quoted sequence number) back to the client's space.
func (r *Rewriter) ClientAck(a uint32) uint32 { return ClientEdge(a, r.Client, r.Start, r.Insert) }

// header is the TCP header's length, ok false when the header is shorter
// than 20 bytes or its data offset is under 5 words or past the segment.
func header(tcp wire.TCP) (hl int, ok bool) {
	if len(tcp) < wire.TCPMinLen {
		return 0, false
	}
	hl = tcp.HeaderLen()
	return hl, hl >= wire.TCPMinLen && hl <= len(tcp)
}

// ToServer translates a client segment's TCP header (tcp: the segment, in
// place) for the server and returns acc plus the checksum change:
//
//   - its place against the inserted bytes (place), read before seq moves;
//   - seq by Client (less Insert where the segment stays before them), ack
//     and SACK blocks by Server, the window by WinIn;
//   - in one walk over the options: a TOA option the client wrote itself
//     blanked to NOPs (tcpopt.ForgedTOA: it would tell the server an
//     address of the client's choosing); TSval by TSClient (a SYN fixing a
//     pending offset) or, with TSRemove, a SYN's option blanked; TSecr by
//     TSServer; a SYN's MSS clamped to MSSToServer.
//
// Its results: acc plus the checksum change, what the caller acts on, the
// offset a SYN fixed (TSFixed) and the TSval sent (TSSent).
//
// A fault leaves the header part-rewritten: the segment is dropped.
func (r *Rewriter) ToServer(tcp wire.TCP, acc uint32) (sum uint32, res Result, tsClient, tsSent uint32) {
	hl, ok := header(tcp)
	if !ok {
		return acc, BadOptions, 0, 0
	}
	flags, seq := tcp.Flags(), tcp.Seq()
	shift := r.Client
	if r.Insert != 0 {
		hdr, past, ok := r.place(tcp, seq, flags, hl)
		if !ok {
			return acc, Overlap, 0, 0
		}
		if !past {
			shift -= r.Insert
		}
		if hdr {
			res |= Header
		}
	}
	if shift != 0 {
		acc = csum.Put32At(acc, tcp, wire.TCPSeqOff, seq+shift)
	}
	if flags&tcpflag.ACK != 0 && r.Server != 0 {
		acc = csum.Put32At(acc, tcp, wire.TCPAckOff, tcp.Ack()-r.Server)
	}
	if r.WinIn > 0 {
		acc = csum.Put16At(acc, tcp, wire.TCPWindowOff, uint16(min(uint32(tcp.Window())<<r.WinIn, 0xffff)))
	}
	if hl == wire.TCPMinLen {
		return acc, res, 0, 0 // most segments: no options
	}
	syn := flags&tcpflag.SYN != 0
	w := tcpopt.Walk(tcp[wire.TCPMinLen:hl])
	for o, at, more := step(&w); more; o, at, more = step(&w) {
		opt := tcp.OptionAt(at)
		switch o.Kind {
		case tcpopt.Timestamps:
			if r.Flags&TSRemove != 0 {
				if syn {
					acc = tcpopt.Blank(tcp, o, acc)
				}
				continue
			}
			tsval, off, on := opt.Value32(), r.TSClient, r.Flags&TSClientOn != 0
			switch {
			case res&TSFixed != 0: // a second timestamp option: the first fixed the offset
				off, on = tsClient, true
			case syn && r.Flags&TSPending != 0:
				off, on = r.TSClient-tsval, true
				res, tsClient = res|TSFixed, off
			}
			if on {
				tsSent, res = tsval+off, res|TSSent
				acc = csum.Put32At(acc, tcp, at+wire.TCPOptValueOff, tsSent)
			}
			if r.Flags&TSServerOn != 0 {
				acc = csum.Put32At(acc, tcp, at+wire.TCPOptSecondOff, opt.Second32()-r.TSServer)
			}
		case tcpopt.SACK:
			if r.Server != 0 {
				for j := at + wire.TCPOptValueOff; j < at+o.Len; j += wire.TCPSACKEdgeLen {
					acc = csum.Put32At(acc, tcp, j, tcp.OptionAt(j-wire.TCPOptValueOff).Value32()-r.Server)
				}
			}
		case tcpopt.MSS:
			if syn {
				acc = clampMSS(tcp, at, opt.Value16(), 0, r.MSSToServer, acc)
			}
		default:
			if tcpopt.ForgedTOA(o) {
				// Only tapvs tells a server the client's address.
				acc = tcpopt.Blank(tcp, o, acc)
			}
		}
	}
	if w.Malformed() {
		return acc, BadOptions, 0, 0
	}
	return acc, res, tsClient, tsSent
}

// ToClient translates a server segment's TCP header (tcp, in place) for
// the client and returns acc plus the checksum change: seq by Server, ack
// and SACK blocks back by Client (ClientEdge, ClientSACK: the inserted
// bytes are nothing the client sent), the window rescaled, and in the one
// walk TSval by TSServer, TSecr back by TSClient, and a SYN's MSS less
// Insert and clamped to MSSToClient. With Storm it fingerprints the
// segment as it came (its third result).
func (r *Rewriter) ToClient(tcp wire.TCP, acc uint32) (sum uint32, res Result, fp uint64) {
	hl, ok := header(tcp)
	if !ok {
		return acc, BadOptions, 0
	}
	flags, seq, ack, win := tcp.Flags(), tcp.Seq(), tcp.Ack(), tcp.Window()
	storm := r.Flags&Storm != 0
	if storm {
		fp = printHeader(seq, ack, win)
	}
	if r.Server != 0 {
		acc = csum.Put32At(acc, tcp, wire.TCPSeqOff, seq+r.Server)
	}
	edges := r.Client != 0 || r.Insert != 0
	if flags&tcpflag.ACK != 0 && edges {
		acc = csum.Put32At(acc, tcp, wire.TCPAckOff, r.ClientAck(ack))
	}
	if r.WinOut != r.WinOutR {
		w := uint32(win) << r.WinOut >> r.WinOutR
		acc = csum.Put16At(acc, tcp, wire.TCPWindowOff, uint16(min(w, 0xffff)))
	}
	if hl == wire.TCPMinLen {
		return acc, 0, fp
	}
	sackSeen, tsSeen := false, false
	w := tcpopt.Walk(tcp[wire.TCPMinLen:hl])
	for o, at, more := step(&w); more; o, at, more = step(&w) {
		opt := tcp.OptionAt(at)
		switch o.Kind {
		case tcpopt.SACK:
			if storm && !sackSeen {
				// The first block is the most recent (RFC 2018): its right edge moves.
				fp ^= printSACK(opt.Second32())
				sackSeen = true
			}
			if edges {
				// The server's SACK blocks are in the client's sequence
				// space as the server sees it: shifted.
				acc = ClientSACK(tcp, at, o.Len, acc, r.Client, r.Start, r.Insert)
			}
		case tcpopt.Timestamps:
			if storm && !tsSeen {
				fp ^= printTS(opt.Value32())
				tsSeen = true
			}
			if r.Flags&TSServerOn != 0 {
				acc = csum.Put32At(acc, tcp, at+wire.TCPOptValueOff, opt.Value32()+r.TSServer)
			}
			if flags&tcpflag.ACK != 0 && r.Flags&TSClientOn != 0 {
				// TSecr is the client's TSval as the server got it (it is
				// only one with ACK set: RFC 7323).
				acc = csum.Put32At(acc, tcp, at+wire.TCPOptSecondOff, opt.Second32()-r.TSClient)
			}
		case tcpopt.MSS:
			if flags&tcpflag.SYN != 0 {
				acc = clampMSS(tcp, at, opt.Value16(), r.Insert, r.MSSToClient, acc)
			}
		}
	}
	if w.Malformed() {
		return acc, BadOptions, 0
	}
	return acc, 0, fp
}

// step is a walk's next option and its offset in the header, which the
// checksum updates need.
func step(w *tcpopt.Walker) (o tcpopt.Option, at int, more bool) {
	o, more = w.Next()
	return o, wire.TCPMinLen + o.Off, more
}

// clampMSS writes the MSS option at tcp[at:] as mss less the less bytes
// tapvs adds to each of the other side's segments (when it is larger), at
// most limit (0: none), and returns acc plus the change.
func clampMSS(tcp wire.TCP, at int, mss uint16, less uint32, limit uint16, acc uint32) uint32 {
	v := mss
	if less != 0 && uint32(v) > less {
		v -= uint16(less)
	}
	if limit != 0 && v > limit {
		v = limit
	}
	if v == mss {
		return acc
	}
	return csum.Put16At(acc, tcp, at+wire.TCPOptValueOff, v)
}

// The ACK storm fingerprint (synproxy.State.Storm): seq, ack and window,
// the first SACK block's right edge and the TSval, each mixed by its own
// odd constant.
func printHeader(seq, ack uint32, win uint16) uint64 {
	return (uint64(seq)<<32 | uint64(ack)) ^ uint64(win)*0x9e3779b97f4a7c15
}
func printSACK(right uint32) uint64 { return uint64(right) * 0xc2b2ae3d27d4eb4f }
func printTS(tsval uint32) uint64   { return uint64(tsval) * 0x165667b19e3779f9 }

// Fingerprint is the ACK storm fingerprint of a server segment's header
// (ToClient's third result), changing nothing: a record with nothing to shift
// writes no byte. A malformed option ends what it reads.
func Fingerprint(tcp wire.TCP) uint64 {
	r := Rewriter{Flags: Storm}
	_, _, fp := r.ToClient(tcp, 0)
	return fp
}
