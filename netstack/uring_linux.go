package netstack

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/internal/uring"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// The io_uring poller (issue 24): one locked thread reads every queue of
// both sides with a multishot read each into a provided-buffer ring, runs
// each frame through queue.handle as a reader does, and queues the writes
// on the same ring, so a pass over many frames costs one io_uring_enter
// instead of a read and a write per frame. Frames stay in their ring slot
// from the read to the end of their write; the kernel writes each one
// where a reader's buffer has it (the vnet header just before Headroom).

// Sizes of the ring poller.
const (
	ringSQ      = 256 // writes and re-arms queued per pass
	ringSlots   = 128 // provided buffers per queue: the read CQEs a queue can have outstanding
	ringBatch   = 32  // CQEs reaped per pass (a pass's writes wait behind them)
	ringHeapMax = ringSQ
)

// adaptMax bounds the adaptive spin of a poller without busy_poll: after
// its queues drain it spins (yielding the CPU to any other runnable
// thread) for up to twice the recent gap between frames, if that gap is
// under adaptMax and its passes reap a frame or so, and sleeps otherwise.
// A sleep costs a wake-up per frame, tens of microseconds on a virtual
// machine, about the whole gap of one connection's request and reply;
// sparse traffic never spins, and a busy machine's CPU stays with its
// clients and servers (docs/speed.md, "The adaptive spin").
const adaptMax = 100 * time.Microsecond

// ringSlot is a slot's size: headroom and the largest frame with its vnet
// header, rounded to pages; a read that fills the whole buffer was cut
// short (uring.TestTAPTruncated), so the buffer must be longer than any
// frame.
const ringSlot = (Headroom + maxFrame + 1 + 4095) &^ 4095

// User data of the ring's requests: kind in the top byte, the queue's
// index in ringPoller.qs, and a slot id (or heap index).
const (
	udRead     = 1 << 56
	udWrite    = 2 << 56
	udKind     = 0xff << 56
	udBack     = 1 << 55 // a write back out the reading side (Replied), else Forwarded
	udHeap     = 1 << 54 // a write from the heap table, not a slot
	udQueueSh  = 32
	udQueueMsk = 0xffff
)

// ringQueue is one queue as the ring poller sees it.
type ringQueue struct {
	*queue
	dev   tun.Poller
	fd    int
	outFd int // the other side's queue that forwards leave by
	br    *uring.BufRing
	refs  []uint8 // writes in flight per slot: the slot goes back at 0
	armed bool
	rearm bool // the read ended for want of buffers: arm again once some are back
	fails int  // reads ended in a row
	dead  bool
	dirty bool // slots put since the last Publish
	held  int  // slots the kernel filled that are not back yet
	tx    ringTx
}

// ringTx is a queue's txer on the ring: its batch becomes SQEs.
type ringTx struct {
	p  *ringPoller
	qi int
}

func (t *ringTx) flush(*queue) { t.p.send(t.qi) }

// ringPoller owns the ring and the queues it reads.
type ringPoller struct {
	st   *Stack
	spin time.Duration
	qs   []ringQueue
	r    *uring.Ring
	cqes [ringBatch]uring.CQE
	// heap holds frames that are not in a slot (nat's released copies)
	// until their write's CQE: referenced, so not collected.
	heap     [ringHeapMax][]byte
	heapFree []int
	// heapFrags is, by heap entry, the fragments (nat.Frame.Frags) whose
	// frame it is, nil for any other: their pooled buffers are held until
	// the write's CQE (nat.Fragments.Hold).
	heapFrags [ringHeapMax]*nat.Fragments
	writes    int // writes queued in this pass
	// aliveAt is when checkAlive last asked the queues, and passes counts
	// busy passes between looks at the clock for it.
	aliveAt time.Time
	passes  uint32
	// gap is a moving average of how long the queues stayed empty (a
	// spin's or a sleep's length until the next frame): the adaptive
	// spin's budget.
	gap time.Duration
	// batch is a moving average of the frames each busy pass reaped, in
	// sixteenths: more than one or two means the machine is busy, where a
	// spin would take CPU from the clients and servers sharing it.
	batch int

	// Pause and Resume (a takeover): pause asks the poller to stop reading
	// between passes; it cancels its reads, finishes what it read, and
	// answers on paused; resume lets it arm them again.
	pauseReq atomic.Bool
	paused   chan struct{}
	resume   chan struct{}

	ready chan error              // setup's, then start's result
	fds   chan map[tun.Device]int // every queue's descriptor, or nil: give up

	// enters counts io_uring_enter calls (Stack.RingEnters, the metrics:
	// divided by the frames read, the system calls per frame).
	enters atomic.Uint64
}

