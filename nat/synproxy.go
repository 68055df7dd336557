package nat

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/synproxy"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcpopt"
	"github.com/tapvs/tapvs/tcprw"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// SynproxyConfig shapes the SYN-ACKs tapvs answers with and the handshake it
// then makes with the real server.
type SynproxyConfig struct {
	MSS           uint16        // announced to clients; the server side's MTU - 40
	WScale        int8          // announced when the client offers scaling; -1: never
	SACK          bool          // offer SACK when the client does
	Timestamps    bool          // offer timestamps when the client does
	MaxQueued     int           // client packets held per connection until the server answers
	SYNRetries    int           // SYNs sent again to a silent server before the client gets an RST
	RetryInterval time.Duration // between those SYNs
	AckStorm      uint32        // identical server ACKs passed before the rest are dropped
}

func (c *SynproxyConfig) setDefaults() {
	if c.MSS == 0 {
		c.MSS = 1460
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = 3
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = time.Second
	}
	if c.AckStorm == 0 {
		c.AckStorm = 10
	}
}

// DefaultSynproxy is LVS's behaviour: MSS 1460, window scale 7, SACK and
// timestamps as the client offers them, 3 queued packets, 3 SYN retries a
// second apart, ACK storms cut after 10.
func DefaultSynproxy() SynproxyConfig {
	return SynproxyConfig{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, MaxQueued: 3, SYNRetries: 3, RetryInterval: time.Second, AckStorm: 10}
}

// synproxyState is the balancer's own: the cookie keys, the clock for our
// timestamps, and the connections waiting for a server's SYN-ACK.
type synproxyState struct {
	cookies  *synproxy.Cookies
	tsEpoch  time.Time
	tsOffset uint32
	mu       sync.Mutex
	pending  map[*Conn]struct{}
	lastTick atomic.Int64
}

// init makes the cookie keys: shared by a cluster if secret is set
// (Config.CookieSecret), drawn at random otherwise.
func (s *synproxyState) init(secret []byte) {
	if secret != nil {
		s.cookies = synproxy.NewSharedCookies(secret)
	} else {
		s.cookies = synproxy.NewCookies()
	}
	s.tsEpoch = time.Now()
	s.tsOffset = rand.Uint32()
	s.pending = map[*Conn]struct{}{}
}

// tsNow is the TSval of our SYN-ACKs: a millisecond clock from a random start.
func (s *synproxyState) tsNow() uint32 {
	return uint32(time.Since(s.tsEpoch).Milliseconds()) + s.tsOffset
}

func flowOf(k *tupleKey) synproxy.Flow {
	return synproxy.Flow{Src: k.src, Dst: k.dst, Sport: k.sport, Dport: k.dport}
}

func tcpOptions(p *pkt) []byte {
	return p.tcp().Options()
}

// synproxyOpen handles a packet to a synproxy VIP with no connection: a SYN
// is answered with a cookie; an ACK that carries a valid cookie opens the
// connection to a real server. holder is set when another reader opened
// that connection first: the frame is then holder's.
func (b *Balancer) synproxyOpen(svc *Service, key tupleKey, p *pkt, flags uint8, f *Frame) (holder *Conn, v Verdict) {
	switch {
	case flags&(tcpflag.SYN|tcpflag.ACK|tcpflag.RST|tcpflag.FIN) == tcpflag.SYN:
		return nil, b.synAck(&key, p, f, b.synproxyMSS(svc, &key))
	case flags&(tcpflag.SYN|tcpflag.RST) == 0 && flags&tcpflag.ACK != 0:
		return b.synproxyACK(svc, key, p, f)
	}
	return nil, b.notOpening()
}

