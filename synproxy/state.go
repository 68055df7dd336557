package synproxy

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcpopt"
)

// Offsets are what tapvs adds to a connection's sequence numbers on their
// way through. Each side's stream is shifted by its own offset, and the
// other side's acknowledgements of it (ack, SACK blocks) are shifted back
// by the same amount, so neither end sees the difference.
//
// Each source of a shift adds to its side's offset rather than replacing
// it: SYNPROXY sets Server (its cookie stood in for the server's ISN), and
// bytes tapvs inserts into the client's stream (a PROXY protocol header)
// add to Client.
type Offsets struct {
	Client uint32 // added to the client's sequence numbers toward the server
	Server uint32 // added to the server's sequence numbers toward the client
}

// State is one connection whose numbers tapvs translates: a SYNPROXY
// connection, from its cookie handshake on.
//
// It owns the handshake with the real server: until the server answers,
// the client's frames are held here (a few at most) and the SYN sent to
// the server is kept for retries, all under a lock of its own. Establish
// fixes the translation once, after which ToServer and ToClient run
// lock-free on fields that no longer change.
type State struct {
	// Set from the cookie when the State is made, read-only after it is
	// shared.
	Opts        Options // the client's SYN options, from the cookie
	ClientISN   uint32
	Cookie      uint32 // the server ISN the client knows
	TSOn        bool   // the client's ACK carried timestamps
	ClientTSval uint32 // TSval of the client's handshake ACK: the SYN to the server carries it
	OurTSval    uint32 // TSval of our SYN-ACK, echoed by the client's ACK
	OurWScale   int8   // window scale our SYN-ACK announced; -1: none

	// Fixed by Establish.
	established atomic.Bool
	off         Offsets
	ins         uint32 // bytes inserted at the start of the client's stream (InsertClient), counted in off.Client
	tsDelta     uint32 // our TSval - the server's TSval
	tsTranslate bool   // both sides use timestamps
	winOut      int8   // server->client window: shift left by this...
	winOutR     int8   // ...then right by this
	winIn       int8   // client->server window shift (server without scaling), 0: none

	mu        sync.Mutex // guards the handshake below
	held      [][]byte   // client frames held until the server answers
	syn       []byte     // the SYN sent to the server, kept for retries
	retries   int        // SYNs sent again so far
	nextRetry int64      // when the next one is due (the caller's clock)

	stormLast atomic.Uint64
	stormN    atomic.Uint32
}

// Established reports whether the server's SYN-ACK has fixed the translation.
func (s *State) Established() bool { return s.established.Load() }

// Sent records the SYN sent to the server and when to send it again if
// the server is silent.
func (s *State) Sent(syn []byte, nextRetry int64) {
	s.mu.Lock()
	s.syn, s.nextRetry = syn, nextRetry
	s.mu.Unlock()
}

// SYN is the SYN sent to the server, or nil once established.
func (s *State) SYN() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syn
}

// Hold results.
type HoldResult uint8

const (
	Held      HoldResult = iota // the frame is kept for Establish
	QueueFull                   // max frames are held already: drop this one
	TooLate                     // established meanwhile: translate and send the frame now
)

// Room reports whether fewer than max frames are held, so a caller can
// skip copying a frame that Hold would refuse. Hold decides.
func (s *State) Room(max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held) < max
}

// Hold keeps a copy of a client frame until the server answers, if the
// handshake is still open and fewer than max are held.
func (s *State) Hold(frame []byte, max int) HoldResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.established.Load():
		return TooLate
	case len(s.held) >= max:
		return QueueFull
	}
	s.held = append(s.held, frame)
	return Held
}

