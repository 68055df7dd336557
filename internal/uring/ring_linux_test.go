package uring

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// newRing sets a ring up on the test's locked thread and closes it at the
// end, on that thread (t.Cleanup runs on the test goroutine).
func newRing(t *testing.T, sq, cq uint32) *Ring {
	t.Helper()
	runtime.LockOSThread()
	r, err := New(sq, cq)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		runtime.UnlockOSThread()
	})
	return r
}

// TestNopRoundTrip submits and reaps 10 000 NOPs in batches, each CQE
// carrying its SQE's user data back in order, with no allocation per
// round trip.
func TestNopRoundTrip(t *testing.T) {
	r := newRing(t, 8, 16)
	var cqes [16]CQE
	var next, want uint64
	round := func() {
		for i := 0; i < 8; i++ {
			if !r.Nop(next) {
				t.Fatalf("SQ full after %d of 8 NOPs", i)
			}
			next++
		}
		if r.Nop(next) {
			t.Fatal("a ninth NOP fit in an 8-entry SQ")
		}
		if e := r.Submit(); e != 0 {
			t.Fatalf("Submit: %v", e)
		}
		n := r.Reap(cqes[:])
		if n != 8 {
			t.Fatalf("reaped %d CQEs, want 8", n)
		}
		for _, c := range cqes[:n] {
			if c.UserData != want || c.Res != 0 || c.More() {
				t.Fatalf("CQE %+v, want user data %d, res 0, no F_MORE", c, want)
			}
			want++
		}
	}
	for range 624 {
		round()
	}
	// AllocsPerRun runs once more to warm up: 624 + 1 + 625 rounds of 8.
	if a := testing.AllocsPerRun(625, round); a != 0 {
		t.Errorf("%v allocations per 8 NOPs, want 0", a)
	}
	if want != 10000 {
		t.Errorf("%d NOPs round-tripped, want 10000", want)
	}
	if r.Inflight() != 0 || r.Ready() != 0 {
		t.Errorf("inflight %d, ready %d after reaping all, want 0, 0", r.Inflight(), r.Ready())
	}
}

// TestSingleIssuer checks SINGLE_ISSUER is in force: another thread's
// submission is refused with EEXIST, the ring's own thread still works.
func TestSingleIssuer(t *testing.T) {
	r := newRing(t, 4, 8)
	r.Nop(7)
	n := r.flush()
	got := make(chan unix.Errno)
	go func() {
		runtime.LockOSThread() // a thread of its own: the test's is locked
		defer runtime.UnlockOSThread()
		got <- r.enter(n, 0, enterGetEvents, nil, 0)
	}()
	if e := <-got; e != unix.EEXIST {
		t.Fatalf("enter from another thread: %v, want EEXIST", e)
	}
	if e := r.Submit(); e != 0 {
		t.Fatalf("Submit on the ring's thread: %v", e)
	}
	var c [1]CQE
	if r.Reap(c[:]) != 1 || c[0].UserData != 7 {
		t.Fatalf("reaped %+v, want the NOP 7", c[0])
	}
}

// TestRefusalCause checks each refusal of io_uring_setup names its cause,
// telling the sysctl from a seccomp profile by reading the sysctl.
func TestRefusalCause(t *testing.T) {
	dir := t.TempDir()
	sysctl := func(v string) string {
		p := filepath.Join(dir, v)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		errno   unix.Errno
		sysctl  string
		cause   Cause
		hint    string
		refused bool
	}{
		{unix.ENOSYS, sysctl("0"), CauseUnavailable, "io_uring not available (CONFIG_IO_URING off, or a seccomp filter)", true},
		{unix.EPERM, sysctl("2"), CauseDisabled, "kernel.io_uring_disabled=2", true},
		{unix.EPERM, sysctl("1"), CauseDisabled, "kernel.io_uring_disabled=1", true},
		{unix.EPERM, sysctl("0"), CauseSeccomp, "a seccomp profile (containers: allow io_uring_setup, io_uring_enter, io_uring_register)", true},
		{unix.EPERM, filepath.Join(dir, "absent"), CauseSeccomp, "a seccomp profile (containers: allow io_uring_setup, io_uring_enter, io_uring_register)", true},
		{unix.EINVAL, sysctl("0"), CauseOldKernel, "kernel too old (needs 6.7)", true},
		{unix.ENOMEM, sysctl("0"), CauseOther, "io_uring setup failed", false},
	} {
		old := disabledPath
		disabledPath = c.sysctl
		err := error(refusal("io_uring_setup", c.errno))
		disabledPath = old
		var re *RefusedError
		if !errors.As(err, &re) || re.Cause != c.cause || re.Hint != c.hint || re.Step != "io_uring_setup" {
			t.Errorf("%v with sysctl %s: %+v, want cause %v, hint %q", c.errno, filepath.Base(c.sysctl), re, c.cause, c.hint)
		}
		if !errors.Is(err, c.errno) {
			t.Errorf("%v: %v does not unwrap to the errno", c.errno, err)
		}
		if Refused(err) != c.refused {
			t.Errorf("%v: Refused = %v, want %v", c.errno, !c.refused, c.refused)
		}
	}
}

// TestCQOverflow fills the CQ past its size: with FEAT_NODROP no CQE is
// lost, the SQ flags say CQ_OVERFLOW without a system call, and an enter
// moves the kept CQEs in once there is room.
func TestCQOverflow(t *testing.T) {
	r := newRing(t, 4, 4)
	size := uint32(len(r.cqes))
	for round := range 2 { // two submits of a full SQ, nothing reaped between
		for i := range size {
			if !r.Nop(uint64(round)*uint64(size) + uint64(i)) {
				t.Fatalf("SQ full at NOP %d of round %d", i, round)
			}
		}
		if e := r.Submit(); e != 0 {
			t.Fatalf("Submit: %v", e)
		}
	}
	if !r.NeedsEnter() || r.Ready() != size {
		t.Fatalf("after %d NOPs into a %d-entry CQ: NeedsEnter %v, ready %d; want true, %d", 2*size, size, r.NeedsEnter(), r.Ready(), size)
	}
	cqes := make([]CQE, 2*size)
	got := r.Reap(cqes)
	if e := r.Submit(); e != 0 {
		t.Fatalf("Submit to flush the overflow: %v", e)
	}
	got += r.Reap(cqes[got:])
	if uint32(got) != 2*size || r.NeedsEnter() {
		t.Fatalf("reaped %d of %d CQEs, NeedsEnter %v after the flush", got, 2*size, r.NeedsEnter())
	}
	for i, c := range cqes {
		if c.UserData != uint64(i) {
			t.Fatalf("CQE %d carries %d: order lost in the overflow", i, c.UserData)
		}
	}
}

// TestNewArguments refuses a CQ smaller than the SQ before the kernel
// does: its EINVAL would read as an old kernel.
func TestNewArguments(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, err := New(8, 4)
	if err == nil {
		r.Close()
		t.Fatal("a 4-entry CQ under an 8-entry SQ was accepted")
	}
	if Refused(err) {
		t.Fatalf("%v: reported as a refusal of io_uring, not a bad argument", err)
	}
}
