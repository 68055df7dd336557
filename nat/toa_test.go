package nat

import (
	"encoding/binary"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// toaRig is a one-server rig whose service adds TOA.
func toaRig(t testing.TB, synproxy bool) (*rig, *[]sent) {
	t.Helper()
	out := new([]sent)
	r := newRig(t, TCP, "rr", func(c *Config) { c.Synproxy = DefaultSynproxy() })
	r.b.Attach(recordLink{out})
	if err := r.b.Update(func(tx *Tx) error {
		if err := tx.SetSynproxy(r.svc, synproxy); err != nil {
			return err
		}
		return tx.SetClientAddr(r.svc, ClientAddrTOA)
	}); err != nil {
		t.Fatal(err)
	}
	r.setWeight(t, rs2, 8080, 0)
	return r, out
}

// toaOpts lists the kind-254 options of a decoded segment and whether the
// first option of the header is one of them.
func toaOpts(d decoded) (toas []layers.TCPOption, first bool) {
	for i, o := range d.tcp.Options {
		if o.OptionType == toaKind {
			toas = append(toas, o)
			first = first || i == 0
		}
	}
	return toas, first
}

// wantTOA checks that a segment to the server carries exactly one TOA
// option, first, with the client's port and address.
func wantTOA(t *testing.T, d decoded, cport uint16) {
	t.Helper()
	toas, first := toaOpts(d)
	if len(toas) != 1 || !first {
		t.Fatalf("TOA options %v (first %v) in %v, want one, first", toas, first, d.tcp.Options)
	}
	o := toas[0]
	if o.OptionLength != toaLen || len(o.OptionData) != 6 || binary.BigEndian.Uint16(o.OptionData) != cport || [4]byte(o.OptionData[2:]) != client.As4() {
		t.Fatalf("TOA %+v, want port %d address %v", o, cport, client)
	}
}

func wantNoTOA(t *testing.T, d decoded) {
	t.Helper()
	if toas, _ := toaOpts(d); len(toas) != 0 {
		t.Fatalf("TOA options %v, want none", toas)
	}
}

// inVNet gives a test frame a virtio-net header where a reader puts it:
// in the buffer, just before the frame, so Frame.open moves it along.
func inVNet(f *Frame) tun.VNetHdr {
	f.VNet = tun.VNetHdr(f.Buf[f.Off-tun.VNetHdrLen : f.Off])
	clear(f.VNet)
	return f.VNet
}

// makePartial turns a frame's TCP checksum into the pseudo-header sum a
// sending host leaves for offload (NEEDS_CSUM).
func makePartial(f *Frame) tun.VNetHdr {
	b := f.Bytes()
	l4 := b[34 : 14+int(binary.BigEndian.Uint16(b[16:]))]
	binary.BigEndian.PutUint16(l4[16:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], wire.ProtoTCP, len(l4))))
	v := inVNet(f)
	v.SetNeedsCsum(34, 16)
	return v
}

// finish completes a partial checksum as the kernel does, from the
// virtio-net header the frame left with.
func finish(t *testing.T, f *Frame) {
	t.Helper()
	if !f.VNet.NeedsCsum() || f.VNet.CsumStart() != 34 || f.VNet.CsumOffset() != 16 {
		t.Fatalf("virtio-net header %v: want NEEDS_CSUM at 34+16", f.VNet)
	}
	csum.Finish(f.Bytes()[34:], 16)
}

func mssOpt(mss uint16) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: binary.BigEndian.AppendUint16(nil, mss)}
}

// plainTOAConn opens a plain TOA connection up to the server's SYN-ACK,
// checking the SYN carries no TOA and the SYN-ACK's MSS is clamped (or
// left alone when it is small enough). It returns the local port.
func plainTOAConn(t *testing.T, r *rig, cport uint16, rsISN uint32, serverMSS, wantMSS uint16) uint16 {
	t.Helper()
	syn := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, syn: true, seq: 100, srcMAC: macClient, opts: synOpts(1460, 7, 1)})
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("SYN: %v %v", v, r.b.Stats.Drops())
	}
	d := decode(t, syn)
	wantNoTOA(t, d)
	lport := uint16(d.tcp.SrcPort)
	sa := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: d.tcp.Seq + 1, srcMAC: macGateway,
		opts: []layers.TCPOption{nop, mssOpt(serverMSS), nop, nop, rawOpt(4, 2)}})
	if v := r.b.Process(ServerSide, sa); v != Forward {
		t.Fatalf("SYN-ACK: %v %v", v, r.b.Stats.Drops())
	}
	if o := parsedOpts(t, decode(t, sa).tcp); o.MSS != wantMSS || !o.SACKPerm {
		t.Fatalf("SYN-ACK to the client: MSS %d, want %d (%+v)", o.MSS, wantMSS, o)
	}
	return lport
}

