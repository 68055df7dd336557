package e2e

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/netstack"
)

// With offload, the kernel hands tapvs TSO super-frames and tapvs passes them
// on whole: frames larger than the MTU cross the server-side link, and the
// data arrives intact (hashes compared).
func TestOffloadSuperFramesCrossIntact(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	bulk := netip.AddrPortFrom(lab.VIP, lab.BulkPort)
	if _, err := lab.Upload(e.ctx(2*time.Minute), e.top.Client, bulk, 32<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Download(e.ctx(2*time.Minute), e.top.Client, bulk, 32<<20); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	capRouter.stop()
	capClient.stop()
	big := func(c *capture, from netip.Addr) (n, max int) {
		for _, p := range tcpPort(c.packets(), lab.BulkPort) {
			ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if addr(ip.SrcIP) == from && int(ip.Length) > 1500 {
				n++
				max = maxInt(max, int(ip.Length))
			}
		}
		return
	}
	// Toward the servers, tapvs writes what the client's kernel gave it.
	if n, m := big(capRouter, lab.LIP1); n == 0 {
		t.Fatal("no super-frame from tapvs reached the router: offload is not in use")
	} else {
		t.Logf("tapvs -> router: %d super-frames, largest %d bytes", n, m)
	}
	// Toward the client, tapvs writes what the router's kernel gave it.
	if n, m := big(capClient, lab.VIP); n == 0 {
		t.Fatal("no super-frame from the VIP reached the client")
	} else {
		t.Logf("VIP -> client: %d super-frames, largest %d bytes", n, m)
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// Plain TAPs (offload off: one frame per system call) still carry HTTP,
// UDP and bulk data intact, and never more than the MTU.
func TestPlainTAPsWithoutOffload(t *testing.T) {
	e := setupWith(t, topoOpts{queues: 1, noOffload: true}, services("rr", 1, 1), "")
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	for range 4 {
		e.get(hc)
	}
	if _, err := lab.UDPEcho(e.ctx(5*time.Second), e.top.Client, netip.AddrPortFrom(lab.VIP, lab.EchoPort), "x"); err != nil {
		t.Fatal(err)
	}
	bulk := netip.AddrPortFrom(lab.VIP, lab.BulkPort)
	if _, err := lab.Upload(e.ctx(2*time.Minute), e.top.Client, bulk, 16<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Download(e.ctx(2*time.Minute), e.top.Client, bulk, 16<<20); err != nil {
		t.Fatal(err)
	}
	capRouter.stop()
	for _, p := range capRouter.packets() {
		if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok && int(ip.Length) > 1500 {
			t.Fatalf("a %d-byte packet crossed plain TAPs", ip.Length)
		}
	}
}

// Busy polling (one thread reads every queue of both sides): the same
// traffic crosses intact, on TAPs with and without offload and with two
// queues a side, and stopping tapvs ends the poller.
func TestBusyPoll(t *testing.T) {
	for _, o := range []topoOpts{{queues: 2, busyPoll: 200 * time.Microsecond}, {queues: 1, noOffload: true, busyPoll: time.Millisecond}} {
		t.Run(fmt.Sprintf("queues=%d,offload=%v", o.queues, !o.noOffload), func(t *testing.T) {
			e := setupWith(t, o, services("rr", 1, 1), "")
			hc := lab.HTTPClient(e.top.Client, 5*time.Second)
			prev := ""
			for i := range 6 {
				rs, _ := e.get(hc)
				if rs == prev {
					t.Fatalf("request %d went to %s twice in a row", i, rs)
				}
				prev = rs
			}
			if _, err := lab.UDPEcho(e.ctx(5*time.Second), e.top.Client, netip.AddrPortFrom(lab.VIP, lab.EchoPort), "x"); err != nil {
				t.Fatal(err)
			}
			bulk := netip.AddrPortFrom(lab.VIP, lab.BulkPort)
			if _, err := lab.Upload(e.ctx(2*time.Minute), e.top.Client, bulk, 16<<20); err != nil {
				t.Fatal(err)
			}
			if _, err := lab.Download(e.ctx(2*time.Minute), e.top.Client, bulk, 16<<20); err != nil {
				t.Fatal(err)
			}
			var fwd uint64
			for _, ep := range []*netstack.Endpoint{e.d.Stack.Client, e.d.Stack.Server} {
				for i := range ep.Stats() {
					fwd += ep.Stats()[i].Forwarded.Load()
				}
			}
			sleeps, polling := e.d.Stack.PollSleeps()
			if !polling || fwd == 0 {
				t.Fatalf("polling %v, %d frames forwarded", polling, fwd)
			}
			// Between the requests above the queues went quiet for longer
			// than busy_poll: the poller must have slept, not spun.
			if sleeps == 0 {
				t.Fatal("the poller never slept")
			}
			t.Logf("forwarded %d frames; the poller slept %d times", fwd, sleeps)
		})
	}
}
