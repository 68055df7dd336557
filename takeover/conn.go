package takeover

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// conn is one side of a session: whole messages with deadlines.
type conn struct {
	c   *net.UnixConn
	buf []byte
}

func newConn(c *net.UnixConn) *conn { return &conn{c: c, buf: make([]byte, MaxMessage+1)} }

// send writes one message, with descriptors attached if fds is not empty.
func (c *conn) send(m []byte, fds []int, timeout time.Duration) error {
	c.c.SetWriteDeadline(time.Now().Add(timeout))
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := c.c.WriteMsgUnix(m, oob, nil); err != nil {
		return fmt.Errorf("send %s: %w", msgName(first(m)), err)
	}
	return nil
}

// recv reads one message, and the descriptors that came with it (at most
// maxFDs; they are close-on-exec). A message of no bytes is the peer's
// end (io.EOF). The returned slice is valid until the next recv.
func (c *conn) recv(timeout time.Duration, maxFDs int) ([]byte, []int, error) {
	c.c.SetReadDeadline(time.Now().Add(timeout))
	var oob []byte
	if maxFDs > 0 {
		oob = make([]byte, syscall.CmsgSpace(4*maxFDs))
	}
	n, oobn, flags, _, err := c.c.ReadMsgUnix(c.buf, oob)
	fds, ferr := parseFDs(oob[:oobn])
	switch {
	case err != nil:
		closeFDs(fds)
		return nil, nil, err
	case ferr != nil:
		closeFDs(fds)
		return nil, nil, ferr
	case flags&unix.MSG_CTRUNC != 0:
		// The kernel closed the descriptors that did not fit.
		closeFDs(fds)
		return nil, nil, bad("more descriptors than the %d expected", maxFDs)
	case flags&unix.MSG_TRUNC != 0 || n > MaxMessage:
		closeFDs(fds)
		return nil, nil, bad("a message over %d bytes", MaxMessage)
	case n == 0:
		closeFDs(fds)
		return nil, nil, io.EOF
	}
	return c.buf[:n], fds, nil
}

func parseFDs(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, bad("control message: %v", err)
	}
	var fds []int
	var errs []error
	for _, m := range msgs {
		f, err := syscall.ParseUnixRights(&m)
		fds = append(fds, f...)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fds, bad("control message: %v", err)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// peer returns the credentials of the process at the other end.
func peer(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	return cred, cerr
}

// killPeer kills the process with pid through a pidfd, so that a pid
// reused since cannot be hit, and waits (bounded) until it is gone.
func killPeer(pid int32) error {
	pfd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pfd)
	if err := unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0); err != nil {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	// The pidfd becomes readable when the process has exited.
	fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
	for range 50 {
		n, err := unix.Poll(fds, 100)
		if n > 0 {
			return nil
		}
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("wait for %d: %w", pid, err)
		}
	}
	return fmt.Errorf("process %d still there 5s after SIGKILL", pid)
}

// isNoListener reports whether a dial failed because nothing listens at the
// path (no file, or a socket left by a process that is gone).
func isNoListener(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}
