// Package nat is the balancer: virtual services, real servers, schedulers,
// local addresses and the connection table, and the FULLNAT rewrite itself.
//
// Process is the whole data path for one frame: it reads like the packet
// travels. A frame from the client side that is addressed to a VIP is matched
// to its connection (or makes one: service, scheduler, local address and
// port), rewritten in place (client:cport -> VIP:vport becomes LIP:lport ->
// RIP:rport), and handed back to be sent out the server side. A frame from
// the server side addressed to a LIP goes the other way. Anything else is
// passed to the gVisor stack (ARP, ping, tapvs's own connections).
package nat

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/clusterauth"
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/frag"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcprw"
	"github.com/tapvs/tapvs/wire"
)

// Verdict is what to do with a frame after Process.
type Verdict uint8

const (
	Pass    Verdict = iota // not the balancer's: give it to the stack
	Forward                // rewritten in place: send it out the other side
	Reply                  // rewritten into an answer: send it back out the side it came from
	Stolen                 // kept by the balancer (netfilter's NF_STOLEN): a client frame held until its server answers
	Drop                   // counted in Stats and dropped
	Release                // consumed, and Frame.Released are sent back out the side it came from
	// Handoff: a client TCP segment of no connection here that another
	// instance of a cluster may hold (Config.Handoff); the caller hands it
	// on, or drops it.
	Handoff
)

// Side is the network a frame arrived from.
type Side uint8

const (
	ClientSide Side = iota // where VIPs live
	ServerSide             // where LIPs and real servers live
)

// other is the side across tapvs from s.
func (s Side) other() Side {
	if s == ClientSide {
		return ServerSide
	}
	return ClientSide
}

func (s Side) String() string {
	if s == ClientSide {
		return "client"
	}
	return "server"
}

// Config is the balancer's fixed configuration.
type Config struct {
	MaxConns int
	// MaxTemplates bounds the persistence templates of all services
	// together (persist.go): a new client network past it is dropped as
	// persist_templates_full. 0 is MaxConns.
	MaxTemplates int
	PortMin      uint16
	PortMax      uint16
	Timeouts     Timeouts // default for services that do not set their own
	// MACs of tapvs's own two NICs: the source of every forwarded frame.
	ClientMAC, ServerMAC [6]byte
	// Readers is how many readers hand frames to Process (Frame.Queue is
	// below it): each real server keeps a traffic counter per reader. 0 is
	// MaxQueues.
	Readers  int
	Synproxy SynproxyConfig
	// ClientNet and ServerNet are tapvs's own address on each side with its
	// subnet. No VIP, LIP or real server may be one of them (or a subnet's
	// network or broadcast address), LIPs must be in ServerNet (the stack
	// answers ARP for them there) and real servers outside ClientNet. The
	// zero Prefix checks nothing (tests).
	ClientNet, ServerNet netip.Prefix
	// ClientNet6 and ServerNet6 are the same for IPv6 (invalid: the side
	// has no IPv6 address).
	ClientNet6, ServerNet6 netip.Prefix
	// ServerMTU is the server side's MTU: client segments that get a TOA
	// option must still fit it, and a plain TOA connection's server MSS is
	// clamped to it (toa.go); a UDP datagram that a PROXY header would take
	// past it is dropped (udpproxy.go). 0 is 1500.
	ServerMTU int
	// ClientMTU is the client side's MTU: a NAT64 server packet, 20 bytes
	// longer once translated to IPv6, must fit it (nat64.go), and NAT64
	// and NAT46 clamp the client's MSS to it. (A NAT46 client packet must
	// fit ServerMTU once translated.) 0 is 1500.
	ClientMTU int
	// PortQuarantine keeps a closed TCP connection's (LIP, lport, RIP,
	// rport) from being reused for this long. It is not needed with real
	// servers that accept a SYN on a TIME_WAIT tuple whose sequence number
	// is later (Linux, and RFC 6191's rule): tapvs's ISNs are (seq.go). 0,
	// the default, turns it off.
	PortQuarantine time.Duration
	// Handoff has a client TCP segment that no connection here holds, and
	// that could not open one (not a SYN; on a SYNPROXY service, not a
	// cookie's ACK either), returned as Handoff instead of dropped: in a
	// cluster behind ECMP routers another instance may hold it, the
	// router having moved its flow here (a drain, an instance gone, a
	// rehash). The caller hands it to the other instances (package
	// handoff); they take it only if they hold its connection
	// (Frame.HandedOff).
	Handoff bool

	// SyncFeed, if above 0, keeps the change feed connection sync sends
	// from (feed.go, DrainChanges): each of its rings holds this many
	// changed connections between drains. 0: no feed.
	SyncFeed int

	// CookieSecret, if set, is the secret SYNPROXY's cookie keys derive
	// from (synproxy.NewSharedCookies) instead of being drawn at random:
	// the instances of a cluster that share it each check the cookies the
	// others made, so a handshake whose SYN-ACK one instance sent
	// completes on the instance its ACK reaches (a rehash, an instance
	// gone).
	CookieSecret []byte

	// Reassembly bounds the reassembly of fragments to a VIP or LIP
	// (frag.go); its zero value is Linux's defaults (4 MiB, 30 s).
	Reassembly frag.Config
	// NoReassembly drops fragments to a VIP or LIP as `fragment`, as
	// tapvs did before it reassembled them.
	NoReassembly bool
}

