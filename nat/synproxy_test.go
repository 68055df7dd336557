package nat

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/tcpopt"
	"github.com/tapvs/tapvs/tun"
)

type sent struct {
	side  Side
	frame []byte
}

// recordLink keeps what the balancer's timers send.
type recordLink struct{ out *[]sent }

func (recordLink) Resolve(*Dest) {}
func (l recordLink) Transmit(side Side, f []byte) {
	*l.out = append(*l.out, sent{side, append([]byte(nil), f...)})
}

// Send records a kept frame without its virtio-net header.
func (l recordLink) Send(side Side, f []byte) { l.Transmit(side, f[tun.VNetHdrLen:]) }

// released adds the frames a Release verdict let go, which leave by the
// side the frame came in on, to out, without their virtio-net headers.
func released(out *[]sent, side Side, f *Frame) {
	for _, q := range f.Released {
		*out = append(*out, sent{side, q[tun.VNetHdrLen:]})
	}
}

func synproxyRig(t *testing.T) (*rig, *[]sent) {
	out := new([]sent)
	r := newRig(t, TCP, "rr", func(c *Config) { c.Synproxy = DefaultSynproxy() })
	r.b.Attach(recordLink{out})
	setSynproxy(t, r)
	r.setWeight(t, rs2, 8080, 0) // one server, for a predictable RIP
	return r, out
}

func tsOpt(val, ecr uint32) layers.TCPOption {
	d := make([]byte, 8)
	binary.BigEndian.PutUint32(d, val)
	binary.BigEndian.PutUint32(d[4:], ecr)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: d}
}

func synOpts(mss uint16, ws byte, tsval uint32) []layers.TCPOption {
	m := make([]byte, 2)
	binary.BigEndian.PutUint16(m, mss)
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: m},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		tsOpt(tsval, 0),
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{ws}},
	}
}

func parsedOpts(t *testing.T, tcp *layers.TCP) tcpopt.Parsed {
	t.Helper()
	var raw []byte
	for _, o := range tcp.Options {
		switch o.OptionType {
		case layers.TCPOptionKindEndList, layers.TCPOptionKindNop:
			raw = append(raw, byte(o.OptionType))
		default:
			raw = append(append(raw, byte(o.OptionType), o.OptionLength), o.OptionData...)
		}
	}
	p, ok := tcpopt.Parse(raw)
	if !ok {
		t.Fatalf("options %v do not parse", tcp.Options)
	}
	return p
}

func decodeRaw(t *testing.T, b []byte) decoded {
	return decode(t, withHeadroom(b))
}

