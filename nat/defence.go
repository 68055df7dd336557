package nat

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/tcpflag"
)

// Defence, as LVS and DPVS have it: per-service allow and deny lists of
// source prefixes (DPVS's whitelist and blacklist), per-source limits on
// new connections per second and on concurrent connections, and a bounded
// number of half-open connections for TCP services without SYNPROXY (the
// job of LVS's drop_entry and secure_tcp).
//
// All of it is looked at only where a client packet finds no connection,
// the path that may make one: an established connection's packets never
// read a list, and a list or limit changed later does not touch the
// connections already open (as DPVS's blacklist, which is checked in
// conn_sched only).

// MaxCIDRs bounds each of a service's allow and deny lists.
const MaxCIDRs = 4096

// MaxSourceLimit bounds Limits.SourceCPS and Limits.SourceConns, and
// MaxHalfOpen Limits.HalfOpen.
const (
	MaxSourceLimit = 1 << 20
	MaxHalfOpen    = 1 << 24
)

// Limits are a service's limits on new connections; 0 is no limit.
type Limits struct {
	// SourceCPS is how many new connections one source address may open
	// per second, with a burst of as many (a GCRA token bucket). For a
	// SYNPROXY service it counts the SYNs answered with a cookie.
	SourceCPS int
	// SourceConns is how many connections one source address may hold at
	// once.
	SourceConns int
	// HalfOpen is how many TCP connections of the service may wait for the
	// client's ACK of the handshake (SYN_RECV) at once. It applies while
	// the service has no SYN proxy: a SYN proxy holds no state for an
	// unproven SYN.
	HalfOpen int
}

func (l Limits) check(s *Service) error {
	if l.SourceCPS < 0 || l.SourceCPS > MaxSourceLimit {
		return fmt.Errorf("source_cps %d is out of range 0-%d", l.SourceCPS, MaxSourceLimit)
	}
	if l.SourceConns < 0 || l.SourceConns > MaxSourceLimit {
		return fmt.Errorf("source_conns %d is out of range 0-%d", l.SourceConns, MaxSourceLimit)
	}
	if l.HalfOpen < 0 || l.HalfOpen > MaxHalfOpen {
		return fmt.Errorf("half_open %d is out of range 0-%d", l.HalfOpen, MaxHalfOpen)
	}
	if l.HalfOpen > 0 && s.Protocol != TCP {
		return fmt.Errorf("half_open: only a TCP service has half-open connections")
	}
	return nil
}

// cidrSet is an immutable set of IPv4 prefixes. A lookup costs one binary
// search per distinct prefix length in the set (at most 33), and no
// allocation.
type cidrSet struct {
	list  []netip.Prefix // sorted, as listed
	byLen []cidrLen
}

type cidrLen struct {
	mask uint32
	nets []uint32 // sorted network addresses of this length
}

// newCIDRSet checks and indexes a list: IPv4 prefixes, without host bits,
// each once, at most MaxCIDRs.
func newCIDRSet(in []netip.Prefix) (cidrSet, error) {
	if len(in) > MaxCIDRs {
		return cidrSet{}, fmt.Errorf("%d prefixes: at most %d", len(in), MaxCIDRs)
	}
	list := slices.Clone(in)
	for _, p := range list {
		if !p.IsValid() || !p.Addr().Is4() {
			return cidrSet{}, fmt.Errorf("%s is not an IPv4 prefix", p)
		}
		if p.Masked() != p {
			return cidrSet{}, fmt.Errorf("%s has host bits set (%s?)", p, p.Masked())
		}
	}
	slices.SortFunc(list, comparePrefix)
	for i := 1; i < len(list); i++ {
		if list[i] == list[i-1] {
			return cidrSet{}, fmt.Errorf("%s is listed twice", list[i])
		}
	}
	s := cidrSet{list: list}
	for bitsLen := 0; bitsLen <= 32; bitsLen++ {
		var nets []uint32
		for _, p := range list {
			if p.Bits() == bitsLen {
				nets = append(nets, v4u32(p.Addr()))
			}
		}
		if len(nets) > 0 {
			slices.Sort(nets)
			s.byLen = append(s.byLen, cidrLen{mask: prefixMask(bitsLen), nets: nets})
		}
	}
	return s, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func prefixMask(bitsLen int) uint32 {
	if bitsLen == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bitsLen)
}

func v4u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func (c *cidrSet) contains(ip uint32) bool {
	for i := range c.byLen {
		l := &c.byLen[i]
		if _, ok := slices.BinarySearch(l.nets, ip&l.mask); ok {
			return true
		}
	}
	return false
}

