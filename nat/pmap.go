package nat

import (
	"math/bits"
	"slices"
)

// pmap is a persistent hash map (a hash array mapped trie): a value is
// never changed once published, and with and without return a new map
// that shares all but the path to the key they change. A transaction
// that changes k keys of an n-key map so costs O(k log32 n), not the O(n)
// of copying a Go map, and readers of the old map (the data path, with one
// atomic load of the snapshot that holds it) never see the change half
// made. The caller hashes the key (hashAddr, hashSvcKey): a lookup costs
// the hash and one node a 5-bit step of it, a few at most.
//
// Many changes made to one map before it is published (a transaction's
// commit of 100 000 services) would copy the same new nodes over and over:
// nodes made under one edit token (pedit) are that edit's own, and later
// changes under the same token write them in place. A map is published
// only when its edit is done, so no reader sees a node being written.
type pmap[K comparable, V any] struct {
	root *pnode[K, V]
	n    int
}

type pnode[K comparable, V any] struct {
	bitmap uint32       // which of the 32 slots of this level are taken
	kids   []pkid[K, V] // the taken slots, in slot order
	edit   *pedit       // the edit that made the node and may still write it
}

// pedit is an edit's token: one per batch of changes not yet published.
type pedit struct{ _ byte }

// own returns n itself if edit made it, else a copy that edit owns.
func (n *pnode[K, V]) own(e *pedit) *pnode[K, V] {
	if e != nil && n.edit == e {
		return n
	}
	return &pnode[K, V]{bitmap: n.bitmap, kids: slices.Clone(n.kids), edit: e}
}

// pkid is a subtree, or (node nil) a leaf: entries whose hashes are equal
// (more than one only when two keys' 64-bit hashes collide).
type pkid[K comparable, V any] struct {
	node *pnode[K, V]
	leaf []pentry[K, V]
}

type pentry[K comparable, V any] struct {
	h uint64
	k K
	v V
}

func slot(h uint64, shift uint) uint32 { return 1 << ((h >> shift) & 31) }

// get finds k, whose hash is h.
func (m *pmap[K, V]) get(h uint64, k K) (v V, ok bool) {
	n := m.root
	for shift := uint(0); n != nil; shift += 5 {
		bit := slot(h, shift)
		if n.bitmap&bit == 0 {
			return v, false
		}
		kid := &n.kids[bits.OnesCount32(n.bitmap&(bit-1))]
		if kid.node == nil {
			for i := range kid.leaf {
				if kid.leaf[i].k == k {
					return kid.leaf[i].v, true
				}
			}
			return v, false
		}
		n = kid.node
	}
	return v, false
}

// with is m with k (hash h) set to v, under edit ed (nil: a copy of every
// node it changes).
func (m pmap[K, V]) with(h uint64, k K, v V, ed *pedit) pmap[K, V] {
	e := pentry[K, V]{h, k, v}
	if m.root == nil {
		return pmap[K, V]{root: &pnode[K, V]{bitmap: slot(h, 0), kids: []pkid[K, V]{{leaf: []pentry[K, V]{e}}}, edit: ed}, n: 1}
	}
	root, added := m.root.with(e, 0, ed)
	if added {
		m.n++
	}
	return pmap[K, V]{root: root, n: m.n}
}

func (n *pnode[K, V]) with(e pentry[K, V], shift uint, ed *pedit) (*pnode[K, V], bool) {
	bit := slot(e.h, shift)
	i := bits.OnesCount32(n.bitmap & (bit - 1))
	c := n.own(ed)
	if n.bitmap&bit == 0 {
		c.bitmap |= bit
		c.kids = slices.Insert(c.kids, i, pkid[K, V]{leaf: []pentry[K, V]{e}})
		return c, true
	}
	kid := &c.kids[i]
	if kid.node != nil {
		var added bool
		kid.node, added = kid.node.with(e, shift+5, ed)
		return c, added
	}
	if kid.leaf[0].h == e.h {
		leaf := slices.Clone(kid.leaf)
		for j := range leaf {
			if leaf[j].k == e.k {
				leaf[j] = e
				kid.leaf = leaf
				return c, false
			}
		}
		kid.leaf = append(leaf, e)
		return c, true
	}
	// Another hash in this slot: both go one level down, where their
	// hashes differ sooner or later (they differ somewhere in 64 bits).
	sub := &pnode[K, V]{bitmap: slot(kid.leaf[0].h, shift+5), kids: []pkid[K, V]{{leaf: kid.leaf}}, edit: ed}
	kid.node, _ = sub.with(e, shift+5, ed)
	kid.leaf = nil
	return c, true
}

// without is m without k (hash h), under edit ed as with.
func (m pmap[K, V]) without(h uint64, k K, ed *pedit) pmap[K, V] {
	if m.root == nil {
		return m
	}
	root, removed := m.root.without(h, k, 0, ed)
	if !removed {
		return m
	}
	return pmap[K, V]{root: root, n: m.n - 1}
}

// without returns the node without k, nil if that leaves it empty.
func (n *pnode[K, V]) without(h uint64, k K, shift uint, ed *pedit) (*pnode[K, V], bool) {
	bit := slot(h, shift)
	if n.bitmap&bit == 0 {
		return n, false
	}
	i := bits.OnesCount32(n.bitmap & (bit - 1))
	kid := n.kids[i]
	if kid.node != nil {
		sub, removed := kid.node.without(h, k, shift+5, ed)
		if !removed {
			return n, false
		}
		switch {
		case sub == nil:
			kid = pkid[K, V]{}
		case len(sub.kids) == 1 && sub.kids[0].node == nil:
			kid = pkid[K, V]{leaf: sub.kids[0].leaf} // one leaf left below: it comes up
		default:
			kid = pkid[K, V]{node: sub}
		}
	} else {
		j := slices.IndexFunc(kid.leaf, func(e pentry[K, V]) bool { return e.k == k })
		if j < 0 {
			return n, false
		}
		kid = pkid[K, V]{leaf: slices.Delete(slices.Clone(kid.leaf), j, j+1)}
		if len(kid.leaf) == 0 {
			kid.leaf = nil
		}
	}
	c := n.own(ed)
	if kid.node == nil && kid.leaf == nil {
		c.bitmap &^= bit
		c.kids = slices.Delete(c.kids, i, i+1)
		if len(c.kids) == 0 {
			return nil, true
		}
		return c, true
	}
	c.kids[i] = kid
	return c, true
}

// each calls fn for every entry, in no particular order.
func (m *pmap[K, V]) each(fn func(K, V)) {
	if m.root != nil {
		m.root.each(fn)
	}
}

func (n *pnode[K, V]) each(fn func(K, V)) {
	for i := range n.kids {
		if kid := &n.kids[i]; kid.node != nil {
			kid.node.each(fn)
		} else {
			for _, e := range kid.leaf {
				fn(e.k, e.v)
			}
		}
	}
}
