package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/proxyhdr"
	"github.com/tapvs/tapvs/tcpopt"
)

// Issue 20's first finding, on the wire: a client that writes its own TCP
// segments tries to make a real server believe an address of its choosing,
// through a TOA option and through a PROXY header. The attacker is an
// address of the client's subnet that no host owns (so no kernel answers
// for it), sending raw frames into tapvs's client TAP and reading tapvs's
// answers from a capture on it.

// attacker writes raw TCP segments from src into the client TAP.
type attacker struct {
	t              *testing.T
	in             *injector
	cap            *capture
	src            netip.Addr
	srcMAC, dstMAC net.HardwareAddr
}

func newAttacker(t *testing.T, e *env) *attacker {
	t.Helper()
	in, err := newInjector(e.top.Client, e.top.TapClient)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.close)
	mac, err := net.ParseMAC(ifaceMAC(t, e.top.Client, e.top.TapClient))
	if err != nil {
		t.Fatal(err)
	}
	return &attacker{t: t, in: in, cap: startCapture(t, e.top.Client, e.top.TapClient),
		src: netip.MustParseAddr("172.25.254.66"), srcMAC: mac, dstMAC: net.HardwareAddr(e.d.Stack.Client.LinkAddress())}
}

// seg is one segment the attacker sends: its numbers, flags, option bytes
// (padded with zeros to a multiple of 4) and payload.
type seg struct {
	seq, ack      uint32
	syn, ackFlag  bool
	opts, payload []byte
}

func (a *attacker) send(vport, cport uint16, s seg) {
	a.t.Helper()
	eth := &layers.Ethernet{SrcMAC: a.srcMAC, DstMAC: a.dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: a.src.AsSlice(), DstIP: lab.VIP.AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(cport), DstPort: layers.TCPPort(vport), Seq: s.seq, Ack: s.ack,
		SYN: s.syn, ACK: s.ackFlag, PSH: len(s.payload) > 0, Window: 64240}
	olen := (len(s.opts) + 3) &^ 3
	if olen > 0 {
		tcp.Options = []layers.TCPOption{{OptionType: 99, OptionLength: uint8(olen), OptionData: make([]byte, olen-2)}}
	}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(s.payload)); err != nil {
		a.t.Fatal(err)
	}
	f := buf.Bytes()
	if olen > 0 {
		o := f[14+20+20 : 14+20+20+olen]
		clear(o)
		copy(o, s.opts)
		fixChecksums(f)
	}
	if n, err := a.in.send(f); err != nil || n != 1 {
		a.t.Fatalf("injecting a segment: %d sent, %v", n, err)
	}
}

// open sends a SYN from cport to the VIP's vport and returns the ISN it
// used and the ISN of the SYN-ACK that came back.
func (a *attacker) open(vport, cport uint16) (isn, srvISN uint32) {
	a.t.Helper()
	isn = 0x10000000 + uint32(cport)<<8
	a.send(vport, cport, seg{seq: isn, syn: true, opts: []byte{2, 4, 0x05, 0xb4}})
	if !eventually(5*time.Second, func() bool {
		for _, p := range a.cap.packets() {
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if ip != nil && tcp != nil && tcp.SYN && tcp.ACK && addr(ip.DstIP) == a.src &&
				uint16(tcp.DstPort) == cport && uint16(tcp.SrcPort) == vport && tcp.Ack == isn+1 {
				srvISN = tcp.Seq
				return true
			}
		}
		return false
	}) {
		a.t.Fatalf("no SYN-ACK from %v:%d to %v:%d within 5s", lab.VIP, vport, a.src, cport)
	}
	return isn, srvISN
}

// forgedTOAOpt is a TOA option naming 6.6.6.6:1234.
var forgedTOAOpt = []byte{254, 8, 0x04, 0xd2, 6, 6, 6, 6}

