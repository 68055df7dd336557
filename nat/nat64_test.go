package nat

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// NAT64: an IPv6 VIP in front of IPv4 LIPs and real servers.
var vip64 = netip.MustParseAddr("fd00:25:254::64")

func newRig64(t testing.TB, proto Protocol, mod func(*Config)) *rig {
	t.Helper()
	return newRigAt(t, proto, "rr", mod, vip64, lip1, rs1, rs2)
}

func addr4(ip net.IP) netip.Addr { return netip.AddrFrom4([4]byte(ip.To4())) }

// ports64 are a decoded frame's transport ports.
func ports64(d decoded) (sport, dport uint16) {
	if d.tcp != nil {
		return uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
	}
	return uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
}

// check4 checks a frame translated to IPv4 toward a real server: decode
// verified both checksums from scratch; here the header's fields (RFC 7915
// 5.1) and the MACs.
func check4(t testing.TB, d decoded, tos, ttl uint8, payload int) {
	t.Helper()
	if d.ip == nil || d.eth.EthernetType != layers.EthernetTypeIPv4 {
		t.Fatalf("not translated to IPv4: %v", d.eth.EthernetType)
	}
	ip := d.ip
	// DF past 1260 bytes only (RFC 7915 5.1).
	wantFlags := layers.IPv4Flag(0)
	if ip.Length > 1260 {
		wantFlags = layers.IPv4DontFragment
	}
	if ip.Version != 4 || ip.IHL != 5 || ip.TOS != tos || ip.Id != 0 || ip.Flags != wantFlags || ip.FragOffset != 0 || ip.TTL != ttl {
		t.Fatalf("IPv4 header %+v", ip)
	}
	if addr4(ip.SrcIP) != lip1 || (addr4(ip.DstIP) != rs1 && addr4(ip.DstIP) != rs2) {
		t.Fatalf("IPv4 %v -> %v", ip.SrcIP, ip.DstIP)
	}
	hl := 8
	if d.tcp != nil {
		hl = int(d.tcp.DataOffset) * 4
	}
	if int(ip.Length) != 20+hl+payload {
		t.Fatalf("total length %d, want %d", ip.Length, 20+hl+payload)
	}
	if [6]byte(d.eth.DstMAC) != macGateway || [6]byte(d.eth.SrcMAC) != macServerNIC {
		t.Fatalf("MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
	}
}

// check6 checks a frame translated to IPv6 toward the client (decode6
// verified the transport checksum with the IPv6 pseudo-header).
func check6(t testing.TB, d decoded, tc, hlim uint8, cport uint16) {
	t.Helper()
	if d.ip6 == nil || d.eth.EthernetType != layers.EthernetTypeIPv6 {
		t.Fatalf("not translated to IPv6: %v", d.eth.EthernetType)
	}
	ip := d.ip6
	if ip.Version != 6 || ip.TrafficClass != tc || ip.FlowLabel != 0 || ip.HopLimit != hlim {
		t.Fatalf("IPv6 header %+v", ip)
	}
	if addr6(ip.SrcIP) != vip64 || addr6(ip.DstIP) != client6 {
		t.Fatalf("IPv6 %v -> %v", ip.SrcIP, ip.DstIP)
	}
	if sp, dp := ports64(d); sp != 80 || dp != cport {
		t.Fatalf("ports %d -> %d", sp, dp)
	}
	if [6]byte(d.eth.DstMAC) != macClient || [6]byte(d.eth.SrcMAC) != macClientNIC {
		t.Fatalf("MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
	}
}

// setTC sets an IPv6 frame's traffic class (outside the pseudo-header: no
// checksum changes).
func setTC(f *Frame, tc uint8) {
	b := f.Bytes()
	b[14] = 6<<4 | tc>>4
	b[15] = tc<<4 | b[15]&0x0f
}

// setTOSTTL sets an IPv4 frame's TOS and TTL, its header checksum again.
func setTOSTTL(f *Frame, tos, ttl uint8) {
	ip := f.Bytes()[14:34]
	ip[1], ip[8] = tos, ttl
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
}

// withIPv4Opts puts n bytes (a multiple of 4) of NOP options in an IPv4
// frame's header.
func withIPv4Opts(t testing.TB, f *Frame, n int) *Frame {
	t.Helper()
	b := f.Bytes()
	b = b[:14+int(binary.BigEndian.Uint16(b[16:]))] // no Ethernet padding
	opts := bytes.Repeat([]byte{1}, n)
	out := append(append(append([]byte(nil), b[:34]...), opts...), b[34:]...)
	ip := out[14 : 34+n]
	ip[0] = 0x40 | byte((20+n)/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(len(out)-14))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
	return withHeadroom(out)
}

// open64 opens a connection from client6:cport and returns the real
// server and local port it got.
func open64(t testing.TB, r *rig, proto Protocol, cport uint16, seq uint32) (rip netip.Addr, lport uint16) {
	t.Helper()
	syn := frame(t, pktSpec{src: client6, dst: vip64, sport: cport, dport: 80, proto: proto, syn: true, seq: seq, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("open: %v, drops %v", v, nonZero(r.b.Stats.Drops()))
	}
	d := decode(t, syn)
	lport, _ = ports64(d)
	return addr4(d.ip.DstIP), lport
}

func TestNAT64BothDirections(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			r := newRig64(t, proto, nil)
			seen := map[netip.Addr]bool{}
			for i := range 4 {
				cport := uint16(40000 + i)
				f := frame(t, pktSpec{src: client6, dst: vip64, sport: cport, dport: 80, proto: proto, syn: true, payload: []byte("hello"), srcMAC: macClient})
				setTC(f, 0xb8)
				off0, payloadAt := f.Off, f.Off+f.Len-5
				if v := r.b.Process(ClientSide, f); v != Forward {
					t.Fatalf("verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
				}
				if f.Off != off0+20 || f.Off+f.Len-5 != payloadAt {
					t.Fatalf("frame moved from %d to %d (len %d): the payload must stay put", off0, f.Off, f.Len)
				}
				d := decode(t, f)
				check4(t, d, 0xb8, 64, 5)
				rip := addr4(d.ip.DstIP)
				seen[rip] = true
				lport, rport := ports64(d)
				if rport != 8080 || lport < 5000 {
					t.Fatalf("ports %d -> %d", lport, rport)
				}
				back := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: proto, syn: true, ack: true, payload: []byte("world!"), srcMAC: macGateway})
				setTOSTTL(back, 0x28, 50)
				off0 = back.Off
				if v := r.b.Process(ServerSide, back); v != Forward {
					t.Fatalf("reply verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
				}
				if back.Off != off0-20 {
					t.Fatalf("reply frame moved from %d to %d", off0, back.Off)
				}
				d = decode(t, back)
				check6(t, d, 0x28, 50, cport)
				if d.udp != nil && string(d.udp.Payload) != "world!" || d.tcp != nil && string(d.tcp.Payload) != "world!" {
					t.Fatal("payload changed")
				}
			}
			if !seen[rs1] || !seen[rs2] {
				t.Fatalf("rr over 4 connections reached %v", seen)
			}
			conns := r.b.Table().Conns()
			if len(conns) != 4 || conns[0].VIP != netip.AddrPortFrom(vip64, 80) || conns[0].LIP.Addr() != lip1 || !conns[0].Client.Addr().Is6() {
				t.Fatalf("table: %+v", conns)
			}
		})
	}
}

