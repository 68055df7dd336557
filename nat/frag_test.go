package nat

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/frag"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// cut is the frame's IP datagram as fragments of at most mtu bytes, each a
// frame in a reader's buffer (64 KiB past the headroom) from the same MACs.
func cut(t testing.TB, f *Frame, mtu int, id uint32) []*Frame {
	t.Helper()
	raw := f.Bytes()
	s, ok := frag.NewSplitter(raw[wire.EtherLen:], mtu, id)
	if !ok {
		t.Fatalf("cannot cut for %d", mtu)
	}
	var out []*Frame
	for range 100 {
		const headroom = 64
		buf := make([]byte, headroom+wire.EtherLen+65536)
		copy(buf[headroom:], raw[:wire.EtherLen])
		n := s.Next(buf[headroom+wire.EtherLen:])
		if n == 0 {
			return out
		}
		out = append(out, &Frame{Buf: buf, Off: headroom, Len: wire.EtherLen + n})
	}
	t.Fatal("too many fragments")
	return nil
}

// joined reassembles the fragments the balancer sent out of side with a
// reassembler of its own, each at most mtu bytes of IP, into a frame
// decode can check.
func joined(t testing.TB, sent []sent, side Side, mtu int) *Frame {
	t.Helper()
	r := frag.New(frag.Config{})
	out := make([]byte, 70000)
	for i, s := range sent {
		if s.side != side {
			t.Fatalf("fragment %d out of the %v side, want %v", i, s.side, side)
		}
		if ip := len(s.frame) - wire.EtherLen; ip > mtu {
			t.Fatalf("fragment %d of %d bytes past %d", i, ip, mtu)
		}
		res, info, reason := r.Add(s.frame[wire.EtherLen:], out[wire.EtherLen:], 0)
		if i < len(sent)-1 {
			if res != frag.Held {
				t.Fatalf("fragment %d: %v %v", i, res, reason)
			}
			continue
		}
		if res != frag.Done {
			t.Fatalf("last fragment: %v %v", res, reason)
		}
		copy(out, s.frame[:wire.EtherLen])
		return withHeadroom(out[:wire.EtherLen+info.Len])
	}
	t.Fatal("no fragments sent")
	return nil
}

func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*13 + 1)
	}
	return p
}

// TestFragmentsBothWays sends a 4000-byte UDP datagram in fragments to the
// VIP and one back from the real server to the LIP: each is reassembled,
// rewritten, checked whole, and cut again for its way out (no longer than
// the largest fragment that came in, nor than the side's MTU).
func TestFragmentsBothWays(t *testing.T) {
	for _, fam := range []struct {
		name              string
		rig               func(testing.TB, Protocol, string, func(*Config)) *rig
		client, vip, lip  netip.Addr
		inMTU, serverMTU  int
		wantIn, wantBack  int // the largest fragment expected out each way
		fragsIn, fragsOut int
	}{
		{"v4", newRig, client, vip, lip1, 1500, 1400, 1400, 1500, 3, 3},
		{"v6", newRig6, client6, vip6, lip6, 1280, 1500, 1280, 1500, 4, 3},
	} {
		t.Run(fam.name, func(t *testing.T) {
			var out []sent
			r := fam.rig(t, UDP, "rr", func(c *Config) { c.ServerMTU = fam.serverMTU })
			r.b.Attach(recordLink{&out})
			body := payload(4000)
			whole := frame(t, pktSpec{src: fam.client, dst: fam.vip, sport: 40000, dport: 80, proto: UDP, payload: body, srcMAC: macClient})
			frags := cut(t, whole, fam.inMTU, 77)
			for i, f := range frags {
				if v := emit(r.b, &out, ClientSide, f); v != stolenUntil(i, len(frags)) {
					t.Fatalf("fragment %d: %v, drops %v", i, v, nonZero(r.b.Stats.Drops()))
				}
				if i < len(frags)-1 && r.b.FragmentBytes() == 0 {
					t.Fatal("nothing charged while held")
				}
			}
			if r.b.FragmentBytes() != 0 || r.b.Reassembled() != 1 {
				t.Fatalf("after: %d bytes held, %d reassembled", r.b.FragmentBytes(), r.b.Reassembled())
			}
			if len(out) != fam.fragsIn {
				t.Fatalf("%d fragments out, want %d", len(out), fam.fragsIn)
			}
			d := decode(t, joined(t, out, ServerSide, fam.wantIn))
			var src, dst netip.Addr
			if d.ip6 != nil {
				src, dst = addr6(d.ip6.SrcIP), addr6(d.ip6.DstIP)
			} else {
				src, dst = addr(d.ip.SrcIP), addr(d.ip.DstIP)
			}
			if src != fam.lip || (dst != r.d1.Addr && dst != r.d2.Addr) || d.udp.DstPort != 8080 || !bytes.Equal(d.udp.Payload, body) {
				t.Fatalf("forwarded %v -> %v:%d, %d bytes", src, dst, d.udp.DstPort, len(d.udp.Payload))
			}
			ids := map[uint32]bool{}
			for _, s := range out {
				ids[fragID(s.frame)] = true
			}
			if len(ids) != 1 || ids[77] {
				t.Fatalf("fragment ids %v: want one, tapvs's own", ids)
			}

			// The server's answer, fragmented, to the LIP.
			out = out[:0]
			back := frame(t, pktSpec{src: dst, dst: fam.lip, sport: 8080, dport: uint16(d.udp.SrcPort), proto: UDP, payload: body, srcMAC: macGateway})
			backFrags := cut(t, back, 1500, 99)
			for i, f := range backFrags {
				if v := emit(r.b, &out, ServerSide, f); v != stolenUntil(i, len(backFrags)) {
					t.Fatalf("reply fragment %d: %v, drops %v", i, v, nonZero(r.b.Stats.Drops()))
				}
			}
			if len(out) != fam.fragsOut {
				t.Fatalf("%d reply fragments out, want %d", len(out), fam.fragsOut)
			}
			d = decode(t, joined(t, out, ClientSide, fam.wantBack))
			if d.ip6 != nil {
				src, dst = addr6(d.ip6.SrcIP), addr6(d.ip6.DstIP)
			} else {
				src, dst = addr(d.ip.SrcIP), addr(d.ip.DstIP)
			}
			if src != fam.vip || dst != fam.client || d.udp.SrcPort != 80 || d.udp.DstPort != 40000 || !bytes.Equal(d.udp.Payload, body) {
				t.Fatalf("reply %v:%d -> %v:%d", src, d.udp.SrcPort, dst, d.udp.DstPort)
			}
			if !bytes.Equal(out[0].frame[:6], macClient[:]) {
				t.Fatalf("reply fragments to %x", out[0].frame[:6])
			}
		})
	}
}

