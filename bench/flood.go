package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The flood workload: hping3 sends spoofed SYNs (random sources) as fast as
// it can from the client's namespace to a SYN proxy's service, while wrk
// opens legitimate short connections to the same service. It measures the
// legitimate connections/s with and without the flood, and what explains
// the difference: the SYNs hping3 sent, the half-open connections on the
// real servers (a SYN proxy keeps them at 0), the frames the client-side
// device dropped before the balancer read them, and the retransmits of the
// legitimate clients, each a stall of 200 ms to 1 s.

// floodStats is what the flood workload counts, from one run.
type floodStats struct {
	base, flood float64  // legitimate short connections/s without and with the flood
	synPerSec   float64  // spoofed SYNs/s hping3 sent
	halfOpen    halfOpen // the real servers' SYN-RECV sockets, the most seen in one sample
	probe                // the counters' rise during the flood
}

// probe is a moment's counters in the client's namespace: the client-side
// device's (its transmit direction is towards the balancer) and the
// namespace's TCP retransmits (the legitimate clients').
type probe struct {
	txPackets, txDropped    uint64
	retransSegs, synRetrans uint64
}

func (p probe) since(p0 probe) probe {
	return probe{p.txPackets - p0.txPackets, p.txDropped - p0.txDropped, p.retransSegs - p0.retransSegs, p.synRetrans - p0.synRetrans}
}

// floodArgs is hping3's command line: SYNs from random sources, as fast as
// it can send, to the service.
func floodArgs(to netip.AddrPort) []string {
	return []string{"hping3", "-S", "--flood", "--rand-source", "-p", strconv.Itoa(int(to.Port())), to.Addr().String()}
}

var reHping = regexp.MustCompile(`([0-9]+) packets transmitted`)

// parseHping reads the packets hping3 sent from the statistics it prints
// when interrupted.
func parseHping(out []byte) (uint64, error) {
	m := reHping.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("hping3: no statistics in %q", out)
	}
	return strconv.ParseUint(string(m[1]), 10, 64)
}

// countSS counts the sockets `ss -Htan state ...` listed: one a line, no
// header.
func countSS(out []byte) int {
	n := 0
	for l := range bytes.Lines(out) {
		if len(bytes.TrimSpace(l)) > 0 {
			n++
		}
	}
	return n
}

// parseNstat reads `nstat -asz NAME...`: a "#kernel" line, then one line a
// counter, "name value rate". Every name asked for must be there.
func parseNstat(out []byte, names ...string) (map[string]uint64, error) {
	got := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("nstat: %s: %w", f[0], err)
		}
		got[f[0]] = v
	}
	for _, n := range names {
		if _, ok := got[n]; !ok {
			return nil, fmt.Errorf("nstat: no %s in %q", n, out)
		}
	}
	return got, nil
}

