package lab

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// What the cluster lab measures: where the router spreads connections, and
// what a drain and a SIGKILL of one instance do to the connections open at
// the time. Which instance carried a connection is read from outside
// tapvs: the LIP the real server saw (each instance has its own), or the
// router's own choice for the flow (ip route get with its ports).

// Spread opens n short HTTP connections from the client to the VIP, 16 at
// a time, each from a new source port, and counts them by the instance
// whose LIP the real server saw; a connection that failed counts under 0.
func (c *Cluster) Spread(ctx context.Context, n int) map[int]int {
	hc := HTTPClient(c.Client, 5*time.Second)
	url := "http://" + netip.AddrPortFrom(VIP, HTTPPort).String() + "/"
	by := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			inst := 0
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			if resp, err := hc.Do(req); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var name, rs, saw string
				fmt.Sscanf(string(body), "%s %s saw %s", &name, &rs, &saw)
				if src, err := netip.ParseAddrPort(saw); err == nil {
					inst = InstanceOf(src.Addr())
				}
			}
			mu.Lock()
			by[inst]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return by
}

// Flow is a long TCP connection from the client to the VIP's bulk port: it
// uploads at a steady pace, then checks the server's hash of what arrived.
type Flow struct {
	Port uint16 // the client's source port
	// Hop is the instance the router sent the flow to when it was checked
	// last (Cluster.Hops).
	Hop  int
	done chan struct{}
	err  error
}

// Wait waits for the flow to end and returns its error: nil if every byte
// arrived intact.
func (f *Flow) Wait() error {
	<-f.done
	return f.err
}

// StartFlows opens n flows, each sending size bytes in 8 KiB pieces every
// pace; each ends with ctx's deadline at the latest.
func (c *Cluster) StartFlows(ctx context.Context, n int, size int64, pace time.Duration) ([]*Flow, error) {
	var fs []*Flow
	for range n {
		conn, err := bulk(ctx, c.Client, netip.AddrPortFrom(VIP, c.flowPort()), 'U', size)
		if err != nil {
			for _, f := range fs {
				f.Wait()
			}
			return nil, fmt.Errorf("flow %d: %w", len(fs)+1, err)
		}
		f := &Flow{Port: uint16(conn.LocalAddr().(*net.TCPAddr).Port), done: make(chan struct{})}
		go func() {
			defer close(f.done)
			defer conn.Close()
			f.err = pacedUpload(ctx, conn, size, pace)
		}()
		fs = append(fs, f)
	}
	return fs, nil
}

