package nat

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tapvs/tapvs/tun"
)

// The delay family of faults (Fault.Latency, Jitter, Rate, Duplicate,
// Reorder): what netem's delay, rate, duplicate and reorder do on an
// interface, done on the frames of one fault's target. A frame the fault
// lets through is rewritten as any other, then, rather than going out
// with its reader's batch, copied onto its fault's line for its direction
// and sent by the line's goroutine when it is due (Link.Send), behind its
// virtio-net header: a TSO super-frame stays one, a partial checksum
// partial.
//
// A line is a queue in the order frames leave: each frame's time is its
// arrival, plus the time the rate cap's queue ahead of it takes, plus
// the latency (with its jitter), and never before the frame ahead of it,
// so jitter does not reorder (netem's jitter does, unless a rate is set;
// a test that wants reordering sets reorder). Reordering holds a frame
// back until the next one has gone, as two frames swapped on the wire.
//
// Bounds: the frames held by every line together take at most MaxDelayed
// bytes, and a rate-capped line queues at most MaxRateQueue of its rate
// (at least two super-frames' worth); frames past either are dropped and
// counted (DropFaultQueue), as a full queue drops them. A line has one
// goroutine and one timer, for as long as its fault is in force; when the
// fault is cleared or replaced, what the line holds is sent at once (the
// network recovers) and the goroutine ends.

// delayed is a frame on a line.
type delayed struct {
	at  int64   // when it is due, on monoNow's clock
	out Side    // the side it leaves by
	buf *[]byte // virtio-net header and frame, from framePool
	n   int
}

// delayLine is one fault's line for one direction.
type delayLine struct {
	b *Balancer
	f *Fault // the fault's settings, read only
	r *faultRule

	wake chan struct{} // a frame was queued: look again (buffered, 1)
	done chan struct{} // closed when the fault is no longer in force

	// mu guards what follows: taken by the readers that queue the
	// fault's frames (one per queue of the side) and by the line's
	// goroutine. Only frames of a fault's target take it: a fault is a
	// test's, and its line is the one place the order is decided.
	mu      sync.Mutex
	q       []delayed // due times ascending
	tail    int64     // the due time of the last frame queued: none leaves before it
	free    int64     // rate: when the frames queued so far have been sent
	held    delayed
	hasHeld bool // reorder: held waits for the next frame, or its own time
	stopped bool
}

// lineEpoch is monoNow's zero: the lines' clock is the monotonic one.
var lineEpoch = time.Now()

func monoNow() int64 { return int64(time.Since(lineEpoch)) }