// A plain FULLNAT connection of a TOA service: the server's MSS is clamped
// to MTU - 48 on its way to the client; the handshake ACK and the client's
// data before the server's first byte carry TOA (first, before the client's
// own options), retransmits too; a SYN, and every segment after the server
// sent data, carries none. Checksums are verified from scratch each time.
func TestTOAPlain(t *testing.T) {
	r, _ := toaRig(t, false)
	const cport = 41000
	var rsISN uint32 = 0xfffffffe // the server's numbers wrap past 2^32
	lport := plainTOAConn(t, r, cport, rsISN, 1460, 1500-48)

	toServer := func(s pktSpec) decoded {
		t.Helper()
		s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client, vip, cport, 80, TCP, macClient
		f := frame(t, s)
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("client segment: %v %v", v, r.b.Stats.Drops())
		}
		d := decode(t, f)
		if d.tcp.SrcPort != layers.TCPPort(lport) || addr(d.ip.DstIP) != rs1 || (s.ack && d.tcp.Ack != s.ackNum) || len(d.tcp.Payload) != len(s.payload) ||
			int(d.ip.Length) != 20+int(d.tcp.DataOffset)*4+len(s.payload) {
			t.Fatalf("to server: %v:%d ack %#x, %d of payload, IP length %d", d.ip.DstIP, d.tcp.SrcPort, d.tcp.Ack, len(d.tcp.Payload), d.ip.Length)
		}
		return d
	}
	wantTOA(t, toServer(pktSpec{ack: true, seq: 101, ackNum: rsISN + 1}), cport)
	d := toServer(pktSpec{ack: true, seq: 101, ackNum: rsISN + 1, payload: []byte("GET / HTTP/1.0\r\n\r\n"), opts: []layers.TCPOption{nop, nop, tsOpt(5, 6)}})
	wantTOA(t, d, cport)
	// The client's TSval carries the connection's timestamp offset (seq.go),
	// as without TOA.
	in := tupleKey{src: wire.In16(client.AsSlice()), dst: wire.In16(vip.AsSlice()), sport: cport, dport: 80, proto: TCP}
	off := r.b.table.lookup(&in).rw.Load().TSClient
	if o := parsedOpts(t, d.tcp); !o.TS || o.TSval != 5+off || o.TSecr != 6 || string(d.tcp.Payload) != "GET / HTTP/1.0\r\n\r\n" {
		t.Fatalf("the client's options %+v or payload %q changed", o, d.tcp.Payload)
	}
	wantTOA(t, toServer(pktSpec{ack: true, fin: true, seq: 119, ackNum: rsISN + 1}), cport)
	if ins, nr := r.b.Stats.TOA(); ins != 3 || nr != 0 {
		t.Fatalf("TOA counters: %d inserted, %d no room; want 3, 0", ins, nr)
	}
	// A SYN gets none, even one with an ACK of the server's ISN + 1
	// (the client's half of a simultaneous open).
	wantNoTOA(t, toServer(pktSpec{syn: true, seq: 100}))
	wantNoTOA(t, toServer(pktSpec{syn: true, ack: true, seq: 100, ackNum: rsISN + 1}))

	// The server sends data; the client acknowledges it: no TOA from then on.
	resp := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: 1, srcMAC: macGateway, payload: []byte("HTTP/1.0 200 OK\r\n\r\n")})
	if v := r.b.Process(ServerSide, resp); v != Forward {
		t.Fatalf("server data: %v", v)
	}
	decode(t, resp)
	wantNoTOA(t, toServer(pktSpec{ack: true, seq: 120, ackNum: rsISN + 1 + 19}))
	wantNoTOA(t, toServer(pktSpec{ack: true, rst: true, seq: 120, ackNum: rsISN + 1}))
	if ins, _ := r.b.Stats.TOA(); ins != 3 {
		t.Fatalf("%d inserted, want still 3", ins)
	}

	// A server MSS already small enough is left alone.
	plainTOAConn(t, r, cport+1, 9, 1400, 1400)
}

