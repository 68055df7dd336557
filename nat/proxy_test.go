package nat

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/proxyhdr"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// proxyRig is a TCP rig with one real server (rs1) whose service sends
// PROXY headers in mode.
func proxyRig(t testing.TB, mode ClientAddr, synproxy bool) *rig {
	t.Helper()
	r := newRig(t, TCP, "rr", func(c *Config) {
		if synproxy {
			c.Synproxy = DefaultSynproxy()
		}
	})
	if err := r.b.Update(func(tx *Tx) error {
		if synproxy {
			if err := tx.SetSynproxy(r.svc, true); err != nil {
				return err
			}
		}
		return tx.SetClientAddr(r.svc, mode)
	}); err != nil {
		t.Fatal(err)
	}
	r.setWeight(t, rs2, 8080, 0)
	return r
}

// pframe is frame() in a buffer with the readers' headroom
// (netstack.Headroom), which a PROXY header needs.
func pframe(t testing.TB, s pktSpec) *Frame {
	t.Helper()
	b := frame(t, s).Bytes()
	const headroom = 128
	f := &Frame{Buf: make([]byte, headroom+len(b)+64), Off: headroom, Len: len(b)} // a tail: SYNPROXY writes its SYN in place
	copy(f.Buf[headroom:], b)
	return f
}

// withVNet gives f a virtio-net header in its headroom, where a reader
// puts it, and returns it.
func withVNet(f *Frame) tun.VNetHdr {
	f.VNet = tun.VNetHdr(f.Buf[f.Off-tun.VNetHdrLen : f.Off])
	f.VNet.Clear()
	return f.VNet
}

// wantHeader reads a PROXY header from the start of payload with
// go-proxyproto and checks it names the client and the VIP; it returns
// what follows it.
func wantHeader(t testing.TB, payload []byte, version byte, cport uint16) []byte {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(payload))
	h, err := proxyproto.Read(r)
	if err != nil {
		t.Fatalf("payload %q: no PROXY header: %v", payload, err)
	}
	src, dst := h.SourceAddr.(*net.TCPAddr).AddrPort(), h.DestinationAddr.(*net.TCPAddr).AddrPort()
	if h.Version != version || src != netip.AddrPortFrom(client, cport) || dst != netip.AddrPortFrom(vip, 80) {
		t.Fatalf("header v%d %v -> %v, want v%d %v:%d -> %v:80", h.Version, src, dst, version, client, cport, vip)
	}
	rest, _ := io.ReadAll(r)
	return rest
}

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

func sackOpt(edges ...uint32) []layers.TCPOption {
	d := make([]byte, 4*len(edges))
	for i, e := range edges {
		binary.BigEndian.PutUint32(d[4*i:], e)
	}
	return []layers.TCPOption{nop, nop, {OptionType: layers.TCPOptionKindSACK, OptionLength: uint8(2 + len(d)), OptionData: d}}
}

// sackEdges are the edges of a decoded segment's SACK option, nil without one.
func sackEdges(tcp *layers.TCP) []uint32 {
	var edges []uint32
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindSACK {
			for i := 0; i+4 <= len(o.OptionData); i += 4 {
				edges = append(edges, be32(o.OptionData[i:]))
			}
		}
	}
	return edges
}

func mssOf(t *testing.T, tcp *layers.TCP) uint16 { return parsedOpts(t, tcp).MSS }

func modeVersion(m ClientAddr) byte {
	if m == ClientAddrProxyV1 {
		return 1
	}
	return 2
}

// A plain connection of a PROXY service: the header goes on every segment
// at the client's first byte (the handshake ACK, the first data, a
// retransmission, a FIN sent first) with seq the server's stream start;
// later segments move by its length; the server's acks and SACK edges come
// back, an ack of part of the header as one of nothing, a SACK block within
// it taken out; the MSS the client learns is the header's length less; an
// ICMP error quoting either kind of segment quotes the client's own seq.
// Both v1 header parities (the client port's digits) and payload parities,
// every checksum verified from scratch.
func TestProxyPlain(t *testing.T) {
	for _, mode := range []ClientAddr{ClientAddrProxyV1, ClientAddrProxyV2} {
		for _, cport := range []uint16{40000, 4000} {
			for _, body := range []string{"hello", "hello!"} {
				t.Run(mode.String(), func(t *testing.T) { proxyPlain(t, mode, cport, body) })
			}
		}
	}
}

