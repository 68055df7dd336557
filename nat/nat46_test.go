package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// NAT46: an IPv4 VIP in front of IPv6 LIPs and real servers, the mirror of
// NAT64 (nat64_test.go).
func newRig46(t testing.TB, proto Protocol, mod func(*Config)) *rig {
	t.Helper()
	return newRigAt(t, proto, "rr", mod, vip, lip6, rs6a, rs6b)
}

// check6s checks a frame translated to IPv6 toward a real server: decode
// verified the transport checksum with the IPv6 pseudo-header; here the
// header's fields (RFC 7915 4.1) and the MACs.
func check6s(t testing.TB, d decoded, tc, hlim uint8, payload int) {
	t.Helper()
	if d.ip6 == nil || d.eth.EthernetType != layers.EthernetTypeIPv6 {
		t.Fatalf("not translated to IPv6: %v", d.eth.EthernetType)
	}
	ip := d.ip6
	if ip.Version != 6 || ip.TrafficClass != tc || ip.FlowLabel != 0 || ip.HopLimit != hlim {
		t.Fatalf("IPv6 header %+v", ip)
	}
	if addr6(ip.SrcIP) != lip6 || (addr6(ip.DstIP) != rs6a && addr6(ip.DstIP) != rs6b) {
		t.Fatalf("IPv6 %v -> %v", ip.SrcIP, ip.DstIP)
	}
	hl := 8
	if d.tcp != nil {
		hl = int(d.tcp.DataOffset) * 4
	}
	if int(ip.Length) != hl+payload {
		t.Fatalf("payload length %d, want %d", ip.Length, hl+payload)
	}
	if [6]byte(d.eth.DstMAC) != macGateway || [6]byte(d.eth.SrcMAC) != macServerNIC {
		t.Fatalf("MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
	}
}

// check4c checks a frame translated to IPv4 toward the client (decode
// verified both checksums from scratch): RFC 7915 5.1's fields.
func check4c(t testing.TB, d decoded, tos, ttl uint8, cport uint16) {
	t.Helper()
	if d.ip == nil || d.eth.EthernetType != layers.EthernetTypeIPv4 {
		t.Fatalf("not translated to IPv4: %v", d.eth.EthernetType)
	}
	ip := d.ip
	wantFlags := layers.IPv4Flag(0)
	if ip.Length > 1260 {
		wantFlags = layers.IPv4DontFragment
	}
	if ip.Version != 4 || ip.IHL != 5 || ip.TOS != tos || ip.Id != 0 || ip.Flags != wantFlags || ip.FragOffset != 0 || ip.TTL != ttl {
		t.Fatalf("IPv4 header %+v", ip)
	}
	if addr4(ip.SrcIP) != vip || addr4(ip.DstIP) != client {
		t.Fatalf("IPv4 %v -> %v", ip.SrcIP, ip.DstIP)
	}
	if sport, dport := ports64(d); sport != 80 || dport != cport {
		t.Fatalf("ports %d -> %d", sport, dport)
	}
	if [6]byte(d.eth.DstMAC) != macClient || [6]byte(d.eth.SrcMAC) != macClientNIC {
		t.Fatalf("MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
	}
}

// open46 opens a connection from client:cport and returns the real server
// and local port it got.
func open46(t testing.TB, r *rig, proto Protocol, cport uint16, seq uint32) (rip netip.Addr, lport uint16) {
	t.Helper()
	syn := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: proto, syn: true, seq: seq, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("open: %v, drops %v", v, nonZero(r.b.Stats.Drops()))
	}
	d := decode(t, syn)
	lport, _ = ports64(d)
	return addr6(d.ip6.DstIP), lport
}

func TestNAT46BothDirections(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			r := newRig46(t, proto, nil)
			seen := map[netip.Addr]bool{}
			for i := range 4 {
				cport := uint16(40000 + i)
				f := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: proto, syn: true, payload: []byte("hello, translated46!"), srcMAC: macClient})
				setTOSTTL(f, 0xb8, 57)
				off0, payloadAt := f.Off, f.Off+f.Len-20
				if v := r.b.Process(ClientSide, f); v != Forward {
					t.Fatalf("verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
				}
				if f.Off != off0-20 || f.Off+f.Len-20 != payloadAt {
					t.Fatalf("frame moved from %d to %d (len %d): the payload must stay put", off0, f.Off, f.Len)
				}
				d := decode(t, f)
				check6s(t, d, 0xb8, 57, 20)
				rip := addr6(d.ip6.DstIP)
				seen[rip] = true
				lport, rport := ports64(d)
				if rport != 8080 || lport < 5000 {
					t.Fatalf("ports %d -> %d", lport, rport)
				}
				back := frame(t, pktSpec{src: rip, dst: lip6, sport: 8080, dport: lport, proto: proto, syn: true, ack: true, payload: []byte("world!"), srcMAC: macGateway})
				setTC(back, 0x28)
				off0 = back.Off
				if v := r.b.Process(ServerSide, back); v != Forward {
					t.Fatalf("reply verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
				}
				if back.Off != off0+20 {
					t.Fatalf("reply frame moved from %d to %d", off0, back.Off)
				}
				d = decode(t, back)
				check4c(t, d, 0x28, 64, cport)
				if int(d.ip.Length) != back.Len-14 {
					t.Fatalf("IPv4 total length %d, frame %d", d.ip.Length, back.Len)
				}
				if d.udp != nil && string(d.udp.Payload) != "world!" || d.tcp != nil && string(d.tcp.Payload) != "world!" {
					t.Fatal("payload changed")
				}
			}
			if !seen[rs6a] || !seen[rs6b] {
				t.Fatalf("rr over 4 connections reached %v", seen)
			}
			conns := r.b.Table().Conns()
			if len(conns) != 4 || conns[0].VIP != netip.AddrPortFrom(vip, 80) || conns[0].LIP.Addr() != lip6 || !conns[0].Client.Addr().Is4() {
				t.Fatalf("table: %+v", conns)
			}
		})
	}
}