// TestNAT64HeadersDropped: the client's extension headers and the
// server's IPv4 options do not cross the translation.
func TestNAT64HeadersDropped(t *testing.T) {
	r := newRig64(t, TCP, nil)
	pad6 := []byte{1, 4, 0, 0, 0, 0}
	syn := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: TCP, syn: true, payload: []byte("x"), srcMAC: macClient})
	syn = withExt6(t, withExt6(t, syn, wire.IP6HopByHop, pad6), wire.IP6Routing, []byte{0, 0, 0, 0, 0, 0})
	off0 := syn.Off
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("%v %v", v, nonZero(r.b.Stats.Drops()))
	}
	if syn.Off != off0+20+16 {
		t.Fatalf("frame start moved by %d, want 36", syn.Off-off0)
	}
	d := decode(t, syn)
	check4(t, d, 0, 64, 1)
	if d.ip.Protocol != layers.IPProtocolTCP {
		t.Fatalf("protocol %v", d.ip.Protocol)
	}
	lport, _ := ports64(d)
	for _, n := range []int{4, 40} {
		back := withIPv4Opts(t, frame(t, pktSpec{src: addr4(d.ip.DstIP), dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, payload: []byte("yz"), srcMAC: macGateway}), n)
		off0 = back.Off
		if v := r.b.Process(ServerSide, back); v != Forward {
			t.Fatalf("options %d: %v %v", n, v, nonZero(r.b.Stats.Drops()))
		}
		if back.Off != off0-20+n {
			t.Fatalf("options %d: frame start moved by %d", n, back.Off-off0)
		}
		d6 := decode(t, back)
		check6(t, d6, 0, 64, 40000)
		if d6.ip6.NextHeader != layers.IPProtocolTCP || string(d6.tcp.Payload) != "yz" {
			t.Fatalf("options %d: next header %v payload %q", n, d6.ip6.NextHeader, d6.tcp.Payload)
		}
	}
}

// TestNAT64PartialChecksum: a partial checksum (the pseudo-header sum
// only) moves by the pseudo-header's change across families, and
// csum_start with the transport header.
func TestNAT64PartialChecksum(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			r := newRig64(t, proto, nil)
			off := l4csumOff(uint8(proto))
			f := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: proto, syn: true, payload: []byte("partial"), srcMAC: macClient})
			b := f.Bytes()
			binary.BigEndian.PutUint16(b[54+off:], csum.Fold(csum.PseudoV6(b[22:38], b[38:54], uint8(proto), len(b)-54)))
			inVNet(f).SetNeedsCsum(54, off)
			if v := r.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
			}
			if f.VNet.CsumStart() != 34 || f.VNet.CsumOffset() != off || !f.VNet.NeedsCsum() || &f.VNet[9] != &f.Buf[f.Off-1] {
				t.Fatalf("virtio-net header: csum_start %d offset %d, at the frame's start %v", f.VNet.CsumStart(), f.VNet.CsumOffset(), &f.VNet[9] == &f.Buf[f.Off-1])
			}
			csum.Finish(f.Bytes()[34:], off)
			d := decode(t, f)
			check4(t, d, 0, 64, 7)
			lport, _ := ports64(d)

			back := frame(t, pktSpec{src: addr4(d.ip.DstIP), dst: lip1, sport: 8080, dport: lport, proto: proto, ack: true, payload: []byte("back"), srcMAC: macGateway})
			b = back.Bytes()
			b = b[:14+int(binary.BigEndian.Uint16(b[16:]))] // gopacket pads a short frame to 60 bytes
			binary.BigEndian.PutUint16(b[34+off:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], uint8(proto), len(b)-34)))
			inVNet(back).SetNeedsCsum(34, off)
			if v := r.b.Process(ServerSide, back); v != Forward {
				t.Fatalf("reply verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
			}
			if back.VNet.CsumStart() != 54 || &back.VNet[9] != &back.Buf[back.Off-1] {
				t.Fatalf("reply csum_start %d", back.VNet.CsumStart())
			}
			csum.Finish(back.Bytes()[54:], off)
			check6(t, decode(t, back), 0, 64, 40000)
		})
	}
}

