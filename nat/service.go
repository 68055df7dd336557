package nat

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/tapvs/tapvs/wire"
)

// Protocol is the transport protocol of a virtual service.
type Protocol uint8

const (
	TCP = Protocol(wire.ProtoTCP)
	UDP = Protocol(wire.ProtoUDP)
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProtocol reads "tcp" or "udp".
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "tcp", "TCP":
		return TCP, nil
	case "udp", "UDP":
		return UDP, nil
	}
	return 0, fmt.Errorf("%q is not a protocol (tcp or udp)", s)
}

// addr16 is the table's form of an address: 16 bytes, IPv4 as ::ffff:a.b.c.d,
// the same bytes netip.Addr.As16 gives.
type addr16 = [16]byte

// is4 and wireAddr are wire.Is4 and wire.Short under the names toa.go and
// defence.go still use (theirs to switch).

// svcKey finds a virtual service by what a client sends to.
type svcKey struct {
	addr  addr16
	port  uint16
	proto Protocol
	mark  uint32 // a match service's (match.go): its port is 0
}

// Dest is a real server of one service.
type Dest struct {
	Addr netip.Addr
	Port uint16

	a16    addr16
	svc    *Service
	weight atomic.Int32
	// gone is set when the server is taken off its service: a persistence
	// template that sends clients to it is no longer used (persist.go).
	gone         atomic.Bool
	persistConns atomic.Int64  // the templates that send clients here (persist.go)
	lipNext      atomic.Uint32 // the next of the service's LIPs to bind from
	ports        sync.Map      // *LocalAddr -> *portMap: the local ports held toward this server from each LIP

	// Connection counts as ipvsadm shows them: TCP ESTABLISHED is active,
	// other TCP states inactive; UDP entries count as active, as in IPVS.
	active   atomic.Int64
	inactive atomic.Int64
	total    atomic.Uint64
	// thresh is the server's Thresholds (upper<<32 | lower), read as a
	// connection is counted here or taken off; overload is IPVS's
	// IP_VS_DEST_F_OVERLOAD, read by the schedulers (threshold.go).
	thresh   atomic.Uint64
	overload atomic.Bool

	// mac is the next hop toward this server: bit 48 set marks it valid. It is
	// written by the neighbor resolver, read by every packet.
	mac atomic.Uint64
	// hop is the address index's entry of this server's address (tx.go),
	// where its next hop is kept for a new entry of the address; set at
	// the commit that publishes the server.
	hop atomic.Pointer[addrUse]

	traffic     []queueTraffic // one per reader, a power of two of them (Config.Readers)
	rate        atomic.Pointer[Rate]
	lastTraffic atomic.Pointer[Traffic] // the estimator's previous sample
}

// portMap returns the ports of this server from la, made on first use.
func (d *Dest) portMap(la *LocalAddr, span uint32) *portMap {
	if m, ok := d.ports.Load(la); ok {
		return m.(*portMap)
	}
	m, _ := d.ports.LoadOrStore(la, newPortMap(span, la.cursor.Load()))
	return m.(*portMap)
}

// MaxQueues bounds the readers (TAP queues of both sides together) that keep
// their own traffic counters.
const MaxQueues = 128

// newDest makes a real server of s with a traffic counter per reader.
func (s *Service) newDest(addr netip.Addr, port uint16, weight int) *Dest {
	d := &Dest{Addr: addr, Port: port, a16: addr.As16(), svc: s, traffic: make([]queueTraffic, s.readers)}
	d.weight.Store(int32(weight))
	return d
}

// queueTraffic is one reader's count of one server's traffic, on its own
// cache line.
type queueTraffic struct {
	inPkts, outPkts, inBytes, outBytes atomic.Uint64
	_                                  [32]byte
}

// Traffic is what crossed tapvs for a server or a service: In is client to
// server, Out server to client; bytes are IP bytes.
type Traffic struct {
	Conns                              uint64
	InPkts, OutPkts, InBytes, OutBytes uint64
}

func (t *Traffic) add(o Traffic) {
	t.Conns += o.Conns
	t.InPkts += o.InPkts
	t.OutPkts += o.OutPkts
	t.InBytes += o.InBytes
	t.OutBytes += o.OutBytes
}

