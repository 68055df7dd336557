package nat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/tcpflag"
	"github.com/tapvs/tapvs/wire"
)

// Faults make the network misbehave on purpose, for failover and chaos
// tests (what Toxiproxy does as a proxy, done here where tapvs already
// sits: on the packet path of every connection it balances, so the client
// and the server change nothing). A fault is set on a service, a real
// server or a client prefix, for one direction or both, and acts as the
// network in front of tapvs would: a frame of a connection it drops never
// reaches the balancer's state. A new connection's first frame meets the
// drops once its server is chosen (a dropped SYN is then lost beyond
// tapvs, and its entry expires as it would); a SYN fault acts before any
// state is made.
//
// What a fault can do (the drop family): drop every frame (a blackhole),
// drop each frame with a probability, drop every Nth, and drop or refuse
// (with an RST, as a closed port answers) the SYNs that would open new
// connections. A blackholed real server is silent to tapvs's own stack
// too: its answers to the health checks are dropped, so the checks fail
// as they would against a dead host.
//
// Cost: the data path loads one pointer per frame, nil unless a fault is
// set anywhere; with faults set, a frame of a connection looks its
// service, server and client up in the fault set (two map lookups and
// the client prefixes). The set is immutable and swapped whole by its
// writers (SetFaults, SetFault, ClearFault: one at a time, faultsMu); a
// rule's counters are atomics.

// FaultDir is the direction a fault acts on.
type FaultDir uint8

const (
	FaultToServer FaultDir = 1 << iota // client to server frames
	FaultToClient                      // server to client frames
	FaultBoth     = FaultToServer | FaultToClient
)

func (d FaultDir) String() string {
	switch d {
	case FaultToServer:
		return "to_server"
	case FaultToClient:
		return "to_client"
	case FaultBoth:
		return "both"
	}
	return fmt.Sprintf("FaultDir(%d)", uint8(d))
}

// ParseFaultDir reads a direction as the configuration writes it.
func ParseFaultDir(s string) (FaultDir, error) {
	switch s {
	case "to_server":
		return FaultToServer, nil
	case "to_client":
		return FaultToClient, nil
	case "both", "":
		return FaultBoth, nil
	}
	return 0, fmt.Errorf("%q is not a direction (to_server, to_client, both)", s)
}

// SYNFault is what happens to a SYN that would open a new connection.
type SYNFault uint8

const (
	SYNPass   SYNFault = iota // the SYN goes on
	SYNDrop                   // dropped: the client's connect times out
	SYNRefuse                 // answered with an RST: the client's connect is refused
)

func (s SYNFault) String() string {
	switch s {
	case SYNPass:
		return ""
	case SYNDrop:
		return "drop"
	case SYNRefuse:
		return "refuse"
	}
	return fmt.Sprintf("SYNFault(%d)", uint8(s))
}

// ParseSYNFault reads a SYN fault as the configuration writes it.
func ParseSYNFault(s string) (SYNFault, error) {
	switch s {
	case "":
		return SYNPass, nil
	case "drop":
		return SYNDrop, nil
	case "refuse":
		return SYNRefuse, nil
	}
	return 0, fmt.Errorf("%q is not a SYN fault (drop, refuse)", s)
}

// FaultTarget is what a fault is set on: exactly one of a service (by its
// key: protocol, VIP and port, or a match service's mark), a real server
// (by address and port, in every service that has it) or a client prefix.
type FaultTarget struct {
	Protocol Protocol
	VIP      netip.AddrPort
	Mark     uint32
	Server   netip.AddrPort
	Client   netip.Prefix
}

func (t FaultTarget) String() string {
	if t.Mark != 0 {
		return fmt.Sprintf("service fwm %d", t.Mark)
	}
	if t.VIP.IsValid() {
		return fmt.Sprintf("service %s %s", t.Protocol, t.VIP)
	}
	if t.Server.IsValid() {
		return fmt.Sprintf("server %s", t.Server)
	}
	return fmt.Sprintf("client %s", t.Client)
}