// newRing sets a ring up; a variable so tests can make io_uring refuse.
var newRing = uring.New

// startUring starts io_uring pollers over every queue of both sides:
// pollers of them (0: autoPollers), poller k reading the client queues
// i ≡ k and the server queues j ≡ k (mod pollers), so client queue i and
// the server queue it forwards to share a poller when the counts match.
// Writes may go to a queue another poller reads (an SQE writes any fd);
// each queue has one reader. It returns once every ring is set up and
// every read armed, or with the first error: a *uring.RefusedError when
// io_uring is refused, returned before any queue is detached and with
// every ring closed, so the caller may fall back to readers.
func (st *Stack) startUring(spin time.Duration, pollers int, groups [][]int) error {
	pollers, owner, err := pollPlan(pollers, groups, runtime.NumCPU(), len(st.Client.devs), len(st.Server.devs))
	if err != nil {
		return err
	}
	ps := make([]*ringPoller, pollers)
	for k := range ps {
		ps[k] = &ringPoller{st: st, spin: spin, gap: time.Second, heapFree: make([]int, 0, ringHeapMax),
			paused: make(chan struct{}), resume: make(chan struct{}),
			ready: make(chan error, 1), fds: make(chan map[tun.Device]int, 1)}
		for i := range ringHeapMax {
			ps[k].heapFree = append(ps[k].heapFree, i)
		}
	}
	for _, e := range []*Endpoint{st.Client, st.Server} {
		for q := range e.devs {
			d, ok := e.devs[q].(tun.Poller)
			if !ok {
				// Not a TAP descriptor (a wrapped queue, as tests make):
				// nothing to read through a ring, and auto falls back.
				return &uring.RefusedError{Step: "queues", Cause: uring.CauseUnavailable, Err: uring.ErrUnsupported,
					Hint: fmt.Sprintf("%s queue %d (%T) has no descriptor to read through io_uring", e.devs[q].Name(), q, e.devs[q])}
			}
			p := ps[owner[q]]
			p.qs = append(p.qs, ringQueue{queue: e.queue(q), dev: d, refs: make([]uint8, ringSlots)})
		}
	}
	for _, p := range ps {
		st.done.Add(1)
		go func() {
			defer st.done.Done()
			p.run()
		}()
	}
	// Rings and buffer rings first, on each poller's thread; then, if all
	// have them, the queues leave Go's netpoller and the reads are armed.
	for _, p := range ps {
		if e := <-p.ready; e != nil && err == nil {
			err = e
		}
	}
	fds := map[tun.Device]int{}
	for _, p := range ps {
		for i := range p.qs {
			if err != nil {
				break
			}
			q := &p.qs[i]
			if q.fd, err = q.dev.Detach(); err != nil {
				err = fmt.Errorf("io_uring: %w", err)
			}
			fds[q.queue.dev] = q.fd
		}
	}
	for _, p := range ps {
		if err != nil {
			p.fds <- nil // close the ring and end
		} else {
			p.fds <- fds
		}
	}
	for _, p := range ps {
		if e := <-p.ready; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return err
	}
	st.polling, st.rings = true, ps
	return nil
}

