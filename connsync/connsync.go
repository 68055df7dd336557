// Package connsync carries connection records between the instances of a
// tapvs cluster, so that an instance can continue a connection another
// one opened (it died, or the router moved the flow). It is the transport
// only: a record is opaque bytes here (package connrec lays it out, and
// the daemon wires Config.RecordLen, Apply and Copy to the table).
//
// Records travel in UDP datagrams between the instances' own addresses,
// unicast to every configured peer, batched (a datagram is sent when full
// or every FlushInterval) and rate-bounded. Each datagram has a 32-byte
// header (type, key id, sender id, boot epoch, sequence number, record
// count, payload length) and a 16-byte HMAC-SHA256 tag under the cluster's
// key (package clusterauth, as handoff). A receiver refuses a datagram
// whole, counted by reason, cheapest check first: source address, lengths,
// magic and version, key id, tag, sender id, boot epoch, the sequence
// number against a sliding replay window per sender (RFC 6479), then the
// records. Nothing of a refused datagram is applied.
//
// There are no acks. HELLOs every HelloInterval say an instance is alive
// (dead after DeadAfter of silence) and how many UPDATE datagrams it has
// sent; a receiver that got fewer than the previous HELLO announced lost
// some and asks that peer for a full copy (COPY_REQ); with JoinCopy, so
// does an instance when it first hears a peer after its start. The copy streams as
// COPY_DATA datagrams, then COPY_END with their count; a copy that ends
// short, or goes silent for CopyTimeout, is asked again under a new nonce,
// at most CopyRetries times. Records may arrive twice and in any order:
// their versions (package connrec) decide which is newer.
package connsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/clusterauth"
)

// PeerID is an instance's id in the cluster, carried in every datagram.
type PeerID = uint16

// Peer is another instance: the address it sends from and listens on, and
// its id.
type Peer struct {
	Addr netip.AddrPort
	ID   PeerID
}

// Config is a Syncer's configuration. Zero durations and sizes take the
// defaults named.
type Config struct {
	Conn   *net.UDPConn   // the socket, owned by the Syncer from New on; nil: bind Listen
	Listen netip.AddrPort // this instance's address, when Conn is nil
	ID     PeerID         // this instance's id
	Peers  []Peer
	Keys   []Key // the first signs; all are accepted

	MaxDatagram   int           // the largest datagram sent or accepted: 1472 (a 1500 MTU less IPv4 and UDP)
	FlushInterval time.Duration // how long a partly filled datagram waits: 10 ms
	Rate          int           // UPDATE and COPY_DATA datagrams per second (each to every peer): 10000
	QueueLen      int           // UPDATE datagrams waiting to be sent; past it, records are dropped: 256
	HelloInterval time.Duration // 250 ms
	DeadAfter     time.Duration // a peer not heard from for this long is dead: 1 s
	CopyTimeout   time.Duration // a copy silent this long is asked again: 1 s
	CopyRetries   int           // how many times: 3
	// JoinCopy asks each peer for a full copy the first time it is heard
	// from after this instance starts (a new or restarted instance needs
	// the others' tables); the daemon sets it.
	JoinCopy bool

	// RecordLen returns the length of the record at the start of b, or an
	// error if it does not parse (connrec.Decode's n and err). Required.
	RecordLen func(b []byte) (int, error)
	// Apply receives each record of a verified UPDATE or COPY_DATA, in a
	// buffer reused once it returns, from the receiving goroutine.
	Apply func(from PeerID, rec []byte)
	// PeerState is told when a peer becomes alive or dead.
	PeerState func(from PeerID, alive bool)
	// Copy walks the records a full copy sends to a peer that asks for one,
	// until yield returns false. It runs in its own goroutine, one per
	// requesting peer at a time.
	Copy func(yield func(rec []byte) bool)
	// CopyDone is told when a copy asked of a peer completes (ok) or is
	// given up after CopyRetries.
	CopyDone func(from PeerID, ok bool)

	Now func() time.Time // the clock: time.Now
	Log *slog.Logger

	manual bool                                                   // tests: no ticking goroutine, the test calls tick
	hook   func(d []byte, to netip.AddrPort, send func(d []byte)) // tests: sees every datagram sent (drops, delays)
}