// Fault is one fault on one target.
type Fault struct {
	Target FaultTarget
	Dir    FaultDir
	// Blackhole drops every frame. A real server's also drops its frames
	// to tapvs's own stack (its health checks' answers), Dir permitting.
	Blackhole bool
	// Loss drops each frame with this probability (0 to 1).
	Loss float64
	// Every drops every Nth frame (1: all of them; 0: none).
	Every uint32
	// SYN acts on the SYNs that would open new connections (to the
	// server: Dir must include FaultToServer).
	SYN SYNFault
	// DropFIN drops the TCP FINs of the direction: a half-close that never
	// completes (the closing side retransmits its FIN until it gives up;
	// its peer never reads the end of the stream). A segment with data and
	// the FIN is dropped whole.
	DropFIN bool

	// The delay family (faultdelay.go): the frames a fault lets through
	// leave from a line of their own per direction, in the order they
	// came unless Reorder says otherwise.

	// Latency delays each frame; Jitter spreads the delay evenly over
	// Latency-Jitter to Latency+Jitter (never below zero), frames kept in
	// order (a frame never leaves before the one ahead of it).
	Latency, Jitter time.Duration
	// Rate caps the direction's bytes per second (whole frames, Ethernet
	// header included), queueing up to MaxRateQueue of it; frames past
	// that are dropped, as a bottleneck's queue drops them. 0: no cap.
	Rate uint64
	// Duplicate sends a frame twice with this probability (0 to 1).
	Duplicate float64
	// Reorder holds a frame back with this probability (0 to 1): it
	// leaves right after the next frame of its line, or ReorderHold late
	// if none comes.
	Reorder float64

	// The reset family (faultreset.go), on TCP connections.

	// ResetBytes ends a connection once this many bytes of its stream
	// have passed in the direction (counted from its SYN, or from the
	// first frame the fault saw): the receiver gets exactly that many,
	// then an RST, and its peer an RST. 0: none.
	ResetBytes uint64
	// ResetAfter ends a connection with an RST to each side this long
	// after the fault first saw it (its SYN, for a new one). 0: none.
	ResetAfter time.Duration
}

// The bounds of the delay family.
const (
	MaxLatency   = time.Minute
	MaxResetAge  = 24 * time.Hour
	MaxRateQueue = 250 * time.Millisecond // the most a rate-capped line queues
	ReorderHold  = 10 * time.Millisecond  // a held-back frame's wait for one to pass it
	// MaxDelayed bounds the bytes of the frame buffers all the lines hold
	// at once (a frame counts its buffer's size); frames past it are
	// dropped (DropFaultQueue).
	MaxDelayed = 64 << 20
)

// delays reports whether f uses a delay line.
func (f *Fault) delays() bool {
	return f.Latency > 0 || f.Jitter > 0 || f.Rate > 0 || f.Duplicate > 0 || f.Reorder > 0
}

// resets reports whether f acts on the connections it sees (the reset family).
func (f *Fault) resets() bool { return f.ResetBytes > 0 || f.ResetAfter > 0 }

// Check refuses a fault that names no target or two, or does nothing.
func (f Fault) Check() error {
	n := 0
	if f.Target.VIP.IsValid() || f.Target.Mark != 0 {
		n++
	}
	if f.Target.VIP.IsValid() && f.Target.Mark != 0 {
		return errors.New("target: a service is a VIP:port or a mark, not both")
	}
	if f.Target.Server.IsValid() {
		n++
	}
	if f.Target.Client.IsValid() {
		n++
	}
	if n != 1 {
		return errors.New("target: exactly one of a service, a real server or a client prefix")
	}
	if f.Dir == 0 || f.Dir > FaultBoth {
		return fmt.Errorf("direction: %v is not to_server, to_client or both", f.Dir)
	}
	if !(f.Loss >= 0 && f.Loss <= 1) { // NaN too
		return fmt.Errorf("loss: %v is not a probability (0 to 1)", f.Loss)
	}
	if f.SYN > SYNRefuse {
		return fmt.Errorf("syn: %v is not drop or refuse", f.SYN)
	}
	if f.SYN != SYNPass && f.Dir&FaultToServer == 0 {
		return errors.New("syn: SYNs go to the server, and the direction is to_client")
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"duplicate", f.Duplicate}, {"reorder", f.Reorder}} {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("%s: %v is not a probability (0 to 1)", p.name, p.v)
		}
	}
	if f.Latency < 0 || f.Latency > MaxLatency {
		return fmt.Errorf("latency: %v is not within 0 to %v", f.Latency, MaxLatency)
	}
	if f.Jitter < 0 || f.Jitter > f.Latency {
		return fmt.Errorf("jitter: %v is not within 0 to the latency (%v)", f.Jitter, f.Latency)
	}
	if f.ResetAfter < 0 || f.ResetAfter > MaxResetAge {
		return fmt.Errorf("reset_after: %v is not within 0 to %v", f.ResetAfter, MaxResetAge)
	}
	if f.Rate != 0 && f.Rate < MinRate {
		return fmt.Errorf("rate: %d bytes/s is below %d (a full-sized frame a second)", f.Rate, MinRate)
	}
	if f.Rate > MaxRate {
		return fmt.Errorf("rate: %d bytes/s is above %d (100gbit)", f.Rate, uint64(MaxRate))
	}
	if f.ResetBytes > MaxResetBytes {
		return fmt.Errorf("reset_bytes: %d is above %d (sequence numbers wrap at 4 GiB)", f.ResetBytes, MaxResetBytes)
	}
	if (f.resets() || f.DropFIN) && f.Target.VIP.IsValid() && f.Target.Protocol != TCP {
		return fmt.Errorf("reset_bytes, reset_after and drop_fin act on TCP connections, and %s is not TCP", f.Target)
	}
	if f.Blackhole && (f.delays() || f.resets() || f.DropFIN) {
		return errors.New("blackhole: drops every frame, so nothing else can act; set it alone (or with syn)")
	}
	if !f.Blackhole && f.Loss == 0 && f.Every == 0 && f.SYN == SYNPass && !f.DropFIN && !f.delays() && !f.resets() {
		return errors.New("does nothing: set blackhole, loss, every, syn, drop_fin, latency, rate, duplicate, reorder, reset_bytes or reset_after")
	}
	return nil
}