func proxyPlain(t *testing.T, mode ClientAddr, cport uint16, body string) {
	r := proxyRig(t, mode, false)
	var isn uint32 = 0xfffffff0 // wraps
	var hb [proxyhdr.MaxV1]byte
	in := tupleKey{src: wire.In16(client.AsSlice()), dst: wire.In16(vip.AsSlice()), sport: cport, dport: 80, proto: TCP}
	n := uint32(proxyHeader(mode, &in, hb[:]))
	cl := func(s pktSpec) *Frame {
		s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client, vip, cport, 80, TCP, macClient
		f := pframe(t, s)
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("client segment: %v %v", v, r.b.Stats.Drops())
		}
		return f
	}
	syn := decode(t, cl(pktSpec{syn: true, seq: isn, opts: synOpts(1460, 7, 1)}))
	server := syn.tcp.Seq // tapvs's ISN: the header is [server+1, server+1+n)
	lport := uint16(syn.tcp.SrcPort)
	sv := func(s pktSpec) decoded {
		s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = rs1, lip1, 8080, lport, TCP, macGateway
		f := pframe(t, s)
		if v := r.b.Process(ServerSide, f); v != Forward {
			t.Fatalf("server segment: %v %v", v, r.b.Stats.Drops())
		}
		return decode(t, f)
	}
	sa := sv(pktSpec{syn: true, ack: true, seq: 7000, ackNum: server + 1, opts: synOpts(1460, 7, 2)})
	if sa.tcp.Ack != isn+1 || mssOf(t, sa.tcp) != 1460-uint16(n) {
		t.Fatalf("SYN-ACK to the client: ack %#x MSS %d, want %#x %d", sa.tcp.Ack, mssOf(t, sa.tcp), isn+1, 1460-n)
	}

	// The handshake ACK, no data of its own, takes the header.
	d := decode(t, cl(pktSpec{ack: true, seq: isn + 1, ackNum: 7001}))
	if d.tcp.Seq != server+1 || d.tcp.Ack != 7001 || uint32(len(d.tcp.Payload)) != n {
		t.Fatalf("handshake ACK: seq %#x ack %d, %d bytes; want %#x 7001, the header's %d", d.tcp.Seq, d.tcp.Ack, len(d.tcp.Payload), server+1, n)
	}
	if rest := wantHeader(t, d.tcp.Payload, modeVersion(mode), cport); len(rest) != 0 {
		t.Fatalf("after the header: %q", rest)
	}
	// The first data, and its retransmission, again.
	for range 2 {
		d = decode(t, cl(pktSpec{ack: true, seq: isn + 1, ackNum: 7001, payload: []byte(body)}))
		if d.tcp.Seq != server+1 {
			t.Fatalf("first data: seq %#x, want %#x", d.tcp.Seq, server+1)
		}
		if rest := wantHeader(t, d.tcp.Payload, modeVersion(mode), cport); string(rest) != body {
			t.Fatalf("after the header: %q", rest)
		}
	}
	// Later data moves by the header's length, and carries none.
	d = decode(t, cl(pktSpec{ack: true, seq: isn + 1 + uint32(len(body)), ackNum: 7001, payload: []byte("world")}))
	if d.tcp.Seq != server+1+n+uint32(len(body)) || string(d.tcp.Payload) != "world" {
		t.Fatalf("later data: seq %#x %q, want %#x world", d.tcp.Seq, d.tcp.Payload, server+1+n+uint32(len(body)))
	}
	if got := r.b.Stats.ProxyHeaders(); got != 3 {
		t.Fatalf("proxy headers counted %d, want 3", got)
	}

	// Acks: none of the header, part of it, all of it, and data.
	for _, c := range []struct{ ack, want uint32 }{
		{server + 1, isn + 1}, {server + 1 + n/2, isn + 1}, {server + n, isn + 1}, {server + 1 + n, isn + 1}, {server + 1 + n + 3, isn + 4},
	} {
		if d := sv(pktSpec{ack: true, seq: 7001, ackNum: c.ack}); d.tcp.Ack != c.want {
			t.Fatalf("server ack %#x (header %#x+%d) reached the client as %#x, want %#x", c.ack, server+1, n, d.tcp.Ack, c.want)
		}
	}
	// SACK: a block within the header (a D-SACK of a re-sent header) is
	// taken out; one across its end starts at the client's first byte.
	d = sv(pktSpec{ack: true, seq: 7001, ackNum: server + 1 + n, opts: sackOpt(server+1, server+1+n, server+1+n+100, server+1+n+200)})
	if e := sackEdges(d.tcp); len(e) != 2 || e[0] != isn+101 || e[1] != isn+201 {
		t.Fatalf("SACK edges to the client %#x, want one block %#x-%#x", e, isn+101, isn+201)
	}
	d = sv(pktSpec{ack: true, seq: 7001, ackNum: server + 1, opts: sackOpt(server+1+2, server+1+n+10)})
	if e := sackEdges(d.tcp); len(e) != 2 || e[0] != isn+1 || e[1] != isn+11 {
		t.Fatalf("SACK edges to the client %#x, want %#x-%#x", e, isn+1, isn+11)
	}
	d = sv(pktSpec{ack: true, seq: 7001, ackNum: server + 1 + n, opts: sackOpt(server+1, server+1+n)})
	if e := sackEdges(d.tcp); e != nil {
		t.Fatalf("a SACK block within the header reached the client: %#x", e)
	}

	// ICMP errors quoting the header segment and a later one.
	for _, c := range []struct{ seq, want uint32 }{{server + 1, isn + 1}, {server + 1 + n + 5, isn + 6}} {
		q := make([]byte, 40)
		q[0], q[9] = 0x45, wire.ProtoTCP
		copy(q[12:16], lip1.AsSlice())
		copy(q[16:20], rs1.AsSlice())
		binary.BigEndian.PutUint16(q[20:], lport)
		binary.BigEndian.PutUint16(q[22:], 8080)
		binary.BigEndian.PutUint32(q[24:], c.seq)
		ef := icmpFrame(t, rs1, lip1, 3, 4, q)
		if v := r.b.Process(ServerSide, ef); v != Forward {
			t.Fatalf("ICMP: %v", v)
		}
		if got := be32(ef.Bytes()[14+20+8+24:]); got != c.want {
			t.Fatalf("quoted seq %#x reached the client as %#x, want %#x", c.seq, got, c.want)
		}
	}
}

