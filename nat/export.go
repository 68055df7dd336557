package nat

import (
	"net/netip"

	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/synproxy"
	"github.com/tapvs/tapvs/wire"
)

// A connection leaves this process as a connrec.Record and comes into
// another (a peer's connection sync, a restart that takes the table over)
// through ImportConn, which builds the Conn newConn would have built for
// it: the same service, real server, LIP and local port, the same
// checksum deltas, the same rewriter (every number tapvs shifts), SYNPROXY's
// state as Establish left it, the same last acks and what is left of its
// lifetime. The next segment of either side is translated in the new
// process to the bytes the old one would have sent.
//
// What a record does not carry: a SYNPROXY handshake the server has not
// answered yet (its held frames and kept SYN; ExportConns skips it: the
// client retransmits to whichever process has it next), the ACK storm
// guard's count (it starts again from nothing) and, under SYNPROXY, the
// handshake ACK that carried a PROXY header, kept to send again should
// the server repeat its SYN-ACK (proxyConn.ack).

// ExportConns calls yield with the record of every connection in the table
// (one per connection, whichever of its keys the walk meets first), until
// yield returns false. Each connection's atomics and rewriter are read once,
// so its record is one consistent moment of it; the table changes meanwhile
// (connections come and go) and ExportConns sees some of the changes. No
// shard lock is held while yield runs: yield may take its time (a socket
// write) and the packet path goes on. The record is ExportConns's own and
// is written again for the next connection: yield copies what it keeps.
//
// Any goroutine may call it, alongside the packet path and control changes.
func (b *Balancer) ExportConns(yield func(*connrec.Record) bool) {
	t := b.table
	var (
		conns []*Conn // one shard's, copied out under its lock
		r     connrec.Record
	)
	for i := range t.shards {
		s := &t.shards[i]
		conns = conns[:0]
		s.mu.RLock()
		for h, c := range s.m {
			if t.hash(&c.in) == h { // under its client key: each connection once
				conns = append(conns, c)
			}
		}
		for k, c := range s.overflow {
			if k == c.in {
				conns = append(conns, c)
			}
		}
		s.mu.RUnlock()
		for _, c := range conns {
			// The clock read for each: a slow yield ages the rest.
			if c.record(&r, t.now.Load()) && !yield(&r) {
				return
			}
		}
	}
}

// record writes c's record into r at now (the table's clock), reading each
// of c's atomics once. It reports false for a connection that has none:
// taken off the table, or a SYNPROXY handshake still open.
func (c *Conn) record(r *connrec.Record, now int64) bool {
	st := c.state.Load()
	if st == stDead {
		return false
	}
	*r = connrec.Record{
		Kind: connrec.KindOpen, Proto: uint8(c.in.proto), State: connrec.State(st),
		ClientAddr: connrec.ClientAddr(c.clientAddr), Version: c.version.Load(),
		Client: c.in.src, VIP: c.in.dst, LIP: c.out.dst, Server: c.out.src,
		CPort: c.in.sport, VPort: c.in.dport, LPort: c.out.dport, RPort: c.out.sport,
		Ext: connrec.ExtNextHop, NextHop: c.clientMAC,
	}
	left := (c.deadline.Load() - now) / 1e6
	r.LifetimeMS = uint32(min(max(left, 0), connrec.MaxLifetimeMS))
	if !wire.Is4(&c.in.src) {
		r.Flags |= connrec.FlagClient6
	}
	if !wire.Is4(&c.out.src) {
		r.Flags |= connrec.FlagServer6
	}
	if c.in.proto != TCP {
		return true
	}
	if c.timestamps == TimestampsRemove {
		r.Flags |= connrec.FlagTSRemove
	}
	rw := c.rewriter().Load()
	if rw == nil {
		return false // a SYNPROXY handshake the server has not answered
	}
	r.Ext |= connrec.ExtRewriter | connrec.ExtAcks
	r.Rewriter = *rw
	for dir := range c.acks {
		r.Acks.Ack[dir], r.Acks.Valid[dir] = c.lastAck(dir)
	}
	if sp := c.sp; sp != nil {
		r.Flags |= connrec.FlagSynproxy
		r.Ext |= connrec.ExtSynproxy
		r.Synproxy = connrec.Synproxy{
			ClientISN: sp.ClientISN, Cookie: sp.Cookie, ClientTSval: sp.ClientTSval, OurTSval: sp.OurTSval,
			MSS: sp.Opts.MSS, WScale: sp.Opts.WScale, OurWScale: sp.OurWScale,
			SACK: sp.Opts.SACK, TS: sp.Opts.TS, TSOn: sp.TSOn,
		}
	}
	return true
}