// Stats are a Syncer's counters.
type Stats struct {
	Queued, Dropped, TooBig uint64 // records: batched; not, the queue full; not, longer than a datagram holds
	Sent, SentRecords       uint64 // UPDATE datagrams sent (each to every peer), and their records
	SendErrors              uint64 // datagrams the kernel refused
	Received, Applied       uint64 // datagrams accepted; records given to Apply
	// UDP payload bytes of every datagram the kernel took (each type, each
	// peer: what sync costs the link), and of every datagram accepted.
	SentBytes, ReceivedBytes uint64
	Lost                     uint64 // UPDATE datagrams peers announced and never sent here
	Restarts                 uint64 // peers seen with a newer boot epoch
	CopiesAsked              uint64 // COPY_REQs sent, retries included
	CopiesDone, CopiesFail   uint64 // copies asked of peers, completed and given up
	CopiesServed, CopyBusy   uint64 // copies sent to peers; requests refused as one was running
	Refused                  map[string]uint64
}

// Syncer sends and receives connection records.
type Syncer struct {
	cfg        Config
	conn       *net.UDPConn
	addrs      []netip.AddrPort // the peers' addresses, by index
	epoch      uint64
	maxPayload int
	bucket     clusterauth.Bucket
	done       chan struct{} // closed by Close
	closeOnce  sync.Once
	wg         sync.WaitGroup

	// qmu guards the batch being filled, the full ones and the free
	// buffers: Queue (any goroutine) and the ticker meet here.
	qmu   sync.Mutex
	cur   *dgram
	ready []*dgram
	free  []*dgram

	pending []*dgram // the ticker's: datagrams taken from ready, waiting for tokens

	// sendMu guards the sealer, the scratch datagram and the sequence
	// number: every message is numbered in the order it is written.
	sendMu  sync.Mutex
	sealer  sealer
	scratch []byte
	seq     uint64

	// cbMu serializes PeerState and CopyDone with the state changes that
	// cause them; it is taken before mu.
	cbMu sync.Mutex
	// mu guards peers and lastHello.
	mu        sync.Mutex
	peers     []peerState
	lastHello time.Time

	queued, dropped, tooBig, sent, sentRecords, sendErrors, received, applied, lost, restarts atomic.Uint64
	copiesAsked, copiesDone, copiesFail, copiesServed, copyBusy                               atomic.Uint64
	updatesSent, sentBytes, receivedBytes                                                     atomic.Uint64
	refused                                                                                   *clusterauth.Refusals
}

// dgram is an UPDATE datagram being filled: header room, then records.
type dgram struct {
	b     []byte
	count uint16
}

// peerState is what this instance knows of a peer.
type peerState struct {
	win       window
	alive     bool
	lastHeard time.Time
	// Loss: UPDATE datagrams received this epoch, the count the previous
	// HELLO announced, and the losses already counted.
	updates, announced, lostSeen uint64
	helloHeard                   bool        // a HELLO of this epoch came
	joined                       uint64      // the epoch this peer was first heard in (JoinCopy asked it then)
	copy                         copyState   // the copy asked of this peer
	serving                      atomic.Bool // a copy is being sent to this peer
}

// copyState is a copy asked of a peer.
type copyState struct {
	active            bool
	nonce             uint64
	tries             int
	last              time.Time // asked, or its last datagram came
	dgrams, recs      uint32    // COPY_DATA received under nonce, and their records
	ended             bool      // COPY_END received, announcing:
	wantDgrams, wantR uint32
}

