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
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
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

// Flow is a long TCP connection to a bulk server (in a cluster, from the
// client to the VIP's bulk port): it uploads at a steady pace, then checks
// the server's hash of what arrived.
type Flow struct {
	Port uint16 // the client's source port
	// Hop is the instance the router sent the flow to when it was checked
	// last (Cluster.Hops).
	Hop  int
	conn *net.TCPConn
	left atomic.Int64 // bytes not yet written
	done chan struct{}
	err  error
}

// Wait waits for the flow to end and returns its error: nil if every byte
// arrived intact.
func (f *Flow) Wait() error {
	<-f.done
	return f.err
}

// Sending reports whether the flow still has bytes to write.
func (f *Flow) Sending() bool { return f.left.Load() > 0 }

// Carrying reports whether the real server has acknowledged some of the
// flow's data (Acked past the bulk header), that is whether it goes
// through the balancer both ways; a flow that has ended counts as
// carrying.
func (f *Flow) Carrying() bool {
	select {
	case <-f.done:
		return true
	default:
	}
	return f.Acked() > bulkHeader
}

// Acked is how many bytes the real server has acknowledged so far (the
// client's TCP_INFO, bytes_acked); 0 once the flow has ended.
func (f *Flow) Acked() uint64 {
	rc, err := f.conn.SyscallConn()
	if err != nil {
		return 0
	}
	var acked uint64
	rc.Control(func(fd uintptr) {
		if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			acked = ti.Bytes_acked
		}
	})
	return acked
}

// bulkHeader is the length of the bulk protocol's request ('U' or 'D' and
// the length).
const bulkHeader = 9

// FlowShape is how each flow of a drain or a kill sends: Pieces pieces of
// Piece bytes, one every Pace.
type FlowShape struct {
	Piece, Pieces int
	Pace          time.Duration
}

// ShortFlows are the flows of a drain or a kill of a few dozen: about 2 s
// each (40 pieces of 8 KiB, one every 50 ms).
var ShortFlows = FlowShape{Piece: 8 << 10, Pieces: 40, Pace: 50 * time.Millisecond}

// LongFlows are the flows of a kill of hundreds: about 5 s each (50
// pieces of 4 KiB, one every 100 ms: 40 KiB/s, 12 MB/s for 300), long
// enough to be all open and carrying bytes before the kill, and all
// mid-transfer at it, on a loaded machine.
var LongFlows = FlowShape{Piece: 4 << 10, Pieces: 50, Pace: 100 * time.Millisecond}

// Size is the bytes a flow of this shape sends.
func (s FlowShape) Size() int64 { return int64(s.Piece) * int64(s.Pieces) }

// Duration is how long a flow of this shape sends.
func (s FlowShape) Duration() time.Duration { return time.Duration(s.Pieces) * s.Pace }

// StartFlows opens n flows of shape s to the VIP; each ends with ctx's
// deadline at the latest.
func (c *Cluster) StartFlows(ctx context.Context, n int, s FlowShape) ([]*Flow, error) {
	return StartFlows(ctx, c.Client, netip.AddrPortFrom(VIP, c.flowPort()), n, s)
}

// StartFlows opens n flows of shape s from namespace ns to the bulk server
// at addr; each ends with ctx's deadline at the latest.
func StartFlows(ctx context.Context, ns string, addr netip.AddrPort, n int, s FlowShape) ([]*Flow, error) {
	var fs []*Flow
	for range n {
		conn, err := bulk(ctx, ns, addr, 'U', s.Size())
		if err != nil {
			for _, f := range fs {
				f.Wait()
			}
			return nil, fmt.Errorf("flow %d: %w", len(fs)+1, err)
		}
		tc := conn.(*net.TCPConn)
		f := &Flow{Port: uint16(tc.LocalAddr().(*net.TCPAddr).Port), conn: tc, done: make(chan struct{})}
		f.left.Store(s.Size())
		go func() {
			defer close(f.done)
			defer conn.Close()
			f.err = pacedUpload(ctx, conn, s, &f.left)
		}()
		fs = append(fs, f)
	}
	return fs, nil
}