func TestSynproxyHandshakeAndTranslation(t *testing.T) {
	r, out := synproxyRig(t)
	const isn, cport = 0x10000000, 40000

	// 1. SYN: answered with a cookie, no state.
	syn := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, syn: true, seq: isn, srcMAC: macClient, opts: synOpts(1460, 7, 1000)})
	if v := r.b.Process(ClientSide, syn); v != Reply {
		t.Fatalf("SYN: %v %v", v, r.b.Stats.Drops())
	}
	sa := decode(t, syn)
	if !sa.tcp.SYN || !sa.tcp.ACK || sa.tcp.Ack != isn+1 || addr(sa.ip.SrcIP) != vip || addr(sa.ip.DstIP) != client || [6]byte(sa.eth.DstMAC) != macClient {
		t.Fatalf("SYN-ACK %+v", sa.tcp)
	}
	o := parsedOpts(t, sa.tcp)
	if o.MSS != 1460 || o.WScale != 7 || !o.SACKPerm || !o.TS || o.TSecr != 1000 {
		t.Fatalf("SYN-ACK options %+v", o)
	}
	if r.b.Table().Len() != 0 {
		t.Fatal("a SYN made state")
	}
	cookie, ourTS := sa.tcp.Seq, o.TSval

	// 2. A forged ACK makes no state.
	bad := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: isn + 1, ackNum: cookie + 2, srcMAC: macClient})
	if v := r.b.Process(ClientSide, bad); v != Drop || r.b.Stats.Drop(DropBadCookie) != 1 || r.b.Table().Len() != 0 {
		t.Fatalf("bad cookie: %v, %d conns", v, r.b.Table().Len())
	}

	// 3. The real ACK: the server gets a SYN with the client's ISN and options.
	ack := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: isn + 1, ackNum: cookie + 1, window: 502, srcMAC: macClient,
		opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(1001, ourTS)}})
	if v := r.b.Process(ClientSide, ack); v != Forward {
		t.Fatalf("ACK: %v %v", v, r.b.Stats.Drops())
	}
	s := decode(t, ack)
	so := parsedOpts(t, s.tcp)
	if !s.tcp.SYN || s.tcp.ACK || s.tcp.Seq != isn || addr(s.ip.SrcIP) != lip1 || addr(s.ip.DstIP) != rs1 || uint16(s.tcp.DstPort) != 8080 {
		t.Fatalf("SYN to server %v:%d -> %v:%d %+v", s.ip.SrcIP, s.tcp.SrcPort, s.ip.DstIP, s.tcp.DstPort, s.tcp)
	}
	if so.MSS != 1460 || so.WScale != 7 || !so.SACKPerm || !so.TS || so.TSval != 1001 || so.TSecr != 0 || s.tcp.Window != 502<<7 {
		t.Fatalf("SYN options %+v window %d", so, s.tcp.Window)
	}
	lport := uint16(s.tcp.SrcPort)

	// 4. Data from the client before the server answers is held.
	data := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: isn + 1, ackNum: cookie + 1, srcMAC: macClient,
		payload: []byte("GET / HTTP/1.0\r\n\r\n"), opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(1002, ourTS)}})
	if v := r.b.Process(ClientSide, data); v != Stolen {
		t.Fatalf("early data: %v", v)
	}

	// 5. The server's SYN-ACK is not forwarded; the held packets go to the
	// server translated, the first echoing the server's own TSval.
	var rsISN, rsTS uint32 = 0xfffffff0, 777 // the server ISN wraps past 2^32
	rsa := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: isn + 1, srcMAC: macGateway, opts: synOpts(1400, 9, rsTS)})
	binary.BigEndian.PutUint32(rsa.Bytes()[14+20+20+12:], 1001) // TSecr of the server's SYN-ACK: our SYN's TSval
	fixTCPChecksum(t, rsa)
	if v := r.b.Process(ServerSide, rsa); v != Release {
		t.Fatalf("server SYN-ACK: %v %v", v, r.b.Stats.Drops())
	}
	released(out, ServerSide, rsa)
	if len(*out) != 2 {
		t.Fatalf("%d frames sent to the server, want the 2 held", len(*out))
	}
	for i, f := range *out {
		d := decodeRaw(t, f.frame)
		po := parsedOpts(t, d.tcp)
		if f.side != ServerSide || d.tcp.Ack != rsISN+1 || po.TSecr != rsTS || addr(d.ip.SrcIP) != lip1 || addr(d.ip.DstIP) != rs1 {
			t.Fatalf("held frame %d: side %v ack %#x TSecr %d", i, f.side, d.tcp.Ack, po.TSecr)
		}
	}
	if a, _, _ := r.d1.Conns(); a != 1 {
		t.Fatalf("active %d after the server handshake", a)
	}

	// 6. Server -> client: seq, TSval and window (scale 9 vs our 7) translated.
	resp := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: isn + 1 + 18, window: 100, srcMAC: macGateway,
		payload: []byte("HTTP/1.0 200 OK\r\n\r\n"), opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(rsTS+5, 1002)}})
	if v := r.b.Process(ServerSide, resp); v != Forward {
		t.Fatalf("server data: %v", v)
	}
	d := decode(t, resp)
	if d.tcp.Seq != cookie+1 || d.tcp.Ack != isn+1+18 || parsedOpts(t, d.tcp).TSval != ourTS+5 || d.tcp.Window != 400 || addr(d.ip.SrcIP) != vip {
		t.Fatalf("to client: seq %#x (want %#x) TSval %d (want %d) window %d", d.tcp.Seq, cookie+1, parsedOpts(t, d.tcp).TSval, ourTS+5, d.tcp.Window)
	}

	// 7. Client -> server with SACK: ack and every edge translated.
	sack := make([]byte, 8)
	binary.BigEndian.PutUint32(sack, cookie+1+100)
	binary.BigEndian.PutUint32(sack[4:], cookie+1+200)
	cs := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: isn + 19, ackNum: cookie + 1 + 19, srcMAC: macClient,
		opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(1003, ourTS+5),
			{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindSACK, OptionLength: 10, OptionData: sack}}})
	if v := r.b.Process(ClientSide, cs); v != Forward {
		t.Fatalf("client SACK: %v", v)
	}
	d = decode(t, cs)
	raw := cs.Bytes()[14+20+20:]
	if d.tcp.Ack != rsISN+1+19 || parsedOpts(t, d.tcp).TSecr != rsTS+5 ||
		binary.BigEndian.Uint32(raw[16:]) != rsISN+1+100 || binary.BigEndian.Uint32(raw[20:]) != rsISN+1+200 {
		t.Fatalf("to server: ack %#x TSecr %d SACK %#x-%#x", d.tcp.Ack, parsedOpts(t, d.tcp).TSecr, binary.BigEndian.Uint32(raw[16:]), binary.BigEndian.Uint32(raw[20:]))
	}
}

