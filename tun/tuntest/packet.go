package tuntest

import (
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PacketSocket opens an AF_PACKET socket bound to interface ifindex for
// frames of ethertype proto: writing to it transmits on the interface (so
// a TAP's reader gets the frame), reading gets what the interface
// receives (what was written to the TAP). A read blocks one second at
// most, so a lost frame fails the test instead of hanging it. Closed when
// the test ends.
func PacketSocket(t testing.TB, ifindex int, proto uint16) int {
	t.Helper()
	network := int(proto<<8 | proto>>8) // htons
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, network)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: uint16(network)}); err != nil {
		t.Fatal(err)
	}
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return s
}

// Up sets the interface called name up and returns its index.
func Up(t testing.TB, name string) int {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	return link.Attrs().Index
}

// Read reads one frame from a PacketSocket, again after an interrupted
// read: a socket read with a receive timeout is not restarted after a
// signal (SA_RESTART does not apply to it), and Go's runtime signals its
// threads (SIGURG) now and then. Bounded: a hundred interruptions in a row
// are returned as the error.
func Read(fd int, b []byte) (int, error) {
	for range 100 {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
	return 0, unix.EINTR
}