// A FIN that is the client's first segment after the handshake carries
// the header too, FIN kept after it.
func TestProxyFINFirst(t *testing.T) {
	r := proxyRig(t, ClientAddrProxyV2, false)
	syn := pframe(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 10, srcMAC: macClient})
	r.b.Process(ClientSide, syn)
	server := decode(t, syn).tcp.Seq
	fin := pframe(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, fin: true, seq: 11, ackNum: 7001, srcMAC: macClient})
	if v := r.b.Process(ClientSide, fin); v != Forward {
		t.Fatal(v)
	}
	d := decode(t, fin)
	if !d.tcp.FIN || d.tcp.Seq != server+1 {
		t.Fatalf("FIN %v seq %#x", d.tcp.FIN, d.tcp.Seq)
	}
	wantHeader(t, d.tcp.Payload, 2, 40000)
}

// Offloaded frames: a partial checksum (NEEDS_CSUM) counts the longer
// segment and finishes right; a TSO super-frame keeps its segmentation
// fields and takes the header as payload; one whose IP length would pass
// 65535 loses as many bytes from its end, and its FIN with them.
func TestProxyOffloadedFrames(t *testing.T) {
	for _, c := range []struct {
		name    string
		payload int
		fin     bool
	}{{"partial", 1000, false}, {"tso", 60000, false}, {"tso-full", 65535 - 40, true}} {
		t.Run(c.name, func(t *testing.T) {
			r := proxyRig(t, ClientAddrProxyV1, false)
			syn := pframe(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, syn: true, seq: 10, srcMAC: macClient})
			r.b.Process(ClientSide, syn)
			server := decode(t, syn).tcp.Seq
			body := make([]byte, c.payload)
			for i := range body {
				body[i] = byte(i*7 + i>>8)
			}
			f := pframe(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, ack: true, fin: c.fin, seq: 11, ackNum: 7001, srcMAC: macClient, payload: body})
			b := f.Bytes()
			binary.BigEndian.PutUint16(b[34+16:], csum.Fold(csum.PseudoV4(b[26:30], b[30:34], wire.ProtoTCP, len(b)-34)))
			vnet := withVNet(f)
			vnet.SetNeedsCsum(34, 16)
			if c.payload > 1448 {
				vnet.SetGSO(tun.VNetGSOTCPv4, 54, 1448)
			}
			before := *f
			if v := r.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("%v %v", v, r.b.Stats.Drops())
			}
			vnet = f.VNet
			if &f.VNet[0] != &f.Buf[f.Off-tun.VNetHdrLen] || !vnet.NeedsCsum() || vnet.CsumStart() != 34 || vnet.CsumOffset() != 16 {
				t.Fatalf("virtio-net header %x not kept before the frame", vnet)
			}
			if c.payload > 1448 && (vnet.GSOType() != tun.VNetGSOTCPv4 || vnet.HdrLen() != 54 || vnet.GSOSize() != 1448) {
				t.Fatalf("segmentation changed: %x", vnet)
			}
			if f.Off+f.Len != before.Off+before.Len && c.payload < 65000 || f.Off >= before.Off {
				t.Fatalf("frame %d+%d, was %d+%d: the payload moved", f.Off, f.Len, before.Off, before.Len)
			}
			csum.Finish(f.Bytes()[34:], 16)
			d := decode(t, f)
			if d.tcp.Seq != server+1 {
				t.Fatalf("IP length %d seq %#x", d.ip.Length, d.tcp.Seq)
			}
			rest := wantHeader(t, d.tcp.Payload, 1, 40001)
			want := body
			if c.fin {
				want = body[:65535-20-20-(len(d.tcp.Payload)-len(rest))]
				if d.ip.Length != 65535 || d.tcp.FIN {
					t.Fatalf("cut frame: IP length %d, FIN %v", d.ip.Length, d.tcp.FIN)
				}
			}
			if !bytes.Equal(rest, want) {
				t.Fatalf("payload after the header: %d bytes, want %d", len(rest), len(want))
			}
		})
	}
}

