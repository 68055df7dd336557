package nat

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"
	proxyproto "github.com/pires/go-proxyproto"
)

// rig6With is newRig6 with one real server (rs6a) and the service set to
// synproxy and client address mode.
func rig6With(t *testing.T, proto Protocol, synproxy bool, mode ClientAddr) (*rig, *[]sent) {
	t.Helper()
	out := new([]sent)
	r := newRig6(t, proto, "rr", func(c *Config) { c.Synproxy = DefaultSynproxy() })
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

// TestIPv6Synproxy: the cookie handshake over IPv6 (SYN-ACK from the VIP
// with the IPv6 MSS, the SYN to the real server from the LIP, the held
// ACK released translated), then data both ways, every checksum from
// scratch; and the RSTs an expiry sends are IPv6.
func TestIPv6Synproxy(t *testing.T) {
	r, out := rig6With(t, TCP, true, ClientAddrNone)
	const isn, cport = 0x10000000, 40000
	cl := func(s pktSpec) *Frame {
		s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client6, vip6, cport, 80, TCP, macClient
		return pframe(t, s)
	}
	syn := cl(pktSpec{syn: true, seq: isn, opts: synOpts(1440, 7, 1000)})
	if v := r.b.Process(ClientSide, syn); v != Reply {
		t.Fatalf("SYN: %v %v", v, r.b.Stats.Drops())
	}
	sa := decode(t, syn)
	if sa.ip6 == nil || !sa.tcp.SYN || !sa.tcp.ACK || sa.tcp.Ack != isn+1 || addr6(sa.ip6.SrcIP) != vip6 || addr6(sa.ip6.DstIP) != client6 {
		t.Fatalf("SYN-ACK %+v", sa.tcp)
	}
	o := parsedOpts(t, sa.tcp)
	if want := DefaultSynproxy().MSS - 20; o.MSS != want {
		t.Fatalf("SYN-ACK MSS %d, want %d (IPv6's header is 20 bytes longer)", o.MSS, want)
	}
	if r.b.Table().Len() != 0 {
		t.Fatal("a SYN made state")
	}
	cookie, ourTS := sa.tcp.Seq, o.TSval
	ack := cl(pktSpec{ack: true, seq: isn + 1, ackNum: cookie + 1, opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(1001, ourTS)}})
	if v := r.b.Process(ClientSide, ack); v != Forward {
		t.Fatalf("ACK: %v %v", v, r.b.Stats.Drops())
	}
	s := decode(t, ack)
	if !s.tcp.SYN || s.tcp.ACK || s.tcp.Seq != isn || addr6(s.ip6.SrcIP) != lip6 || addr6(s.ip6.DstIP) != rs6a {
		t.Fatalf("SYN to the server %v -> %v %+v", s.ip6.SrcIP, s.ip6.DstIP, s.tcp)
	}
	if so := parsedOpts(t, s.tcp); so.MSS != 1440 {
		t.Fatalf("SYN to the server: MSS %d, want the client's 1440 (the cookie's IPv6 table keeps it)", so.MSS)
	}
	lport := uint16(s.tcp.SrcPort)
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
	if d.ip6 == nil || d.tcp.Ack != rsISN+1 || addr6(d.ip6.SrcIP) != lip6 {
		t.Fatalf("released ACK %+v", d.tcp)
	}
	resp := pframe(t, pktSpec{src: rs6a, dst: lip6, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: isn + 1, payload: []byte("hi"), srcMAC: macGateway})
	if v := r.b.Process(ServerSide, resp); v != Forward {
		t.Fatalf("server data: %v", v)
	}
	if d := decode(t, resp); d.tcp.Seq != cookie+1 || addr6(d.ip6.SrcIP) != vip6 || addr6(d.ip6.DstIP) != client6 {
		t.Fatalf("to the client: seq %#x (want %#x), %v -> %v", d.tcp.Seq, cookie+1, d.ip6.SrcIP, d.ip6.DstIP)
	}

	// An expiry sends an RST each way: IPv6, checksums from scratch.
	*out = (*out)[:0]
	c := r.b.Table().lookup(&tupleKey{src: client6.As16(), dst: vip6.As16(), sport: cport, dport: 80, proto: TCP})
	if c == nil {
		t.Fatal("no connection")
	}
	if n := r.b.expireResets(c, stEstablished); n != 2 || len(*out) != 2 {
		t.Fatalf("%d RSTs sent (%d frames)", n, len(*out))
	}
	for _, o := range *out {
		d := decodeRaw(t, o.frame)
		if d.ip6 == nil || !d.tcp.RST {
			t.Fatalf("expiry RST to the %v side: %+v", o.side, d)
		}
	}
}

