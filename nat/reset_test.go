package nat

import (
	"net/netip"
	"testing"
	"time"
)

// expireAll moves the table's clock past every TCP timeout and sweeps.
func expireAll(t *testing.T, r *rig) {
	t.Helper()
	r.b.table.now.Add(int64(200 * time.Second))
	if n := r.b.Sweep(); n != 1 {
		t.Fatalf("swept %d connections, want 1", n)
	}
}

// wantRST checks a frame the balancer transmitted: an RST alone (no ACK, no
// payload) on side, between the given ends, with seq, its MACs those of
// tapvs's NIC and the next hop, its checksums verified from scratch.
func wantRST(t *testing.T, s sent, side Side, src, dst netip.AddrPort, seq uint32, srcMAC, dstMAC [6]byte) {
	t.Helper()
	d := decodeRaw(t, s.frame)
	if s.side != side || d.tcp == nil || !d.tcp.RST || d.tcp.ACK || d.tcp.SYN || d.tcp.FIN || len(d.tcp.Payload) != 0 {
		t.Fatalf("to the %v side, want an RST to the %v side: %+v", s.side, side, d.tcp)
	}
	gotSrc := netip.AddrPortFrom(addr(d.ip.SrcIP), uint16(d.tcp.SrcPort))
	gotDst := netip.AddrPortFrom(addr(d.ip.DstIP), uint16(d.tcp.DstPort))
	if gotSrc != src || gotDst != dst {
		t.Fatalf("RST to the %v side: %v -> %v, want %v -> %v", side, gotSrc, gotDst, src, dst)
	}
	if d.tcp.Seq != seq {
		t.Fatalf("RST to the %v side: seq %#x, want %#x (what the receiver acknowledged last)", side, d.tcp.Seq, seq)
	}
	if [6]byte(d.eth.SrcMAC) != srcMAC || [6]byte(d.eth.DstMAC) != dstMAC {
		t.Fatalf("RST to the %v side: MACs %v -> %v", side, d.eth.SrcMAC, d.eth.DstMAC)
	}
}

// fullnatConn opens a FULLNAT connection through r and exchanges data both
// ways; the server's numbers wrap past 2^32 on the way. It returns the
// client's and the server's next expected sequence numbers and the LIP's
// port.
func fullnatConn(t *testing.T, r *rig, cport uint16) (clientNext, serverNext uint32, lport uint16) {
	t.Helper()
	const cISN uint32 = 0x7ffffff0
	var sISN uint32 = 0xfffffff8
	c2s := func(s pktSpec) {
		t.Helper()
		s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client, vip, cport, 80, TCP, macClient
		f := frame(t, s)
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("client segment: %v %v", v, r.b.Stats.Drops())
		}
		lport = uint16(decode(t, f).tcp.SrcPort)
	}
	s2c := func(s pktSpec) {
		t.Helper()
		s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = rs1, lip1, 8080, lport, TCP, macGateway
		if v := r.b.Process(ServerSide, frame(t, s)); v != Forward {
			t.Fatalf("server segment: %v %v", v, r.b.Stats.Drops())
		}
	}
	c2s(pktSpec{syn: true, seq: cISN})
	s2c(pktSpec{syn: true, ack: true, seq: sISN, ackNum: cISN + 1})
	c2s(pktSpec{ack: true, seq: cISN + 1, ackNum: sISN + 1})
	c2s(pktSpec{ack: true, seq: cISN + 1, ackNum: sISN + 1, payload: make([]byte, 10)})
	s2c(pktSpec{ack: true, seq: sISN + 1, ackNum: cISN + 11, payload: make([]byte, 20)}) // wraps: sISN+21 is 13
	c2s(pktSpec{ack: true, seq: cISN + 11, ackNum: sISN + 21})
	// A reordered copy of an older segment comes late: its ack is behind.
	c2s(pktSpec{ack: true, seq: cISN + 1, ackNum: sISN + 1, payload: make([]byte, 10)})
	return sISN + 21, cISN + 11, lport
}

