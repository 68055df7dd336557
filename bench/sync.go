package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// The tapvs+sync path: what connection sync (the sync: section) costs the
// short-connection workload. It is the tapvs path's own daemon, restarted
// with a sync: section (sync takes a restart), so the two paths differ in
// that alone; the daemon is restarted without it for the tapvs paths after
// it. Its peer is a second tapvs, a process of its own in a namespace of
// the bench's (syncNS), with the same services on LIPs of its own and the
// bench tapvs's LIPs as its backups (bgp.backup_lips), so it keeps every
// record as a shadow, as a cluster's survivor would: the records are
// imported, not only received. The two talk over a veth pair the bench
// makes between this process's namespace, where the bench's tapvs opens
// its kernel sockets, and syncNS: the sync traffic never leaves the
// machine's bench links. The peer serves no client; the bench reads what it
// received and applied from its metrics.

var (
	syncHost = netip.MustParsePrefix("10.96.0.1/30") // the bench tapvs's end, in this process's namespace
	syncPeer = netip.MustParsePrefix("10.96.0.2/30") // the peer's, in syncNS
)

const (
	syncNS      = benchPrefix + "-peer"
	syncHostDev = benchPrefix + "-sync" // the veth's end in this namespace
	syncPort    = 7701
	// syncKey is the bench's cluster key: its two instances only.
	syncKey = "62656e6368206b6579206f66207461707673207379e6b3206265747765656e21"
	// peerMetrics is where the peer serves its metrics, in syncNS.
	peerMetrics = "127.0.0.1:9479"
	// peerNet is the peer's server-side /24, its LIPs .10-.17 as the bench
	// tapvs's on 172.25.84.0/24, which are its backups.
	peerNet = "172.25.85"
)

// syncSection is the sync: section of the bench tapvs (peer false) or of
// its peer.
func syncSection(peer bool) string {
	me, other, id, otherID := syncHost, syncPeer, 1, 2
	if peer {
		me, other, id, otherID = syncPeer, syncHost, 2, 1
	}
	return fmt.Sprintf(`sync:
  listen: %s
  id: %d
  peers: [{address: %s, id: %d}]
  keys: [{id: 1, key: %s}]
`, netip.AddrPortFrom(me.Addr(), syncPort), id, netip.AddrPortFrom(other.Addr(), syncPort), otherID, syncKey)
}

// tapvsConfig is the bench tapvs's configuration: its services for top,
// busy polling and TAP I/O as o asks (v's io first), and with v.sync the
// sync: section.
func tapvsConfig(top *lab.Topology, o Options, v variant) (*config.Config, error) {
	svcs := tapvsService
	if top.IPv6 {
		svcs += tapvsService6
	}
	extra := "log: {level: warn}\n"
	if v.sync {
		extra += syncSection(false)
	}
	cfg, err := config.Parse(top.Config(svcs, extra))
	if err != nil {
		return nil, err
	}
	cfg.BusyPoll = o.BusyPoll
	cfg.Pollers = o.Pollers
	if o.IO != "" {
		cfg.IO = o.IO
	}
	if v.io != "" {
		cfg.IO = v.io
	}
	return cfg, nil
}

// peerConfig is the peer's configuration: TAPs of its own in syncNS, its
// server side on a link of its own (a backup LIP on the server side's link
// is refused: the servers would reach it without the routers), the
// bench's IPv4 services on its own LIPs there (a record names its service,
// real server and LIP, and a peer lacking one refuses it), the bench
// tapvs's LIPs as backups, and the sync: section. A backup LIP needs a
// bgp: section; its one router is a port in syncNS where nothing listens
// (the peer announces nothing anywhere). Nor does it forward anything: its
// real servers' next hop is not there, which it would warn about every
// second (log level error).
func peerConfig(work string) string {
	var backups strings.Builder
	for i := range 8 {
		fmt.Fprintf(&backups, "    - {address: 172.25.84.1%d, rank: 1}\n", i)
	}
	return fmt.Sprintf(`interfaces:
  client: {name: %[1]s-pc, netns: %[2]s, address: %[3]s}
  server:
    name: %[1]s-ps
    netns: %[2]s
    address: %[4]s.4/24
    routes:
      - {dst: %[5]s, via: %[4]s.1}
services:
%[6]s
control: {socket: %[7]q}
log: {level: error}
metrics: {listen: %[8]s}
bgp:
  asn: 65001
  router_id: %[9]s
  connect_retry: 60s
  backup_lips:
%[10]s  peers:
    - {address: 127.0.0.1, asn: 65000, port: 1790}
%[11]s`, benchPrefix, syncNS, lab.TapvsClient, peerNet, lab.RSNet, strings.ReplaceAll(tapvsService, "172.25.84.1", peerNet+".1"),
		filepath.Join(work, "peer.sock"), peerMetrics, syncPeer.Addr(), backups.String(), syncSection(true))
}