// The TOA layouts of the issue, on the segment that completes the real
// server's handshake, through a TOA service and through one that adds
// nothing: a forged TOA after an MSS option of a length tapvs refuses but
// a toa module steps over (dropped as bad_tcp_options), one with no room
// left for tapvs's own, and one on a plain service. The real server's
// capture, read as its toa module reads options, shows tapvs's TOA (the
// attacker's own address) or none, never the forged one; and the honest
// handshake ACK after the refused one carries tapvs's.
func TestForgedTOARefused(t *testing.T) {
	svcs := `
  - {name: web-toa, vip: 172.25.254.100, port: 80, scheduler: rr, client_address: toa, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 80}]}
  - {name: web-plain, vip: 172.25.254.100, port: 8088, scheduler: rr, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 80}]}
`
	e := setup(t, svcs, "")
	capRS := startCapture(t, e.top.RS[0], "eth0")
	a := newAttacker(t, e)
	req := []byte("GET / HTTP/1.0\r\n\r\n")
	sack := append([]byte{5, 26}, make([]byte, 24)...)
	bad := func() uint64 { return e.d.Balancer.Stats.Drop(nat.DropBadOptions) }

	// A malformed MSS before the forged TOA: refused; the honest ACK after.
	isn, srv := a.open(80, 51000)
	before := bad()
	a.send(80, 51000, seg{seq: isn + 1, ack: srv + 1, ackFlag: true, opts: append([]byte{2, 8, 1, 1, 1, 1, 1, 1}, forgedTOAOpt...), payload: req})
	if !eventually(5*time.Second, func() bool { return bad() == before+1 }) {
		t.Errorf("a forged TOA behind a malformed MSS was not dropped as bad_tcp_options (%d)", bad()-before)
	}
	a.send(80, 51000, seg{seq: isn + 1, ack: srv + 1, ackFlag: true, payload: req})
	// No room for tapvs's TOA (36 bytes of options): the forged one blanked.
	isn, srv = a.open(80, 51001)
	a.send(80, 51001, seg{seq: isn + 1, ack: srv + 1, ackFlag: true, opts: append(append([]byte{}, forgedTOAOpt...), sack...), payload: req})
	// A service that adds no TOA: the forged one blanked.
	isn, srv = a.open(8088, 51002)
	a.send(8088, 51002, seg{seq: isn + 1, ack: srv + 1, ackFlag: true, opts: forgedTOAOpt, payload: req})

	// The server answers each request it got: three.
	answered := func() map[uint16]bool {
		ports := map[uint16]bool{}
		for _, p := range capRS.packets() {
			if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && tcp.SrcPort == 80 && strings.HasPrefix(string(tcp.Payload), "HTTP/1.") {
				ports[uint16(tcp.DstPort)] = true
			}
		}
		return ports
	}
	if !eventually(10*time.Second, func() bool { return len(answered()) == 3 }) {
		t.Fatalf("the real server answered %d of the 3 requests", len(answered()))
	}
	capRS.stop()
	told := 0
	for _, p := range capRS.packets() {
		tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok || tcp.DstPort != 80 {
			continue
		}
		hl := int(tcp.DataOffset) * 4
		opt, ok := tcpopt.ModuleTOA(tcp.Contents[20:hl])
		if !ok {
			continue
		}
		got := netip.AddrPortFrom(netip.AddrFrom4([4]byte(opt[4:8])), binary.BigEndian.Uint16(opt[2:]))
		if got.Addr() != a.src {
			t.Fatalf("the real server's toa module reads %v from a segment of the LIP's port %d (options %x)", got, tcp.SrcPort, tcp.Contents[20:hl])
		}
		told++
	}
	if ins, _ := e.d.Balancer.Stats.TOA(); told == 0 || ins == 0 {
		t.Fatalf("tapvs's own TOA reached the server %d times (%d inserted): the honest handshake should carry it", told, ins)
	}
}

// A client that starts its data a header's length before its first byte,
// with a PROXY line of its own naming 6.6.6.6, through plain PROXY v1 and
// v2 services to nginx: the segment is dropped (proxy_overlap), and the
// honest handshake ACK after it carries tapvs's header, so nginx logs the
// attacker's real address and never the forged one.
func TestForgedProxyHeaderRefused(t *testing.T) {
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatalf("nginx is missing (apt-get install nginx-light; .ci/run installs it): %v", err)
	}
	e := setup(t, nginxProxyServices, "")
	logPath := startNginx(t, e.top.RS[0], t.TempDir(), lab.RS1, []int{8181, 8182})
	a := newAttacker(t, e)
	overlaps := func() uint64 { return e.d.Balancer.Stats.Drop(nat.DropProxyOverlap) }
	for i, c := range []struct {
		port uint16
		v1   bool
	}{{8181, true}, {8182, false}} {
		cport := uint16(52000 + i)
		isn, srv := a.open(c.port, cport)
		var hb [proxyhdr.MaxV1]byte
		from, to := netip.AddrPortFrom(a.src, cport), netip.AddrPortFrom(lab.VIP, c.port)
		n := proxyhdr.V2(hb[:], proxyhdr.Stream, from, to)
		if c.v1 {
			n = proxyhdr.V1(hb[:], from, to)
		}
		forged := fmt.Sprintf("PROXY TCP4 6.6.6.6 %v 1234 %d\r\nGET /forged HTTP/1.0\r\n\r\n", lab.VIP, c.port)
		before := overlaps()
		a.send(c.port, cport, seg{seq: isn + 1 - uint32(n), ack: srv + 1, ackFlag: true, payload: []byte(forged)})
		if !eventually(5*time.Second, func() bool { return overlaps() == before+1 }) {
			t.Errorf("port %d: data from %d before the first byte was not dropped as proxy_overlap", c.port, n)
		}
		a.send(c.port, cport, seg{seq: isn + 1, ack: srv + 1, ackFlag: true, payload: []byte("GET /honest HTTP/1.0\r\n\r\n")})
	}
	lines := waitLines(t, logPath, 2, 10*time.Second)
	for i, l := range lines {
		// The log line: server_port proxy_protocol_addr:proxy_protocol_port remote_addr
		if want := fmt.Sprintf("%d %v:%d %v", []int{8181, 8182}[i], a.src, 52000+i, lab.LIP1); l != want {
			t.Errorf("nginx logged %q, want %q", l, want)
		}
	}
}
