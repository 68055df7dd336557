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
	"os/exec"
	"slices"
	"strings"
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
	return c.openFlowsOf(ctx, leaving, flows, flowPieces, flowLimit)
}

// openFlowsOf is openFlows with flows of pieces pieces (of 8 KiB, one
// every flowPace), given up after limit.
func (c *Cluster) openFlowsOf(ctx context.Context, leaving, flows, pieces int, limit time.Duration) (fs []*Flow, before, others []int, err error) {
	// A flow that breaks ends here at the latest.
	ctx, cancel := context.WithTimeout(ctx, limit)
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
	fs, err = c.StartFlows(ctx, flows, int64(pieces)<<13, flowPace)
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
	ended := 0 // of the victim's flows, already: a loaded machine opened the flows slower than they ran
	var firstErr error
	for i, f := range fs {
		if before[i] == victim {
			want[netip.AddrPortFrom(ClusterClient.Addr(), f.Port).String()] = true
			select {
			case <-f.done:
				ended++
				if f.err != nil && firstErr == nil {
					firstErr = f.err
				}
			default:
			}
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
				return fmt.Errorf("t%d holds %d of t%d's %d flows (connection sync; %d of them had ended before the wait began, the first error %v): %w\nt%d's:\n%s\nt%d's:\n%s", n, held, victim, len(want), ended, firstErr, ctx.Err(),
					victim, c.Inst[victim-1].MetricLines("tapvs_sync"), n, c.Inst[n-1].MetricLines("tapvs_sync"))
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

// The flows of a rejoin: about 6 s each (120 pieces), long enough for
// the instance to be killed, withdrawn, started again, to join and be
// announced while they run, and to carry them on a while after.
const (
	rejoinPieces = 120
	rejoinLimit  = 20 * time.Second
)

// RejoinResult is what SIGKILL of one instance and its start again, with
// connection sync, did to the transfers running through it all.
type RejoinResult struct {
	Withdrawn time.Duration // from the kill to the router's FIB without it
	// Joined is from the start again to its log's "joined" line
	// (JoinLine: the records received and the time the join took), and
	// Announced to the router's FIB with it again.
	Joined, Announced time.Duration
	JoinLine          string
	// CopiesAsked is how many full copies it had asked of its peers when
	// the first datagrams of their copies were let through.
	CopiesAsked uint64
	RejoinTally
}

// RejoinTally counts the flows of a rejoin by where they were: on the
// instance that left and came back (its own: to the survivors, then back
// to it), on a survivor that the return moved to it, or neither (moved
// between survivors or not at all); and how many of each broke.
type RejoinTally struct {
	Own, Returned, Other                   int
	OwnBroken, ReturnedBroken, OtherBroken int
	Errors                                 []string // one per broken flow, for a log
}

func (t RejoinTally) String() string {
	return fmt.Sprintf("%d flows on the instance that left and came back (continued by the survivors, then by it again): %d broke; "+
		"%d of the survivors' flows moved to it by its return: %d broke; %d others: %d broke",
		t.Own, t.OwnBroken, t.Returned, t.ReturnedBroken, t.Other, t.OtherBroken)
}

// copyBlock is the nftables table that drops, in an instance's namespace,
// the connection sync datagrams to it longer than a HELLO, a COPY_REQ or
// a COPY_END (IP length 84-92): COPY_DATA and UPDATEs. The copies a
// (re)started instance asks are lost, and it asks them again after
// connsync's CopyTimeout (1 s).
const copyBlock = "tapvs_lab_copyblock"

func (in *Instance) blockCopies(on bool) error {
	script := fmt.Sprintf("table inet %[1]s\ndelete table inet %[1]s\n", copyBlock)
	if on {
		script = fmt.Sprintf("table inet %s {\n  chain in {\n    type filter hook input priority 0;\n    udp dport %d ip length > 120 drop\n  }\n}\n", copyBlock, ClusterSyncPort)
	}
	cmd := exec.Command("ip", "netns", "exec", in.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", in.NS, err, out)
	}
	return nil
}

// RejoinDuringTransfers opens flows flows (each about 6 s long) over
// every instance, SIGKILLs instance victim once the survivors hold its
// flows (connection sync), waits for the router to withdraw it, opens
// flows more (over the survivors: some of them the return moves to it),
// and starts it again with its same configuration. Its peers' first
// copies to it are lost (copyBlock) until its BGP session is up and it
// has asked them again, so that it joins with its session up: until
// then it must announce nothing (its /v1/bgp), and until each survivor's
// copy has completed (its log) it must not be among the router's next
// hops for the VIP or its own LIP (an error if it is). Once it is back,
// the router spreads the flows over the three again; it counts what
// survived.
func (c *Cluster) RejoinDuringTransfers(ctx context.Context, victim, flows int) (RejoinResult, error) {
	var r RejoinResult
	if !c.Sync {
		return r, errors.New("a rejoin needs connection sync (Cluster.Sync)")
	}
	fs, before, others, err := c.openFlowsOf(ctx, victim, flows, rejoinPieces, rejoinLimit)
	if err != nil {
		return r, err
	}
	all, err := c.NextHops(VIP)
	if err != nil {
		return r, err
	}
	// However this ends, every flow is waited for: none outlives the lab.
	waited := false
	defer func() {
		if !waited {
			for _, f := range fs {
				f.Wait()
			}
		}
	}()
	if err := c.waitSynced(ctx, fs, before, victim, others); err != nil {
		return r, err
	}
	in := c.Inst[victim-1]
	killed := time.Now()
	if err := in.Kill(); err != nil {
		return r, err
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(wctx, VIP, others...); err != nil {
		return r, err
	}
	r.Withdrawn = time.Since(killed)
	if _, err := c.Hops(fs); err != nil {
		return r, err
	}
	fctx, fcancel := context.WithTimeout(ctx, rejoinLimit)
	defer fcancel()
	more, err := c.StartFlows(fctx, flows, rejoinPieces<<13, flowPace)
	if err != nil {
		return r, err
	}
	fs = append(fs, more...)
	if _, err := c.Hops(more); err != nil {
		return r, err
	}
	for _, f := range more {
		before = append(before, f.Hop)
	}
	if err := in.blockCopies(true); err != nil {
		return r, err
	}
	blocked := true
	defer func() {
		if blocked {
			in.blockCopies(false)
		}
	}()
	started := time.Now()
	if err := in.Start(); err != nil {
		return r, err
	}
	lip := ClusterLIP(victim, 0)
	for {
		vips, err := c.NextHops(VIP)
		if err != nil {
			return r, err
		}
		lips, err := c.NextHops(lip)
		if err != nil {
			return r, err
		}
		if slices.Contains(vips, victim) || slices.Contains(lips, victim) {
			for _, p := range others {
				if at, ok := in.LoggedAt("connection sync: copy", fmt.Sprintf("peer=%d ", p), "complete=true"); !ok || at.Before(started) {
					return r, fmt.Errorf("t%d is among the next hops of the VIP (%v) or of its LIP %s (%v) %v after its start, before t%d's copy to it completed",
						victim, vips, lip, lips, time.Since(started).Round(time.Millisecond), p)
				}
			}
			at, line, ok := in.LastLogged("connection sync: joined")
			if !ok || at.Before(started) {
				return r, fmt.Errorf("t%d is among the next hops %v after its start, before it logged that it joined", victim, time.Since(started).Round(time.Millisecond))
			}
			if slices.Contains(vips, victim) {
				r.Announced, r.Joined, r.JoinLine = time.Since(started), at.Sub(started), line
				break
			}
		}
		if blocked {
			if b, err := in.API().BGP(); err == nil {
				if b.Joining && len(b.Routes) > 0 {
					return r, fmt.Errorf("t%d announces %+v while it joins", victim, b.Routes)
				}
				// Its session up, both copies asked and one again: let
				// them through.
				n, err := in.Metric(`tapvs_sync_copies_total{result="asked"}`)
				if err == nil && n > uint64(len(others)) && len(b.Peers) > 0 && b.Peers[0].State == "established" {
					if err := in.blockCopies(false); err != nil {
						return r, err
					}
					blocked, r.CopiesAsked = false, n
				}
			}
		}
		select {
		case <-wctx.Done():
			return r, fmt.Errorf("t%d never came back among the VIP's next hops (copies still lost: %v): %w", victim, blocked, wctx.Err())
		case <-in.done:
			return r, fmt.Errorf("t%d exited: %s", victim, in.tailLog())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if _, err := c.WaitNextHops(wctx, VIP, all...); err != nil {
		return r, err
	}
	mid := make([]int, len(fs))
	for i, f := range fs {
		mid[i] = f.Hop
	}
	if _, err := c.Hops(fs); err != nil {
		return r, err
	}
	waited = true
	for i, f := range fs {
		err := f.Wait()
		var n, broke *int
		switch {
		case before[i] == victim:
			n, broke = &r.Own, &r.OwnBroken
		case f.Hop == victim:
			n, broke = &r.Returned, &r.ReturnedBroken
		default:
			n, broke = &r.Other, &r.OtherBroken
		}
		*n++
		if err != nil {
			*broke++
			r.Errors = append(r.Errors, fmt.Sprintf("port %d (instance %d, %d after the kill, %d after the return): %v", f.Port, before[i], mid[i], f.Hop, err))
		}
	}
	return r, nil
}
