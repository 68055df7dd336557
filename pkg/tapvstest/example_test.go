package tapvstest_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// A test that sends requests through tapvs to two real servers running
// the built-in HTTP server. Everything NewLab made goes when the test ends.
func ExampleNewLab() {
	testBalancing := func(t *testing.T) { // func TestBalancing(t *testing.T) in a _test.go file
		l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 2})
		for range 4 {
			resp, err := l.HTTPClient().Get(l.URL())
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		for _, rs := range l.RealServers {
			if rs.Requests() != 2 {
				t.Errorf("%s answered %d requests, want 2 (rr)", rs.Name, rs.Requests())
			}
		}
	}
	_ = testBalancing
}

// A lab whose real servers run the test's own server: here one that says
// hello on port 7000, behind a service the test adds.
func ExampleRealServer_Listen() {
	testOwnServer := func(t *testing.T) {
		l := tapvstest.NewLab(t, tapvstest.Options{NoBackends: true, NoService: true})
		for _, rs := range l.RealServers {
			ln, err := rs.Listen("tcp4", 7000) // closed when the test ends
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					io.WriteString(c, "hello from "+rs.Name+"\n")
					c.Close()
				}
			}()
		}
		// l.LB.AddService(tapvs.Service{... VIP: l.VIP:7000, LocalAddrs:
		// l.LocalAddrs, RealServers: each rs.Addr:7000 ...}), then
		// l.LB.WaitReady(ctx) and l.Dial(ctx, "tcp4", "172.25.254.100:7000").
	}
	_ = testOwnServer
}

// Tests that run at once, each with a lab of its own: six real servers on
// three subnets with the UDP service, a client driven by hand from its
// second address. Labs never share a name, a TAP or a namespace.
func ExampleLab_Dialer() {
	testByHand := func(t *testing.T) {
		t.Parallel()
		l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 6, Subnets: 3, UDP: true, Clients: 2})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d := l.Dialer(l.Client)
		d.LocalAddr = l.ClientAddrs[1] // 172.25.254.2
		c, err := d.DialContext(ctx, "tcp4", l.Service.VIP.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.0\r\n") // half a request: tapvs holds the connection
		// ... look at l.LB.Connections(), then finish it:
		io.WriteString(c, "\r\n")
		answer, _ := io.ReadAll(c) // "HTTP/1.0 200 OK ... rs1 10.20.1.2 saw 172.25.84.10:5000"
		_ = answer
		server, reply, err := l.Echo(ctx, "ping") // through the UDP service: "rs1", "ping"
		_, _, _ = server, reply, err
	}
	_ = testByHand
}