// Traffic sums the server's counters over every reader.
func (d *Dest) Traffic() Traffic {
	t := Traffic{Conns: d.total.Load()}
	for i := range d.traffic {
		q := &d.traffic[i]
		t.InPkts += q.inPkts.Load()
		t.OutPkts += q.outPkts.Load()
		t.InBytes += q.inBytes.Load()
		t.OutBytes += q.outBytes.Load()
	}
	return t
}

// Rate is a server's or service's traffic per second over the last
// estimator interval (ipvsadm --rate).
type Rate struct {
	CPS, InPPS, OutPPS, InBPS, OutBPS float64
}

// Rate is the last rate estimate.
func (d *Dest) Rate() Rate {
	if r := d.rate.Load(); r != nil {
		return *r
	}
	return Rate{}
}

func (d *Dest) zero() {
	d.total.Store(0)
	for i := range d.traffic {
		q := &d.traffic[i]
		q.inPkts.Store(0)
		q.outPkts.Store(0)
		q.inBytes.Store(0)
		q.outBytes.Store(0)
	}
}

func (d *Dest) count(q int, out bool, bytes int) {
	t := &d.traffic[q&(len(d.traffic)-1)]
	if out {
		t.outPkts.Add(1)
		t.outBytes.Add(uint64(bytes))
	} else {
		t.inPkts.Add(1)
		t.inBytes.Add(uint64(bytes))
	}
}

// Weight is the scheduling weight; 0 drains the server.
func (d *Dest) Weight() int { return int(d.weight.Load()) }

// Conns reports active, inactive and total connections.
func (d *Dest) Conns() (active, inactive int64, total uint64) {
	return d.active.Load(), d.inactive.Load(), d.total.Load()
}

// macOf is mac as a uint64 with bit 48 set (known), putMAC's inverse.
func macOf(mac [6]byte) uint64 {
	var v uint64 = 1 << 48
	for i, b := range mac {
		v |= uint64(b) << (8 * (5 - i))
	}
	return v
}

// SetNextHopMAC records the link address packets to this server are sent to.
func (d *Dest) SetNextHopMAC(mac [6]byte) {
	v := macOf(mac)
	d.mac.Store(v)
	if u := d.hop.Load(); u != nil {
		u.mac.Store(v)
	}
}

// NextHopMAC reports the cached next-hop link address, if known.
func (d *Dest) NextHopMAC() (mac [6]byte, ok bool) {
	v := d.mac.Load()
	if v == 0 {
		return mac, false
	}
	for i := range mac {
		mac[i] = byte(v >> (8 * (5 - i)))
	}
	return mac, true
}

func (d *Dest) String() string { return netip.AddrPortFrom(d.Addr, d.Port).String() }

// serverSide4 reports whether the service's server side is IPv4: its
// LIPs (one family: rules.go). With an IPv6 VIP that is NAT64 (nat64.go).
func (s *Service) serverSide4() bool {
	ls := *s.laddrs.Load()
	return len(ls) > 0 && wire.Is4(&ls[0].a16)
}

// serverSide6 reports whether the service's server side is IPv6. With an
// IPv4 VIP that is NAT46 (nat64.go). A service without LIPs is neither.
func (s *Service) serverSide6() bool {
	ls := *s.laddrs.Load()
	return len(ls) > 0 && !wire.Is4(&ls[0].a16)
}

// LocalAddr is a local address (LIP) of a service: the source address its
// connections to real servers use. Ports are not reserved per LIP: a
// (LIP, lport, RIP, rport) tuple is unique because it is the connection's key
// in the table, so one lport serves many real servers at once.
type LocalAddr struct {
	Addr netip.Addr
	a16  addr16

	cursor    atomic.Uint32
	inUse     atomic.Int64
	conflicts atomic.Uint64
	exhausted atomic.Uint64
}

// Stats reports connections bound to this LIP, port allocation conflicts (a
// candidate port already in use toward the same server) and allocations that
// found no free port at all.
func (l *LocalAddr) Stats() (conns int64, conflicts, exhausted uint64) {
	return l.inUse.Load(), l.conflicts.Load(), l.exhausted.Load()
}