// emit runs f through b from side as a reader does: the fragments a
// datagram is cut into (Frame.Frags) are recorded in out as a Link records
// what it sends, out of the side the verdict sends them, and given back.
func emit(b *Balancer, out *[]sent, side Side, f *Frame) Verdict {
	v := b.Process(side, f)
	if f.Frags != nil {
		to := side
		if v == Forward {
			to = side.other()
		}
		for _, fr := range f.Frags.Frames() {
			*out = append(*out, sent{to, append([]byte(nil), fr[tun.VNetHdrLen:]...)})
		}
		f.Frags.Release()
	}
	return v
}

// stolenUntil is the verdict on fragment i of n: each is held (Stolen)
// until the last makes the datagram, which leaves cut (Forward).
func stolenUntil(i, n int) Verdict {
	if i == n-1 {
		return Forward
	}
	return Stolen
}

// largest is the IP length of the largest frame sent.
func largest(out []sent) int {
	n := 0
	for _, s := range out {
		n = max(n, len(s.frame)-wire.EtherLen)
	}
	return n
}

// fragID is a fragment's identification, IPv4 or IPv6.
func fragID(f []byte) uint32 {
	ip := f[wire.EtherLen:]
	if ip[0]>>4 == 4 {
		return uint32(wire.IPv4(ip).ID())
	}
	return uint32(ip[wire.IPv6Len+4])<<24 | uint32(ip[wire.IPv6Len+5])<<16 | uint32(ip[wire.IPv6Len+6])<<8 | uint32(ip[wire.IPv6Len+7])
}

// TestFragmentsFit: a reassembled datagram that fits its way out whole
// (an IPv6 atomic fragment) is forwarded as any other packet.
func TestFragmentsFit(t *testing.T) {
	r := newRig6(t, UDP, "rr", nil)
	var out []sent
	r.b.Attach(recordLink{&out})
	f := withExt6(t, frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: UDP, payload: payload(100), srcMAC: macClient}), wire.IP6Fragment, []byte{0, 0, 0, 0, 0, 1})
	if v := emit(r.b, &out, ClientSide, f); v != Forward || len(out) != 0 {
		t.Fatalf("%v, %d sent", v, len(out))
	}
	if d := decode(t, f); d.udp == nil || len(d.udp.Payload) != 100 {
		t.Fatal("not the datagram")
	}
	// Exactly the server side's MTU: whole still.
	r = newRig6(t, UDP, "rr", func(c *Config) { c.ServerMTU = wire.IPv6Len + wire.UDPLen + 100 })
	r.b.Attach(recordLink{&out})
	f = withExt6(t, frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: UDP, payload: payload(100), srcMAC: macClient}), wire.IP6Fragment, []byte{0, 0, 0, 0, 0, 1})
	if v := emit(r.b, &out, ClientSide, f); v != Forward || len(out) != 0 {
		t.Fatalf("at the MTU: %v, %d sent", v, len(out))
	}
}

// TestFragmentsLargest: fragments as large as IPv4 allows (an MTU of
// 65535 on both sides) come in and leave as large.
func TestFragmentsLargest(t *testing.T) {
	var out []sent
	r := newRig(t, UDP, "rr", func(c *Config) { c.ServerMTU, c.ClientMTU = 65535, 65535 })
	r.b.Attach(recordLink{&out})
	body := payload(65535 - 28)
	whole := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: body, srcMAC: macClient})
	frags := cut(t, whole, 65535, 1)
	for _, f := range frags {
		emit(r.b, &out, ClientSide, f)
	}
	if len(out) != 2 || len(out[0].frame) != wire.EtherLen+len(frags[0].Bytes())-wire.EtherLen {
		t.Fatalf("%d fragments out, want 2 as they came", len(out))
	}
	if d := decode(t, joined(t, out, ServerSide, 65535)); !bytes.Equal(d.udp.Payload, body) {
		t.Fatal("not the datagram")
	}
}

