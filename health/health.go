// Package health checks real servers the way keepalived does for LVS: a TCP
// connect, an HTTP or HTTPS GET, an SMTP greeting, an ICMP echo, a UDP
// exchange or a DNS query every
// interval, from one of the service's local addresses through tapvs's own
// gVisor stack (so a check takes the path traffic takes), or a script run
// on the host (keepalived's MISC_CHECK), with keepalived's retry and
// warmup and rise/fall counts. A server that fails is quiesced
// (weight 0: no new connections, open ones continue) or removed; it is put
// back with its weight when it passes again. Every transition is logged.
// keepalived's virtual-server behaviour rides on these moves (quorum.go):
// a service's quorum and hysteresis, its sorry server, alpha and omega,
// and the notify and quorum scripts.
// Each change is a transaction of the balancer's (nat.Tx), as every
// operator change is: one writer of the balancer's state, which checks a
// server put back against every other address and starts it with its
// next hop known.
package health

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tapvs/tapvs/events"
	"github.com/tapvs/tapvs/nat"
)

// Spec is one check.
type Spec struct {
	Type       string // "tcp", "http", "ssl", "smtp", "ping", "misc", "udp" or "dns"
	Port       uint16 // 0: the server's own port
	Interval   time.Duration
	Timeout    time.Duration // the whole probe: connect, handshake, answer; a script's run
	Rise, Fall int
	Path       string // http, ssl
	Status     int    // http, ssl; 0: 200
	BodySHA256 string // http, ssl; hex, optional
	Remove     bool   // remove the server on failure instead of quiescing it

	// keepalived's timing: a failed probe is tried again Retry times,
	// DelayBeforeRetry apart, before it counts as one failure; the first
	// probe runs after a random delay of up to Warmup (0: one interval).
	Retry            int
	DelayBeforeRetry time.Duration
	Warmup           time.Duration

	VirtualHost string         // http, ssl: the Host header (and ssl's default SNI); "": the server's address
	ServerName  string         // ssl: the SNI and the name verified; "": VirtualHost's host
	Verify      bool           // ssl: verify the server's certificate (else it is not checked)
	CAPEM       []byte         // ssl with Verify: the CAs, PEM; nil: the system's
	roots       *x509.CertPool // CAPEM parsed, by Start (the configuration compares Specs: no pool in them)

	Script      []string // misc: argv, run without a shell
	MiscDynamic bool     // misc: exit codes 2-255 pass and set the weight to code-2

	Payload      []byte // udp: the datagram sent
	RequireReply []byte // udp: a reply must start with this; nil: any reply or none passes, an ICMP error fails

	HeloName string // smtp: the HELO's name; "": keepalived's smtpchecker.keepalived.org

	DNSName string // dns: the name queried
	DNSType uint16 // dns: the type queried (dnsmessage.Type)
}

// Target is a server to check, by service and address.
type Target struct {
	Proto nat.Protocol
	VIP   netip.AddrPort // a match service's: its selector's VIP, port 0
	// Mark, if not 0, makes the service a match service (nat/match.go),
	// found by its mark alone: its VIP:0 is also a port-0 service's.
	Mark   uint32
	RS     netip.AddrPort // a match service's on port 0 takes the client's port: its check has a port of its own
	Spec   Spec
	Weight int // the configured weight: what a recovery restores
	// Thresholds are the configured connection thresholds: what a server
	// a recovery adds back (on_failure: remove) has.
	Thresholds nat.Thresholds

	Alpha                bool     // keepalived's alpha: down until its first check passes
	NotifyUp, NotifyDown []string // keepalived's notify_up and notify_down: argv, run at a move
}

// Checker runs every check.
type Checker struct {
	bal   *nat.Balancer
	st    *stack.Stack
	nic   tcpip.NICID
	log   *slog.Logger
	mu    sync.Mutex // guards state's and vs's fields
	state map[stateKey]*state
	targs map[Key][]Target // by service, in the order Start was given them
	vs    map[Key]*vsState // quorum.go
	// qmu orders the moves of servers and services with their scripts
	// (quorum.go); taken before mu, never inside it.
	qmu           sync.Mutex
	scriptTimeout time.Duration
	stop          chan struct{}
	wg            sync.WaitGroup
	// nextHop, if set, looks up a server's next hop in the stack the
	// checks go through: a server that has just passed a check is put back
	// with it, not left to the first packet's resolution.
	nextHop func(netip.Addr) ([6]byte, error)
	// events, if set, is told of every move of a server and a quorum.
	events *events.Bus
}

