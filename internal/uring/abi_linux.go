package uring

// The kernel's io_uring ABI (include/uapi/linux/io_uring.h), declared by
// hand: x/sys/unix has only the system call numbers, and the header on a
// build machine may be older than the kernel tapvs runs on (abi_test checks
// these against it where it has them). Only what tapvs uses is declared.

// io_uring_setup flags (the kernel version that added each).
const (
	setupCQSize       = 1 << 3  // 5.5: cq_entries is ours, not 2*sq
	setupSubmitAll    = 1 << 7  // 5.18: one bad SQE does not stop the batch
	setupCoopTaskrun  = 1 << 8  // 5.19: no IPI for task work (implied by DEFER_TASKRUN)
	setupTaskrunFlag  = 1 << 9  // 5.19: IORING_SQ_TASKRUN tells a spinner to enter
	setupSingleIssuer = 1 << 12 // 6.0: one submitting thread
	setupDeferTaskrun = 1 << 13 // 6.1: completions run only when we enter with GETEVENTS
)

// Features the kernel reports in params.Features.
const (
	featSingleMmap = 1 << 0 // SQ and CQ rings share one mapping
	featNoDrop     = 1 << 1 // a full CQ overflows to a kernel list, no CQE is lost
	featExtArg     = 1 << 8 // io_uring_enter takes a timeout (geteventsArg)
)

// mmap offsets of the rings and the SQE array.
const (
	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

// io_uring_enter flags.
const (
	enterGetEvents = 1 << 0
	enterExtArg    = 1 << 3
)

// Bits of the SQ ring's flags word.
const (
	sqCQOverflow = 1 << 1 // CQEs wait in the overflow list: enter to flush them
	sqTaskrun    = 1 << 2 // deferred completions wait: enter with GETEVENTS to run them
)

// CQE flags.
const (
	cqeFBuffer     = 1 << 0 // the upper 16 bits name the provided buffer used
	cqeFMore       = 1 << 1 // the multishot request stays armed
	cqeBufferShift = 16
)

// SQE flags.
const sqeBufferSelect = 1 << 5 // IOSQE_BUFFER_SELECT: take a buffer from BufGroup

// Opcodes.
const (
	opNop           = 0
	opAsyncCancel   = 14
	opRead          = 22
	opWrite         = 23
	opReadMultishot = 49 // 6.7
)

// IORING_ASYNC_CANCEL_* flags (sqe.OpFlags of opAsyncCancel).
const (
	asyncCancelAll = 1 << 0 // every request matching, not only the first
	asyncCancelFD  = 1 << 1 // match by file descriptor instead of user data
	asyncCancelAny = 1 << 2 // match every request of the ring (Close)
)

// io_uring_register opcodes.
const (
	registerProbe      = 8
	registerPbufRing   = 22
	unregisterPbufRing = 23
)

// probeOpSupported marks an opcode the kernel implements in a probe.
const probeOpSupported = 1 << 0

// probeOps is how many opcodes we ask the probe about (the kernel fills up
// to its last op).
const probeOps = 256

// sqe is struct io_uring_sqe (64 bytes; SQE128 is not used). Unions are
// named after the member tapvs uses.
type sqe struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32 // rw_flags, cancel_flags, ...
	UserData    uint64
	BufGroup    uint16 // buf_index / buf_group
	Personality uint16
	FileIndex   uint32 // splice_fd_in / file_index
	Addr3       uint64
	_           uint64
}

// CQE is struct io_uring_cqe (16 bytes; CQE32 is not used), as the kernel
// posts it.
type CQE struct {
	UserData uint64
	Res      int32 // bytes, or a negative errno
	Flags    uint32
}

// More reports whether a multishot request stays armed after this CQE: a
// CQE without it ends the request.
func (c *CQE) More() bool { return c.Flags&cqeFMore != 0 }

// Buffer returns the provided buffer's id this CQE filled, and whether it
// names one.
func (c *CQE) Buffer() (bid uint16, ok bool) {
	return uint16(c.Flags >> cqeBufferShift), c.Flags&cqeFBuffer != 0
}

// sqOffsets is struct io_sqring_offsets: where each field of the SQ ring
// lies in the mapping.
type sqOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, _ uint32
	_                                                           uint64 // user_addr (NO_MMAP)
}

// cqOffsets is struct io_cqring_offsets.
type cqOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, _ uint32
	_                                                           uint64 // user_addr (NO_MMAP)
}

// params is struct io_uring_params (120 bytes).
type params struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	_                                                                      [3]uint32
	SQOff                                                                  sqOffsets
	CQOff                                                                  cqOffsets
}

// probeOp is struct io_uring_probe_op; a probe is a 16-byte header
// (last_op, ops_len, resv, resv2[3]) followed by probeOps of them.
type probeOp struct {
	Op    uint8
	_     uint8
	Flags uint16
	_     uint32
}

// probe is struct io_uring_probe with room for probeOps ops.
type probe struct {
	LastOp uint8
	OpsLen uint8
	_      uint16
	_      [3]uint32
	Ops    [probeOps]probeOp
}

// buf is struct io_uring_buf, one entry of a provided-buffer ring. Resv of
// entry 0 is the ring's tail (struct io_uring_buf_ring overlays it).
type buf struct {
	Addr uint64
	Len  uint32
	Bid  uint16
	Resv uint16
}

// bufReg is struct io_uring_buf_reg, the argument of registerPbufRing.
type bufReg struct {
	RingAddr    uint64
	RingEntries uint32
	Bgid        uint16
	Flags       uint16
	_           [3]uint64
}

// geteventsArg is struct io_uring_getevents_arg, the EXT_ARG of enter.
type geteventsArg struct {
	Sigmask     uint64
	SigmaskSz   uint32
	MinWaitUsec uint32 // 6.12; 0 on older kernels, where it is padding
	Ts          uint64
}
