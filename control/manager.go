package control

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tapvs/tapvs/nat"
)

// Manager applies control operations to a running balancer. Each operation,
// or batch of them, is one transaction (nat.Tx): it is checked whole before
// anything changes, so a refused command leaves the running state as it was.
type Manager struct {
	bal    *nat.Balancer
	mu     sync.Mutex   // serialises transactions with the stack sync after them
	sync   func() error // after a change: the stack's addresses, next hops
	health func(*nat.Service) []HealthView
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

func (m *Manager) service(k ServiceKey) (*nat.Service, error) {
	p, ap, err := k.parse()
	if err != nil {
		return nil, err
	}
	return m.bal.Service(p, ap.Addr(), ap.Port())
}

// Update runs fn as one transaction (nat.Tx: all of its changes or none)
// and then brings the stack's addresses in line. Every change of the
// control API, of a restore and of a reload goes through here.
func (m *Manager) Update(fn func(tx *nat.Tx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	err := m.bal.Update(func(tx *nat.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		changed = tx.Changes() > 0
		return nil
	})
	if err != nil || !changed {
		return err
	}
	return m.sync()
}

// Op is one control operation as data, an ipvsadm command: Batch applies a
// list of them as one (tapvsadm -R).
type Op struct {
	// Op is add-service, edit-service, delete-service, clear, add-dest,
	// edit-dest, delete-dest, add-laddr, delete-laddr or set-timeouts.
	Op        string       `json:"op"`
	Service   *ServiceSpec `json:"service,omitempty"`
	Dest      *DestSpec    `json:"dest,omitempty"`
	LocalAddr string       `json:"laddr,omitempty"`
	Timeouts  *Timeouts    `json:"timeouts,omitempty"`
}

// BatchError says which operation of a batch was refused; none was applied.
type BatchError struct {
	Index int // from 0
	Err   error
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("operation %d: %v (nothing was applied)", e.Index+1, e.Err)
}
func (e *BatchError) Unwrap() error { return e.Err }

// MaxBatch bounds the operations of one batch.
const MaxBatch = 1 << 20

// Batch applies ops in order as one transaction: each is checked against
// the state the ones before it leave, and if one is refused none is
// applied.
func (m *Manager) Batch(ops []Op) error {
	if len(ops) > MaxBatch {
		return fmt.Errorf("%d operations: at most %d in one batch", len(ops), MaxBatch)
	}
	return m.Update(func(tx *nat.Tx) error {
		for i, op := range ops {
			if err := m.do(tx, op); err != nil {
				return &BatchError{Index: i, Err: err}
			}
		}
		return nil
	})
}

// do makes one operation in tx.
func (m *Manager) do(tx *nat.Tx, op Op) error {
	need := func(what string, ok bool) error {
		if !ok {
			return fmt.Errorf("%s needs %s", op.Op, what)
		}
		return nil
	}
	switch op.Op {
	case "add-service", "edit-service", "delete-service", "add-dest", "edit-dest", "delete-dest", "add-laddr", "delete-laddr":
		if err := need("a service", op.Service != nil); err != nil {
			return err
		}
	}
	switch op.Op {
	case "add-service":
		return addService(tx, *op.Service)
	case "edit-service":
		return editService(tx, *op.Service)
	case "delete-service":
		svc, err := txService(tx, op.Service.ServiceKey)
		if err == nil {
			tx.DeleteService(svc)
		}
		return err
	case "clear":
		tx.Clear()
		return nil
	case "add-dest", "edit-dest", "delete-dest":
		if err := need("a real server", op.Dest != nil); err != nil {
			return err
		}
		return destOp(tx, op.Op, op.Service.ServiceKey, *op.Dest)
	case "add-laddr", "delete-laddr":
		a, err := parseLIP(op.LocalAddr)
		if err != nil {
			return err
		}
		svc, err := txService(tx, op.Service.ServiceKey)
		if err != nil {
			return err
		}
		if op.Op == "add-laddr" {
			_, err = tx.AddLocalAddr(svc, a)
			return err
		}
		return tx.DeleteLocalAddr(svc, a)
	case "set-timeouts":
		if err := need("timeouts", op.Timeouts != nil); err != nil {
			return err
		}
		t := op.Timeouts
		return tx.SetAllTimeouts(time.Duration(t.TCP)*time.Second, time.Duration(t.TCPFin)*time.Second, time.Duration(t.UDP)*time.Second)
	}
	return fmt.Errorf("%q is not an operation", op.Op)
}

func txService(tx *nat.Tx, k ServiceKey) (*nat.Service, error) {
	p, ap, err := k.parse()
	if err != nil {
		return nil, err
	}
	return tx.Service(p, ap.Addr(), ap.Port())
}

// estTimeout reads -V: seconds, within nat.MaxTimeout.
func estTimeout(sec uint32) (time.Duration, error) {
	d := time.Duration(sec) * time.Second
	if err := nat.CheckTimeout(d); err != nil {
		return 0, fmt.Errorf("ESTABLISHED timeout: %w", err)
	}
	return d, nil
}

func addService(tx *nat.Tx, s ServiceSpec) error {
	p, ap, err := s.parse()
	if err != nil {
		return err
	}
	if s.Persistent != 0 {
		return fmt.Errorf("persistence (-p) is not supported yet")
	}
	sched := s.Scheduler
	if sched == "" {
		sched = "wlc"
	}
	to := tx.DefaultTimeouts()
	if s.EstablishedTimeout > 0 {
		d, err := estTimeout(s.EstablishedTimeout)
		if err != nil {
			return err
		}
		to.SetEstablished(d)
	}
	_, err = tx.AddService(nat.ServiceConfig{Name: s.Name, Addr: ap.Addr(), Port: ap.Port(), Protocol: p, Scheduler: sched, Timeouts: &to,
		Synproxy: s.Synproxy != nil && *s.Synproxy})
	return err
}

func editService(tx *nat.Tx, s ServiceSpec) error {
	if s.Persistent != 0 {
		return fmt.Errorf("persistence (-p) is not supported yet")
	}
	svc, err := txService(tx, s.ServiceKey)
	if err != nil {
		return err
	}
	if s.Scheduler != "" && s.Scheduler != svc.Scheduler() {
		if err := tx.SetScheduler(svc, s.Scheduler); err != nil {
			return err
		}
	}
	if s.Synproxy != nil {
		if err := tx.SetSynproxy(svc, *s.Synproxy); err != nil {
			return err
		}
	}
	if s.Name != "" {
		tx.SetName(svc, s.Name)
	}
	if s.EstablishedTimeout > 0 {
		t := tx.Timeouts(svc)
		d, err := estTimeout(s.EstablishedTimeout)
		if err != nil {
			return err
		}
		t.SetEstablished(d)
		return tx.SetTimeouts(svc, t)
	}
	return nil
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
	return ap, nil
}

func destOp(tx *nat.Tx, op string, k ServiceKey, d DestSpec) error {
	ap, err := parseDest(d)
	if err != nil {
		return err
	}
	svc, err := txService(tx, k)
	if err != nil {
		return err
	}
	switch op {
	case "add-dest":
		w := 1
		if d.Weight != nil {
			w = *d.Weight
		}
		_, err = tx.AddDest(svc, ap.Addr(), ap.Port(), w)
		return err
	case "edit-dest":
		if !slices.ContainsFunc(tx.Dests(svc), func(x *nat.Dest) bool { return x.Addr == ap.Addr() && x.Port == ap.Port() }) {
			return fmt.Errorf("real server %s: %w", ap, nat.ErrNoDest)
		}
		if d.Weight == nil {
			return nil
		}
		return tx.SetWeight(svc, ap.Addr(), ap.Port(), *d.Weight)
	}
	return tx.DeleteDest(svc, ap.Addr(), ap.Port())
}

func parseLIP(s string) (netip.Addr, error) {
	// ipvsadm -z takes an address; the seed writes 127.0.0.1:80, so a port is
	// accepted and ignored.
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("%q is not a local address", s)
	}
	return a, nil
}

// one runs a single operation as its own transaction.
func (m *Manager) one(op Op) error { return m.Update(func(tx *nat.Tx) error { return m.do(tx, op) }) }

// AddService adds a service (ipvsadm -A).
func (m *Manager) AddService(s ServiceSpec) error { return m.one(Op{Op: "add-service", Service: &s}) }

// EditService changes a service's scheduler, SYN proxy, name or ESTABLISHED
// timeout (ipvsadm -E). Open connections keep going.
func (m *Manager) EditService(s ServiceSpec) error { return m.one(Op{Op: "edit-service", Service: &s}) }

// DeleteService removes a service (ipvsadm -D).
func (m *Manager) DeleteService(k ServiceKey) error {
	return m.one(Op{Op: "delete-service", Service: &ServiceSpec{ServiceKey: k}})
}

// Clear removes every service (ipvsadm -C).
func (m *Manager) Clear() error { return m.one(Op{Op: "clear"}) }

// AddDest adds a real server (ipvsadm -a).
func (m *Manager) AddDest(k ServiceKey, d DestSpec) error {
	return m.one(Op{Op: "add-dest", Service: &ServiceSpec{ServiceKey: k}, Dest: &d})
}

// EditDest changes a real server's weight (ipvsadm -e).
func (m *Manager) EditDest(k ServiceKey, d DestSpec) error {
	return m.one(Op{Op: "edit-dest", Service: &ServiceSpec{ServiceKey: k}, Dest: &d})
}

// DeleteDest removes a real server (ipvsadm -d).
func (m *Manager) DeleteDest(k ServiceKey, addr string) error {
	return m.one(Op{Op: "delete-dest", Service: &ServiceSpec{ServiceKey: k}, Dest: &DestSpec{Addr: addr}})
}

// AddLocalAddr adds a LIP (ipvsadm -P -z).
func (m *Manager) AddLocalAddr(k ServiceKey, addr string) error {
	return m.one(Op{Op: "add-laddr", Service: &ServiceSpec{ServiceKey: k}, LocalAddr: addr})
}

// DeleteLocalAddr removes a LIP (ipvsadm -Q -z).
func (m *Manager) DeleteLocalAddr(k ServiceKey, addr string) error {
	return m.one(Op{Op: "delete-laddr", Service: &ServiceSpec{ServiceKey: k}, LocalAddr: addr})
}

// SetTimeouts is ipvsadm --set tcp tcpfin udp (seconds; 0 leaves one as is).
func (m *Manager) SetTimeouts(t Timeouts) error { return m.one(Op{Op: "set-timeouts", Timeouts: &t}) }

// Timeouts are the defaults new services get.
func (m *Manager) Timeouts() Timeouts { return timeoutsOf(m.bal.DefaultTimeouts()) }

func timeoutsOf(t nat.Timeouts) Timeouts {
	return Timeouts{TCP: uint32(t.Established() / time.Second), TCPFin: uint32(t.FinWait() / time.Second), UDP: uint32(t.UDP / time.Second)}
}

// Zero clears the counters (ipvsadm -Z).
func (m *Manager) Zero() { m.bal.Zero() }

// Services lists the services, sorted as ipvsadm sorts them.
func (m *Manager) Services() []Service {
	var out []Service
	for _, s := range m.bal.Services() {
		v := Service{
			ServiceKey: ServiceKey{Protocol: strings.ToLower(s.Protocol.String()), Addr: netip.AddrPortFrom(s.Addr, s.Port).String()},
			Name:       s.Name(), Scheduler: s.Scheduler(), Synproxy: s.Synproxy(),
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