// TestNAT46HeadersDropped: the client's IPv4 options and the server's
// extension headers do not cross the translation.
func TestNAT46HeadersDropped(t *testing.T) {
	r := newRig46(t, TCP, nil)
	syn := withIPv4Opts(t, frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, payload: []byte("x"), srcMAC: macClient}), 8)
	off0 := syn.Off
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("%v %v", v, nonZero(r.b.Stats.Drops()))
	}
	if syn.Off != off0-20+8 {
		t.Fatalf("frame start moved by %d, want -12", syn.Off-off0)
	}
	d := decode(t, syn)
	check6s(t, d, 0, 64, 1)
	lport, _ := ports64(d)
	pad6 := []byte{1, 4, 0, 0, 0, 0}
	back := frame(t, pktSpec{src: addr6(d.ip6.DstIP), dst: lip6, sport: 8080, dport: lport, proto: TCP, ack: true, payload: []byte("yz"), srcMAC: macGateway})
	back = withExt6(t, withExt6(t, back, wire.IP6HopByHop, pad6), wire.IP6DestOpts, pad6)
	off0 = back.Off
	if v := r.b.Process(ServerSide, back); v != Forward {
		t.Fatalf("%v %v", v, nonZero(r.b.Stats.Drops()))
	}
	if back.Off != off0+20+16 {
		t.Fatalf("reply frame start moved by %d, want 36", back.Off-off0)
	}
	d4 := decode(t, back)
	check4c(t, d4, 0, 64, 40000)
	if d4.ip.Protocol != layers.IPProtocolTCP || string(d4.tcp.Payload) != "yz" {
		t.Fatalf("protocol %v payload %q", d4.ip.Protocol, d4.tcp.Payload)
	}
}

// TestNAT46UDPZeroChecksum: an IPv4 client may send UDP without a
// checksum; IPv6 requires one: it is computed (RFC 7915 4.5), a computed 0
// sent as 0xffff.
func TestNAT46UDPZeroChecksum(t *testing.T) {
	r := newRig46(t, UDP, nil)
	open46(t, r, UDP, 40000, 0)
	for _, payload := range []string{"no checksum", "odd"} {
		f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: []byte(payload), srcMAC: macClient})
		f.Bytes()[34+6], f.Bytes()[34+7] = 0, 0
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatal(v)
		}
		d := decode(t, f) // fails on a zero UDP checksum over IPv6, verifies it from scratch
		check6s(t, d, 0, 64, len(payload))
		if string(d.udp.Payload) != payload {
			t.Fatalf("payload %q", d.udp.Payload)
		}
	}
	// A datagram whose computed checksum is 0 leaves with 0xffff: the
	// payload's two bytes make the sum all ones.
	f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: []byte{0, 0}, srcMAC: macClient})
	r.b.Process(ClientSide, f)
	d := decode(t, f)
	b := f.Bytes()
	binary.BigEndian.PutUint16(b[54+8:], 0)
	binary.BigEndian.PutUint16(b[54+6:], 0)
	fill := csum.Checksum(b[54:], pseudo6(d.ip6.SrcIP, d.ip6.DstIP, 17, 10))
	zero := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: []byte{byte(fill >> 8), byte(fill)}, srcMAC: macClient})
	zero.Bytes()[34+6], zero.Bytes()[34+7] = 0, 0
	if v := r.b.Process(ClientSide, zero); v != Forward {
		t.Fatal(v)
	}
	if got := binary.BigEndian.Uint16(zero.Bytes()[54+6:]); got != 0xffff {
		t.Fatalf("checksum %#04x, want 0xffff for a computed 0", got)
	}
	decode(t, zero)
}

