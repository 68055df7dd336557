package handoff

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tapvs/tapvs/nat"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeyLen) }

func frameOf(n int) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = byte(i)
	}
	return f
}

func TestSealOpen(t *testing.T) {
	mac := NewSealer(key(1))
	for _, n := range []int{MinFrame, 60, 1514, MaxFrame} {
		f := frameOf(n)
		mark := uint32(n) | 1<<(MarkBits-1) // the highest bit a mark may set
		d := mac.Seal(make([]byte, Overhead+n), f, mark)
		got, gotMark, err := mac.Open(d)
		if err != nil || !bytes.Equal(got, f) || gotMark != mark {
			t.Fatalf("%d bytes: %v, mark %#x", n, err, gotMark)
		}
		// Every byte altered is refused: the header by its checks or the
		// tag, the tag and the frame by the tag.
		for i := range d {
			if n > 1514 && i > Overhead+64 && i < len(d)-64 {
				continue // the middle of a long frame: its ends stand for it
			}
			e := bytes.Clone(d)
			e[i] ^= 0x40
			if _, _, err := mac.Open(e); err == nil {
				t.Fatalf("%d bytes: byte %d altered, accepted", n, i)
			}
		}
		if _, _, err := NewSealer(key(2)).Open(d); err != ErrTag {
			t.Fatalf("another key: %v, want ErrTag", err)
		}
	}
}

func TestOpenRefusals(t *testing.T) {
	mac := NewSealer(key(1))
	ok := mac.Seal(make([]byte, Overhead+60), frameOf(60), 0)
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"empty":         {nil, ErrShort},
		"header":        {ok[:Overhead], ErrShort},
		"short":         {ok[:Overhead+MinFrame-1], ErrShort},
		"long":          {make([]byte, Overhead+MaxFrame+1), ErrLong},
		"magic":         {append([]byte("TVX"), ok[3:]...), ErrMagic},
		"version":       {append([]byte("TVH\x02"), ok[4:]...), ErrVersion},
		"reserved":      {append([]byte("TVH\x01\x00\x02\x00\x00"), ok[8:]...), ErrVersion}, // a mark past MarkBits
		"reserved high": {append([]byte("TVH\x01\x80\x00\x00\x00"), ok[8:]...), ErrVersion},
		"a mark":        {append([]byte("TVH\x01\x00\x01\x00\x01"), ok[8:]...), ErrTag}, // a mark within MarkBits: the tag covers it
	}
	for name, c := range cases {
		if _, _, err := mac.Open(c.b); err != c.want {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// The shortest and longest that pass the length checks.
	if _, _, err := mac.Open(mac.Seal(make([]byte, Overhead+MinFrame), frameOf(MinFrame), 0)); err != nil {
		t.Fatal(err)
	}
}

// FuzzOpen: a datagram from anyone who can reach the listener. Open never
// panics, and what it accepts is exactly what Seal made under the key.
func FuzzOpen(f *testing.F) {
	mac := NewSealer(key(7))
	f.Add(mac.Seal(make([]byte, Overhead+60), frameOf(60), 0))
	f.Add(mac.Seal(make([]byte, Overhead+MinFrame), frameOf(MinFrame), 1500))
	f.Add([]byte("TVH\x01\x00\x00\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		frame, mark, err := mac.Open(b)
		if err != nil {
			return
		}
		again := mac.Seal(make([]byte, Overhead+len(frame)), frame, mark)
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, which Seal would not make", b)
		}
	})
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// freeUDP is a UDP address free on loopback now.
func freeUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Two instances on loopback: what one sends the other delivers; a third
// with another key delivers nothing and counts the tags refused; a
// datagram from an address that is not a peer's is refused before its tag
// is checked.
func TestSendReceive(t *testing.T) {
	got, marks := make(chan []byte, 10), make(chan uint32, 10)
	toRecv, toOther, from := freeUDP(t), freeUDP(t), freeUDP(t)
	recv, err := Start(Config{Listen: toRecv, Key: key(1), Rate: 100, Peers: []netip.AddrPort{from}}, func(f []byte, mark uint32) { got <- bytes.Clone(f); marks <- mark }, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	other, err := Start(Config{Listen: toOther, Key: key(2), Rate: 100, Peers: []netip.AddrPort{from}}, func([]byte, uint32) { t.Error("delivered under another key") }, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	send, err := Start(Config{Listen: from, Key: key(1), Rate: 100, Peers: []netip.AddrPort{toRecv, toOther}}, func([]byte, uint32) {}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	f := frameOf(1514)
	send.Send(f, 1500|1<<16)
	select {
	case g := <-got:
		if !bytes.Equal(g, f) {
			t.Fatal("frame altered")
		}
		if m := <-marks; m != 1500|1<<16 {
			t.Fatalf("mark %#x, want the one sent", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered")
	}
	waitStat := func(h *Handoff, name string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); h.Stats().Refused[name] != 1 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if s := h.Stats(); s.Refused[name] != 1 {
			t.Fatalf("%+v: want one datagram refused as %s", s, name)
		}
	}
	waitStat(other, "tag")
	// A stranger's datagram, well sealed under the key: refused by its source.
	stranger, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	if _, err := stranger.WriteToUDPAddrPort(NewSealer(key(1)).Seal(make([]byte, Overhead+60), frameOf(60), 0), toRecv); err != nil {
		t.Fatal(err)
	}
	waitStat(recv, "not_peer")
	if s := recv.Stats(); s.Received != 1 || s.Refused["tag"] != 0 {
		t.Fatalf("receiver %+v: want the peer's one frame only", s)
	}
	send.Send(frameOf(MaxFrame+1), 0)
	send.Send(frameOf(MinFrame-1), 0)
	if s := send.Stats(); s.Sent != 1 || s.TooBig != 2 {
		t.Fatalf("sender %+v: want 1 sent, 2 too big", s)
	}
}

// Send allocates nothing: it runs on the data path.
func TestSendAllocs(t *testing.T) {
	h, err := Start(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Key: key(1), Rate: 1 << 30,
		Peers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}, func([]byte, uint32) {}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	f := frameOf(1514)
	h.Send(f, 0)
	if n := testing.AllocsPerRun(100, func() { h.Send(f, 0) }); n != 0 {
		t.Fatalf("Send: %v allocations", n)
	}
}

// The mark's bits are the balancer's (nat.FragMark): handoff does not
// import nat, so the two constants are held equal here.
func TestMarkBitsAreNATs(t *testing.T) {
	if MarkBits != nat.MarkBits {
		t.Fatalf("handoff.MarkBits %d, nat.MarkBits %d", MarkBits, nat.MarkBits)
	}
}
