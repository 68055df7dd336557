package hostnft

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/tapvs/tapvs/tun"
	"github.com/vishvananda/netns"
)

// Forwarding reports whether the kernel of the named namespace (the
// caller's if "") forwards IPv4 (net.ipv4.ip_forward) and IPv6
// (net.ipv6.conf.all.forwarding). Masquerade and Publish need the family
// they rewrite forwarded: without it the kernel drops what it would send
// between the TAP and its other interfaces, and the tables do nothing.
// tapvs does not set them (a pod sets them with its sysctls, where the
// kubelet allows it); it says which is off.
func Forwarding(nsName string) (v4, v6 bool, err error) {
	if nsName == "" {
		if v4, v6, err = readForwarding(); err != nil {
			return false, false, fmt.Errorf("forwarding: %w", err)
		}
		return v4, v6, nil
	}
	target, err := tun.NetnsByName(nsName)
	if err != nil {
		return false, false, fmt.Errorf("forwarding: netns %q: %w", nsName, err)
	}
	defer target.Close()
	// /proc/sys/net is the reading thread's namespace's: read on a thread
	// that enters nsName. Not the caller's (the daemon starting): if
	// leaving fails, a goroutine of its own is left in the pod's namespace
	// and ends there, its thread locked, which the runtime then retires
	// instead of reusing it.
	type result struct {
		v4, v6 bool
		err    error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var r result
		stuck := false
		defer func() {
			if !stuck {
				runtime.UnlockOSThread()
			}
			done <- r
		}()
		orig, err := netns.Get()
		if err != nil {
			r.err = fmt.Errorf("forwarding: current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := setns(target); err != nil {
			r.err = fmt.Errorf("forwarding: netns %q: enter: %w", nsName, err)
			return
		}
		r.v4, r.v6, r.err = readForwarding()
		if err := setns(orig); err != nil {
			stuck = true
			r = result{err: fmt.Errorf("forwarding: netns %q: leave: %w", nsName, err)}
			return
		}
		if r.err != nil {
			r.err = fmt.Errorf("forwarding in netns %q: %w", nsName, r.err)
		}
	}()
	r := <-done
	if r.err != nil {
		return false, false, r.err
	}
	return r.v4, r.v6, nil
}

// setns is netns.Set: a test makes leaving the namespace fail.
var setns = netns.Set

// readForwarding reads the forwarding sysctls of the calling thread's
// namespace.
func readForwarding() (v4, v6 bool, err error) {
	for _, s := range []struct {
		path string
		on   *bool
	}{{"/proc/sys/net/ipv4/ip_forward", &v4}, {"/proc/sys/net/ipv6/conf/all/forwarding", &v6}} {
		b, err := os.ReadFile(s.path)
		if err != nil {
			return false, false, err
		}
		*s.on = strings.TrimSpace(string(b)) != "0"
	}
	return v4, v6, nil
}
