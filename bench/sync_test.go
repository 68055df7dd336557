package bench

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/connsync"
	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// The tapvs+sync path's daemon has the sync: section, sending to the peer
// on the bench's sync link, and the tapvs path's has none: the two differ
// in sync alone.
func TestSyncPathConfig(t *testing.T) {
	top := lab.NewTopology(benchPrefix, tapClient, tapServer)
	off, err := tapvsConfig(top, Options{}, variant{})
	if err != nil {
		t.Fatal(err)
	}
	if off.Sync != nil {
		t.Fatalf("the tapvs path's config has a sync: section: %+v", off.Sync)
	}
	on, err := tapvsConfig(top, Options{BusyPoll: time.Millisecond, IO: "uring"}, variant{sync: true})
	if err != nil {
		t.Fatal(err)
	}
	s := on.Sync
	if s == nil {
		t.Fatal("the tapvs+sync path's config has no sync: section")
	}
	if s.Listen != netip.AddrPortFrom(syncHost.Addr(), syncPort) || s.ID != 1 ||
		!slices.Equal(s.Peers, []connsync.Peer{{Addr: netip.AddrPortFrom(syncPeer.Addr(), syncPort), ID: 2}}) || len(s.Keys) != 1 {
		t.Fatalf("sync: %+v", s)
	}
	if on.BusyPoll != time.Millisecond || on.IO != "uring" {
		t.Errorf("busy_poll %s, io %q: the options' are not applied with sync", on.BusyPoll, on.IO)
	}
	// Otherwise the same services.
	if len(on.Services) != len(off.Services) {
		t.Fatalf("%d services with sync, %d without", len(on.Services), len(off.Services))
	}
	// The sync link is a /30 of its own, in no subnet of the lab's.
	if syncHost.Masked() != syncPeer.Masked() || syncHost.Addr() == syncPeer.Addr() {
		t.Fatalf("sync link %s - %s", syncHost, syncPeer)
	}
	for _, p := range []netip.Prefix{lab.ClientAddr, lab.RouterAddr, lab.RSNet, vipNet, netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("10.97.0.0/24")} {
		if p.Masked().Overlaps(syncHost.Masked()) {
			t.Errorf("the sync link %s overlaps %s", syncHost.Masked(), p)
		}
	}
}