// A frame with no headroom cannot take the header: it is dropped and
// counted, not sent without it.
func TestProxyNoRoom(t *testing.T) {
	r := proxyRig(t, ClientAddrProxyV2, false)
	syn := pframe(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, syn: true, seq: 10, srcMAC: macClient})
	r.b.Process(ClientSide, syn)
	g := frame(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, ack: true, seq: 11, ackNum: 7001, srcMAC: macClient})
	g.Buf, g.Off = g.Buf[g.Off-20:], 20
	if v := r.b.Process(ClientSide, g); v != Drop || r.b.Stats.Drop(DropProxyNoRoom) != 1 {
		t.Fatalf("%v %v", v, r.b.Stats.Drops())
	}
}

// A client that sends a first segment larger than the MSS it was told (up
// to its own MTU, or a 64 KiB frame with a full checksum) has it cut at its
// end so that with the header it is exactly the server side's MTU: the
// header, then the client's first bytes, its FIN dropped with the bytes
// cut, every checksum valid (full, both header parities; and partial). The
// client's retransmission of the rest follows at the right number.
func TestProxyHeaderFitsMTU(t *testing.T) {
	for _, c := range []struct {
		name    string
		mode    ClientAddr
		v6      bool
		payload int
		partial bool
	}{
		{"v1 full-MTU", ClientAddrProxyV1, false, 1460, false},
		{"v2 full-MTU", ClientAddrProxyV2, false, 1460, false},
		{"v1 odd payload", ClientAddrProxyV1, false, 1459, false},
		{"v2 64KiB", ClientAddrProxyV2, false, 65535 - 40 - 10, false},
		{"v1 partial", ClientAddrProxyV1, false, 1460, true},
		{"v2 IPv6", ClientAddrProxyV2, true, 1440, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := forgeKind{mode: c.mode, v6: c.v6}
			fc := newForgeConn(t, k, 40002)
			body := make([]byte, c.payload)
			for i := range body {
				body[i] = byte('a' + i%26)
			}
			f := fc.clientFrame(pktSpec{ack: true, fin: true, seq: fc.first, ackNum: fc.ack, payload: body})
			if c.partial {
				makePartial(f)
			}
			if v := fc.r.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("%v %v", v, fc.r.b.Stats.Drops())
			}
			if c.partial {
				finish(t, f)
			}
			tcp := fc.check(f.Bytes())
			d := decode(t, f)
			ipLen := len(f.Bytes()) - 14
			if ipLen != 1500 || d.tcp.FIN || fc.r.b.Stats.ProxyCut() != 1 {
				t.Fatalf("IP packet of %d bytes (FIN %v, %d cut), want the MTU's 1500 without the FIN", ipLen, d.tcp.FIN, fc.r.b.Stats.ProxyCut())
			}
			hl := int(tcp[12]>>4) * 4
			sent := tcp[hl+len(fc.hdr):]
			if !bytes.Equal(tcp[hl:hl+len(fc.hdr)], fc.hdr) || !bytes.Equal(sent, body[:len(sent)]) {
				t.Fatalf("payload %q...: want the header, then the client's first bytes", tcp[hl:min(len(tcp), hl+80)])
			}
			rest := fc.clientFrame(pktSpec{ack: true, fin: true, seq: fc.first + uint32(len(sent)), ackNum: fc.ack, payload: body[len(sent):]})
			if v := fc.r.b.Process(ClientSide, rest); v != Forward {
				t.Fatalf("the rest: %v %v", v, fc.r.b.Stats.Drops())
			}
			if d := decode(t, rest); d.tcp.Seq != fc.streamStart()+uint32(len(fc.hdr)+len(sent)) || !d.tcp.FIN {
				t.Fatalf("the rest at seq %d (FIN %v), want %d", d.tcp.Seq, d.tcp.FIN, fc.streamStart()+uint32(len(fc.hdr)+len(sent)))
			}
		})
	}
}

