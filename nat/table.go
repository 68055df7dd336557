package nat

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The connection table is split into shards, each with its own lock, so that
// readers of different queues (and the two directions of one connection, which
// hash to different shards) rarely meet on a lock. Lookups take a read lock.
const shardBits = 8

type shard struct {
	mu sync.RWMutex
	m  map[tupleKey]*Conn
	_  [64 - 8 - 24]byte // keep shards on their own cache lines
}

// Table holds connections by both of their keys.
type Table struct {
	shards [1 << shardBits]shard
	count  atomic.Int64
	max    int64
	now    atomic.Int64 // coarse clock in ns, set by Tick
	epoch  time.Time
}

func newTable(max int) *Table {
	t := &Table{max: int64(max), epoch: time.Now()}
	for i := range t.shards {
		t.shards[i].m = make(map[tupleKey]*Conn)
	}
	return t
}

func (k *tupleKey) shard() int {
	h := binary.BigEndian.Uint32(k.src[12:]) ^ binary.BigEndian.Uint32(k.src[8:])*31 ^
		binary.BigEndian.Uint32(k.dst[12:])*17 ^ binary.BigEndian.Uint32(k.dst[0:])*7 ^
		(uint32(k.sport)<<16 | uint32(k.dport)) ^ uint32(k.proto)
	h *= 2654435761
	return int(h >> (32 - shardBits))
}

func (t *Table) lookup(k *tupleKey) *Conn {
	s := &t.shards[k.shard()]
	s.mu.RLock()
	c := s.m[*k]
	s.mu.RUnlock()
	return c
}

// insert adds c under k unless k is taken; it returns the holder of k.
func (t *Table) insert(k *tupleKey, c *Conn) *Conn {
	s := &t.shards[k.shard()]
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[*k]; ok {
		return old
	}
	s.m[*k] = c
	return c
}

func (t *Table) remove(k *tupleKey, c *Conn) {
	s := &t.shards[k.shard()]
	s.mu.Lock()
	if s.m[*k] == c {
		delete(s.m, *k)
	}
	s.mu.Unlock()
}

// Len is the number of connections.
func (t *Table) Len() int { return int(t.count.Load()) }

// Tick advances the table's clock to the real time.
func (t *Table) Tick() { t.now.Store(int64(time.Since(t.epoch))) }

// expired collects the connections whose deadline has passed, one shard at a
// time, so that packets are held up by at most one shard's scan.
func (t *Table) expired(now int64, out []*Conn) []*Conn {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for k, c := range s.m {
			// Each connection is seen under both keys; collect it once.
			if k == c.in && c.deadline.Load() <= now {
				out = append(out, c)
			}
		}
		s.mu.RUnlock()
	}
	return out
}

// ConnInfo is a snapshot of one connection, for listings (ipvsadm -lnc).
type ConnInfo struct {
	Protocol Protocol
	State    string
	Expires  time.Duration
	Client   netip.AddrPort
	VIP      netip.AddrPort
	LIP      netip.AddrPort
	RIP      netip.AddrPort
}

func addrPort(a addr16, p uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), p)
}

// Conns returns a snapshot of every connection.
func (t *Table) Conns() []ConnInfo {
	now := t.now.Load()
	var out []ConnInfo
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for k, c := range s.m {
			if k != c.in {
				continue
			}
			st := "UDP"
			if c.in.proto == TCP {
				st = StateName(c.state.Load())
			}
			out = append(out, ConnInfo{
				Protocol: c.in.proto,
				State:    st,
				Expires:  time.Duration(max(c.deadline.Load()-now, 0)),
				Client:   addrPort(c.in.src, c.in.sport),
				VIP:      addrPort(c.in.dst, c.in.dport),
				LIP:      addrPort(c.out.dst, c.out.dport),
				RIP:      addrPort(c.out.src, c.out.sport),
			})
		}
		s.mu.RUnlock()
	}
	return out
}