func pacedUpload(ctx context.Context, conn net.Conn, s FlowShape, left *atomic.Int64) error {
	want := sha256.New()
	src := io.TeeReader(Stream(s.Size()), want)
	buf := make([]byte, s.Piece)
	t := time.NewTicker(s.Pace)
	defer t.Stop()
	for left.Load() > 0 {
		n, _ := io.ReadFull(src, buf[:min(int64(len(buf)), left.Load())])
		if _, err := conn.Write(buf[:n]); err != nil {
			return fmt.Errorf("sending: %w", err)
		}
		left.Add(-int64(n))
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
	ports := make([]uint16, len(fs))
	for i, f := range fs {
		ports[i] = f.Port
	}
	hops, err := c.FlowHops(ports, c.flowPort())
	if err != nil {
		return nil, err
	}
	prev := make([]int, len(fs))
	for i, f := range fs {
		prev[i], f.Hop = f.Hop, hops[i]
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

// flowSlack is how long past its shape's duration a flow that breaks is
// given up (room for a loaded machine: a flow that merely ran slow must
// not count as broken).
const flowSlack = 5 * time.Second

// flowShape is c.FlowShape, or ShortFlows.
func (c *Cluster) flowShape() FlowShape {
	if c.FlowShape.Pieces > 0 {
		return c.FlowShape
	}
	return ShortFlows
}

// KillResult is what SIGKILL of one instance during transfers did.
type KillResult struct {
	Withdrawn time.Duration // from the kill to the router's FIB without it
	// Sending is how many flows still had bytes to send at the kill: all
	// of them, unless the flows are too short for their number.
	Sending int
	// Held is, for each survivor, how many of the victim's flows were in
	// its connection table (ESTABLISHED: connection sync's shadows) right
	// after the kill: what sync had carried by then.
	Held map[int]int
	// Opened is how long opening the flows took (and asking the router
	// where each goes), Killed how long after the first was opened the
	// victim was killed: a flow lasts its shape's duration.
	Opened, Killed time.Duration
	// Synced is how long after every flow carried bytes the survivors held
	// all of the victim's (with c.Sync); -1: not within syncWait, and the
	// victim was killed anyway.
	Synced time.Duration
	Tally
}

// syncWait bounds KillDuringTransfers' wait for connection sync: 7-8 ms
// here, and the change feed is drained every 10 ms (daemon/sync.go's
// drainEvery); a sync that lags by half a second is broken, and the
// victim is then killed with what the survivors hold.
const syncWait = 500 * time.Millisecond

// waitHeld polls the survivors' tables until each holds every one of the
// victim's flows, for syncWait at most: 0 once they do, -1 if not by then.
func (c *Cluster) waitHeld(ctx context.Context, fs []*Flow, before []int, victim int, others []int) (time.Duration, error) {
	want := 0
	for _, n := range before {
		if n == victim {
			want++
		}
	}
	deadline := time.Now().Add(syncWait)
	for {
		held, err := c.held(fs, before, victim, others)
		if err != nil {
			return 0, err
		}
		all := true
		for _, n := range others {
			if held[n] < want {
				all = false
			}
		}
		if all {
			return 0, nil
		}
		if time.Now().After(deadline) {
			return -1, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// KillDuringTransfers opens flows flows (of c.FlowShape), SIGKILLs instance
// victim once every one of them carries bytes (the real server acks its
// data), measures how long the router takes to withdraw it, and counts
// what survived. With c.Sync the kill waits, up to syncWait (500 ms), for every
// survivor to hold the victim's flows (KillResult.Synced says how long
// that took, from the flows carrying bytes): connection sync is
// asynchronous, as LVS's sync daemon is, and a connection younger than its
// latency dies with its instance (a fast machine carried bytes 18 ms after
// the first SYN, before sync had sent anything). KillResult.Held says how
// many of them the survivors held at the kill.
func (c *Cluster) KillDuringTransfers(ctx context.Context, victim, flows int) (KillResult, error) {
	var r KillResult
	start := time.Now()
	fs, before, others, err := c.openFlows(ctx, victim, flows)
	if err != nil {
		return r, err
	}
	r.Opened = time.Since(start)
	if err := WaitCarrying(ctx, fs); err != nil {
		return r, err
	}
	if c.Sync {
		carrying := time.Now()
		if r.Synced, err = c.waitHeld(ctx, fs, before, victim, others); err != nil {
			return r, err
		}
		if r.Synced >= 0 {
			r.Synced = time.Since(carrying)
		}
	}
	in := c.Inst[victim-1]
	killed := time.Now()
	r.Killed = killed.Sub(start)
	if err := in.Kill(); err != nil {
		return r, err
	}
	for _, f := range fs {
		if f.Sending() {
			r.Sending++
		}
	}
	if c.Sync {
		if r.Held, err = c.held(fs, before, victim, others); err != nil {
			return r, err
		}
	}
	if r.Withdrawn, err = c.waitWithdrawn(ctx, killed, others, 10*time.Second); err != nil {
		return r, err
	}
	if _, err := c.Hops(fs); err != nil {
		return r, err
	}
	r.Tally = tally(fs, before, victim)
	return r, nil
}

// WaitCarrying waits (within ctx) until every flow carries bytes.
func WaitCarrying(ctx context.Context, fs []*Flow) error {
	for {
		n := 0
		for _, f := range fs {
			if f.Carrying() {
				n++
			}
		}
		if n == len(fs) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d flows carry bytes: %w", n, len(fs), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
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
	if r.Withdrawn, err = c.waitWithdrawn(ctx, start, others, 10*time.Second); err != nil {
		return r, err
	}
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
	shape := c.flowShape()
	return c.openFlowsOf(ctx, leaving, flows, shape, shape.Duration()+flowSlack)
}

// openFlowsOf is openFlows with flows of shape, given up after limit.
func (c *Cluster) openFlowsOf(ctx context.Context, leaving, flows int, shape FlowShape, limit time.Duration) (fs []*Flow, before, others []int, err error) {
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
	fs, err = c.StartFlows(ctx, flows, shape)
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

// waitWithdrawn waits (at most limit) until the router's FIB sends the
// VIP to the instances others alone, and returns how long after from.
func (c *Cluster) waitWithdrawn(ctx context.Context, from time.Time, others []int, limit time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if _, err := c.WaitNextHops(ctx, VIP, others...); err != nil {
		return 0, err
	}
	return time.Since(from), nil
}

// waitSynced waits (within ctx) until each of the instances others holds
// every flow on instance victim (connection sync's shadows).
func (c *Cluster) waitSynced(ctx context.Context, fs []*Flow, before []int, victim int, others []int) error {
	want := 0
	for _, h := range before {
		if h == victim {
			want++
		}
	}
	for {
		held, err := c.held(fs, before, victim, others)
		if err != nil {
			return err
		}
		all := true
		for _, n := range others {
			all = all && held[n] == want
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			var lines []string
			for _, n := range append([]int{victim}, others...) {
				lines = append(lines, fmt.Sprintf("t%d's:\n%s", n, c.Inst[n-1].MetricLines("tapvs_sync")))
			}
			return fmt.Errorf("the survivors hold %v of t%d's %d flows (connection sync): %w\n%s", held, victim, want, ctx.Err(), strings.Join(lines, "\n"))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// held counts, for each of the instances others, the flows on instance
// victim in its connection table (ESTABLISHED: connection sync's shadows).
func (c *Cluster) held(fs []*Flow, before []int, victim int, others []int) (map[int]int, error) {
	want := map[string]bool{}
	for i, f := range fs {
		if before[i] == victim {
			want[netip.AddrPortFrom(ClusterClient.Addr(), f.Port).String()] = true
		}
	}
	held := map[int]int{}
	for _, n := range others {
		conns, err := c.Inst[n-1].API().Conns()
		if err != nil {
			return nil, fmt.Errorf("t%d's connections: %w", n, err)
		}
		for _, cn := range conns {
			if want[cn.Source] && cn.State == "ESTABLISHED" {
				held[n]++
			}
		}
	}
	return held, nil
}

// The flows of a rejoin: about 6 s each (120 pieces), long enough for
// the instance to be killed, withdrawn, started again, to join and be
// announced while they run, and to carry them on a while after; a broken
// one is given up after rejoinLimit.
var rejoinFlows = FlowShape{Piece: 8 << 10, Pieces: 120, Pace: 50 * time.Millisecond}

const rejoinLimit = 20 * time.Second

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
	fs, before, others, err := c.openFlowsOf(ctx, victim, flows, rejoinFlows, rejoinLimit)
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
	if r.Withdrawn, err = c.waitWithdrawn(ctx, killed, others, 15*time.Second); err != nil {
		return r, err
	}
	if _, err := c.Hops(fs); err != nil {
		return r, err
	}
	fctx, fcancel := context.WithTimeout(ctx, rejoinLimit)
	defer fcancel()
	more, err := c.StartFlows(fctx, flows, rejoinFlows)
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
	// Its start, join and return, bounded.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
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