// Service is a virtual service: VIP:port and protocol, or a match
// service's mark (match.go), whose Port is 0.
type Service struct {
	Addr     netip.Addr
	Port     uint16
	Protocol Protocol
	Mark     uint32 // a match service's mark; 0: a VIP:port service

	match atomic.Pointer[Match] // a match service's selector (match.go); nil for others
	// vips are the addresses the service answers on: Addr, or every
	// address of its selector's prefix (match.go). Set when the service is
	// made, never written after (a selector's prefix cannot change under
	// its service).
	vips []addr16
	bits int // the prefix length of vips: Addr's bit length for one address

	key      svcKey
	seq      uint64 // the order services were made in (Services lists them in it)
	timeouts atomic.Pointer[Timeouts]
	synproxy atomic.Bool
	// clientAddr is the service's ClientAddr, read by each new connection.
	clientAddr atomic.Uint32
	// timestamps is the service's Timestamps, read by each new connection.
	timestamps atomic.Uint32
	gone       Traffic // counters of servers deleted from the service, under mu
	def        svcDefence
	// persist is the service's persistence (nil: none); tmpl its templates,
	// made when persistence is first turned on and kept (persist.go).
	persist atomic.Pointer[Persistence]
	tmpl    atomic.Pointer[templates]

	// dests is swapped whole on every change so that the packet path reads a
	// consistent list and scheduler without a lock.
	dests  atomic.Pointer[destSet]
	laddrs atomic.Pointer[[]*LocalAddr]
	mu     sync.Mutex // guards gone, and serialises a Tx's commit with readers of it

	readers   int // the balancer's Config.Readers, rounded up to a power of two
	name      atomic.Pointer[string]
	schedName atomic.Pointer[string]
	// schedFlags is the scheduler's SchedFlags, stored with schedName (which
	// a Tx checks it against) before the scheduler is rebuilt.
	schedFlags atomic.Uint32
}

// Name is the service's name (its label in metrics).
func (s *Service) Name() string { return *s.name.Load() }

// destSet is an immutable list of real servers with the scheduler built for it.
type destSet struct {
	all   []*Dest
	sched scheduler
}

// Dests returns the current real servers.
func (s *Service) Dests() []*Dest { return s.dests.Load().all }

// LocalAddrs returns the current local addresses.
func (s *Service) LocalAddrs() []*LocalAddr { return *s.laddrs.Load() }

// Scheduler is the scheduler's name.
func (s *Service) Scheduler() string { return *s.schedName.Load() }

// SchedFlags are the scheduler's flags (sh-port...).
func (s *Service) SchedFlags() SchedFlags { return SchedFlags(s.schedFlags.Load()) }

// Synproxy reports whether SYNs to the service are answered with cookies.
func (s *Service) Synproxy() bool { return s.synproxy.Load() }

// ClientAddr is how the service's real servers learn the client's address.
func (s *Service) ClientAddr() ClientAddr { return ClientAddr(s.clientAddr.Load()) }

// Timestamps is what the service's plain TCP connections do with the
// client's timestamps.
func (s *Service) Timestamps() Timestamps { return Timestamps(s.timestamps.Load()) }

// Timeouts are the service's connection timeouts.
func (s *Service) Timeouts() Timeouts { return *s.timeouts.Load() }

// Traffic sums the service's servers, those deleted included.
func (s *Service) Traffic() Traffic {
	s.mu.Lock()
	t := s.gone
	s.mu.Unlock()
	for _, d := range s.Dests() {
		t.add(d.Traffic())
	}
	return t
}

// Rate sums the service's servers' rates.
func (s *Service) Rate() Rate {
	var r Rate
	for _, d := range s.Dests() {
		dr := d.Rate()
		r.CPS += dr.CPS
		r.InPPS += dr.InPPS
		r.OutPPS += dr.OutPPS
		r.InBPS += dr.InBPS
		r.OutBPS += dr.OutBPS
	}
	return r
}

// Dest finds a real server.
func (s *Service) Dest(addr netip.Addr, port uint16) *Dest {
	for _, d := range s.Dests() {
		if d.Addr == addr && d.Port == port {
			return d
		}
	}
	return nil
}

func (s *Service) String() string {
	if s.Mark != 0 {
		return fmt.Sprintf("FWM %d", s.Mark)
	}
	return fmt.Sprintf("%s %s", s.Protocol, netip.AddrPortFrom(s.Addr, s.Port))
}

// publish builds the scheduler for dests and swaps both in. Caller holds s.mu.
func (s *Service) publish(dests []*Dest) {
	s.dests.Store(&destSet{all: dests, sched: newScheduler(s.Scheduler(), s.SchedFlags(), dests)})
}