// TestIPv6ProxyHeaders: PROXY v1 and v2 over TCP and v2 over UDP name an
// IPv6 client and VIP (TCP6, AF_INET6), read back by go-proxyproto; with
// and without SYNPROXY for TCP.
func TestIPv6ProxyHeaders(t *testing.T) {
	for _, c := range []struct {
		mode     ClientAddr
		synproxy bool
	}{{ClientAddrProxyV1, false}, {ClientAddrProxyV2, false}, {ClientAddrProxyV1, true}, {ClientAddrProxyV2, true}} {
		r, out := rig6With(t, TCP, c.synproxy, c.mode)
		const isn, cport = 0x2000, 41000
		cl := func(s pktSpec) *Frame {
			s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client6, vip6, cport, 80, TCP, macClient
			return pframe(t, s)
		}
		var first []byte // the client's first segment as the server gets it
		if c.synproxy {
			syn := cl(pktSpec{syn: true, seq: isn, opts: synOpts(1440, 7, 1000)})
			if v := r.b.Process(ClientSide, syn); v != Reply {
				t.Fatalf("%v: SYN %v", c, v)
			}
			cookie := decode(t, syn).tcp.Seq
			ack := cl(pktSpec{ack: true, seq: isn + 1, ackNum: cookie + 1})
			if v := r.b.Process(ClientSide, ack); v != Forward {
				t.Fatalf("%v: ACK %v %v", c, v, r.b.Stats.Drops())
			}
			s := decode(t, ack)
			rsa := pframe(t, pktSpec{src: rs6a, dst: lip6, sport: 8080, dport: uint16(s.tcp.SrcPort), proto: TCP, syn: true, ack: true, seq: 9000, ackNum: s.tcp.Seq + 1, srcMAC: macGateway})
			if v := r.b.Process(ServerSide, rsa); v != Release {
				t.Fatalf("%v: server SYN-ACK %v %v", c, v, r.b.Stats.Drops())
			}
			released(out, ServerSide, rsa)
			first = (*out)[0].frame
		} else {
			syn := cl(pktSpec{syn: true, seq: isn})
			if v := r.b.Process(ClientSide, syn); v != Forward {
				t.Fatalf("%v: SYN %v", c, v)
			}
			s := decode(t, syn)
			sa := pframe(t, pktSpec{src: rs6a, dst: lip6, sport: 8080, dport: uint16(s.tcp.SrcPort), proto: TCP, syn: true, ack: true, seq: 9000, ackNum: s.tcp.Seq + 1, srcMAC: macGateway})
			if v := r.b.Process(ServerSide, sa); v != Forward {
				t.Fatalf("%v: SYN-ACK %v", c, v)
			}
			ack := cl(pktSpec{ack: true, seq: isn + 1, ackNum: 9001, payload: []byte("GET /")})
			if v := r.b.Process(ClientSide, ack); v != Forward {
				t.Fatalf("%v: first data %v %v", c, v, r.b.Stats.Drops())
			}
			first = ack.Bytes()
		}
		d := decodeRaw(t, first)
		br := bufio.NewReader(bytes.NewReader(d.tcp.Payload))
		h, err := proxyproto.Read(br)
		if err != nil {
			t.Fatalf("%v: payload %q: %v", c, d.tcp.Payload, err)
		}
		src, dst := h.SourceAddr.(*net.TCPAddr).AddrPort(), h.DestinationAddr.(*net.TCPAddr).AddrPort()
		if h.TransportProtocol != proxyproto.TCPv6 || src != netip.AddrPortFrom(client6, cport) || dst != netip.AddrPortFrom(vip6, 80) {
			t.Fatalf("%v: header %v %v -> %v", c, h.TransportProtocol, src, dst)
		}
	}

	// UDP: a v2 AF_INET6 DGRAM header before each datagram.
	r, _ := rig6With(t, UDP, false, ClientAddrProxyV2)
	f := pframe(t, pktSpec{src: client6, dst: vip6, sport: 42000, dport: 80, proto: UDP, payload: []byte("ping"), srcMAC: macClient})
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatalf("UDP: %v %v", v, r.b.Stats.Drops())
	}
	d := decode(t, f)
	if int(d.udp.Length) != 8+52+4 {
		t.Fatalf("UDP length %d, want %d", d.udp.Length, 8+52+4)
	}
	br := bufio.NewReader(bytes.NewReader(d.udp.Payload))
	h, err := proxyproto.Read(br)
	if err != nil {
		t.Fatal(err)
	}
	src := h.SourceAddr.(*net.UDPAddr).AddrPort()
	if h.TransportProtocol != proxyproto.UDPv6 || src != netip.AddrPortFrom(client6, 42000) {
		t.Fatalf("UDP header %v %v", h.TransportProtocol, src)
	}
	if rest := d.udp.Payload[len(d.udp.Payload)-br.Buffered():]; string(rest) != "ping" {
		t.Fatalf("after the header %q", rest)
	}
	// The MTU edge: a datagram the header would take past 1500 is dropped.
	big := pframe(t, pktSpec{src: client6, dst: vip6, sport: 42000, dport: 80, proto: UDP, payload: make([]byte, 1500-40-8-51), srcMAC: macClient})
	if v := r.b.Process(ClientSide, big); v != Drop || r.b.Stats.Drop(DropUDPProxyBig) != 1 {
		t.Fatalf("too big: %v %v", v, r.b.Stats.Drops())
	}
}
