// Package rootless runs tapvs in a user + mount + network namespace of its
// own when it is not root, as rootless container tools do: the user's uid and
// gid are mapped to root inside, so tapvs may create TAPs, network
// namespaces and mounts there, and nothing it makes outlives it or touches
// the host's network. Inside, it mounts a tmpfs of its own on /run, where
// `ip netns add` keeps its named namespaces (and must make /run/netns a
// shared mount, which an ordinary user may not do on the host's /run).
//
// What cannot be done in a user namespace is checked before it is entered,
// and each failure is one line that names what is missing and what to do.
package rootless

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Mode says when to enter a namespace of its own.
type Mode string

const (
	Auto   Mode = "auto"   // when not root (euid != 0)
	Always Mode = "always" // even as root: a lab that cannot touch the host
	Never  Mode = "never"  // run here; not root then needs the capabilities itself
)

// ParseMode reads a --rootless value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Auto, Always, Never:
		return m, nil
	}
	return "", fmt.Errorf("--rootless=%q: want auto, always or never", s)
}

// EnvChild marks the process that runs inside the namespace, so that it sets
// the namespace up instead of entering another one.
const EnvChild = "TAPVS_ROOTLESS_CHILD"

// Capabilities tapvs uses: TAPs, links and addresses (NET_ADMIN); network
// namespaces and their mounts (SYS_ADMIN).
const (
	capNetAdmin = 12
	capSysAdmin = 21
)

// host is what the checks read and do; tests replace each part.
type host struct {
	euid     func() int
	uid, gid func() int
	inChild  func() bool
	openTun  func() error
	sysctl   func(name string) (string, bool) // the value, and whether the knob exists
	capEff   func() (uint64, error)
	start    func(*exec.Cmd) error
	mount    func(source, target, fstype string, flags uintptr, data string) error
	varRunOK func() bool // /var/run is /run (a symlink) already
}

var real = host{
	euid:    os.Geteuid,
	uid:     os.Getuid,
	gid:     os.Getgid,
	inChild: func() bool { return os.Getenv(EnvChild) == "1" },
	openTun: func() error {
		f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
		if err == nil {
			f.Close()
		}
		return err
	},
	sysctl: func(name string) (string, bool) {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		if err != nil {
			return "", false
		}
		return strings.TrimSpace(string(b)), true
	},
	capEff: func() (uint64, error) { return capEffFrom("/proc/self/status") },
	start:  func(c *exec.Cmd) error { return c.Start() },
	mount:  syscall.Mount,
	varRunOK: func() bool {
		dst, err := os.Readlink("/var/run")
		return err == nil && (dst == "/run" || dst == "../run")
	},
}

// inside is set once this process has set its namespace up.
var inside bool

// Inside reports whether this process runs in a namespace Enter made.
func Inside() bool { return inside }

// Enter is called early by a command that needs namespaces and TAPs. When
// tapvs should run in a namespace of its own and is not in one yet, Enter
// runs this same command there, waits for it, and returns reexeced true with
// its exit code: the caller exits with that code. Inside (or when no
// namespace is needed) it returns reexeced false once the namespace is set
// up (or the capabilities are checked), and the caller goes on. Every error
// is one line meant for the user.
func Enter(mode Mode) (reexeced bool, code int, err error) {
	return real.enter(mode, os.Args)
}

func (h host) enter(mode Mode, args []string) (bool, int, error) {
	if h.inChild() {
		// A tapvs this one starts (a test's `tapvs run`) is in the
		// namespace already: it must not mount another /run over this one.
		os.Unsetenv(EnvChild)
		if err := h.setup(); err != nil {
			return false, 0, err
		}
		inside = true
		return false, 0, nil
	}
	if mode == Never || (mode == Auto && h.euid() == 0) {
		if h.euid() != 0 {
			if err := h.needCaps("not root and --rootless=never"); err != nil {
				return false, 0, err
			}
		}
		return false, 0, nil
	}
	if err := h.check(); err != nil {
		return false, 0, err
	}
	code, err := h.reexec(args)
	return true, code, err
}

// Check reports the first reason tapvs cannot run in a user namespace here.
func Check() error { return real.check() }

func (h host) check() error {
	if err := h.openTun(); err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return errors.New("rootless: /dev/net/tun does not exist: load the tun module (sudo modprobe tun), or in a container pass the device (--device /dev/net/tun)")
		case errors.Is(err, os.ErrPermission):
			return fmt.Errorf("rootless: /dev/net/tun is not open to uid %d (a user namespace does not change that): run `sudo chmod 0666 /dev/net/tun` (most distributions' default), or run tapvs as root", h.uid())
		}
		return fmt.Errorf("rootless: open /dev/net/tun: %w", err)
	}
	if v, ok := h.sysctl("kernel.unprivileged_userns_clone"); ok && v == "0" {
		return errors.New("rootless: user namespaces are disabled for ordinary users (kernel.unprivileged_userns_clone=0): run `sudo sysctl -w kernel.unprivileged_userns_clone=1`, or run tapvs as root")
	}
	if v, ok := h.sysctl("user.max_user_namespaces"); ok && v == "0" {
		return errors.New("rootless: user namespaces are disabled (user.max_user_namespaces=0): run `sudo sysctl -w user.max_user_namespaces=15000`, or run tapvs as root")
	}
	return nil
}