// startSyncPeer makes the sync link and runs the peer on it, until close.
func (tb *testbed) startSyncPeer(ctx context.Context) error {
	steps := [][]string{
		{"netns", "add", syncNS},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	tb.undo = append(tb.undo, func() { exec.Command("ip", "netns", "del", syncNS).Run() })
	steps = [][]string{
		{"-n", syncNS, "link", "set", "lo", "up"},
		// The veth pair: its end here goes when syncNS's end does.
		{"link", "add", syncHostDev, "type", "veth", "peer", "name", "sync", "netns", syncNS},
		{"addr", "add", syncHost.String(), "dev", syncHostDev},
		{"link", "set", syncHostDev, "up"},
		{"-n", syncNS, "addr", "add", syncPeer.String(), "dev", "sync"},
		{"-n", syncNS, "link", "set", "sync", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	cfgFile := filepath.Join(tb.work, "peer.yaml")
	if err := os.WriteFile(cfgFile, []byte(peerConfig(tb.work)), 0o600); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", "netns", "exec", syncNS, self, "run", "-c", cfgFile, "--rootless", "never")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no peer outlives the bench
	cmd.Stdout, cmd.Stderr = tb.logf, tb.logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("the sync peer: %w", err)
	}
	tb.peer = cmd
	tb.procs = append(tb.procs, cmd)
	cl := api.Dial(filepath.Join(tb.work, "peer.sock"))
	for deadline := time.Now().Add(15 * time.Second); ; {
		if _, err := cl.Info(); err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			logs, _ := os.ReadFile(tb.logf.Name())
			return fmt.Errorf("the sync peer did not answer on its control socket:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// useVariant has the bench tapvs run as v asks (with connection sync or
// without, on a path's own TAP I/O or the run's), restarting it when it
// runs another way; with sync it returns once the peer is alive for it.
func (tb *testbed) useVariant(ctx context.Context, o Options, v variant) error {
	on := v.sync
	if tb.running == v {
		return nil
	}
	if on && tb.peer == nil {
		if err := tb.startSyncPeer(ctx); err != nil {
			return err
		}
	}
	io := v.io
	if io == "" {
		io = o.IO
	}
	if io == "" {
		io = "the default"
	}
	fmt.Fprintf(o.Out, "restarting tapvs with sync %v, TAP I/O %s...\n", map[bool]string{true: "on", false: "off"}[on], io)
	tb.d.Close()
	tb.d = nil
	if err := tb.startTapvs(ctx, o, v); err != nil {
		return err
	}
	if !on {
		return nil
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, alive, _ := tb.d.SyncStats(); alive == 1 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.New("tapvs+sync: the peer was not heard from within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncCount is what connection sync counted at one moment: the bench
// tapvs's sending side, the peer's receiving side, and the peer's CPU.
type syncCount struct {
	conns                                    float64 // the bench tapvs's connections in its table
	sentBytes, sentDgrams, sentRecords       float64 // UPDATE datagrams; bytes of every datagram
	peerBytes, peerDgrams, peerRecords       float64 // accepted by the peer, and the records in them
	peerLost                                 float64 // UPDATE datagrams the peer missed (its HELLOs' count)
	peerApplied, peerRefused, peerCPUSeconds float64 // records the peer put in its table, and refused
}

// syncCounters reads the counters: the bench tapvs's in this process, the
// peer's from its metrics.
func (tb *testbed) syncCounters() (syncCount, error) {
	s, _, ok := tb.d.SyncStats()
	if !ok {
		return syncCount{}, errors.New("tapvs runs without sync")
	}
	body, err := lab.ScrapeMetrics(syncNS, peerMetrics)
	if err != nil {
		return syncCount{}, fmt.Errorf("the sync peer's metrics: %w", err)
	}
	return syncCount{
		conns:     float64(tb.d.Balancer.Table().Len()),
		sentBytes: float64(s.SentBytes), sentDgrams: float64(s.Sent), sentRecords: float64(s.SentRecords),
		peerBytes:      lab.MetricSum(body, `tapvs_sync_bytes_total{direction="received"} `),
		peerDgrams:     lab.MetricSum(body, `tapvs_sync_datagrams_total{result="received"} `),
		peerRecords:    lab.MetricSum(body, `tapvs_sync_records_total{result="received"} `),
		peerLost:       lab.MetricSum(body, `tapvs_sync_datagrams_total{result="lost"} `),
		peerApplied:    lab.MetricSum(body, `tapvs_sync_records_total{result="applied"} `),
		peerRefused:    lab.MetricSum(body, `tapvs_sync_records_total{result="refused_`),
		peerCPUSeconds: procSeconds(tb.peer.Process.Pid),
	}, nil
}

// SyncRun is one run of the short-connection workload through tapvs+sync:
// its rate, and per new connection (wrk's requests, one a connection)
// what sync sent and the peer took.
type SyncRun struct {
	CPS                    float64
	Bytes, Datagrams       float64 // sent: bytes of every datagram; UPDATE datagrams
	Records                float64 // records sent
	PeerApplied            float64 // records the peer put in its table
	PeerRefused            float64 // records the peer refused (per run, not per connection)
	PeerLost               float64 // UPDATE datagrams the peer missed (per run)
	PeerCPUPerKConn        float64 // the peer's CPU-seconds per 1000 connections
	peerBytes, peerRecords float64
}

// closingTimeout is the longest a closing TCP connection stays in a
// table with timeouts t: FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK.
func closingTimeout(t nat.Timeouts) time.Duration {
	var d time.Duration
	for i, n := range nat.TCPStateNames() { // TCP's order
		if slices.Contains([]string{"fin_wait", "time_wait", "close", "close_wait", "last_ack"}, n) {
			d = max(d, t.TCP[i])
		}
	}
	return d
}

// syncSettle waits until the records the run's connections cause are
// sent and the peer has what reaches it: the tombstones of those that
// closed too, each sent when its connection leaves the table, up to
// closing (closingTimeout) after its close, then the next sweep (100 ms),
// drain (10 ms) and send. Done once closing and a second have passed, the
// bench tapvs's connection count has stopped falling for a second (a few
// of wrk's connections cut at its end may stay, with longer timeouts), its
// record count has stopped rising, and the peer has received as many or
// its count has not moved for half a second (two HELLOs: a datagram lost
// on the way, which sync tolerates and the peer counts as lost); or 30 s
// later.
func syncSettle(ctx context.Context, read func() (syncCount, error), c0 syncCount, closing time.Duration) (syncCount, error) {
	start := time.Now()
	last, err := read()
	connsStill, peerStill := time.Now(), time.Now() // since each count last moved
	for deadline := start.Add(closing + 30*time.Second); err == nil && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(50 * time.Millisecond)
		var c syncCount
		if c, err = read(); err != nil {
			break
		}
		if c.conns != last.conns {
			connsStill = time.Now()
		}
		if c.peerRecords != last.peerRecords {
			peerStill = time.Now()
		}
		expired := time.Since(start) >= closing+time.Second && (c.conns == 0 || time.Since(connsStill) >= time.Second)
		caughtUp := c.peerRecords-c0.peerRecords >= c.sentRecords-c0.sentRecords || time.Since(peerStill) >= 500*time.Millisecond
		if expired && c.sentRecords == last.sentRecords && caughtUp {
			return c, nil
		}
		last = c
	}
	if err == nil {
		err = fmt.Errorf("sync: the run's records not all sent within %s (%.0f connections left, %.0f records sent, the peer received %.0f)",
			closing+30*time.Second, last.conns, last.sentRecords-c0.sentRecords, last.peerRecords-c0.peerRecords)
	}
	return last, err
}

// syncRun is one run's figures from the counters before and after it.
func syncRun(w wrkResult, c0, c1 syncCount) (SyncRun, error) {
	if c1.sentRecords <= c0.sentRecords {
		return SyncRun{}, errors.New("sync is on, and not one record was sent")
	}
	if c1.peerApplied <= c0.peerApplied {
		return SyncRun{}, fmt.Errorf("the peer applied none of the %.0f records sent (refused %.0f)", c1.sentRecords-c0.sentRecords, c1.peerRefused-c0.peerRefused)
	}
	conns := max(w.requests, 1)
	return SyncRun{
		CPS:   w.rps,
		Bytes: (c1.sentBytes - c0.sentBytes) / conns, Datagrams: (c1.sentDgrams - c0.sentDgrams) / conns,
		Records: (c1.sentRecords - c0.sentRecords) / conns, PeerApplied: (c1.peerApplied - c0.peerApplied) / conns,
		PeerRefused: c1.peerRefused - c0.peerRefused, PeerLost: c1.peerLost - c0.peerLost,
		PeerCPUPerKConn: (c1.peerCPUSeconds - c0.peerCPUSeconds) / (conns / 1000),
		peerBytes:       (c1.peerBytes - c0.peerBytes) / conns, peerRecords: (c1.peerRecords - c0.peerRecords) / conns,
	}, nil
}

// syncTable renders the sync cost, when tapvs+sync ran: run by run against
// the tapvs path's run of the same index (the same bench run, their runs
// alternating: measureSyncPair), and the medians.
func syncTable(b *strings.Builder, rs []Result) (ratio float64) {
	t, s := find(rs, "tapvs"), find(rs, "tapvs+sync")
	if len(s.Sync) == 0 {
		return 0
	}
	b.WriteString("\nConnection sync's cost, short connections (wrk, 32 connections, `Connection: close`): tapvs+sync is the tapvs path's daemon restarted with a `sync:` section, sending to a second tapvs (its peer, in its own namespace over a veth of the bench's) that imports every record as a shadow; per new connection (wrk's requests):\n\n")
	b.WriteString("| run | tapvs conns/s | tapvs+sync conns/s | sync on / off | sync bytes sent | UPDATE datagrams | records | peer: records applied (refused; UPDATEs lost, in the run) | peer: CPU-s/1k conns |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	var ratios, cps, off, bytes, dgrams, recs, applied, cpu []float64
	for i, r := range s.Sync {
		rt := "—"
		if i < len(t.ShortRuns) && t.ShortRuns[i] > 0 {
			ratios = append(ratios, r.CPS/t.ShortRuns[i])
			off = append(off, t.ShortRuns[i])
			rt = fmt.Sprintf("%.2f×", r.CPS/t.ShortRuns[i])
		}
		fmt.Fprintf(b, "| %d | %s | %.0f | %s | %.1f | %.3f | %.2f | %.2f (%.0f; %.0f) | %.3f |\n", i+1, cell(t.ShortRuns, i), r.CPS, rt, r.Bytes, r.Datagrams, r.Records, r.PeerApplied, r.PeerRefused, r.PeerLost, r.PeerCPUPerKConn)
		cps, bytes, dgrams = append(cps, r.CPS), append(bytes, r.Bytes), append(dgrams, r.Datagrams)
		recs, applied, cpu = append(recs, r.Records), append(applied, r.PeerApplied), append(cpu, r.PeerCPUPerKConn)
	}
	ratio = median(ratios)
	fmt.Fprintf(b, "| median | %s | %.0f | %s | %.1f | %.3f | %.2f | %.2f | %.3f |\n", num(median(off), "%.0f"), median(cps), num(ratio, "%.2f×"), median(bytes), median(dgrams), median(recs), median(applied), median(cpu))
	b.WriteString("\nsync on / off: each run against the tapvs path's run of the same number; the two paths' runs alternate (ABBA: tapvs first in odd runs, tapvs+sync in even ones), tapvs restarted with or without sync at each switch; the median of the runs' ratios is the target's. Bytes: the UDP payload of every sync datagram sent (`tapvs_sync_bytes_total{direction=\"sent\"}`: UPDATEs, HELLOs; headers and tags included), datagrams and records from `tapvs_sync_datagrams_total{result=\"sent\"}` and the records in those UPDATEs; the peer's from its metrics. The peer shares the machine's cores.\n")
	return ratio
}

// cell is v[i], or "—".
func cell(v []float64, i int) string {
	if i >= len(v) || v[i] == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", v[i])
}
