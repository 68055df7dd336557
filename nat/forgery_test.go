package nat

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/proxyhdr"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcpopt"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// The class of issue 20's first finding: a client must not be able to
// choose the address a real server learns. Whatever a client sends, what a
// toa module or a PROXY protocol reader takes from the segments tapvs
// forwards is tapvs's own, or nothing. The readers here are the servers':
// tcpopt.ModuleTOA is the Linux toa module's option parser (Alibaba LVS's
// and DPVS's get_toa_data, which is more lenient than tcpopt.Walk), and a PROXY
// reader takes the first n bytes of the server's stream, so every client
// byte that lands in [S, S+n) (S: the stream's first number at the server)
// must be the header's own.

// forgeKind is a service's way of telling the client's address, with or
// without SYNPROXY, over IPv4 or IPv6.
type forgeKind struct {
	mode     ClientAddr
	synproxy bool
	v6       bool
}

func (k forgeKind) String() string {
	fam := "4"
	if k.v6 {
		fam = "6"
	}
	return fmt.Sprintf("%v/synproxy=%t/ipv%s", k.mode, k.synproxy, fam)
}

// forgeKinds are every client address mode, with and without SYNPROXY, over
// both families.
func forgeKinds() (ks []forgeKind) {
	for _, m := range []ClientAddr{ClientAddrNone, ClientAddrTOA, ClientAddrProxyV1, ClientAddrProxyV2} {
		for _, sp := range []bool{false, true} {
			for _, v6 := range []bool{false, true} {
				ks = append(ks, forgeKind{m, sp, v6})
			}
		}
	}
	return ks
}

// forgeConn is one established connection through a rig of a forgeKind,
// with what its real server must read and nothing else.
type forgeConn struct {
	t        testing.TB
	r        *rig
	k        forgeKind
	cl, vp   netip.Addr
	rs, lip  netip.Addr
	cport    uint16
	first    uint32          // the client's first byte (client space): its ISN + 1
	ack      uint32          // the client's ack that completes the server's handshake
	rsISN    uint32          // the server's ISN, in every SYN-ACK it sends
	syns     map[uint32]bool // the seq of every SYN tapvs sent the server
	firstSYN uint32          // the first of them
	hdr      []byte          // the PROXY header the server reads at S; nil without
	toa      []byte          // the TOA option tapvs writes; nil without
	offload  bool            // client frames come as from a TAP with offload (offloaded)
	urgent   uint16          // the urgent pointer of segments sent with URG
	seen     func([]byte)    // if set, given every TCP segment sent to the server
	checked  int             // frames checked on their way to the server
	byPlace  [4]int          // client segments sent, by where they start against the stream
	overlaps int             // segments dropped as proxy_overlap
}

const (
	beforeStream = iota
	atFirst
	inHeaderRange
	pastHeader
)

// newForgeConn opens a connection of kind k from the client's port cport
// up to the server's completed handshake (plain: the server's SYN-ACK has
// reached the client; SYNPROXY: the held cookie ACK was released to the
// server, and checked as any other frame).
func newForgeConn(t testing.TB, k forgeKind, cport uint16) *forgeConn {
	t.Helper()
	mod := func(c *Config) { c.Synproxy = DefaultSynproxy() }
	fc := &forgeConn{t: t, k: k, cport: cport, cl: client, vp: vip, rs: rs1, lip: lip1, rsISN: 0x7fff0000, syns: map[uint32]bool{}}
	if k.v6 {
		fc.r = newRig6(t, TCP, "rr", mod)
		fc.cl, fc.vp, fc.rs, fc.lip = client6, vip6, rs6a, lip6
	} else {
		fc.r = newRig(t, TCP, "rr", mod)
	}
	fc.r.b.Attach(recordLink{new([]sent)})
	if err := fc.r.b.Update(func(tx *Tx) error {
		if err := tx.SetSynproxy(fc.r.svc, k.synproxy); err != nil {
			return err
		}
		return tx.SetClientAddr(fc.r.svc, k.mode)
	}); err != nil {
		t.Fatal(err)
	}
	fc.r.setWeight(t, fc.r.d2.Addr, 8080, 0)

	in := tupleKey{src: addrKey(fc.cl), dst: addrKey(fc.vp), sport: cport, dport: 80, proto: TCP}
	var hb [proxyhdr.MaxV1]byte
	if n := proxyHeader(k.mode, &in, hb[:]); n > 0 {
		fc.hdr = append([]byte(nil), hb[:n]...)
	}
	if k.mode == ClientAddrTOA {
		a := fc.cl.AsSlice()
		fc.toa = append([]byte{toaKind, byte(4 + len(a)), byte(cport >> 8), byte(cport)}, a...)
	}

	const isn = 0xfffffff0 // the client's numbers wrap
	fc.first = isn + 1
	syn := fc.clientFrame(pktSpec{syn: true, seq: isn, opts: synOpts(1400, 7, 1)})
	opening := syn
	if k.synproxy {
		if v := fc.r.b.Process(ClientSide, syn); v != Reply {
			t.Fatalf("%v: SYN: %v %v", k, v, fc.r.b.Stats.Drops())
		}
		cookie := decode(t, syn).tcp.Seq
		fc.ack = cookie + 1
		opening = fc.clientFrame(pktSpec{ack: true, seq: fc.first, ackNum: fc.ack})
	} else {
		fc.ack = fc.rsISN + 1
	}
	// The SYN to the server, which fc answers with the server's SYN-ACK.
	if v := fc.r.b.Process(ClientSide, opening); v != Forward {
		t.Fatalf("%v: opening segment: %v %v", k, v, fc.r.b.Stats.Drops())
	}
	fc.toServer(Forward, opening)
	if len(fc.syns) != 1 {
		t.Fatalf("%v: %d SYNs to the server, want 1", k, len(fc.syns))
	}
	return fc
}

