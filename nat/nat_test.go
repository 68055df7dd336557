package nat

import (
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
)

var (
	macClientNIC = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	macServerNIC = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	macClient    = [6]byte{0x02, 0, 0, 0, 0, 0x10}
	macGateway   = [6]byte{0x02, 0, 0, 0, 0, 0x20}

	vip    = netip.MustParseAddr("172.25.254.100")
	client = netip.MustParseAddr("172.25.254.1")
	lip1   = netip.MustParseAddr("172.25.84.10")
	rs1    = netip.MustParseAddr("10.20.1.2")
	rs2    = netip.MustParseAddr("10.20.2.2")
)

type rig struct {
	b   *Balancer
	svc *Service
	d1  *Dest
	d2  *Dest
}

func newRig(t testing.TB, proto Protocol, sched string, mod func(*Config)) *rig {
	t.Helper()
	return newRigAt(t, proto, sched, mod, vip, lip1, rs1, rs2)
}

// newRigAt is a rig whose service "web" is at vip port 80 with one local
// address and two real servers on port 8080, both resolved: IPv4 FULLNAT,
// IPv6 FULLNAT or NAT64 by the addresses' families.
func newRigAt(t testing.TB, proto Protocol, sched string, mod func(*Config), vip, lip, rsA, rsB netip.Addr) *rig {
	t.Helper()
	cfg := Config{MaxConns: 1000, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts(),
		ClientMAC: macClientNIC, ServerMAC: macServerNIC}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := b.AddService(ServiceConfig{Name: "web", Addr: vip, Port: 80, Protocol: proto, Scheduler: sched})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddLocalAddr(svc, lip); err != nil {
		t.Fatal(err)
	}
	var d1, d2 *Dest
	if err := b.Update(func(tx *Tx) error {
		var err error
		if d1, err = tx.AddDest(svc, rsA, 8080, 1); err != nil {
			return err
		}
		d2, err = tx.AddDest(svc, rsB, 8080, 1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	d1.SetNextHopMAC(macGateway)
	d2.SetNextHopMAC(macGateway)
	return &rig{b: b, svc: svc, d1: d1, d2: d2}
}

// setWeight changes a real server's weight of the rig's service, a Tx of
// one change.
func (r *rig) setWeight(t testing.TB, addr netip.Addr, port uint16, weight int) {
	t.Helper()
	if err := r.b.Update(func(tx *Tx) error { return tx.SetWeight(r.svc, addr, port, weight) }); err != nil {
		t.Fatal(err)
	}
}

// pairAllocs is the allocations per client and server packet pair of r's
// data path over frames in and back, each put back as it was (Off, Len,
// bytes: a translation moves the frame's start) before every run.
func pairAllocs(t testing.TB, r *rig, in, back *Frame) float64 {
	t.Helper()
	inB, backB := append([]byte(nil), in.Bytes()...), append([]byte(nil), back.Bytes()...)
	inOff, backOff := in.Off, back.Off
	return testing.AllocsPerRun(1000, func() {
		in.Off, in.Len = inOff, len(inB)
		copy(in.Buf[in.Off:], inB)
		if r.b.Process(ClientSide, in) != Forward {
			t.Fatal("not forwarded")
		}
		back.Off, back.Len = backOff, len(backB)
		copy(back.Buf[back.Off:], backB)
		if r.b.Process(ServerSide, back) != Forward {
			t.Fatal("reply not forwarded")
		}
	})
}

// benchPair runs r's data path over in and back in turn, b.N packets:
// only the first inHdr (backHdr) bytes are put back before each, the
// payload being untouched (ns/op is per packet).
func benchPair(b *testing.B, r *rig, in, back *Frame, inHdr, backHdr int) {
	inB, backB := append([]byte(nil), in.Bytes()...), append([]byte(nil), back.Bytes()...)
	inOff, backOff := in.Off, back.Off
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i&1 == 0 {
			in.Off, in.Len = inOff, len(inB)
			copy(in.Buf[in.Off:in.Off+inHdr], inB[:inHdr])
			if r.b.Process(ClientSide, in) != Forward {
				b.Fatal("not forwarded")
			}
		} else {
			back.Off, back.Len = backOff, len(backB)
			copy(back.Buf[back.Off:back.Off+backHdr], backB[:backHdr])
			if r.b.Process(ServerSide, back) != Forward {
				b.Fatal("not forwarded")
			}
		}
	}
}

type pktSpec struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        Protocol
	syn, ack     bool
	fin, rst     bool
	payload      []byte
	srcMAC       [6]byte
	seq, ackNum  uint32 // 0: 1000 and 7
	window       uint16 // 0: 65535
	opts         []layers.TCPOption
}

func (s pktSpec) ackN() uint32 {
	if s.ackNum != 0 {
		return s.ackNum
	}
	return 7
}

// frame builds a frame with gopacket into a buffer with headroom, the way a
// reader hands it to Process.
func frame(t testing.TB, s pktSpec) *Frame {
	t.Helper()
	// The network layer by the addresses' family; next is its protocol
	// field, set with the transport below.
	var ip interface {
		gopacket.NetworkLayer
		gopacket.SerializableLayer
	}
	var next *layers.IPProtocol
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(s.srcMAC[:]), DstMAC: net.HardwareAddr(macClientNIC[:]), EthernetType: layers.EthernetTypeIPv4}
	if s.src.Is6() {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: s.src.AsSlice(), DstIP: s.dst.AsSlice()}
		ip, next = ip6, &ip6.NextHeader
	} else {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, SrcIP: s.src.AsSlice(), DstIP: s.dst.AsSlice(), Id: 4242}
		ip, next = ip4, &ip4.Protocol
	}
	var l4 gopacket.SerializableLayer
	switch s.proto {
	case TCP:
		*next = layers.IPProtocolTCP
		tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Seq: 1000, Ack: 7,
			SYN: s.syn, ACK: s.ack, FIN: s.fin, RST: s.rst, Window: 65535, Options: s.opts}
		if s.seq != 0 || s.ack {
			tcp.Seq, tcp.Ack = s.seq, s.ackN()
		}
		if s.window != 0 {
			tcp.Window = s.window
		}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
	case UDP:
		*next = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)}
		udp.SetNetworkLayerForChecksum(ip)
		l4 = udp
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, l4, gopacket.Payload(s.payload)); err != nil {
		t.Fatal(err)
	}
	return withHeadroom(buf.Bytes())
}