// Establish records the server's SYN-ACK, its ISN and options, and hands
// back the client frames held until now, to be translated (ToServer) and
// sent in order. ok is false if the handshake was already established: a
// second SYN-ACK changes nothing.
func (s *State) Establish(serverISN uint32, server tcpopt.Parsed) (held [][]byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.established.Load() {
		return nil, false
	}
	s.off.Server += s.Cookie - serverISN
	s.tsTranslate = s.TSOn && server.TS
	if s.tsTranslate {
		s.tsDelta = s.OurTSval - server.TSval
	}
	// Window scaling is in effect on a path only if both of its ends offered
	// it. The client offered Opts.WScale, and we answered with OurWScale; the
	// server got Opts.WScale in our SYN and answered with server.WScale.
	clientScales := s.Opts.WScale >= 0 && s.OurWScale >= 0
	serverScales := s.Opts.WScale >= 0 && server.WScale >= 0
	var rsShift, ourShift int8
	if serverScales {
		rsShift = server.WScale
	}
	if clientScales {
		ourShift = s.OurWScale
	}
	s.winOut, s.winOutR = rsShift, ourShift
	if clientScales && !serverScales {
		s.winIn = s.Opts.WScale
	}
	held = s.held
	s.held, s.syn = nil, nil
	s.established.Store(true)
	return held, true
}

// Due is the retry timer, at now: syn is the SYN to send the server again
// (retries counted; the next one interval later), or giveUp is true once
// retries have all been sent and the server is still silent. Both are zero
// when nothing is due or the handshake is done.
func (s *State) Due(now int64, retries int, interval int64) (syn []byte, giveUp bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.established.Load() || now < s.nextRetry {
		return nil, false
	}
	if s.retries >= retries {
		return nil, true
	}
	s.retries++
	s.nextRetry = now + interval
	return s.syn, false
}

// ShiftClient adds n to the client's offset: tapvs put n bytes of its own
// into the client's stream toward the server (a PROXY protocol header).
// It is called before the State is shared or under the reader that owns
// the connection's first data, never while another reader translates.
func (s *State) ShiftClient(n uint32) { s.off.Client += n }

// InsertClient is ShiftClient for bytes put at the very start of the
// client's stream, before its first byte (ClientISN+1): the server's
// acknowledgements of part of them map back to that first byte
// (ClientEdge), and SACK blocks within them are taken out. Called before
// the State is shared.
func (s *State) InsertClient(n uint32) {
	s.ShiftClient(n)
	s.ins += n
}

// ClientAck maps a server's acknowledgement of the client's stream (an
// ack, a SACK edge, a quoted sequence number) back to the client's space.
func (s *State) ClientAck(a uint32) uint32 {
	return ClientEdge(a, s.off.Client, s.ClientISN+1, s.ins)
}

// Offsets are the connection's sequence number shifts (fixed once
// established).
func (s *State) Offsets() Offsets { return s.off }

// ServerISN is the server's ISN once established.
func (s *State) ServerISN() uint32 { return s.Cookie - s.off.Server }

// header returns the TCP header's options, or ok false when the header
// does not fit in tcp.
func header(tcp []byte) (opts []byte, ok bool) {
	if len(tcp) < 20 {
		return nil, false
	}
	hl := int(tcp[12]>>4) * 4
	if hl < 20 || hl > len(tcp) {
		return nil, false
	}
	return tcp[20:hl], true
}

// ToServer translates a client->server TCP header in place (ack, SACK
// blocks, TSecr, window), blanks any TOA option the client wrote itself
// (tcpopt.ForgedTOA), and returns acc plus the checksum change. ok is
// false, and the segment must be dropped, when the header or its options
// are malformed (tcpopt.Walker.Next): what was already rewritten is then
// of no use.
func (s *State) ToServer(tcp []byte, acc uint32) (_ uint32, ok bool) {
	opts, ok := header(tcp)
	if !ok {
		return acc, false
	}
	if s.off.Client != 0 {
		acc = csum.Put32At(acc, tcp, 4, binary.BigEndian.Uint32(tcp[4:])+s.off.Client)
	}
	if tcp[tcpflag.Offset]&tcpflag.ACK != 0 {
		acc = csum.Put32At(acc, tcp, 8, binary.BigEndian.Uint32(tcp[8:])-s.off.Server)
	}
	if s.winIn > 0 {
		w := min(uint32(binary.BigEndian.Uint16(tcp[14:]))<<s.winIn, 0xffff)
		acc = csum.Put16At(acc, tcp, 14, uint16(w))
	}
	w := tcpopt.Walk(opts)
	for {
		o, more := w.Next()
		if !more {
			return acc, !w.Malformed()
		}
		at := 20 + o.Off // the option's offset in the header, which the checksum update needs
		switch o.Kind {
		case tcpopt.Timestamps:
			if s.tsTranslate {
				acc = csum.Put32At(acc, tcp, at+6, binary.BigEndian.Uint32(tcp[at+6:])-s.tsDelta)
			}
		case tcpopt.SACK:
			for j := at + 2; j < at+o.Len; j += 4 {
				acc = csum.Put32At(acc, tcp, j, binary.BigEndian.Uint32(tcp[j:])-s.off.Server)
			}
		default:
			if tcpopt.ForgedTOA(o) {
				// Only tapvs tells a server the client's address.
				acc = tcpopt.Blank(tcp, o, acc)
			}
		}
	}
}