// New starts a Syncer.
func New(cfg Config) (*Syncer, error) {
	if cfg.RecordLen == nil {
		return nil, errors.New("connsync: no RecordLen")
	}
	if len(cfg.Keys) == 0 {
		return nil, errors.New("connsync: no key")
	}
	s := &Syncer{done: make(chan struct{}), refused: clusterauth.NewRefusals(refusals[:], reasons[:])}
	var o opener
	for i, k := range cfg.Keys {
		if len(k.Secret) != clusterauth.KeyLen {
			return nil, fmt.Errorf("connsync: key %d (id %d) of %d bytes, want %d", i, k.ID, len(k.Secret), clusterauth.KeyLen)
		}
		if o.macs[k.ID] != nil {
			return nil, fmt.Errorf("connsync: key id %d twice", k.ID)
		}
		o.macs[k.ID] = clusterauth.NewMAC(k.Secret)
	}
	s.sealer = sealer{id: cfg.Keys[0].ID, mac: clusterauth.NewMAC(cfg.Keys[0].Secret)}
	cfg.MaxDatagram = def(cfg.MaxDatagram, 1472)
	if cfg.MaxDatagram < Overhead+nonceLen+1 || cfg.MaxDatagram > MaxDatagram {
		return nil, fmt.Errorf("connsync: max datagram %d, want %d..%d", cfg.MaxDatagram, Overhead+nonceLen+1, MaxDatagram)
	}
	o.max = cfg.MaxDatagram
	cfg.FlushInterval = def(cfg.FlushInterval, 10*time.Millisecond)
	cfg.Rate = def(cfg.Rate, 10000)
	cfg.QueueLen = def(cfg.QueueLen, 256)
	cfg.HelloInterval = def(cfg.HelloInterval, 250*time.Millisecond)
	cfg.DeadAfter = def(cfg.DeadAfter, time.Second)
	cfg.CopyTimeout = def(cfg.CopyTimeout, time.Second)
	cfg.CopyRetries = def(cfg.CopyRetries, 3)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	for _, p := range cfg.Peers {
		s.addrs = append(s.addrs, netip.AddrPortFrom(p.Addr.Addr().Unmap(), p.Addr.Port()))
	}
	s.cfg = cfg
	s.maxPayload = cfg.MaxDatagram - Overhead
	s.peers = make([]peerState, len(cfg.Peers))
	now := cfg.Now()
	s.epoch = uint64(now.UnixNano())
	s.bucket.Init(cfg.Rate, now)
	s.scratch = make([]byte, cfg.MaxDatagram)
	n := cfg.QueueLen + 1 // the one being filled
	s.ready = make([]*dgram, 0, n)
	s.pending = make([]*dgram, 0, n)
	for range n {
		s.free = append(s.free, &dgram{b: make([]byte, 0, cfg.MaxDatagram)})
	}
	s.conn = cfg.Conn
	if s.conn == nil {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Listen))
		if err != nil {
			return nil, fmt.Errorf("connsync: listen %s: %w", cfg.Listen, err)
		}
		s.conn = c
	}
	s.wg.Add(1)
	go s.receive(o)
	if !cfg.manual {
		s.wg.Add(1)
		go s.ticker()
	}
	cfg.Log.Info("connsync: started", "listen", s.conn.LocalAddr(), "id", cfg.ID, "peers", len(cfg.Peers), "epoch", s.epoch)
	return s, nil
}

func def[T int | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// Queue batches rec (copied) for every peer. It does not block on the
// network and allocates nothing; when the queue is full the record is
// dropped and counted (a later refresh or copy repairs it). It takes qmu
// for the copy: it runs once per connection change, not per packet.
func (s *Syncer) Queue(rec []byte) {
	if len(rec) == 0 || len(rec) > s.maxPayload {
		s.tooBig.Add(1)
		return
	}
	s.qmu.Lock()
	// The count cannot overflow: a record is at least a byte, and a
	// datagram holds fewer than 65536.
	if c := s.cur; c != nil && len(c.b)+len(rec) > cap(c.b) {
		s.ready = append(s.ready, c)
		s.cur = nil
	}
	if s.cur == nil {
		if len(s.free) == 0 {
			s.qmu.Unlock()
			s.dropped.Add(1)
			return
		}
		s.cur = s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		s.cur.b, s.cur.count = s.cur.b[:Overhead], 0
	}
	s.cur.b = append(s.cur.b, rec...)
	s.cur.count++
	// Counted before the lock goes: the ticker may send the record at
	// once, and a peer's applying it must never run ahead of the count.
	s.queued.Add(1)
	s.qmu.Unlock()
}

func (s *Syncer) ticker() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.tick(s.cfg.Now())
		}
	}
}