// ParsePrefix reads a source prefix as the config, the API and tapvsadm
// take it: an IPv4 prefix without host bits, or an address (a /32).
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 prefix or address", s)
		}
		return netip.PrefixFrom(a, 32), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 prefix", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (%s?)", s, p.Masked())
	}
	return p, nil
}

// policy is a service's defence as published: immutable but for the
// source tracker's counts, swapped whole by a Tx's commit.
type policy struct {
	allow, deny cidrSet
	limits      Limits
	src         *srcTracker // nil unless a per-source limit is set
}

func (p *policy) empty() bool {
	return len(p.allow.list) == 0 && len(p.deny.list) == 0 && p.limits == Limits{}
}

// svcDefence is a service's defence state.
type svcDefence struct {
	pol      atomic.Pointer[policy] // nil: nothing to check, the usual case, one load
	halfOpen atomic.Int64           // connections counted half-open (connDefence.halfOpen)
}

// connDefence is what a connection holds to give back at its release.
type connDefence struct {
	src *srcTracker // the tracker that counts it, or nil
	// srcHeld is whether src counts it now: set and cleared under the
	// source's shard lock only (srcTracker.hold), as the connection's
	// state enters and leaves the closed ones (holding).
	srcHeld  bool
	halfOpen atomic.Bool // counted in its service's svcDefence.halfOpen
}

// Allow and Deny are the service's source lists; Limits its limits.
func (s *Service) Allow() []netip.Prefix { return s.policy().allow.list }

// Deny is the service's deny list.
func (s *Service) Deny() []netip.Prefix { return s.policy().deny.list }

// Limits are the service's limits on new connections.
func (s *Service) Limits() Limits { return s.policy().limits }

// HalfOpen is how many of the service's connections are counted half-open
// (only while a HalfOpen limit is set).
func (s *Service) HalfOpen() int64 { return s.def.halfOpen.Load() }

var noPolicy policy

func (s *Service) policy() *policy {
	if p := s.def.pol.Load(); p != nil {
		return p
	}
	return &noPolicy
}

// install publishes p, keeping the published source tracker if p needs one:
// the counts of open connections carry over a change of limits. Caller
// holds s.mu.
func (s *Service) install(p *policy) {
	p.src = nil
	if p.limits.SourceCPS > 0 || p.limits.SourceConns > 0 {
		p.src = s.policy().src
		if p.src == nil {
			p.src = newSrcTracker()
		}
	}
	if p.empty() {
		s.def.pol.Store(nil)
		return
	}
	s.def.pol.Store(p)
}

// txPolicy is the service's policy as tx leaves it: a copy to change.
func (tx *Tx) txPolicy(s *Service) policy {
	if st := tx.stages[s]; st != nil && st.defence != nil {
		return *st.defence
	}
	return *s.policy()
}

// SetAllow replaces a service's allow list: when it is not empty, new
// connections only from sources in it (DPVS's whitelist).
func (tx *Tx) SetAllow(s *Service, prefixes []netip.Prefix) error {
	return tx.setList(s, "allow", prefixes, func(p *policy, set cidrSet) { p.allow = set })
}

// SetDeny replaces a service's deny list: no new connections from sources
// in it (DPVS's blacklist).
func (tx *Tx) SetDeny(s *Service, prefixes []netip.Prefix) error {
	return tx.setList(s, "deny", prefixes, func(p *policy, set cidrSet) { p.deny = set })
}

// setList stages one of a service's source lists, checked.
func (tx *Tx) setList(s *Service, name string, prefixes []netip.Prefix, put func(*policy, cidrSet)) error {
	if len(prefixes) > 0 && s.Addr.Is6() {
		// The lists hold IPv4 prefixes: on an IPv6 service an allow list
		// would refuse every client and a deny list none.
		return fmt.Errorf("service %s: %s: source lists hold IPv4 prefixes only, and this service's clients are IPv6", s, name)
	}
	set, err := newCIDRSet(prefixes)
	if err != nil {
		return fmt.Errorf("service %s: %s: %w", s, name, err)
	}
	p := tx.txPolicy(s)
	put(&p, set)
	tx.stage(s).defence = &p
	tx.n++
	return nil
}

// SetLimits replaces a service's limits on new connections.
func (tx *Tx) SetLimits(s *Service, l Limits) error {
	if err := l.check(s); err != nil {
		return fmt.Errorf("service %s: limits: %w", s, err)
	}
	p := tx.txPolicy(s)
	p.limits = l
	tx.stage(s).defence = &p
	tx.n++
	return nil
}

// Allow, Deny and Limits are a service's as the transaction leaves them.
func (tx *Tx) Allow(s *Service) []netip.Prefix { return tx.txPolicy(s).allow.list }

// Deny is a service's deny list as the transaction leaves it.
func (tx *Tx) Deny(s *Service) []netip.Prefix { return tx.txPolicy(s).deny.list }

