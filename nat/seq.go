package nat

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/dchest/siphash"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/synproxy"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcpopt"
)

// Local ports are reused toward a real server that may still hold the
// previous connection on the same (LIP, lport, RIP, rport) in TIME_WAIT
// (the server closed first: HTTP/1.0, most short-lived services). Linux
// accepts a new SYN on a TIME_WAIT tuple when its sequence number is after
// the old connection's last one or its timestamp is newer, and refuses it
// outright (PAWS) when its timestamp is older than the old connection's
// (tcp_timewait_state_process). Clients behind one LIP have unrelated
// sequence numbers and clocks, so tapvs gives each plain TCP connection's
// server side its own, per tuple and rising with time:
//
//   - the SYN's ISN is replaced by one of tapvs's own (a keyed hash of the
//     tuple plus a clock ticking every 64 ns, as Linux's own ISNs do), so a
//     new connection on a tuple starts past where the last one ended; the
//     connection's client-side sequence numbers carry the same offset, and
//     the server's acknowledgements of them (ack, SACK blocks) carry it back;
//   - the client's timestamps (TSval) are shifted the same way, by an offset
//     fixed at the SYN: the server sees a TSval that starts at another keyed
//     hash of the tuple plus a clock ticking every 2^19 ns (0.52 ms), so it
//     rises across reuses of the tuple whatever the client's own clock says,
//     and the server's echoes of it (TSecr) carry it back. The server's own
//     TSval goes through untouched: its RTT measurement and PAWS, and the
//     client's, work as without tapvs, and so does a client's tcp_tw_reuse,
//     which needs timestamps.
//
// The clock ticks faster than any 1 ms timestamp clock (Linux's, FreeBSD's),
// with room for one running fast, so a connection on a reused tuple starts
// at or past where a client's clock took the last one; it is slow enough
// that the signed 32-bit comparison Linux makes between the two only wraps
// for a connection that lasted 27 days. A client whose clock ticks faster
// still (Linux's opt-in microsecond timestamps) can end a long connection
// past where the next one on its tuple starts.
//
// TimestampsRemove keeps LVS's way instead (tcp_opt_remove_timestamp,
// fullnat_timestamp_remove_entry): the SYN's timestamp option is blanked to
// NOPs, so the connection runs without timestamps.
//
// With either, a reused tuple is accepted at once, and no quarantine is
// needed (Config.PortQuarantine stays for servers whose stacks refuse even
// that). SYNPROXY connections keep their own handshake and translation:
// their server handshake already ends a TIME_WAIT it runs into
// (nat/synproxy.go).

// Timestamps is what a plain TCP service does with the client's TCP
// timestamp option (RFC 7323) on its way to the real server.
type Timestamps uint8

const (
	// TimestampsTranslate keeps the option and shifts the client's TSval
	// by a per-connection offset (the default).
	TimestampsTranslate Timestamps = iota
	// TimestampsRemove blanks the option from the client's SYN, as LVS
	// FULLNAT does: the connection runs without timestamps.
	TimestampsRemove
)

var timestampsNames = [...]string{"translate", "remove"}

func (t Timestamps) String() string {
	if int(t) < len(timestampsNames) {
		return timestampsNames[t]
	}
	return fmt.Sprintf("Timestamps(%d)", uint8(t))
}