// synAck turns a client's SYN, in place, into our SYN-ACK announcing mss
// (synproxyMSS). Nothing is kept.
func (b *Balancer) synAck(key *tupleKey, p *pkt, f *Frame, mss uint16) Verdict {
	opts, ok := tcpopt.Parse(tcpOptions(p))
	if !ok {
		return b.Stats.drop(DropBadOptions)
	}
	cfg := &b.cfg.Synproxy
	in := synproxy.Options{MSS: opts.MSS, WScale: opts.WScale, SACK: opts.SACKPerm && cfg.SACK, TS: opts.TS && cfg.Timestamps}
	if in.MSS == 0 {
		in.MSS = 536 // RFC 9293's default when the option is absent
	}
	if cfg.WScale < 0 {
		in.WScale = -1
	}
	isn := p.tcp().Seq()
	flow := flowOf(key)
	cookie, kept := b.sp.cookies.Make(&flow, isn, in)
	so := synproxy.SynOptions{MSS: mss, WScale: -1, SACKPerm: kept.SACK, TS: kept.TS}
	if kept.WScale >= 0 {
		so.WScale = cfg.WScale
	}
	if kept.TS {
		so.TSval, so.TSecr = b.sp.tsNow(), opts.TSval
	}
	var ob [20]byte
	seg := wire.Segment{
		SrcMAC: b.cfg.ClientMAC, DstMAC: [6]byte(p.eth().Src()),
		Src: key.dst, Dst: key.src, Sport: key.dport, Dport: key.sport,
		Seq: cookie, Ack: isn + 1, Flags: tcpflag.SYN | tcpflag.ACK, Window: 65535,
		Opts: ob[:so.Write(ob[:])],
	}
	f.Len = seg.Write(f.Buf[f.Off:])
	f.plain()
	b.Stats.synCookies.Add(1)
	return Reply
}

// synproxyACK opens a connection for an ACK whose cookie checks: the client
// has proved its address. The ACK is held and, in its buffer, a SYN with the
// client's ISN and options goes to the chosen real server. If another reader
// opened the connection first, that one is returned as holder.
func (b *Balancer) synproxyACK(svc *Service, key tupleKey, p *pkt, f *Frame) (holder *Conn, v Verdict) {
	tcp := p.tcp()
	seq, ack := tcp.Seq(), tcp.Ack()
	flow := flowOf(&key)
	o, ok := b.sp.cookies.Check(&flow, seq-1, ack-1)
	if !ok {
		if b.cfg.Handoff {
			// Not a cookie of ours: perhaps a segment of a connection
			// another instance holds (a download's ACKs too). A flood of
			// bad cookies is bounded by the hand-off's rate.
			return nil, Handoff
		}
		return nil, b.Stats.drop(DropBadCookie)
	}
	opts, ok := tcpopt.Parse(tcpOptions(p))
	if !ok {
		return nil, b.Stats.drop(DropBadOptions)
	}
	c, v := b.schedule(svc, key, p)
	if c == nil {
		return nil, v
	}
	cfg := &b.cfg.Synproxy
	sp := &synproxy.State{Opts: o, ClientISN: seq - 1, Cookie: ack - 1, OurWScale: -1}
	if o.WScale >= 0 {
		sp.OurWScale = cfg.WScale
	}
	if o.TS && opts.TS {
		sp.TSOn, sp.ClientTSval, sp.OurTSval = true, opts.TSval, opts.TSecr
	}
	if c.pp = newProxyConn(svc.ClientAddr(), c); c.pp != nil {
		sp.InsertClient(c.pp.n)
	}
	sp.Hold(held(f, p, c.heldRoom()), max(cfg.MaxQueued, 1)) // not shared yet: always held
	c.sp = sp
	now := b.table.now.Load()
	interval := int64(cfg.RetryInterval)
	if holder, _ := b.publishConn(c, stSynSent, now+int64(cfg.SYNRetries+2)*interval); holder != c {
		if holder.sp == nil {
			return nil, b.Stats.drop(DropSynproxyState)
		}
		return holder, Forward
	}
	b.Stats.synproxyOpened.Add(1)

	so := synproxy.SynOptions{MSS: o.MSS, WScale: o.WScale, SACKPerm: o.SACK, TS: sp.TSOn, TSval: sp.ClientTSval}
	if c.nat64() || c.nat46() {
		// The server's segments change size toward the client (NAT64's
		// grow by 20 bytes): the client's MSS is clamped as a plain
		// NAT64 or NAT46 SYN's is (nat64.go).
		so.MSS = min(so.MSS, b.clientMSS(wire.Is4(&c.in.src)))
	}
	win := uint32(tcp.Window())
	if o.WScale >= 0 && sp.OurWScale >= 0 {
		win <<= o.WScale // the client's window, scaled, as a SYN's unscaled field
	}
	var ob [20]byte
	seg := wire.Segment{
		SrcMAC: b.cfg.ServerMAC, DstMAC: macBytes(c.dest.mac.Load()),
		Src: c.out.dst, Dst: c.out.src, Sport: c.out.dport, Dport: c.out.sport,
		Seq: seq - 1, Flags: tcpflag.SYN, Window: uint16(min(win, 0xffff)),
		Opts: ob[:so.Write(ob[:])],
	}
	f.Len = seg.Write(f.Buf[f.Off:])
	f.plain()
	// Kept for retries, behind a zero virtio-net header like every frame
	// the balancer holds (Frame.Released).
	syn := make([]byte, tun.VNetHdrLen+f.Len)
	copy(syn[tun.VNetHdrLen:], f.Bytes())
	sp.Sent(syn, now+interval)
	b.sp.mu.Lock()
	b.sp.pending[c] = struct{}{}
	b.sp.mu.Unlock()
	return nil, Forward
}