// TestNAT64TSO: a TSO super-frame's virtio-net header follows the
// translation: TCPv6 segmentation becomes TCPv4 (ECN kept), the repeated
// headers' length and csum_start move with the IP header's size.
func TestNAT64TSO(t *testing.T) {
	r := newRig64(t, TCP, nil)
	rip, lport := open64(t, r, TCP, 40000, 100)
	f := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 101, payload: make([]byte, 4000), srcMAC: macClient})
	b := f.Bytes()
	binary.BigEndian.PutUint16(b[54+16:], csum.Fold(csum.PseudoV6(b[22:38], b[38:54], wire.ProtoTCP, len(b)-54)))
	v := inVNet(f)
	v.SetNeedsCsum(54, 16)
	v.SetGSO(tun.VNetGSOTCPv6|tun.VNetGSOECN, 54+20, 1440)
	if vd := r.b.Process(ClientSide, f); vd != Forward {
		t.Fatalf("%v %v", vd, nonZero(r.b.Stats.Drops()))
	}
	if f.VNet.GSOType() != tun.VNetGSOTCPv4|tun.VNetGSOECN || f.VNet.HdrLen() != 34+20 || f.VNet.GSOSize() != 1440 || f.VNet.CsumStart() != 34 {
		t.Fatalf("virtio-net header: type %d hdr_len %d size %d csum_start %d", f.VNet.GSOType(), f.VNet.HdrLen(), f.VNet.GSOSize(), f.VNet.CsumStart())
	}
	csum.Finish(f.Bytes()[34:], 16)
	check4(t, decode(t, f), 0, 64, 4000)

	back := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, payload: make([]byte, 4000), srcMAC: macGateway})
	b = back.Bytes()
	binary.BigEndian.PutUint16(b[34+16:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], wire.ProtoTCP, len(b)-34)))
	v = inVNet(back)
	v.SetNeedsCsum(34, 16)
	v.SetGSO(tun.VNetGSOTCPv4, 34+20, 1440)
	if vd := r.b.Process(ServerSide, back); vd != Forward {
		t.Fatalf("%v %v", vd, nonZero(r.b.Stats.Drops()))
	}
	if back.VNet.GSOType() != tun.VNetGSOTCPv6 || back.VNet.HdrLen() != 54+20 || back.VNet.GSOSize() != 1440 || back.VNet.CsumStart() != 54 {
		t.Fatalf("reply virtio-net header: type %d hdr_len %d csum_start %d", back.VNet.GSOType(), back.VNet.HdrLen(), back.VNet.CsumStart())
	}
	csum.Finish(back.Bytes()[54:], 16)
	check6(t, decode(t, back), 0, 64, 40000)

	// A UDP super-frame (UFO) would be cut into IPv4 fragments that DF
	// forbids; no headroom for the IPv6 header: both dropped, counted.
	ru := newRig64(t, UDP, nil)
	open64(t, ru, UDP, 40000, 0)
	ufo := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: UDP, payload: make([]byte, 3000), srcMAC: macClient})
	inVNet(ufo).SetGSO(tun.VNetGSOUDP, 0, 1400)
	if vd := ru.b.Process(ClientSide, ufo); vd != Drop || ru.b.Stats.Drops()["nat64_untranslatable"] != 1 {
		t.Fatalf("UFO: %v %v", vd, nonZero(ru.b.Stats.Drops()))
	}
	tight := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, payload: []byte("x"), srcMAC: macGateway})
	raw := tight.Bytes()
	tight = &Frame{Buf: append([]byte(nil), raw...), Off: 0, Len: len(raw)}
	if vd := r.b.Process(ServerSide, tight); vd != Drop || r.b.Stats.Drops()["nat64_untranslatable"] != 1 {
		t.Fatalf("no headroom: %v %v", vd, nonZero(r.b.Stats.Drops()))
	}
}

// TestNAT64UDPZeroChecksum: IPv4 lets UDP go without a checksum, IPv6 does
// not: the translation computes one (RFC 7915 4.5).
func TestNAT64UDPZeroChecksum(t *testing.T) {
	r := newRig64(t, UDP, nil)
	rip, lport := open64(t, r, UDP, 40000, 0)
	for _, payload := range []string{"no checksum", "odd"} {
		back := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: UDP, payload: []byte(payload), srcMAC: macGateway})
		back.Bytes()[34+6], back.Bytes()[34+7] = 0, 0
		if v := r.b.Process(ServerSide, back); v != Forward {
			t.Fatal(v)
		}
		d := decode(t, back) // fails on a zero UDP checksum over IPv6, verifies it from scratch
		check6(t, d, 0, 64, 40000)
		if string(d.udp.Payload) != payload {
			t.Fatalf("payload %q", d.udp.Payload)
		}
	}
}

// TestNAT64MSS: the client's SYN MSS is clamped so that the server's
// segments fit once 20 bytes longer (MTU - 60), the server's SYN-ACK MSS
// so that the client's fit the server side (MTU - 40): see nat64.go.
func TestNAT64MSS(t *testing.T) {
	for _, c := range []struct {
		client, server, wantClient, wantServer uint16
	}{
		{8960, 8960, 1440, 1460},
		{1440, 1460, 1440, 1460},
		{1220, 1400, 1220, 1400},
	} {
		r := newRig64(t, TCP, nil)
		syn := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 100, opts: []layers.TCPOption{mssOpt(c.client)}, srcMAC: macClient})
		if v := r.b.Process(ClientSide, syn); v != Forward {
			t.Fatal(v)
		}
		d := decode(t, syn)
		if got := binary.BigEndian.Uint16(d.tcp.Options[0].OptionData); got != c.wantClient {
			t.Fatalf("client MSS %d became %d, want %d", c.client, got, c.wantClient)
		}
		lport, _ := ports64(d)
		sa := frame(t, pktSpec{src: addr4(d.ip.DstIP), dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: 7000, ackNum: d.tcp.Seq + 1, opts: []layers.TCPOption{mssOpt(c.server)}, srcMAC: macGateway})
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

// setDF sets an IPv4 frame's don't-fragment flag.
func setDF(f *Frame) {
	b := f.Bytes()
	b[14+6] |= 0x40
	fixIPChecksum(b)
}

