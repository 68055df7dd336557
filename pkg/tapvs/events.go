package tapvs

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/events"
)

// EventKind is what an Event is of.
type EventKind string

// The kinds of event. What is exact and what is aggregated:
// docs/testing.md ("Events").
const (
	// EventServerUp and EventServerDown are a health check moving a real
	// server, once its rise or fall count is reached (the move is made
	// when the event is sent: a server down is already out of the
	// scheduler). A down event's Reason is the last failure.
	EventServerUp   EventKind = "server_up"
	EventServerDown EventKind = "server_down"
	// EventQuorumGained and EventQuorumLost are a service's up servers'
	// weights crossing its quorum.
	EventQuorumGained EventKind = "quorum_gained"
	EventQuorumLost   EventKind = "quorum_lost"
	// EventConnOpened is a connection entered in the table; State is the
	// state it entered in (NONE for plain TCP, which its first segment
	// moves on at once; SYN_SENT with SYNPROXY; UDP).
	EventConnOpened EventKind = "conn_opened"
	// EventConnClosed is a TCP connection reaching TIME_WAIT, both sides'
	// FINs seen; Reason says which side closed first. Its entry stays
	// until it expires (EventConnExpired).
	EventConnClosed EventKind = "conn_closed"
	// EventConnReset is a TCP connection moved to CLOSE by an RST (Reason:
	// from which side), or a SYNPROXY handshake tapvs gave up (Reason:
	// why; the client was sent an RST).
	EventConnReset EventKind = "conn_reset"
	// EventConnExpired is a connection's entry taken off the table, its
	// state's timeout passed; State is that state, Count the RSTs tapvs
	// sent for an idle ESTABLISHED connection.
	EventConnExpired EventKind = "conn_expired"
	// EventDrops is Count frames dropped for Reason (a Counters.Drops
	// key) in the last quarter second or so: one event per reason that
	// moved, not one per frame.
	EventDrops EventKind = "drops"
	// EventReloadApplied and EventReloadRefused are a reload of the
	// configuration file (tapvs run's; an LB has none of its own).
	EventReloadApplied EventKind = "reload_applied"
	EventReloadRefused EventKind = "reload_refused"
	// EventLost is Count events this subscription lost: its buffer was
	// full (its reader too slow). It is never filtered out.
	EventLost EventKind = "lost"
)

// Event is one event; the fields its kind does not use are zero.
type Event struct {
	Kind EventKind
	Time time.Time
	// Service is the service's key (zero for drops, reloads and lost).
	Service ServiceKey
	Server  netip.AddrPort // the real server
	// Client, VIP and Local are a connection's client, the address it
	// reached, and the local address tapvs opened it to Server from.
	Client, VIP, Local netip.AddrPort
	Protocol           Protocol
	State              string // a connection's TCP state, or UDP
	Reason             string
	Count              uint64
}

// String is e on one line, as tapvsadm --events prints it.
func (e Event) String() string { return e.internal().String() }

func (e Event) internal() events.Event {
	svc := ""
	if e.Service != (ServiceKey{}) {
		svc = e.Service.String()
	}
	return events.Event{Kind: events.Kind(e.Kind), Time: e.Time, Service: svc, Server: e.Server, Client: e.Client,
		VIP: e.VIP, Local: e.Local, Protocol: string(e.Protocol), State: e.State, Reason: e.Reason, Count: e.Count}
}

// EventFilter selects the events of a subscription.
type EventFilter struct {
	// Kinds, if not empty, are the kinds wanted (EventLost always is), or
	// groups of them: "conn" (every EventConn kind), "server", "quorum",
	// "reload".
	Kinds []EventKind
	// Service, if not zero, is the one service wanted: events of no
	// service (drops, reloads) are then not delivered.
	Service ServiceKey
	// Buffer is how many events the subscription holds for its reader
	// (0: 1024; at most 65536). Past it, events are lost, counted and
	// told (EventLost): a slow reader never slows tapvs.
	Buffer int
}

// Subscribe delivers the events f selects, from its return on, until ctx
// ends or the LB is closed; the channel is closed then. Read it promptly:
// events that do not fit in the buffer are lost (and told).
func (lb *LB) Subscribe(ctx context.Context, f EventFilter) (<-chan Event, error) {
	var ef events.Filter
	for i, k := range f.Kinds {
		if k == EventLost {
			continue
		}
		ks, err := events.ParseKind(string(k))
		if err != nil {
			return nil, fmt.Errorf("tapvs: EventFilter.Kinds[%d]: %w", i, err)
		}
		ef.Kinds = append(ef.Kinds, ks...)
	}
	if len(f.Kinds) > 0 && len(ef.Kinds) == 0 {
		ef.Kinds = []events.Kind{events.Lost} // EventLost alone: nothing else
	}
	if f.Service != (ServiceKey{}) {
		ck, err := f.Service.control()
		if err != nil {
			return nil, fmt.Errorf("tapvs: EventFilter.Service: %w", err)
		}
		ef.Service = ck.String()
	}
	if f.Buffer < 0 || f.Buffer > events.MaxBuffer {
		return nil, fmt.Errorf("tapvs: EventFilter.Buffer: %d is not from 0 to %d", f.Buffer, events.MaxBuffer)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sub := lb.d.Events().Subscribe(ef, f.Buffer)
	out := make(chan Event)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(lb.ctx, cancel) // the LB closed
	go func() {
		defer close(out)
		defer sub.Close()
		defer cancel()
		defer stop()
		for {
			e, err := sub.Next(ctx)
			if err != nil {
				return
			}
			select {
			case out <- eventOf(e):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// eventOf is an event as this package's.
func eventOf(e events.Event) Event {
	return Event{Kind: EventKind(e.Kind), Time: e.Time, Service: serviceKeyOf(e.Service), Server: e.Server,
		Client: e.Client, VIP: e.VIP, Local: e.Local, Protocol: Protocol(e.Protocol), State: e.State, Reason: e.Reason, Count: e.Count}
}

// serviceKeyOf reads a service's name as events give it ("tcp
// 172.25.254.100:80", "fwm 1"); "" is the zero key.
func serviceKeyOf(s string) ServiceKey {
	p, a, ok := strings.Cut(s, " ")
	if !ok {
		return ServiceKey{}
	}
	if p == "fwm" {
		n, _ := strconv.ParseUint(a, 10, 32)
		return ServiceKey{Mark: uint32(n)}
	}
	ap, _ := netip.ParseAddrPort(a)
	return ServiceKey{Protocol: Protocol(p), VIP: ap}
}
