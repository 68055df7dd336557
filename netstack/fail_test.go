package netstack

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// failDev fails every read with err, as a deleted TAP does, and counts them.
type failDev struct {
	memDev
	err   error
	reads int
}

func (d *failDev) Read([][]byte, []int, int) (int, error) {
	d.reads++
	if d.reads > 10*maxFailures {
		return 0, os.ErrClosed // a reader that spins ends here, and the test says so
	}
	return 0, d.err
}
func (d *failDev) Name() string { return "tap-dead" }

var _ tun.Device = (*failDev)(nil)

// A reader whose reads fail for good ends and reports the error, naming its
// TAP, instead of reading on: a TAP deleted under tapvs returns EBADFD at once
// on every read, and then Go's "not pollable", which is no errno at all.
func TestReaderEndsOnPersistentError(t *testing.T) {
	for _, c := range []struct {
		err      error
		maxReads int
	}{
		{&os.PathError{Op: "read", Path: "/dev/net/tun", Err: syscall.EBADFD}, 1},
		{&os.PathError{Op: "read", Path: "/dev/net/tun", Err: syscall.ENODEV}, 1},
		{errors.New("not pollable"), maxFailures},
		{fmt.Errorf("wrapped: %w", syscall.EINTR), maxFailures},
	} {
		dev := &failDev{err: c.err}
		var got error
		e := &Endpoint{side: nat.ClientSide, devs: []tun.Device{dev}, stats: make([]QueueStats, 1),
			log: slog.New(slog.NewTextHandler(io.Discard, nil)), fail: func(err error) { got = err }}
		e.peer = e
		e.readLoop(0)
		if got == nil {
			t.Errorf("%v: the reader read %d times and ended without reporting", c.err, dev.reads)
			continue
		}
		if !errors.Is(got, c.err) && !errors.Is(got, errors.Unwrap(c.err)) || !strings.Contains(got.Error(), "tap-dead") {
			t.Errorf("%v: reported %q: not the read's error naming the TAP", c.err, got)
		}
		if dev.reads > c.maxReads {
			t.Errorf("%v: %d reads before the reader gave up, want at most %d", c.err, dev.reads, c.maxReads)
		}
	}
}