// tick does the periodic work, from one goroutine: it sends the batched
// UPDATEs the rate allows, a HELLO when due, declares silent peers dead
// and asks again for copies gone silent.
func (s *Syncer) tick(now time.Time) {
	s.qmu.Lock()
	s.pending = append(s.pending, s.ready...)
	s.ready = s.ready[:0]
	if s.cur != nil {
		s.pending = append(s.pending, s.cur)
		s.cur = nil
	}
	s.qmu.Unlock()
	n := 0
	for _, d := range s.pending {
		if !s.bucket.Take(now) {
			break
		}
		s.sendMu.Lock()
		s.broadcast(s.seal(d.b, Update, d.count))
		s.sendMu.Unlock()
		s.sent.Add(1)
		s.updatesSent.Add(1)
		s.sentRecords.Add(uint64(d.count))
		n++
	}
	if n > 0 {
		s.qmu.Lock()
		s.free = append(s.free, s.pending[:n]...)
		s.qmu.Unlock()
		s.pending = s.pending[:copy(s.pending, s.pending[n:])]
	}

	s.cbMu.Lock()
	defer s.cbMu.Unlock()
	s.mu.Lock()
	if now.Sub(s.lastHello) >= s.cfg.HelloInterval {
		s.lastHello = now
		s.sendMu.Lock()
		p := s.scratch[:Overhead+helloLen]
		binary.BigEndian.PutUint64(p[Overhead:], s.updatesSent.Load())
		s.broadcast(s.seal(p, Hello, 0))
		s.sendMu.Unlock()
	}
	var dead, failed []PeerID
	for i := range s.peers {
		p := &s.peers[i]
		if p.alive && now.Sub(p.lastHeard) > s.cfg.DeadAfter {
			p.alive = false
			dead = append(dead, s.cfg.Peers[i].ID)
		}
		if c := &p.copy; c.active && now.Sub(c.last) > s.cfg.CopyTimeout {
			if c.tries > s.cfg.CopyRetries {
				c.active = false
				s.copiesFail.Add(1)
				failed = append(failed, s.cfg.Peers[i].ID)
				s.cfg.Log.Warn("connsync: copy given up", "peer", s.cfg.Peers[i].ID, "tries", c.tries, "datagrams", c.dgrams, "of", c.wantDgrams)
			} else {
				s.askCopy(i, now)
			}
		}
	}
	s.mu.Unlock()
	for _, id := range dead {
		if s.cfg.PeerState != nil {
			s.cfg.PeerState(id, false)
		}
	}
	for _, id := range failed {
		if s.cfg.CopyDone != nil {
			s.cfg.CopyDone(id, false)
		}
	}
}

// RequestCopy asks peer for a full copy of its records (a new one if one
// is running).
func (s *Syncer) RequestCopy(peer PeerID) error {
	for i, p := range s.cfg.Peers {
		if p.ID == peer {
			s.mu.Lock()
			s.peers[i].copy.tries = 0
			s.askCopy(i, s.cfg.Now())
			s.mu.Unlock()
			return nil
		}
	}
	return fmt.Errorf("connsync: copy from %d: not a peer", peer)
}

// askCopy sends peer i a COPY_REQ under a new nonce: datagrams of an
// earlier one no longer count towards completion. s.mu is held.
func (s *Syncer) askCopy(i int, now time.Time) {
	c := &s.peers[i].copy
	c.active, c.nonce, c.last, c.ended = true, rand.Uint64(), now, false
	c.tries++
	c.dgrams, c.recs, c.wantDgrams, c.wantR = 0, 0, 0, 0
	s.copiesAsked.Add(1)
	s.sendMu.Lock()
	p := s.scratch[:Overhead+nonceLen]
	binary.BigEndian.PutUint64(p[Overhead:], c.nonce)
	s.sendTo(s.seal(p, CopyReq, 0), s.addrs[i])
	s.sendMu.Unlock()
}

// seal numbers and seals d (its payload in place). s.sendMu is held.
func (s *Syncer) seal(d []byte, t Type, count uint16) []byte {
	s.seq++
	return s.sealer.seal(d, Header{Type: t, Sender: s.cfg.ID, Epoch: s.epoch, Seq: s.seq, Count: count})
}

func (s *Syncer) broadcast(d []byte) {
	for _, a := range s.addrs {
		s.sendTo(d, a)
	}
}

func (s *Syncer) sendTo(d []byte, to netip.AddrPort) {
	if s.cfg.hook != nil {
		s.cfg.hook(d, to, func(d []byte) { s.write(d, to) })
		return
	}
	s.write(d, to)
}

func (s *Syncer) write(d []byte, to netip.AddrPort) {
	if _, err := s.conn.WriteToUDPAddrPort(d, to); err != nil {
		s.sendErrors.Add(1)
		return
	}
	s.sentBytes.Add(uint64(len(d)))
}

