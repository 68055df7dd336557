package nat

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/dchest/siphash"

	"github.com/tapvs/tapvs/tcprw"
	"github.com/tapvs/tapvs/wire"
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
// past where the next one on its tuple starts. Nor does a client's clock
// bound its TSvals: Linux stamps a segment with its pacing's departure
// time, milliseconds ahead. So a client that reuses its port on the
// closing entry gets a start past what the last connection actually sent
// the server, not only past the clocks (pastLast).
//
// TimestampsRemove keeps LVS's way instead (tcp_opt_remove_timestamp,
// fullnat_timestamp_remove_entry): the SYN's timestamp option is blanked to
// NOPs, so the connection runs without timestamps.
//
// With either, a reused tuple is accepted at once, and no quarantine is
// needed (Config.PortQuarantine stays for servers whose stacks refuse even
// that). Both are the connection's rewriter's (tcprw.Rewriter: Client,
// TSClient), applied in the one walk over each segment's options that
// also blanks a client's own TOA option and moves a PROXY header's bytes. SYNPROXY connections keep their own handshake and translation:
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

// newRewriter is the rewriter of a new plain TCP connection c (made, not
// yet published) whose client's ISN is isn: its server side's start
// (serverStart), its PROXY header's length and place (proxy.go), and the
// MSS clamps of its SYNs: a TOA connection's server may not announce more
// than leaves room for the option in the client's segments (toa.go), and a
// NAT64 or NAT46 connection's SYNs are clamped by the families' header
// sizes (nat64.go), the server's less its PROXY header.
func (b *Balancer) newRewriter(c *Conn, isn uint32) *tcprw.Rewriter {
	r := &tcprw.Rewriter{Insert: c.pp.len()}
	b.serverStart(c, isn, r)
	switch {
	case c.nat64() || c.nat46():
		// The clamp is the MSS after the header's length is taken off
		// (tcprw: MSSToClient): a full segment and the header, or the
		// TOA option, fit the server side in its family.
		r.MSSToServer, r.MSSToClient = b.clientMSS(wire.Is4(&c.in.src)), b.serverMSS(wire.Is4(&c.out.src))-uint16(r.Insert)
		if c.clientAddr == ClientAddrTOA {
			r.MSSToClient -= uint16(c.toaSize())
		}
	case c.clientAddr == ClientAddrTOA:
		r.MSSToClient = uint16(b.cfg.ServerMTU - ipHdrLen(wire.Is4(&c.out.src)) - wire.TCPMinLen - c.toaSize())
	}
	return r
}

// serverStart sets r to start the server side of a new connection on c's
// tuple now (made, or reused by the client on a closing entry), isn being
// the client's ISN: the client's offset (tapvs's ISN less the client's,
// and any PROXY header's length), where the client's stream starts, and
// the timestamp translation: pending at the server side's first TSval
// (the SYN's walk fixes the offset from its own TSval), or the SYN's
// option blanked with TimestampsRemove.
func (b *Balancer) serverStart(c *Conn, isn uint32, r *tcprw.Rewriter) {
	ours, tsval := b.isnKey.start(&c.out, time.Now())
	r.Client, r.Start = ours-isn+r.Insert, isn+1
	r.Flags &^= tcprw.Past | tcprw.TSClientOn | tcprw.TSPending | tcprw.TSRemove
	r.TSClient = 0
	if c.timestamps == TimestampsTranslate {
		r.TSClient, r.Flags = tsval, r.Flags|tcprw.TSPending
	} else {
		r.Flags |= tcprw.TSRemove
	}
}

// noteTS records tsval, a TSval the client's segment takes to the server,
// when it is the highest yet; a SYN that starts a new connection on the
// entry (renewed) starts the record again.
func (c *Conn) noteTS(tsval uint32, renewed bool) {
	old := c.tsSent.Load()
	if !renewed && old != 0 && int32(tsval-uint32(old)) <= 0 {
		return
	}
	c.tsSent.Store(ackValid | uint64(tsval))
}

// pastLast moves the start of a new connection on c's tuple (r, which
// serverStart set; the client reuses its port on the closing entry) past
// where the last one ended at the server, should the clocks not have
// done it: its first TSval past the last one's highest, its ISN past the
// server's last ack. A Linux client stamps a segment with the time it
// is to leave (its pacing's departure time), so its TSvals can run ahead
// of its clock (10 ms seen on the handshake's ACK): a connection that
// lasts a few milliseconds can end past where the clock tapvs starts the
// next one from has got to, and a server in TIME_WAIT refuses an older
// TSval (PAWS), or, without timestamps, a sequence number at or before
// its last ack.
func (c *Conn) pastLast(r *tcprw.Rewriter) {
	if v := c.tsSent.Load(); v != 0 && r.Flags&tcprw.TSPending != 0 && int32(uint32(v)+1-r.TSClient) > 0 {
		r.TSClient = uint32(v) + 1
	}
	if ack, ok := c.lastAck(dirOut); ok {
		// The server's ISN space is tapvs's: the client's start is
		// r.Start, and tapvs's ISN is r.Start-1 + r.Client less what a
		// PROXY header inserts.
		if isn := r.Start - 1 + r.Client - r.Insert; int32(isn-ack) <= 0 {
			r.Client += ack - isn + 1
		}
	}
}

// fixTS publishes the timestamp offset off that a client SYN fixed on c,
// whose rewriter was pending at the server side's first TSval start. A
// retransmission of the SYN on another reader may have fixed it first
// (each SYN's TSval then maps to the server side's first TSval, and later
// segments follow the offset stored); a change of another field meanwhile
// (the server's reader's) keeps the fix.
func (c *Conn) fixTS(start, off uint32) {
	c.editRewriter(func(r *tcprw.Rewriter) bool {
		if r.Flags&tcprw.TSPending == 0 || r.TSClient != start {
			return false
		}
		r.FixTS(off)
		return true
	})
}

// rewriteDrop is the drop reason of a segment the rewriter refused.
func rewriteDrop(f tcprw.Result) DropReason {
	if f == tcprw.Overlap {
		return DropProxyOverlap
	}
	return DropBadOptions
}