// synproxyFromClient handles the client's packets of a proxied connection:
// held while the server has not answered, translated after.
func (b *Balancer) synproxyFromClient(c *Conn, p *pkt, flags uint8, f *Frame) Verdict {
	sp := c.sp
	if !sp.Established() {
		// Held frames are translated when the server answers: one that
		// could not be is refused now. The frame is copied outside the
		// State's lock (no lock is held across code that reads frame
		// bytes), and only if there is room for it.
		if !tcpopt.Valid(tcpOptions(p)) {
			return b.Stats.drop(DropBadOptions)
		}
		if !sp.Room(b.cfg.Synproxy.MaxQueued) {
			return b.Stats.drop(DropSynproxyQueue)
		}
		switch sp.Hold(held(f, p, c.heldRoom()), b.cfg.Synproxy.MaxQueued) {
		case synproxy.Held:
			return Stolen
		case synproxy.QueueFull:
			return b.Stats.drop(DropSynproxyQueue)
		}
		// Established meanwhile: the frame goes on, translated.
	}
	if flags&(tcpflag.SYN|tcpflag.ACK|tcpflag.RST|tcpflag.FIN) == tcpflag.SYN {
		// A SYN on the tuple of a proxied connection is a new handshake (the
		// client reused its port after a close): it gets a cookie like any
		// SYN, never the old connection's numbers.
		if !p.l4Valid() {
			return b.Stats.drop(DropBadChecksum)
		}
		return b.synAck(&c.in, p, f, b.synproxyMSS(c.svc, &c.in))
	}
	c.touch(dirIn, flags, b.table.now.Load(), &b.table.wheel)
	// ToServer changes header fields; a partial checksum does not cover them
	// yet (the kernel sums the header when it finishes), so only a full one
	// takes the change.
	acc, hdr, v := b.synproxyToServer(c, p.tcp(), flags)
	if v != Forward {
		return v
	}
	return b.forwardIn(c, p, f, csum.Fold(acc), hdr)
}

// synproxyToServer translates a proxied connection's client segment (tcp,
// in place) for the server through its rewriter, which places it against
// the PROXY header first (read before the seq moves). It returns the
// checksum change and whether the segment carries the header, or the
// verdict of a drop.
func (b *Balancer) synproxyToServer(c *Conn, tcp wire.TCP, flags uint8) (acc uint32, hdr bool, v Verdict) {
	acc, res, _, _ := c.sp.Rewriter().Load().ToServer(tcp, uint32(c.inL4Delta))
	if f := res.Fault(); f != 0 {
		return 0, false, b.Stats.drop(rewriteDrop(f))
	}
	return acc, res&tcprw.Header != 0, Forward
}

// synproxyReopens reports whether a client's segment on an established
// proxied connection that is closing completes a new cookie handshake: an
// ACK whose cookie checks (the client reused its port). The old connection
// then gives way to a new one.
func (b *Balancer) synproxyReopens(c *Conn, p *pkt, flags uint8) bool {
	if !c.sp.Established() || c.state.Load() == stEstablished ||
		flags&(tcpflag.SYN|tcpflag.RST) != 0 || flags&tcpflag.ACK == 0 || !p.l4Valid() {
		return false
	}
	tcp := p.tcp()
	flow := flowOf(&c.in)
	_, ok := b.sp.cookies.Check(&flow, tcp.Seq()-1, tcp.Ack()-1)
	return ok
}