// TestNAT64ClientMTU: a server packet is 20 bytes longer once translated
// to IPv6, and no IPv6 hop fragments it: one that would pass the client
// side's MTU is dropped and counted (nat64_too_big), and with DF answered
// by a fragmentation needed to the server quoting what it sent, with the
// next-hop MTU that fits; what fits is forwarded no longer than the MTU.
// The client's MSS is clamped by the client side's MTU, not the server's.
func TestNAT64ClientMTU(t *testing.T) {
	for _, mtu := range []int{1500, 1400} {
		r := newRig64(t, TCP, func(c *Config) { c.ClientMTU = mtu; c.ServerMTU = 9000 })
		ru := newRig64(t, UDP, func(c *Config) { c.ClientMTU = mtu; c.ServerMTU = 9000 })
		rip, lport := open64(t, r, TCP, 40000, 100)
		urip, ulport := open64(t, ru, UDP, 40000, 0)
		tooBig := func(rr *rig) uint64 { return rr.b.Stats.Drops()["nat64_too_big"] }

		// The client's SYN MSS: its segments from the server, 60 bytes of
		// headers once translated, fit the client side.
		syn := frame(t, pktSpec{src: client6, dst: vip64, sport: 41000, dport: 80, proto: TCP, syn: true, seq: 100, opts: []layers.TCPOption{mssOpt(8960)}, srcMAC: macClient})
		if v := r.b.Process(ClientSide, syn); v != Forward {
			t.Fatal(v)
		}
		if got := binary.BigEndian.Uint16(decode(t, syn).tcp.Options[0].OptionData); int(got) != mtu-60 {
			t.Fatalf("MTU %d: client MSS clamped to %d, want %d", mtu, got, mtu-60)
		}

		// What fits: IPv4 MTU - 20 bytes, IPv6 MTU bytes.
		for _, c := range []struct {
			rr      *rig
			proto   Protocol
			rip     netip.Addr
			lport   uint16
			l4Hdr   int
			payload int
		}{{r, TCP, rip, lport, 20, mtu - 20 - 20 - 20}, {ru, UDP, urip, ulport, 8, mtu - 20 - 20 - 8}} {
			f := frame(t, pktSpec{src: c.rip, dst: lip1, sport: 8080, dport: c.lport, proto: c.proto, ack: true, seq: 7000, payload: make([]byte, c.payload), srcMAC: macGateway})
			setDF(f)
			if v := c.rr.b.Process(ServerSide, f); v != Forward {
				t.Fatalf("MTU %d %v: %d bytes of IPv4: %v %v", mtu, c.proto, f.Len-14, v, nonZero(c.rr.b.Stats.Drops()))
			}
			d := decode(t, f)
			check6(t, d, 0, 64, 40000)
			if n := f.Len - 14; n != mtu || int(d.ip6.Length)+40 != n {
				t.Fatalf("MTU %d %v: translated to %d bytes of IPv6 (payload length %d), want %d", mtu, c.proto, n, d.ip6.Length, mtu)
			}
		}
		if tooBig(r)+tooBig(ru) != 0 {
			t.Fatalf("MTU %d: packets that fit counted too big", mtu)
		}

		// One byte more, with DF: a fragmentation needed back to the
		// server, from the LIP, quoting its header and first 8 bytes.
		for _, c := range []struct {
			rr    *rig
			proto Protocol
			rip   netip.Addr
			lport uint16
			l4Hdr int
		}{{r, TCP, rip, lport, 20}, {ru, UDP, urip, ulport, 8}} {
			f := frame(t, pktSpec{src: c.rip, dst: lip1, sport: 8080, dport: c.lport, proto: c.proto, ack: true, seq: 7000, payload: make([]byte, mtu-20-20-c.l4Hdr+1), srcMAC: macGateway})
			setDF(f)
			sent := append([]byte(nil), f.Bytes()[14:14+20+8]...)
			if v := c.rr.b.Process(ServerSide, f); v != Reply {
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
			if [6]byte(eth.DstMAC) != macGateway || [6]byte(eth.SrcMAC) != macServerNIC {
				t.Fatalf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
			}
			if addr4(ip.SrcIP) != lip1 || addr4(ip.DstIP) != c.rip || ip.Protocol != layers.IPProtocolICMPv4 || int(ip.Length) != 20+8+28 || f.Len != 14+20+8+28 {
				t.Fatalf("IPv4 %v -> %v proto %v length %d, frame %d", ip.SrcIP, ip.DstIP, ip.Protocol, ip.Length, f.Len)
			}
			if c := csum.Checksum(f.Bytes()[14:34], 0); c != 0 {
				t.Fatal("IPv4 header checksum")
			}
			if c := csum.Checksum(f.Bytes()[34:], 0); c != 0 {
				t.Fatal("ICMP checksum")
			}
			if ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || ic.Id != 0 || int(ic.Seq) != mtu-20 {
				t.Fatalf("MTU %d: %v, next-hop MTU %d (unused %d), want fragmentation needed with %d", mtu, ic.TypeCode, ic.Seq, ic.Id, mtu-20)
			}
			if !bytes.Equal(ic.Payload, sent) {
				t.Fatalf("MTU %d %v: quote\n%x\nwant what the server sent\n%x", mtu, c.proto, ic.Payload, sent)
			}
			if f.VNet != nil && f.VNet.GSOType() != 0 {
				t.Fatal("virtio-net header left on the answer")
			}
		}

		// Without DF: cut into IPv6 fragments no longer than the client
		// side's MTU (RFC 7915 4.1), nothing dropped.
		var out []sent
		body := payload(mtu - 20 - 20 - 8 + 1)
		f := frame(t, pktSpec{src: urip, dst: lip1, sport: 8080, dport: ulport, proto: UDP, payload: body, srcMAC: macGateway})
		if v := emit(ru.b, &out, ServerSide, f); v != Forward || tooBig(ru) != 1 || len(out) != 2 || largest(out) > mtu || out[0].side != ClientSide {
			t.Fatalf("MTU %d: too big without DF: %v, nat64_too_big %d, %d fragments, the largest %d bytes", mtu, v, tooBig(ru), len(out), largest(out))
		}
		if d := decode(t, joined(t, out, ClientSide, mtu)); d.ip6 == nil || addr6(d.ip6.SrcIP) != vip64 || addr6(d.ip6.DstIP) != client6 || !bytes.Equal(d.udp.Payload, body) {
			t.Fatalf("MTU %d: the fragments make %+v", mtu, d.ip6)
		}
		// A UDP super-frame (UFO) cannot be cut here: dropped, counted.
		sf := frame(t, pktSpec{src: urip, dst: lip1, sport: 8080, dport: ulport, proto: UDP, payload: body, srcMAC: macGateway})
		inVNet(sf).SetGSO(tun.VNetGSOUDP, 34+8, uint16(mtu-20-20-8))
		if v := ru.b.Process(ServerSide, sf); v != Drop || ru.b.Stats.Drops()["nat64_untranslatable"] != 1 || tooBig(ru) != 1 {
			t.Fatalf("MTU %d: a UDP super-frame too big: %v, drops %v", mtu, v, nonZero(ru.b.Stats.Drops()))
		}

		// A TSO super-frame is checked by its segments: of gso_size
		// MTU - 60 they fit, of one byte more not.
		for _, size := range []int{mtu - 60, mtu - 59} {
			back := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 7000, payload: make([]byte, 4000), srcMAC: macGateway})
			setDF(back)
			b := back.Bytes()
			binary.BigEndian.PutUint16(b[34+16:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], wire.ProtoTCP, len(b)-34)))
			v := inVNet(back)
			v.SetNeedsCsum(34, 16)
			v.SetGSO(tun.VNetGSOTCPv4, 34+20, uint16(size))
			before := tooBig(r)
			vd := r.b.Process(ServerSide, back)
			if size == mtu-60 && (vd != Forward || tooBig(r) != before || 40+20+int(back.VNet.GSOSize()) > mtu) {
				t.Fatalf("MTU %d: segments of %d bytes: %v, nat64_too_big %d", mtu, size, vd, tooBig(r)-before)
			}
			if size == mtu-59 && (vd != Reply || tooBig(r) != before+1) {
				t.Fatalf("MTU %d: segments of %d bytes: %v, nat64_too_big %d", mtu, size, vd, tooBig(r)-before)
			}
		}
	}
}

