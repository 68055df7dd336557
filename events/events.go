// Package events is tapvs's event bus: typed events (a real server's
// health moving, a service's quorum, a connection's steps, drops, reloads)
// that tests and tools subscribe to instead of polling listings.
//
// Publishing never blocks and never waits for a subscriber: each one has a
// bounded buffer, and an event that does not fit is lost for it alone and
// counted. The subscriber is told how many it lost by a Lost event, put in
// its stream where the first loss happened (or, when its buffer drains
// with losses still untold, by Next). With nobody subscribed, Publish is an
// atomic load: the sources check Active first, and build nothing.
package events

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is what happened.
type Kind string

// The kinds of event.
const (
	// ServerUp and ServerDown are a health check moving a real server
	// (after its rise or fall count); Reason is the last failure's.
	ServerUp   Kind = "server_up"
	ServerDown Kind = "server_down"
	// QuorumGained and QuorumLost are a service's servers' weights
	// crossing its quorum (keepalived's quorum_up and quorum_down).
	QuorumGained Kind = "quorum_gained"
	QuorumLost   Kind = "quorum_lost"
	// ConnOpened is a connection entered in the table (State: the state
	// it enters in: NONE for plain TCP, which its first segment moves on
	// at once, SYN_SENT with SYNPROXY, once the client's handshake is
	// done; UDP for UDP).
	ConnOpened Kind = "conn_opened"
	// ConnClosed is a TCP connection leaving its held states by a FIN
	// (to TIME_WAIT); Reason says which side closed first. The entry
	// lingers until it expires (ConnExpired).
	ConnClosed Kind = "conn_closed"
	// ConnReset is a TCP connection moved to CLOSE by an RST; Reason
	// says from which side.
	ConnReset Kind = "conn_reset"
	// ConnExpired is an entry taken off the table because its state's
	// timeout passed without a packet; State is the state it was in,
	// Count the RSTs tapvs sent for it (an idle ESTABLISHED connection).
	ConnExpired Kind = "conn_expired"
	// Drops is frames dropped for Reason, Count of them, since the last
	// Drops event of that reason: aggregated, not one per frame.
	Drops Kind = "drops"
	// ReloadApplied and ReloadRefused are a reload of the configuration
	// file; Reason is a refusal's error.
	ReloadApplied Kind = "reload_applied"
	ReloadRefused Kind = "reload_refused"
	// Lost tells a subscriber it lost Count events, its buffer full.
	Lost Kind = "lost"
)

// Kinds are every kind but Lost, which is never filtered out.
var Kinds = []Kind{ServerUp, ServerDown, QuorumGained, QuorumLost, ConnOpened, ConnClosed, ConnReset, ConnExpired, Drops, ReloadApplied, ReloadRefused}

// Event is one event. The fields a kind does not use are zero.
type Event struct {
	Kind Kind
	Time time.Time
	// Service is the service's key as tapvsadm names it: "tcp
	// 172.25.254.100:80", "fwm 1".
	Service string
	Server  netip.AddrPort // the real server
	// Client, VIP and Local are a connection's client, the address it
	// reached and the local address tapvs opened it to Server from.
	Client, VIP, Local netip.AddrPort
	Protocol           string // "tcp", "udp"
	State              string // a connection's TCP state, "UDP"
	Reason             string
	Count              uint64
}

// String is the event on one line, as tapvsadm prints it.
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(e.Time.UTC().Format("15:04:05.000000"))
	b.WriteByte(' ')
	b.WriteString(string(e.Kind))
	add := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	ap := func(a netip.AddrPort) string {
		if a.IsValid() {
			return a.String()
		}
		return ""
	}
	add("service", quoteSpace(e.Service))
	add("server", ap(e.Server))
	add("proto", e.Protocol)
	add("client", ap(e.Client))
	add("vip", ap(e.VIP))
	add("local", ap(e.Local))
	add("state", e.State)
	if e.Count != 0 || e.Kind == Drops || e.Kind == Lost {
		add("count", fmt.Sprint(e.Count))
	}
	add("reason", quoteSpace(e.Reason))
	return b.String()
}