func addrKey(a netip.Addr) addr16 {
	if a.Is4() {
		return wire.In16(a.AsSlice())
	}
	return addr16(a.As16())
}

func (fc *forgeConn) clientFrame(s pktSpec) *Frame {
	s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = fc.cl, fc.vp, fc.cport, 80, TCP, macClient
	return pframe(fc.t, s)
}

// send gives the balancer a client segment of the connection whose seq is
// first+delta, with flags (tcpflag bits; with URG, fc.urgent is the
// urgent pointer), ack, option bytes (at most 40, padded with zeros to a
// multiple of 4) and payload, and checks every frame it sends the server
// for it.
func (fc *forgeConn) send(delta int32, flags uint8, ack uint32, opts, payload []byte) Verdict {
	opts = opts[:min(len(opts), 40)]
	olen := (len(opts) + 3) &^ 3
	s := pktSpec{seq: fc.first + uint32(delta), ackNum: ack, payload: payload,
		syn: flags&tcpflag.SYN != 0, ack: flags&tcpflag.ACK != 0, fin: flags&tcpflag.FIN != 0, rst: flags&tcpflag.RST != 0}
	if olen > 0 {
		s.opts = []layers.TCPOption{rawOpt(99, byte(olen), make([]byte, olen-2)...)}
	}
	f := fc.clientFrame(s)
	if olen > 0 || flags&tcpflag.URG != 0 {
		fc.setOptions(f, opts, olen, flags&tcpflag.URG != 0)
	}
	if fc.offload {
		fc.offloaded(f, olen)
	}
	fc.byPlace[fc.place(delta, flags, len(payload))]++
	drops := fc.r.b.Stats.Drops()["proxy_overlap"]
	v := fc.r.b.Process(ClientSide, f)
	fc.toServer(v, f)
	if fc.r.b.Stats.Drops()["proxy_overlap"] > drops {
		fc.overlaps++
	}
	return v
}

// offloaded gives f, a client frame with olen bytes of options, a
// virtio-net header as a TAP with offload hands it over: a partial
// checksum (NEEDS_CSUM), and past 1400 bytes of payload a TSO super-frame.
func (fc *forgeConn) offloaded(f *Frame, olen int) {
	b := f.Bytes()
	l4, gso, ps := 14+20, uint8(tun.VNetGSOTCPv4), uint32(0)
	end := 14 + int(binary.BigEndian.Uint16(b[14+2:]))
	if fc.k.v6 {
		l4, gso = 14+40, tun.VNetGSOTCPv6
		end = l4 + int(binary.BigEndian.Uint16(b[14+4:]))
		ps = csum.PseudoV6(b[22:38], b[38:54], wire.ProtoTCP, end-l4)
	} else {
		ps = csum.PseudoV4(b[26:30], b[30:34], wire.ProtoTCP, end-l4)
	}
	binary.BigEndian.PutUint16(b[l4+16:], csum.Fold(ps))
	v := withVNet(f)
	v.SetNeedsCsum(l4, 16)
	if end-l4-20-olen > 1400 {
		v.SetGSO(gso, uint16(l4+20+olen), 1400)
	}
}

// finished is a frame to the server (vnet: its virtio-net header, nil
// without one) with a partial checksum completed, as the kernel would.
func finished(vnet tun.VNetHdr, raw []byte) []byte {
	if len(vnet) == tun.VNetHdrLen && vnet.NeedsCsum() {
		csum.Finish(raw[vnet.CsumStart():], vnet.CsumOffset())
	}
	return raw
}