// serveCopy sends peer i the records cfg.Copy walks, as COPY_DATA
// datagrams under nonce, paced by the rate, then COPY_END.
func (s *Syncer) serveCopy(i int, nonce uint64) {
	defer s.wg.Done()
	defer s.peers[i].serving.Store(false)
	buf := make([]byte, Overhead+nonceLen, s.cfg.MaxDatagram)
	binary.BigEndian.PutUint64(buf[Overhead:], nonce)
	var count uint16
	var dgrams, recs uint32
	flush := func() bool {
		for !s.bucket.Take(s.cfg.Now()) {
			select {
			case <-s.done:
				return false
			case <-time.After(s.cfg.FlushInterval):
			}
		}
		s.sendMu.Lock()
		s.sendTo(s.seal(buf, CopyData, count), s.addrs[i])
		s.sendMu.Unlock()
		dgrams++
		recs += uint32(count)
		buf, count = buf[:Overhead+nonceLen], 0
		return true
	}
	stopped := false
	if s.cfg.Copy != nil {
		s.cfg.Copy(func(rec []byte) bool {
			if len(rec) == 0 || len(rec) > s.maxPayload-nonceLen {
				s.tooBig.Add(1)
				return true
			}
			if len(buf)+len(rec) > cap(buf) {
				if !flush() {
					stopped = true
					return false
				}
			}
			buf = append(buf, rec...)
			count++
			return true
		})
	}
	if stopped || count > 0 && !flush() {
		return
	}
	s.sendMu.Lock()
	p := s.scratch[:Overhead+copyEndLen]
	binary.BigEndian.PutUint64(p[Overhead:], nonce)
	binary.BigEndian.PutUint32(p[Overhead+8:], dgrams)
	binary.BigEndian.PutUint32(p[Overhead+12:], recs)
	s.sendTo(s.seal(p, CopyEnd, 0), s.addrs[i])
	s.sendMu.Unlock()
	s.copiesServed.Add(1)
}

// receive reads, checks and delivers datagrams until Close.
func (s *Syncer) receive(o opener) {
	defer s.wg.Done()
	buf := make([]byte, s.cfg.MaxDatagram+1) // one more: a longer datagram is seen as longer
	ends := make([]int, 0, 64)
	clusterauth.ReadLoop(s.conn, buf, func(b []byte, from netip.AddrPort) {
		var err error
		if ends, err = s.accept(&o, b, from, ends[:0]); err != nil {
			s.refused.Count(err)
		}
	})
}

