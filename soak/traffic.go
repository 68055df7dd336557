package soak

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// The traffic's shape. Every worker is paced, so the soak loads tapvs
// steadily without taking a shared machine's every core, and the number of
// workers is fixed, so everything it has open at once is bounded.
const (
	httpWorkers = 3                     // per HTTP VIP (plain and SYNPROXY)
	httpEvery   = 20 * time.Millisecond // per worker: at most 50 requests/s
	udpEvery    = 50 * time.Millisecond // one UDP echo worker: 20 datagrams/s
	bulkWorkers = 2                     // long connections, one each at a time
	bulkBytes   = 8 << 20               // per long connection, one way
	bulkRate    = 2 << 20               // bytes/s: a long connection lasts about 4s
	bulkChunk   = 64 << 10
	reqTimeout  = 5 * time.Second
)

// Kinds of traffic, as the report names them.
const (
	kindHTTP     = "http"
	kindSynproxy = "http-synproxy"
	kindUp       = "bulk-upload"
	kindDown     = "bulk-download"
	kindUDP      = "udp-echo"
)

var kinds = []string{kindHTTP, kindSynproxy, kindUp, kindDown, kindUDP}

// traffic runs every worker for d; with faults, the faults too. It returns
// once every worker has finished what it had started (bounded by the
// workers' own timeouts).
func (s *soak) traffic(ctx context.Context, d time.Duration, faults bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	run := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	for range httpWorkers {
		run(func() { s.httpWorker(ctx, kindHTTP, lab.HTTPPort) })
		run(func() { s.httpWorker(ctx, kindSynproxy, lab.SynproxyPort) })
	}
	for i := range bulkWorkers {
		run(func() { s.bulkWorker(ctx, i) })
	}
	run(func() { s.udpWorker(ctx) })
	var ferr error
	if faults {
		run(func() { ferr = s.faults(ctx, d) })
	}
	lctx, lcancel := context.WithCancel(context.Background())
	s.loss = &lossMonitor{}
	lossDone := make(chan struct{})
	go func() { defer close(lossDone); s.watchLoss(lctx, s.loss) }()
	wg.Wait()
	lcancel() // the monitor samples once more: after the last datagram's timeout
	<-lossDone
	for _, p := range s.tally.takePending() {
		if cause, ok := s.loss.explain(p.from, p.to); ok {
			s.tally.explained(kindUDP, causeLoss)
			s.o.Log.Debug("soak: udp timeout explained", "cause", cause)
		} else {
			s.tally.unexplained(kindUDP, p.err)
		}
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err // interrupted
	}
	return ferr
}

// paced calls f every interval until ctx ends; f's own work is not cut
// short by ctx, so nothing in flight is counted as an error when the phase
// ends.
func paced(ctx context.Context, every time.Duration, f func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// httpWorker sends short HTTP requests (a connection each) to the VIP's
// port and checks the answer: a real server that saw a LIP as the source.
func (s *soak) httpWorker(ctx context.Context, kind string, port uint16) {
	hc := lab.HTTPClient(s.top.Client, reqTimeout)
	url := "http://" + netip.AddrPortFrom(lab.VIP, port).String() + "/"
	paced(ctx, httpEvery, func() {
		t0 := time.Now()
		resp, err := hc.Get(url)
		if err != nil {
			s.fail(kind, t0, err)
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			s.fail(kind, t0, fmt.Errorf("reading the answer: %w", err))
			return
		}
		if err := checkHTTP(body); err != nil {
			s.fail(kind, t0, err)
			return
		}
		s.tally.ok(kind, int64(len(body)))
	})
}

// checkHTTP checks a backend's answer: "<rs> <addr> saw <LIP:port>".
func checkHTTP(body []byte) error {
	f := strings.Fields(string(body))
	if len(f) != 4 || f[2] != "saw" {
		return fmt.Errorf("%w: not a backend's answer: %q", errCorrupt, body)
	}
	saw, err := netip.ParseAddrPort(f[3])
	if err != nil || (saw.Addr() != lab.LIP1 && saw.Addr() != lab.LIP2) {
		return fmt.Errorf("%w: the real server saw %q, not a LIP", errCorrupt, f[3])
	}
	return nil
}

// errCorrupt marks an answer that arrived but is wrong: never explained by
// a fault.
var errCorrupt = errors.New("wrong data")

// udpWorker sends one datagram at a time from a new socket (a new
// connection in tapvs each) and checks the echo: the message back, from a
// real server that saw echo's LIP.
func (s *soak) udpWorker(ctx context.Context) {
	echo := netip.AddrPortFrom(lab.VIP, lab.EchoPort)
	paced(ctx, udpEvery, func() {
		t0 := time.Now()
		var b [8]byte
		rand.Read(b[:])
		msg := hex.EncodeToString(b[:])
		reply, err := lab.UDPEcho(context.Background(), s.top.Client, echo, msg)
		if errors.Is(err, os.ErrDeadlineExceeded) && !s.duringRestart(t0, time.Now()) {
			// Lost, perhaps where the kernel counted it: decided once
			// the loss monitor has sampled past this moment.
			s.tally.pend(pending{t0, time.Now(), err})
			return
		}
		if err != nil {
			s.fail(kindUDP, t0, err)
			return
		}
		// "<rs> saw <LIP:port>: <msg>"
		f := strings.Fields(reply)
		if len(f) != 4 || f[1] != "saw" || f[3] != msg || !strings.HasPrefix(f[2], lab.LIP2.String()+":") {
			s.fail(kindUDP, t0, fmt.Errorf("%w: echo %q for %q", errCorrupt, reply, msg))
			return
		}
		s.tally.ok(kindUDP, int64(len(msg)))
	})
}

// bulkWorker keeps one long connection open at a time, each moving
// bulkBytes one way at bulkRate, uploads and downloads in turn, each checked
// with SHA-256 (the lab's bulk protocol).
func (s *soak) bulkWorker(ctx context.Context, i int) {
	for n := i; ctx.Err() == nil; n++ {
		kind, op := kindUp, byte('U')
		if n%2 == 1 {
			kind, op = kindDown, 'D'
		}
		t0 := time.Now()
		if err := longConn(s.top.Client, op); err != nil {
			s.fail(kind, t0, err)
			// A refused connection comes back at once: do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		s.tally.ok(kind, bulkBytes)
	}
}

// streamHash is the SHA-256 of lab.Stream(bulkBytes): what a download must
// hash to, and what the server must answer to an upload.
var streamHash = sync.OnceValue(func() []byte {
	h := sha256.New()
	io.CopyN(h, lab.Stream(bulkBytes), bulkBytes)
	return h.Sum(nil)
})

// longConn moves bulkBytes through the bulk VIP, paced, and checks them.
func longConn(ns string, op byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), bulkBytes/bulkRate*time.Second+30*time.Second)
	defer cancel()
	c, err := lab.Dial(ctx, ns, "tcp4", netip.AddrPortFrom(lab.VIP, lab.BulkPort).String())
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	var hdr [9]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:], bulkBytes)
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	buf := make([]byte, bulkChunk)
	tick := time.NewTicker(bulkChunk * time.Second / bulkRate)
	defer tick.Stop()
	h := sha256.New()
	if op == 'U' {
		src := lab.Stream(bulkBytes)
		for left := bulkBytes; left > 0; left -= bulkChunk {
			<-tick.C
			io.ReadFull(src, buf)
			if _, err := c.Write(buf); err != nil {
				return fmt.Errorf("upload at byte %d: %w", bulkBytes-left, err)
			}
		}
		got := make([]byte, sha256.Size)
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("upload: the server's hash: %w", err)
		}
		if string(got) != string(streamHash()) {
			return fmt.Errorf("%w: upload: the server's hash of the data differs", errCorrupt)
		}
		return nil
	}
	for got := 0; got < bulkBytes; {
		<-tick.C
		n, err := io.ReadFull(c, buf)
		h.Write(buf[:n])
		got += n
		if err != nil {
			return fmt.Errorf("download at byte %d: %w", got, err)
		}
	}
	if string(h.Sum(nil)) != string(streamHash()) {
		return fmt.Errorf("%w: download: the data differs from what the server sent", errCorrupt)
	}
	return nil
}

