package nat

import (
	"bytes"
	"testing"
)

func TestClientAddrNames(t *testing.T) {
	for c := ClientAddrNone; c <= ClientAddrProxyV2; c++ {
		got, err := ParseClientAddr(c.String())
		if err != nil || got != c {
			t.Fatalf("%v: parsed as %v, %v", c, got, err)
		}
	}
	if _, err := ParseClientAddr("proxy-v3"); err == nil {
		t.Fatal("proxy-v3 parsed")
	}
	for _, c := range []ClientAddr{ClientAddrTOA, ClientAddrProxyV1} {
		if err := c.check(UDP); err == nil {
			t.Fatalf("%v allowed on UDP", c)
		}
	}
	for c := ClientAddrNone; c <= ClientAddrProxyV2; c++ {
		if err := c.check(TCP); err != nil {
			t.Fatalf("%v refused on TCP: %v", c, err)
		}
	}
}

// open moves the headers and the virtio-net header before them into the
// headroom and leaves the payload where it was.
func TestFrameOpen(t *testing.T) {
	const headroom, h = 32, 4
	buf := make([]byte, headroom+10)
	copy(buf[headroom-h:], []byte{0xa, 0xb, 0xc, 0xd})          // virtio-net header
	copy(buf[headroom:], []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) // 3 header bytes, then payload
	f := Frame{Buf: buf, Off: headroom, Len: 10, VNet: buf[headroom-h : headroom]}
	if !f.open(3, 5) {
		t.Fatal("open refused")
	}
	if f.Off != headroom-5 || f.Len != 15 {
		t.Fatalf("off %d len %d", f.Off, f.Len)
	}
	if !bytes.Equal(f.VNet, []byte{0xa, 0xb, 0xc, 0xd}) || &f.VNet[0] != &buf[f.Off-h] {
		t.Fatalf("vnet %x not just before the frame", f.VNet)
	}
	got := buf[f.Off : f.Off+f.Len]
	if !bytes.Equal(got[:3], []byte{1, 2, 3}) || !bytes.Equal(got[8:], []byte{4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("frame %v", got)
	}
	// No room: nothing changes.
	g := Frame{Buf: buf, Off: 6, Len: 10, VNet: buf[2:6]}
	if g.open(3, 5) || g.Off != 6 || g.Len != 10 {
		t.Fatalf("open past the buffer's start: %+v", g)
	}
}
