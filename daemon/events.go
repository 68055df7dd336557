package daemon

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/events"
	"github.com/tapvs/tapvs/nat"
)

// dropsInterval is how often the drop counters are read for Drops events,
// while anyone subscribes: a Drops event sums a reason's drops over one.
const dropsInterval = 250 * time.Millisecond

// Events is the instance's event bus: the health checker's moves, the
// connections' steps, drops by reason, reloads (package events).
func (d *Daemon) Events() *events.Bus { return d.events }

// startEvents runs the sources that cost something only while someone
// subscribes: the connection watch, set and cleared with the bus's
// subscribers, and the drop counter's reader.
func (d *Daemon) startEvents() {
	d.events.SetWatch(d.eventsActive)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTicker(dropsInterval)
		defer t.Stop()
		for {
			select {
			case <-d.stop:
				return
			case <-t.C:
				d.publishDrops()
			}
		}
	}()
}

// eventsActive is told when the bus gets its first subscriber and loses
// its last (under the bus's lock, so in order).
func (d *Daemon) eventsActive(on bool) {
	if !on {
		d.Balancer.WatchConns(nil)
		return
	}
	// Drops are counted from the moment someone listens.
	d.dropsMu.Lock()
	d.dropsBase = d.Balancer.Stats.Drops()
	d.dropsMu.Unlock()
	d.Balancer.WatchConns(d.connEvent)
}

// publishDrops publishes, by reason, the drops since the last reading:
// only the reasons that moved.
func (d *Daemon) publishDrops() {
	if !d.events.Active() {
		return
	}
	now := d.Balancer.Stats.Drops()
	d.dropsMu.Lock()
	base := d.dropsBase
	d.dropsBase = now
	d.dropsMu.Unlock()
	reasons := make([]string, 0, len(now))
	for r, n := range now {
		if n > base[r] {
			reasons = append(reasons, r)
		}
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		d.events.Publish(events.Event{Kind: events.Drops, Reason: r, Count: now[r] - base[r]})
	}
}

// connEvent is the connection watch's step as an event (nat.WatchConns):
// on the packet path's goroutines, with a subscriber only.
func (d *Daemon) connEvent(c nat.ConnEvent) {
	e := events.Event{Client: c.Client, VIP: c.VIP, Local: c.Local, Server: c.Server,
		Protocol: protoName(c.Protocol), State: c.State, Reason: c.Reason}
	if s := c.Service; s != nil {
		e.Service = events.ServiceName(e.Protocol, netip.AddrPortFrom(s.Addr, s.Port), s.Mark)
	}
	switch c.Step {
	case nat.ConnOpened:
		e.Kind = events.ConnOpened
	case nat.ConnClosed:
		e.Kind = events.ConnClosed
		e.Reason = closeReason(c)
	case nat.ConnReset:
		e.Kind = events.ConnReset
		if e.Reason == "" {
			e.Reason = "rst from the " + sideName(c.From)
		}
	case nat.ConnExpired:
		e.Kind = events.ConnExpired
		e.Count = uint64(c.Resets)
		e.Reason = "timeout in " + c.State
		if c.Resets > 0 {
			e.Reason += ": RST sent to " + strconv.Itoa(c.Resets) + " side(s)"
		}
	default:
		return
	}
	d.events.Publish(e)
}

// closeReason says which side closed first: the state the second FIN
// found.
func closeReason(c nat.ConnEvent) string {
	switch c.Prev {
	case "CLOSE_WAIT":
		return "fin: the client closed first"
	case "FIN_WAIT":
		return "fin: the server closed first"
	}
	return "fin from the " + sideName(c.From) + " in " + c.Prev
}

// protoName is p as events name it, without allocating for TCP and UDP.
func protoName(p nat.Protocol) string {
	switch p {
	case nat.TCP:
		return "tcp"
	case nat.UDP:
		return "udp"
	}
	return strings.ToLower(p.String())
}

func sideName(s nat.Side) string {
	if s == nat.ServerSide {
		return "server"
	}
	return "client"
}

// reloadEvent publishes a reload's outcome.
func (d *Daemon) reloadEvent(res api.Reload, err error) {
	if !d.events.Active() {
		return
	}
	if err != nil {
		d.events.Publish(events.Event{Kind: events.ReloadRefused, Reason: err.Error()})
		return
	}
	why := strconv.Itoa(res.Changes) + " changes"
	if len(res.Reverted) > 0 {
		why += "; reverted: " + strings.Join(res.Reverted, "; ")
	}
	d.events.Publish(events.Event{Kind: events.ReloadApplied, Reason: why, Count: uint64(res.Changes)})
}
