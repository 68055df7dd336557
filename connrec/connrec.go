// Package connrec is the one record of a FULLNAT connection's state: what
// another process needs to continue the connection where this one leaves
// it (a peer instance's connection sync, a restart that takes the table
// over), as plain values, and its byte encoding. The record is outside
// input wherever it is read (a peer's datagram, a socket from another
// process), so Decode checks every length before reading, every field
// against the values it may take, and refuses a bad record whole, naming
// the field; it allocates nothing.
//
// It sits below nat and imports nothing of it: nat exports its
// connections as records and imports them back (nat/export.go), and
// connsync carries them as opaque bytes, calling Decode to check them.
//
// # Layout (record version 1)
//
// Big-endian. A record is an 88-byte core, then extensions; its length is
// a multiple of 4, at most MaxLen.
//
//	off size field
//	  0  1   kind: 1 open (a connection, new or changed), 2 closed (a tombstone),
//	         3 a persistence template (KindTemplate: client network, cport
//	         0, vport 0 for an all-ports service, rport 0 for a server of
//	         the client's port, LIP unspecified, lport 0, state 0)
//	  1  1   record version: 1; a record of another version is refused whole
//	  2  2   length: core and extensions, a multiple of 4, CoreLen..MaxLen
//	  4  1   proto: 6 TCP, 17 UDP
//	  5  1   state: IPVS's names (State), 0..10; UDP's is 1 (ESTABLISHED)
//	  6  1   flags: b0 SYNPROXY, b1 client side IPv6, b2 server side IPv6
//	         (b1 without b2: NAT64, b2 without b1: NAT46), b3
//	         tcp_timestamps remove; others 0
//	  7  1   client address mode: 0 none, 1 TOA, 2 PROXY v1, 3 PROXY v2
//	  8  4   version: the connection's update counter (serial arithmetic)
//	 12  4   lifetime left, ms, at most 30 days (nat.MaxTimeout)
//	 16 16   client address   (IPv4 as ::ffff:a.b.c.d; family by b1)
//	 32 16   VIP              (family by b1)
//	 48 16   LIP              (family by b2)
//	 64 16   real server      (family by b2)
//	 80  2   client port      (each port not 0 but as a template says)
//	 82  2   VIP port
//	 84  2   LIP port
//	 86  2   real server port
//	 88      extensions
//
// An extension is type u8, length u8 (of the value), the value, and zero
// bytes to the next multiple of 4. Types come in ascending order (so each
// at most once). A type with bit 7 set may be skipped by a reader that does
// not know it (LVS's IPVS_OPT_F_PARAM idea); an unknown type without it
// refuses the record. A known type with a value of the wrong length, or
// not where its record needs it, refuses the record too.
//
//	type 1 REWRITER, value 36, 40 with header and padding; every open TCP record.
//	       The connection's tcprw.Rewriter whole, which holds every number
//	       tapvs shifts: the PROXY header's place (Start, Insert, Past) and
//	       TOA's ack (TOAAck, TOAKnown) included; the PROXY header's bytes
//	       are rebuilt from the tuple.
//	   0  4 Client     4  4 Server    8  4 Start     12  4 Insert
//	  16  4 TSClient  20  4 TSServer 24  4 TOAAck    28  2 MSSToServer
//	  30  2 MSSToClient              32  1 WinIn     33  1 WinOut
//	  34  1 WinOutR   35  1 Flags (tcprw's bits; bit 7 0); window shifts 0..14
//	type 2 SYNPROXY, value 21, 24 in all; an open record with flag b0 (an
//	       established SYNPROXY connection: what synproxy.State keeps past
//	       Establish besides the rewriter).
//	   0  4 ClientISN  4  4 Cookie    8  4 ClientTSval  12  4 OurTSval
//	  16  2 MSS       18  1 WScale   19  1 OurWScale (each -1..14)
//	  20  1 b0 SACK, b1 TS, b2 TSOn; others 0
//	type 3 ACKS, value 10, 12 in all; every open TCP record. The last ack
//	       each side sent (nat/reset.go: the RSTs of an expired connection).
//	   0  1 valid: b0 the client's, b1 the server's; others 0
//	   1  1 0
//	   2  4 the client's last ack (0 unless valid)
//	   6  4 the server's last ack (0 unless valid)
//	type 0x81 NEXTHOP, value 6, 8 in all; optional: the client side's next
//	       hop (a MAC) on the box that wrote it. Skippable: meaningful to a
//	       process on the same box (a takeover), not to a peer.
//
// Sizes: a tombstone, a template and a UDP record are the core, 88 bytes; plain TCP
// 88+40+12 = 140; SYNPROXY 164; each 8 more with NEXTHOP (172 at most of
// the types known here).
package connrec

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/tcprw"
	"github.com/tapvs/tapvs/wire"
)

