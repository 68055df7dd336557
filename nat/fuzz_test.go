package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/synproxy"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// The fuzz targets of the data path. Every frame a fuzzer makes goes through
// Process as a reader hands it over (headroom, an optional virtio-net
// header), and what comes out is checked from scratch by check.

var (
	fzClient  = netip.MustParseAddr("172.25.254.1")
	fzVIP     = netip.MustParseAddr("172.25.254.100")
	fzLIP1    = netip.MustParseAddr("172.25.84.10")
	fzLIP2    = netip.MustParseAddr("172.25.84.11")
	fzRS1     = netip.MustParseAddr("10.20.1.2")
	fzRS2     = netip.MustParseAddr("10.20.2.2")
	fzClientM = [6]byte{2, 0, 0, 0, 0, 0x10}
	fzRouterM = [6]byte{2, 0, 0, 0, 0, 0x20}
)

// Service ports of the fuzz balancer: a plain TCP service, a SYNPROXY one
// and a UDP one, all on the same VIP.
const (
	fzTCP   = 80
	fzProxy = 8080
	fzUDP   = 53
)

// fuzzBalancer has the three services, LIPs whose port search starts at a
// known place (so the seeds can name local ports) and a clock at 1 s.
type fuzzBalancer struct {
	b    *Balancer
	svcs [3]*Service
	tb   testing.TB
	sent int // frames sent by Transmit or released
	// heldBad counts client frames held (Stolen) whose transport checksum
	// did not verify when they came in: sent on later, they still do not.
	heldBad int
}

// Resolve and Transmit are the balancer's Link.
func (fb *fuzzBalancer) Resolve(*Dest) {}
func (fb *fuzzBalancer) Transmit(_ Side, f []byte) {
	fb.sent++
	if ok, has := l4Verifies(f); has && !ok && fb.heldBad > 0 {
		fb.heldBad-- // a held frame that came in bad
		return
	}
	checkBuilt(fb.tb, f)
}

// Send is the balancer's Link: a kept frame, behind its virtio-net header.
func (fb *fuzzBalancer) Send(side Side, f []byte) { fb.Transmit(side, f[tun.VNetHdrLen:]) }

// process runs a frame through the balancer and sends on what a Release
// lets go, as a reader would.
func (fb *fuzzBalancer) process(side Side, fr *Frame) Verdict {
	v := fb.b.Process(side, fr)
	if fr.Frags != nil {
		for _, q := range fr.Frags.Frames() {
			fb.Transmit(side, q[tun.VNetHdrLen:]) // a fragment: checked as a built frame
		}
		fr.Frags.Release()
	}
	if v == Forward && fr.Follow != nil {
		fb.Transmit(side, fr.Follow[tun.VNetHdrLen:]) // checked as a built frame
	}
	if v == Release {
		for _, q := range fr.Released {
			fb.Transmit(side, q[tun.VNetHdrLen:])
		}
	}
	return v
}

