package clusterauth

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// The rate bounds what is sent in a burst; tokens come back with time.
func TestBucket(t *testing.T) {
	var b Bucket
	now := time.Now()
	b.Init(10, now)
	n := 0
	for range 100 {
		if b.Take(now) {
			n++
		}
	}
	if n != 10 {
		t.Fatalf("%d taken from a full bucket of 10", n)
	}
	later := now.Add(200 * time.Millisecond)
	for i := range 2 {
		if !b.Take(later) {
			t.Fatalf("token %d of 2 not back after 200 ms at 10/s", i+1)
		}
	}
	if b.Take(later) {
		t.Fatal("a third token after 200 ms at 10/s")
	}
}

// A tag covers header and payload, under its key only.
func TestTag(t *testing.T) {
	k := bytes.Repeat([]byte{1}, KeyLen)
	m := NewMAC(k)
	tag := bytes.Clone(m.Tag([]byte("head"), []byte("payload")))
	if len(tag) != TagLen || !m.Check([]byte("head"), []byte("payload"), tag) {
		t.Fatal("own tag refused")
	}
	if m.Check([]byte("heaD"), []byte("payload"), tag) || m.Check([]byte("head"), []byte("payloaD"), tag) {
		t.Fatal("altered header or payload accepted")
	}
	if NewMAC(bytes.Repeat([]byte{2}, KeyLen)).Check([]byte("head"), []byte("payload"), tag) {
		t.Fatal("another key accepted")
	}
}

func TestPeerIndex(t *testing.T) {
	peers := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7"), netip.MustParseAddrPort("127.0.0.2:7")}
	for from, want := range map[string]int{"127.0.0.2:7": 1, "[::ffff:127.0.0.1]:7": 0, "127.0.0.1:8": -1, "127.0.0.3:7": -1} {
		if got := PeerIndex(peers, netip.MustParseAddrPort(from)); got != want {
			t.Errorf("%s: %d, want %d", from, got, want)
		}
	}
}