// Sizes and versions.
const (
	CoreLen = 88  // the core, without extensions
	MaxLen  = 256 // the longest record Decode accepts
	Ver     = 1   // the record version AppendTo writes and Decode accepts

	// MaxLifetimeMS bounds the lifetime left: the largest timeout tapvs
	// can be configured with (nat.MaxTimeout, 30 days).
	MaxLifetimeMS = 30 * 24 * 3600 * 1000
)

// Kind is what a record says of its connection.
type Kind uint8

// Kinds.
const (
	KindOpen   Kind = 1 // the connection, as it is now
	KindClosed Kind = 2 // a tombstone: the connection has left the table
	// KindTemplate is a persistence template (IPVS's connection with
	// IP_VS_CONN_F_TEMPLATE): Client is the masked client network with
	// cport 0, VIP:vport the persistent service (vport 0: all ports),
	// Server:rport its real server, the lifetime what is left of it; no
	// LIP (unspecified, lport 0), state NONE, no extension.
	KindTemplate Kind = 3
)

// State is a TCP connection's state as the record carries it: IPVS's names
// in IPVS's order (ipvsadm -lnc), pinned here whatever order nat keeps.
type State uint8

// States.
const (
	StateNone State = iota
	StateEstablished
	StateSynSent
	StateSynRecv
	StateFinWait
	StateTimeWait
	StateClose
	StateCloseWait
	StateLastAck
	StateListen
	StateSynAck
	NumStates
)

// Flags of a record.
type Flags uint8

// Flags.
const (
	FlagSynproxy Flags = 1 << iota // opened by the SYN proxy (SYNPROXY extension)
	FlagClient6                    // client side IPv6
	FlagServer6                    // server side IPv6
	FlagTSRemove                   // the service's tcp_timestamps was remove when it was made
	flagsKnown   = FlagSynproxy | FlagClient6 | FlagServer6 | FlagTSRemove
)

// ClientAddr is how the connection passes the client's address on, as the
// connection recorded it when it was made (nat.ClientAddr's numbers).
type ClientAddr uint8

// Client address modes: nat.ClientAddr's numbers, pinned here.
const (
	ClientAddrNone, ClientAddrTOA, ClientAddrProxyV1, ClientAddrProxyV2 ClientAddr = 0, 1, 2, 3

	numClientAddr = 4
)

// Extension types.
const (
	extRewriter = 1
	extSynproxy = 2
	extAcks     = 3
	extNextHop  = 0x81
	extSkip     = 0x80 // a type with this bit may be skipped when unknown

	rewriterLen = 36
	synproxyLen = 21
	acksLen     = 10
	nextHopLen  = 6
)

// Ext marks which extensions a record has.
type Ext uint8

// Extensions present.
const (
	ExtRewriter Ext = 1 << iota
	ExtSynproxy
	ExtAcks
	ExtNextHop
)

// Synproxy is what an established SYNPROXY connection's synproxy.State
// holds besides its rewriter: the cookie handshake's numbers and the
// client's SYN options.
type Synproxy struct {
	ClientISN   uint32
	Cookie      uint32 // the server ISN the client knows
	ClientTSval uint32
	OurTSval    uint32
	MSS         uint16
	WScale      int8 // -1: the client did not offer window scaling
	OurWScale   int8 // -1: our SYN-ACK did not
	SACK, TS    bool // the client's SYN options
	TSOn        bool // the client's ACK carried timestamps
}

// Acks are the last ack each side sent, by direction: 0 from the client,
// 1 from the server (nat/reset.go).
type Acks struct {
	Valid [2]bool
	Ack   [2]uint32
}

