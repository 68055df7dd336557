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
	read := func() error {
		for _, s := range []struct {
			path string
			on   *bool
		}{{"/proc/sys/net/ipv4/ip_forward", &v4}, {"/proc/sys/net/ipv6/conf/all/forwarding", &v6}} {
			b, err := os.ReadFile(s.path)
			if err != nil {
				return err
			}
			*s.on = strings.TrimSpace(string(b)) != "0"
		}
		return nil
	}
	if nsName == "" {
		if err := read(); err != nil {
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
	// that has entered nsName.
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return false, false, fmt.Errorf("forwarding: current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return false, false, fmt.Errorf("forwarding: netns %q: enter: %w", nsName, err)
	}
	rerr := read()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the other namespace: left locked, the
		// runtime retires it with this goroutine instead of reusing it.
		return false, false, fmt.Errorf("forwarding: netns %q: leave: %w", nsName, err)
	}
	runtime.UnlockOSThread()
	if rerr != nil {
		return false, false, fmt.Errorf("forwarding in netns %q: %w", nsName, rerr)
	}
	return v4, v6, nil
}
