// Package defence decides, by the source address alone, whether a client
// may open a new connection: allow and deny lists of source prefixes
// (DPVS's whitelist and blacklist), and a tracker of each source's new
// connections per second and connections held (LVS's and HAProxy's
// per-source limits). It knows addresses and counts, not packets or
// services: package nat asks it about a packet that would open a
// connection and maps the Reason it answers to one of its drop counters.
//
// Nothing here allocates once built. A CIDRSet is immutable and read
// without a lock; the Tracker's counts are behind per-shard locks, taken
// only on the new-connection path and when a connection's count changes,
// never for a packet of an open connection.
package defence

// Reason is why a source may not open a connection; OK is that it may.
type Reason uint8

const (
	OK         Reason = iota
	Denied            // the source is in the deny list
	NotAllowed        // the allow list is not empty and the source is not in it
	RateLimit         // over the source's new connections per second
	ConnLimit         // over the connections the source may hold at once
	NumReasons
)

var reasonNames = [NumReasons]string{"ok", "denied", "not_allowed", "rate_limit", "conn_limit"}

func (r Reason) String() string {
	if r >= NumReasons {
		return "unknown"
	}
	return reasonNames[r]
}

// Lists are a service's allow and deny lists.
type Lists struct {
	Allow, Deny CIDRSet
}

// Empty reports whether neither list has a prefix.
func (l *Lists) Empty() bool { return l.Allow.Empty() && l.Deny.Empty() }

// Check looks id up: Denied if the deny list holds it, NotAllowed if the
// allow list is not empty and does not, else OK. A source is looked up
// among the prefixes of its family only: an IPv6 source is never in an
// IPv4 prefix, whatever its low bits (nat keeps a service's lists to its
// clients' family).
func (l *Lists) Check(id Source) Reason {
	if len(l.Allow.byLen)|len(l.Deny.byLen)|len(l.Allow.byLen6)|len(l.Deny.byLen6) == 0 {
		return OK // inlined: a service with limits but no lists pays no call
	}
	return l.check(id)
}

func (l *Lists) check(id Source) Reason {
	if l.Deny.contains(id) {
		return Denied
	}
	if !l.Allow.Empty() && !l.Allow.contains(id) {
		return NotAllowed
	}
	return OK
}
