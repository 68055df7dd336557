// Package soak runs tapvs for a long while under mixed traffic and the
// faults an operator's day brings (reloads, real-server restarts, a SYN
// flood), and checks that it comes back clean: the connection table drained,
// memory and goroutines back near where they started, every client error and
// every packet drop explained by something the soak did.
//
// A run has four phases: warm-up (the same traffic for a short while, then a
// drain, so the baseline is taken with every lazy allocation made), the
// soak itself, the drain, and the checks. The traffic is in traffic.go, the
// faults in faults.go, the checks and the report in check.go.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/daemon"
	"github.com/tapvs/tapvs/lab"
)

// Options are the soak command's.
type Options struct {
	// Duration is the whole run's traffic time, warm-up included (a sixth
	// of it, 5s to 30s).
	Duration time.Duration
	// Seed makes the order of the faults repeatable; 0 picks one (printed).
	Seed uint64
	// Prefix names the lab's namespaces and TAPs (at most 12 characters:
	// a TAP's name, the prefix and one letter, has at most 15).
	Prefix string
	Out    io.Writer
	Log    *slog.Logger
}

// Check refuses options the soak cannot run with, naming the field.
func (o Options) Check() error {
	switch {
	case o.Duration < 30*time.Second:
		return fmt.Errorf("duration: %v is too short: at least 30s (the warm-up alone takes 5s, and every fault must happen at least once)", o.Duration)
	case o.Duration > 24*time.Hour:
		return fmt.Errorf("duration: %v is longer than a day", o.Duration)
	case o.Prefix == "" || len(o.Prefix) > 12 || strings.ContainsAny(o.Prefix, "/ \t\n"):
		return fmt.Errorf("prefix: %q must be 1 to 12 characters, no '/' or spaces", o.Prefix)
	}
	return nil
}

// The soak's services: plain HTTP, the same servers behind SYNPROXY, bulk
// TCP and UDP echo. Reloads rewrite the weights and the real servers of
// "web" and "echo" (see reloadStep).
const servicesTmpl = `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: wrr
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
%[1]s
  - name: web-synproxy
    vip: 172.25.254.100
    port: 8080
    scheduler: wrr
    synproxy: true
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80, weight: %[3]d}
      - {address: 10.20.2.2, port: 80, weight: %[4]d}
  - name: bulk
    vip: 172.25.254.100
    port: 9000
    scheduler: rr
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 9000}
      - {address: 10.20.2.2, port: 9000}
  - name: echo
    vip: 172.25.254.100
    port: 9001
    protocol: udp
    scheduler: rr
    local_addresses: [172.25.84.11]
    real_servers:
%[2]s`

// soakExtra shortens the timeouts of connections that are closing or idle,
// so the table drains within seconds once traffic stops; established
// connections (the bulk streams never idle) keep a generous timeout.
const soakExtra = `timeouts:
  tcp: {established: 30s, syn_sent: 2s, syn_recv: 5s, fin_wait: 2s, time_wait: 1s, close: 1s, close_wait: 2s, last_ack: 2s, synack: 5s}
  udp: 2s
`

// reloadStep renders the services for reload number i: the weights change,
// and every fourth step rs2 leaves "web" and "echo" (its open connections
// go on, as in IPVS) to come back on the next.
func reloadStep(i int) string {
	w := [][2]int{{1, 1}, {3, 1}, {1, 3}, {2, 0}}[i%4] // {2, 0}: rs2 removed
	rs := func(port int) string {
		s := fmt.Sprintf("      - {address: 10.20.1.2, port: %d, weight: %d}", port, w[0])
		if w[1] > 0 {
			s += fmt.Sprintf("\n      - {address: 10.20.2.2, port: %d, weight: %d}", port, w[1])
		}
		return s
	}
	return fmt.Sprintf(servicesTmpl, rs(lab.HTTPPort), rs(lab.EchoPort), max(w[1], 1), max(w[0], 1))
}

// soak is one run: the lab, tapvs, the backends and what happened.
type soak struct {
	o       Options
	rnd     *rand.Rand // the faults' choices; used by the fault loop only
	top     *lab.Topology
	d       *daemon.Daemon
	cfgPath string

	mu sync.Mutex // guards rs (swapped by restarts) and restarts
	rs [2]*lab.Backend
	// restarts are the windows in which a real server was down, for
	// explaining the errors they caused.
	restarts []window

	tally   *tally
	loss    *lossMonitor // the last phase's
	reloads int
	flood   Flood
}

