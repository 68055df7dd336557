package synproxy

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpopt"
)

// State is one proxied connection's handshake and translation.
//
// Until the real server answers, the client's packets are held (a few at
// most) under mu. Established flips once, after which ToServer and ToClient
// run lock-free on fields that no longer change.
type State struct {
	Opts        Options // the client's SYN options, from the cookie
	ClientISN   uint32
	Cookie      uint32 // the server ISN the client knows
	TSOn        bool   // the client's ACK carried timestamps
	ClientTSval uint32 // TSval of the client's handshake ACK: the SYN to the server carries it
	OurTSval    uint32 // TSval of our SYN-ACK, echoed by the client's ACK
	OurWScale   int8   // window scale our SYN-ACK announced; -1: none

	established atomic.Bool
	seqDelta    uint32 // cookie - server ISN
	tsDelta     uint32 // our TSval - the server's TSval
	tsTranslate bool   // both sides use timestamps
	winOut      int8   // server->client window: shift left by this...
	winOutR     int8   // ...then right by this
	winIn       int8   // client->server window shift (server without scaling), 0: none

	// Handshake, under mu.
	mu        sync.Mutex
	Queue     [][]byte // client frames held until the server answers
	SYN       []byte   // the SYN sent to the server, for retries
	Retries   int
	NextRetry int64

	stormLast atomic.Uint64
	stormN    atomic.Uint32
}

// Lock and Unlock guard the handshake fields.
func (s *State) Lock()   { s.mu.Lock() }
func (s *State) Unlock() { s.mu.Unlock() }

// Established reports whether the server's SYN-ACK has fixed the translation.
func (s *State) Established() bool { return s.established.Load() }

// Establish records the server's SYN-ACK: its ISN and options. The caller
// holds the lock and sends the queued frames after.
func (s *State) Establish(serverISN uint32, server tcpopt.Parsed) {
	s.seqDelta = s.Cookie - serverISN
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
	s.established.Store(true)
}

// ServerISN is the server's ISN once established.
func (s *State) ServerISN() uint32 { return s.Cookie - s.seqDelta }

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
// blocks, TSecr, window) and returns acc plus the checksum change. ok is
// false, and the segment must be dropped, when the header or its options
// are malformed (tcpopt.Walker.Next): what was already rewritten is then
// of no use.
func (s *State) ToServer(tcp []byte, acc uint32) (_ uint32, ok bool) {
	opts, ok := header(tcp)
	if !ok {
		return acc, false
	}
	if tcp[13]&ACK != 0 {
		acc = csum.Put32At(acc, tcp, 8, binary.BigEndian.Uint32(tcp[8:])-s.seqDelta)
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
				acc = csum.Put32At(acc, tcp, j, binary.BigEndian.Uint32(tcp[j:])-s.seqDelta)
			}
		}
	}
}

// ToClient translates a server->client TCP header in place (seq, TSval,
// window) and returns acc plus the checksum change; ok as for ToServer.
// SACK blocks from the server are in the client's own sequence space, which
// is not translated.
func (s *State) ToClient(tcp []byte, acc uint32) (_ uint32, ok bool) {
	opts, ok := header(tcp)
	if !ok {
		return acc, false
	}
	acc = csum.Put32At(acc, tcp, 4, binary.BigEndian.Uint32(tcp[4:])+s.seqDelta)
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
		if at := 20 + o.Off; o.Kind == tcpopt.Timestamps && s.tsTranslate {
			acc = csum.Put32At(acc, tcp, at+2, binary.BigEndian.Uint32(tcp[at+2:])+s.tsDelta)
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
