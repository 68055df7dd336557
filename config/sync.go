package config

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"time"

	"github.com/tapvs/tapvs/clusterauth"
	"github.com/tapvs/tapvs/connsync"
)

// Sync is the sync: section: connection sync between the instances of a
// cluster (package connsync), so that a survivor continues the
// connections of an instance that died. It is a section of its own, not
// part of handoff: or bgp:, because it has what those do not: an instance
// id that every record and datagram carries (peers are listed with
// theirs), keys with ids (two live while the key is rotated), and a
// socket of its own, so that one can be turned on without the other.
type Sync struct {
	Listen netip.AddrPort  // this instance's UDP address (its peers list it)
	ID     connsync.PeerID // this instance's id, 1-65535, unique in the cluster
	Peers  []connsync.Peer // every other instance: its listen address and id
	Keys   []connsync.Key  // the first signs; all are accepted
	Rate   int             // UPDATE and COPY datagrams a second, each to every peer
	// JoinTimeout bounds how long a starting instance waits for its
	// peers' full copies before it announces its routes anyway.
	JoinTimeout time.Duration
}

// rawSync mirrors the sync: section.
type rawSync struct {
	Listen string        `mapstructure:"listen"`
	ID     *int          `mapstructure:"id"`
	Peers  []rawSyncPeer `mapstructure:"peers"`
	Keys   []rawSyncKey  `mapstructure:"keys"`
	Rate   *int          `mapstructure:"rate"`
	// JoinTimeout is a duration's text ("10s"); "" is the default.
	JoinTimeout string `mapstructure:"join_timeout"`
}

type rawSyncPeer struct {
	Address string `mapstructure:"address"`
	ID      *int   `mapstructure:"id"`
}

type rawSyncKey struct {
	ID  *int   `mapstructure:"id"`
	Key string `mapstructure:"key"`
}

const (
	defaultSyncRate = 10000 // connsync's default
	maxSyncRate     = 1000000
	maxSyncKeys     = 2 // the key in use and the next (or the last) while rotated
	// DefaultJoinTimeout is sync.join_timeout's default: room for a
	// copy of some hundred thousand connections at the default rate,
	// and for a copy asked again after one was lost (connsync's
	// CopyTimeout, 1 s).
	DefaultJoinTimeout = 10 * time.Second
)

// joinRange is sync.join_timeout's: at least a peer's HELLO interval
// twice over (a shorter wait would announce before the peers are heard),
// at most 10 minutes.
var joinRange = span{time.Second, 10 * time.Minute, "from 1s to 10m"}

// readSync reads the sync: section (nil when absent).
func readSync(e *errs, r *rawSync) *Sync {
	if r == nil {
		return nil
	}
	const f = "sync"
	c := &Sync{Rate: defaultSyncRate, JoinTimeout: DefaultJoinTimeout}
	if ap, err := netip.ParseAddrPort(r.Listen); err != nil {
		e.add(f+".listen", listenWords, r.Listen)
	} else {
		c.Listen = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	c.ID = syncID(e, f+".id", r.ID)
	for i, p := range r.Peers {
		pf := fmt.Sprintf("%s.peers[%d]", f, i)
		ap, err := netip.ParseAddrPort(p.Address)
		if err != nil {
			e.add(pf+".address", handoffPeerWords, p.Address)
		}
		c.Peers = append(c.Peers, connsync.Peer{Addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ID: syncID(e, pf+".id", p.ID)})
	}
	for i, k := range r.Keys {
		kf := fmt.Sprintf("%s.keys[%d]", f, i)
		key := connsync.Key{}
		if k.ID == nil || *k.ID < 0 || *k.ID > 255 {
			e.add(kf+".id", "%s is not a key id 0-255", intText(k.ID))
		} else {
			key.ID = uint8(*k.ID)
		}
		if s, err := hex.DecodeString(k.Key); err != nil || len(s) != clusterauth.KeyLen {
			e.add(kf+".key", keyWords, 2*clusterauth.KeyLen, clusterauth.KeyLen)
		} else {
			key.Secret = s
		}
		c.Keys = append(c.Keys, key)
	}
	if r.Rate != nil {
		c.Rate = *r.Rate
	}
	if r.JoinTimeout != "" {
		c.JoinTimeout = duration(e, f+".join_timeout", r.JoinTimeout, joinRange)
	}
	return c
}

func syncID(e *errs, f string, v *int) connsync.PeerID {
	if v == nil || *v < 1 || *v > 65535 {
		e.add(f, "%s is not an instance id 1-65535", intText(v))
		return 0
	}
	return connsync.PeerID(*v)
}

func intText(v *int) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprint(*v)
}

