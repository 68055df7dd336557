package defence

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"
	"sync"
	"time"

	"github.com/tapvs/tapvs/wire"
)

// Source is what a client is listed and counted under: its IPv4 address,
// or for IPv6 its /64 (one host holds a whole /64: RFC 4291's interface
// identifiers, privacy addresses, so per-address limits would be no
// limit). The family keeps an IPv6 prefix from ever being counted as an
// IPv4 address.
type Source struct {
	key uint64
	fam uint8 // 4 or 6; 0 is an empty tracker entry
}

// SourceOf is the source of a client address in 16-byte form (IPv4 as
// IPv4-mapped, wire.Is4).
func SourceOf(a *[16]byte) Source {
	if wire.Is4(a) {
		return Source{key: uint64(wire.V4(a)), fam: 4}
	}
	return Source{key: wire.Net64(a), fam: 6}
}

// SourceLimits are the limits the Tracker applies to one source; 0 is no
// limit.
type SourceLimits struct {
	// CPS is how many new connections a source may open per second, with
	// a burst of as many (a GCRA token bucket).
	CPS int
	// Conns is how many connections a source may hold at once.
	Conns int
}

// The Tracker counts, per source, a GCRA token bucket's theoretical
// arrival time and the connections held. It is a fixed set-associative
// table: srcShards shards, each with its own lock (taken only on the
// new-connection path and when a connection's count changes), of srcSets
// sets of srcWays entries: MaxTrackedSources sources in about 1.5 MiB,
// allocated once (NewTracker). A spoofed flood cannot grow it: a new
// source takes an empty entry of its set, or the entry without held
// connections whose bucket is fullest (longest idle); an evicted source
// starts again with a full bucket. An entry that counts held connections
// is never evicted (its release must find it): when all of a set's entries
// hold connections, a new source of that set is let in uncounted (Admit's
// tracked is false), because refusing would let a flood that pinned the
// set refuse every real client that hashes there.
const (
	srcShards         = 64
	srcSets           = 128
	srcWays           = 8
	MaxTrackedSources = srcShards * srcSets * srcWays
)

type srcEntry struct {
	id    Source // fam 0: an empty entry
	tat   int64  // GCRA: when the bucket will be full again, the caller's clock
	conns int32
}

type srcShard struct {
	mu   sync.Mutex // guards sets, and the held flag (Hold) of each connection of this shard's sources
	sets [srcSets][srcWays]srcEntry
	_    [56]byte
}

// Tracker is the per-source counter; see above.
type Tracker struct {
	shards [srcShards]srcShard
	seed   [2]uint64
}

// NewTracker allocates an empty tracker under a fresh random seed.
func NewTracker() *Tracker {
	t := &Tracker{}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("defence: no randomness for the source tracker's seed: " + err.Error())
	}
	t.seed[0] = binary.LittleEndian.Uint64(b[:]) | 1
	t.seed[1] = binary.LittleEndian.Uint64(b[8:]) | 1
	return t
}

// set finds id's shard and set; the seed keeps an attacker from aiming
// sources at one set. The hash is wyhash's multiply-mix, as nat's table's.
func (t *Tracker) set(id Source) (*srcShard, *[srcWays]srcEntry) {
	hi, lo := bits.Mul64(id.key^t.seed[0], t.seed[1]^uint64(id.fam))
	h := hi ^ lo
	sh := &t.shards[h>>58]
	return sh, &sh.sets[(h>>32)%srcSets]
}

// entry finds id's entry in its set or, if make is set, takes one for it.
// Caller holds the shard's lock.
func entry(set *[srcWays]srcEntry, id Source, make bool) *srcEntry {
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

// Admit checks a new connection from id at now (nanoseconds on any clock
// the caller keeps monotonic) against l and takes a token from its bucket.
// It answers OK, RateLimit or ConnLimit; tracked is false when id's set is
// full of entries holding connections, so that it is let in uncounted.
func (t *Tracker) Admit(id Source, now int64, l SourceLimits) (r Reason, tracked bool) {
	sh, set := t.set(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := entry(set, id, true)
	if e == nil {
		return OK, false
	}
	if l.Conns > 0 && int(e.conns) >= l.Conns {
		return ConnLimit, true
	}
	if l.CPS > 0 {
		// GCRA: each connection moves the bucket's full-again time on by
		// one interval; more than a second's worth ahead of now is over.
		interval := int64(time.Second) / int64(l.CPS)
		tat := max(e.tat, now) + interval
		if tat-now > interval*int64(l.CPS) {
			return RateLimit, true
		}
		e.tat = tat
	}
	return OK, true
}

// Open counts a new connection from id; false if id has no entry to
// count it in. A connection Open counted is held (see Hold).
func (t *Tracker) Open(id Source) bool {
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

// Hold brings a connection's count at id in line with holding, which says
// whether the client holds the connection (by its state: not closed,
// lingering or released). held is the connection's record of whether t
// counts it now (true after Open): read and written under the source's
// shard lock only, here. The caller calls Hold after each change of state
// that crosses the line; holding is called under the lock, so however the
// calls of racing changes interleave the last one sees the last state. A
// connection that stopped being counted while its source's set was full of
// held ones, so that it has no entry to count in when it is held again,
// stays uncounted (as a new one would be).
func (t *Tracker) Hold(id Source, held *bool, holding func() bool) {
	sh, set := t.set(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	want := holding()
	if want == *held {
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
	*held = want
}

// Conns is how many held connections the tracker counts from id.
func (t *Tracker) Conns(id Source) int32 {
	sh, set := t.set(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := entry(set, id, false); e != nil {
		return e.conns
	}
	return 0
}
