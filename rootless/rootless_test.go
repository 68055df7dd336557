package rootless

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const allCaps = 1<<capNetAdmin | 1<<capSysAdmin

// fake is a host where everything works for uid 1000, and nothing is
// actually started or mounted; each test breaks one part.
func fake() (host, *[]string) {
	var did []string
	return host{
		euid:     func() int { return 1000 },
		uid:      func() int { return 1000 },
		gid:      func() int { return 1000 },
		inChild:  func() bool { return false },
		openTun:  func() error { return nil },
		sysctl:   func(string) (string, bool) { return "", false },
		capEff:   func() (uint64, error) { return allCaps, nil },
		start:    func(*exec.Cmd) error { did = append(did, "start"); return errors.New("stop here") },
		mount:    func(_, target, _ string, _ uintptr, _ string) error { did = append(did, "mount "+target); return nil },
		varRunOK: func() bool { return true },
	}, &did
}

// oneLine fails unless err is a single line that contains every want.
func oneLine(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one naming %q", want)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error is more than one line: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not say %q", msg, w)
		}
	}
}

func TestTunNotOpenable(t *testing.T) {
	h, did := fake()
	h.openTun = func() error { return &fs.PathError{Op: "open", Path: "/dev/net/tun", Err: syscall.EACCES} }
	re, _, err := h.enter(Auto, []string{"tapvs", "lab"})
	oneLine(t, err, "/dev/net/tun", "uid 1000", "sudo chmod 0666 /dev/net/tun")
	if re || len(*did) > 0 {
		t.Errorf("went on after the check failed: reexeced %v, did %v", re, *did)
	}
	h.openTun = func() error { return &fs.PathError{Op: "open", Path: "/dev/net/tun", Err: syscall.ENOENT} }
	_, _, err = h.enter(Auto, nil)
	oneLine(t, err, "/dev/net/tun does not exist", "modprobe tun")
}

func TestUserNamespacesDisabled(t *testing.T) {
	for knob, want := range map[string]string{
		"kernel.unprivileged_userns_clone": "kernel.unprivileged_userns_clone=0",
		"user.max_user_namespaces":         "user.max_user_namespaces=0",
	} {
		h, did := fake()
		h.sysctl = func(name string) (string, bool) {
			if name == knob {
				return "0", true
			}
			return "1", true
		}
		_, _, err := h.enter(Auto, nil)
		oneLine(t, err, want, "sudo sysctl -w")
		if len(*did) > 0 {
			t.Errorf("%s: went on after the check failed: %v", knob, *did)
		}
	}
	// Knobs that allow, or that this kernel does not have, pass.
	h, did := fake()
	h.sysctl = func(string) (string, bool) { return "1", true }
	h.enter(Auto, nil)
	if len(*did) != 1 || (*did)[0] != "start" {
		t.Errorf("with user namespaces allowed it did %v, want start", *did)
	}
}

func TestCloneRefused(t *testing.T) {
	for errno, want := range map[syscall.Errno]string{
		syscall.EPERM:  "seccomp",
		syscall.ENOSPC: "user.max_user_namespaces is reached",
		syscall.EINVAL: "no user namespaces",
	} {
		h, _ := fake()
		h.start = func(*exec.Cmd) error { return &fs.PathError{Op: "fork/exec", Path: "/proc/self/exe", Err: errno} }
		re, code, err := h.enter(Auto, []string{"tapvs", "lab"})
		oneLine(t, err, want)
		if !re || code == 0 {
			t.Errorf("%v: reexeced %v code %d, want true and non-zero", errno, re, code)
		}
	}
}

func TestNoCapabilities(t *testing.T) {
	// Not root, asked not to enter a namespace, and no capabilities.
	h, did := fake()
	h.capEff = func() (uint64, error) { return 1 << capNetAdmin, nil }
	_, _, err := h.enter(Never, nil)
	oneLine(t, err, "--rootless=never", "CAP_SYS_ADMIN", "setcap")
	if strings.Contains(err.Error(), "CAP_NET_ADMIN") || len(*did) > 0 {
		t.Errorf("named a capability it has, or went on: %v, %v", err, *did)
	}
	// Inside the namespace, capabilities taken away (AppArmor).
	h, did = fake()
	h.inChild = func() bool { return true }
	h.capEff = func() (uint64, error) { return 0, nil }
	h.sysctl = func(name string) (string, bool) {
		return "1", name == "kernel.apparmor_restrict_unprivileged_userns"
	}
	_, _, err = h.enter(Auto, nil)
	oneLine(t, err, "CAP_NET_ADMIN and CAP_SYS_ADMIN", "kernel.apparmor_restrict_unprivileged_userns=1")
	if len(*did) > 0 {
		t.Errorf("mounted without capabilities: %v", *did)
	}
	// Capabilities there but a mount refused: the same hint.
	h, _ = fake()
	h.inChild = func() bool { return true }
	h.mount = func(string, string, string, uintptr, string) error { return syscall.EPERM }
	_, _, err = h.enter(Auto, nil)
	oneLine(t, err, "make / private", "no capabilities")
}