// SetEvents has the checker publish its moves (a server up or down, a
// quorum gained or lost) on bus; call it before Start.
func (c *Checker) SetEvents(bus *events.Bus) { c.events = bus }

// publish puts e on the bus, if anyone listens.
func (c *Checker) publish(kind events.Kind, k Key, rs netip.AddrPort, reason string) {
	if !c.events.Active() {
		return
	}
	c.events.Publish(events.Event{Kind: kind, Service: k.EventName(), Server: rs, Reason: reason})
}

// EventName is the service as events name it: "tcp 172.25.254.100:80",
// "fwm 1".
func (k Key) EventName() string { return events.ServiceName(k.Proto.String(), k.VIP, k.Mark) }

// Key names a checked service as the control API does: its protocol and
// VIP:port, or a match service's mark alone (nat/match.go), whose VIP:0
// may also be a port-0 service's (persistent on every port).
type Key struct {
	Proto nat.Protocol
	VIP   netip.AddrPort
	Mark  uint32
}

// KeyOf is a running service's key.
func KeyOf(s *nat.Service) Key {
	return Key{Proto: s.Protocol, VIP: netip.AddrPortFrom(s.Addr, s.Port), Mark: s.Mark}.Norm()
}

// Norm is k as the checker keeps it: a mark alone, or protocol and
// VIP:port. The checker's methods take a key either way.
func (k Key) Norm() Key {
	if k.Mark != 0 {
		return Key{Mark: k.Mark}
	}
	return k
}

// String is the service as the logs name it: "172.25.254.100:80", "fwm 1".
func (k Key) String() string {
	if k.Mark != 0 {
		return fmt.Sprintf("fwm %d", k.Mark)
	}
	return k.VIP.String()
}

// txService finds k's service in tx.
func (k Key) txService(tx *nat.Tx) (*nat.Service, error) {
	if k.Mark != 0 {
		return tx.MatchService(k.Mark)
	}
	return tx.Service(k.Proto, k.VIP.Addr(), k.VIP.Port())
}

// service finds k's service in the running balancer.
func (k Key) service(b *nat.Balancer) (*nat.Service, error) {
	if k.Mark != 0 {
		return b.MatchService(k.Mark)
	}
	return b.Service(k.Proto, k.VIP.Addr(), k.VIP.Port())
}

// Key is t's service's key.
func (t Target) Key() Key { return Key{Proto: t.Proto, VIP: t.VIP, Mark: t.Mark}.Norm() }

// key is Key.
func (t *Target) key() Key { return t.Key() }

type stateKey struct {
	svc Key
	rs  netip.AddrPort
}

func (t *Target) stateKey() stateKey { return stateKey{t.key(), t.RS} }

// NeedsPort reports whether the check connects to a port (0: the
// server's): every check but ping and misc.
func (s *Spec) NeedsPort() bool { return s.Type != "ping" && s.Type != "misc" }

type state struct {
	t      Target
	up     bool
	ok, ko int    // consecutive passes and failures
	weight int    // weight to restore
	reason string // last failure
}

// New returns a checker that dials from nic of st.
func New(bal *nat.Balancer, st *stack.Stack, nic tcpip.NICID, log *slog.Logger) *Checker {
	return &Checker{bal: bal, st: st, nic: nic, log: log, state: map[stateKey]*state{}, vs: map[Key]*vsState{},
		scriptTimeout: defaultScriptTimeout, stop: make(chan struct{})}
}

// SetNextHop sets how a server's next hop is looked up when it is put
// back; call it before Start.
func (c *Checker) SetNextHop(f func(netip.Addr) ([6]byte, error)) { c.nextHop = f }