// pollPlan is which poller reads each queue index (owner, on both sides)
// and how many there are: with groups (interfaces.poll_groups) poller k
// reads the indexes groups[k], each index below the larger side's queue
// count in exactly one; else pollers of them (0: autoPollers), poller k
// reading the indexes i ≡ k (mod pollers), and no more pollers than
// queues a side (one beyond would read nothing).
func pollPlan(pollers int, groups [][]int, cpus, clientQueues, serverQueues int) (n int, owner []int, err error) {
	queues := max(clientQueues, serverQueues)
	owner = make([]int, queues)
	if len(groups) == 0 {
		if pollers <= 0 {
			pollers = autoPollers(cpus, clientQueues, serverQueues)
		}
		n = min(pollers, queues)
		for q := range owner {
			owner[q] = q % n
		}
		return n, owner, nil
	}
	for q := range owner {
		owner[q] = -1
	}
	for k, g := range groups {
		if len(g) == 0 {
			return 0, nil, fmt.Errorf("io_uring: poll group %d is empty", k)
		}
		for _, q := range g {
			if q < 0 || q >= queues || owner[q] != -1 {
				return 0, nil, fmt.Errorf("io_uring: poll group %d: queue %d is not one of %d or is in another group", k, q, queues)
			}
			owner[q] = k
		}
	}
	for q, k := range owner {
		if k == -1 {
			return 0, nil, fmt.Errorf("io_uring: queue %d is in no poll group", q)
		}
	}
	return len(groups), owner, nil
}

// autoPollers is interfaces.pollers' 0: half the CPUs (rounded up), no
// more than the larger side's queue count, at least one.
func autoPollers(cpus, clientQueues, serverQueues int) int {
	return max(1, min((cpus+1)/2, max(clientQueues, serverQueues)))
}

// setup builds the ring and a buffer ring per queue, on the poller's
// locked thread, before any queue is detached: a kernel that refuses them
// (PBUF_RING: 5.19) refuses while the queues are still in Go's netpoller,
// which cannot be undone (a fallback needs them there).
func (p *ringPoller) setup() error {
	cq := uint32(ringSQ)
	for cq < uint32(len(p.qs)*ringSlots+ringSQ) {
		cq *= 2
	}
	r, err := newRing(ringSQ, cq)
	if err != nil {
		return err
	}
	p.r = r
	for i := range p.qs {
		q := &p.qs[i]
		if q.br, err = r.NewBufRing(uint16(i), ringSlots, ringSlot, uintptr(Headroom-q.h)); err != nil {
			return fmt.Errorf("io_uring: %s queue %d: %w", q.dev.Name(), q.q, err)
		}
	}
	return nil
}

// start arms the reads once every queue is detached: fds has every
// queue's descriptor, this poller's and the others' (forwards go to
// the other side's queue, whichever poller reads it).
func (p *ringPoller) start(fds map[tun.Device]int) error {
	for i := range p.qs {
		q := &p.qs[i]
		q.fd, q.outFd = fds[q.queue.dev], fds[q.out]
		q.tx = ringTx{p: p, qi: i}
		q.queue.tx = &q.tx
		p.arm(i)
	}
	if e := p.r.Submit(); e != 0 {
		return fmt.Errorf("io_uring: arming the reads: %w", e)
	}
	return nil
}

// arm queues queue i's multishot read, and reports whether it could.
func (p *ringPoller) arm(i int) bool {
	q := &p.qs[i]
	if p.r.ReadMultishot(q.fd, q.br.Group(), udRead|uint64(i)<<udQueueSh) {
		q.armed, q.rearm = true, false
		return true
	}
	q.rearm = true // the SQ is full: next pass
	return false
}