func TestFragmentsRefused(t *testing.T) {
	var out []sent
	whole := func() *Frame {
		return frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: payload(3000), srcMAC: macClient})
	}
	t.Run("no reassembly", func(t *testing.T) {
		r := newRig(t, UDP, "rr", func(c *Config) { c.NoReassembly = true })
		if v := emit(r.b, &out, ClientSide, cut(t, whole(), 1500, 1)[0]); v != Drop || r.b.Stats.Drop(DropFragment) != 1 || r.b.FragmentBytes() != 0 || r.b.Reassembled() != 0 {
			t.Fatalf("%v, %v", v, nonZero(r.b.Stats.Drops()))
		}
	})
	t.Run("overlap", func(t *testing.T) {
		r := newRig(t, UDP, "rr", nil)
		frags := cut(t, whole(), 1500, 1)
		emit(r.b, &out, ClientSide, frags[0])
		second := frags[1].Bytes()
		ff := wire.IPv4(second[wire.EtherLen:]).FragField() - 1
		second[wire.EtherLen+wire.IPv4FragOff], second[wire.EtherLen+wire.IPv4FragOff+1] = byte(ff>>8), byte(ff)
		fixIPChecksum(second)
		if v := emit(r.b, &out, ClientSide, frags[1]); v != Drop {
			t.Fatal(v)
		}
		if n := r.b.Stats.Drop(DropFragOverlap); n != 2 || r.b.Stats.Drops()["fragment_overlap"] != 2 || r.b.FragmentBytes() != 0 {
			t.Fatalf("overlap counted %d (want the held and the refused), %v", n, nonZero(r.b.Stats.Drops()))
		}
	})
	t.Run("timeout", func(t *testing.T) {
		r := newRig(t, UDP, "rr", func(c *Config) { c.Reassembly.Timeout = time.Second })
		frags := cut(t, whole(), 1500, 1)
		emit(r.b, &out, ClientSide, frags[0])
		emit(r.b, &out, ClientSide, frags[1])
		r.b.table.now.Store(int64(time.Second))
		r.b.Sweep()
		if r.b.Stats.Drop(DropFragTimeout) != 0 || r.b.FragmentBytes() == 0 {
			t.Fatal("given up at its deadline")
		}
		r.b.table.now.Store(int64(time.Second) + 1)
		r.b.Sweep()
		if r.b.Stats.Drop(DropFragTimeout) != 2 || r.b.FragmentBytes() != 0 {
			t.Fatalf("timeout: %v, %d bytes", nonZero(r.b.Stats.Drops()), r.b.FragmentBytes())
		}
	})
	t.Run("no room to cut", func(t *testing.T) {
		r := newRig(t, UDP, "rr", func(c *Config) { c.ServerMTU = wire.IPv4MinLen + 7 })
		var out []sent
		r.b.Attach(recordLink{&out})
		frags := cut(t, whole(), 1500, 1)
		for _, f := range frags[:len(frags)-1] {
			emit(r.b, &out, ClientSide, f)
		}
		if v := emit(r.b, &out, ClientSide, frags[len(frags)-1]); v != Drop || r.b.Stats.Drop(DropFragNoRoom) != 1 || len(out) != 0 {
			t.Fatalf("%v, %v", v, nonZero(r.b.Stats.Drops()))
		}
	})
	t.Run("cut to the MTU", func(t *testing.T) {
		r := newRig(t, UDP, "rr", func(c *Config) { c.ServerMTU = wire.IPv4MinLen + 8 })
		var out []sent
		r.b.Attach(recordLink{&out})
		frags := cut(t, whole(), 1500, 1)
		for _, f := range frags {
			emit(r.b, &out, ClientSide, f)
		}
		if len(out) != (3008+7)/8 {
			t.Fatalf("%d fragments of 8 bytes, want %d", len(out), (3008+7)/8)
		}
	})
	t.Run("no service", func(t *testing.T) {
		// Whole, the datagram is dropped as any other: nothing is cut
		// or sent.
		r := newRig(t, UDP, "rr", nil)
		var out []sent
		r.b.Attach(recordLink{&out})
		f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 81, proto: UDP, payload: payload(3000), srcMAC: macClient})
		frags := cut(t, f, 1500, 1)
		for _, f := range frags[:len(frags)-1] {
			emit(r.b, &out, ClientSide, f)
		}
		if v := emit(r.b, &out, ClientSide, frags[len(frags)-1]); v != Drop || len(out) != 0 || r.b.Stats.Drop(DropNoService) != 1 {
			t.Fatalf("%v, %d sent, %v", v, len(out), nonZero(r.b.Stats.Drops()))
		}
	})
	t.Run("not a VIP", func(t *testing.T) {
		r := newRig(t, UDP, "rr", nil)
		f := frame(t, pktSpec{src: client, dst: netip.MustParseAddr("172.25.254.99"), sport: 40000, dport: 80, proto: UDP, payload: payload(3000), srcMAC: macClient})
		if v := emit(r.b, &out, ClientSide, cut(t, f, 1500, 1)[0]); v != Pass || r.b.FragmentBytes() != 0 {
			t.Fatalf("%v", v)
		}
	})
}

// TestFragmentsNAT64: a NAT64 connection's datagrams in fragments, IPv6
// from the client and IPv4 from the server, are reassembled, translated,
// and leave as fragments of the other family.
//
// The translated fragments are as large as the client's, translated: the
// IPv6 header and its Fragment header (48 bytes) become a 20-byte IPv4
// header, so a client's fragments cut for 1500 (1496 bytes: 1448 of data)
// fit a server side's MTU of 1480 as 1468 bytes (not a Packet Too Big for
// 1500 the client would ignore); the server's IPv4 fragments cut for 1000
// (996 bytes) leave as 1024.
func TestFragmentsNAT64(t *testing.T) {
	var out []sent
	r := newRig64(t, UDP, func(c *Config) { c.ServerMTU = 1480 })
	r.b.Attach(recordLink{&out})
	body := payload(4000)
	whole := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: UDP, payload: body, srcMAC: macClient})
	frags := cut(t, whole, 1500, 5)
	for i, f := range frags {
		if v := emit(r.b, &out, ClientSide, f); v != stolenUntil(i, len(frags)) {
			t.Fatalf("fragment %d: %v, drops %v", i, v, nonZero(r.b.Stats.Drops()))
		}
	}
	if largest(out) != 1496-28 || r.b.Stats.Drop(DropFragPathMTU) != 0 {
		t.Fatalf("largest fragment to the server %d bytes, want 1468; drops %v", largest(out), nonZero(r.b.Stats.Drops()))
	}
	d := decode(t, joined(t, out, ServerSide, 1468))
	if d.ip == nil || addr(d.ip.SrcIP) != lip1 || !bytes.Equal(d.udp.Payload, body) {
		t.Fatalf("to the server: %+v", d.ip)
	}
	out = out[:0]
	back := frame(t, pktSpec{src: addr(d.ip.DstIP), dst: lip1, sport: 8080, dport: uint16(d.udp.SrcPort), proto: UDP, payload: body, srcMAC: macGateway})
	frags = cut(t, back, 1000, 6)
	for i, f := range frags {
		if v := emit(r.b, &out, ServerSide, f); v != stolenUntil(i, len(frags)) {
			t.Fatalf("reply fragment %d: %v, drops %v", i, v, nonZero(r.b.Stats.Drops()))
		}
	}
	if largest(out) != 996+28 {
		t.Fatalf("largest fragment to the client %d bytes, want 1024", largest(out))
	}
	d = decode(t, joined(t, out, ClientSide, 1024))
	if d.ip6 == nil || addr6(d.ip6.SrcIP) != vip64 || addr6(d.ip6.DstIP) != client6 || !bytes.Equal(d.udp.Payload, body) || r.b.Stats.Drop(DropNAT64TooBig) != 0 {
		t.Fatalf("to the client: %+v, drops %v", d.ip6, nonZero(r.b.Stats.Drops()))
	}
}