// toServer checks what a verdict v on f sent the server. A SYN among it (a
// client that reused its port on the closing connection, which opens a
// new one at the server) is answered by the server's SYN-ACK, as a server
// would, and what that releases is checked too.
func (fc *forgeConn) toServer(v Verdict, f *Frame) {
	var frames [][]byte
	switch v {
	case Forward:
		frames = append(frames, finished(f.VNet, f.Bytes()))
	case Release:
		for _, q := range f.Released {
			frames = append(frames, finished(tun.VNetHdr(q[:tun.VNetHdrLen]), q[tun.VNetHdrLen:]))
		}
	}
	for _, raw := range frames {
		tcp := fc.check(raw)
		if fc.seen != nil {
			fc.seen(tcp)
		}
		if tcp[tcpflag.Offset]&(tcpflag.SYN|tcpflag.ACK|tcpflag.RST|tcpflag.FIN) != tcpflag.SYN {
			continue // a server answers only a plain SYN with a SYN-ACK
		}
		seq := binary.BigEndian.Uint32(tcp[4:])
		sa := pframe(fc.t, pktSpec{src: fc.rs, dst: fc.lip, sport: 8080, dport: binary.BigEndian.Uint16(tcp), proto: TCP, syn: true, ack: true,
			seq: fc.rsISN, ackNum: seq + 1, srcMAC: macGateway, opts: synOpts(1400, 7, 9)})
		if v := fc.r.b.Process(ServerSide, sa); v == Release {
			fc.toServer(v, sa) // SYNPROXY's held client frames, released to the server
		}
	}
}

// streamStart is S, the server-space number of the client's first byte,
// of the connection tapvs now keeps for the client's tuple (a new one
// after a reuse), checked against the SYNs it sent the server.
func (fc *forgeConn) streamStart() uint32 {
	key := tupleKey{src: addrKey(fc.cl), dst: addrKey(fc.vp), sport: fc.cport, dport: 80, proto: TCP}
	c := fc.r.b.table.lookup(&key)
	if c == nil || c.pp == nil {
		fc.t.Fatalf("%v: a frame to the server with no connection of a PROXY service", fc.k)
	}
	s := c.rw.Load().HeaderStart()
	if c.sp != nil {
		s = c.sp.ClientISN + 1 // the SYN to the server has the client's ISN
	}
	if !fc.syns[s-1] {
		fc.t.Fatalf("%v: the stream starts at %d at the server, but tapvs sent it no SYN at %d (%v)", fc.k, s, s-1, fc.syns)
	}
	return s
}

// place is where a segment starts against the client's stream, in the
// client's numbers: before the n numbers before its first byte, in them
// or reaching from before into the stream (where a shift by n would put
// the client's bytes in the header's place at the server: the forgery's
// aim), at the first byte, or past it.
func (fc *forgeConn) place(delta int32, flags uint8, payload int) int {
	end := int64(delta) + int64(payload)
	if flags&tcpflag.SYN != 0 {
		end++
	}
	switch {
	case delta == 0:
		return atFirst
	case delta > 0:
		return pastHeader
	case end > 0 || int64(delta) >= -int64(len(fc.hdr)):
		return inHeaderRange
	}
	return beforeStream
}

// setOptions writes option bytes over a frame's placeholder option of olen
// bytes, with urg sets URG and the urgent pointer fc.urgent, and makes its
// TCP checksum valid again.
func (fc *forgeConn) setOptions(f *Frame, opts []byte, olen int, urg bool) {
	b := f.Bytes()
	l4 := 14 + 20
	if fc.k.v6 {
		l4 = 14 + 40
	}
	o := b[l4+20 : l4+20+olen]
	clear(o)
	copy(o, opts)
	if urg {
		b[l4+tcpflag.Offset] |= tcpflag.URG
		binary.BigEndian.PutUint16(b[l4+18:], fc.urgent)
	}
	end := 14 + int(binary.BigEndian.Uint16(b[14+2:])) // IPv4: the total length, not the frame's padding
	if fc.k.v6 {
		end = l4 + int(binary.BigEndian.Uint16(b[14+4:]))
	}
	tcp := b[l4:end]
	tcp[16], tcp[17] = 0, 0
	var ps uint32
	if fc.k.v6 {
		ps = csum.PseudoV6(b[22:38], b[38:54], wire.ProtoTCP, len(tcp))
	} else {
		ps = csum.PseudoV4(b[26:30], b[30:34], wire.ProtoTCP, len(tcp))
	}
	binary.BigEndian.PutUint16(tcp[16:], csum.Checksum(tcp, ps))
}

