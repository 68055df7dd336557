package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/miekg/dns"

	"github.com/tapvs/tapvs/frag"
	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// dnsPort is where the DNS server runs on rs1 (both families).
const dnsPort = 5353

// dnsServices are a UDP service on port 53 of each VIP to rs1's DNS
// server.
const dnsServices = `
  - name: dns
    vip: 172.25.254.100
    port: 53
    protocol: udp
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 5353}
  - name: dns6
    vip: fd00:25:254::100
    port: 53
    protocol: udp
    local_addresses: [fd00:25:84::11]
    real_servers:
      - {address: fd00:20:1::2, port: 5353}
  - name: dns46
    vip: 172.25.254.46
    port: 53
    protocol: udp
    local_addresses: ['fd00:25:84::11']
    real_servers:
      - {address: 'fd00:20:1::2', port: 5353}
  - name: dns64
    vip: fd00:25:254::64
    port: 53
    protocol: udp
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 5353}`

// bigTXT are the TXT strings of the answer: 16 of 250 bytes, a 4 KiB
// message in all.
func bigTXT() []string {
	txt := make([]string, 16)
	for i := range txt {
		txt[i] = strings.Repeat(string(rune('a'+i)), 250)
	}
	return txt
}

// startBigDNS runs a DNS server in namespace ns on port dnsPort of every
// address, answering every TXT question with bigTXT when the query's EDNS
// allows 4096 bytes.
func startBigDNS(t *testing.T, ns string) {
	t.Helper()
	var pc net.PacketConn
	if err := lab.InNetns(ns, func() (err error) {
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", dnsPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if opt := r.IsEdns0(); opt != nil && opt.UDPSize() >= 4096 && len(r.Question) == 1 {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: bigTXT()})
			m.SetEdns0(4096, false)
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
}

// askTXT asks the VIP (network udp4 or udp6) for big.example's TXT with
// EDNS 4096 and returns the answer's size on the wire.
func askTXT(t *testing.T, e *env, network string, vip netip.Addr) int {
	t.Helper()
	c, err := lab.Dial(e.ctx(10*time.Second), e.top.Client, network, netip.AddrPortFrom(vip, 53).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	co := &dns.Conn{Conn: c, UDPSize: 65535}
	q := new(dns.Msg)
	q.SetQuestion("big.example.", dns.TypeTXT)
	q.SetEdns0(4096, false)
	// A few tries: the first datagram may wait on the real server's
	// next hop (no_neighbor), as any first packet may.
	for try := range 5 {
		co.SetDeadline(time.Now().Add(2 * time.Second))
		if err := co.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		m, err := co.ReadMsg()
		if err != nil {
			t.Logf("try %d: %v", try, err)
			continue
		}
		if m.Truncated || len(m.Answer) != 1 {
			t.Fatalf("answer: truncated %v, %d records", m.Truncated, len(m.Answer))
		}
		txt, ok := m.Answer[0].(*dns.TXT)
		if !ok || strings.Join(txt.Txt, "") != strings.Join(bigTXT(), "") {
			t.Fatalf("answer: %v", m.Answer[0])
		}
		return m.Len()
	}
	t.Fatalf("no answer from %v over %s: drops %v", vip, network, nonZeroDrops(e))
	return 0
}

func nonZeroDrops(e *env) map[string]uint64 {
	m := map[string]uint64{}
	for k, v := range e.d.Balancer.Stats.Drops() {
		if v != 0 {
			m[k] = v
		}
	}
	return m
}

// TestFragmentsDNS: a 4 KiB DNS answer (EDNS, UDP) from a real server
// reaches a client through the VIP, IPv4 and IPv6, and through the NAT46
// and NAT64 VIPs: the server's kernel sends it in fragments, tapvs
// reassembles them, rewrites (translates) the datagram and cuts it again
// for the client side, in the client's family.
func TestFragmentsDNS(t *testing.T) {
	e := setup6(t, dnsServices, "")
	startBigDNS(t, e.top.RS[0])
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	for _, c := range []struct {
		network string
		vip     netip.Addr
	}{{"udp4", lab.VIP}, {"udp6", lab.VIP6}, {"udp4", lab.VIP46}, {"udp6", lab.VIP64}} {
		before := e.d.Balancer.Reassembled()
		if n := askTXT(t, e, c.network, c.vip); n < 4000 {
			t.Fatalf("%s: the answer is %d bytes, want 4 KiB", c.network, n)
		}
		if e.d.Balancer.Reassembled() == before {
			t.Fatalf("%s: the answer came whole, no fragment reassembled", c.network)
		}
	}
	// The answers reached the client in fragments no longer than its
	// link's MTU, from the VIPs.
	// The capture reads the link on its own: the last answer's
	// fragments may reach it after the client has the answer.
	var n map[netip.Addr]int
	if !eventually(5*time.Second, func() bool {
		n = map[netip.Addr]int{}
		for _, p := range capClient.packets() {
			raw := p.Data()
			if len(raw) > 14+1500 {
				t.Fatalf("a frame of %d bytes on the client's link", len(raw))
			}
			switch binary.BigEndian.Uint16(raw[12:]) {
			case 0x0800:
				if binary.BigEndian.Uint16(raw[14+6:])&0x3fff != 0 {
					n[netip.AddrFrom4([4]byte(raw[14+12:14+16]))]++
				}
			case 0x86dd:
				if raw[14+6] == 44 {
					n[netip.AddrFrom16([16]byte(raw[14+8:14+24]))]++
				}
			}
		}
		return n[lab.VIP] >= 3 && n[lab.VIP6] >= 3 && n[lab.VIP46] >= 3 && n[lab.VIP64] >= 3
	}) {
		t.Fatalf("fragments from the VIPs on the client's link: %v; want the 4 KiB answers in 3 or more from each of %v, %v, %v and %v", n, lab.VIP, lab.VIP6, lab.VIP46, lab.VIP64)
	}
	if d := e.d.Balancer.Stats.Drops(); d["fragment"] != 0 {
		t.Fatalf("fragments dropped: %v", nonZeroDrops(e))
	}
}

// frag4 is an IPv4 fragment from src to the VIP's port 53, to tapvs's MAC.
func frag4(mac net.HardwareAddr, src netip.Addr, id uint16, proto uint8, off int, more bool, data []byte) []byte {
	b := append([]byte(nil), mac...)
	b = append(b, 2, 0, 0, 0, 0, 9, 0x08, 0x00)
	ip := make([]byte, 20, 20+len(data))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(data)))
	binary.BigEndian.PutUint16(ip[4:], id)
	ff := uint16(off / 8)
	if more {
		ff |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], ff)
	ip[8], ip[9] = 64, proto
	s, d := src.As4(), lab.VIP.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^inetSum(ip, 0))
	b = append(b, ip...)
	return append(b, data...)
}