// icmp4Err builds an ICMPv4 error from src to LIP with rest as its second
// 32-bit word (a fragmentation needed's MTU in the low 16 bits).
func icmp4Err(t testing.TB, src netip.Addr, typ, code uint8, rest uint32, quoted []byte) *Frame {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(macGateway[:]), DstMAC: net.HardwareAddr(macServerNIC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 61, TOS: 0xc0, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: lip1.AsSlice()}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: uint16(rest >> 16), Seq: uint16(rest)}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, ic, gopacket.Payload(quoted)); err != nil {
		t.Fatal(err)
	}
	return withHeadroom(buf.Bytes())
}

// TestNAT64ICMPFromServer: an ICMPv4 error about a client segment (as the
// server side saw it: LIP4 -> RIP4) reaches the client as an ICMPv6 error
// from the VIP about the segment it sent, quoted byte for byte as it sent
// it (addresses, ports, sequence number, checksum), no longer than 1280
// bytes.
func TestNAT64ICMPFromServer(t *testing.T) {
	const cISN = 5000
	for _, c := range []struct {
		name       string
		typ, code  uint8
		rest       uint32
		t6, c6     uint8
		field      uint32
		quoteWhole bool
	}{
		{"port unreachable", 3, 3, 0, 1, 4, 0, false},
		{"host unreachable", 3, 1, 0, 1, 0, 0, false},
		{"net unreachable", 3, 0, 0, 1, 0, 0, false},
		{"admin prohibited", 3, 13, 0, 1, 1, 0, false},
		{"host prohibited", 3, 10, 0, 1, 1, 0, false},
		{"protocol unreachable", 3, 2, 0, 4, 1, 6, false},
		{"fragmentation needed", 3, 4, 1400, 2, 0, 1420, true},
		{"fragmentation needed, small MTU", 3, 4, 576, 2, 0, 1280, false},
		{"fragmentation needed, no MTU", 3, 4, 0, 2, 0, 1280, false},
		{"TTL exceeded", 11, 0, 0, 3, 0, 0, true},
		{"reassembly time exceeded", 11, 1, 0, 3, 1, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig64(t, TCP, nil)
			open64(t, r, TCP, 40000, cISN)
			seg := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: TCP, ack: true, seq: cISN + 1, payload: make([]byte, 1400), srcMAC: macClient})
			for i := range 1400 {
				seg.Bytes()[74+i] = byte(i)
			}
			sent := append([]byte(nil), seg.Bytes()[14:]...) // the client's IPv6 packet
			if v := r.b.Process(ClientSide, seg); v != Forward {
				t.Fatal(v)
			}
			out := seg.Bytes()[14:] // LIP4 -> RIP4, as the server side saw it
			quoted := out[:20+8]
			if c.quoteWhole {
				quoted = out // a router that quotes it all: cut to fit 1280
			}
			e := icmp4Err(t, netip.MustParseAddr("172.25.84.1"), c.typ, c.code, c.rest, quoted)
			if v := r.b.Process(ServerSide, e); v != Forward {
				t.Fatalf("verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
			}
			d := decode(t, e) // the ICMPv6 checksum from scratch, the payload length
			if addr6(d.ip6.SrcIP) != vip64 || addr6(d.ip6.DstIP) != client6 || d.ip6.HopLimit != 61 || d.ip6.TrafficClass != 0xc0 || d.ip6.NextHeader != layers.IPProtocolICMPv6 {
				t.Fatalf("outer IPv6 %+v", d.ip6)
			}
			if [6]byte(d.eth.DstMAC) != macClient || [6]byte(d.eth.SrcMAC) != macClientNIC {
				t.Fatalf("MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
			}
			if n := len(e.Bytes()) - 14; n > 1280 {
				t.Fatalf("ICMPv6 error of %d bytes of IPv6", n)
			}
			msg := e.Bytes()[54:]
			if msg[0] != c.t6 || msg[1] != c.c6 || binary.BigEndian.Uint32(msg[4:]) != c.field {
				t.Fatalf("ICMPv6 type %d code %d field %d, want %d %d %d", msg[0], msg[1], binary.BigEndian.Uint32(msg[4:]), c.t6, c.c6, c.field)
			}
			q := msg[8:]
			want := sent[:len(q)]
			if c.quoteWhole && len(q) != 1280-48 {
				t.Fatalf("quote of %d bytes, want it cut to %d", len(q), 1280-48)
			}
			if !bytes.Equal(q, want) {
				t.Fatalf("quoted packet is not the client's:\n got % x\nwant % x", q[:min(len(q), 64)], want[:min(len(q), 64)])
			}
		})
	}
	for _, c := range []struct {
		name      string
		typ, code uint8
	}{
		{"parameter problem", 12, 0},
		{"precedence violation", 3, 14},
		{"precedence cutoff", 3, 15},
	} {
		r := newRig64(t, TCP, nil)
		open64(t, r, TCP, 40000, cISN)
		seg := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: TCP, ack: true, seq: cISN + 1, payload: []byte("x"), srcMAC: macClient})
		r.b.Process(ClientSide, seg)
		e := icmp4Err(t, rs1, c.typ, c.code, 0, seg.Bytes()[14:])
		if v := r.b.Process(ServerSide, e); v != Drop || r.b.Stats.Drops()["icmp_untranslatable"] != 1 {
			t.Fatalf("%s: %v, drops %v", c.name, v, nonZero(r.b.Stats.Drops()))
		}
	}
}