// Limits are a service's limits as the transaction leaves them.
func (tx *Tx) Limits(s *Service) Limits { return tx.txPolicy(s).limits }

// opening reports whether a packet without a connection is one that opens
// one: a UDP datagram, a bare SYN (for a SYNPROXY service, the SYN that a
// cookie answers).
func opening(proto Protocol, flags uint8) bool {
	return proto == UDP || flags&(tcpflag.SYN|tcpflag.ACK|tcpflag.RST|tcpflag.FIN) == tcpflag.SYN
}

// admit checks a client packet that found no connection against its
// service's defence. It returns Forward to go on, or the verdict of a
// counted drop.
func (b *Balancer) admit(svc *Service, src *addr16, proto Protocol, flags uint8) Verdict {
	pol := svc.def.pol.Load()
	if pol == nil {
		return Forward
	}
	id := srcKey(src)
	// The lists hold IPv4 prefixes only (an IPv6 service refuses them):
	// an IPv6 client is in none.
	if id.fam == 4 && len(pol.deny.byLen) > 0 && pol.deny.contains(uint32(id.key)) {
		return b.Stats.drop(DropDenied)
	}
	if len(pol.allow.byLen) > 0 && (id.fam != 4 || !pol.allow.contains(uint32(id.key))) {
		return b.Stats.drop(DropNotAllowed)
	}
	if !opening(proto, flags) {
		return Forward // not_syn, a cookie's ACK: the path after this decides
	}
	// Half-open connections beyond the budget: the new SYN is dropped
	// rather than the oldest half-open entry evicted (LVS's drop_entry).
	// Evicting needs an order over the service's half-open entries, kept
	// by every SYN under a lock shared by all of them, and under a flood
	// it evicts the real clients' handshakes at the flood's rate anyway;
	// dropping keeps the handshakes already under way, and the half-open
	// entries end at the SYN_RECV timeout (shorten it, as secure_tcp
	// does, with the service's timeouts). A flood is SYNPROXY's job.
	if l := pol.limits.HalfOpen; l > 0 && proto == TCP && !svc.synproxy.Load() && svc.def.halfOpen.Load() >= int64(l) {
		return b.Stats.drop(DropHalfOpenLimit)
	}
	if pol.src != nil {
		if r, ok := pol.src.admit(id, b.table.now.Load(), pol.limits, &b.Stats); !ok {
			return b.Stats.drop(r)
		}
	}
	return Forward
}

// srcID is what the source tracker counts a client under: its IPv4
// address, or for IPv6 its /64 (one host holds a whole /64: RFC 4291's
// interface identifiers, privacy addresses, so per-address limits would
// be no limit). The family keeps an IPv6 prefix from ever being counted
// as an IPv4 address.
type srcID struct {
	key uint64
	fam uint8 // 4 or 6; 0 is an empty tracker entry
}

func srcKey(a *addr16) srcID {
	if is4(a) {
		return srcID{key: uint64(binary.BigEndian.Uint32(a[12:])), fam: 4}
	}
	return srcID{key: binary.BigEndian.Uint64(a[0:]), fam: 6}
}

// track counts a new connection before it is published: at its source
// and, for a TCP connection not made by the SYN proxy, as half-open. Its
// release gives both back (untrack).
func (b *Balancer) track(c *Conn) {
	pol := c.svc.def.pol.Load()
	if pol == nil {
		return
	}
	if pol.src != nil && pol.src.open(srcKey(&c.in.src)) {
		c.def.src = pol.src
		c.def.srcHeld = true // not published yet: no other reader sees it
	}
	if pol.limits.HalfOpen > 0 && c.in.proto == TCP && c.sp == nil {
		c.def.halfOpen.Store(true)
		c.svc.def.halfOpen.Add(1)
	}
}

// handshake ends a half-open connection's count at the client's ACK or
// RST, the packets that end SYN_RECV in IPVS's table. Called for a
// connection's client packets only while it is counted half-open.
func handshake(c *Conn, flags uint8) {
	if flags&(tcpflag.ACK|tcpflag.RST) != 0 && flags&tcpflag.SYN == 0 && c.def.halfOpen.CompareAndSwap(true, false) {
		c.svc.def.halfOpen.Add(-1)
	}
}

// untrack gives back what track counted; release calls it once, after
// the connection's state is stDead.
func untrack(c *Conn) {
	if c.def.src != nil {
		c.def.src.hold(c)
	}
	if c.def.halfOpen.CompareAndSwap(true, false) {
		c.svc.def.halfOpen.Add(-1)
	}
}