// Start runs a goroutine per target. Servers start as up (down with
// Alpha), or as prev (a checker being replaced, on reload; already closed)
// last saw them: a server that is down stays out, and comes back with its
// configured weight. The services' quorums (SetVS) are applied then.
func (c *Checker) Start(targets []Target, prev *Checker) {
	c.mu.Lock()
	if c.targs == nil {
		c.targs = map[Key][]Target{}
	}
	for _, t := range targets {
		k := t.key()
		c.targs[k] = append(c.targs[k], t)
	}
	c.mu.Unlock()
	var started []*state
	for _, t := range targets {
		if len(t.Spec.CAPEM) > 0 {
			t.Spec.roots = x509.NewCertPool()
			t.Spec.roots.AppendCertsFromPEM(t.Spec.CAPEM)
		}
		k := t.stateKey()
		s := &state{t: t, up: true, weight: t.Weight}
		var p *state
		if prev != nil {
			p = prev.state[k]
		}
		switch {
		case p != nil && !p.up:
			s.up, s.ko, s.reason = false, p.ko, p.reason
			c.holdDown(s)
		case p == nil && t.Alpha:
			s.up, s.reason = false, "alpha: no check has passed yet"
			c.holdDown(s)
		}
		c.mu.Lock()
		c.state[k] = s
		c.mu.Unlock()
		started = append(started, s)
	}
	c.startQuorum(prev)
	for _, s := range started {
		k := s.t.stateKey()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.loop(k, s)
		}()
	}
}

// Release puts back, with the weight it had, every server this closed
// checker held out that match selects, and forgets it, so that a checker
// Started with this one as prev checks it afresh: a check that was
// changed or removed does not hold a server out for another's failures. A
// server it removed (on_failure: remove) is added again only if readd.
func (c *Checker) Release(match func(Target) bool, readd bool) {
	var down []*state
	c.mu.Lock() // Up may still read a closed checker
	for k, p := range c.state {
		if match(p.t) {
			delete(c.state, k)
			if !p.up {
				down = append(down, p)
			}
		}
	}
	c.mu.Unlock()
	for _, p := range down {
		err := c.change(p.t, func(tx *nat.Tx, svc *nat.Service, d *nat.Dest) error {
			switch {
			case d != nil:
				return tx.SetWeight(svc, d.Addr, d.Port, p.weight)
			case readd:
				_, err := addBack(tx, svc, p.t.RS, p.weight, p.t.Thresholds)
				return err
			}
			return nil
		})
		if err != nil && !errors.Is(err, nat.ErrNoService) {
			c.log.Warn("real server's check changed, but it could not be put back", "service", p.t.key().String(), "rs", p.t.RS.String(), "err", err)
			continue
		}
		c.log.Info("real server's check changed: put back until the new check says otherwise", "service", p.t.key().String(), "rs", p.t.RS.String(), "weight", p.weight)
	}
}

// addBack adds a removed real server back with weight w and its
// configured thresholds th.
func addBack(tx *nat.Tx, svc *nat.Service, rs netip.AddrPort, w int, th nat.Thresholds) (*nat.Dest, error) {
	d, err := tx.AddDest(svc, rs.Addr(), rs.Port(), w)
	if err == nil && th != (nat.Thresholds{}) {
		err = tx.SetThresholds(svc, rs.Addr(), rs.Port(), th)
	}
	return d, err
}

// holdDown keeps a down server out as its spec says (the spec may have
// changed from quiesce to remove or back since it went down).
func (c *Checker) holdDown(s *state) {
	err := c.change(s.t, func(tx *nat.Tx, svc *nat.Service, d *nat.Dest) error {
		if d == nil {
			return nil
		}
		if s.t.Spec.Remove {
			return tx.DeleteDest(svc, d.Addr, d.Port)
		}
		return tx.SetWeight(svc, d.Addr, d.Port, 0)
	})
	if err != nil && !errors.Is(err, nat.ErrNoService) {
		c.log.Warn("real server down, but could not be held out", "service", s.t.key().String(), "rs", s.t.RS.String(), "err", err)
	}
}