// accept checks one datagram in the order of the package's comment, then
// updates the sender's state and delivers what it carries.
func (s *Syncer) accept(o *opener, b []byte, from netip.AddrPort, ends []int) ([]int, error) {
	i := clusterauth.PeerIndex(s.addrs, from)
	if i < 0 {
		return ends, ErrNotPeer // before the tag costs a hash
	}
	h, payload, err := o.open(b)
	if err != nil {
		return ends, err
	}
	peer := s.cfg.Peers[i].ID
	if h.Sender != peer {
		return ends, ErrNotPeer
	}
	// Only this goroutine changes windows: what is checked here still
	// holds when it is marked below.
	s.mu.Lock()
	w := s.peers[i].win
	s.mu.Unlock()
	if h.Epoch < w.epoch {
		return ends, ErrStaleEpoch
	}
	if h.Epoch == w.epoch && !w.fresh(h.Seq) {
		return ends, ErrReplay
	}
	if ends, err = body(h, payload, s.cfg.RecordLen, ends); err != nil {
		return ends, err
	}
	now := s.cfg.Now()
	s.received.Add(1)
	s.receivedBytes.Add(uint64(len(b)))

	s.cbMu.Lock()
	s.mu.Lock()
	p := &s.peers[i]
	if h.Epoch > p.win.epoch {
		if p.win.epoch != 0 {
			s.restarts.Add(1)
			s.cfg.Log.Info("connsync: peer restarted", "peer", peer, "epoch", h.Epoch)
		}
		p.win = window{epoch: h.Epoch}
		p.updates, p.announced, p.lostSeen, p.helloHeard = 0, 0, 0, false
	}
	p.win.mark(h.Seq)
	p.lastHeard = now
	if p.joined == 0 {
		p.joined = h.Epoch
		if s.cfg.JoinCopy {
			s.askCopy(i, now)
		}
	}
	wasAlive := p.alive
	p.alive = true
	recs := payload
	deliver, copyDone := false, false
	switch h.Type {
	case Update:
		p.updates++
		deliver = true
	case Hello:
		if sent := binary.BigEndian.Uint64(payload); !p.helloHeard && p.joined == h.Epoch && s.cfg.JoinCopy {
			// What the peer sent before this instance listened is not
			// loss: the join copy holds it.
			p.helloHeard = true
			p.announced = sent
			p.lostSeen = sent - min(sent, p.updates)
			break
		}
		p.helloHeard = true
		// Every UPDATE sent before the previous HELLO (an interval ago)
		// should be here by now; one that is not was lost, and a copy
		// repairs it.
		if lost := p.announced - min(p.announced, p.updates+p.lostSeen); lost > 0 {
			p.lostSeen += lost
			s.lost.Add(lost)
			if !p.copy.active {
				p.copy.tries = 0
				s.askCopy(i, now)
			}
		}
		p.announced = max(p.announced, binary.BigEndian.Uint64(payload))
	case CopyReq:
		if p.serving.CompareAndSwap(false, true) {
			s.wg.Add(1)
			go s.serveCopy(i, binary.BigEndian.Uint64(payload))
		} else {
			s.copyBusy.Add(1)
		}
	case CopyData:
		recs = payload[nonceLen:]
		for k := range ends {
			ends[k] -= nonceLen
		}
		deliver = true
		if c := &p.copy; c.active && binary.BigEndian.Uint64(payload) == c.nonce {
			c.dgrams++
			c.recs += uint32(h.Count)
			c.last = now
			copyDone = c.complete()
		}
	case CopyEnd:
		if c := &p.copy; c.active && binary.BigEndian.Uint64(payload) == c.nonce {
			c.ended = true
			c.wantDgrams = binary.BigEndian.Uint32(payload[8:])
			c.wantR = binary.BigEndian.Uint32(payload[12:])
			c.last = now
			copyDone = c.complete()
		}
	}
	if copyDone {
		p.copy.active = false
		s.copiesDone.Add(1)
	}
	s.mu.Unlock()
	if !wasAlive && s.cfg.PeerState != nil {
		s.cfg.PeerState(peer, true)
	}
	s.cbMu.Unlock()

	if deliver && s.cfg.Apply != nil {
		start := 0
		for _, end := range ends {
			s.cfg.Apply(peer, recs[start:end])
			start = end
		}
		s.applied.Add(uint64(len(ends)))
	}
	// After the records: a copy is done when the last of them is applied.
	if copyDone && s.cfg.CopyDone != nil {
		s.cbMu.Lock()
		s.cfg.CopyDone(peer, true)
		s.cbMu.Unlock()
	}
	return ends, nil
}

// complete reports whether every COPY_DATA COPY_END announced is here. A
// short one waits for stragglers (reordered) until CopyTimeout.
func (c *copyState) complete() bool {
	return c.ended && c.dgrams == c.wantDgrams && c.recs == c.wantR
}

// Stats reads the counters.
func (s *Syncer) Stats() Stats {
	st := Stats{Queued: s.queued.Load(), Dropped: s.dropped.Load(), TooBig: s.tooBig.Load(),
		Sent: s.sent.Load(), SentRecords: s.sentRecords.Load(), SendErrors: s.sendErrors.Load(),
		Received: s.received.Load(), Applied: s.applied.Load(), SentBytes: s.sentBytes.Load(), ReceivedBytes: s.receivedBytes.Load(), Lost: s.lost.Load(), Restarts: s.restarts.Load(),
		CopiesAsked: s.copiesAsked.Load(), CopiesDone: s.copiesDone.Load(), CopiesFail: s.copiesFail.Load(),
		CopiesServed: s.copiesServed.Load(), CopyBusy: s.copyBusy.Load(), Refused: s.refused.Load()}
	return st
}

// Epoch is this instance's boot epoch.
func (s *Syncer) Epoch() uint64 { return s.epoch }

// Close stops sending and receiving, and waits for the goroutines
// (copies being served stop at their next datagram).
func (s *Syncer) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.conn.Close()
	})
	s.wg.Wait()
}
