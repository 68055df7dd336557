package tun

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// tapQueue is one queue of a TAP: a plain one (water), or one with a
// virtio-net header and offloads (netlink), which puts hdr bytes before
// every frame.
//
// Its descriptor starts as an *os.File in Go's netpoller, where a reader
// parks while the queue is empty. Detach hands it to a busy poller instead:
// the file leaves Go's netpoller (its epoll would otherwise wake a thread
// for every frame that arrives, only to find no one waiting) and reads,
// writes and Close go straight to a descriptor.
type tapQueue struct {
	name string
	hdr  int // 0 or VNetHdrLen
	f    *os.File
	fd   atomic.Int64 // the detached descriptor; -1 until Detach, -2 once closed
	mu   sync.Mutex   // Detach and close
}

const fdClosed = -2

func newTapQueue(name string, f *os.File, hdr int) *tapQueue {
	q := &tapQueue{name: name, f: f, hdr: hdr}
	q.fd.Store(-1)
	return q
}

var _ Poller = (*tapQueue)(nil)

// Read parks in Go's netpoller until the queue has a frame.
func (q *tapQueue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := q.read(bufs[0][offset-q.hdr:])
	if err != nil {
		return 0, err
	}
	return q.frame(n, sizes)
}

// TryRead returns 0 frames at once when a detached queue is empty.
func (q *tapQueue) TryRead(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := q.tryRead(bufs[0][offset-q.hdr:])
	if n == 0 || err != nil {
		return 0, err
	}
	return q.frame(n, sizes)
}

func (q *tapQueue) frame(n int, sizes []int) (int, error) {
	if n < q.hdr { // the kernel writes the whole header or fails the read
		return 0, fmt.Errorf("tap %s: short read of %d bytes", q.name, n)
	}
	sizes[0] = n - q.hdr
	return 1, nil
}

// Write sends each frame whole, its virtio-net header first when the queue
// has one.
func (q *tapQueue) Write(frames [][]byte) (int, error) {
	for i, f := range frames {
		if err := q.write(f); err != nil {
			return i, err
		}
	}
	return len(frames), nil
}

func (q *tapQueue) BatchSize() int  { return 1 }
func (q *tapQueue) VNetHdrLen() int { return q.hdr }
func (q *tapQueue) Name() string    { return q.name }

func (q *tapQueue) read(b []byte) (int, error) {
	if q.fd.Load() != -1 {
		return 0, fmt.Errorf("tap %s: read: the queue is detached for polling", q.name)
	}
	return q.f.Read(b)
}

func (q *tapQueue) write(frame []byte) error {
	fd := q.fd.Load()
	switch {
	case fd == fdClosed:
		return fmt.Errorf("tap %s: write: %w", q.name, os.ErrClosed)
	case fd < 0:
		_, err := q.f.Write(frame)
		return err
	}
	for {
		_, err := unix.Write(int(fd), frame)
		if err != unix.EINTR {
			if err != nil {
				return fmt.Errorf("tap %s: write: %w", q.name, err)
			}
			return nil
		}
	}
}

// Detach moves the queue out of Go's netpoller and returns the descriptor
// a poller reads it by. Writes in flight on the file finish first (Close
// waits for them) and later ones use the descriptor; one that read the
// state just before may fail once with the file closed. tapvs detaches at
// start, before frames flow.
func (q *tapQueue) Detach() (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch fd := q.fd.Load(); {
	case fd == fdClosed:
		return -1, fmt.Errorf("tap %s: %w", q.name, os.ErrClosed)
	case fd >= 0:
		return int(fd), nil
	}
	dup, err := q.dupFile()
	if err != nil {
		return -1, err
	}
	q.fd.Store(int64(dup))
	q.f.Close() // the queue lives on in dup (same open file: the TAP stays)
	return dup, nil
}

// dupFile duplicates the file's descriptor (close-on-exec) through
// SyscallConn: never Fd(), which would make the open file, shared with
// every copy, blocking.
func (q *tapQueue) dupFile() (int, error) {
	raw, err := q.f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("tap %s: %w", q.name, err)
	}
	dup, derr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("tap %s: %w", q.name, err)
	}
	if derr != nil {
		return -1, fmt.Errorf("tap %s: dup: %w", q.name, derr)
	}
	return dup, nil
}

// TryRead reads one frame from a detached queue: 0 bytes and no error when
// the queue is empty.
func (q *tapQueue) tryRead(b []byte) (int, error) {
	fd := q.fd.Load()
	switch {
	case fd == fdClosed:
		return 0, os.ErrClosed
	case fd < 0:
		return 0, fmt.Errorf("tap %s: read: the queue is not detached for polling", q.name)
	}
	for {
		n, err := unix.Read(int(fd), b)
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		case unix.EBADF:
			return 0, os.ErrClosed
		default:
			return 0, fmt.Errorf("tap %s: read: %w", q.name, err)
		}
	}
}

// Close closes the file, or the detached descriptor. The descriptor is
// marked closed before its number is given back, so a later write or read
// fails instead of reaching whatever file takes the number next.
func (q *tapQueue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	fd := q.fd.Load()
	switch {
	case fd == fdClosed:
		return os.ErrClosed
	case fd < 0:
		return q.f.Close()
	}
	q.fd.Store(fdClosed)
	if err := unix.Close(int(fd)); err != nil {
		return fmt.Errorf("tap %s: close: %w", q.name, err)
	}
	return nil
}
