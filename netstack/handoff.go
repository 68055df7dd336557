package netstack

import (
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// Handoff is where the client side's readers send frames that no
// connection here holds (nat.Handoff): the cluster's other instances
// (package handoff). Send takes a virtio-net header and the frame behind
// it, and the frame's nat.Frame.Mark, and must not block.
type Handoff interface {
	Send(payload []byte, mark uint32)
}

// SetHandoff has the client side's readers hand nat.Handoff frames to h
// (nil: drop them).
func (st *Stack) SetHandoff(h Handoff) {
	if h == nil {
		st.Client.handoff.Store(nil)
		return
	}
	st.Client.handoff.Store(&h)
}

// SetHandoffQueue makes queue (a reader number of the balancer's own,
// past the TAPs' queues) the one HandedOver processes frames as. It is
// called before the first HandedOver.
func (st *Stack) SetHandoffQueue(queue int) { st.handoffQueue = queue }

// HandedOver runs what another instance handed over (a virtio-net header
// and a frame, and its mark: nat.Frame.Mark) through the balancer as a client frame that may only
// continue a connection held here (nat.Frame.HandedOff), and writes what
// comes of it as the readers do: a TSO super-frame stays one, for the TAP
// to segment. On plain TAPs (no virtio-net header) a partial checksum is
// finished here and a super-frame is dropped. It is called by one
// goroutine at a time (the handoff's receiver): the frame is copied into
// one buffer with the readers' headroom, for a rewrite that grows it.
func (st *Stack) HandedOver(payload []byte, mark uint32) {
	n := len(payload) - tun.VNetHdrLen
	if n < 0 || n > len(st.handoffBuf)-Headroom {
		return
	}
	copy(st.handoffBuf[Headroom-tun.VNetHdrLen:], payload)
	vnet := tun.VNetHdr(st.handoffBuf[Headroom-tun.VNetHdrLen : Headroom])
	f := &st.handoffFrame
	*f = nat.Frame{Buf: st.handoffBuf[:], Off: Headroom, Len: n, Queue: st.handoffQueue, HandedOff: true, Mark: nat.FragMark(mark)}
	h := st.Client.devs[0].VNetHdrLen()
	if h > 0 {
		f.VNet = vnet
	} else {
		if vnet.GSOType() != tun.VNetGSONone {
			st.handoffDropped.Add(1)
			return
		}
		finishChecksum(vnet, f.Bytes())
	}
	v := st.bal.Process(nat.ClientSide, f)
	if fs := f.Frags; fs != nil {
		// A reassembled datagram, cut for its way out.
		to := st.Server
		if v == nat.Reply {
			to = st.Client
		}
		for _, fr := range fs.Frames() {
			to.write(fr[tun.VNetHdrLen-h:])
		}
		fs.Release()
		return
	}
	switch v {
	case nat.Forward:
		st.Server.write(f.Buf[f.Off-h : f.Off+f.Len])
		if f.Follow != nil {
			st.Server.write(f.Follow[tun.VNetHdrLen-h:])
		}
	case nat.Reply:
		st.Client.write(f.Buf[f.Off-h : f.Off+f.Len])
	case nat.Release:
		for _, q := range f.Released {
			st.Client.write(q[tun.VNetHdrLen-h:])
		}
	}
}

// HandoffDropped counts TSO super-frames handed over to this instance
// that its plain TAPs could not send (HandedOver).
func (st *Stack) HandoffDropped() uint64 { return st.handoffDropped.Load() }
