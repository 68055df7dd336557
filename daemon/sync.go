package daemon

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/connsync"
	"github.com/tapvs/tapvs/metrics"
	"github.com/tapvs/tapvs/nat"
)

// connSync wires connection sync (the sync: section) to the balancer:
// its goroutine drains the balancer's change feed (nat.DrainChanges: this
// instance's connections that reached ESTABLISHED, stepped on or ended)
// into connsync's queue every drainEvery, and has the balancer feed its
// established connections again once every refreshInterval
// (nat.Balancer.Refresh), before their peers' shadows expire; connsync's receiver applies the
// peers' records through ImportConn (the balancer's control lock, as a Tx,
// so they serialise with configuration changes); a peer's full copy is
// the table as ExportConns walks it. Records on a peer's LIP that this
// instance backs up (bgp: backup_lips, Balancer.SetBackupLIPs) are kept as
// shadows: they send nothing, and continue the connection when its
// segments come here.
//
// An instance starts joining: it announces no route (cluster.pass) until
// it holds the table, so that the router moves no flow here, nor the
// replies to its LIPs, before their connections are here (join).
type connSync struct {
	bal  *nat.Balancer
	s    *connsync.Syncer
	log  *slog.Logger
	stop chan struct{}
	wg   sync.WaitGroup

	peers atomic.Int64 // peers alive
	buf   []byte       // the drain's record buffer; the run goroutine's
	join  join
}

// joinDiscover is how long a starting instance listens for its peers
// before it takes those it has not heard for not running: connsync's
// DeadAfter (a running peer sends a HELLO every 250 ms). The first
// instance of a cluster joins after it.
const joinDiscover = time.Second

// join is the joining state: the peers heard since the start whose full
// copy (connsync's JoinCopy) has not completed yet. The instance has
// joined once every peer heard has sent its copy (or it was given up) and
// either every configured peer was heard or joinDiscover has passed; or,
// whatever the copies, once the join timeout (sync.join_timeout) has.
type join struct {
	start   time.Time
	timeout time.Duration
	peers   int                      // configured
	joined  atomic.Bool              // read by the announcer
	onJoin  func()                   // told once, when joined: the announcer announces at once
	mu      sync.Mutex               // guards what follows: connsync's callbacks and the run goroutine meet here
	waiting map[connsync.PeerID]bool // alive, copy not complete
	done    map[connsync.PeerID]bool // copy completed (true) or given up (false)
}

// Joined reports whether the instance holds the table: its routes may be
// announced.
func (cs *connSync) Joined() bool { return cs.join.joined.Load() }

// drainEvery is how often the change feed is drained: connsync's own
// flush interval, so a change waits at most two of them.
const drainEvery = 10 * time.Millisecond

// syncFeed is the change feed's ring size (nat.Config.SyncFeed), each of
// 16: 64 Ki changes between two drains (10 ms) at most, 6.5 M changes a
// second; past it changes are dropped and counted.
const syncFeed = 4096

// syncFeedLen is nat.Config.SyncFeed for cfg: a feed only with sync.
func syncFeedLen(cfg *config.Config) int {
	if cfg.Sync == nil {
		return 0
	}
	return syncFeed
}

// startSync starts connection sync for cfg.Sync on bal, joining: onJoin
// is called once it has joined (from its goroutine).
func startSync(cfg *config.Sync, bal *nat.Balancer, log *slog.Logger, onJoin func()) (*connSync, error) {
	cs := &connSync{bal: bal, log: log, stop: make(chan struct{}), buf: make([]byte, 0, connrec.MaxLen)}
	cs.join = join{start: time.Now(), timeout: cfg.JoinTimeout, peers: len(cfg.Peers), onJoin: onJoin,
		waiting: map[connsync.PeerID]bool{}, done: map[connsync.PeerID]bool{}}
	if cs.join.timeout <= 0 {
		cs.join.timeout = config.DefaultJoinTimeout // a configuration a program built
	}
	s, err := connsync.New(cs.config(cfg, log))
	if err != nil {
		return nil, err
	}
	cs.s = s
	cs.wg.Add(1)
	go cs.run()
	return cs, nil
}

// config is connsync's configuration for cfg, its hooks cs's.
func (cs *connSync) config(cfg *config.Sync, log *slog.Logger) connsync.Config {
	return connsync.Config{
		Listen: cfg.Listen, ID: cfg.ID, Peers: cfg.Peers, Keys: cfg.Keys, Rate: cfg.Rate,
		JoinCopy:  true,
		RecordLen: recordLen,
		Apply:     cs.apply,
		PeerState: cs.peerState,
		Copy:      cs.copy,
		CopyDone:  cs.copyDone,
		Log:       log,
	}
}

func recordLen(b []byte) (int, error) {
	_, n, err := connrec.Decode(b)
	return n, err
}

// run drains the change feed into connsync until Close, and refreshes
// the table a few shards a tick, the whole of it every refreshInterval.
func (cs *connSync) run() {
	defer cs.wg.Done()
	t := time.NewTicker(drainEvery)
	defer t.Stop()
	var tick, ticks, shard int
	for {
		select {
		case <-cs.stop:
			return
		case <-t.C:
		}
		if shard == 0 && tick == 0 {
			ticks = max(1, int(refreshInterval(cs.bal)/drainEvery))
		}
		tick++
		for due := tick * nat.RefreshShards / ticks; shard < due && shard < nat.RefreshShards; shard++ {
			cs.bal.Refresh(shard)
		}
		if shard >= nat.RefreshShards {
			shard, tick = 0, 0
		}
		cs.drain()
		if !cs.join.joined.Load() {
			cs.checkJoin(time.Now())
		}
	}
}

