package nat

import (
	"sync/atomic"

	"github.com/tapvs/tapvs/frag"
)

// DropReason says why the balancer dropped a packet. Every drop is counted
// under exactly one reason.
type DropReason int

const (
	DropMalformed      DropReason = iota // header lengths that do not add up
	DropFragment                         // IP fragments to a VIP or LIP with reassembly off (Config.NoReassembly)
	DropNoService                        // to a VIP, but no service on that port/protocol
	DropNotSYN                           // TCP to a VIP without a connection and not a SYN
	DropTableFull                        // the connection table is at its limit
	DropNoDest                           // no real server with weight > 0
	DropNoNeighbor                       // the next hop's MAC is not resolved yet
	DropPortExhausted                    // no free local port on any LIP of the service
	DropICMPNoConn                       // an ICMP error about a flow tapvs does not know
	DropBadCookie                        // an ACK to a synproxy VIP whose cookie does not check
	DropSynproxyQueue                    // more client packets than are held before the server answers
	DropSynproxyState                    // a server packet that does not fit the proxied handshake
	DropAckStorm                         // the same server ACK repeated past the storm limit
	DropBadOptions                       // TCP options tapvs must read that do not parse (tcpopt.Walker.Next)
	DropBadIPChecksum                    // an IPv4 header to a VIP or LIP whose checksum does not verify
	DropBadChecksum                      // a segment that would open a connection (or fix a proxied one) whose transport checksum does not verify
	DropDenied                           // a new connection from a source in the service's deny list
	DropNotAllowed                       // a new connection from a source not in the service's (non-empty) allow list
	DropSrcRateLimit                     // a new connection over its source's connections per second
	DropSrcConnLimit                     // a new connection over its source's concurrent connections
	DropHalfOpenLimit                    // a SYN over the service's half-open connections
	DropUDPProxyBig                      // a datagram to a proxy-v2 UDP service that the header would take past the server side's MTU (udpproxy.go)
	DropUDPProxyGSO                      // a UDP GSO super-frame to a proxy-v2 UDP service: each segment would need its own header (udpproxy.go)
	DropProxyNoRoom                      // a segment that could not take its connection's PROXY header (no headroom, or a full-checksum frame past 65535 bytes)
	DropIPv6Ext                          // an IPv6 packet to a VIP or LIP with an extension header tapvs cannot rewrite safely (a routing header with segments left, AH, too many headers)
	DropNAT64                            // a packet of a NAT64 or NAT46 connection that cannot be translated: no headroom for the IPv6 header, an IPv4 total length past 65535, a UDP super-frame (nat64.go)
	DropICMPXlat                         // an ICMP error about a NAT64 or NAT46 connection with no counterpart in the other family (parameter problem, source route failed, ...: icmp64.go)
	DropProxyOverlap                     // a client segment whose bytes would take sequence numbers of its connection's PROXY header: from before the client's first byte into its stream, an urgent byte there, a SYN with data, or a SYN with a new ISN on an open PROXY connection (proxy.go)
	DropNAT64TooBig                      // a server packet of a NAT64 connection (a client packet of a NAT46 one) that would pass the other side's MTU once translated (20 bytes longer); with DF it is answered by a fragmentation needed (nat64.go)
	DropHandoffUnknown                   // a frame another instance handed over for a connection this one does not hold either (Frame.HandedOff)
	DropBackupLIP                        // a server's packet to another instance's LIP backed up here (Balancer.SetBackupLIPs), to a port of the balancer's range, that no connection here holds: one of the peer's connections that sync did not carry
	DropBackupLIPStack                   // the same to a port outside the balancer's range: the peer's own stack's connection (its health checks), which nothing carries
	DropTemplatesFull                    // a new connection of a persistent service whose client network has no template, with the templates at their bound (Config.MaxTemplates)
	DropFault                            // a frame a fault dropped on purpose (SetFaults: fault.go)
	DropFaultQueue                       // a frame a fault's delay line had no room for: past its rate cap's queue or MaxDelayed (faultdelay.go)
	DropFragOverlap                      // a fragment overlapping one held (RFC 5722): it and its datagram's held fragments (frag.Overlap)
	DropFragDuplicate                    // a fragment exactly like one held (frag.Duplicate)
	DropFragTiny                         // a first fragment without the whole transport header (frag.Tiny)
	DropFragTooBig                       // a fragment of a datagram past 65535 bytes, and its datagram's held fragments (frag.TooBig)
	DropFragMemory                       // a fragment past the reassembly's memory bound (frag.Memory)
	DropFragSource                       // a fragment past its source's share of that bound (frag.Source)
	DropFragTooMany                      // a datagram's 65th fragment, and its held ones (frag.TooMany)
	DropFragMalformed                    // a fragment whose lengths do not add up (frag.Malformed), or a reassembled datagram that does not parse
	DropFragTimeout                      // the held fragments of a datagram not whole in time (frag.Timeout)
	DropFragNoRoom                       // a reassembled datagram that could not be cut for its way out (an MTU below its headers and 8 bytes)
	DropFragPathMTU                      // a reassembled datagram, IPv6 or IPv4 with DF, whose largest fragment passes the other side's MTU: answered with a Packet Too Big or fragmentation needed (frag.go)
	DropHandoffMark                      // a frame another instance handed over with a fragment mark no reassembly could have given it (Frame.Mark: frag.go's handedMark)
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"malformed", "fragment", "no_service", "not_syn", "table_full",
	"no_dest", "no_neighbor", "port_exhausted", "icmp_no_conn",
	"bad_cookie", "synproxy_queue_full", "synproxy_state", "ack_storm", "bad_tcp_options", "bad_ip_checksum", "bad_checksum",
	"denied", "not_allowed", "src_rate_limit", "src_conn_limit", "half_open_limit",
	"udp_proxy_too_big", "udp_proxy_gso", "proxy_no_room", "ipv6_ext_header",
	"nat64_untranslatable", "icmp_untranslatable", "proxy_overlap", "nat64_too_big",
	"handoff_unknown", "backup_lip_no_conn", "backup_lip_stack", "persist_templates_full", "fault",
	"fault_queue", "fragment_overlap", "fragment_duplicate", "fragment_tiny", "fragment_too_big",
	"fragment_memory", "fragment_source", "fragment_too_many", "fragment_malformed", "fragment_timeout",
	"fragment_no_room", "fragment_path_mtu", "handoff_mark",
}