func withHeadroom(b []byte) *Frame {
	const headroom = 64
	f := &Frame{Buf: make([]byte, headroom+len(b)+64), Off: headroom, Len: len(b)}
	copy(f.Buf[headroom:], b)
	return f
}

// decoded checks a forwarded frame independently of the code under test:
// gopacket parses it and the checksums are recomputed from scratch.
type decoded struct {
	eth *layers.Ethernet
	ip  *layers.IPv4
	ip6 *layers.IPv6
	tcp *layers.TCP
	udp *layers.UDP
}

func decode(t testing.TB, f *Frame) decoded {
	t.Helper()
	raw := f.Bytes()
	pk := gopacket.NewPacket(raw, layers.LayerTypeEthernet, gopacket.Default)
	// gopacket decodes a UDP payload by port (6343 as sFlow, 6081 as
	// Geneve, ...), and a random local port may be one: what fails past
	// the UDP header is the test's payload, not the balancer's frame.
	if el := pk.ErrorLayer(); el != nil && pk.Layer(layers.LayerTypeUDP) == nil {
		t.Fatalf("decode: %v", el.Error())
	}
	if pk.Layer(layers.LayerTypeIPv6) != nil {
		return decode6(t, pk, raw)
	}
	var d decoded
	d.eth, _ = pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	d.ip, _ = pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	d.tcp, _ = pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
	d.udp, _ = pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
	ip := raw[14 : 14+int(d.ip.IHL)*4]
	if c := csum.Checksum(ip, 0); c != 0 {
		t.Fatalf("IPv4 header checksum does not verify (residue %#04x)", c)
	}
	l4 := raw[14+int(d.ip.IHL)*4 : 14+int(d.ip.Length)]
	var ps uint32
	for i := 0; i < 4; i += 2 {
		ps += uint32(binary.BigEndian.Uint16(d.ip.SrcIP.To4()[i:])) + uint32(binary.BigEndian.Uint16(d.ip.DstIP.To4()[i:]))
	}
	ps += uint32(d.ip.Protocol) + uint32(len(l4))
	if d.udp != nil && d.udp.Checksum == 0 {
		return d
	}
	if c := csum.Checksum(l4, ps); c != 0 {
		t.Fatalf("%v checksum does not verify (residue %#04x)", d.ip.Protocol, c)
	}
	return d
}