// maxPortTries bounds the search for a free local port on one LIP.
const maxPortTries = 256

// Balancer is the FULLNAT data path and its state.
type Balancer struct {
	cfg   Config
	table *Table
	set   atomic.Pointer[serviceSet]
	mu    sync.Mutex // held by a Tx from start to commit, and by Sweep when it publishes; guards cfg.Timeouts, idx, seq and the retired lists
	Stats Stats

	sweepBuf    []*Conn
	sp          synproxyState
	retired     []*LocalAddr          // LIPs deleted while connections still use them; under mu
	retiredSvcs []*Service            // services deleted while connections still use them; under mu
	clientHop   atomic.Uint64         // the client side's next hop new connections last came from (toClient)
	feed        *changeFeed           // connection sync's change feed; nil without (Config.SyncFeed)
	watch       connWatch             // the connection watch (watch.go); its watcher nil while nobody subscribes
	tombs       tombs                 // peers' tombstones, lest a late open record revive a connection; under mu
	backupLAs   map[addr16]*LocalAddr // the backup LIPs ImportConn bound shadows to; kept, under mu
	backups     map[addr16]bool       // other instances' LIPs answered for here (SetBackupLIPs), replaced whole, never written; under mu
	idx         *addrIndex            // the addresses of the published services (tx.go); under mu
	seq         uint64                // the last Service.seq given; under mu
	changes     []loggedChange        // what the last publishes changed, for Changes; under mu
	changesLost uint64                // the last generation whose changes are no longer all in changes; under mu
	tap         atomic.Pointer[Tap]
	faults      atomic.Pointer[faultSet] // nil: no fault anywhere (fault.go)
	faultsMu    sync.Mutex               // serialises the writers of faults (SetFaults, SetFault, ClearFault)
	// delayedBytes is what the faults' delay lines hold, bounded by
	// MaxDelayed (faultdelay.go).
	delayedBytes atomic.Int64
	quarantined  atomic.Int64 // reply tuples in quarantine after the last sweep
	readers      int          // Config.Readers rounded up to a power of two
	gen          atomic.Uint64
	link         Link   // set by Attach before the first frame; never changed after
	isnKey       isnKey // keys the ISNs of plain TCP connections (seq.go)
	// templates counts the persistence templates of all services, bounded
	// by maxTemplates (Config.MaxTemplates; persist.go).
	templates    atomic.Int64
	maxTemplates int64
	tmplWheel    *tmplWheel  // when each template is due to be looked at (persist.go)
	tmplBuf      []*template // the sweep's due templates
	// marks are the mark definitions match services take their selectors
	// from (match.go); under mu, replaced whole by a Tx.
	marks map[uint32]Match
	// frags reassembles fragments to a VIP or LIP; nil with
	// Config.NoReassembly. fragID is the identification of the next
	// datagram tapvs fragments (frag.go).
	frags  *frag.Reassembler
	fragID atomic.Uint32
	// timeExBucket bounds the time exceeded messages for datagrams
	// given up (TimeExceededRate, frag.go).
	timeExBucket clusterauth.Bucket
}

// Link is the balancer's way to the devices around it beyond the frame it
// is handed and its verdict: what a packet or a timer needs done now.
type Link interface {
	// Resolve asks for a real server's next hop, when a packet finds it
	// unknown. It must not block.
	Resolve(*Dest)
	// Transmit sends a frame a timer made (a SYN retried to a silent
	// server, an RST to a client it gave up on) out of side out, with full
	// checksums. The frame may be reused once it returns.
	Transmit(out Side, frame []byte)
	// Send sends a frame the balancer kept for a while (a fault's delay
	// line) out of side out: tun.VNetHdrLen bytes of virtio-net header,
	// then the frame, as Frame.Released carries them (a TSO super-frame
	// or a partial checksum as the header says). The frame may be reused
	// once it returns.
	Send(out Side, frame []byte)
}

// Attach gives the balancer its Link. It is called once, before the
// first frame is processed and before Run; until then nothing is resolved
// or sent.
func (b *Balancer) Attach(l Link) { b.link = l }

type noLink struct{}

func (noLink) Resolve(*Dest)         {}
func (noLink) Transmit(Side, []byte) {}
func (noLink) Send(Side, []byte)     {}

// Generation counts the lookup snapshots published: the VIPs and LIPs
// (Addresses) change only when it does.
func (b *Balancer) Generation() uint64 { return b.gen.Load() }

// Quarantined is how many closed connections' local ports are held back
// from their real server (see Config.PortQuarantine), as of the last sweep.
func (b *Balancer) Quarantined() int64 { return b.quarantined.Load() }

