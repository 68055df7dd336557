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
	ASN          int64  `mapstructure:"asn"`
	RouterID     string `mapstructure:"router_id"`
	HoldTime     string `mapstructure:"hold_time"`
	Keepalive    string `mapstructure:"keepalive"`
	ConnectRetry string `mapstructure:"connect_retry"`
	// GracefulRestart is RFC 4724's restart time: "" or 0 for off.
	GracefulRestart string      `mapstructure:"graceful_restart"`
	NextHop         string      `mapstructure:"next_hop"`
	NextHop6        string      `mapstructure:"next_hop6"`
	Communities     []string    `mapstructure:"communities"`
	MED             *int64      `mapstructure:"med"`
	AnnounceLIPs    *bool       `mapstructure:"announce_lips"`
	BackupLIPs      []rawBackup `mapstructure:"backup_lips"`
	Peers           []rawPeer   `mapstructure:"peers"`
}

// rawBackup is one of bgp.backup_lips: another instance's LIP and this
// instance's rank among its backups.
type rawBackup struct {
	Address string `mapstructure:"address"`
	Rank    *int   `mapstructure:"rank"`
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

// DefaultBGP is a bgp: section's defaults, before its ASN, router ID and
// peers: the data centre timers, LIPs announced. A peer's port is 179
// (DefaultBGPPort).
func DefaultBGP() bgp.Config {
	return bgp.Config{HoldTime: defaultHoldTime, Keepalive: defaultHoldTime / 3, ConnectRetry: defaultConnectRetry, AnnounceLIPs: true}
}

// DefaultBGPPort is a BGP peer's port unless one is given.
const DefaultBGPPort = 179

// The BGP timers' ranges: whole seconds, as the protocol carries them.
var (
	holdRange      = span{3 * time.Second, 65535 * time.Second, ""}
	keepaliveRange = span{time.Second, 21845 * time.Second, ""}
	retryBGPRange  = span{time.Second, time.Hour, ""}
	// RFC 4724's Restart Time is 12 bits of seconds.
	restartRange = span{time.Second, 4095 * time.Second, ""}
)

// readBGP reads the bgp: section (nil when absent) onto DefaultBGP.
func readBGP(e *errs, r *rawBGP) *bgp.Config {
	if r == nil {
		return nil
	}
	const f = "bgp"
	c := DefaultBGP()
	if r.AnnounceLIPs != nil {
		c.AnnounceLIPs = *r.AnnounceLIPs
	}
	c.ASN = readASN(e, f+".asn", r.ASN)
	if a, err := netip.ParseAddr(r.RouterID); err != nil {
		e.add(f+".router_id", routerIDWords, r.RouterID)
	} else {
		c.RouterID = a
	}
	c.HoldTime = bgpTimer(e, f+".hold_time", r.HoldTime, c.HoldTime, holdRange)
	c.Keepalive = bgpTimer(e, f+".keepalive", r.Keepalive, c.HoldTime/3, keepaliveRange)
	c.ConnectRetry = bgpTimer(e, f+".connect_retry", r.ConnectRetry, c.ConnectRetry, retryBGPRange)
	if d, err := time.ParseDuration(r.GracefulRestart); r.GracefulRestart != "" && (err != nil || d != 0) {
		c.GracefulRestart = bgpTimer(e, f+".graceful_restart", r.GracefulRestart, 0, restartRange)
	}
	c.NextHop = readNextHop(e, f+".next_hop", r.NextHop, true)
	c.NextHop6 = readNextHop(e, f+".next_hop6", r.NextHop6, false)
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
	for i, rp := range r.Peers {
		c.Peers = append(c.Peers, readPeer(e, fmt.Sprintf("%s.peers[%d]", f, i), rp))
	}
	for i, rb := range r.BackupLIPs {
		bf := fmt.Sprintf("%s.backup_lips[%d]", f, i)
		b := bgp.BackupLIP{Addr: readUnicast(e, bf+".address", rb.Address), Rank: 1}
		if rb.Rank != nil {
			b.Rank = *rb.Rank
		}
		c.BackupLIPs = append(c.BackupLIPs, b)
	}
	return &c
}

const (
	maxBackupLIPs = 1024
	rankWords     = "%d is not a backup rank 1-%d (1: the first backup, whose path wins once the owner's is gone)"
)

// checkBackups checks bgp.backup_lips against the instance's own LIPs
// (lips: address → the services[i] that lists it) and VIPs: a backup is
// another instance's LIP, never one of this one's addresses, and never on
// the server side's link (onLink, its IPv4 and IPv6 prefixes): there the
// real servers reach a LIP by ARP or neighbour discovery, not by the
// routes BGP steers, and this instance answering for it would take its
// owner's replies.
func checkBackups(e *errs, c *bgp.Config, lips map[netip.Addr]string, vips map[netip.Addr]string, onLink [2]netip.Prefix) {
	if c == nil {
		return
	}
	const f = "bgp"
	if len(c.BackupLIPs) > maxBackupLIPs {
		e.add(f+".backup_lips", "%d backup LIPs: at most %d", len(c.BackupLIPs), maxBackupLIPs)
	}
	if len(c.BackupLIPs) > 0 && !c.AnnounceLIPs {
		e.add(f+".backup_lips", "are announced as backups of other instances' LIPs: they need announce_lips (this instance's own LIPs announced as their owner)")
	}
	if len(c.BackupLIPs) > 0 && c.HasMED && uint64(c.MED)+uint64(bgp.BackupMED(bgp.MaxBackupRank)) > 1<<32-1 {
		e.add(f+".med", "%d: a backup's MED adds up to %d, past 4294967295", c.MED, bgp.BackupMED(bgp.MaxBackupRank))
	}
	seen := map[netip.Addr]int{}
	for i, b := range c.BackupLIPs {
		bf := fmt.Sprintf("%s.backup_lips[%d]", f, i)
		a := b.Addr.Unmap()
		if !unicast(a) {
			e.add(bf+".address", "%q is not a unicast IP address", b.Addr)
			continue
		}
		if b.Rank < 1 || b.Rank > bgp.MaxBackupRank {
			e.add(bf+".rank", rankWords, b.Rank, bgp.MaxBackupRank)
		}
		if svc, own := lips[a]; own {
			e.add(bf+".address", "%s is a LIP of this instance's own (%s): a backup LIP is another instance's", a, svc)
		}
		if svc, own := vips[a]; own {
			e.add(bf+".address", "%s is a VIP of this instance (%s)", a, svc)
		}
		for _, p := range onLink {
			if p.IsValid() && p.Contains(a) {
				e.add(bf+".address", "%s is on the server side's link (interfaces.server %s): the real servers reach it there without the routers, so its owner's replies would come here", a, p.Masked())
			}
		}
		if j, dup := seen[a]; dup {
			e.add(bf+".address", "%s is backup_lips[%d] too", a, j)
		}
		seen[a] = i
	}
}

const routerIDWords = "%q is not an IPv4 address (BGP's identifier is one, even for an IPv6-only speaker)"

// checkBGP checks a bgp: section (nil: none).
func checkBGP(e *errs, c *bgp.Config) {
	if c == nil {
		return
	}
	const f = "bgp"
	checkASN(e, f+".asn", int64(c.ASN))
	if a := c.RouterID; !a.Is4() || a.IsUnspecified() {
		e.add(f+".router_id", routerIDWords, a)
	}
	holdRange.checkWhole(e, f+".hold_time", c.HoldTime)
	// A keepalive given is whole seconds (bgpTimer); the default, a third
	// of the hold time, need not be.
	if k := c.Keepalive; k < keepaliveRange.lo || k > keepaliveRange.hi {
		e.add(f+".keepalive", "%q is not from %s to %s", k, keepaliveRange.lo, keepaliveRange.hi)
	}
	if c.Keepalive > c.HoldTime/3 {
		e.add(f+".keepalive", "%s is more than a third of hold_time %s: a single lost keepalive would end the session", c.Keepalive, c.HoldTime)
	}
	retryBGPRange.checkWhole(e, f+".connect_retry", c.ConnectRetry)
	if c.GracefulRestart != 0 {
		restartRange.checkWhole(e, f+".graceful_restart", c.GracefulRestart)
	}
	checkNextHop(e, f+".next_hop", c.NextHop, true)
	checkNextHop(e, f+".next_hop6", c.NextHop6, false)
	if len(c.Communities) > maxCommunities {
		e.add(f+".communities", "%d communities: at most %d", len(c.Communities), maxCommunities)
	}
	peerCount(e, f+".peers", len(c.Peers), "bgp: needs at least one router to announce to")
	seen := map[netip.Addr]int{}
	for i := range c.Peers {
		pf := fmt.Sprintf("%s.peers[%d]", f, i)
		p := &c.Peers[i]
		checkPeer(e, pf, p)
		if j, dup := seen[p.Address]; dup && p.Address.IsValid() {
			e.add(pf+".address", "%s is peers[%d]'s address too", p.Address, j)
		}
		seen[p.Address] = i
	}
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

func readPeer(e *errs, f string, r rawPeer) bgp.Peer {
	p := bgp.Peer{ASN: readASN(e, f+".asn", r.ASN), Port: DefaultBGPPort, Password: r.Password}
	p.Address = readUnicast(e, f+".address", r.Address)
	if r.Port != nil {
		p.Port, _ = port(e, f+".port", *r.Port)
	}
	if r.LocalAddress != "" {
		p.LocalAddress = readUnicast(e, f+".local_address", r.LocalAddress)
	}
	return p
}

// readUnicast reads a peer's or a local address, IPv4-mapped ones as IPv4.
func readUnicast(e *errs, f, s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		e.add(f, "%q is not a unicast IP address", s)
		return netip.Addr{}
	}
	return a.Unmap()
}

func unicast(a netip.Addr) bool {
	return a.IsValid() && a.Zone() == "" && !a.IsUnspecified() && !a.IsMulticast()
}

func checkPeer(e *errs, f string, p *bgp.Peer) {
	if !unicast(p.Address) {
		e.add(f+".address", "%q is not a unicast IP address", p.Address)
	}
	checkASN(e, f+".asn", int64(p.ASN))
	port(e, f+".port", int(p.Port))
	if l := p.LocalAddress; l.IsValid() {
		if !unicast(l) {
			e.add(f+".local_address", "%q is not a unicast IP address", l)
		} else if p.Address.IsValid() && l.Is4() != p.Address.Is4() {
			e.add(f+".local_address", "%s is not of the peer's family", l)
		}
	}
	// TCP-MD5 keys are at most 80 bytes (Linux's TCP_MD5SIG_MAXKEYLEN).
	if len(p.Password) > 80 {
		e.add(f+".password", "%d bytes: a TCP-MD5 key is at most 80", len(p.Password))
	}
}

// readASN reads a 4-byte AS number (RFC 6793), refusing one too wide
// before narrowing it.
func readASN(e *errs, f string, v int64) uint32 {
	if !checkASN(e, f, v) {
		return 0
	}
	return uint32(v)
}

// checkASN refuses what is not an AS of one's own: 0, 23456 (AS_TRANS),
// and what does not fit 4 bytes.
func checkASN(e *errs, f string, v int64) bool {
	if v < 1 || v > 1<<32-1 || v == 23456 {
		e.add(f, "%d is not an AS number 1-4294967295 (other than 23456, AS_TRANS)", v)
		return false
	}
	return true
}

// bgpTimer reads a BGP timer from the file (def if not given), refusing
// the text as given when it is not whole seconds in r.
func bgpTimer(e *errs, f, s string, def time.Duration, r span) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || !r.whole(d) {
		e.add(f, "%q is not whole seconds from %s to %s", s, r.lo, r.hi)
		return def
	}
	return d
}