// fixTCPChecksum recomputes a frame's TCP checksum after a test edits it.
func fixTCPChecksum(t *testing.T, f *Frame) {
	pk := gopacket.NewPacket(f.Bytes(), layers.LayerTypeEthernet, gopacket.Default)
	ip := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	eth := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(tcp.Payload)); err != nil {
		t.Fatal(err)
	}
	copy(f.Bytes(), buf.Bytes())
}

func openProxied(t *testing.T, r *rig, cport uint16) (cookie uint32) {
	t.Helper()
	syn := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, syn: true, seq: 5000, srcMAC: macClient, opts: synOpts(1460, 7, 1)})
	r.b.Process(ClientSide, syn)
	cookie = decode(t, syn).tcp.Seq
	ack := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: 5001, ackNum: cookie + 1, srcMAC: macClient})
	if v := r.b.Process(ClientSide, ack); v != Forward {
		t.Fatalf("ACK: %v", v)
	}
	return cookie
}

func TestSynproxyServerRefuses(t *testing.T) {
	r, _ := synproxyRig(t)
	cookie := openProxied(t, r, 41000)
	lport := r.b.Table().Conns()[0].LIP.Port()
	rst := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, rst: true, ack: true, seq: 0, ackNum: 5001, srcMAC: macGateway})
	if v := r.b.Process(ServerSide, rst); v != Forward {
		t.Fatalf("server RST: %v", v)
	}
	d := decode(t, rst)
	if !d.tcp.RST || d.tcp.Seq != cookie+1 || addr(d.ip.SrcIP) != vip || addr(d.ip.DstIP) != client || uint16(d.tcp.DstPort) != 41000 {
		t.Fatalf("RST to client: %+v", d.tcp)
	}
	if r.b.Table().Len() != 0 {
		t.Fatal("refused connection left in the table")
	}
}

func TestSynproxyRetriesThenGivesUp(t *testing.T) {
	r, out := synproxyRig(t)
	cookie := openProxied(t, r, 42000)
	now := int64(0)
	for step := range 5 {
		now += int64(time.Second)
		r.b.table.now.Store(now)
		r.b.sp.lastTick.Store(0)
		r.b.synproxyTick()
		_ = step
	}
	var syns, rsts int
	for _, f := range *out {
		d := decodeRaw(t, f.frame)
		switch {
		case f.side == ServerSide && d.tcp.SYN:
			syns++
		case f.side == ClientSide && d.tcp.RST && d.tcp.Seq == cookie+1:
			rsts++
		}
	}
	_, _, failed, retries := r.b.Stats.Synproxy()
	if syns != 3 || rsts != 1 || failed != 1 || retries != 3 || r.b.Table().Len() != 0 {
		t.Fatalf("SYN retries %d, RSTs to client %d, failed %d, table %d", syns, rsts, failed, r.b.Table().Len())
	}
}