// A connection keeps the mode its service had when it was made: one made
// without TOA gets none after the service turns it on (and its server's
// MSS is not clamped), one made with TOA keeps it after the service turns
// it off.
func TestTOAModeFixedPerConnection(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.setWeight(t, rs2, 8080, 0)
	set := func(m ClientAddr) {
		t.Helper()
		if err := r.b.Update(func(tx *Tx) error { return tx.SetClientAddr(r.svc, m) }); err != nil {
			t.Fatal(err)
		}
	}
	ack := func(cport, lport uint16, ackNum uint32) decoded {
		t.Helper()
		f := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: 101, ackNum: ackNum, srcMAC: macClient})
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("ACK: %v", v)
		}
		d := decode(t, f)
		if d.tcp.SrcPort != layers.TCPPort(lport) {
			t.Fatal("another connection")
		}
		return d
	}
	lport := plainTOAConn(t, r, 42000, 5, 1460, 1460)
	set(ClientAddrTOA)
	wantNoTOA(t, ack(42000, lport, 6))

	lport = plainTOAConn(t, r, 42001, 5, 1460, 1452)
	set(ClientAddrNone)
	wantTOA(t, ack(42001, lport, 6), 42001)
}

// No room: options of 36 bytes or more leave no room for 8 more (a TCP
// header is at most 60 bytes), and a segment at the server side's MTU would
// pass it. Both go as they came, whole and valid, counted as toa_no_room.
// A TOA option the client wrote itself is blanked in either case.
func TestTOANoRoom(t *testing.T) {
	r, _ := toaRig(t, false)
	const cport = 43000
	var rsISN uint32 = 777
	lport := plainTOAConn(t, r, cport, rsISN, 1460, 1452)
	send := func(s pktSpec) (decoded, *Frame) {
		t.Helper()
		s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC, s.ack, s.seq, s.ackNum = client, vip, cport, 80, TCP, macClient, true, 101, rsISN+1
		f := frame(t, s)
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("client segment: %v %v", v, r.b.Stats.Drops())
		}
		d := decode(t, f)
		if d.tcp.SrcPort != layers.TCPPort(lport) || len(d.tcp.Payload) != len(s.payload) {
			t.Fatalf("to server: port %d, %d of payload", d.tcp.SrcPort, len(d.tcp.Payload))
		}
		return d, f
	}
	sack := make([]byte, 24) // 3 blocks: 26 bytes, and a timestamp's 10: 36
	d, _ := send(pktSpec{payload: []byte("x"), opts: []layers.TCPOption{tsOpt(1, 2), rawOpt(5, 26, sack...)}})
	if d.tcp.DataOffset != 14 {
		t.Fatalf("data offset %d, want the client's 14", d.tcp.DataOffset)
	}
	wantNoTOA(t, d)
	d, _ = send(pktSpec{payload: make([]byte, 1460)})
	if d.ip.Length != 1500 {
		t.Fatalf("IP length %d", d.ip.Length)
	}
	wantNoTOA(t, d)
	if ins, nr := r.b.Stats.TOA(); ins != 0 || nr != 2 {
		t.Fatalf("TOA counters: %d inserted, %d no room; want 0, 2", ins, nr)
	}
	// 1452 bytes of payload fit with TOA: exactly the MTU.
	d, _ = send(pktSpec{payload: make([]byte, 1452)})
	wantTOA(t, d, cport)
	if d.ip.Length != 1500 {
		t.Fatalf("IP length %d, want 1500", d.ip.Length)
	}

	// The client's own TOA (a forged address): blanked, ours first.
	forged := rawOpt(toaKind, toaLen, 0, 1, 9, 9, 9, 9)
	d, _ = send(pktSpec{payload: []byte("y"), opts: []layers.TCPOption{nop, nop, tsOpt(1, 2), forged}})
	wantTOA(t, d, cport)
	// No room for ours (36 bytes of options): the forged one is blanked all the same.
	d, _ = send(pktSpec{payload: []byte("z"), opts: []layers.TCPOption{forged, rawOpt(5, 26, sack...), nop, nop}})
	wantNoTOA(t, d)
	if ins, nr := r.b.Stats.TOA(); ins != 2 || nr != 3 {
		t.Fatalf("TOA counters: %d inserted, %d no room; want 2, 3", ins, nr)
	}
}

