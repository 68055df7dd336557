package control

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tapvs/tapvs/nat"
)

// Manager applies control operations to a running balancer. Each operation
// checks all of its input before it changes anything, so a refused command
// leaves the running state as it was.
type Manager struct {
	bal    *nat.Balancer
	mu     sync.Mutex
	sync   func() error // after a change: the stack's addresses, next hops
	health func(*nat.Service) []HealthView
	// ValidLIP, if set, refuses local addresses tapvs cannot use (outside
	// the server side's subnet).
	ValidLIP func(netip.Addr) error
	// Version is reported by Info.
	Version string
}

// NewManager manages bal; sync is called after every change.
func NewManager(bal *nat.Balancer, sync func() error) *Manager {
	if sync == nil {
		sync = func() error { return nil }
	}
	return &Manager{bal: bal, sync: sync, Version: "1.2.1"}
}

// SetHealth reports health checks in listings.
func (m *Manager) SetHealth(f func(*nat.Service) []HealthView) { m.health = f }

// withService runs fn on the service k names, under the manager's lock.
func (m *Manager) withService(k ServiceKey, fn func(*nat.Service) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	svc, err := m.service(k)
	if err != nil {
		return err
	}
	return fn(svc)
}

func (m *Manager) service(k ServiceKey) (*nat.Service, error) {
	p, ap, err := k.parse()
	if err != nil {
		return nil, err
	}
	return m.bal.Service(p, ap.Addr(), ap.Port())
}

// AddService adds a service (ipvsadm -A).
func (m *Manager) AddService(s ServiceSpec) error {
	p, ap, err := s.parse()
	if err != nil {
		return err
	}
	if !ap.Addr().Is4() {
		return fmt.Errorf("%s: only IPv4 is supported yet", ap)
	}
	if s.Persistent != 0 {
		return fmt.Errorf("persistence (-p) is not supported yet")
	}
	sched := s.Scheduler
	if sched == "" {
		sched = "wlc"
	}
	sp := s.Synproxy != nil && *s.Synproxy
	if sp && p != nat.TCP {
		return fmt.Errorf("only a TCP service can have a SYN proxy")
	}
	to := m.bal.DefaultTimeouts()
	if s.EstablishedTimeout > 0 {
		to.TCP[1] = time.Duration(s.EstablishedTimeout) * time.Second
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.bal.AddService(nat.ServiceConfig{Name: s.Name, Addr: ap.Addr(), Port: ap.Port(), Protocol: p, Scheduler: sched, Timeouts: &to, Synproxy: sp}); err != nil {
		return err
	}
	return m.sync()
}

// EditService changes a service's scheduler, SYN proxy or ESTABLISHED
// timeout (ipvsadm -E). Open connections keep going.
func (m *Manager) EditService(s ServiceSpec) error {
	if s.Persistent != 0 {
		return fmt.Errorf("persistence (-p) is not supported yet")
	}
	if s.Scheduler != "" {
		if err := nat.ValidScheduler(s.Scheduler); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	svc, err := m.service(s.ServiceKey)
	if err != nil {
		return err
	}
	if s.Synproxy != nil && *s.Synproxy && svc.Protocol != nat.TCP {
		return fmt.Errorf("only a TCP service can have a SYN proxy")
	}
	if s.Scheduler != "" && s.Scheduler != svc.Scheduler() {
		if err := svc.SetScheduler(s.Scheduler); err != nil {
			return err
		}
	}
	if s.Synproxy != nil {
		svc.SetSynproxy(*s.Synproxy)
	}
	if s.EstablishedTimeout > 0 {
		t := svc.Timeouts()
		t.TCP[1] = time.Duration(s.EstablishedTimeout) * time.Second
		svc.SetTimeouts(t)
	}
	return nil
}

// DeleteService removes a service (ipvsadm -D).
func (m *Manager) DeleteService(k ServiceKey) error {
	p, ap, err := k.parse()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.bal.DeleteService(p, ap.Addr(), ap.Port()); err != nil {
		return err
	}
	return m.sync()
}

// Clear removes every service (ipvsadm -C).
func (m *Manager) Clear() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bal.Clear()
	return m.sync()
}

func parseDest(d DestSpec) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(d.Addr)
	if err != nil {
		return ap, fmt.Errorf("%q is not RIP:port", d.Addr)
	}
	switch strings.ToLower(d.Forward) {
	case "", "fullnat", "fnat":
	default:
		return ap, fmt.Errorf("forwarding method %q: tapvs does FULLNAT only (-b)", d.Forward)
	}
	if d.Weight != nil && (*d.Weight < 0 || *d.Weight > 65535) {
		return ap, fmt.Errorf("weight %d is out of range 0-65535", *d.Weight)
	}
	return ap, nil
}

// AddDest adds a real server (ipvsadm -a).
func (m *Manager) AddDest(k ServiceKey, d DestSpec) error {
	ap, err := parseDest(d)
	if err != nil {
		return err
	}
	w := 1
	if d.Weight != nil {
		w = *d.Weight
	}
	return m.withService(k, func(svc *nat.Service) error {
		if _, err := svc.AddDest(ap.Addr(), ap.Port(), w); err != nil {
			return err
		}
		return m.sync()
	})
}

