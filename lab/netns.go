// Package lab builds tapvs's demonstration and test network out of network
// namespaces: a client, tapvs between two TAPs, a router, and real servers on
// two subnets behind it, with small built-in servers and clients that open
// their sockets inside those namespaces; and a cluster of tapvs processes
// announcing their VIP over BGP to a router (FRR or BIRD) that spreads
// flows over them by ECMP (cluster.go).
package lab

import (
	"bytes"
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// ip runs the ip(8) command and returns its error with its output.
func ip(args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// InNetns runs fn on a thread that has entered the named network namespace.
// Sockets fn creates stay in that namespace after it returns, so a listener
// made here can be served from any goroutine.
func InNetns(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: current: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: enter: %w", name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the other namespace: keep it locked so the
		// runtime retires it with this goroutine instead of reusing it.
		return fmt.Errorf("netns %s: leave: %w", name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
