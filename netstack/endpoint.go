// Package netstack puts tapvs's two TAP sides under a gVisor stack. Each side
// is an Endpoint: a gVisor link endpoint that owns the side's device queues and
// runs the receive pipeline. Every frame a queue reads goes to the balancer
// first; what the balancer forwards is written straight to the other side's
// device, and only what it passes (ARP and IPv6 neighbour discovery, ping
// and ping6, the stack's own connections) is copied into a gVisor packet
// buffer for the stack. Neighbour solicitations come to a solicited-node
// group's Ethernet address (33:33:ff:xx:xx:xx): deliver marks them
// multicast, and the stack takes those of the groups its IPv6 addresses
// joined.
//
// The files follow that: endpoint.go is the side as gVisor sees it,
// pipeline.go the receive pipeline (read a batch, run each frame through
// the balancer, write each verdict's frames in one batch), poll.go the
// busy-poll variant of its loop, stack.go the stack and its addresses, and
// resolve.go the next hops of the real servers, which the stack resolves
// for the balancer.
package netstack

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// Headroom is the space left before each frame in a receive buffer, so a
// rewrite can grow headers in place, the virtio-net header moving with them
// (nat.Frame.open): a TOA option needs 8 bytes (20 for an IPv6 client), a
// PROXY protocol header before a segment's payload up to 104 (v1, TCP6) or
// 28/52 (v2, IPv4/IPv6), and NAT64 grows an IPv4 header into an IPv6 one
// (20 more bytes).
const Headroom = 128

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
	Stolen    atomic.Uint64 // frames the balancer kept (held until a server answers) or spent (a server's SYN-ACK)
	Released  atomic.Uint64 // held frames the balancer let go, sent back out this side (nat.Release)
	Dropped   atomic.Uint64 // frames the balancer dropped (reasons in nat.Stats)
	Truncated atomic.Uint64 // reads the balancer never saw: cut short by the kernel, or shorter than the virtio-net header
	TxErrors  atomic.Uint64 // frames a device refused
	Panics    atomic.Uint64 // frames dropped because processing them panicked (a bug, see queue.frame)
	HandedOff atomic.Uint64 // client frames no connection here holds, handed to the cluster's other instances (nat.Handoff)
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
	handoff    atomic.Pointer[Handoff] // the cluster's other instances (Stack.SetHandoff); nil drops nat.Handoff
	onClose    func()
	fail       func(error) // a reader ends on an error it cannot read past (Stack.Failed)
	paused     atomic.Bool // Stack.Pause: a reader woken by its deadline ends
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

// Transmit sends a frame a balancer timer made (nat.Link) out of queue 0,
// behind a zero virtio-net header (full checksums, no GSO) when the device
// takes one.
func (e *Endpoint) Transmit(frame []byte) {
	if h := e.devs[0].VNetHdrLen(); h > 0 {
		buf := make([]byte, h+len(frame))
		copy(buf[h:], frame)
		frame = buf
	}
	if _, err := e.devs[0].Write([][]byte{frame}); err != nil {
		e.stats[0].TxErrors.Add(1)
	}
}

// send sends a frame the balancer kept, behind its virtio-net header
// (tun.VNetHdrLen bytes), out of queue 0: the header goes with it if the
// TAP takes one. On a plain TAP a partial checksum is finished and a TSO
// super-frame, which it cannot send, is dropped (TxErrors).
func (e *Endpoint) send(frame []byte) {
	h := e.devs[0].VNetHdrLen()
	if h == 0 {
		vnet := tun.VNetHdr(frame[:tun.VNetHdrLen])
		if vnet.GSOType() != tun.VNetGSONone {
			e.stats[0].TxErrors.Add(1)
			return
		}
		finishChecksum(vnet, frame[tun.VNetHdrLen:])
	}
	e.write(frame[tun.VNetHdrLen-h:])
}

// write sends one frame, behind its virtio-net header if the TAP has one,
// out of queue 0.
func (e *Endpoint) write(frame []byte) {
	if _, err := e.devs[0].Write([][]byte{frame}); err != nil {
		e.stats[0].TxErrors.Add(1)
	}
}

// WritePackets sends the stack's own packets (ARP, neighbour discovery,
// ICMP, its TCP) out of queue 0.
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
