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

	"github.com/tapvs/tapvs/tun"
)

// The client's address over NAT64 (an IPv6 client, an IPv4 server): PROXY
// v1/v2 headers name the IPv6 client (TCP6, AF_INET6) toward the IPv4
// server, with the server side's arithmetic IPv4's.

// rig64With is newRig64 with one real server (rs1) and the service set to
// synproxy and client address mode.
func rig64With(t *testing.T, proto Protocol, synproxy bool, mode ClientAddr) (*rig, *[]sent) {
	t.Helper()
	out := new([]sent)
	r := newRig64(t, proto, func(c *Config) { c.Synproxy = DefaultSynproxy() })
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
	r.setWeight(t, rs2, 8080, 0)
	return r, out
}

// proxyHdr64 is the header a NAT64 connection from client6:cport to
// [vip64]:80 gets in mode.
func proxyHdr64(mode ClientAddr, cport uint16) []byte {
	if mode == ClientAddrProxyV1 {
		return fmt.Appendf(nil, "PROXY TCP6 %s %s %d 80\r\n", client6, vip64, cport)
	}
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x21, 0x21, 0, 36)
	s, d := client6.As16(), vip64.As16()
	h = append(append(h, s[:]...), d[:]...)
	h = binary.BigEndian.AppendUint16(h, cport)
	return binary.BigEndian.AppendUint16(h, 80)
}

// readProxy64 reads a PROXY header at the start of payload with
// go-proxyproto and checks it names client6:cport -> [vip64]:80 over TCP6
// (UDPv6 for a datagram), returning what follows it.
func readProxy64(t *testing.T, payload []byte, udp bool, cport uint16) []byte {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(payload))
	h, err := proxyproto.Read(br)
	if err != nil {
		t.Fatalf("payload %q: %v", payload[:min(len(payload), 80)], err)
	}
	want, proto := netip.AddrPortFrom(client6, cport), proxyproto.TCPv6
	var src, dst netip.AddrPort
	if udp {
		proto = proxyproto.UDPv6
		src, dst = h.SourceAddr.(*net.UDPAddr).AddrPort(), h.DestinationAddr.(*net.UDPAddr).AddrPort()
	} else {
		src, dst = h.SourceAddr.(*net.TCPAddr).AddrPort(), h.DestinationAddr.(*net.TCPAddr).AddrPort()
	}
	if h.TransportProtocol != proto || src != want || dst != netip.AddrPortFrom(vip64, 80) {
		t.Fatalf("header %v %v -> %v, want %v %v -> [%v]:80", h.TransportProtocol, src, dst, proto, want, vip64)
	}
	return payload[len(payload)-br.Buffered():]
}