// TestFragmentsNAT64Atomic: an IPv6 atomic fragment to a NAT64 VIP leaves
// as one IPv4 packet (its fragment header is not a fragment's size in
// IPv4): the server side's MTU is the only bound, as for a packet that
// came whole.
func TestFragmentsNAT64Atomic(t *testing.T) {
	var out []sent
	for _, mtu := range []int{1500, wire.IPv4MinLen + wire.UDPLen + 1000} {
		r := newRig64(t, UDP, func(c *Config) { c.ServerMTU = mtu })
		r.b.Attach(recordLink{&out})
		out = out[:0]
		f := withExt6(t, frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: UDP, payload: payload(1000), srcMAC: macClient}), wire.IP6Fragment, []byte{0, 0, 0, 0, 0, 1})
		if v := emit(r.b, &out, ClientSide, f); v != Forward || len(out) != 0 {
			t.Fatalf("MTU %d: %v, %d fragments, drops %v", mtu, v, len(out), nonZero(r.b.Stats.Drops()))
		}
		d := decode(t, f)
		if d.ip == nil || d.ip.Flags&layers.IPv4MoreFragments != 0 || d.ip.FragOffset != 0 || len(d.udp.Payload) != 1000 {
			t.Fatalf("MTU %d: not one IPv4 datagram: %+v", mtu, d.ip)
		}
	}
}

// TestFragmentsUDPProxy: a datagram to a proxy-v2 UDP service that came in
// fragments gets its header past the MTU and leaves in fragments; one that
// came whole and would pass the MTU with it is still dropped, and so is a
// reassembled one the header would take past 65535 bytes.
func TestFragmentsUDPProxy(t *testing.T) {
	var out []sent
	r := newRig(t, UDP, "rr", nil)
	r.b.Attach(recordLink{&out})
	setClientAddr(t, r, ClientAddrProxyV2)
	body := payload(4000)
	whole := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: body, srcMAC: macClient})
	for _, f := range cut(t, whole, 1500, 5) {
		emit(r.b, &out, ClientSide, f)
	}
	d := decode(t, joined(t, out, ServerSide, 1500))
	if len(d.udp.Payload) != udpProxyLen+len(body) || !bytes.Equal(d.udp.Payload[udpProxyLen:], body) {
		t.Fatalf("%d bytes at the server, want the header and %d", len(d.udp.Payload), len(body))
	}
	big := frame(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: UDP, payload: payload(1472), srcMAC: macClient})
	if v := emit(r.b, &out, ClientSide, big); v != Drop || r.b.Stats.Drop(DropUDPProxyBig) != 1 {
		t.Fatalf("a whole datagram past the MTU with the header: %v", v)
	}
	// 65535 bytes with the header: it fits, and leaves in fragments.
	out = out[:0]
	fits := frame(t, pktSpec{src: client, dst: vip, sport: 40003, dport: 80, proto: UDP, payload: payload(65535 - 28 - udpProxyLen), srcMAC: macClient})
	for _, f := range cut(t, fits, 1500, 7) {
		emit(r.b, &out, ClientSide, f)
	}
	if d := decode(t, joined(t, out, ServerSide, 1500)); len(d.udp.Payload) != 65535-28 || r.b.Stats.Drop(DropUDPProxyBig) != 1 {
		t.Fatalf("a datagram of 65535 bytes with the header: %v", nonZero(r.b.Stats.Drops()))
	}
	// 65535 bytes whole: the header would pass it.
	max := frame(t, pktSpec{src: client, dst: vip, sport: 40002, dport: 80, proto: UDP, payload: payload(65535 - 28), srcMAC: macClient})
	for _, f := range cut(t, max, 1500, 6) {
		emit(r.b, &out, ClientSide, f)
	}
	if r.b.Stats.Drop(DropUDPProxyBig) != 2 {
		t.Fatalf("a 65535-byte datagram: %v", nonZero(r.b.Stats.Drops()))
	}
}