// The bounds of a rate cap: a full-sized frame a second, and 100gbit.
const (
	MinRate = 1514
	MaxRate = 100 * 1000 * 1000 * 1000 / 8
)

// MaxResetBytes bounds ResetBytes: a stream's bytes are counted by
// sequence number, in serial arithmetic (half the 32-bit space).
const MaxResetBytes = 1 << 30

// FaultStats are what a fault has done since it was set.
type FaultStats struct {
	Fault
	Frames  uint64 // frames it looked at (of its target and direction)
	Dropped uint64 // frames it dropped, SYNs included
	Refused uint64 // SYNs it answered with an RST
	Delayed uint64 // frames it put on a delay line (duplicates included)
	Reset   uint64 // connections it ended with RSTs
}

// faultRule is a fault with its counters.
type faultRule struct {
	Fault
	frames, dropped, refused atomic.Uint64
	delayed, nreset          atomic.Uint64
	// lines are the delay lines (faultdelay.go) by direction (lineOf),
	// made when the rule is put in force if it delays that way.
	lines [2]*delayLine
	// live is true while the rule is in force: a connection's timer
	// (faultreset.go) that outlives it does nothing.
	live atomic.Bool
}

// lineOf is the index of direction dir's line.
func lineOf(dir FaultDir) int {
	if dir == FaultToClient {
		return 1
	}
	return 0
}

// start puts r in force: its lines run.
func (b *Balancer) startRule(r *faultRule) {
	r.live.Store(true)
	if !r.delays() {
		return
	}
	for _, d := range []FaultDir{FaultToServer, FaultToClient} {
		if r.Dir&d != 0 {
			r.lines[lineOf(d)] = newDelayLine(b, r)
		}
	}
}

// stopRule takes r out of force: what its lines hold leaves now.
func stopRule(r *faultRule) {
	r.live.Store(false)
	for _, l := range r.lines {
		if l != nil {
			l.stop() // the slot stays: readers may still hold the rule, and a stopped line refuses
		}
	}
}

type faultSvcKey struct {
	addr  addr16
	port  uint16
	proto Protocol
	mark  uint32
}

type faultDestKey struct {
	addr addr16
	port uint16
}

// faultSet is the faults in force, immutable once published.
type faultSet struct {
	rules   []*faultRule // in the order set: listings
	bySvc   map[faultSvcKey]*faultRule
	byDest  map[faultDestKey]*faultRule
	bySrv   map[addr16]*faultRule // blackholed servers by address, for the stack's own frames
	clients []*faultRule
}

// SetFaults replaces the faults in force with fs (none: nil or empty). A
// fault whose target and direction are one already set keeps its
// counters. It refuses the whole list if one fault is bad or two share a
// target, naming it.
func (b *Balancer) SetFaults(fs []Fault) error {
	b.faultsMu.Lock()
	defer b.faultsMu.Unlock()
	return b.setFaults(fs)
}

// MaxFaults bounds the faults in force: a frame's lookups scan the client
// prefixes.
const MaxFaults = 256

// SetFault sets f in place of the fault on its target, or after the
// others if its target has none; the others keep their counters.
func (b *Balancer) SetFault(f Fault) error {
	b.faultsMu.Lock()
	defer b.faultsMu.Unlock()
	f.Target.Client = f.Target.Client.Masked()
	list := b.faultList()
	if i := slices.IndexFunc(list, func(o Fault) bool { return o.Target == f.Target }); i >= 0 {
		list[i] = f
	} else {
		list = append(list, f)
	}
	return b.setFaults(list)
}

