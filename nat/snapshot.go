package nat

import (
	"cmp"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/tapvs/tapvs/wire"
)

// serviceSet is an immutable snapshot of what the packet path looks up:
// services by key, and the VIPs and LIPs it answers for (those of the
// services, and of deleted services and LIPs whose connections are still
// open), each counted by how many hold it. Its maps are persistent
// (pmap.go): a transaction's commit makes the next snapshot from this one
// in the time of what it changed, not of every service.
type serviceSet struct {
	byKey pmap[svcKey, *Service]
	// matches are the match services by VIP and protocol (match.go); nil
	// without any. Never written once published.
	matches    map[matchKey][]*Service
	vips, lips pmap[addr16, int32]
	// backups are the LIPs of the lips counted for SetBackupLIPs, read only
	// when a server's packet finds no connection; the map is never written
	// once published.
	backups map[addr16]bool

	// list is the services in the order they were made, built at the first
	// Services() of the snapshot (listings, the stack's sync), not by each
	// commit; a snapshot with the same services shares its predecessor's.
	// Two readers may both build it: they build the same list.
	list atomic.Pointer[[]*Service]
}

// Services lists the virtual services in the order they were made.
func (b *Balancer) Services() []*Service { return b.set.Load().services() }

func (set *serviceSet) services() []*Service {
	if l := set.list.Load(); l != nil {
		return *l
	}
	list := make([]*Service, 0, set.byKey.n)
	set.byKey.each(func(_ svcKey, s *Service) { list = append(list, s) })
	slices.SortFunc(list, func(a, b *Service) int { return cmp.Compare(a.seq, b.seq) })
	set.list.Store(&list)
	return list
}

// service finds a service by key.
func (set *serviceSet) service(k svcKey) *Service {
	s, _ := set.byKey.get(hashSvcKey(&k), k)
	return s
}

// hasVIP and hasLIP are the packet path's first question of a frame: is it
// the balancer's?
func (set *serviceSet) hasVIP(a *addr16) bool {
	_, ok := set.vips.get(hashAddr(a), *a)
	return ok
}

func (set *serviceSet) hasLIP(a *addr16) bool {
	_, ok := set.lips.get(hashAddr(a), *a)
	return ok
}

// hashAddr and hashSvcKey hash the snapshot's keys: the keys are the
// operator's, so any mixing that spreads addresses over the trie's slots
// does; a lookup for an address no key has (any packet's) finds an empty
// slot or one other key, whatever it is.
func hashAddr(a *addr16) uint64 {
	hi, lo := wire.Halves(a)
	return mum(hi^0x9e3779b97f4a7c15, lo^0xc2b2ae3d27d4eb4f)
}

func hashSvcKey(k *svcKey) uint64 {
	return mum(hashAddr(&k.addr)^uint64(k.port)<<8^uint64(k.proto)^uint64(k.mark)<<24, 0x165667b19e3779f9)
}

// counted adds d to a's count in m, taking a out at 0; in and out report
// a coming in or going.
func counted(m pmap[addr16, int32], a addr16, d int32, ed *pedit) (_ pmap[addr16, int32], in, out bool) {
	h := hashAddr(&a)
	n, had := m.get(h, a)
	if n += d; n <= 0 {
		return m.without(h, a, ed), false, had
	}
	return m.with(h, a, n, ed), !had, false
}

// A Change is what a commit published that the stack around the balancer
// follows: a VIP (ClientSide) or LIP (ServerSide) it began (Added) or
// stopped answering for, or (Dest set) a real server published, whose
// next hop must be known.
type Change struct {
	Side  Side
	Addr  netip.Addr
	Added bool
	Dest  *Dest
}

// maxChangeLog bounds the changes kept for Changes; a reader that falls
// further behind (or a batch larger than this) reads the whole state.
const maxChangeLog = 1 << 16

type loggedChange struct {
	gen uint64
	Change
}

// Changes returns what was published after generation since, and the
// generation it brings the reader to. ok is false when the changes are no
// longer all kept: the reader then takes Addresses and Services whole.
// The stack's sync reads them after each change, so that its work is the
// change's size, not the balancer's.
func (b *Balancer) Changes(since uint64) (changes []Change, gen uint64, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	gen = b.gen.Load()
	if since < b.changesLost {
		return nil, gen, false
	}
	i, _ := slices.BinarySearchFunc(b.changes, since+1, func(c loggedChange, g uint64) int { return cmp.Compare(c.gen, g) })
	for _, c := range b.changes[i:] {
		changes = append(changes, c.Change)
	}
	return changes, gen, true
}

// logChange keeps a change of generation gen. Caller holds b.mu.
func (b *Balancer) logChange(gen uint64, c Change) {
	if len(b.changes) >= maxChangeLog {
		half := len(b.changes) / 2
		b.changesLost = b.changes[half-1].gen
		b.changes = slices.Delete(b.changes, 0, half)
	}
	b.changes = append(b.changes, loggedChange{gen, c})
}

// publish makes the next snapshot from the current one: services added
// and removed, VIP and LIP counts moved by vips and lips, and dests the
// real servers published. Caller holds b.mu.
func (b *Balancer) publish(added, removed []*Service, vips, lips map[addr16]int32, dests []*Dest) {
	gen := b.gen.Load() + 1
	cur := b.set.Load()
	n := &serviceSet{byKey: cur.byKey, vips: cur.vips, lips: cur.lips, backups: b.backups, matches: nextMatches(cur.matches, added, removed)}
	ed := new(pedit) // n's new nodes are written in place until it is stored
	if len(removed) == cur.byKey.n {
		n.byKey = pmap[svcKey, *Service]{} // all of them (ipvsadm -C): no need to take each out
	} else {
		for _, s := range removed {
			n.byKey = n.byKey.without(hashSvcKey(&s.key), s.key, ed)
		}
	}
	for _, s := range added {
		n.byKey = n.byKey.with(hashSvcKey(&s.key), s.key, s, ed)
	}
	for side, counts := range [2]map[addr16]int32{vips, lips} {
		m := &n.vips
		if Side(side) == ServerSide {
			m = &n.lips
		}
		for a, d := range counts {
			if d == 0 {
				continue
			}
			var in, out bool
			if *m, in, out = counted(*m, a, d, ed); in || out {
				b.logChange(gen, Change{Side: Side(side), Addr: netip.AddrFrom16(a).Unmap(), Added: in})
			}
		}
	}
	for _, d := range dests {
		b.logChange(gen, Change{Dest: d})
	}
	if len(added) == 0 && len(removed) == 0 {
		n.list.Store(cur.list.Load()) // the same services: the same list, if it is built
	}
	b.set.Store(n)
	b.gen.Store(gen)
}

// pruneRetired lets go of the retired LIPs and services whose last
// connection has ended: their counts in the snapshot go. Caller holds b.mu.
func (b *Balancer) pruneRetired(vips, lips map[addr16]int32) {
	b.retired = slices.DeleteFunc(b.retired, func(l *LocalAddr) bool {
		if l.inUse.Load() > 0 {
			return false
		}
		lips[l.a16]--
		return true
	})
	b.retiredSvcs = slices.DeleteFunc(b.retiredSvcs, func(s *Service) bool {
		if s.conns() > 0 {
			return false
		}
		for _, a := range s.vips {
			vips[a]--
		}
		return true
	})
}
