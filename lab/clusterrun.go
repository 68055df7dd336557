package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ClusterOptions are `tapvs lab --cluster N`'s.
type ClusterOptions struct {
	Instances int
	Router    string // RouterFRR or RouterBIRD
	TapvsBin  string // the tapvs each instance runs (the lab's own binary)
	Requests  int    // short connections for the spread
	Flows     int    // long transfers during the drain and the kill
	Keep      bool
	Out       io.Writer
	Prefix    string // the namespaces' prefix; "": ClusterPrefix
	// NoHandoff runs the instances without handoff:, to show what plain
	// ECMP does to moved connections: the drain's and the rehash's break.
	NoHandoff bool
	// Sync runs the instances with connection sync (sync:): the killed
	// instance's transfers go on through the survivors.
	Sync bool
}

// ClusterPrefix names the namespaces of `tapvs lab --cluster`.
const ClusterPrefix = "tvc"

// RunCluster builds a cluster lab, starts its instances, and shows what a
// cluster of tapvs behind an ECMP router does: the router's equal paths,
// the spread of connections, a drain, and a SIGKILL during transfers, with
// what survived counted. It removes everything when done (with Keep, when
// ctx ends), also when ctx ends early. It fails if a connection that should
// have gone through did not: one of the spread, a new one after the drain,
// or one the router left where it was during the drain or the kill.
func RunCluster(ctx context.Context, o ClusterOptions) error {
	SweepClusters()
	if os.Geteuid() != 0 {
		return fmt.Errorf("the cluster lab runs a router (%s) and tapvs processes in network namespaces: it needs root", o.Router)
	}
	if o.Instances < 2 {
		return fmt.Errorf("--cluster %d: a cluster lab needs 2 instances at least (one is drained, another killed)", o.Instances)
	}
	if o.Prefix == "" {
		o.Prefix = ClusterPrefix
	}
	c := &Cluster{Prefix: o.Prefix, Instances: o.Instances, Router: o.Router, TapvsBin: o.TapvsBin, NoHandoff: o.NoHandoff, Sync: o.Sync}
	if err := c.check(); err != nil {
		return err
	}
	if InNetns(o.Prefix+"-r", func() error { return nil }) == nil {
		return fmt.Errorf("netns %s-r exists: a cluster lab is already up (stop it, or remove it: ip netns list | grep '^%s-' and ip netns del each)", o.Prefix, o.Prefix)
	}
	fmt.Fprintf(o.Out, "building the cluster lab: a router (%s), a client, %d tapvs instances, 2 real servers\n", c.Router, o.Instances)
	if err := c.Build(); err != nil {
		return err
	}
	defer func() {
		if err := c.Destroy(); err != nil {
			fmt.Fprintf(o.Out, "cluster lab teardown: %v\n", err)
		} else {
			fmt.Fprintln(o.Out, "cluster lab removed")
		}
	}()
	fmt.Fprintf(o.Out, "namespaces: %s (configurations and logs in %s)\n", strings.Join(c.Namespaces(), " "), c.Dir)
	if err := c.Start(ctx); err != nil {
		return err
	}
	all := make([]int, o.Instances)
	for i := range all {
		all[i] = i + 1
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(wctx, VIP, all...); err != nil {
		return fmt.Errorf("%w\n%s", err, c.RouterState())
	}
	fmt.Fprintf(o.Out, "\nthe router's FIB has the VIP over all %d instances %v after they started:\n", o.Instances, time.Since(c.Started).Round(time.Millisecond))
	out, _ := exec.Command("ip", "-n", c.RouterNS, "route", "show", VIP.String()).CombinedOutput()
	fmt.Fprintf(o.Out, "  # ip -n %s route show %s\n%s", c.RouterNS, VIP, indent(string(out)))

	by := c.Spread(ctx, o.Requests)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(o.Out, "\n%d short HTTP connections from the client to %s:%d, by the instance whose LIP the real server saw:\n", o.Requests, VIP, HTTPPort)
	for _, n := range all {
		fmt.Fprintf(o.Out, "  t%d: %4d (%.0f%%)\n", n, by[n], 100*float64(by[n])/float64(o.Requests))
	}
	var bad []string
	if by[0] > 0 {
		fmt.Fprintf(o.Out, "  failed: %d\n", by[0])
		bad = append(bad, fmt.Sprintf("%d of the spread's connections failed", by[0]))
	}
	for _, n := range all {
		if by[n] == 0 {
			bad = append(bad, fmt.Sprintf("t%d carried none of the spread's connections", n))
		}
	}

	fmt.Fprintf(o.Out, "\ndraining t1 (tapvsadm --drain: POST /v1/drain on its control socket) during %d transfers:\n", o.Flows)
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	d, err := c.DrainDuringTransfers(dctx, 1, o.Flows, 60)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "  the router withdrew t1 %v after the drain\n", d.Withdrawn.Round(time.Millisecond))
	fmt.Fprintf(o.Out, "  %d new connections after that: %d reached t1, %d failed\n", d.NewConns, d.NewOnDrained, d.NewFailed)
	fmt.Fprintf(o.Out, "  %s\n", d.Tally)
	fmt.Fprintf(o.Out, "  t1 reported itself empty %v after the drain\n", d.Empty.Round(time.Millisecond))
	switch {
	case d.Gone > 0 && o.Sync:
		fmt.Fprintf(o.Out, "  (the router sends t1's open flows to the other instances once it is withdrawn; they continue them from their shadows, sync:, and the replies still come to t1's LIPs)\n")
	case d.Gone > 0 && o.NoHandoff:
		fmt.Fprintf(o.Out, "  (the router sends t1's open flows to the other instances once it is withdrawn; with --no-handoff they drop what they do not hold)\n")
	case d.Gone > 0:
		fmt.Fprintf(o.Out, "  (the router sends t1's open flows to the other instances once it is withdrawn; they hand their segments back to t1, which holds them: handoff:)\n")
	}
	if _, err := c.Inst[0].API().Undrain(); err != nil {
		return err
	}
	uctx, ucancel := context.WithTimeout(ctx, 10*time.Second)
	defer ucancel()
	if _, err := c.WaitNextHops(uctx, VIP, all...); err != nil {
		return fmt.Errorf("after t1's drain ended: %w", err)
	}
	fmt.Fprintln(o.Out, "  drain ended: t1 announced again")

	victim := 2
	fmt.Fprintf(o.Out, "\nSIGKILL of t%d during %d transfers:\n", victim, o.Flows)
	k, err := c.KillDuringTransfers(ctx, victim, o.Flows)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "  the router withdrew t%d %v after the kill (the kernel closed its BGP session)\n", victim, k.Withdrawn.Round(time.Millisecond))
	if o.Sync {
		var held []string
		for _, n := range all {
			if n != victim {
				held = append(held, fmt.Sprintf("t%d %d of t%d's %d", n, k.Held[n], victim, k.Gone))
			}
		}
		fmt.Fprintf(o.Out, "  killed once every transfer carried bytes, without waiting for sync; the survivors held then: %s\n", strings.Join(held, ", "))
	}
	fmt.Fprintf(o.Out, "  survived: %d of %d (the %d the router left where they were: %d broke)\n",
		k.Gone+k.Moved+k.Stayed-(k.GoneBroken+k.MovedBroken+k.StayedBroken), k.Gone+k.Moved+k.Stayed, k.Stayed, k.StayedBroken)
	moved := "handed to the survivor that holds them"
	if o.Sync {
		moved = "continued from the shadows sync: keeps"
	}
	if o.NoHandoff {
		moved = "--no-handoff: the survivor they reach does not hold them"
	}
	gone := "its state died with it"
	if o.Sync {
		gone = "sync: the survivors held them"
	}
	fmt.Fprintf(o.Out, "  broke: %d of the %d on t%d (%s), %d of the %d that ECMP moved between the survivors (%s)\n", k.GoneBroken, k.Gone, victim, gone, k.MovedBroken, k.Moved, moved)
	out, _ = exec.Command("ip", "-n", c.RouterNS, "route", "show", VIP.String()).CombinedOutput()
	fmt.Fprintf(o.Out, "  # ip -n %s route show %s\n%s", c.RouterNS, VIP, indent(string(out)))
	if d.NewOnDrained+d.NewFailed > 0 {
		bad = append(bad, fmt.Sprintf("after t1's withdrawal %d new connections reached it and %d failed", d.NewOnDrained, d.NewFailed))
	}
	if d.StayedBroken+k.StayedBroken > 0 {
		bad = append(bad, fmt.Sprintf("%d transfers the router left where they were broke (drain %d, kill %d)",
			d.StayedBroken+k.StayedBroken, d.StayedBroken, k.StayedBroken))
	}
	if !o.NoHandoff && d.GoneBroken+d.MovedBroken+k.MovedBroken > 0 {
		bad = append(bad, fmt.Sprintf("transfers handed between instances broke: %d of the drained t1's, %d moved by the drain, %d moved by the kill",
			d.GoneBroken, d.MovedBroken, k.MovedBroken))
	}
	if o.Sync && k.GoneBroken > 0 {
		bad = append(bad, fmt.Sprintf("%d of the killed t%d's %d transfers broke with sync on", k.GoneBroken, victim, k.Gone))
	}
	if len(bad) > 0 {
		return fmt.Errorf("the cluster lab did not work: %s", strings.Join(bad, "; "))
	}
	if !o.Keep {
		return nil
	}
	if err := c.Inst[victim-1].Start(); err != nil {
		return err
	}
	ctl := "vtysh --vty_socket " + c.routerDir() + " -c 'show bgp summary'"
	if c.Router == RouterBIRD {
		ctl = "birdc -s " + filepath.Join(c.routerDir(), "bird.ctl") + " show protocols"
	}
	fmt.Fprintf(o.Out, `
t%[1]d started again. The cluster lab stays up until Ctrl-C. Try, in another shell:
  ip -n %[2]s route show %[3]s                        # the router's equal paths
  %[4]s
  ip netns exec %[5]s curl -s http://%[3]s/           # "rsN 10.20.N.2 saw 172.26.<instance>.10:port"
  export TAPVS_SOCKET=%[6]s                           # t1's control socket, for tapvsadm:
  tapvsadm -lnc                                        # t1's connections
  tapvsadm --bgp                                       # t1's peers and routes
  tapvsadm --drain --wait                              # withdraw t1, wait until it is empty
  tapvsadm --undrain                                   # announce t1 again
  kill -9 $(pgrep -f %[7]s)                           # kill t1 and watch the route
`, victim, c.RouterNS, VIP, ctl, c.Client, c.Inst[0].Socket, c.Inst[0].Config)
	<-ctx.Done()
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}