// window is a span of time; an open one has a zero end.
type window struct{ from, to time.Time }

// Run builds a lab, runs tapvs and the soak in it, prints the report to
// o.Out and returns it. The error lists every check that failed (the report
// says the same); the lab is torn down either way.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64()
	}
	s := &soak{o: o, rnd: rand.New(rand.NewPCG(o.Seed, o.Seed^0x5eed)), tally: newTally()}
	s.top = lab.NewTopology(o.Prefix, o.Prefix+"c", o.Prefix+"s")
	for _, ns := range s.top.Namespaces() {
		if lab.InNetns(ns, func() error { return nil }) == nil {
			return nil, fmt.Errorf("netns %s exists: a soak or lab with prefix %q is running (or was killed: ip netns del %s)", ns, o.Prefix, strings.Join(s.top.Namespaces(), " "))
		}
	}
	dir, err := os.MkdirTemp("", "tapvs-soak")
	if err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	defer os.RemoveAll(dir)
	s.top.Socket = filepath.Join(dir, "tapvs.sock")
	s.cfgPath = filepath.Join(dir, "tapvs.yaml")
	if err := s.writeConfig(0); err != nil {
		return nil, err
	}
	cfg, err := config.Load(s.cfgPath)
	if err != nil {
		return nil, fmt.Errorf("soak: its own configuration: %w", err)
	}
	fmt.Fprintf(o.Out, "soak: %v, seed %d, namespaces %s\n", o.Duration, o.Seed, strings.Join(s.top.Namespaces(), ", "))
	if err := s.top.Build(); err != nil {
		return nil, err
	}
	defer func() {
		if err := s.top.Destroy(); err != nil {
			o.Log.Warn("soak: lab teardown", "err", err)
		}
	}()
	if s.d, err = s.top.StartTapvs(ctx, cfg, o.Log); err != nil {
		return nil, err
	}
	defer s.d.Close()
	for i, a := range []netip.Addr{lab.RS1, lab.RS2} {
		if s.rs[i], err = lab.StartBackend(s.top.RS[i], fmt.Sprintf("rs%d", i+1), a); err != nil {
			return nil, err
		}
	}
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, b := range s.rs {
			if b != nil {
				b.Close()
			}
		}
	}()
	rep, err := s.run(ctx)
	if rep != nil {
		rep.Print(o.Out)
	}
	return rep, err
}

// writeConfig writes the configuration of reload step i where Reload reads it.
func (s *soak) writeConfig(i int) error {
	text := s.top.Config(reloadStep(i), soakExtra)
	if err := os.WriteFile(s.cfgPath, []byte(text), 0o600); err != nil {
		return fmt.Errorf("soak: writing the configuration: %w", err)
	}
	return nil
}

// run is the four phases.
func (s *soak) run(ctx context.Context) (*Report, error) {
	warm := min(max(s.o.Duration/6, 5*time.Second), 30*time.Second)
	fmt.Fprintf(s.o.Out, "warm-up: %v of the same traffic, no faults\n", warm.Round(time.Second))
	if err := s.traffic(ctx, warm, false); err != nil {
		return nil, err
	}
	if err := s.drain(ctx); err != nil {
		return nil, fmt.Errorf("after the warm-up: %w", err)
	}
	if n := s.tally.unexplainedTotal(); n > 0 {
		return nil, fmt.Errorf("warm-up: %d client errors with no fault to explain them: %v", n, s.tally.unexplainedErrors())
	}
	base := s.measure(nil)
	s.tally.reset()
	fmt.Fprintf(s.o.Out, "baseline: %s\n", base)
	main := s.o.Duration - warm
	fmt.Fprintf(s.o.Out, "soak: %v with reloads, real-server restarts and a SYN flood\n", main.Round(time.Second))
	start := counters(s.d)
	if err := s.traffic(ctx, main, true); err != nil {
		return nil, err
	}
	derr := s.drain(ctx)
	end := s.measure(&base)
	rep := s.report(base, end, start, counters(s.d), main, derr)
	if len(rep.Failures) > 0 {
		return rep, errors.New("soak failed: " + strings.Join(rep.Failures, "; "))
	}
	return rep, nil
}