// New returns a balancer with no services.
func New(cfg Config) (*Balancer, error) {
	if cfg.MaxConns <= 0 {
		return nil, errors.New("max connections must be positive")
	}
	if cfg.PortMin == 0 || cfg.PortMin > cfg.PortMax {
		return nil, fmt.Errorf("local port range %d-%d is empty", cfg.PortMin, cfg.PortMax)
	}
	if cfg.Readers <= 0 || cfg.Readers > MaxQueues {
		cfg.Readers = MaxQueues
	}
	cfg.Synproxy.setDefaults()
	if cfg.ServerMTU <= 0 {
		cfg.ServerMTU = 1500
	}
	if cfg.ClientMTU <= 0 {
		cfg.ClientMTU = 1500
	}
	b := &Balancer{cfg: cfg, table: newTable(cfg.MaxConns), readers: 1 << bits.Len(uint(cfg.Readers-1)), link: noLink{}}
	b.tmplWheel = new(tmplWheel)
	b.maxTemplates = int64(cfg.MaxTemplates)
	if b.maxTemplates <= 0 {
		b.maxTemplates = int64(cfg.MaxConns)
	}
	b.sp.init(cfg.CookieSecret)
	b.isnKey = newISNKey()
	b.set.Store(&serviceSet{})
	b.idx = newAddrIndex()
	if cfg.SyncFeed > 0 {
		b.feed = newChangeFeed(cfg.SyncFeed)
	}
	if !cfg.NoReassembly {
		rc := cfg.Reassembly
		rc.Expired = b.timeExceeded
		b.timeExBucket.Init(TimeExceededRate, time.Unix(0, b.table.now.Load()))
		b.frags = frag.New(rc)
		b.Stats.frags = b.frags
		b.fragID.Store(randUint32())
	}
	return b, nil
}

// Table is the connection table.
func (b *Balancer) Table() *Table { return b.table }

// ServiceConfig describes a virtual service to add.
type ServiceConfig struct {
	Name      string
	Addr      netip.Addr
	Port      uint16
	Protocol  Protocol
	Scheduler string
	Timeouts  *Timeouts // nil: the balancer's defaults
	Synproxy  bool      // answer SYNs with cookies; open the server side after the handshake
	// ClientAddr is how the real servers learn the client's address: none,
	// TOA or a PROXY protocol header (nat/clientaddr.go).
	ClientAddr ClientAddr
	// Timestamps is what a plain TCP connection does with the client's
	// timestamps: translate them (the zero value) or remove them (seq.go).
	Timestamps Timestamps
	// SchedFlags are the scheduler's flags; only sh and mh take any.
	SchedFlags SchedFlags
	// Persistence makes the service persistent (persist.go); a service on
	// port 0 (all ports) must be.
	Persistence Persistence
	// Mark, if not 0, makes a match service (match.go): its Addr,
	// Protocol and ports are the mark's definition (Tx.SetMarks), Addr,
	// Port and Protocol here are ignored.
	Mark uint32
}

// Process runs the data path for one frame from side and says what to do
// with it. A forwarded frame has been rewritten in place, Ethernet header
// included; f.Len may shrink (Ethernet padding is dropped).
func (b *Balancer) Process(side Side, f *Frame) Verdict {
	f.fault, f.Follow, f.Frags = nil, nil, nil
	f.reasm, f.reasm6 = 0, false
	v := b.process(side, f)
	if v == Handoff {
		f.Mark = markOf(f.reasm, f.reasm6)
	}
	if f.reasm != 0 {
		// A reassembled datagram leaves as fragments (frag.go); a
		// fault's delay line does not hold it.
		return b.refragment(side, v, f)
	}
	if f.fault != nil {
		// A fault of the delay or reset family acts on the frame as it
		// leaves (fault.go).
		v = b.faultOut(side, f, v)
	}
	return v
}

func (b *Balancer) process(side Side, f *Frame) Verdict {
	var p pkt
	isIP, bad := parseIP(f.Bytes(), &p)
	if !isIP {
		return Pass
	}
	if bad {
		return b.Stats.drop(DropMalformed)
	}
	set := b.set.Load()
	dst := p.key16(p.dst())
	if side == ClientSide {
		if !set.hasVIP(&dst) {
			return Pass
		}
	} else if !set.hasLIP(&dst) {
		if fs := b.faults.Load(); fs != nil {
			// A blackholed server is silent to the stack's own
			// connections too (fault.go).
			src := p.key16(p.src())
			return b.faultStack(fs, &src)
		}
		return Pass
	}
	if !p.v6 && csum.Checksum(p.b[p.l3:p.l4], 0) != 0 {
		// The rewrite adjusts the checksum incrementally, so a bad one would
		// stay bad, but the header's fields would already have chosen a
		// service, a connection and a real server.
		return b.Stats.drop(DropBadIPChecksum)
	}
	if p.frag {
		if v, whole := b.reassemble(side, &p, f); !whole {
			return v
		}
	} else if f.HandedOff {
		// A datagram another instance reassembled (frag.go).
		if v := b.handedMark(&p, f); v != Forward {
			return v
		}
	}
	if p.ext {
		return b.Stats.drop(DropIPv6Ext)
	}
	if !p.l4ok() {
		return b.Stats.drop(DropMalformed)
	}
	p.partial, p.checked = f.partial(), f.checked()
	switch p.proto {
	case wire.ProtoTCP, wire.ProtoUDP:
		if side == ClientSide {
			return b.fromClient(set, &p, &dst, f)
		}
		return b.fromServer(&p, &dst, f)
	case wire.ProtoICMP:
		if !p.v6 {
			return b.icmp(side, &p, f)
		}
	case wire.ProtoICMPv6:
		if p.v6 {
			return b.icmp6(side, &p, f)
		}
	}
	return Pass
}

