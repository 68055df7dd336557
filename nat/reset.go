package nat

import (
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/wire"
)

// An established TCP connection that times out is ended with an RST to
// each side, as LVS does (Alibaba LVS tcp_conn_expire_handler, DPVS
// tcp_conn_expire): otherwise a client or server whose peer went silent
// keeps a dead flow open, and its next segment finds no connection here.
// Like both, only ESTABLISHED gets them: a closing connection (FIN_WAIT,
// CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE) expires on its short timeout
// because it is ending anyway, and one still opening has no agreed numbers
// (a SYNPROXY handshake the server never answered gets its own RST from
// synproxyTick).
//
// Which sequence number. Linux (and RFC 5961 §3.2) resets a connection
// only on an RST whose seq is exactly RCV.NXT; one merely in the window
// draws a challenge ACK, which would find no connection here. A host's
// RCV.NXT is what it acknowledges: the ack of the last segment it sent.
// After an idle timeout every receiver has long since acknowledged all it
// got (delayed ACKs wait 40-200 ms), so
//
//   - the RST to the client carries the client's last ack, and
//   - the RST to the real server carries the server's last ack,
//
// each as that host wrote it, in its own sequence space. Recorded raw,
// before any SYNPROXY translation, they need none on the way back: the
// client's ack is in the client's space (the cookie's), the server's in
// the server's (with any bytes tapvs inserted into the client's stream,
// Offsets.Client, already counted by the server). LVS records the
// server's end seq and ack instead and translates the first for the
// client; the client's own ack is better when the server died with data
// in flight: the client's RCV.NXT is what it got, not what the server
// sent.
//
// The cost on the packet path: each direction stores its own ack, only
// when it moves forward. A steady sender's ack does not move, so a bulk
// flow writes on its receiver's ACKs only. An ack that goes backwards (a
// reordered segment) is ignored, as LVS does; wrapping is serial
// arithmetic. A forged segment with a far-ahead ack, from someone on the
// client's path, can only spoil the client's own RST.

// ackValid marks a recorded ack: an ack of 0 is a number like any other.
const ackValid = 1 << 32

// noteAck records the ack of a TCP segment from direction dir (not an RST,
// which ends the connection itself). tcp is the whole TCP header (l4ok).
func (c *Conn) noteAck(dir int, tcp wire.TCP, flags uint8) {
	if flags&(tcpflag.ACK|tcpflag.RST) != tcpflag.ACK {
		return
	}
	ack := tcp.Ack()
	v := &c.acks[dir]
	old := v.Load()
	if old == ackValid|uint64(ack) || (old != 0 && int32(ack-uint32(old)) < 0) {
		return
	}
	v.Store(ackValid | uint64(ack))
}

// lastAck is the last ack recorded from direction dir.
func (c *Conn) lastAck(dir int) (uint32, bool) {
	v := c.acks[dir].Load()
	return uint32(v), v != 0
}

// expireResets sends the RSTs of an established TCP connection that the
// sweep has just taken off the table (st is its state then), and returns
// how many it sent: one to each side whose next sequence number is known.
func (b *Balancer) expireResets(c *Conn, st uint32) int {
	if c.in.proto != TCP || st != stEstablished || (c.sp != nil && !c.sp.Established()) {
		return 0
	}
	var buf [wire.MaxFrameLen]byte
	n := 0
	seq, ok := c.lastAck(dirIn)
	if !ok && c.sp != nil {
		// The client's only ack was its handshake ACK's, which opened
		// the connection before it was in the table: it acked the cookie.
		seq, ok = c.sp.Cookie+1, true
	}
	if ok {
		seg := wire.Segment{
			SrcMAC: b.cfg.ClientMAC, DstMAC: c.clientMAC,
			Src: c.in.dst, Dst: c.in.src, Sport: c.in.dport, Dport: c.in.sport,
			Seq: seq, Flags: tcpflag.RST,
		}
		b.link.Transmit(ClientSide, buf[:seg.Write(buf[:])])
		n++
	}
	seq, ok = c.lastAck(dirOut)
	if !ok && c.sp != nil {
		// The server's only ack was its SYN-ACK's, which SYNPROXY
		// consumes (it acked our SYN, which carried the client's ISN):
		// the server has had nothing from the client since.
		seq, ok = c.sp.ClientISN+1, true
	}
	if mac := c.dest.mac.Load(); ok && mac != 0 {
		seg := wire.Segment{
			SrcMAC: b.cfg.ServerMAC, DstMAC: macBytes(mac),
			Src: c.out.dst, Dst: c.out.src, Sport: c.out.dport, Dport: c.out.sport,
			Seq: seq, Flags: tcpflag.RST,
		}
		b.link.Transmit(ServerSide, buf[:seg.Write(buf[:])])
		n++
	}
	return n
}
