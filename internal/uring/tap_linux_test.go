package uring

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/tun/tuntest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// etherTest is the ethertype of the test's frames (IEEE local
// experimental), so the IPv6 chatter of a TAP coming up is told apart.
const etherTest = 0x88b5

// openTAP creates an offload TAP (virtio-net header) with one queue, up,
// and returns its detached descriptor and its ifindex.
func openTAP(t *testing.T, name string) (fd, ifindex int) {
	t.Helper()
	devs, err := tun.OpenTAP(tun.TAPConfig{Name: name, Offload: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { devs[0].Close() })
	if devs[0].VNetHdrLen() != tun.VNetHdrLen {
		t.Fatalf("%s: vnet header %d, want %d", name, devs[0].VNetHdrLen(), tun.VNetHdrLen)
	}
	fd, err = devs[0].(tun.Poller).Detach()
	if err != nil {
		t.Fatal(err)
	}
	return fd, tuntest.Up(t, name)
}

// packetSocket is an AF_PACKET socket bound to ifindex for etherTest
// frames (tuntest.PacketSocket).
func packetSocket(t *testing.T, ifindex int) int { return tuntest.PacketSocket(t, ifindex, etherTest) }

// TestTAPForward forwards frames from one TAP to another through the ring,
// as a poller will: frames sent on TAP A (an AF_PACKET socket) are read by
// a multishot read into A's buffer ring, vnet header first at the slot's
// lead, written from the slot to TAP B by an SQE, and arrive on B whole
// and in order; the slot goes back only after its write's CQE. 1000 frames
// with 0 allocations per frame (everything in the loop is preallocated,
// including the injecting socket's frame).
func TestTAPForward(t *testing.T) {
	tuntest.InNewNetns(t)
	suffix := rand.Uint32()
	fdA, idxA := openTAP(t, fmt.Sprintf("ua%x", suffix))
	fdB, idxB := openTAP(t, fmt.Sprintf("ub%x", suffix))
	inject, sink := packetSocket(t, idxA), packetSocket(t, idxB)

	r := newRing(t, 16, 64)
	const headroom = 128 // netstack.Headroom: nat grows headers into it
	slot := uintptr(headroom+65550+4095) &^ 4095
	br := armRead(t, r, fdA, 0, 16, slot, headroom-tun.VNetHdrLen)

	frame := make([]byte, 14+64)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(frame[12:], etherTest)
	got := make([]byte, 2048)
	var cqes [16]CQE
	var seq uint32
	other := 0
	round := func() {
		seq++
		binary.BigEndian.PutUint32(frame[14:], seq)
		if _, err := unix.Write(inject, frame); err != nil {
			t.Fatalf("inject %d: %v", seq, err)
		}
		forwarded, written := false, false
		for tries := 0; !written && tries < 100; tries++ {
			if r.Inflight() == 0 {
				t.Fatalf("frame %d: the read ended", seq)
			}
			if e := r.Wait(1, 100*time.Millisecond); e != 0 {
				t.Fatalf("Wait: %v", e)
			}
			for _, c := range cqes[:r.Reap(cqes[:])] {
				if c.UserData&udWrite != 0 {
					if c.Res != int32(tun.VNetHdrLen+len(frame)) {
						t.Fatalf("frame %d: write res %d", seq, c.Res)
					}
					br.Put(uint16(c.UserData))
					written = true
					continue
				}
				bid, ok := c.Buffer()
				if !ok || !c.More() || c.Res < tun.VNetHdrLen+14 {
					t.Fatalf("frame %d: read CQE %+v: want a frame in a buffer, still armed", seq, c)
				}
				s := br.Slot(bid)
				b := s[br.Lead() : br.Lead()+int(c.Res)]
				if binary.BigEndian.Uint16(b[tun.VNetHdrLen+12:]) != etherTest {
					other++ // the TAP's own chatter (IPv6 router solicitations)
					br.Put(bid)
					continue
				}
				if forwarded || int(c.Res) != tun.VNetHdrLen+len(frame) || tun.VNetHdr(b[:tun.VNetHdrLen]).GSOType() != 0 ||
					binary.BigEndian.Uint32(b[tun.VNetHdrLen+14:]) != seq {
					t.Fatalf("frame %d: read %d bytes, seq %d, header % x", seq, c.Res,
						binary.BigEndian.Uint32(b[tun.VNetHdrLen+14:]), b[:tun.VNetHdrLen])
				}
				if i, ok := br.Bid(b[tun.VNetHdrLen:]); !ok || i != bid {
					t.Fatalf("frame %d: Bid of the frame %d, %v; want %d", seq, i, ok, bid)
				}
				r.Write(fdB, b, udWrite|uint64(bid)) // header and frame, from the slot
				forwarded = true
			}
			br.Publish()
		}
		if !written {
			t.Fatalf("frame %d never forwarded", seq)
		}
		n, err := tuntest.Read(sink, got)
		if err != nil || n != len(frame) || string(got[:n]) != string(frame) {
			t.Fatalf("frame %d on B: %d bytes, %v", seq, n, err)
		}
	}
	if a := testing.AllocsPerRun(1000, round); a != 0 {
		t.Errorf("%v allocations per forwarded frame, want 0", a)
	}
	if seq != 1001 {
		t.Fatalf("%d frames forwarded, want 1001", seq)
	}
	t.Logf("%d frames forwarded A→B through the ring, %d other frames read and recycled", seq, other)
}

// TestTAPTruncated pins what a TAP does with a frame longer than the
// provided buffer: it fills the buffer and drops the rest, and the CQE's
// Res is the buffer's length, not the frame's. So a poller's slot must be
// longer than the largest frame plus its vnet header, and a read that
// fills its buffer exactly is to be dropped as cut short.
func TestTAPTruncated(t *testing.T) {
	tuntest.InNewNetns(t)
	fd, idx := openTAP(t, fmt.Sprintf("ut%x", rand.Uint32()))
	inject := packetSocket(t, idx)
	r := newRing(t, 4, 16)
	const slot = 64
	br := armRead(t, r, fd, 0, 4, slot, 0)
	frame := make([]byte, 200)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(frame[12:], etherTest)
	if _, err := unix.Write(inject, frame); err != nil {
		t.Fatal(err)
	}
	var cqes [4]CQE
	for tries := 0; tries < 20; tries++ {
		if e := r.Wait(1, 100*time.Millisecond); e != 0 {
			t.Fatalf("Wait: %v", e)
		}
		for _, c := range cqes[:r.Reap(cqes[:])] {
			bid, ok := c.Buffer()
			if !ok || c.Res <= 0 {
				t.Fatalf("read CQE %+v: want bytes in a buffer", c)
			}
			b := br.Slot(bid)
			if binary.BigEndian.Uint16(b[tun.VNetHdrLen+12:]) != etherTest {
				br.Put(bid) // the TAP's own chatter
				continue
			}
			if c.Res != slot || !c.More() {
				t.Fatalf("a %d-byte frame into a %d-byte buffer: res %d, F_MORE %v; want res %d, still armed",
					tun.VNetHdrLen+len(frame), slot, c.Res, c.More(), slot)
			}
			return
		}
		br.Publish()
	}
	t.Fatal("the injected frame was never read")
}

// TestTAPDeleted deletes a TAP under an armed multishot read: the read ends
// at once with -EBADFD (no F_MORE), so a poller learns of a dead TAP from
// its CQE (the memo feared none would come, as for EPOLLERR on fuse).
func TestTAPDeleted(t *testing.T) {
	tuntest.InNewNetns(t)
	name := fmt.Sprintf("ud%x", rand.Uint32())
	fd, _ := openTAP(t, name)
	r := newRing(t, 4, 16)
	br := armSubmitted(t, r, fd, 0, 4, 4096, 0)
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(link); err != nil {
		t.Fatal(err)
	}
	var cqes [4]CQE
	for tries := 0; tries < 10 && r.Inflight() > 0; tries++ {
		if e := r.Wait(1, 100*time.Millisecond); e != 0 {
			t.Fatalf("Wait: %v", e)
		}
		for _, c := range cqes[:r.Reap(cqes[:])] {
			if c.More() {
				if bid, ok := c.Buffer(); ok {
					br.Put(bid) // chatter read before the link went
				}
				continue
			}
			if c.Res != -int32(unix.EBADFD) {
				t.Fatalf("the read ended with %d (%v), want -EBADFD", c.Res, unix.Errno(-c.Res))
			}
		}
		br.Publish()
	}
	if r.Inflight() != 0 {
		t.Fatal("the read is still armed a second after its TAP was deleted")
	}
}