// TestNAT46MSS: the server's SYN-ACK MSS is clamped so that the client's
// segments fit the server side once 20 bytes longer (MTU - 60), the
// client's SYN MSS so that the server's fit the client side (MTU - 40):
// see nat64.go.
func TestNAT46MSS(t *testing.T) {
	for _, c := range []struct {
		client, server, wantClient, wantServer uint16
	}{
		{8960, 8960, 1460, 1440},
		{1460, 1440, 1460, 1440},
		{1220, 1400, 1220, 1400},
	} {
		r := newRig46(t, TCP, nil)
		syn := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 100, opts: []layers.TCPOption{mssOpt(c.client)}, srcMAC: macClient})
		if v := r.b.Process(ClientSide, syn); v != Forward {
			t.Fatal(v)
		}
		d := decode(t, syn)
		if got := binary.BigEndian.Uint16(d.tcp.Options[0].OptionData); got != c.wantClient {
			t.Fatalf("client MSS %d became %d, want %d", c.client, got, c.wantClient)
		}
		lport, _ := ports64(d)
		sa := frame(t, pktSpec{src: addr6(d.ip6.DstIP), dst: lip6, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: 7000, ackNum: d.tcp.Seq + 1, opts: []layers.TCPOption{mssOpt(c.server)}, srcMAC: macGateway})
		if v := r.b.Process(ServerSide, sa); v != Forward {
			t.Fatal(v)
		}
		d = decode(t, sa)
		if got := binary.BigEndian.Uint16(d.tcp.Options[0].OptionData); got != c.wantServer {
			t.Fatalf("server MSS %d became %d, want %d", c.server, got, c.wantServer)
		}
		if d.tcp.Ack != 101 {
			t.Fatalf("SYN-ACK acks %d, want the client's ISN + 1", d.tcp.Ack)
		}
	}
}

