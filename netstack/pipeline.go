package netstack

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"syscall"

	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

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
	tx    txer             // sends what a batch classified
	frags []*nat.Fragments // the batch's fragments, given back once it is written
	f     nat.Frame        // the frame being processed: here, not on the stack, as process is called through a func value
}

func (e *Endpoint) queue(q int) *queue {
	dev := e.devs[q]
	n := dev.BatchSize()
	qu := &queue{e: e, q: q, dev: dev, out: e.peer.devs[q%len(e.peer.devs)], st: &e.stats[q], h: dev.VNetHdrLen(),
		bufs: make([][]byte, n), sizes: make([]int, n), fwd: make([][]byte, 0, n), back: make([][]byte, 0, n), tx: syscallTx{}}
	for i := range qu.bufs {
		qu.bufs[i] = make([]byte, Headroom+maxFrame)
	}
	return qu
}

// readLoop is the receive pipeline of one queue, parked in Go's netpoller
// while the queue is empty.
func (e *Endpoint) readLoop(q int) {
	qu := e.queue(q)
	failures := 0 // reads failed in a row
	for {
		got, err := qu.dev.Read(qu.bufs, qu.sizes, Headroom)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && e.paused.Load() {
				return // Stack.Pause: stopped between batches
			}
			// An error that does not go away when tried again (one
			// the kernel has not named, such as Go's "not pollable")
			// is not transient either.
			if failures++; transient(err) && failures < maxFailures {
				e.log.Warn("read failed", "queue", q, "err", err)
				continue
			}
			// A TAP deleted under tapvs fails every read at once, for
			// ever (EBADFD): reading on would spin a core. The reader
			// ends and the stack reports it (Stack.Failed).
			e.fail(fmt.Errorf("%s side: TAP %s queue %d: %w", e.side, qu.dev.Name(), q, err))
			return
		}
		failures = 0
		qu.handle(got)
	}
}

// maxFailures is how many reads in a row may fail transiently before the
// reader gives up on its queue.
const maxFailures = 100

// transient reports whether a failed read may succeed when tried again: an
// interrupted or short read, a momentary lack of memory. Anything else (the
// TAP deleted: EBADFD; a device error) fails again at once on every read.
func transient(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return true // not the kernel's: one bad frame (tun: a short read)
	}
	switch errno {
	case syscall.EINTR, syscall.EAGAIN, syscall.ENOBUFS, syscall.ENOMEM:
		return true
	}
	return false
}

// handle sends each of the first got frames in the queue's buffers where
// the balancer says: every frame is classified first, then the batch is
// sent, so a sender that batches (an io_uring ring) sees it whole.
func (qu *queue) handle(got int) {
	qu.classify(got)
	qu.tx.flush(qu)
	for i, fs := range qu.frags {
		fs.Release()
		qu.frags[i] = nil
	}
	qu.frags = qu.frags[:0]
}

// classify runs each of the first got frames through the balancer, filing
// the ones to send in qu.fwd and qu.back.
func (qu *queue) classify(got int) {
	qu.st.Received.Add(uint64(got))
	qu.fwd, qu.back = qu.fwd[:0], qu.back[:0]
	for i := range got {
		qu.frame(i)
	}
}

// txer sends a classified batch: qu.fwd out of the other side's queue,
// qu.back back out of this one, counting them Forwarded, Replied or
// TxErrors. It is the seam between classifying frames and the system
// calls that send them: syscallTx writes each frame with its own write(2);
// a ring poller (issue 24) queues them on its io_uring instead. One call
// per batch, not per frame.
type txer interface {
	flush(qu *queue)
}

// syscallTx sends through the devices' Write.
type syscallTx struct{}

func (syscallTx) flush(qu *queue) {
	st := qu.st
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
		if f.Frags != nil {
			qu.fwd = qu.fragments(qu.fwd, f.Frags)
			break
		}
		qu.fwd = append(qu.fwd, f.Buf[f.Off-h:f.Off+f.Len])
		if f.Follow != nil {
			qu.fwd = append(qu.fwd, f.Follow[tun.VNetHdrLen-h:])
		}
	case nat.Reply:
		if f.Frags != nil {
			qu.back = qu.fragments(qu.back, f.Frags)
			break
		}
		qu.back = append(qu.back, f.Buf[f.Off-h:f.Off+f.Len])
	case nat.Pass:
		qu.st.Passed.Add(1)
		finishChecksum(f.VNet, f.Bytes())
		e.deliver(f.Bytes())
	case nat.Drop:
		qu.st.Dropped.Add(1)
	case nat.Stolen:
		qu.st.Stolen.Add(1)
	case nat.Handoff:
		e.handOff(f, qu.st)
	case nat.Release:
		// The frame is spent (a server's SYN-ACK); what the balancer
		// held for it goes back out this side in this batch, each held
		// behind a virtio-net header of its own.
		qu.st.Stolen.Add(1)
		for _, q := range f.Released {
			qu.back = append(qu.back, q[tun.VNetHdrLen-h:])
		}
		qu.st.Released.Add(uint64(len(f.Released)))
	}
}

// fragments files the fragments a reassembled datagram was cut into in
// to, in the batch where the datagram would have gone, and keeps them to
// give back once the batch is written (handle).
func (qu *queue) fragments(to [][]byte, fs *nat.Fragments) [][]byte {
	qu.frags = append(qu.frags, fs)
	for _, fr := range fs.Frames() {
		to = append(to, fr[tun.VNetHdrLen-qu.h:])
	}
	return to
}

// fragsOf is the batch's fragments f is one of, nil if none.
func (qu *queue) fragsOf(f []byte) *nat.Fragments {
	for _, fs := range qu.frags {
		if fs.Holds(f) {
			return fs
		}
	}
	return nil
}

// handOff sends a client frame that no connection here holds to the
// cluster's other instances, one of which may hold it, behind its
// virtio-net header (zeros on a plain TAP, in the headroom): a TSO
// super-frame goes whole. Without a handoff it is dropped.
func (e *Endpoint) handOff(f *nat.Frame, st *QueueStats) {
	h := e.handoff.Load()
	if h == nil {
		st.Dropped.Add(1)
		return
	}
	payload := f.Buf[f.Off-tun.VNetHdrLen : f.Off+f.Len]
	if len(f.VNet) == 0 {
		clear(payload[:tun.VNetHdrLen]) // headroom: a plain frame's header
	}
	(*h).Send(payload, uint32(f.Mark))
	st.HandedOff.Add(1)
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
func finishChecksum(vnet tun.VNetHdr, frame []byte) { vnet.FinishChecksum(frame) }