func TestExpiryResetsEstablished(t *testing.T) {
	out := new([]sent)
	r := newRig(t, TCP, "rr", nil)
	r.b.Attach(recordLink{out})
	r.setWeight(t, rs2, 8080, 0)
	clientNext, serverNext, lport := fullnatConn(t, r, 40000)
	if st := r.b.Table().Conns()[0].State; st != "ESTABLISHED" {
		t.Fatalf("state %s", st)
	}
	expireAll(t, r)
	if len(*out) != 2 {
		t.Fatalf("%d frames sent on expiry, want an RST each way", len(*out))
	}
	wantRST(t, (*out)[0], ClientSide, netip.AddrPortFrom(vip, 80), netip.AddrPortFrom(client, 40000), clientNext, macClientNIC, macClient)
	wantRST(t, (*out)[1], ServerSide, netip.AddrPortFrom(lip1, lport), netip.AddrPortFrom(rs1, 8080), serverNext, macServerNIC, macGateway)
	if n := r.b.Stats.ExpiredResets(); n != 2 {
		t.Fatalf("expired_resets %d, want 2", n)
	}
}

func TestExpiryClosingIsSilent(t *testing.T) {
	out := new([]sent)
	r := newRig(t, TCP, "rr", nil)
	r.b.Attach(recordLink{out})
	r.setWeight(t, rs2, 8080, 0)
	_, _, lport := fullnatConn(t, r, 40001)
	// Client FIN, server FIN: TIME_WAIT.
	fin := frame(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, fin: true, ack: true, seq: 0x7ffffff0 + 11, ackNum: 13, srcMAC: macClient})
	r.b.Process(ClientSide, fin)
	sfin := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, fin: true, ack: true, seq: 13, ackNum: 0x7ffffff0 + 12, srcMAC: macGateway})
	r.b.Process(ServerSide, sfin)
	if st := r.b.Table().Conns()[0].State; st != "TIME_WAIT" {
		t.Fatalf("state %s, want TIME_WAIT", st)
	}
	expireAll(t, r)
	if len(*out) != 0 || r.b.Stats.ExpiredResets() != 0 {
		t.Fatalf("%d frames sent when a TIME_WAIT connection expired, want none", len(*out))
	}
}

func TestExpiryResetsSynproxy(t *testing.T) {
	for _, data := range []bool{false, true} {
		r, out := synproxyRig(t)
		const cport = 43000
		cookie := openProxied(t, r, cport) // client ISN 5000
		lport := r.b.Table().Conns()[0].LIP.Port()
		const rsISN = 0x40000000
		rsa := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: 5001, srcMAC: macGateway})
		if v := r.b.Process(ServerSide, rsa); v != Release {
			t.Fatalf("server SYN-ACK: %v %v", v, r.b.Stats.Drops())
		}
		// The client's next is in the cookie's numbers, the server's in its own.
		clientNext, serverNext := cookie+1, uint32(5001)
		if data {
			c := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: 5001, ackNum: cookie + 1, payload: make([]byte, 30), srcMAC: macClient})
			if v := r.b.Process(ClientSide, c); v != Forward {
				t.Fatalf("client data: %v", v)
			}
			s := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: 5031, payload: make([]byte, 40), srcMAC: macGateway})
			if v := r.b.Process(ServerSide, s); v != Forward {
				t.Fatalf("server data: %v", v)
			}
			c = frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: 5031, ackNum: cookie + 41, srcMAC: macClient})
			if v := r.b.Process(ClientSide, c); v != Forward {
				t.Fatalf("client ACK: %v", v)
			}
			clientNext, serverNext = cookie+41, 5031
		}
		*out = nil
		expireAll(t, r)
		if len(*out) != 2 {
			t.Fatalf("data %v: %d frames sent on expiry, want an RST each way", data, len(*out))
		}
		wantRST(t, (*out)[0], ClientSide, netip.AddrPortFrom(vip, 80), netip.AddrPortFrom(client, cport), clientNext, macClientNIC, macClient)
		wantRST(t, (*out)[1], ServerSide, netip.AddrPortFrom(lip1, lport), netip.AddrPortFrom(rs1, 8080), serverNext, macServerNIC, macGateway)
	}
}

// The ack is recorded on the packet path: it must cost no allocation.
func TestNoteAckAllocs(t *testing.T) {
	var c Conn
	tcp := make([]byte, 20)
	n := uint32(0)
	if a := testing.AllocsPerRun(1000, func() {
		n++
		tcp[8], tcp[9], tcp[10], tcp[11] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
		c.noteAck(dirIn, tcp, 0x10)
	}); a != 0 {
		t.Fatalf("%v allocations per ack", a)
	}
}
