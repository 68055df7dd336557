package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

var (
	bulkVIP = netip.AddrPortFrom(lab.VIP, lab.BulkPort)
	echoVIP = netip.AddrPortFrom(lab.VIP, lab.EchoPort)
	svcWeb  = nat.FaultTarget{Protocol: nat.TCP, VIP: web}
	svcBulk = nat.FaultTarget{Protocol: nat.TCP, VIP: bulkVIP}
	svcEcho = nat.FaultTarget{Protocol: nat.UDP, VIP: echoVIP}
)

func (e *env) setFault(f nat.Fault) {
	e.t.Helper()
	if err := e.d.Balancer.SetFault(f); err != nil {
		e.t.Fatal(err)
	}
}

// faultOn is the fault in force on target, with its counters.
func (e *env) faultOn(target nat.FaultTarget) nat.FaultStats {
	e.t.Helper()
	for _, f := range e.d.Balancer.Faults() {
		if f.Target == target {
			return f
		}
	}
	e.t.Fatalf("no fault on %s", target)
	return nat.FaultStats{}
}

// noFaultsAfter clears every fault when t ends, passed or not, so a
// failed subtest leaves none to the next.
func (e *env) noFaultsAfter(t *testing.T) {
	t.Cleanup(func() { e.d.Balancer.SetFaults(nil) })
}

func (e *env) clearFault(t nat.FaultTarget) {
	e.t.Helper()
	if !e.d.Balancer.ClearFault(t) {
		e.t.Fatalf("no fault on %s to clear", t)
	}
}

// connectTimes dials the web service n times and returns how long each
// connect took (SYN to SYN-ACK and the ACK sent), sorted.
func (e *env) connectTimes(n int) []time.Duration {
	e.t.Helper()
	var out []time.Duration
	for range n {
		start := time.Now()
		c, err := e.dial("tcp4", web, 5*time.Second)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, time.Since(start))
		c.Close()
	}
	slices.Sort(out)
	return out
}