func TestFullNATBothDirections(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			r := newRig(t, proto, "rr", nil)
			f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: proto, syn: true, payload: []byte("hello"), srcMAC: macClient})
			if v := r.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("verdict %v, drops %v", v, r.b.Stats.Drops())
			}
			d := decode(t, f)
			if got := netip.AddrFrom4([4]byte(d.ip.SrcIP.To4())); got != lip1 {
				t.Fatalf("src %v, want LIP %v", got, lip1)
			}
			rip := netip.AddrFrom4([4]byte(d.ip.DstIP.To4()))
			if rip != rs1 && rip != rs2 {
				t.Fatalf("dst %v is not a real server", rip)
			}
			if [6]byte(d.eth.DstMAC) != macGateway || [6]byte(d.eth.SrcMAC) != macServerNIC {
				t.Fatalf("MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
			}
			var lport, rport uint16
			if d.tcp != nil {
				lport, rport = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
			} else {
				lport, rport = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
			}
			if rport != 8080 || lport < 5000 {
				t.Fatalf("ports %d -> %d", lport, rport)
			}

			// The reply comes back to the LIP and leaves as VIP -> client.
			back := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: proto, syn: true, ack: true, payload: []byte("world!"), srcMAC: macGateway})
			if v := r.b.Process(ServerSide, back); v != Forward {
				t.Fatalf("reply verdict %v, drops %v", v, r.b.Stats.Drops())
			}
			d = decode(t, back)
			if netip.AddrFrom4([4]byte(d.ip.SrcIP.To4())) != vip || netip.AddrFrom4([4]byte(d.ip.DstIP.To4())) != client {
				t.Fatalf("reply %v -> %v", d.ip.SrcIP, d.ip.DstIP)
			}
			if [6]byte(d.eth.DstMAC) != macClient || [6]byte(d.eth.SrcMAC) != macClientNIC {
				t.Fatalf("reply MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
			}
			if r.b.Table().Len() != 1 {
				t.Fatalf("table has %d conns", r.b.Table().Len())
			}
		})
	}
}

func TestUDPZeroChecksumStaysZero(t *testing.T) {
	r := newRig(t, UDP, "rr", nil)
	f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: []byte("x"), srcMAC: macClient})
	b := f.Bytes()
	b[14+20+6], b[14+20+7] = 0, 0
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatal(v)
	}
	if d := decode(t, f); d.udp.Checksum != 0 {
		t.Fatalf("checksum %#x, want 0 (none)", d.udp.Checksum)
	}
}

func TestPassAndDrop(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	cases := []struct {
		name   string
		side   Side
		f      *Frame
		want   Verdict
		reason DropReason
	}{
		{"not a VIP", ClientSide, frame(t, pktSpec{src: client, dst: client, sport: 1, dport: 80, proto: TCP, syn: true}), Pass, -1},
		{"server side to unknown LIP tuple", ServerSide, frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: 6000, proto: TCP, ack: true}), Pass, -1},
		{"no service on port", ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 1, dport: 81, proto: TCP, syn: true}), Drop, DropNoService},
		{"UDP to TCP-only VIP", ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 1, dport: 80, proto: UDP}), Drop, DropNoService},
		{"ACK without conn", ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 1, dport: 80, proto: TCP, ack: true}), Drop, DropNotSYN},
	}
	for _, tc := range cases {
		before := uint64(0)
		if tc.reason >= 0 {
			before = r.b.Stats.Drop(tc.reason)
		}
		if v := r.b.Process(tc.side, tc.f); v != tc.want {
			t.Errorf("%s: verdict %v, want %v", tc.name, v, tc.want)
		}
		if tc.reason >= 0 && r.b.Stats.Drop(tc.reason) != before+1 {
			t.Errorf("%s: %v not counted", tc.name, tc.reason)
		}
	}
	arp := withHeadroom(make([]byte, 42))
	binary.BigEndian.PutUint16(arp.Bytes()[12:], 0x0806)
	if v := r.b.Process(ClientSide, arp); v != Pass {
		t.Errorf("ARP: %v", v)
	}
}

func TestMalformedCountedAndDropped(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	good := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient}).Bytes()
	mutations := map[string]func([]byte) []byte{
		"truncated IP":       func(b []byte) []byte { return b[:14+12] },
		"IHL < 5":            func(b []byte) []byte { b[14] = 0x44; return b },
		"total len > frame":  func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 1400); return b },
		"total len < IHL":    func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 10); return b },
		"truncated TCP":      func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 30); fixIPChecksum(b); return b[:14+30] },
		"TCP offset > len":   func(b []byte) []byte { b[14+20+12] = 0xf0; return b },
		"TCP offset < 5":     func(b []byte) []byte { b[14+20+12] = 0x10; return b },
		"version 5 with VIP": func(b []byte) []byte { b[14] = 0x55; return b },
	}
	for name, mut := range mutations {
		b := mut(append([]byte(nil), good...))
		before := r.b.Stats.Drop(DropMalformed)
		if v := r.b.Process(ClientSide, withHeadroom(b)); v != Drop {
			t.Errorf("%s: verdict %v, want Drop", name, v)
		}
		if r.b.Stats.Drop(DropMalformed) != before+1 {
			t.Errorf("%s: not counted as malformed", name)
		}
	}
	if r.b.Table().Len() != 0 {
		t.Fatalf("malformed frames made %d conns", r.b.Table().Len())
	}
	// A first fragment to the VIP whose length is not a multiple of 8 is
	// counted as such.
	frag := append([]byte(nil), good...)
	frag[14+6] = 0x20 // MF
	fixIPChecksum(frag)
	if v := r.b.Process(ClientSide, withHeadroom(frag)); v != Drop || r.b.Stats.Drop(DropFragMalformed) != 1 {
		t.Fatalf("fragment: %v, count %d", v, r.b.Stats.Drop(DropFragMalformed))
	}
}

