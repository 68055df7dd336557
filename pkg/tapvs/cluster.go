package tapvs

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/tapvs/tapvs/bgp"
	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/control/api"
)

// BGP has tapvs announce its VIPs (those with a real server that can take
// connections) and its local addresses to routers, as a /32 or /128 each:
// the configuration file's bgp: section. tapvs dials the peers from the
// caller's network namespace.
type BGP struct {
	ASN      uint32
	RouterID netip.Addr // an IPv4 address, as BGP's identifier is
	Peers    []BGPPeer  // at least one
	// ConnectRetry is how long tapvs waits between attempts to reach a
	// peer; 0 is the file's default (5s).
	ConnectRetry time.Duration
	// NoLocalAddrs announces the VIPs only (announce_lips: false).
	NoLocalAddrs bool
}

// BGPPeer is a router tapvs announces to.
type BGPPeer struct {
	Addr      netip.Addr
	ASN       uint32
	Port      uint16     // 0 is 179
	LocalAddr netip.Addr // the address tapvs dials from; zero: the kernel's choice
	Password  string     // TCP-MD5; "" is none
}

// config is b as the file's bgp: section reads: config.DefaultBGP with
// b's values.
func (b *BGP) config() bgp.Config {
	c := config.DefaultBGP()
	c.ASN, c.RouterID, c.AnnounceLIPs = b.ASN, b.RouterID, !b.NoLocalAddrs
	if b.ConnectRetry != 0 {
		c.ConnectRetry = b.ConnectRetry
	}
	for _, p := range b.Peers {
		port := p.Port
		if port == 0 {
			port = config.DefaultBGPPort
		}
		// Unmapped, as the file's addresses are read.
		c.Peers = append(c.Peers, bgp.Peer{Address: p.Addr.Unmap(), ASN: p.ASN, Port: port, LocalAddress: p.LocalAddr.Unmap(), Password: p.Password})
	}
	return c
}

// ErrNoBGP is LB.BGP's error for a tapvs started without Config.BGP.
var ErrNoBGP = errors.New("tapvs: no BGP (Config.BGP not set)")

// BGPStatus is the BGP speaker now.
type BGPStatus struct {
	ASN      uint32
	RouterID netip.Addr
	Peers    []BGPPeerStatus
	Routes   []BGPRoute
	// Announced and Withdrawn count route changes since start, each
	// prefix once per change whatever the number of peers.
	Announced, Withdrawn uint64
	Draining             bool
}

// BGPPeerStatus is one router's session.
type BGPPeerStatus struct {
	Addr netip.Addr
	ASN  uint32
	// State is RFC 4271's, lower case: idle, connect, active, opensent,
	// openconfirm, established.
	State     string
	Since     time.Time // when the session entered State (to the second)
	Changes   uint64    // state changes
	Sessions  uint64    // sessions that came up (established)
	Received  uint64    // BGP messages
	Sent      uint64
	LastError string // why the last session ended; "" if none
}

// Established says whether the session is up.
func (p BGPPeerStatus) Established() bool { return p.State == "established" }

// BGPRoute is a prefix tapvs announces.
type BGPRoute struct {
	Prefix netip.Prefix
	// LocalAddr is true for a local address's route (kept during a
	// drain), false for a VIP's.
	LocalAddr bool
	// Backup is, for another instance's local address announced as its
	// backup (Config.BGP.BackupLIPs), this instance's rank; 0 for its own.
	Backup int
	Since  time.Time
}

// Drain is how a drain stands: while it is on, the VIPs are withdrawn
// from every BGP peer and the connections tapvs holds go on.
type Drain struct {
	Draining bool
	Since    time.Time // when the drain began; zero when off
	Conns    int       // connections in the table
	// Empty is true once a drain has no connection left: tapvs can be
	// closed without breaking any.
	Empty bool
	// Withdrawn are the VIPs the drain took back (none without BGP).
	Withdrawn []netip.Addr
}

// BGP reads the BGP speaker: its sessions and what it announces. Without
// Config.BGP it returns ErrNoBGP.
func (lb *LB) BGP() (BGPStatus, error) {
	b, ok := lb.d.Cluster().BGP()
	if !ok {
		return BGPStatus{}, ErrNoBGP
	}
	return bgpStatusOf(b)
}

// Drain withdraws the VIPs from every BGP peer, keeping the local
// addresses announced and the open connections going; DrainStatus tells
// when none is left. Without BGP it only counts the connections.
func (lb *LB) Drain() (Drain, error) {
	return lb.drain(func(c control.Cluster) api.Drain { return c.Drain(true) })
}

// Undrain ends a drain: the VIPs that can serve are announced again.
func (lb *LB) Undrain() (Drain, error) {
	return lb.drain(func(c control.Cluster) api.Drain { return c.Drain(false) })
}

// DrainStatus reads the drain without changing it.
func (lb *LB) DrainStatus() (Drain, error) {
	return lb.drain(func(c control.Cluster) api.Drain { return c.DrainStatus() })
}

func (lb *LB) drain(f func(control.Cluster) api.Drain) (Drain, error) {
	return drainOf(f(lb.d.Cluster()))
}

// The API's answers are tapvs's own text (addresses, RFC 3339 times); a
// field that does not read back is a tapvs bug, said as such.

func drainOf(a api.Drain) (d Drain, err error) {
	d = Drain{Draining: a.Draining, Conns: a.Conns, Empty: a.Empty, Withdrawn: []netip.Addr{}}
	if a.Since != "" {
		if d.Since, err = time.Parse(time.RFC3339, a.Since); err != nil {
			return Drain{}, fmt.Errorf("tapvs: drain: since: %w", err)
		}
	}
	for _, s := range a.Withdrawn {
		v, err := netip.ParseAddr(s)
		if err != nil {
			return Drain{}, fmt.Errorf("tapvs: drain: withdrawn VIP: %w", err)
		}
		d.Withdrawn = append(d.Withdrawn, v)
	}
	return d, nil
}

func bgpStatusOf(a api.BGP) (BGPStatus, error) {
	b := BGPStatus{ASN: a.ASN, Announced: a.Announced, Withdrawn: a.Withdrawn, Draining: a.Draining}
	var err error
	if b.RouterID, err = netip.ParseAddr(a.RouterID); err != nil {
		return BGPStatus{}, fmt.Errorf("tapvs: bgp: router id: %w", err)
	}
	for _, p := range a.Peers {
		ps := BGPPeerStatus{ASN: p.ASN, State: p.State, Changes: p.Changes, Sessions: p.Established, Received: p.Received, Sent: p.Sent, LastError: p.LastError}
		if ps.Addr, err = netip.ParseAddr(p.Address); err != nil {
			return BGPStatus{}, fmt.Errorf("tapvs: bgp: peer: %w", err)
		}
		if ps.Since, err = time.Parse(time.RFC3339, p.Since); err != nil {
			return BGPStatus{}, fmt.Errorf("tapvs: bgp: peer %s: since: %w", ps.Addr, err)
		}
		b.Peers = append(b.Peers, ps)
	}
	for _, r := range a.Routes {
		rt := BGPRoute{LocalAddr: r.Kind == "lip", Backup: r.Backup}
		if rt.Prefix, err = netip.ParsePrefix(r.Prefix); err != nil {
			return BGPStatus{}, fmt.Errorf("tapvs: bgp: route: %w", err)
		}
		if rt.Since, err = time.Parse(time.RFC3339, r.Since); err != nil {
			return BGPStatus{}, fmt.Errorf("tapvs: bgp: route %s: since: %w", rt.Prefix, err)
		}
		b.Routes = append(b.Routes, rt)
	}
	return b, nil
}