// change runs fn on the target's service and real server (nil when it is
// not listed) in a transaction of its own.
func (c *Checker) change(t Target, fn func(tx *nat.Tx, svc *nat.Service, d *nat.Dest) error) error {
	return c.bal.Update(func(tx *nat.Tx) error {
		svc, err := t.key().txService(tx)
		if err != nil {
			return err
		}
		return fn(tx, svc, tx.Dest(svc, t.RS.Addr(), t.RS.Port()))
	})
}

// Close stops every check. Servers stay as the checks left them.
func (c *Checker) Close() {
	close(c.stop)
	c.wg.Wait()
}

// Targets are the servers of a service checked, in the order Start was
// given them.
func (c *Checker) Targets(k Key) []Target {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.targs[k.Norm()])
}

// Up reports a server's state; checked is false if nothing checks it.
func (c *Checker) Up(k Key, rs netip.AddrPort) (up, checked bool, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.state[stateKey{k.Norm(), rs}]
	if s == nil {
		return false, false, ""
	}
	return s.up, true, s.reason
}

func (c *Checker) loop(k stateKey, s *state) {
	// keepalived's warmup: the first probe at a random moment up to
	// Warmup, so that servers (and tapvs instances) started together are
	// not all checked at once.
	if w := s.t.Spec.Warmup; w > 0 && !c.sleep(rand.N(w+1)) {
		return
	}
	first := s.t.Spec.Warmup > 0
	tick := time.NewTicker(s.t.Spec.Interval)
	defer tick.Stop()
	for {
		if !first {
			select {
			case <-c.stop:
				return
			case <-tick.C:
			}
		}
		first = false
		svc, err := k.svc.service(c.bal)
		if err != nil {
			continue // the service is gone, perhaps for a while (a reload)
		}
		var weight int
		err = c.retry(s.t.Spec, func() error {
			var err error
			weight, err = c.probe(svc, s.t)
			return err
		})
		if err == nil && weight >= 0 {
			c.setDynamic(s, weight)
		}
		c.record(svc, s, err)
	}
}

// sleep waits d, or less if the checker stops: it reports whether to go on.
func (c *Checker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.stop:
		return false
	case <-t.C:
		return true
	}
}

// retry runs probe, and again up to spec.Retry times, DelayBeforeRetry
// apart, while it fails (keepalived's retry and delay_before_retry): only
// the last failure is returned, to count as one. A checker stopping ends
// the retries with the failure in hand.
func (c *Checker) retry(spec Spec, probe func() error) error {
	err := probe()
	for i := 0; err != nil && i < spec.Retry; i++ {
		if !c.sleep(spec.DelayBeforeRetry) {
			return err
		}
		err = probe()
	}
	return err
}

// probe runs one check of t: a script on the host, or else a probe
// through the stack. weight is what a passing misc_dynamic script sets the
// server's weight to, or -1.
func (c *Checker) probe(svc *nat.Service, t Target) (weight int, err error) {
	if t.Spec.Type == "misc" {
		return runMisc(t)
	}
	return -1, c.check(svc, t)
}