func fixIPChecksum(b []byte) {
	ip := b[14 : 14+int(b[14]&0xf)*4]
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
}

// Issue 9, item 5: an IPv4 header whose checksum does not verify is dropped
// and counted before any of its fields is used; one to an address that is
// not tapvs's to balance is left to the stack, which checks it itself.
func TestIPHeaderChecksumVerified(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	for _, side := range []Side{ClientSide, ServerSide} {
		spec := pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient}
		if side == ServerSide {
			spec = pktSpec{src: rs1, dst: lip1, sport: 8080, dport: 6000, proto: TCP, ack: true, srcMAC: macGateway}
		}
		f := frame(t, spec)
		f.Bytes()[14+8]-- // TTL, checksum left as it was
		before := r.b.Stats.Drop(DropBadIPChecksum)
		if v := r.b.Process(side, f); v != Drop || r.b.Stats.Drop(DropBadIPChecksum) != before+1 {
			t.Fatalf("%v side: %v, bad_ip_checksum %d", side, v, r.b.Stats.Drop(DropBadIPChecksum)-before)
		}
	}
	f := frame(t, pktSpec{src: client, dst: client, sport: 1, dport: 80, proto: TCP, syn: true})
	f.Bytes()[14+8]--
	if v := r.b.Process(ClientSide, f); v != Pass {
		t.Fatalf("not a VIP: %v, want Pass", v)
	}
	if r.b.Table().Len() != 0 {
		t.Fatal("a bad header made a connection")
	}
}

func countPicks(t *testing.T, r *rig, n int) map[netip.Addr]int {
	t.Helper()
	got := map[netip.Addr]int{}
	for i := range n {
		f := frame(t, pktSpec{src: client, dst: vip, sport: uint16(20000 + i), dport: 80, proto: TCP, syn: true, srcMAC: macClient})
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("conn %d: %v %v", i, v, r.b.Stats.Drops())
		}
		d := decode(t, f)
		got[netip.AddrFrom4([4]byte(d.ip.DstIP.To4()))]++
	}
	return got
}

func TestSchedulers(t *testing.T) {
	t.Run("rr alternates", func(t *testing.T) {
		r := newRig(t, TCP, "rr", nil)
		var prev netip.Addr
		for i := range 10 {
			f := frame(t, pktSpec{src: client, dst: vip, sport: uint16(20000 + i), dport: 80, proto: TCP, syn: true, srcMAC: macClient})
			if v := r.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("conn %d: verdict %v, drops %v", i, v, r.b.Stats.Drops())
			}
			cur := netip.AddrFrom4([4]byte(decode(t, f).ip.DstIP.To4()))
			if cur == prev {
				t.Fatalf("conn %d went to %v twice in a row", i, cur)
			}
			prev = cur
		}
	})
	t.Run("wrr follows weights", func(t *testing.T) {
		r := newRig(t, TCP, "wrr", nil)
		r.setWeight(t, rs1, 8080, 3)
		got := countPicks(t, r, 400)
		if got[rs1] != 300 || got[rs2] != 100 {
			t.Fatalf("picks %v, want 300:100", got)
		}
	})
	t.Run("lc prefers the idle server", func(t *testing.T) {
		r := newRig(t, TCP, "lc", nil)
		r.d1.inactive.Add(5)
		if got := countPicks(t, r, 3); got[rs2] != 3 {
			t.Fatalf("picks %v", got)
		}
	})
	t.Run("wlc weighs", func(t *testing.T) {
		r := newRig(t, TCP, "wlc", nil)
		r.setWeight(t, rs1, 8080, 4)
		// rs1 has 4x weight: it takes connections until it holds ~4x as many.
		got := countPicks(t, r, 50)
		if got[rs1] != 40 || got[rs2] != 10 {
			t.Fatalf("picks %v, want 40:10", got)
		}
	})
	t.Run("sh is sticky", func(t *testing.T) {
		r := newRig(t, TCP, "sh", nil)
		got := countPicks(t, r, 20) // one client address
		if len(got) != 1 {
			t.Fatalf("one client spread over %v", got)
		}
	})
}

