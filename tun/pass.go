package tun

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Passing a queue to another process (tapvs run --takeover). A queue is one
// open file of /dev/net/tun: a descriptor passed over a unix socket
// (SCM_RIGHTS) is the same file, so the receiver reads the same queue, the
// TAP keeps its name, namespace, addresses and settings, and closing the
// sender's copy detaches nothing. The receiver must not run TUNSETIFF again
// (the name may now be in another namespace), and neither side may call
// (*os.File).Fd() on it: Fd switches the shared file to blocking for both.

// Passer is a Device queue whose descriptor can be handed to another process.
type Passer interface {
	Device
	// Dup returns a new descriptor of the same open file, close-on-exec,
	// for the caller to send and close; the queue keeps its own.
	Dup() (int, error)
	// SetReadDeadline makes a Read parked in Go's netpoller return
	// os.ErrDeadlineExceeded at t (the zero time: never): how a reader is
	// stopped at a batch boundary without closing the queue.
	SetReadDeadline(t time.Time) error
}

var _ Passer = (*tapQueue)(nil)

// Dup duplicates the queue's descriptor without Fd (see above): through
// SyscallConn, or the detached descriptor.
func (q *tapQueue) Dup() (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch fd := q.fd.Load(); {
	case fd == fdClosed:
		return -1, fmt.Errorf("tap %s: %w", q.name, os.ErrClosed)
	case fd >= 0:
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("tap %s: dup: %w", q.name, err)
		}
		return d, nil
	}
	return q.dupFile()
}

// SetReadDeadline sets the file's read deadline; a detached queue has no
// parked reader to wake.
func (q *tapQueue) SetReadDeadline(t time.Time) error {
	if q.fd.Load() != -1 {
		return fmt.Errorf("tap %s: read deadline: the queue is detached for polling", q.name)
	}
	return q.f.SetReadDeadline(t)
}

// QueueInfo is what the kernel says of a TAP queue descriptor.
type QueueInfo struct {
	Name       string
	VNetHdrLen int // 0, or VNetHdrLen when the queue has IFF_VNET_HDR
	MultiQueue bool
}

// ErrNotTAP is Adopt's error for a descriptor that is not a usable TAP queue.
var ErrNotTAP = errors.New("not a TAP queue")

// Adopt makes a Device of a TAP queue descriptor received from another
// process, after checking it with the kernel: a TAP (IFF_TAP, IFF_NO_PI),
// named want, with a virtio-net header of hdr bytes (0 or VNetHdrLen), and
// non-blocking (so that its reads park in Go's netpoller). The device owns
// fd from then on; on error fd is left to the caller to close. The TAP's
// offloads (TUNSETOFFLOAD) stay as the sender set them: they belong to the
// interface, not the descriptor.
func Adopt(fd int, want string, hdr int) (Device, error) {
	info, err := Inspect(fd)
	if err != nil {
		return nil, err
	}
	if info.Name != want {
		return nil, fmt.Errorf("tap %s: the descriptor passed is interface %q: %w", want, info.Name, ErrNotTAP)
	}
	if info.VNetHdrLen != hdr {
		return nil, fmt.Errorf("tap %s: the descriptor passed has a %d-byte virtio-net header, the sender said %d: %w", want, info.VNetHdrLen, hdr, ErrNotTAP)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: F_GETFL: %w", want, err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		// Setting it here would change the sender's copy as well (one open
		// file); a blocking queue means someone called Fd() on it.
		return nil, fmt.Errorf("tap %s: the descriptor passed is blocking: %w", want, ErrNotTAP)
	}
	// os.NewFile sees O_NONBLOCK and puts the file in Go's netpoller.
	return newTapQueue(want, os.NewFile(uintptr(fd), "/dev/net/tun"), hdr), nil
}

// Detached reports whether the TAP queue fd is no longer attached to an
// interface (its TAP was deleted): TUNGETIFF then fails with EL2HLT (or
// EBADFD). A read could have said so and not: tun wakes its readers
// before it detaches them (tun_detach_all: sk_data_ready, then tfile->tun
// cleared), so a read woken in between finds nothing, waits again, and is
// never woken. One ioctl.
func Detached(fd int) bool {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return false
	}
	err = unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr)
	return err == unix.EL2HLT || err == unix.EBADFD
}

// Inspect asks the kernel what TAP queue fd is (TUNGETIFF, TUNGETVNETHDRSZ).
func Inspect(fd int) (QueueInfo, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return QueueInfo{}, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return QueueInfo{}, fmt.Errorf("TUNGETIFF: %w (%w)", err, ErrNotTAP)
	}
	flags := ifr.Uint16()
	info := QueueInfo{Name: ifr.Name(), MultiQueue: flags&unix.IFF_MULTI_QUEUE != 0}
	if flags&unix.IFF_TAP == 0 || flags&unix.IFF_NO_PI == 0 {
		return info, fmt.Errorf("interface %s: flags %#x are not a TAP without packet information: %w", info.Name, flags, ErrNotTAP)
	}
	if flags&unix.IFF_VNET_HDR != 0 {
		n, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ)
		if err != nil {
			return info, fmt.Errorf("interface %s: TUNGETVNETHDRSZ: %w", info.Name, err)
		}
		if n != VNetHdrLen {
			return info, fmt.Errorf("interface %s: a %d-byte virtio-net header, tapvs writes %d: %w", info.Name, n, VNetHdrLen, ErrNotTAP)
		}
		info.VNetHdrLen = n
	}
	return info, nil
}
