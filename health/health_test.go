package health

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tapvs/tapvs/nat"
)

var (
	vip    = netip.MustParseAddrPort("172.25.254.100:80")
	tcpVIP = Key{Proto: nat.TCP, VIP: vip}
	lip    = netip.MustParseAddr("172.25.84.10")
	rs1    = netip.MustParseAddrPort("10.20.1.2:80")
	rs2    = netip.MustParseAddrPort("10.20.2.2:80")
	quiet  = slog.New(slog.NewTextHandler(io.Discard, nil))
)

const nic tcpip.NICID = 1

// testBalancer has one TCP service at vip with one LIP and the given real
// servers, each of weight 5.
func testBalancer(t *testing.T, servers ...netip.AddrPort) (*nat.Balancer, *nat.Service) {
	t.Helper()
	bal, err := nat.New(nat.Config{MaxConns: 100, PortMin: 5000, PortMax: 6000, Timeouts: nat.DefaultTimeouts()})
	if err != nil {
		t.Fatal(err)
	}
	err = bal.Update(func(tx *nat.Tx) error {
		s, err := tx.AddService(nat.ServiceConfig{Name: "web", Addr: vip.Addr(), Port: vip.Port(), Protocol: nat.TCP, Scheduler: "wrr"})
		if err != nil {
			return err
		}
		if _, err := tx.AddLocalAddr(s, lip); err != nil {
			return err
		}
		for _, rs := range servers {
			if _, err := tx.AddDest(s, rs.Addr(), rs.Port(), 5); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := bal.Service(nat.TCP, vip.Addr(), vip.Port())
	if err != nil {
		t.Fatal(err)
	}
	return bal, svc
}

// loopStack is a gVisor stack whose one NIC is a loopback holding the LIP
// and the real servers' addresses: a check dialled from the LIP reaches a
// listener on a real server's address in the same stack.
func loopStack(t *testing.T, addrs ...netip.Addr) *stack.Stack {
	t.Helper()
	s := stack.New(stack.Options{NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6}})
	if err := s.CreateNIC(nic, loopback.New()); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		pa := tcpip.ProtocolAddress{Protocol: protoOf(a), AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(nic, pa, stack.AddressProperties{}); err != nil {
			t.Fatal(err)
		}
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nic}, {Destination: header.IPv6EmptySubnet, NIC: nic}})
	t.Cleanup(func() { s.Close(); s.Wait() })
	return s
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// listen opens a TCP listener on ap inside s, with SO_REUSEADDR so that it
// can listen again while the checks' connections are in TIME_WAIT.
func listen(t *testing.T, s *stack.Stack, ap netip.AddrPort) net.Listener {
	t.Helper()
	var wq waiter.Queue
	ep, terr := s.NewEndpoint(tcp.ProtocolNumber, protoOf(ap.Addr()), &wq)
	if terr != nil {
		t.Fatal(terr)
	}
	ep.SocketOptions().SetReuseAddress(true)
	if terr := ep.Bind(tcpip.FullAddress{NIC: nic, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}); terr != nil {
		ep.Close()
		t.Fatalf("bind %s: %s", ap, terr)
	}
	if terr := ep.Listen(16); terr != nil {
		ep.Close()
		t.Fatalf("listen %s: %s", ap, terr)
	}
	return gonet.NewTCPListener(s, &wq, ep)
}

// serveHTTP serves h on a listener on ap inside s until the test ends.
func serveHTTP(t *testing.T, s *stack.Stack, ap netip.AddrPort, h http.HandlerFunc) {
	t.Helper()
	l := listen(t, s, ap)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

func weightOf(t *testing.T, svc *nat.Service, rs netip.AddrPort) (int, bool) {
	t.Helper()
	d := svc.Dest(rs.Addr(), rs.Port())
	if d == nil {
		return 0, false
	}
	return d.Weight(), true
}

// setWeight is an operator's weight change: a Tx of its own.
func setWeight(t *testing.T, bal *nat.Balancer, svc *nat.Service, rs netip.AddrPort, w int) {
	t.Helper()
	if err := bal.Update(func(tx *nat.Tx) error { return tx.SetWeight(svc, rs.Addr(), rs.Port(), w) }); err != nil {
		t.Fatal(err)
	}
}

// newState registers a state for rs in c as Start does, without running its loop.
func newState(c *Checker, rs netip.AddrPort, spec Spec, weight int) *state {
	k := stateKey{tcpVIP, rs}
	s := &state{t: Target{Proto: nat.TCP, VIP: vip, RS: rs, Spec: spec, Weight: weight}, up: true, weight: weight}
	c.state[k] = s
	return s
}

var errProbe = errors.New("connection refused")

// A quiesced server: it goes down at exactly the fall-th failure in a row
// (weight 0, still listed), a pass between failures starts the count again,
// and it is back with the weight it had at exactly the rise-th pass in a row.
func TestRecordQuiescesAfterFallAndRestoresAfterRise(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	s := newState(c, rs1, Spec{Type: "tcp", Rise: 2, Fall: 3}, 5)
	// An operator weight set before the failure is what comes back.
	setWeight(t, bal, svc, rs1, 7)
	expect := func(step string, up bool, weight int) {
		t.Helper()
		gotUp, checked, _ := c.Up(tcpVIP, rs1)
		w, listed := weightOf(t, svc, rs1)
		if gotUp != up || !checked || !listed || w != weight {
			t.Fatalf("%s: up %v checked %v listed %v weight %d; want up %v, listed, weight %d", step, gotUp, checked, listed, w, up, weight)
		}
		if w2, _ := weightOf(t, svc, rs2); w2 != 5 {
			t.Fatalf("%s: the other server's weight moved to %d", step, w2)
		}
	}
	c.record(svc, s, errProbe)
	c.record(svc, s, errProbe)
	expect("2 of 3 failures", true, 7)
	c.record(svc, s, nil) // a pass resets the failure count
	c.record(svc, s, errProbe)
	c.record(svc, s, errProbe)
	expect("2 failures after a pass", true, 7)
	c.record(svc, s, errProbe)
	expect("3 failures", false, 0)
	if _, _, reason := c.Up(tcpVIP, rs1); reason != errProbe.Error() {
		t.Fatalf("reason %q, want %q", reason, errProbe)
	}
	c.record(svc, s, errProbe)
	expect("a 4th failure", false, 0)
	c.record(svc, s, nil)
	expect("1 of 2 passes", false, 0)
	c.record(svc, s, errProbe) // a failure resets the pass count
	c.record(svc, s, nil)
	expect("1 pass after a failure", false, 0)
	c.record(svc, s, nil)
	expect("2 passes", true, 7)
	if _, _, reason := c.Up(tcpVIP, rs1); reason != "" {
		t.Fatalf("reason %q after recovery, want none", reason)
	}
}

// on_failure: remove takes the server off the service at the fall-th
// failure and adds it back, with its weight, at the rise-th pass.
func TestRecordRemovesAndAddsBack(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	s := newState(c, rs1, Spec{Type: "tcp", Rise: 1, Fall: 2, Remove: true}, 5)
	c.record(svc, s, errProbe)
	if _, listed := weightOf(t, svc, rs1); !listed {
		t.Fatal("removed after 1 of 2 failures")
	}
	c.record(svc, s, errProbe)
	if _, listed := weightOf(t, svc, rs1); listed {
		t.Fatal("still listed after 2 failures with on_failure remove")
	}
	if w, listed := weightOf(t, svc, rs2); !listed || w != 5 {
		t.Fatalf("the other server: listed %v weight %d", listed, w)
	}
	if up, _, _ := c.Up(tcpVIP, rs1); up {
		t.Fatal("reported up after removal")
	}
	c.record(svc, s, nil)
	if w, listed := weightOf(t, svc, rs1); !listed || w != 5 {
		t.Fatalf("after recovery: listed %v weight %d, want listed with weight 5", listed, w)
	}
	if up, _, _ := c.Up(tcpVIP, rs1); !up {
		t.Fatal("reported down after recovery")
	}
}

// A server put back by the checker has its next hop at once, with no
// resolution to wait for: the one the stack the check went through knows,
// or else the one another entry of its address has (the transaction's
// seed); and the checker's changes are transactions, checked against the
// other addresses: an address made a LIP while the server was out is not
// put back as a real server.
func TestRecordPutsBackWithItsNextHop(t *testing.T) {
	remove := Spec{Type: "tcp", Rise: 1, Fall: 1, Remove: true}
	hop := [6]byte{0x02, 0, 0, 0, 0x0e, 0x01}
	macOf := func(svc *nat.Service, rs netip.AddrPort) ([6]byte, bool) {
		d := svc.Dest(rs.Addr(), rs.Port())
		if d == nil {
			t.Fatalf("%s not listed", rs)
		}
		return d.NextHopMAC()
	}

	// From the stack.
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	var asked []netip.Addr
	c.SetNextHop(func(a netip.Addr) ([6]byte, error) { asked = append(asked, a); return hop, nil })
	s := newState(c, rs1, remove, 5)
	c.record(svc, s, errProbe)
	if svc.Dest(rs1.Addr(), rs1.Port()) != nil {
		t.Fatal("not removed")
	}
	c.record(svc, s, nil)
	if mac, ok := macOf(svc, rs1); !ok || mac != hop || len(asked) != 1 || asked[0] != rs1.Addr() {
		t.Fatalf("put back with next hop %x (known %v), asked for %v; want %x from the stack", mac, ok, asked, hop)
	}

	// From another entry of the same address (another service's), when
	// the stack has no answer.
	bal, svc = testBalancer(t, rs1, rs2)
	other := netip.MustParseAddrPort("172.25.254.100:81")
	if err := bal.Update(func(tx *nat.Tx) error {
		o, err := tx.AddService(nat.ServiceConfig{Addr: other.Addr(), Port: other.Port(), Protocol: nat.TCP, Scheduler: "rr"})
		if err != nil {
			return err
		}
		d, err := tx.AddDest(o, rs1.Addr(), rs1.Port(), 1)
		if err == nil {
			d.SetNextHopMAC(hop)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c = New(bal, nil, nic, quiet)
	c.SetNextHop(func(netip.Addr) ([6]byte, error) { return [6]byte{}, errors.New("not in the neighbour table") })
	s = newState(c, rs1, remove, 5)
	c.record(svc, s, errProbe)
	c.record(svc, s, nil)
	if mac, ok := macOf(svc, rs1); !ok || mac != hop {
		t.Fatalf("put back with next hop %x (known %v), want %x from the other entry", mac, ok, hop)
	}

	// The address became a LIP while the server was out: it stays out,
	// and the balancer's addresses stay apart.
	bal, svc = testBalancer(t, rs1, rs2)
	c = New(bal, nil, nic, quiet)
	s = newState(c, rs2, remove, 5)
	c.record(svc, s, errProbe)
	if err := bal.Update(func(tx *nat.Tx) error { _, err := tx.AddLocalAddr(svc, rs2.Addr()); return err }); err != nil {
		t.Fatalf("rs2's address, out of the service, as a LIP: %v", err)
	}
	c.record(svc, s, nil)
	if svc.Dest(rs2.Addr(), rs2.Port()) != nil {
		t.Fatal("put back as a real server while its address is a LIP")
	}
}

// A server the configuration dropped while it was down (absent from the
// service) is added back with its configured weight when it passes.
func TestRecordAddsBackAServerThatWasAbsentWhenItFailed(t *testing.T) {
	bal, svc := testBalancer(t, rs2)
	c := New(bal, nil, nic, quiet)
	s := newState(c, rs1, Spec{Type: "tcp", Rise: 1, Fall: 1}, 3)
	c.record(svc, s, errProbe)
	if up, _, _ := c.Up(tcpVIP, rs1); up {
		t.Fatal("up after a failure with fall 1")
	}
	if _, listed := weightOf(t, svc, rs1); listed {
		t.Fatal("a failure added the server")
	}
	c.record(svc, s, nil)
	if w, listed := weightOf(t, svc, rs1); !listed || w != 3 {
		t.Fatalf("listed %v weight %d, want listed with the configured weight 3", listed, w)
	}
}

// Up says unchecked for a server nobody checks.
func TestUpUnchecked(t *testing.T) {
	bal, _ := testBalancer(t, rs1)
	c := New(bal, nil, nic, quiet)
	if up, checked, reason := c.Up(tcpVIP, rs1); up || checked || reason != "" {
		t.Fatalf("unchecked server: up %v checked %v reason %q", up, checked, reason)
	}
}

// On reload the new checker takes over what the old one saw: a server that
// was down stays out (held down as the new spec says, even if the spec
// changed from quiesce to remove or back), with its reason and failure
// count; one that was up starts up; a new server starts up. A recovery then
// restores the new configuration's weight.
func TestStartTakesOverStateFromPreviousChecker(t *testing.T) {
	rs3 := netip.MustParseAddrPort("10.20.3.2:80")
	bal, svc := testBalancer(t, rs1, rs2, rs3)
	never := Spec{Type: "tcp", Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}
	prev := New(bal, nil, nic, quiet)
	s1 := newState(prev, rs1, never, 5) // quiesce in prev
	s2 := newState(prev, rs2, never, 5)
	prev.record(svc, s1, errProbe)
	if w, _ := weightOf(t, svc, rs1); w != 0 {
		t.Fatalf("prev did not quiesce rs1: weight %d", w)
	}
	prev.record(svc, s2, nil)
	close(prev.stop) // as Close, no loops ran

	remove := never
	remove.Remove = true
	next := New(bal, nil, nic, quiet)
	next.Start([]Target{
		{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: remove, Weight: 9}, // was down; now on_failure remove
		{Proto: nat.TCP, VIP: vip, RS: rs2, Spec: never, Weight: 5},
		{Proto: nat.TCP, VIP: vip, RS: rs3, Spec: never, Weight: 5}, // not checked before
	}, prev)
	defer next.Close()

	if up, checked, reason := next.Up(tcpVIP, rs1); up || !checked || reason != errProbe.Error() {
		t.Fatalf("rs1 after reload: up %v checked %v reason %q; want down with the old reason", up, checked, reason)
	}
	if _, listed := weightOf(t, svc, rs1); listed {
		t.Fatal("rs1 was down and its check now says remove: still listed")
	}
	for _, rs := range []netip.AddrPort{rs2, rs3} {
		if up, checked, _ := next.Up(tcpVIP, rs); !up || !checked {
			t.Fatalf("%s after reload: up %v checked %v", rs, up, checked)
		}
		if w, listed := weightOf(t, svc, rs); !listed || w != 5 {
			t.Fatalf("%s after reload: listed %v weight %d", rs, listed, w)
		}
	}
	next.mu.Lock()
	s := next.state[stateKey{tcpVIP, rs1}]
	ko := s.ko
	next.mu.Unlock()
	if ko != 1 {
		t.Fatalf("failure count %d taken over, want 1", ko)
	}
	next.record(svc, s, nil)
	if w, listed := weightOf(t, svc, rs1); !listed || w != 9 {
		t.Fatalf("rs1 recovered: listed %v weight %d, want the new configuration's weight 9", listed, w)
	}
}

// The other way: removed under the old spec, quiesce under the new one. The
// server stays absent (nothing to quiesce) until it passes.
func TestStartHoldsDownARemovedServerUnderQuiesce(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	never := Spec{Type: "tcp", Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}
	remove := never
	remove.Remove = true
	prev := New(bal, nil, nic, quiet)
	prev.record(svc, newState(prev, rs1, remove, 5), errProbe)
	close(prev.stop)
	if _, listed := weightOf(t, svc, rs1); listed {
		t.Fatal("prev did not remove rs1")
	}
	next := New(bal, nil, nic, quiet)
	next.Start([]Target{{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: never, Weight: 4}}, prev)
	defer next.Close()
	if up, _, _ := next.Up(tcpVIP, rs1); up {
		t.Fatal("a down server came up on reload")
	}
	if _, listed := weightOf(t, svc, rs1); listed {
		t.Fatal("a removed, down server was added back on reload")
	}

	// A quiesced server that a reload re-added at full weight (a config
	// that does not know the check's state) is quiesced again.
	prev2 := New(bal, nil, nic, quiet)
	prev2.record(svc, newState(prev2, rs2, never, 5), errProbe)
	close(prev2.stop)
	setWeight(t, bal, svc, rs2, 5)
	next2 := New(bal, nil, nic, quiet)
	next2.Start([]Target{{Proto: nat.TCP, VIP: vip, RS: rs2, Spec: never, Weight: 5}}, prev2)
	defer next2.Close()
	if w, listed := weightOf(t, svc, rs2); !listed || w != 0 {
		t.Fatalf("down, quiesced server after reload: listed %v weight %d, want weight 0", listed, w)
	}
}

// The probes themselves, through a gVisor stack from the LIP: a TCP connect
// passes when something listens and fails when nothing does; HTTP checks
// the status and, when asked, the body's SHA-256; Spec.Port overrides the
// server's port.
func TestCheckProbes(t *testing.T) {
	st := loopStack(t, lip, rs1.Addr())
	bal, svc := testBalancer(t, rs1)
	c := New(bal, st, nic, quiet)

	l := listen(t, st, rs1)
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	body := "healthy\n"
	sum := sha256.Sum256([]byte(body))
	serveHTTP(t, st, netip.AddrPortFrom(rs1.Addr(), 8080), func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, body)
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		default:
			http.NotFound(w, r)
		}
	})
	spec := func(s Spec) Target {
		s.Timeout = 2 * time.Second
		return Target{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: s, Weight: 5}
	}
	cases := []struct {
		name string
		spec Spec
		want string // "" passes
	}{
		{"tcp listening", Spec{Type: "tcp"}, ""},
		{"tcp nothing listening", Spec{Type: "tcp", Port: 81}, "tcp connect"},
		{"http 200", Spec{Type: "http", Port: 8080, Path: "/ok"}, ""},
		{"http body sha256", Spec{Type: "http", Port: 8080, Path: "/ok", BodySHA256: hex.EncodeToString(sum[:])}, ""},
		{"http body differs", Spec{Type: "http", Port: 8080, Path: "/ok", BodySHA256: strings.Repeat("00", 32)}, "http body sha256 " + hex.EncodeToString(sum[:])},
		{"http 404", Spec{Type: "http", Port: 8080, Path: "/missing"}, "http status 404, want 200"},
		{"http expected 418", Spec{Type: "http", Port: 8080, Path: "/teapot", Status: 418}, ""},
		{"http 418 unexpected", Spec{Type: "http", Port: 8080, Path: "/teapot"}, "http status 418, want 200"},
		{"http nothing listening", Spec{Type: "http", Port: 81, Path: "/"}, "http: "},
	}
	for _, tc := range cases {
		err := c.check(svc, spec(tc.spec))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want a pass", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// An IPv6 real server is checked from the service's IPv6 LIP, whatever
// order the LIPs come in, over TCP and HTTP (its address bracketed in the
// URL); a server of a family the service has no LIP of fails with a reason
// that says so.
func TestCheckProbesIPv6(t *testing.T) {
	lip6 := netip.MustParseAddr("fd00:2::10")
	rs6 := netip.MustParseAddrPort("[fd00:20::2]:80")
	st := loopStack(t, lip, lip6, rs6.Addr())
	c := New(nil, st, nic, quiet)
	l := listen(t, st, rs6)
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	// What the HTTP server saw: the handler runs before the check has
	// its answer.
	var mu sync.Mutex
	var hosts, froms []string
	serveHTTP(t, st, netip.AddrPortFrom(rs6.Addr(), 8080), func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts, froms = append(hosts, r.Host), append(froms, r.RemoteAddr)
		mu.Unlock()
		io.WriteString(w, "ok\n")
	})
	target := func(s Spec) Target {
		s.Timeout = 2 * time.Second
		return Target{Proto: nat.TCP, VIP: vip, RS: rs6, Spec: s, Weight: 5}
	}
	for _, lips := range [][]netip.Addr{{lip, lip6}, {lip6, lip}} {
		if err := c.checkFrom(lips, target(Spec{Type: "tcp"})); err != nil {
			t.Fatalf("tcp from %v: %v", lips, err)
		}
		if err := c.checkFrom(lips, target(Spec{Type: "http", Port: 8080, Path: "/"})); err != nil {
			t.Fatalf("http from %v: %v", lips, err)
		}
		if err := c.checkFrom(lips, target(Spec{Type: "tcp", Port: 81})); err == nil || !strings.Contains(err.Error(), "tcp connect") {
			t.Fatalf("tcp to nothing listening from %v: %v", lips, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hosts) != 2 {
		t.Fatalf("%d HTTP requests, want 2", len(hosts))
	}
	for i := range hosts {
		if ap, err := netip.ParseAddrPort(froms[i]); err != nil || ap.Addr() != lip6 || hosts[i] != "[fd00:20::2]:8080" {
			t.Errorf("HTTP request from %s for Host %q; want from the IPv6 LIP %s for [fd00:20::2]:8080", froms[i], hosts[i], lip6)
		}
	}
	if err := c.checkFrom([]netip.Addr{lip}, target(Spec{Type: "tcp"})); err == nil || !strings.Contains(err.Error(), "no IPv6 local address to check fd00:20::2") {
		t.Fatalf("an IPv6 server with only an IPv4 LIP: %v", err)
	}
	v4 := target(Spec{Type: "tcp"})
	v4.RS = rs1
	if err := c.checkFrom([]netip.Addr{lip6}, v4); err == nil || !strings.Contains(err.Error(), "no IPv4 local address to check 10.20.1.2") {
		t.Fatalf("an IPv4 server with only an IPv6 LIP: %v", err)
	}
}

// A service without a LIP has nothing to check from.
func TestCheckNeedsALocalAddress(t *testing.T) {
	bal, err := nat.New(nat.Config{MaxConns: 10, PortMin: 5000, PortMax: 6000, Timeouts: nat.DefaultTimeouts()})
	if err != nil {
		t.Fatal(err)
	}
	var svc *nat.Service
	if err := bal.Update(func(tx *nat.Tx) (err error) {
		svc, err = tx.AddService(nat.ServiceConfig{Addr: vip.Addr(), Port: vip.Port(), Protocol: nat.TCP, Scheduler: "rr"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := New(bal, loopStack(t), nic, quiet)
	err = c.check(svc, Target{RS: rs1, Spec: Spec{Type: "tcp", Timeout: time.Second}})
	if err == nil || !strings.Contains(err.Error(), "no local address") {
		t.Fatalf("check without a LIP: %v", err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The running checker end to end: a server whose listener goes away is
// quiesced, the other is untouched, and it comes back with its weight when
// the listener returns; Close stops the checks and leaves servers as they
// are.
func TestCheckerFollowsAListener(t *testing.T) {
	st := loopStack(t, lip, rs1.Addr(), rs2.Addr())
	bal, svc := testBalancer(t, rs1, rs2)
	accept := func(l net.Listener, wg *sync.WaitGroup) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				conn.Close()
			}
		}()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	l1 := listen(t, st, rs1)
	l2 := listen(t, st, rs2)
	defer l2.Close()
	accept(l1, &wg)
	accept(l2, &wg)

	spec := Spec{Type: "tcp", Interval: 10 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 2}
	c := New(bal, st, nic, quiet)
	c.Start([]Target{
		{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: spec, Weight: 5},
		{Proto: nat.TCP, VIP: vip, RS: rs2, Spec: spec, Weight: 5},
	}, nil)
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	// Passes on an up server change nothing.
	waitFor(t, "a pass counted on rs1", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.state[stateKey{tcpVIP, rs1}].ok >= 3
	})
	if w, _ := weightOf(t, svc, rs1); w != 5 {
		t.Fatalf("weight %d while passing", w)
	}

	l1.Close()
	waitFor(t, "rs1 down", func() bool {
		up, _, _ := c.Up(tcpVIP, rs1)
		return !up
	})
	if w, listed := weightOf(t, svc, rs1); !listed || w != 0 {
		t.Fatalf("rs1 down: listed %v weight %d, want quiesced", listed, w)
	}
	if _, _, reason := c.Up(tcpVIP, rs1); !strings.Contains(reason, "tcp connect") {
		t.Fatalf("reason %q", reason)
	}
	if up, _, _ := c.Up(tcpVIP, rs2); !up {
		t.Fatal("rs2 went down with rs1")
	}
	if w, _ := weightOf(t, svc, rs2); w != 5 {
		t.Fatalf("rs2 weight %d", w)
	}

	l1 = listen(t, st, rs1)
	defer l1.Close()
	accept(l1, &wg)
	waitFor(t, "rs1 up again", func() bool {
		up, _, _ := c.Up(tcpVIP, rs1)
		return up
	})
	if w, _ := weightOf(t, svc, rs1); w != 5 {
		t.Fatalf("rs1 back with weight %d, want 5", w)
	}
	c.Close()
	closed = true
}