// fail files a client error under its cause: a real-server restart whose
// window it overlaps, or unexplained.
func (s *soak) fail(kind string, t0 time.Time, err error) {
	if !errors.Is(err, errCorrupt) && s.duringRestart(t0, time.Now()) {
		s.tally.explained(kind, causeRestart)
		return
	}
	s.tally.unexplained(kind, err)
}

// A request is cut or refused by a restart if it was in flight while the
// server was down, or started within restartGrace of its coming back (a
// SYN the server refused while down, retried by the synproxy).
const restartGrace = 2 * time.Second

const (
	causeRestart = "real-server restart"
	causeLoss    = "lost where the kernel counted it"
)

func (s *soak) duringRestart(from, to time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.restarts {
		if to.After(w.from) && (w.to.IsZero() || from.Before(w.to.Add(restartGrace))) {
			return true
		}
	}
	return false
}

// tally counts what each kind of traffic did.
type tally struct {
	mu         sync.Mutex
	requests   map[string]int64
	bytes      map[string]int64
	explainedN map[string]map[string]int64 // kind -> cause -> count
	samples    map[string][]string         // kind -> errors (first few kept)
	unexplN    map[string]int64
	pending    []pending
}

// pending is a UDP timeout waiting for the loss monitor's word.
type pending struct {
	from, to time.Time
	err      error
}

func (t *tally) pend(p pending) {
	t.mu.Lock()
	t.pending = append(t.pending, p)
	t.mu.Unlock()
}

func (t *tally) takePending() []pending {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending
	t.pending = nil
	return p
}

func newTally() *tally { t := &tally{}; t.reset(); return t }

func (t *tally) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.requests, t.bytes = map[string]int64{}, map[string]int64{}
	t.explainedN, t.samples, t.unexplN = map[string]map[string]int64{}, map[string][]string{}, map[string]int64{}
}

func (t *tally) ok(kind string, n int64) {
	t.mu.Lock()
	t.requests[kind]++
	t.bytes[kind] += n
	t.mu.Unlock()
}

func (t *tally) explained(kind, cause string) {
	t.mu.Lock()
	t.requests[kind]++
	if t.explainedN[kind] == nil {
		t.explainedN[kind] = map[string]int64{}
	}
	t.explainedN[kind][cause]++
	t.mu.Unlock()
}

func (t *tally) unexplained(kind string, err error) {
	t.mu.Lock()
	t.requests[kind]++
	t.unexplN[kind]++
	if len(t.samples[kind]) < 5 {
		t.samples[kind] = append(t.samples[kind], err.Error())
	}
	t.mu.Unlock()
}

func (t *tally) unexplainedTotal() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for _, v := range t.unexplN {
		n += v
	}
	return n
}

// unexplainedErrors lists the first errors kept, by kind.
func (t *tally) unexplainedErrors() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for k, errs := range t.samples {
		parts = append(parts, fmt.Sprintf("%s: %s", k, strings.Join(errs, " | ")))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