// SYNPROXY: the cookie SYN-ACK's MSS leaves room for the header; the held
// handshake ACK, released when the server answers, carries it (seq the
// client's ISN + 1: SYNPROXY keeps the client's ISN), and so does the
// first data; later data, acks (partial ones too), SACK blocks and ICMP
// quotes compose the header's shift with SYNPROXY's own offsets; a
// repeated server SYN-ACK is answered by tapvs with the header ACK again.
func TestProxySynproxy(t *testing.T) {
	for _, mode := range []ClientAddr{ClientAddrProxyV1, ClientAddrProxyV2} {
		t.Run(mode.String(), func(t *testing.T) {
			r := proxyRig(t, mode, true)
			const cport, isn, rsISN = 40000, 5000, 0x7000
			var hb [proxyhdr.MaxV1]byte
			in := tupleKey{src: wire.In16(client.AsSlice()), dst: wire.In16(vip.AsSlice()), sport: cport, dport: 80, proto: TCP}
			n := uint32(proxyHeader(mode, &in, hb[:]))
			cl := func(s pktSpec, want Verdict) *Frame {
				s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client, vip, cport, 80, TCP, macClient
				f := pframe(t, s)
				if v := r.b.Process(ClientSide, f); v != want {
					t.Fatalf("client segment: %v, want %v; %v", v, want, r.b.Stats.Drops())
				}
				return f
			}
			sa := decode(t, cl(pktSpec{syn: true, seq: isn, opts: synOpts(1460, 7, 100)}, Reply))
			if mssOf(t, sa.tcp) != 1460-uint16(n) {
				t.Fatalf("cookie SYN-ACK MSS %d, want %d", mssOf(t, sa.tcp), 1460-n)
			}
			cookie := sa.tcp.Seq
			ourTS := parsedOpts(t, sa.tcp).TSval
			ts := []layers.TCPOption{nop, nop, tsOpt(101, ourTS)}
			lport := uint16(decode(t, cl(pktSpec{ack: true, seq: isn + 1, ackNum: cookie + 1, opts: ts}, Forward)).tcp.SrcPort)
			// First data before the server answers: held too.
			cl(pktSpec{ack: true, seq: isn + 1, ackNum: cookie + 1, opts: ts, payload: []byte("GET")}, Stolen)

			rsa := pframe(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: isn + 1, srcMAC: macGateway, opts: synOpts(1460, 7, 9000)})
			if v := r.b.Process(ServerSide, rsa); v != Release || len(rsa.Released) != 2 {
				t.Fatalf("server SYN-ACK: %v, %d released, %v", v, len(rsa.Released), r.b.Stats.Drops())
			}
			for i, want := range []string{"", "GET"} {
				d := decodeRaw(t, rsa.Released[i][tun.VNetHdrLen:])
				if d.tcp.Seq != isn+1 || d.tcp.Ack != rsISN+1 {
					t.Fatalf("released %d: seq %#x ack %#x, want %#x %#x", i, d.tcp.Seq, d.tcp.Ack, isn+1, rsISN+1)
				}
				if rest := wantHeader(t, d.tcp.Payload, modeVersion(mode), cport); string(rest) != want {
					t.Fatalf("released %d: %q after the header", i, rest)
				}
			}
			// The server did not get it: it repeats its SYN-ACK.
			again := pframe(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: isn + 1, srcMAC: macGateway, opts: synOpts(1460, 7, 9100)})
			if v := r.b.Process(ServerSide, again); v != Release || len(again.Released) != 1 {
				t.Fatalf("repeated SYN-ACK: %v, %d released", v, len(again.Released))
			}
			if d := decodeRaw(t, again.Released[0][tun.VNetHdrLen:]); d.tcp.Seq != isn+1 || d.tcp.SYN || len(d.tcp.Payload) != int(n) {
				t.Fatalf("re-sent: seq %#x SYN %v %d bytes", d.tcp.Seq, d.tcp.SYN, len(d.tcp.Payload))
			}
			if got := r.b.Stats.ProxyHeaders(); got != 3 {
				t.Fatalf("proxy headers counted %d, want 3", got)
			}
			// Later data.
			d := decode(t, cl(pktSpec{ack: true, seq: isn + 4, ackNum: cookie + 1, opts: ts, payload: []byte(" /")}, Forward))
			if d.tcp.Seq != isn+4+n || string(d.tcp.Payload) != " /" || d.tcp.Ack != rsISN+1 {
				t.Fatalf("later data: seq %#x ack %#x %q", d.tcp.Seq, d.tcp.Ack, d.tcp.Payload)
			}
			sv := func(s pktSpec) decoded {
				s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = rs1, lip1, 8080, lport, TCP, macGateway
				f := pframe(t, s)
				if v := r.b.Process(ServerSide, f); v != Forward {
					t.Fatalf("server segment: %v %v", v, r.b.Stats.Drops())
				}
				return decode(t, f)
			}
			for _, c := range []struct{ ack, want uint32 }{{isn + 1, isn + 1}, {isn + 1 + n/2, isn + 1}, {isn + 1 + n, isn + 1}, {isn + 1 + n + 3, isn + 4}} {
				if d := sv(pktSpec{ack: true, seq: rsISN + 1, ackNum: c.ack}); d.tcp.Ack != c.want || d.tcp.Seq != cookie+1 {
					t.Fatalf("server ack %#x reached the client as %#x seq %#x, want %#x %#x", c.ack, d.tcp.Ack, d.tcp.Seq, c.want, cookie+1)
				}
			}
			d = sv(pktSpec{ack: true, seq: rsISN + 1, ackNum: isn + 1 + n, opts: sackOpt(isn+1, isn+1+n, isn+1+n+100, isn+1+n+200)})
			if e := sackEdges(d.tcp); len(e) != 2 || e[0] != isn+101 || e[1] != isn+201 {
				t.Fatalf("SACK edges to the client %#x, want one block %#x-%#x", e, isn+101, isn+201)
			}
			d = sv(pktSpec{ack: true, seq: rsISN + 1, ackNum: isn + 1 + n, opts: sackOpt(isn+1, isn+1+n)})
			if e := sackEdges(d.tcp); e != nil {
				t.Fatalf("a SACK block within the header reached the client: %#x", e)
			}
			for _, c := range []struct{ seq, want uint32 }{{isn + 1, isn + 1}, {isn + 1 + n + 5, isn + 6}} {
				q := make([]byte, 40)
				q[0], q[9] = 0x45, wire.ProtoTCP
				copy(q[12:16], lip1.AsSlice())
				copy(q[16:20], rs1.AsSlice())
				binary.BigEndian.PutUint16(q[20:], lport)
				binary.BigEndian.PutUint16(q[22:], 8080)
				binary.BigEndian.PutUint32(q[24:], c.seq)
				ef := icmpFrame(t, rs1, lip1, 3, 4, q)
				if v := r.b.Process(ServerSide, ef); v != Forward {
					t.Fatalf("ICMP: %v", v)
				}
				if got := be32(ef.Bytes()[14+20+8+24:]); got != c.want {
					t.Fatalf("quoted seq %#x reached the client as %#x, want %#x", c.seq, got, c.want)
				}
			}
		})
	}
}

