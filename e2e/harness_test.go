// Package e2e runs tapvs in network namespaces it builds itself and checks,
// with real sockets and captures of what crosses the wire, that it does what
// an LVS FULLNAT operator expects.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/daemon"
	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/rootless"
)

// nsPrefix marks every namespace these tests make, so a run can remove what
// a killed run left behind.
const nsPrefix = "tvt"

// ipvsadmBin is tapvsadm built and installed under the name ipvsadm.
var ipvsadmBin string

// envRootless asks, when not root, for the tests to run in a user, mount
// and network namespace of their own (see package rootless).
const envRootless = "TAPVS_E2E_ROOTLESS"

func TestMain(m *testing.M) {
	if os.Getenv(envRootless) == "1" {
		// The test binary runs itself again in the namespace, with the same
		// flags, and exits with that run's code.
		reexeced, code, err := rootless.Enter(rootless.Auto)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s=1: %v\n", envRootless, err)
			os.Exit(1)
		}
		if reexeced {
			os.Exit(code)
		}
	}
	dir, err := os.MkdirTemp("", "tapvs-e2e-bin")
	if err != nil {
		panic(err)
	}
	ipvsadmBin = filepath.Join(dir, "ipvsadm")
	if err := prebuilt(ipvsadmBin, "TAPVS_E2E_IPVSADM", "../cmd/tapvsadm"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// prebuilt puts the command pkg at path: built with go, or, when the
// environment variable env names a binary, that one (an ordinary user in CI
// runs binaries built by root and has no Go build cache of its own).
func prebuilt(path, env, pkg string) error {
	if bin := os.Getenv(env); bin != "" {
		if err := os.Symlink(bin, path); err != nil {
			return fmt.Errorf("%s=%s: %w", env, bin, err)
		}
		return nil
	}
	if out, err := exec.Command("go", "build", "-o", path, pkg).CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %w\n%s", pkg, err, out)
	}
	return nil
}

func run(m *testing.M) int {
	lab.SweepClusters()
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) && orphan(f[0]) {
				exec.Command("ip", "netns", "del", f[0]).Run()
			}
		}
	}
	return m.Run()
}

// owners is where each lab's prefix names the process that made it, so a
// run removes what a killed run left behind and never a lab of another
// run going on at the same time.
const owners = "/run/tapvs-e2e"

// claim records this process as the owner of the labs named prefix.
func claim(t testing.TB, prefix string) {
	if err := os.MkdirAll(owners, 0o700); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(owners, prefix)
	if err := os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(f) })
}

// orphan reports whether namespace ns belongs to a lab whose process is
// gone (or that no process claimed).
func orphan(ns string) bool {
	prefix, _, _ := strings.Cut(ns, "-")
	b, err := os.ReadFile(filepath.Join(owners, prefix))
	if err != nil {
		return true
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil || pid == os.Getpid() {
		return true
	}
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		os.Remove(filepath.Join(owners, prefix))
		return true
	}
	return false
}

// need stops a test that cannot run here: in CI (CI=true) that is a failure.
func need(t testing.TB) {
	t.Helper()
	var why []string
	if os.Geteuid() != 0 {
		why = append(why, "not root (as an ordinary user, "+envRootless+"=1 runs them in a user namespace)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		why = append(why, "no /dev/net/tun")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		why = append(why, "no ip(8) (iproute2)")
	}
	if len(why) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("e2e cannot run in CI: %s", strings.Join(why, ", "))
	}
	t.Skipf("e2e needs root, /dev/net/tun and iproute2: %s (with CI=true this fails)", strings.Join(why, ", "))
}

// env is one lab: namespaces, tapvs, and the two real servers' backends.
type env struct {
	t   testing.TB
	top *lab.Topology
	d   *daemon.Daemon
	rs  [2]*lab.Backend
}

const webServices = `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: %s
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80, weight: %d}
      - {address: 10.20.2.2, port: 80, weight: %d}
  - name: bulk
    vip: 172.25.254.100
    port: 9000
    scheduler: rr
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 9000}
      - {address: 10.20.2.2, port: 9000}
  - name: echo
    vip: 172.25.254.100
    port: 9001
    protocol: udp
    scheduler: rr
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9001}
      - {address: 10.20.2.2, port: 9001}
  - name: nobody-listens
    vip: 172.25.254.100
    port: 9002
    protocol: udp
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9002}`

// defaultServices is the lab's service set with the web scheduler and weights given.
func services(sched string, w1, w2 int) string { return fmt.Sprintf(webServices, sched, w1, w2) }

// setup builds a lab running tapvs with the given services. Everything is
// removed when the test ends, whatever its outcome.
func setup(t testing.TB, svcs, extra string) *env {
	return setupWith(t, topoOpts{queues: 1}, svcs, extra)
}

// topoOpts vary the TAPs: several queues (a reader each), or no offload.
type topoOpts struct {
	queues    int
	txQLen    int // the TAPs' txqueuelen; 0: the kernel's
	noOffload bool
	busyPoll  time.Duration
	io        string    // interfaces.io; "": the configuration's default
	pollers   int       // interfaces.pollers
	log       io.Writer // tapvs's log goes here too, for a test to read
	// ipv6 gives tapvs its IPv6 addresses and route (address6, RSNet6)
	// in the configuration; the lab's namespaces are dual-stack anyway.
	ipv6 bool
	// serverMTU, if not 0, is interfaces.server.mtu (the server TAP's MTU).
	serverMTU int
}

// buildLab builds a lab's namespaces under a prefix of this run's own
// (claimed), without tapvs; they are removed when the test ends.
func buildLab(t testing.TB, o topoOpts) *lab.Topology {
	t.Helper()
	need(t)
	var rnd [2]byte
	rand.Read(rnd[:])
	prefix := nsPrefix + hex.EncodeToString(rnd[:])
	claim(t, prefix)
	top := lab.NewTopology(prefix, prefix+"c", prefix+"s")
	top.Queues = o.queues
	top.TxQLen = o.txQLen
	top.NoOffload = o.noOffload
	top.IPv6 = o.ipv6
	top.Socket = filepath.Join(t.TempDir(), "tapvs.sock")
	if err := top.Build(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := top.Destroy(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	return top
}

func setupWith(t testing.TB, o topoOpts, svcs, extra string) *env {
	t.Helper()
	top := buildLab(t, o)
	cfg, err := config.Parse(top.Config(svcs, extra))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.BusyPoll = o.busyPoll
	if o.serverMTU > 0 {
		cfg.Server.MTU = o.serverMTU
	}
	// TAPVS_IO runs the in-process tests on another TAP I/O path
	// (TAPVS_IO=uring go test ./e2e/); a test's own choice comes first.
	if v := os.Getenv("TAPVS_IO"); v != "" && o.io == "" {
		cfg.IO = v
	}
	if o.io != "" {
		cfg.IO = o.io
	}
	cfg.Pollers = o.pollers
	var w io.Writer = testWriter{t}
	if o.log != nil {
		w = io.MultiWriter(w, o.log)
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := top.StartTapvs(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	e := &env{t: t, top: top, d: d}
	for i, a := range []netip.Addr{lab.RS1, lab.RS2} {
		b, err := lab.StartBackend(top.RS[i], fmt.Sprintf("rs%d", i+1), a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		e.rs[i] = b
	}
	return e
}

// ctx is a context bounded for one step of a test.
func (e *env) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	e.t.Cleanup(cancel)
	return ctx
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// eventually polls cond every 20ms for up to d.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}