// ParseTimestamps reads a Timestamps by its name (String).
func ParseTimestamps(s string) (Timestamps, error) {
	for i, n := range timestampsNames {
		if s == n {
			return Timestamps(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not a timestamp mode (%s)", s, strings.Join(timestampsNames[:], ", "))
}

// check reports why a service of protocol p cannot have t.
func (t Timestamps) check(p Protocol) error {
	switch {
	case int(t) >= len(timestampsNames):
		return fmt.Errorf("timestamp mode %d is not one", uint8(t))
	case p != TCP && t != TimestampsTranslate:
		return fmt.Errorf("tcp_timestamps is a TCP setting")
	}
	return nil
}

// isnKey keys the ISN hash; a random key per balancer.
type isnKey [2]uint64

func newISNKey() (k isnKey) {
	var b [16]byte
	rand.Read(b[:])
	return isnKey{binary.LittleEndian.Uint64(b[:]), binary.LittleEndian.Uint64(b[8:])}
}

// tsTick is the server-side timestamp clock's tick, as a shift of
// nanoseconds: 2^19 ns, 0.52 ms (see above).
const tsTick = 19

// start is where tapvs starts the server side of a new connection on out
// (the reply tuple, RIP:rport -> LIP:lport): its ISN and its first TSval.
// The same tuple gets rising values over time, different tuples unrelated
// ones; one hash gives both.
func (k isnKey) start(out *tupleKey, now time.Time) (isn, tsval uint32) {
	var m [36]byte
	copy(m[0:16], out.src[:])
	copy(m[16:32], out.dst[:])
	binary.LittleEndian.PutUint16(m[32:], out.sport)
	binary.LittleEndian.PutUint16(m[34:], out.dport)
	h, ns := siphash.Hash(k[0], k[1], m[:]), now.UnixNano()
	return uint32(h) + uint32(ns>>6), uint32(h>>32) + uint32(ns>>tsTick)
}

// The states of Conn.tsOff: a translating connection is made pending, with
// the TSval its server side is to start at; its SYN's walk fixes the offset
// from the SYN's own TSval.
const (
	tsPending = 1 << 32 // | the server side's first TSval
	tsFixed   = 1 << 33 // | the offset added to the client's TSval
)

// serverStart is where a new connection on c's tuple (made, or reused by
// the client on a closing entry) starts its server side now, isn being the
// client's ISN: its sequence offset and its timestamp state (Conn.tsOff:
// pending at the server side's first TSval when it translates, else 0).
func (b *Balancer) serverStart(c *Conn, isn uint32) (seqOff uint32, ts uint64) {
	ours, tsval := b.isnKey.start(&c.out, time.Now())
	if c.timestamps == TimestampsTranslate {
		ts = tsPending | uint64(tsval)
	}
	return ours - isn, ts
}

// seqToServer moves a client segment's sequence number by off (the
// connection's offset, plus a PROXY header's length where proxy.go's place
// says so) and walks its options, once:
//
//   - a TOA option the client wrote itself is blanked to NOPs on every
//     segment (tcpopt.ForgedTOA: it would tell the server an address of
//     the client's choosing);
//   - the timestamp option is translated by ts, the connection's timestamp
//     state as the segment found it (Conn.tsOff): a SYN fixes a pending
//     offset from its own TSval (the server side starts at the pending
//     TSval), and a fixed offset is added to every TSval; or, with
//     TimestampsRemove, the SYN's option is blanked.
//
// It returns acc plus the checksum change and the timestamp state after
// the segment, which the caller stores once the segment is known good; or
// ok false for options that do not parse: the segment is dropped, since a
// toa module, which parses more leniently than tcpopt, could find an option
// past the bad one that tapvs never saw, and the server a timestamp it
// would read untranslated.
func seqToServer(c *Conn, tcp []byte, acc, off uint32, ts uint64) (_ uint32, tsAfter uint64, ok bool) {
	flags := tcp[tcpflag.Offset]
	acc = csum.Put32At(acc, tcp, 4, binary.BigEndian.Uint32(tcp[4:])+off)
	syn := flags&tcpflag.SYN != 0
	hl := int(tcp[12]>>4) * 4
	if hl == tcpMinLen {
		return acc, ts, true // no options
	}
	w := tcpopt.Walk(tcp[tcpMinLen:hl])
	for {
		o, more := w.Next()
		if !more {
			return acc, ts, !w.Malformed()
		}
		switch {
		case tcpopt.ForgedTOA(o):
			acc = tcpopt.Blank(tcp, o, acc)
		case o.Kind != tcpopt.Timestamps:
		case c.timestamps == TimestampsRemove:
			if syn {
				acc = tcpopt.Blank(tcp, o, acc)
			}
		default:
			at := tcpMinLen + o.Off
			tsval := binary.BigEndian.Uint32(tcp[at+2:])
			if syn && ts&tsPending != 0 {
				ts = tsFixed | uint64(uint32(ts)-tsval)
			}
			if ts&tsFixed != 0 {
				acc = csum.Put32At(acc, tcp, at+2, tsval+uint32(ts))
			}
		}
	}
}

// seqToClient takes the offset back out of a server segment's
// acknowledgements of the client's data: its ack number and SACK blocks,
// with any PROXY header's bytes (proxy.go), and the timestamp offset out of
// its echo of the client's TSval (TSecr). On the SYN-ACK of a connection
// with a header, the server's MSS is clamped by the header's length.
func seqToClient(c *Conn, tcp []byte, acc uint32) (_ uint32, ok bool) {
	n := c.pp.len()
	sub, start := c.seqOff.Load()+n, uint32(0)
	if n != 0 {
		start = c.pp.start.Load()
	}
	flags, ts := tcp[tcpflag.Offset], c.tsOff.Load()
	if flags&tcpflag.ACK != 0 {
		acc = csum.Put32At(acc, tcp, 8, synproxy.ClientEdge(binary.BigEndian.Uint32(tcp[8:]), sub, start, n))
	}
	hl := int(tcp[12]>>4) * 4
	if hl == tcpMinLen {
		return acc, true // most segments: no options
	}
	w := tcpopt.Walk(tcp[tcpMinLen:hl])
	for {
		o, more := w.Next()
		if !more {
			return acc, !w.Malformed()
		}
		at := tcpMinLen + o.Off
		switch {
		case o.Kind == tcpopt.SACK:
			acc = synproxy.ClientSACK(tcp, at, o.Len, acc, sub, start, n)
		case o.Kind == tcpopt.Timestamps && flags&tcpflag.ACK != 0 && ts&tsFixed != 0:
			// TSecr is the client's TSval as the server got it (it is
			// only one with ACK set: RFC 7323).
			acc = csum.Put32At(acc, tcp, at+6, binary.BigEndian.Uint32(tcp[at+6:])-uint32(ts))
		case o.Kind == tcpopt.MSS && n != 0 && flags&tcpflag.SYN != 0:
			if mss := binary.BigEndian.Uint16(tcp[at+2:]); uint32(mss) > n {
				acc = csum.Put16At(acc, tcp, at+2, mss-uint16(n))
			}
		}
	}
}
