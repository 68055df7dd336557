package netstack

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// batchesDev hands out its batches one per Read, then reports itself closed.
type batchesDev struct {
	memDev
	batches [][][]byte
}

func (d *batchesDev) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	if len(d.batches) == 0 {
		return 0, os.ErrClosed
	}
	b := d.batches[0]
	d.batches = d.batches[1:]
	for i, fr := range b {
		sizes[i] = copy(bufs[i][off:], fr)
	}
	return len(b), nil
}
func (d *batchesDev) BatchSize() int { return 4 }

// udpFragments is a UDP datagram from client:sport to vip:53 with payload
// bytes, cut into IPv4 fragments of at most mtu bytes (Ethernet frames).
func udpFragments(t testing.TB, sport uint16, payload, mtu int) [][]byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: client.AsSlice(), DstIP: vip.AsSlice(), Id: sport}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: 53}
	udp.SetNetworkLayerForChecksum(ip)
	l4 := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(l4, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, udp, gopacket.Payload(make([]byte, payload))); err != nil {
		t.Fatal(err)
	}
	data := l4.Bytes()
	per := (mtu - 20) &^ 7
	var out [][]byte
	for off := 0; off < len(data); off += per {
		end := min(off+per, len(data))
		fi := *ip
		fi.FragOffset = uint16(off / 8)
		if end < len(data) {
			fi.Flags = layers.IPv4MoreFragments
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, &fi, gopacket.Payload(data[off:end])); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	return out
}

// A datagram reassembled and cut again leaves in its reader's batch, after
// the frames read before it: not ahead of them (a UDP stream reordered, a
// TCP receiver's spurious duplicate ACKs), and its buffers go back once
// the batch is written.
func TestFragmentsRideTheBatch(t *testing.T) {
	bal := testBalancer(t)
	if err := bal.Update(func(tx *nat.Tx) error {
		svc, err := tx.AddService(nat.ServiceConfig{Addr: vip, Port: 53, Protocol: nat.UDP, Scheduler: "rr"})
		if err != nil {
			return err
		}
		if _, err = tx.AddLocalAddr(svc, netip.MustParseAddr("172.25.84.10")); err != nil {
			return err
		}
		d, err := tx.AddDest(svc, netip.MustParseAddr("10.20.1.2"), 53, 1)
		if err != nil {
			return err
		}
		d.SetNextHopMAC([6]byte{2, 0, 0, 0, 0, 3})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	big := udpFragments(t, 40001, 3000, 1500) // 3 fragments
	small := udpFragments(t, 40002, 100, 1500)
	if len(big) != 3 || len(small) != 1 {
		t.Fatalf("%d and %d fragments", len(big), len(small))
	}
	in := &batchesDev{batches: [][][]byte{{big[0], big[1]}, {small[0], big[2], small[0]}}}
	out := &recDev{}
	st, err := New(bal, NICConfig{Devs: []tun.Device{in}, MTU: 1500, Address: netip.MustParsePrefix("172.25.254.254/24")},
		NICConfig{Devs: []tun.Device{out}, MTU: 1500, Address: netip.MustParsePrefix("172.25.84.4/24")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.s.Close()
	st.Client.start()
	st.Client.Wait()
	// The small datagram, the big one's three fragments, the small one.
	if len(out.wrote) != 5 {
		t.Fatalf("%d frames out, want 5", len(out.wrote))
	}
	for i, want := range []int{len(small[0]), len(big[0]), len(big[1]), len(big[2]), len(small[0])} {
		if len(out.wrote[i]) != want {
			t.Fatalf("frame %d out is %d bytes, want %d: the fragments passed a frame before them", i, len(out.wrote[i]), want)
		}
	}
	if qs := &st.Client.Stats()[0]; qs.Forwarded.Load() != 5 || qs.Stolen.Load() != 2 {
		t.Fatalf("forwarded %d, stolen %d", qs.Forwarded.Load(), qs.Stolen.Load())
	}
}