func newDelayLine(b *Balancer, r *faultRule) *delayLine {
	l := &delayLine{b: b, f: &r.Fault, r: r, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go l.run()
	return l
}

// The lines' frame buffers (virtio-net header and frame) come in three
// sizes: one for a frame up to the usual MTU, one up to a jumbo MTU, one
// for a TSO super-frame; framePool holds each.
const (
	tinyFrameBuf  = 2048 // an ACK, a frame up to the usual 1500-byte MTU
	smallFrameBuf = tun.VNetHdrLen + 9216 + 64
	bigFrameBuf   = tun.VNetHdrLen + 65536 + 256
)

var frameBufLens = [3]int{tinyFrameBuf, smallFrameBuf, bigFrameBuf}

var framePool = [3]sync.Pool{
	{New: func() any { b := make([]byte, tinyFrameBuf); return &b }},
	{New: func() any { b := make([]byte, smallFrameBuf); return &b }},
	{New: func() any { b := make([]byte, bigFrameBuf); return &b }},
}

// frameClass is the pool of a buffer for n bytes.
func frameClass(n int) int {
	switch {
	case n > smallFrameBuf:
		return 2
	case n > tinyFrameBuf:
		return 1
	}
	return 0
}

// frameBufLen is the length of the buffer n bytes take: what the lines'
// bound counts.
func frameBufLen(n int) int { return frameBufLens[frameClass(n)] }

// getFrameBuf is a buffer for n bytes, at most bigFrameBuf.
func getFrameBuf(n int) *[]byte { return framePool[frameClass(n)].Get().(*[]byte) }

func putFrameBuf(b *[]byte) { framePool[frameClass(len(*b))].Put(b) }

// rateBacklog is the most a rate-capped line queues, as time: MaxRateQueue
// of its rate, or the time two super-frames take, whichever is longer (a
// slow cap must still pass a super-frame).
func rateBacklog(rate uint64) int64 {
	return max(int64(MaxRateQueue), int64(2*65536*uint64(time.Second)/rate))
}

// put queues the frame f (rewritten, to leave by out) on the line, and
// reports false, queueing nothing, when a bound is reached. It takes the
// frame's bytes: the caller's buffer is free again when it returns. A
// follow frame (virtio-net header and frame: the RST of a stream cut) is
// queued right behind f, due with it, neither duplicated nor reordered
// nor counted by the rate cap.
func (l *delayLine) put(out Side, f *Frame, follow []byte) bool {
	n := tun.VNetHdrLen + f.Len
	if n > bigFrameBuf || len(follow) > smallFrameBuf {
		return false // larger than any frame a TAP gives
	}
	now := monoNow()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	at, free := now, l.free
	if rate := l.f.Rate; rate > 0 {
		start := max(now, free)
		if start-now > rateBacklog(rate) {
			return false
		}
		free = start + int64(uint64(f.Len)*uint64(time.Second)/rate)
		at = free
	}
	j := int64(l.f.Jitter)
	at += int64(l.f.Latency) + rand.Int64N(2*j+1) - j
	at = max(at, l.tail)
	copies := 1
	if follow == nil && rand.Float64() < l.f.Duplicate {
		copies = 2
	}
	// What the lines hold is the buffers' size, not the frames': an ACK
	// still takes a small buffer.
	charge := copies * frameBufLen(n)
	if follow != nil {
		charge += frameBufLen(len(follow))
	}
	if l.b.delayedBytes.Add(int64(charge)) > MaxDelayed {
		l.b.delayedBytes.Add(-int64(charge))
		return false
	}
	l.free = free // the frame is taken: the rate cap counts it
	first := true
	for range copies {
		buf := getFrameBuf(n)
		clear((*buf)[:tun.VNetHdrLen]) // a plain frame's: zeros
		copy(*buf, f.VNet)
		copy((*buf)[tun.VNetHdrLen:], f.Bytes())
		d := delayed{at: at, out: out, buf: buf, n: n}
		l.r.delayed.Add(1)
		if follow != nil {
			if l.hasHeld {
				l.releaseHeld(at) // earlier bytes of the stream, ahead of the cut
			}
			fb := getFrameBuf(len(follow))
			copy(*fb, follow)
			l.q = append(l.q, d, delayed{at: at, out: out, buf: fb, n: len(follow)})
			l.tail = at
			break
		}
		if first && !l.hasHeld && rand.Float64() < l.f.Reorder {
			// Held back: the next frame passes it, or its time comes.
			d.at += int64(ReorderHold)
			l.held, l.hasHeld = d, true
			first = false
			continue
		}
		first = false
		l.q = append(l.q, d)
		l.tail = at
		if l.hasHeld {
			l.releaseHeld(at) // this frame passed it
		}
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

// releaseHeld queues the held frame to leave at at, right after the frame
// that passed it. Under mu.
func (l *delayLine) releaseHeld(at int64) {
	h := l.held
	l.held, l.hasHeld = delayed{}, false
	h.at = max(at, l.tail)
	l.q = append(l.q, h)
	l.tail = h.at
}

// stop ends the line: what it holds leaves at once, and its goroutine
// ends. The fault is no longer in force; frames no longer come.
func (l *delayLine) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.stopped = true
		close(l.done)
	}
}

// run sends the line's frames when they are due.
func (l *delayLine) run() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	var due []delayed
	for {
		l.mu.Lock()
		now := monoNow()
		stopped := l.stopped
		for len(l.q) > 0 && (stopped || l.q[0].at <= now) {
			due = append(due, l.q[0])
			l.q[0] = delayed{}
			l.q = l.q[1:]
		}
		// A held frame that no frame passed leaves at its own time,
		// after those due before it.
		if l.hasHeld && (stopped || l.held.at <= now) {
			due = append(due, l.held)
			l.held, l.hasHeld = delayed{}, false
		}
		next := int64(math.MaxInt64)
		if len(l.q) > 0 {
			next = l.q[0].at
		}
		if l.hasHeld {
			next = min(next, l.held.at)
		}
		l.mu.Unlock()
		for i, d := range due {
			l.b.link.Send(d.out, (*d.buf)[:d.n])
			l.b.delayedBytes.Add(-int64(len(*d.buf)))
			putFrameBuf(d.buf)
			due[i] = delayed{}
		}
		due = due[:0]
		if stopped {
			return
		}
		if next != math.MaxInt64 {
			t.Reset(time.Duration(next - now))
		}
		select {
		case <-t.C:
		case <-l.wake:
			t.Stop()
		case <-l.done:
			t.Stop()
		}
	}
}

// isStopped reports whether the line's fault has been cleared.
func (l *delayLine) isStopped() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped
}