// TestFragmentsTooBig: a datagram whose largest fragment would not fit the
// other side, IPv6 or IPv4 with DF, is answered to its sender as Linux
// answers it (a Packet Too Big, a fragmentation needed with the other
// side's MTU, from the address it was sent to, quoting it) and dropped;
// IPv4 without DF is cut to the MTU; fragments that fit are cut as they
// came.
func TestFragmentsTooBig(t *testing.T) {
	rig46 := func(t testing.TB, p Protocol, _ string, mod func(*Config)) *rig { return newRig46(t, p, mod) }
	df := func(fs []*Frame) []*Frame {
		for _, f := range fs {
			b := f.Bytes()
			b[wire.EtherLen+wire.IPv4FragOff] |= wire.IPv4DF >> 8
			fixIPChecksum(b)
		}
		return fs
	}
	for _, c := range []struct {
		name       string
		rig        func(testing.TB, Protocol, string, func(*Config)) *rig
		src, dst   netip.Addr
		side       Side
		cutAt, mtu int
		setDF      bool
		wantMTU    uint32 // 0: no error, cut
		wantV6     bool
		quoteLen   int
	}{
		{"v4 DF from the client", newRig, client, vip, ClientSide, 1500, 1400, true, 1400, false, 28},
		{"v4 DF fitting", newRig, client, vip, ClientSide, 1400, 1400, true, 0, false, 0},
		{"v4 without DF", newRig, client, vip, ClientSide, 1500, 1400, false, 0, false, 0},
		{"v6 from the client", newRig6, client6, vip6, ClientSide, 1500, 1400, false, 1400, true, 128},
		{"v6 fitting", newRig6, client6, vip6, ClientSide, 1400, 1400, false, 0, true, 0},
		{"v6 at 1280", newRig6, client6, vip6, ClientSide, 1500, 1000, false, 1280, true, 128},
		{"NAT64 from the client", nil, client6, vip64, ClientSide, 1500, 1400, false, 1428, true, 128},
		{"NAT64 from the client, 28 bytes saved", nil, client6, vip64, ClientSide, 1500, 1468, false, 0, true, 0},
		{"NAT64 from the client, 27 bytes saved", nil, client6, vip64, ClientSide, 1500, 1467, false, 1495, true, 128},
		{"v4 DF from the server", newRig, rs1, lip1, ServerSide, 1500, 1400, true, 1400, false, 28},
		{"NAT64, v4 DF from the server", nil, rs1, lip1, ServerSide, 1500, 1400, true, 1372, false, 28},
		{"NAT64, v4 DF from the server, 28 bytes more", nil, rs1, lip1, ServerSide, 1400, 1424, true, 0, false, 0},
		{"NAT64, v4 DF from the server, 27 bytes more", nil, rs1, lip1, ServerSide, 1400, 1423, true, 1395, false, 28},
		{"NAT46, v4 DF from the client", rig46, client, vip, ClientSide, 1500, 1400, true, 1372, false, 28},
		{"NAT46, v4 DF from the client, 28 bytes more", rig46, client, vip, ClientSide, 1400, 1424, true, 0, false, 0},
		{"NAT46, v4 DF from the client, 27 bytes more", rig46, client, vip, ClientSide, 1400, 1423, true, 1395, false, 28},
		{"NAT46, v4 without DF from the client", rig46, client, vip, ClientSide, 1500, 1400, false, 0, false, 0},
		{"NAT46 from the server", rig46, rs6a, lip6, ServerSide, 1500, 1400, false, 1428, true, 128},
		{"NAT46 from the server, 28 bytes saved", rig46, rs6a, lip6, ServerSide, 1500, 1468, false, 0, true, 0},
		{"NAT46 from the server, 27 bytes saved", rig46, rs6a, lip6, ServerSide, 1500, 1467, false, 1495, true, 128},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out []sent
			mod := func(cfg *Config) { cfg.ServerMTU = c.mtu }
			if c.side == ServerSide {
				mod = func(cfg *Config) { cfg.ClientMTU = c.mtu }
			}
			var r *rig
			if c.rig == nil {
				r = newRig64(t, UDP, mod)
			} else {
				r = c.rig(t, UDP, "rr", mod)
			}
			r.b.Attach(recordLink{&out})
			sport, dport := uint16(40000), uint16(80)
			if c.side == ServerSide {
				// A connection first, for the server's answer.
				cl, v := client, vip
				if c.rig == nil {
					cl, v = client6, vip64
				}
				if v := emit(r.b, &out, ClientSide, frame(t, pktSpec{src: cl, dst: v, sport: 40000, dport: 80, proto: UDP, payload: []byte("q"), srcMAC: macClient})); v != Forward {
					t.Fatal(v)
				}
				info := r.b.Table().Conns()[0]
				c.src, sport, dport = info.RIP.Addr(), 8080, info.LIP.Port()
			}
			mac := macClient
			if c.side == ServerSide {
				mac = macGateway
			}
			whole := frame(t, pktSpec{src: c.src, dst: c.dst, sport: sport, dport: dport, proto: UDP, payload: payload(4000), srcMAC: mac})
			frags := cut(t, whole, c.cutAt, 3)
			if c.setDF {
				df(frags)
			}
			var v Verdict
			for _, f := range frags {
				v = emit(r.b, &out, c.side, f)
			}
			if c.wantMTU == 0 {
				if v != Forward || r.b.Stats.Drop(DropFragPathMTU) != 0 || len(out) < 3 || out[0].side == c.side {
					t.Fatalf("%v, %d sent, %v", v, len(out), nonZero(r.b.Stats.Drops()))
				}
				return
			}
			if v != Drop || r.b.Stats.Drop(DropFragPathMTU) != 1 || len(out) != 1 || out[0].side != c.side {
				t.Fatalf("%v, %d sent, %v", v, len(out), nonZero(r.b.Stats.Drops()))
			}
			raw := out[0].frame
			own := macClientNIC
			if c.side == ServerSide {
				own = macServerNIC
			}
			if !bytes.Equal(raw[:6], mac[:]) || !bytes.Equal(raw[6:12], own[:]) {
				t.Fatalf("%x -> %x, want from tapvs's %x to the sender's MAC %x", raw[6:12], raw[:6], own, mac)
			}
			orig := whole.Bytes()[wire.EtherLen:]
			if c.wantV6 {
				ip := wire.IPv6(raw[wire.EtherLen:])
				ic := wire.ICMP(ip[wire.IPv6Len:])
				if !bytes.Equal(ip.Src(), c.dst.AsSlice()) || !bytes.Equal(ip.Dst(), c.src.AsSlice()) || ic.Type() != wire.ICMP6TooBig || ic.Code() != 0 || ic.MTU6() != c.wantMTU {
					t.Fatalf("Packet Too Big: %x", raw[:wire.EtherLen+wire.IPv6Len+8])
				}
				if ip.PayloadLen() != wire.ICMPLen+c.quoteLen || !bytes.Equal(ic[wire.ICMPLen:], orig[:c.quoteLen]) {
					t.Fatalf("quote of %d bytes, want %d of the datagram", ip.PayloadLen()-wire.ICMPLen, c.quoteLen)
				}
				if csum.Checksum(ic, csum.PseudoV6(ip.Src(), ip.Dst(), wire.ProtoICMPv6, len(ic))) != 0 {
					t.Fatal("ICMPv6 checksum")
				}
				return
			}
			ip := wire.IPv4(raw[wire.EtherLen:])
			ic := wire.ICMP(ip[wire.IPv4MinLen:ip.TotalLen()])
			if !bytes.Equal(ip.Src(), c.dst.AsSlice()) || !bytes.Equal(ip.Dst(), c.src.AsSlice()) || ip.Protocol() != wire.ProtoICMP || ic.Type() != wire.ICMP4Unreach || ic.Code() != wire.ICMP4FragNeeded || uint32(ic.MTU4()) != c.wantMTU {
				t.Fatalf("fragmentation needed: %x", raw[:wire.EtherLen+wire.IPv4MinLen+8])
			}
			if len(ic) != wire.ICMPLen+c.quoteLen || !bytes.Equal(ic[wire.ICMPLen+12:], orig[12:c.quoteLen]) {
				t.Fatalf("quote %x, want the datagram's %x", ic[wire.ICMPLen:], orig[:c.quoteLen])
			}
			if csum.Checksum(ip[:wire.IPv4MinLen], 0) != 0 || csum.Checksum(ic, 0) != 0 || ip.TTL() != icmpTTL {
				t.Fatal("checksums or TTL")
			}
		})
	}
}

