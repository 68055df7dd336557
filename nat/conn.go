package nat

import (
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/synproxy"
	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/tcprw"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// TCP connection states, in IPVS's order (ipvsadm -lnc prints these names).
const (
	stNone uint32 = iota
	stEstablished
	stSynSent
	stSynRecv
	stFinWait
	stTimeWait
	stClose
	stCloseWait
	stLastAck
	stListen
	stSynAck
	numTCPStates
	stUDP  = stEstablished // a UDP entry has one state; it counts as active
	stDead = numTCPStates  // taken off the table: no state step may move counters
)

var stateNames = [numTCPStates]string{
	"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK",
}

// Timeouts are per-state expiry times. The defaults are Alibaba LVS's.
type Timeouts struct {
	TCP [numTCPStates]time.Duration
	UDP time.Duration
}

// DefaultTimeouts are the timeouts of Alibaba's LVS v3 (DESIGN §3).
func DefaultTimeouts() Timeouts {
	var t Timeouts
	t.TCP[stNone] = 2 * time.Second
	t.TCP[stEstablished] = 90 * time.Second
	t.TCP[stSynSent] = 3 * time.Second
	t.TCP[stSynRecv] = 30 * time.Second
	t.TCP[stFinWait] = 7 * time.Second
	t.TCP[stTimeWait] = 7 * time.Second
	t.TCP[stClose] = 3 * time.Second
	t.TCP[stCloseWait] = 7 * time.Second
	t.TCP[stLastAck] = 7 * time.Second
	t.TCP[stListen] = 120 * time.Second
	t.TCP[stSynAck] = 30 * time.Second
	t.UDP = 300 * time.Second
	return t
}

// Established is the timeout of an established TCP connection: what
// ipvsadm --set calls tcp and -V sets. Callers outside nat name it instead
// of indexing TCP, whose order is nat's own.
func (t Timeouts) Established() time.Duration { return t.TCP[stEstablished] }

// SetEstablished sets the established TCP timeout.
func (t *Timeouts) SetEstablished(d time.Duration) { t.TCP[stEstablished] = d }

// FinWait is the timeout of a TCP connection in FIN_WAIT: what ipvsadm
// --set calls tcpfin.
func (t Timeouts) FinWait() time.Duration { return t.TCP[stFinWait] }

// TCPStateNames lists the state names accepted as timeout keys, lower case.
func TCPStateNames() []string {
	out := make([]string, numTCPStates)
	for i, n := range stateNames {
		out[i] = lower(n)
	}
	return out
}

// SetTCP sets the timeout of the state called name ("established", "fin_wait").
func (t *Timeouts) SetTCP(name string, d time.Duration) bool {
	for i, n := range stateNames {
		if lower(n) == name {
			t.TCP[i] = d
			return true
		}
	}
	return false
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// IPVS's TCP state table (ip_vs_proto_tcp.c, tcp_states), indexed by
// direction (0: from the client, 1: from the server), the packet's flag
// (syn, fin, ack, rst) and the current state.
const (
	sNO = stNone
	sES = stEstablished
	sSS = stSynSent
	sSR = stSynRecv
	sFW = stFinWait
	sTW = stTimeWait
	sCL = stClose
	sCW = stCloseWait
	sLA = stLastAck
	sLI = stListen
	sSA = stSynAck
)

var tcpStates = [2][4][numTCPStates]uint32{
	{ // from the client
		/*        sNO, sES, sSS, sSR, sFW, sTW, sCL, sCW, sLA, sLI, sSA */
		/*syn*/ {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
		/*fin*/ {sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW},
		/*ack*/ {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
		/*rst*/ {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR},
	},
	{ // from the server
		/*        sNO, sES, sSS, sSR, sFW, sTW, sCL, sCW, sLA, sLI, sSA */
		/*syn*/ {sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR},
		/*fin*/ {sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW},
		/*ack*/ {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES},
		/*rst*/ {sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL},
	},
}

// rstRow is tcpStates' row of an RST.
const rstRow = 3

// flagIndex picks the row of tcpStates for a packet's flags, as IPVS does:
// RST wins over SYN, SYN over FIN, FIN over ACK.
func flagIndex(flags uint8) int {
	switch {
	case flags&tcpflag.RST != 0:
		return rstRow
	case flags&tcpflag.SYN != 0:
		return 0
	case flags&tcpflag.FIN != 0:
		return 1
	case flags&tcpflag.ACK != 0:
		return 2
	}
	return -1
}

const (
	dirIn  = 0 // client -> VIP -> real server
	dirOut = 1 // real server -> LIP -> client
)

// tupleKey identifies one direction of a connection as it arrives on the wire.
type tupleKey struct {
	src, dst     addr16
	sport, dport uint16
	proto        Protocol
}

// Conn is one FULLNAT connection. Both directions' keys point at it.
//
// The rewrite of each direction is fixed when the connection is made, so the
// checksum deltas are computed then (RFC 1624) and each packet applies them.
type Conn struct {
	in  tupleKey // client:cport -> VIP:vport, as the client sends it
	out tupleKey // RIP:rport -> LIP:lport, as the real server sends it

	svc   *Service
	dest  *Dest
	laddr *LocalAddr
	tmpl  *template       // the persistence template that chose dest, counted in its conns (persist.go); nil: none
	sp    *synproxy.State // nil unless the connection was opened by the SYN proxy
	def   connDefence     // what defence.go counted it in
	// pp is the connection's PROXY protocol header (proxy.go), nil
	// without one: fixed by the service's mode when the connection is
	// made.
	pp *proxyConn

	clientMAC [6]byte // the client side's next hop: the frame's source

	// clientAddr is the service's ClientAddr when the connection was made:
	// a service that changes mode changes it for new connections only.
	clientAddr ClientAddr
	// timestamps is the service's Timestamps when the connection was made
	// (next to clientAddr: the padding before the deltas holds it).
	timestamps Timestamps

	inIPDelta, inL4Delta   uint16
	outIPDelta, outL4Delta uint16

	state atomic.Uint32
	// rw is a plain TCP connection's rewriter (tcprw: its sequence and
	// timestamp offsets, a PROXY header's place, MSS clamps, TOA's ack; a
	// SYNPROXY connection's is its State's: rewriter). Published before
	// the connection is, and replaced whole, never changed in place: by
	// the client's reader when a SYN fixes the timestamp offset or the
	// client reuses its port on the closing entry (seq.go), by the
	// server's when it acknowledges a PROXY header or a TOA connection's
	// SYN-ACK names the ack TOA goes with; each change a CompareAndSwap
	// on the copy it read, so none is lost.
	rw       atomic.Pointer[tcprw.Rewriter]
	deadline atomic.Int64 // table clock, ns
	filed    atomic.Int64 // the expiry wheel's tick this connection is filed under

	acks [2]atomic.Uint64 // by direction: ackValid | the last ack, raw (reset.go)
	// tsSent is ackValid | the highest TSval sent to the server (server
	// space) on a plain TCP connection that translates timestamps: where
	// the next connection on the tuple must start past (seq.go).
	tsSent atomic.Uint64

	// version counts the connection's updates as its record carries them
	// (connrec.Record.Version, serial arithmetic): an imported record
	// sets it, and one not newer than it is refused (export.go).
	version atomic.Uint32
	// feed is the balancer's change feed (feed.go); nil without sync.
	feed   *changeFeed
	queued atomic.Bool // on the feed, not drained yet
	// shadow marks a peer's connection kept here (connection sync): it
	// is not fed (its owner sends it) until this instance adopts it.
	shadow atomic.Bool
	// watch is the balancer's connection watch (watch.go).
	watch *connWatch
	// fault is a fault's state on the connection (faultreset.go): nil
	// unless a fault of the reset family has seen it.
	fault atomic.Pointer[connFault]
}

// prepare computes the checksum deltas of both directions from the keys.
// A NAT64 or NAT46 connection's addresses change family (replaceAddr): the
// pseudo-header's length and protocol are the same numbers in both, so the
// addresses are still all that changes in it.
func (c *Conn) prepare() {
	// in: src client->LIP, dst VIP->RIP, sport cport->lport, dport vport->rport.
	ip := replaceAddr(0, wire.Short(&c.in.src), wire.Short(&c.out.dst))
	ip = replaceAddr(ip, wire.Short(&c.in.dst), wire.Short(&c.out.src))
	l4 := csum.Replace16(ip, c.in.sport, c.out.dport)
	l4 = csum.Replace16(l4, c.in.dport, c.out.sport)
	c.inIPDelta, c.inL4Delta = csum.Fold(ip), csum.Fold(l4)
	// out: src RIP->VIP, dst LIP->client, sport rport->vport, dport lport->cport.
	ip = replaceAddr(0, wire.Short(&c.out.src), wire.Short(&c.in.dst))
	ip = replaceAddr(ip, wire.Short(&c.out.dst), wire.Short(&c.in.src))
	l4 = csum.Replace16(ip, c.out.sport, c.in.dport)
	l4 = csum.Replace16(l4, c.out.dport, c.in.sport)
	c.outIPDelta, c.outL4Delta = csum.Fold(ip), csum.Fold(l4)
}

// rewriter is where c's TCP rewriter is published: its own, or its
// SYNPROXY State's (nil there until the server's handshake fixes it).
func (c *Conn) rewriter() *atomic.Pointer[tcprw.Rewriter] {
	if c.sp != nil {
		return c.sp.Rewriter()
	}
	return &c.rw
}

// editRewriter publishes a copy of c's rewriter changed by edit, which
// reports false when there is nothing to change; edited again on the copy
// another writer published first. Once per connection at most for each
// edit (a fixed offset, Past, TOA's ack): the copy is its one allocation.
func (c *Conn) editRewriter(edit func(r *tcprw.Rewriter) bool) {
	home := c.rewriter()
	for {
		cur := home.Load()
		if cur == nil {
			return
		}
		next := *cur
		if !edit(&next) || home.CompareAndSwap(cur, &next) {
			return
		}
	}
}

// active reports whether the state counts as an active connection.
func active(state uint32) bool { return state == stEstablished }

// holding reports whether the state is one of a connection the client holds:
// not TIME_WAIT or CLOSE, where both sides have closed (or one has reset)
// and the entry only lingers to catch late segments. Per-source limits
// count held connections only, as LVS's and HAProxy's connection limits
// count open connections (defence.go).
func holding(state uint32) bool { return state != stTimeWait && state != stClose && state != stDead }

// setState moves the connection to state and keeps the server's
// active/inactive counts, and its source's count of held connections, in
// step. Concurrent readers race through the CAS: exactly one of them moves
// the counts, and is told it did.
func (c *Conn) setState(old, state uint32) bool {
	if old == state || !c.state.CompareAndSwap(old, state) {
		return false
	}
	if a, b := active(old), active(state); a != b {
		if b {
			c.dest.active.Add(1)
			c.dest.inactive.Add(-1)
		} else {
			c.dest.active.Add(-1)
			c.dest.inactive.Add(1)
		}
	}
	if c.def.src != nil && holding(old) != holding(state) {
		c.holdSource()
	}
	c.changed(state)
	return true
}

// timeout is how long the connection lives in state without packets.
func (c *Conn) timeout(state uint32) int64 {
	to := c.svc.timeouts.Load()
	if c.in.proto == UDP {
		return int64(to.UDP)
	}
	return int64(to.TCP[state])
}

// touchGranularity bounds how often a busy connection writes its deadline:
// a deadline later by less than this is not worth a store shared by both
// directions' readers.
const touchGranularity = int64(50 * time.Millisecond)

// touch records a packet: a TCP state step and a new deadline. A deadline
// moved earlier is filed on w at once; one moved later waits for its old tick.
func (c *Conn) touch(dir int, flags uint8, now int64, w *wheel) {
	st := c.state.Load()
	if st == stDead {
		return
	}
	if c.in.proto == TCP {
		if fi := flagIndex(flags); fi >= 0 {
			next := tcpStates[dir][fi][st]
			if c.setState(st, next) {
				c.stepped(st, next, dir, fi == rstRow)
			}
			st = next
		}
	}
	d := now + c.timeout(st)
	if old := c.deadline.Load(); d < old || d-old > touchGranularity {
		c.deadline.Store(d)
		if d < old {
			w.advance(c, d)
		}
	}
}

// StateName is the IPVS name of a TCP state number.
func StateName(s uint32) string {
	if c := int(s); c < len(stateNames) {
		return stateNames[c]
	}
	return "UNKNOWN"
}
