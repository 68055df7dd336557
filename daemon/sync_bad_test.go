package daemon

import (
	"crypto/rand"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/tapvs/tapvs/connsync"
)

// What a network can do to connection sync, against the daemon's wiring
// over loopback (no root): B listens with one peer, A. A's genuine
// datagrams, captured on their way and then sent to B from A's address
// once A is gone, are applied once (B holds the shadow); the same
// datagrams again are refused as replays, one of them with a byte flipped
// as a bad tag, cut short as short, random bytes as not tapvs's, any from
// another address as not a peer's; a flood of 20 000 forgeries from A's
// address is counted and never applied, and B's heap stays within a few
// MB. B's table holds the one genuine connection throughout.
func TestSyncRefusesWhatAPeerDidNotSend(t *testing.T) {
	addrs := freePorts(t, 3)
	pa, pb, capture := addrs[0], addrs[1], addrs[2]
	ca := syncInstance(t, "172.25.84.10", 1, pa, capture, 2) // A sends to the capture socket
	cb := syncInstance(t, "172.25.84.11", 2, pb, pa, 1)
	b := balancerOf(t, cb)
	b.SetBackupLIPs([]netip.Addr{netip.MustParseAddr("172.25.84.10")})
	sb := runSync(t, cb, b)

	// A's genuine datagrams: whatever it sends from its start until its
	// UPDATE (the record) has come (the type, byte 4 of the header).
	capc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(capture))
	if err != nil {
		t.Fatal(err)
	}
	defer capc.Close()
	a := balancerOf(t, ca)
	sa, err := startSync(ca.Sync, a, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := established(t, "172.25.84.10", 40000)
	sa.s.Queue(rec.AppendTo(nil))
	var genuine [][]byte
	buf := make([]byte, 65536)
	for update := false; !update; {
		capc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := capc.Read(buf)
		if err != nil || len(genuine) > 100 {
			t.Fatalf("A's datagrams: %d captured, no UPDATE, then %v", len(genuine), err)
		}
		genuine = append(genuine, append([]byte(nil), buf[:n]...))
		update = n > 4 && buf[4] == byte(connsync.Update)
	}
	sa.Close() // A is gone; its address is the forger's now

	from, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(pa))
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	to := net.UDPAddrFromAddrPort(pb)
	send := func(c *net.UDPConn, d []byte) {
		t.Helper()
		if _, err := c.WriteToUDP(d, to); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(reason string) uint64 { return sb.s.Stats().Refused[reason] }
	waitRefused := func(reason string, want uint64) {
		t.Helper()
		poll(t, "refused "+reason, func() bool { return refused(reason) >= want })
		if got := refused(reason); got != want {
			t.Fatalf("refused %s: %d, want %d (all: %v)", reason, got, want, sb.s.Stats().Refused)
		}
	}

	for _, d := range genuine {
		send(from, d)
	}
	poll(t, "B to apply A's genuine datagrams", func() bool { return b.Table().Len() > 0 })
	if n := b.Table().Len(); n != 1 {
		t.Fatalf("B holds %d connections after A's genuine datagrams, want 1 (refused %v)", n, sb.s.Stats().Refused)
	}
	applied := sb.s.Stats().Applied

	for _, d := range genuine {
		send(from, d)
	}
	waitRefused("replay", uint64(len(genuine)))
	flipped := append([]byte(nil), genuine[len(genuine)-1]...)
	flipped[len(flipped)-1] ^= 1
	send(from, flipped)
	waitRefused("tag", 1)
	send(from, genuine[0][:20])
	waitRefused("short", 1)
	junk := make([]byte, 200)
	rand.Read(junk)
	junk[0] = 'X'
	send(from, junk)
	waitRefused("magic", 1)
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	send(other, genuine[len(genuine)-1])
	waitRefused("not_peer", 1)

	// The flood: forged tags from A's address.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tagBefore := refused("tag")
	const flood = 20000
	for i := range flood {
		flipped[len(flipped)-1-i%16] ^= byte(i)
		from.WriteToUDP(flipped, to) // the kernel may drop some: counted by neither side
	}
	// Drained: one receiver reads the socket in order, so once a short
	// datagram sent after the flood is refused, every forgery the kernel
	// kept has been read. The kernel may drop a sentinel too, so one more
	// goes at each poll until one is counted.
	shorts := refused("short")
	poll(t, "the receiver to drain the flood", func() bool {
		if refused("short") > shorts {
			return true
		}
		from.WriteToUDP(genuine[0][:20], to)
		return false
	})
	runtime.GC()
	runtime.ReadMemStats(&after)
	got := refused("tag") - tagBefore
	if got == 0 || got > flood {
		t.Fatalf("%d of %d forged datagrams refused as bad tags", got, flood)
	}
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 8<<20 {
		t.Errorf("the heap grew %d bytes under %d forged datagrams", grew, flood)
	}
	if s := sb.s.Stats(); s.Applied != applied || b.Table().Len() != 1 {
		t.Fatalf("after the forgeries: applied %d (was %d), %d connections; want unchanged, 1", s.Applied, applied, b.Table().Len())
	}
	t.Logf("%d genuine datagrams applied once; refused: %v", len(genuine), sb.s.Stats().Refused)
}
