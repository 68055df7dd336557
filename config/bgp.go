package config

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/bgp"
	"github.com/tapvs/tapvs/handoff"
)

// rawBGP mirrors the bgp: section. Absent, tapvs announces nothing.
type rawBGP struct {
	ASN          int64     `mapstructure:"asn"`
	RouterID     string    `mapstructure:"router_id"`
	HoldTime     string    `mapstructure:"hold_time"`
	Keepalive    string    `mapstructure:"keepalive"`
	ConnectRetry string    `mapstructure:"connect_retry"`
	NextHop      string    `mapstructure:"next_hop"`
	NextHop6     string    `mapstructure:"next_hop6"`
	Communities  []string  `mapstructure:"communities"`
	MED          *int64    `mapstructure:"med"`
	AnnounceLIPs *bool     `mapstructure:"announce_lips"`
	Peers        []rawPeer `mapstructure:"peers"`
}

type rawPeer struct {
	Address      string `mapstructure:"address"`
	ASN          int64  `mapstructure:"asn"`
	Port         *int   `mapstructure:"port"`
	LocalAddress string `mapstructure:"local_address"`
	Password     string `mapstructure:"password"`
}

// The bgp: section's defaults. The timers are a data centre's (FRR's
// "datacenter" profile: 3 s keepalive, 9 s hold), not RFC 4271's 30/90: a
// hung instance is withdrawn by the hold timer, and 90 s of a dead next
// hop is 90 s of broken connections. A session the kernel closes (SIGKILL,
// a crash) is withdrawn at once whatever the timers.
const (
	defaultHoldTime     = 9 * time.Second
	defaultConnectRetry = 5 * time.Second
	maxPeers            = 64
	maxCommunities      = 32
)

// bgpConfig validates the bgp: section (nil when absent).
func bgpConfig(e *errs, r *rawBGP) *bgp.Config {
	if r == nil {
		return nil
	}
	const f = "bgp"
	c := &bgp.Config{AnnounceLIPs: r.AnnounceLIPs == nil || *r.AnnounceLIPs}
	c.ASN = asn(e, f+".asn", r.ASN)
	if a, err := netip.ParseAddr(r.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
		e.add(f+".router_id", "%q is not an IPv4 address (BGP's identifier is one, even for an IPv6-only speaker)", r.RouterID)
	} else {
		c.RouterID = a
	}
	c.HoldTime = bgpTimer(e, f+".hold_time", r.HoldTime, defaultHoldTime, 3*time.Second, 65535*time.Second)
	c.Keepalive = bgpTimer(e, f+".keepalive", r.Keepalive, c.HoldTime/3, time.Second, 21845*time.Second)
	if c.Keepalive > c.HoldTime/3 && r.Keepalive != "" {
		e.add(f+".keepalive", "%s is more than a third of hold_time %s: a single lost keepalive would end the session", c.Keepalive, c.HoldTime)
	}
	c.ConnectRetry = bgpTimer(e, f+".connect_retry", r.ConnectRetry, defaultConnectRetry, time.Second, time.Hour)
	c.NextHop = nextHop(e, f+".next_hop", r.NextHop, true)
	c.NextHop6 = nextHop(e, f+".next_hop6", r.NextHop6, false)
	if len(r.Communities) > maxCommunities {
		e.add(f+".communities", "%d communities: at most %d", len(r.Communities), maxCommunities)
	}
	for i, s := range r.Communities {
		if v, ok := community(s); ok {
			c.Communities = append(c.Communities, v)
		} else {
			e.add(fmt.Sprintf("%s.communities[%d]", f, i), "%q is not a community ASN:VALUE, each 0-65535", s)
		}
	}
	if r.MED != nil {
		if *r.MED < 0 || *r.MED > 1<<32-1 {
			e.add(f+".med", "%d is out of range 0-4294967295", *r.MED)
		} else {
			c.MED, c.HasMED = uint32(*r.MED), true
		}
	}
	peerCount(e, f+".peers", len(r.Peers), "bgp: needs at least one router to announce to")
	seen := map[netip.Addr]int{}
	for i, rp := range r.Peers {
		pf := fmt.Sprintf("%s.peers[%d]", f, i)
		p := peer(e, pf, rp)
		if j, dup := seen[p.Address]; dup && p.Address.IsValid() {
			e.add(pf+".address", "%s is peers[%d]'s address too", p.Address, j)
		}
		seen[p.Address] = i
		c.Peers = append(c.Peers, p)
	}
	return c
}

// peerCount refuses a peers list that is empty (saying what it needs) or
// longer than maxPeers.
func peerCount(e *errs, f string, n int, need string) {
	if n == 0 {
		e.add(f, "no peer: %s", need)
	}
	if n > maxPeers {
		e.add(f, "%d peers: at most %d", n, maxPeers)
	}
}