// record counts a result and moves the server when a count is reached.
// The move is a transaction, made after c.mu is let go: a transaction may
// ask the checker (a reload asks Up), so c.mu is never held while waiting
// for one. Each target's results come from its own loop only, so its moves
// keep their order.
//
// A move, its notify script and the service's quorum are under c.qmu.
func (c *Checker) record(svc *nat.Service, s *state, err error) {
	rs := s.t.RS
	k := s.t.stateKey()
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.mu.Lock()
	if err != nil {
		s.ok, s.ko, s.reason = 0, s.ko+1, err.Error()
		down := s.up && s.ko >= s.t.Spec.Fall
		if down {
			s.up = false
		}
		ko := s.ko
		c.mu.Unlock()
		if down {
			c.takeOut(svc, s, ko, err)
			c.publish(events.ServerDown, k.svc, rs, err.Error())
			c.notify(s.t, false)
			c.evalQuorum(k.svc, false)
		}
		return
	}
	s.ok, s.ko = s.ok+1, 0
	up := !s.up && s.ok >= s.t.Spec.Rise
	if up {
		s.up, s.reason = true, ""
	}
	ok, weight, serving := s.ok, s.weight, c.servingLocked(k)
	c.mu.Unlock()
	if !up {
		return
	}
	defer c.evalQuorum(k.svc, false)
	defer c.notify(s.t, true)
	defer c.publish(events.ServerUp, k.svc, rs, "")
	if !serving {
		// The quorum puts it back with the others when it is reached.
		c.log.Info("real server up: held out while its service is below quorum", "service", svc.String(), "rs", rs.String(), "after", ok)
		return
	}
	// The check has just reached the server through the stack: its next
	// hop is fresh there.
	var hop [6]byte
	hopOK := false
	if c.nextHop != nil {
		var herr error
		hop, herr = c.nextHop(rs.Addr())
		hopOK = herr == nil
	}
	terr := c.change(s.t, func(tx *nat.Tx, svc *nat.Service, d *nat.Dest) error {
		if d != nil {
			return tx.SetWeight(svc, rs.Addr(), rs.Port(), weight)
		}
		d, err := addBack(tx, svc, rs, weight, s.t.Thresholds)
		if err != nil {
			return err
		}
		if hopOK {
			d.SetNextHopMAC(hop) // not published yet
		}
		return nil
	})
	if terr != nil {
		c.log.Warn("real server up, but could not be put back", "service", svc.String(), "rs", rs.String(), "err", terr)
		return
	}
	c.log.Info("real server up: restored", "service", svc.String(), "rs", rs.String(), "weight", weight, "after", ok)
}

// takeOut quiesces or removes a server that has failed ko checks in a row,
// keeping its weight to restore.
func (c *Checker) takeOut(svc *nat.Service, s *state, ko int, why error) {
	rs := s.t.RS
	var listed bool
	terr := c.change(s.t, func(tx *nat.Tx, svc *nat.Service, d *nat.Dest) error {
		if listed = d != nil; !listed {
			return nil
		}
		w := tx.Weight(svc, d)
		c.mu.Lock()
		if c.servingLocked(s.t.stateKey()) {
			s.weight = w // below quorum, the 0 is the quorum's
		}
		c.mu.Unlock()
		if s.t.Spec.Remove {
			return tx.DeleteDest(svc, rs.Addr(), rs.Port())
		}
		return tx.SetWeight(svc, rs.Addr(), rs.Port(), 0)
	})
	switch {
	case terr != nil:
		c.log.Warn("real server down, but could not be taken out", "service", svc.String(), "rs", rs.String(), "after", ko, "reason", why, "err", terr)
	case !listed:
	case s.t.Spec.Remove:
		c.log.Warn("real server down: removed", "service", svc.String(), "rs", rs.String(), "after", ko, "reason", why)
	default:
		c.log.Warn("real server down: quiesced (weight 0)", "service", svc.String(), "rs", rs.String(), "after", ko, "reason", why)
	}
}

// check runs one probe from one of the service's LIPs.
func (c *Checker) check(svc *nat.Service, t Target) error {
	las := svc.LocalAddrs()
	lips := make([]netip.Addr, len(las))
	for i, la := range las {
		lips[i] = la.Addr
	}
	return c.checkFrom(lips, t)
}

// localFor picks the first of lips of rs's family: a connection from a LIP
// to a real server is of one family, IPv4 or IPv6.
func localFor(lips []netip.Addr, rs netip.Addr) (netip.Addr, error) {
	if len(lips) == 0 {
		return netip.Addr{}, fmt.Errorf("the service has no local address to check from")
	}
	for _, l := range lips {
		if l.Unmap().Is4() == rs.Unmap().Is4() {
			return l.Unmap(), nil
		}
	}
	family := "IPv6"
	if rs.Unmap().Is4() {
		family = "IPv4"
	}
	return netip.Addr{}, fmt.Errorf("the service has no %s local address to check %s from", family, rs)
}