// udpHead is the start of a UDP datagram to port 53 of n bytes in all.
func udpHead(n int) []byte {
	u := make([]byte, 1480)
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], 53)
	binary.BigEndian.PutUint16(u[4:], uint16(n))
	return u
}

// TestFragmentFlood: fragments written raw onto the client's link toward
// the VIP, overlapping, tiny and never completing, from several sources,
// are each refused or held within the bounds (1 MiB a source, 4 MiB in
// all), counted by reason; unfragmented traffic flows all along, and a
// fragmented DNS answer still arrives while two sources hold their share.
func TestFragmentFlood(t *testing.T) {
	e := setup6(t, dnsServices+"\n"+`  - name: echo
    vip: 172.25.254.100
    port: 9001
    protocol: udp
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9001}`, "")
	startBigDNS(t, e.top.RS[0])
	in, err := newInjector(e.top.Client, e.top.TapClient)
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	mac := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	st := &e.d.Balancer.Stats
	src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{172, 25, 254, byte(10 + i)}) }
	// echo: a datagram may be lost while the flood fills the TAP's queue,
	// as on a wire; one of a few tries must come back.
	echo := func(step string) {
		t.Helper()
		for try := range 5 {
			reply, err := lab.UDPEcho(e.ctx(5*time.Second), e.top.Client, netip.AddrPortFrom(lab.VIP, 9001), step)
			if err == nil && strings.HasSuffix(reply, ": "+step) {
				return
			}
			t.Logf("echo %s, try %d: %q, %v; drops %v", step, try, reply, err, nonZeroDrops(e))
		}
		t.Fatalf("echo %s: no answer in 5 tries", step)
	}
	echo("before")

	// Overlapping: a first fragment, then one 8 bytes into it; tiny: a
	// TCP first fragment of 8 bytes. 20 of each.
	const n = 20
	var frames [][]byte
	for i := range n {
		frames = append(frames,
			frag4(mac, src(0), uint16(1000+i), 17, 0, true, udpHead(3000)[:1480]),
			frag4(mac, src(0), uint16(1000+i), 17, 8, true, make([]byte, 16)))
	}
	if sent, err := in.send(frames...); err != nil || sent != len(frames) {
		t.Fatalf("overlaps: the TAP took %d of %d: %v", sent, len(frames), err)
	}
	if !eventually(5*time.Second, func() bool { return st.Drop(nat.DropFragOverlap) == 2*n }) {
		t.Fatalf("overlaps: %d counted, want %d (each pair's two): %v", st.Drop(nat.DropFragOverlap), 2*n, nonZeroDrops(e))
	}
	frames = frames[:0]
	for i := range n {
		frames = append(frames, frag4(mac, src(0), uint16(2000+i), 6, 0, true, make([]byte, 8)))
	}
	if sent, err := in.send(frames...); err != nil || sent != n {
		t.Fatalf("tiny: the TAP took %d of %d: %v", sent, n, err)
	}
	if !eventually(5*time.Second, func() bool { return st.Drop(nat.DropFragTiny) == n }) {
		t.Fatalf("tiny: %d counted, want %d: %v", st.Drop(nat.DropFragTiny), n, nonZeroDrops(e))
	}
	if b := e.d.Balancer.FragmentBytes(); b != 0 {
		t.Fatalf("%d bytes held after overlaps and tiny fragments", b)
	}

	// Never completing, from two sources: 600 first fragments each, past
	// a source's 1 MiB.
	flood := func(sources []int, count int) {
		t.Helper()
		for _, s := range sources {
			for k := 0; k < count; k += 50 {
				frames = frames[:0]
				for i := k; i < k+50; i++ {
					frames = append(frames, frag4(mac, src(s), uint16(i), 17, 0, true, udpHead(3000)))
				}
				if _, err := in.send(frames...); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	flood([]int{1, 2}, 600)
	perSource := int64(frag.DefaultMaxBytes / 4)
	if !eventually(5*time.Second, func() bool { return st.Drop(nat.DropFragSource) > 0 }) {
		t.Fatalf("no fragment refused past a source's share: %d bytes held, %v", e.d.Balancer.FragmentBytes(), nonZeroDrops(e))
	}
	// (A full TAP queue may lose some of the frames, as a wire would:
	// what is held is only bounded, not exact.)
	if b := e.d.Balancer.FragmentBytes(); b > 2*perSource || b == 0 {
		t.Fatalf("%d bytes held from two sources, want some, up to %d", b, 2*perSource)
	}
	echo("during")
	if n := askTXT(t, e, "udp4", lab.VIP); n < 4000 {
		t.Fatalf("the answer during the flood is %d bytes", n)
	}

	// Eight more sources: the whole bound.
	flood([]int{3, 4, 5, 6, 7, 8, 9, 10}, 400)
	if !eventually(5*time.Second, func() bool { return st.Drop(nat.DropFragMemory) > 0 }) {
		t.Fatalf("no fragment refused past the bound: %d bytes held, %v", e.d.Balancer.FragmentBytes(), nonZeroDrops(e))
	}
	if b := e.d.Balancer.FragmentBytes(); b > frag.DefaultMaxBytes {
		t.Fatalf("%d bytes held, past the %d bound", b, frag.DefaultMaxBytes)
	}
	echo("after")
	t.Logf("held %d bytes; drops %v", e.d.Balancer.FragmentBytes(), nonZeroDrops(e))
}

// TestFragmentsPathMTU: with the server side's MTU at 1400, a 3000-byte
// UDP datagram the client's kernel cuts at 1500 is answered by tapvs with
// a Packet Too Big of 1400 from the VIP (the largest fragment would not
// fit, and IPv6 routers do not fragment: Linux's rule); the client's
// kernel then cuts at 1400, and the echo comes back.
func TestFragmentsPathMTU(t *testing.T) {
	need(t)
	needIPv6(t)
	e := setupWith(t, topoOpts{queues: 1, ipv6: true, serverMTU: 1400}, services6("rr", 1, 1), "")
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	c, err := lab.Dial(e.ctx(20*time.Second), e.top.Client, "udp6", netip.AddrPortFrom(lab.VIP6, lab.EchoPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := strings.Repeat("p", 3000)
	buf := make([]byte, 65536)
	answered := false
	for try := range 10 {
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte(payload)); err != nil {
			// The kernel reports the Packet Too Big on the socket (EMSGSIZE)
			// once; the next write is cut to the new path MTU.
			t.Logf("try %d: %v", try, err)
			continue
		}
		n, err := c.Read(buf)
		if err == nil && strings.HasSuffix(string(buf[:n]), ": "+payload) {
			answered = true
			break
		}
		t.Logf("try %d: %v", try, err)
	}
	if !answered {
		t.Fatalf("no echo of 3000 bytes: drops %v", nonZeroDrops(e))
	}
	if e.d.Balancer.Stats.Drop(nat.DropFragPathMTU) == 0 {
		t.Fatal("no datagram answered with a Packet Too Big")
	}
	var ptb uint32
	for _, p := range capClient.packets() {
		raw := p.Data()
		if binary.BigEndian.Uint16(raw[12:]) != 0x86dd || raw[14+6] != 58 || raw[14+40] != 2 {
			continue
		}
		if netip.AddrFrom16([16]byte(raw[14+8:14+24])) != lab.VIP6 {
			t.Fatalf("a Packet Too Big from %x, want the VIP", raw[14+8:14+24])
		}
		ptb = binary.BigEndian.Uint32(raw[14+40+4:])
	}
	if ptb != 1400 {
		t.Fatalf("Packet Too Big on the client's link with MTU %d, want 1400", ptb)
	}
}

// TestFragmentsTimeExceeded: with fragments: {time: 1s}, a first fragment
// from the client whose datagram never completes is answered, once its
// second is up, with an ICMP time exceeded (fragment reassembly time
// exceeded) from the VIP to the client's MAC, quoting the fragment's
// header and 8 bytes, as Linux's ip_expire answers; a datagram whose first
// fragment never came is not answered.
func TestFragmentsTimeExceeded(t *testing.T) {
	e := setup6(t, dnsServices, "fragments: {time: 1s}\n")
	var own net.HardwareAddr
	if err := lab.InNetns(e.top.Client, func() error {
		ifi, err := net.InterfaceByName(e.top.TapClient)
		if err == nil {
			own = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	in, err := newInjector(e.top.Client, e.top.TapClient)
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	mac := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	client := lab.ClientAddr.Addr()
	first := frag4(mac, client, 4242, 17, 0, true, udpHead(3000)[:1480])
	copy(first[6:12], own)
	later := frag4(mac, client, 4343, 17, 1480, true, make([]byte, 1480)) // no first fragment
	copy(later[6:12], own)
	if sent, err := in.send(first, later); err != nil || sent != 2 {
		t.Fatalf("the TAP took %d of 2: %v", sent, err)
	}
	st := &e.d.Balancer.Stats
	if !eventually(10*time.Second, func() bool { s, _ := st.FragTimeExceeded(); return s >= 1 && st.Drop(nat.DropFragTimeout) == 2 }) {
		s, ns := st.FragTimeExceeded()
		t.Fatalf("time exceeded sent %d, not sent %d; drops %v", s, ns, nonZeroDrops(e))
	}
	var got []gopacket.Packet
	if !eventually(5*time.Second, func() bool {
		got = got[:0]
		for _, p := range capClient.packets() {
			if ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && ic.TypeCode.Type() == layers.ICMPv4TypeTimeExceeded {
				got = append(got, p)
			}
		}
		return len(got) > 0
	}) {
		t.Fatal("no time exceeded on the client's link")
	}
	if s, ns := st.FragTimeExceeded(); len(got) != 1 || s != 1 || ns != 0 {
		t.Fatalf("%d time exceeded on the link, %d counted sent, %d not: want one, for the datagram whose first fragment came", len(got), s, ns)
	}
	p := got[0]
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ic.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeTimeExceeded, layers.ICMPv4CodeFragmentReassemblyTimeExceeded) ||
		!ip.SrcIP.Equal(lab.VIP.AsSlice()) || !ip.DstIP.Equal(client.AsSlice()) || eth.DstMAC.String() != own.String() || eth.SrcMAC.String() != mac.String() {
		t.Fatalf("%v -> %v (%v -> %v), %v: want a fragment reassembly time exceeded from the VIP to the client", ip.SrcIP, ip.DstIP, eth.SrcMAC, eth.DstMAC, ic.TypeCode)
	}
	if q := ic.Payload; len(q) != 28 || !bytes.Equal(q, first[14:14+28]) {
		t.Fatalf("quote %x, want the first fragment's header and 8 bytes %x", q, first[14:14+28])
	}
}