// TestNAT64ProxyHeaders: a plain NAT64 connection with PROXY v1 or v2.
// The client's SYN reaches the IPv4 server with its MSS clamped for the
// server's segments (ClientMTU - 60); the server's SYN-ACK MSS reaches the
// client less the header's length and never past ServerMTU - 40 less it,
// IPv4's headers (a server announcing 8960 on a 1500 link). The first
// data reaches the IPv4 server after the header naming the IPv6 client and
// VIP, byte for byte, read back by go-proxyproto; a first segment the
// client sends larger than it was told is cut to end at exactly the IPv4
// server side's 1500 bytes (not IPv6's 20 more).
func TestNAT64ProxyHeaders(t *testing.T) {
	for _, c := range []struct {
		mode               ClientAddr
		serverMSS, wantMSS uint16
	}{
		{ClientAddrProxyV1, 1460, 0}, {ClientAddrProxyV2, 1460, 0},
		{ClientAddrProxyV1, 8960, 0}, {ClientAddrProxyV2, 8960, 0},
		{ClientAddrProxyV2, 1000, 1000 - 52},
	} {
		t.Run(fmt.Sprintf("%v/mss=%d", c.mode, c.serverMSS), func(t *testing.T) {
			r, _ := rig64With(t, TCP, false, c.mode)
			const isn, cport = 0x2000, 41000
			hdr := proxyHdr64(c.mode, cport)
			want := c.wantMSS
			if want == 0 {
				want = uint16(1500 - 20 - 20 - len(hdr))
			}
			cl := func(s pktSpec) *Frame {
				s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client6, vip64, cport, 80, TCP, macClient
				return pframe(t, s)
			}
			syn := cl(pktSpec{syn: true, seq: isn, opts: []layers.TCPOption{mssOpt(1460)}})
			if v := r.b.Process(ClientSide, syn); v != Forward {
				t.Fatalf("SYN %v %v", v, r.b.Stats.Drops())
			}
			s := decode(t, syn)
			if s.ip == nil || mssOf(t, s.tcp) != 1440 {
				t.Fatalf("SYN to the server: IPv4 %v, MSS %d, want 1440 (ClientMTU - 60)", s.ip != nil, mssOf(t, s.tcp))
			}
			sa := pframe(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: uint16(s.tcp.SrcPort), proto: TCP, syn: true, ack: true, seq: 9000, ackNum: s.tcp.Seq + 1, opts: []layers.TCPOption{mssOpt(c.serverMSS)}, srcMAC: macGateway})
			if v := r.b.Process(ServerSide, sa); v != Forward {
				t.Fatalf("SYN-ACK %v", v)
			}
			if d := decode(t, sa); d.ip6 == nil || mssOf(t, d.tcp) != want {
				t.Fatalf("SYN-ACK to the client: MSS %d, want %d", mssOf(t, d.tcp), want)
			}
			ack := cl(pktSpec{ack: true, seq: isn + 1, ackNum: 9001, payload: []byte("GET /")})
			if v := r.b.Process(ClientSide, ack); v != Forward {
				t.Fatalf("first data %v %v", v, r.b.Stats.Drops())
			}
			d := decode(t, ack)
			if d.ip == nil || addr4(d.ip.SrcIP) != lip1 || addr4(d.ip.DstIP) != rs1 {
				t.Fatal("first data not IPv4 LIP -> RS")
			}
			if !bytes.HasPrefix(d.tcp.Payload, hdr) || int(d.ip.Length) != 20+20+len(hdr)+5 {
				t.Fatalf("first data %q (%d bytes), want %q then the client's", d.tcp.Payload, d.ip.Length, hdr)
			}
			if rest := readProxy64(t, d.tcp.Payload, false, cport); string(rest) != "GET /" {
				t.Fatalf("after the header %q", rest)
			}
			// Again at ISN + 1, larger than the MSS: cut at the IPv4 MTU.
			body := bytes.Repeat([]byte("x"), 1460)
			big := cl(pktSpec{ack: true, seq: isn + 1, ackNum: 9001, payload: body})
			if v := r.b.Process(ClientSide, big); v != Forward {
				t.Fatalf("full segment %v %v", v, r.b.Stats.Drops())
			}
			if d := decode(t, big); d.ip == nil || d.ip.Length != 1500 || !bytes.HasPrefix(d.tcp.Payload, hdr) || len(d.tcp.Payload) != 1460 {
				t.Fatalf("full segment: IPv4 length %d, payload %d: want 1500 and 1460, the header first", d.ip.Length, len(d.tcp.Payload))
			}
		})
	}
}

// TestNAT64ProxyUDP: PROXY v2 before a NAT64 datagram is AF_INET6/DGRAM
// (52 bytes) naming the IPv6 client, inside an IPv4 datagram whose every
// checksum verifies; the MTU edge is IPv4's: a payload that makes the
// IPv4 packet 1500 bytes with the header (1500 - 20 - 8 - 52) goes, one
// byte more is dropped and counted.
func TestNAT64ProxyUDP(t *testing.T) {
	r, _ := rig64With(t, UDP, false, ClientAddrProxyV2)
	f := pframe(t, pktSpec{src: client6, dst: vip64, sport: 42000, dport: 80, proto: UDP, payload: []byte("ping"), srcMAC: macClient})
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatalf("UDP: %v %v", v, r.b.Stats.Drops())
	}
	d := decode(t, f)
	if d.ip == nil || int(d.udp.Length) != 8+52+4 || int(d.ip.Length) != 20+8+52+4 {
		t.Fatalf("not IPv4, or UDP length %d", d.udp.Length)
	}
	if rest := readProxy64(t, d.udp.Payload, true, 42000); string(rest) != "ping" {
		t.Fatalf("after the header %q", rest)
	}
	const fits = 1500 - 20 - 8 - 52
	ok := pframe(t, pktSpec{src: client6, dst: vip64, sport: 42000, dport: 80, proto: UDP, payload: make([]byte, fits), srcMAC: macClient})
	if v := r.b.Process(ClientSide, ok); v != Forward {
		t.Fatalf("a datagram that fits: %v %v", v, r.b.Stats.Drops())
	}
	if d := decode(t, ok); d.ip == nil || d.ip.Length != 1500 {
		t.Fatalf("IPv4 length %d, want 1500", d.ip.Length)
	}
	big := pframe(t, pktSpec{src: client6, dst: vip64, sport: 42000, dport: 80, proto: UDP, payload: make([]byte, fits+1), srcMAC: macClient})
	if v := r.b.Process(ClientSide, big); v != Drop || r.b.Stats.Drop(DropUDPProxyBig) != 1 {
		t.Fatalf("too big: %v %v", v, r.b.Stats.Drops())
	}
}