func TestPortsUniqueAndExhaustion(t *testing.T) {
	r := newRig(t, UDP, "rr", func(c *Config) { c.PortMin, c.PortMax = 6000, 6001 })
	r.setWeight(t, rs2, 8080, 0) // all to rs1: only 2 ports toward it
	seen := map[uint16]bool{}
	for i := range 2 {
		f := frame(t, pktSpec{src: client, dst: vip, sport: uint16(30000 + i), dport: 80, proto: UDP, srcMAC: macClient})
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatal(v)
		}
		seen[uint16(decode(t, f).udp.SrcPort)] = true
	}
	if len(seen) != 2 {
		t.Fatalf("ports %v not unique", seen)
	}
	f := frame(t, pktSpec{src: client, dst: vip, sport: 30002, dport: 80, proto: UDP, srcMAC: macClient})
	if v := r.b.Process(ClientSide, f); v != Drop || r.b.Stats.Drop(DropPortExhausted) != 1 {
		t.Fatalf("third flow: %v, exhausted %d", v, r.b.Stats.Drop(DropPortExhausted))
	}
	la := r.svc.LocalAddrs()[0]
	// The LIP's ports toward rs1 are known to be all held: exhausted at
	// once, without trying a tuple in the table (no conflict).
	if conns, conflicts, exhausted := la.Stats(); conns != 2 || conflicts != 0 || exhausted != 1 {
		t.Fatalf("LIP stats conns=%d conflicts=%d exhausted=%d", conns, conflicts, exhausted)
	}
	// Another server can reuse the same local ports.
	r.setWeight(t, rs2, 8080, 1)
	r.setWeight(t, rs1, 8080, 0)
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 30003, dport: 80, proto: UDP, srcMAC: macClient})); v != Forward {
		t.Fatalf("to rs2: %v", v)
	}
}

func TestExpiryReturnsPortsAndCounts(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	now := int64(0)
	step := func(d time.Duration) { now += int64(d); r.b.table.now.Store(now) }
	send := func(side Side, s pktSpec) {
		t.Helper()
		if v := r.b.Process(side, frame(t, s)); v != Forward {
			t.Fatalf("%v: %v", side, v)
		}
	}
	send(ClientSide, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	info := r.b.Table().Conns()[0]
	if info.State != "SYN_RECV" {
		t.Fatalf("state %s", info.State)
	}
	rip, lport := info.RIP.Addr(), info.LIP.Port()
	d := r.d1
	if rip == rs2 {
		d = r.d2
	}
	send(ServerSide, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true})
	send(ClientSide, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, srcMAC: macClient})
	if a, ia, _ := d.Conns(); a != 1 || ia != 0 {
		t.Fatalf("established: active %d inactive %d", a, ia)
	}
	step(89 * time.Second)
	if r.b.Sweep() != 0 {
		t.Fatal("expired before the ESTABLISHED timeout")
	}
	send(ClientSide, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, fin: true, ack: true, srcMAC: macClient})
	if st := r.b.Table().Conns()[0].State; st != "CLOSE_WAIT" {
		t.Fatalf("after client FIN: %s", st)
	}
	if a, ia, _ := d.Conns(); a != 0 || ia != 1 {
		t.Fatalf("closing: active %d inactive %d", a, ia)
	}
	step(8 * time.Second)
	if n := r.b.Sweep(); n != 1 {
		t.Fatalf("swept %d", n)
	}
	if r.b.Table().Len() != 0 {
		t.Fatal("conn still in table")
	}
	if a, ia, tot := d.Conns(); a != 0 || ia != 0 || tot != 1 {
		t.Fatalf("after expiry: %d %d %d", a, ia, tot)
	}
	if n, _, _ := r.svc.LocalAddrs()[0].Stats(); n != 0 {
		t.Fatalf("LIP still has %d", n)
	}
	// Nothing is left under the reply key either.
	if v := r.b.Process(ServerSide, frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true})); v != Pass {
		t.Fatalf("late reply: %v", v)
	}
}

func TestTableFull(t *testing.T) {
	r := newRig(t, UDP, "rr", func(c *Config) { c.MaxConns = 3 })
	for i := range 5 {
		r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: uint16(1000 + i), dport: 80, proto: UDP, srcMAC: macClient}))
	}
	if r.b.Table().Len() != 3 || r.b.Stats.Drop(DropTableFull) != 2 {
		t.Fatalf("len %d, full drops %d", r.b.Table().Len(), r.b.Stats.Drop(DropTableFull))
	}
}

// countLink counts the next hops the balancer asks for.
type countLink struct{ asked *int }

func (l countLink) Resolve(*Dest)       { *l.asked++ }
func (countLink) Transmit(Side, []byte) {}
func (countLink) Send(Side, []byte)     {}

func TestUnresolvedNeighborAsksAndDrops(t *testing.T) {
	asked := 0
	r := newRig(t, TCP, "rr", nil)
	r.b.Attach(countLink{&asked})
	r.d1.mac.Store(0)
	r.d2.mac.Store(0)
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 1, dport: 80, proto: TCP, syn: true})); v != Drop {
		t.Fatal(v)
	}
	if asked != 1 || r.b.Stats.Drop(DropNoNeighbor) != 1 || r.b.Table().Len() != 0 {
		t.Fatalf("asked %d, drops %d, conns %d", asked, r.b.Stats.Drop(DropNoNeighbor), r.b.Table().Len())
	}
}