func peer(e *errs, f string, r rawPeer) bgp.Peer {
	var p bgp.Peer
	if a, err := netip.ParseAddr(r.Address); err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
		e.add(f+".address", "%q is not a unicast IP address", r.Address)
	} else {
		p.Address = a.Unmap()
	}
	p.ASN = asn(e, f+".asn", r.ASN)
	p.Port = 179
	if r.Port != nil {
		p.Port, _ = port(e, f+".port", *r.Port)
	}
	if r.LocalAddress != "" {
		if a, err := netip.ParseAddr(r.LocalAddress); err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			e.add(f+".local_address", "%q is not a unicast IP address", r.LocalAddress)
		} else if p.Address.IsValid() && a.Unmap().Is4() != p.Address.Is4() {
			e.add(f+".local_address", "%s is not of the peer's family", a)
		} else {
			p.LocalAddress = a.Unmap()
		}
	}
	// TCP-MD5 keys are at most 80 bytes (Linux's TCP_MD5SIG_MAXKEYLEN).
	if len(r.Password) > 80 {
		e.add(f+".password", "%d bytes: a TCP-MD5 key is at most 80", len(r.Password))
	}
	p.Password = r.Password
	return p
}

// asn reads a 4-byte AS number (RFC 6793); 0 and 23456 (AS_TRANS) are not
// an AS of one's own.
func asn(e *errs, f string, v int64) uint32 {
	if v < 1 || v > 1<<32-1 || v == 23456 {
		e.add(f, "%d is not an AS number 1-4294967295 (other than 23456, AS_TRANS)", v)
		return 0
	}
	return uint32(v)
}

// bgpTimer reads a BGP timer: whole seconds, as the protocol carries them.
func bgpTimer(e *errs, f, s string, def, lo, hi time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < lo || d > hi || d%time.Second != 0 {
		e.add(f, "%q is not whole seconds from %s to %s", s, lo, hi)
		return def
	}
	return d
}

func nextHop(e *errs, f, s string, four bool) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	family := "IPv6"
	if four {
		family = "IPv4"
	}
	if err != nil || a.Zone() != "" || a.Is4() != four || a.IsUnspecified() || a.IsMulticast() {
		e.add(f, "%q is not a unicast %s address", s, family)
		return netip.Addr{}
	}
	return a
}

// community reads a standard community (RFC 1997) written ASN:VALUE.
func community(s string) (uint32, bool) {
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, false
	}
	a, err1 := strconv.ParseUint(hi, 10, 16)
	b, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return uint32(a)<<16 | uint32(b), true
}

// rawHandoff mirrors the handoff: section. Absent, a client segment that no
// connection here holds is dropped (not_syn), as on one box.
type rawHandoff struct {
	Listen string   `mapstructure:"listen"`
	Peers  []string `mapstructure:"peers"`
	Key    string   `mapstructure:"key"`
	Rate   *int     `mapstructure:"rate"`
}

// defaultHandoffRate is frames handed over per second at most: a moved
// bulk upload at a few hundred Mbit/s fits; a flood of segments no instance
// holds costs each peer at most this.
const defaultHandoffRate = 100000

// handoffConfig validates the handoff: section (nil when absent).
func handoffConfig(e *errs, r *rawHandoff) *handoff.Config {
	if r == nil {
		return nil
	}
	const f = "handoff"
	c := &handoff.Config{Rate: defaultHandoffRate}
	if ap, err := netip.ParseAddrPort(r.Listen); err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().IsMulticast() {
		e.add(f+".listen", "%q is not ip:port (this instance's address, as its peers list it)", r.Listen)
	} else {
		c.Listen = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	peerCount(e, f+".peers", len(r.Peers), "the other instances' listen addresses")
	seen := map[netip.AddrPort]int{}
	for i, s := range r.Peers {
		pf := fmt.Sprintf("%s.peers[%d]", f, i)
		ap, err := netip.ParseAddrPort(s)
		if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
			e.add(pf, "%q is not ip:port of a unicast address", s)
			continue
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if ap == c.Listen {
			e.add(pf, "%s is this instance's own listen address", ap)
		}
		if j, dup := seen[ap]; dup {
			e.add(pf, "%s is peers[%d] too", ap, j)
		}
		seen[ap] = i
		c.Peers = append(c.Peers, ap)
	}
	if k, err := hex.DecodeString(r.Key); err != nil || len(k) != handoff.KeyLen {
		e.add(f+".key", "is not %d hex digits (%d bytes, the cluster's shared key: `openssl rand -hex 32`)", 2*handoff.KeyLen, handoff.KeyLen)
	} else {
		c.Key = k
	}
	if r.Rate != nil {
		if *r.Rate < 1 || *r.Rate > 10000000 {
			e.add(f+".rate", "%d is out of range 1-10000000 frames a second", *r.Rate)
		} else {
			c.Rate = *r.Rate
		}
	}
	return c
}
