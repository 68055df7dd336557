package nat

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"
	proxyproto "github.com/pires/go-proxyproto"
)

// The client's address over NAT46 (an IPv4 client, an IPv6 server): the
// TOA option is the IPv4 one (8 bytes), PROXY v1/v2 headers name the IPv4
// client (TCP4, AF_INET) toward the IPv6 server, with the server side's
// arithmetic IPv6's: the mirror of nat64_clientaddr_test.go.

// rig46With is newRig46 with one real server (rs6a) and the service set
// to synproxy and client address mode.
func rig46With(t *testing.T, proto Protocol, synproxy bool, mode ClientAddr, mod func(*Config)) (*rig, *[]sent) {
	t.Helper()
	out := new([]sent)
	r := newRig46(t, proto, func(c *Config) {
		c.Synproxy = DefaultSynproxy()
		if mod != nil {
			mod(c)
		}
	})
	r.b.Attach(recordLink{out})
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
	r.setWeight(t, rs6b, 8080, 0)
	return r, out
}

// proxyHdr46 is the header a NAT46 connection from client:cport to vip:80
// gets in mode.
func proxyHdr46(mode ClientAddr, cport uint16) []byte {
	if mode == ClientAddrProxyV1 {
		return fmt.Appendf(nil, "PROXY TCP4 %s %s %d 80\r\n", client, vip, cport)
	}
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x21, 0x11, 0, 12)
	s, d := client.As4(), vip.As4()
	h = append(append(h, s[:]...), d[:]...)
	h = binary.BigEndian.AppendUint16(h, cport)
	return binary.BigEndian.AppendUint16(h, 80)
}

// readProxy46 reads a PROXY header at the start of payload with
// go-proxyproto and checks it names client:cport -> vip:80 over TCP4
// (UDPv4 for a datagram), returning what follows it.
func readProxy46(t *testing.T, payload []byte, udp bool, cport uint16) []byte {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(payload))
	h, err := proxyproto.Read(br)
	if err != nil {
		t.Fatalf("payload %q: %v", payload[:min(len(payload), 80)], err)
	}
	want, proto := netip.AddrPortFrom(client, cport), proxyproto.TCPv4
	var src, dst netip.AddrPort
	if udp {
		proto = proxyproto.UDPv4
		src, dst = h.SourceAddr.(*net.UDPAddr).AddrPort(), h.DestinationAddr.(*net.UDPAddr).AddrPort()
	} else {
		src, dst = h.SourceAddr.(*net.TCPAddr).AddrPort(), h.DestinationAddr.(*net.TCPAddr).AddrPort()
	}
	if h.TransportProtocol != proto || src.Addr().Unmap() != want.Addr() || src.Port() != cport || dst.Addr().Unmap() != vip || dst.Port() != 80 {
		t.Fatalf("header %v %v -> %v, want %v %v -> %v:80", h.TransportProtocol, src, dst, proto, want, vip)
	}
	return payload[len(payload)-br.Buffered():]
}

