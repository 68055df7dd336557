package uring

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setupFlags is the one flag set tapvs asks for: one submitting thread
// whose completions run only when it enters (no IPIs, no task work at
// random points), a flag in the SQ ring that tells a spinning poller it
// must enter, a CQ sized by us, and a batch that goes on past a bad SQE.
// Every kernel with READ_MULTISHOT (6.7) has them all, so there is no
// ladder of weaker sets: less means fall back.
const setupFlags = setupSingleIssuer | setupDeferTaskrun | setupTaskrunFlag | setupCQSize | setupSubmitAll

// needFeatures are the features New requires: one mapping for both rings,
// no CQE ever dropped, and a timeout on enter.
const needFeatures = featSingleMmap | featNoDrop | featExtArg

// needOps are the opcodes New requires the probe to report.
var needOps = [...]struct {
	op   uint8
	name string
}{{opReadMultishot, "READ_MULTISHOT"}, {opWrite, "WRITE"}, {opAsyncCancel, "ASYNC_CANCEL"}}

// disabledPath is the sysctl read to tell kernel.io_uring_disabled from a
// seccomp filter when setup fails with EPERM; a variable for tests.
var disabledPath = "/proc/sys/kernel/io_uring_disabled"

// Ring is one io_uring. It is not safe for concurrent use: with
// SINGLE_ISSUER the kernel accepts submissions only from the thread that
// created it, so New, every method and Close run on one goroutine that
// holds runtime.LockOSThread for the ring's whole life (a submitter thread
// that exits with requests pending loses their completions).
type Ring struct {
	fd int

	// SQ ring, in the shared mapping. sqLocal is our tail: SQEs are filled
	// in behind it and published by flush.
	sqHead, sqTail, sqFlags *uint32
	sqMask, sqLocal         uint32
	sqes                    []sqe

	// CQ ring, in the shared mapping.
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []CQE

	// inflight counts requests whose last CQE has not been reaped: +1 per
	// SQE, -1 per CQE without F_MORE. Close cancels and waits for them, so
	// no read writes into a buffer after it is unmapped.
	inflight int

	// wait is the EXT_ARG of enter: on the heap (the Ring is), never on a
	// stack, since the kernel reads it by address.
	wait geteventsArg
	ts   unix.Timespec

	ringMem, sqeMem unsafe.Pointer
	ringLen, sqeLen uintptr
	bufs            []*BufRing // registered buffer rings, unmapped by Close
	closed          bool
}

// New sets up a ring with at least sqEntries SQEs and cqEntries CQEs (the
// kernel rounds both up to powers of two) on the calling thread, which
// must be locked (runtime.LockOSThread) until Close returns. Its error is a
// *RefusedError that names the step and the cause.
func New(sqEntries, cqEntries uint32) (*Ring, error) {
	// The kernel refuses this with EINVAL, which would read as an old
	// kernel and hide the caller's mistake behind a fallback.
	if sqEntries == 0 || cqEntries < sqEntries {
		return nil, fmt.Errorf("io_uring: %d CQ entries for %d SQ entries: want 0 < SQ <= CQ", cqEntries, sqEntries)
	}
	p := params{Flags: setupFlags, CQEntries: cqEntries}
	fd, _, e := unix.Syscall6(unix.SYS_IO_URING_SETUP, uintptr(sqEntries), uintptr(unsafe.Pointer(&p)), 0, 0, 0, 0)
	if e != 0 {
		return nil, refusal("io_uring_setup", e)
	}
	r := &Ring{fd: int(fd)}
	if p.Features&needFeatures != needFeatures {
		r.Close()
		return nil, &RefusedError{Step: "features", Cause: CauseOldKernel, Hint: "kernel too old (needs 6.7)",
			Err: fmt.Errorf("features %#x lack %#x", p.Features, needFeatures&^p.Features)}
	}
	if err := r.mmap(&p); err != nil {
		r.Close()
		return nil, &RefusedError{Step: "mmap", Cause: CauseOther, Hint: "mapping the rings", Err: err}
	}
	if err := r.probe(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// refusal names the cause of a failed setup system call.
func refusal(step string, e unix.Errno) *RefusedError {
	re := &RefusedError{Step: step, Err: e}
	switch e {
	case unix.ENOSYS:
		re.Cause, re.Hint = CauseUnavailable, "io_uring not available (CONFIG_IO_URING off, or a seccomp filter)"
	case unix.EPERM:
		// Both the sysctl and seccomp profiles answer EPERM; the sysctl
		// is readable, so a non-zero value is the cause, else seccomp.
		if v, err := os.ReadFile(disabledPath); err == nil && strings.TrimSpace(string(v)) != "0" {
			re.Cause, re.Hint = CauseDisabled, "kernel.io_uring_disabled="+strings.TrimSpace(string(v))
		} else {
			re.Cause, re.Hint = CauseSeccomp, "a seccomp profile (containers: allow io_uring_setup, io_uring_enter, io_uring_register)"
		}
	case unix.EINVAL:
		re.Cause, re.Hint = CauseOldKernel, "kernel too old (needs 6.7)"
	default:
		re.Cause, re.Hint = CauseOther, "io_uring setup failed"
	}
	return re
}

// mmap maps the SQ and CQ rings (one mapping, FEAT_SINGLE_MMAP) and the
// SQE array, and points the Ring's fields into them.
func (r *Ring) mmap(p *params) error {
	sq, cq := p.SQEntries, p.CQEntries
	r.ringLen = max(uintptr(p.SQOff.Array)+4*uintptr(sq), uintptr(p.CQOff.CQEs)+unsafe.Sizeof(CQE{})*uintptr(cq))
	m, err := unix.MmapPtr(r.fd, offSQRing, nil, r.ringLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		err = fmt.Errorf("mmap rings (%d bytes): %w", r.ringLen, err)
		r.ringLen = 0
		return err
	}
	r.ringMem = m
	r.sqeLen = unsafe.Sizeof(sqe{}) * uintptr(sq)
	s, err := unix.MmapPtr(r.fd, offSQEs, nil, r.sqeLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		err = fmt.Errorf("mmap SQEs (%d bytes): %w", r.sqeLen, err)
		r.sqeLen = 0
		return err
	}
	r.sqeMem = s
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(m, off)) }
	r.sqHead, r.sqTail, r.sqFlags = at(p.SQOff.Head), at(p.SQOff.Tail), at(p.SQOff.Flags)
	r.sqMask = *at(p.SQOff.RingMask)
	r.sqes = unsafe.Slice((*sqe)(s), sq)
	// The indirection array maps SQ slots to SQEs; identity, set once
	// (NO_SQARRAY would drop it, but is not worth a second code path).
	for i := range sq {
		*at(p.SQOff.Array + 4*i) = i
	}
	r.sqLocal = atomic.LoadUint32(r.sqTail)
	r.cqHead, r.cqTail = at(p.CQOff.Head), at(p.CQOff.Tail)
	r.cqMask = *at(p.CQOff.RingMask)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Add(m, p.CQOff.CQEs)), cq)
	return nil
}