// TestXlatFit: a packet that came whole and is translated into the other
// family (NAT46 calls xlatFit) goes on if it fits translated (IPv4 20
// bytes longer, IPv6 20 shorter); IPv4 without DF is marked to be cut;
// IPv4 with DF and IPv6 are answered with the MTU in their own family.
func TestXlatFit(t *testing.T) {
	const mtu = 1400
	for _, c := range []struct {
		name    string
		src     netip.Addr
		dst     netip.Addr
		ipLen   int
		df      bool
		want    Verdict
		cut     bool
		wantMTU uint32 // the error's MTU; 0: none
	}{
		{"v4 fits", client, vip, mtu - 20, false, Forward, false, 0},
		{"v4 one byte over", client, vip, mtu - 19, false, Forward, true, 0},
		{"v4 DF fits", client, vip, mtu - 20, true, Forward, false, 0},
		{"v4 DF one byte over", client, vip, mtu - 19, true, Drop, false, mtu - 20},
		{"v6 fits", client6, vip6, mtu + 20, false, Forward, false, 0},
		{"v6 one byte over", client6, vip6, mtu + 21, false, Drop, false, mtu + 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out []sent
			r := newRig(t, UDP, "rr", func(cfg *Config) { cfg.ServerMTU = mtu })
			r.b.Attach(recordLink{&out})
			hl := wire.IPv4MinLen
			if c.src.Is6() {
				hl = wire.IPv6Len
			}
			f := frame(t, pktSpec{src: c.src, dst: c.dst, sport: 40000, dport: 80, proto: UDP, payload: payload(c.ipLen - hl - wire.UDPLen), srcMAC: macClient})
			if c.df {
				b := f.Bytes()
				b[wire.EtherLen+wire.IPv4FragOff] |= wire.IPv4DF >> 8
				fixIPChecksum(b)
			}
			var p pkt
			if ok, bad := parseIP(f.Bytes(), &p); !ok || bad {
				t.Fatal("parse")
			}
			v := r.b.xlatFit(ClientSide, f, &p)
			if v != c.want || (f.reasm == frag.MaxDatagram) != c.cut || f.reasm6 {
				t.Fatalf("%v, mark %d %v", v, f.reasm, f.reasm6)
			}
			if c.wantMTU == 0 {
				if len(out) != 0 || r.b.Stats.Drop(DropFragPathMTU) != 0 {
					t.Fatalf("%d sent", len(out))
				}
				return
			}
			if len(out) != 1 || out[0].side != ClientSide || r.b.Stats.Drop(DropFragPathMTU) != 1 {
				t.Fatalf("%d sent, %v", len(out), nonZero(r.b.Stats.Drops()))
			}
			ip := out[0].frame[wire.EtherLen:]
			if c.src.Is6() {
				h := wire.IPv6(ip)
				ic := wire.ICMP(ip[wire.IPv6Len:])
				if ic.Type() != wire.ICMP6TooBig || ic.MTU6() != c.wantMTU || h.PayloadLen() != wire.ICMPLen+128 {
					t.Fatalf("Packet Too Big type %d for %d quoting %d", ic.Type(), ic.MTU6(), h.PayloadLen()-wire.ICMPLen)
				}
				return
			}
			ic := wire.ICMP(ip[wire.IPv4MinLen:])
			if ic.Type() != wire.ICMP4Unreach || ic.Code() != wire.ICMP4FragNeeded || uint32(ic.MTU4()) != c.wantMTU || wire.IPv4(ip).TotalLen() != wire.IPv4MinLen+wire.ICMPLen+28 {
				t.Fatalf("fragmentation needed type %d for %d", ic.Type(), ic.MTU4())
			}
		})
	}
	// A reassembled datagram is refragment's.
	r := newRig(t, UDP, "rr", func(cfg *Config) { cfg.ServerMTU = mtu })
	f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: payload(3000), srcMAC: macClient})
	f.reasm = 1500
	var p pkt
	parseIP(f.Bytes(), &p)
	if v := r.b.xlatFit(ClientSide, f, &p); v != Forward || f.reasm != 1500 {
		t.Fatalf("reassembled: %v, mark %d", v, f.reasm)
	}
}