// wantTOA64 checks that a NAT64 segment to the IPv4 server carries exactly
// one TOA option, first, in DPVS's IPv6 layout (kind 254, length 20: the
// client's port, then its 16-byte IPv6 address).
func wantTOA64(t *testing.T, d decoded, cport uint16) {
	t.Helper()
	if d.ip == nil {
		t.Fatal("not IPv4")
	}
	toas, first := toaOpts(d)
	if len(toas) != 1 || !first {
		t.Fatalf("TOA options %v (first %v) in %v, want one, first", toas, first, d.tcp.Options)
	}
	o := toas[0]
	if o.OptionLength != 20 || len(o.OptionData) != 18 || binary.BigEndian.Uint16(o.OptionData) != cport || [16]byte(o.OptionData[2:]) != client6.As16() {
		t.Fatalf("TOA %+v, want length 20, port %d, address %v", o, cport, client6)
	}
}

// TestNAT64TOA: a plain NAT64 connection of a TOA service. The server's
// SYN-ACK MSS reaches the client at most ServerMTU - 40 - 20 (IPv4's
// headers and the option); the handshake ACK and the first data reach the
// IPv4 server with the 20-byte option (DPVS's layout for an IPv6 client,
// whatever the server's family), decoded by gopacket with every checksum
// from scratch; the room is the IPv4 server side's: 1440 bytes of payload
// take the option to exactly 1500 bytes, 1441 go without it (toa_no_room).
func TestNAT64TOA(t *testing.T) {
	for _, c := range []struct{ serverMSS, want uint16 }{{1460, 1440}, {8960, 1440}, {1000, 1000}} {
		r, _ := rig64With(t, TCP, false, ClientAddrTOA)
		const cport = 41000
		var rsISN uint32 = 0x7000
		syn := frame(t, pktSpec{src: client6, dst: vip64, sport: cport, dport: 80, proto: TCP, syn: true, seq: 100, srcMAC: macClient, opts: []layers.TCPOption{mssOpt(1460)}})
		if v := r.b.Process(ClientSide, syn); v != Forward {
			t.Fatalf("SYN: %v %v", v, r.b.Stats.Drops())
		}
		d := decode(t, syn)
		wantNoTOA(t, d)
		if mssOf(t, d.tcp) != 1440 {
			t.Fatalf("SYN to the server: MSS %d, want 1440 (ClientMTU - 60)", mssOf(t, d.tcp))
		}
		lport := uint16(d.tcp.SrcPort)
		sa := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: d.tcp.Seq + 1, srcMAC: macGateway, opts: []layers.TCPOption{mssOpt(c.serverMSS)}})
		if v := r.b.Process(ServerSide, sa); v != Forward {
			t.Fatalf("SYN-ACK: %v %v", v, r.b.Stats.Drops())
		}
		if got := mssOf(t, decode(t, sa).tcp); got != c.want {
			t.Fatalf("server MSS %d reached the client as %d, want %d", c.serverMSS, got, c.want)
		}
		send := func(payload int) decoded {
			t.Helper()
			f := frame(t, pktSpec{src: client6, dst: vip64, sport: cport, dport: 80, proto: TCP, ack: true, seq: 101, ackNum: rsISN + 1, srcMAC: macClient, payload: make([]byte, payload)})
			if v := r.b.Process(ClientSide, f); v != Forward {
				t.Fatalf("client segment: %v %v", v, r.b.Stats.Drops())
			}
			d := decode(t, f)
			if d.ip == nil || int(d.ip.Length) != 20+int(d.tcp.DataOffset)*4+payload {
				t.Fatalf("not an IPv4 segment with the payload's %d bytes", payload)
			}
			return d
		}
		wantTOA64(t, send(0), cport)
		d = send(1440)
		wantTOA64(t, d, cport)
		if d.ip.Length != 1500 {
			t.Fatalf("IPv4 length %d, want 1500", d.ip.Length)
		}
		wantNoTOA(t, send(1441))
		if ins, nr := r.b.Stats.TOA(); ins != 2 || nr != 1 {
			t.Fatalf("TOA counters: %d inserted, %d no room; want 2, 1", ins, nr)
		}
	}
}