// TestNAT46ServerMTU: a client packet is 20 bytes longer once translated
// to IPv6: one that would pass the server side's MTU is dropped and
// counted (nat64_too_big), and with DF answered by a fragmentation needed
// from the VIP to the client quoting what it sent (its own sequence
// number), with the next-hop MTU that fits.
func TestNAT46ServerMTU(t *testing.T) {
	for _, mtu := range []int{1500, 1400} {
		r := newRig46(t, TCP, func(c *Config) { c.ServerMTU = mtu; c.ClientMTU = 9000 })
		ru := newRig46(t, UDP, func(c *Config) { c.ServerMTU = mtu; c.ClientMTU = 9000 })
		open46(t, r, TCP, 40000, 100)
		open46(t, ru, UDP, 40000, 0)
		tooBig := func(rr *rig) uint64 { return rr.b.Stats.Drops()["nat64_too_big"] }

		// The server's SYN-ACK MSS: the client's segments, 60 bytes of
		// headers once translated, fit the server side.
		syn := frame(t, pktSpec{src: client, dst: vip, sport: 41000, dport: 80, proto: TCP, syn: true, seq: 100, srcMAC: macClient})
		r.b.Process(ClientSide, syn)
		ds := decode(t, syn)
		lport, _ := ports64(ds)
		sa := frame(t, pktSpec{src: addr6(ds.ip6.DstIP), dst: lip6, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: 7000, ackNum: ds.tcp.Seq + 1, opts: []layers.TCPOption{mssOpt(8940)}, srcMAC: macGateway})
		if v := r.b.Process(ServerSide, sa); v != Forward {
			t.Fatal(v)
		}
		if got := binary.BigEndian.Uint16(decode(t, sa).tcp.Options[0].OptionData); int(got) != mtu-60 {
			t.Fatalf("MTU %d: server MSS clamped to %d, want %d", mtu, got, mtu-60)
		}

		for _, c := range []struct {
			rr    *rig
			proto Protocol
			l4Hdr int
		}{{r, TCP, 20}, {ru, UDP, 8}} {
			// What fits: IPv4 MTU - 20 bytes, IPv6 MTU bytes.
			f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: c.proto, ack: true, seq: 101, payload: make([]byte, mtu-40-c.l4Hdr), srcMAC: macClient})
			setDF(f)
			if v := c.rr.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("MTU %d %v: %v %v", mtu, c.proto, v, nonZero(c.rr.b.Stats.Drops()))
			}
			if n := f.Len - 14; n != mtu {
				t.Fatalf("MTU %d %v: %d bytes of IPv6", mtu, c.proto, n)
			}
			check6s(t, decode(t, f), 0, 64, mtu-40-c.l4Hdr)
			if tooBig(c.rr) != 0 {
				t.Fatalf("MTU %d %v: a packet that fits counted too big", mtu, c.proto)
			}

			// One byte more, with DF: a fragmentation needed back to the
			// client from the VIP, quoting its header and first 8 bytes.
			f = frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: c.proto, ack: true, seq: 101, payload: make([]byte, mtu-40-c.l4Hdr+1), srcMAC: macClient})
			setDF(f)
			sent := append([]byte(nil), f.Bytes()[14:14+20+8]...)
			if v := c.rr.b.Process(ClientSide, f); v != Reply {
				t.Fatalf("MTU %d %v: one byte too big with DF: %v %v", mtu, c.proto, v, nonZero(c.rr.b.Stats.Drops()))
			}
			if tooBig(c.rr) != 1 {
				t.Fatalf("MTU %d %v: nat64_too_big %d", mtu, c.proto, tooBig(c.rr))
			}
			pk := gopacket.NewPacket(f.Bytes(), layers.LayerTypeEthernet, gopacket.Default)
			eth, _ := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			ic, _ := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if eth == nil || ip == nil || ic == nil {
				t.Fatalf("MTU %d %v: the answer is not ICMPv4: %v", mtu, c.proto, pk)
			}
			if [6]byte(eth.DstMAC) != macClient || [6]byte(eth.SrcMAC) != macClientNIC {
				t.Fatalf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
			}
			if addr4(ip.SrcIP) != vip || addr4(ip.DstIP) != client || ip.Protocol != layers.IPProtocolICMPv4 || int(ip.Length) != 20+8+28 || f.Len != 14+20+8+28 {
				t.Fatalf("IPv4 %v -> %v proto %v length %d, frame %d", ip.SrcIP, ip.DstIP, ip.Protocol, ip.Length, f.Len)
			}
			if csum.Checksum(f.Bytes()[14:34], 0) != 0 || csum.Checksum(f.Bytes()[34:], 0) != 0 {
				t.Fatal("IPv4 or ICMP checksum")
			}
			if ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || ic.Id != 0 || int(ic.Seq) != mtu-20 {
				t.Fatalf("MTU %d: %v, next-hop MTU %d (unused %d), want fragmentation needed with %d", mtu, ic.TypeCode, ic.Seq, ic.Id, mtu-20)
			}
			if !bytes.Equal(ic.Payload, sent) {
				t.Fatalf("MTU %d %v: quote\n%x\nwant what the client sent\n%x", mtu, c.proto, ic.Payload, sent)
			}
		}
		// Without DF: cut into IPv6 fragments no longer than the MTU
		// (RFC 7915 4.1), nothing dropped.
		var out []sent
		body := payload(mtu - 40 - 8 + 1)
		f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: body, srcMAC: macClient})
		if v := emit(ru.b, &out, ClientSide, f); v != Forward || tooBig(ru) != 1 || len(out) != 2 || largest(out) > mtu || out[0].side != ServerSide {
			t.Fatalf("MTU %d: too big without DF: %v, nat64_too_big %d, %d fragments, the largest %d bytes", mtu, v, tooBig(ru), len(out), largest(out))
		}
		d := decode(t, joined(t, out, ServerSide, mtu))
		if d.ip6 == nil || addr6(d.ip6.SrcIP) != lip6 || !bytes.Equal(d.udp.Payload, body) {
			t.Fatalf("MTU %d: the fragments make %+v", mtu, d.ip6)
		}
		// The same with its checksum partial (a client on this host): the
		// fragments carry the whole datagram's checksum, finished. Then
		// the body is changed so the sum finishes to 0: sent as 0xffff (0
		// is no checksum in IPv4 and not allowed in IPv6).
		body = payload(mtu - 40 - 8 + 1)
		for pass := range 2 {
			out = out[:0]
			f = frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: body, srcMAC: macClient})
			b := f.Bytes()
			binary.BigEndian.PutUint16(b[34+6:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], wire.ProtoUDP, len(b)-34)))
			inVNet(f).SetNeedsCsum(34, 6)
			if v := emit(ru.b, &out, ClientSide, f); v != Forward || len(out) != 2 {
				t.Fatalf("MTU %d pass %d: partial without DF: %v, %d fragments", mtu, pass, v, len(out))
			}
			whole := joined(t, out, ServerSide, mtu)
			if d := decode(t, whole); d.ip6 == nil || !bytes.Equal(d.udp.Payload, body) {
				t.Fatalf("MTU %d pass %d: partial: the fragments make %+v", mtu, pass, d.ip6)
			}
			sum := binary.BigEndian.Uint16(whole.Bytes()[wire.EtherLen+wire.IPv6Len+6:])
			if pass == 1 && sum != 0xffff {
				t.Fatalf("MTU %d: a UDP checksum of 0 sent as %#x", mtu, sum)
			}
			// One's complement: adding the checksum to a word of the body
			// makes the whole sum 0xffff, its complement 0.
			body = slices.Clone(body)
			w := uint32(binary.BigEndian.Uint16(body)) + uint32(sum)
			binary.BigEndian.PutUint16(body, csum.Fold(w))
		}
		// A TSO super-frame without DF whose segments would not fit is
		// not cut (the kernel cuts it after tapvs): dropped, counted.
		sf := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 101, payload: make([]byte, 4000), srcMAC: macClient})
		b := sf.Bytes()
		binary.BigEndian.PutUint16(b[34+16:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], wire.ProtoTCP, len(b)-34)))
		v := inVNet(sf)
		v.SetNeedsCsum(34, 16)
		v.SetGSO(tun.VNetGSOTCPv4, 34+20, uint16(mtu-40-20+1))
		if vd := r.b.Process(ClientSide, sf); vd != Drop || tooBig(r) != 2 {
			t.Fatalf("MTU %d: a super-frame without DF too big: %v, nat64_too_big %d", mtu, vd, tooBig(r))
		}
	}
}