func (r DropReason) String() string { return dropNames[r] }

// ImportReason says why ImportConn refused a connection record (export.go).
// Every refusal is counted under exactly one reason; a refused record
// changes nothing else.
type ImportReason int

const (
	ImportInvalid        ImportReason = iota // the record fails connrec's checks, or its parts do not fit together here (a PROXY header of another length)
	ImportUnknownService                     // no service here on its VIP:port and protocol
	ImportUnknownDest                        // its real server is not one of that service's (weight 0 still counts)
	ImportUnknownLIP                         // its LIP is not one of that service's, or its port is outside this balancer's local port range
	ImportStale                              // an entry of the same connection with a newer or equal version is here already, or its tombstone came (nat/tombs.go)
	ImportTableFull                          // the connection table is at its limit
	ImportConflict                           // its reply tuple (real server to LIP:lport) or port is held by another connection
	numImportReasons
)

var importNames = [numImportReasons]string{
	"invalid", "unknown_service", "unknown_dest", "unknown_lip", "stale", "table_full", "conflict",
}

func (r ImportReason) String() string { return importNames[r] }

// Stats are the balancer's counters. Only slow events (drops, connection
// births and deaths) are counted here; per-packet counters live with the
// reader that forwards the packet so that no cache line is shared by all.
type Stats struct {
	drops        [numDropReasons]atomic.Uint64
	frags        *frag.Reassembler // counts the fragments it drops (fragDrops); nil: none
	connsCreated atomic.Uint64
	connsExpired atomic.Uint64

	imported          atomic.Uint64                   // connections ImportConn put in the table or updated
	templatesImported atomic.Uint64                   // persistence templates ImportConn made or refreshed (tmplrec.go)
	adopted           atomic.Uint64                   // shadows of a peer's connections this instance took over (feed.go)
	importRefused     [numImportReasons]atomic.Uint64 // records ImportConn refused, by reason

	synCookies     atomic.Uint64 // SYN-ACKs answered with a cookie
	synproxyOpened atomic.Uint64 // handshakes proved by a valid cookie
	synproxyFailed atomic.Uint64 // real server refused or never answered
	synRetries     atomic.Uint64 // SYNs sent again to a silent real server

	synproxyTimeWait atomic.Uint64 // server TIME_WAITs ended with an RST to reuse a local port
	expiredResets    atomic.Uint64 // RSTs sent to either side of an established connection that expired

	fragTimeEx, fragTimeExNotSent atomic.Uint64 // time exceeded for datagrams given up: sent, not sent (frag.go)

	srcUntracked atomic.Uint64 // new connections let in uncounted: their source tracker set was full

	proxyHeaders atomic.Uint64    // PROXY protocol headers sent to real servers, re-sends included
	proxyCut     atomic.Uint64    // segments that carried a PROXY header cut short at their end to fit (proxy.go)
	udpProxy     udpProxyCounters // PROXY v2 headers before UDP datagrams, per reader (udpproxy.go)
	// toa counts TOA options by reader (Frame.Queue): a TOA service's
	// upload puts one on every segment until the server first sends data.
	toa [MaxQueues]readerTOA
}