// TestNAT46ProxyHeaders: a plain NAT46 connection with PROXY v1 or v2.
// The client's SYN reaches the IPv6 server with its MSS clamped to
// ClientMTU - 40; the server's SYN-ACK MSS reaches the client less the
// header's length and never past ServerMTU - 60 less it, IPv6's headers.
// The first data reaches the IPv6 server after the header naming the IPv4
// client and VIP, read back by go-proxyproto; a first segment the client
// sends larger than it was told is cut to end at exactly the IPv6 server
// side's 1500 bytes (not IPv4's 20 fewer).
func TestNAT46ProxyHeaders(t *testing.T) {
	for _, c := range []struct {
		mode               ClientAddr
		serverMSS, wantMSS uint16
	}{
		{ClientAddrProxyV1, 1440, 0}, {ClientAddrProxyV2, 1440, 0},
		{ClientAddrProxyV1, 8960, 0}, {ClientAddrProxyV2, 8960, 0},
		{ClientAddrProxyV2, 1000, 1000 - 28},
	} {
		t.Run(fmt.Sprintf("%v/mss=%d", c.mode, c.serverMSS), func(t *testing.T) {
			r, _ := rig46With(t, TCP, false, c.mode, nil)
			const isn, cport = 0x2000, 41000
			hdr := proxyHdr46(c.mode, cport)
			want := c.wantMSS
			if want == 0 {
				want = uint16(1500 - 40 - 20 - len(hdr))
			}
			cl := func(s pktSpec) *Frame {
				s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client, vip, cport, 80, TCP, macClient
				return pframe(t, s)
			}
			syn := cl(pktSpec{syn: true, seq: isn, opts: []layers.TCPOption{mssOpt(8960)}})
			if v := r.b.Process(ClientSide, syn); v != Forward {
				t.Fatalf("SYN %v %v", v, r.b.Stats.Drops())
			}
			s := decode(t, syn)
			if s.ip6 == nil || mssOf(t, s.tcp) != 1460 {
				t.Fatalf("SYN to the server: IPv6 %v, MSS %d, want 1460 (ClientMTU - 40)", s.ip6 != nil, mssOf(t, s.tcp))
			}
			sa := pframe(t, pktSpec{src: rs6a, dst: lip6, sport: 8080, dport: uint16(s.tcp.SrcPort), proto: TCP, syn: true, ack: true, seq: 9000, ackNum: s.tcp.Seq + 1, opts: []layers.TCPOption{mssOpt(c.serverMSS)}, srcMAC: macGateway})
			if v := r.b.Process(ServerSide, sa); v != Forward {
				t.Fatalf("SYN-ACK %v", v)
			}
			if d := decode(t, sa); d.ip == nil || mssOf(t, d.tcp) != want {
				t.Fatalf("SYN-ACK to the client: MSS %d, want %d", mssOf(t, d.tcp), want)
			}
			ack := cl(pktSpec{ack: true, seq: isn + 1, ackNum: 9001, payload: []byte("GET /")})
			if v := r.b.Process(ClientSide, ack); v != Forward {
				t.Fatalf("first data %v %v", v, r.b.Stats.Drops())
			}
			d := decode(t, ack)
			if d.ip6 == nil || addr6(d.ip6.SrcIP) != lip6 || addr6(d.ip6.DstIP) != rs6a {
				t.Fatal("first data not IPv6 LIP -> RS")
			}
			if !bytes.HasPrefix(d.tcp.Payload, hdr) || int(d.ip6.Length) != 20+len(hdr)+5 {
				t.Fatalf("first data %q (%d bytes), want %q then the client's", d.tcp.Payload, d.ip6.Length, hdr)
			}
			if rest := readProxy46(t, d.tcp.Payload, false, cport); string(rest) != "GET /" {
				t.Fatalf("after the header %q", rest)
			}
			// Again at ISN + 1, larger than the MSS, filling the IPv6
			// server side once translated: cut at the IPv6 MTU.
			body := bytes.Repeat([]byte("x"), 1440)
			big := cl(pktSpec{ack: true, seq: isn + 1, ackNum: 9001, payload: body})
			if v := r.b.Process(ClientSide, big); v != Forward {
				t.Fatalf("full segment %v %v", v, r.b.Stats.Drops())
			}
			if d := decode(t, big); d.ip6 == nil || int(d.ip6.Length)+40 != 1500 || !bytes.HasPrefix(d.tcp.Payload, hdr) || len(d.tcp.Payload) != 1440 {
				t.Fatalf("full segment: IPv6 payload length %d, payload %d: want 1460 and 1440, the header first", d.ip6.Length, len(d.tcp.Payload))
			}
			// A full IPv4 segment would pass it by 20 bytes before the
			// header: with DF the client is told the MTU that fits.
			full := cl(pktSpec{ack: true, seq: isn + 1, ackNum: 9001, payload: bytes.Repeat([]byte("x"), 1460)})
			setDF(full)
			if v := r.b.Process(ClientSide, full); v != Reply || r.b.Stats.Drop(DropNAT64TooBig) != 1 {
				t.Fatalf("full IPv4 segment %v %v", v, nonZero(r.b.Stats.Drops()))
			}
		})
	}
}

