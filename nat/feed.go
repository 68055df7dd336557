package nat

import (
	"sync"
	"sync/atomic"

	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/wire"
)

// The change feed tells connection sync (the daemon's, package connsync)
// which of this instance's own connections changed, so that it sends
// their records to the peers: a connection that reaches ESTABLISHED (the
// open record; a half-open handshake is not synced, as in LVS), each later
// state step (FIN_WAIT, CLOSE_WAIT, ...) and its end (a tombstone). An
// open record of a persistent service's connection is followed by its
// template's, as IPVS syncs a connection's controlling template. The
// data path pays nothing per packet for it: a state step, a few per
// connection, bumps the connection's version and puts its pointer on a
// bounded ring, once (a queued bit coalesces the steps made before the
// drain); the daemon's sync goroutine drains the rings (DrainChanges) and
// builds the records there. A full ring drops the change and counts it
// (Stats.FeedDropped): the next step or a full copy repairs it.
//
// Only connections this instance owns are fed: those on a LIP of its own
// (made here, or imported onto one: a takeover's table, a peer's copy of
// what this instance held before it restarted), and shadows it adopted. A
// peer's connection imported as a shadow (its LIP a backup one) sends
// nothing, its owner does, until a real server's segment of it arrives
// here: the router sends the LIP's replies to a backup only once its
// owner is gone, so this instance adopts it (adopt) and sends it from then
// on, with a newer version, to the other survivors.

// feedShards spreads the rings' locks: a state step takes one of them.
const feedShards = 16

// changeFeed is the rings of changed connections.
type changeFeed struct {
	shards  [feedShards]feedShard
	dropped atomic.Uint64
}

// feedShard is one ring.
type feedShard struct {
	mu    sync.Mutex // guards ring; spare is the drainer's alone
	ring  []*Conn
	spare []*Conn
	_     [40]byte // its own cache line
}

func newChangeFeed(perShard int) *changeFeed {
	f := &changeFeed{}
	for i := range f.shards {
		f.shards[i].ring = make([]*Conn, 0, perShard)
		f.shards[i].spare = make([]*Conn, 0, perShard)
	}
	return f
}

// push files c as changed, once until it is drained. It bumps the
// connection's version: the record the drain builds is newer than any its
// peers hold.
func (f *changeFeed) push(c *Conn) {
	c.version.Add(1)
	if !c.queued.CompareAndSwap(false, true) {
		return
	}
	s := &f.shards[uint32(c.in.sport)%feedShards]
	s.mu.Lock()
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, c)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	c.queued.Store(false)
	f.dropped.Add(1)
}

// changed is a state step of c from old to state (the step made): an
// ESTABLISHED connection, and every later step of one, is fed.
func (c *Conn) changed(state uint32) {
	if c.feed != nil && !c.shadow.Load() && (state == stEstablished || c.version.Load() != 0) {
		c.feed.push(c)
	}
}

// owned reports whether c is fed and its open record was.
func (c *Conn) owned() bool { return c.feed != nil && !c.shadow.Load() && c.version.Load() != 0 }

// adopt makes shadow c this instance's own, once: fed from now on, and at
// once. The caller checked c.feed.
func (b *Balancer) adopt(c *Conn) {
	if c.shadow.CompareAndSwap(true, false) {
		b.Stats.adopted.Add(1)
		c.feed.push(c)
	}
}

// closed is c's end: fed if its open record was.
func (c *Conn) closed() {
	if c.feed != nil && !c.shadow.Load() && c.version.Load() != 0 {
		c.feed.push(c)
	}
}

// DrainChanges calls yield with the record of every connection the feed
// holds (an open record, or a tombstone for one taken off the table) and
// empties it. The record is DrainChanges's own, written again for the
// next one: yield copies what it keeps. One goroutine at a time (the
// daemon's sync goroutine); it runs alongside the packet path. Without a
// feed (Config.SyncFeed 0) it does nothing.
func (b *Balancer) DrainChanges(yield func(*connrec.Record)) {
	f := b.feed
	if f == nil {
		return
	}
	var r connrec.Record
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		s.ring, s.spare = s.spare, s.ring
		s.mu.Unlock()
		for k, c := range s.spare {
			s.spare[k] = nil
			c.queued.Store(false) // before the read: a step after it is fed again
			if c.record(&r, b.table.now.Load()) {
				// A peer's takeover record carries this box's next hop;
				// a peer's is its own (Conn.clientMAC).
				r.Ext &^= connrec.ExtNextHop
				r.NextHop = [6]byte{}
				yield(&r)
				// Its persistence template after it, as IPVS's
				// ip_vs_sync_conn sends a connection's controlling
				// template: a peer that takes the client over keeps
				// its server (tmplrec.go).
				if t := c.tmpl; t != nil {
					if vip, vport, ok := b.tmplPort(t.svc); ok && t.record(&r, t.svc, vip, vport, t.svc.Persistence().Timeout, b.table.now.Load()) {
						yield(&r)
					}
				}
			} else if c.state.Load() == stDead {
				c.tombstone(&r)
				yield(&r)
			}
		}
		s.spare = s.spare[:0]
	}
}

// tombstone writes c's closed record into r.
func (c *Conn) tombstone(r *connrec.Record) {
	*r = connrec.Record{
		Kind: connrec.KindClosed, Proto: uint8(c.in.proto), State: connrec.StateClose,
		ClientAddr: connrec.ClientAddr(c.clientAddr), Version: c.version.Load(),
		Client: c.in.src, VIP: c.in.dst, LIP: c.out.dst, Server: c.out.src,
		CPort: c.in.sport, VPort: c.in.dport, LPort: c.out.dport, RPort: c.out.sport,
	}
	if c.in.proto != TCP {
		r.State = connrec.StateEstablished
	}
	if !wire.Is4(&c.in.src) {
		r.Flags |= connrec.FlagClient6
	}
	if !wire.Is4(&c.out.src) {
		r.Flags |= connrec.FlagServer6
	}
	if c.sp != nil {
		r.Flags |= connrec.FlagSynproxy
	}
	if c.timestamps == TimestampsRemove {
		r.Flags |= connrec.FlagTSRemove
	}
}

// FeedDropped is how many changes the feed dropped, its ring full.
func (b *Balancer) FeedDropped() uint64 {
	if b.feed == nil {
		return 0
	}
	return b.feed.dropped.Load()
}

// RefreshShards is how many shards the table has: Refresh walks them.
const RefreshShards = 1 << shardBits

// Refresh feeds again every connection made here whose open record was
// fed and which is still ESTABLISHED, in table shard i (0 to
// RefreshShards-1): a peer's shadow lives only as long as the lifetime
// its record gave it, so an established connection whose state does not
// step is sent again before its shadows expire (and a record lost on the
// way is repaired). The daemon walks the shards one after another, the
// whole table once per refresh interval. Without a feed it does nothing.
func (b *Balancer) Refresh(i int) {
	if b.feed == nil {
		return
	}
	s := &b.table.shards[i%RefreshShards]
	var conns []*Conn
	s.mu.RLock()
	for h, c := range s.m {
		if b.table.hash(&c.in) == h && c.owned() && c.state.Load() == stEstablished {
			conns = append(conns, c)
		}
	}
	for k, c := range s.overflow {
		if k == c.in && c.owned() && c.state.Load() == stEstablished {
			conns = append(conns, c)
		}
	}
	s.mu.RUnlock()
	for _, c := range conns {
		b.feed.push(c)
	}
}