// A frame with no headroom left cannot take TOA: it goes without.
func TestTOANoHeadroom(t *testing.T) {
	r, _ := toaRig(t, false)
	plainTOAConn(t, r, 44000, 50, 1460, 1452)
	f := frame(t, pktSpec{src: client, dst: vip, sport: 44000, dport: 80, proto: TCP, ack: true, seq: 101, ackNum: 51, srcMAC: macClient})
	g := &Frame{Buf: f.Bytes(), Len: f.Len} // Off 0: no headroom
	if v := r.b.Process(ClientSide, g); v != Forward {
		t.Fatalf("%v", v)
	}
	wantNoTOA(t, decode(t, g))
	if _, nr := r.b.Stats.TOA(); nr != 1 {
		t.Fatalf("no room %d, want 1", nr)
	}
}

// From a TAP with offloads: a partial checksum (the pseudo-header sum,
// which grows with the TCP length), and a TSO super-frame whose segments
// each repeat the header, TOA included (hdr_len grows by 8), unless a
// segment would then pass the MTU.
func TestTOAOffload(t *testing.T) {
	r, _ := toaRig(t, false)
	const cport = 45000
	var rsISN uint32 = 0x12345678
	plainTOAConn(t, r, cport, rsISN, 1460, 1452)
	in := func(payload int, opts []layers.TCPOption) *Frame {
		return frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: 101, ackNum: rsISN + 1, srcMAC: macClient,
			payload: make([]byte, payload), opts: opts})
	}
	process := func(f *Frame) decoded {
		t.Helper()
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("%v %v", v, r.b.Stats.Drops())
		}
		finish(t, f)
		return decode(t, f)
	}

	f := in(100, []layers.TCPOption{nop, nop, tsOpt(1, 2)})
	makePartial(f)
	wantTOA(t, process(f), cport)
	if f.VNet.GSOType() != tun.VNetGSONone {
		t.Fatal("became a super-frame")
	}

	// A super-frame of 3 segments of 1440 (+ 12 of timestamps + 8 of TOA: 1500).
	f = in(3*1440, []layers.TCPOption{nop, nop, tsOpt(1, 2)})
	v := makePartial(f)
	v.SetGSO(tun.VNetGSOTCPv4, 14+20+32, 1440)
	d := process(f)
	wantTOA(t, d, cport)
	if f.VNet.HdrLen() != 14+20+40 || f.VNet.GSOSize() != 1440 || f.VNet.GSOType() != tun.VNetGSOTCPv4 {
		t.Fatalf("virtio-net header %v: want hdr_len %d, gso_size 1440", f.VNet, 14+20+40)
	}
	if int(d.ip.Length) != 20+40+3*1440 {
		t.Fatalf("IP length %d", d.ip.Length)
	}

	// Segments of 1448 with timestamps are 1500 already: no room.
	f = in(3*1448, []layers.TCPOption{nop, nop, tsOpt(1, 2)})
	v = makePartial(f)
	v.SetGSO(tun.VNetGSOTCPv4, 14+20+32, 1448)
	d = process(f)
	wantNoTOA(t, d)
	if f.VNet.HdrLen() != 14+20+32 {
		t.Fatalf("hdr_len %d changed", f.VNet.HdrLen())
	}
	// A super-frame whose IP length would pass 65535: no room.
	f = in(65535-20-32, []layers.TCPOption{nop, nop, tsOpt(1, 2)})
	v = makePartial(f)
	v.SetGSO(tun.VNetGSOTCPv4, 14+20+32, 1400)
	d = process(f)
	wantNoTOA(t, d)
	if ins, nr := r.b.Stats.TOA(); ins != 2 || nr != 2 {
		t.Fatalf("TOA counters: %d inserted, %d no room; want 2, 2", ins, nr)
	}
}