// fromClient handles client -> VIP.
func (b *Balancer) fromClient(set *serviceSet, p *pkt, dst *addr16, f *Frame) Verdict {
	key := tupleKey{src: p.key16(p.src()), dst: *dst, sport: p.sport(), dport: p.dport(), proto: Protocol(p.proto)}
	var flags uint8
	if p.proto == wire.ProtoTCP {
		flags = p.tcpFlags()
	}
	c := b.table.lookup(&key)
	if c != nil && c.sp != nil && b.synproxyReopens(c, p, flags) {
		// The client reused its port while the old proxied connection
		// closes, and completed a new cookie handshake: the old one gives
		// way, and the ACK opens the new one below.
		b.release(c)
		c = nil
	}
	if c == nil {
		if f.HandedOff {
			// Another instance had no connection for it either: it
			// continues one here or nothing, and is never handed on.
			return b.Stats.drop(DropHandoffUnknown)
		}
		svc := set.service(svcKey{addr: key.dst, port: key.dport, proto: key.proto})
		if svc == nil && set.matches != nil {
			// A match service takes its selector's ports that no
			// service of their own has (match.go).
			svc = set.match(&key.dst, key.proto, key.dport)
		}
		if svc == nil {
			// A persistent service on port 0 takes the VIP's ports that
			// no service of their own has (persist.go).
			svc = set.service(svcKey{addr: key.dst, proto: key.proto})
		}
		if svc == nil {
			return b.Stats.drop(DropNoService)
		}
		if !p.l4Valid() {
			// No state, and no SYN-ACK, from a segment a host would drop.
			return b.Stats.drop(DropBadChecksum)
		}
		if fs := b.faults.Load(); fs != nil && key.proto == TCP && flags&(tcpflag.SYN|tcpflag.ACK) == tcpflag.SYN {
			// A SYN a fault drops or refuses makes no state (fault.go).
			if v := b.faultSYN(fs, svc, &key, p, f); v != Forward {
				return v
			}
		}
		if v := b.admit(svc, &key.src, key.proto, flags); v != Forward {
			return v
		}
		var v Verdict
		if key.proto == TCP && svc.synproxy.Load() {
			// A SYN is answered, a cookie ACK opens the server side; or
			// another reader opened it first, and the frame is that
			// connection's (c).
			if c, v = b.synproxyOpen(svc, key, p, flags, f); c == nil {
				return v
			}
		} else if c, v = b.newConn(svc, key, p, flags); c == nil {
			return v
		}
	}
	if fs := b.faults.Load(); fs != nil {
		// Before the connection's state sees the frame, as a loss in
		// front of tapvs. A new connection's first frame meets it once its
		// server is chosen: a SYN dropped here is lost beyond tapvs, and
		// its entry expires as it would.
		if v := b.faultConn(fs, c, FaultToServer, p, f); v != Forward {
			return v
		}
	}
	if c.clientMAC == ([6]byte{}) && b.clientHop.Load() == 0 {
		// A connection a peer's record made (connection sync) has no
		// client-side hop of its own: its replies take the box's
		// (toClient), which no new connection has taught yet on an
		// instance that restarted and holds only such ones. Learnt once.
		var hop [6]byte
		copy(hop[:], p.eth().Src())
		b.clientHop.CompareAndSwap(0, macOf(hop))
	}
	c.noteAck(dirIn, p.tcp(), flags)
	if c.sp != nil {
		return b.synproxyFromClient(c, p, flags, f)
	}
	if p.proto != wire.ProtoTCP {
		b.arrived(c, flags)
		return b.forwardIn(c, p, f, c.inL4Delta, false)
	}
	// The connection's rewriter (seq.go): its offsets, where the client's
	// stream starts (a PROXY header's place), its timestamp state.
	rw := c.rw.Load()
	var next *tcprw.Rewriter // a SYN that starts a new stream: published once known good
	renewed := false         // next starts a new connection on the entry
	if flags&(tcpflag.SYN|tcpflag.ACK|tcpflag.RST|tcpflag.FIN) == tcpflag.SYN {
		// The client reuses its port for a new connection while the entry
		// of its last one on it lingers: the server, which may hold that
		// one in TIME_WAIT, gets a fresh ISN and timestamp start too
		// (seq.go). Stored only once the SYN is known good: one that is
		// dropped changes nothing.
		isn := p.tcp().Seq()
		st := c.state.Load()
		renew := st == stTimeWait || st == stClose
		switch {
		case c.pp == nil:
		case rw.Flags&tcprw.Past == 0:
			// A PROXY connection's header goes where the server's stream
			// starts, and a SYN may start one: the server takes it for a
			// new connection wherever it has none on the tuple (a client's
			// RST in SYN_RECV took its half-open one, while tapvs's entry
			// stays), and may still hold the first one, waiting for its
			// header. Until the server has acknowledged the header, a SYN
			// is mapped onto the server's first ISN, whatever its own:
			// whichever connection the server keeps, its stream starts at
			// S, where the header goes, and no other start is made.
			renew = false
			if isn+1 != rw.Start {
				if !p.l4Valid() {
					return b.Stats.drop(DropBadChecksum)
				}
				n := *rw
				n.Client, n.Start = rw.Client+rw.Start-(isn+1), isn+1
				next = &n
			}
		case isn+1 != rw.Start && !renew:
			// Past the header, an open connection keeps its stream: a SYN
			// with another ISN could only start a second one.
			return b.Stats.drop(DropProxyOverlap)
		}
		if renew {
			if !p.l4Valid() {
				return b.Stats.drop(DropBadChecksum)
			}
			n := *rw
			b.serverStart(c, isn, &n)
			c.pastLast(&n)
			next, renewed = &n, true
		}
	}
	if next != nil {
		rw = next
	}
	// A partial checksum does not cover header fields yet (the kernel sums
	// the header when it finishes it): only a full one takes the sequence
	// change.
	acc, res, tsc, tsv := rw.ToServer(p.b[p.l4:], uint32(c.inL4Delta))
	if f := res.Fault(); f != 0 {
		return b.Stats.drop(rewriteDrop(f))
	}
	switch {
	case next != nil:
		if res&tcprw.TSFixed != 0 {
			next.FixTS(tsc)
		}
		c.rw.Store(next)
	case res&tcprw.TSFixed != 0:
		c.fixTS(rw.TSClient, tsc)
	}
	if res&tcprw.TSSent != 0 {
		c.noteTS(tsv, renewed)
	}
	hdr := res&tcprw.Header != 0
	b.arrived(c, flags)
	return b.forwardIn(c, p, f, csum.Fold(acc), hdr)
}

