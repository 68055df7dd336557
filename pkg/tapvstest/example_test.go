package tapvstest_test

import (
	"io"
	"testing"

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