// A SYNPROXY connection of a TOA service: the cookie SYN-ACK announces the
// configured MSS less 8; the client frames held until the server answers
// (a plain copy, a partial checksum and a TSO super-frame) are released
// with TOA, as is the client's data before the server's first byte, whose
// ack is compared in the client's (cookie) space; after it, none.
func TestTOASynproxy(t *testing.T) {
	for _, kind := range []string{"full", "partial", "gso"} {
		t.Run(kind, func(t *testing.T) {
			r, out := toaRig(t, true)
			const cport, isn = 46000, 5000
			syn := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, syn: true, seq: isn, srcMAC: macClient, opts: synOpts(1460, 7, 100)})
			if v := r.b.Process(ClientSide, syn); v != Reply {
				t.Fatalf("SYN: %v", v)
			}
			sa := decode(t, syn)
			if o := parsedOpts(t, sa.tcp); o.MSS != 1460-8 {
				t.Fatalf("cookie SYN-ACK MSS %d, want %d", o.MSS, 1460-8)
			}
			cookie, ourTS := sa.tcp.Seq, parsedOpts(t, sa.tcp).TSval
			ts := func(v uint32) []layers.TCPOption { return []layers.TCPOption{nop, nop, tsOpt(v, ourTS)} }
			ack := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: isn + 1, ackNum: cookie + 1, srcMAC: macClient, opts: ts(101)})
			if v := r.b.Process(ClientSide, ack); v != Forward {
				t.Fatalf("ACK: %v %v", v, r.b.Stats.Drops())
			}
			s := decode(t, ack)
			wantNoTOA(t, s) // the SYN to the server
			lport := uint16(s.tcp.SrcPort)

			n := 100
			if kind == "gso" {
				n = 2 * 1400
			}
			data := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: isn + 1, ackNum: cookie + 1, srcMAC: macClient,
				payload: make([]byte, n), opts: ts(102)})
			switch kind {
			case "partial":
				makePartial(data)
			case "gso":
				makePartial(data).SetGSO(tun.VNetGSOTCPv4, 14+20+32, 1400)
			}
			if v := r.b.Process(ClientSide, data); v != Stolen {
				t.Fatalf("early data: %v", v)
			}

			const rsISN = 0x7000
			rsa := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: isn + 1, srcMAC: macGateway, opts: synOpts(1460, 7, 9000)})
			if v := r.b.Process(ServerSide, rsa); v != Release || len(rsa.Released) != 2 {
				t.Fatalf("server SYN-ACK: %v, %d released, %v", v, len(rsa.Released), r.b.Stats.Drops())
			}
			for i, q := range rsa.Released {
				// What the reader sends: the virtio-net header, then the frame.
				qf := &Frame{Buf: q, Off: tun.VNetHdrLen, Len: len(q) - tun.VNetHdrLen, VNet: tun.VNetHdr(q[:tun.VNetHdrLen])}
				if i == 1 && kind != "full" {
					finish(t, qf)
				} else if qf.VNet.Flags() != 0 || qf.VNet.GSOType() != 0 {
					t.Fatalf("held frame %d: virtio-net header %v", i, qf.VNet)
				}
				d := decode(t, qf)
				wantTOA(t, d, cport)
				if d.tcp.Ack != rsISN+1 || addr(d.ip.DstIP) != rs1 || parsedOpts(t, d.tcp).TSecr != 9000 {
					t.Fatalf("held frame %d: ack %#x TSecr %d", i, d.tcp.Ack, parsedOpts(t, d.tcp).TSecr)
				}
				if i == 1 && (len(d.tcp.Payload) != n || int(d.ip.Length) != 20+40+n) {
					t.Fatalf("held data: %d of payload, IP length %d", len(d.tcp.Payload), d.ip.Length)
				}
				if i == 1 && kind == "gso" && (qf.VNet.HdrLen() != 14+20+40 || qf.VNet.GSOSize() != 1400) {
					t.Fatalf("held super-frame: virtio-net header %v", qf.VNet)
				}
			}
			*out = (*out)[:0]

			toServer := func(seq, ackNum uint32) decoded {
				t.Helper()
				f := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: seq, ackNum: ackNum, srcMAC: macClient, payload: []byte("more"), opts: ts(103)})
				if v := r.b.Process(ClientSide, f); v != Forward {
					t.Fatalf("client data: %v %v", v, r.b.Stats.Drops())
				}
				return decode(t, f)
			}
			d := toServer(isn+1+uint32(n), cookie+1)
			wantTOA(t, d, cport)
			if d.tcp.Ack != rsISN+1 {
				t.Fatalf("ack %#x", d.tcp.Ack)
			}
			// A client ack of rsISN+1 would be the server's ISN in the
			// server's space, but the client speaks the cookie's: no TOA.
			wantNoTOA(t, toServer(isn+1+uint32(n), rsISN+1))
			resp := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: isn + 1, srcMAC: macGateway, payload: []byte("reply")})
			if v := r.b.Process(ServerSide, resp); v != Forward {
				t.Fatalf("server data: %v", v)
			}
			wantNoTOA(t, toServer(isn+5+uint32(n), cookie+1+5))
			if ins, nr := r.b.Stats.TOA(); ins != 3 || nr != 0 {
				t.Fatalf("TOA counters: %d inserted, %d no room; want 3, 0", ins, nr)
			}
		})
	}
}

