// Package netstack puts tapvs's two TAP sides under a gVisor stack. Each side
// is an Endpoint: a gVisor link endpoint that owns the side's device queues and
// runs the receive pipeline. Every frame a queue reads goes to the balancer
// first; what the balancer forwards is written straight to the other side's
// device, and only what it passes (ARP, ping, the stack's own connections)
// is copied into a gVisor packet buffer for the stack.
package netstack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/tapvs/tapvs/csum"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// Headroom is the space left before each frame in a receive buffer, so a
// rewrite can grow headers in place (a TCP option needs 8 to 40 bytes).
const Headroom = 64

// maxFrame is a receive buffer's capacity past the headroom: the largest
// frame a TAP hands over, 64 KiB super-frames included.
const maxFrame = 65536 + header.EthernetMinimumSize

// QueueStats are one queue's counters. Each queue's reader is the only writer,
// so these cache lines are not shared between readers.
type QueueStats struct {
	Received  atomic.Uint64 // frames read
	Forwarded atomic.Uint64 // frames written to the other side
	Passed    atomic.Uint64 // frames given to the stack
	Replied   atomic.Uint64 // frames answered back out this side (SYN-ACKs)
	Stolen    atomic.Uint64 // frames the balancer kept (held until a server answers)
	Dropped   atomic.Uint64 // frames the balancer dropped (reasons in nat.Stats)
	TxErrors  atomic.Uint64 // frames a device refused
	Panics    atomic.Uint64 // frames dropped because processing them panicked (a bug, see queue.frame)
}

// Endpoint is one side's link endpoint.
type Endpoint struct {
	side  nat.Side
	devs  []tun.Device
	qbase int // this side's first reader number: nat.Frame.Queue is unique across sides
	// process is the balancer's Process: what every frame a queue reads
	// goes through first.
	process func(nat.Side, *nat.Frame) nat.Verdict
	peer    *Endpoint
	mtu     atomic.Uint32
	mac     tcpip.LinkAddress

	panicked   atomic.Bool // a frame made a reader of this side panic (logged once)
	dispatcher atomic.Pointer[stack.NetworkDispatcher]
	wg         sync.WaitGroup
	stats      []QueueStats
	log        *slog.Logger
	onClose    func()
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)

func newEndpoint(side nat.Side, devs []tun.Device, mtu uint32, mac [6]byte, bal *nat.Balancer, log *slog.Logger) *Endpoint {
	e := &Endpoint{side: side, devs: devs, process: bal.Process, mac: tcpip.LinkAddress(mac[:]),
		stats: make([]QueueStats, len(devs)), log: log.With("side", side.String())}
	e.mtu.Store(mtu)
	return e
}

// Stats returns the counters of each queue.
func (e *Endpoint) Stats() []QueueStats { return e.stats }

// start runs one reader per queue.
func (e *Endpoint) start() {
	for q := range e.devs {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.readLoop(q)
		}()
	}
}

// queue is one device queue's receive pipeline: its buffers and what it
// does with a batch of frames.
type queue struct {
	e     *Endpoint
	q     int
	dev   tun.Device
	out   tun.Device // the other side's queue that forwards leave by
	st    *QueueStats
	h     int // virtio-net header length: both sides have the same, a frame leaves with the header it came with
	bufs  [][]byte
	sizes []int
	fwd   [][]byte
	back  [][]byte
	f     nat.Frame // the frame being processed: here, not on the stack, as process is called through a func value
}

func (e *Endpoint) queue(q int) *queue {
	dev := e.devs[q]
	n := dev.BatchSize()
	qu := &queue{e: e, q: q, dev: dev, out: e.peer.devs[q%len(e.peer.devs)], st: &e.stats[q], h: dev.VNetHdrLen(),
		bufs: make([][]byte, n), sizes: make([]int, n), fwd: make([][]byte, 0, n), back: make([][]byte, 0, n)}
	for i := range qu.bufs {
		qu.bufs[i] = make([]byte, Headroom+maxFrame)
	}
	return qu
}

// readLoop is the receive pipeline of one queue, parked in Go's netpoller
// while the queue is empty.
func (e *Endpoint) readLoop(q int) {
	qu := e.queue(q)
	for {
		got, err := qu.dev.Read(qu.bufs, qu.sizes, Headroom)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
				return
			}
			e.log.Warn("read failed", "queue", q, "err", err)
			continue
		}
		qu.handle(got)
	}
}

// handle sends each of the first got frames in the queue's buffers where
// the balancer says.
func (qu *queue) handle(got int) {
	st := qu.st
	st.Received.Add(uint64(got))
	qu.fwd, qu.back = qu.fwd[:0], qu.back[:0]
	for i := range got {
		qu.frame(i)
	}
	if len(qu.fwd) > 0 {
		sent, err := qu.out.Write(qu.fwd)
		st.Forwarded.Add(uint64(sent))
		if err != nil {
			st.TxErrors.Add(uint64(len(qu.fwd) - sent))
		}
	}
	if len(qu.back) > 0 {
		sent, err := qu.dev.Write(qu.back)
		st.Replied.Add(uint64(sent))
		if err != nil {
			st.TxErrors.Add(uint64(len(qu.back) - sent))
		}
	}
}

