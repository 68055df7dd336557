package e2e

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
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
