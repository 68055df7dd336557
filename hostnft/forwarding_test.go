package hostnft

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Forwarding reads another namespace's sysctls on a thread of its own: if
// leaving that namespace fails, the caller's thread is still in its own
// namespace (the daemon goes on starting there), the error says so, and
// the thread left in the other namespace is retired, not reused.
func TestForwardingLeaveFailsOnItsOwnThread(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to make a network namespace")
		}
		t.Skip("needs root to make a network namespace")
	}
	const ns = "tapvs-hostnft-fwd"
	exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })

	// The test's goroutine stays on this thread: Forwarding must not move
	// it. (If it did, the goroutine ends locked and the thread goes.)
	runtime.LockOSThread()
	here, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	calls, tid := 0, 0
	setns = func(h netns.NsHandle) error {
		calls++
		if calls == 2 { // leaving: the thread stays in ns
			tid = unix.Gettid()
			return errors.New("injected")
		}
		return netns.Set(h)
	}
	defer func() { setns = netns.Set }()
	_, _, err = Forwarding(ns)
	if want := fmt.Sprintf("forwarding: netns %q: leave: injected", ns); err == nil || err.Error() != want {
		t.Fatalf("Forwarding: %v, want %q", err, want)
	}
	now, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer now.Close()
	if !now.Equal(here) {
		t.Fatalf("the caller's thread is left in %s", ns)
	}
	runtime.UnlockOSThread()
	// The thread that stayed in ns ends with its goroutine (unless it is
	// the process's first thread, which the runtime parks instead).
	if tid != os.Getpid() {
		if !threadEnds(t, tid, 5*time.Second) {
			t.Fatalf("thread %d, left in %s, still runs", tid, ns)
		}
	}
	setns = netns.Set
	if _, _, err := Forwarding(ns); err != nil {
		t.Fatalf("Forwarding after: %v", err)
	}
}

// threadEnds waits, up to limit, for thread tid of this process to end:
// a pidfd of the thread (PIDFD_THREAD, Linux 6.9) becomes readable when
// it exits. A thread already gone has no pidfd to open (ESRCH).
func threadEnds(t *testing.T, tid int, limit time.Duration) bool {
	t.Helper()
	fd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	switch {
	case errors.Is(err, unix.ESRCH):
		return true
	case err != nil:
		t.Fatalf("pidfd_open of thread %d: %v (a kernel before 6.9 has no PIDFD_THREAD)", tid, err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(limit)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue // bounded by the deadline
		}
		if err != nil {
			t.Fatalf("poll of thread %d's pidfd: %v", tid, err)
		}
		if n > 0 {
			return true
		}
	}
}
