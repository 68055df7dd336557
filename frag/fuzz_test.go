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
	f.Fuzz(func(t *testing.T, b []byte) {
		const bound = 32 << 10
		r := New(Config{MaxBytes: bound, Timeout: 30 * time.Second})
		out := make([]byte, 70000)
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
		}
		r.Sweep(now + int64(31*time.Second))
		if r.Bytes() != 0 || r.Held() != 0 {
			t.Fatalf("after the timeout: %d bytes, %d held", r.Bytes(), r.Held())
		}
	})
}