// TestNAT46ProxyUDP: PROXY v2 before a NAT46 datagram is AF_INET/DGRAM (28
// bytes) naming the IPv4 client, inside an IPv6 datagram whose checksum
// verifies; the MTU edge is IPv6's: a payload that makes the IPv6 packet
// 1500 bytes with the header (1500 - 40 - 8 - 28) goes, one byte more is
// dropped and counted. A client datagram without a checksum gets one.
func TestNAT46ProxyUDP(t *testing.T) {
	r, _ := rig46With(t, UDP, false, ClientAddrProxyV2, nil)
	for _, zero := range []bool{false, true} {
		f := pframe(t, pktSpec{src: client, dst: vip, sport: 42000, dport: 80, proto: UDP, payload: []byte("ping"), srcMAC: macClient})
		if zero {
			f.Bytes()[34+6], f.Bytes()[34+7] = 0, 0
		}
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("UDP: %v %v", v, r.b.Stats.Drops())
		}
		d := decode(t, f) // the UDP checksum verified over IPv6, never 0
		if d.ip6 == nil || int(d.udp.Length) != 8+28+4 || int(d.ip6.Length) != 8+28+4 {
			t.Fatalf("not IPv6, or UDP length %d", d.udp.Length)
		}
		if rest := readProxy46(t, d.udp.Payload, true, 42000); string(rest) != "ping" {
			t.Fatalf("after the header %q", rest)
		}
	}
	const fits = 1500 - 40 - 8 - 28
	ok := pframe(t, pktSpec{src: client, dst: vip, sport: 42000, dport: 80, proto: UDP, payload: make([]byte, fits), srcMAC: macClient})
	if v := r.b.Process(ClientSide, ok); v != Forward {
		t.Fatalf("a datagram that fits: %v %v", v, r.b.Stats.Drops())
	}
	if d := decode(t, ok); d.ip6 == nil || int(d.ip6.Length)+40 != 1500 {
		t.Fatalf("IPv6 payload length %d, want 1460", d.ip6.Length)
	}
	big := pframe(t, pktSpec{src: client, dst: vip, sport: 42000, dport: 80, proto: UDP, payload: make([]byte, fits+1), srcMAC: macClient})
	if v := r.b.Process(ClientSide, big); v != Drop || r.b.Stats.Drop(DropUDPProxyBig) != 1 {
		t.Fatalf("too big: %v %v", v, r.b.Stats.Drops())
	}
}

// wantTOA46 checks that a NAT46 segment to the IPv6 server carries exactly
// one TOA option, first, in the IPv4 layout (kind 254, length 8: the
// client's port, then its 4-byte address).
func wantTOA46(t *testing.T, d decoded, cport uint16) {
	t.Helper()
	if d.ip6 == nil {
		t.Fatal("not IPv6")
	}
	toas, first := toaOpts(d)
	if len(toas) != 1 || !first {
		t.Fatalf("TOA options %v (first %v) in %v, want one, first", toas, first, d.tcp.Options)
	}
	o := toas[0]
	if o.OptionLength != 8 || len(o.OptionData) != 6 || binary.BigEndian.Uint16(o.OptionData) != cport || [4]byte(o.OptionData[2:]) != client.As4() {
		t.Fatalf("TOA %+v, want length 8, port %d, address %v", o, cport, client)
	}
}

