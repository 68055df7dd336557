package netstack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/frag"
	"github.com/tapvs/tapvs/internal/uring"
	"github.com/tapvs/tapvs/internal/uring/uringtest"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/tun/tuntest"
)

// ringTAPQueues creates an offload TAP of queues queues, IPv6 off (no
// chatter to count), up.
func ringTAPQueues(t *testing.T, name string, queues int) ([]tun.Device, int) {
	t.Helper()
	devs, err := tun.OpenTAP(tun.TAPConfig{Name: name, Offload: true, Queues: queues})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	return devs, tuntest.Up(t, name)
}

// ringRig is a stack, not started, over two new TAPs (ringTAPQueues)
// named rc<n> and rs<n>, with the client TAP's name and both TAPs'
// interface indexes.
type ringRig struct {
	st         *Stack
	client     string
	cidx, sidx int
}

// newRingRig makes a ringRig of queues queues a side, the stack logging
// to w (nil: nowhere).
func newRingRig(t *testing.T, queues int, w io.Writer) ringRig {
	t.Helper()
	sfx := rand.Uint32()
	r := ringRig{client: fmt.Sprintf("rc%x", sfx)}
	var cdevs, sdevs []tun.Device
	cdevs, r.cidx = ringTAPQueues(t, r.client, queues)
	sdevs, r.sidx = ringTAPQueues(t, fmt.Sprintf("rs%x", sfx), queues)
	if w == nil {
		w = io.Discard
	}
	var err error
	r.st, err = New(testBalancer(t), NICConfig{Devs: cdevs, MTU: 1500, Address: netip.MustParsePrefix("172.25.254.254/24")},
		NICConfig{Devs: sdevs, MTU: 1500, Address: netip.MustParsePrefix("172.25.84.4/24")}, slog.New(slog.NewTextHandler(w, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ipSocket is an AF_PACKET socket on ifindex for IPv4 frames
// (tuntest.PacketSocket): writing sends a frame out of the interface (into
// its TAP's reader), reading gets what tapvs wrote to the TAP.
func ipSocket(t *testing.T, ifindex int) int { return tuntest.PacketSocket(t, ifindex, unix.ETH_P_IP) }

// TestRingForward runs a Stack over two real TAPs with each I/O path: a
// client SYN and 1000 data segments sent into the client TAP come out of
// the server TAP rewritten toward the real server, in order, counted as
// forwarded, with 0 allocations per frame (the poller's included: every
// goroutine counts).
func TestRingForward(t *testing.T) {
	for _, mode := range []string{"syscalls", "uring"} {
		t.Run(mode, func(t *testing.T) { ringForward(t, mode) })
	}
}

func ringForward(t *testing.T, mode string) {
	tuntest.InNewNetns(t)
	r := newRingRig(t, 1, nil)
	st := r.st
	inject, sink := ipSocket(t, r.cidx), ipSocket(t, r.sidx)
	if err := st.StartIO(IOMode(mode), 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, polling := st.PollSleeps(); polling != (mode == "uring") {
		t.Fatalf("%s: polling %v", mode, polling)
	}

	pass := func(frame []byte, tag byte) { forwardOne(t, inject, sink, frame, tag) }
	pass(tcpFrame(t, client, vip, true, 0), 0)
	data := tcpFrame(t, client, vip, false, 100)
	var tag byte
	round := func() {
		tag++
		data[54] = tag
		// The payload changed: nat updates the checksum incrementally, so
		// it must be right coming in; recount it here, outside tapvs.
		binary.BigEndian.PutUint16(data[14+20+16:], 0)
		binary.BigEndian.PutUint16(data[14+20+16:], tcpChecksum(data[14:]))
		pass(data, tag)
	}
	if a := testing.AllocsPerRun(1000, round); a != 0 {
		t.Errorf("%s: %v allocations per forwarded frame, want 0", mode, a)
	}
	// Counters are the poller's or the reader's: wait on them, bounded.
	within(2*time.Second, func() bool { return st.Client.Stats()[0].Forwarded.Load() >= 1002 })
	if f := st.Client.Stats()[0].Forwarded.Load(); f != 1002 {
		t.Errorf("%s: forwarded %d, want 1002", mode, f)
	}
	// One frame in flight at a time: the poller submits a frame's write
	// and sleeps for the next in one io_uring_enter, so about one enter
	// per frame (a submit and a wait apiece would be two).
	enters, on := st.RingEnters()
	if on != (mode == "uring") || on && (enters < 1000 || enters > 1200) {
		t.Errorf("%s: %d io_uring_enter calls (ring on: %v) for 1002 frames, want about one each", mode, enters, on)
	}
	t.Logf("%s: %d io_uring_enter calls for 1002 frames", mode, enters)
}

// tcpChecksum is the TCP checksum of the IPv4 packet ip (checksum field 0).
func tcpChecksum(ip []byte) uint16 {
	hl := int(ip[0]&0xf) * 4
	seg := ip[hl:int(binary.BigEndian.Uint16(ip[2:]))]
	sum := uint32(0)
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(ip[12:20])
	sum += 6 + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// deleteLink deletes the interface called name, as `ip link del` does.
func deleteLink(t *testing.T, name string) {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(link); err != nil {
		t.Fatal(err)
	}
}

// TestRingDeadTAP deletes the client TAP under a running ring poller: its
// read ends with EBADFD and the stack reports it failed, naming the TAP,
// instead of polling a dead queue.
func TestRingDeadTAP(t *testing.T) {
	tuntest.InNewNetns(t)
	r := newRingRig(t, 1, nil)
	st, name := r.st, r.client
	if err := st.StartIO(IOUring, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	deleteLink(t, name)
	select {
	case <-st.Failed():
	case <-time.After(2 * time.Second):
		t.Fatal("the stack did not fail within 2 s of its client TAP's deletion")
	}
	if err := st.Err(); !errors.Is(err, unix.EBADFD) || !strings.Contains(err.Error(), name) {
		t.Fatalf("failed with %v: want EBADFD naming %s", err, name)
	}
}

// TestRingDetachedTAP: a TAP deleted while no read of its queue is
// waiting to be told (here: paused, as the race in tun.Detached leaves a
// read) is found by the poller's once-a-second look, which fails the
// stack naming the TAP; within the second it looks at nothing.
func TestRingDetachedTAP(t *testing.T) {
	tuntest.InNewNetns(t)
	r := newRingRig(t, 1, nil)
	st, name := r.st, r.client
	if err := st.StartIO(IOUring, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Pause(); err != nil {
		t.Fatal(err)
	}
	// Paused, the poller waits for Resume: its queues are the test's.
	p := st.rings[0]
	now := time.Now()
	p.checkAlive(now)
	select {
	case <-st.Failed():
		t.Fatalf("failed with every TAP there: %v", st.Err())
	default:
	}
	deleteLink(t, name)
	p.aliveEvery(now.Add(time.Second - time.Millisecond)) // not a second yet: no look
	select {
	case <-st.Failed():
		t.Fatal("looked within the second")
	default:
	}
	p.aliveEvery(now.Add(time.Second))
	select {
	case <-st.Failed():
	default:
		t.Fatal("the stack did not fail on a deleted TAP's look")
	}
	if err := st.Err(); !errors.Is(err, unix.EBADFD) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "detached") {
		t.Fatalf("failed with %v: want EBADFD naming %s, detached", err, name)
	}
	if err := st.Resume(); err != nil { // the dead queue is not armed again
		t.Fatal(err)
	}
}

// TestRingCloseInFlight closes stacks while frames pour in: Close must
// stop the poller, cancel its reads and wait for them before the slots
// are unmapped and the TAPs closed (a read into unmapped memory, or into
// memory Go has reused, would crash or corrupt the test).
func TestRingCloseInFlight(t *testing.T) {
	tuntest.InNewNetns(t)
	for i := range 20 {
		r := newRingRig(t, 1, nil)
		st := r.st
		inject := ipSocket(t, r.cidx)
		if err := st.StartIO(IOUring, 0, 0, nil); err != nil {
			t.Fatal(err)
		}
		syn := tcpFrame(t, client, vip, true, 0)
		data := tcpFrame(t, client, vip, false, 1000)
		unix.Write(inject, syn)
		stop, done := make(chan struct{}), make(chan struct{})
		go func() { // frames keep coming through Close; errors once the TAP is gone
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
					unix.Write(inject, data)
				}
			}
		}()
		within(2*time.Second, func() bool { return st.Client.Stats()[0].Received.Load() >= 50 })
		if r := st.Client.Stats()[0].Received.Load(); r < 50 {
			close(stop)
			<-done
			t.Fatalf("round %d: %d frames read in 2 s", i, r)
		}
		st.Close()
		close(stop)
		<-done
	}
}

// within reports whether cond holds within d, checking every 100 µs (a
// counter another thread moves): the caller checks what it waited for.
func within(d time.Duration, cond func() bool) bool {
	return withinEvery(d, 100*time.Microsecond, cond)
}

// withinEvery is within, checking every period.
func withinEvery(d, period time.Duration, cond func() bool) bool {
	tick := time.NewTicker(period)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return cond()
		}
	}
	return true
}

// forwardOne sends frame into the client TAP (inject) and waits for it on
// the server TAP (sink), toward the real server, with the payload's first
// byte tag (data frames).
func forwardOne(t *testing.T, inject, sink int, frame []byte, tag byte) {
	t.Helper()
	var got [2048]byte
	rs := netip.MustParseAddr("10.20.1.2").As4()
	if _, err := unix.Write(inject, frame); err != nil {
		t.Fatalf("inject: %v", err)
	}
	for tries := 0; tries < 10; tries++ {
		n, err := tuntest.Read(sink, got[:])
		if err != nil {
			t.Fatalf("frame %d: nothing out of the server TAP: %v", tag, err)
		}
		if n < 14+20+20 || [4]byte(got[14+16:14+20]) != rs {
			continue // not toward the real server (the stack's own frames)
		}
		// The SYN came in padded to Ethernet's 60 bytes: compare the
		// IPv4 packets' lengths.
		want := 14 + int(binary.BigEndian.Uint16(frame[14+2:]))
		if n != want || (n > 54 && got[54] != tag) {
			t.Fatalf("frame %d out: %d bytes, tag %d; want %d bytes", tag, n, got[54], want)
		}
		return
	}
	t.Fatalf("frame %d: not seen toward the real server", tag)
}

// TestStartIOFallback makes io_uring refuse (as a seccomp profile does)
// and checks each mode: auto says so in one warning naming the hint and
// forwards through readers; uring fails the start with the refusal; a
// failure that is not a refusal fails auto too (no fallback hides it);
// and auto with io_uring allowed runs the ring poller.
func TestStartIOFallback(t *testing.T) {
	refuse := func(uint32, uint32) (*uring.Ring, error) {
		return nil, &uring.RefusedError{Step: "io_uring_setup", Cause: uring.CauseSeccomp, Hint: "a seccomp profile", Err: unix.EPERM}
	}
	broken := func(uint32, uint32) (*uring.Ring, error) {
		return nil, &uring.RefusedError{Step: "io_uring_setup", Cause: uring.CauseOther, Hint: "io_uring setup failed", Err: unix.ENOMEM}
	}
	for _, c := range []struct {
		name    string
		mode    IOMode
		ring    func(uint32, uint32) (*uring.Ring, error)
		err     error // nil: starts
		polling bool
		warns   int
	}{
		{"auto refused", IOAuto, refuse, nil, false, 1},
		{"uring refused", IOUring, refuse, unix.EPERM, false, 0},
		{"auto broken", IOAuto, broken, unix.ENOMEM, false, 0},
		{"auto allowed", IOAuto, uring.New, nil, true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			tuntest.InNewNetns(t)
			newRing = c.ring
			defer func() { newRing = uring.New }()
			var logs strings.Builder
			r := newRingRig(t, 2, &logs)
			st, cidx, sidx := r.st, r.cidx, r.sidx
			t.Cleanup(st.Close)
			err := st.StartIO(c.mode, 0, 4, nil) // as many pollers as queues (2), each refused: one warning
			if warns := strings.Count(logs.String(), "io_uring refused, using read/write system calls"); warns != c.warns ||
				c.warns > 0 && !strings.Contains(logs.String(), `hint="a seccomp profile"`) {
				t.Fatalf("%d fallback warnings, want %d with the hint; log:\n%s", warns, c.warns, logs.String())
			}
			if c.err != nil {
				var re *uring.RefusedError
				if !errors.Is(err, c.err) || !errors.As(err, &re) {
					t.Fatalf("StartIO: %v, want the ring's error (%v)", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("StartIO: %v", err)
			}
			if _, polling := st.PollSleeps(); polling != c.polling || c.polling && len(st.rings) != 2 {
				t.Fatalf("polling %v with %d pollers, want %v (2 pollers when polling)", polling, len(st.rings), c.polling)
			}
			forwardOne(t, ipSocket(t, cidx), ipSocket(t, sidx), tcpFrame(t, client, vip, true, 0), 0)
		})
	}
}

// seccompChildEnv marks the re-executed test binary of TestSeccompFallback.
const seccompChildEnv = "TAPVS_NETSTACK_SECCOMP_CHILD"

// TestSeccompFallback is the sidecar case: a container runtime's seccomp
// profile refuses io_uring (EPERM, as Docker's default does). The test
// re-executes itself under such a filter (it cannot be removed from a
// process); there a Stack started with io: auto over real TAPs says once
// that io_uring is refused, naming seccomp, and forwards through readers,
// and io: uring refuses to start.
func TestSeccompFallback(t *testing.T) {
	if os.Getenv(seccompChildEnv) != "" {
		seccompFallbackChild(t)
		return
	}
	if !uringtest.Supported() {
		uringtest.Missing(t, "no seccomp arch constant for %s in uringtest", runtime.GOARCH)
	}
	if v, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil && strings.TrimSpace(string(v)) != "0" {
		uringtest.Missing(t, "kernel.io_uring_disabled=%s: the sysctl, not seccomp, would refuse", strings.TrimSpace(string(v)))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSeccompFallback$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), seccompChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSeccompFallback") {
		t.Fatalf("the child under seccomp: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

func seccompFallbackChild(t *testing.T) {
	tuntest.InNewNetns(t)
	if err := uringtest.Deny(unix.EPERM, unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_REGISTER); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var cidx, sidx int
	for _, mode := range []IOMode{IOUring, IOAuto} {
		r := newRingRig(t, 1, &logs)
		st := r.st
		cidx, sidx = r.cidx, r.sidx
		t.Cleanup(st.Close)
		err := st.StartIO(mode, 0, 0, nil)
		if mode == IOUring {
			if !errors.Is(err, unix.EPERM) || !uring.Refused(err) {
				t.Fatalf("io: uring under seccomp: %v, want the refusal", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("io: auto under seccomp: %v", err)
		}
		if _, polling := st.PollSleeps(); polling {
			t.Fatal("io: auto under seccomp runs a poller")
		}
	}
	const want = `msg="TAP I/O: io_uring refused, using read/write system calls"`
	if n := strings.Count(logs.String(), want); n != 1 || !strings.Contains(logs.String(), `hint="a seccomp profile`) {
		t.Fatalf("%d fallback warnings naming seccomp, want 1; log:\n%s", n, logs.String())
	}
	forwardOne(t, ipSocket(t, cidx), ipSocket(t, sidx), tcpFrame(t, client, vip, true, 0), 0)
	t.Logf("under seccomp: %s", strings.TrimSpace(logs.String()))
}

// TestRingPauseResume pauses the ring poller as a takeover does: once
// Pause returns nothing is read, frames sent meanwhile wait in the TAP,
// and after Resume each of them comes out exactly once, in order.
func TestRingPauseResume(t *testing.T) {
	tuntest.InNewNetns(t)
	r := newRingRig(t, 1, nil)
	st := r.st
	inject, sink := ipSocket(t, r.cidx), ipSocket(t, r.sidx)
	if err := st.StartIO(IOUring, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	forwardOne(t, inject, sink, tcpFrame(t, client, vip, true, 0), 0)
	rx := &st.Client.Stats()[0].Received
	for round := range 3 {
		if err := st.Pause(); err != nil {
			t.Fatalf("round %d: Pause: %v", round, err)
		}
		before := rx.Load()
		data := tcpFrame(t, client, vip, false, 100)
		for tag := 1; tag <= 100; tag++ {
			data[54] = byte(tag)
			binary.BigEndian.PutUint16(data[14+20+16:], 0)
			binary.BigEndian.PutUint16(data[14+20+16:], tcpChecksum(data[14:]))
			if _, err := unix.Write(inject, data); err != nil {
				t.Fatal(err)
			}
		}
		if n := rx.Load() - before; n != 0 {
			t.Fatalf("round %d: %d frames read while paused", round, n)
		}
		if err := st.Resume(); err != nil {
			t.Fatalf("round %d: Resume: %v", round, err)
		}
		var got [2048]byte
		rs := netip.MustParseAddr("10.20.1.2").As4()
		for want := 1; want <= 100; {
			n, err := tuntest.Read(sink, got[:])
			if err != nil {
				t.Fatalf("round %d: frame %d never came out: %v", round, want, err)
			}
			if n < 55 || [4]byte(got[14+16:14+20]) != rs {
				continue
			}
			if int(got[54]) != want {
				t.Fatalf("round %d: frame %d came out where %d was due", round, got[54], want)
			}
			want++
		}
		if n := rx.Load() - before; n != 100 {
			t.Fatalf("round %d: %d frames read after resuming, want 100 (each once)", round, n)
		}
	}
}

// TestAutoPollers pins interfaces.pollers: 0: half the CPUs rounded up,
// no more than the larger side's queue count, at least one.
func TestAutoPollers(t *testing.T) {
	for _, c := range []struct{ cpus, client, server, want int }{
		{1, 1, 1, 1}, {2, 1, 1, 1}, {2, 4, 4, 1}, {3, 4, 4, 2}, {8, 4, 4, 4},
		{8, 1, 1, 1}, {8, 2, 4, 4}, {16, 8, 2, 8}, {64, 64, 64, 32},
	} {
		if got := autoPollers(c.cpus, c.client, c.server); got != c.want {
			t.Errorf("%d CPUs, %d+%d queues: %d pollers, want %d", c.cpus, c.client, c.server, got, c.want)
		}
	}
}

// TestPollPlan pins which poller reads each queue index: without groups,
// index i goes to poller i mod n (n: pollers, or autoPollers for 0, no
// more than the larger side's queues); with groups (interfaces.poll_groups)
// to the group that lists it, and groups that leave an index out, list one
// twice or one past the queues are refused.
func TestPollPlan(t *testing.T) {
	for _, c := range []struct {
		pollers, cpus, cq, sq int
		groups                [][]int
		n                     int
		owner                 []int
		err                   string
	}{
		{0, 2, 1, 1, nil, 1, []int{0}, ""},
		{0, 8, 4, 2, nil, 4, []int{0, 1, 2, 3}, ""},
		{2, 2, 4, 4, nil, 2, []int{0, 1, 0, 1}, ""},
		{8, 2, 2, 3, nil, 3, []int{0, 1, 2}, ""},
		{0, 2, 4, 4, [][]int{{0, 3}, {2, 1}}, 2, []int{0, 1, 1, 0}, ""},
		{5, 2, 3, 1, [][]int{{2}, {0}, {1}}, 3, []int{1, 2, 0}, ""},
		{0, 2, 3, 3, [][]int{{0, 1}}, 0, nil, "queue 2 is in no poll group"},
		{0, 2, 3, 3, [][]int{{0, 1}, {1, 2}}, 0, nil, "poll group 1: queue 1"},
		{0, 2, 3, 3, [][]int{{0, 1, 2, 3}}, 0, nil, "poll group 0: queue 3"},
		{0, 2, 3, 3, [][]int{{0, 1, 2}, {}}, 0, nil, "poll group 1 is empty"},
	} {
		n, owner, err := pollPlan(c.pollers, c.groups, c.cpus, c.cq, c.sq)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: error %v, want %q", c, err, c.err)
			}
			continue
		}
		if err != nil || n != c.n || !slices.Equal(owner, c.owner) {
			t.Errorf("%+v: %d pollers, owners %v, %v", c, n, owner, err)
		}
	}
}

// TestRingPollers runs two pollers over 2+2 queues: poller k reads client
// queue k and server queue k (the one client queue k forwards to), every
// queue is read by exactly one, and frames still cross; pausing pauses both.
func TestRingPollers(t *testing.T) {
	tuntest.InNewNetns(t)
	r := newRingRig(t, 2, nil)
	st, cidx, sidx := r.st, r.cidx, r.sidx
	if err := st.StartIO(IOUring, 0, 2, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if len(st.rings) != 2 {
		t.Fatalf("%d pollers, want 2", len(st.rings))
	}
	seen := map[tun.Device]int{}
	for k, p := range st.rings {
		if len(p.qs) != 2 || p.qs[0].queue.dev != st.Client.devs[k] || p.qs[1].queue.dev != st.Server.devs[k] || p.qs[0].out != st.Server.devs[k] {
			t.Fatalf("poller %d reads %d queues, not client %d and server %d", k, len(p.qs), k, k)
		}
		for _, q := range p.qs {
			seen[q.queue.dev]++
			if q.fd <= 0 || q.outFd <= 0 {
				t.Fatalf("poller %d: queue %s has fd %d, out fd %d", k, q.dev.Name(), q.fd, q.outFd)
			}
		}
	}
	if len(seen) != 4 {
		t.Fatalf("%d queues read, want 4 each once", len(seen))
	}
	inject, sink := ipSocket(t, cidx), ipSocket(t, sidx)
	forwardOne(t, inject, sink, tcpFrame(t, client, vip, true, 0), 0)
	if err := st.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := st.Resume(); err != nil {
		t.Fatal(err)
	}
	data := tcpFrame(t, client, vip, false, 100)
	for tag := byte(1); tag <= 50; tag++ {
		data[54] = tag
		binary.BigEndian.PutUint16(data[14+20+16:], 0)
		binary.BigEndian.PutUint16(data[14+20+16:], tcpChecksum(data[14:]))
		forwardOne(t, inject, sink, data, tag)
	}
	if enters, on := st.RingEnters(); !on || enters == 0 {
		t.Fatalf("RingEnters %d, %v: not summed over the pollers", enters, on)
	}
}

// TestRingIdle checks sparse traffic does not keep a core spinning: after
// a frame, a poller with busy_poll 200us spins that long, then sleeps in
// io_uring_enter; over the next second the whole test process uses a
// small fraction of a core, and the poller's sleeps are counted.
func TestRingIdle(t *testing.T) {
	tuntest.InNewNetns(t)
	r := newRingRig(t, 2, nil)
	st, cidx, sidx := r.st, r.cidx, r.sidx
	if err := st.StartIO(IOUring, 200*time.Microsecond, 2, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	forwardOne(t, ipSocket(t, cidx), ipSocket(t, sidx), tcpFrame(t, client, vip, true, 0), 0)
	cpu := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// The window: until the idle pollers have woken from their capped
	// sleep (pollWait, 100 ms) and slept again 20 times, about a second
	// for two; checked every 50 ms, so the waiting costs little of the
	// CPU it measures. A poller that spun would not sleep at all.
	s0, _ := st.PollSleeps()
	c0, w0 := cpu(), time.Now()
	withinEvery(5*time.Second, 50*time.Millisecond, func() bool { s, _ := st.PollSleeps(); return s-s0 >= 20 })
	used, wall := cpu()-c0, time.Since(w0)
	s1, _ := st.PollSleeps()
	t.Logf("idle: %v of CPU in %v, %d sleeps", used, wall.Round(time.Millisecond), s1-s0)
	// Two spinning pollers would use two cores' worth: 2 s in 1 s.
	if used > wall/10 {
		t.Errorf("%v of CPU in %v idle: a poller spins", used, wall)
	}
	if s1-s0 < 20 {
		t.Errorf("the idle pollers slept %d times in %v, want 20 (woken every %d ms)", s1-s0, wall, pollWait)
	}
}

// A read the balancer must not see is one that filled its slot's whole
// buffer (the kernel cut the frame short) or is shorter than the
// virtio-net header; every other length is the frame's, the header off.
func TestRingFrameLen(t *testing.T) {
	for _, h := range []int{0, tun.VNetHdrLen} {
		whole := ringSlot - (Headroom - h) // the read's buffer
		for _, c := range []struct {
			res  int
			n    int
			seen bool
		}{
			{h, 0, true}, {h + 60, 60, true}, {whole - 1, whole - 1 - h, true},
			{whole, 0, false}, {whole + 1, 0, false}, {h - 1, 0, false},
		} {
			if c.res < 0 { // no header: nothing is shorter
				continue
			}
			n, ok := ringFrameLen(c.res, h)
			if ok != c.seen || (ok && n != c.n) {
				t.Errorf("header %d, read of %d: (%d, %v), want (%d, %v)", h, c.res, n, ok, c.n, c.seen)
			}
		}
	}
}

// The adaptive spin (busy_poll 0): none until the gaps between frames are
// short, then twice the recent gap, never more than adaptMax; a run of
// long gaps (sparse traffic) turns it off again.
func TestAdaptiveSpin(t *testing.T) {
	p := &ringPoller{gap: time.Second}
	if b := p.budget(); b != 0 {
		t.Fatalf("before any frame: spin %v, want 0", b)
	}
	for range 60 { // from the first second's gap: about 30 frames to learn
		p.sample(20 * time.Microsecond)
	}
	if b := p.budget(); b < 38*time.Microsecond || b > 42*time.Microsecond {
		t.Errorf("gaps of 20µs: spin %v, want about 40µs (twice the gap)", b)
	}
	for range 20 {
		p.sample(adaptMax * 3 / 4)
	}
	if b := p.budget(); b != adaptMax {
		t.Errorf("gaps of %v: spin %v, want the cap %v", adaptMax*3/4, b, adaptMax)
	}
	p.batch = 2 * 16 // two frames a pass: a busy machine
	if b := p.budget(); b != 0 {
		t.Errorf("passes of 2 frames: spin %v, want 0 (the CPU is the clients' and servers')", b)
	}
	p.batch = 16
	p.sample(time.Millisecond) // one long gap: sparse traffic
	if b := p.budget(); b != 0 {
		t.Errorf("after a 1ms gap: spin %v, want 0", b)
	}
	// One short gap among long ones does not start a spin.
	for range 20 {
		p.sample(5 * time.Millisecond)
	}
	p.sample(10 * time.Microsecond)
	if b := p.budget(); b != 0 {
		t.Errorf("one short gap among 5ms ones: spin %v, want 0", b)
	}
}

// TestRingFragments: datagrams that come in fragments leave cut again
// from pooled buffers (nat.Frame.Frags); on the ring their writes complete
// after the pass that queued them, so the buffers are held until each
// write's CQE (nat.Fragments.Hold): 30 segments of 3000 bytes, each cut in
// 3 and sent back to back, all arrive at the server TAP whole, each with
// its own bytes, with each I/O path.
func TestRingFragments(t *testing.T) {
	for _, mode := range []string{"syscalls", "uring"} {
		t.Run(mode, func(t *testing.T) { ringFragments(t, mode) })
	}
}

func ringFragments(t *testing.T, mode string) {
	tuntest.InNewNetns(t)
	r := newRingRig(t, 1, nil)
	st := r.st
	inject, sink := ipSocket(t, r.cidx), ipSocket(t, r.sidx)
	if err := st.StartIO(IOMode(mode), 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	forwardOne(t, inject, sink, tcpFrame(t, client, vip, true, 0), 0)
	const n = 30
	for k := range n {
		seg := tcpFrame(t, client, vip, false, 3000)
		tag := byte(k + 1)
		for i := 54; i < len(seg); i++ {
			seg[i] = tag
		}
		binary.BigEndian.PutUint32(seg[14+20+4:], uint32(1+3000*k)) // its own sequence number
		binary.BigEndian.PutUint16(seg[14+20+16:], 0)
		binary.BigEndian.PutUint16(seg[14+20+16:], tcpChecksum(seg[14:]))
		s, ok := frag.NewSplitter(seg[14:], 1500, uint32(k+1))
		if !ok {
			t.Fatal("cannot cut")
		}
		for range 3 {
			f := make([]byte, 1514)
			copy(f, seg[:14])
			m := s.Next(f[14:])
			if _, err := unix.Write(inject, f[:14+m]); err != nil {
				t.Fatal(err)
			}
		}
	}
	re := frag.New(frag.Config{})
	rs := netip.MustParseAddr("10.20.1.2").As4()
	seen := map[byte]bool{}
	var buf [2048]byte
	out := make([]byte, 70000)
	for range 20 * n {
		if len(seen) == n {
			break
		}
		m, err := tuntest.Read(sink, buf[:])
		if err != nil {
			break
		}
		if m < 14+20 || [4]byte(buf[14+16:14+20]) != rs {
			continue
		}
		ip := buf[14:m]
		res, info, _ := re.Add(ip, out, 0)
		if res != frag.Done {
			continue
		}
		d := out[:info.Len]
		payload := d[20+20:]
		tag := payload[0]
		for i, b := range payload {
			if b != tag {
				t.Fatalf("%s: datagram %d: byte %d is %d: another datagram's", mode, tag, i, b)
			}
		}
		if len(payload) != 3000 || seen[tag] {
			t.Fatalf("%s: datagram %d: %d bytes, seen before %v", mode, tag, len(payload), seen[tag])
		}
		seen[tag] = true
	}
	if len(seen) != n {
		t.Fatalf("%s: %d of %d datagrams came out whole; drops %v", mode, len(seen), n, st.bal.Stats.Drops())
	}
}
