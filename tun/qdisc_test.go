package tun

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/tun/tuntest"
)

// rootQdiscs is the type of each root qdisc of link name, through h.
func rootQdiscs(t *testing.T, h *netlink.Handle, name string) []string {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := h.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	var roots []string
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT {
			roots = append(roots, q.Type())
		}
	}
	return roots
}

// A TAP tapvs sets up has the noqueue root qdisc, as a veth has, whether
// it stays in tapvs's namespace or moves to another (where the move would
// have reset a qdisc set before it), with one queue or several (whose
// default, once up, is mq over one net.core.default_qdisc each).
func TestSetupLinkNoQueue(t *testing.T) {
	tuntest.InNewNetns(t)
	here, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	for _, queues := range []int{1, 2} {
		name := fmt.Sprintf("tvsq%d", queues)
		devs, err := OpenTAP(TAPConfig{Name: name, Queues: queues})
		if err != nil {
			t.Fatal(err)
		}
		defer closeAll(devs)
		// Up, as SetupLink leaves it, but by hand: the kernel's own
		// qdisc then, which must not be noqueue for the test to prove
		// anything (a TAP that is down has noop).
		l, err := here.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := here.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if got := rootQdiscs(t, here, name); len(got) != 1 || got[0] == "noqueue" || got[0] == "noop" {
			t.Fatalf("%s up without SetupLink: root qdiscs %v, want the kernel's default: the test would prove nothing", name, got)
		}
		if err := SetupLink(name, LinkConfig{MTU: 1500}); err != nil {
			t.Fatal(err)
		}
		if got := rootQdiscs(t, here, name); len(got) != 1 || got[0] != "noqueue" {
			t.Errorf("%d queue(s), in tapvs's namespace: root qdiscs %v, want [noqueue]", queues, got)
		}
	}

	ns := fmt.Sprintf("tvsq-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", ns, err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	devs, err := OpenTAP(TAPConfig{Name: "tvsqm", Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(devs)
	if err := SetupLink("tvsqm", LinkConfig{Netns: ns}); err != nil {
		t.Fatal(err)
	}
	h, err := NetnsByName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	there, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer there.Close()
	if got := rootQdiscs(t, there, "tvsqm"); len(got) != 1 || got[0] != "noqueue" {
		t.Errorf("moved to %s: root qdiscs %v, want [noqueue]", ns, got)
	}
}

// A kernel that refuses the qdisc: the error wraps ErrQdisc (the daemon
// warns and goes on) and the kernel's reason, and names the link.
func TestNoQueueRefused(t *testing.T) {
	l := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tvsq-x", Index: 7}}
	var asked netlink.Qdisc
	err := noQueue(func(q netlink.Qdisc) error { asked = q; return unix.EPERM }, l, "tvsq-x")
	if !errors.Is(err, ErrQdisc) || !errors.Is(err, unix.EPERM) {
		t.Fatalf("error %v, want ErrQdisc wrapping EPERM", err)
	}
	if a := asked.Attrs(); asked.Type() != "noqueue" || a.LinkIndex != 7 || a.Parent != netlink.HANDLE_ROOT {
		t.Fatalf("asked for %s on link %d parent %x, want noqueue at the root of link 7", asked.Type(), a.LinkIndex, a.Parent)
	}
	if want := "link tvsq-x: "; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Fatalf("%q does not name the link first", err)
	}
}

func closeAll(devs []Device) {
	for _, d := range devs {
		d.Close()
	}
}

// Detached: false for a queue whose TAP is there, true once it is deleted
// (the poller's look for a read that missed it: netstack.TestRingDetachedTAP).
func TestDetached(t *testing.T) {
	tuntest.InNewNetns(t)
	devs, err := OpenTAP(TAPConfig{Name: "tvsdet", Queues: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(devs)
	fd, err := devs[0].(Poller).Detach()
	if err != nil {
		t.Fatal(err)
	}
	if Detached(fd) {
		t.Fatal("a TAP that is there reads as detached")
	}
	l, err := netlink.LinkByName("tvsdet")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if !Detached(fd) {
		t.Fatal("a deleted TAP's queue does not read as detached")
	}
}
