package nat

import "sync/atomic"

// DropReason says why the balancer dropped a packet. Every drop is counted
// under exactly one reason.
type DropReason int

const (
	DropMalformed     DropReason = iota // header lengths that do not add up
	DropFragment                        // IP fragments to a VIP or LIP: not reassembled
	DropNoService                       // to a VIP, but no service on that port/protocol
	DropNotSYN                          // TCP to a VIP without a connection and not a SYN
	DropTableFull                       // the connection table is at its limit
	DropNoDest                          // no real server with weight > 0
	DropNoNeighbor                      // the next hop's MAC is not resolved yet
	DropPortExhausted                   // no free local port on any LIP of the service
	DropICMPNoConn                      // an ICMP error about a flow tapvs does not know
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"malformed", "fragment", "no_service", "not_syn", "table_full",
	"no_dest", "no_neighbor", "port_exhausted", "icmp_no_conn",
}

func (r DropReason) String() string { return dropNames[r] }

// Stats are the balancer's counters. Only slow events (drops, connection
// births and deaths) are counted here; per-packet counters live with the
// reader that forwards the packet so that no cache line is shared by all.
type Stats struct {
	drops        [numDropReasons]atomic.Uint64
	connsCreated atomic.Uint64
	connsExpired atomic.Uint64
}

// Drops returns the drop counters by reason name.
func (s *Stats) Drops() map[string]uint64 {
	m := make(map[string]uint64, numDropReasons)
	for i := range s.drops {
		m[dropNames[i]] = s.drops[i].Load()
	}
	return m
}

// Drop is one drop counter.
func (s *Stats) Drop(r DropReason) uint64 { return s.drops[r].Load() }

// Conns returns how many connections were created and expired.
func (s *Stats) Conns() (created, expired uint64) {
	return s.connsCreated.Load(), s.connsExpired.Load()
}

func (s *Stats) drop(r DropReason) Verdict {
	s.drops[r].Add(1)
	return Drop
}