// TestNAT64ICMPFromClient: an ICMPv6 error from the client about a server
// segment (VIP6 -> client6) reaches the real server as an ICMPv4 error from
// the LIP about the segment it sent (RIP4 -> LIP4, its own ports, sequence
// number and checksum).
func TestNAT64ICMPFromClient(t *testing.T) {
	for _, c := range []struct {
		name      string
		typ, code uint8
		field     uint32
		t4, c4    uint8
		mtu       uint16
	}{
		{"packet too big", 2, 0, 1400, 3, 4, 1380},
		{"packet too big, jumbo", 2, 0, 9000, 3, 4, 1500},
		{"port unreachable", 1, 4, 0, 3, 3, 0},
		{"no route", 1, 0, 0, 3, 1, 0},
		{"address unreachable", 1, 3, 0, 3, 1, 0},
		{"admin prohibited", 1, 1, 0, 3, 10, 0},
		{"hop limit exceeded", 3, 0, 0, 11, 0, 0},
		{"unrecognized next header", 4, 1, 40, 3, 2, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig64(t, TCP, nil)
			rip, lport := open64(t, r, TCP, 40000, 100)
			back := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 9000, ackNum: 1, payload: []byte("server data"), srcMAC: macGateway})
			sent := append([]byte(nil), back.Bytes()[14:]...) // the server's IPv4 packet
			if v := r.b.Process(ServerSide, back); v != Forward {
				t.Fatal(v)
			}
			e := icmp6Error(t, client6, vip64, macClient, c.typ, c.code, c.field, back.Bytes()[14:])
			if v := r.b.Process(ClientSide, e); v != Forward {
				t.Fatalf("verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
			}
			raw := e.Bytes()
			pk := gopacket.NewPacket(raw, layers.LayerTypeEthernet, gopacket.Default)
			eth := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip, ok := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if !ok {
				t.Fatal("not IPv4")
			}
			if addr4(ip.SrcIP) != lip1 || addr4(ip.DstIP) != rip || ip.Protocol != layers.IPProtocolICMPv4 || ip.TTL != 64 || ip.IHL != 5 || int(ip.Length) != len(raw)-14 {
				t.Fatalf("outer IPv4 %+v", ip)
			}
			if [6]byte(eth.DstMAC) != macGateway || [6]byte(eth.SrcMAC) != macServerNIC {
				t.Fatalf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
			}
			if csum.Checksum(raw[14:34], 0) != 0 || csum.Checksum(raw[34:], 0) != 0 {
				t.Fatal("IPv4 header or ICMP checksum does not verify")
			}
			msg := raw[34:]
			if msg[0] != c.t4 || msg[1] != c.c4 || binary.BigEndian.Uint16(msg[4:]) != 0 || binary.BigEndian.Uint16(msg[6:]) != c.mtu {
				t.Fatalf("ICMP type %d code %d rest % x, want %d %d MTU %d", msg[0], msg[1], msg[4:8], c.t4, c.c4, c.mtu)
			}
			q := msg[8:]
			if csum.Checksum(q[:20], 0) != 0 {
				t.Fatal("quoted IPv4 header checksum does not verify")
			}
			// The server's packet, but for what the translation makes
			// anew (ID 0 and DF, and so the header checksum) and the ack
			// number, which the client's error quotes as the client saw it
			// (as FULLNAT's does); the transport checksum must verify over
			// what is quoted, whole here.
			want := append([]byte(nil), sent...)
			binary.BigEndian.PutUint32(want[4:], wire.IPv4DF)
			want[10], want[11] = q[10], q[11]
			want[20+8], want[20+9], want[20+10], want[20+11] = q[20+8], q[20+9], q[20+10], q[20+11]
			want[20+16], want[20+17] = q[20+16], q[20+17]
			if !bytes.Equal(q, want) {
				t.Fatalf("quoted packet is not the server's:\n got % x\nwant % x", q, want)
			}
			if c := csum.Checksum(q[20:], csum.PseudoV4(q[12:16], q[16:20], wire.ProtoTCP, len(q)-20)); c != 0 {
				t.Fatalf("quoted TCP checksum does not verify (residue %#04x)", c)
			}
		})
	}
	r := newRig64(t, TCP, nil)
	rip, lport := open64(t, r, TCP, 40000, 100)
	back := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, payload: []byte("abc"), srcMAC: macGateway})
	r.b.Process(ServerSide, back)
	// A quote with an extension header: the quoted IPv4 packet's length
	// leaves it out, as the translation of the packet itself would.
	e := icmp6Error(t, client6, vip64, macClient, wire.ICMP6Unreach, 4, 0, withExt6(t, back, wire.IP6DestOpts, []byte{1, 4, 0, 0, 0, 0}).Bytes()[14:])
	if v := r.b.Process(ClientSide, e); v != Forward {
		t.Fatalf("quote with a header: %v %v", v, nonZero(r.b.Stats.Drops()))
	}
	if q := e.Bytes()[34+8:]; binary.BigEndian.Uint16(q[2:]) != 20+20+3 || len(q) != 20+20+3 || csum.Checksum(q[:20], 0) != 0 {
		t.Fatalf("quoted IPv4 length %d, quote %d bytes", binary.BigEndian.Uint16(q[2:]), len(q))
	}
	for _, c := range [][2]uint8{{4, 0}, {4, 2}, {1, 5}} {
		e := icmp6Error(t, client6, vip64, macClient, c[0], c[1], 0, back.Bytes()[14:])
		if v := r.b.Process(ClientSide, e); v != Drop {
			t.Fatalf("ICMPv6 %d/%d: %v", c[0], c[1], v)
		}
	}
	if n := r.b.Stats.Drops()["icmp_untranslatable"]; n != 3 {
		t.Fatalf("drops %v", nonZero(r.b.Stats.Drops()))
	}
}

// TestNAT64ICMPv4FromClient: an ICMPv4 error from the client side (to
// another service's IPv4 VIP) that quotes a NAT64 connection's server-side
// tuple is about nothing the client was sent: dropped.
func TestNAT64ICMPv4FromClient(t *testing.T) {
	r := newRig64(t, TCP, nil)
	if _, err := r.b.AddService(ServiceConfig{Addr: vip, Port: 80, Protocol: TCP, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	open64(t, r, TCP, 40000, 100)
	seg := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 101, srcMAC: macClient})
	if v := r.b.Process(ClientSide, seg); v != Forward {
		t.Fatal(v)
	}
	e := icmpFrame(t, client, vip, 3, 3, seg.Bytes()[14:])
	if v := r.b.Process(ClientSide, e); v != Drop || r.b.Stats.Drops()["icmp_no_conn"] != 1 {
		t.Fatalf("%v %v", v, nonZero(r.b.Stats.Drops()))
	}
}

