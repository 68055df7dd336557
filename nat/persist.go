package nat

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/wire"
)

// Persistence is IPVS's (ipvsadm -p, -M; keepalived's persistence_timeout
// and persistence_granularity): a persistent service keeps a template per
// client network, (client address masked, VIP, port) -> real server, and
// a new connection from a client whose template lives goes to its server
// without asking the scheduler; the scheduler is asked, and a template
// made, only when there is none (ip_vs_sched_persist).
//
// A template's deadline is the persistence timeout from its last use:
// each connection it gives a server refreshes it. It expires when its
// deadline has passed and no connection it gave a server is still open;
// one that still has some is given the timeout again (ip_vs_conn_expire
// re-arms a template with controlled connections). The sweep
// (Balancer.Sweep) expires them through a wheel of their own, filed as
// the connections' are (expiry.go): it looks at the templates due, not
// at all of them.
//
// A template whose server is drained (weight 0) or no longer the
// service's (deleted, or taken out by its health check) is not used:
// the next connection of its clients asks the scheduler for a new one,
// while the server's open connections go on (IPVS with
// expire_quiescent_template set, as keepalived's documentation advises).
//
// A service on port 0 (all ports, as IPVS allows only with persistence)
// takes any TCP or UDP port of its VIP that no service of its own port
// has, and keeps one template per client network for all of them.

// Persistence is a service's persistence: Timeout 0 is none. Mask is the
// client prefix length a template covers: IPv4's netmask as bits (-M
// 255.255.255.0 is 24), IPv6's prefix length; 0 is the whole address
// (32 or 128), as ipvsadm's default.
type Persistence struct {
	Timeout time.Duration
	Mask    int
}

// MaxPersistTimeout bounds the persistence timeout, as ipvsadm's
// MAX_TIMEOUT (31 days).
const MaxPersistTimeout = 31 * 24 * time.Hour

// check refuses a persistence a service of family v4 cannot have.
func (p Persistence) check(v4 bool) error {
	if p.Timeout < 0 || p.Timeout > MaxPersistTimeout {
		return fmt.Errorf("persistence timeout %v is out of range 1s-%v", p.Timeout, MaxPersistTimeout)
	}
	if p.Timeout > 0 && p.Timeout < time.Second {
		return fmt.Errorf("persistence timeout %v is below a second", p.Timeout)
	}
	bits := 128
	if v4 {
		bits = 32
	}
	if p.Mask < 0 || p.Mask > bits {
		return fmt.Errorf("persistence netmask /%d is out of range 1-%d", p.Mask, bits)
	}
	return nil
}

// Normal is p as a service keeps it: the whole address (32 or 128) for
// Mask 0, and no mask at all without persistence.
func (p Persistence) Normal(v4 bool) Persistence {
	switch {
	case p.Timeout == 0:
		return Persistence{}
	case p.Mask == 0 && v4:
		p.Mask = 32
	case p.Mask == 0:
		p.Mask = 128
	}
	return p
}

// template is one client network's server: made once, its dest never
// changed (a template that may no longer be used is replaced whole).
type template struct {
	client   addr16 // masked
	dest     *Dest
	svc      *Service
	ts       *templates   // svc's, whose map holds it
	deadline atomic.Int64 // table clock
	conns    atomic.Int64 // connections it gave its server that are still open
	// dead is set when it leaves its map (expired, replaced, cleared):
	// its wheel entry is then dropped.
	dead  atomic.Bool
	filed int64 // the wheel's tick it is filed under; under its stripe's lock
}

// usable is IPVS's ip_vs_check_template: the server is still the
// service's and not drained. Its load is not looked at: a server
// overloaded by its thresholds keeps its templates' clients (threshold.go).
func (t *template) usable() bool {
	return t.dest.Weight() > 0 && !t.dest.gone.Load()
}

// templateShards split a service's templates: a new connection locks the
// shard of its client network only, so readers opening connections of
// different clients rarely meet.
const templateShards = 64

// templates is a service's templates by masked client address. Each
// shard's lock guards its map; it is taken by a new connection of a
// persistent service (not by other packets), by the sweep and by a
// listing.
type templates struct {
	shards [templateShards]tmplShard
}

type tmplShard struct {
	mu sync.Mutex
	m  map[addr16]*template
	_  [40]byte
}

func (ts *templates) shard(k *addr16) *tmplShard {
	return &ts.shards[hashAddr(k)%templateShards]
}

// tmplWheel files templates by deadline as the connections' wheel files
// connections (expiry.go, whose ticks and horizon it shares): a use that
// pushes a deadline later does not touch it; when the old tick comes the
// sweep files the template again. A template is filed when it is made
// (under its shard's lock, then its stripe's: the order everywhere) and
// by the sweep.
type tmplWheel struct {
	stripes [tmplStripes]tmplStripe
	done    atomic.Int64 // the last tick swept: nothing is filed at or before it
}

const tmplStripes = 16

