package nat

import "github.com/tapvs/tapvs/connrec"

// tombs remembers, for a while, the connections a peer's tombstone (a
// closed record) ended or found absent, with the tombstone's version: an
// open record of the same connection that arrives after its tombstone (a
// datagram reordered, a refresh sent before the close, a full copy's
// record overtaken by the live feed) is then stale, not a ghost shadow
// that would hold the client tuple and the LIP's port until its lifetime
// ran out. A connection is its identity both ways (client tuple, LIP and
// local port, real server), so a new connection on the same client tuple
// (its own local port) is never taken for the dead one.
//
// Bounded: at most maxTombs entries, the oldest forgotten first, each for
// tombTTL. Only ImportConn touches it, under the balancer's mu.
type tombs struct {
	m    map[connID]tomb
	ring []connID // m's keys, oldest at next once the ring is full
	next int
}

// connID is a connection's identity both ways.
type connID struct{ in, out tupleKey }

type tomb struct {
	version uint32
	at      int64 // the table's clock when the tombstone came
}

const (
	// maxTombs bounds the memory: about 100 bytes an entry with the
	// map's, some 1.6 MB at most; a peer flooding tombstones moves the
	// oldest out, nothing else.
	maxTombs = 16384
	// tombTTL is how long a tombstone is remembered: far past the
	// reordering of a datagram or a copy's run, far short of the time a
	// client keeps a closed tuple in TIME_WAIT.
	tombTTL = 10e9 // ns
)

// add remembers id's tombstone of version v at now.
func (t *tombs) add(id connID, v uint32, now int64) {
	if t.m == nil {
		t.m = make(map[connID]tomb)
	}
	if _, ok := t.m[id]; !ok {
		if len(t.ring) < maxTombs {
			t.ring = append(t.ring, id)
		} else {
			delete(t.m, t.ring[t.next])
			t.ring[t.next] = id
			t.next = (t.next + 1) % maxTombs
		}
	}
	t.m[id] = tomb{version: v, at: now}
}

// buries reports whether a remembered tombstone of id, younger than
// tombTTL at now, is as new as version v or newer.
func (t *tombs) buries(id connID, v uint32, now int64) bool {
	tb, ok := t.m[id]
	return ok && now-tb.at < tombTTL && int32(v-tb.version) <= 0
}

// idOf is r's connection identity.
func idOf(r *connrec.Record) connID {
	proto := Protocol(r.Proto)
	return connID{
		in:  tupleKey{src: r.Client, dst: r.VIP, sport: r.CPort, dport: r.VPort, proto: proto},
		out: tupleKey{src: r.Server, dst: r.LIP, sport: r.RPort, dport: r.LPort, proto: proto},
	}
}