func TestSynproxyHeldPacketsBounded(t *testing.T) {
	r, _ := synproxyRig(t)
	cookie := openProxied(t, r, 43000) // the handshake ACK is held: 1 of 3
	for i := range 4 {
		f := frame(t, pktSpec{src: client, dst: vip, sport: 43000, dport: 80, proto: TCP, ack: true, seq: 5001, ackNum: cookie + 1, payload: []byte("x"), srcMAC: macClient})
		want := Stolen
		if i >= 2 {
			want = Drop
		}
		if v := r.b.Process(ClientSide, f); v != want {
			t.Fatalf("packet %d: %v, want %v", i, v, want)
		}
	}
	if r.b.Stats.Drop(DropSynproxyQueue) != 2 {
		t.Fatalf("queue drops %d", r.b.Stats.Drop(DropSynproxyQueue))
	}
}

func TestSynCookieReplyAllocs(t *testing.T) {
	r, _ := synproxyRig(t)
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 1, srcMAC: macClient, opts: synOpts(1460, 7, 1)})
	orig := append([]byte(nil), syn.Bytes()...)
	allocs := totalAllocs(1000, func() {
		copy(syn.Buf[syn.Off:], orig)
		syn.Len = len(orig)
		if r.b.Process(ClientSide, syn) != Reply {
			t.Fatal("no reply")
		}
	})
	if allocs != 0 {
		t.Fatalf("%d allocations over 1000 SYN-ACKs", allocs)
	}
}

func BenchmarkSynCookieReply(b *testing.B) {
	r := newRig(b, TCP, "rr", func(c *Config) { c.Synproxy = DefaultSynproxy() })
	setSynproxy(b, r)
	syn := frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 1, srcMAC: macClient, opts: synOpts(1460, 7, 1)})
	orig := append([]byte(nil), syn.Bytes()...)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		copy(syn.Buf[syn.Off:], orig)
		syn.Len = len(orig)
		if r.b.Process(ClientSide, syn) != Reply {
			b.Fatal("no reply")
		}
	}
}

// A client that reuses its port right after a close gets a new proxied
// connection, not the old one's sequence numbers.
func TestSynproxyPortReuse(t *testing.T) {
	r, _ := synproxyRig(t)
	openProxied(t, r, 44000)
	info := r.b.Table().Conns()[0]
	old := r.b.table.lookup(&tupleKey{src: client.As16(), dst: vip.As16(), sport: 44000, dport: 80, proto: TCP})
	old.sp.Establish(9, tcpopt.Parsed{WScale: -1})
	old.setState(stSynSent, stTimeWait)

	syn := frame(t, pktSpec{src: client, dst: vip, sport: 44000, dport: 80, proto: TCP, syn: true, seq: 7777, srcMAC: macClient, opts: synOpts(1460, 7, 1)})
	if v := r.b.Process(ClientSide, syn); v != Reply {
		t.Fatalf("SYN on a closing proxied tuple: %v, want a cookie SYN-ACK", v)
	}
	cookie := decode(t, syn).tcp.Seq
	ack := frame(t, pktSpec{src: client, dst: vip, sport: 44000, dport: 80, proto: TCP, ack: true, seq: 7778, ackNum: cookie + 1, srcMAC: macClient})
	if v := r.b.Process(ClientSide, ack); v != Forward {
		t.Fatalf("ACK: %v", v)
	}
	if s := decode(t, ack); !s.tcp.SYN || s.tcp.Seq != 7777 {
		t.Fatalf("the server got %+v, want a new SYN with ISN 7777", s.tcp)
	}
	conns := r.b.Table().Conns()
	if len(conns) != 1 || conns[0].State != "SYN_SENT" || conns[0].LIP == info.LIP {
		t.Fatalf("after reuse: %+v (old LIP %v)", conns, info.LIP)
	}
}

// A server still in TIME_WAIT for the tuple answers our SYN with the old
// connection's ACK: synproxy ends it with an RST carrying that ACK's number
// and sends the SYN again, as a client's kernel would.
func TestSynproxyServerTimeWait(t *testing.T) {
	r, out := synproxyRig(t)
	openProxied(t, r, 45000)
	lport := r.b.Table().Conns()[0].LIP.Port()
	ack := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: 777, ackNum: 123456, srcMAC: macGateway})
	if v := r.b.Process(ServerSide, ack); v != Release {
		t.Fatalf("TIME_WAIT ACK: %v", v)
	}
	released(out, ServerSide, ack)
	if len(*out) != 2 {
		t.Fatalf("%d frames sent, want an RST and the SYN", len(*out))
	}
	rst, syn := decodeRaw(t, (*out)[0].frame), decodeRaw(t, (*out)[1].frame)
	if !rst.tcp.RST || rst.tcp.Seq != 123456 || addr(rst.ip.DstIP) != rs1 || uint16(rst.tcp.SrcPort) != lport {
		t.Fatalf("RST %+v", rst.tcp)
	}
	if !syn.tcp.SYN || syn.tcp.Seq != 5000 {
		t.Fatalf("SYN again %+v", syn.tcp)
	}
	if r.b.Stats.SynproxyTimeWait() != 1 || r.b.Stats.Drop(DropSynproxyState) != 0 {
		t.Fatal("not counted as a TIME_WAIT reuse")
	}
}