// readerTOA is one reader's TOA counters, on a cache line of its own.
type readerTOA struct {
	inserted, noRoom atomic.Uint64
	_                [48]byte
}

func (s *Stats) toaCount(q int, noRoom bool) {
	t := &s.toa[q&(MaxQueues-1)]
	if noRoom {
		t.noRoom.Add(1)
	} else {
		t.inserted.Add(1)
	}
}

// TOA returns how many client segments got the TOA option, and how many
// that should have went without it for lack of room (options past 40
// bytes, a packet past the server side's MTU).
func (s *Stats) TOA() (inserted, noRoom uint64) {
	for i := range s.toa {
		inserted += s.toa[i].inserted.Load()
		noRoom += s.toa[i].noRoom.Load()
	}
	return inserted, noRoom
}

// ProxyHeaders counts the PROXY protocol headers put in front of client
// segments toward real servers, every re-send included (a retransmitted
// first segment, a repeated handshake ACK).
func (s *Stats) ProxyHeaders() uint64 { return s.proxyHeaders.Load() }

// ProxyCut is how many segments carrying a PROXY header were cut short at
// their end to fit the server side's MTU (or a TSO super-frame's 65535).
func (s *Stats) ProxyCut() uint64 { return s.proxyCut.Load() }

// FragTimeExceeded counts the ICMP time exceeded messages for datagrams
// given up at their timeout: sent, and not sent (past TimeExceededRate, or
// to a source no host has).
func (s *Stats) FragTimeExceeded() (sent, notSent uint64) {
	return s.fragTimeEx.Load(), s.fragTimeExNotSent.Load()
}

// ExpiredResets counts the RSTs sent, to a client or a real server, when an
// established TCP connection timed out.
func (s *Stats) ExpiredResets() uint64 { return s.expiredResets.Load() }

// SourcesUntracked counts new connections admitted without a per-source
// count because every entry of their source's set held open connections
// (see defence.MaxTrackedSources).
func (s *Stats) SourcesUntracked() uint64 { return s.srcUntracked.Load() }

// SynproxyTimeWait counts the server TIME_WAITs synproxy ended (RST, SYN again)
// because a local port came round to the same server within its TIME_WAIT.
func (s *Stats) SynproxyTimeWait() uint64 { return s.synproxyTimeWait.Load() }

// Synproxy returns the SYN proxy's counters: cookies sent, handshakes proved,
// server handshakes that failed, and SYN retransmissions.
func (s *Stats) Synproxy() (cookies, opened, failed, retries uint64) {
	return s.synCookies.Load(), s.synproxyOpened.Load(), s.synproxyFailed.Load(), s.synRetries.Load()
}

// Drops returns the drop counters by reason name.
func (s *Stats) Drops() map[string]uint64 {
	m := named(dropNames[:], s.drops[:])
	for r, d := range fragDrops {
		m[dropNames[d]] += s.fragCount(frag.Reason(r))
	}
	return m
}

// fragCount is the reassembler's count of fragments it dropped for r: it
// counts them itself, as a refusal may give up fragments held before, and
// its sweep gives up those of datagrams whose time is up.
func (s *Stats) fragCount(r frag.Reason) uint64 {
	if s.frags == nil {
		return 0
	}
	return s.frags.Count(r)
}

// named is a family of counters by name.
func named(names []string, counters []atomic.Uint64) map[string]uint64 {
	m := make(map[string]uint64, len(names))
	for i := range counters {
		m[names[i]] = counters[i].Load()
	}
	return m
}

// Drop is one drop counter.
func (s *Stats) Drop(r DropReason) uint64 {
	n := s.drops[r].Load()
	for fr, d := range fragDrops {
		if d == r {
			n += s.fragCount(frag.Reason(fr))
		}
	}
	return n
}

// Conns returns how many connections were created and expired.
func (s *Stats) Conns() (created, expired uint64) {
	return s.connsCreated.Load(), s.connsExpired.Load()
}

// Imported is how many connection records ImportConn applied: new
// connections put in the table, and entries a newer record updated.
func (s *Stats) Imported() uint64 { return s.imported.Load() }

// Adopted is how many shadows of peers' connections this instance took
// over, a server's segment of each having come here (connection sync).
func (s *Stats) Adopted() uint64 { return s.adopted.Load() }

// ImportRefused returns the refused connection records by reason name.
func (s *Stats) ImportRefused() map[string]uint64 {
	return named(importNames[:], s.importRefused[:])
}

// ImportRefusal is one refusal counter.
func (s *Stats) ImportRefusal(r ImportReason) uint64 { return s.importRefused[r].Load() }

func (s *Stats) drop(r DropReason) Verdict {
	s.drops[r].Add(1)
	return Drop
}
