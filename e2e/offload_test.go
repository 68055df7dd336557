package e2e

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
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
	for _, side := range []struct{ ns, tap string }{{e.top.Client, e.top.TapClient}, {e.top.Router, e.top.TapServer}} {
		if f := tunFlags(t, side.ns, side.tap); f&iffVNetHdr == 0 {
			t.Fatalf("TAP %s: tun_flags %#x without IFF_VNET_HDR: offload is not in use", side.tap, f)
		}
	}
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
	// Both transfers ended with every byte read, so their frames crossed
	// both links; the captures may not have read the last of them yet.
	eventually(5*time.Second, func() bool {
		n1, _ := big(capRouter, lab.LIP1)
		n2, _ := big(capClient, lab.VIP)
		return n1 > 0 && n2 > 0
	})
	capRouter.stop()
	capClient.stop()
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
	// Plain for the kernel: neither TAP was made with a virtio-net header.
	for _, side := range []struct{ ns, tap string }{{e.top.Client, e.top.TapClient}, {e.top.Router, e.top.TapServer}} {
		if f := tunFlags(t, side.ns, side.tap); f&iffVNetHdr != 0 {
			t.Fatalf("TAP %s: tun_flags %#x has IFF_VNET_HDR: offload is on", side.tap, f)
		}
	}
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	e.crossAll(4)
	// The capture must have seen every kind of traffic crossAll sent, each
	// way, bulk data in full-MTU frames (a capture under bulk load may lose
	// frames, so no exact count): an empty or partial capture proves nothing.
	seen := func() map[string]bool {
		got := map[string]bool{}
		for _, p := range capRouter.packets() {
			ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if !ok {
				continue
			}
			dir := "to RS"
			if !(addr(ip.SrcIP) == lab.LIP1 || addr(ip.SrcIP) == lab.LIP2) {
				dir = "from RS"
			}
			if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
				switch {
				case tcp.SrcPort == lab.HTTPPort || tcp.DstPort == lab.HTTPPort:
					got["HTTP "+dir] = true
				case (tcp.SrcPort == lab.BulkPort || tcp.DstPort == lab.BulkPort) && ip.Length == 1500:
					got["1500-byte bulk "+dir] = true
				}
			}
			if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && (u.SrcPort == lab.EchoPort || u.DstPort == lab.EchoPort) {
				got["UDP echo "+dir] = true
			}
		}
		return got
	}
	want := []string{"HTTP to RS", "HTTP from RS", "UDP echo to RS", "UDP echo from RS", "1500-byte bulk to RS", "1500-byte bulk from RS"}
	eventually(5*time.Second, func() bool { return len(seen()) == len(want) })
	capRouter.stop()
	got := seen()
	for _, w := range want {
		if !got[w] {
			t.Fatalf("the router link capture holds no %s frame (saw %v in %d frames)", w, got, len(capRouter.packets()))
		}
	}
	for _, p := range capRouter.packets() {
		if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok && int(ip.Length) > 1500 {
			t.Fatalf("a %d-byte packet crossed plain TAPs", ip.Length)
		}
	}
}

// iffVNetHdr is IFF_VNET_HDR in a TAP's tun_flags: frames carry a
// virtio-net header, the kernel's side of tapvs's offload.
const iffVNetHdr = 0x4000

// tunFlags reads a TAP's flags from sysfs as its namespace sees it
// (ip netns exec mounts that namespace's /sys).
func tunFlags(t *testing.T, ns, tap string) uint64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/sys/class/net/"+tap+"/tun_flags").CombinedOutput()
	if err != nil {
		t.Fatalf("tun_flags of %s in %s: %v: %s", tap, ns, err, out)
	}
	f, err := strconv.ParseUint(strings.TrimSpace(string(out)), 0, 64)
	if err != nil {
		t.Fatalf("tun_flags of %s in %s: %q: %v", tap, ns, out, err)
	}
	return f
}