// ImportConn puts the connection of r (an open record) into the table as
// newConn would have made it, or, if the table has it already under an
// older version, brings that entry's state, rewriter, acks, lifetime and
// version to r's; a tombstone (a closed record) newer than the entry takes
// the entry off the table, and one of a connection not here changes
// nothing. A record that cannot be applied is refused, counted in
// Stats.ImportRefused under its reason, and changes nothing else.
//
// ImportConn is a control-plane writer: it takes the balancer's control
// lock (mu) for its whole run, as a Tx does from start to commit, so it
// runs alone among control changes (the connection's service, real server
// and LIP cannot go while it binds to them) and may be called from any
// goroutine (connsync's receiver, the takeover's loader), but not from
// within an Update's function, whose Tx holds mu already. The packet path
// runs on meanwhile: the connection is whole (rewriter, deltas, acks)
// before either of its keys is in the table.
func (b *Balancer) ImportConn(r *connrec.Record) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	reason, err := b.importConn(r)
	if err != nil {
		b.Stats.importRefused[reason].Add(1)
		return err
	}
	return nil
}

// ImportError is an import refused: the reason it is counted under, and
// what was wrong.
type ImportError struct {
	Reason ImportReason
	Err    error // connrec's check, for ImportInvalid; nil otherwise
}

func (e *ImportError) Error() string {
	if e.Err != nil {
		return "nat: import: " + e.Reason.String() + ": " + e.Err.Error()
	}
	return "nat: import: " + e.Reason.String()
}

func (e *ImportError) Unwrap() error { return e.Err }

func refuse(reason ImportReason, err error) (ImportReason, error) {
	return reason, &ImportError{Reason: reason, Err: err}
}

// importConn is ImportConn under mu.
func (b *Balancer) importConn(r *connrec.Record) (ImportReason, error) {
	if err := r.Check(); err != nil {
		return refuse(ImportInvalid, err)
	}
	if r.Kind == connrec.KindTemplate {
		return b.importTemplate(r)
	}
	proto := Protocol(r.Proto)
	id := idOf(r)
	in, out := id.in, id.out
	now := b.table.now.Load()
	if c := b.table.lookup(&in); c != nil {
		reason, err := b.importOver(c, r, &out)
		if err == nil && r.Kind == connrec.KindClosed {
			b.tombs.add(id, r.Version, now)
		}
		return reason, err
	}
	if r.Kind == connrec.KindClosed {
		// Nothing here to close: its open record may yet come, late.
		b.tombs.add(id, r.Version, now)
		return 0, nil
	}
	if b.tombs.buries(id, r.Version, now) {
		return refuse(ImportStale, nil) // it ended already
	}
	svc := b.set.Load().service(svcKey{addr: r.VIP, port: r.VPort, proto: proto})
	if svc == nil {
		svc = b.set.Load().match(&r.VIP, proto, r.VPort) // a match service (match.go)
	}
	if svc == nil {
		svc = b.set.Load().service(svcKey{addr: r.VIP, proto: proto}) // an all-ports service (persist.go)
	}
	if svc == nil {
		return refuse(ImportUnknownService, nil)
	}
	var dest *Dest
	for _, d := range svc.Dests() {
		if d.a16 == r.Server && (d.Port == r.RPort || d.Port == 0) {
			dest = d
			break
		}
	}
	if dest == nil {
		return refuse(ImportUnknownDest, nil)
	}
	var la *LocalAddr
	for _, l := range svc.LocalAddrs() {
		if l.a16 == r.LIP {
			la = l
			break
		}
	}
	own := la != nil
	if la == nil && b.backups[r.LIP] {
		la = b.backupLA(r.LIP) // a shadow of a peer's connection
	}
	if la == nil || r.LPort < b.cfg.PortMin || r.LPort > b.cfg.PortMax {
		return refuse(ImportUnknownLIP, nil)
	}
	if b.table.lookup(&out) != nil {
		return refuse(ImportConflict, nil)
	}
	// Without a next hop (a peer's record: its hop is on its own link)
	// the client side's is this box's (Balancer.toClient).
	c := &Conn{in: in, out: out, svc: svc, dest: dest, laddr: la,
		clientAddr: ClientAddr(r.ClientAddr), timestamps: TimestampsTranslate, clientMAC: r.NextHop}
	// On a LIP of this instance's own (a takeover's table, or a peer's
	// copy of what this instance had before it restarted) this instance
	// owns it and sends it from now on; on a backup LIP it is a shadow.
	c.feed = b.feed
	c.watch = &b.watch
	c.shadow.Store(!own)
	if r.Flags&connrec.FlagTSRemove != 0 {
		c.timestamps = TimestampsRemove
	}
	c.version.Store(r.Version)
	if proto == TCP {
		c.pp = newProxyConn(c.clientAddr, c)
		if c.pp.len() != r.Rewriter.Insert {
			return refuse(ImportInvalid, nil) // a PROXY header of another length than this process writes
		}
		rw := r.Rewriter
		if r.Flags&connrec.FlagSynproxy != 0 {
			c.sp = establishedState(&r.Synproxy)
			c.sp.Rewriter().Store(&rw)
		} else {
			c.rw.Store(&rw)
		}
		c.storeAcks(&r.Acks)
	}
	c.prepare()
	if b.table.count.Add(1) > b.table.max {
		b.table.count.Add(-1)
		return refuse(ImportTableFull, nil)
	}
	span := uint32(b.cfg.PortMax-b.cfg.PortMin) + 1
	idx := uint32(r.LPort - b.cfg.PortMin)
	pm := dest.portMap(la, span)
	if !pm.claim(idx) {
		b.table.count.Add(-1)
		return refuse(ImportConflict, nil)
	}
	// The reply key, as bind claims it; a quarantined tuple is no bar: the
	// connection on it is live elsewhere. A server segment that finds the
	// connection by it before enter counts it is translated, but moves no
	// state and no counter (stDead's rule), so enter's counts stand.
	c.state.Store(stDead)
	if b.table.insert(&c.out, c, false) != c {
		pm.put(idx)
		b.table.count.Add(-1)
		return refuse(ImportConflict, nil)
	}
	la.inUse.Add(1)
	if dest.mac.Load() == 0 && b.link != nil {
		b.link.Resolve(dest)
	}
	if b.enter(c, uint32(r.State), b.deadlineIn(r)) != c {
		return refuse(ImportConflict, nil) // a client segment made it meanwhile
	}
	b.Stats.imported.Add(1)
	return 0, nil
}

