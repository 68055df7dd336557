package tapvstest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
)

// Watcher is a subscription to a lab's events (tapvs.LB.Subscribe) for a
// test to wait on, in place of polling listings. Make it before doing
// what the test waits for: it holds every event from its making on until
// a wait takes it, so that nothing that happens before the wait starts is
// missed. It ends with the test.
type Watcher struct {
	t       testing.TB
	ch      <-chan tapvs.Event
	backlog []tapvs.Event // received and not taken by a wait, oldest first
	lost    uint64        // events the subscription lost (its buffer full)
	seen    []tapvs.Event // the last maxShown received, for a failure's message
}

// maxBacklog bounds what a Watcher keeps for later waits; maxShown what a
// failed wait prints.
const (
	maxBacklog = 1 << 16
	maxShown   = 30
)

// Watch subscribes to lb's events that f selects (a zero filter: all of
// them) for the rest of the test.
func Watch(t testing.TB, lb *tapvs.LB, f tapvs.EventFilter) *Watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := lb.Subscribe(ctx, f)
	if err != nil {
		t.Fatalf("tapvstest: watch: %v", err)
	}
	return &Watcher{t: t, ch: ch}
}

// Watch subscribes to the lab's events that f selects (Watch with the
// lab's LB).
func (l *Lab) Watch(f tapvs.EventFilter) *Watcher {
	l.t.Helper()
	return Watch(l.t, l.LB, f)
}

// WaitFor returns the first event from the watch's start that match
// accepts and no earlier wait took, waiting up to timeout for it. Past
// the timeout it fails the test (Fatalf) naming what (a description of
// the event wanted) and listing the last events it saw.
func (w *Watcher) WaitFor(timeout time.Duration, what string, match func(tapvs.Event) bool) tapvs.Event {
	w.t.Helper()
	for i, e := range w.backlog {
		if match(e) {
			w.backlog = append(w.backlog[:i], w.backlog[i+1:]...)
			return e
		}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case e, ok := <-w.ch:
			if !ok {
				w.t.Fatalf("tapvstest: waiting for %s: the subscription ended (tapvs closed)%s", what, w.saw())
			}
			w.note(e)
			if e.Kind == tapvs.EventLost {
				w.lost += e.Count
				continue
			}
			if match(e) {
				return e
			}
			if len(w.backlog) < maxBacklog {
				w.backlog = append(w.backlog, e)
			}
		case <-deadline.C:
			w.t.Fatalf("tapvstest: no %s within %v%s", what, timeout, w.saw())
		}
	}
}

// note keeps e among the last events seen.
func (w *Watcher) note(e tapvs.Event) {
	if len(w.seen) == maxShown {
		w.seen = append(w.seen[:0], w.seen[1:]...)
	}
	w.seen = append(w.seen, e)
}

// saw is what a failed wait says it saw.
func (w *Watcher) saw() string {
	var b strings.Builder
	if w.lost > 0 {
		fmt.Fprintf(&b, "; %d events were lost (the subscription's buffer was full: a larger EventFilter.Buffer keeps them)", w.lost)
	}
	if len(w.seen) == 0 {
		b.WriteString("; no event seen")
		return b.String()
	}
	fmt.Fprintf(&b, "; the last %d events seen:", len(w.seen))
	for _, e := range w.seen {
		b.WriteString("\n\t")
		b.WriteString(e.String())
	}
	return b.String()
}

// WaitServerDown waits for the health check to take real server rs of
// service svc out, and returns its event (Reason: the last failure).
func (w *Watcher) WaitServerDown(svc tapvs.ServiceKey, rs netip.AddrPort, timeout time.Duration) tapvs.Event {
	w.t.Helper()
	return w.WaitFor(timeout, fmt.Sprintf("%s of %s %s", tapvs.EventServerDown, svc, rs), func(e tapvs.Event) bool {
		return e.Kind == tapvs.EventServerDown && e.Service == svc && e.Server == rs
	})
}

// WaitServerUp waits for the health check to put real server rs of
// service svc back.
func (w *Watcher) WaitServerUp(svc tapvs.ServiceKey, rs netip.AddrPort, timeout time.Duration) tapvs.Event {
	w.t.Helper()
	return w.WaitFor(timeout, fmt.Sprintf("%s of %s %s", tapvs.EventServerUp, svc, rs), func(e tapvs.Event) bool {
		return e.Kind == tapvs.EventServerUp && e.Service == svc && e.Server == rs
	})
}

// WaitConnOpened waits for tapvs to open the connection of client (the
// client's address and port, as its socket's LocalAddr has them).
func (w *Watcher) WaitConnOpened(client netip.AddrPort, timeout time.Duration) tapvs.Event {
	w.t.Helper()
	return w.WaitFor(timeout, fmt.Sprintf("%s of client %s", tapvs.EventConnOpened, client), func(e tapvs.Event) bool {
		return e.Kind == tapvs.EventConnOpened && e.Client == client
	})
}

// WaitConnClosed waits for the connection of client to end: closed by
// both sides' FINs, or reset (the event says which, and why).
func (w *Watcher) WaitConnClosed(client netip.AddrPort, timeout time.Duration) tapvs.Event {
	w.t.Helper()
	return w.WaitFor(timeout, fmt.Sprintf("%s or %s of client %s", tapvs.EventConnClosed, tapvs.EventConnReset, client), func(e tapvs.Event) bool {
		return (e.Kind == tapvs.EventConnClosed || e.Kind == tapvs.EventConnReset) && e.Client == client
	})
}

// WaitConnExpired waits for the entry of client's connection to leave the
// table, its state's timeout passed.
func (w *Watcher) WaitConnExpired(client netip.AddrPort, timeout time.Duration) tapvs.Event {
	w.t.Helper()
	return w.WaitFor(timeout, fmt.Sprintf("%s of client %s", tapvs.EventConnExpired, client), func(e tapvs.Event) bool {
		return e.Kind == tapvs.EventConnExpired && e.Client == client
	})
}

// WaitDrops waits until Drops events of reason have counted at least n
// frames (taking them), and returns how many they counted.
func (w *Watcher) WaitDrops(reason string, n uint64, timeout time.Duration) uint64 {
	w.t.Helper()
	var got uint64
	end := time.Now().Add(timeout)
	for got < n {
		e := w.WaitFor(max(time.Until(end), 0), fmt.Sprintf("%d more dropped frames of reason %s (%s events)", n-got, reason, tapvs.EventDrops), func(e tapvs.Event) bool {
			return e.Kind == tapvs.EventDrops && e.Reason == reason
		})
		got += e.Count
	}
	return got
}