// checkSync checks a sync: section (nil: none) that readSync read or a
// program built.
func checkSync(e *errs, c *Sync) {
	if c == nil {
		return
	}
	const f = "sync"
	if a := c.Listen.Addr(); c.Listen.Port() == 0 || !unicast(a) {
		e.add(f+".listen", "%s is not ip:port of a unicast address (this instance's, as its peers list it)", c.Listen)
	}
	if c.ID == 0 {
		e.add(f+".id", "0 is not an instance id 1-65535")
	}
	peerCount(e, f+".peers", len(c.Peers), "the other instances' listen addresses and ids")
	addrs, ids := map[netip.AddrPort]int{}, map[connsync.PeerID]int{}
	for i, p := range c.Peers {
		pf := fmt.Sprintf("%s.peers[%d]", f, i)
		switch j, dup := addrs[p.Addr]; {
		case p.Addr.Port() == 0 || !unicast(p.Addr.Addr()):
			e.add(pf+".address", handoffPeerWords, p.Addr)
		case p.Addr == c.Listen:
			e.add(pf+".address", "%s is this instance's own listen address", p.Addr)
		case dup:
			e.add(pf+".address", "%s is peers[%d]'s too", p.Addr, j)
		}
		addrs[p.Addr] = i
		switch j, dup := ids[p.ID]; {
		case p.ID == 0:
			e.add(pf+".id", "0 is not an instance id 1-65535")
		case p.ID == c.ID:
			e.add(pf+".id", "%d is this instance's own id", p.ID)
		case dup:
			e.add(pf+".id", "%d is peers[%d]'s too", p.ID, j)
		}
		ids[p.ID] = i
	}
	if len(c.Keys) == 0 || len(c.Keys) > maxSyncKeys {
		e.add(f+".keys", "%d keys: 1 or %d (the first signs; a second is accepted while the key is rotated)", len(c.Keys), maxSyncKeys)
	}
	kids := map[uint8]int{}
	for i, k := range c.Keys {
		kf := fmt.Sprintf("%s.keys[%d]", f, i)
		if j, dup := kids[k.ID]; dup {
			e.add(kf+".id", "%d is keys[%d]'s too", k.ID, j)
		}
		kids[k.ID] = i
		if len(k.Secret) != clusterauth.KeyLen {
			e.add(kf+".key", keyWords, 2*clusterauth.KeyLen, clusterauth.KeyLen)
		}
	}
	if c.Rate < 1 || c.Rate > maxSyncRate {
		e.add(f+".rate", "%d is out of range 1-%d datagrams a second", c.Rate, maxSyncRate)
	}
	joinRange.check(e, f+".join_timeout", c.JoinTimeout)
}

// CookieSecret is the secret SYNPROXY's cookie keys derive from
// (nat.Config.CookieSecret): in a cluster, the key connection sync signs
// with, else the handoff's key, so that every instance checks the cookies
// the others made; nil on an instance with neither (random keys). Both
// sections are restart-only, so the keys never change under a running
// balancer.
func (c *Config) CookieSecret() []byte {
	switch {
	case c.Sync != nil && len(c.Sync.Keys) > 0:
		return c.Sync.Keys[0].Secret
	case c.Handoff != nil:
		return c.Handoff.Key
	}
	return nil
}