// TestNAT64Rules: a service's server side is one family, the VIP's or the
// other (NAT64, NAT46), and a second family is refused, naming the address
// and why; NAT64 with SYNPROXY, TOA, PROXY v1 or v2 is accepted whichever
// comes second.
func TestNAT64Rules(t *testing.T) {
	cfg := Config{MaxConns: 10, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts(),
		ClientNet: netip.MustParsePrefix("172.25.254.254/24"), ServerNet: netip.MustParsePrefix("172.25.84.4/24"),
		ClientNet6: netip.MustParsePrefix("fd00:25:254::fe/64"), ServerNet6: netip.MustParsePrefix("fd00:25:84::4/64")}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s64, err := b.AddService(ServiceConfig{Addr: vip64, Port: 80, Protocol: TCP, Scheduler: "rr"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(func(tx *Tx) error {
		if _, err := tx.AddLocalAddr(s64, lip1); err != nil {
			return err
		}
		_, err := tx.AddDest(s64, rs1, 8080, 1)
		return err
	}); err != nil {
		t.Fatalf("NAT64 service refused: %v", err)
	}
	sSP, err := b.AddService(ServiceConfig{Addr: vip64, Port: 443, Protocol: TCP, Scheduler: "rr", Synproxy: true})
	if err != nil {
		t.Fatal(err)
	}
	s46, err := b.AddService(ServiceConfig{Addr: vip, Port: 80, Protocol: TCP, Scheduler: "rr"})
	if err != nil {
		t.Fatal(err)
	}
	// NAT46: IPv6 LIPs and real servers behind an IPv4 VIP.
	if err := b.Update(func(tx *Tx) error {
		if _, err := tx.AddLocalAddr(s46, lip6); err != nil {
			return err
		}
		_, err := tx.AddDest(s46, rs6a, 80, 1)
		return err
	}); err != nil {
		t.Fatalf("NAT46 service refused: %v", err)
	}
	for _, c := range []struct {
		name string
		do   func() error
		want string
	}{
		{"v6 RS on a NAT64 service", func() error {
			return b.Update(func(tx *Tx) error { _, err := tx.AddDest(s64, rs6a, 80, 1); return err })
		}, "real server [fd00:20:1::2]:80 is IPv6 but service TCP [fd00:25:254::64]:80's server side is IPv4 (172.25.84.10)"},
		{"v6 LIP on a NAT64 service", func() error {
			return b.Update(func(tx *Tx) error { _, err := tx.AddLocalAddr(s64, lip6); return err })
		}, "local address fd00:25:84::10 is IPv6 but service"},
		{"v6 RS in a Tx", func() error {
			return b.Update(func(tx *Tx) error { _, err := tx.AddDest(s64, rs6a, 80, 1); return err })
		}, "one family"},
		{"v4 RS on a NAT46 service", func() error {
			return b.Update(func(tx *Tx) error { _, err := tx.AddDest(s46, rs1, 80, 1); return err })
		}, "real server 10.20.1.2:80 is IPv4 but service TCP 172.25.254.100:80's server side is IPv6 (fd00:25:84::10): its local addresses and real servers are one family"},
		{"v4 LIP on a NAT46 service", func() error { _, err := b.AddLocalAddr(s46, lip1); return err }, "local address 172.25.84.10 is IPv4 but service TCP 172.25.254.100:80's server side is IPv6"},
		{"v4 LIP outside the server subnet", func() error {
			return b.Update(func(tx *Tx) error { _, err := tx.AddLocalAddr(s64, netip.MustParseAddr("172.25.99.10")); return err })
		}, "not in the server side's subnet 172.25.84.0/24"},
	} {
		err := c.do()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// SYNPROXY with TOA, PROXY v1 or v2 on a NAT64 service, either coming
	// second: accepted.
	for _, m := range []ClientAddr{ClientAddrTOA, ClientAddrProxyV1, ClientAddrProxyV2} {
		if err := b.Update(func(tx *Tx) error {
			if err := tx.SetSynproxy(s64, true); err != nil {
				return err
			}
			return tx.SetClientAddr(s64, m)
		}); err != nil {
			t.Fatalf("synproxy and %v on a NAT64 service: %v", m, err)
		}
	}
	for i, m := range []ClientAddr{ClientAddrTOA, ClientAddrProxyV1} {
		s, err := b.AddService(ServiceConfig{Addr: vip64, Port: uint16(444 + i), Protocol: TCP, Scheduler: "rr", ClientAddr: m})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.AddLocalAddr(s, lip1); err != nil {
			t.Fatalf("an IPv4 LIP on a %v service: %v", m, err)
		}
	}
	if _, err := b.AddLocalAddr(sSP, lip1); err != nil {
		t.Fatalf("an IPv4 LIP on a synproxy service: %v", err)
	}
}

// established64 opens one NAT64 connection on r and returns a client frame
// and a server frame of it.
func established64(t testing.TB, r *rig, proto Protocol) (in, back *Frame) {
	t.Helper()
	rip, lport := open64(t, r, proto, 40000, 0)
	in = frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: proto, ack: true, payload: make([]byte, 1400), srcMAC: macClient})
	back = frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: proto, ack: true, payload: make([]byte, 1400), srcMAC: macGateway})
	return in, back
}

// TestNAT64NoAllocs: the translation allocates nothing per packet.
func TestNAT64NoAllocs(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		r := newRig64(t, proto, nil)
		in, back := established64(t, r, proto)
		if allocs := pairAllocs(t, r, in, back); allocs != 0 {
			t.Fatalf("%v: %v allocations per packet pair", proto, allocs)
		}
	}
}

// BenchmarkForwardNAT64 is BenchmarkForwardFamily's one connection
// translated (ns/op is per packet, both directions in turn).
func BenchmarkForwardNAT64(b *testing.B) {
	for _, proto := range []Protocol{TCP, UDP} {
		b.Run(proto.String(), func(b *testing.B) {
			r := newRig64(b, proto, nil)
			in, back := established64(b, r, proto)
			benchPair(b, r, in, back, 14+40+20, 14+20+20)
		})
	}
}