// TestNAT46TOA: a plain NAT46 connection of a TOA service. The server's
// SYN-ACK MSS reaches the client at most ServerMTU - 60 - 8 (IPv6's
// headers and the option); the handshake ACK and the first data reach the
// IPv6 server with the 8-byte IPv4 option, decoded by gopacket with every
// checksum from scratch; the room is the IPv6 server side's: 1432 bytes of
// payload take the option to exactly 1500 bytes, 1433 go without it
// (toa_no_room).
func TestNAT46TOA(t *testing.T) {
	for _, c := range []struct{ serverMSS, want uint16 }{{1440, 1432}, {8960, 1432}, {1000, 1000}} {
		r, _ := rig46With(t, TCP, false, ClientAddrTOA, nil)
		const cport = 41000
		var rsISN uint32 = 0x7000
		syn := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, syn: true, seq: 100, srcMAC: macClient, opts: []layers.TCPOption{mssOpt(1460)}})
		if v := r.b.Process(ClientSide, syn); v != Forward {
			t.Fatalf("SYN: %v %v", v, r.b.Stats.Drops())
		}
		d := decode(t, syn)
		wantNoTOA(t, d)
		lport := uint16(d.tcp.SrcPort)
		sa := frame(t, pktSpec{src: rs6a, dst: lip6, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: d.tcp.Seq + 1, srcMAC: macGateway, opts: []layers.TCPOption{mssOpt(c.serverMSS)}})
		if v := r.b.Process(ServerSide, sa); v != Forward {
			t.Fatalf("SYN-ACK: %v %v", v, r.b.Stats.Drops())
		}
		if got := mssOf(t, decode(t, sa).tcp); got != c.want {
			t.Fatalf("server MSS %d reached the client as %d, want %d", c.serverMSS, got, c.want)
		}
		send := func(payload int) decoded {
			t.Helper()
			f := pframe(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: 101, ackNum: rsISN + 1, srcMAC: macClient, payload: make([]byte, payload)})
			if v := r.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("client segment: %v %v", v, r.b.Stats.Drops())
			}
			d := decode(t, f)
			if d.ip6 == nil || int(d.ip6.Length) != int(d.tcp.DataOffset)*4+payload {
				t.Fatalf("not an IPv6 segment with the payload's %d bytes", payload)
			}
			return d
		}
		wantTOA46(t, send(0), cport)
		d = send(1432)
		wantTOA46(t, d, cport)
		if int(d.ip6.Length)+40 != 1500 {
			t.Fatalf("IPv6 payload length %d, want 1460", d.ip6.Length)
		}
		wantNoTOA(t, send(1433))
		if ins, nr := r.b.Stats.TOA(); ins != 2 || nr != 1 {
			t.Fatalf("TOA counters: %d inserted, %d no room; want 2, 1", ins, nr)
		}
	}
}

// synproxy46 makes a NAT46 SYNPROXY rig in mode and runs the cookie
// handshake from client:cport with ISN isn announcing clientMSS: it
// returns the cookie SYN-ACK's MSS, the cookie, and the SYN tapvs sent the
// server.
func synproxy46(t *testing.T, mode ClientAddr, cport uint16, isn uint32, clientMSS uint16) (r *rig, out *[]sent, mss uint16, cookie uint32, syn decoded) {
	t.Helper()
	r, out = rig46With(t, TCP, true, mode, nil)
	cl := func(s pktSpec) *Frame {
		s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client, vip, cport, 80, TCP, macClient
		return pframe(t, s)
	}
	f := cl(pktSpec{syn: true, seq: isn, opts: synOpts(clientMSS, 7, 1000)})
	if v := r.b.Process(ClientSide, f); v != Reply {
		t.Fatalf("SYN: %v %v", v, r.b.Stats.Drops())
	}
	sa := decode(t, f)
	if sa.ip == nil || !sa.tcp.SYN || !sa.tcp.ACK || sa.tcp.Ack != isn+1 || addr4(sa.ip.SrcIP) != vip || addr4(sa.ip.DstIP) != client {
		t.Fatalf("cookie SYN-ACK %+v", sa.tcp)
	}
	o := parsedOpts(t, sa.tcp)
	cookie = sa.tcp.Seq
	ack := cl(pktSpec{ack: true, seq: isn + 1, ackNum: cookie + 1, opts: []layers.TCPOption{nop, nop, tsOpt(1001, o.TSval)}})
	if v := r.b.Process(ClientSide, ack); v != Forward {
		t.Fatalf("ACK: %v %v", v, r.b.Stats.Drops())
	}
	syn = decode(t, ack)
	if syn.ip6 == nil || !syn.tcp.SYN || syn.tcp.ACK || syn.tcp.Seq != isn || addr6(syn.ip6.SrcIP) != lip6 || addr6(syn.ip6.DstIP) != rs6a {
		t.Fatalf("SYN to the server: IPv6 %v, %+v", syn.ip6 != nil, syn.tcp)
	}
	return r, out, o.MSS, cookie, syn
}