// TestNAT64TOASuperFrame: a TSO super-frame from an IPv6 client gets the
// option when its IPv4 total length, once translated, is at most 65535
// with it (20 + TCP + 20), and goes without it one byte past: never one
// that to4 would then have to drop.
func TestNAT64TOASuperFrame(t *testing.T) {
	r, _ := rig64With(t, TCP, false, ClientAddrTOA)
	const cport = 42000
	var rsISN uint32 = 0x9000
	syn := frame(t, pktSpec{src: client6, dst: vip64, sport: cport, dport: 80, proto: TCP, syn: true, seq: 100, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatal(v)
	}
	d := decode(t, syn)
	sa := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: uint16(d.tcp.SrcPort), proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: d.tcp.Seq + 1, srcMAC: macGateway})
	if v := r.b.Process(ServerSide, sa); v != Forward {
		t.Fatal(v)
	}
	for _, c := range []struct {
		payload int
		toa     bool
	}{{65535 - 20 - 20 - 20, true}, {65535 - 20 - 20 - 20 + 1, false}} {
		f := frame(t, pktSpec{src: client6, dst: vip64, sport: cport, dport: 80, proto: TCP, ack: true, seq: 101, ackNum: rsISN + 1, srcMAC: macClient, payload: make([]byte, c.payload)})
		inVNet(f).SetGSO(tun.VNetGSOTCPv6, 14+40+20, 1400)
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("payload %d: %v %v", c.payload, v, nonZero(r.b.Stats.Drops()))
		}
		d := decode(t, f)
		if c.toa {
			wantTOA64(t, d, cport)
		} else {
			wantNoTOA(t, d)
		}
		if f.VNet.GSOType() != tun.VNetGSOTCPv4 || int(f.VNet.HdrLen()) != 14+20+int(d.tcp.DataOffset)*4 {
			t.Fatalf("payload %d: virtio-net header %v", c.payload, f.VNet)
		}
	}
}

// synproxy64 makes a NAT64 SYNPROXY rig (client side MTU clientMTU) in
// mode and runs the cookie handshake from client6:cport with ISN isn
// announcing clientMSS: it returns the cookie SYN-ACK's MSS, the cookie,
// and the SYN tapvs sent the server.
func synproxy64(t *testing.T, clientMTU int, mode ClientAddr, cport uint16, isn uint32, clientMSS uint16) (r *rig, out *[]sent, mss uint16, cookie uint32, syn decoded) {
	t.Helper()
	out = new([]sent)
	r = newRig64(t, TCP, func(c *Config) { c.Synproxy, c.ClientMTU = DefaultSynproxy(), clientMTU })
	r.b.Attach(recordLink{out})
	if err := r.b.Update(func(tx *Tx) error {
		if err := tx.SetSynproxy(r.svc, true); err != nil {
			return err
		}
		return tx.SetClientAddr(r.svc, mode)
	}); err != nil {
		t.Fatal(err)
	}
	r.setWeight(t, rs2, 8080, 0)
	cl := func(s pktSpec) *Frame {
		s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client6, vip64, cport, 80, TCP, macClient
		return pframe(t, s)
	}
	f := cl(pktSpec{syn: true, seq: isn, opts: synOpts(clientMSS, 7, 1000)})
	if v := r.b.Process(ClientSide, f); v != Reply {
		t.Fatalf("SYN: %v %v", v, r.b.Stats.Drops())
	}
	sa := decode(t, f)
	if sa.ip6 == nil || !sa.tcp.SYN || !sa.tcp.ACK || sa.tcp.Ack != isn+1 || addr6(sa.ip6.SrcIP) != vip64 || addr6(sa.ip6.DstIP) != client6 {
		t.Fatalf("cookie SYN-ACK %+v", sa.tcp)
	}
	if r.b.Table().Len() != 0 {
		t.Fatal("a SYN made state")
	}
	o := parsedOpts(t, sa.tcp)
	cookie = sa.tcp.Seq
	ack := cl(pktSpec{ack: true, seq: isn + 1, ackNum: cookie + 1, opts: []layers.TCPOption{nop, nop, tsOpt(1001, o.TSval)}})
	if v := r.b.Process(ClientSide, ack); v != Forward {
		t.Fatalf("ACK: %v %v", v, r.b.Stats.Drops())
	}
	syn = decode(t, ack)
	if syn.ip == nil || !syn.tcp.SYN || syn.tcp.ACK || syn.tcp.Seq != isn || addr4(syn.ip.SrcIP) != lip1 || addr4(syn.ip.DstIP) != rs1 {
		t.Fatalf("SYN to the server: IPv4 %v, %+v", syn.ip != nil, syn.tcp)
	}
	return r, out, o.MSS, cookie, syn
}