// FuzzProcess64 sends any frame through a balancer with a NAT64 TCP or
// UDP service (with TOA, PROXY v1 or v2 where the protocol carries it:
// ctl's bits 2-3), one connection open, from either side. Nothing may panic; a
// forwarded frame must parse as the family of the side it leaves by, with
// its IPv4 header checksum right, and its transport (or ICMP) checksum
// right when the input's was (the translation adjusts it incrementally).
func FuzzProcess64(f *testing.F) {
	seeds := [][]byte{}
	add := func(fr *Frame) { seeds = append(seeds, append([]byte(nil), fr.Bytes()...)) }
	for _, proto := range []Protocol{TCP, UDP} {
		r := newRig64(f, proto, nil)
		in, back := established64(f, r, proto)
		add(in)
		add(back)
		// A server packet too big for the client side once translated,
		// with DF: answered by a fragmentation needed.
		d := decode(f, back)
		sport, dport := ports64(d)
		big := frame(f, pktSpec{src: addr4(d.ip.SrcIP), dst: lip1, sport: sport, dport: dport, proto: proto, ack: true, seq: 7000, payload: make([]byte, 1461), srcMAC: macGateway})
		setDF(big)
		add(big)
		if r.b.Process(ClientSide, in) == Forward {
			add(icmp4Err(f, rs1, 3, 4, 1400, in.Bytes()[14:]))
		}
		if r.b.Process(ServerSide, back) == Forward {
			add(icmp6Error(f, client6, vip64, macClient, wire.ICMP6TooBig, 0, 1400, back.Bytes()[14:]))
		}
	}
	syn := frame(f, pktSpec{src: client6, dst: vip64, sport: 40001, dport: 80, proto: TCP, syn: true, opts: []layers.TCPOption{mssOpt(9000)}, payload: []byte("x"), srcMAC: macClient})
	add(syn)
	add(withExt6(f, syn, wire.IP6HopByHop, []byte{1, 4, 0, 0, 0, 0}))
	for _, s := range seeds {
		for ctl := range uint8(16) {
			f.Add(ctl, s)
		}
	}
	f.Fuzz(check64)
}

// check64 is FuzzProcess64's check of one frame.
func check64(t *testing.T, ctl uint8, raw []byte) {
	proto := TCP
	if ctl&2 != 0 {
		proto = UDP
	}
	r := newRig64(t, proto, nil)
	// Bits 2-3: the service's client address mode (issue #27: TOA and
	// PROXY headers on NAT64), what the protocol can carry.
	if mode := ClientAddr(ctl >> 2 & 3); mode.check(proto) == nil {
		if err := r.b.Update(func(tx *Tx) error { return tx.SetClientAddr(r.svc, mode) }); err != nil {
			t.Fatal(err)
		}
	}
	established64(t, r, proto)
	side := Side(ctl & 1)
	var verified bool
	if side == ClientSide {
		verified = l4Verifies6(raw)
	} else {
		verified, _ = l4Verifies(raw)
	}
	fr := withHeadroom(raw)
	v := r.b.Process(side, fr)
	if v == Reply && side == ServerSide {
		// A fragmentation needed to the server: IPv4, ICMP, checksums
		// right, the quote a header and 8 bytes.
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
	if side == ClientSide {
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
	// A UDP datagram without a checksum gets one: it verifies whatever came in.
	if (verified || udpNoChecksum(raw)) && !l4Verifies6(out) {
		t.Fatalf("a checksum that verified in does not out:\nin  % x\nout % x", raw, out)
	}
}

// udpNoChecksum reports an IPv4 UDP frame with checksum 0.
func udpNoChecksum(b []byte) bool {
	if len(b) < 34 || binary.BigEndian.Uint16(b[12:]) != wire.EtherIPv4 || b[14+9] != wire.ProtoUDP {
		return false
	}
	ihl := int(b[14]&0xf) * 4
	return len(b) >= 14+ihl+8 && binary.BigEndian.Uint16(b[14+ihl+6:]) == 0
}

// TestNAT64ICMPUDP: a port unreachable about a UDP datagram, both ways:
// the quoted datagram, whole, is the one its receiver's peer sent, and its
// checksum verifies.
func TestNAT64ICMPUDP(t *testing.T) {
	r := newRig64(t, UDP, nil)
	rip, lport := open64(t, r, UDP, 40000, 0)
	dg := frame(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: UDP, payload: []byte("query"), srcMAC: macClient})
	sent := append([]byte(nil), dg.Bytes()[14:]...)
	if v := r.b.Process(ClientSide, dg); v != Forward {
		t.Fatal(v)
	}
	e := icmp4Err(t, rip, 3, 3, 0, dg.Bytes()[14:14+20+8+5])
	if v := r.b.Process(ServerSide, e); v != Forward {
		t.Fatalf("%v %v", v, nonZero(r.b.Stats.Drops()))
	}
	decode(t, e)
	msg := e.Bytes()[54:]
	if msg[0] != 1 || msg[1] != 4 || !bytes.Equal(msg[8:], sent) {
		t.Fatalf("ICMPv6 %d/%d quoting\n% x\nwant\n% x", msg[0], msg[1], msg[8:], sent)
	}

	back := frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: UDP, payload: []byte("answer"), srcMAC: macGateway})
	if v := r.b.Process(ServerSide, back); v != Forward {
		t.Fatal(v)
	}
	e = icmp6Error(t, client6, vip64, macClient, wire.ICMP6Unreach, 4, 0, back.Bytes()[14:])
	if v := r.b.Process(ClientSide, e); v != Forward {
		t.Fatalf("%v %v", v, nonZero(r.b.Stats.Drops()))
	}
	q := e.Bytes()[34+8:]
	if e.Bytes()[34] != 3 || e.Bytes()[35] != 3 || binary.BigEndian.Uint16(q[20:]) != 8080 || binary.BigEndian.Uint16(q[22:]) != lport ||
		csum.Checksum(q[20:], csum.PseudoV4(q[12:16], q[16:20], wire.ProtoUDP, len(q)-20)) != 0 || addr4(q[12:16]) != rip || addr4(q[16:20]) != lip1 {
		t.Fatalf("ICMPv4 %d/%d quoting % x", e.Bytes()[34], e.Bytes()[35], q)
	}
}