// proxyFlow opens a plain connection of a PROXY v2 service and returns a
// header-carrying client segment, a later one and a server segment, as
// bytes to restore frames from.
func proxyFlow(t testing.TB, r *rig) (first, later, back []byte) {
	syn := pframe(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 10, srcMAC: macClient})
	if r.b.Process(ClientSide, syn) != Forward {
		t.Fatal("SYN")
	}
	lport := uint16(decode(t, syn).tcp.SrcPort)
	first = frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 11, ackNum: 7001, srcMAC: macClient, payload: make([]byte, 1400)}).Bytes()
	later = frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 1411, ackNum: 7001, srcMAC: macClient, payload: make([]byte, 1400)}).Bytes()
	back = frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 7001, ackNum: 1411, srcMAC: macGateway, payload: make([]byte, 1400)}).Bytes()
	return first, later, back
}

// restore puts b back into f at the readers' headroom.
func restore(f *Frame, b []byte) {
	f.Off, f.Len, f.VNet = 128, len(b), nil
	copy(f.Buf[128:], b)
}

// No allocation per packet: neither the header segment nor the others.
func TestProxyAllocs(t *testing.T) {
	r := proxyRig(t, ClientAddrProxyV2, false)
	first, later, back := proxyFlow(t, r)
	f := &Frame{Buf: make([]byte, 128+len(first)+64)}
	for _, c := range []struct {
		name string
		b    []byte
		side Side
	}{{"header", first, ClientSide}, {"later", later, ClientSide}, {"back", back, ServerSide}} {
		if a := totalAllocs(1000, func() {
			restore(f, c.b)
			if r.b.Process(c.side, f) != Forward {
				t.Fatal("not forwarded")
			}
		}); a != 0 {
			t.Fatalf("%s: %d allocations over 1000 packets", c.name, a)
		}
	}
	// The cookie SYN-ACK of a PROXY service measures its header: still none.
	sp := proxyRig(t, ClientAddrProxyV1, true)
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 10, srcMAC: macClient, opts: synOpts(1460, 7, 1)}).Bytes()
	if a := totalAllocs(1000, func() {
		restore(f, syn)
		if sp.b.Process(ClientSide, f) != Reply {
			t.Fatal("not answered")
		}
	}); a != 0 {
		t.Fatalf("cookie SYN-ACK: %d allocations over 1000", a)
	}
}