// established46 opens one NAT46 connection on r and returns a client frame
// and a server frame of it.
func established46(t testing.TB, r *rig, proto Protocol) (in, back *Frame) {
	t.Helper()
	rip, lport := open46(t, r, proto, 40000, 0)
	in = frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: proto, ack: true, payload: make([]byte, 1400), srcMAC: macClient})
	back = frame(t, pktSpec{src: rip, dst: lip6, sport: 8080, dport: lport, proto: proto, ack: true, payload: make([]byte, 1400), srcMAC: macGateway})
	return in, back
}

// TestNAT46NoAllocs: the translation allocates nothing per packet.
func TestNAT46NoAllocs(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		r := newRig46(t, proto, nil)
		in, back := established46(t, r, proto)
		if allocs := pairAllocs(t, r, in, back); allocs != 0 {
			t.Fatalf("%v: %v allocations per packet pair", proto, allocs)
		}
	}
}

// TestNAT46Templates: a NAT46 service's persistence template (an IPv4
// client network, an IPv6 server) is exported as a record connrec
// accepts (b2 without b1), and imported into a successor sends the
// client's next connection to the template's IPv6 server.
func TestNAT46Templates(t *testing.T) {
	p := Persistence{Timeout: 10 * time.Minute, Mask: 24}
	rig := func() *rig {
		r := newRig46(t, TCP, nil)
		if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, p) }); err != nil {
			t.Fatal(err)
		}
		return r
	}
	old := rig()
	first, _ := open46(t, old, TCP, 10000, 0) // rr's first
	other := netip.MustParseAddr("198.51.100.77")
	syn := frame(t, pktSpec{src: other, dst: vip, sport: 10000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	if v := old.b.Process(ClientSide, syn); v != Forward {
		t.Fatal(v)
	}
	second := addr6(decode(t, syn).ip6.DstIP)
	if first == second {
		t.Fatalf("rr sent both clients to %v", first)
	}
	recs := templateRecords(t, old.b)
	if len(recs) != 2 {
		t.Fatalf("%d template records, want 2", len(recs))
	}
	next := rig()
	for _, r := range recs {
		if r.Flags != connrec.FlagServer6 || r.Kind != connrec.KindTemplate {
			t.Fatalf("record %+v", r)
		}
		if r.Server == second.As16() {
			if err := next.b.ImportConn(&r); err != nil {
				t.Fatal(err)
			}
		}
	}
	syn = frame(t, pktSpec{src: other, dst: vip, sport: 10001, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	if v := next.b.Process(ClientSide, syn); v != Forward {
		t.Fatal(v)
	}
	if got := addr6(decode(t, syn).ip6.DstIP); got != second {
		t.Fatalf("the imported template's client went to %v, want %v", got, second)
	}
}

// TestNAT46HeadroomEdge: an IPv4 client packet grows by 20 bytes into
// IPv6 in front of its transport header, which stays where it is: with
// exactly that much headroom before the frame and its virtio-net header
// it is translated (the header moved along), with a byte less it is
// dropped as nat64_untranslatable.
func TestNAT46HeadroomEdge(t *testing.T) {
	for _, tc := range []struct {
		headroom, vnet int
		ok             bool
	}{{20, 0, true}, {19, 0, false}, {32, 12, true}, {31, 12, false}} {
		r := newRig46(t, UDP, nil)
		open46(t, r, UDP, 40000, 0)
		f := reheaded(frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: []byte("headroom edge"), srcMAC: macClient}), tc.headroom, tc.vnet)
		clear(f.VNet) // a plain frame's virtio-net header
		v := r.b.Process(ClientSide, f)
		if !tc.ok {
			if v != Drop || r.b.Stats.Drop(DropNAT64) != 1 {
				t.Fatalf("headroom %d, virtio-net header %d: %v %v", tc.headroom, tc.vnet, v, nonZero(r.b.Stats.Drops()))
			}
			// Found before anything else: one too big with DF is not
			// answered either (nothing of it was read or rewritten).
			big := reheaded(frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: make([]byte, 1500-28), srcMAC: macClient}), tc.headroom, tc.vnet)
			clear(big.VNet)
			setDF(big)
			if v := r.b.Process(ClientSide, big); v != Drop || r.b.Stats.Drop(DropNAT64) != 2 || r.b.Stats.Drop(DropNAT64TooBig) != 0 {
				t.Fatalf("headroom %d, too big: %v %v", tc.headroom, v, nonZero(r.b.Stats.Drops()))
			}
			continue
		}
		if v != Forward {
			t.Fatalf("headroom %d, virtio-net header %d: %v %v", tc.headroom, tc.vnet, v, nonZero(r.b.Stats.Drops()))
		}
		if f.Off != tc.vnet || len(f.VNet) != tc.vnet || tc.vnet > 0 && &f.VNet[0] != &f.Buf[0] {
			t.Fatalf("headroom %d: frame at %d, virtio-net header % x", tc.headroom, f.Off, f.VNet)
		}
		check6s(t, decode(t, f), 0, 64, len("headroom edge"))
	}
}