// icmpFrame wraps the quoted frame's IP packet in an ICMP error from src to dst.
func icmpFrame(t *testing.T, src, dst netip.Addr, typ, code uint8, quoted []byte) *Frame {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(macGateway[:]), DstMAC: net.HardwareAddr(macServerNIC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Seq: 1400}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, ic, gopacket.Payload(quoted)); err != nil {
		t.Fatal(err)
	}
	return withHeadroom(buf.Bytes())
}

// checkICMPError checks a translated ICMP error from scratch: its outer
// addresses and MACs, the outer IP header checksum, the ICMP type, code and
// rest of header (the next-hop MTU of a frag-needed) kept, the ICMP checksum
// over the whole message, and the quoted packet, which must be byte for byte
// the packet the receiver sent: addresses, ports, the quoted IP header's
// checksum and the quoted transport checksum all as they were.
func checkICMPError(t *testing.T, f *Frame, src, dst netip.Addr, srcMAC, dstMAC [6]byte, typ, code uint8, seq uint16, quoted []byte) {
	t.Helper()
	raw := f.Bytes()
	pk := gopacket.NewPacket(raw, layers.LayerTypeEthernet, gopacket.Default)
	if el := pk.ErrorLayer(); el != nil {
		t.Fatalf("ICMP error does not decode: %v", el.Error())
	}
	eth := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	outer := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if addr(outer.SrcIP) != src || addr(outer.DstIP) != dst || [6]byte(eth.SrcMAC) != srcMAC || [6]byte(eth.DstMAC) != dstMAC {
		t.Fatalf("outer %v -> %v (MACs %v -> %v), want %v -> %v", outer.SrcIP, outer.DstIP, eth.SrcMAC, eth.DstMAC, src, dst)
	}
	ihl := int(outer.IHL) * 4
	if c := csum.Checksum(raw[14:14+ihl], 0); c != 0 {
		t.Fatalf("outer IP header checksum does not verify (residue %#04x)", c)
	}
	msg := raw[14+ihl : 14+int(outer.Length)]
	if c := csum.Checksum(msg, 0); c != 0 {
		t.Fatalf("ICMP checksum does not verify (residue %#04x)", c)
	}
	icmp := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if icmp.TypeCode != layers.CreateICMPv4TypeCode(typ, code) || icmp.Seq != seq {
		t.Fatalf("ICMP %v seq %d, want type %d code %d seq %d", icmp.TypeCode, icmp.Seq, typ, code, seq)
	}
	q := msg[8:]
	inner := gopacket.NewPacket(q, layers.LayerTypeIPv4, gopacket.Default)
	iip := inner.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	iudp := inner.Layer(layers.LayerTypeUDP).(*layers.UDP)
	want := gopacket.NewPacket(quoted, layers.LayerTypeIPv4, gopacket.Default)
	wip := want.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	wudp := want.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !iip.SrcIP.Equal(wip.SrcIP) || !iip.DstIP.Equal(wip.DstIP) || iudp.SrcPort != wudp.SrcPort || iudp.DstPort != wudp.DstPort {
		t.Fatalf("quoted %v:%d -> %v:%d, want %v:%d -> %v:%d", iip.SrcIP, iudp.SrcPort, iip.DstIP, iudp.DstPort, wip.SrcIP, wudp.SrcPort, wip.DstIP, wudp.DstPort)
	}
	if c := csum.Checksum(q[:int(iip.IHL)*4], 0); c != 0 || iip.Checksum != wip.Checksum {
		t.Fatalf("quoted IP checksum %#04x (residue %#04x), want %#04x", iip.Checksum, c, wip.Checksum)
	}
	if iudp.Checksum != wudp.Checksum {
		t.Fatalf("quoted UDP checksum %#04x, want %#04x", iudp.Checksum, wudp.Checksum)
	}
	if string(q) != string(quoted) {
		t.Fatalf("quoted packet\n% x\nwant the one sent\n% x", q, quoted)
	}
}

// ipPacket copies a frame's IP packet, without the Ethernet padding.
func ipPacket(f *Frame) []byte {
	b := f.Bytes()[14:]
	return append([]byte(nil), b[:binary.BigEndian.Uint16(b[2:])]...)
}