// run is the poller: setup and start (reporting each on p.ready), then
// passes until the stack stops.
func (p *ringPoller) run() {
	// The submitter thread of a SINGLE_ISSUER ring: setup, every enter and
	// Close happen here, and it must not exit with requests in flight.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := p.setup(); err != nil {
		if p.r != nil {
			p.r.Close()
			p.r = nil
		}
		p.ready <- err
		<-p.fds
		p.ready <- nil
		return
	}
	p.ready <- nil
	defer func() {
		if err := p.r.Close(); err != nil {
			p.st.log.Error("io_uring poller: close", "err", err)
		}
	}()
	fds := <-p.fds
	if fds == nil {
		p.ready <- nil // another poller failed: close and end
		return
	}
	if err := p.start(fds); err != nil {
		p.ready <- err
		return
	}
	p.ready <- nil
	var idle time.Time
	for {
		select {
		case <-p.st.stop:
			return
		default:
		}
		if p.pauseReq.Load() && !p.pause() {
			return // stopped while paused
		}
		n := p.r.Reap(p.cqes[:])
		for i := range n {
			p.complete(&p.cqes[i])
		}
		rearmed := p.publish(true)
		if n > 0 || rearmed || p.r.NeedsEnter() {
			if !idle.IsZero() {
				p.sample(time.Since(idle)) // the spin caught a frame
			}
			if n > 0 {
				p.batch += (n*16 - p.batch) / 8
			}
			idle = time.Time{}
			var e unix.Errno
			if p.spin == 0 && p.budget() == 0 && n < len(p.cqes) && p.r.Ready() == 0 {
				// Drained, and not spinning: submit the pass's
				// writes and sleep in the same system call until one
				// CQE more than those writes (which complete inline)
				// arrives: one enter per frame when frames come one
				// at a time, instead of a submit and a wait.
				t := time.Now()
				p.aliveEvery(t)
				p.st.pollSleeps.Add(1)
				p.enters.Add(1)
				e = p.r.Wait(uint32(p.writes)+1, pollWait*time.Millisecond)
				p.sample(time.Since(t))
			} else {
				// Submit the pass's writes and re-arms, and run the
				// deferred completions that become the next CQEs.
				if p.passes++; p.passes%1024 == 0 {
					p.aliveEvery(time.Now())
				}
				p.enters.Add(1)
				e = p.r.Submit()
			}
			p.writes = 0
			if e != 0 && e != unix.EBUSY && e != unix.EAGAIN {
				p.st.log.Warn("io_uring poller: enter failed", "err", e)
			}
			continue
		}
		if idle.IsZero() {
			idle = time.Now()
			continue
		}
		if p.spin > 0 {
			if time.Since(idle) < p.spin {
				continue // a spin costs no system call: NeedsEnter is a load
			}
		} else if time.Since(idle) < p.budget() {
			// The adaptive spin: a frame is likely soon. Give the
			// CPU to whatever else may run on it (the clients and
			// servers of a small machine) between looks.
			unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			continue
		}
		p.aliveEvery(time.Now())
		p.st.pollSleeps.Add(1)
		p.enters.Add(1)
		if e := p.r.Wait(1, pollWait*time.Millisecond); e != 0 && e != unix.EBUSY && e != unix.EAGAIN {
			p.st.log.Warn("io_uring poller: wait failed", "err", e)
			time.Sleep(time.Millisecond)
		}
		if p.spin == 0 {
			p.sample(time.Since(idle)) // the spin and the sleep
		}
		idle = time.Time{}
	}
}

// aliveEvery runs checkAlive if a second has passed since it last did:
// called before each sleep, and every 1024 busy passes (a deleted queue
// may have a busy neighbour).
func (p *ringPoller) aliveEvery(now time.Time) {
	if now.Sub(p.aliveAt) >= time.Second {
		p.checkAlive(now)
	}
}

// checkAlive ends the queues whose TAP was deleted without their read
// ending (tun.Detached says how a read misses it), as a read's EBADFD
// does: the stack fails, naming the TAP, and tapvs run exits.
func (p *ringPoller) checkAlive(now time.Time) {
	p.aliveAt = now
	for i := range p.qs {
		q := &p.qs[i]
		if q.dead || !tun.Detached(q.fd) {
			continue
		}
		q.die(fmt.Errorf("detached: %w", unix.EBADFD))
	}
}

// die marks q no longer read and fails the stack with err, naming the
// side, the TAP and the queue.
func (q *ringQueue) die(err error) {
	q.dead = true
	q.e.fail(fmt.Errorf("%s side: io_uring: TAP %s queue %d: %w", q.e.side, q.queue.dev.Name(), q.q, err))
}

// sample adds one empty stretch of the queues to the moving average of
// gaps (weight 1/4: a few frames to learn a new rhythm).
func (p *ringPoller) sample(d time.Duration) {
	p.gap += (d - p.gap) / 4
}

// budget is how long to spin for the next frame: twice the recent gap
// while it is short enough to be worth a CPU, else nothing.
func (p *ringPoller) budget() time.Duration {
	if p.gap >= adaptMax || p.batch > 24 {
		return 0
	}
	return min(2*p.gap, adaptMax)
}

