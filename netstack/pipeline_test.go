package netstack

import (
	"fmt"
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

// memDev is a device in memory: Read hands out copies of one frame (the
// kernel copies too) until it runs out, Write counts.
type memDev struct {
	frame   []byte // virtio-net header first when vnet > 0
	left    int
	vnet    int
	written int
}

func (d *memDev) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	if d.left == 0 {
		return 0, os.ErrClosed
	}
	d.left--
	sizes[0] = copy(bufs[0][off-d.vnet:], d.frame) - d.vnet
	return 1, nil
}
func (d *memDev) Write(frames [][]byte) (int, error) {
	d.written += len(frames)
	return len(frames), nil
}
func (d *memDev) BatchSize() int  { return 1 }
func (d *memDev) Name() string    { return "mem" }
func (d *memDev) Close() error    { return nil }
func (d *memDev) VNetHdrLen() int { return d.vnet }

var _ tun.Device = (*memDev)(nil)

func tcpFrame(t testing.TB, src, dst netip.Addr, syn bool, payload int) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: syn, ACK: !syn, Seq: 1, Ack: 1, Window: 500}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(make([]byte, payload))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkFramePath is the whole path of one frame through a reader: the
// device read (a copy), parse, connection lookup, state, rewrite, checksum
// update and the write to the other side's device, for an established
// connection, with the virtio-net header a TAP with offloads adds.
// System calls are not in it: the devices are in memory.
func BenchmarkFramePath(b *testing.B) {
	for _, size := range []int{1400, 64000} { // a 1500-byte frame; a TSO super-frame
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) { framePath(b, size) })
	}
}

var (
	vip    = netip.MustParseAddr("172.25.254.100")
	client = netip.MustParseAddr("172.25.254.1")
)

// testBalancer has one TCP service at vip:80 with one LIP and one real
// server whose next hop is known.
func testBalancer(tb testing.TB) *nat.Balancer { return testBalancerWith(tb, nil) }

// testBalancerWith is testBalancer with mod's changes to its configuration.
func testBalancerWith(tb testing.TB, mod func(*nat.Config)) *nat.Balancer {
	cfg := nat.Config{MaxConns: 1000, PortMin: 5000, PortMax: 65535, Timeouts: nat.DefaultTimeouts(),
		ClientMAC: [6]byte{2, 0, 0, 0, 0, 1}, ServerMAC: [6]byte{2, 0, 0, 0, 0, 2}}
	if mod != nil {
		mod(&cfg)
	}
	bal, err := nat.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	var svc *nat.Service
	if err := bal.Update(func(tx *nat.Tx) error {
		if svc, err = tx.AddService(nat.ServiceConfig{Addr: vip, Port: 80, Protocol: nat.TCP, Scheduler: "rr"}); err != nil {
			return err
		}
		_, err = tx.AddLocalAddr(svc, netip.MustParseAddr("172.25.84.10"))
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	var d *nat.Dest
	if err := bal.Update(func(tx *nat.Tx) error {
		d, err = tx.AddDest(svc, netip.MustParseAddr("10.20.1.2"), 80, 1)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	d.SetNextHopMAC([6]byte{2, 0, 0, 0, 0, 3})
	return bal
}

func framePath(b *testing.B, payload int) {
	bal := testBalancer(b)
	syn := tcpFrame(b, client, vip, true, 0)
	buf := make([]byte, Headroom+len(syn))
	copy(buf[Headroom:], syn)
	if bal.Process(nat.ClientSide, &nat.Frame{Buf: buf, Off: Headroom, Len: len(syn)}) != nat.Forward {
		b.Fatal("no connection")
	}
	frame := append(make([]byte, tun.VNetHdrLen), tcpFrame(b, client, vip, false, payload)...)
	in := &memDev{frame: frame, left: b.N, vnet: tun.VNetHdrLen}
	out := &memDev{vnet: tun.VNetHdrLen}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := New(bal, NICConfig{Devs: []tun.Device{in}, MTU: 1500, Address: netip.MustParsePrefix("172.25.254.254/24")},
		NICConfig{Devs: []tun.Device{out}, MTU: 1500, Address: netip.MustParsePrefix("172.25.84.4/24")}, log)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	st.Client.start()
	st.Client.Wait()
	b.StopTimer()
	if out.written != b.N {
		b.Fatalf("%d of %d frames came out the other side", out.written, b.N)
	}
}
