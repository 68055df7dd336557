package events

import (
	"context"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func next(t *testing.T, s *Sub) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("no event: %v", err)
	}
	return e
}

// empty fails if s has an event waiting.
func empty(t *testing.T, s *Sub) {
	t.Helper()
	select {
	case e := <-s.C():
		t.Fatalf("unexpected event %v", e)
	default:
	}
	if n := s.lost.Load(); n != 0 {
		t.Fatalf("%d losses untold", n)
	}
}

func TestPublishNobody(t *testing.T) {
	b := New()
	if b.Active() {
		t.Fatal("a new bus is active")
	}
	b.Publish(Event{Kind: ServerDown}) // nobody: nothing, no panic
	var nilBus *Bus
	if nilBus.Active() {
		t.Fatal("a nil bus is active")
	}
	if n := testing.AllocsPerRun(100, func() { b.Publish(Event{Kind: Drops}) }); n != 0 {
		t.Fatalf("Publish with nobody subscribed allocates %v times", n)
	}
}

func TestFilterAndOrder(t *testing.T) {
	b := New()
	all := b.Subscribe(Filter{}, 8)
	down := b.Subscribe(Filter{Kinds: []Kind{ServerDown}}, 8)
	svc := b.Subscribe(Filter{Service: "tcp 10.0.0.1:80"}, 8)
	defer all.Close()
	defer down.Close()
	defer svc.Close()
	rs := netip.MustParseAddrPort("10.1.0.1:80")
	b.Publish(Event{Kind: ServerUp, Service: "tcp 10.0.0.1:80", Server: rs})
	b.Publish(Event{Kind: ServerDown, Service: "tcp 10.0.0.2:80", Server: rs, Reason: "refused"})
	b.Publish(Event{Kind: ReloadApplied})

	for i, want := range []Kind{ServerUp, ServerDown, ReloadApplied} {
		if e := next(t, all); e.Kind != want || e.Time.IsZero() {
			t.Fatalf("event %d: %v, want %s with a time", i, e, want)
		}
	}
	if e := next(t, down); e.Kind != ServerDown || e.Reason != "refused" || e.Service != "tcp 10.0.0.2:80" {
		t.Fatalf("down: %+v", e)
	}
	if e := next(t, svc); e.Kind != ServerUp {
		t.Fatalf("service filter: %+v", e)
	}
	empty(t, all)
	empty(t, down)
	empty(t, svc)
}

func TestTimeKept(t *testing.T) {
	b := New()
	s := b.Subscribe(Filter{}, 1)
	defer s.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b.Publish(Event{Kind: Drops, Time: at})
	if e := next(t, s); !e.Time.Equal(at) {
		t.Fatalf("time %v, want %v", e.Time, at)
	}
}

// A full buffer loses events, counts them, and tells the subscriber
// where they were lost, never blocking the publisher.
func TestLossyBounded(t *testing.T) {
	b := New()
	s := b.Subscribe(Filter{}, 2)
	defer s.Close()
	for i := range 5 {
		b.Publish(Event{Kind: Drops, Count: uint64(i + 1)})
	}
	if got := len(s.ch); got != 2 {
		t.Fatalf("buffer holds %d, want its bound 2", got)
	}
	if got := s.LostTotal(); got != 3 {
		t.Fatalf("lost %d, want 3", got)
	}
	if e := next(t, s); e.Count != 1 {
		t.Fatalf("first %+v", e)
	}
	if e := next(t, s); e.Count != 2 {
		t.Fatalf("second %+v", e)
	}
	// The buffer is empty and nothing came after: Next tells the loss.
	if e := next(t, s); e.Kind != Lost || e.Count != 3 {
		t.Fatalf("want lost 3, got %+v", e)
	}
	empty(t, s)
}

// A loss is told in the stream before the next event that fits.
func TestLostInStream(t *testing.T) {
	b := New()
	s := b.Subscribe(Filter{}, 2)
	defer s.Close()
	b.Publish(Event{Kind: Drops, Count: 1})
	b.Publish(Event{Kind: Drops, Count: 2})
	b.Publish(Event{Kind: Drops, Count: 3}) // lost
	<-s.C()
	<-s.C()
	b.Publish(Event{Kind: Drops, Count: 4})
	if e := next(t, s); e.Kind != Lost || e.Count != 1 {
		t.Fatalf("want lost 1 first, got %+v", e)
	}
	if e := next(t, s); e.Kind != Drops || e.Count != 4 {
		t.Fatalf("want drops 4, got %+v", e)
	}
	// Room for the Lost event but not the event: the event is lost too,
	// and both are told.
	b.Publish(Event{Kind: Drops, Count: 5})
	b.Publish(Event{Kind: Drops, Count: 6})
	b.Publish(Event{Kind: Drops, Count: 7}) // lost
	<-s.C()
	b.Publish(Event{Kind: Drops, Count: 8}) // Lost fits, 8 does not
	if e := next(t, s); e.Count != 6 {
		t.Fatalf("want 6, got %+v", e)
	}
	if e := next(t, s); e.Kind != Lost || e.Count != 1 {
		t.Fatalf("want lost 1, got %+v", e)
	}
	if e := next(t, s); e.Kind != Lost || e.Count != 1 {
		t.Fatalf("want lost 1 (event 8), got %+v", e)
	}
	if got := s.LostTotal(); got != 3 {
		t.Fatalf("lost in all %d, want 3", got)
	}
	empty(t, s)
}