type tmplStripe struct {
	mu    sync.Mutex
	slots [wheelSlots][]*template
	_     [56]byte
}

func (w *tmplWheel) stripe(t *template) *tmplStripe {
	return &w.stripes[hashAddr(&t.client)%tmplStripes]
}

func (w *tmplWheel) file(t *template) {
	s := w.stripe(t)
	s.mu.Lock()
	w.put(s, t, t.deadline.Load())
	s.mu.Unlock()
}

// put files t in stripe s (locked) under deadline, within one turn of the
// last tick swept.
func (w *tmplWheel) put(s *tmplStripe, t *template, deadline int64) {
	done := w.done.Load()
	tick := min(max(tickOf(deadline), done+1), done+wheelSlots-1)
	t.filed = tick
	i := tick % wheelSlots
	s.slots[i] = append(s.slots[i], t)
}

// due appends to out the templates filed under the ticks that have
// passed up to now; the sweep decides on each under its shard's lock
// (sweepTemplates), where its deadline and its place in the map are
// known for sure. Only the sweeper calls it.
func (w *tmplWheel) due(now int64, out []*template) []*template {
	last := now / wheelTick
	for tk := w.done.Load() + 1; tk <= last; tk++ {
		w.done.Store(tk) // new entries go after tk from here on
		i := tk % wheelSlots
		for k := range w.stripes {
			s := &w.stripes[k]
			s.mu.Lock()
			list := s.slots[i]
			for _, t := range list {
				if t.filed == tk { // else filed again since
					out = append(out, t)
				}
			}
			clear(list)
			s.slots[i] = list[:0]
			s.mu.Unlock()
		}
	}
	return out
}

// maskAddr keeps the first bits of a (IPv4 counts from the address's own
// first bit, past the ::ffff: prefix).
func maskAddr(a *addr16, bits int) addr16 {
	if wire.Is4(a) {
		bits += 96
	}
	var m addr16
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = a[i]
			bits -= 8
		case bits > 0:
			m[i] = a[i] & ^byte(0xff>>bits)
			bits = 0
		}
	}
	return m
}

