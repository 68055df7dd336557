package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// Ports of the servers these tests run on the real servers themselves.
const (
	dyingPort = 9100 // sends until told to die, then resets (SO_LINGER 0)
	holdPort  = 9101 // echoes each line back until the client closes
)

// faultServices are the lab's services and two more, on the fault servers.
func faultServices() string {
	return services("rr", 1, 1) + fmt.Sprintf(`
  - name: dying
    vip: 172.25.254.100
    port: %d
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: %[1]d}
  - name: hold
    vip: 172.25.254.100
    port: %d
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: %[2]d}
      - {address: 10.20.2.2, port: %[2]d}
  - name: sticky
    vip: 172.25.254.100
    port: %d
    scheduler: rr
    persistence_timeout: 600
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80}`, dyingPort, holdPort, stickyPort)
}

// stickyPort is faultServices' persistent service (its templates cross a
// takeover).
const stickyPort = 8090

// listenIn listens on addr:port inside namespace ns, closed when the test ends.
func listenIn(t testing.TB, ns string, addr netip.Addr, port uint16) *net.TCPListener {
	t.Helper()
	var l net.Listener
	if err := lab.InNetns(ns, func() (err error) {
		l, err = net.Listen("tcp4", netip.AddrPortFrom(addr, port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener)
}

// serveEcho echoes what each connection sends until it closes.
func serveEcho(t testing.TB, l net.Listener) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { l.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// echo sends msg on c and reads it back, within d.
func echo(c net.Conn, msg string, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo: sent %q, got %q", msg, buf)
	}
	return nil
}

// connsTo lists tapvs's connections to the VIP's port.
func connsTo(e *env, port uint16) []nat.ConnInfo {
	var out []nat.ConnInfo
	for _, c := range e.d.Balancer.Table().Conns() {
		if c.VIP.Port() == port {
			out = append(out, c)
		}
	}
	return out
}

// A real server that dies mid-transfer resets its connection: the RST
// crosses tapvs at once (the client's read fails with ECONNRESET, not a
// timeout), and tapvs's entry goes to CLOSE.
func TestFaultServerResetsMidTransfer(t *testing.T) {
	e := setup(t, faultServices(), "timeouts: {tcp: {close: 30s}}")
	l := listenIn(t, e.top.RS[0], lab.RS1, dyingPort)
	die := make(chan struct{})
	died := make(chan time.Time, 1)
	go func() {
		c, err := l.AcceptTCP()
		if err != nil {
			return
		}
		go func() {
			<-die
			// A crash: the kernel resets what the process left open
			// (SO_LINGER 0: close sends RST, not FIN).
			c.SetLinger(0)
			died <- time.Now()
			c.Close()
		}()
		chunk := make([]byte, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()

	c, err := lab.Dial(e.ctx(5*time.Second), e.top.Client, "tcp4", netip.AddrPortFrom(lab.VIP, dyingPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.CopyN(io.Discard, c, 1<<20); err != nil {
		t.Fatalf("the transfer before the server dies: %v", err)
	}
	if cs := connsTo(e, dyingPort); len(cs) != 1 || cs[0].State != "ESTABLISHED" {
		t.Fatalf("mid-transfer tapvs has %+v, want one ESTABLISHED connection", cs)
	}
	close(die)
	// The client reads what was in flight, then the reset.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, c)
	at := time.Now()
	diedAt := <-died
	took := at.Sub(diedAt)
	t.Logf("the client's read ended %v after the server reset: %v", took.Round(time.Microsecond), err)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the client's read ended with %v, want ECONNRESET (the server's RST)", err)
	}
	if took > 2*time.Second {
		t.Errorf("the RST took %v to reach the client", took)
	}
	var last []nat.ConnInfo
	if !eventually(2*time.Second, func() bool {
		last = connsTo(e, dyingPort)
		return len(last) == 1 && last[0].State == "CLOSE"
	}) {
		t.Fatalf("tapvs's entry after the reset: %+v, want CLOSE", last)
	}
	t.Logf("tapvs's entry: %s, expires in %v", last[0].State, last[0].Expires.Round(time.Second))
}

// A full connection table: with limits.max_connections open, the next SYN
// is dropped (counted table_full: the client hears nothing and its dial
// times out); the open connections keep working; when one closes and
// expires, a new connection is made.
func TestFaultTableFull(t *testing.T) {
	const max = 4
	e := setup(t, faultServices(), fmt.Sprintf(`limits: {max_connections: %d}
timeouts: {tcp: {fin_wait: 1s, time_wait: 1s, close: 1s, close_wait: 1s, last_ack: 1s}}`, max))
	for i, a := range []netip.Addr{lab.RS1, lab.RS2} {
		serveEcho(t, listenIn(t, e.top.RS[i], a, holdPort))
	}
	vip := netip.AddrPortFrom(lab.VIP, holdPort).String()
	dial := func(d time.Duration) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return lab.Dial(ctx, e.top.Client, "tcp4", vip)
	}
	var open []net.Conn
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	for i := range max {
		c, err := dial(5 * time.Second)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, max, err)
		}
		open = append(open, c)
		if err := echo(c, "hello\n", 5*time.Second); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
	}
	if n := e.d.Balancer.Table().Len(); n != max {
		t.Fatalf("%d connections in the table, want %d", n, max)
	}

	full := e.d.Balancer.Stats.Drop(nat.DropTableFull)
	start := time.Now()
	c, err := dial(2 * time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("connection %d was made with max_connections %d", max+1, max)
	}
	t.Logf("connection %d: %v after %v", max+1, err, time.Since(start).Round(time.Millisecond))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("connection %d failed with %v, want a timeout (its SYN dropped, nothing answered)", max+1, err)
	}
	if got := e.d.Balancer.Stats.Drop(nat.DropTableFull) - full; got == 0 {
		t.Errorf("no table_full drop counted for the refused SYN")
	} else {
		t.Logf("%d SYNs dropped as table_full (the first and its retransmissions)", got)
	}
	for i, c := range open {
		if err := echo(c, "still here\n", 5*time.Second); err != nil {
			t.Fatalf("open connection %d with the table full: %v", i+1, err)
		}
	}

	// One closes; once its entry expires there is room for one more. Each
	// try waits past the client's first SYN retransmission (1 s): a try
	// given up just as its retransmitted SYN made an entry would leave
	// that entry half-open (SYN_RECV, 30 s) and the table full again.
	open[0].Close()
	open = open[1:]
	var c5 net.Conn
	if !eventually(15*time.Second, func() bool {
		c5, err = dial(3 * time.Second)
		return err == nil
	}) {
		t.Fatalf("no new connection after one closed: %v (table %+v)", err, connsTo(e, holdPort))
	}
	open = append(open, c5)
	if err := echo(c5, "new\n", 5*time.Second); err != nil {
		t.Fatalf("the new connection: %v", err)
	}
}

// A reload every second under load: short connections throughout while
// the file changes weights and removes and adds a real server, each reload
// applied (the balancer's generation moves), and no connection fails.
func TestFaultReloadUnderLoad(t *testing.T) {
	e := setup(t, services("wrr", 1, 1), "")
	path := filepath.Join(t.TempDir(), "tapvs.yaml")
	// The web service's real servers in each version of the file, and
	// what tapvs has once it is applied (rs1's weight, rs2's; -1: none).
	want := [][2]int{{1, 1}, {3, 1}, {2, -1}, {1, 4}}
	versions := []string{
		services("wrr", 1, 1),
		services("wrr", 3, 1),
		// rs2 removed from web (the other services keep it).
		`
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: wrr
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80, weight: 2}`,
		services("wrr", 1, 4),
	}
	// Keep the other services of the lab in the rs2-less version.
	full := services("wrr", 1, 1)
	versions[2] = versions[2] + full[len(webHead()):]

	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		ok, fail int
		firstErr error
		perRS    = map[string]int{}
	)
	const maxRequests = 200000 // bounds the load whatever happens
	wg.Add(1)
	go func() {
		defer wg.Done()
		hc := lab.HTTPClient(e.top.Client, 5*time.Second)
		for range maxRequests {
			select {
			case <-stop:
				return
			default:
			}
			body, err := httpGet(hc, lab.VIP, lab.HTTPPort)
			if err != nil {
				fail++
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			ok++
			var name string
			fmt.Sscan(body, &name)
			perRS[name]++
		}
	}()
	const reloads = 12
	pace := time.NewTicker(time.Second) // the test is one reload a second under load
	defer pace.Stop()
	for i := range reloads {
		<-pace.C
		v := (i + 1) % len(versions) // version 0 is what tapvs started with
		cfg := e.top.Config(versions[v], "")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		gen := e.d.Balancer.Generation()
		if err := e.d.Reload(path); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
		if e.d.Balancer.Generation() == gen {
			t.Errorf("reload %d (version %d) left the generation at %d", i+1, v, gen)
		}
		if got := webWeights(e); got != want[v] {
			t.Errorf("after reload %d web's weights are %v, want %v (version %d)", i+1, got, want[v], v)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d reloads; %d requests succeeded, %d failed; answered by %v", reloads, ok, fail, perRS)
	if fail > 0 {
		t.Errorf("%d of %d requests failed during the reloads; the first: %v", fail, ok+fail, firstErr)
	}
	if ok < 10*reloads || ok+fail >= maxRequests {
		t.Errorf("%d requests in %d reloads: the load did not run through them all", ok+fail, reloads)
	}
	if perRS["rs1"] == 0 || perRS["rs2"] == 0 {
		t.Errorf("answered by %v: the load did not reach both servers", perRS)
	}
}

// webWeights are the web service's weights of rs1 and rs2, -1 for one it does not have.
func webWeights(e *env) [2]int {
	w := [2]int{-1, -1}
	for _, s := range e.d.Balancer.Services() {
		if s.Port != lab.HTTPPort {
			continue
		}
		for _, d := range s.Dests() {
			switch d.Addr {
			case lab.RS1:
				w[0] = d.Weight()
			case lab.RS2:
				w[1] = d.Weight()
			}
		}
	}
	return w
}

// webHead is the web service's part of webServices: what a version of the
// file without rs2 replaces.
func webHead() string {
	s := services("wrr", 1, 1)
	i := 0
	for n := 0; i < len(s); i++ {
		if s[i] == '\n' && i+8 < len(s) && s[i+1:i+9] == "  - name" {
			if n++; n == 2 {
				break
			}
		}
	}
	return s[:i]
}