// checkJoin ends the joining state when the table is here (join's rule),
// says so in the log and tells onJoin.
func (cs *connSync) checkJoin(now time.Time) {
	j := &cs.join
	j.mu.Lock()
	if j.joined.Load() { // once: the sync goroutine and a test's clock may both check
		j.mu.Unlock()
		return
	}
	took := now.Sub(j.start)
	heardAll := len(j.done)+len(j.waiting) >= j.peers
	copied := len(j.waiting) == 0 && (heardAll || took >= joinDiscover)
	if !copied && took < j.timeout {
		j.mu.Unlock()
		return
	}
	var given, waiting []connsync.PeerID
	for p, ok := range j.done {
		if !ok {
			given = append(given, p)
		}
	}
	for p := range j.waiting {
		waiting = append(waiting, p)
	}
	copies := len(j.done)
	j.joined.Store(true)
	j.mu.Unlock()
	st := cs.s.Stats()
	args := []any{"took", took.Round(time.Millisecond), "records", st.Applied, "copies", copies - len(given), "peers_alive", cs.peers.Load()}
	switch {
	case !copied:
		cs.log.Warn("connection sync: joined on sync.join_timeout: announcing without every peer's full copy", append(args, "waiting_for", waiting)...)
	case len(given) > 0:
		cs.log.Warn("connection sync: joined: announcing without the full copy of peers that gave none", append(args, "given_up", given)...)
	default:
		cs.log.Info("connection sync: joined: holding the table, announcing", args...)
	}
	if j.onJoin != nil {
		j.onJoin()
	}
}

// copyDone is connsync's CopyDone: a joining instance's copy from a peer
// completed (ok) or was given up.
func (cs *connSync) copyDone(from connsync.PeerID, ok bool) {
	cs.log.Info("connection sync: copy", "peer", from, "complete", ok)
	j := &cs.join
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.waiting, from)
	if !j.done[from] {
		j.done[from] = ok
	}
}

// maxRefresh bounds the refresh interval: a record lost on the way is
// sent again within it.
const maxRefresh = 30 * time.Second

// refreshInterval is how often every established connection is sent
// again: a third of the shortest ESTABLISHED timeout of the services, so
// that a shadow (which lives as long as its record said) is renewed twice
// before it would expire, at most maxRefresh.
func refreshInterval(bal *nat.Balancer) time.Duration {
	d := maxRefresh
	for _, svc := range bal.Services() {
		if e := svc.Timeouts().Established() / 3; e > 0 && e < d {
			d = e
		}
	}
	return max(d, drainEvery)
}

// drain queues the record of every connection the feed holds.
func (cs *connSync) drain() {
	cs.bal.DrainChanges(func(r *connrec.Record) {
		cs.buf = r.AppendTo(cs.buf[:0])
		cs.s.Queue(cs.buf)
	})
}

// apply imports one record a peer sent (connsync checked it parses). Its
// refusals are counted by the balancer (nat.Stats.ImportRefused).
func (cs *connSync) apply(from connsync.PeerID, rec []byte) {
	r, _, err := connrec.Decode(rec)
	if err != nil {
		return // connsync's RecordLen refused it already
	}
	peerRecord(&r)
	if err := cs.bal.ImportConn(&r); err != nil {
		cs.log.Debug("connection sync: record refused", "peer", from, "err", err)
	}
}

// peerRecord drops what a record carries of its sender's box alone: the
// client side's next hop is on the sender's link (the shadow takes this
// box's, nat.Balancer.toClient).
func peerRecord(r *connrec.Record) {
	r.Ext &^= connrec.ExtNextHop
	r.NextHop = [6]byte{}
}

// copy is a full copy for a peer that asks: every connection here, own
// and shadowed, and the persistence templates (a restarted instance gets its own back from its backups).
func (cs *connSync) copy(yield func(rec []byte) bool) {
	buf := make([]byte, 0, connrec.MaxLen) // a goroutine of its own: not cs.buf
	more := true
	put := func(r *connrec.Record) bool {
		peerRecord(r)
		buf = r.AppendTo(buf[:0])
		more = yield(buf)
		return more
	}
	cs.bal.ExportConns(put)
	if more {
		cs.bal.ExportTemplates(put) // persistence templates (nat/tmplrec.go)
	}
}

// peerState is connsync's PeerState. A peer heard while joining is
// waited for until its copy (asked as it was heard) is here; one that
// dies is not.
func (cs *connSync) peerState(from connsync.PeerID, alive bool) {
	if alive {
		cs.peers.Add(1)
	} else {
		cs.peers.Add(-1)
	}
	j := &cs.join
	j.mu.Lock()
	if _, copied := j.done[from]; alive && !copied {
		j.waiting[from] = true
	} else if !alive {
		delete(j.waiting, from)
	}
	j.mu.Unlock()
	cs.log.Info("connection sync: peer", "peer", from, "alive", alive)
}

// Stats are connection sync's counters and state for the metrics.
func (cs *connSync) Stats() metrics.Sync {
	return metrics.Sync{Stats: cs.s.Stats(), Alive: int(cs.peers.Load()), Joined: cs.Joined()}
}

// SyncStats are connection sync's counters and how many of its peers are
// alive (what the metrics export); ok is false without a sync: section.
func (d *Daemon) SyncStats() (s connsync.Stats, alive int, ok bool) {
	if d.connSync == nil {
		return connsync.Stats{}, 0, false
	}
	st := d.connSync.Stats()
	return st.Stats, st.Alive, true
}

// Close stops the drain and the transport; what the feed still holds is
// not sent.
func (cs *connSync) Close() {
	close(cs.stop)
	cs.wg.Wait()
	cs.s.Close()
}