func newFuzzBalancer(tb testing.TB) *fuzzBalancer {
	fb := &fuzzBalancer{}
	// Short timeouts: a few clock steps reach every expiry.
	var to Timeouts
	for i := range to.TCP {
		to.TCP[i] = time.Duration(1+i%3) * time.Second
	}
	to.UDP = 3 * time.Second
	cfg := Config{MaxConns: 64, PortMin: 5000, PortMax: 5031, Timeouts: to, Readers: 2,
		ClientMAC: [6]byte{2, 0, 0, 0, 0, 1}, ServerMAC: [6]byte{2, 0, 0, 0, 0, 2},
		ClientNet: netip.MustParsePrefix("172.25.254.254/24"), ServerNet: netip.MustParsePrefix("172.25.84.4/24"),
		Synproxy: DefaultSynproxy(), PortQuarantine: 4 * time.Second}
	b, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	fb.b, fb.tb = b, tb
	b.Attach(fb)
	b.sp.cookies.Minute = func() uint32 { return 1000 }
	err = b.Update(func(tx *Tx) error {
		for i, sc := range []ServiceConfig{
			{Addr: fzVIP, Port: fzTCP, Protocol: TCP, Scheduler: "rr"},
			{Addr: fzVIP, Port: fzProxy, Protocol: TCP, Scheduler: "rr", Synproxy: true},
			{Addr: fzVIP, Port: fzUDP, Protocol: UDP, Scheduler: "rr"},
		} {
			s, err := tx.AddService(sc)
			if err != nil {
				return err
			}
			fb.svcs[i] = s
			for _, l := range []netip.Addr{fzLIP1, fzLIP2} {
				la, err := tx.AddLocalAddr(s, l)
				if err != nil {
					return err
				}
				la.cursor.Store(0)
			}
			for _, rs := range []netip.Addr{fzRS1, fzRS2} {
				d, err := tx.AddDest(s, rs, sc.Port, 1)
				if err != nil {
					return err
				}
				d.SetNextHopMAC(fzRouterM)
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	b.table.now.Store(int64(time.Second))
	return fb
}

// frameSpec is a frame to build: Ethernet, IPv4, TCP or UDP (or ICMP carrying
// quote), with every checksum right.
type frameSpec struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        uint8
	flags        uint8
	seq, ack     uint32
	window       uint16
	opts         []byte // TCP options, a multiple of 4
	payload      []byte
	srcMAC       [6]byte
	icmpType     uint8
	quote        []byte // ICMP error: the quoted IP packet
}

func (w *frameSpec) bytes() []byte {
	var l4 []byte
	switch w.proto {
	case wire.ProtoTCP:
		l4 = make([]byte, 20+len(w.opts)+len(w.payload))
		binary.BigEndian.PutUint16(l4[0:], w.sport)
		binary.BigEndian.PutUint16(l4[2:], w.dport)
		binary.BigEndian.PutUint32(l4[4:], w.seq)
		binary.BigEndian.PutUint32(l4[8:], w.ack)
		l4[12] = byte((20+len(w.opts))/4) << 4
		l4[13] = w.flags
		binary.BigEndian.PutUint16(l4[14:], max(w.window, 1))
		copy(l4[20:], w.opts)
		copy(l4[20+len(w.opts):], w.payload)
	case wire.ProtoUDP:
		l4 = make([]byte, 8+len(w.payload))
		binary.BigEndian.PutUint16(l4[0:], w.sport)
		binary.BigEndian.PutUint16(l4[2:], w.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], w.payload)
	case wire.ProtoICMP:
		l4 = make([]byte, 8+len(w.quote))
		l4[0], l4[1] = w.icmpType, 3
		copy(l4[8:], w.quote)
		binary.BigEndian.PutUint16(l4[2:], csum.Checksum(l4, 0))
	}
	b := make([]byte, 14+20+len(l4))
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(b[6:12], w.srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], wire.EtherIPv4)
	ip := b[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, w.proto
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	copy(ip[12:16], w.src.AsSlice())
	copy(ip[16:20], w.dst.AsSlice())
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
	copy(b[34:], l4)
	if off := l4csumOff(w.proto); off >= 0 {
		ps := csum.PseudoV4(ip[12:16], ip[16:20], w.proto, len(l4))
		binary.BigEndian.PutUint16(b[34+off:], csum.Checksum(b[34:], ps))
	}
	return b
}

// tsOpts are NOP, NOP, timestamps.
func tsOpts(val, ecr uint32) []byte {
	o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(o[4:], val)
	binary.BigEndian.PutUint32(o[8:], ecr)
	return o
}

// synOpts4 are a Linux SYN's options.
func synOpts4(tsval uint32) []byte {
	o := []byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7}
	binary.BigEndian.PutUint32(o[8:], tsval)
	return o
}

const (
	fzHeadroom = 128 // netstack.Headroom: TOA and PROXY headers move the headers into it
	fzTailroom = 64
)

// fuzzFrame lays a frame out as a reader does: headroom, with the
// virtio-net header (if any) at its end, then the frame.
func fuzzFrame(frame []byte, vnet []byte) *Frame {
	buf := make([]byte, fzHeadroom+len(frame)+fzTailroom)
	for i := range fzHeadroom {
		buf[i] = 0xa5 // headroom canary
	}
	copy(buf[fzHeadroom:], frame)
	f := &Frame{Buf: buf, Off: fzHeadroom, Len: len(frame)}
	if vnet != nil {
		f.VNet = buf[fzHeadroom-tun.VNetHdrLen : fzHeadroom]
		copy(f.VNet, vnet)
	}
	return f
}

// l4Verifies reports whether an IPv4 frame's transport checksum verifies
// from scratch (UDP's 0 is no checksum), and whether it has one to check.
func l4Verifies(frame []byte) (ok, has bool) {
	if len(frame) < 34 || frame[14]>>4 != 4 {
		return false, false
	}
	ihl := int(frame[14]&0xf) * 4
	total := int(binary.BigEndian.Uint16(frame[16:]))
	if ihl < 20 || total < ihl || 14+total > len(frame) {
		return false, false
	}
	ip := frame[14 : 14+ihl]
	if wire.IPv4(ip).Fragment() {
		// A fragment: its transport checksum covers the whole datagram,
		// not this piece (the unit tests check fragments joined).
		return false, false
	}
	l4 := frame[14+ihl : 14+total]
	switch proto := ip[9]; proto {
	case wire.ProtoTCP, wire.ProtoUDP:
		if proto == wire.ProtoTCP && len(l4) < 20 || proto == wire.ProtoUDP && len(l4) < 8 {
			return false, false
		}
		if proto == wire.ProtoUDP && binary.BigEndian.Uint16(l4[6:]) == 0 {
			return true, false
		}
		return csum.Checksum(l4, csum.PseudoV4(ip[12:16], ip[16:20], proto, len(l4))) == 0, true
	case wire.ProtoICMP:
		return csum.Checksum(l4, 0) == 0, true
	}
	return false, false
}

// checkBuilt checks a frame the balancer made itself (a SYN-ACK, an RST, a
// SYN to a server, a held frame sent on): every checksum verifies.
func checkBuilt(tb testing.TB, f []byte) {
	tb.Helper()
	if len(f) < 34 || csum.Checksum(f[14:14+int(f[14]&0xf)*4], 0) != 0 {
		tb.Fatalf("a frame the balancer sent has a bad IPv4 header: % x", f)
	}
	if ok, has := l4Verifies(f); has && !ok {
		tb.Fatalf("a frame the balancer sent has a bad transport checksum: % x", f)
	}
}

// check holds every frame Process returns to its contract: the headroom
// before the virtio-net header is untouched (a rewrite that grew the
// headers moved the frame's start into it: before that start), the frame
// lies in the buffer,
// its IPv4 header checksum verifies, and its transport checksum verifies
// if the frame's did when it came in (a rewrite carries a bad checksum
// along, never makes one; a partial checksum is the kernel's to finish).
func check(tb testing.TB, in []byte, f *Frame, v Verdict) {
	tb.Helper()
	canary := min(fzHeadroom, f.Off)
	if f.VNet != nil {
		canary -= tun.VNetHdrLen
	}
	for i := range canary {
		if f.Buf[i] != 0xa5 {
			tb.Fatalf("headroom byte %d written (verdict %v)", i, v)
		}
	}
	if v != Forward && v != Reply {
		return
	}
	if f.Off < 0 || f.Len < 14 || f.Off+f.Len > len(f.Buf) {
		tb.Fatalf("frame [%d:+%d] outside its buffer of %d", f.Off, f.Len, len(f.Buf))
	}
	out := f.Bytes()
	if len(out) < 34 || csum.Checksum(out[14:14+int(out[14]&0xf)*4], 0) != 0 {
		tb.Fatalf("%v frame with a bad IPv4 header checksum:\nin  % x\nout % x", v, in, out)
	}
	if f.partial() {
		return
	}
	inOK, inHas := l4Verifies(in)
	outOK, outHas := l4Verifies(out)
	if outHas && !outOK && (inOK || !inHas || v == Reply) {
		tb.Fatalf("%v frame with a bad transport checksum (it came in %v):\nin  % x\nout % x", v, inOK, in, out)
	}
}

// checkTable holds the connection table to its invariants: its count is
// the number of live connections, and each is found under both its keys.
func checkTable(tb testing.TB, b *Balancer) {
	tb.Helper()
	seen := map[*Conn]bool{}
	for i := range b.table.shards {
		s := &b.table.shards[i]
		for _, c := range s.m {
			seen[c] = true
		}
		for _, c := range s.overflow {
			seen[c] = true
		}
	}
	for c := range seen {
		if c.state.Load() == stDead {
			tb.Fatalf("a dead connection is in the table: %+v", c.in)
		}
		if b.table.lookup(&c.in) != c || b.table.lookup(&c.out) != c {
			tb.Fatalf("connection %+v is not under both keys", c.in)
		}
	}
	if n := b.table.Len(); n != len(seen) {
		tb.Fatalf("table count %d, %d connections in it", n, len(seen))
	}
}

// checkDrained checks that nothing is left once every connection is gone:
// no counts at servers, no ports held at LIPs, nothing waiting for a server.
func checkDrained(tb testing.TB, fb *fuzzBalancer) {
	tb.Helper()
	b := fb.b
	checkTable(tb, b)
	if b.table.Len() != 0 {
		tb.Fatalf("%d connections left after every timeout", b.table.Len())
	}
	for _, s := range b.Services() {
		for _, d := range s.Dests() {
			if a, ia, _ := d.Conns(); a != 0 || ia != 0 {
				tb.Fatalf("server %s still counts %d active, %d inactive", d, a, ia)
			}
		}
		for _, l := range s.LocalAddrs() {
			if n, _, _ := l.Stats(); n != 0 {
				tb.Fatalf("LIP %s still holds %d ports", l.Addr, n)
			}
		}
	}
	b.sp.mu.Lock()
	pending := len(b.sp.pending)
	b.sp.mu.Unlock()
	if pending != 0 {
		tb.Fatalf("%d synproxy handshakes still pending", pending)
	}
	// Deleted services and LIPs were answered for while connections used
	// them: now only the live ones are.
	b.mu.Lock()
	retired, retiredSvcs := len(b.retired), len(b.retiredSvcs)
	b.mu.Unlock()
	vips, lips := b.Addresses()
	wantVIPs, wantLIPs := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, s := range b.Services() {
		wantVIPs[s.Addr] = true
		for _, l := range s.LocalAddrs() {
			wantLIPs[l.Addr] = true
		}
	}
	if retired != 0 || retiredSvcs != 0 || len(vips) != len(wantVIPs) || len(lips) != len(wantLIPs) {
		tb.Fatalf("after every connection ended: %d retired LIPs, %d retired services, answering for %v and %v", retired, retiredSvcs, vips, lips)
	}
}

// live are the connections fuzzLive opens, as ipvsadm -lnc shows them.
type live struct {
	plain, udp, proxied, pending ConnInfo
}

func (fb *fuzzBalancer) conn(tb testing.TB, proto Protocol, cport, vport uint16) ConnInfo {
	tb.Helper()
	k := tupleKey{src: fzClient.As16(), dst: fzVIP.As16(), sport: cport, dport: vport, proto: proto}
	c := fb.b.table.lookup(&k)
	if c == nil {
		tb.Fatalf("no connection from port %d", cport)
	}
	return ConnInfo{Protocol: proto, Client: addrPort(c.in.src, c.in.sport), VIP: addrPort(c.in.dst, c.in.dport),
		LIP: addrPort(c.out.dst, c.out.dport), RIP: addrPort(c.out.src, c.out.sport)}
}

// fromServer is a frame from a connection's real server to its LIP.
func fromServer(c ConnInfo, w frameSpec) []byte {
	w.src, w.dst, w.sport, w.dport, w.srcMAC = c.RIP.Addr(), c.LIP.Addr(), c.RIP.Port(), c.LIP.Port(), fzRouterM
	if w.proto == 0 {
		w.proto = uint8(c.Protocol)
	}
	return w.bytes()
}

// fuzzLive opens a live connection of each kind: plain TCP (client port
// 40000), UDP (42000), SYNPROXY established (41000) and SYNPROXY waiting
// for its server (41001).
func fuzzLive(tb testing.TB, fb *fuzzBalancer) live {
	tb.Helper()
	for _, w := range []frameSpec{
		{src: fzClient, dst: fzVIP, sport: 40000, dport: fzTCP, proto: wire.ProtoTCP, flags: tcpflag.SYN, seq: 1000, opts: synOpts4(5), srcMAC: fzClientM},
		{src: fzClient, dst: fzVIP, sport: 42000, dport: fzUDP, proto: wire.ProtoUDP, payload: []byte("query"), srcMAC: fzClientM},
	} {
		if v := fb.process(ClientSide, fuzzFrame(w.bytes(), nil)); v != Forward {
			tb.Fatalf("opening %d: %v", w.sport, v)
		}
	}
	fuzzHandshake(tb, fb, 41000, true)
	fuzzHandshake(tb, fb, 41001, true)
	l := live{plain: fb.conn(tb, TCP, 40000, fzTCP), udp: fb.conn(tb, UDP, 42000, fzUDP),
		proxied: fb.conn(tb, TCP, 41000, fzProxy), pending: fb.conn(tb, TCP, 41001, fzProxy)}
	sa := fromServer(l.proxied, frameSpec{proto: wire.ProtoTCP, flags: tcpflag.SYN | tcpflag.ACK, seq: 90000, ack: 7001, opts: synOpts4(77)})
	if v := fb.process(ServerSide, fuzzFrame(sa, nil)); v != Release {
		tb.Fatalf("server SYN-ACK: %v %v", v, fb.b.Stats.Drops())
	}
	return l
}

// fuzzSeeds are a frame of each kind the balancer handles, with the side
// it comes from: client frames for new and live connections, server frames
// on the live ones, an ICMP error quoting one.
func fuzzSeeds(tb testing.TB) (frames [][]byte, sides []Side) {
	fb := newFuzzBalancer(tb)
	l := fuzzLive(tb, fb)
	add := func(side Side, b []byte) {
		frames, sides = append(frames, b), append(sides, side)
	}
	add(ClientSide, (&frameSpec{src: fzClient, dst: fzVIP, sport: 40005, dport: fzTCP, proto: wire.ProtoTCP, flags: tcpflag.SYN, seq: 1000, opts: synOpts4(5), srcMAC: fzClientM}).bytes())
	add(ClientSide, (&frameSpec{src: fzClient, dst: fzVIP, sport: 40000, dport: fzTCP, proto: wire.ProtoTCP, flags: tcpflag.ACK | tcpflag.PSH, seq: 1001, ack: 1, opts: tsOpts(6, 1), payload: []byte("GET / HTTP/1.0\r\n\r\n"), srcMAC: fzClientM}).bytes())
	add(ClientSide, (&frameSpec{src: fzClient, dst: fzVIP, sport: 41005, dport: fzProxy, proto: wire.ProtoTCP, flags: tcpflag.SYN, seq: 7000, opts: synOpts4(9), srcMAC: fzClientM}).bytes())
	add(ClientSide, (&frameSpec{src: fzClient, dst: fzVIP, sport: 41000, dport: fzProxy, proto: wire.ProtoTCP, flags: tcpflag.ACK, seq: 7001, ack: 12345,
		opts: append([]byte{1}, append(tsOpts(10, 11)[1:], 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 1)...), payload: []byte("x"), srcMAC: fzClientM}).bytes())
	add(ClientSide, (&frameSpec{src: fzClient, dst: fzVIP, sport: 41001, dport: fzProxy, proto: wire.ProtoTCP, flags: tcpflag.ACK, seq: 7001, ack: 12345, payload: []byte("early"), srcMAC: fzClientM}).bytes())
	add(ClientSide, (&frameSpec{src: fzClient, dst: fzVIP, sport: 42000, dport: fzUDP, proto: wire.ProtoUDP, payload: []byte("query"), srcMAC: fzClientM}).bytes())
	add(ServerSide, fromServer(l.plain, frameSpec{flags: tcpflag.SYN | tcpflag.ACK, seq: 1, ack: 1001, opts: synOpts4(3)}))
	add(ServerSide, fromServer(l.plain, frameSpec{flags: tcpflag.ACK, seq: 2, ack: 1019, payload: []byte("HTTP/1.0 200 OK\r\n")}))
	// The plain connection's timestamps: the server's echo after a SACK
	// block (shifted back), and a client segment whose timestamp follows a
	// NOP (shifted).
	add(ServerSide, fromServer(l.plain, frameSpec{flags: tcpflag.ACK, seq: 2, ack: 1019,
		opts: append([]byte{1, 5, 10, 0, 0, 0, 9, 0, 0, 0, 10}, append(tsOpts(3, 6)[1:], 1, 1)...), payload: []byte("x")}))
	add(ClientSide, (&frameSpec{src: fzClient, dst: fzVIP, sport: 40000, dport: fzTCP, proto: wire.ProtoTCP, flags: tcpflag.ACK, seq: 1019, ack: 3,
		opts: append([]byte{1}, tsOpts(7, 3)[1:]...), srcMAC: fzClientM}).bytes())
	add(ServerSide, fromServer(l.proxied, frameSpec{flags: tcpflag.ACK, seq: 90001, ack: 7001, opts: append([]byte{1}, append(tsOpts(78, 10)[1:], 1)...), payload: []byte("220 hello")}))
	add(ServerSide, fromServer(l.pending, frameSpec{flags: tcpflag.SYN | tcpflag.ACK, seq: 50000, ack: 7001, opts: synOpts4(77)}))
	add(ServerSide, fromServer(l.pending, frameSpec{flags: tcpflag.RST | tcpflag.ACK, ack: 7001}))
	add(ServerSide, fromServer(l.udp, frameSpec{payload: []byte("answer")}))
	q := fromServer(l.udp, frameSpec{payload: []byte("query")})[14:] // as the LIP sent it: swap
	copy(q[12:16], l.udp.LIP.Addr().AsSlice())
	copy(q[16:20], l.udp.RIP.Addr().AsSlice())
	binary.BigEndian.PutUint16(q[20:], l.udp.LIP.Port())
	binary.BigEndian.PutUint16(q[22:], l.udp.RIP.Port())
	add(ServerSide, (&frameSpec{src: l.udp.RIP.Addr(), dst: l.udp.LIP.Addr(), proto: wire.ProtoICMP, icmpType: wire.ICMP4Unreach, quote: q[:28], srcMAC: fzRouterM}).bytes())
	// The client complains about what the VIP sent it (a time exceeded).
	cq := (&frameSpec{src: fzVIP, dst: fzClient, sport: fzTCP, dport: 40000, proto: wire.ProtoTCP, flags: tcpflag.ACK, seq: 1, ack: 1001}).bytes()[14:]
	add(ClientSide, (&frameSpec{src: fzClient, dst: fzVIP, proto: wire.ProtoICMP, icmpType: wire.ICMP4TimeEx, quote: cq[:28], srcMAC: fzClientM}).bytes())
	// A TSO super-frame's worth of data on the plain connection.
	add(ClientSide, (&frameSpec{src: fzClient, dst: fzVIP, sport: 40000, dport: fzTCP, proto: wire.ProtoTCP, flags: tcpflag.ACK, seq: 1001, ack: 1, payload: make([]byte, 9000), srcMAC: fzClientM}).bytes())
	return frames, sides
}

// FuzzProcess runs one frame, from either side, with or without a
// virtio-net header, through a balancer that has a live connection of each
// kind (plain TCP, UDP, a SYNPROXY one established and one waiting for its
// server), and checks what comes out.
func FuzzProcess(f *testing.F) {
	frames, sides := fuzzSeeds(f)
	for i, s := range frames {
		f.Add(uint8(sides[i]), s)
		f.Add(uint8(sides[i])|2|4, s)    // behind a virtio-net header, checksum partial
		f.Add(uint8(sides[i])|8|3<<4, s) // handed over by a peer, marked 291
	}
	f.Fuzz(func(t *testing.T, ctl uint8, frame []byte) {
		fb := newFuzzBalancer(t)
		fuzzLive(t, fb)
		side := Side(ctl & 1)
		var vnet []byte
		if ctl&2 != 0 {
			vnet = make([]byte, tun.VNetHdrLen)
			if ctl&4 != 0 {
				tun.VNetHdr(vnet).SetNeedsCsum(0, 0) // where does not matter here: the balancer reads the flag
			}
		}
		in := slices.Clone(frame)
		fr := fuzzFrame(frame, vnet)
		if ctl&8 != 0 {
			// Handed over by a cluster peer, with a fragment mark the
			// peer chose (outside input too: handedMark).
			fr.HandedOff, fr.Mark = true, FragMark(ctl>>4)*97
		}
		v := fb.process(side, fr)
		check(t, in, fr, v)
		checkTable(t, fb.b)
	})
}

// fuzzHandshake proves a client's handshake to the SYNPROXY service with the
// cookie the balancer answers with, and returns that cookie.
func fuzzHandshake(tb testing.TB, fb *fuzzBalancer, cport uint16, ts bool) uint32 {
	tb.Helper()
	opts := synOpts4(9)
	if !ts {
		opts = []byte{2, 4, 5, 0xb4}
	}
	syn := fuzzFrame((&frameSpec{src: fzClient, dst: fzVIP, sport: cport, dport: fzProxy, proto: wire.ProtoTCP, flags: tcpflag.SYN, seq: 7000, opts: opts, srcMAC: fzClientM}).bytes(), nil)
	if v := fb.process(ClientSide, syn); v != Reply {
		tb.Fatalf("SYN from %d: %v", cport, v)
	}
	sa := syn.Bytes()
	cookie := binary.BigEndian.Uint32(sa[34+4:])
	var ackOpts []byte
	if ts {
		ackOpts = tsOpts(10, binary.BigEndian.Uint32(sa[34+20+8:]))
	}
	ack := fuzzFrame((&frameSpec{src: fzClient, dst: fzVIP, sport: cport, dport: fzProxy, proto: wire.ProtoTCP, flags: tcpflag.ACK, seq: 7001, ack: cookie + 1, opts: ackOpts, srcMAC: fzClientM}).bytes(), nil)
	if v := fb.process(ClientSide, ack); v != Forward && v != Stolen {
		tb.Fatalf("ACK from %d: %v %v", cport, v, fb.b.Stats.Drops())
	}
	return cookie
}

// FuzzSequence is the stateful fuzzer: the input is a program of steps
// (frames from either side built from templates and mutated, handshakes
// proved with real cookies, forged ones, clock steps with sweeps and
// SYNPROXY retries, control changes) and after each step the table's
// invariants hold, every frame out checks, and no step that must not make
// state (a non-SYN, a bad cookie) does. At the end the clock runs past
// every timeout (3 s at most here), the SYN retries and the port
// quarantine (5 s), and everything must be gone.
func FuzzSequence(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0, 1, 2, 3, 4, 10, 5, 1, 0, 0, 7, 2, 9})
	f.Add([]byte{3, 2, 3, 3, 1, 5, 0, 1, 4, 30, 6, 0, 0, 2, 5, 4, 200})
	f.Add([]byte{0, 7, 1, 8, 6, 1, 5, 2, 0, 0, 1, 2, 4, 255, 4, 255})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 512 {
			prog = prog[:512]
		}
		fb := newFuzzBalancer(t)
		b := fb.b
		rd := func() byte {
			if len(prog) == 0 {
				return 0
			}
			c := prog[0]
			prog = prog[1:]
			return c
		}
		cookies := map[uint16]uint32{}
		for len(prog) > 0 {
			op := rd() % 8
			arg := rd()
			cport := 40000 + uint16(arg%4)
			before := b.table.Len()
			switch op {
			case 0, 1: // a client frame to one of the services, maybe mutated
				port := []uint16{fzTCP, fzProxy, fzUDP}[int(arg>>2)%3]
				w := frameSpec{src: fzClient, dst: fzVIP, sport: cport, dport: port, proto: wire.ProtoTCP, srcMAC: fzClientM,
					flags: []uint8{tcpflag.SYN, tcpflag.ACK, tcpflag.ACK | tcpflag.PSH, tcpflag.FIN | tcpflag.ACK, tcpflag.RST}[int(rd())%5],
					seq:   7001, ack: cookies[cport] + 1, opts: tsOpts(uint32(rd()), 1), payload: []byte{rd()}}
				if port == fzUDP {
					w.proto, w.opts = wire.ProtoUDP, nil
				}
				in := w.bytes()
				if op == 1 { // mutate: flip a byte past the Ethernet header
					if n := len(in) - 14; n > 0 {
						in[14+int(rd())%n] ^= rd() | 1
					}
				}
				fr := fuzzFrame(in, nil)
				v := fb.process(ClientSide, fr)
				check(t, in, fr, v)
				if ok, _ := l4Verifies(in); v == Stolen && !ok {
					fb.heldBad++
				}

				if op == 0 && w.proto == wire.ProtoTCP && w.flags&tcpflag.SYN == 0 && port == fzTCP && b.table.Len() > before {
					t.Fatalf("a non-SYN made a connection (%v)", v)
				}
			case 2: // a server frame on a live connection's reply tuple
				conns := b.table.Conns()
				if len(conns) == 0 {
					continue
				}
				c := conns[int(arg)%len(conns)]
				w := frameSpec{src: c.RIP.Addr(), dst: c.LIP.Addr(), sport: c.RIP.Port(), dport: c.LIP.Port(), proto: uint8(c.Protocol), srcMAC: fzRouterM,
					flags: []uint8{tcpflag.SYN | tcpflag.ACK, tcpflag.ACK, tcpflag.ACK | tcpflag.PSH, tcpflag.FIN | tcpflag.ACK, tcpflag.RST | tcpflag.ACK}[int(rd())%5],
					seq:   90000, ack: 7001, opts: append([]byte{1}, append(tsOpts(uint32(rd()), 10)[1:], 1)...), payload: []byte{rd()}}
				if c.Protocol == UDP {
					w.opts = nil
				}
				in := w.bytes()
				fr := fuzzFrame(in, nil)
				check(t, in, fr, fb.process(ServerSide, fr))
			case 3: // a handshake proved with the real cookie
				cookies[cport] = fuzzHandshakeOrDrop(t, fb, cport, arg&0x80 != 0)
			case 4: // a forged cookie makes nothing
				in := (&frameSpec{src: fzClient, dst: fzVIP, sport: 43000 + uint16(arg), dport: fzProxy, proto: wire.ProtoTCP, flags: tcpflag.ACK,
					seq: 7001, ack: uint32(arg)<<8 | uint32(rd()), srcMAC: fzClientM}).bytes()
				// A random cookie checks by chance about once in two million
				// (as the kernel's do): the oracle is the check itself, with
				// this run's random keys, asked before the frame is sent.
				flow := synproxy.Flow{Src: fzClient.As16(), Dst: fzVIP.As16(), Sport: 43000 + uint16(arg), Dport: fzProxy}
				_, lucky := b.sp.cookies.Check(&flow, 7000, binary.BigEndian.Uint32(in[14+20+8:])-1)
				fr := fuzzFrame(in, nil)
				// Dropped, or passed to the stack once no service has the
				// VIP; never a connection, unless the cookie really checks.
				if v := fb.process(ClientSide, fr); !lucky && (v != Drop && v != Pass || b.table.Len() != before) {
					t.Fatalf("a forged cookie: %v, table %d -> %d", v, before, b.table.Len())
				}
			case 5: // the clock moves on: sweeps and SYNPROXY retries
				b.table.now.Add(int64(arg) * int64(100*time.Millisecond))
				b.sp.lastTick.Store(0)
				b.synproxyTick()
				b.Sweep()
			case 6: // a control change
				fuzzControl(t, fb, arg, rd())
			case 7: // an ICMP error about a live connection, from the server side
				conns := b.table.Conns()
				if len(conns) == 0 {
					continue
				}
				c := conns[int(arg)%len(conns)]
				q := (&frameSpec{src: c.LIP.Addr(), dst: c.RIP.Addr(), sport: c.LIP.Port(), dport: c.RIP.Port(), proto: uint8(c.Protocol), flags: tcpflag.ACK}).bytes()[14:]
				in := (&frameSpec{src: c.RIP.Addr(), dst: c.LIP.Addr(), proto: wire.ProtoICMP, icmpType: wire.ICMP4Unreach, quote: q[:28], srcMAC: fzRouterM}).bytes()
				fr := fuzzFrame(in, nil)
				check(t, in, fr, fb.process(ServerSide, fr))
			}
			checkTable(t, b)
		}
		// Run the clock past every timeout, the SYN retries and the port
		// quarantine: everything must drain.
		for range 6 {
			b.table.now.Add(int64(1100 * time.Millisecond))
			b.sp.lastTick.Store(0)
			b.synproxyTick()
			b.Sweep()
		}
		checkDrained(t, fb)
	})
}