// ClearFault clears the fault on t and reports whether there was one.
func (b *Balancer) ClearFault(t FaultTarget) bool {
	b.faultsMu.Lock()
	defer b.faultsMu.Unlock()
	t.Client = t.Client.Masked()
	list := b.faultList()
	i := slices.IndexFunc(list, func(o Fault) bool { return o.Target == t })
	if i < 0 {
		return false
	}
	b.setFaults(slices.Delete(list, i, i+1)) // what was in force, less one: valid
	return true
}

// faultList is the faults in force, in the order set. Under faultsMu.
func (b *Balancer) faultList() []Fault {
	set := b.faults.Load()
	if set == nil {
		return nil
	}
	out := make([]Fault, len(set.rules))
	for i, r := range set.rules {
		out[i] = r.Fault
	}
	return out
}

// setFaults is SetFaults under faultsMu.
func (b *Balancer) setFaults(fs []Fault) error {
	if len(fs) > MaxFaults {
		return fmt.Errorf("%d faults: at most %d", len(fs), MaxFaults)
	}
	old := b.faults.Load()
	prev := map[Fault]*faultRule{}
	if old != nil {
		for _, r := range old.rules {
			prev[r.Fault] = r
		}
	}
	set := &faultSet{bySvc: map[faultSvcKey]*faultRule{}, byDest: map[faultDestKey]*faultRule{}, bySrv: map[addr16]*faultRule{}}
	targets := map[FaultTarget]int{}
	for i, f := range fs {
		if err := f.Check(); err != nil {
			return fmt.Errorf("fault %d (%s): %w", i, f.Target, err)
		}
		f.Target.Client = f.Target.Client.Masked()
		if j, dup := targets[f.Target]; dup {
			return fmt.Errorf("fault %d (%s): fault %d has the same target: one fault per target", i, f.Target, j)
		}
		targets[f.Target] = i
		r := prev[f]
		if r == nil {
			r = &faultRule{Fault: f}
		}
		delete(prev, f) // kept: not stopped below
		set.rules = append(set.rules, r)
		t := f.Target
		if t.Mark != 0 {
			set.bySvc[faultSvcKey{mark: t.Mark}] = r
		} else if t.VIP.IsValid() {
			set.bySvc[faultSvcKey{addr: t.VIP.Addr().Unmap().As16(), port: t.VIP.Port(), proto: t.Protocol}] = r
		} else if t.Server.IsValid() {
			a := t.Server.Addr().Unmap().As16() // the table's form: IPv4 mapped
			set.byDest[faultDestKey{addr: a, port: t.Server.Port()}] = r
			if f.Blackhole && f.Dir&FaultToClient != 0 {
				set.bySrv[a] = r
			}
		} else {
			set.clients = append(set.clients, r)
		}
	}
	for _, r := range set.rules {
		if !r.live.Load() {
			b.startRule(r)
		}
	}
	if len(set.rules) == 0 {
		set = nil
	}
	b.faults.Store(set)
	for _, r := range prev {
		stopRule(r) // after the swap: no reader finds it in force any more
	}
	return nil
}

// Faults lists the faults in force with their counters, in the order set.
func (b *Balancer) Faults() []FaultStats {
	set := b.faults.Load()
	if set == nil {
		return nil
	}
	out := make([]FaultStats, len(set.rules))
	for i, r := range set.rules {
		out[i] = FaultStats{Fault: r.Fault, Frames: r.frames.Load(), Dropped: r.dropped.Load(), Refused: r.refused.Load(),
			Delayed: r.delayed.Load(), Reset: r.nreset.Load()}
	}
	return out
}

// rule is the fault of a connection's frame in direction dir: its real
// server's, then its service's, then its client's.
func (set *faultSet) rule(svc *Service, d *Dest, client *addr16, dir FaultDir) *faultRule {
	if d != nil {
		if r := set.byDest[faultDestKey{addr: d.a16, port: d.Port}]; r != nil && r.Dir&dir != 0 {
			return r
		}
	}
	if svc != nil {
		k := faultSvcKey{mark: svc.Mark}
		if svc.Mark == 0 {
			k = faultSvcKey{addr: svc.key.addr, port: svc.Port, proto: svc.Protocol}
		}
		if r := set.bySvc[k]; r != nil && r.Dir&dir != 0 {
			return r
		}
	}
	for _, r := range set.clients {
		if r.Dir&dir != 0 && prefixHas(r.Target.Client, client) {
			return r
		}
	}
	return nil
}