// Record is one connection's state, plain values. Addresses are 16 bytes,
// IPv4 as ::ffff:a.b.c.d, as nat keys them.
type Record struct {
	Kind       Kind
	Proto      uint8 // wire.ProtoTCP, wire.ProtoUDP
	State      State
	Flags      Flags
	ClientAddr ClientAddr
	Version    uint32
	LifetimeMS uint32

	Client, VIP, LIP, Server   [16]byte
	CPort, VPort, LPort, RPort uint16

	Ext      Ext // which of the extensions below the record has
	Rewriter tcprw.Rewriter
	Synproxy Synproxy
	Acks     Acks
	NextHop  [6]byte

	// unknown holds the skippable extensions this version does not know,
	// as they came (header, value, padding), so that a record re-encodes
	// to the bytes it was read from.
	unknown    [MaxLen - CoreLen]byte
	unknownLen uint8
}

// Len is the length of r's encoding.
func (r *Record) Len() int {
	n := CoreLen + int(r.unknownLen)
	if r.Ext&ExtRewriter != 0 {
		n += padded(rewriterLen)
	}
	if r.Ext&ExtSynproxy != 0 {
		n += padded(synproxyLen)
	}
	if r.Ext&ExtAcks != 0 {
		n += padded(acksLen)
	}
	if r.Ext&ExtNextHop != 0 {
		n += padded(nextHopLen)
	}
	return n
}

// padded is an extension's length with its header and padding.
func padded(v int) int { return (2 + v + 3) &^ 3 }

// AppendTo appends r's encoding to b. A record Decode returned encodes to
// the bytes it was read from; one built otherwise should pass Check.
func (r *Record) AppendTo(b []byte) []byte {
	n := r.Len()
	start := len(b)
	b = append(b, make([]byte, n)...)
	w := b[start:]
	w[0], w[1] = byte(r.Kind), Ver
	binary.BigEndian.PutUint16(w[2:], uint16(n))
	w[4], w[5], w[6], w[7] = r.Proto, byte(r.State), byte(r.Flags), byte(r.ClientAddr)
	binary.BigEndian.PutUint32(w[8:], r.Version)
	binary.BigEndian.PutUint32(w[12:], r.LifetimeMS)
	copy(w[16:], r.Client[:])
	copy(w[32:], r.VIP[:])
	copy(w[48:], r.LIP[:])
	copy(w[64:], r.Server[:])
	binary.BigEndian.PutUint16(w[80:], r.CPort)
	binary.BigEndian.PutUint16(w[82:], r.VPort)
	binary.BigEndian.PutUint16(w[84:], r.LPort)
	binary.BigEndian.PutUint16(w[86:], r.RPort)

	at := CoreLen
	unk := r.unknown[:r.unknownLen]
	// put writes the unknown extensions of types below t, then t's header,
	// and returns where its value goes.
	put := func(t byte, vlen int) []byte {
		for len(unk) > 0 && unk[0] < t {
			l := padded(int(unk[1]))
			at += copy(w[at:], unk[:l])
			unk = unk[l:]
		}
		w[at], w[at+1] = t, byte(vlen)
		v := w[at+2 : at+2+vlen]
		at += padded(vlen)
		return v
	}
	if r.Ext&ExtRewriter != 0 {
		v, rw := put(extRewriter, rewriterLen), &r.Rewriter
		putWords(v, rw.Client, rw.Server, rw.Start, rw.Insert, rw.TSClient, rw.TSServer, rw.TOAAck)
		binary.BigEndian.PutUint16(v[28:], rw.MSSToServer)
		binary.BigEndian.PutUint16(v[30:], rw.MSSToClient)
		v[32], v[33], v[34], v[35] = byte(rw.WinIn), byte(rw.WinOut), byte(rw.WinOutR), rw.Flags
	}
	if r.Ext&ExtSynproxy != 0 {
		v, sp := put(extSynproxy, synproxyLen), &r.Synproxy
		putWords(v, sp.ClientISN, sp.Cookie, sp.ClientTSval, sp.OurTSval)
		binary.BigEndian.PutUint16(v[16:], sp.MSS)
		v[18], v[19], v[20] = byte(sp.WScale), byte(sp.OurWScale), bit(sp.SACK, 0)|bit(sp.TS, 1)|bit(sp.TSOn, 2)
	}
	if r.Ext&ExtAcks != 0 {
		v := put(extAcks, acksLen)
		v[0] = bit(r.Acks.Valid[0], 0) | bit(r.Acks.Valid[1], 1)
		binary.BigEndian.PutUint32(v[2:], r.Acks.Ack[0])
		binary.BigEndian.PutUint32(v[6:], r.Acks.Ack[1])
	}
	if r.Ext&ExtNextHop != 0 {
		copy(put(extNextHop, nextHopLen), r.NextHop[:])
	}
	copy(w[at:], unk) // unknown extensions past every known type
	return b
}

