package uring

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/internal/uring/uringtest"
)

// seccompEnv carries the filter a re-executed test binary installs before
// it sets a ring up: "errno:first:last" (system call numbers).
const seccompEnv = "TAPVS_URING_SECCOMP_CHILD"

// TestMain runs the seccomp child when re-executed by TestSeccompRefusal:
// a seccomp filter cannot be removed, so it goes into a process of its own.
func TestMain(m *testing.M) {
	if spec := os.Getenv(seccompEnv); spec != "" {
		os.Exit(seccompChild(spec))
	}
	os.Exit(m.Run())
}

// seccompChild installs a filter answering errno to the system calls first
// to last, as a container's profile does, then tries New and prints what
// it says: "step|cause|errno|refused|hint".
func seccompChild(spec string) int {
	var name string
	var first, last uint32
	if _, err := fmt.Sscanf(strings.ReplaceAll(spec, ":", " "), "%s %d %d", &name, &first, &last); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", spec, err)
		return 2
	}
	errno := map[string]unix.Errno{"EPERM": unix.EPERM, "ENOSYS": unix.ENOSYS, "EINVAL": unix.EINVAL}[name]
	runtime.LockOSThread()
	if err := uringtest.Deny(errno, first, last); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := New(8, 16)
	if err == nil {
		r.Close()
		fmt.Println("accepted")
		return 0
	}
	var re *RefusedError
	if !errors.As(err, &re) {
		fmt.Fprintln(os.Stderr, "not a RefusedError:", err)
		return 2
	}
	var e unix.Errno
	errors.As(err, &e)
	fmt.Printf("%s|%s|%d|%v|%s\n", re.Step, re.Cause, int(e), Refused(err), re.Hint)
	return 0
}

// TestSeccompRefusal re-executes the test binary under seccomp filters
// that refuse io_uring as container profiles do, and checks New names the
// step and the cause: EPERM on setup is a seccomp profile (unless the
// io_uring_disabled sysctl is set), ENOSYS is io_uring unavailable, and a
// filter that lets setup through but refuses io_uring_register fails the
// probe.
func TestSeccompRefusal(t *testing.T) {
	if !uringtest.Supported() {
		uringtest.Missing(t, "no seccomp arch constant for %s in uringtest", runtime.GOARCH)
	}
	disabled := "0"
	if v, err := os.ReadFile(disabledPath); err == nil {
		disabled = strings.TrimSpace(string(v))
	}
	permCause, permHint := CauseSeccomp, "a seccomp profile (containers: allow io_uring_setup, io_uring_enter, io_uring_register)"
	if disabled != "0" {
		permCause, permHint = CauseDisabled, "kernel.io_uring_disabled="+disabled
	}
	setup, register := unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_REGISTER
	for _, c := range []struct {
		spec  string
		step  string
		cause Cause
		errno unix.Errno
		hint  string
	}{
		{fmt.Sprintf("EPERM:%d:%d", setup, register), "io_uring_setup", permCause, unix.EPERM, permHint},
		{fmt.Sprintf("ENOSYS:%d:%d", setup, register), "io_uring_setup", CauseUnavailable, unix.ENOSYS, "io_uring not available (CONFIG_IO_URING off, or a seccomp filter)"},
		{fmt.Sprintf("EPERM:%d:%d", register, register), "probe", CauseSeccomp, unix.EPERM, "a seccomp profile (containers: allow io_uring_setup, io_uring_enter, io_uring_register)"},
	} {
		if c.step == "probe" && disabled != "0" {
			continue // setup itself is refused: no probe to reach
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), seccompEnv+"="+c.spec)
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("%s: child: %v: %s", c.spec, err, ee.Stderr)
			}
			t.Fatalf("%s: child: %v", c.spec, err)
		}
		want := strings.Join([]string{c.step, c.cause.String(), strconv.Itoa(int(c.errno)), "true", c.hint}, "|")
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("%s: child says %q, want %q", c.spec, got, want)
		}
	}
}