// FuzzProcess46 is FuzzProcess64 mirrored: any frame through a balancer
// with a NAT46 TCP or UDP service (with TOA, PROXY v1 or v2 where the
// protocol carries it: ctl's bits 2-3), one connection open, from either
// side. Nothing may panic; a forwarded frame must parse as the family of
// the side it leaves by, with its IPv4 header checksum right, and its
// transport checksum right when the input's was (or the input was IPv4
// UDP without one); an answer to the client is a fragmentation needed.
func FuzzProcess46(f *testing.F) {
	seeds := [][]byte{}
	add := func(fr *Frame) { seeds = append(seeds, append([]byte(nil), fr.Bytes()...)) }
	for _, proto := range []Protocol{TCP, UDP} {
		r := newRig46(f, proto, nil)
		in, back := established46(f, r, proto)
		add(in)
		add(back)
		// A client packet too big for the server side once translated,
		// with DF: answered by a fragmentation needed.
		big := frame(f, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: proto, ack: true, seq: 1001, payload: make([]byte, 1461), srcMAC: macClient})
		setDF(big)
		add(big)
		d := decode(f, back)
		if r.b.Process(ClientSide, in) == Forward {
			add(icmp6Error(f, addr6(d.ip6.SrcIP), lip6, macGateway, wire.ICMP6TooBig, 0, 1400, in.Bytes()[14:14+48]))
		}
		if r.b.Process(ServerSide, back) == Forward {
			add(icmp4FromClient(f, 3, 4, 1400, back.Bytes()[14:14+28]))
		}
	}
	syn := frame(f, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, syn: true, opts: []layers.TCPOption{mssOpt(9000)}, payload: []byte("x"), srcMAC: macClient})
	add(syn)
	add(withIPv4Opts(f, syn, 4))
	for _, s := range seeds {
		for ctl := range uint8(16) {
			f.Add(ctl, s)
		}
	}
	f.Fuzz(check46)
}