// putWords writes ws at the start of v, 4 bytes each.
func putWords(v []byte, ws ...uint32) {
	for i, w := range ws {
		binary.BigEndian.PutUint32(v[4*i:], w)
	}
}

// getWords reads ws from the start of v, 4 bytes each.
func getWords(v []byte, ws ...*uint32) {
	for i, w := range ws {
		*w = binary.BigEndian.Uint32(v[4*i:])
	}
}

func bit(v bool, n uint) byte {
	if v {
		return 1 << n
	}
	return 0
}

// Error is a refused record: the field and what is wrong with it.
type Error struct {
	Field, Why string
}

func (e *Error) Error() string { return "connrec: " + e.Field + ": " + e.Why }

// The refusals, made once: Decode allocates nothing.
var (
	errShort      = &Error{"length", "past the bytes given"}
	errLen        = &Error{"length", "not a multiple of 4 in 88..256"}
	errKind       = &Error{"kind", "not open (1), closed (2) or template (3)"}
	errTmplState  = &Error{"state", "not NONE (0) on a template"}
	errTmplFlags  = &Error{"flags", "SYNPROXY or timestamps remove on a template"}
	errTmplCA     = &Error{"client address mode", "not 0 on a template"}
	errTmplCPort  = &Error{"cport", "not 0 on a template"}
	errTmplLIP    = &Error{"LIP", "not unspecified with lport 0 on a template"}
	errVer        = &Error{"record version", "not 1"}
	errProto      = &Error{"proto", "not TCP (6) or UDP (17)"}
	errState      = &Error{"state", "not 0..10"}
	errStateUDP   = &Error{"state", "not ESTABLISHED (1) for UDP"}
	errFlags      = &Error{"flags", "reserved bit set"}
	errFlagsUDP   = &Error{"flags", "SYNPROXY or timestamps remove on UDP"}
	errClientAddr = &Error{"client address mode", "not 0..3"}
	errCAUDP      = &Error{"client address mode", "TOA or PROXY v1 on UDP"}
	errLifetime   = &Error{"lifetime", "past 30 days"}
	errClient     = &Error{"client address", "family not the flags' (b1)"}
	errVIP        = &Error{"VIP", "family not the flags' (b1)"}
	errLIP        = &Error{"LIP", "family not the flags' (b2)"}
	errServer     = &Error{"real server", "family not the flags' (b2)"}
	errCPort      = &Error{"cport", "0"}
	errVPort      = &Error{"vport", "0"}
	errLPort      = &Error{"lport", "0"}
	errRPort      = &Error{"rport", "0"}
	errExtShort   = &Error{"extension", "header or value past the record's length"}
	errExtOrder   = &Error{"extension", "types not in ascending order"}
	errExtUnknown = &Error{"extension", "unknown type, not skippable"}
	errExtLen     = &Error{"extension", "value of the wrong length for its type"}
	errExtPad     = &Error{"extension", "padding not zero"}
	errExtClosed  = &Error{"extension", "a known extension on a tombstone or template"}
	errRewriter   = &Error{"rewriter", "missing on an open TCP record, or on UDP"}
	errRwFlags    = &Error{"rewriter flags", "bit 7 set"}
	errRwWin      = &Error{"rewriter window shift", "not 0..14"}
	errSynproxy   = &Error{"synproxy", "present without flag b0, or missing with it"}
	errSpWScale   = &Error{"synproxy window scale", "not -1..14"}
	errSpBits     = &Error{"synproxy options", "reserved bit set"}
	errAcks       = &Error{"acks", "missing on an open TCP record, or on UDP"}
	errAcksValid  = &Error{"acks valid", "reserved bit set, padding not 0, or an ack not marked valid not 0"}
)

// Decode reads the record at the start of b and returns it and its length.
// A record that fails any check is refused whole, with an *Error naming
// the field; nothing of it is returned.
func Decode(b []byte) (r Record, n int, err error) {
	if len(b) < 4 {
		return Record{}, 0, errShort
	}
	if Kind(b[0]) != KindOpen && Kind(b[0]) != KindClosed && Kind(b[0]) != KindTemplate {
		return Record{}, 0, errKind
	}
	if b[1] != Ver {
		return Record{}, 0, errVer
	}
	n = int(binary.BigEndian.Uint16(b[2:]))
	if n%4 != 0 || n < CoreLen || n > MaxLen {
		return Record{}, 0, errLen
	}
	if n > len(b) {
		return Record{}, 0, errShort
	}
	b = b[:n]
	if err := r.core(b); err != nil {
		return Record{}, 0, err
	}
	if err := r.extensions(b[CoreLen:]); err != nil {
		return Record{}, 0, err
	}
	return r, n, nil
}

