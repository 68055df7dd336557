package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/tapvs/tapvs/bgp/bgptest"
	"github.com/tapvs/tapvs/lab"
)

// garbagePeer listens on addr and writes random bytes to every session
// the speaker opens, counting them; it stops when the test ends.
func garbagePeer(t *testing.T, addr netip.Addr) (port uint16, sessions *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	sessions = new(atomic.Int64)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			sessions.Add(1)
			go func() {
				defer c.Close()
				b := make([]byte, 4096)
				rand.Read(b)
				c.SetDeadline(time.Now().Add(3 * time.Second))
				c.Write(b)
				c.Read(b)
			}()
		}
	}()
	return uint16(l.Addr().(*net.TCPAddr).Port), sessions
}

// The BGP speaker's peers are outside input: a peer that sends garbage, a
// router whose session flaps and one that refuses it never touch the data
// path. Requests through the VIP go on, every one answered, while they
// misbehave; the router that comes back learns the VIP and the LIPs again.
// The peers are on the loopback of the namespace tapvs runs in (the
// speaker's sessions are that namespace's kernel's).
func TestBGPPeersNeverTouchTheDataPath(t *testing.T) {
	need(t)
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil { // a rootless run's namespace starts with lo down
		t.Fatalf("lo up: %v: %s", err, out)
	}
	good := bgptest.Start(t, 65001, "")
	garbage, sessions := garbagePeer(t, netip.MustParseAddr("127.0.0.3"))
	refused := bgptest.FreePort(t)
	extra := fmt.Sprintf(`bgp:
  asn: 65001
  router_id: 10.9.9.9
  connect_retry: 1s
  peers:
    - {address: 127.0.0.1, asn: 65000, port: %d, local_address: 127.0.0.2}
    - {address: 127.0.0.3, asn: 65000, port: %d}
    - {address: 127.0.0.4, asn: 65000, port: %d}
`, good.Port, garbage, refused)
	e := setup(t, services("rr", 1, 1), extra)
	self := bgptest.SpeakerAddr
	want := map[netip.Prefix]netip.Addr{
		netip.PrefixFrom(lab.VIP, 32):  self,
		netip.PrefixFrom(lab.LIP1, 32): self,
		netip.PrefixFrom(lab.LIP2, 32): self,
	}
	good.WaitLearned(t, want)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	flaps := make(chan error, 1)
	peerUp := func() (up bool, sessions uint64) {
		b, _ := e.d.Cluster().BGP()
		for _, p := range b.Peers {
			if p.Address == "127.0.0.1" {
				return p.State == "established", p.Established
			}
		}
		return false, 0
	}
	go func() { // three flaps of the good router's session during the requests
		defer close(flaps)
		for i := range 3 {
			if err := good.Srv.DisablePeer(ctx, &api.DisablePeerRequest{Address: self.String(), Communication: "flap"}); err != nil {
				flaps <- err
				return
			}
			if !eventually(10*time.Second, func() bool { up, _ := peerUp(); return !up }) {
				flaps <- fmt.Errorf("flap %d: the speaker never saw its session end", i)
				return
			}
			if err := good.Srv.EnablePeer(ctx, &api.EnablePeerRequest{Address: self.String()}); err != nil {
				flaps <- err
				return
			}
			if !eventually(20*time.Second, func() bool { up, n := peerUp(); return up && n == uint64(i)+2 }) {
				flaps <- fmt.Errorf("flap %d: the session never came back", i)
				return
			}
		}
	}()
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	served := 0
	deadline := time.Now().Add(time.Minute)
	for flapping := true; flapping || served < 50; served++ {
		e.get(hc) // fails the test if a request is not answered
		select {
		case err, open := <-flaps:
			if err != nil {
				t.Fatal(err)
			}
			flapping = open
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the flaps never ended")
		}
	}
	good.WaitLearned(t, want)
	b, ok := e.d.Cluster().BGP()
	if !ok {
		t.Fatal("no BGP status")
	}
	for _, p := range b.Peers {
		t.Logf("peer %s: %s, %d changes, %d sessions up, last error %q", p.Address, p.State, p.Changes, p.Established, p.LastError)
		switch p.Address {
		case "127.0.0.1":
			if p.State != "established" || p.Established < 4 {
				t.Errorf("the flapping router %+v: want established again, 4 sessions (the first and one per flap)", p)
			}
		default:
			if p.Established != 0 {
				t.Errorf("peer %+v came up", p)
			}
		}
	}
	if sessions.Load() < 2 {
		t.Errorf("the garbage peer saw %d sessions: the speaker did not keep trying", sessions.Load())
	}
	t.Logf("%d requests answered through the flaps; the garbage peer saw %d sessions", served, sessions.Load())
	// Shutdown withdraws everything before the TAPs close.
	start := time.Now()
	e.d.Close()
	good.WaitLearned(t, map[netip.Prefix]netip.Addr{})
	t.Logf("shutdown: the router had nothing from tapvs %v after Close began", time.Since(start).Round(time.Millisecond))
}