// When the Lost event itself does not fit, the count carries over and
// the event is lost as well.
func TestLostCarried(t *testing.T) {
	b := New()
	s := b.Subscribe(Filter{}, 1)
	defer s.Close()
	b.Publish(Event{Kind: Drops, Count: 1})
	b.Publish(Event{Kind: Drops, Count: 2}) // lost
	b.Publish(Event{Kind: Drops, Count: 3}) // Lost does not fit: carried, 3 lost
	if got := s.lost.Load(); got != 2 {
		t.Fatalf("untold %d, want 2", got)
	}
	<-s.C()
	if e := next(t, s); e.Kind != Lost || e.Count != 2 {
		t.Fatalf("want lost 2, got %+v", e)
	}
}

func TestUnsubscribe(t *testing.T) {
	b := New()
	var states []bool
	b.SetWatch(func(on bool) { states = append(states, on) })
	s1 := b.Subscribe(Filter{}, 1)
	s2 := b.Subscribe(Filter{}, 1)
	if !b.Active() {
		t.Fatal("not active with subscribers")
	}
	s1.Close()
	s1.Close() // twice: nothing
	if !b.Active() {
		t.Fatal("idle with one subscriber left")
	}
	b.Publish(Event{Kind: ServerUp})
	if len(s1.ch) != 0 || len(s2.ch) != 1 {
		t.Fatalf("closed sub got %d, open one %d", len(s1.ch), len(s2.ch))
	}
	s2.Close()
	if b.Active() {
		t.Fatal("active with nobody")
	}
	if want := []bool{false, true, false}; !equal(states, want) {
		t.Fatalf("watch told %v, want %v", states, want)
	}
	b.SetWatch(nil)
	b.Subscribe(Filter{}, 1).Close()
	if len(states) != 3 {
		t.Fatalf("a removed watch was told: %v", states)
	}
}

func equal(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBufferBounds(t *testing.T) {
	b := New()
	s := b.Subscribe(Filter{}, 0)
	if cap(s.ch) != DefaultBuffer {
		t.Fatalf("default buffer %d", cap(s.ch))
	}
	s.Close()
	s = b.Subscribe(Filter{}, MaxBuffer+1)
	if cap(s.ch) != MaxBuffer {
		t.Fatalf("buffer %d past the bound", cap(s.ch))
	}
	s.Close()
}

func TestNextContext(t *testing.T) {
	b := New()
	s := b.Subscribe(Filter{}, 1)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Next(ctx); err == nil {
		t.Fatal("Next on an ended context returned an event")
	}
}

// Publishers racing subscribers and a slow reader: nothing blocks, and
// every event is delivered or counted lost.
func TestConcurrent(t *testing.T) {
	before := runtime.NumGoroutine()
	b := New()
	s := b.Subscribe(Filter{}, 16)
	var wg sync.WaitGroup
	const pubs, each = 4, 1000
	for range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				b.Publish(Event{Kind: ConnOpened})
			}
		}()
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				b.Subscribe(Filter{Kinds: []Kind{Drops}}, 1).Close()
			}
		}()
	}
	wg.Wait()
	got := uint64(0)
	told := uint64(0)
	for {
		select {
		case e := <-s.C():
			if e.Kind == Lost {
				told += e.Count
			} else {
				got++
			}
			continue
		default:
		}
		break
	}
	told += s.lost.Load()
	if got+s.LostTotal() != pubs*each {
		t.Fatalf("delivered %d + lost %d != %d published", got, s.LostTotal(), pubs*each)
	}
	if told != s.LostTotal() {
		t.Fatalf("told %d lost, lost %d", told, s.LostTotal())
	}
	s.Close()
	if b.Active() {
		t.Fatal("active after the last close")
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines before, %d after: the bus leaks", before, n)
	}
}

func TestParseKind(t *testing.T) {
	ks, err := ParseKind("conn")
	if err != nil || len(ks) != 4 {
		t.Fatalf("conn: %v %v", ks, err)
	}
	ks, err = ParseKind("server_down")
	if err != nil || len(ks) != 1 || ks[0] != ServerDown {
		t.Fatalf("server_down: %v %v", ks, err)
	}
	if _, err := ParseKind("con"); err == nil || !strings.Contains(err.Error(), "not an event kind") {
		t.Fatalf("con: %v", err)
	}
	if _, err := ParseKind("lost"); err == nil {
		t.Fatal("lost is not a filter")
	}
}

func TestString(t *testing.T) {
	e := Event{Kind: ServerDown, Time: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), Service: "tcp 10.0.0.1:80",
		Server: netip.MustParseAddrPort("10.1.0.1:80"), Reason: "connection refused"}
	want := `03:04:05.000006 server_down service="tcp 10.0.0.1:80" server=10.1.0.1:80 reason="connection refused"`
	if got := e.String(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	e = Event{Kind: Drops, Time: e.Time, Reason: "no_service"}
	if got := e.String(); got != "03:04:05.000006 drops count=0 reason=no_service" {
		t.Fatalf("drops: %s", got)
	}
}

func TestServiceName(t *testing.T) {
	if got := ServiceName("TCP", netip.MustParseAddrPort("10.0.0.1:80"), 0); got != "tcp 10.0.0.1:80" {
		t.Fatal(got)
	}
	if got := ServiceName("TCP", netip.MustParseAddrPort("10.0.0.1:80"), 3); got != "fwm 3" {
		t.Fatal(got)
	}
}