// check46 is FuzzProcess46's check of one frame.
func check46(t *testing.T, ctl uint8, raw []byte) {
	proto := TCP
	if ctl&2 != 0 {
		proto = UDP
	}
	r := newRig46(t, proto, nil)
	if mode := ClientAddr(ctl >> 2 & 3); mode.check(proto) == nil {
		if err := r.b.Update(func(tx *Tx) error { return tx.SetClientAddr(r.svc, mode) }); err != nil {
			t.Fatal(err)
		}
	}
	established46(t, r, proto)
	side := Side(ctl & 1)
	var verified bool
	if side == ClientSide {
		verified, _ = l4Verifies(raw)
	} else {
		verified = l4Verifies6(raw)
	}
	fr := withHeadroom(raw)
	v := r.b.Process(side, fr)
	if v == Reply && side == ClientSide {
		out := fr.Bytes()
		if len(out) < 14+20+8+28 || len(out) > 14+20+8+60+8 || binary.BigEndian.Uint16(out[12:]) != wire.EtherIPv4 || out[23] != wire.ProtoICMP ||
			csum.Checksum(out[14:34], 0) != 0 || csum.Checksum(out[34:], 0) != 0 || out[34] != 3 || out[35] != 4 {
			t.Fatalf("answered with a frame that is not a fragmentation needed: % x", out)
		}
		return
	}
	if v != Forward {
		return
	}
	out := fr.Bytes()
	if side == ServerSide {
		if len(out) < 34 || binary.BigEndian.Uint16(out[12:]) != wire.EtherIPv4 || csum.Checksum(out[14:34], 0) != 0 {
			t.Fatalf("forwarded a frame that is not IPv4 with a right header: % x", out[:min(len(out), 40)])
		}
		if ok, has := l4Verifies(out); verified && has && !ok {
			t.Fatalf("a checksum that verified in does not out:\nin  % x\nout % x", raw, out)
		}
		return
	}
	if len(out) < 54 || binary.BigEndian.Uint16(out[12:]) != wire.EtherIPv6 {
		t.Fatalf("forwarded a frame that is not IPv6: % x", out[:min(len(out), 40)])
	}
	if (verified || udpNoChecksum(raw)) && !l4Verifies6(out) {
		t.Fatalf("a checksum that verified in does not out:\nin  % x\nout % x", raw, out)
	}
}

// TestFragmentsNAT46: a NAT46 connection's datagrams in fragments, IPv4
// from the client and IPv6 from the server, are reassembled, translated
// and leave in fragments of the other family, each the largest that came
// in moved by the headers' 28 bytes (IPv6's 40 and its Fragment header
// against IPv4's 20) and within the way out's MTU; nothing is counted too
// big.
func TestFragmentsNAT46(t *testing.T) {
	var out []sent
	r := newRig46(t, UDP, func(c *Config) { c.ServerMTU = 1500 })
	r.b.Attach(recordLink{&out})
	body := payload(4000)
	whole := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: body, srcMAC: macClient})
	frags := cut(t, whole, 1400, 5)
	for i, f := range frags {
		if v := emit(r.b, &out, ClientSide, f); v != stolenUntil(i, len(frags)) {
			t.Fatalf("fragment %d: %v, drops %v", i, v, nonZero(r.b.Stats.Drops()))
		}
	}
	if largest(out) != 1396+28 || r.b.Stats.Drop(DropFragPathMTU) != 0 {
		t.Fatalf("largest fragment to the server %d bytes, want 1424; drops %v", largest(out), nonZero(r.b.Stats.Drops()))
	}
	d := decode(t, joined(t, out, ServerSide, 1424))
	if d.ip6 == nil || addr6(d.ip6.SrcIP) != lip6 || !bytes.Equal(d.udp.Payload, body) {
		t.Fatalf("to the server: %+v", d.ip6)
	}
	out = out[:0]
	back := frame(t, pktSpec{src: addr6(d.ip6.DstIP), dst: lip6, sport: 8080, dport: uint16(d.udp.SrcPort), proto: UDP, payload: body, srcMAC: macGateway})
	frags = cut(t, back, 1000, 6)
	for i, f := range frags {
		if v := emit(r.b, &out, ServerSide, f); v != stolenUntil(i, len(frags)) {
			t.Fatalf("reply fragment %d: %v, drops %v", i, v, nonZero(r.b.Stats.Drops()))
		}
	}
	if largest(out) != 1000-28 {
		t.Fatalf("largest fragment to the client %d bytes, want 972", largest(out))
	}
	d = decode(t, joined(t, out, ClientSide, 972))
	if d.ip == nil || addr4(d.ip.SrcIP) != vip || addr4(d.ip.DstIP) != client || !bytes.Equal(d.udp.Payload, body) || r.b.Stats.Drop(DropNAT64TooBig) != 0 {
		t.Fatalf("to the client: %+v, drops %v", d.ip, nonZero(r.b.Stats.Drops()))
	}
}