// TestNAT46Synproxy: SYNPROXY on a NAT46 service. The cookie handshake is
// the IPv4 client's: the SYN-ACK from the VIP announces the configured
// MSS less 20 (the server side is IPv6: the client's segments grow by 20
// bytes on the way); the client's cookie ACK opens an IPv6 SYN from the
// LIP with the client's ISN and MSS; the server's SYN-ACK releases the
// held ACK over IPv6; server data reaches the client over IPv4 at the
// cookie's numbers; an expiry's RSTs are IPv4 to the client and IPv6 to
// the server. Checksums from scratch.
func TestNAT46Synproxy(t *testing.T) {
	const isn, cport = 0x10000000, 40000
	r, out, mss, cookie, syn := synproxy46(t, ClientAddrNone, cport, isn, 1460)
	if mss != 1440 {
		t.Fatalf("cookie SYN-ACK MSS %d, want 1440", mss)
	}
	if got := mssOf(t, syn.tcp); got != 1460 {
		t.Fatalf("SYN to the server: MSS %d, want the client's 1460", got)
	}
	lport := uint16(syn.tcp.SrcPort)
	const rsISN = 0x5000
	rsa := pframe(t, pktSpec{src: rs6a, dst: lip6, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: isn + 1, srcMAC: macGateway})
	if v := r.b.Process(ServerSide, rsa); v != Release {
		t.Fatalf("server SYN-ACK: %v %v", v, r.b.Stats.Drops())
	}
	released(out, ServerSide, rsa)
	if len(*out) != 1 {
		t.Fatalf("%d frames released, want the held ACK", len(*out))
	}
	d := decodeRaw(t, (*out)[0].frame)
	if d.ip6 == nil || d.tcp.SYN || d.tcp.Seq != isn+1 || d.tcp.Ack != rsISN+1 || addr6(d.ip6.SrcIP) != lip6 || addr6(d.ip6.DstIP) != rs6a {
		t.Fatalf("released ACK: IPv6 %v, %+v", d.ip6 != nil, d.tcp)
	}
	resp := pframe(t, pktSpec{src: rs6a, dst: lip6, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: isn + 1, payload: []byte("hi"), srcMAC: macGateway})
	if v := r.b.Process(ServerSide, resp); v != Forward {
		t.Fatalf("server data: %v %v", v, r.b.Stats.Drops())
	}
	if d := decode(t, resp); d.ip == nil || d.tcp.Seq != cookie+1 || addr4(d.ip.SrcIP) != vip || addr4(d.ip.DstIP) != client || string(d.tcp.Payload) != "hi" {
		t.Fatalf("to the client: IPv4 %v, seq %#x (want %#x)", d.ip != nil, d.tcp.Seq, cookie+1)
	}
	*out = (*out)[:0]
	conn := r.b.Table().lookup(&tupleKey{src: client.As16(), dst: vip.As16(), sport: cport, dport: 80, proto: TCP})
	if conn == nil {
		t.Fatal("no connection")
	}
	if n := r.b.expireResets(conn, stEstablished); n != 2 || len(*out) != 2 {
		t.Fatalf("%d RSTs sent (%d frames)", n, len(*out))
	}
	for _, o := range *out {
		d := decodeRaw(t, o.frame)
		if !d.tcp.RST || (o.side == ClientSide) != (d.ip != nil) || (o.side == ServerSide) != (d.ip6 != nil) {
			t.Fatalf("expiry RST to the %v side: IPv4 %v, IPv6 %v", o.side, d.ip != nil, d.ip6 != nil)
		}
	}
}