// TestFragmentsPooled: a datagram cut for its way out takes its buffers
// from a pool and the reader gives them back: in steady state neither
// the reassembly nor the cut allocates.
func TestFragmentsPooled(t *testing.T) {
	r := newRig(t, UDP, "rr", func(c *Config) { c.ServerMTU = 1400 })
	whole := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: payload(4000), srcMAC: macClient})
	var raw [][]byte
	for _, f := range cut(t, whole, 1500, 1) {
		raw = append(raw, append([]byte(nil), f.Bytes()...))
	}
	bufs := make([][]byte, len(raw))
	for i := range bufs {
		bufs[i] = make([]byte, 64+wire.EtherLen+65536)
	}
	var f Frame
	n := 0
	send := func() {
		for i, b := range raw {
			copy(bufs[i][64:], b)
			f = Frame{Buf: bufs[i], Off: 64, Len: len(b)}
			v := r.b.Process(ClientSide, &f)
			if i < len(raw)-1 {
				continue
			}
			if v != Forward || f.Frags == nil {
				t.Fatalf("%v", v)
			}
			n = len(f.Frags.Frames())
			f.Frags.Release()
		}
	}
	// Buffers other tests left in the pool, larger than this datagram
	// takes, are set aside: the buffer is made for it, and kept.
	for range 1000 {
		if fs := fragOuts.Get().(*Fragments); len(fs.buf) == 0 {
			break
		}
	}
	send() // the connection, and the pools' first buffers
	if allocs := testing.AllocsPerRun(50, send); allocs != 0 || n != 3 {
		t.Fatalf("%.1f allocations per datagram cut in %d", allocs, n)
	}
}

// TestFragmentsTimeExceeded: a datagram given up at its timeout whose
// first fragment came is answered with an ICMP time exceeded, fragment
// reassembly time exceeded, from the address the fragments were sent to
// (the VIP, the LIP), out of the side they came in on to the MAC they came
// from, quoting the first fragment's header and 8 bytes (IPv4) or as much
// of it as fits 1280 bytes (IPv6); one whose first fragment never came is
// not; past TimeExceededRate, and to a multicast source, none is sent and
// each is counted.
func TestFragmentsTimeExceeded(t *testing.T) {
	for _, c := range []struct {
		name      string
		rig       func(testing.TB, Protocol, string, func(*Config)) *rig
		src, dst  netip.Addr
		side      Side
		mac, own  [6]byte
		wantQuote int
	}{
		{"v4 to the VIP", newRig, client, vip, ClientSide, macClient, macClientNIC, 28},
		{"v6 to the VIP", newRig6, client6, vip6, ClientSide, macClient, macClientNIC, 1232},
		{"v4 to the LIP", newRig, rs1, lip1, ServerSide, macGateway, macServerNIC, 28},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out []sent
			r := c.rig(t, UDP, "rr", func(cfg *Config) { cfg.Reassembly.Timeout = time.Second })
			r.b.Attach(recordLink{&out})
			frags := cut(t, frame(t, pktSpec{src: c.src, dst: c.dst, sport: 8080, dport: 40000, proto: UDP, payload: payload(4000), srcMAC: c.mac}), 1280, 3)
			first := bytes.Clone(frags[0].Bytes()[wire.EtherLen:])
			emit(r.b, &out, c.side, frags[0])
			emit(r.b, &out, c.side, frags[1])
			noFirst := cut(t, frame(t, pktSpec{src: c.src, dst: c.dst, sport: 8081, dport: 40000, proto: UDP, payload: payload(4000), srcMAC: c.mac}), 1280, 4)
			emit(r.b, &out, c.side, noFirst[1])
			r.b.table.now.Store(int64(time.Second) + 1)
			r.b.Sweep()
			if sent, notSent := r.b.Stats.FragTimeExceeded(); len(out) != 1 || sent != 1 || notSent != 0 || out[0].side != c.side {
				t.Fatalf("%d sent (counted %d, %d not) out %v, want one time exceeded", len(out), sent, notSent, out)
			}
			raw := out[0].frame
			if !bytes.Equal(raw[:6], c.mac[:]) || !bytes.Equal(raw[6:12], c.own[:]) {
				t.Fatalf("%x -> %x", raw[6:12], raw[:6])
			}
			pk := gopacket.NewPacket(raw, layers.LayerTypeEthernet, gopacket.Default)
			if el := pk.ErrorLayer(); el != nil {
				t.Fatal(el.Error())
			}
			var quote []byte
			if c.src.Is6() {
				ip, _ := pk.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
				ic, _ := pk.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
				if ip == nil || ic == nil || ic.TypeCode != layers.CreateICMPv6TypeCode(layers.ICMPv6TypeTimeExceeded, layers.ICMPv6CodeFragmentReassemblyTimeExceeded) ||
					addr6(ip.SrcIP) != c.dst || addr6(ip.DstIP) != c.src || len(raw)-wire.EtherLen != wire.IPv6MinMTU {
					t.Fatalf("not a time exceeded from %v to %v of 1280 bytes: %v", c.dst, c.src, pk)
				}
				if csum.Checksum(raw[wire.EtherLen+wire.IPv6Len:], csum.PseudoV6(ip.SrcIP, ip.DstIP, wire.ProtoICMPv6, len(raw)-wire.EtherLen-wire.IPv6Len)) != 0 {
					t.Fatal("ICMPv6 checksum")
				}
				quote = raw[wire.EtherLen+wire.IPv6Len+wire.ICMPLen:]
			} else {
				ip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
				ic, _ := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
				if ip == nil || ic == nil || ic.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeFragmentReassemblyTimeExceeded) ||
					addr(ip.SrcIP) != c.dst || addr(ip.DstIP) != c.src || ip.TTL != icmpTTL {
					t.Fatalf("not a time exceeded from %v to %v: %v", c.dst, c.src, pk)
				}
				if csum.Checksum(raw[wire.EtherLen:wire.EtherLen+wire.IPv4MinLen], 0) != 0 || csum.Checksum(raw[wire.EtherLen+wire.IPv4MinLen:], 0) != 0 {
					t.Fatal("checksums")
				}
				quote = raw[wire.EtherLen+wire.IPv4MinLen+wire.ICMPLen:]
			}
			if len(quote) != c.wantQuote || !bytes.Equal(quote, first[:c.wantQuote]) {
				t.Fatalf("quote of %d bytes, want %d of the first fragment", len(quote), c.wantQuote)
			}
		})
	}
	t.Run("rate", func(t *testing.T) {
		var out []sent
		r := newRig(t, UDP, "rr", func(cfg *Config) { cfg.Reassembly.Timeout = time.Second; cfg.Reassembly.MaxPerSource = 64 << 20 })
		r.b.Attach(recordLink{&out})
		whole := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: payload(2000), srcMAC: macClient})
		for id := range uint32(TimeExceededRate + 5) {
			emit(r.b, &out, ClientSide, cut(t, whole, 1500, id+1)[0])
		}
		// A multicast source: not answered, counted.
		mc := frame(t, pktSpec{src: netip.MustParseAddr("224.0.0.1"), dst: vip, sport: 40000, dport: 80, proto: UDP, payload: payload(2000), srcMAC: macClient})
		emit(r.b, &out, ClientSide, cut(t, mc, 1500, 1)[0])
		r.b.table.now.Store(int64(time.Second) + 1)
		r.b.Sweep()
		if sent, notSent := r.b.Stats.FragTimeExceeded(); len(out) != TimeExceededRate || sent != TimeExceededRate || notSent != 6 {
			t.Fatalf("%d sent (counted %d, %d not), want %d and 6 not", len(out), sent, notSent, TimeExceededRate)
		}
		// A second later the bucket has refilled.
		out = out[:0]
		emit(r.b, &out, ClientSide, cut(t, whole, 1500, 999)[0])
		r.b.table.now.Store(3*int64(time.Second) + 2)
		r.b.Sweep()
		if sent, _ := r.b.Stats.FragTimeExceeded(); len(out) != 1 || sent != TimeExceededRate+1 {
			t.Fatalf("a second later: %d sent", len(out))
		}
	})
}