// TestNAT46PartialChecksum: a partial checksum (the pseudo-header sum
// only) moves by the pseudo-header's change across families, and
// csum_start with the transport header, both ways.
func TestNAT46PartialChecksum(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			r := newRig46(t, proto, nil)
			off := l4csumOff(uint8(proto))
			f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: proto, syn: true, payload: []byte("partial sum, 20 more"), srcMAC: macClient})
			b := f.Bytes()
			binary.BigEndian.PutUint16(b[34+off:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], uint8(proto), len(b)-34)))
			inVNet(f).SetNeedsCsum(34, off)
			if v := r.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
			}
			if f.VNet.CsumStart() != 54 || f.VNet.CsumOffset() != off || !f.VNet.NeedsCsum() || &f.VNet[9] != &f.Buf[f.Off-1] {
				t.Fatalf("virtio-net header: csum_start %d offset %d", f.VNet.CsumStart(), f.VNet.CsumOffset())
			}
			csum.Finish(f.Bytes()[54:], off)
			d := decode(t, f)
			check6s(t, d, 0, 64, 20)
			lport, _ := ports64(d)

			back := frame(t, pktSpec{src: addr6(d.ip6.DstIP), dst: lip6, sport: 8080, dport: lport, proto: proto, ack: true, payload: []byte("back"), srcMAC: macGateway})
			b = back.Bytes()
			binary.BigEndian.PutUint16(b[54+off:], csum.Fold(csum.PseudoV6(b[22:38], b[38:54], uint8(proto), len(b)-54)))
			inVNet(back).SetNeedsCsum(54, off)
			if v := r.b.Process(ServerSide, back); v != Forward {
				t.Fatalf("reply verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
			}
			if back.VNet.CsumStart() != 34 || &back.VNet[9] != &back.Buf[back.Off-1] {
				t.Fatalf("reply csum_start %d", back.VNet.CsumStart())
			}
			csum.Finish(back.Bytes()[34:], off)
			check4c(t, decode(t, back), 0, 64, 40000)
		})
	}
}

// TestNAT46TSO: a TSO super-frame's virtio-net header follows the
// translation: TCPv4 segmentation becomes TCPv6 toward the server (ECN
// kept), TCPv6 becomes TCPv4 toward the client, the repeated headers'
// length and csum_start moving with the IP header's size.
func TestNAT46TSO(t *testing.T) {
	r := newRig46(t, TCP, nil)
	rip, lport := open46(t, r, TCP, 40000, 100)
	f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 101, payload: make([]byte, 4000), srcMAC: macClient})
	b := f.Bytes()
	binary.BigEndian.PutUint16(b[34+16:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], wire.ProtoTCP, len(b)-34)))
	v := inVNet(f)
	v.SetNeedsCsum(34, 16)
	v.SetGSO(tun.VNetGSOTCPv4|tun.VNetGSOECN, 34+20, 1400)
	if vd := r.b.Process(ClientSide, f); vd != Forward {
		t.Fatalf("%v %v", vd, nonZero(r.b.Stats.Drops()))
	}
	if f.VNet.GSOType() != tun.VNetGSOTCPv6|tun.VNetGSOECN || f.VNet.HdrLen() != 54+20 || f.VNet.GSOSize() != 1400 || f.VNet.CsumStart() != 54 {
		t.Fatalf("virtio-net header: type %d hdr_len %d size %d csum_start %d", f.VNet.GSOType(), f.VNet.HdrLen(), f.VNet.GSOSize(), f.VNet.CsumStart())
	}
	csum.Finish(f.Bytes()[54:], 16)
	check6s(t, decode(t, f), 0, 64, 4000)

	back := frame(t, pktSpec{src: rip, dst: lip6, sport: 8080, dport: lport, proto: TCP, ack: true, payload: make([]byte, 4000), srcMAC: macGateway})
	b = back.Bytes()
	binary.BigEndian.PutUint16(b[54+16:], csum.Fold(csum.PseudoV6(b[22:38], b[38:54], wire.ProtoTCP, len(b)-54)))
	v = inVNet(back)
	v.SetNeedsCsum(54, 16)
	v.SetGSO(tun.VNetGSOTCPv6, 54+20, 1440)
	if vd := r.b.Process(ServerSide, back); vd != Forward {
		t.Fatalf("%v %v", vd, nonZero(r.b.Stats.Drops()))
	}
	if back.VNet.GSOType() != tun.VNetGSOTCPv4 || back.VNet.HdrLen() != 34+20 || back.VNet.GSOSize() != 1440 || back.VNet.CsumStart() != 34 {
		t.Fatalf("reply virtio-net header: type %d hdr_len %d csum_start %d", back.VNet.GSOType(), back.VNet.HdrLen(), back.VNet.CsumStart())
	}
	csum.Finish(back.Bytes()[34:], 16)
	check4c(t, decode(t, back), 0, 64, 40000)

	// A UDP super-frame from the client (UFO) would be cut by the kernel
	// after tapvs: dropped, counted.
	ru := newRig46(t, UDP, nil)
	open46(t, ru, UDP, 40000, 0)
	ufo := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, payload: make([]byte, 3000), srcMAC: macClient})
	inVNet(ufo).SetGSO(tun.VNetGSOUDP, 0, 1400)
	if vd := ru.b.Process(ClientSide, ufo); vd != Drop || ru.b.Stats.Drops()["nat64_untranslatable"] != 1 {
		t.Fatalf("UFO: %v %v", vd, nonZero(ru.b.Stats.Drops()))
	}
}
