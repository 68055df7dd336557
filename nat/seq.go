package nat

import (
	"crypto/rand"
	"encoding/binary"
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
// the old connection's last one and it carries no timestamp older than the
// old connection's (tcp_timewait_state_process). LVS's FULLNAT makes both
// true for every connection, and so does tapvs, for plain TCP services:
//
//   - the SYN's ISN is replaced by one of tapvs's own, per tuple and rising
//     with time as Linux's own ISNs do (a keyed hash of the tuple plus a
//     clock ticking every 64 ns), so a new connection on a tuple starts past
//     where the last one ended; the connection's client-side sequence
//     numbers carry the same offset, and the server's acknowledgements of
//     them (ack, SACK blocks) carry it back;
//   - the SYN's timestamp option is blanked to NOPs (tcp_opt_remove_timestamp
//     in LVS): clients behind one LIP have unrelated clocks, and a server
//     would take a newer connection's smaller timestamp for an old duplicate.
//
// With both, a reused tuple is accepted at once, and no quarantine is needed
// (Config.PortQuarantine stays for servers whose stacks refuse even that).
// SYNPROXY connections keep their own handshake: their server handshake
// already ends a TIME_WAIT it runs into (nat/synproxy.go).

// isnKey keys the ISN hash; a random key per balancer.
type isnKey [2]uint64

func newISNKey() (k isnKey) {
	var b [16]byte
	rand.Read(b[:])
	return isnKey{binary.LittleEndian.Uint64(b[:]), binary.LittleEndian.Uint64(b[8:])}
}

// isn is the ISN tapvs gives the server side of a new connection on out
// (the reply tuple, RIP:rport -> LIP:lport): the same tuple gets rising
// values over time, different tuples unrelated ones.
func (k isnKey) isn(out *tupleKey, now time.Time) uint32 {
	var m [36]byte
	copy(m[0:16], out.src[:])
	copy(m[16:32], out.dst[:])
	binary.LittleEndian.PutUint16(m[32:], out.sport)
	binary.LittleEndian.PutUint16(m[34:], out.dport)
	return uint32(siphash.Hash(k[0], k[1], m[:])) + uint32(now.UnixNano()>>6)
}

// seqToServer moves a client segment's sequence number by off (the
// connection's offset, plus a PROXY header's length where proxy.go's place
// says so) and walks its options: a SYN's timestamp option is blanked to
// NOPs, and so is, on every segment, a TOA option the client wrote itself
// (tcpopt.ForgedTOA: it would tell the server an address of the client's
// choosing). It returns acc plus the checksum change, or ok false for
// options that do not parse: the segment is dropped, since a toa module,
// which parses more leniently than tcpopt, could find an option past the
// bad one that tapvs never saw.
func seqToServer(tcp []byte, acc, off uint32) (_ uint32, ok bool) {
	flags := tcp[tcpflag.Offset]
	acc = csum.Put32At(acc, tcp, 4, binary.BigEndian.Uint32(tcp[4:])+off)
	hl := int(tcp[12]>>4) * 4
	if hl == tcpMinLen {
		return acc, true // most segments with no timestamps: no options
	}
	w := tcpopt.Walk(tcp[tcpMinLen:hl])
	for {
		o, more := w.Next()
		if !more {
			return acc, !w.Malformed()
		}
		if o.Kind == tcpopt.Timestamps && flags&tcpflag.SYN != 0 || tcpopt.ForgedTOA(o) {
			acc = tcpopt.Blank(tcp, o, acc)
		}
	}
}

// seqToClient takes the offset back out of a server segment's
// acknowledgements of the client's data: its ack number and SACK blocks,
// with any PROXY header's bytes (proxy.go). On the SYN-ACK of a connection
// with a header, the server's MSS is clamped by the header's length.
func seqToClient(c *Conn, tcp []byte, acc uint32) (_ uint32, ok bool) {
	n := c.pp.len()
	sub, start := c.seqOff.Load()+n, uint32(0)
	if n != 0 {
		start = c.pp.start.Load()
	}
	flags := tcp[tcpflag.Offset]
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
		case o.Kind == tcpopt.MSS && n != 0 && flags&tcpflag.SYN != 0:
			if mss := binary.BigEndian.Uint16(tcp[at+2:]); uint32(mss) > n {
				acc = csum.Put16At(acc, tcp, at+2, mss-uint16(n))
			}
		}
	}
}