// EditDest changes a real server's weight (ipvsadm -e).
func (m *Manager) EditDest(k ServiceKey, d DestSpec) error {
	ap, err := parseDest(d)
	if err != nil {
		return err
	}
	return m.withService(k, func(svc *nat.Service) error {
		if svc.Dest(ap.Addr(), ap.Port()) == nil {
			return fmt.Errorf("real server %s: %w", ap, nat.ErrNoDest)
		}
		if d.Weight == nil {
			return nil
		}
		return svc.SetWeight(ap.Addr(), ap.Port(), *d.Weight)
	})
}

// DeleteDest removes a real server (ipvsadm -d).
func (m *Manager) DeleteDest(k ServiceKey, addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not RIP:port", addr)
	}
	return m.withService(k, func(svc *nat.Service) error { return svc.DeleteDest(ap.Addr(), ap.Port()) })
}

func parseLIP(s string) (netip.Addr, error) {
	// ipvsadm -z takes an address; the seed writes 127.0.0.1:80, so a port is
	// accepted and ignored.
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return a, fmt.Errorf("%q is not an IPv4 local address", s)
	}
	return a, nil
}

// AddLocalAddr adds a LIP (ipvsadm -P -z).
func (m *Manager) AddLocalAddr(k ServiceKey, addr string) error {
	a, err := parseLIP(addr)
	if err != nil {
		return err
	}
	if m.ValidLIP != nil {
		if err := m.ValidLIP(a); err != nil {
			return err
		}
	}
	return m.withService(k, func(svc *nat.Service) error {
		if _, err := m.bal.AddLocalAddr(svc, a); err != nil {
			return err
		}
		return m.sync()
	})
}

// DeleteLocalAddr removes a LIP (ipvsadm -Q -z).
func (m *Manager) DeleteLocalAddr(k ServiceKey, addr string) error {
	a, err := parseLIP(addr)
	if err != nil {
		return err
	}
	return m.withService(k, func(svc *nat.Service) error {
		if err := m.bal.DeleteLocalAddr(svc, a); err != nil {
			return err
		}
		return m.sync()
	})
}

// SetTimeouts is ipvsadm --set tcp tcpfin udp (seconds; 0 leaves one as is).
func (m *Manager) SetTimeouts(t Timeouts) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bal.SetTimeouts(time.Duration(t.TCP)*time.Second, time.Duration(t.TCPFin)*time.Second, time.Duration(t.UDP)*time.Second)
	return nil
}

// Timeouts are the defaults new services get.
func (m *Manager) Timeouts() Timeouts { return timeoutsOf(m.bal.DefaultTimeouts()) }

func timeoutsOf(t nat.Timeouts) Timeouts {
	return Timeouts{TCP: uint32(t.TCP[1] / time.Second), TCPFin: uint32(t.TCP[4] / time.Second), UDP: uint32(t.UDP / time.Second)}
}

// Zero clears the counters (ipvsadm -Z).
func (m *Manager) Zero() { m.bal.Zero() }

// Services lists the services, sorted as ipvsadm sorts them.
func (m *Manager) Services() []Service {
	var out []Service
	for _, s := range m.bal.Services() {
		v := Service{
			ServiceKey: ServiceKey{Protocol: strings.ToLower(s.Protocol.String()), Addr: netip.AddrPortFrom(s.Addr, s.Port).String()},
			Name:       s.Name, Scheduler: s.Scheduler(), Synproxy: s.Synproxy(),
			Timeouts: timeoutsOf(s.Timeouts()), Stats: s.Traffic(), Rate: s.Rate(),
		}
		for _, d := range s.Dests() {
			a, ia, _ := d.Conns()
			v.Dests = append(v.Dests, Dest{Addr: d.String(), Forward: "FullNat", Weight: d.Weight(), ActiveConn: a, InActConn: ia, Stats: d.Traffic(), Rate: d.Rate()})
		}
		for _, l := range s.LocalAddrs() {
			c, conf, ex := l.Stats()
			v.LocalAddrs = append(v.LocalAddrs, LocalAddr{Addr: l.Addr.String(), Conns: c, Conflicts: conf, Exhausted: ex})
		}
		if m.health != nil {
			v.Health = m.health(s)
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Protocol != out[j].Protocol {
			return out[i].Protocol < out[j].Protocol
		}
		return netip.MustParseAddrPort(out[i].Addr).Compare(netip.MustParseAddrPort(out[j].Addr)) < 0
	})
	return out
}

// Conns lists the connections.
func (m *Manager) Conns() []Conn {
	var out []Conn
	for _, c := range m.bal.Table().Conns() {
		out = append(out, Conn{Protocol: c.Protocol.String(), State: c.State, ExpiresMs: c.Expires.Milliseconds(),
			Source: c.Client.String(), Virtual: c.VIP.String(), Local: c.LIP.String(), Destination: c.RIP.String()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

// Info describes the running tapvs.
func (m *Manager) Info() Info {
	return Info{Version: m.Version, Size: m.bal.MaxConns(), Conns: m.bal.Table().Len(), Services: len(m.bal.Services())}
}