// BenchmarkForwardProxy is BenchmarkForward/conns=1 for a PROXY v2
// service: established segments both ways (the header's shift and the
// server's acks mapped back), and, apart, the segment that takes the header.
func BenchmarkForwardProxy(b *testing.B) {
	for _, c := range []struct {
		name string
		mode ClientAddr
	}{{"none", ClientAddrNone}, {"proxy-v2", ClientAddrProxyV2}} {
		b.Run(c.name, func(b *testing.B) {
			r := proxyRig(b, c.mode, false)
			_, later, back := proxyFlow(b, r)
			in, out := &Frame{Buf: make([]byte, 128+len(later))}, &Frame{Buf: make([]byte, 128+len(back))}
			restore(in, later)
			restore(out, back)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f, orig, side := in, later, ClientSide
				if i&1 == 1 {
					f, orig, side = out, back, ServerSide
				}
				copy(f.Buf[128:128+54], orig[:54])
				if r.b.Process(side, f) != Forward {
					b.Fatal("not forwarded")
				}
			}
		})
	}
	b.Run("header-segment", func(b *testing.B) {
		r := proxyRig(b, ClientAddrProxyV2, false)
		first, _, _ := proxyFlow(b, r)
		f := &Frame{Buf: make([]byte, 128+len(first)+64)}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			f.Off, f.Len = 128, len(first)
			copy(f.Buf[128:128+54], first[:54])
			if r.b.Process(ClientSide, f) != Forward {
				b.Fatal("not forwarded")
			}
		}
	})
}
