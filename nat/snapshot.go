package nat

import (
	"cmp"
	"encoding/binary"
	"slices"
	"sync/atomic"
)

// serviceSet is an immutable snapshot of what the packet path looks up:
// services by key, and the VIPs and LIPs it answers for (those of the
// services, and of deleted services and LIPs whose connections are still
// open), each counted by how many hold it. Its maps are persistent
// (pmap.go): a transaction's commit makes the next snapshot from this one
// in the time of what it changed, not of every service.
type serviceSet struct {
	byKey      pmap[svcKey, *Service]
	vips, lips pmap[addr16, int32]

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
	return mum(binary.LittleEndian.Uint64(a[0:])^0x9e3779b97f4a7c15, binary.LittleEndian.Uint64(a[8:])^0xc2b2ae3d27d4eb4f)
}

func hashSvcKey(k *svcKey) uint64 {
	return mum(hashAddr(&k.addr)^uint64(k.port)<<8^uint64(k.proto), 0x165667b19e3779f9)
}

// counted adds d to a's count in m, taking a out at 0.
func counted(m pmap[addr16, int32], a addr16, d int32, ed *pedit) pmap[addr16, int32] {
	h := hashAddr(&a)
	n, _ := m.get(h, a)
	if n += d; n <= 0 {
		return m.without(h, a, ed)
	}
	return m.with(h, a, n, ed)
}

// publish makes the next snapshot from the current one: services added
// and removed, and VIP and LIP counts moved by vips and lips. Caller holds
// b.mu.
func (b *Balancer) publish(added, removed []*Service, vips, lips map[addr16]int32) {
	cur := b.set.Load()
	n := &serviceSet{byKey: cur.byKey, vips: cur.vips, lips: cur.lips}
	ed := new(pedit) // n's new nodes are written in place until it is stored
	for _, s := range removed {
		n.byKey = n.byKey.without(hashSvcKey(&s.key), s.key, ed)
	}
	for _, s := range added {
		n.byKey = n.byKey.with(hashSvcKey(&s.key), s.key, s, ed)
	}
	for a, d := range vips {
		if d != 0 {
			n.vips = counted(n.vips, a, d, ed)
		}
	}
	for a, d := range lips {
		if d != 0 {
			n.lips = counted(n.lips, a, d, ed)
		}
	}
	if len(added) == 0 && len(removed) == 0 {
		n.list.Store(cur.list.Load()) // the same services: the same list, if it is built
	}
	b.set.Store(n)
	b.gen.Add(1)
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
		vips[s.key.addr]--
		return true
	})
}