// frame runs frame i of the batch through the balancer and files it by the
// verdict: the other side, back out this side, the stack, or nowhere.
//
// A panic here would be a bug (no input should cause one; the fuzz targets
// look for them), but one reader serves every connection of its queue, so
// it must not be able to stop tapvs: the frame is dropped and counted
// (QueueStats.Panics), the first panic of the endpoint is logged with its
// stack, and the reader goes on with the next frame. The data path holds no
// lock across code that reads frame bytes, so a panic leaves none held.
func (qu *queue) frame(i int) {
	defer qu.contain()
	e, h, f := qu.e, qu.h, &qu.f
	*f = nat.Frame{Buf: qu.bufs[i], Off: Headroom, Len: qu.sizes[i], Queue: e.qbase + qu.q}
	if h > 0 {
		f.VNet = qu.bufs[i][Headroom-h : Headroom]
	}
	switch e.process(e.side, f) {
	case nat.Forward:
		qu.fwd = append(qu.fwd, f.Buf[f.Off-h:f.Off+f.Len])
	case nat.Reply:
		qu.back = append(qu.back, f.Buf[f.Off-h:f.Off+f.Len])
	case nat.Pass:
		qu.st.Passed.Add(1)
		finishChecksum(f.VNet, f.Bytes())
		e.deliver(f.Bytes())
	case nat.Drop:
		qu.st.Dropped.Add(1)
	case nat.Stolen:
		qu.st.Stolen.Add(1)
	}
}

// contain recovers a panic of frame (see there).
func (qu *queue) contain() {
	r := recover()
	if r == nil {
		return
	}
	qu.st.Panics.Add(1)
	if qu.e.panicked.CompareAndSwap(false, true) {
		qu.e.log.Error("BUG: a frame made the data path panic; it was dropped and the reader goes on (later ones are only counted: tapvs_frames_total{result=\"panic\"})",
			"queue", qu.q, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
}

// finishChecksum completes a partial transport checksum (virtio-net
// NEEDS_CSUM) in software: the stack verifies checksums and would drop it.
func finishChecksum(vnet, frame []byte) {
	if vnet == nil || vnet[0]&tun.VNetNeedsCsum == 0 {
		return
	}
	start, off := int(binary.LittleEndian.Uint16(vnet[6:])), int(binary.LittleEndian.Uint16(vnet[8:]))
	if start+off+2 <= len(frame) {
		csum.Finish(frame[start:], off)
	}
}

// deliver copies a frame into a packet buffer for the stack. Only control
// traffic takes this path.
func (e *Endpoint) deliver(frame []byte) {
	d := e.dispatcher.Load()
	if d == nil || len(frame) < header.EthernetMinimumSize {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer pkt.DecRef()
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if !ok {
		return
	}
	eth := header.Ethernet(hdr)
	switch dst := eth.DestinationAddress(); {
	case dst == header.EthernetBroadcastAddress:
		pkt.PktType = tcpip.PacketBroadcast
	case header.IsMulticastEthernetAddress(dst):
		pkt.PktType = tcpip.PacketMulticast
	case dst == e.mac:
		pkt.PktType = tcpip.PacketHost
	default:
		pkt.PktType = tcpip.PacketOtherHost
	}
	pkt.NetworkProtocolNumber = eth.Type()
	(*d).DeliverNetworkPacket(eth.Type(), pkt)
}

// Transmit sends a frame the balancer made itself out of queue 0, behind
// vnet (nil: a zero header) when the device takes one.
func (e *Endpoint) Transmit(vnet, frame []byte) {
	if h := e.devs[0].VNetHdrLen(); h > 0 {
		buf := make([]byte, h+len(frame))
		copy(buf, vnet)
		copy(buf[h:], frame)
		frame = buf
	}
	if _, err := e.devs[0].Write([][]byte{frame}); err != nil {
		e.stats[0].TxErrors.Add(1)
	}
}

// WritePackets sends the stack's own packets (ARP, ICMP, its TCP) out of
// queue 0.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	h := e.devs[0].VNetHdrLen()
	for _, pkt := range pkts.AsSlice() {
		buf := make([]byte, h, h+pkt.Size()) // a zero virtio-net header: full checksums, no GSO
		for _, v := range pkt.AsSlices() {
			buf = append(buf, v...)
		}
		if _, err := e.devs[0].Write([][]byte{buf}); err != nil {
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			break
		}
		n++
	}
	return n, nil
}

func (e *Endpoint) MTU() uint32                    { return e.mtu.Load() }
func (e *Endpoint) SetMTU(mtu uint32)              { e.mtu.Store(mtu) }
func (e *Endpoint) MaxHeaderLength() uint16        { return header.EthernetMinimumSize }
func (e *Endpoint) LinkAddress() tcpip.LinkAddress { return e.mac }
func (e *Endpoint) SetLinkAddress(tcpip.LinkAddress) {
	// The balancer rewrites frames with the MAC it was built with; changing it
	// under a running data path would split the two.
}
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired
}
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		return
	}
	e.dispatcher.Store(&d)
}
func (e *Endpoint) IsAttached() bool                        { return e.dispatcher.Load() != nil }
func (e *Endpoint) Wait()                                   { e.wg.Wait() }
func (e *Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }
func (e *Endpoint) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: pkt.EgressRoute.LocalLinkAddress,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}
func (e *Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}
func (e *Endpoint) Close() {
	if e.onClose != nil {
		e.onClose()
	}
}
func (e *Endpoint) SetOnCloseAction(f func()) { e.onClose = f }