// fuzzHandshakeOrDrop proves a handshake, tolerating a tuple that is
// already proxied (its ACK then belongs to that connection).
func fuzzHandshakeOrDrop(tb testing.TB, fb *fuzzBalancer, cport uint16, ts bool) uint32 {
	tb.Helper()
	opts := synOpts4(9)
	if !ts {
		opts = []byte{2, 4, 5, 0xb4}
	}
	in := (&frameSpec{src: fzClient, dst: fzVIP, sport: cport, dport: fzProxy, proto: wire.ProtoTCP, flags: tcpflag.SYN, seq: 7000, opts: opts, srcMAC: fzClientM}).bytes()
	syn := fuzzFrame(in, nil)
	v := fb.process(ClientSide, syn)
	check(tb, in, syn, v)
	if v != Reply {
		return 0
	}
	sa := syn.Bytes()
	cookie := binary.BigEndian.Uint32(sa[34+4:])
	var ackOpts []byte
	if ts && sa[34+12]>>4 > 5 {
		ackOpts = tsOpts(10, binary.BigEndian.Uint32(sa[34+20+8:]))
	}
	in = (&frameSpec{src: fzClient, dst: fzVIP, sport: cport, dport: fzProxy, proto: wire.ProtoTCP, flags: tcpflag.ACK, seq: 7001, ack: cookie + 1, opts: ackOpts, srcMAC: fzClientM}).bytes()
	ack := fuzzFrame(in, nil)
	check(tb, in, ack, fb.process(ClientSide, ack))
	return cookie
}