// synproxyToClient translates an established proxied connection's server
// packet and returns the checksum change for the caller's rewrite, or the
// verdict of a drop: an ACK storm, or options that cannot be translated.
func (b *Balancer) synproxyToClient(c *Conn, p *pkt, flags uint8) (l4Delta uint16, v Verdict) {
	tcp := p.tcp()
	rw := c.sp.Rewriter().Load()
	if c.pp != nil && flags&tcpflag.ACK != 0 {
		c.sawAck(rw, tcp.Ack())
	}
	acc, res, fp := rw.ToClient(tcp, uint32(c.outL4Delta)) // its fingerprint from the numbers as they came
	if res.Fault() != 0 {
		return 0, b.Stats.drop(DropBadOptions)
	}
	if flags&^tcpflag.PSH == tcpflag.ACK && len(tcp) == tcp.HeaderLen() &&
		c.sp.Storm(fp, b.cfg.Synproxy.AckStorm) {
		return 0, b.Stats.drop(DropAckStorm)
	}
	return csum.Fold(acc), Forward
}

// synproxyServerHandshake takes the real server's answer to our SYN.
func (b *Balancer) synproxyServerHandshake(c *Conn, p *pkt, flags uint8, f *Frame) Verdict {
	sp := c.sp
	tcp := p.tcp()
	switch {
	case flags&tcpflag.RST != 0:
		// Refused: the client, which believes it is connected, gets an RST.
		f.Len = b.clientRST(c, f.Buf[f.Off:])
		f.plain()
		b.synproxyFail(c, "synproxy: the real server refused the connection (RST): the client was sent an RST")
		return Forward
	case flags&(tcpflag.SYN|tcpflag.ACK) == tcpflag.SYN|tcpflag.ACK && tcp.Ack() == sp.ClientISN+1:
		if !p.l4Valid() {
			return b.Stats.drop(DropBadChecksum) // it would fix the connection's numbers
		}
		opts, ok := tcpopt.Parse(tcpOptions(p))
		if !ok {
			return b.Stats.drop(DropBadOptions)
		}
		queue, ok := sp.Establish(tcp.Seq(), opts)
		if !ok {
			return b.Stats.drop(DropSynproxyState)
		}
		c.setState(stSynSent, stEstablished)
		c.touch(dirOut, tcpflag.ACK, b.table.now.Load(), &b.table.wheel)
		b.sp.mu.Lock()
		delete(b.sp.pending, c)
		b.sp.mu.Unlock()
		// The server's SYN-ACK stops here; the client's held ACK (and what
		// followed it) completes the server's handshake, translated: its
		// ack is the server's ISN + 1 and its TSecr the server's own TSval.
		// They leave with this frame's verdict, back toward the server.
		f.Released = make([][]byte, 0, len(queue))
		room := c.heldRoom()
		for _, q := range queue {
			qf := heldFrame(q, room)
			qf.Queue = f.Queue
			var qp pkt
			if ok, bad := parseIP(qf.Bytes(), &qp); !ok || bad {
				continue
			}
			qp.partial = qf.partial()
			acc, hdr, v := b.synproxyToServer(c, qp.b[qp.l4:], qp.tcpFlags())
			if v != Forward {
				continue // options checked when held; a segment into the PROXY header's numbers, counted
			}
			if v := b.forwardIn(c, &qp, &qf, csum.Fold(acc), hdr); v == Forward && qf.reasm != 0 {
				// A NAT46 client's segment too big once translated,
				// without DF, marked to be cut (xlatFit): a released
				// frame leaves whole, so it is dropped, counted (only a
				// client that ignored the cookie's MSS sends one).
				b.Stats.drops[DropNAT64TooBig].Add(1)
			} else if v == Forward {
				out := qf.releasable()
				f.Released = append(f.Released, out)
				if hdr && c.pp.ack.Load() == nil {
					keep := append([]byte(nil), out...)
					c.pp.ack.Store(&keep)
				}
			}
		}
		return Release
	case flags&(tcpflag.SYN|tcpflag.RST|tcpflag.FIN) == 0 && flags&tcpflag.ACK != 0:
		// The server still holds this (LIP:lport, RIP:rport) in TIME_WAIT
		// from an earlier connection and answered our SYN with that one's
		// ACK. As a client's kernel would, end the TIME_WAIT with an RST
		// carrying that ACK's number, and send the SYN again at once.
		seg := wire.Segment{
			SrcMAC: b.cfg.ServerMAC, DstMAC: macBytes(c.dest.mac.Load()),
			Src: c.out.dst, Dst: c.out.src, Sport: c.out.dport, Dport: c.out.sport,
			Seq: tcp.Ack(), Flags: tcpflag.RST,
		}
		rst := make([]byte, tun.VNetHdrLen+seg.FrameLen())
		seg.Write(rst[tun.VNetHdrLen:])
		f.Released = append(f.Released, rst)
		if syn := sp.SYN(); syn != nil {
			f.Released = append(f.Released, syn)
		}
		b.Stats.synproxyTimeWait.Add(1)
		return Release
	}
	return b.Stats.drop(DropSynproxyState)
}