// core reads and checks the core (b is the whole record, at least CoreLen).
func (r *Record) core(b []byte) error {
	r.Kind, r.Proto, r.State, r.Flags, r.ClientAddr = Kind(b[0]), b[4], State(b[5]), Flags(b[6]), ClientAddr(b[7])
	r.Version = binary.BigEndian.Uint32(b[8:])
	r.LifetimeMS = binary.BigEndian.Uint32(b[12:])
	r.Client, r.VIP, r.LIP, r.Server = [16]byte(b[16:32]), [16]byte(b[32:48]), [16]byte(b[48:64]), [16]byte(b[64:80])
	r.CPort = binary.BigEndian.Uint16(b[80:])
	r.VPort = binary.BigEndian.Uint16(b[82:])
	r.LPort = binary.BigEndian.Uint16(b[84:])
	r.RPort = binary.BigEndian.Uint16(b[86:])
	udp := r.Proto == wire.ProtoUDP
	c6, s6 := r.Flags&FlagClient6 != 0, r.Flags&FlagServer6 != 0
	if r.Kind == KindTemplate {
		return r.template(udp, c6, s6)
	}
	switch {
	case r.Proto != wire.ProtoTCP && !udp:
		return errProto
	case r.State >= NumStates:
		return errState
	case udp && r.State != StateEstablished:
		return errStateUDP
	case r.Flags&^flagsKnown != 0:
		return errFlags
	case udp && r.Flags&(FlagSynproxy|FlagTSRemove) != 0:
		return errFlagsUDP
	case r.ClientAddr >= numClientAddr:
		return errClientAddr
	case udp && (r.ClientAddr == ClientAddrTOA || r.ClientAddr == ClientAddrProxyV1):
		return errCAUDP
	case r.LifetimeMS > MaxLifetimeMS:
		return errLifetime
	}
	if err := r.families(c6, s6); err != nil {
		return err
	}
	switch {
	case r.CPort == 0:
		return errCPort
	case r.VPort == 0:
		return errVPort
	case r.LPort == 0:
		return errLPort
	case r.RPort == 0:
		return errRPort
	}
	return nil
}

// families checks that each address is of the family the flags say (b1
// the client side's, b2 the server side's).
func (r *Record) families(c6, s6 bool) error {
	switch {
	case wire.Is4(&r.Client) == c6:
		return errClient
	case wire.Is4(&r.VIP) == c6:
		return errVIP
	case wire.Is4(&r.LIP) == s6:
		return errLIP
	case wire.Is4(&r.Server) == s6:
		return errServer
	}
	return nil
}

// template checks a template's core: the families as a connection's, the
// rest as KindTemplate says.
func (r *Record) template(udp, c6, s6 bool) error {
	unspec := [16]byte{10: 0xff, 11: 0xff} // ::ffff:0.0.0.0
	if s6 {
		unspec = [16]byte{}
	}
	switch {
	case r.Proto != wire.ProtoTCP && !udp:
		return errProto
	case r.State != StateNone:
		return errTmplState
	case r.Flags&^flagsKnown != 0:
		return errFlags
	case r.Flags&(FlagSynproxy|FlagTSRemove) != 0:
		return errTmplFlags
	case r.ClientAddr != ClientAddrNone:
		return errTmplCA
	case r.LifetimeMS > MaxLifetimeMS:
		return errLifetime
	}
	if err := r.families(c6, s6); err != nil {
		return err
	}
	switch {
	case r.CPort != 0:
		return errTmplCPort
	case r.LIP != unspec || r.LPort != 0:
		return errTmplLIP
	}
	return nil
}