// probe asks the kernel which opcodes it implements and refuses the ring
// when one tapvs needs is missing.
func (r *Ring) probe() error {
	var pr probe
	if e := r.register(registerProbe, unsafe.Pointer(&pr), probeOps); e != 0 {
		return refusal("probe", e)
	}
	for _, o := range needOps {
		if o.op > pr.LastOp || pr.Ops[o.op].Flags&probeOpSupported == 0 {
			return &RefusedError{Step: "probe", Cause: CauseOldKernel, Hint: "kernel too old (needs 6.7)",
				Err: fmt.Errorf("opcode %s (%d) not supported (last op %d)", o.name, o.op, pr.LastOp)}
		}
	}
	return nil
}

// register calls io_uring_register; arg must stay referenced for the call.
func (r *Ring) register(op uintptr, arg unsafe.Pointer, n uintptr) unix.Errno {
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), op, uintptr(arg), n, 0, 0)
	return e
}

// next returns a zeroed SQE behind our tail, or nil when the SQ is full
// (Submit first).
func (r *Ring) next() *sqe {
	if r.sqLocal-atomic.LoadUint32(r.sqHead) == uint32(len(r.sqes)) {
		return nil
	}
	s := &r.sqes[r.sqLocal&r.sqMask]
	*s = sqe{}
	r.sqLocal++
	r.inflight++
	return s
}

// Nop queues a no-op (tests, and a wake-up that completes at once).
func (r *Ring) Nop(userData uint64) bool {
	s := r.next()
	if s == nil {
		return false
	}
	s.Opcode, s.UserData = opNop, userData
	return true
}

// Write queues a write of b to fd. b's memory must stay put and referenced
// until the write's CQE is reaped: a provided buffer, or a heap slice the
// caller keeps; never a stack variable.
func (r *Ring) Write(fd int, b []byte, userData uint64) bool {
	s := r.next()
	if s == nil {
		return false
	}
	s.Opcode, s.Fd, s.UserData = opWrite, int32(fd), userData
	s.Addr, s.Len = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))), uint32(len(b))
	return true
}

// ReadMultishot arms a read of fd that posts one CQE per read into a
// buffer of group (a BufRing) until a CQE without F_MORE ends it. fd must
// be pollable (TAP, pipe, socket). Addr and Len stay 0: the whole provided
// buffer is used, and some kernels refuse anything else.
func (r *Ring) ReadMultishot(fd int, group uint16, userData uint64) bool {
	s := r.next()
	if s == nil {
		return false
	}
	s.Opcode, s.Flags, s.Fd, s.BufGroup, s.UserData = opReadMultishot, sqeBufferSelect, int32(fd), group, userData
	return true
}

// CancelFD queues a cancel of every request on fd; each cancelled request
// posts its last CQE with -ECANCELED, the cancel its own with the count.
func (r *Ring) CancelFD(fd int, userData uint64) bool {
	s := r.next()
	if s == nil {
		return false
	}
	s.Opcode, s.Fd, s.OpFlags, s.UserData = opAsyncCancel, int32(fd), asyncCancelFD|asyncCancelAll, userData
	return true
}

