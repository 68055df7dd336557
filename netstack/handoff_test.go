package netstack

import (
	"bytes"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/frag"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// recHandoff keeps what the readers hand off.
type recHandoff struct {
	sent  [][]byte
	marks []uint32
}

func (h *recHandoff) Send(p []byte, mark uint32) {
	h.sent = append(h.sent, bytes.Clone(p))
	h.marks = append(h.marks, mark)
}

func handoffStack(t *testing.T, in *recDev, out *recDev) (*Stack, *nat.Balancer) {
	t.Helper()
	bal := testBalancerWith(t, func(c *nat.Config) { c.Handoff = true; c.Readers = 2 })
	st, err := New(bal, NICConfig{Devs: []tun.Device{in}, MTU: 1500, Address: netip.MustParsePrefix("172.25.254.254/24")},
		NICConfig{Devs: []tun.Device{out}, MTU: 1500, Address: netip.MustParsePrefix("172.25.84.4/24")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.s.Close() })
	return st, bal
}

// A client segment that no connection holds goes to the handoff behind a
// virtio-net header of zeros (a plain TAP's frame is plain), and is
// counted; without a handoff it is dropped.
func TestReadersHandOff(t *testing.T) {
	ack := tcpFrame(t, client, vip, false, 10)
	for _, with := range []bool{true, false} {
		in, out := &recDev{listDev: listDev{frames: [][]byte{ack}}}, &recDev{}
		st, _ := handoffStack(t, in, out)
		h := &recHandoff{}
		if with {
			st.SetHandoff(h)
		}
		st.Client.start()
		st.Client.Wait()
		qs := &st.Client.Stats()[0]
		if !with {
			if qs.Dropped.Load() != 1 || qs.HandedOff.Load() != 0 {
				t.Fatalf("no handoff: dropped %d, handed off %d", qs.Dropped.Load(), qs.HandedOff.Load())
			}
			continue
		}
		if len(h.sent) != 1 || qs.HandedOff.Load() != 1 || qs.Dropped.Load() != 0 {
			t.Fatalf("handed off %d (counted %d), dropped %d", len(h.sent), qs.HandedOff.Load(), qs.Dropped.Load())
		}
		want := append(make([]byte, tun.VNetHdrLen), ack...)
		if !bytes.Equal(h.sent[0], want) {
			t.Fatalf("payload %x, want a zero virtio-net header and the frame as read", h.sent[0])
		}
		if len(out.wrote) != 0 {
			t.Fatal("a handed-off frame was also forwarded")
		}
	}
}

// A frame handed over continues a connection held here: it leaves the
// server side rewritten as the client's own would; one of a connection
// not held leaves nowhere.
func TestHandedOverContinuesHeldConnections(t *testing.T) {
	in, out := &recDev{}, &recDev{}
	st, bal := handoffStack(t, in, out)
	st.SetHandoffQueue(1)
	syn := tcpFrame(t, client, vip, true, 0)
	buf := make([]byte, Headroom+len(syn))
	copy(buf[Headroom:], syn)
	if v := bal.Process(nat.ClientSide, &nat.Frame{Buf: buf, Off: Headroom, Len: len(syn)}); v != nat.Forward {
		t.Fatalf("SYN: %v", v)
	}
	ack := tcpFrame(t, client, vip, false, 10)
	direct := make([]byte, Headroom+len(ack))
	copy(direct[Headroom:], ack)
	df := &nat.Frame{Buf: direct, Off: Headroom, Len: len(ack)}
	if v := bal.Process(nat.ClientSide, df); v != nat.Forward {
		t.Fatalf("ACK: %v", v)
	}
	st.HandedOver(append(make([]byte, tun.VNetHdrLen), ack...), 0)
	if len(out.wrote) != 1 || !bytes.Equal(out.wrote[0], df.Bytes()) {
		t.Fatalf("server side wrote %d frames; want the ACK as the client's own is rewritten", len(out.wrote))
	}
	other := tcpFrame(t, netip.MustParseAddr("172.25.254.2"), vip, false, 10)
	st.HandedOver(append(make([]byte, tun.VNetHdrLen), other...), 0)
	st.HandedOver(make([]byte, tun.VNetHdrLen-1), 0) // shorter than a header: ignored
	if len(out.wrote) != 1 || len(in.wrote) != 0 {
		t.Fatalf("a frame of no held connection left: server %d, client %d", len(out.wrote)-1, len(in.wrote))
	}
	if n := bal.Stats.Drop(nat.DropHandoffUnknown); n != 1 {
		t.Fatalf("handoff_unknown %d, want 1", n)
	}
}

// cutFrame cuts an Ethernet frame's IPv4 datagram into fragments of at
// most mtu bytes of IP, each an Ethernet frame.
func cutFrame(t *testing.T, fr []byte, mtu int) [][]byte {
	t.Helper()
	s, ok := frag.NewSplitter(fr[14:], mtu, 9)
	if !ok {
		t.Fatal("cannot cut")
	}
	n, size := s.Count()
	var out [][]byte
	for range n {
		b := make([]byte, 14+size)
		copy(b, fr[:14])
		out = append(out, b[:14+s.Next(b[14:])])
	}
	return out
}

// A TCP segment that came in fragments and that no connection here holds
// is handed off reassembled, with its mark (the largest fragment, IPv4);
// the instance that holds its connection cuts it again as the fragments
// came, not sending 3 KiB whole out of a 1500-byte side.
func TestHandedOffFragmentsKeepTheirMark(t *testing.T) {
	seg := tcpFrame(t, client, vip, false, 3000)
	frags := cutFrame(t, seg, 1000)
	in, out := &recDev{listDev: listDev{frames: frags}}, &recDev{}
	here, _ := handoffStack(t, in, out)
	h := &recHandoff{}
	here.SetHandoff(h)
	here.Client.start()
	here.Client.Wait()
	if len(h.sent) != 1 || len(h.sent[0]) != tun.VNetHdrLen+len(seg) || h.marks[0] != 996 {
		t.Fatalf("handed off %d frames, marks %v: want the segment whole, marked 996 (IPv4)", len(h.sent), h.marks)
	}

	// The instance that holds the connection.
	tin, tout := &recDev{}, &recDev{}
	there, bal := handoffStack(t, tin, tout)
	there.SetHandoffQueue(1)
	syn := tcpFrame(t, client, vip, true, 0)
	buf := make([]byte, Headroom+len(syn))
	copy(buf[Headroom:], syn)
	if v := bal.Process(nat.ClientSide, &nat.Frame{Buf: buf, Off: Headroom, Len: len(syn)}); v != nat.Forward {
		t.Fatalf("SYN: %v", v)
	}
	there.HandedOver(h.sent[0], h.marks[0])
	if len(tout.wrote) != len(frags) {
		t.Fatalf("%d frames to the server, want the %d fragments", len(tout.wrote), len(frags))
	}
	for i, w := range tout.wrote {
		if len(w) != len(frags[i]) {
			t.Fatalf("fragment %d of %d bytes, want %d as it came", i, len(w), len(frags[i]))
		}
	}
	// A mark of no length is none: the segment leaves whole, as one
	// that came whole would.
	tout.wrote = nil
	there.HandedOver(h.sent[0], 1<<16)
	if len(tout.wrote) != 1 {
		t.Fatalf("%d frames for a mark of no length, want the segment whole", len(tout.wrote))
	}
}
