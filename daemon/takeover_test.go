package daemon

import (
	"bytes"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/synproxy"
	"github.com/tapvs/tapvs/takeover"
)

// received is how many frames the client side's readers have read.
func received(d *Daemon) (n uint64) {
	for i := range d.Stack.Client.Stats() {
		n += d.Stack.Client.Stats()[i].Received.Load()
	}
	return n
}

// kick makes the kernel send a frame into the client TAP (a datagram to the
// VIP, or the ARP request before it) until d's readers have read one more,
// bounded.
func kick(t *testing.T, d *Daemon) bool {
	t.Helper()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	before := received(d)
	for range 200 {
		unix.Sendto(s, []byte("kick"), unix.MSG_DONTWAIT, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{172, 25, 254, 100}})
		time.Sleep(10 * time.Millisecond)
		if received(d) > before {
			return true
		}
	}
	return false
}

// A takeover inside one namespace: a successor that dies before DONE
// leaves the old tapvs reading its queues again; a successor that
// completes runs on the same TAPs (same interface index: never deleted),
// reads them, and opens the control socket once the old one has let go
// (Abandon, which deletes nothing).
func TestTakeoverKeepsTAPs(t *testing.T) {
	inNewNetns(t)
	dir := t.TempDir()
	ctl := filepath.Join(dir, "tapvs.sock")
	cfg, err := config.Parse(base + "control:\n  socket: " + ctl + "\n")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	old, err := Start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.ServeTakeover(); err != nil {
		old.Close()
		t.Fatal(err)
	}
	oldDone := false
	defer func() {
		if !oldDone {
			old.Close()
		}
	}()
	link, err := netlink.LinkByName("tvd-c")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr("172.25.254.1/24")
	if err := netlink.AddrAdd(link, a); err != nil {
		t.Fatal(err)
	}
	if !kick(t, old) {
		t.Fatal("the old tapvs reads nothing to begin with")
	}

	// A successor that takes the queues and dies.
	path := TakeoverSocket(cfg)
	if path != filepath.Join(dir, "tapvs.takeover.sock") {
		t.Fatalf("takeover socket %s", path)
	}
	s, err := takeover.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := s.Receive(func([]byte) error { return nil }, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if !tk.Table || tk.Records != 0 || len(tk.FDs) != 4 || !bytes.Equal(tk.Keys, old.Balancer.CookieKeys()) || len(tk.Keys) != synproxy.KeysLen {
		t.Fatalf("taken: table %v, %d records, %d queues, %d bytes of cookie keys", tk.Table, tk.Records, len(tk.FDs), len(tk.Keys))
	}
	for _, fd := range tk.FDs {
		unix.Close(fd)
	}
	s.Close()
	if !eventually(5*time.Second, func() bool { return old.takeover.Ended("aborted") == 1 }) {
		t.Fatal("the old tapvs did not see the successor die")
	}
	if !kick(t, old) {
		t.Fatal("the old tapvs does not read again after a failed takeover")
	}
	if _, err := netlink.LinkByName("tvd-c"); err != nil {
		t.Fatal("the TAP went with the dead successor's copies")
	}

	// A successor that completes.
	type started struct {
		d   *Daemon
		err error
	}
	res := make(chan started, 1)
	go func() {
		d, err := StartTakeover(cfg, log)
		res <- started{d, err}
	}()
	select {
	case <-old.HandedOver():
	case r := <-res:
		t.Fatalf("the successor ended before the old tapvs handed over: %v", r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("no handover in 10s")
	}
	oldCM, oldSM := old.Stack.MACs()
	oldKeys := old.Balancer.CookieKeys()
	old.Abandon()
	oldDone = true
	var r started
	select {
	case r = <-res:
	case <-time.After(15 * time.Second):
		t.Fatal("the successor did not start in 15s after the old one let go")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	d := r.d
	defer d.Close()
	if err := d.ServeTakeover(); err != nil {
		t.Fatalf("the successor's own takeover socket: %v", err)
	}
	after, err := netlink.LinkByName("tvd-c")
	if err != nil || after.Attrs().Index != link.Attrs().Index {
		t.Fatalf("the TAP after the takeover: %v (index %d, was %d)", err, after.Attrs().Index, link.Attrs().Index)
	}
	if cm, sm := d.Stack.MACs(); cm != oldCM || sm != oldSM {
		t.Fatalf("the successor's MACs %x %x: not the old one's", cm, sm)
	}
	if !kick(t, d) {
		t.Fatal("the successor reads nothing from the TAP taken over")
	}
	// Its SYN cookies are the old one's: a handshake the old one answered
	// completes here.
	if !bytes.Equal(d.Balancer.CookieKeys(), oldKeys) {
		t.Fatal("the successor's SYN cookie keys are not the old tapvs's")
	}
	c, err := net.Dial("unix", ctl)
	if err != nil {
		t.Fatalf("the successor's control socket: %v", err)
	}
	c.Close()
	d.Close()
	gone(t, "tvd-c", "tvd-s")
}

func eventually(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