// The MSS clamp follows the server side's MTU.
func TestTOAMSSFollowsMTU(t *testing.T) {
	out := new([]sent)
	r := newRig(t, TCP, "rr", func(c *Config) { c.ServerMTU = 9000 })
	r.b.Attach(recordLink{out})
	if err := r.b.Update(func(tx *Tx) error { return tx.SetClientAddr(r.svc, ClientAddrTOA) }); err != nil {
		t.Fatal(err)
	}
	r.setWeight(t, rs2, 8080, 0)
	plainTOAConn(t, r, 47000, 1, 8960, 9000-48)
}

// Steady state on a TOA connection (the server has sent data) costs no
// allocation, and neither does putting TOA into a segment.
func TestTOAAllocs(t *testing.T) {
	r, _ := toaRig(t, false)
	var rsISN uint32 = 1000
	lport := plainTOAConn(t, r, 48000, rsISN, 1460, 1452)
	for _, tc := range []struct {
		name string
		ack  uint32
		want uint64 // inserted per pair
	}{{"steady", rsISN + 100, 0}, {"insert", rsISN + 1, 1}} {
		in := frame(t, pktSpec{src: client, dst: vip, sport: 48000, dport: 80, proto: TCP, ack: true, seq: 101, ackNum: tc.ack, payload: make([]byte, 1400), srcMAC: macClient})
		back := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: 5, payload: make([]byte, 1400)})
		inB, backB := append([]byte(nil), in.Bytes()...), append([]byte(nil), back.Bytes()...)
		off := in.Off
		before, _ := r.b.Stats.TOA()
		allocs := totalAllocs(1000, func() {
			in.Off, in.Len = off, len(inB)
			copy(in.Bytes(), inB)
			copy(back.Bytes(), backB)
			if r.b.Process(ClientSide, in) != Forward || r.b.Process(ServerSide, back) != Forward {
				t.Fatal("not forwarded")
			}
		})
		if allocs != 0 {
			t.Fatalf("%s: %d allocations over 1000 packet pairs", tc.name, allocs)
		}
		if after, _ := r.b.Stats.TOA(); after-before != 1001*tc.want {
			t.Fatalf("%s: %d inserted, want %d", tc.name, after-before, 1001*tc.want)
		}
	}
}

// A held frame with no room for TOA (36 bytes of options) is released as
// it came: whole, valid, without the headroom its copy kept for TOA.
func TestTOASynproxyHeldNoRoom(t *testing.T) {
	r, _ := toaRig(t, true)
	const cport, isn = 46500, 9000
	syn := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, syn: true, seq: isn, srcMAC: macClient, opts: synOpts(1460, 7, 100)})
	r.b.Process(ClientSide, syn)
	sa := decode(t, syn)
	cookie, ourTS := sa.tcp.Seq, parsedOpts(t, sa.tcp).TSval
	ack := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: isn + 1, ackNum: cookie + 1, srcMAC: macClient, opts: []layers.TCPOption{nop, nop, tsOpt(101, ourTS)}})
	if v := r.b.Process(ClientSide, ack); v != Forward {
		t.Fatalf("ACK: %v %v", v, r.b.Stats.Drops())
	}
	lport := uint16(decode(t, ack).tcp.SrcPort)
	sack := make([]byte, 24)
	data := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: isn + 1, ackNum: cookie + 1, srcMAC: macClient,
		payload: []byte("data"), opts: []layers.TCPOption{tsOpt(102, ourTS), rawOpt(5, 26, sack...)}})
	if v := r.b.Process(ClientSide, data); v != Stolen {
		t.Fatalf("early data: %v", v)
	}
	rsa := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: 0x100, ackNum: isn + 1, srcMAC: macGateway, opts: synOpts(1460, 7, 9000)})
	if v := r.b.Process(ServerSide, rsa); v != Release || len(rsa.Released) != 2 {
		t.Fatalf("server SYN-ACK: %v, %d released", v, len(rsa.Released))
	}
	wantTOA(t, decodeRaw(t, rsa.Released[0][tun.VNetHdrLen:]), cport)
	d := decodeRaw(t, rsa.Released[1][tun.VNetHdrLen:])
	wantNoTOA(t, d)
	if string(d.tcp.Payload) != "data" || d.tcp.Ack != 0x101 {
		t.Fatalf("held data: %q ack %#x", d.tcp.Payload, d.tcp.Ack)
	}
	if ins, nr := r.b.Stats.TOA(); ins != 1 || nr != 1 {
		t.Fatalf("TOA counters: %d inserted, %d no room; want 1, 1", ins, nr)
	}
}