// prefixHas reports whether a (an addr16: IPv4 mapped) is in p.
func prefixHas(p netip.Prefix, a *addr16) bool {
	ip := netip.AddrFrom16(*a)
	if ip.Is4In6() != p.Addr().Is4() {
		return false // an IPv6 prefix holds no IPv4 client, ::/0 included
	}
	return p.Contains(ip.Unmap())
}

// drops reports whether r drops a frame it looked at, and counts it.
func (r *faultRule) drops() bool {
	n := r.frames.Add(1)
	drop := r.Blackhole
	if r.Every > 0 && n%uint64(r.Every) == 0 {
		drop = true
	}
	// Loss 0 draws no number: rand costs a few ns a frame.
	if r.Loss > 0 && rand.Float64() < r.Loss {
		drop = true
	}
	if drop {
		r.dropped.Add(1)
	}
	return drop
}

// faultConn is the verdict of the faults on a frame p of connection c in
// direction dir, before the connection's state sees it: Drop, or Forward
// to go on. A fault that acts on the frame as it leaves (the delay and
// reset families) is noted in f for faultOut.
func (b *Balancer) faultConn(set *faultSet, c *Conn, dir FaultDir, p *pkt, f *Frame) Verdict {
	r := set.rule(c.svc, c.dest, &c.in.src, dir)
	if r == nil {
		return Forward
	}
	if r.drops() {
		return b.Stats.drop(DropFault)
	}
	if r.DropFIN && p.proto == wire.ProtoTCP && p.tcpFlags()&tcpflag.FIN != 0 {
		r.dropped.Add(1)
		return b.Stats.drop(DropFault)
	}
	if r.delays() || (r.resets() && c.in.proto == TCP) {
		f.fault, f.faultConn, f.faultDir = r, c, dir
	}
	return Forward
}

// faultOut applies f's fault of the delay or reset family to the frame
// as it leaves, rewritten, with verdict v: only a forwarded frame is
// the fault's (what tapvs answers itself, a SYNPROXY SYN-ACK, is not on
// the path the fault stands for).
func (b *Balancer) faultOut(side Side, f *Frame, v Verdict) Verdict {
	if v != Forward {
		return v
	}
	r, c, dir, out := f.fault, f.faultConn, f.faultDir, side.other()
	if c.in.proto == TCP {
		if r.ResetAfter > 0 {
			b.faultState(c, r) // its timer starts at first sight
		}
		if r.ResetBytes > 0 {
			// A cut frame is sent, on the line or with its RST to follow
			// in the batch: not queued again.
			if v = b.faultBytes(r, c, dir, out, f); v != Forward || f.Follow != nil {
				return v
			}
		}
	}
	line := r.lines[lineOf(dir)]
	if line == nil {
		return Forward
	}
	if !line.put(out, f, nil) {
		if line.isStopped() {
			return Forward // the fault was cleared meanwhile: the frame goes on
		}
		return b.Stats.drop(DropFaultQueue)
	}
	return Stolen
}

// faultSYN is the verdict of the faults on a client's SYN that would open
// a connection of svc (key is its flow), before the balancer makes any
// state: Forward to go on, Drop, or Reply with the frame turned into an
// RST, as a closed port answers. The drops of the SYN's rule act on it
// later, with its connection's (faultConn).
func (b *Balancer) faultSYN(set *faultSet, svc *Service, key *tupleKey, p *pkt, f *Frame) Verdict {
	r := set.rule(svc, nil, &key.src, FaultToServer)
	if r == nil {
		return Forward
	}
	switch r.SYN {
	case SYNDrop:
		r.frames.Add(1)
		r.dropped.Add(1)
		return b.Stats.drop(DropFault)
	case SYNRefuse:
		r.frames.Add(1)
		r.refused.Add(1)
		// RFC 9293 3.10.7.1: a closed port answers a SYN with <SEQ=0>
		// <ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; the SYN counts one.
		seg := wire.Segment{
			SrcMAC: b.cfg.ClientMAC, DstMAC: [6]byte(p.eth().Src()),
			Src: key.dst, Dst: key.src, Sport: key.dport, Dport: key.sport,
			Ack: p.tcp().Seq() + 1 + uint32(len(p.tcp().Payload())), Flags: tcpflag.RST | tcpflag.ACK,
		}
		f.Len = seg.Write(f.Buf[f.Off:])
		f.plain()
		return Reply
	}
	return Forward
}

// faultStack is the verdict on a server-side frame that no connection
// holds (the stack's own: a health check's answer) from a blackholed real
// server's address.
func (b *Balancer) faultStack(set *faultSet, src *addr16) Verdict {
	r := set.bySrv[*src]
	if r == nil {
		return Pass
	}
	r.frames.Add(1)
	r.dropped.Add(1)
	return b.Stats.drop(DropFault)
}
