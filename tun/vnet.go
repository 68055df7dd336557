package tun

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VNetHdrLen is the size of the virtio-net header (struct virtio_net_hdr)
// that a TAP opened with IFF_VNET_HDR puts before every frame.
const VNetHdrLen = 10

// Virtio-net header fields tapvs reads.
const (
	VNetNeedsCsum = 1 // flags: the transport checksum holds only the pseudo-header sum
	VNetDataValid = 2 // flags: the checksum was verified
	VNetGSONone   = 0 // gso_type
)

// ErrOffloadRefused means the kernel would not take checksum/TSO offload on
// the TAP; the caller opens a plain TAP instead.
var ErrOffloadRefused = errors.New("TAP offload refused")

// openVNetTAP creates the TAP through netlink (which hands back the queues'
// non-blocking fds) and turns on checksum and TCP segmentation offload.
func openVNetTAP(cfg TAPConfig) ([]Device, error) {
	flags := netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR
	if cfg.Queues > 1 {
		flags |= netlink.TUNTAP_MULTI_QUEUE
	}
	t := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: cfg.Name}, Mode: netlink.TUNTAP_MODE_TAP,
		Flags: flags, Queues: max(cfg.Queues, 1), NonPersist: true}
	if err := netlink.LinkAdd(t); err != nil {
		return nil, fmt.Errorf("tap %s: %w", cfg.Name, err)
	}
	devs := make([]Device, 0, len(t.Fds))
	for _, f := range t.Fds {
		devs = append(devs, newTapQueue(cfg.Name, f, VNetHdrLen))
	}
	offload := unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	for _, f := range t.Fds {
		raw, err := f.SyscallConn()
		var ierr error
		if err == nil {
			err = raw.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, offload) })
		}
		if err == nil {
			err = ierr
		}
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return nil, fmt.Errorf("tap %s: %w: %v", cfg.Name, ErrOffloadRefused, err)
		}
	}
	return devs, nil
}
