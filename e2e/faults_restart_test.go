package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/internal/logbuf"
	"github.com/tapvs/tapvs/lab"
)

// tapvsProc is `tapvs run` as an operator runs it: its own process.
type tapvsProc struct {
	cmd  *exec.Cmd
	out  *logbuf.Buffer
	done chan struct{} // closed when it has exited
	err  error         // its exit, once done
}

func startTapvsProc(t *testing.T, bin, config string, flags ...string) *tapvsProc {
	t.Helper()
	p := &tapvsProc{out: &logbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"run", "-c", config}, flags...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("tapvs (pid %d) said:\n%s", p.cmd.Process.Pid, p.out)
		}
	})
	return p
}

// holdLab is the lab without tapvs for a test that runs `tapvs run` itself:
// the binary, its configuration file (the fault services), the backends,
// and the hold servers, whose connections come on serverConns.
func holdLab(t *testing.T) (bin, path string, top *lab.Topology, serverConns chan held) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), "tapvs")
	if err := prebuilt(bin, "TAPVS_E2E_TAPVS", "../cmd/tapvs"); err != nil {
		t.Fatal(err)
	}
	top = labOnly(t)
	path = filepath.Join(t.TempDir(), "tapvs.yaml")
	if err := os.WriteFile(path, []byte(top.Config(faultServices(), "")), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, a := range []netip.Addr{lab.RS1, lab.RS2} {
		b, err := lab.StartBackend(top.RS[i], fmt.Sprintf("rs%d", i+1), a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
	}
	serverConns = make(chan held, 4)
	for i, a := range []netip.Addr{lab.RS1, lab.RS2} {
		serveHold(t, listenIn(t, top.RS[i], a, holdPort), serverConns)
	}
	return bin, path, top, serverConns
}

// shortLoad is short HTTP connections to the VIP, one after another, each
// one's end recorded.
type shortLoad struct {
	mu      sync.Mutex
	results []shortResult
	stop    func() // ends the load and waits for it
}

type shortResult struct {
	at  time.Time
	err error
}

// startShortLoad runs the load until stop; after a failure it waits
// pause (a failure without a route is immediate) before the next.
func startShortLoad(hc *http.Client, pause time.Duration) *shortLoad {
	l := &shortLoad{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 100000 { // bounded whatever happens
			select {
			case <-stop:
				return
			default:
			}
			_, err := httpGet(hc, lab.VIP, lab.HTTPPort)
			l.mu.Lock()
			l.results = append(l.results, shortResult{time.Now(), err})
			l.mu.Unlock()
			if err != nil && pause > 0 {
				select {
				case <-stop:
					return
				case <-time.After(pause):
				}
			}
		}
	}()
	l.stop = sync.OnceFunc(func() { close(stop); wg.Wait() })
	return l
}

// okSince counts the connections that succeeded after t0.
func (l *shortLoad) okSince(t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.results {
		if r.err == nil && r.at.After(t0) {
			n++
		}
	}
	return n
}

// snapshot is the results so far.
func (l *shortLoad) snapshot() []shortResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.results)
}

// linkIn reports whether namespace ns has a link named name.
func linkIn(ns, name string) bool {
	return exec.Command("ip", "-n", ns, "link", "show", name).Run() == nil
}

// labOnly builds a lab's namespaces without tapvs, removed when the test ends.
func labOnly(t *testing.T) *lab.Topology { return buildLab(t, topoOpts{}) }

// held is a connection as the real server sees it: ended gets the error its
// echo loop ended with.
type held struct {
	c     net.Conn
	ended chan error
}

// serveHold accepts connections and echoes on them, handing each to conns.
func serveHold(t *testing.T, l net.Listener, conns chan<- held) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			h := held{c, make(chan error, 1)}
			select {
			case conns <- h:
			default:
			}
			go func() {
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						h.ended <- err
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
}

