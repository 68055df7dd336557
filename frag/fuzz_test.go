package frag

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/tapvs/tapvs/wire"
)

// FuzzReassemble feeds a sequence of fragments, each a 2-byte length, a
// byte of time passing (in seconds) and the IP packet: no panic, the bytes
// held never pass the bound, a datagram made whole is one IP packet of the
// length said with no fragment left in it, and a sweep after the timeout
// leaves nothing held.
func FuzzReassemble(f *testing.F) {
	seq := func(frags [][]byte, steps []byte) []byte {
		var b []byte
		for i, p := range frags {
			var step byte
			if i < len(steps) {
				step = steps[i]
			}
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, step)
			b = append(b, p...)
		}
		return b
	}
	v4 := split(f, udp4(3000, 1), 1500, 1)
	v6 := split(f, udp6(3000), 1280, 1)
	f.Add(seq(v4, nil))                                   // in order
	f.Add(seq([][]byte{v4[2], v4[0], v4[1]}, nil))        // out of order
	f.Add(seq([][]byte{v4[0], v4[0], v4[1], v4[2]}, nil)) // a duplicate
	f.Add(seq(v6, nil))
	f.Add(seq([][]byte{v6[1], v6[0], v6[2]}, []byte{0, 31, 0})) // timed out between
	over := append([]byte(nil), v4[1]...)
	binary.BigEndian.PutUint16(over[wire.IPv4FragOff:], wire.IPv4(over).FragField()-1)
	f.Add(seq([][]byte{v4[0], over, v4[2]}, nil)) // overlapping
	tcp := udp4(100, 3)
	tcp[9] = wire.ProtoTCP
	f.Add(seq(split(f, tcp, 36, 3), nil))         // a tiny first
	f.Add(seq(split(f, udp6(100), 1280, 2), nil)) // atomic
	// IPv4 options, copied and not (cut again by splitAgain).
	opts := []byte{0x94, 4, 0, 0, 0x07, 7, 4, 0, 0, 0, 0, 1, 0x83, 7, 4, 1, 2, 3, 4, 0}
	f.Add(seq(split(f, withOptions(udp4(3000, 5), opts), 1500, 5), nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		const bound = 32 << 10
		r := New(Config{MaxBytes: bound, Timeout: 30 * time.Second})
		out := make([]byte, 70000)
		var again *Reassembler // for splitAgain, made on the first datagram
		now := int64(0)
		for range 200 {
			if len(b) < 3 {
				break
			}
			n := int(binary.BigEndian.Uint16(b))
			now += int64(b[2]) * int64(time.Second)
			b = b[3:]
			n = min(n, len(b))
			ip := b[:n]
			b = b[n:]
			res, info, _ := r.Add(ip, out, now)
			if r.Bytes() > bound {
				t.Fatalf("%d bytes held", r.Bytes())
			}
			if res != Done {
				continue
			}
			d := out[:info.Len]
			switch d[0] >> 4 {
			case 4:
				h := wire.IPv4(d)
				if h.TotalLen() != len(d) || h.Fragment() {
					t.Fatalf("v4 datagram: length %d of %d, fragment %v", h.TotalLen(), len(d), h.Fragment())
				}
			case 6:
				h := wire.IPv6(d)
				if h.PayloadLen()+wire.IPv6Len != len(d) {
					t.Fatalf("v6 datagram: payload %d of %d", h.PayloadLen(), len(d))
				}
			default:
				t.Fatalf("datagram of version %d", d[0]>>4)
			}
			if again == nil {
				again = New(Config{})
			}
			splitAgain(t, d, again, out2[:])
		}
		r.Sweep(now + int64(31*time.Second))
		if r.Bytes() != 0 || r.Held() != 0 {
			t.Fatalf("after the timeout: %d bytes, %d held", r.Bytes(), r.Held())
		}
	})
}

// out2 and splitBuf are splitAgain's buffers (the fuzz target runs one
// input at a time in a process).
var out2, splitBuf [70000]byte

// splitAgain cuts a datagram the reassembler made (its headers, IPv4
// options included, are a client's) for a few MTUs: Count says what Next
// makes, no fragment passes the MTU, and the fragments reassemble into
// the datagram but for what fragmenting may change (IPv4 options not
// copied become NOPs in later fragments only, and the identification is
// the splitter's: all the data comes back as it was), where they are few
// enough to be taken back (MaxFragments).
func splitAgain(t *testing.T, d []byte, r *Reassembler, out []byte) {
	for _, mtu := range []int{68, 576, 1280, 9000} {
		s, ok := NewSplitter(d, mtu, 7)
		if !ok {
			continue
		}
		n, size := s.Count()
		buf := splitBuf[:max(mtu, size)]
		got := 0
		for i := range MaxSplit + 1 {
			m := s.Next(buf)
			if m == 0 {
				break
			}
			if i == MaxSplit {
				t.Fatalf("MTU %d: more than %d fragments", mtu, MaxSplit)
			}
			got++
			if m > mtu || m > size {
				t.Fatalf("MTU %d: a fragment of %d bytes (largest said %d)", mtu, m, size)
			}
			if n > 1 && n <= MaxFragments {
				// The header's identification and checksum are the
				// splitter's: the rest from where the data starts.
				res, info, reason := r.Add(buf[:m], out, 0)
				if got == n && (res != Done || info.Len != len(d) || string(out[s.hdrLen:len(d)]) != string(d[s.hdrLen:])) {
					t.Fatalf("MTU %d: %d fragments rejoin as %v %v, %d bytes of %d", mtu, n, res, reason, info.Len, len(d))
				}
			}
		}
		if got != n {
			t.Fatalf("MTU %d: Next made %d fragments, Count said %d", mtu, got, n)
		}
	}
}