func quoteSpace(s string) string {
	if strings.ContainsAny(s, " \"\t\n") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// Filter selects events. The zero Filter selects all.
type Filter struct {
	// Kinds, if not empty, are the kinds wanted; Lost always is.
	Kinds []Kind
	// Service, if not "", is the only service wanted: events of no
	// service (reloads, drops) are then not delivered.
	Service string
}

// Match reports whether f selects e.
func (f Filter) Match(e *Event) bool {
	if e.Kind == Lost {
		return true
	}
	if len(f.Kinds) > 0 && !slices.Contains(f.Kinds, e.Kind) {
		return false
	}
	return f.Service == "" || f.Service == e.Service
}

// ParseKind is a kind by name, or a group of them: "conn" (every conn_
// kind), "server", "quorum", "reload".
func ParseKind(s string) ([]Kind, error) {
	var out []Kind
	for _, k := range Kinds {
		if string(k) == s || strings.HasPrefix(string(k), s+"_") {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		names := make([]string, len(Kinds))
		for i, k := range Kinds {
			names[i] = string(k)
		}
		return nil, fmt.Errorf("%q is not an event kind (one of %s, or conn, server, quorum, reload)", s, strings.Join(names, ", "))
	}
	return out, nil
}

// DefaultBuffer is a subscription's buffer when none is asked for.
const DefaultBuffer = 1024

// MaxBuffer bounds a subscription's buffer.
const MaxBuffer = 1 << 16

// Bus delivers events to its subscribers. The zero Bus is not usable:
// New makes one.
type Bus struct {
	mu     sync.Mutex                 // serialises Subscribe and Close; publishers never take it
	subs   atomic.Pointer[[]*Sub]     // copied on change: a publisher reads it without a lock
	active atomic.Bool                // any subscriber
	watch  atomic.Pointer[func(bool)] // told when active changes (SetWatch)
}

// New makes a bus.
func New() *Bus {
	b := &Bus{}
	b.subs.Store(&[]*Sub{})
	return b
}

// Active reports whether anyone subscribes: the sources check it before
// building an event.
func (b *Bus) Active() bool { return b != nil && b.active.Load() }

// SetWatch has f told (under the bus's subscribe lock, so in order) when
// the bus becomes active and when it becomes idle: a source that costs
// something to run (the connection hook, the drop counter's ticker) runs
// only while someone listens. f is told the state now at once.
func (b *Bus) SetWatch(f func(active bool)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f == nil {
		b.watch.Store(nil)
		return
	}
	b.watch.Store(&f)
	f(b.active.Load())
}

// Sub is a subscription.
type Sub struct {
	bus    *Bus
	f      Filter
	ch     chan Event
	lost   atomic.Uint64 // lost and not yet told
	lostN  atomic.Uint64 // lost in all
	closed atomic.Bool
}

// Subscribe starts a subscription for the events f selects, with a buffer
// of buffer events (0: DefaultBuffer; at most MaxBuffer).
func (b *Bus) Subscribe(f Filter, buffer int) *Sub {
	if buffer <= 0 {
		buffer = DefaultBuffer
	}
	buffer = min(buffer, MaxBuffer)
	s := &Sub{bus: b, f: f, ch: make(chan Event, buffer)}
	b.mu.Lock()
	defer b.mu.Unlock()
	subs := append(slices.Clone(*b.subs.Load()), s)
	b.subs.Store(&subs)
	b.setActive(true)
	return s
}

// setActive records whether anyone subscribes; b.mu is held.
func (b *Bus) setActive(on bool) {
	if b.active.Swap(on) == on {
		return
	}
	if w := b.watch.Load(); w != nil {
		(*w)(on)
	}
}

// Close ends the subscription: nothing more is put in it. Its channel is
// not closed (a publisher may hold the old list of subscribers for a
// moment): stop reading it. Closing twice does nothing.
func (s *Sub) Close() {
	if s.closed.Swap(true) {
		return
	}
	b := s.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	subs := slices.DeleteFunc(slices.Clone(*b.subs.Load()), func(x *Sub) bool { return x == s })
	b.subs.Store(&subs)
	b.setActive(len(subs) > 0)
}

// C is the subscription's events. Read it with Next to be told of losses
// that happened while the buffer was full and nothing came after.
func (s *Sub) C() <-chan Event { return s.ch }

// LostTotal is how many events the subscription has lost in all.
func (s *Sub) LostTotal() uint64 { return s.lostN.Load() }

// Next is the next event, waiting for one until ctx ends. Losses not told
// in the stream come as a Lost event once the buffer is empty.
func (s *Sub) Next(ctx context.Context) (Event, error) {
	select {
	case e := <-s.ch:
		return e, nil
	default:
	}
	if n := s.lost.Swap(0); n > 0 {
		return Event{Kind: Lost, Time: time.Now(), Count: n}, nil
	}
	select {
	case e := <-s.ch:
		return e, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Publish gives e to every subscriber whose filter selects it, stamping
// e.Time if it is zero. It never blocks: a subscriber whose buffer is full
// loses e (counted). Call it only when Active, to build nothing otherwise.
func (b *Bus) Publish(e Event) {
	if !b.Active() {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	for _, s := range *b.subs.Load() {
		if s.f.Match(&e) {
			s.put(e)
		}
	}
}

// put delivers e to s, or counts it lost. Losses not yet told go first,
// as a Lost event, when there is room for it and e.
func (s *Sub) put(e Event) {
	if n := s.lost.Swap(0); n > 0 {
		select {
		case s.ch <- Event{Kind: Lost, Time: e.Time, Count: n}:
		default:
			s.lost.Add(n + 1)
			s.lostN.Add(1)
			return
		}
	}
	select {
	case s.ch <- e:
	default:
		s.lost.Add(1)
		s.lostN.Add(1)
	}
}

// ServiceName is a service's key as events and tapvsadm name it: "tcp
// 172.25.254.100:80", or "fwm 1" for a match service.
func ServiceName(proto string, vip netip.AddrPort, mark uint32) string {
	if mark != 0 {
		return fmt.Sprintf("fwm %d", mark)
	}
	return strings.ToLower(proto) + " " + vip.String()
}