// ToClient translates a server->client TCP header in place (seq, TSval,
// window; ack and SACK blocks when the client's stream is shifted) and
// returns acc plus the checksum change; ok as for ToServer.
func (s *State) ToClient(tcp []byte, acc uint32) (_ uint32, ok bool) {
	opts, ok := header(tcp)
	if !ok {
		return acc, false
	}
	acc = csum.Put32At(acc, tcp, 4, binary.BigEndian.Uint32(tcp[4:])+s.off.Server)
	if s.off.Client != 0 && tcp[tcpflag.Offset]&tcpflag.ACK != 0 {
		acc = csum.Put32At(acc, tcp, 8, s.ClientAck(binary.BigEndian.Uint32(tcp[8:])))
	}
	if s.winOut != s.winOutR {
		w := uint32(binary.BigEndian.Uint16(tcp[14:])) << s.winOut >> s.winOutR
		acc = csum.Put16At(acc, tcp, 14, uint16(min(w, 0xffff)))
	}
	w := tcpopt.Walk(opts)
	for {
		o, more := w.Next()
		if !more {
			return acc, !w.Malformed()
		}
		at := 20 + o.Off
		switch {
		case o.Kind == tcpopt.Timestamps && s.tsTranslate:
			acc = csum.Put32At(acc, tcp, at+2, binary.BigEndian.Uint32(tcp[at+2:])+s.tsDelta)
		case o.Kind == tcpopt.SACK && s.off.Client != 0:
			// The server's SACK blocks are in the client's sequence
			// space as the server sees it: shifted.
			acc = ClientSACK(tcp, at, o.Len, acc, s.off.Client, s.ClientISN+1, s.ins)
		}
	}
}

// Storm reports whether a pure ACK from the server (tcp: its TCP header)
// repeats the same seq, ack, window, SACK blocks and timestamp more than
// limit times in a row: an ACK storm, dropped (LVS's guard against two ends
// disagreeing about sequence numbers forever). Window, SACK and timestamp
// are part of it: window updates, duplicate ACKs in loss recovery (each
// SACKing more) and zero-window probes (seconds apart: a new TSval each)
// repeat seq and ack legitimately. A storm loops far faster than the
// timestamp clock (1 ms on Linux) ticks, so it is still cut.
func (s *State) Storm(tcp []byte, limit uint32) bool {
	v := (uint64(binary.BigEndian.Uint32(tcp[4:]))<<32 | uint64(binary.BigEndian.Uint32(tcp[8:]))) ^
		uint64(binary.BigEndian.Uint16(tcp[14:]))*0x9e3779b97f4a7c15
	if opts, ok := header(tcp); ok {
		sackSeen, tsSeen := false, false
		for w := tcpopt.Walk(opts); ; {
			o, more := w.Next()
			if !more {
				break
			}
			switch v0 := opts[o.Off : o.Off+o.Len]; {
			case o.Kind == tcpopt.SACK && !sackSeen:
				// The first block is the most recent (RFC 2018): its right edge moves.
				v ^= uint64(binary.BigEndian.Uint32(v0[6:])) * 0xc2b2ae3d27d4eb4f
				sackSeen = true
			case o.Kind == tcpopt.Timestamps && !tsSeen:
				v ^= uint64(binary.BigEndian.Uint32(v0[2:])) * 0x165667b19e3779f9
				tsSeen = true
			}
		}
	}
	if s.stormLast.Load() != v {
		s.stormLast.Store(v)
		s.stormN.Store(0)
		return false
	}
	return s.stormN.Add(1) >= limit
}
