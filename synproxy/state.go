package synproxy

import (
	"sync"
	"sync/atomic"

	"github.com/tapvs/tapvs/tcpopt"
	"github.com/tapvs/tapvs/tcprw"
)

// Offsets are what tapvs adds to a connection's sequence numbers on their
// way through (the record's Client and Server: tcprw.Rewriter).
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
// fixes the connection's rewriter (tcprw.Rewriter: the offsets of both
// sides' sequence numbers, SACK, timestamps, window) and publishes it;
// both directions' readers translate through it lock-free from then on.
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

	// pre is the rewriter before the State is shared: bytes inserted into
	// the client's stream (InsertClient) go in before Establish fixes the
	// rest.
	pre tcprw.Rewriter
	// rw is the connection's rewriter, nil until Establish: published
	// once, then replaced whole by a changed copy (the server
	// acknowledging a PROXY header: Past), never changed in place.
	rw atomic.Pointer[tcprw.Rewriter]

	mu        sync.Mutex // guards the handshake below
	held      [][]byte   // client frames held until the server answers
	syn       []byte     // the SYN sent to the server, kept for retries
	retries   int        // SYNs sent again so far
	nextRetry int64      // when the next one is due (the caller's clock)

	stormLast atomic.Uint64
	stormN    atomic.Uint32
}

// Established reports whether the server's SYN-ACK has fixed the translation.
func (s *State) Established() bool { return s.rw.Load() != nil }

// Rewriter is where the connection's rewriter is published (nil until
// Establish): its readers Load it, and a change is a new copy stored with
// CompareAndSwap.
func (s *State) Rewriter() *atomic.Pointer[tcprw.Rewriter] { return &s.rw }

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
	case s.Established():
		return TooLate
	case len(s.held) >= max:
		return QueueFull
	}
	s.held = append(s.held, frame)
	return Held
}

// Establish records the server's SYN-ACK, its ISN and options, fixes and
// publishes the connection's rewriter, and hands back the client frames
// held until now, to be translated and sent in order. ok is false if the
// handshake was already established: a second SYN-ACK changes nothing.
func (s *State) Establish(serverISN uint32, server tcpopt.Parsed) (held [][]byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Established() {
		return nil, false
	}
	r := s.pre
	r.Server += s.Cookie - serverISN
	r.Start = s.ClientISN + 1
	// The client segments that get TOA acknowledge the server's ISN + 1.
	r.TOAAck, r.Flags = serverISN+1, r.Flags|tcprw.TOAKnown|tcprw.Storm
	if s.TSOn && server.TS {
		// Both sides use timestamps: the server's go to the client in our
		// clock's numbers, the client's echoes back in the server's.
		r.TSServer, r.Flags = s.OurTSval-server.TSval, r.Flags|tcprw.TSServerOn
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
	r.WinOut, r.WinOutR = rsShift, ourShift
	if clientScales && !serverScales {
		r.WinIn = s.Opts.WScale
	}
	held = s.held
	s.held, s.syn = nil, nil
	s.rw.Store(&r)
	return held, true
}

// Due is the retry timer, at now: syn is the SYN to send the server again
// (retries counted; the next one interval later), or giveUp is true once
// retries have all been sent and the server is still silent. Both are zero
// when nothing is due or the handshake is done.
func (s *State) Due(now int64, retries int, interval int64) (syn []byte, giveUp bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Established() || now < s.nextRetry {
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
// into the client's stream toward the server. Called before the State is
// shared.
func (s *State) ShiftClient(n uint32) { s.pre.Client += n }

// InsertClient is ShiftClient for bytes put at the very start of the
// client's stream, before its first byte (ClientISN+1): a PROXY protocol
// header. The server's acknowledgements of part of them map back to that
// first byte (tcprw.ClientEdge), SACK blocks within them are taken out, and
// where a client segment goes against them is the rewriter's (its Past
// flag, set once the server has acknowledged them). Called before the
// State is shared.
func (s *State) InsertClient(n uint32) {
	s.ShiftClient(n)
	s.pre.Insert += n
}

// ClientAck maps a server's acknowledgement of the client's stream (an
// ack, a SACK edge, a quoted sequence number) back to the client's space.
// Established connections only.
func (s *State) ClientAck(a uint32) uint32 { return s.rw.Load().ClientAck(a) }

// Offsets are the connection's sequence number shifts: before Establish,
// the client's alone.
func (s *State) Offsets() Offsets {
	r := s.rw.Load()
	if r == nil {
		r = &s.pre
	}
	return Offsets{Client: r.Client, Server: r.Server}
}

// ServerISN is the server's ISN once established.
func (s *State) ServerISN() uint32 { return s.Cookie - s.rw.Load().Server }

// Storm reports whether a pure ACK from the server, of fingerprint print
// (the third result of tcprw.Rewriter.ToClient: its seq, ack, window, SACK
// blocks and timestamp as they came), repeats more than limit times in a row: an ACK storm, dropped
// (LVS's guard against two ends disagreeing about sequence numbers
// forever). Window, SACK and timestamp are part of it: window updates,
// duplicate ACKs in loss recovery (each SACKing more) and zero-window
// probes (seconds apart: a new TSval each) repeat seq and ack
// legitimately. A storm loops far faster than the timestamp clock (1 ms
// on Linux) ticks, so it is still cut.
func (s *State) Storm(print uint64, limit uint32) bool {
	if s.stormLast.Load() != print {
		s.stormLast.Store(print)
		s.stormN.Store(0)
		return false
	}
	return s.stormN.Add(1) >= limit
}