// fuzzControl makes one control change, as an operator (a Tx) or the
// health checker would.
func fuzzControl(tb testing.TB, fb *fuzzBalancer, a, b byte) {
	tb.Helper()
	bal := fb.b
	s := fb.svcs[int(a)%3]
	rs := []netip.Addr{fzRS1, fzRS2}[int(b)&1]
	lip := []netip.Addr{fzLIP1, fzLIP2}[int(b>>1)&1]
	var err error
	switch (a >> 2) % 14 {
	case 0:
		err = bal.Update(func(tx *Tx) error { return tx.SetWeight(s, rs, s.Port, int(b>>2)%3) })
	case 1:
		err = bal.Update(func(tx *Tx) error { return tx.DeleteDest(s, rs, s.Port) })
	case 2:
		err = bal.Update(func(tx *Tx) error {
			d, err := tx.AddDest(s, rs, s.Port, 1)
			if err == nil {
				d.SetNextHopMAC(fzRouterM)
			}
			return err
		})
	case 3:
		err = bal.DeleteLocalAddr(s, lip)
	case 4:
		_, err = bal.AddLocalAddr(s, lip)
	case 5:
		err = bal.Update(func(tx *Tx) error { return tx.SetScheduler(s, []string{"rr", "wlc", "sh"}[int(b)%3], 0) })
	case 6:
		err = bal.Update(func(tx *Tx) error { return tx.SetWeight(s, rs, s.Port, int(b>>2)%2) }) // the health checker: a Tx like any other
	case 7:
		err = bal.Update(func(tx *Tx) error { return tx.SetSynproxy(s, b&1 != 0) })
	case 8: // the service goes; its connections stay until they end
		err = bal.DeleteService(s.Protocol, s.Addr, s.Port)
	case 9: // and comes back, a new service with the same key
		i := int(a) % 3
		err = bal.Update(func(tx *Tx) error {
			if _, err := tx.Service(s.Protocol, s.Addr, s.Port); err == nil {
				return ErrServiceExists
			}
			ns, err := tx.AddService(ServiceConfig{Addr: s.Addr, Port: s.Port, Protocol: s.Protocol, Scheduler: "rr", Synproxy: s.Port == fzProxy})
			if err != nil {
				return err
			}
			for _, l := range []netip.Addr{fzLIP1, fzLIP2} {
				if _, err := tx.AddLocalAddr(ns, l); err != nil {
					return err
				}
			}
			for _, r := range []netip.Addr{fzRS1, fzRS2} {
				d, err := tx.AddDest(ns, r, s.Port, 1)
				if err != nil {
					return err
				}
				d.SetNextHopMAC(fzRouterM)
			}
			fb.svcs[i] = ns
			return nil
		})
	case 10: // the client's own subnet, or a part of it, denied; or nothing
		deny := []netip.Prefix{}
		if b&1 != 0 {
			deny = append(deny, netip.PrefixFrom(fzClient, 24+int(b>>1)%9).Masked())
		}
		err = bal.Update(func(tx *Tx) error { return tx.SetDeny(s, deny) })
	case 11: // an allow list that does or does not hold the client; or none
		allow := []netip.Prefix{}
		if b&1 != 0 {
			allow = append(allow, netip.MustParsePrefix([]string{"172.25.254.0/24", "10.0.0.0/8"}[int(b>>1)&1]))
		}
		err = bal.Update(func(tx *Tx) error { return tx.SetAllow(s, allow) })
	case 12: // per-source limits and a half-open budget, small enough to bite
		l := Limits{SourceCPS: int(b) % 4, SourceConns: int(b>>2) % 4, HalfOpen: int(b>>4) % 4}
		err = bal.Update(func(tx *Tx) error { return tx.SetLimits(s, l) })
	case 13: // the client's address told by TOA or a PROXY header, or not
		err = bal.Update(func(tx *Tx) error { return tx.SetClientAddr(s, ClientAddr(b%4)) })
	}
	_ = err // refusals (a server already there, a UDP SYN proxy) are expected; they must change nothing
	checkTable(tb, bal)
}

// TestFuzzSeedsPass runs each seed once outside the fuzzing engine, so a
// broken harness shows up in the normal test run too.
func TestFuzzSeedsPass(t *testing.T) {
	frames, sides := fuzzSeeds(t)
	fb := newFuzzBalancer(t)
	fuzzLive(t, fb)
	for i, s := range frames {
		fr := fuzzFrame(s, nil)
		v := fb.process(sides[i], fr)
		check(t, s, fr, v)
		if v == Drop || v == Pass {
			t.Errorf("seed %d (%v side): %v %v", i, sides[i], v, fb.b.Stats.Drops())
		}
	}
	again, _ := fuzzSeeds(t)
	for i := range frames {
		if !bytes.Equal(frames[i], again[i]) {
			t.Fatalf("seed %d is not the same twice: the fuzz balancer is not deterministic", i)
		}
	}
	checkTable(t, fb.b)
}
