package soak

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// A UDP datagram may be lost outside tapvs, where the kernel counts it: a
// TAP whose queue filled because tapvs's reader fell behind (tx_dropped of
// the TAP's kernel end: a shared machine's scheduling), or a socket whose
// receive buffer was full. lossMonitor samples those counters while the
// traffic runs, so a UDP echo that timed out can be matched with a loss
// that was counted at the time. A timeout with no counted loss stays
// unexplained.
type lossMonitor struct {
	mu     sync.Mutex
	events []lossEvent
	last   map[string]uint64
	total  map[string]uint64 // what moved, by counter, over the phase
	// drops are the times tapvs's drop counters were seen to move, by
	// reason, to match them with the faults that explain them.
	drops     map[string][]time.Time
	lastDrops map[string]uint64
}

type lossEvent struct {
	at   time.Time
	what string
}

const lossEvery = 250 * time.Millisecond

// lossCounters reads every loss counter of the lab, by name.
func (s *soak) lossCounters() map[string]uint64 {
	m := map[string]uint64{}
	read := func(ns, file string, f func(string)) {
		lab.InNetns(ns, func() error {
			b, err := os.ReadFile("/proc/thread-self/net/" + file)
			if err == nil {
				f(string(b))
			}
			return err
		})
	}
	tapDrop := func(ns, ifname string) {
		read(ns, "dev", func(text string) {
			for _, line := range strings.Split(text, "\n") {
				name, rest, ok := strings.Cut(line, ":")
				// 8 receive columns, then bytes packets errs drop for transmit.
				if f := strings.Fields(rest); ok && strings.TrimSpace(name) == ifname && len(f) >= 12 {
					v, _ := strconv.ParseUint(f[11], 10, 64)
					m[ifname+" tx_dropped"] = v
				}
			}
		})
	}
	tapDrop(s.top.Client, s.top.TapClient)
	tapDrop(s.top.Router, s.top.TapServer)
	for _, ns := range []string{s.top.Client, s.top.RS[0], s.top.RS[1]} {
		read(ns, "snmp", func(text string) {
			for k, v := range udpErrors(text) {
				m[ns+" udp "+k] = v
			}
		})
	}
	return m
}

// udpErrors picks the receive-side error counters of the Udp table of a
// /proc/net/snmp text: a line of names, then a line of values.
func udpErrors(text string) map[string]uint64 {
	out := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	var names []string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i := 1; i < len(f) && i < len(names); i++ {
			if names[i] == "RcvbufErrors" || names[i] == "InErrors" {
				out[names[i]], _ = strconv.ParseUint(f[i], 10, 64)
			}
		}
		break
	}
	return out
}

// watchLoss samples the loss counters until ctx ends, and once more after.
func (s *soak) watchLoss(ctx context.Context, m *lossMonitor) {
	m.last = s.lossCounters()
	m.total = map[string]uint64{}
	m.lastDrops, m.drops = s.d.Balancer.Stats.Drops(), map[string][]time.Time{}
	t := time.NewTicker(lossEvery)
	defer t.Stop()
	for {
		done := false
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
		}
		now, cur := time.Now(), s.lossCounters()
		m.mu.Lock()
		for k, v := range cur {
			if d := v - m.last[k]; v > m.last[k] {
				m.events = append(m.events, lossEvent{now, k})
				m.total[k] += d
			}
		}
		m.last = cur
		drops := s.d.Balancer.Stats.Drops()
		for k, v := range drops {
			if v > m.lastDrops[k] {
				m.drops[k] = append(m.drops[k], now)
			}
		}
		m.lastDrops = drops
		m.mu.Unlock()
		if done {
			return
		}
	}
}

// explain names a loss counted between from and a sample after to.
func (m *lossMonitor) explain(from, to time.Time) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.events {
		if !e.at.Before(from) && !e.at.After(to.Add(2*lossEvery)) {
			return "datagram lost: " + e.what + " moved", true
		}
	}
	return "", false
}

// String lists what moved.
func (m *lossMonitor) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var parts []string
	for k, v := range m.total {
		parts = append(parts, fmt.Sprintf("%s +%d", k, v))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// dropsDuring reports, for each drop reason that moved, whether every move
// was seen while a real server was down or within restartGrace (and a
// sample) of its coming back.
func (m *lossMonitor) dropsDuring(restarts []window) map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for k, times := range m.drops {
		all := true
		for _, t := range times {
			in := false
			for _, w := range restarts {
				if !t.Before(w.from) && (w.to.IsZero() || !t.After(w.to.Add(restartGrace+lossEvery))) {
					in = true
				}
			}
			all = all && in
		}
		out[k] = all
	}
	return out
}