// checkFrom runs one probe from the first of lips of the server's family.
func (c *Checker) checkFrom(lips []netip.Addr, t Target) error {
	rs := t.RS.Addr().Unmap()
	lip, err := localFor(lips, rs)
	if err != nil {
		return err
	}
	proto := ipv4.ProtocolNumber
	if rs.Is6() {
		proto = ipv6.ProtocolNumber
	}
	port := t.Spec.Port
	if port == 0 {
		port = t.RS.Port()
	}
	if port == 0 && t.Spec.NeedsPort() {
		// A match service's server on port 0, under a check set at run
		// time without a port (the file's refuses it).
		return fmt.Errorf("%s: the server is on port 0 (the client's port): the check needs a port of its own", t.Spec.Type)
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.Spec.Timeout)
	defer cancel()
	local := tcpip.FullAddress{NIC: c.nic, Addr: tcpip.AddrFromSlice(lip.AsSlice())}
	remote := tcpip.FullAddress{NIC: c.nic, Addr: tcpip.AddrFromSlice(rs.AsSlice()), Port: port}
	dial := func(ctx context.Context) (net.Conn, error) {
		return gonet.DialTCPWithBind(ctx, c.st, local, remote, proto)
	}
	switch t.Spec.Type {
	case "tcp":
		conn, err := dial(ctx)
		if err != nil {
			return fmt.Errorf("tcp connect: %w", err)
		}
		return conn.Close()
	case "udp":
		return c.udpCheck(ctx, local, remote, proto, t.Spec)
	case "dns":
		return c.dnsCheck(ctx, local, remote, proto, t.Spec)
	case "ping":
		return c.pingCheck(ctx, local, remote, proto)
	case "smtp":
		return smtpCheck(ctx, dial, t.Spec)
	}
	return httpGet(ctx, dial, netip.AddrPortFrom(rs, port), t.Spec)
}

// httpGet is the http and ssl checks: one GET on a connection of its own,
// its status and, when asked, its body's SHA-256.
func httpGet(ctx context.Context, dial func(context.Context) (net.Conn, error), server netip.AddrPort, spec Spec) error {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
	}
	scheme := spec.Type // "http" or "ssl"
	if spec.Type == "ssl" {
		scheme = "https"
		cfg := tlsConfig(server.Addr(), spec)
		// The handshake is bounded by the probe's context (its timeout),
		// as the connect is.
		tr.DialTLSContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(conn, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			return tc, nil
		}
	}
	hc := &http.Client{Transport: tr}
	// An IPv6 server's address is bracketed in the URL, and so in the
	// Host header: AddrPort's form.
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s://%s%s", scheme, server, spec.Path), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", spec.Type, err)
	}
	if spec.VirtualHost != "" {
		req.Host = spec.VirtualHost // keepalived's virtualhost
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", spec.Type, err)
	}
	defer resp.Body.Close()
	want := spec.Status
	if want == 0 {
		want = 200
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s status %d, want %d", spec.Type, resp.StatusCode, want)
	}
	if spec.BodySHA256 != "" {
		h := sha256.New()
		if _, err := io.Copy(h, io.LimitReader(resp.Body, 16<<20)); err != nil {
			return fmt.Errorf("%s body: %w", spec.Type, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != spec.BodySHA256 {
			return fmt.Errorf("%s body sha256 %s, want %s", spec.Type, got, spec.BodySHA256)
		}
	}
	return nil
}

// tlsConfig is the ssl check's: SNI from ServerName, else VirtualHost's
// host; the certificate is verified only when asked (keepalived's SSL_GET
// does not verify), against CAPEM's or the system's, for the SNI name or,
// without one, the server's address.
func tlsConfig(server netip.Addr, spec Spec) *tls.Config {
	name := spec.ServerName
	if name == "" && spec.VirtualHost != "" {
		name = spec.VirtualHost
		if h, _, err := net.SplitHostPort(name); err == nil {
			name = h
		}
	}
	if name == "" {
		name = server.String() // not sent as SNI (an address); what is verified
	}
	roots := spec.roots
	if roots == nil && len(spec.CAPEM) > 0 { // a Spec Start did not see
		roots = x509.NewCertPool()
		roots.AppendCertsFromPEM(spec.CAPEM)
	}
	return &tls.Config{ServerName: name, InsecureSkipVerify: !spec.Verify, RootCAs: roots}
}