// TestFragmentsHeld: a writer that sends after the batch (an io_uring ring)
// holds the fragments' buffers: Release gives them back only once the last
// write held is done, and Holds tells a fragment (or its tail behind a
// shorter virtio-net header) from any other frame.
func TestFragmentsHeld(t *testing.T) {
	r := newRig(t, UDP, "rr", nil)
	whole := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: payload(4000), srcMAC: macClient})
	frags := cut(t, whole, 1500, 1)
	var fs *Fragments
	for _, f := range frags {
		if r.b.Process(ClientSide, f); f.Frags != nil {
			fs = f.Frags
		}
	}
	if fs == nil || len(fs.Frames()) != 3 {
		t.Fatal("not cut")
	}
	for i, fr := range fs.Frames() {
		if !fs.Holds(fr) || !fs.Holds(fr[2:]) || !fs.Holds(fr[:1]) {
			t.Fatalf("frame %d not held", i)
		}
	}
	if fs.Holds(whole.Bytes()) || fs.Holds(nil) || fs.Holds(make([]byte, 0)) || (&Fragments{}).Holds(fs.Frames()[0]) {
		t.Fatal("another frame held")
	}
	fs.Hold()
	fs.Hold()
	fs.Release()
	if len(fs.Frames()) != 3 {
		t.Fatal("given back with two writes held")
	}
	fs.Done()
	if len(fs.Frames()) != 3 {
		t.Fatal("given back with a write held")
	}
	fs.Done()
	if len(fs.Frames()) != 0 || fs.spent {
		t.Fatal("not given back after the last write")
	}
	// Done before Release: Release gives back at once.
	fs2 := &Fragments{frames: [][]byte{nil}}
	fs2.Hold()
	fs2.Done()
	if len(fs2.frames) != 1 {
		t.Fatal("given back before Release")
	}
	fs2.Release()
	if len(fs2.frames) != 0 {
		t.Fatal("not given back")
	}
}

// TestICMPErrorFits1280: an ICMPv6 error quotes as much of a datagram as
// fits IPv6's minimum MTU and no more, whatever it is given.
func TestICMPErrorFits1280(t *testing.T) {
	r := newRig6(t, UDP, "rr", nil)
	in := frame(t, pktSpec{src: client6, dst: vip6, sport: 40000, dport: 80, proto: UDP, payload: payload(1500), srcMAC: macClient}).Bytes()[wire.EtherLen:]
	buf := *icmpBufs.Get().(*[]byte)
	n := r.b.icmpError(buf[tun.VNetHdrLen:], ClientSide, macClient[:], in, wire.ICMP6TimeEx, fragTimeExCode, 0)
	ip := wire.IPv6(buf[tun.VNetHdrLen+wire.EtherLen:])
	if n != wire.EtherLen+wire.IPv6MinMTU || ip.PayloadLen() != wire.IPv6MinMTU-wire.IPv6Len || !bytes.Equal(buf[tun.VNetHdrLen+wire.EtherLen+wire.IPv6Len+wire.ICMPLen:tun.VNetHdrLen+n], in[:wire.IPv6MinMTU-wire.IPv6Len-wire.ICMPLen]) {
		t.Fatalf("%d bytes, payload %d: want 1280 bytes of IPv6, the quote the datagram's start", n-wire.EtherLen, ip.PayloadLen())
	}
}
