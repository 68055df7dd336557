package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// needRouter stops a test whose router is not installed (in CI: fails).
func needRouter(t *testing.T, router string) {
	t.Helper()
	bin := map[string]string{lab.RouterFRR: "/usr/lib/frr/bgpd", lab.RouterBIRD: "bird"}[router]
	if bin == "" {
		return
	}
	if _, err := exec.LookPath(bin); err == nil {
		return
	}
	msg := fmt.Sprintf("the cluster test needs %s (apt-get install frr bird2; bash .ci/deps installs them)", bin)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// startCluster builds a cluster lab of n tapvs processes behind router and
// starts it; everything goes when the test ends, whatever its outcome.
// clusterBinAndPrefix builds the tapvs binary the instances run and claims
// a namespace prefix for one cluster.
func clusterBinAndPrefix(t *testing.T) (bin, prefix string) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), "tapvs")
	if err := prebuilt(bin, "TAPVS_E2E_TAPVS", "../cmd/tapvs"); err != nil {
		t.Fatal(err)
	}
	var rnd [2]byte
	rand.Read(rnd[:])
	prefix = nsPrefix + hex.EncodeToString(rnd[:])
	claim(t, prefix)
	return bin, prefix
}

func startCluster(t *testing.T, router string, n int) *lab.Cluster {
	t.Helper()
	return startClusterWith(t, router, n, nil)
}

