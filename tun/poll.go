package tun

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// queueFile is one TAP queue's descriptor. It starts as an *os.File in Go's
// netpoller, where a reader parks while the queue is empty. Detach hands it
// to a busy poller instead: the file leaves Go's netpoller (its epoll would
// otherwise wake a thread for every frame that arrives, only to find no one
// waiting) and reads, writes and Close go straight to a descriptor.
type queueFile struct {
	name string
	f    *os.File
	fd   atomic.Int64 // the detached descriptor; -1 until Detach, -2 once closed
	mu   sync.Mutex   // Detach and close
}

const fdClosed = -2

func newQueueFile(name string, f *os.File) *queueFile {
	q := &queueFile{name: name, f: f}
	q.fd.Store(-1)
	return q
}

func (q *queueFile) read(b []byte) (int, error) {
	if q.fd.Load() != -1 {
		return 0, fmt.Errorf("tap %s: read: the queue is detached for polling", q.name)
	}
	return q.f.Read(b)
}

func (q *queueFile) write(frame []byte) error {
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
func (q *queueFile) Detach() (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch fd := q.fd.Load(); {
	case fd == fdClosed:
		return -1, fmt.Errorf("tap %s: %w", q.name, os.ErrClosed)
	case fd >= 0:
		return int(fd), nil
	}
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
	q.fd.Store(int64(dup))
	q.f.Close() // the queue lives on in dup (same open file: the TAP stays)
	return dup, nil
}

// TryRead reads one frame from a detached queue: 0 bytes and no error when
// the queue is empty.
func (q *queueFile) tryRead(b []byte) (int, error) {
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

// close closes the file, or the detached descriptor. The descriptor is
// marked closed before its number is given back, so a later write or read
// fails instead of reaching whatever file takes the number next.
func (q *queueFile) close() error {
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
