package csum

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// An incremental update at any offset, odd ones included, leaves the same
// checksum as summing the changed bytes from scratch.
func TestPutAtAnyOffset(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		n := 8 + rng.IntN(60)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		initial := rng.Uint32() & 0xffff
		binary.BigEndian.PutUint16(b[0:], 0)
		binary.BigEndian.PutUint16(b[0:], Checksum(b, initial))
		var acc uint32
		for range 1 + rng.IntN(4) {
			if rng.IntN(2) == 0 {
				off := 2 + rng.IntN(n-2-4+1)
				acc = Put32At(acc, b, off, rng.Uint32())
			} else {
				off := 2 + rng.IntN(n-2-2+1)
				acc = Put16At(acc, b, off, uint16(rng.Uint32()))
			}
		}
		Adjust(b[0:], Fold(acc))
		if r := Checksum(b, initial); r != 0 {
			t.Fatalf("% x: residue %#04x after an incremental update", b, r)
		}
	}
}

func FuzzPutAt(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 3, 4, 5, 6, 7}, uint8(3), uint32(0xdeadbeef), uint16(0x1234))
	f.Add([]byte{0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint8(2), uint32(0), uint16(0xffff))
	f.Fuzz(func(t *testing.T, b []byte, off uint8, v32 uint32, initial uint16) {
		if len(b) < 6 {
			return
		}
		o := 2 + int(off)%(len(b)-2-4+1)
		binary.BigEndian.PutUint16(b[0:], 0)
		binary.BigEndian.PutUint16(b[0:], Checksum(b, uint32(initial)))
		Adjust(b[0:], Fold(Put32At(0, b, o, v32)))
		if r := Checksum(b, uint32(initial)); r != 0 {
			t.Fatalf("offset %d: residue %#04x", o, r)
		}
	})
}

// sum16 is RFC 1071's sum, 16 bits at a time: the reference for Sum.
func sum16(b []byte, acc uint32) uint16 {
	s := uint64(acc)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)&1 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestSumMatchesWordByWord(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50000 {
		b := make([]byte, rng.IntN(200))
		for i := range b {
			b[i] = byte(rng.Uint32())
			if rng.IntN(3) == 0 {
				b[i] = 0xff // long carries
			}
		}
		acc := rng.Uint32() >> rng.IntN(32)
		if got, want := Fold(Sum(b, acc)), sum16(b, acc); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("% x + %#x: %#04x, want %#04x", b, acc, got, want)
		}
	}
}

func FuzzSum(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint32(0xffffffff))
	f.Add([]byte{0x45, 0, 0, 0x54}, uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, acc uint32) {
		got, want := Fold(Sum(b, acc)), sum16(b, acc)
		// 0 and 0xffff are both zero in one's complement.
		if got != want && got^want != 0xffff {
			t.Fatalf("% x + %#x: %#04x, want %#04x", b, acc, got, want)
		}
	})
}

func BenchmarkChecksumIPv4Header(b *testing.B) {
	h := []byte{0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 172, 25, 254, 1, 172, 25, 254, 100}
	binary.BigEndian.PutUint16(h[10:], Checksum(h, 0))
	for b.Loop() {
		if Checksum(h, 0) != 0 {
			b.Fatal("bad")
		}
	}
}

// PseudoV6 is what gopacket's IPv6 pseudo-header gives: a TCP and a UDP
// packet serialized with gopacket's checksums verify from scratch under it.
func TestPseudoV6MatchesGopacket(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 2000 {
		var src, dst [16]byte
		for j := range 16 {
			src[j], dst[j] = byte(rng.Uint32()), byte(rng.Uint32())
		}
		if i%4 == 0 {
			src, dst = [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, [16]byte{}
		}
		payload := make([]byte, rng.IntN(1500))
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: net.IP(src[:]), DstIP: net.IP(dst[:])}
		var l4 gopacket.SerializableLayer
		var proto uint8
		if i%2 == 0 {
			ip.NextHeader, proto = layers.IPProtocolTCP, 6
			tcp := &layers.TCP{SrcPort: layers.TCPPort(rng.Uint32()), DstPort: layers.TCPPort(rng.Uint32()), Seq: rng.Uint32(), ACK: true, Ack: rng.Uint32(), Window: 512}
			if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			l4 = tcp
		} else {
			ip.NextHeader, proto = layers.IPProtocolUDP, 17
			udp := &layers.UDP{SrcPort: layers.UDPPort(rng.Uint32()), DstPort: layers.UDPPort(rng.Uint32())}
			if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			l4 = udp
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, l4, gopacket.Payload(payload)); err != nil {
			t.Fatal(err)
		}
		seg := buf.Bytes()[40:]
		if r := Checksum(seg, PseudoV6(src[:], dst[:], proto, len(seg))); r != 0 {
			t.Fatalf("protocol %d, %d bytes: residue %#04x under PseudoV6", proto, len(seg), r)
		}
	}
}

// PseudoV6 sums the pseudo-header's 40 bytes as RFC 8200 lays them out,
// lengths past 16 bits (jumbograms) included.
func TestPseudoV6Layout(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 5000 {
		var h [40]byte
		for j := range 32 {
			h[j] = byte(rng.Uint32())
		}
		length := int(rng.Uint32() >> rng.IntN(32))
		proto := uint8(rng.Uint32())
		binary.BigEndian.PutUint32(h[32:], uint32(length))
		h[39] = proto
		if got, want := Fold(PseudoV6(h[0:16], h[16:32], proto, length)), sum16(h[:], 0); got != want && got^want != 0xffff {
			t.Fatalf("length %d, protocol %d: %#04x, want %#04x", length, proto, got, want)
		}
	}
}