func (r span) whole(d time.Duration) bool { return d >= r.lo && d <= r.hi && d%time.Second == 0 }

func (r span) checkWhole(e *errs, f string, d time.Duration) {
	if !r.whole(d) {
		e.add(f, "%q is not whole seconds from %s to %s", d, r.lo, r.hi)
	}
}

func readNextHop(e *errs, f, s string, four bool) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		e.add(f, "%q is not a unicast %s address", s, familyName(four))
	}
	return a
}

func checkNextHop(e *errs, f string, a netip.Addr, four bool) {
	if a.IsValid() && (a.Zone() != "" || a.Is4() != four || a.IsUnspecified() || a.IsMulticast()) {
		e.add(f, "%q is not a unicast %s address", a, familyName(four))
	}
}

func familyName(four bool) string {
	if four {
		return "IPv4"
	}
	return "IPv6"
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

// readHandoff reads the handoff: section (nil when absent).
func readHandoff(e *errs, r *rawHandoff) *handoff.Config {
	if r == nil {
		return nil
	}
	const f = "handoff"
	c := &handoff.Config{Rate: defaultHandoffRate}
	if ap, err := netip.ParseAddrPort(r.Listen); err != nil {
		e.add(f+".listen", listenWords, r.Listen)
	} else {
		c.Listen = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	for i, s := range r.Peers {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			e.add(fmt.Sprintf("%s.peers[%d]", f, i), handoffPeerWords, s)
		}
		c.Peers = append(c.Peers, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	if k, err := hex.DecodeString(r.Key); err != nil {
		e.add(f+".key", keyWords, 2*handoff.KeyLen, handoff.KeyLen)
	} else {
		c.Key = k
	}
	if r.Rate != nil {
		c.Rate = *r.Rate
	}
	return c
}

const (
	listenWords      = "%q is not ip:port (this instance's address, as its peers list it)"
	handoffPeerWords = "%q is not ip:port of a unicast address"
	keyWords         = "is not %d hex digits (%d bytes, the cluster's shared key: `openssl rand -hex 32`)"
)

// checkHandoff checks a handoff: section (nil: none).
func checkHandoff(e *errs, c *handoff.Config) {
	if c == nil {
		return
	}
	const f = "handoff"
	if a := c.Listen.Addr(); c.Listen.Port() == 0 || !a.IsValid() || a.Zone() != "" || a.IsMulticast() {
		e.add(f+".listen", listenWords, c.Listen)
	}
	peerCount(e, f+".peers", len(c.Peers), "the other instances' listen addresses")
	seen := map[netip.AddrPort]int{}
	for i, ap := range c.Peers {
		pf := fmt.Sprintf("%s.peers[%d]", f, i)
		if ap.Port() == 0 || !unicast(ap.Addr()) {
			e.add(pf, handoffPeerWords, ap)
			continue
		}
		if ap == c.Listen {
			e.add(pf, "%s is this instance's own listen address", ap)
		}
		if j, dup := seen[ap]; dup {
			e.add(pf, "%s is peers[%d] too", ap, j)
		}
		seen[ap] = i
	}
	if len(c.Key) != handoff.KeyLen {
		e.add(f+".key", keyWords, 2*handoff.KeyLen, handoff.KeyLen)
	}
	if c.Rate < 1 || c.Rate > 10000000 {
		e.add(f+".rate", "%d is out of range 1-10000000 frames a second", c.Rate)
	}
}