// arrived moves a connection's state for a client packet that goes on.
func (b *Balancer) arrived(c *Conn, flags uint8) {
	if c.def.halfOpen.Load() {
		handshake(c, flags)
	}
	c.touch(dirIn, flags, b.table.now.Load(), &b.table.wheel)
}

// forwardIn rewrites client -> VIP into LIP -> RIP, with l4Delta the
// transport checksum change (the connection's, plus any synproxy change).
// With hdr the segment starts the client's stream and the connection's
// PROXY header goes in front of its payload (proxy.go).
func (b *Balancer) forwardIn(c *Conn, p *pkt, f *Frame, l4Delta uint16, hdr bool) Verdict {
	mac := c.dest.mac.Load()
	if mac == 0 {
		b.link.Resolve(c.dest)
		return b.Stats.drop(DropNoNeighbor)
	}
	tap := b.tap.Load()
	if tap != nil {
		tap.record(c, ClientSide, false, p.b)
	}
	switch {
	case c.clientAddr == ClientAddrTOA:
		l4Delta = b.addTOA(c, p, f, l4Delta)
	case c.clientAddr == ClientAddrProxyV2 && c.in.proto == UDP:
		if v := b.udpProxyV2(c, p, f); v != Forward {
			return v
		}
	}
	switch {
	case p.v6 && wire.Is4(&c.out.src):
		if v := b.to4(c, ServerSide, p, f, l4Delta); v != Forward { // NAT64 (nat64.go)
			return v
		}
	case !p.v6 && !wire.Is4(&c.out.src):
		if v := b.to6(c, ServerSide, p, f, l4Delta); v != Forward { // NAT46 (nat64.go)
			return v
		}
	default:
		rewrite(p, &c.out.dst, &c.out.src, c.out.dport, c.out.sport, c.inIPDelta, l4Delta)
	}
	f.Len = len(p.b)
	if hdr {
		if !b.insertHeader(c.pp, p, f) {
			return b.Stats.drop(DropProxyNoRoom)
		}
		b.Stats.proxyHeaders.Add(1)
	}
	b.toServer(p.eth(), mac)
	c.dest.count(f.Queue, false, f.Len-wire.EtherLen)
	if tap != nil {
		tap.record(c, ServerSide, true, p.b)
	}
	return Forward
}