// establishProxied opens a proxied connection with timestamps on both
// sides and completes the server's handshake. It returns the cookie (the
// ISN the client knows), the local port and the server's ISN.
func establishProxied(t *testing.T, r *rig, cport uint16) (cookie uint32, lport uint16, rsISN uint32) {
	t.Helper()
	return establishProxiedFrom(t, r, client, vip, cport)
}

// establishProxiedFrom is establishProxied from src to VIP dst, whose
// server side is lip1 and rs1 (IPv4: FULLNAT, or NAT64 from an IPv6 src).
func establishProxiedFrom(t *testing.T, r *rig, src, dst netip.Addr, cport uint16) (cookie uint32, lport uint16, rsISN uint32) {
	t.Helper()
	syn := frame(t, pktSpec{src: src, dst: dst, sport: cport, dport: 80, proto: TCP, syn: true, seq: 5000, srcMAC: macClient, opts: synOpts(1460, 7, 100)})
	if v := r.b.Process(ClientSide, syn); v != Reply {
		t.Fatalf("SYN: %v", v)
	}
	sa := decode(t, syn)
	cookie = sa.tcp.Seq
	ourTS := parsedOpts(t, sa.tcp).TSval
	ack := frame(t, pktSpec{src: src, dst: dst, sport: cport, dport: 80, proto: TCP, ack: true, seq: 5001, ackNum: cookie + 1, srcMAC: macClient,
		opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(101, ourTS)}})
	if v := r.b.Process(ClientSide, ack); v != Forward {
		t.Fatalf("ACK: %v %v", v, r.b.Stats.Drops())
	}
	toServer := decode(t, ack)
	lport = uint16(toServer.tcp.SrcPort)
	rs, lip := rs1, lip1
	if toServer.ip6 != nil { // IPv6 FULLNAT, NAT46
		rs, lip = addr6(toServer.ip6.DstIP), addr6(toServer.ip6.SrcIP)
	}
	rsISN = 0x7000
	rsa := frame(t, pktSpec{src: rs, dst: lip, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: 5001, srcMAC: macGateway, opts: synOpts(1460, 7, 9000)})
	if v := r.b.Process(ServerSide, rsa); v != Release || len(rsa.Released) != 1 {
		t.Fatalf("server SYN-ACK: %v, %d released, %v", v, len(rsa.Released), r.b.Stats.Drops())
	}
	return cookie, lport, rsISN
}

// rawOpt is a TCP option laid out byte for byte, well-formed or not.
func rawOpt(kind byte, length byte, data ...byte) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKind(kind), OptionLength: length, OptionData: data}
}

var nop = layers.TCPOption{OptionType: layers.TCPOptionKindNop}

