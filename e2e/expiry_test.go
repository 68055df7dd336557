package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// idleServices are two services whose established connections time out
// after 2s, to one real server where the test listens itself: plain
// FULLNAT and SYNPROXY.
const idleServices = `
  - name: idle
    vip: 172.25.254.100
    port: 9100
    scheduler: rr
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 9100}
    timeouts: {tcp: {established: 2s}}
  - name: idle-synproxy
    vip: 172.25.254.100
    port: 9101
    scheduler: rr
    synproxy: true
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 9101}
    timeouts: {tcp: {established: 2s}}`

// TestExpiryResetsBothEnds: an established connection that goes idle past
// its timeout (the server silent, as if it had died) is ended by tapvs with
// an RST to each end, which both kernels accept: the client's and the real
// server's blocked reads fail with ECONNRESET soon after the timeout,
// instead of hanging on a flow that tapvs forgot.
func TestExpiryResetsBothEnds(t *testing.T) {
	e := setup(t, idleServices, "")
	for i, port := range []int{9100, 9101} {
		t.Run(fmt.Sprint(port), func(t *testing.T) {
			var ln net.Listener
			if err := lab.InNetns(e.top.RS[0], func() (err error) {
				ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", lab.RS1, port))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			cl, err := lab.Dial(e.ctx(10*time.Second), e.top.Client, "tcp", fmt.Sprintf("172.25.254.100:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
			sv, err := ln.Accept()
			if err != nil {
				t.Fatalf("the real server got no connection: %v", err)
			}
			defer sv.Close()
			resetByExpiry(t, e, cl, sv, uint64(2*(i+1)))
		})
	}
}

// resetByExpiry exchanges one message each way on a connection through
// tapvs (client end cl, server end sv), leaves it idle and checks that the
// 2 s established timeout ends it with an RST to both ends, not before the
// timeout, and that tapvs has then sent want expiry RSTs in all.
func resetByExpiry(t *testing.T, e *env, cl, sv net.Conn, want uint64) {
	t.Helper()
	// One exchange each way, then silence. The two lengths differ: were
	// the client's RST refused, its challenge ACK (seq and ack each moved
	// by the same count) would pass SYNPROXY's cookie check and open a new
	// connection.
	buf := make([]byte, 16)
	if _, err := cl.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	sv.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(sv, buf[:4]); err != nil {
		t.Fatalf("server read: %v", err)
	}
	if _, err := sv.Write([]byte("pong!")); err != nil {
		t.Fatal(err)
	}
	cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(cl, buf[:5]); err != nil {
		t.Fatalf("client read: %v", err)
	}
	idle := time.Now()
	// Both block in Read: the 2s timeout, the 100ms sweep, and a generous
	// margin for a loaded machine.
	const bound = 20 * time.Second
	errs := make(chan error, 2)
	for _, c := range []net.Conn{cl, sv} {
		c.SetReadDeadline(time.Now().Add(bound))
		go func() {
			_, err := c.Read(make([]byte, 8))
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("after %v idle: read ended with %v, want ECONNRESET (RSTs sent %d)", time.Since(idle).Round(time.Millisecond), err, e.d.Balancer.Stats.ExpiredResets())
		}
	}
	// Not before the timeout, give or take the table's coarse clock
	// (10ms) and the 50ms by which a deadline is left unmoved.
	if el := time.Since(idle); el < 1800*time.Millisecond {
		t.Fatalf("reset after %v, before the 2s timeout", el)
	}
	// Counted once both are sent: the ends may have read theirs first.
	if !eventually(5*time.Second, func() bool { return e.d.Balancer.Stats.ExpiredResets() == want }) {
		t.Fatalf("expired_resets %d, want %d", e.d.Balancer.Stats.ExpiredResets(), want)
	}
}