// startClusterWith is startCluster with the lab's options set by with
// (nil: none) before it is built.
func startClusterWith(t *testing.T, router string, n int, with func(*lab.Cluster)) *lab.Cluster {
	t.Helper()
	need(t)
	needRouter(t, router)
	bin, prefix := clusterBinAndPrefix(t)
	c := &lab.Cluster{Prefix: prefix, Instances: n, Router: router, TapvsBin: bin, Logs: testWriter{t}}
	if with != nil {
		with(c)
	}
	if err := c.Build(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("router (%s):\n%s", router, c.RouterState())
		}
		if err := c.Destroy(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// The lab's data path without BGP: the router's static ECMP route over
// three tapvs processes, each in its own namespace, spreads flows over all
// three, each answering from its own LIPs.
func TestClusterStatic(t *testing.T) {
	c := startCluster(t, lab.RouterStatic, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(ctx, lab.VIP, 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	by := c.Spread(context.Background(), 300)
	t.Logf("300 connections by instance: %v", by)
	if by[0] != 0 {
		t.Fatalf("%d of 300 connections failed", by[0])
	}
	for n := 1; n <= 3; n++ {
		if by[n] < 60 {
			t.Errorf("instance %d carried %d of 300 connections, fewer than 20%%", n, by[n])
		}
	}
}

// ecmpAndSpread checks that the router has the VIP over all n instances
// within 5 s of their start, and that 300 connections reach every one, none
// with fewer than 20% of them.
func ecmpAndSpread(t *testing.T, c *lab.Cluster, n int) {
	t.Helper()
	all := make([]int, n)
	for i := range all {
		all[i] = i + 1
	}
	ctx, cancel := context.WithDeadline(context.Background(), c.Started.Add(5*time.Second))
	defer cancel()
	if _, err := c.WaitNextHops(ctx, lab.VIP, all...); err != nil {
		t.Fatalf("within 5 s of the instances' start: %v\n%s", err, c.RouterState())
	}
	ecmp := time.Now()
	t.Logf("%s: the VIP over all %d instances %v after their start", c.Router, n, ecmp.Sub(c.Started).Round(time.Millisecond))
	// Where the time went, from each instance's log: its session up, and
	// its last announcement of the VIP before the router had all three.
	for _, in := range c.Inst {
		up, ok1 := in.LoggedAt("bgp: peer state", "to=established")
		ann, ok2 := in.LoggedAt("bgp: announce", "prefix="+lab.VIP.String()+"/32")
		if ok1 && ok2 {
			t.Logf("  t%d: session established +%v, VIP announced +%v", in.N,
				up.Sub(c.Started).Round(time.Millisecond), ann.Sub(c.Started).Round(time.Millisecond))
		}
	}
	for _, in := range c.Inst {
		for _, lip := range in.LIPs {
			if hops, err := c.NextHops(lip); err != nil || len(hops) != 1 || hops[0] != in.N {
				t.Fatalf("the router's route to t%d's LIP %s goes to %v (%v), want [%d]", in.N, lip, hops, err, in.N)
			}
		}
	}
	by := c.Spread(context.Background(), 300)
	t.Logf("%s: 300 connections by instance (LIP the real server saw): %v", c.Router, by)
	if by[0] != 0 {
		t.Fatalf("%d of 300 connections failed", by[0])
	}
	for _, i := range all {
		if by[i] < 60 {
			t.Errorf("instance %d carried %d of 300 connections, fewer than 20%%", i, by[i])
		}
	}
}

// killDuringTransfers SIGKILLs the first of the router's next hops (ECMP
// moves some of the survivors' flows between them then) during flows
// transfers of shape, once every one carries bytes, and checks that the
// router withdraws it within 1 s and that no flow on a survivor broke;
// what broke of the victim's (without sync: its state died with it) is
// counted and logged: the baseline TestClusterFRRSync improves on.
func killDuringTransfers(t *testing.T, c *lab.Cluster, flows int, shape lab.FlowShape) {
	t.Helper()
	victim, _ := firstHop(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.FlowShape = shape
	r, err := c.KillDuringTransfers(ctx, victim, flows)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: SIGKILL of t%d without sync during %d uploads of %v (opened in %v, killed %v after the first), %d still sending: withdrawn in %v; %s",
		c.Router, victim, flows, shape.Duration(), r.Opened.Round(time.Millisecond), r.Killed.Round(time.Millisecond), r.Sending,
		r.Withdrawn.Round(time.Millisecond), r.Tally)
	for i, e := range r.Errors {
		if i == 10 {
			t.Logf("  and %d more", len(r.Errors)-i)
			break
		}
		t.Logf("  broken: %s", e)
	}
	if r.Sending != flows {
		t.Errorf("%d of %d uploads had ended before the kill: not a kill mid-transfer", flows-r.Sending, flows)
	}
	if r.Withdrawn >= time.Second {
		t.Errorf("the router withdrew the killed t%d after %v, not within 1 s", victim, r.Withdrawn)
	}
	if r.StayedBroken != 0 {
		t.Errorf("%d of the %d flows that stayed on a survivor broke", r.StayedBroken, r.Stayed)
	}
	// The survivors' flows that the router moved between them are handed
	// to the survivor that holds them (handoff:): none breaks either.
	if r.MovedBroken != 0 {
		t.Errorf("%d of the %d flows the router moved between survivors broke", r.MovedBroken, r.Moved)
	}
	if r.Stayed == 0 {
		t.Errorf("no flow stayed on a survivor: nothing shown")
	}
}

// TestClusterFRR runs three tapvs processes announcing the VIP over BGP to
// FRR: 3-way ECMP within 5 s; 300 connections over all three; every real
// server failing in one instance's view withdraws the VIP from it alone,
// and recovery announces it again; a drain withdraws it, no new
// connection reaches it, none of the connections open on it breaks (the
// survivors hand their segments back to it: handoff:), and it reports
// itself empty; SIGKILL of one (the router's first next hop) during 300
// transfers (TestClusterFRRSync's workload, without sync) is withdrawn
// within 1 s, and no flow on a survivor breaks, not even those the router
// moved between survivors; the killed instance's are counted and logged
// (what sync saves).
func TestClusterFRR(t *testing.T) {
	c := startCluster(t, lab.RouterFRR, 3)
	ecmpAndSpread(t, c, 3)

	// Health: t2 cannot reach either real server (its kernel refuses to
	// forward to them): its checks fail, it withdraws the VIP, and only it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	block := []string{"-n", c.Inst[1].NS, "route", "add", "prohibit", lab.RSNet.String()}
	if out, err := exec.Command("ip", block...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", block, err, out)
	}
	failed := time.Now()
	if _, err := c.WaitNextHops(ctx, lab.VIP, 1, 3); err != nil {
		t.Fatalf("t2's real servers unreachable: %v\n%s", err, c.RouterState())
	}
	t.Logf("t2's real servers unreachable: the VIP withdrawn from t2 alone after %v", time.Since(failed).Round(time.Millisecond))
	if by := c.Spread(ctx, 30); by[0] != 0 || by[2] != 0 {
		t.Fatalf("30 connections while t2 is withdrawn: %v, want none failed and none on t2", by)
	}
	block[3] = "del"
	if out, err := exec.Command("ip", block...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", block, err, out)
	}
	back := time.Now()
	if _, err := c.WaitNextHops(ctx, lab.VIP, 1, 2, 3); err != nil {
		t.Fatalf("t2's real servers back: %v", err)
	}
	installed := time.Now()
	t.Logf("t2's real servers back: the VIP announced again after %v", installed.Sub(back).Round(time.Millisecond))
	if at, ok := c.Inst[1].LoggedAt("bgp: announce", "prefix="+lab.VIP.String()+"/32"); ok {
		t.Logf("frr: t2's announcement of the VIP (its log) to the router's FIB with it: %v", installed.Sub(at).Round(time.Millisecond))
	}

	reloadAddsAVIP(t, c)

	// Drain t1 during transfers.
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	d, err := c.DrainDuringTransfers(dctx, 1, 45, 60)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("drain of t1: withdrawn in %v; %d new connections after: %d on t1, %d failed; empty after %v; %s",
		d.Withdrawn.Round(time.Millisecond), d.NewConns, d.NewOnDrained, d.NewFailed, d.Empty.Round(time.Millisecond), d.Tally)
	for _, e := range d.Errors {
		t.Logf("  broken: %s", e)
	}
	if d.NewOnDrained != 0 || d.NewFailed != 0 {
		t.Errorf("after the drain's withdrawal, %d new connections reached t1 and %d failed", d.NewOnDrained, d.NewFailed)
	}
	// The drained instance's flows, which the router sends elsewhere
	// once it is withdrawn, are handed back to it (handoff:), and so are
	// the survivors' flows the router moved: no open connection breaks.
	if d.GoneBroken+d.MovedBroken+d.StayedBroken != 0 {
		t.Errorf("a drain broke open connections: %s", d.Tally)
	}
	if d.Gone == 0 {
		t.Errorf("no flow was on the drained t1: nothing shown")
	}
	if _, err := c.Inst[0].API().Undrain(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitNextHops(ctx, lab.VIP, 1, 2, 3); err != nil {
		t.Fatalf("after the drain ended: %v", err)
	}

	// The same workload as TestClusterFRRSync's, without sync: what a
	// SIGKILL loses.
	killDuringTransfers(t, c, 300, lab.LongFlows)
}

// TestClusterBIRD is TestClusterFRR's core with BIRD as the router: 3-way
// ECMP, the spread, and SIGKILL during transfers.
func TestClusterBIRD(t *testing.T) {
	c := startCluster(t, lab.RouterBIRD, 3)
	ecmpAndSpread(t, c, 3)
	killDuringTransfers(t, c, 45, lab.ShortFlows)
}

// `tapvs lab --cluster 3` (README's cluster section): the router's three
// equal paths, the spread over all three, the drain and the SIGKILL
// reported, and everything removed after.
func TestLabClusterCommand(t *testing.T) {
	need(t)
	needRouter(t, lab.RouterFRR)
	bin, prefix := clusterBinAndPrefix(t)
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := lab.RunCluster(ctx, lab.ClusterOptions{Instances: 3, Router: lab.RouterFRR, TapvsBin: bin,
		Requests: 90, Flows: 24, Out: &out, Prefix: prefix})
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"the router's FIB has the VIP over all 3 instances",
		"nexthop via 10.1.1.2 dev t1", "nexthop via 10.1.2.2 dev t2", "nexthop via 10.1.3.2 dev t3",
		"the router withdrew t1 ", "60 new connections after that: 0 reached t1, 0 failed",
		"t1 reported itself empty", "drain ended: t1 announced again",
		"the router withdrew t2 ", "cluster lab removed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the cluster lab's output has no %q", want)
		}
	}
	for n := 1; n <= 3; n++ {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^  t%d: +[1-9][0-9]* \(`, n)).MatchString(out.String()) {
			t.Errorf("the cluster lab's output shows no connection on t%d", n)
		}
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), prefix+"-") {
		t.Errorf("namespaces left after the cluster lab:\n%s", ns)
	}
}

// reloadAddsAVIP has t1 reload its file with a second VIP outside its client
// TAP's subnet: the router learns it over t1's session, which the reload
// keeps, and requests to it are answered through t1 (tapvs put the host
// route VIP → client TAP into t1's namespace); reloading without it
// withdraws it, the first VIP staying over all three.
func reloadAddsAVIP(t *testing.T, c *lab.Cluster) {
	t.Helper()
	vip2 := netip.MustParseAddr("172.30.0.100")
	svc := fmt.Sprintf(`  - name: web2
    vip: %s
    port: 80
    scheduler: rr
    local_addresses: [%s]
    real_servers:
      - {address: %s, port: 80}
      - {address: %s, port: 80}
`, vip2, lab.ClusterLIP(1, 0), lab.RS1, lab.RS2)
	before, err := c.Inst[0].API().BGP()
	if err != nil || len(before.Peers) != 1 {
		t.Fatalf("t1's BGP: %+v, %v", before, err)
	}
	if r, err := c.Reload(1, svc); err != nil {
		t.Fatalf("t1's reload with %s: %v (%+v)", vip2, err, r)
	}
	reloaded := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(ctx, vip2, 1); err != nil {
		t.Fatalf("after t1's reload: %v\n%s", err, c.RouterState())
	}
	t.Logf("frr: t1's reload with a second VIP %s: in the router's FIB %v later", vip2, time.Since(reloaded).Round(time.Millisecond))
	hc := lab.HTTPClient(c.Client, 5*time.Second)
	for i := range 10 {
		resp, err := hc.Get("http://" + netip.AddrPortFrom(vip2, lab.HTTPPort).String() + "/")
		if err != nil {
			t.Fatalf("request %d to %s: %v", i+1, vip2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var name, rs, saw string
		fmt.Sscanf(string(body), "%s %s saw %s", &name, &rs, &saw)
		if src, err := netip.ParseAddrPort(saw); err != nil || lab.InstanceOf(src.Addr()) != 1 {
			t.Fatalf("request %d to %s: answer %q, want one from t1's LIP", i+1, vip2, body)
		}
	}
	after, err := c.Inst[0].API().BGP()
	if err != nil || len(after.Peers) != 1 {
		t.Fatalf("t1's BGP after the reload: %+v, %v", after, err)
	}
	if b, a := before.Peers[0], after.Peers[0]; a.State != "established" || a.Established != b.Established || a.Since != b.Since {
		t.Fatalf("t1's session did not survive the reload: before %+v, after %+v", b, a)
	}
	if _, err := c.Reload(1, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitNextHops(ctx, vip2); err != nil {
		t.Fatalf("after t1's reload without %s: %v", vip2, err)
	}
	if hops, err := c.NextHops(lab.VIP); err != nil || len(hops) != 3 {
		t.Fatalf("after t1's reloads: the first VIP over %v (%v), want all three", hops, err)
	}
}

// LIP failover (bgp: backup_lips, the lab's default): two instances each
// announce their own LIPs with the configured MED and the other's as its
// first backup (MED + 101). The router's best path for t1's LIP is t1's,
// and its FIB sends the LIP to t1 alone (a worse MED is never ECMP); once
// t1 is killed, the best path and the FIB go to t2, whose stack answers for the
// LIP on its server side: a real server's segment to it reaches t2's
// balancer, which drops it (counted) until connection sync gives it state.
func TestClusterFRRBackupLIPs(t *testing.T) { backupLIPFailover(t, lab.RouterFRR) }

// TestClusterBIRDBackupLIPs is TestClusterFRRBackupLIPs with BIRD as the
// router (its table read with birdc).
func TestClusterBIRDBackupLIPs(t *testing.T) { backupLIPFailover(t, lab.RouterBIRD) }

func backupLIPFailover(t *testing.T, router string) {
	c := startCluster(t, router, 2)
	lip := c.Inst[0].LIPs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(ctx, lip, 1); err != nil {
		t.Fatalf("t1's LIP: %v\n%s", err, c.RouterState())
	}
	want := []lab.BGPPath{{Instance: 1, MED: 0, Best: true}, {Instance: 2, MED: 101}}
	var paths []lab.BGPPath
	for ctx.Err() == nil {
		var err error
		if paths, err = c.BGPPaths(lip); err != nil {
			t.Fatal(err)
		}
		if slices.Equal(paths, want) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Equal(paths, want) {
		t.Fatalf("the router's paths for t1's LIP %s: %+v, want %+v", lip, paths, want)
	}
	t.Logf("t1's LIP %s: the router holds %+v; its FIB sends it to t1 alone", lip, paths)
	if b, err := c.Inst[1].API().BGP(); err == nil {
		t.Logf("t2 announces %+v", b.Routes)
	}
	// SIGKILL: no withdrawal, the session's end alone tells the router.
	killed := time.Now()
	if err := c.Inst[0].Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitNextHops(ctx, lip, 2); err != nil {
		t.Fatalf("after t1 was killed: %v\n%s", err, c.RouterState())
	}
	t.Logf("t1 killed: the router's FIB sends t1's LIP to t2 %v after the SIGKILL", time.Since(killed).Round(time.Millisecond))
	// The FIB can move to t2 a moment before FRR drops t1's path from its
	// table (it is marked not best first): wait for the table too.
	want = []lab.BGPPath{{Instance: 2, MED: 101, Best: true}}
	var err error
	if !eventually(5*time.Second, func() bool { paths, err = c.BGPPaths(lip); return err == nil && slices.Equal(paths, want) }) {
		t.Fatalf("the router's paths for t1's LIP after t1 was killed: %+v (%v), want %+v", paths, err, want)
	}
	// A real server's reply to t1's LIP reaches t2 now, whose balancer
	// takes it as one to a LIP of its own: no connection here holds it
	// (connection sync is what would), so it is dropped and counted, not
	// answered with a reset by the stack (the dial times out, never
	// refused).
	for ctx.Err() == nil {
		var derr error
		err := lab.InNetns(c.RS[0], func() error {
			conn, err := net.DialTimeout("tcp4", netip.AddrPortFrom(lip, 40000).String(), 200*time.Millisecond)
			if err == nil {
				conn.Close()
			}
			derr = err
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if derr == nil || strings.Contains(derr.Error(), "refused") {
			t.Fatalf("rs1's segment to t1's LIP, now backed up by t2, was answered: %v", derr)
		}
		n, err := c.Inst[1].Drops("backup_lip_no_conn")
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			t.Logf("rs1's segments to t1's LIP reach t2, which drops them (backup_lip_no_conn %d): %v", n, derr)
			return
		}
	}
	t.Fatalf("rs1's segments to t1's LIP never reached t2's balancer: %v", ctx.Err())
}
