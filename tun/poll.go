package tun

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdOf returns the descriptor of f without os.File.Fd, which would turn the
// file blocking and take it out of Go's netpoller.
func fdOf(f syscall.Conn) (int, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := raw.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// tryRead reads one frame from a non-blocking queue: 0 bytes and no error
// when the queue is empty.
func tryRead(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
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
			return 0, fmt.Errorf("read: %w", err)
		}
	}
}