// The source tracker counts, per source address, a GCRA token bucket's
// theoretical arrival time and the connections open. It is a fixed
// set-associative table: srcShards shards, each with its own lock (taken
// only on the new-connection path and at a release), of srcSets sets of
// srcWays entries: MaxTrackedSources sources in about 1.5 MiB, allocated
// once when a service first gets a per-source limit. A spoofed flood
// cannot grow it: a new source takes an empty entry of its set, or the
// entry without open connections whose bucket is fullest (longest idle);
// an evicted source starts again with a full bucket. An entry that counts
// open connections is never evicted (its release must find it): when all
// of a set's entries hold connections, a new source of that set is let in
// uncounted (Stats.SourcesUntracked), because refusing would let a flood
// that pinned the set refuse every real client that hashes there.
const (
	srcShards         = 64
	srcSets           = 128
	srcWays           = 8
	MaxTrackedSources = srcShards * srcSets * srcWays
)

type srcEntry struct {
	id    srcID // fam 0: an empty entry
	tat   int64 // GCRA: when the bucket will be full again, table clock
	conns int32
}

type srcShard struct {
	mu   sync.Mutex
	sets [srcSets][srcWays]srcEntry
	_    [56]byte
}

type srcTracker struct {
	shards [srcShards]srcShard
	seed   [2]uint64
}

func newSrcTracker() *srcTracker {
	t := &srcTracker{}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("nat: no randomness for the source tracker's seed: " + err.Error())
	}
	t.seed[0] = binary.LittleEndian.Uint64(b[:]) | 1
	t.seed[1] = binary.LittleEndian.Uint64(b[8:]) | 1
	return t
}

// set finds id's shard and set; the seed keeps an attacker from aiming
// sources at one set.
func (t *srcTracker) set(id srcID) (*srcShard, *[srcWays]srcEntry) {
	h := mum(id.key^t.seed[0], t.seed[1]^uint64(id.fam))
	sh := &t.shards[h>>58]
	return sh, &sh.sets[(h>>32)%srcSets]
}

// entry finds id's entry in its set or, if make is set, takes one for it.
// Caller holds the shard's lock.
func entry(set *[srcWays]srcEntry, id srcID, make bool) *srcEntry {
	var victim *srcEntry
	for i := range set {
		e := &set[i]
		if e.id == id {
			return e
		}
		if !make || e.conns > 0 || victim != nil && victim.id.fam == 0 {
			continue
		}
		if victim == nil || e.id.fam == 0 || e.tat < victim.tat {
			victim = e // an empty entry, or the one idle longest
		}
	}
	if victim != nil {
		*victim = srcEntry{id: id}
	}
	return victim
}

// admit checks a new connection from id against the limits and takes a
// token from its bucket.
func (t *srcTracker) admit(id srcID, now int64, l Limits, st *Stats) (DropReason, bool) {
	sh, set := t.set(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := entry(set, id, true)
	if e == nil {
		st.srcUntracked.Add(1)
		return 0, true
	}
	if l.SourceConns > 0 && int(e.conns) >= l.SourceConns {
		return DropSrcConnLimit, false
	}
	if l.SourceCPS > 0 {
		// GCRA: each connection moves the bucket's full-again time on by
		// one interval; more than a second's worth ahead of now is over.
		interval := int64(time.Second) / int64(l.SourceCPS)
		tat := max(e.tat, now) + interval
		if tat-now > interval*int64(l.SourceCPS) {
			return DropSrcRateLimit, false
		}
		e.tat = tat
	}
	return 0, true
}

// open counts a connection from id; false if it has no entry to count in.
func (t *srcTracker) open(id srcID) bool {
	sh, set := t.set(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := entry(set, id, true)
	if e == nil {
		return false
	}
	e.conns++
	return true
}

// hold brings c's count at its source in line with its state: counted
// while the client holds it (holding), not once it closes, lingers or is
// released. It is called after each change of state that crosses that
// line, and reads the state under the shard's lock, so however the calls
// of racing changes interleave the last one sees the last state: a
// connection reopened in its lingering entry (a SYN on TIME_WAIT) counts
// again, and one released (stDead) never does. A connection that closed
// while its source's set was full of held ones, so that it has no entry to
// count in when it reopens, stays uncounted (as a new one would be).
func (t *srcTracker) hold(c *Conn) {
	id := srcKey(&c.in.src)
	sh, set := t.set(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	want := holding(c.state.Load())
	if want == c.def.srcHeld {
		return
	}
	e := entry(set, id, want)
	if e == nil {
		return
	}
	if want {
		e.conns++
	} else if e.conns > 0 {
		e.conns--
	}
	c.def.srcHeld = want
}

// Conns is how many connections the tracker counts from id (tests).
func (t *srcTracker) conns(id srcID) int32 {
	sh, set := t.set(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := entry(set, id, false); e != nil {
		return e.conns
	}
	return 0
}