// importOver applies r to c, the table's entry of r's client tuple.
func (b *Balancer) importOver(c *Conn, r *connrec.Record, out *tupleKey) (ImportReason, error) {
	if int32(r.Version-c.version.Load()) <= 0 {
		return refuse(ImportStale, nil)
	}
	if c.out != *out || (c.sp != nil) != (r.Flags&connrec.FlagSynproxy != 0) || uint8(c.clientAddr) != uint8(r.ClientAddr) {
		return refuse(ImportConflict, nil) // the same client tuple, another connection
	}
	if r.Kind == connrec.KindClosed {
		if b.release(c) {
			b.Stats.imported.Add(1)
		}
		return 0, nil
	}
	if c.in.proto == TCP {
		if c.sp != nil && !c.sp.Established() {
			return refuse(ImportConflict, nil) // its handshake is this process's own
		}
		rw := r.Rewriter
		c.rewriter().Store(&rw)
		c.storeAcks(&r.Acks)
	}
	c.version.Store(r.Version)
	st := c.state.Load()
	c.setState(st, uint32(r.State))
	d := b.deadlineIn(r)
	old := c.deadline.Swap(d)
	if d < old {
		b.table.wheel.advance(c, d)
	}
	b.Stats.imported.Add(1)
	return 0, nil
}

// backupLA is the LocalAddr shadows of connections on the backup LIP a
// are bound to: made once, kept while the balancer lives (a handful, one
// per backup LIP ever set), so that a LIP set again finds its port maps.
// b.mu is held.
func (b *Balancer) backupLA(a addr16) *LocalAddr {
	la := b.backupLAs[a]
	if la == nil {
		if b.backupLAs == nil {
			b.backupLAs = map[addr16]*LocalAddr{}
		}
		la = &LocalAddr{Addr: netip.AddrFrom16(a).Unmap(), a16: a}
		b.backupLAs[a] = la
	}
	return la
}

// deadlineIn is the table-clock deadline of r's lifetime left.
func (b *Balancer) deadlineIn(r *connrec.Record) int64 {
	return b.table.now.Load() + int64(r.LifetimeMS)*1e6
}

// storeAcks sets c's last acks from a record's.
func (c *Conn) storeAcks(a *connrec.Acks) {
	for dir := range c.acks {
		var v uint64
		if a.Valid[dir] {
			v = ackValid | uint64(a.Ack[dir])
		}
		c.acks[dir].Store(v)
	}
}

// establishedState is the synproxy.State of a proxied connection as
// Establish left it, from its record (the caller publishes the rewriter).
func establishedState(sp *connrec.Synproxy) *synproxy.State {
	return &synproxy.State{
		Opts:      synproxy.Options{MSS: sp.MSS, WScale: sp.WScale, SACK: sp.SACK, TS: sp.TS},
		ClientISN: sp.ClientISN, Cookie: sp.Cookie, TSOn: sp.TSOn,
		ClientTSval: sp.ClientTSval, OurTSval: sp.OurTSval, OurWScale: sp.OurWScale,
	}
}