// persistPick is schedule's choice of server on a persistent service: the
// client network's template's, or the scheduler's for a new template. It
// returns the template the connection is counted in (its conns already
// counted), or a drop verdict.
func (b *Balancer) persistPick(svc *Service, ts *templates, p Persistence, key *tupleKey) (*Dest, *template, Verdict) {
	k := maskAddr(&key.src, p.Mask)
	now := b.table.now.Load()
	sh := ts.shard(&k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.m[k]
	if t != nil && t.usable() {
		t.conns.Add(1)
		if d := now + int64(p.Timeout); t.deadline.Swap(d) > d {
			// A shorter timeout since (-p): filed earlier, or it would
			// wait for its old tick.
			b.tmplWheel.file(t)
		}
		return t.dest, t, Forward
	}
	if t == nil && b.templates.Add(1) > b.maxTemplates {
		b.templates.Add(-1)
		return nil, nil, b.Stats.drop(DropTemplatesFull)
	}
	// The scheduler runs under the shard's lock: two readers with
	// connections of one client network make one template, not two.
	dest := svc.dests.Load().sched.pick(key)
	if dest == nil {
		if t == nil {
			b.templates.Add(-1)
		}
		return nil, nil, b.Stats.drop(DropNoDest)
	}
	if t != nil {
		// A quiescent template gives way to the new one; the connections
		// it gave its server keep it until they end, uncounted.
		t.dest.persistConns.Add(-1)
		t.dead.Store(true)
	}
	if sh.m == nil {
		sh.m = map[addr16]*template{}
	}
	t = &template{client: k, dest: dest, svc: svc, ts: ts}
	t.conns.Store(1)
	t.deadline.Store(now + int64(p.Timeout))
	sh.m[k] = t
	dest.persistConns.Add(1)
	b.tmplWheel.file(t)
	return dest, t, Forward
}

// unpersist gives back a connection's count in its template.
func (c *Conn) unpersist() {
	if c.tmpl != nil {
		c.tmpl.conns.Add(-1)
	}
}

// sweepTemplates expires the templates due whose deadline has passed
// and that no open connection holds; one still held gets its service's
// timeout again. It returns how many expired. Only the sweeper calls it.
func (b *Balancer) sweepTemplates(now int64) int {
	b.tmplBuf = b.tmplWheel.due(now, b.tmplBuf[:0])
	n := 0
	for _, t := range b.tmplBuf {
		sh := t.ts.shard(&t.client)
		sh.mu.Lock()
		timeout := t.svc.Persistence().Timeout
		switch {
		case t.dead.Load(): // replaced or cleared: its key may be another's now
		case t.deadline.Load() > now:
			b.tmplWheel.file(t) // used since it was filed
		case t.conns.Load() > 0 && timeout > 0:
			t.deadline.Store(now + int64(timeout))
			b.tmplWheel.file(t)
		default:
			delete(sh.m, t.client)
			b.dropTemplate(t)
			n++
		}
		sh.mu.Unlock()
	}
	clear(b.tmplBuf)
	return n
}

// dropTemplate counts off a template taken out of its map (its shard
// locked).
func (b *Balancer) dropTemplate(t *template) {
	t.dead.Store(true)
	t.dest.persistConns.Add(-1)
	b.templates.Add(-1)
}

// clearTemplates drops all of a service's templates: the service is
// deleted, or its persistence turned off or its netmask changed (a
// template's key is masked by it).
func (b *Balancer) clearTemplates(s *Service) {
	ts := s.tmpl.Load()
	if ts == nil {
		return
	}
	for i := range ts.shards {
		sh := &ts.shards[i]
		sh.mu.Lock()
		for k, t := range sh.m {
			delete(sh.m, k)
			b.dropTemplate(t)
		}
		sh.mu.Unlock()
	}
}

// Templates is how many persistence templates all services hold.
func (b *Balancer) Templates() int64 { return b.templates.Load() }

// TemplateInfo is a snapshot of one template, for listings (ipvsadm -lnc
// shows them as connections in state NONE from client port 0).
type TemplateInfo struct {
	Protocol Protocol
	Expires  time.Duration
	Client   netip.AddrPort // the masked address, port 0
	// VIP is the service's, port 0 for an all-ports service; a match
	// service's is its mark as an address, port 0, as IPVS keys a fwmark
	// template (Mark says which).
	VIP   netip.AddrPort
	Mark  uint32         // a match service's mark (its template's protocol is IPVS's IPPROTO_IP)
	RIP   netip.AddrPort // the server's; port 0 for an all-ports service, as IPVS shows it
	Conns int64          // the open connections it gave its server
}

// TemplateList returns a snapshot of every template of the persistent
// services.
func (b *Balancer) TemplateList() []TemplateInfo {
	now := b.table.now.Load()
	var out []TemplateInfo
	for _, s := range b.set.Load().services() {
		ts := s.tmpl.Load()
		if s.Persistence().Timeout == 0 || ts == nil {
			continue
		}
		for i := range ts.shards {
			sh := &ts.shards[i]
			sh.mu.Lock()
			for _, t := range sh.m {
				rport := t.dest.Port
				if s.Port == 0 {
					// IPVS's port-zero template: <protocol, caddr, 0,
					// vaddr, 0, daddr, 0> (ip_vs_sched_persist).
					rport = 0
				}
				vip := netip.AddrPortFrom(s.Addr, s.Port)
				if isMatch(s) {
					vip = netip.AddrPortFrom(MarkAddr(s.Mark, s.Addr.Is4()), 0)
				}
				out = append(out, TemplateInfo{
					Protocol: s.Protocol,
					Expires:  time.Duration(max(t.deadline.Load()-now, 0)),
					Client:   addrPort(t.client, 0),
					VIP:      vip,
					Mark:     s.Mark,
					RIP:      netip.AddrPortFrom(t.dest.Addr, rport),
					Conns:    t.conns.Load(),
				})
			}
			sh.mu.Unlock()
		}
	}
	return out
}

// PersistConns is how many templates send clients to this server
// (ipvsadm's PersistConn).
func (d *Dest) PersistConns() int64 { return d.persistConns.Load() }

// Persistence is the service's persistence (Timeout 0: none).
func (s *Service) Persistence() Persistence {
	if p := s.persist.Load(); p != nil {
		return *p
	}
	return Persistence{}
}

// ParseNetmask reads ipvsadm's -M: an IPv4 netmask (255.255.255.0) for
// an IPv4 service, or a prefix length (24; IPv6's 64). It returns the
// prefix length.
func ParseNetmask(s string, v4 bool) (int, error) {
	top := 128
	if v4 {
		top = 32
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > top {
			return 0, fmt.Errorf("%q is not a prefix length 1-%d", s, top)
		}
		return n, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !v4 || !a.Is4() {
		if v4 {
			return 0, fmt.Errorf("%q is not an IPv4 netmask (255.255.255.0) or a prefix length", s)
		}
		return 0, fmt.Errorf("%q is not a prefix length 1-128 (an IPv6 service's netmask)", s)
	}
	m := binary.BigEndian.Uint32(a.AsSlice())
	ones := bits.LeadingZeros32(^m)
	if ones == 0 || m<<ones != 0 {
		return 0, fmt.Errorf("%q is not a netmask: its ones must be contiguous from the left, and at least one", s)
	}
	return ones, nil
}

// NetmaskString is a prefix length as ipvsadm prints -M: an IPv4 netmask
// dotted, an IPv6 one as its length; empty for the whole address.
func NetmaskString(bits int, v4 bool) string {
	switch {
	case v4 && bits > 0 && bits < 32:
		m := ^uint32(0) << (32 - bits)
		return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}).String()
	case !v4 && bits > 0 && bits < 128:
		return strconv.Itoa(bits)
	}
	return ""
}