// flush publishes the SQEs queued since the last flush and returns how
// many the kernel has not consumed yet (counted from the head, which stays
// right after an interrupted enter).
func (r *Ring) flush() uint32 {
	atomic.StoreUint32(r.sqTail, r.sqLocal)
	return r.sqLocal - atomic.LoadUint32(r.sqHead)
}

// enter calls io_uring_enter. Syscall6, not RawSyscall6: it may block, and
// a TAP write runs the receiver's network stack inline.
func (r *Ring) enter(submit, minComplete, flags uint32, arg unsafe.Pointer, size uintptr) unix.Errno {
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(submit), uintptr(minComplete),
		uintptr(flags), uintptr(arg), size)
	return e
}

// Submit hands the queued SQEs to the kernel and runs deferred completions
// (DEFER_TASKRUN posts CQEs only inside an enter with GETEVENTS), without
// waiting. It returns 0 or the errno (EBUSY/EAGAIN: reap first); EINTR,
// the Go runtime's preemption signal, is retried.
func (r *Ring) Submit() unix.Errno {
	for {
		e := r.enter(r.flush(), 0, enterGetEvents, nil, 0)
		if e != unix.EINTR {
			return e
		}
	}
}

// Wait submits what is queued and sleeps until at least minComplete CQEs
// are ready or timeout passes. A timeout or a signal returns 0 (the caller
// reaps what there is and decides); other errnos are returned.
func (r *Ring) Wait(minComplete uint32, timeout time.Duration) unix.Errno {
	r.ts = unix.NsecToTimespec(int64(timeout))
	r.wait = geteventsArg{Ts: uint64(uintptr(unsafe.Pointer(&r.ts)))}
	e := r.enter(r.flush(), minComplete, enterGetEvents|enterExtArg, unsafe.Pointer(&r.wait), unsafe.Sizeof(r.wait))
	if e == unix.ETIME || e == unix.EINTR {
		return 0
	}
	return e
}

// NeedsEnter reports, without a system call, whether the kernel waits for
// an enter: deferred completions to run (SQ_TASKRUN) or overflowed CQEs to
// flush. A spinning poller checks it between reaps.
func (r *Ring) NeedsEnter() bool {
	return atomic.LoadUint32(r.sqFlags)&(sqTaskrun|sqCQOverflow) != 0
}

// Ready returns how many CQEs wait to be reaped.
func (r *Ring) Ready() uint32 {
	return atomic.LoadUint32(r.cqTail) - *r.cqHead
}

// Reap copies up to len(dst) CQEs into dst, frees their slots and returns
// how many it copied. No system call.
func (r *Ring) Reap(dst []CQE) int {
	head := *r.cqHead // only we write it
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail && n < len(dst); n++ {
		c := r.cqes[head&r.cqMask]
		dst[n] = c
		if c.Flags&cqeFMore == 0 {
			r.inflight--
		}
		head++
	}
	// After the copies, never before: the kernel may reuse a slot once
	// the head passes it.
	atomic.StoreUint32(r.cqHead, head)
	return n
}

// Inflight returns how many requests have not posted their last CQE.
func (r *Ring) Inflight() int { return r.inflight }

// closeDrain bounds how long Close waits for cancelled requests.
const closeDrain = time.Second

// errNotDrained is Close's error when requests outlive the cancel.
var errNotDrained = errors.New("requests still in flight after cancel: buffers left mapped")

// Close cancels every request, waits for their last CQEs, closes the ring
// and unmaps its memory. If requests outlive closeDrain the buffer rings'
// memory is left mapped (a leak, not a use after unmap) and Close says so.
// It must run on the ring's thread.
func (r *Ring) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	var err error
	if r.inflight > 0 && r.sqes != nil {
		err = r.drain()
	}
	if e := unix.Close(r.fd); e != nil && err == nil {
		err = fmt.Errorf("io_uring: close: %w", e)
	}
	if r.ringMem != nil {
		unix.MunmapPtr(r.ringMem, r.ringLen)
	}
	if r.sqeMem != nil {
		unix.MunmapPtr(r.sqeMem, r.sqeLen)
	}
	// Closing the ring unregistered the buffer rings; their memory goes
	// only if no read can still land in it.
	if err == nil {
		for _, b := range r.bufs {
			b.unmap()
		}
	}
	r.bufs = nil
	return err
}

// drain cancels every request and reaps until each posted its last CQE.
func (r *Ring) drain() error {
	if s := r.next(); s != nil {
		s.Opcode, s.OpFlags = opAsyncCancel, asyncCancelAny|asyncCancelAll
	}
	var scratch [64]CQE
	deadline := time.Now().Add(closeDrain)
	for r.inflight > 0 && time.Now().Before(deadline) {
		if e := r.Wait(1, 10*time.Millisecond); e != 0 {
			return fmt.Errorf("io_uring: close: %w", e)
		}
		r.Reap(scratch[:])
	}
	if r.inflight > 0 {
		return fmt.Errorf("io_uring: close: %d %w", r.inflight, errNotDrained)
	}
	return nil
}