// crossAll sends requests HTTP requests (rr: they alternate between the
// servers), a UDP echo and 16 MiB each way (hash-checked) through the VIP.
func (e *env) crossAll(requests int) {
	t := e.t
	t.Helper()
	e.alternates(requests)
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
}

// Busy polling (one thread reads every queue of both sides): the same
// traffic crosses intact, on TAPs with and without offload and with two
// queues a side; once the traffic stops the poller goes to sleep (seen in
// tapvs_busy_poll_sleeps_total); and stopping tapvs ends the poller (else
// the cleanup's Close would hang).
func TestBusyPoll(t *testing.T) {
	testPoller(t, []topoOpts{{queues: 2, io: "syscalls", busyPoll: 200 * time.Microsecond}, {queues: 1, noOffload: true, io: "syscalls", busyPoll: time.Millisecond}})
}

// Read and write system calls (interfaces.io: syscalls), where the
// default (auto) falls back when io_uring is refused: the same traffic
// crosses intact with and without offload, one and two queues a side, a
// reader per queue and no ring; and by default (auto, io_uring allowed
// here) the ring carries it.
func TestReadWrite(t *testing.T) {
	for _, o := range []topoOpts{{queues: 2, io: "syscalls"}, {queues: 1, noOffload: true, io: "syscalls"}, {queues: 1}} {
		t.Run(fmt.Sprintf("queues=%d,offload=%v,io=%q", o.queues, !o.noOffload, o.io), func(t *testing.T) {
			e := setupWith(t, o, services("rr", 1, 1), "")
			e.crossAll(6)
			// The ring's pollers poll (PollSleeps says so); the readers
			// of io: syscalls without busy_poll neither poll nor ring.
			_, ring := e.d.Stack.RingEnters()
			_, polling := e.d.Stack.PollSleeps()
			if want := o.io == ""; ring != want || polling != want {
				t.Fatalf("io %q: on the ring %v, polling %v; want %v", o.io, ring, polling, want)
			}
		})
	}
}

// The io_uring poller (interfaces.io: uring): the same traffic crosses
// intact with and without offload, two queues a side, sleeping at once
// (busy_poll 0) or after a spin, with one poller or two; idle, it sleeps.
func TestIOUring(t *testing.T) {
	testPoller(t, []topoOpts{{queues: 2, io: "uring"}, {queues: 1, noOffload: true, io: "uring", busyPoll: 200 * time.Microsecond},
		{queues: 2, io: "uring", pollers: 2}})
}

func testPoller(t *testing.T, opts []topoOpts) {
	for _, o := range opts {
		t.Run(fmt.Sprintf("queues=%d,offload=%v,busy_poll=%v,pollers=%d", o.queues, !o.noOffload, o.busyPoll, o.pollers), func(t *testing.T) {
			e := setupWith(t, o, services("rr", 1, 1), "metrics: {listen: \"127.0.0.1:0\"}\n")
			e.crossAll(6)
			var fwd uint64
			for _, ep := range []*netstack.Endpoint{e.d.Stack.Client, e.d.Stack.Server} {
				for i := range ep.Stats() {
					fwd += ep.Stats()[i].Forwarded.Load()
				}
			}
			if _, polling := e.d.Stack.PollSleeps(); !polling || fwd == 0 {
				t.Fatalf("polling %v, %d frames forwarded", polling, fwd)
			}
			// Idle now: the poller sleeps within busy_poll, then again at
			// every epoll timeout (100 ms). Bounded: 50 x 100 ms.
			sleeps := func() float64 { return metric(t, scrape(t, e.d.Metrics.Addr()), `tapvs_busy_poll_sleeps_total`) }
			s0 := sleeps()
			for i := 0; sleeps() == s0; i++ {
				if i == 50 {
					t.Fatalf("the idle poller did not sleep in 5 s (%v sleeps)", s0)
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("forwarded %d frames; the poller slept %v times during the traffic", fwd, s0)
		})
	}
}