func TestICMPErrorsTranslated(t *testing.T) {
	r := newRig(t, UDP, "rr", nil)
	out := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: []byte("ping"), srcMAC: macClient})
	clientSent := ipPacket(out) // client:40000 -> VIP:80
	if v := r.b.Process(ClientSide, out); v != Forward {
		t.Fatalf("client datagram: %v %v", v, r.b.Stats.Drops())
	}
	sent := append([]byte(nil), out.Bytes()[14:]...) // LIP:lport -> RIP:8080
	rip := netip.AddrFrom4([4]byte(sent[16:20]))

	// A router on the way says fragmentation is needed: the client hears it
	// from the VIP, about the datagram it sent.
	router := netip.MustParseAddr("172.25.84.1")
	f := icmpFrame(t, router, lip1, 3, 4, sent)
	if v := r.b.Process(ServerSide, f); v != Forward {
		t.Fatalf("frag-needed: %v %v", v, r.b.Stats.Drops())
	}
	checkICMPError(t, f, vip, client, macClientNIC, macClient, 3, 4, 1400, clientSent)

	// The client says port unreachable about a reply: the server hears it
	// from the LIP, about the datagram it sent.
	reply := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: binary.BigEndian.Uint16(sent[20:]), proto: UDP, payload: []byte("pong"), srcMAC: macGateway})
	serverSent := ipPacket(reply) // RIP:8080 -> LIP:lport
	if v := r.b.Process(ServerSide, reply); v != Forward {
		t.Fatalf("reply: %v %v", v, r.b.Stats.Drops())
	}
	f = icmpFrame(t, client, vip, 3, 3, reply.Bytes()[14:])
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatalf("port unreachable: %v", v)
	}
	checkICMPError(t, f, lip1, rip, macServerNIC, macGateway, 3, 3, 1400, serverSent)

	// An error about an unknown flow to the VIP is dropped and counted.
	f = icmpFrame(t, client, vip, 3, 3, frame(t, pktSpec{src: vip, dst: client, sport: 80, dport: 9, proto: UDP}).Bytes()[14:])
	if v := r.b.Process(ClientSide, f); v != Drop || r.b.Stats.Drop(DropICMPNoConn) != 1 {
		t.Fatalf("unknown flow: %v", v)
	}
}

func TestSteadyStateAllocs(t *testing.T) { steadyStateAllocs(t, nil) }

// steadyStateAllocs checks that packet pairs of an established connection
// allocate nothing on a rig of mod's config, and returns the rig.
func steadyStateAllocs(t *testing.T, mod func(*Config)) *rig {
	r := newRig(t, TCP, "rr", mod)
	f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, payload: make([]byte, 1400), srcMAC: macClient})
	r.b.Process(ClientSide, f)
	in := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, payload: make([]byte, 1400), srcMAC: macClient})
	info := r.b.Table().Conns()[0]
	back := frame(t, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: TCP, ack: true, payload: make([]byte, 1400)})
	inB, backB := append([]byte(nil), in.Bytes()...), append([]byte(nil), back.Bytes()...)
	allocs := totalAllocs(1000, func() {
		copy(in.Bytes(), inB)
		copy(back.Bytes(), backB)
		if r.b.Process(ClientSide, in) != Forward || r.b.Process(ServerSide, back) != Forward {
			t.Fatal("not forwarded")
		}
	})
	if allocs != 0 {
		t.Fatalf("%d allocations over 1000 packet pairs", allocs)
	}
	return r
}

// totalAllocs is testing.AllocsPerRun without the division: the
// allocations of n calls of f, after one to warm up. AllocsPerRun divides
// by n and truncates, so a path that allocated on one call in two would
// pass as 0.
func totalAllocs(n int, f func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	before := m.Mallocs
	for range n {
		f()
	}
	runtime.ReadMemStats(&m)
	return m.Mallocs - before
}

func addr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}

// A frame from a TAP with offload may carry a partial transport checksum
// (virtio-net NEEDS_CSUM: the field holds the pseudo-header sum only). After
// the rewrite, finishing it as the kernel does must give the right checksum.
func TestPartialChecksumRewrite(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		r := newRig(t, proto, "rr", nil)
		f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: proto, syn: true, payload: []byte("partial"), srcMAC: macClient})
		b := f.Bytes()
		l4 := b[34 : 14+int(binary.BigEndian.Uint16(b[16:]))] // not the Ethernet padding
		off := l4csumOff(uint8(proto))
		// Make it partial: the field holds the folded pseudo-header sum.
		binary.BigEndian.PutUint16(l4[off:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], uint8(proto), len(l4))))
		vnet := make(tun.VNetHdr, tun.VNetHdrLen)
		vnet.SetNeedsCsum(34, off)
		f.VNet = vnet
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("%v: %v", proto, v)
		}
		if !vnet.NeedsCsum() || vnet.CsumStart() != 34 || vnet.CsumOffset() != off {
			t.Fatalf("%v: the virtio-net header changed: %v", proto, vnet)
		}
		csum.Finish(f.Bytes()[34:], off) // what the kernel does (Process dropped the padding)
		decode(t, f)                     // verifies every checksum from scratch
	}
}

