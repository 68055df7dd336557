package nat

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tapvs/tapvs/csum"
)

// icmp4FromClient builds an ICMPv4 error from the client to the VIP.
func icmp4FromClient(t testing.TB, typ, code uint8, rest uint32, quoted []byte) *Frame {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(macClient[:]), DstMAC: net.HardwareAddr(macClientNIC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 61, TOS: 0xc0, Protocol: layers.IPProtocolICMPv4, SrcIP: client.AsSlice(), DstIP: vip.AsSlice()}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: uint16(rest >> 16), Seq: uint16(rest)}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, ic, gopacket.Payload(quoted)); err != nil {
		t.Fatal(err)
	}
	return withHeadroom(buf.Bytes())
}

// TestNAT46ICMPFromServer: an ICMPv6 error about a client segment (as the
// server side saw it: LIP6 -> RIP6) reaches the client as an ICMPv4 error
// from the VIP about the segment it sent (client4 -> VIP4, its own ports,
// sequence number and checksum); a Packet Too Big becomes a fragmentation
// needed 20 bytes smaller.
func TestNAT46ICMPFromServer(t *testing.T) {
	const cISN = 5000
	for _, c := range []struct {
		name      string
		typ, code uint8
		field     uint32
		t4, c4    uint8
		mtu       uint16
		clientMTU int // the client side's, if not 1500
	}{
		{"port unreachable", 1, 4, 0, 3, 3, 0, 0},
		{"no route", 1, 0, 0, 3, 1, 0, 0},
		{"admin prohibited", 1, 1, 0, 3, 10, 0, 0},
		{"packet too big", 2, 0, 1400, 3, 4, 1380, 0},
		// No larger than the client side's own MTU, which the client's
		// packets cross first.
		{"packet too big past the client side's MTU", 2, 0, 1400, 3, 4, 1200, 1200},
		{"hop limit exceeded", 3, 0, 0, 11, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig46(t, TCP, func(cfg *Config) {
				if c.clientMTU != 0 {
					cfg.ClientMTU = c.clientMTU
				}
			})
			rip, _ := open46(t, r, TCP, 40000, cISN)
			seg := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: cISN + 1, payload: make([]byte, 1000), srcMAC: macClient})
			setDF(seg)
			sent := append([]byte(nil), seg.Bytes()[14:]...) // the client's IPv4 packet
			if v := r.b.Process(ClientSide, seg); v != Forward {
				t.Fatal(v)
			}
			out := seg.Bytes()[14:] // LIP6 -> RIP6, as the server side saw it
			e := icmp6Error(t, rip, lip6, macGateway, c.typ, c.code, c.field, out[:40+8])
			if v := r.b.Process(ServerSide, e); v != Forward {
				t.Fatalf("verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
			}
			pk := gopacket.NewPacket(e.Bytes(), layers.LayerTypeEthernet, gopacket.Default)
			eth, _ := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			ic, _ := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if eth == nil || ip == nil || ic == nil {
				t.Fatalf("not ICMPv4: %v", pk)
			}
			if addr4(ip.SrcIP) != vip || addr4(ip.DstIP) != client || ip.TTL != 64 {
				t.Fatalf("outer IPv4 %+v", ip)
			}
			if [6]byte(eth.DstMAC) != macClient || [6]byte(eth.SrcMAC) != macClientNIC {
				t.Fatalf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
			}
			if csum.Checksum(e.Bytes()[14:34], 0) != 0 || csum.Checksum(e.Bytes()[34:], 0) != 0 {
				t.Fatal("IPv4 or ICMP checksum")
			}
			if ic.TypeCode != layers.CreateICMPv4TypeCode(c.t4, c.c4) || ic.Seq != c.mtu {
				t.Fatalf("%v MTU %d, want %d/%d MTU %d", ic.TypeCode, ic.Seq, c.t4, c.c4, c.mtu)
			}
			// The quote: the client's IPv4 header as it sent it but for
			// ID, checksum and TTL (RFC 7915 5.1 leaves ID 0) and its
			// first 8 bytes of TCP (ports, sequence number) byte for byte.
			q := ic.Payload
			if len(q) != 20+8 || !bytes.Equal(q[20:28], sent[20:28]) || !bytes.Equal(q[12:20], sent[12:20]) || q[9] != 6 ||
				binary.BigEndian.Uint16(q[2:]) != uint16(len(sent)) || csum.Checksum(q[:20], 0) != 0 {
				t.Fatalf("quote\n% x\nwant the client's\n% x", q, sent[:28])
			}
		})
	}
	// An ICMPv4 error from the server side (an IPv6 side) about the
	// client's tuple, to an IPv4 LIP of another service: not a packet it
	// was sent.
	r := newRig46(t, TCP, nil)
	open46(t, r, TCP, 40000, cISN)
	s4, err := r.b.AddService(ServiceConfig{Addr: vip, Port: 81, Protocol: TCP, Scheduler: "rr"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.b.AddLocalAddr(s4, lip1); err != nil {
		t.Fatal(err)
	}
	q := frame(t, pktSpec{src: vip, dst: client, sport: 80, dport: 40000, proto: TCP, ack: true, seq: 7001, srcMAC: macGateway}).Bytes()[14 : 14+28]
	if v := r.b.Process(ServerSide, icmp4Err(t, rs1, 3, 3, 0, q)); v != Drop || r.b.Stats.Drops()["icmp_no_conn"] != 1 {
		t.Fatalf("ICMPv4 from the server side: %v %v", v, nonZero(r.b.Stats.Drops()))
	}
}

// TestNAT46ICMPFromClient: an ICMPv4 error from the client about a server
// segment (VIP4 -> client4) reaches the real server as an ICMPv6 error from
// the LIP about the segment it sent (RIP6 -> LIP6); a fragmentation needed
// becomes a Packet Too Big 20 bytes larger.
func TestNAT46ICMPFromClient(t *testing.T) {
	for _, c := range []struct {
		name      string
		typ, code uint8
		rest      uint32
		t6, c6    uint8
		field     uint32
	}{
		{"port unreachable", 3, 3, 0, 1, 4, 0},
		{"fragmentation needed", 3, 4, 1400, 2, 0, 1420},
		{"TTL exceeded", 11, 0, 0, 3, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig46(t, TCP, nil)
			rip, lport := open46(t, r, TCP, 40000, 100)
			back := frame(t, pktSpec{src: rip, dst: lip6, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 7001, ackNum: 101, payload: make([]byte, 100), srcMAC: macGateway})
			sent := append([]byte(nil), back.Bytes()[14:14+40+8]...) // the server's IPv6 packet
			if v := r.b.Process(ServerSide, back); v != Forward {
				t.Fatal(v)
			}
			e := icmp4FromClient(t, c.typ, c.code, c.rest, back.Bytes()[14:14+28])
			if v := r.b.Process(ClientSide, e); v != Forward {
				t.Fatalf("verdict %v, drops %v", v, nonZero(r.b.Stats.Drops()))
			}
			d := decode(t, e) // the ICMPv6 checksum from scratch
			if addr6(d.ip6.SrcIP) != lip6 || addr6(d.ip6.DstIP) != rip || d.ip6.HopLimit != 61 || d.ip6.TrafficClass != 0xc0 {
				t.Fatalf("outer IPv6 %+v", d.ip6)
			}
			if [6]byte(d.eth.DstMAC) != macGateway || [6]byte(d.eth.SrcMAC) != macServerNIC {
				t.Fatalf("MACs %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
			}
			msg := e.Bytes()[54:]
			if msg[0] != c.t6 || msg[1] != c.c6 || binary.BigEndian.Uint32(msg[4:]) != c.field {
				t.Fatalf("ICMPv6 %d/%d field %d, want %d/%d %d", msg[0], msg[1], binary.BigEndian.Uint32(msg[4:]), c.t6, c.c6, c.field)
			}
			q := msg[8:]
			// The quoted IPv6 header: the server's addresses, next header
			// and payload length; then its ports and sequence number.
			if len(q) != 48 || !bytes.Equal(q[4:6], sent[4:6]) || q[6] != 6 || !bytes.Equal(q[8:48], sent[8:48]) {
				t.Fatalf("quote\n% x\nwant the server's\n% x", q, sent)
			}
		})
	}
	// An ICMPv6 error from the client side (the IPv4 side) about the
	// server's tuple, to another service's IPv6 VIP: not a packet it was
	// sent.
	r := newRig46(t, TCP, nil)
	rip, lport := open46(t, r, TCP, 40000, 100)
	if _, err := r.b.AddService(ServiceConfig{Addr: vip6, Port: 80, Protocol: TCP, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	q := frame(t, pktSpec{src: lip6, dst: rip, sport: lport, dport: 8080, proto: TCP, ack: true, seq: 7001, srcMAC: macClient}).Bytes()[14 : 14+48]
	e := icmp6Error(t, client6, vip6, macClient, 1, 4, 0, q)
	if v := r.b.Process(ClientSide, e); v != Drop || r.b.Stats.Drops()["icmp_no_conn"] != 1 {
		t.Fatalf("ICMPv6 from the client side: %v %v", v, nonZero(r.b.Stats.Drops()))
	}
}
