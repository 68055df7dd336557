package tun

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tapvs/tapvs/csum"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VNetHdrLen is the size of the virtio-net header (struct virtio_net_hdr)
// that a TAP opened with IFF_VNET_HDR puts before every frame.
const VNetHdrLen = 10

// VNetHdr is a frame's virtio-net header, read and written in place: the
// VNetHdrLen bytes a TAP with offloads puts before the frame. nil is no
// header (a plain TAP), which reads as all zeros: a full checksum, no
// segmentation. The kernel's layout (little-endian):
//
//	flags u8 | gso_type u8 | hdr_len u16 | gso_size u16 | csum_start u16 | csum_offset u16
type VNetHdr []byte

// The header's flags and GSO types tapvs reads (linux/virtio_net.h).
const (
	VNetNeedsCsum = 1 // flags: the transport checksum holds only the pseudo-header sum
	VNetDataValid = 2 // flags: the checksum was verified
	VNetGSONone   = 0 // gso_type: one frame, not a TSO super-frame
	VNetGSOTCPv4  = 1
	VNetGSOUDP    = 3
	VNetGSOTCPv6  = 4
)

// Flags is the header's flags byte; 0 without a header.
func (h VNetHdr) Flags() uint8 {
	if len(h) < VNetHdrLen {
		return 0
	}
	return h[0]
}

// NeedsCsum reports a partial transport checksum: it holds only the
// pseudo-header sum, and whoever sends the frame on finishes it (at
// CsumStart + CsumOffset).
func (h VNetHdr) NeedsCsum() bool { return h.Flags()&VNetNeedsCsum != 0 }

// DataValid reports a transport checksum the kernel has verified.
func (h VNetHdr) DataValid() bool { return h.Flags()&VNetDataValid != 0 }

// GSOType is how a super-frame is to be segmented (VNetGSONone: it is not one).
func (h VNetHdr) GSOType() uint8 {
	if len(h) < VNetHdrLen {
		return VNetGSONone
	}
	return h[1]
}

// GSOSize is the segment payload size of a super-frame.
func (h VNetHdr) GSOSize() uint16 { return h.u16(4) }

// HdrLen is the length of the headers a super-frame's segments repeat.
func (h VNetHdr) HdrLen() uint16 { return h.u16(2) }

// CsumStart is where the checksummed data begins, from the start of the
// frame (the Ethernet header).
func (h VNetHdr) CsumStart() int { return int(h.u16(6)) }

// CsumOffset is where the checksum field is, from CsumStart.
func (h VNetHdr) CsumOffset() int { return int(h.u16(8)) }

func (h VNetHdr) u16(at int) uint16 {
	if len(h) < VNetHdrLen {
		return 0
	}
	return binary.LittleEndian.Uint16(h[at:])
}

// SetNeedsCsum marks the transport checksum partial, its field at
// start+off: what a sending host's kernel hands a TAP with offloads.
func (h VNetHdr) SetNeedsCsum(start, off int) {
	h[0] |= VNetNeedsCsum
	binary.LittleEndian.PutUint16(h[6:], uint16(start))
	binary.LittleEndian.PutUint16(h[8:], uint16(off))
}

// SetGSO marks a super-frame: segments of size bytes of payload after
// hdrLen bytes of headers, by gsoType.
func (h VNetHdr) SetGSO(gsoType uint8, hdrLen, size uint16) {
	h[1] = gsoType
	binary.LittleEndian.PutUint16(h[2:], hdrLen)
	binary.LittleEndian.PutUint16(h[4:], size)
}

// VNetGSOECN is a flag in gso_type: the super-frame's segments carry ECN
// (CWR is set on the first only). It is kept when the type changes.
const VNetGSOECN = 0x80

// SetGSOType changes how a super-frame is to be segmented (a translation
// between IPv4 and IPv6: TCPv4 and TCPv6), keeping the ECN flag.
func (h VNetHdr) SetGSOType(gsoType uint8) { h[1] = h[1]&VNetGSOECN | gsoType }

// SetHdrLen sets the length of the headers each segment repeats.
func (h VNetHdr) SetHdrLen(n uint16) { binary.LittleEndian.PutUint16(h[2:], n) }

// SetCsumStart moves where the checksummed data begins, from the start of
// the frame: the transport header moved within it.
func (h VNetHdr) SetCsumStart(start int) { binary.LittleEndian.PutUint16(h[6:], uint16(start)) }

// FinishChecksum completes frame's partial transport checksum (NeedsCsum:
// the field holds the pseudo-header's sum) in software, as the kernel
// does on its way out: frame starts where CsumStart counts from. A UDP
// sum that comes to 0 is sent as 0xffff (0 is "no checksum" in IPv4 and
// not allowed in IPv6: CSUM_MANGLED_0). A field that would end past the
// frame (the header is outside input) is left alone.
func (h VNetHdr) FinishChecksum(frame []byte) {
	if !h.NeedsCsum() {
		return
	}
	start, off := h.CsumStart(), h.CsumOffset()
	if start+off+2 > len(frame) {
		return
	}
	csum.Finish(frame[start:], off)
	if off == udpCsumOff && binary.BigEndian.Uint16(frame[start+off:]) == 0 { // UDP's field (TCP's is at 16)
		binary.BigEndian.PutUint16(frame[start+off:], 0xffff)
	}
}

// udpCsumOff is where a UDP header's checksum is.
const udpCsumOff = 6

// Clear makes the header say "a whole frame with full checksums": for a
// frame rewritten or built whole, whose checksums are already final.
func (h VNetHdr) Clear() { clear(h) }

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