// complete handles one CQE: a frame read, a read ended, a write done.
func (p *ringPoller) complete(c *uring.CQE) {
	qi := int(c.UserData >> udQueueSh & udQueueMsk)
	q := &p.qs[qi]
	switch c.UserData & udKind {
	case udRead:
		p.read(q, c)
	case udWrite:
		if c.Res < 0 {
			q.st.TxErrors.Add(1)
		} else if c.UserData&udBack != 0 {
			q.st.Replied.Add(1)
		} else {
			q.st.Forwarded.Add(1)
		}
		id := int(c.UserData & 0xffff)
		if c.UserData&udHeap != 0 {
			p.heap[id] = nil
			p.heapFree = append(p.heapFree, id)
			if fs := p.heapFrags[id]; fs != nil {
				p.heapFrags[id] = nil
				fs.Done()
			}
			return
		}
		if q.refs[id]--; q.refs[id] == 0 {
			p.put(q, uint16(id))
		}
	}
}

// read runs a read CQE's frame through the queue, or handles the end of
// the read.
func (p *ringPoller) read(q *ringQueue, c *uring.CQE) {
	if !c.More() {
		q.armed = false
	}
	bid, ok := c.Buffer()
	if c.Res > 0 && ok {
		q.fails = 0
		q.held++
		if n, ok := ringFrameLen(int(c.Res), q.h); ok {
			q.bufs[0] = q.br.Slot(bid)[:Headroom+maxFrame]
			q.sizes[0] = n
			q.handle(1)
		} else {
			q.st.Truncated.Add(1)
		}
		if q.refs[bid] == 0 { // not written (dropped, passed, stolen): back at once
			p.put(q, bid)
		}
		if !q.armed {
			q.rearm = true
		}
		return
	}
	if c.More() {
		return
	}
	// The read ended without a frame.
	switch errno := unix.Errno(-c.Res); {
	case errno == unix.ENOBUFS:
		q.rearm = true // after this pass's slots are published
	case errno == unix.ECANCELED:
	case errno == unix.EBADFD || errno == unix.ENODEV || errno == unix.EBADF:
		q.die(errno)
	default:
		if q.fails++; q.fails >= maxFailures {
			q.die(errno)
			return
		}
		q.rearm = true
	}
}

// ringFrameLen is the length of the frame in a read of res bytes into a
// slot, behind a virtio-net header of h bytes; false for a read the
// balancer must not see: one that filled the whole buffer, which the
// kernel cut short (uring.TestTAPTruncated; no frame is that long, so
// this is a kernel that changed, not a client), or one shorter than the
// header the kernel writes whole.
func ringFrameLen(res, h int) (int, bool) {
	if res >= ringSlot-(Headroom-h) || res < h {
		return 0, false
	}
	return res - h, true
}

// send queues queue qi's classified batch as writes.
func (p *ringPoller) send(qi int) {
	q := &p.qs[qi]
	for _, f := range q.fwd {
		p.write(q, qi, q.outFd, f, 0)
	}
	for _, f := range q.back {
		p.write(q, qi, q.fd, f, udBack)
	}
}

// write queues one frame's write; its slot (or heap entry) is held until
// the write's CQE.
func (p *ringPoller) write(q *ringQueue, qi, fd int, f []byte, back uint64) {
	ud := udWrite | back | uint64(qi)<<udQueueSh
	bid, inSlot := q.br.Bid(f)
	if inSlot {
		ud |= uint64(bid)
	} else {
		if len(p.heapFree) == 0 {
			q.st.TxErrors.Add(1)
			return
		}
		id := p.heapFree[len(p.heapFree)-1]
		p.heapFree = p.heapFree[:len(p.heapFree)-1]
		p.heap[id] = f
		ud |= udHeap | uint64(id)
	}
	ok := p.r.Write(fd, f, ud)
	if !ok {
		p.enters.Add(1)
		p.r.Submit() // the SQ is full: hand it over and try once more
		ok = p.r.Write(fd, f, ud)
	}
	if !ok {
		q.st.TxErrors.Add(1)
		if !inSlot {
			id := int(ud & 0xffff)
			p.heap[id] = nil
			p.heapFree = append(p.heapFree, id)
		}
		return
	}
	if inSlot {
		q.refs[bid]++
	} else if fs := q.fragsOf(f); fs != nil {
		fs.Hold()
		p.heapFrags[ud&0xffff] = fs
	}
	p.writes++
}