func TestRootRunsHere(t *testing.T) {
	h, did := fake()
	h.euid = func() int { return 0 }
	h.capEff = func() (uint64, error) { return 0, errors.New("not read as root") }
	if re, _, err := h.enter(Auto, nil); re || err != nil || len(*did) > 0 {
		t.Errorf("root in auto mode: reexeced %v, err %v, did %v; want it to run here", re, err, *did)
	}
	if re, _, _ := h.enter(Always, nil); !re {
		t.Error("root with --rootless=always did not enter a namespace")
	}
}

func TestSetupMountsRun(t *testing.T) {
	h, did := fake()
	h.inChild = func() bool { return true }
	if re, _, err := h.enter(Auto, nil); re || err != nil {
		t.Fatalf("child: reexeced %v err %v", re, err)
	}
	if got := strings.Join(*did, ","); got != "mount /,mount /run" {
		t.Errorf("mounts %s, want / private then /run", got)
	}
	h, did = fake()
	h.inChild = func() bool { return true }
	h.varRunOK = func() bool { return false }
	h.enter(Auto, nil)
	if got := strings.Join(*did, ","); got != "mount /,mount /run,mount /var/run" {
		t.Errorf("with /var/run a directory: mounts %s", got)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"auto", "always", "never"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("yes"); err == nil {
		t.Error("ParseMode(yes) accepted")
	}
}

func TestCapEffFrom(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status")
	os.WriteFile(p, []byte("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000201000\n"), 0o600)
	if v, err := capEffFrom(p); err != nil || v != allCaps {
		t.Errorf("capEffFrom = %x, %v; want %x", v, err, allCaps)
	}
	os.WriteFile(p, []byte("Name:\tx\n"), 0o600)
	if _, err := capEffFrom(p); err == nil {
		t.Error("no CapEff line: no error")
	}
}

// The real thing: the test binary runs a test again in the namespaces (with
// Always, so it does as root too), which sees itself as root with a /run of
// its own where `ip netns add` works. .ci/run runs it as an ordinary user.
func TestReexecForReal(t *testing.T) {
	if os.Getenv(EnvChild) == "1" {
		return
	}
	if err := Check(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	cmd := exec.Command("/proc/self/exe", "-test.run=^TestInsideNamespace$", "-test.v")
	cmd.Env = append(os.Environ(), "TAPVS_ROOTLESS_TEST=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "inside: uid 0, /run is tmpfs") {
		t.Fatalf("%v\n%s", err, out)
	}
}

// The child's exit code comes out of Enter, a signal's as 128+signal.
func TestExitCodePassedThrough(t *testing.T) {
	if os.Getenv(EnvChild) == "1" || os.Getenv("TAPVS_ROOTLESS_TEST") == "1" {
		return
	}
	if err := Check(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	for exit, want := range map[string]string{"3": "child exited 3", "kill": "child exited 137"} {
		cmd := exec.Command("/proc/self/exe", "-test.run=^TestInsideNamespace$", "-test.v")
		cmd.Env = append(os.Environ(), "TAPVS_ROOTLESS_TEST=1", "TAPVS_ROOTLESS_TEST_EXIT="+exit)
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), want) {
			t.Errorf("child ending with %s: want %q in\n%s", exit, want, out)
		}
	}
}

// TestInsideNamespace is TestReexecForReal's child: it enters the namespace
// through Enter, as cmd/tapvs does, and reports what it sees there.
func TestInsideNamespace(t *testing.T) {
	if os.Getenv("TAPVS_ROOTLESS_TEST") != "1" {
		t.Skip("run by TestReexecForReal")
	}
	re, code, err := Enter(Always)
	if err != nil {
		t.Fatal(err)
	}
	exit := os.Getenv("TAPVS_ROOTLESS_TEST_EXIT")
	if re {
		if exit != "" {
			t.Logf("child exited %d", code)
		} else if code != 0 {
			t.Fatalf("child exited %d", code)
		}
		return
	}
	switch exit {
	case "3":
		os.Exit(3)
	case "kill":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/run", &st); err != nil {
		t.Fatal(err)
	}
	const tmpfsMagic = 0x01021994
	if os.Geteuid() != 0 || st.Type != tmpfsMagic {
		t.Fatalf("inside: uid %d, /run fs type %#x", os.Geteuid(), st.Type)
	}
	if err := exec.Command("ip", "netns", "add", "rootless-test").Run(); err != nil {
		t.Fatalf("ip netns add inside: %v", err)
	}
	t.Logf("inside: uid 0, /run is tmpfs, ip netns add works")
}
