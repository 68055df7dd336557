package synproxy

import (
	"encoding/binary"
	"testing"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tcpopt"
)

// A window scale of 0 is scaling offered (RFC 7323: shift 0), not its
// absence (-1): each of the three ends offering 0 changes which windows are
// rescaled, and by how much, exactly as any other shift does.
func TestWindowScaleZeroIsOffered(t *testing.T) {
	for _, tc := range []struct {
		client, ours, server int8
		toClient, toServer   uint16 // a window of 100 each way, translated
	}{
		{0, 7, 9, 400, 100},    // both paths scale: <<9 >>7 toward the client
		{7, 0, -1, 100, 12800}, // the server does not scale: the client's window <<7 for it
		{7, 7, 0, 0, 100},      // the server scales by 0: <<0 >>7 toward the client
		{7, -1, 9, 51200, 100}, // we did not scale: the server's <<9 for the client
		{-1, 7, 9, 100, 100},   // the client did not offer: nobody scales
	} {
		s := &State{Cookie: 1, Opts: Options{WScale: tc.client}, OurWScale: tc.ours}
		s.Establish(1, tcpopt.Parsed{WScale: tc.server})
		h := tcpHeader(1, 1, 0, 0, nil, 100)
		translate(t, h, s.ToClient)
		verify(t, h)
		c := binary.BigEndian.Uint16(h[14:])
		h = tcpHeader(1, 1, 0, 0, nil, 100)
		translate(t, h, s.ToServer)
		verify(t, h)
		if sv := binary.BigEndian.Uint16(h[14:]); c != tc.toClient || sv != tc.toServer {
			t.Errorf("window scales client %d, ours %d, server %d: windows %d to the client and %d to the server, want %d and %d",
				tc.client, tc.ours, tc.server, c, sv, tc.toClient, tc.toServer)
		}
	}
}

// A header of exactly 20 bytes (no options, no payload) is translated both
// ways; one shorter, or whose data offset is under 5 words or past its
// bytes, is refused.
func TestBareHeaderTranslated(t *testing.T) {
	s := &State{Cookie: 5000, OurWScale: -1, Opts: Options{WScale: -1}}
	s.ShiftClient(10)
	s.Establish(2000, tcpopt.Parsed{WScale: -1})
	bare := func(seq, ack uint32) []byte {
		h := make([]byte, 20)
		binary.BigEndian.PutUint32(h[4:], seq)
		binary.BigEndian.PutUint32(h[8:], ack)
		h[12], h[13] = 5<<4, 0x10 // ACK
		binary.BigEndian.PutUint16(h[14:], 1000)
		binary.BigEndian.PutUint16(h[16:], csum.Checksum(h, pseudo))
		return h
	}
	h := bare(101, 5001)
	translate(t, h, s.ToServer)
	verify(t, h)
	if seq, ack := binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:]); seq != 111 || ack != 2001 {
		t.Fatalf("to the server: seq %d ack %d, want 111 2001", seq, ack)
	}
	h = bare(2001, 111)
	translate(t, h, s.ToClient)
	verify(t, h)
	if seq, ack := binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:]); seq != 5001 || ack != 101 {
		t.Fatalf("to the client: seq %d ack %d, want 5001 101", seq, ack)
	}
	for _, bad := range [][]byte{bare(1, 1)[:19], func() []byte { h := bare(1, 1); h[12] = 4 << 4; return h }(), func() []byte { h := bare(1, 1); h[12] = 6 << 4; return h }()} {
		if _, ok := s.ToServer(bad, 0); ok {
			t.Errorf("to the server: % x accepted", bad)
		}
		if _, ok := s.ToClient(bad, 0); ok {
			t.Errorf("to the client: % x accepted", bad)
		}
	}
}

// Bytes inserted before the client's first byte (InsertClient): the
// server's acks of part of them come back as an ack of nothing the client
// sent (its ISN+1); acks past them, or before them, move back by the
// whole offset.
func TestInsertClientAcks(t *testing.T) {
	s := &State{Cookie: 5000, ClientISN: 99, OurWScale: -1, Opts: Options{WScale: -1}}
	s.InsertClient(30)
	s.ShiftClient(5) // bytes added later in the stream: only moved
	s.Establish(2000, tcpopt.Parsed{WScale: -1})
	for _, tc := range []struct{ a, want uint32 }{{100 + 5, 100}, {100 + 20, 100}, {100 + 35, 100}, {100 + 36, 101}, {100 + 4, 69}} {
		if got := s.ClientAck(tc.a); got != tc.want {
			t.Errorf("ClientAck(%d) = %d, want %d", tc.a, got, tc.want)
		}
	}
	h := tcpHeader(2001, 120, 1, 0, []uint32{110, 130, 133, 150}, 1000)
	translate(t, h, s.ToClient)
	verify(t, h)
	if ack := binary.BigEndian.Uint32(h[8:]); ack != 100 {
		t.Fatalf("ack inside the inserted bytes: %d, want 100", ack)
	}
	// The block within the inserted bytes is gone; the other, which
	// starts inside them, starts at the client's first byte, moved up.
	if l, r := binary.BigEndian.Uint32(h[20+16:]), binary.BigEndian.Uint32(h[20+20:]); l != 100 || r != 115 {
		t.Fatalf("SACK %d-%d, want 100-115", l, r)
	}
}