// extensions reads and checks the extensions (b: the record past its core).
func (r *Record) extensions(b []byte) error {
	last := -1
	for len(b) > 0 {
		if len(b) < 2 {
			return errExtShort
		}
		t, vlen := b[0], int(b[1])
		l := padded(vlen)
		if l > len(b) {
			return errExtShort
		}
		if int(t) <= last {
			return errExtOrder
		}
		last = int(t)
		for _, p := range b[2+vlen : l] {
			if p != 0 {
				return errExtPad
			}
		}
		v := b[2 : 2+vlen]
		want, e := 0, Ext(0)
		switch t {
		case extRewriter:
			want, e = rewriterLen, ExtRewriter
		case extSynproxy:
			want, e = synproxyLen, ExtSynproxy
		case extAcks:
			want, e = acksLen, ExtAcks
		case extNextHop:
			want, e = nextHopLen, ExtNextHop
		default:
			if t&extSkip == 0 {
				return errExtUnknown
			}
			// unknown holds MaxLen-CoreLen bytes: all a record's
			// extensions, whatever they are.
			r.unknownLen += uint8(copy(r.unknown[r.unknownLen:], b[:l]))
			b = b[l:]
			continue
		}
		if vlen != want {
			return errExtLen
		}
		if r.Kind != KindOpen && e != ExtNextHop {
			return errExtClosed
		}
		r.Ext |= e
		if err := r.value(e, v); err != nil {
			return err
		}
		b = b[l:]
	}
	return r.needs()
}

// value reads one known extension's value, of its length.
func (r *Record) value(e Ext, v []byte) error {
	switch e {
	case ExtRewriter:
		rw := &r.Rewriter
		getWords(v, &rw.Client, &rw.Server, &rw.Start, &rw.Insert, &rw.TSClient, &rw.TSServer, &rw.TOAAck)
		rw.MSSToServer = binary.BigEndian.Uint16(v[28:])
		rw.MSSToClient = binary.BigEndian.Uint16(v[30:])
		rw.WinIn, rw.WinOut, rw.WinOutR, rw.Flags = int8(v[32]), int8(v[33]), int8(v[34]), v[35]
		if rw.Flags&0x80 != 0 {
			return errRwFlags
		}
		// A shift is a shift count on the packet path: out of range, a
		// panic there.
		if !shift(rw.WinIn, 0) || !shift(rw.WinOut, 0) || !shift(rw.WinOutR, 0) {
			return errRwWin
		}
	case ExtSynproxy:
		sp := &r.Synproxy
		getWords(v, &sp.ClientISN, &sp.Cookie, &sp.ClientTSval, &sp.OurTSval)
		sp.MSS = binary.BigEndian.Uint16(v[16:])
		sp.WScale, sp.OurWScale = int8(v[18]), int8(v[19])
		if !shift(sp.WScale, -1) || !shift(sp.OurWScale, -1) {
			return errSpWScale
		}
		if v[20]&^7 != 0 {
			return errSpBits
		}
		sp.SACK, sp.TS, sp.TSOn = v[20]&1 != 0, v[20]&2 != 0, v[20]&4 != 0
	case ExtAcks:
		a := &r.Acks
		a.Valid = [2]bool{v[0]&1 != 0, v[0]&2 != 0}
		a.Ack = [2]uint32{binary.BigEndian.Uint32(v[2:]), binary.BigEndian.Uint32(v[6:])}
		if v[0]&^3 != 0 || v[1] != 0 || (!a.Valid[0] && a.Ack[0] != 0) || (!a.Valid[1] && a.Ack[1] != 0) {
			return errAcksValid
		}
	case ExtNextHop:
		r.NextHop = [6]byte(v)
	}
	return nil
}

// shift reports whether s is a window scale shift: lo..14 (RFC 7323's
// largest).
func shift(s, lo int8) bool { return s >= lo && s <= 14 }

// needs checks that the record has the extensions its kind, protocol and
// flags need, and none they exclude.
func (r *Record) needs() error {
	open := r.Kind == KindOpen
	tcp := r.Proto == wire.ProtoTCP
	switch {
	case (r.Ext&ExtRewriter != 0) != (open && tcp):
		return errRewriter
	case (r.Ext&ExtAcks != 0) != (open && tcp):
		return errAcks
	case (r.Ext&ExtSynproxy != 0) != (open && r.Flags&FlagSynproxy != 0):
		return errSynproxy
	}
	return nil
}

// Check runs Decode's checks on a record built in memory (an exporter's):
// what AppendTo writes of r decodes back to r.
func (r *Record) Check() error {
	var b [MaxLen]byte
	if r.Len() > MaxLen {
		return errLen
	}
	_, _, err := Decode(r.AppendTo(b[:0]))
	return err
}
