package tun

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/tun/tuntest"
)

// A queue's duplicate, adopted, is the same TAP queue: the kernel names it,
// it keeps the header length and non-blocking mode, and closing the first
// copy leaves the TAP in place (the adopted one holds it); closing the last
// removes it. Adopt refuses a descriptor for another name or header length,
// and one that is not a TAP.
func TestAdoptPassedQueue(t *testing.T) {
	tuntest.InNewNetns(t)
	for _, offload := range []bool{true, false} {
		devs, err := OpenTAP(TAPConfig{Name: "tvp0", Queues: 2, Offload: offload})
		if err != nil {
			t.Fatal(err)
		}
		hdr := devs[0].VNetHdrLen()
		if offload != (hdr == VNetHdrLen) {
			t.Fatalf("offload %v: header %d", offload, hdr)
		}
		var adopted []Device
		for i, d := range devs {
			fd, err := d.(Passer).Dup()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Adopt(fd, "tvp1", hdr); !errors.Is(err, ErrNotTAP) {
				t.Fatalf("another name: %v", err)
			}
			if _, err := Adopt(fd, "tvp0", VNetHdrLen-hdr); !errors.Is(err, ErrNotTAP) {
				t.Fatalf("another header length: %v", err)
			}
			a, err := Adopt(fd, "tvp0", hdr)
			if err != nil {
				t.Fatalf("queue %d: %v", i, err)
			}
			adopted = append(adopted, a)
		}
		for _, d := range devs {
			d.Close()
		}
		l, err := netlink.LinkByName("tvp0")
		if err != nil {
			t.Fatalf("offload %v: the TAP went with the first copies: %v", offload, err)
		}
		// The adopted queue reads what the kernel sends: bring the link up
		// and wait (bounded) for a frame the kernel sends on its own (IPv6
		// router solicitation / MLD on link up), or give it an address and
		// send one.
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			bufs := [][]byte{make([]byte, 2048)}
			sizes := []int{0}
			adopted[0].(Passer).SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := adopted[0].Read(bufs, sizes, VNetHdrLen)
			for _, a := range adopted[1:] {
				if err == nil {
					break
				}
				a.(Passer).SetReadDeadline(time.Now().Add(time.Second))
				_, err = a.Read(bufs, sizes, VNetHdrLen)
			}
			got <- err
		}()
		sendToTAP(t, l)
		if err := <-got; err != nil {
			t.Fatalf("offload %v: no frame on the adopted queues: %v", offload, err)
		}
		for _, a := range adopted {
			a.Close()
		}
		if _, err := netlink.LinkByName("tvp0"); err == nil {
			t.Fatalf("offload %v: the TAP outlived its last queue", offload)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	raw, _ := r.SyscallConn()
	var fd int
	raw.Control(func(f uintptr) { fd, _ = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) })
	defer unix.Close(fd)
	if _, err := Adopt(fd, "tvp0", 0); !errors.Is(err, ErrNotTAP) {
		t.Fatalf("a pipe: %v", err)
	}
}

// sendToTAP makes the kernel send a frame out of l: an ARP request for an
// address on its subnet.
func sendToTAP(t *testing.T, l netlink.Link) {
	t.Helper()
	a, _ := netlink.ParseAddr("10.77.0.1/24")
	if err := netlink.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	unix.Sendto(s, []byte("x"), 0, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{10, 77, 0, 2}})
}