// fromServer handles real server -> LIP.
func (b *Balancer) fromServer(p *pkt, dst *addr16, f *Frame) Verdict {
	key := tupleKey{src: p.key16(p.src()), dst: *dst, sport: p.sport(), dport: p.dport(), proto: Protocol(p.proto)}
	c := b.table.lookup(&key)
	if c == nil {
		if b.set.Load().backups[*dst] {
			// Another instance's connection, whose replies the router
			// moved here: no state for it (yet), and the stack would
			// answer it with a reset that ends it for good. Outside the
			// balancer's ports, its stack's own (a health check's).
			if key.dport < b.cfg.PortMin || key.dport > b.cfg.PortMax {
				return b.Stats.drop(DropBackupLIPStack)
			}
			return b.Stats.drop(DropBackupLIP)
		}
		if fs := b.faults.Load(); fs != nil {
			return b.faultStack(fs, &key.src)
		}
		return Pass // the stack's own connection from a LIP, or one that expired
	}
	if fs := b.faults.Load(); fs != nil {
		if v := b.faultConn(fs, c, FaultToClient, p, f); v != Forward {
			return v
		}
	}
	if c.feed != nil && c.shadow.Load() {
		b.adopt(c) // the router sends its replies here: its owner is gone
	}
	var flags uint8
	if p.proto == wire.ProtoTCP {
		flags = p.tcpFlags()
	}
	l4Delta := c.outL4Delta
	switch {
	case c.sp != nil:
		if !c.sp.Established() {
			return b.synproxyServerHandshake(c, p, flags, f)
		}
		if c.pp != nil && flags&tcpflag.SYN != 0 {
			if v, ok := b.proxyResend(c, p, flags, f); ok {
				return v
			}
		}
		c.noteAck(dirOut, p.tcp(), flags) // raw, before ToClient translates it
		var v Verdict
		if l4Delta, v = b.synproxyToClient(c, p, flags); v != Forward {
			return v
		}
	case p.proto == wire.ProtoTCP:
		c.noteAck(dirOut, p.tcp(), flags) // raw: the server's own numbers, what an RST to it must carry
		rw, tcp := c.rw.Load(), p.tcp()
		if c.pp != nil && flags&tcpflag.ACK != 0 {
			c.sawAck(rw, tcp.Ack())
		}
		seq := tcp.Seq() // the server's own: TOA's ack is its ISN + 1
		acc, res, _ := rw.ToClient(tcp, uint32(l4Delta))
		if res.Fault() != 0 {
			return b.Stats.drop(DropBadOptions)
		}
		if c.clientAddr == ClientAddrTOA && flags&(tcpflag.SYN|tcpflag.ACK) == tcpflag.SYN|tcpflag.ACK {
			c.noteTOASynAck(rw, seq)
		}
		l4Delta = csum.Fold(acc)
	}
	c.touch(dirOut, flags, b.table.now.Load(), &b.table.wheel)
	tap := b.tap.Load()
	if tap != nil {
		tap.record(c, ServerSide, false, p.b)
	}
	switch {
	case !p.v6 && !wire.Is4(&c.in.src):
		if v := b.to6(c, ClientSide, p, f, l4Delta); v != Forward { // NAT64 (nat64.go)
			return v
		}
	case p.v6 && wire.Is4(&c.in.src):
		if v := b.to4(c, ClientSide, p, f, l4Delta); v != Forward { // NAT46 (nat64.go)
			return v
		}
	default:
		rewrite(p, &c.in.dst, &c.in.src, c.in.dport, c.in.sport, c.outIPDelta, l4Delta)
	}
	b.toClient(p.eth(), c)
	f.Len = len(p.b)
	c.dest.count(f.Queue, true, f.Len-wire.EtherLen)
	if tap != nil {
		tap.record(c, ClientSide, true, p.b)
	}
	return Forward
}

// notOpening is the verdict on a client TCP segment that no connection
// holds and that cannot open one: handed to the cluster's other instances
// if there are any (Config.Handoff), dropped otherwise.
func (b *Balancer) notOpening() Verdict {
	if b.cfg.Handoff {
		return Handoff
	}
	return b.Stats.drop(DropNotSYN)
}

// newConn makes the connection for the first packet of a flow to a VIP.
// key is taken by value: the scheduler is behind an interface, and a pointer
// into the caller's frame would move every packet's key to the heap.
func (b *Balancer) newConn(svc *Service, key tupleKey, p *pkt, flags uint8) (*Conn, Verdict) {
	if key.proto == TCP && flags&(tcpflag.SYN|tcpflag.ACK|tcpflag.RST|tcpflag.FIN) != tcpflag.SYN {
		return nil, b.notOpening()
	}
	c, v := b.schedule(svc, key, p)
	if c == nil {
		return nil, v
	}
	state := stNone
	if key.proto == UDP {
		state = stUDP
	} else {
		// The server sees tapvs's ISN and timestamps for the tuple, not
		// the client's (seq.go: a port reused from the server's TIME_WAIT
		// is accepted).
		c.pp = newProxyConn(svc.ClientAddr(), c)
		c.rw.Store(b.newRewriter(c, p.tcp().Seq()))
	}
	return b.publishConn(c, state, b.table.now.Load()+c.timeout(state))
}