// The peer's configuration parses; it listens where the bench tapvs sends,
// sends back to it under the same key, has the bench's IPv4 services (a
// record names its service and real server) on LIPs of its own, and backs
// up every LIP of the bench tapvs, so that it imports their records as
// shadows instead of refusing them (unknown_lip).
func TestSyncPeerConfig(t *testing.T) {
	top := lab.NewTopology(benchPrefix, tapClient, tapServer)
	bench, err := tapvsConfig(top, Options{}, variant{sync: true})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := config.Parse(peerConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if peer.Sync == nil {
		t.Fatal("the peer has no sync: section")
	}
	if peer.Sync.Listen != bench.Sync.Peers[0].Addr || peer.Sync.ID != bench.Sync.Peers[0].ID ||
		!slices.Equal(peer.Sync.Peers, []connsync.Peer{{Addr: bench.Sync.Listen, ID: bench.Sync.ID}}) ||
		string(peer.Sync.Keys[0].Secret) != string(bench.Sync.Keys[0].Secret) || peer.Sync.Keys[0].ID != bench.Sync.Keys[0].ID {
		t.Fatalf("peer's sync %+v does not answer the bench's %+v", peer.Sync, bench.Sync)
	}
	if peer.Client.Netns != syncNS || peer.Server.Netns != syncNS {
		t.Errorf("the peer's TAPs go to %q and %q, not %q", peer.Client.Netns, peer.Server.Netns, syncNS)
	}
	if peer.BGP == nil {
		t.Fatal("the peer has no bgp: section: no backup LIPs")
	}
	var backups []netip.Addr
	for _, b := range peer.BGP.BackupLIPs {
		backups = append(backups, b.Addr)
	}
	own := map[netip.Addr]bool{}
	for _, s := range peer.Services {
		for _, l := range s.LocalAddresses {
			own[l] = true
		}
	}
	for _, s := range bench.Services {
		if s.VIP.Is6() {
			continue // the IPv6 paths are not synced in the bench
		}
		var ps *config.Service
		for i := range peer.Services {
			if peer.Services[i].Name == s.Name {
				ps = &peer.Services[i]
			}
		}
		if ps == nil || ps.VIP != s.VIP || ps.Port != s.Port || ps.Protocol != s.Protocol || !reflect.DeepEqual(ps.RealServers, s.RealServers) {
			t.Errorf("service %s: the peer's is %+v", s.Name, ps)
			continue
		}
		for _, l := range s.LocalAddresses {
			if !slices.Contains(backups, l) {
				t.Errorf("%s's LIP %s is not one of the peer's backups %v", s.Name, l, backups)
			}
			if own[l] {
				t.Errorf("%s's LIP %s is the peer's own too", s.Name, l)
			}
		}
	}
}

// syncFake is the counters a tapvs+sync path reads: each wrk run of the
// fake client sends perConn of everything for each of its requests.
type syncFake struct {
	c       syncCount
	reads   int
	applied float64 // records the peer applies of each one sent
}

func (f *syncFake) read() (syncCount, error) {
	f.reads++
	return f.c, nil
}

func (f *syncFake) run(conns float64) {
	f.c.sentBytes += 300 * conns
	f.c.sentDgrams += conns / 2
	f.c.sentRecords += 3 * conns
	f.c.peerBytes += 300 * conns
	f.c.peerDgrams += conns / 2
	f.c.peerRecords += 3 * conns
	f.c.peerApplied += 3 * conns * f.applied
	f.c.peerCPUSeconds += conns / 10000
}

// syncClient is a fake client whose short runs make sync traffic.
type syncClient struct {
	*fakeClient
	sf *syncFake
}

func (c syncClient) wrk(ctx context.Context, to netip.AddrPort, sec string, close bool, conns int) (wrkResult, error) {
	w, err := c.fakeClient.wrk(ctx, to, sec, close, conns)
	c.sf.run(w.requests)
	return w, err
}

// Through a Sync path the short workload reads sync's counters around each
// run and reports per new connection what was sent and what the peer took,
// run by run.
func TestMeasureSync(t *testing.T) {
	var cpu float64
	sf := &syncFake{applied: 1}
	f := &fakeClient{short: []wrkResult{{rps: 300, requests: 1000}, {rps: 100, requests: 4000}}, cpu: &cpu}
	p := testPath(&cpu, false)
	p.Sync, p.syncCounters = true, sf.read
	r, err := measure(context.Background(), syncClient{f, sf}, p, Options{Runs: 2, Duration: time.Second, Workloads: []string{"short"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Sync) != 2 {
		t.Fatalf("%d sync runs, want 2: %+v", len(r.Sync), r.Sync)
	}
	for i, want := range []float64{300, 100} {
		s := r.Sync[i]
		if s.CPS != want || s.Bytes != 300 || s.Datagrams != 0.5 || s.Records != 3 || s.PeerApplied != 3 || s.PeerCPUPerKConn != 0.1 {
			t.Errorf("run %d: %+v", i+1, s)
		}
	}
	if !slices.Equal(r.ShortRuns, []float64{300, 100}) {
		t.Errorf("short runs %v", r.ShortRuns)
	}
	// A path without sync reads no counters.
	sf.reads = 0
	p.Sync = false
	f.short = []wrkResult{{rps: 1, requests: 1}}
	if r, err := measure(context.Background(), syncClient{f, sf}, p, Options{Workloads: []string{"short"}}); err != nil || r.Sync != nil || sf.reads != 0 {
		t.Errorf("without sync: %+v, %d reads, %v", r.Sync, sf.reads, err)
	}
}

// A Sync path whose tapvs sent no record, or whose peer applied none, is
// a failed measurement, not a sync cost of 0.
func TestMeasureSyncNothingSent(t *testing.T) {
	for _, tc := range []struct {
		name string
		sf   *syncFake
		want string
	}{
		{"nothing sent", &syncFake{}, "not one record was sent"},
		{"nothing applied", &syncFake{applied: 0}, "the peer applied none"},
	} {
		var cpu float64
		f := &fakeClient{short: []wrkResult{{rps: 300, requests: 1000}}, cpu: &cpu}
		p := testPath(&cpu, false)
		p.Sync, p.syncCounters = true, tc.sf.read
		var c client = syncClient{f, tc.sf}
		if tc.name == "nothing sent" {
			c = f // its runs make no sync traffic
		}
		_, err := measure(context.Background(), c, p, Options{Workloads: []string{"short"}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// And counters that cannot be read fail it too.
	var cpu float64
	p := testPath(&cpu, false)
	p.Sync, p.syncCounters = true, func() (syncCount, error) { return syncCount{}, errTool }
	f := &fakeClient{short: []wrkResult{{rps: 300, requests: 1000}}, cpu: &cpu}
	if _, err := measure(context.Background(), f, p, Options{Workloads: []string{"short"}}); !errors.Is(err, errTool) {
		t.Errorf("unreadable counters: %v", err)
	}
}

// The settle after a run waits for the table to stop shrinking (the
// tombstones) and for the peer; a datagram lost on the way (sync
// tolerates it) ends the wait once the peer's count stops moving, and a
// few connections left with long timeouts once the count stops falling,
// not after the 30 s bound.
func TestSyncSettle(t *testing.T) {
	c0 := syncCount{}
	reads := 0
	read := func() (syncCount, error) {
		reads++
		c := syncCount{conns: 3, sentRecords: 100, peerRecords: 90}
		if reads > 4 { // the connections expire, their tombstones go, two stay
			c.conns, c.sentRecords, c.peerRecords = 2, 120, 110
		}
		return c, nil
	}
	start := time.Now()
	c, err := syncSettle(context.Background(), read, c0, 200*time.Millisecond)
	if err != nil || c.conns != 2 || c.sentRecords != 120 {
		t.Fatalf("%+v, %v", c, err)
	}
	if d := time.Since(start); d < 1200*time.Millisecond || d > 5*time.Second {
		t.Errorf("settled in %s: not after the closing timeout and a second, the connection count still for 1 s", d)
	}
}

// The bench's closing timeout is the longest of the closing states'.
func TestClosingTimeout(t *testing.T) {
	to := nat.DefaultTimeouts()
	to.SetTCP("last_ack", 11*time.Second)
	to.SetEstablished(time.Hour)
	if d := closingTimeout(to); d != 11*time.Second {
		t.Errorf("%s, want 11s", d)
	}
}

// The tapvs+syscalls path's daemon reads and writes its TAPs with system
// calls whatever the run's interfaces.io, and the tapvs path's keeps the
// run's: the two differ in TAP I/O alone.
func TestSyscallsPathConfig(t *testing.T) {
	top := lab.NewTopology(benchPrefix, tapClient, tapServer)
	var sys Path
	for _, p := range paths(0) {
		if p.Name == "tapvs+syscalls" {
			sys = p
		}
	}
	if sys.IO != "syscalls" || sys.Sync {
		t.Fatalf("tapvs+syscalls: %+v", sys)
	}
	o := Options{IO: "uring"}
	def, err := tapvsConfig(top, o, variant{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := tapvsConfig(top, o, sys.variant())
	if err != nil {
		t.Fatal(err)
	}
	if def.IO != "uring" || got.IO != "syscalls" || got.Sync != nil || len(got.Services) != len(def.Services) {
		t.Fatalf("io %q and %q, sync %v, %d and %d services", def.IO, got.IO, got.Sync, len(def.Services), len(got.Services))
	}
}