func pacedUpload(ctx context.Context, conn net.Conn, size int64, pace time.Duration) error {
	want := sha256.New()
	src := io.TeeReader(Stream(size), want)
	buf := make([]byte, 8<<10)
	t := time.NewTicker(pace)
	defer t.Stop()
	for left := size; left > 0; {
		n, _ := io.ReadFull(src, buf[:min(int64(len(buf)), left)])
		if _, err := conn.Write(buf[:n]); err != nil {
			return fmt.Errorf("sending: %w", err)
		}
		left -= int64(n)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(conn, got); err != nil {
		return fmt.Errorf("reading the server's hash: %w", err)
	}
	if string(got) != string(want.Sum(nil)) {
		return errors.New("the server's hash differs: data was corrupted")
	}
	return nil
}

// Hops asks the router where it sends each flow now and records it in
// Flow.Hop; it returns the flows' previous hops.
func (c *Cluster) Hops(fs []*Flow) ([]int, error) {
	prev := make([]int, len(fs))
	for i, f := range fs {
		h, err := c.FlowHop(f.Port, c.flowPort())
		if err != nil {
			return nil, err
		}
		prev[i], f.Hop = f.Hop, h
	}
	return prev, nil
}

// Tally counts flows by what happened to them: on the instance that went
// away (drained or killed), moved by the router from one survivor to
// another, or left where they were; and how many of each broke.
type Tally struct {
	Gone, Moved, Stayed                   int
	GoneBroken, MovedBroken, StayedBroken int
	Errors                                []string // one per broken flow, for a log
}

func (t Tally) String() string {
	return fmt.Sprintf("%d flows on the instance that left: %d broke; %d moved between survivors by ECMP: %d broke; %d stayed: %d broke",
		t.Gone, t.GoneBroken, t.Moved, t.MovedBroken, t.Stayed, t.StayedBroken)
}

// tally waits for every flow and counts them by their hop before (before)
// and now (Flow.Hop), gone being the instance that left.
func tally(fs []*Flow, before []int, gone int) Tally {
	var t Tally
	for i, f := range fs {
		err := f.Wait()
		var n, broke *int
		switch {
		case before[i] == gone:
			n, broke = &t.Gone, &t.GoneBroken
		case before[i] != f.Hop:
			n, broke = &t.Moved, &t.MovedBroken
		default:
			n, broke = &t.Stayed, &t.StayedBroken
		}
		*n++
		if err != nil {
			*broke++
			t.Errors = append(t.Errors, fmt.Sprintf("port %d (instance %d, then %d): %v", f.Port, before[i], f.Hop, err))
		}
	}
	return t
}

// The flows of a drain or a kill: about 2 s each (40 pieces of 8 KiB, one
// every 50 ms), and one that breaks is given up after flowLimit (room for
// a loaded machine: a flow that merely ran slow must not count as broken).
const (
	flowPieces = 40
	flowPace   = 50 * time.Millisecond
	flowLimit  = 7 * time.Second
)

// KillResult is what SIGKILL of one instance during transfers did.
type KillResult struct {
	Withdrawn time.Duration // from the kill to the router's FIB without it
	Tally
}

// KillDuringTransfers opens flows flows (each about 2 s long), SIGKILLs
// instance victim while they run, measures how long the router takes to
// withdraw it, and counts what survived.
func (c *Cluster) KillDuringTransfers(ctx context.Context, victim, flows int) (KillResult, error) {
	var r KillResult
	fs, before, others, err := c.openFlows(ctx, victim, flows)
	if err != nil {
		return r, err
	}
	if c.Sync {
		// The kill tests what sync carries, not how fast: every flow on
		// the victim is in every survivor's table first.
		if err := c.waitSynced(ctx, fs, before, victim, others); err != nil {
			return r, err
		}
	}
	in := c.Inst[victim-1]
	killed := time.Now()
	if err := in.Kill(); err != nil {
		return r, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(wctx, VIP, others...); err != nil {
		return r, err
	}
	r.Withdrawn = time.Since(killed)
	if _, err := c.Hops(fs); err != nil {
		return r, err
	}
	r.Tally = tally(fs, before, victim)
	return r, nil
}

// DrainResult is what draining one instance during transfers did.
type DrainResult struct {
	Withdrawn time.Duration // from the drain to the router's FIB without it
	// NewConns is how many new connections were made after the withdrawal
	// and NewOnDrained how many of them reached the drained instance.
	NewConns, NewOnDrained, NewFailed int
	Empty                             time.Duration // from the drain to its report of no connection left
	Tally
}

// DrainDuringTransfers opens flows flows, drains instance n (its control
// socket's drain) while they run, measures the withdrawal, opens new
// connections and counts those that still reach it, waits for the flows
// and for the instance to report itself empty (within ctx), and leaves it
// drained.
func (c *Cluster) DrainDuringTransfers(ctx context.Context, n, flows, newConns int) (DrainResult, error) {
	var r DrainResult
	fs, before, others, err := c.openFlows(ctx, n, flows)
	if err != nil {
		return r, err
	}
	in := c.Inst[n-1]
	start := time.Now()
	if _, err := in.API().Drain(); err != nil {
		return r, fmt.Errorf("drain t%d: %w", n, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(wctx, VIP, others...); err != nil {
		return r, err
	}
	r.Withdrawn = time.Since(start)
	by := c.Spread(ctx, newConns)
	r.NewConns, r.NewOnDrained, r.NewFailed = newConns, by[n], by[0]
	if _, err := c.Hops(fs); err != nil {
		return r, err
	}
	r.Tally = tally(fs, before, n)
	for {
		d, err := in.API().DrainStatus()
		if err != nil {
			return r, err
		}
		if d.Empty {
			r.Empty = time.Since(start)
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("t%d never reported itself empty (%d connections left): %w", n, d.Conns, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// openFlows opens flows flows and returns them, the instance each is on,
// and the instances other than leaving the VIP's route goes to now. It
// fails unless some flows are on leaving.
func (c *Cluster) openFlows(ctx context.Context, leaving, flows int) (fs []*Flow, before, others []int, err error) {
	// A flow that breaks ends here at the latest.
	ctx, cancel := context.WithTimeout(ctx, flowLimit)
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	hops, err := c.NextHops(VIP)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, h := range hops {
		if h != leaving {
			others = append(others, h)
		}
	}
	if len(others) == len(hops) {
		return nil, nil, nil, fmt.Errorf("instance %d is not among the VIP's next hops %v", leaving, hops)
	}
	fs, err = c.StartFlows(ctx, flows, flowPieces<<13, flowPace)
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := c.Hops(fs); err != nil {
		return nil, nil, nil, err
	}
	before = make([]int, len(fs))
	on := 0
	for i, f := range fs {
		before[i] = f.Hop
		if f.Hop == leaving {
			on++
		}
	}
	if on == 0 {
		return nil, nil, nil, fmt.Errorf("none of %d flows is on instance %d", len(fs), leaving)
	}
	return fs, before, others, nil
}

// waitSynced waits (within ctx) until every flow on instance victim is in
// the connection table of each of the others (connection sync's shadows).
func (c *Cluster) waitSynced(ctx context.Context, fs []*Flow, before []int, victim int, others []int) error {
	want := map[string]bool{}
	for i, f := range fs {
		if before[i] == victim {
			want[netip.AddrPortFrom(ClusterClient.Addr(), f.Port).String()] = true
		}
	}
	for _, n := range others {
		for {
			conns, err := c.Inst[n-1].API().Conns()
			if err != nil {
				return fmt.Errorf("t%d's connections: %w", n, err)
			}
			held := 0
			for _, cn := range conns {
				if want[cn.Source] && cn.State == "ESTABLISHED" {
					held++
				}
			}
			if held == len(want) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("t%d holds %d of t%d's %d flows (connection sync): %w", n, held, victim, len(want), ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}
