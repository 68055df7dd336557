package daemon

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/connsync"
	"github.com/tapvs/tapvs/internal/logbuf"
)

// fakePeer is instance A (id 1) of syncPair's configuration as connsync
// alone: its full copy is the records given, sent once release is closed
// (never, if it is not), and asked tells when B asked for it.
func fakePeer(t *testing.T, ca *config.Config, recs []connrec.Record) (asked <-chan struct{}, release chan struct{}) {
	t.Helper()
	ask, rel, stop := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	s, err := connsync.New(connsync.Config{Listen: ca.Sync.Listen, ID: ca.Sync.ID, Peers: ca.Sync.Peers, Keys: ca.Sync.Keys,
		RecordLen: recordLen, Log: slog.New(slog.DiscardHandler),
		Copy: func(yield func(rec []byte) bool) {
			once.Do(func() { close(ask) })
			select {
			case <-rel:
			case <-stop: // the test ends
				return
			}
			for i := range recs {
				if !yield(recs[i].AppendTo(nil)) {
					return
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(stop) }) // first: a Copy still blocked ends
	return ask, rel
}

// joiner starts B's connection sync (syncPair's) with its log in a buffer
// and its start an hour ahead: only the test's own checkJoin calls, with
// their clocks, can end the join. joined is closed by onJoin.
func joiner(t *testing.T) (ca *config.Config, b *connSync, log *logbuf.Buffer, joined chan struct{}) {
	t.Helper()
	ca, cb, _, bal := syncPair(t)
	log = &logbuf.Buffer{}
	joined = make(chan struct{})
	var once sync.Once
	cs, err := startSync(cb.Sync, bal, slog.New(slog.NewTextHandler(log, nil)), func() {
		once.Do(func() { close(joined) })
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cs.Close)
	cs.join.mu.Lock()
	cs.join.start = time.Now().Add(time.Hour)
	cs.join.mu.Unlock()
	return ca, cs, log, joined
}

// waitHeard waits (bounded) until B waits for A's copy: A heard, the copy
// asked.
func waitHeard(t *testing.T, asked <-chan struct{}, b *connSync) {
	t.Helper()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("B never asked A for its copy")
	}
	poll(t, "B to wait for A's copy once it asked it", func() bool {
		b.join.mu.Lock()
		defer b.join.mu.Unlock()
		return len(b.join.waiting) == 1
	})
}

// poll waits (eventually) until cond holds, failing the test after 10 s.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !eventually(10*time.Second, cond) {
		t.Fatalf("waited 10 s for %s", what)
	}
}

// startPlus is the join's start plus d: a clock for checkJoin.
func (cs *connSync) startPlus(d time.Duration) time.Time {
	cs.join.mu.Lock()
	defer cs.join.mu.Unlock()
	return cs.join.start.Add(d)
}

// A starting instance joins only once the full copy of every peer it
// heard is here: heard (so, every peer configured) and its copy asked, B
// has not joined, past the discovery time either; once A's copy is sent,
// B joins at its next check, its table holding A's three connections by
// then, and says so in one line with the records and the time it took.
func TestJoinWaitsForThePeersCopy(t *testing.T) {
	ca, b, log, joined := joiner(t)
	var recs []connrec.Record
	for i := range uint16(3) {
		recs = append(recs, established(t, "172.25.84.10", 40000+i))
	}
	asked, release := fakePeer(t, ca, recs)
	waitHeard(t, asked, b)
	for _, after := range []time.Duration{0, 2 * joinDiscover} {
		b.checkJoin(b.startPlus(after))
		if b.Joined() {
			t.Fatalf("joined %v after the start with A heard and its copy not sent", after)
		}
	}
	close(release)
	// The copy completes in connsync's receiver; each check after that
	// joins.
	poll(t, "B to join once A's copy was sent", func() bool {
		b.checkJoin(b.startPlus(0))
		return b.Joined()
	})
	<-joined
	if n := b.bal.Table().Len(); n != 3 {
		t.Errorf("joined holding %d connections, want A's 3", n)
	}
	if b.Stats().Joined != true {
		t.Error("the metrics' state says not joined")
	}
	l := log.String()
	if strings.Count(l, "connection sync: joined") != 1 || !strings.Contains(l, "records=3") || !strings.Contains(l, "took=") ||
		!strings.Contains(l, "level=INFO msg=\"connection sync: joined: holding the table") {
		t.Errorf("log:\n%s", l)
	}
}

// The first instance of a cluster joins alone: no peer heard, it joins
// once joinDiscover has passed, not before.
func TestJoinAloneAfterDiscovery(t *testing.T) {
	_, b, log, joined := joiner(t)
	b.checkJoin(b.startPlus(joinDiscover - time.Millisecond))
	if b.Joined() {
		t.Fatal("joined before the peers had time to be heard")
	}
	b.checkJoin(b.startPlus(joinDiscover))
	if !b.Joined() {
		t.Fatal("no peer and the discovery time past, yet not joined")
	}
	<-joined
	if l := log.String(); !strings.Contains(l, "connection sync: joined: holding the table") || !strings.Contains(l, "records=0") {
		t.Errorf("log:\n%s", l)
	}
}

// A peer heard whose copy never comes holds the join back until
// sync.join_timeout, then it joins anyway and says whose copy it lacks.
func TestJoinTimeout(t *testing.T) {
	ca, b, log, _ := joiner(t)
	asked, _ := fakePeer(t, ca, nil)
	waitHeard(t, asked, b)
	b.checkJoin(b.startPlus(config.DefaultJoinTimeout - time.Millisecond))
	if b.Joined() {
		t.Fatal("joined before the timeout without A's copy")
	}
	b.checkJoin(b.startPlus(config.DefaultJoinTimeout))
	if !b.Joined() {
		t.Fatal("not joined at the timeout")
	}
	if l := log.String(); !strings.Contains(l, "level=WARN msg=\"connection sync: joined on sync.join_timeout") || !strings.Contains(l, "waiting_for=[1]") {
		t.Errorf("log:\n%s", l)
	}
}

// While connection sync joins the announcer announces nothing, not even
// the LIPs; once joined, everything at the next pass. The API says so.
func TestJoiningAnnouncesNothing(t *testing.T) {
	g := newClusterRig(t)
	cs := &connSync{}
	g.c.sync.Store(cs)
	g.c.pass()
	if b, _ := g.c.BGP(); len(b.Routes) != 0 || !b.Joining {
		t.Fatalf("joining: BGP() = %+v: want no route, joining", b)
	}
	cs.join.joined.Store(true)
	g.expect(t, vip80, vip443, lip10, lip11)
	if b, _ := g.c.BGP(); b.Joining {
		t.Fatal("joined, yet the API says joining")
	}
}
