package nat

import (
	"time"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// The reset family of faults (Fault.ResetBytes, ResetAfter): a TCP
// connection ended with an RST to each side, as a middlebox or a crashed
// peer ends one (Toxiproxy's limit_data and reset_peer, without a proxy).
//
// After N bytes: a connection's stream in the fault's direction is
// counted by sequence number from its SYN (or from the first segment the
// fault saw, for a connection older than the fault), as it leaves tapvs
// (in the receiver's sequence space). The segment that would carry the
// stream past N bytes is cut to end at exactly N (its FIN, if any, goes
// with what is cut), sent, and followed by an RST whose sequence number
// is where the receiver's next byte would have been: its RCV.NXT, the
// only value Linux accepts without a challenge ACK (RFC 5961 3.2). The
// sender gets an RST carrying its own last ack (reset.go). A
// retransmission of bytes below N passes; none past it does.
//
// After a time: a timer per connection, started when the fault first sees
// it, sends both RSTs as an idle timeout does (reset.go's numbers) and
// closes the entry, whether or not the connection is busy then.

// connFault is a fault's state on one connection, made when the fault
// first sees one of its TCP frames (Conn.fault).
type connFault struct {
	r *faultRule
	// start is, by direction (lineOf), the sequence number of the
	// stream's first byte counted, as it leaves tapvs; known says it has
	// been seen. Each is written by its direction's reader only.
	start [2]uint32
	known [2]bool
	cut   [2]bool // the stream has been cut and reset

	timer *time.Timer
}

// faultState is c's state for rule r, made on first sight. A connection
// keeps the state of the first rule that saw it; a later rule (the fault
// replaced) starts its own.
func (b *Balancer) faultState(c *Conn, r *faultRule) *connFault {
	if cf := c.fault.Load(); cf != nil && cf.r == r {
		return cf
	}
	cf := &connFault{r: r}
	if d := r.ResetAfter; d > 0 {
		// Made before cf is published, so whoever reads cf sees it; the
		// table's release stops it (a connection gone holds no timer).
		cf.timer = time.AfterFunc(d, func() { b.faultResetLater(c, cf) })
	}
	old := c.fault.Load()
	if old != nil && old.timer != nil {
		old.timer.Stop() // a replaced fault's
	}
	if !c.fault.CompareAndSwap(old, cf) {
		if cf.timer != nil {
			cf.timer.Stop()
		}
		if cf = c.fault.Load(); cf != nil && cf.r == r {
			return cf // the other direction's reader made it
		}
		return nil // replaced meanwhile: this frame goes on uncounted
	}
	return cf
}

// faultResetLater is ResetAfter's timer: both RSTs, if the connection is
// still open and its fault still in force.
func (b *Balancer) faultResetLater(c *Conn, cf *connFault) {
	if !cf.r.live.Load() || c.fault.Load() != cf {
		return
	}
	if !holding(c.state.Load()) {
		return // closing or closed already
	}
	// Each side at its last ack, as an idle timeout's (whatever the
	// state: a connection still opening or closing is ended too).
	if b.expireResets(c, stEstablished) > 0 {
		cf.r.nreset.Add(1)
	}
	b.faultClose(c)
}

// faultBytes applies ResetBytes to a TCP frame of c leaving in direction
// dir, rewritten, about to be sent by out. It returns Forward for a frame
// that goes on as it is or cut to the limit (then with the receiver's RST
// to follow it: Frame.Follow), Drop for one wholly past the limit, or
// Stolen when the fault's line took the cut frame and its RST.
func (b *Balancer) faultBytes(r *faultRule, c *Conn, dir FaultDir, out Side, f *Frame) Verdict {
	var p pkt
	if ok, bad := parseIP(f.Bytes(), &p); !ok || bad || p.proto != wire.ProtoTCP || !p.l4ok() {
		return Forward
	}
	p.partial, p.checked = f.partial(), f.checked()
	cf := b.faultState(c, r)
	if cf == nil {
		return Forward
	}
	d := lineOf(dir) // the direction's counters
	tcp := p.tcp()
	flags := tcp.Flags()
	seq := tcp.Seq()
	n := uint32(len(tcp) - tcp.HeaderLen())
	if flags&tcpflag.SYN != 0 {
		cf.start[d], cf.known[d] = seq+1, true
		return Forward
	}
	if !cf.known[d] {
		cf.start[d], cf.known[d] = seq, true
	}
	limit := cf.start[d] + uint32(r.ResetBytes) // where the receiver's stream must end
	if flags&tcpflag.RST != 0 || int32(seq+n-limit) <= 0 {
		return Forward // within the limit (a FIN at it included)
	}
	if int32(seq-limit) >= 0 {
		return b.Stats.drop(DropFault) // past it: the reset has been sent
	}
	keep := int(limit - seq)
	if !p.checked && !p.partial {
		// The cut recomputes the checksum: a corrupt segment must not
		// leave with a good one.
		if csum.Checksum(tcp, p.pseudo(wire.ProtoTCP, len(tcp))) != 0 {
			return b.Stats.drop(DropFault)
		}
	}
	cutTo(&p, f, keep)
	if !cf.cut[d] {
		// Once: a retransmission of the segment cut is cut and reset
		// again (the first RST may have been lost), not counted again.
		cf.cut[d] = true
		r.nreset.Add(1)
	}
	// The receiver's RST: at its RCV.NXT once the cut segment is in.
	tcp = p.tcp()
	eth := p.eth()
	seg := wire.Segment{Src: p.key16(p.src()), Dst: p.key16(p.dst()), Sport: tcp.SrcPort(), Dport: tcp.DstPort(), Seq: limit, Flags: tcpflag.RST}
	copy(seg.SrcMAC[:], eth.Src())
	copy(seg.DstMAC[:], eth.Dst())
	rst := make([]byte, tun.VNetHdrLen+wire.MaxFrameLen) // once per connection cut
	rst = rst[:tun.VNetHdrLen+seg.Write(rst[tun.VNetHdrLen:])]
	b.resetSender(c, dir)
	b.faultClose(c)
	if line := r.lines[lineOf(dir)]; line != nil && line.put(out, f, rst) {
		return Stolen // delayed too, the RST right behind it on the line
	}
	// The cut segment goes on in its reader's batch, behind the frames
	// before it, and the RST right after it: sent apart, either could
	// pass them (a client takes an RST at the right edge of what it holds
	// out of order, so it would end before the bytes due).
	f.Follow = rst
	return Forward
}

// faultClose moves a connection a fault has reset to CLOSE, as an RST
// seen would (a connection event says reset), and onto CLOSE's short
// timeout. Not through the TCP state table: IPVS's keeps SYN_RECV on a
// client's RST, against forged ones, and this one is tapvs's own.
func (b *Balancer) faultClose(c *Conn) {
	if st := c.state.Load(); holding(st) && c.setState(st, stClose) {
		c.stepped(st, stClose, dirIn, true)
	}
	c.touch(dirIn, 0, b.table.now.Load(), &b.table.wheel) // CLOSE's deadline
}

// resetSender sends the RST to the side that sent the stream cut in
// direction dir, at its last ack (reset.go).
func (b *Balancer) resetSender(c *Conn, dir FaultDir) {
	var buf [wire.MaxFrameLen]byte
	if dir == FaultToServer {
		if seq, ok := c.lastAck(dirIn); ok {
			seg := wire.Segment{
				SrcMAC: b.cfg.ClientMAC, DstMAC: c.clientMAC,
				Src: c.in.dst, Dst: c.in.src, Sport: c.in.dport, Dport: c.in.sport,
				Seq: seq, Flags: tcpflag.RST,
			}
			b.link.Transmit(ClientSide, buf[:seg.Write(buf[:])])
		}
		return
	}
	if seq, ok := c.lastAck(dirOut); ok {
		if mac := c.dest.mac.Load(); mac != 0 {
			seg := wire.Segment{
				SrcMAC: b.cfg.ServerMAC, DstMAC: macBytes(mac),
				Src: c.out.dst, Dst: c.out.src, Sport: c.out.dport, Dport: c.out.sport,
				Seq: seq, Flags: tcpflag.RST,
			}
			b.link.Transmit(ServerSide, buf[:seg.Write(buf[:])])
		}
	}
}

// cutTo cuts the TCP segment p of frame f to keep bytes of payload (fewer
// than it has), its FIN with the rest: the IP length, the IP checksum and
// the TCP checksum (a partial one's pseudo-header sum) follow. A TSO
// super-frame left no longer than one segment is sent as one.
func cutTo(p *pkt, f *Frame, keep int) {
	tcp := p.tcp()
	hl := tcp.HeaderLen()
	f.Len = p.l4 + hl + keep
	p.b = f.Bytes()
	tcp = p.tcp()
	tcp.SetFlags(tcp.Flags() &^ tcpflag.FIN)
	p.setIPLen()
	if f.VNet.GSOType() != tun.VNetGSONone && keep <= int(f.VNet.GSOSize()) {
		f.VNet.SetGSOType(tun.VNetGSONone)
	}
	if p.partial {
		tcp.SetChecksum(csum.Fold(p.pseudo(wire.ProtoTCP, len(tcp))))
		return
	}
	tcp.SetChecksum(0)
	tcp.SetChecksum(csum.Checksum(tcp, p.pseudo(wire.ProtoTCP, len(tcp))))
}