// The delay family on real traffic: latency added to connects within
// ±10%, jitter within its bounds, a rate cap on a download within ±10%,
// every datagram duplicated as often as the probability says (within the
// binomial bound) and reordered likewise; each cleared, the figures come
// back.
func TestNetworkDelayFaults(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")

	t.Run("latency", func(t *testing.T) {
		e.noFaultsAfter(t)
		base := e.connectTimes(21)[10]
		const lat = 40 * time.Millisecond
		// Set as an operator would, and listed with what it delayed.
		e.must("--fault", "-t", web.String(), "--with", "direction=to_client,latency=40ms")
		got := e.connectTimes(21)
		if out := e.must("-ln"); !regexp.MustCompile(`--fault -t ` + regexp.QuoteMeta(web.String()) + ` --with direction=to_client,latency=40ms  runtime  delayed \d+  seen \d+ dropped 0 refused 0`).MatchString(out) {
			t.Fatalf("-ln with a latency fault:\n%s", out)
		}
		added := got[10] - base
		t.Logf("connect: %v without, median %v with %v of latency (min %v max %v): %v added", base, got[10], lat, got[0], got[20], added)
		if added < lat*9/10 || added > lat*11/10 {
			t.Fatalf("latency %v added %v to the connect's median: outside ±10%%", lat, added)
		}
		e.setFault(nat.Fault{Target: svcWeb, Dir: nat.FaultToClient, Latency: lat, Jitter: 20 * time.Millisecond})
		got = e.connectTimes(41)
		t.Logf("with ±20ms of jitter: min %v median %v max %v", got[0], got[20], got[40])
		// Not below latency - jitter; above latency + jitter by the round
		// trip and the scheduling of a busy machine at most.
		if got[0] < 20*time.Millisecond || got[40] > 65*time.Millisecond+10*base || got[40]-got[0] < 10*time.Millisecond {
			t.Fatalf("jitter ±20ms around 40ms: connects from %v to %v", got[0], got[40])
		}
		e.clearFault(svcWeb)
		if again := e.connectTimes(21)[10]; again > base+lat/4 {
			t.Fatalf("cleared: median connect %v, %v before", again, base)
		}
	})

	t.Run("rate", func(t *testing.T) {
		e.noFaultsAfter(t)
		const rate = 1_000_000 // bytes a second
		const n = 1_500_000
		free, err := lab.Download(e.ctx(30*time.Second), e.top.Client, bulkVIP, n)
		if err != nil {
			t.Fatal(err)
		}
		e.setFault(nat.Fault{Target: svcBulk, Dir: nat.FaultToClient, Rate: rate})
		took, err := lab.Download(e.ctx(30*time.Second), e.top.Client, bulkVIP, n)
		if err != nil {
			t.Fatal(err)
		}
		got := float64(n) / took.Seconds()
		t.Logf("download of %d bytes: %v free, %v (%.0f bytes/s) under a cap of %d bytes/s", n, free, took, got, rate)
		if got < 0.9*rate || got > 1.1*rate {
			t.Fatalf("%.0f bytes/s under a cap of %d: outside ±10%%", got, rate)
		}
		e.clearFault(svcBulk)
		if again, err := lab.Download(e.ctx(30*time.Second), e.top.Client, bulkVIP, n); err != nil || again > took/3 {
			t.Fatalf("cleared: %v (%v; capped %v)", again, err, took)
		}
	})

	t.Run("duplicate", func(t *testing.T) {
		e.noFaultsAfter(t)
		const n, p = 2000, 0.3
		e.setFault(nat.Fault{Target: svcEcho, Dir: nat.FaultToServer, Duplicate: p})
		answers := len(e.echoPaced(n))
		fs := []nat.FaultStats{e.faultOn(svcEcho)}
		copies := float64(fs[0].Delayed) - n
		sd := math.Sqrt(n * p * (1 - p))
		t.Logf("duplicate %.1f: %d datagrams sent, %.0f copies made (expected %.0f ± %.0f), %d answers", p, n, copies, n*p, sd, answers)
		if fs[0].Frames != n || math.Abs(copies-n*p) > 4*sd {
			t.Fatalf("%.0f copies of %d datagrams (%d seen) at p = %.1f: outside %.0f ± 4×%.0f", copies, n, fs[0].Frames, p, n*p, sd)
		}
		// Each copy reached a server and was answered (a socket's queue
		// may drop a few in a burst).
		if want := int(fs[0].Delayed); answers > want || answers < want-n/200 {
			t.Fatalf("%d answers to %d datagrams and their %.0f copies", answers, n, copies)
		}
		e.clearFault(svcEcho)
		if got := len(e.echoPaced(200)); got != 200 {
			t.Fatalf("cleared: %d answers to 200", got)
		}
	})

	t.Run("reorder", func(t *testing.T) {
		e.noFaultsAfter(t)
		const n, p = 2000, 0.2
		e.setFault(nat.Fault{Target: svcEcho, Dir: nat.FaultToClient, Reorder: p})
		seqs := e.echoPaced(n)
		inv := 0
		for i := 1; i < len(seqs); i++ {
			if seqs[i] < seqs[i-1] {
				inv++
			}
		}
		// A frame is held with probability p unless the frame ahead of it
		// is held: p/(1+p) of them on average; each is passed by the next
		// one, but the last of each 20, which leaves alone after
		// ReorderHold.
		q := p / (1 + p)
		m := float64(n - n/20)
		sd := math.Sqrt(m * q * (1 - q))
		t.Logf("reorder %.1f: %d inversions in %d answers (expected %.0f ± %.0f)", p, inv, len(seqs), m*q, sd)
		if len(seqs) != n || math.Abs(float64(inv)-m*q) > 4*sd {
			t.Fatalf("%d inversions in %d answers: outside %.0f ± 4×%.0f", inv, len(seqs), m*q, sd)
		}
		e.clearFault(svcEcho)
	})
}