// reexec runs args again as a new process in new user, mount and network
// namespaces, the user mapped to root, and passes signals to it.
func (h host) reexec(args []string) (int, error) {
	cmd := &exec.Cmd{
		// /proc/self/exe: this very binary, even if `go run` or an upgrade
		// has removed its path since.
		Path:   "/proc/self/exe",
		Args:   args,
		Env:    append(os.Environ(), EnvChild+"=1"),
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
			// A single id mapped onto the user's own needs no newuidmap.
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: h.uid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: h.gid(), Size: 1}},
			// An unprivileged process may map its gid only with
			// setgroups denied.
			GidMappingsEnableSetgroups: false,
			// If this process dies, the child and with it the whole
			// namespace (the lab, its TAPs) go too.
			Pdeathsig: syscall.SIGKILL,
		},
	}
	// Pdeathsig fires when the thread that started the child exits; keep
	// that thread for as long as the child runs.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Ctrl-C reaches the child from the terminal too; a signal sent to this
	// process alone (kill, a supervisor) is passed on.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := h.start(cmd); err != nil {
		return 1, h.cloneError(err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 1, fmt.Errorf("rootless: waiting for tapvs in its namespace: %w", err)
}

// cloneError names why the kernel refused the namespaces.
func (h host) cloneError(err error) error {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		if v, ok := h.sysctl("kernel.unprivileged_userns_clone"); ok && v == "0" {
			return errors.New("rootless: user namespaces are disabled for ordinary users (kernel.unprivileged_userns_clone=0): run `sudo sysctl -w kernel.unprivileged_userns_clone=1`, or run tapvs as root")
		}
		return fmt.Errorf("rootless: the kernel refused to create a user namespace (clone: %v): a seccomp filter (a container's default profile) or a security module forbids it: run with seccomp unconfined (docker run --security-opt seccomp=unconfined), or run tapvs as root", errors.Unwrap(err))
	case errors.Is(err, syscall.ENOSPC):
		return errors.New("rootless: no user namespace left (clone: no space left on device): user.max_user_namespaces is reached; raise it (sudo sysctl -w user.max_user_namespaces=15000) or end other namespaces")
	case errors.Is(err, syscall.EINVAL):
		return errors.New("rootless: this kernel has no user namespaces (clone: invalid argument; CONFIG_USER_NS off): run tapvs as root")
	}
	return fmt.Errorf("rootless: starting tapvs in a user namespace: %w", err)
}

// setup runs inside the new namespaces, before anything else: mounts made
// from here on are this namespace's alone, and /run is a tmpfs of its own.
func (h host) setup() error {
	if err := h.needCaps("in its user namespace"); err != nil {
		return err
	}
	if err := h.mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return h.mountError("make / private", err)
	}
	if err := h.mount("tmpfs", "/run", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755"); err != nil {
		return h.mountError("mount a tmpfs on /run", err)
	}
	// Where /var/run is a directory of its own, the tools that use it
	// (iproute2 built with /var/run/netns) must see the same tmpfs.
	if !h.varRunOK() {
		if err := h.mount("/run", "/var/run", "", syscall.MS_BIND, ""); err != nil {
			return h.mountError("bind /run on /var/run", err)
		}
	}
	return nil
}

func (h host) mountError(what string, err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("rootless: %s in its user namespace: %v: %s", what, err, h.noCapsHint())
	}
	return fmt.Errorf("rootless: %s in its user namespace: %w", what, err)
}

// noCapsHint says why root in a user namespace may lack its capabilities.
func (h host) noCapsHint() string {
	if v, ok := h.sysctl("kernel.apparmor_restrict_unprivileged_userns"); ok && v == "1" {
		return "AppArmor takes the capabilities of unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1): run `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, give tapvs an AppArmor profile that allows userns, or run tapvs as root"
	}
	return "the namespace has no capabilities (a seccomp filter or security module takes them): run tapvs as root"
}

// needCaps checks CAP_NET_ADMIN and CAP_SYS_ADMIN are effective.
func (h host) needCaps(where string) error {
	eff, err := h.capEff()
	if err != nil {
		return fmt.Errorf("rootless: reading capabilities: %w", err)
	}
	var missing []string
	if eff&(1<<capNetAdmin) == 0 {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if eff&(1<<capSysAdmin) == 0 {
		missing = append(missing, "CAP_SYS_ADMIN")
	}
	if len(missing) == 0 {
		return nil
	}
	if where == "in its user namespace" {
		return fmt.Errorf("rootless: %s tapvs lacks %s: %s", where, strings.Join(missing, " and "), h.noCapsHint())
	}
	return fmt.Errorf("rootless: %s, tapvs lacks %s: run it as root, give it the capabilities (sudo setcap cap_net_admin,cap_sys_admin+ep tapvs), or use --rootless=auto", where, strings.Join(missing, " and "))
}

// capEffFrom reads the effective capability set from a /proc status file.
func capEffFrom(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no CapEff line", path)
}
