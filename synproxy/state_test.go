package synproxy

import (
	"encoding/binary"
	"sync"
	"testing"

	"github.com/tapvs/tapvs/tcpopt"
)

// The handshake is the State's: frames are held up to the limit, handed
// back once by Establish in order, and refused as too late after it.
func TestHoldUntilEstablished(t *testing.T) {
	s := &State{Cookie: 1000, OurWScale: -1, Opts: Options{WScale: -1}}
	s.Sent([]byte("syn"), 10)
	for i, want := range []HoldResult{Held, Held, Held, QueueFull} {
		if got := s.Hold([]byte{byte(i)}, 3); got != want {
			t.Fatalf("frame %d: %v, want %v", i, got, want)
		}
	}
	if s.Room(3) || !s.Room(4) {
		t.Fatal("Room does not match what Hold does")
	}
	held, ok := s.Establish(500, tcpopt.Parsed{WScale: -1})
	if !ok || len(held) != 3 || held[0][0] != 0 || held[2][0] != 2 {
		t.Fatalf("established %v, held %v", ok, held)
	}
	if _, again := s.Establish(600, tcpopt.Parsed{}); again || s.ServerISN() != 500 {
		t.Fatalf("a second SYN-ACK changed the connection: %v, server ISN %d", again, s.ServerISN())
	}
	if s.Hold([]byte{9}, 3) != TooLate || s.SYN() != nil {
		t.Fatal("a frame held, or the SYN kept, after the handshake")
	}
	if syn, giveUp := s.Due(1<<40, 3, 10); syn != nil || giveUp {
		t.Fatal("a retry after the handshake")
	}
}

// Due sends the SYN again every interval, retries times, then gives up.
func TestDueRetriesThenGivesUp(t *testing.T) {
	s := &State{}
	s.Sent([]byte("syn"), 100)
	var now int64
	var sent, gaveUp int
	for now = 0; now <= 1000; now += 50 {
		syn, giveUp := s.Due(now, 3, 100)
		if syn != nil {
			if string(syn) != "syn" || now < 100 {
				t.Fatalf("at %d: SYN %q", now, syn)
			}
			sent++
		}
		if giveUp {
			gaveUp++
			if sent != 3 || now != 400 {
				t.Fatalf("gave up at %d after %d retries, want at 400 after 3", now, sent)
			}
			break
		}
	}
	if gaveUp != 1 {
		t.Fatalf("%d retries, never gave up", sent)
	}
}

// Hold and Establish race from two readers (a client's frame and the
// server's SYN-ACK): every frame is either handed back by Establish or
// told it is too late, never lost. Run with -race.
func TestHoldRacesEstablish(t *testing.T) {
	for range 200 {
		s := &State{Cookie: 1, OurWScale: -1, Opts: Options{WScale: -1}}
		var wg sync.WaitGroup
		var results [8]HoldResult
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range results {
				results[i] = s.Hold([]byte{byte(i)}, len(results))
			}
		}()
		held, _ := s.Establish(1, tcpopt.Parsed{WScale: -1})
		wg.Wait()
		late := 0
		for _, r := range results {
			if r == TooLate {
				late++
			}
		}
		if len(held)+late != len(results) {
			t.Fatalf("%d handed back + %d too late != %d", len(held), late, len(results))
		}
	}
}

// A client offset (bytes tapvs put into the client's stream) adds to
// SYNPROXY's: the client's seq moves forward toward the server, and the
// server's ack and SACK blocks of the client's data move back toward the
// client, with the checksum kept.
func TestClientOffsetAddsToSynproxys(t *testing.T) {
	s := &State{Cookie: 5000, OurWScale: -1, Opts: Options{WScale: -1}}
	s.ShiftClient(30)
	s.ShiftClient(7) // a second source adds; it does not replace
	s.Establish(2000, tcpopt.Parsed{WScale: -1})
	if off := s.Offsets(); off.Client != 37 || off.Server != 3000 {
		t.Fatalf("offsets %+v", off)
	}
	h := tcpHeader(101, 5001, 1, 0, []uint32{5100, 5200}, 1000)
	translate(t, h, s.ToServer)
	verify(t, h)
	if seq, ack := binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:]); seq != 138 || ack != 2001 {
		t.Fatalf("to the server: seq %d ack %d, want 138 2001", seq, ack)
	}
	if e := binary.BigEndian.Uint32(h[20+16:]); e != 2100 {
		t.Fatalf("SACK of the server's data %d, want 2100", e)
	}
	h = tcpHeader(2001, 138, 1, 0, []uint32{150, 160}, 1000)
	translate(t, h, s.ToClient)
	verify(t, h)
	if seq, ack := binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:]); seq != 5001 || ack != 101 {
		t.Fatalf("to the client: seq %d ack %d, want 5001 101", seq, ack)
	}
	if l, r := binary.BigEndian.Uint32(h[20+16:]), binary.BigEndian.Uint32(h[20+20:]); l != 113 || r != 123 {
		t.Fatalf("SACK of the client's data %d-%d, want 113-123", l, r)
	}
}