// schedule makes a connection for key: a table slot, a real server from the
// scheduler, a LIP and local port. It is not in the table under its client
// key yet.
func (b *Balancer) schedule(svc *Service, key tupleKey, p *pkt) (*Conn, Verdict) {
	if b.table.count.Add(1) > b.table.max {
		b.table.count.Add(-1)
		return nil, b.Stats.drop(DropTableFull)
	}
	c := &Conn{in: key, svc: svc, clientAddr: svc.ClientAddr(), timestamps: svc.Timestamps(), feed: b.feed, watch: &b.watch}
	var dest *Dest
	if p, ts := svc.Persistence(), svc.tmpl.Load(); p.Timeout > 0 && ts != nil {
		var v Verdict
		if dest, c.tmpl, v = b.persistPick(svc, ts, p, &c.in); dest == nil {
			b.table.count.Add(-1)
			return nil, v
		}
	} else if dest = svc.dests.Load().sched.pick(&c.in); dest == nil {
		b.table.count.Add(-1)
		return nil, b.Stats.drop(DropNoDest)
	}
	if dest.mac.Load() == 0 {
		b.table.count.Add(-1)
		c.unpersist()
		b.link.Resolve(dest)
		return nil, b.Stats.drop(DropNoNeighbor)
	}
	c.dest = dest
	copy(c.clientMAC[:], p.eth().Src())
	if hop := macOf(c.clientMAC); b.clientHop.Load() != hop {
		b.clientHop.Store(hop) // once per change of hop, not per connection
	}
	if !b.bind(c) {
		b.table.count.Add(-1)
		c.unpersist()
		return nil, b.Stats.drop(DropPortExhausted)
	}
	c.prepare()
	return c, Forward
}

// publishConn counts the connection at its server in state and puts it in
// the table under its client key. If another reader got there first (a
// retransmitted SYN on another queue) that connection is returned and this
// one given back.
func (b *Balancer) publishConn(c *Conn, state uint32, deadline int64) (*Conn, Verdict) {
	if holder := b.enter(c, state, deadline); holder != c {
		return holder, Forward
	}
	b.Stats.connsCreated.Add(1)
	if f := c.watcher(); f != nil {
		f(c.event(ConnOpened, state))
	}
	return c, Forward
}

// enter is publishConn's part that ImportConn shares (export.go): c,
// bound to its reply key, is counted at its server in state and at its
// source (defence), filed for expiry at deadline and put in the table
// under its client key. It returns the holder of that key: c, or another
// connection that got there first, c then given back.
func (b *Balancer) enter(c *Conn, state uint32, deadline int64) *Conn {
	c.state.Store(state)
	if active(state) {
		c.dest.active.Add(1)
	} else {
		c.dest.inactive.Add(1)
	}
	c.dest.bound()
	c.deadline.Store(deadline)
	b.track(c)
	if holder := b.table.insert(&c.in, c, false); holder != c {
		b.release(c)
		return holder
	}
	b.table.wheel.file(c)
	c.dest.total.Add(1)
	c.changed(state)
	return c
}

// bind picks a LIP and a local port so that (LIP, lport, RIP, rport) is
// unique, by claiming it as the connection's reply key in the table.
func (b *Balancer) bind(c *Conn) bool {
	lips := *c.svc.laddrs.Load()
	if len(lips) == 0 {
		return false
	}
	span := uint32(b.cfg.PortMax-b.cfg.PortMin) + 1
	tries := min(span, maxPortTries)
	// LIPs rotate per real server: rotating per service, in step with a
	// scheduler that rotates servers, would pair each LIP with one server
	// only and leave most (LIP, RS) port spaces unused.
	start := c.dest.lipNext.Add(1)
	rport := c.dest.Port
	if rport == 0 {
		rport = c.in.dport // a server of an all-ports service takes the client's port
	}
	for i := range uint32(len(lips)) {
		la := lips[(start+i)%uint32(len(lips))]
		if wire.Is4(&la.a16) != wire.Is4(&c.dest.a16) {
			// A service's LIPs and real servers are one family, but a
			// change between families (IPv6 FULLNAT to NAT64) publishes
			// the two lists one after the other: a reader between them
			// must not pair them across.
			continue
		}
		pm := c.dest.portMap(la, span)
		for range tries {
			idx, ok := pm.take()
			if !ok {
				break // every port of this LIP toward this server is held
			}
			c.out = tupleKey{src: c.dest.a16, dst: la.a16, sport: rport, dport: b.cfg.PortMin + uint16(idx), proto: c.in.proto}
			if b.table.insert(&c.out, c, true) == c {
				c.laddr = la
				la.inUse.Add(1)
				return true
			}
			// Held in the table (by a connection of another service
			// toward the same server, or quarantined): given back, and
			// the search goes on past it.
			pm.put(idx)
			la.conflicts.Add(1)
		}
		la.exhausted.Add(1)
	}
	return false
}

// release takes a connection off the table and gives back its port, its
// place in the table and its count at the server. It reports whether it did:
// only the first release of a connection counts.
func (b *Balancer) release(c *Conn) bool {
	st := c.state.Swap(stDead)
	if st == stDead {
		return false
	}
	if cf := c.fault.Load(); cf != nil && cf.timer != nil {
		cf.timer.Stop() // a reset_after timer holds the connection until it fires
	}
	b.table.remove(&c.in, c, 0)
	var until int64
	if c.in.proto == TCP && b.cfg.PortQuarantine > 0 {
		until = b.table.now.Load() + int64(b.cfg.PortQuarantine)
	}
	b.table.remove(&c.out, c, until)
	if active(st) {
		c.dest.active.Add(-1)
	} else {
		c.dest.inactive.Add(-1)
	}
	c.dest.unbound()
	c.laddr.inUse.Add(-1)
	c.dest.portMap(c.laddr, uint32(b.cfg.PortMax-b.cfg.PortMin)+1).put(uint32(c.out.dport - b.cfg.PortMin))
	b.table.count.Add(-1)
	c.unpersist()
	untrack(c)
	c.closed()
	return true
}