// TestNAT64Synproxy: SYNPROXY on a NAT64 service. The cookie handshake is
// the IPv6 client's: the SYN-ACK from VIP64 announces the configured MSS
// (the server side is IPv4: no 20 bytes off for IPv6) bounded by the
// client side's MTU - 60; the client's cookie ACK opens an IPv4 SYN from
// the LIP with the client's ISN and its MSS clamped to the client side's
// MTU - 60 (the server's segments grow by 20 toward the client); the
// server's SYN-ACK releases the held ACK over IPv4; server data reaches
// the client over IPv6 at the cookie's numbers; an expiry's RSTs are IPv6
// to the client and IPv4 to the server. Checksums from scratch.
func TestNAT64Synproxy(t *testing.T) {
	for _, c := range []struct {
		clientMTU                    int
		clientMSS, cookieMSS, synMSS uint16
	}{
		{1500, 1440, 1440, 1440}, // the cookie's IPv6 table keeps 1440
		{1500, 8960, 1440, 1440}, // a jumbo client: 8940 in the table, clamped
		{1400, 1440, 1340, 1340},
		{9000, 8960, 1460, 8940}, // the configured MSS whole: the server side is IPv4
	} {
		t.Run(fmt.Sprintf("mtu=%d/mss=%d", c.clientMTU, c.clientMSS), func(t *testing.T) {
			const isn, cport = 0x10000000, 40000
			r, out, mss, cookie, syn := synproxy64(t, c.clientMTU, ClientAddrNone, cport, isn, c.clientMSS)
			if mss != c.cookieMSS {
				t.Fatalf("cookie SYN-ACK MSS %d, want %d", mss, c.cookieMSS)
			}
			if got := mssOf(t, syn.tcp); got != c.synMSS {
				t.Fatalf("SYN to the server: MSS %d, want %d", got, c.synMSS)
			}
			lport := uint16(syn.tcp.SrcPort)
			const rsISN = 0x5000
			rsa := pframe(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: isn + 1, srcMAC: macGateway})
			if v := r.b.Process(ServerSide, rsa); v != Release {
				t.Fatalf("server SYN-ACK: %v %v", v, r.b.Stats.Drops())
			}
			released(out, ServerSide, rsa)
			if len(*out) != 1 {
				t.Fatalf("%d frames released, want the held ACK", len(*out))
			}
			d := decodeRaw(t, (*out)[0].frame)
			if d.ip == nil || d.tcp.SYN || d.tcp.Seq != isn+1 || d.tcp.Ack != rsISN+1 || addr4(d.ip.SrcIP) != lip1 || addr4(d.ip.DstIP) != rs1 {
				t.Fatalf("released ACK: IPv4 %v, %+v", d.ip != nil, d.tcp)
			}
			resp := pframe(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: isn + 1, payload: []byte("hi"), srcMAC: macGateway})
			if v := r.b.Process(ServerSide, resp); v != Forward {
				t.Fatalf("server data: %v %v", v, r.b.Stats.Drops())
			}
			if d := decode(t, resp); d.ip6 == nil || d.tcp.Seq != cookie+1 || addr6(d.ip6.SrcIP) != vip64 || addr6(d.ip6.DstIP) != client6 || string(d.tcp.Payload) != "hi" {
				t.Fatalf("to the client: IPv6 %v, seq %#x (want %#x)", d.ip6 != nil, d.tcp.Seq, cookie+1)
			}
			*out = (*out)[:0]
			conn := r.b.Table().lookup(&tupleKey{src: client6.As16(), dst: vip64.As16(), sport: cport, dport: 80, proto: TCP})
			if conn == nil {
				t.Fatal("no connection")
			}
			if n := r.b.expireResets(conn, stEstablished); n != 2 || len(*out) != 2 {
				t.Fatalf("%d RSTs sent (%d frames)", n, len(*out))
			}
			for _, o := range *out {
				d := decodeRaw(t, o.frame)
				if !d.tcp.RST || (o.side == ClientSide) != (d.ip6 != nil) || (o.side == ServerSide) != (d.ip != nil) {
					t.Fatalf("expiry RST to the %v side: IPv4 %v, IPv6 %v", o.side, d.ip != nil, d.ip6 != nil)
				}
			}
		})
	}
}

