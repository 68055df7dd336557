package uring

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pipe returns a non-blocking pipe closed at the end of the test. Its
// cleanup runs before the ring's (last in, first out); closing a pipe end
// under an armed read does not end the read, so the ring's Close still has
// a request to cancel, as it would with a TAP.
func pipe(t *testing.T) (rd, wr int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

// User data kinds of these tests.
const (
	udRead  = 1 << 32
	udWrite = 2 << 32
)

// armRead makes a buffer ring (NewBufRing's group, entries, slot, lead) and
// queues a multishot read of fd into it, user data udRead; armSubmitted
// submits it too.
func armRead(t *testing.T, r *Ring, fd int, group uint16, entries int, slot, lead uintptr) *BufRing {
	t.Helper()
	br, err := r.NewBufRing(group, entries, slot, lead)
	if err != nil {
		t.Fatal(err)
	}
	r.ReadMultishot(fd, br.Group(), udRead)
	return br
}

func armSubmitted(t *testing.T, r *Ring, fd int, group uint16, entries int, slot, lead uintptr) *BufRing {
	t.Helper()
	br := armRead(t, r, fd, group, entries, slot, lead)
	if e := r.Submit(); e != 0 {
		t.Fatalf("Submit: %v", e)
	}
	return br
}

// TestMultishotPipe writes 100 messages into a pipe through the ring, then
// reads them with one multishot read into a 2-slot buffer ring: the read
// runs dry of buffers (-ENOBUFS ends it), is re-armed after the slots come
// back, and every byte arrives in order at the slot's lead.
func TestMultishotPipe(t *testing.T) {
	r := newRing(t, 128, 256)
	rd, wr := pipe(t)
	const lead = 10
	br, err := r.NewBufRing(3, 2, 64, lead)
	if err != nil {
		t.Fatal(err)
	}
	var sent bytes.Buffer
	msgs := make([][]byte, 100) // heap: referenced until their CQEs
	for i := range msgs {
		msgs[i] = fmt.Appendf(nil, "message %03d;", i)
		sent.Write(msgs[i])
		if !r.Write(wr, msgs[i], udWrite|uint64(i)) {
			t.Fatalf("SQ full at write %d", i)
		}
	}
	if !r.ReadMultishot(rd, br.Group(), udRead) {
		t.Fatal("SQ full at the read")
	}
	var got bytes.Buffer
	var cqes [64]CQE
	writes, enobufs, reads := 0, 0, 0
	deadline := time.Now().Add(5 * time.Second)
	for got.Len() < sent.Len() || writes < len(msgs) {
		if time.Now().After(deadline) {
			t.Fatalf("read %d of %d bytes, %d of %d writes done before the deadline", got.Len(), sent.Len(), writes, len(msgs))
		}
		if e := r.Wait(1, 100*time.Millisecond); e != 0 {
			t.Fatalf("Wait: %v", e)
		}
		n := r.Reap(cqes[:])
		for _, c := range cqes[:n] {
			switch c.UserData &^ (1<<32 - 1) {
			case udWrite:
				if i := c.UserData & (1<<32 - 1); c.Res != int32(len(msgs[i])) {
					t.Fatalf("write %d: res %d, want %d", i, c.Res, len(msgs[i]))
				}
				writes++
			case udRead:
				if c.Res == -int32(unix.ENOBUFS) && !c.More() {
					enobufs++
					continue
				}
				bid, ok := c.Buffer()
				if c.Res <= 0 || !ok || !c.More() {
					t.Fatalf("read CQE res %d, flags %#x: want bytes, a buffer and F_MORE", c.Res, c.Flags)
				}
				if int(c.Res) > 64-lead {
					t.Fatalf("read %d bytes into a %d-byte buffer", c.Res, 64-lead)
				}
				got.Write(br.Slot(bid)[lead : lead+int(c.Res)])
				br.Put(bid)
				reads++
			default:
				t.Fatalf("CQE of unknown user data %#x", c.UserData)
			}
		}
		br.Publish()
		// Re-arm only after the slots are back: armed on an empty
		// buffer ring, the read would end with -ENOBUFS at once.
		if r.Inflight() == 0 && got.Len() < sent.Len() {
			r.ReadMultishot(rd, br.Group(), udRead)
		}
	}
	if !bytes.Equal(got.Bytes(), sent.Bytes()) {
		t.Fatalf("read\n%q\nwant\n%q", got.Bytes(), sent.Bytes())
	}
	if enobufs == 0 {
		t.Errorf("the read never ran out of its 2 buffers over %d bytes: re-arming untested", sent.Len())
	}
	t.Logf("%d bytes in %d reads, %d -ENOBUFS re-arms", got.Len(), reads, enobufs)
}

// TestTaskrunFlag checks the spin check of a poller: with DEFER_TASKRUN a
// read completed by another thread's write posts no CQE until we enter,
// and SQ_TASKRUN in the SQ ring's flags says so without a system call.
func TestTaskrunFlag(t *testing.T) {
	r := newRing(t, 4, 8)
	rd, wr := pipe(t)
	br := armSubmitted(t, r, rd, 0, 2, 256, 0)
	if r.NeedsEnter() || r.Ready() != 0 {
		t.Fatalf("NeedsEnter %v, %d CQEs ready before any data", r.NeedsEnter(), r.Ready())
	}
	go unix.Write(wr, []byte("ping"))
	deadline := time.Now().Add(5 * time.Second)
	for !r.NeedsEnter() {
		if time.Now().After(deadline) {
			t.Fatal("SQ_TASKRUN never set after the pipe write")
		}
	}
	if n := r.Ready(); n != 0 {
		t.Fatalf("%d CQEs posted without an enter: DEFER_TASKRUN not in force", n)
	}
	if e := r.Submit(); e != 0 {
		t.Fatalf("Submit: %v", e)
	}
	var c [2]CQE
	if n := r.Reap(c[:]); n != 1 || c[0].Res != 4 || !c[0].More() {
		t.Fatalf("after enter: %d CQEs, first %+v; want one 4-byte read, still armed", n, c[0])
	}
	if bid, _ := c[0].Buffer(); string(br.Slot(bid)[:4]) != "ping" {
		t.Fatalf("slot %d holds %q, want ping", bid, br.Slot(bid)[:4])
	}
}

// TestReadAllocs checks the read path allocates nothing per completion:
// write, wait, reap, give the slot back, publish.
func TestReadAllocs(t *testing.T) {
	r := newRing(t, 4, 64)
	rd, wr := pipe(t)
	br := armRead(t, r, rd, 1, 8, 128, 16)
	msg := []byte("0123456789abcdef")
	var cqes [8]CQE
	total := 0
	round := func() {
		if _, err := unix.Write(wr, msg); err != nil {
			t.Fatal(err)
		}
		got := 0
		for tries := 0; got < len(msg) && tries < 100; tries++ {
			if e := r.Wait(1, 100*time.Millisecond); e != 0 {
				t.Fatalf("Wait: %v", e)
			}
			for _, c := range cqes[:r.Reap(cqes[:])] {
				bid, ok := c.Buffer()
				if !ok || !c.More() || c.Res <= 0 {
					t.Fatalf("read CQE %+v: want bytes, a buffer, F_MORE", c)
				}
				got += int(c.Res)
				br.Put(bid)
			}
			br.Publish()
		}
		if got != len(msg) {
			t.Fatalf("read %d bytes, want %d", got, len(msg))
		}
		total++
	}
	if a := testing.AllocsPerRun(1000, round); a != 0 {
		t.Errorf("%v allocations per read completion, want 0", a)
	}
	if total != 1001 {
		t.Errorf("%d rounds, want 1001", total)
	}
}

// TestCloseCancels closes a ring under an armed read: Close cancels it and
// waits for its last CQE before unmapping the buffers.
func TestCloseCancels(t *testing.T) {
	r := newRing(t, 4, 8)
	rd, _ := pipe(t)
	br := armSubmitted(t, r, rd, 0, 2, 256, 0)
	if r.Inflight() != 1 {
		t.Fatalf("inflight %d after arming, want 1", r.Inflight())
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if r.Inflight() != 0 || br.base != nil {
		t.Fatalf("after Close: inflight %d, slots mapped %v; want 0, unmapped", r.Inflight(), br.base != nil)
	}
}

// TestBid finds a slot from any slice of it, and refuses memory elsewhere.
func TestBid(t *testing.T) {
	r := newRing(t, 4, 8)
	br, err := r.NewBufRing(0, 4, 4096, 128)
	if err != nil {
		t.Fatal(err)
	}
	for bid := range uint16(4) {
		s := br.Slot(bid)
		for _, p := range [][]byte{s, s[128:], s[4095:]} {
			if got, ok := br.Bid(p); !ok || got != bid {
				t.Errorf("Bid of a slice of slot %d at %d: %d, %v", bid, len(s)-len(p), got, ok)
			}
		}
	}
	if _, ok := br.Bid(make([]byte, 8)); ok {
		t.Error("Bid claims a heap slice")
	}
}

// TestPutOrder gives slots back out of order: the kernel must hand them out
// in the order they were put, so entry 0 of the ring (whose bid shares the
// tail's 32-bit store) carries the bid we put there, not a stale one.
func TestPutOrder(t *testing.T) {
	r := newRing(t, 4, 16)
	rd, wr := pipe(t)
	br := armRead(t, r, rd, 0, 4, 64, 0)
	var cqes [4]CQE
	// readOne writes one message and returns the slot its read filled.
	readOne := func(i int) uint16 {
		msg := []byte{byte('a' + i)}
		if _, err := unix.Write(wr, msg); err != nil {
			t.Fatal(err)
		}
		for tries := 0; tries < 50; tries++ {
			if r.Inflight() == 0 {
				r.ReadMultishot(rd, br.Group(), udRead)
			}
			if e := r.Wait(1, 100*time.Millisecond); e != 0 {
				t.Fatalf("Wait: %v", e)
			}
			for _, c := range cqes[:r.Reap(cqes[:])] {
				if c.Res == -int32(unix.ENOBUFS) {
					continue
				}
				bid, ok := c.Buffer()
				if c.Res != 1 || !ok {
					t.Fatalf("read %d: CQE %+v, want one byte in a buffer", i, c)
				}
				if got := br.Slot(bid)[0]; got != msg[0] {
					t.Fatalf("read %d: slot %d holds %q, want %q", i, bid, got, msg[0])
				}
				return bid
			}
		}
		t.Fatalf("read %d: no CQE", i)
		return 0
	}
	for i := range 4 {
		if bid := readOne(i); bid != uint16(i) {
			t.Fatalf("first pass: read %d used slot %d, want %d", i, bid, i)
		}
	}
	order := []uint16{3, 1, 0, 2}
	for _, bid := range order {
		br.Put(bid)
	}
	br.Publish()
	for i, want := range order {
		if bid := readOne(4 + i); bid != want {
			t.Fatalf("after putting %v: read %d used slot %d, want %d", order, i, bid, want)
		}
	}
}

// TestCancelFD cancels the read of one pipe among two (a paused queue):
// that read ends with -ECANCELED, the cancel reports one request, and the
// other pipe's read stays armed and reads.
func TestCancelFD(t *testing.T) {
	r := newRing(t, 8, 16)
	rd1, _ := pipe(t)
	rd2, wr2 := pipe(t)
	br, err := r.NewBufRing(0, 4, 256, 0)
	if err != nil {
		t.Fatal(err)
	}
	const udCancel = 3 << 32
	r.ReadMultishot(rd1, br.Group(), udRead|1)
	r.ReadMultishot(rd2, br.Group(), udRead|2)
	if e := r.Submit(); e != 0 {
		t.Fatalf("Submit: %v", e)
	}
	r.CancelFD(rd1, udCancel)
	var cqes [4]CQE
	var cancelled, counted bool
	for tries := 0; tries < 10 && !(cancelled && counted); tries++ {
		if e := r.Wait(1, 100*time.Millisecond); e != 0 {
			t.Fatalf("Wait: %v", e)
		}
		for _, c := range cqes[:r.Reap(cqes[:])] {
			switch c.UserData {
			case udRead | 1:
				if c.Res != -int32(unix.ECANCELED) || c.More() {
					t.Fatalf("cancelled read: %+v, want -ECANCELED, no F_MORE", c)
				}
				cancelled = true
			case udCancel:
				if c.Res != 1 {
					t.Fatalf("cancel: res %d, want 1 request", c.Res)
				}
				counted = true
			default:
				t.Fatalf("unexpected CQE %+v", c)
			}
		}
	}
	if !cancelled || !counted || r.Inflight() != 1 {
		t.Fatalf("cancelled %v, cancel's CQE %v, inflight %d; want true, true, 1", cancelled, counted, r.Inflight())
	}
	if _, err := unix.Write(wr2, []byte("still")); err != nil {
		t.Fatal(err)
	}
	if e := r.Wait(1, time.Second); e != 0 {
		t.Fatalf("Wait: %v", e)
	}
	if n := r.Reap(cqes[:]); n != 1 || cqes[0].UserData != udRead|2 || cqes[0].Res != 5 || !cqes[0].More() {
		t.Fatalf("the other read: %d CQEs, %+v; want 5 bytes, still armed", n, cqes[0])
	}
}