// check reads a frame on its way to the real server as the server's
// readers would: its checksums verify, a toa module finds tapvs's TOA or
// none, and every byte of it in [S, S+n) is the PROXY header's.
func (fc *forgeConn) check(raw []byte) (tcp []byte) {
	t := fc.t
	t.Helper()
	fc.checked++
	switch binary.BigEndian.Uint16(raw[12:]) {
	case 0x0800:
		ip := raw[14:]
		ihl := int(ip[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if ihl != 20 || total > len(ip) || csum.Checksum(ip[:ihl], 0) != 0 || ip[9] != wire.ProtoTCP {
			t.Fatalf("%v: to the server: IPv4 header %x", fc.k, ip[:min(len(ip), 20)])
		}
		tcp = ip[ihl:total]
		if csum.Checksum(tcp, csum.PseudoV4(ip[12:16], ip[16:20], wire.ProtoTCP, len(tcp))) != 0 {
			t.Fatalf("%v: to the server: TCP checksum does not verify", fc.k)
		}
	case 0x86dd:
		ip := raw[14:]
		pl := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+pl > len(ip) || ip[6] != wire.ProtoTCP {
			t.Fatalf("%v: to the server: IPv6 header %x", fc.k, ip[:min(len(ip), 40)])
		}
		tcp = ip[40 : 40+pl]
		if csum.Checksum(tcp, csum.PseudoV6(ip[8:24], ip[24:40], wire.ProtoTCP, len(tcp))) != 0 {
			t.Fatalf("%v: to the server: TCP checksum does not verify", fc.k)
		}
	default:
		t.Fatalf("%v: to the server: ethertype %x", fc.k, raw[12:14])
	}
	hl := int(tcp[12]>>4) * 4
	if hl < 20 || hl > len(tcp) {
		t.Fatalf("%v: to the server: data offset %d of %d bytes", fc.k, hl, len(tcp))
	}
	if opt, ok := tcpopt.ModuleTOA(tcp[20:hl]); ok && (fc.toa == nil || string(opt) != string(fc.toa)) {
		t.Fatalf("%v: a toa module reads %x from a segment to the server (options %x); tapvs's is %x",
			fc.k, opt, tcp[20:hl], fc.toa)
	}
	flags := tcp[tcpflag.Offset]
	at := binary.BigEndian.Uint32(tcp[4:])
	if flags&(tcpflag.SYN|tcpflag.ACK|tcpflag.RST|tcpflag.FIN) == tcpflag.SYN {
		// A server may take it for a new stream, from at+1 (Linux's
		// listener drops a SYN with RST or FIN, and answers one with ACK
		// with an RST).
		if len(fc.syns) == 0 {
			fc.firstSYN = at
		}
		fc.syns[at] = true
	}
	if fc.hdr == nil {
		return tcp
	}
	if flags&tcpflag.SYN != 0 {
		at++
	}
	// The server's truth, not tapvs's state: wherever a SYN tapvs sent it
	// may have started a stream, only the header's bytes go in the header's
	// numbers, and no urgent byte (which Linux takes out of the stream it
	// reads) falls among them.
	n := uint32(len(fc.hdr))
	for s := range fc.syns {
		for i, c := range tcp[hl:] {
			if off := at + uint32(i) - (s + 1); off < n && c != fc.hdr[off] {
				t.Fatalf("%v: a segment to the server (data at %d, a stream from %d) puts %q at byte %d of the PROXY header %q",
					fc.k, at, s+1, tcp[hl:], off, fc.hdr)
			}
		}
		if flags&tcpflag.URG != 0 {
			urgent := binary.BigEndian.Uint32(tcp[4:]) + uint32(binary.BigEndian.Uint16(tcp[18:])) - 1
			if off := urgent - (s + 1); off < n {
				t.Fatalf("%v: a segment to the server makes byte %d of the PROXY header (%q) its urgent byte", fc.k, off, fc.hdr[off])
			}
		}
	}
	return tcp
}

// forgedTOA is a TOA option naming an address of the client's choosing.
func forgedTOA(v6 bool) []byte {
	if v6 {
		return append([]byte{254, 20, 0x04, 0xd2}, netip.MustParseAddr("2001:db8::666").AsSlice()...)
	}
	return []byte{254, 8, 0x04, 0xd2, 6, 6, 6, 6}
}

// TestClientCannotForgeTOA: the layouts a client can use to have a toa
// module read its own TOA on the segment that completes the server's
// handshake (issue 20): an option of another kind whose length tcpopt
// refuses but the module steps over, with the forged TOA after it; options
// that leave tapvs no room for its own; a full-MTU segment; and a plain
// service that adds nothing. Each is dropped (bad_tcp_options) or reaches
// the server with tapvs's TOA or none, for every mode, with and without
// SYNPROXY, over IPv4 and IPv6.
func TestClientCannotForgeTOA(t *testing.T) {
	for _, k := range forgeKinds() {
		t.Run(k.String(), func(t *testing.T) {
			forged := forgedTOA(k.v6)
			mss := []byte{2, 4, 5, 0xb4}
			layouts := map[string]struct {
				opts    []byte
				payload int
				malform bool
			}{
				"a long MSS steps over nothing for tcpopt": {opts: append([]byte{2, 8, 1, 1, 1, 1, 1, 1}, forged...), malform: true},
				"an unknown kind of bad length before it":  {opts: append([]byte{99, 1}, forged...), malform: true},
				"a short timestamp before it":              {opts: append([]byte{8, 6, 0, 0, 0, 0}, forged...), malform: true},
				"first, with room for tapvs's":             {opts: forged},
				"after an MSS, padded with NOPs to 40":     {opts: append(append(append([]byte{}, mss...), forged...), nops(40-len(mss)-len(forged))...)},
				"after 26 bytes of SACK (no room)":         {opts: append(append(append([]byte{}, forged...), 5, 26), make([]byte, 24)...)},
				"before 18 bytes of SACK":                  {opts: append(append(append([]byte{}, forged...), 5, 18), make([]byte, 16)...)},
				"on a full-MTU segment":                    {opts: forged, payload: 1400},
			}
			for name, l := range layouts {
				if k.v6 && len(l.opts) > 40 {
					continue // the IPv6 TOA's 20 bytes leave less room for others
				}
				fc := newForgeConn(t, k, 41000)
				bad := fc.r.b.Stats.Drops()["bad_tcp_options"]
				v := fc.send(0, tcpflag.ACK, fc.ack, l.opts, make([]byte, l.payload))
				switch dropped := fc.r.b.Stats.Drops()["bad_tcp_options"] > bad; {
				case l.malform && (v != Drop || !dropped):
					t.Errorf("%s: %v (%v), want dropped as bad_tcp_options", name, v, fc.r.b.Stats.Drops())
				case !l.malform && v != Forward && v != Release:
					t.Errorf("%s: %v (%v), want forwarded without the forged TOA", name, v, fc.r.b.Stats.Drops())
				}
			}
		})
	}
}

func nops(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 1
	}
	return b
}

// TestClientCannotForgeProxyHeader: a client that starts its data n
// numbers before its first byte, so that its own bytes (a PROXY line of
// its choosing) take the header's place at the server, is dropped as
// proxy_overlap, as is a SYN with data; a keepalive probe (start-1, one
// byte) and an old duplicate go on at their own numbers, before the
// stream; the handshake ACK then carries tapvs's header. With and without
// SYNPROXY, PROXY v1 and v2, IPv4 and IPv6.
func TestClientCannotForgeProxyHeader(t *testing.T) {
	for _, k := range forgeKinds() {
		if k.mode != ClientAddrProxyV1 && k.mode != ClientAddrProxyV2 {
			continue
		}
		t.Run(k.String(), func(t *testing.T) {
			fc := newForgeConn(t, k, 42000)
			n := int32(len(fc.hdr))
			forged := []byte("PROXY TCP4 6.6.6.6 172.25.254.100 1234 80\r\nGET / HTTP/1.0\r\n\r\n")
			if v := fc.send(-n, tcpflag.ACK|tcpflag.PSH, fc.ack, nil, forged); v != Drop || fc.overlaps != 1 {
				t.Fatalf("data from n before the first byte: %v, %d proxy_overlap", v, fc.overlaps)
			}
			if v := fc.send(-1, tcpflag.ACK, fc.ack, nil, []byte("xy")); v != Drop || fc.overlaps != 2 {
				t.Fatalf("data from 1 before the first byte: %v, %d proxy_overlap", v, fc.overlaps)
			}
			if v := fc.send(-1, tcpflag.ACK, fc.ack, nil, []byte{0}); v != Forward {
				t.Fatalf("a keepalive probe (first-1, one byte): %v %v", v, fc.r.b.Stats.Drops())
			}
			if v := fc.send(-100, tcpflag.ACK|tcpflag.FIN, fc.ack, nil, []byte("old")); v != Forward {
				t.Fatalf("an old duplicate: %v %v", v, fc.r.b.Stats.Drops())
			}
			if v := fc.send(0, tcpflag.ACK, fc.ack, nil, []byte("GET / HTTP/1.0\r\n\r\n")); v != Forward {
				t.Fatalf("the first data: %v %v", v, fc.r.b.Stats.Drops())
			}
			if !k.synproxy {
				g := newForgeConn(t, k, 42001)
				if v := g.send(-1, tcpflag.SYN, 0, nil, forged); v != Drop || g.overlaps != 1 {
					t.Fatalf("a SYN with data (TCP Fast Open): %v, %d proxy_overlap", v, g.overlaps)
				}
			}
		})
	}
}

// TestClientAddrForgeryProperty sends each kind of connection 1200 client
// segments of random numbers (around the stream's start, past it, far
// off), flags, acks, options (well-formed, malformed, with forged TOAs)
// and payloads, a third of them as a TAP with offload hands them over
// (partial checksums, some TSO super-frames), and checks every frame sent to the server with the
// servers' readers (forgeConn.check). It also checks the run was not
// vacuous: segments of every place were sent and frames were checked.
func TestClientAddrForgeryProperty(t *testing.T) {
	for _, k := range forgeKinds() {
		t.Run(k.String(), func(t *testing.T) {
			// Each kind its own stream of segments: one that fails early
			// leaves the others' as they were.
			rng := rand.New(rand.NewPCG(20, uint64(k.mode)<<2|b2u(k.synproxy)<<1|b2u(k.v6)))
			fc := newForgeConn(t, k, 43000)
			checked, conns := 0, 1
			var byPlace [4]int
			for range 1200 {
				if !fc.open() {
					// An RST (or a SYNPROXY port reuse that failed) ended it:
					// the next segments go to a new connection.
					checked += fc.checked
					for p, n := range fc.byPlace {
						byPlace[p] += n
					}
					fc, conns = newForgeConn(t, k, 43000), conns+1
				}
				delta, flags, ack, opts, payload := randomSegment(rng, fc)
				fc.offload = rng.IntN(3) == 0
				if fc.offload && rng.IntN(4) == 0 {
					payload = append(payload, make([]byte, 3000)...) // a TSO super-frame
				}
				fc.send(delta, flags, ack, opts, payload)
			}
			checked += fc.checked
			for p, n := range fc.byPlace {
				byPlace[p] += n
			}
			t.Logf("%d frames checked at the server over %d connections; segments by place %v", checked, conns, byPlace)
			if checked < 100 {
				t.Fatalf("only %d frames reached the server: %v", checked, fc.r.b.Stats.Drops())
			}
			for p, n := range byPlace {
				if n == 0 && (fc.hdr != nil || p != inHeaderRange) {
					t.Fatalf("no segment at place %d (%v)", p, byPlace)
				}
			}
		})
	}
}

// start is S, where the server's stream starts: after its first SYN.
func (fc *forgeConn) start() uint32 { return fc.firstSYN + 1 }

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// open reports whether tapvs still keeps the connection, established.
func (fc *forgeConn) open() bool {
	key := tupleKey{src: addrKey(fc.cl), dst: addrKey(fc.vp), sport: fc.cport, dport: 80, proto: TCP}
	c := fc.r.b.table.lookup(&key)
	return c != nil && c.state.Load() != stDead && (c.sp == nil || c.sp.Established())
}

// randomSegment draws a client segment for fc: a seq mostly within a
// header's length of the stream's start, flags mostly ACK, the right ack
// mostly, options of random layout with forged TOAs, random payloads.
func randomSegment(rng *rand.Rand, fc *forgeConn) (delta int32, flags uint8, ack uint32, opts, payload []byte) {
	n := int32(len(fc.hdr)) + 4
	switch rng.IntN(8) {
	case 0:
		delta = int32(rng.Uint32())
	case 1:
		delta = 0
	default:
		delta = rng.Int32N(3*n) - 2*n
	}
	flags = tcpflag.ACK
	if rng.IntN(10) == 0 {
		flags |= tcpflag.FIN
	}
	if rng.IntN(50) == 0 {
		flags = tcpflag.SYN
	}
	if rng.IntN(80) == 0 {
		flags |= tcpflag.RST
	}
	if rng.IntN(8) == 0 {
		flags |= tcpflag.URG
		fc.urgent = uint16(rng.IntN(int(2*n) + 2))
	}
	ack = fc.ack
	if rng.IntN(4) == 0 {
		ack = rng.Uint32()
	}
	for len(opts) < 40 && rng.IntN(3) != 0 {
		switch rng.IntN(6) {
		case 0:
			opts = append(opts, 1)
		case 1:
			o := forgedTOA(rng.IntN(2) == 0)
			if rng.IntN(3) == 0 {
				o[0] = 253 // the kind other toa builds read for IPv6
				if o[1] == 8 {
					o[0] = 250
				}
			}
			opts = append(opts, o...)
		case 2:
			opts = append(opts, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2)
		case 3:
			opts = append(opts, byte(rng.IntN(256)), byte(rng.IntN(12)))
		default:
			b := make([]byte, rng.IntN(10))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			opts = append(opts, b...)
		}
	}
	payload = make([]byte, rng.IntN(int(n)*2))
	for i := range payload {
		payload[i] = byte('A' + rng.IntN(26))
	}
	return delta, flags, ack, opts, payload
}

// FuzzClientAddrForgery is the property for one client segment of the
// fuzzer's choosing on a fresh connection of each kind (kind picks it):
// whatever the segment, a toa module or a PROXY reader at the server reads
// tapvs's or nothing.
func FuzzClientAddrForgery(f *testing.F) {
	f.Add(uint8(2), int32(-57), uint8(tcpflag.ACK), true, []byte(nil), []byte("PROXY TCP4 6.6.6.6 172.25.254.100 1234 80\r\n"))
	f.Add(uint8(6), int32(-28), uint8(tcpflag.ACK), true, []byte(nil), []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x06\x06\x06\x06"))
	f.Add(uint8(1), int32(0), uint8(tcpflag.ACK), true, append([]byte{2, 8, 1, 1, 1, 1, 1, 1}, forgedTOA(false)...), []byte{})
	f.Add(uint8(0), int32(0), uint8(tcpflag.ACK), true, forgedTOA(false), []byte("x"))
	f.Add(uint8(5), int32(0), uint8(tcpflag.ACK), true, append([]byte{99, 1}, forgedTOA(true)...), []byte("x"))
	f.Add(uint8(3), int32(-1), uint8(tcpflag.SYN), false, []byte(nil), []byte("data in a SYN"))
	kinds := forgeKinds()
	f.Fuzz(func(t *testing.T, kind uint8, delta int32, flags uint8, rightAck bool, opts, payload []byte) {
		if len(payload) > 4000 {
			payload = payload[:4000]
		}
		fc := newForgeConn(t, kinds[int(kind)%len(kinds)], 44000)
		fc.offload = kind >= 128 || len(payload) > 1400
		ack := fc.ack
		if !rightAck {
			ack = uint32(delta) * 7919
		}
		fc.urgent = uint16(delta >> 16)
		fc.send(delta, flags&(tcpflag.SYN|tcpflag.ACK|tcpflag.FIN|tcpflag.RST|tcpflag.PSH|tcpflag.URG), ack, opts, payload)
		fc.send(0, tcpflag.ACK, fc.ack, nil, []byte("after"))
	})
}

// segTo sends a plain client segment of fc at first+delta (s: its flags,
// ack, payload; with urgent > 0, URG and that pointer) and returns the
// verdict and the TCP segment the server got, nil if none.
func (fc *forgeConn) segTo(delta uint32, s pktSpec, urgent uint16) (Verdict, []byte) {
	flags := uint8(0)
	for _, f := range []struct {
		on  bool
		bit uint8
	}{{s.syn, tcpflag.SYN}, {s.ack, tcpflag.ACK}, {s.fin, tcpflag.FIN}, {s.rst, tcpflag.RST}} {
		if f.on {
			flags |= f.bit
		}
	}
	if urgent > 0 {
		flags |= tcpflag.URG
		fc.urgent = urgent
	}
	var got []byte
	fc.seen = func(tcp []byte) { got = append([]byte(nil), tcp...) }
	defer func() { fc.seen = nil }()
	v := fc.send(int32(delta), flags, s.ackNum, nil, s.payload)
	return v, got
}

// A client's RST in SYN_RECV takes the server's half-open connection,
// while tapvs's entry stays; a SYN with a new ISN then opens a new one at
// the server. It is mapped onto the server's first ISN, so the new
// stream starts where the header goes: data sent there n early is
// refused, and the handshake ACK carries the header (review of issue 20).
func TestProxyNewISNKeepsTheServersStart(t *testing.T) {
	for _, mode := range []ClientAddr{ClientAddrProxyV1, ClientAddrProxyV2} {
		fc := newForgeConn(t, forgeKind{mode: mode}, 45000)
		n := uint32(len(fc.hdr))
		if v, _ := fc.segTo(0, pktSpec{rst: true}, 0); v != Forward {
			t.Fatalf("RST: %v", v)
		}
		v, syn := fc.segTo(999, pktSpec{syn: true}, 0)
		if v != Forward || binary.BigEndian.Uint32(syn[4:]) != fc.start()-1 {
			t.Fatalf("%v: a SYN with a new ISN: %v, at %d; want at the server's first ISN %d", mode, v, binary.BigEndian.Uint32(syn[4:]), fc.start()-1)
		}
		forged := []byte("PROXY TCP4 6.6.6.6 172.25.254.100 1234 80\r\nGET / HTTP/1.0\r\n\r\n")
		if v, _ := fc.segTo(1000-n, pktSpec{ack: true, ackNum: fc.ack, payload: forged}, 0); v != Drop {
			t.Fatalf("%v: data n before the new first byte: %v", mode, v)
		}
		v, data := fc.segTo(1000, pktSpec{ack: true, ackNum: fc.ack, payload: []byte("GET /")}, 0)
		hl := int(data[12]>>4) * 4
		if v != Forward || binary.BigEndian.Uint32(data[4:]) != fc.start() || string(data[hl:hl+int(n)]) != string(fc.hdr) {
			t.Fatalf("%v: the new handshake's data: %v at %d, %q; want the header at %d", mode, v, binary.BigEndian.Uint32(data[4:]), data[hl:], fc.start())
		}
	}
}

// Once the server has acknowledged the header, a client's bytes land n
// past where they would without one however far its stream goes: past
// 2 GiB too, where comparing with the first byte alone would put them
// before it (review of issue 20). Plain and SYNPROXY.
func TestProxyUploadPast2GiB(t *testing.T) {
	for _, sp := range []bool{false, true} {
		fc := newForgeConn(t, forgeKind{mode: ClientAddrProxyV2, synproxy: sp}, 46000)
		n := uint32(len(fc.hdr))
		for _, delta := range []uint32{1, 1 << 30, 1<<31 - 1, 1 << 31, 1<<31 + 5000, 3 << 30} {
			v, seg := fc.segTo(delta, pktSpec{ack: true, ackNum: fc.ack, payload: []byte("x")}, 0)
			if v != Forward {
				t.Fatalf("synproxy=%t byte first+%#x: %v %v", sp, delta, v, fc.r.b.Stats.Drops())
			}
			if got, want := binary.BigEndian.Uint32(seg[4:]), fc.start()+n+delta; got != want {
				t.Errorf("synproxy=%t: byte first+%#x reaches the server at S+%#x, want S+n+%#x", sp, delta, got-fc.start(), delta)
			}
			if delta == 1 {
				// The server acks the header and the byte, as it would.
				ack := pframe(t, pktSpec{src: fc.rs, dst: fc.lip, sport: 8080, dport: binary.BigEndian.Uint16(seg), proto: TCP, ack: true,
					seq: fc.rsISN + 1, ackNum: fc.start() + n + 2, srcMAC: macGateway})
				if v := fc.r.b.Process(ServerSide, ack); v != Forward {
					t.Fatalf("the server's ack: %v %v", v, fc.r.b.Stats.Drops())
				}
			}
		}
	}
}

// Linux takes the byte at seq + urgent pointer - 1 out of the stream it
// reads: it is never one of the header's. The segment that carries the
// header has its pointer moved by n (or URG taken off where it would point
// before the client's bytes or past 16 bits); a keepalive probe before the
// stream, or an early segment, whose urgent byte would be one of them is
// dropped (review of issue 20).
func TestProxyUrgentPointer(t *testing.T) {
	fc := newForgeConn(t, forgeKind{mode: ClientAddrProxyV2}, 47000)
	n := uint32(len(fc.hdr))
	for _, c := range []struct {
		delta   uint32
		urgent  uint16
		payload string
		want    Verdict
		urg     uint16 // the pointer the server gets, 0: no URG
	}{
		{0, 17, "GET / HTTP/1.0\r\n\r\n", Forward, 17 + uint16(n)},
		{0, 65535, "GET / HTTP/1.0\r\n\r\n", Forward, 0},
		{^uint32(0), 18, "x", Drop, 0},
		{^uint32(0), 1, "x", Forward, 1},
		{5, 1, "late", Forward, 1},
	} {
		v, seg := fc.segTo(c.delta, pktSpec{ack: true, ackNum: fc.ack, payload: []byte(c.payload)}, c.urgent)
		if v != c.want {
			t.Fatalf("first%+d, urgent pointer %d: %v, want %v", int32(c.delta), c.urgent, v, c.want)
		}
		if v != Forward {
			continue
		}
		ptr := binary.BigEndian.Uint16(seg[18:])
		if urg := seg[tcpflag.Offset]&tcpflag.URG != 0; urg != (c.urg != 0) || urg && ptr != c.urg {
			t.Fatalf("first%+d, urgent pointer %d: the server got URG %v pointer %d, want %d", int32(c.delta), c.urgent, urg, ptr, c.urg)
		}
	}
}