// TestNAT64SynproxyClientAddr: SYNPROXY with TOA or a PROXY header on a
// NAT64 service. The cookie SYN-ACK's MSS leaves room for what the
// client's segments carry to the IPv4 server (1460 less the option's 20,
// the v1 header's length, v2's 52) within the client side's 1440; the held
// handshake ACK is released over IPv4 carrying the 20-byte IPv6 TOA, or
// the header naming the IPv6 client (TCP6, AF_INET6).
func TestNAT64SynproxyClientAddr(t *testing.T) {
	for _, mode := range []ClientAddr{ClientAddrTOA, ClientAddrProxyV1, ClientAddrProxyV2} {
		t.Run(mode.String(), func(t *testing.T) {
			const isn, cport = 0x3000, 41000
			r, out, mss, _, syn := synproxy64(t, 1500, mode, cport, isn, 1440)
			want := uint16(1440)
			if mode != ClientAddrTOA {
				want = uint16(1460 - len(proxyHdr64(mode, cport)))
			}
			if mss != want {
				t.Fatalf("cookie SYN-ACK MSS %d, want %d", mss, want)
			}
			rsa := pframe(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: uint16(syn.tcp.SrcPort), proto: TCP, syn: true, ack: true, seq: 9000, ackNum: isn + 1, srcMAC: macGateway})
			if v := r.b.Process(ServerSide, rsa); v != Release {
				t.Fatalf("server SYN-ACK: %v %v", v, r.b.Stats.Drops())
			}
			released(out, ServerSide, rsa)
			if len(*out) != 1 {
				t.Fatalf("%d frames released", len(*out))
			}
			d := decodeRaw(t, (*out)[0].frame)
			if d.ip == nil || d.tcp.Ack != 9001 {
				t.Fatalf("released ACK: IPv4 %v, %+v", d.ip != nil, d.tcp)
			}
			if mode == ClientAddrTOA {
				wantTOA64(t, d, cport)
				return
			}
			if rest := readProxy64(t, d.tcp.Payload, false, cport); len(rest) != 0 {
				t.Fatalf("after the header %q", rest)
			}
		})
	}
}

// TestSynproxyMSSNoServerSide: an IPv6 SYNPROXY service without LIPs yet
// (its server side's family not known) still answers a SYN with a cookie,
// announcing the IPv6 FULLNAT MSS (the configured 1460 less 20); an IPv4
// one the IPv4 FULLNAT MSS (1460: not NAT46's 20 less).
func TestSynproxyMSSNoServerSide(t *testing.T) {
	b, err := New(Config{MaxConns: 10, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts(), Synproxy: DefaultSynproxy(), ClientMAC: macClientNIC, ServerMAC: macServerNIC})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddService(ServiceConfig{Addr: vip64, Port: 80, Protocol: TCP, Scheduler: "rr", Synproxy: true}); err != nil {
		t.Fatal(err)
	}
	syn := pframe(t, pktSpec{src: client6, dst: vip64, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 1, opts: synOpts(1440, 7, 1), srcMAC: macClient})
	if v := b.Process(ClientSide, syn); v != Reply {
		t.Fatalf("SYN: %v %v", v, nonZero(b.Stats.Drops()))
	}
	if o := parsedOpts(t, decode(t, syn).tcp); o.MSS != 1440 {
		t.Fatalf("cookie MSS %d, want 1440", o.MSS)
	}
	// An IPv4 one without LIPs (not NAT46 yet): the configured 1460.
	if _, err := b.AddService(ServiceConfig{Addr: vip, Port: 80, Protocol: TCP, Scheduler: "rr", Synproxy: true}); err != nil {
		t.Fatal(err)
	}
	syn = pframe(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 1, opts: synOpts(1460, 7, 1), srcMAC: macClient})
	if v := b.Process(ClientSide, syn); v != Reply {
		t.Fatalf("IPv4 SYN: %v %v", v, nonZero(b.Stats.Drops()))
	}
	if o := parsedOpts(t, decode(t, syn).tcp); o.MSS != 1460 {
		t.Fatalf("IPv4 cookie MSS %d, want 1460", o.MSS)
	}
}