// tapvs killed with SIGKILL under traffic and started again: how long until
// new connections succeed, and what is lost. Every figure is logged; the
// docs quote them.
func TestFaultKillRestart(t *testing.T) {
	bin, path, top, serverConns := holdLab(t)

	// up starts tapvs and waits for its TAPs, giving their kernel ends
	// their addresses as the operator's start-up does (the TAPs are
	// tapvs's: they come and go with it). It returns when each step was done.
	up := func() (p *tapvsProc, taps, addressed time.Time) {
		p = startTapvsProc(t, bin, path)
		if !eventually(10*time.Second, func() bool { return linkIn(top.Client, top.TapClient) && linkIn(top.Router, top.TapServer) }) {
			t.Fatal("tapvs's TAPs did not appear in their namespaces")
		}
		taps = time.Now()
		if err := top.AddressTAPs(); err != nil {
			t.Fatal(err)
		}
		return p, taps, time.Now()
	}
	hc := lab.HTTPClient(top.Client, time.Second)
	p, _, _ := up()
	if !eventually(10*time.Second, func() bool { _, err := httpGet(hc, lab.VIP, lab.HTTPPort); return err == nil }) {
		t.Fatal("no HTTP through tapvs after it started")
	}

	// Traffic: a long-lived connection, and short connections throughout.
	long, err := lab.Dial(context.Background(), top.Client, "tcp4", netip.AddrPortFrom(lab.VIP, holdPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	if err := echo(long, "before\n", 5*time.Second); err != nil {
		t.Fatalf("the long connection before the kill: %v", err)
	}
	var longServer held
	select {
	case longServer = <-serverConns:
	case <-time.After(5 * time.Second):
		t.Fatal("the real server did not see the long connection")
	}
	load := startShortLoad(hc, 10*time.Millisecond)
	defer load.stop()
	// Some successes before the kill, to show the load runs.
	if !eventually(10*time.Second, func() bool { return load.okSince(time.Time{}) >= 20 }) {
		t.Fatal("fewer than 20 requests through the first tapvs in 10s")
	}

	killed := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	gone := time.Now()
	// The TAPs go with the process's descriptors: nothing is left for
	// a new tapvs to trip on.
	if !eventually(5*time.Second, func() bool { return !linkIn(top.Client, top.TapClient) && !linkIn(top.Router, top.TapServer) }) {
		t.Fatal("the TAPs outlived the killed tapvs")
	}
	tapsGone := time.Now()
	p2, taps, addressed := up()
	var firstOK time.Time
	if !eventually(20*time.Second, func() bool {
		for _, r := range load.snapshot() {
			if r.err == nil && r.at.After(addressed) {
				firstOK = r.at
				return true
			}
		}
		return false
	}) {
		t.Fatal("no new connection succeeded within 20s of the restart")
	}
	t.Logf("SIGKILL -> exited %v, TAPs gone %v, new TAPs up %v, addressed %v, first new connection through %v: %v from the kill to service",
		gone.Sub(killed).Round(time.Millisecond), tapsGone.Sub(killed).Round(time.Millisecond),
		taps.Sub(killed).Round(time.Millisecond), addressed.Sub(killed).Round(time.Millisecond),
		firstOK.Sub(killed).Round(time.Millisecond), firstOK.Sub(killed).Round(time.Millisecond))
	if d := firstOK.Sub(addressed); d > 5*time.Second {
		t.Errorf("the first new connection came %v after the TAPs were back: the restart is slow", d)
	}
	var before, during, after int
	for _, r := range load.snapshot() {
		switch {
		case r.at.Before(killed) && r.err == nil:
			before++
		case r.err != nil:
			during++
		case r.at.After(firstOK):
			after++
		}
	}
	t.Logf("short connections: %d succeeded before the kill, %d failed in the outage", before, during)
	if before == 0 {
		t.Error("no short connection succeeded before the kill: the load did not run")
	}

	// The long connection's state was in the killed process. The client's
	// next send: the new tapvs has no entry and drops a segment that is
	// not a SYN; the client retransmits into silence.
	sent := time.Now()
	err = echo(long, "after\n", 3*time.Second)
	var ne net.Error
	t.Logf("the long connection, client's first send after the restart: %v after %v", err, time.Since(sent).Round(time.Millisecond))
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("the client's send on the old connection ended with %v, want a timeout (dropped: tapvs lost the connection)", err)
	}
	// The real server's next send reaches a LIP port that no connection of
	// the new tapvs holds: its own stack answers with an RST.
	sent = time.Now()
	if _, err = longServer.c.Write([]byte("from the server\n")); err == nil {
		select {
		case err = <-longServer.ended:
		case <-time.After(3 * time.Second):
			err = errors.New("no answer in 3s")
		}
	}
	t.Logf("the long connection, real server's first send after the restart: %v after %v", err, time.Since(sent).Round(time.Millisecond))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the real server's send on the old connection ended with %v, want ECONNRESET (the new tapvs's stack resets it)", err)
	}

	// The new tapvs answers on its control socket (the killed one's socket
	// file was left behind; Listen replaces a socket no one answers on).
	info, err := api.Dial(top.Socket).Info()
	if err != nil {
		t.Fatalf("the control API after the restart: %v", err)
	}
	t.Logf("after the restart: %d connections in the table (the short ones since)", info.Conns)

	// And a TAP deleted under `tapvs run` ends it, non-zero, with one
	// line naming the TAP.
	if out, err := exec.Command("ip", "-n", top.Client, "link", "del", top.TapClient).CombinedOutput(); err != nil {
		t.Fatalf("ip link del: %v: %s", err, out)
	}
	select {
	case <-p2.done:
	case <-time.After(10 * time.Second):
		t.Fatal("tapvs run goes on 10s after its TAP was deleted")
	}
	var ee *exec.ExitError
	if !errors.As(p2.err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("tapvs run exited with %v after its TAP was deleted, want a non-zero status", p2.err)
	}
	lines := strings.Split(strings.TrimSpace(p2.out.String()), "\n")
	last := lines[len(lines)-1]
	t.Logf("tapvs run's last line: %s", last)
	if !strings.HasPrefix(last, "tapvs: ") || !strings.Contains(last, top.TapClient) {
		t.Errorf("tapvs run's last line does not name the TAP %s: %q", top.TapClient, last)
	}
}