// rewrite sets a packet's addresses and ports and updates its checksums by
// the connection's precomputed deltas. A partial transport checksum only
// covers the pseudo-header: it moves with the addresses (ipDelta) alone.
func rewrite(p *pkt, src, dst *addr16, sport, dport uint16, ipDelta, l4Delta uint16) {
	if p.v6 {
		// No header checksum: the addresses are in the transport's
		// pseudo-header only (ipDelta, in l4Delta).
		copy(p.src(), src[:])
		copy(p.dst(), dst[:])
	} else {
		copy(p.src(), wire.In4(src))
		copy(p.dst(), wire.In4(dst))
		csum.Adjust(p.ip4().CsumField(), ipDelta)
	}
	transport(p, sport, dport, ipDelta, l4Delta)
}

// transport finishes the transport header of a packet being rewritten (or
// translated, NAT64): its ports, and its checksum by l4Delta (a partial
// checksum by the pseudo-header's change ipDelta alone: the kernel sums
// the header when it finishes it).
func transport(p *pkt, sport, dport, ipDelta, l4Delta uint16) {
	l4 := p.tcp() // UDP's ports and checksum offset are read alike
	l4.SetSrcPort(sport)
	l4.SetDstPort(dport)
	off := l4csumOff(p.proto)
	switch {
	case off < 0:
	case p.partial:
		csum.AdjustPartial(l4[off:], ipDelta)
	case p.proto == wire.ProtoTCP:
		csum.Adjust(l4[off:], l4Delta)
	default:
		csum.AdjustUDP(l4[off:], l4Delta)
	}
}

// toServer addresses a frame to a server side's next hop, mac being its
// address as a neighbour keeps it (the low 48 bits), from the balancer's
// server-side MAC.
func (b *Balancer) toServer(e wire.Ether, mac uint64) {
	putMAC(e.Dst(), mac)
	copy(e.Src(), b.cfg.ServerMAC[:])
}

// toClient addresses a frame to connection c's client, from the
// balancer's client-side MAC.
//
// A connection imported from a peer (connection sync) has no next hop of
// this box's: it takes the one this box's own connections were last made
// through (the router's, or the TAP's kernel end's).
func (b *Balancer) toClient(e wire.Ether, c *Conn) {
	if c.clientMAC == ([6]byte{}) {
		putMAC(e.Dst(), b.clientHop.Load())
		copy(e.Src(), b.cfg.ClientMAC[:])
		return
	}
	e.SetMACs(c.clientMAC[:], b.cfg.ClientMAC[:])
}

func putMAC(b []byte, v uint64) {
	for i := range 6 {
		b[i] = byte(v >> (8 * (5 - i)))
	}
}

// Sweep removes the connections whose time is up and returns how many.
func (b *Balancer) Sweep() int {
	now := b.table.now.Load()
	b.sweepBuf = b.table.wheel.due(now, b.sweepBuf[:0])
	n := 0
	for _, c := range b.sweepBuf {
		if c.deadline.Load() > now { // a packet came since
			b.table.wheel.file(c)
			continue
		}
		st := c.state.Load()
		if b.release(c) {
			b.Stats.connsExpired.Add(1)
			rsts := b.expireResets(c, st)
			b.Stats.expiredResets.Add(uint64(rsts))
			if f := c.watcher(); f != nil {
				e := c.event(ConnExpired, st)
				e.Resets = rsts
				f(e)
			}
			n++
		}
	}
	clear(b.sweepBuf)
	b.quarantined.Store(int64(b.table.purgeQuarantine(now)))
	b.sweepTemplates(now)
	if b.frags != nil {
		b.sweepFrags(now)
	}
	b.mu.Lock()
	if len(b.retired) > 0 || len(b.retiredSvcs) > 0 {
		vips, lips := map[addr16]int32{}, map[addr16]int32{}
		if b.pruneRetired(vips, lips); len(vips) > 0 || len(lips) > 0 {
			b.publish(nil, nil, vips, lips, nil)
		}
	}
	b.mu.Unlock()
	return n
}

// Run keeps the table's clock and sweeps expired connections every sweep
// interval until stop is closed.
func (b *Balancer) Run(stop <-chan struct{}, sweep time.Duration) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last, lastRate := time.Now(), time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			b.table.Tick()
			b.synproxyTick()
			if now.Sub(last) >= sweep {
				b.Sweep()
				last = now
			}
			if el := now.Sub(lastRate); el >= rateInterval {
				b.estimate(el)
				lastRate = now
			}
		}
	}
}
