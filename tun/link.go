package tun

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkConfig is what tapvs sets on a TAP it created, from the namespace that
// created it.
type LinkConfig struct {
	MTU int
	// TxQLen, if set, is the interface's transmit queue length in frames,
	// per queue: the frames the kernel holds for tapvs to read. A longer
	// queue absorbs the bursts in which tapvs's readers are off the CPU
	// (a SYN flood on a shared machine) at the cost of its memory.
	TxQLen int
	// MAC, if set, is given to the kernel side of the TAP. Left empty the
	// kernel picks a random one.
	MAC net.HardwareAddr
	// Netns, if set, names a network namespace (as in `ip netns`) to move the
	// interface into after it is configured. The file descriptor keeps
	// working; only the interface's name moves.
	Netns string
	// PeerAddress, if set, is given to the kernel's end of the TAP (where it
	// ends up: in Netns if set), with its prefix: the connected route to
	// tapvs's side. What a lab's namespaces or a router are given by hand;
	// in a container (a pod's sidecar) only tapvs holds CAP_NET_ADMIN, so it
	// sets it itself.
	PeerAddress netip.Prefix
	// PeerAddress6 is the kernel end's IPv6 address, beside PeerAddress.
	PeerAddress6 netip.Prefix
}

// ErrQdisc is SetupLink's error, last and alone, when the kernel refused
// the TAP its noqueue qdisc: the link is otherwise set up and works, at the
// cost of a qdisc's pass per frame.
var ErrQdisc = errors.New("noqueue qdisc refused")

// ErrNoNetns is SetupLink's error when LinkConfig.Netns names a network
// namespace that does not exist.
var ErrNoNetns = errors.New("no such network namespace")

// SetupLink applies cfg to the interface name and brings it up. A TAP moved into
// another namespace is brought up there. Its root qdisc becomes noqueue
// (noQueue); an error wrapping ErrQdisc says only that failed.
func SetupLink(name string, cfg LinkConfig) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if cfg.MTU > 0 {
		if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("link %s: set mtu %d: %w", name, cfg.MTU, err)
		}
	}
	if cfg.TxQLen > 0 {
		if err := netlink.LinkSetTxQLen(link, cfg.TxQLen); err != nil {
			return fmt.Errorf("link %s: set txqueuelen %d: %w", name, cfg.TxQLen, err)
		}
	}
	if len(cfg.MAC) != 0 {
		if err := netlink.LinkSetHardwareAddr(link, cfg.MAC); err != nil {
			return fmt.Errorf("link %s: set mac %s: %w", name, cfg.MAC, err)
		}
	}
	if cfg.Netns == "" {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("link %s: up: %w", name, err)
		}
		if err := addPeerAddress(netlink.AddrAdd, link, name, cfg.PeerAddress, cfg.PeerAddress6); err != nil {
			return err
		}
		return noQueue(netlink.QdiscReplace, link, name)
	}
	ns, err := NetnsByName(cfg.Netns)
	if errors.Is(err, fs.ErrNotExist) {
		// The shipped config.yaml is the lab's: its namespaces exist only
		// while a lab is up. Say what to do, not just what failed.
		return fmt.Errorf("link %s: netns %q does not exist: %w (create it with `ip netns add %s`, keep a lab up with `tapvs lab --keep`, or drop the interface's netns: key to leave the TAP in tapvs's own namespace)",
			name, cfg.Netns, ErrNoNetns, cfg.Netns)
	}
	if err != nil {
		return fmt.Errorf("link %s: netns %q: %w", name, cfg.Netns, err)
	}
	defer ns.Close()
	if err := netlink.LinkSetNsFd(link, int(ns)); err != nil {
		return fmt.Errorf("link %s: move to netns %q: %w", name, cfg.Netns, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("link %s: netlink in netns %q: %w", name, cfg.Netns, err)
	}
	defer h.Close()
	moved, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s in netns %q: %w", name, cfg.Netns, err)
	}
	if err := h.LinkSetUp(moved); err != nil {
		return fmt.Errorf("link %s in netns %q: up: %w", name, cfg.Netns, err)
	}
	if err := addPeerAddress(h.AddrAdd, moved, name, cfg.PeerAddress, cfg.PeerAddress6); err != nil {
		return err
	}
	return noQueue(h.QdiscReplace, moved, name)
}

// noQueue gives the TAP the noqueue root qdisc, as a veth has, in place of
// the kernel's default (net.core.default_qdisc, or mq over one of those per
// queue). A TAP never stops its transmit queue (Linux 6.x; a tun series
// proposed on net-next in 2026 would stop it, but only where a qdisc is
// there to hold frames, keeping today's behaviour under noqueue): its own
// ring of txqueuelen frames per queue is where frames wait for tapvs, and
// a full ring drops, so the default qdisc only adds its lock and a pass
// through it to every frame the kernel's side sends (tapvs's CPU per short
// connection was 7% lower with noqueue than with the default qdisc:
// docs/speed.md). Set once the link is up where it stays: a move to
// another namespace resets it. An operator's own qdisc, added later,
// replaces this one.
func noQueue(replace func(netlink.Qdisc) error, link netlink.Link, name string) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Parent: netlink.HANDLE_ROOT},
		QdiscType:  "noqueue",
	}
	if err := replace(q); err != nil {
		return fmt.Errorf("link %s: %w: %w", name, ErrQdisc, err)
	}
	return nil
}

// addPeerAddress gives the kernel's end of the TAP its addresses, those set.
// The IPv6 one skips duplicate address detection (IFA_F_NODAD): the link
// is the TAP's, whose only other end is tapvs, which never takes it, and
// a tentative address is no source for a second or so (a sidecar's app
// would start before its route to an IPv6 VIP can answer).
func addPeerAddress(add func(netlink.Link, *netlink.Addr) error, link netlink.Link, name string, ps ...netip.Prefix) error {
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := add(link, a); err != nil {
			return fmt.Errorf("link %s: peer address %s: %w", name, p, err)
		}
	}
	return nil
}