// TestNAT46SynproxyClientAddr: SYNPROXY with TOA or a PROXY header on a
// NAT46 service. The cookie SYN-ACK's MSS leaves room for what the
// client's segments carry to the IPv6 server (1440 less the option's 8,
// the v1 header's length, v2's 28); the held handshake ACK is released
// over IPv6 carrying the 8-byte IPv4 TOA, or the header naming the IPv4
// client (TCP4, AF_INET).
func TestNAT46SynproxyClientAddr(t *testing.T) {
	for _, mode := range []ClientAddr{ClientAddrTOA, ClientAddrProxyV1, ClientAddrProxyV2} {
		t.Run(mode.String(), func(t *testing.T) {
			const isn, cport = 0x3000, 41000
			r, out, mss, _, syn := synproxy46(t, mode, cport, isn, 1460)
			want := uint16(1440 - 8)
			if mode != ClientAddrTOA {
				want = uint16(1440 - len(proxyHdr46(mode, cport)))
			}
			if mss != want {
				t.Fatalf("cookie SYN-ACK MSS %d, want %d", mss, want)
			}
			rsa := pframe(t, pktSpec{src: rs6a, dst: lip6, sport: 8080, dport: uint16(syn.tcp.SrcPort), proto: TCP, syn: true, ack: true, seq: 9000, ackNum: isn + 1, srcMAC: macGateway})
			if v := r.b.Process(ServerSide, rsa); v != Release {
				t.Fatalf("server SYN-ACK: %v %v", v, r.b.Stats.Drops())
			}
			released(out, ServerSide, rsa)
			if len(*out) != 1 {
				t.Fatalf("%d frames released", len(*out))
			}
			d := decodeRaw(t, (*out)[0].frame)
			if d.ip6 == nil || d.tcp.Ack != 9001 {
				t.Fatalf("released ACK: IPv6 %v, %+v", d.ip6 != nil, d.tcp)
			}
			if mode == ClientAddrTOA {
				wantTOA46(t, d, cport)
				return
			}
			if rest := readProxy46(t, d.tcp.Payload, false, cport); len(rest) != 0 {
				t.Fatalf("after the header %q", rest)
			}
		})
	}
}

// TestNAT46SynproxyHeldTooBig: a client that ignores the cookie's MSS and
// sends, before the server has answered, a segment too big for the IPv6
// side once translated and without DF: held, it cannot be cut on release
// (a released frame leaves whole), so it is dropped and counted, and the
// held ACK before it is still released.
func TestNAT46SynproxyHeldTooBig(t *testing.T) {
	const cport, isn = 41000, 0x1000
	r, out, _, cookie, syn := synproxy46(t, ClientAddrNone, cport, isn, 1460)
	data := pframe(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: isn + 1, ackNum: cookie + 1, payload: make([]byte, 1460), srcMAC: macClient})
	if v := r.b.Process(ClientSide, data); v != Stolen {
		t.Fatalf("data before the server's SYN-ACK: %v, want held", v)
	}
	rsa := pframe(t, pktSpec{src: rs6a, dst: lip6, sport: 8080, dport: uint16(syn.tcp.SrcPort), proto: TCP, syn: true, ack: true, seq: 0x5000, ackNum: isn + 1, srcMAC: macGateway})
	if v := r.b.Process(ServerSide, rsa); v != Release {
		t.Fatalf("server SYN-ACK: %v %v", v, nonZero(r.b.Stats.Drops()))
	}
	*out = (*out)[:0]
	released(out, ServerSide, rsa)
	if len(*out) != 1 || len((*out)[0].frame)-14 > r.b.cfg.ServerMTU || r.b.Stats.Drop(DropNAT64TooBig) != 1 {
		t.Fatalf("%d released, drops %v; want the ACK alone and the segment counted", len(*out), nonZero(r.b.Stats.Drops()))
	}
}