// echoPaced sends n numbered datagrams to the echo service, 20 at a
// time, reading the answers after each 20 until 50ms pass without one,
// and returns the numbers answered, in the order they came.
func (e *env) echoPaced(n int) []int {
	e.t.Helper()
	c, err := e.dial("udp4", echoVIP, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	var seqs []int
	buf := make([]byte, 128)
	for i := range n {
		if _, err := fmt.Fprintf(c, "%d", i); err != nil {
			e.t.Fatal(err)
		}
		if i%20 != 19 && i != n-1 {
			continue
		}
		for {
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			m, err := c.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				e.t.Fatal(err)
			}
			// "rs1 saw 172.25.84.11:33775: 17"
			a := string(buf[:m])
			v, err := strconv.Atoi(a[strings.LastIndexByte(a, ' ')+1:])
			if err != nil {
				e.t.Fatalf("answer %q", a)
			}
			seqs = append(seqs, v)
		}
	}
	return seqs
}

// readAll reads c until an error, and returns the bytes read and it.
func readAll(c net.Conn) (int64, error) {
	var n int64
	buf := make([]byte, 64<<10)
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
}

// askDownload opens a bulk connection and asks for n bytes.
func (e *env) askDownload(n int64, d time.Duration) net.Conn {
	e.t.Helper()
	c, err := e.dial("tcp4", bulkVIP, d)
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(d))
	var hdr [9]byte
	hdr[0] = 'D'
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// The reset family and the half-close on real connections: a download
// reset after exactly N bytes, an idle connection reset N seconds after
// it opened, and a server's FIN that never arrives until the fault is
// cleared.
func TestNetworkResetFaults(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")

	t.Run("bytes", func(t *testing.T) {
		e.noFaultsAfter(t)
		const limit = 100_000
		e.setFault(nat.Fault{Target: svcBulk, Dir: nat.FaultToClient, ResetBytes: limit})
		for i := range 3 {
			c := e.askDownload(1_000_000, 10*time.Second)
			got, err := readAll(c)
			c.Close()
			if got != limit || !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("download %d: %d bytes, then %v; want exactly %d, then a reset", i, got, err, limit)
			}
		}
		if f := e.faultOn(svcBulk); f.Reset != 3 {
			t.Fatalf("resets counted: %d", f.Reset)
		}
		e.clearFault(svcBulk)
		if _, err := lab.Download(e.ctx(10*time.Second), e.top.Client, bulkVIP, 1_000_000); err != nil {
			t.Fatalf("cleared: %v", err)
		}
	})

	t.Run("after", func(t *testing.T) {
		e.noFaultsAfter(t)
		const after = 300 * time.Millisecond
		e.setFault(nat.Fault{Target: svcBulk, Dir: nat.FaultBoth, ResetAfter: after})
		start := time.Now()
		c, err := e.dial("tcp4", bulkVIP, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1)) // idle: the server waits for the request
		took := time.Since(start)
		if !errors.Is(err, syscall.ECONNRESET) || took < after || took > after+time.Second {
			t.Fatalf("an idle connection: %v after %v, want a reset after %v", err, took, after)
		}
		e.clearFault(svcBulk)
	})

	t.Run("fin", func(t *testing.T) {
		e.noFaultsAfter(t)
		e.setFault(nat.Fault{Target: svcBulk, Dir: nat.FaultToClient, DropFIN: true})
		c := e.askDownload(1000, 30*time.Second)
		defer c.Close()
		buf := make([]byte, 1000)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		// The server has closed; its FIN does not arrive.
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("after the data, with the server's FIN dropped: %v, want nothing", err)
		}
		if f := e.faultOn(svcBulk); f.Dropped == 0 {
			t.Fatal("no FIN counted dropped")
		}
		// Cleared, the server's next retransmission of its FIN ends it.
		e.clearFault(svcBulk)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Read(buf); err != io.EOF {
			t.Fatalf("cleared: %v, want the end of the stream", err)
		}
	})
}