// proxyResend answers a server's repeated SYN-ACK on an established
// SYNPROXY connection with a PROXY header: the server has not had the
// handshake ACK tapvs released to it, which carried the header, so that
// ACK goes again (the client, whose handshake was with tapvs, would only
// answer a SYN-ACK with a challenge ACK, and only if it has sent nothing).
// ok is false when there is nothing to re-send yet.
func (b *Balancer) proxyResend(c *Conn, p *pkt, flags uint8, f *Frame) (v Verdict, ok bool) {
	tcp := p.tcp()
	if flags&(tcpflag.SYN|tcpflag.ACK|tcpflag.RST) != tcpflag.SYN|tcpflag.ACK ||
		tcp.Ack() != c.sp.ClientISN+1 || tcp.Seq() != c.sp.ServerISN() {
		return 0, false
	}
	ack := c.pp.ack.Load()
	if ack == nil {
		return 0, false
	}
	f.Released = append(f.Released, append([]byte(nil), *ack...))
	b.Stats.proxyHeaders.Add(1)
	return Release, true
}

// clientRST writes into buf an RST from the VIP that the client, which
// completed its handshake with the cookie, will accept.
func (b *Balancer) clientRST(c *Conn, buf []byte) int {
	seg := wire.Segment{
		SrcMAC: b.cfg.ClientMAC, DstMAC: c.clientMAC,
		Src: c.in.dst, Dst: c.in.src, Sport: c.in.dport, Dport: c.in.sport,
		Seq: c.sp.Cookie + 1, Flags: tcpflag.RST,
	}
	return seg.Write(buf)
}

func (b *Balancer) synproxyFail(c *Conn, why string) {
	st := c.state.Load()
	if f := c.watcher(); b.release(c) && f != nil {
		e := c.event(ConnReset, st)
		e.Reason, e.From = why, ServerSide
		f(e)
	}
	b.sp.mu.Lock()
	delete(b.sp.pending, c)
	b.sp.mu.Unlock()
	b.Stats.synproxyFailed.Add(1)
}

// synproxyTick retries SYNs to silent servers and gives up on them, every
// 100ms, and rotates the cookie keys when they are due (every half hour).
// What it sends leaves through the Link: no reader is at hand. One caller
// at a time gets past the clock's check (the swap): two rotating at once
// would leave the previous keys behind, two retrying would send each SYN
// twice.
func (b *Balancer) synproxyTick() {
	now := b.table.now.Load()
	last := b.sp.lastTick.Load()
	if now-last < int64(100*time.Millisecond) || !b.sp.lastTick.CompareAndSwap(last, now) {
		return
	}
	if b.sp.cookies.Due() {
		b.sp.cookies.Rotate()
	}
	b.sp.mu.Lock()
	var due []*Conn
	for c := range b.sp.pending {
		if c.sp.Established() || c.state.Load() == stDead {
			delete(b.sp.pending, c)
			continue
		}
		due = append(due, c)
	}
	b.sp.mu.Unlock()
	cfg := &b.cfg.Synproxy
	for _, c := range due {
		syn, giveUp := c.sp.Due(now, cfg.SYNRetries, int64(cfg.RetryInterval))
		switch {
		case syn != nil:
			b.Stats.synRetries.Add(1)
			b.link.Transmit(ServerSide, syn[tun.VNetHdrLen:])
		case giveUp:
			var buf [wire.MaxFrameLen]byte
			b.link.Transmit(ClientSide, buf[:b.clientRST(c, buf[:])])
			b.synproxyFail(c, "synproxy: the real server never answered the SYN: the client was sent an RST")
		}
	}
}

func macBytes(v uint64) (m [6]byte) {
	putMAC(m[:], v)
	return m
}

// CookieKeys are SYNPROXY's cookie keys for a successor process (tapvs run
// --takeover); nil when they derive from the cluster's secret
// (Config.CookieSecret), which the successor has as well.
func (b *Balancer) CookieKeys() []byte { return b.sp.cookies.Keys() }

// AdoptCookieKeys takes a predecessor's cookie keys (CookieKeys), before
// the first frame is read, so that the handshakes it answered complete
// here.
func (b *Balancer) AdoptCookieKeys(k []byte) error { return b.sp.cookies.AdoptKeys(k) }