// put gives a slot back to its queue's buffer ring (published once per pass).
func (p *ringPoller) put(q *ringQueue, bid uint16) {
	q.br.Put(bid)
	q.held--
	q.dirty = true
}

// pause cancels every read, finishes the frames already read (their
// writes included) until no request is in flight, tells Pause, and waits
// for Resume, then arms the reads again. Frames that arrive meanwhile wait
// in the TAPs' queues, for this process or a successor. It returns false
// if the stack stops while paused.
func (p *ringPoller) pause() bool {
	for i := range p.qs {
		if q := &p.qs[i]; q.armed || q.rearm {
			q.rearm = false
			p.r.CancelFD(q.fd, 0)
		}
	}
	// Bounded: the cancels end every read at once; what they had read
	// is handled (written) on the way.
	deadline := time.Now().Add(time.Second)
	for p.r.Inflight() > 0 && time.Now().Before(deadline) {
		p.writes = 0
		p.enters.Add(1)
		if e := p.r.Wait(1, 10*time.Millisecond); e != 0 && e != unix.EBUSY && e != unix.EAGAIN {
			p.st.log.Warn("io_uring poller: wait failed while pausing", "err", e)
		}
		n := p.r.Reap(p.cqes[:])
		for i := range n {
			p.complete(&p.cqes[i])
		}
		p.publish(false)
	}
	if p.r.Inflight() > 0 {
		p.st.log.Error("io_uring poller: requests still in flight a second after pausing", "inflight", p.r.Inflight())
	}
	for i := range p.qs {
		p.qs[i].rearm = false // Resume arms every live queue
	}
	p.pauseReq.Store(false)
	p.paused <- struct{}{}
	select {
	case <-p.resume:
	case <-p.st.stop:
		return false
	}
	for i := range p.qs {
		if !p.qs[i].dead {
			p.arm(i)
		}
	}
	p.enters.Add(1)
	p.r.Submit()
	return true
}

// publish makes the slots put back in this pass visible to the kernel
// (one store per buffer ring) and, if rearm, arms the reads that ended;
// it reports whether it armed any.
func (p *ringPoller) publish(rearm bool) bool {
	rearmed := false
	for i := range p.qs {
		q := &p.qs[i]
		if q.dirty {
			q.br.Publish()
			q.dirty = false
		}
		// Armed with no buffer, a read would end with -ENOBUFS at
		// once: wait for a slot to come back.
		if rearm && q.rearm && !q.dead && q.held < ringSlots && p.arm(i) {
			rearmed = true
		}
	}
	return rearmed
}

// pauseRings is Stack.Pause for the io_uring pollers: it asks them all and
// waits for each to have stopped reading (at most a sleep of pollWait
// later: a sleeping poller notices at its next wake-up).
func (st *Stack) pauseRings() error {
	for _, p := range st.rings {
		p.pauseReq.Store(true)
	}
	for _, p := range st.rings {
		select {
		case <-p.paused:
		case <-st.stop:
			return fmt.Errorf("pause: the stack is closed: %w", ErrCannotPause)
		}
	}
	return nil
}

// resumeRings is Stack.Resume for the io_uring pollers.
func (st *Stack) resumeRings() error {
	for _, p := range st.rings {
		select {
		case p.resume <- struct{}{}:
		case <-st.stop:
			return errors.New("resume: the stack is closed")
		}
	}
	return nil
}

// RingEnters reports how many io_uring_enter calls the io_uring poller has
// made, and whether it runs (interfaces.io: uring, or auto where allowed).
func (st *Stack) RingEnters() (enters uint64, on bool) {
	for _, p := range st.rings {
		enters += p.enters.Load()
	}
	return enters, len(st.rings) > 0
}