// flood starts hping3 towards to, or a paced flood at rate; stop ends it
// and returns the SYNs/s it sent.
func (c netnsClient) flood(ctx context.Context, to netip.AddrPort, rate int) (stop func() (float64, error), err error) {
	if rate > 0 {
		return pacedFlood(c.ns, to, rate)
	}
	var out bytes.Buffer
	cmd := exec.Command("ip", append([]string{"netns", "exec", c.ns}, floodArgs(to)...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("hping3: %w", err)
	}
	start := time.Now()
	var once sync.Once
	return func() (float64, error) {
		var sent uint64
		var err error
		once.Do(func() {
			// ip netns exec execs hping3: the process is hping3, which prints
			// its statistics on SIGINT.
			cmd.Process.Signal(syscall.SIGINT)
			werr := cmd.Wait()
			if sent, err = parseHping(out.Bytes()); err != nil && werr != nil {
				err = fmt.Errorf("%w (hping3: %v)", err, werr)
			}
		})
		return float64(sent) / time.Since(start).Seconds(), err
	}, nil
}

// halfOpen counts SYN-RECV sockets: all of them, and those that have
// retransmitted their SYN-ACK (stuck), which no peer answered within the
// kernel's first retransmit timeout (1 s). A balancer's own handshakes
// with the server complete in well under that, so a sample catches some
// in flight; a spoofed SYN let through to a server is stuck until it
// expires, so a SYN proxy must keep stuck at 0.
type halfOpen struct{ open, stuck int }

func (h halfOpen) max(o halfOpen) halfOpen {
	return halfOpen{max(h.open, o.open), max(h.stuck, o.stuck)}
}

// halfOpen sums the real servers' SYN-RECV sockets.
func (c netnsClient) halfOpen(ctx context.Context) (halfOpen, error) {
	var n halfOpen
	for _, ns := range c.servers {
		out, err := run(ctx, ns, "ss", "-Htano", "state", "syn-recv")
		if err != nil {
			return halfOpen{}, err
		}
		h := countSynRecv(out)
		n.open, n.stuck = n.open+h.open, n.stuck+h.stuck
	}
	return n, nil
}

// countSynRecv reads `ss -Htano state syn-recv`: a socket a line, each
// with its timer as iproute2's ss prints it, "timer:(on,980ms,0)", the
// last figure the SYN-ACK's retransmits. A line without a timer counts as
// open, not stuck.
func countSynRecv(out []byte) halfOpen {
	var h halfOpen
	for l := range bytes.Lines(out) {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		h.open++
		_, t, ok := bytes.Cut(l, []byte("timer:("))
		if !ok {
			continue
		}
		t, _, ok = bytes.Cut(t, []byte(")"))
		if i := bytes.LastIndexByte(t, ','); ok && i >= 0 {
			if n, err := strconv.Atoi(string(t[i+1:])); err == nil && n > 0 {
				h.stuck++
			}
		}
	}
	return h
}

// probe reads dev's transmit counters and the TCP retransmits in the
// client's namespace.
func (c netnsClient) probe(ctx context.Context, dev string) (probe, error) {
	var p probe
	out, err := run(ctx, c.ns, "cat", "/sys/class/net/"+dev+"/statistics/tx_packets", "/sys/class/net/"+dev+"/statistics/tx_dropped")
	if err != nil {
		return p, err
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return p, fmt.Errorf("%s statistics: %q", dev, out)
	}
	if p.txPackets, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return p, fmt.Errorf("%s tx_packets: %w", dev, err)
	}
	if p.txDropped, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return p, fmt.Errorf("%s tx_dropped: %w", dev, err)
	}
	// -a absolute values, -s leave nstat's history alone, -z zeros too.
	out, err = run(ctx, c.ns, "nstat", "-asz", "TcpRetransSegs", "TcpExtTCPSynRetrans")
	if err != nil {
		return p, err
	}
	m, err := parseNstat(out, "TcpRetransSegs", "TcpExtTCPSynRetrans")
	if err != nil {
		return p, err
	}
	p.retransSegs, p.synRetrans = m["TcpRetransSegs"], m["TcpExtTCPSynRetrans"]
	return p, nil
}

// shortUnderFlood is the short-connection wrk run that does not fail on
// connect errors: under a flood they are part of the figure.
func (c netnsClient) shortUnderFlood(ctx context.Context, to netip.AddrPort, sec string) (wrkResult, error) {
	out, err := run(ctx, c.ns, wrkArgs(to, sec, true, 32)...)
	if err != nil {
		return wrkResult{}, err
	}
	return scanWrk(out, to)
}

// measureFlood runs the flood workload once through p: the short
// connections without the flood, then with it, the half-open connections
// sampled meanwhile.
func measureFlood(ctx context.Context, c client, p Path, sec string, rate int) (floodStats, error) {
	var s floodStats
	w, err := c.wrk(ctx, p.HTTP, sec, true, 32)
	if err != nil {
		return s, err
	}
	s.base = w.rps
	p0, err := c.probe(ctx, p.Dev)
	if err != nil {
		return s, err
	}
	stop, err := c.flood(ctx, p.HTTP, rate)
	if err != nil {
		return s, err
	}
	defer stop()
	sctx, cancel := context.WithCancel(ctx)
	sampled := make(chan halfOpen)
	go func() {
		var most halfOpen
		t := time.NewTicker(halfOpenEvery)
		defer t.Stop()
		for {
			if n, err := c.halfOpen(sctx); err == nil {
				most = most.max(n)
			}
			select {
			case <-sctx.Done():
				sampled <- most
				return
			case <-t.C:
			}
		}
	}()
	w, err = c.shortUnderFlood(ctx, p.HTTP, sec)
	cancel()
	s.halfOpen = <-sampled
	if err != nil {
		return s, err
	}
	s.flood = w.rps
	if s.synPerSec, err = stop(); err != nil {
		return s, err
	}
	p1, err := c.probe(ctx, p.Dev)
	if err != nil {
		return s, err
	}
	s.probe = p1.since(p0)
	return s, nil
}

// halfOpenEvery is how often the flood workload counts the real servers'
// SYN-RECV sockets. Each `ss` walks the kernel's whole established hash
// (262 144 buckets on this project's VM, shared by every namespace),
// about 57 ms of system time even on an idle box: every 0.5 s on both
// servers that was 12-25% of a 2-core machine, taken from whichever path
// was measured. A spoofed SYN let through stays half-open with its
// SYN-ACK retransmitted for about 30 s, and a stuck socket is one
// unanswered for 1 s, so a look every 2 s still finds every one.
const halfOpenEvery = 2 * time.Second
