package nat

import (
	"encoding/binary"
	"math/big"

	"github.com/dchest/siphash"
)

// mhTableSize is mh's lookup table size: IPVS's default
// (CONFIG_IP_VS_MH_TAB_INDEX 12), a prime, so every skip below it visits
// every slot.
const mhTableSize = 4093

// mhKeys key mh's hashes. Fixed, as IPVS's are (generate_hash_secret), so
// that every instance of a cluster builds the same table from the same
// servers and sends a client to the same server whichever instance ECMP
// gives it to.
var mhKeys = [2][2]uint64{{2654435761, 2654435761}, {2654435801, 2654435801}}

// maglev is IPVS's mh: Maglev hashing (Eisenbud et al., NSDI 2016, 3.4).
// Each live server has a permutation of the table's slots (mhPerm); in
// rounds, each takes its next free preferred slot, as many per round as
// its weight over the weights' greatest common divisor, until every slot
// is taken. A client's address hashes to a slot. A server added or
// removed moves few clients besides its own: the others' slots mostly
// keep their server, where sh's buckets shift wholesale.
//
// Flags (IPVS's): port (mh-port) hashes the client's source port with its
// address; fallback (mh-fallback), when the slot's server is unavailable
// at pick time (overloaded, or its weight went to 0 and the table is not
// rebuilt yet), hashes again with offsets as IPVS does, where without it
// the connection is refused. A drained server has no slot once the table
// is rebuilt (IPVS keeps its slots, through last_weight, and refuses or
// falls back).
type maglev struct {
	table []*Dest // nil without a live server
	flags SchedFlags
}

// mhPerm is d's permutation of the table: slot j of its preference list
// is (offset + j*skip) mod mhTableSize, skip from 1 to mhTableSize-1.
func mhPerm(d *Dest) (offset, skip int) {
	var k [18]byte
	a := d.Addr.As16()
	copy(k[:16], a[:])
	binary.BigEndian.PutUint16(k[16:], d.Port)
	offset = int(siphash.Hash(mhKeys[0][0], mhKeys[0][1], k[:]) % mhTableSize)
	skip = int(siphash.Hash(mhKeys[1][0], mhKeys[1][1], k[:])%(mhTableSize-1)) + 1
	return offset, skip
}

func newMaglev(dests []*Dest, flags SchedFlags) *maglev {
	var live []*Dest
	g := 0
	for _, d := range dests {
		if w := int(d.Weight()); w > 0 {
			live = append(live, d)
			g = gcd(g, w)
		}
	}
	if len(live) == 0 {
		return &maglev{flags: flags}
	}
	type perm struct{ offset, skip, next, turns int }
	ps := make([]perm, len(live))
	for i, d := range live {
		ps[i].offset, ps[i].skip = mhPerm(d)
		ps[i].turns = int(d.Weight()) / g
	}
	m := &maglev{table: make([]*Dest, mhTableSize), flags: flags}
	// Each round takes at least one slot, and each server's list holds
	// every slot: the bounds only end a loop that a bug would make endless.
	for round, filled := 0, 0; filled < mhTableSize && round < mhTableSize; round++ {
		for i := range ps {
			p := &ps[i]
			for t := 0; t < p.turns && filled < mhTableSize; t++ {
				c := (p.offset + p.next*p.skip) % mhTableSize
				for tries := 0; m.table[c] != nil && tries < mhTableSize; tries++ {
					p.next++
					c = (p.offset + p.next*p.skip) % mhTableSize
				}
				m.table[c] = live[i]
				p.next++
				filled++
			}
		}
	}
	return m
}

// gcd is a and b's greatest common divisor (not negative; gcd(0, b) is
// b). math/big's, once per table built.
func gcd(a, b int) int {
	return int(new(big.Int).GCD(nil, nil, big.NewInt(int64(a)), big.NewInt(int64(b))).Int64())
}

func (m *maglev) pick(k *tupleKey) *Dest {
	if m.table == nil {
		return nil
	}
	var port uint16
	if m.flags&SchedPort != 0 {
		port = k.sport
	}
	ihash := mhSlot(&k.src, port, 0)
	d := m.table[ihash]
	if available(d) {
		return d
	}
	if m.flags&SchedFallback == 0 {
		return nil
	}
	// IPVS's walk: offset o hashes again with o + ihash added, each
	// offset once; bounded by the table, ended by the first live server.
	for o := range uint32(mhTableSize) {
		if d := m.table[mhSlot(&k.src, port, (o+ihash)%mhTableSize)]; available(d) {
			return d
		}
	}
	return nil
}

// mhSlot hashes a client address, with port and offset when not 0 (without
// them the address alone, as before the flags: a table's clients keep
// their slots), to a slot of the table.
func mhSlot(client *addr16, port uint16, offset uint32) uint32 {
	if port == 0 && offset == 0 {
		return uint32(siphash.Hash(mhKeys[0][0], mhKeys[0][1], client[:]) % mhTableSize)
	}
	var b [22]byte
	copy(b[:16], client[:])
	binary.BigEndian.PutUint16(b[16:], port)
	binary.BigEndian.PutUint32(b[18:], offset)
	return uint32(siphash.Hash(mhKeys[0][0], mhKeys[0][1], b[:]) % mhTableSize)
}