// Every (LIP, real server) pair gets used: with rr over 2 servers and an even
// number of LIPs, a per-service LIP rotation would pair each LIP with one
// server only.
func TestLIPsRotatePerServer(t *testing.T) {
	r := newRig(t, UDP, "rr", nil)
	lip2 := netip.MustParseAddr("172.25.84.11")
	r.b.AddLocalAddr(r.svc, lip2)
	pairs := map[[2]netip.Addr]int{}
	for i := range 40 {
		f := frame(t, pktSpec{src: client, dst: vip, sport: uint16(30000 + i), dport: 80, proto: UDP, srcMAC: macClient})
		if r.b.Process(ClientSide, f) != Forward {
			t.Fatal("not forwarded")
		}
		d := decode(t, f)
		pairs[[2]netip.Addr{addr(d.ip.SrcIP), addr(d.ip.DstIP)}]++
	}
	if len(pairs) != 4 {
		t.Fatalf("(LIP, RS) pairs used: %v, want all 4", pairs)
	}
}

// A closed TCP connection's local port is not reused toward the same real
// server while it may sit in the server's TIME_WAIT; other servers may use it,
// and after the quarantine it is free again.
func TestPortQuarantine(t *testing.T) {
	r := newRig(t, TCP, "rr", func(c *Config) { c.PortMin, c.PortMax, c.PortQuarantine = 6000, 6000, time.Minute })
	r.setWeight(t, rs2, 8080, 0)
	open := func(sport uint16) Verdict {
		return r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: sport, dport: 80, proto: TCP, syn: true, srcMAC: macClient}))
	}
	if v := open(1); v != Forward {
		t.Fatal(v)
	}
	r.b.table.now.Store(int64(40 * time.Second)) // the SYN_RECV entry (30s) expires
	if r.b.Sweep() != 1 {
		t.Fatal("not expired")
	}
	if v := open(2); v != Drop || r.b.Stats.Drop(DropPortExhausted) != 1 {
		t.Fatalf("port 6000 reused toward rs1 within the quarantine: %v", v)
	}
	if q := r.b.Quarantined(); q != 1 {
		t.Fatalf("quarantined %d", q)
	}
	r.setWeight(t, rs2, 8080, 1)
	r.setWeight(t, rs1, 8080, 0)
	if v := open(3); v != Forward {
		t.Fatalf("toward rs2 the port is free: %v", v)
	}
	r.setWeight(t, rs1, 8080, 1)
	r.setWeight(t, rs2, 8080, 0)
	r.b.table.now.Store(int64(110 * time.Second)) // past the minute of quarantine
	r.b.Sweep()
	// rs1's tuple (quarantined at 40s) is purged; rs2's (conn 3, expired at 70s) stays.
	if q := r.b.Quarantined(); q != 1 {
		t.Fatalf("quarantined after the purge: %d, want 1", q)
	}
	if v := open(4); v != Forward {
		t.Fatalf("after the quarantine: %v", v)
	}
}

// A segment that would make state must have a transport checksum that
// verifies, unless the kernel vouched for it (partial, or DATA_VALID): a
// corrupted SYN opens nothing, and a SYNPROXY service answers it with no
// cookie. The established flow's segments are not checked again (their
// checksum is carried along, and the receiver checks it).
func TestStateNeedsAValidChecksum(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	syn.Bytes()[14+20+16]++ // the TCP checksum
	if v := r.b.Process(ClientSide, syn); v != Drop || r.b.Stats.Drop(DropBadChecksum) != 1 || r.b.Table().Len() != 0 {
		t.Fatalf("corrupted SYN: %v, bad_checksum %d, %d conns", v, r.b.Stats.Drop(DropBadChecksum), r.b.Table().Len())
	}
	// Partial: the sending host's kernel finishes it; the field holds the pseudo-header sum.
	syn = frame(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	syn.Bytes()[14+20+16]++
	syn.VNet = make(tun.VNetHdr, tun.VNetHdrLen)
	syn.VNet.SetNeedsCsum(34, 16)
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("partial SYN: %v", v)
	}
	sp, _ := synproxyRig(t)
	syn = frame(t, pktSpec{src: client, dst: vip, sport: 40002, dport: 80, proto: TCP, syn: true, srcMAC: macClient, opts: synOpts(1460, 7, 1)})
	syn.Bytes()[14+20+16]++
	if v := sp.b.Process(ClientSide, syn); v != Drop || sp.b.Stats.Drop(DropBadChecksum) != 1 {
		t.Fatalf("corrupted SYN to SYNPROXY: %v", v)
	}
}

// TestDecodeAnyPort: decode reads a UDP datagram on any port, 6343 (sFlow)
// and 6081 (Geneve) included, whose payload gopacket would decode by port.
func TestDecodeAnyPort(t *testing.T) {
	for _, port := range []uint16{6343, 6081, 4789} {
		f := frame(t, pktSpec{src: client, dst: vip, sport: port, dport: port, proto: UDP, payload: payload(40), srcMAC: macClient})
		if d := decode(t, f); d.udp == nil || string(d.udp.Payload) != string(payload(40)) {
			t.Fatalf("port %d: %+v", port, d.udp)
		}
	}
}