// Issue 9, item 1: a timestamp option shorter than 10 bytes on an
// established proxied connection indexed past the option and crashed the
// balancer (client side: index out of range; server side: slice bounds).
// Such a segment is counted and dropped; the connection keeps working.
func TestSynproxyShortTimestampOptionDropped(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []layers.TCPOption
	}{
		{"TS length 8", []layers.TCPOption{rawOpt(8, 8, '0', '0', '0', '0', '0', '0')}},
		{"NOP NOP TS length 2", []layers.TCPOption{nop, nop, rawOpt(8, 2)}},
		{"SACK length 6", []layers.TCPOption{nop, nop, rawOpt(5, 6, 0, 0, 0, 1)}},
		{"SACK length 11", []layers.TCPOption{rawOpt(5, 11, 0, 0, 0, 1, 0, 0, 0, 2, 9)}},
		{"length past the header", []layers.TCPOption{nop, rawOpt(8, 30, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)}},
		{"length 0", []layers.TCPOption{rawOpt(8, 0, 1, 2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := synproxyRig(t)
			cookie, lport, rsISN := establishProxied(t, r, 46000)
			before := r.b.Stats.Drop(DropBadOptions)
			in := frame(t, pktSpec{src: client, dst: vip, sport: 46000, dport: 80, proto: TCP, ack: true, seq: 5001, ackNum: cookie + 1, srcMAC: macClient, payload: []byte("x"), opts: tc.opts})
			if v := r.b.Process(ClientSide, in); v != Drop {
				t.Fatalf("client segment: %v, want Drop", v)
			}
			out := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: 5002, srcMAC: macGateway, payload: []byte("y"), opts: tc.opts})
			if v := r.b.Process(ServerSide, out); v != Drop {
				t.Fatalf("server segment: %v, want Drop", v)
			}
			if got := r.b.Stats.Drop(DropBadOptions) - before; got != 2 {
				t.Fatalf("%d counted as %v, want 2", got, DropBadOptions)
			}
			// The connection is untouched: a well-formed segment still passes.
			ok := frame(t, pktSpec{src: client, dst: vip, sport: 46000, dport: 80, proto: TCP, ack: true, seq: 5001, ackNum: cookie + 1, srcMAC: macClient, payload: []byte("x"),
				opts: []layers.TCPOption{nop, nop, tsOpt(102, 1)}})
			if v := r.b.Process(ClientSide, ok); v != Forward {
				t.Fatalf("well-formed segment after: %v", v)
			}
			decode(t, ok)
		})
	}
}

// Issue 9, item 2: a timestamp or SACK option at an odd offset (NOP, TS is a
// valid layout) took a checksum update that assumed 16-bit alignment, and
// the segment left with a wrong checksum. decode checks it from scratch.
func TestSynproxyOddOffsetOptionsKeepChecksums(t *testing.T) {
	r, _ := synproxyRig(t)
	cookie, lport, rsISN := establishProxied(t, r, 47000)
	sack := make([]byte, 8)
	binary.BigEndian.PutUint32(sack, cookie+1+100)
	binary.BigEndian.PutUint32(sack[4:], cookie+1+200)
	// NOP, TS (TSecr at TCP offset 27), SACK (edges at 33 and 37), 3 NOPs.
	in := frame(t, pktSpec{src: client, dst: vip, sport: 47000, dport: 80, proto: TCP, ack: true, seq: 5001, ackNum: cookie + 1, srcMAC: macClient, payload: []byte("odd"),
		opts: []layers.TCPOption{nop, tsOpt(0x01020304, 0xa0b0c0d), rawOpt(5, 10, sack...), nop, nop, nop}})
	if v := r.b.Process(ClientSide, in); v != Forward {
		t.Fatalf("client segment: %v %v", v, r.b.Stats.Drops())
	}
	d := decode(t, in)
	raw := in.Bytes()[14+20:]
	if d.tcp.Ack != rsISN+1 || binary.BigEndian.Uint32(raw[33:]) != rsISN+1+100 || binary.BigEndian.Uint32(raw[37:]) != rsISN+1+200 {
		t.Fatalf("to server: ack %#x SACK %#x-%#x", d.tcp.Ack, binary.BigEndian.Uint32(raw[33:]), binary.BigEndian.Uint32(raw[37:]))
	}
	// NOP, TS (TSval at TCP offset 23), NOP.
	out := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, seq: rsISN + 1, ackNum: 5004, srcMAC: macGateway, payload: []byte("reply"),
		opts: []layers.TCPOption{nop, tsOpt(9001, 0x01020304), nop}})
	if v := r.b.Process(ServerSide, out); v != Forward {
		t.Fatalf("server segment: %v %v", v, r.b.Stats.Drops())
	}
	if d := decode(t, out); d.tcp.Seq != cookie+1 {
		t.Fatalf("to client: seq %#x, want %#x", d.tcp.Seq, cookie+1)
	}
}

func setSynproxy(t testing.TB, r *rig) {
	t.Helper()
	if err := r.b.Update(func(tx *Tx) error { return tx.SetSynproxy(r.svc, true) }); err != nil {
		t.Fatal(err)
	}
}
