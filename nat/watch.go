package nat

import (
	"net/netip"
	"sync/atomic"
)

// The connection watch tells the daemon's event bus (package events) of a
// connection's steps: opened, closed by FINs, reset, expired. It costs
// nothing per packet: the hooks sit on the state steps (a few per
// connection, where setState's compare-and-swap succeeded), on the
// connection's entry and on the sweep's expiry, and each is one atomic
// load of the watcher, nil while nobody subscribes (the daemon sets it
// only then). With a watcher, each step builds one ConnEvent on the stack
// and calls it on the reader's or the sweep's goroutine: it must not
// block.

// ConnStep is what a connection did.
type ConnStep uint8

// The steps watched.
const (
	// ConnOpened: entered in the table.
	ConnOpened ConnStep = iota + 1
	// ConnClosed: a TCP connection reached TIME_WAIT, both sides' FINs
	// seen.
	ConnClosed
	// ConnReset: a TCP connection moved to CLOSE by an RST, or a SYNPROXY
	// handshake given up (tapvs sent the client an RST).
	ConnReset
	// ConnExpired: taken off the table by the sweep, its state's timeout
	// passed.
	ConnExpired
)

// ConnEvent is one step of one connection.
type ConnEvent struct {
	Step     ConnStep
	Service  *Service
	Protocol Protocol
	// State is the state the connection moved to (opened, closed, reset)
	// or expired in; Prev the one it left (closed, reset).
	State, Prev string
	// From is the side whose segment made the step (closed, reset).
	From Side
	// Reason is why, for the steps no segment made: a SYNPROXY handshake
	// given up. A constant: no allocation.
	Reason                     string
	Client, VIP, Local, Server netip.AddrPort
	// Resets is the RSTs tapvs sent for an expired ESTABLISHED
	// connection (reset.go).
	Resets int
}

// connWatch holds the watcher; every connection points at its balancer's.
type connWatch struct {
	fn atomic.Pointer[func(ConnEvent)]
}

// WatchConns has f called with every watched step of every connection,
// from now on; nil stops it. f runs on the packet path's goroutines and
// the sweep's, concurrently: it must be safe for that and never block.
func (b *Balancer) WatchConns(f func(ConnEvent)) {
	if f == nil {
		b.watch.fn.Store(nil)
		return
	}
	b.watch.fn.Store(&f)
}

// stateName is st as listings name it: the TCP state, or UDP.
func (c *Conn) stateName(st uint32) string {
	if c.in.proto != TCP {
		return "UDP"
	}
	return StateName(st)
}

// watcher is the watcher, nil while nobody watches.
func (c *Conn) watcher() func(ConnEvent) {
	if c.watch == nil {
		return nil
	}
	if f := c.watch.fn.Load(); f != nil {
		return *f
	}
	return nil
}

// event is c's step, in state st.
func (c *Conn) event(step ConnStep, st uint32) ConnEvent {
	return ConnEvent{Step: step, Service: c.svc, Protocol: c.in.proto, State: c.stateName(st),
		Client: addrPort(c.in.src, c.in.sport), VIP: addrPort(c.in.dst, c.in.dport),
		Local: addrPort(c.out.dst, c.out.dport), Server: addrPort(c.out.src, c.out.sport)}
}

// stepped is a TCP state step from old to state made by a segment from
// dir: reaching TIME_WAIT is a close, reaching CLOSE by an RST a reset.
func (c *Conn) stepped(old, state uint32, dir int, rst bool) {
	f := c.watcher()
	if f == nil {
		return
	}
	var step ConnStep
	switch {
	case rst && state == stClose:
		step = ConnReset
	case state == stTimeWait:
		step = ConnClosed
	default:
		return
	}
	e := c.event(step, state)
	e.Prev = StateName(old)
	e.From = ClientSide
	if dir == dirOut {
		e.From = ServerSide
	}
	f(e)
}
