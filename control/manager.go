package control

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/events"
	"github.com/tapvs/tapvs/nat"
)

// Manager applies control operations to a running balancer. Each operation,
// or batch of them, is one transaction (nat.Tx): it is checked whole before
// anything changes, so a refused command leaves the running state as it was.
// It takes typed keys; listings come back in the API's form (package api),
// which is what every reader of them wants.
type Manager struct {
	bal    *nat.Balancer
	mu     sync.Mutex   // serialises transactions with the stack sync after them
	sync   func() error // after a change: the stack's addresses, next hops
	health func(*nat.Service) []api.HealthView
	// Set while the API serves (tapvs run sets them once it watches its
	// file), read by its handlers.
	notes   atomic.Pointer[func([]Op) []string]        // how a reload treats a change (SetNotes)
	reload  atomic.Pointer[func() (api.Reload, error)] // POST /v1/reload (SetReload)
	cluster atomic.Pointer[Cluster]                    // GET /v1/bgp, /v1/drain (SetCluster)
	checks  atomic.Pointer[Checks]                     // .../health (SetChecks)
	faults  atomic.Pointer[Faults]                     // /v1/faults (ServeFaults)
	events  atomic.Pointer[events.Bus]                 // GET /v1/events (SetEvents)
	// Version is reported by Info.
	Version string
}

// NewManager manages bal; sync is called after every change.
func NewManager(bal *nat.Balancer, sync func() error) *Manager {
	if sync == nil {
		sync = func() error { return nil }
	}
	return &Manager{bal: bal, sync: sync, Version: api.IPVSVersion}
}

// SetHealth reports health checks in listings.
func (m *Manager) SetHealth(f func(*nat.Service) []api.HealthView) { m.health = f }

// SetNotes has every applied change answered with f's notes on it: how a
// reload of the configuration file will treat what it touched.
func (m *Manager) SetNotes(f func([]Op) []string) { m.notes.Store(&f) }

// Notes are the notes on ops (SetNotes), or none.
func (m *Manager) Notes(ops []Op) []string {
	if f := m.notes.Load(); f != nil {
		return (*f)(ops)
	}
	return nil
}

// SetReload serves f as POST /v1/reload: a reload of the configuration
// file.
func (m *Manager) SetReload(f func() (api.Reload, error)) { m.reload.Store(&f) }

// Reload runs the reload SetReload gave; ok is false if there is none (no
// configuration file).
// Cluster is an instance's part in a cluster (the daemon's): its BGP
// speaker and its drain.
type Cluster interface {
	// BGP reports the speaker; ok is false without a bgp: section.
	BGP() (b api.BGP, ok bool)
	// Drain starts (on true) or ends (on false) a drain and reports it.
	Drain(on bool) api.Drain
	// DrainStatus reports the drain without changing it.
	DrainStatus() api.Drain
}

// Checks are the running health checks, changed at run time: what
// GET, PUT and DELETE /v1/services/{proto}/{addr}/health do. A change
// lasts until the next reload of the configuration file, which re-applies
// the file's checks; notes say so.
type Checks interface {
	HealthCheck(k ServiceKey) (api.Health, error)
	SetHealthCheck(k ServiceKey, c api.HealthCheck) (notes []string, err error)
	ClearHealthCheck(k ServiceKey) (notes []string, err error)
}

// Faults are the faults in force (nat/fault.go), changed at run time:
// what GET, PUT, POST and DELETE /v1/faults do. The daemon reads them as
// the file's faults: are read; a change lasts until the next reload,
// which sets the file's, and notes say so.
type Faults interface {
	Faults() []api.FaultView
	// SetFaults replaces them all (none: fs empty).
	SetFaults(fs []api.Fault) (notes []string, err error)
	// AddFault sets f, in place of a fault on its target.
	AddFault(f api.Fault) (notes []string, err error)
	// RemoveFault clears the fault on target's target (its other fields
	// are empty): ErrNoFault if there is none.
	RemoveFault(target api.Fault) (notes []string, err error)
}

// ErrNoFault: no fault is set on the target named.
var ErrNoFault = errors.New("no fault on that target")

// ServeFaults has the API serve the faults from f.
func (m *Manager) ServeFaults(f Faults) { m.faults.Store(&f) }

// faultsOf is the Faults served, or nil.
func (m *Manager) faultsOf() Faults {
	if f := m.faults.Load(); f != nil {
		return *f
	}
	return nil
}

// SetChecks has the API serve a service's health check from c.
func (m *Manager) SetChecks(c Checks) { m.checks.Store(&c) }

// checksOf is the Checks set, or nil.
func (m *Manager) checksOf() Checks {
	if c := m.checks.Load(); c != nil {
		return *c
	}
	return nil
}

// SetCluster has the API answer /v1/bgp and /v1/drain from c.
func (m *Manager) SetCluster(c Cluster) { m.cluster.Store(&c) }

// clusterOf is the Cluster set, or nil.
func (m *Manager) clusterOf() Cluster {
	if c := m.cluster.Load(); c != nil {
		return *c
	}
	return nil
}

func (m *Manager) Reload() (res api.Reload, ok bool, err error) {
	f := m.reload.Load()
	if f == nil {
		return api.Reload{}, false, nil
	}
	res, err = (*f)()
	return res, true, err
}

func (m *Manager) service(k ServiceKey) (*nat.Service, error) {
	if k.Mark != 0 {
		return m.bal.MatchService(k.Mark)
	}
	return m.bal.Service(k.Protocol, k.Addr.Addr(), k.Addr.Port())
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

// MaxBatch bounds the operations of one batch.
const MaxBatch = 1 << 20

func checkBatchLen(n int) error {
	if n > MaxBatch {
		return fmt.Errorf("%d operations: at most %d in one batch", n, MaxBatch)
	}
	return nil
}

// Batch applies ops in order as one transaction: each is checked against
// the state the ones before it leave, and if one is refused none is
// applied.
func (m *Manager) Batch(ops []Op) error {
	if err := checkBatchLen(len(ops)); err != nil {
		return err
	}
	return m.Update(func(tx *nat.Tx) error {
		for i, op := range ops {
			if err := do(tx, op); err != nil {
				return &BatchError{Index: i, Err: err}
			}
		}
		return nil
	})
}

// do makes one operation in tx.
func do(tx *nat.Tx, op Op) error {
	switch op.Kind {
	case OpAddService:
		return addService(tx, op.Service)
	case OpEditService:
		return editService(tx, op.Service)
	case OpDeleteService:
		svc, err := txService(tx, op.Service.ServiceKey)
		if err == nil {
			tx.DeleteService(svc)
		}
		return err
	case OpClear:
		tx.Clear()
		return nil
	case OpAddDest, OpEditDest, OpDeleteDest:
		return destOp(tx, op.Kind, op.Service.ServiceKey, op.Dest)
	case OpAddLocalAddr, OpDeleteLocalAddr:
		svc, err := txService(tx, op.Service.ServiceKey)
		if err != nil {
			return err
		}
		if op.Kind == OpAddLocalAddr {
			_, err = tx.AddLocalAddr(svc, op.LocalAddr)
			return err
		}
		return tx.DeleteLocalAddr(svc, op.LocalAddr)
	case OpSetTimeouts:
		t := op.Timeouts
		return tx.SetAllTimeouts(t.TCP, t.TCPFin, t.UDP)
	case OpAddDeny, OpDeleteDeny, OpAddAllow, OpDeleteAllow:
		return listOp(tx, op)
	}
	return fmt.Errorf("operation kind %d is not one the manager knows", op.Kind)
}

func txService(tx *nat.Tx, k ServiceKey) (*nat.Service, error) {
	if k.Mark != 0 {
		return tx.MatchService(k.Mark)
	}
	return tx.Service(k.Protocol, k.Addr.Addr(), k.Addr.Port())
}

// estTimeout checks -V against nat's limit.
func estTimeout(d time.Duration) error {
	if err := nat.CheckTimeout(d); err != nil {
		return fmt.Errorf("ESTABLISHED timeout: %w", err)
	}
	return nil
}

func addService(tx *nat.Tx, s ServiceSpec) error {
	sched := s.Scheduler
	if sched == "" {
		sched = "wlc"
	}
	to := tx.DefaultTimeouts()
	if s.EstablishedTimeout > 0 {
		if err := estTimeout(s.EstablishedTimeout); err != nil {
			return err
		}
		to.SetEstablished(s.EstablishedTimeout)
	}
	clientAddr := nat.ClientAddrNone
	if s.ClientAddr != nil {
		clientAddr = *s.ClientAddr
	}
	ts := nat.TimestampsTranslate
	if s.Timestamps != nil {
		ts = *s.Timestamps
	}
	var flags nat.SchedFlags
	if s.SchedFlags != nil {
		var err error
		if flags, err = nat.ParseSchedFlags(sched, *s.SchedFlags); err != nil {
			return err
		}
	}
	p, err := persistence(nat.Persistence{}, s)
	if err != nil {
		return err
	}
	svc, err := tx.AddService(nat.ServiceConfig{Name: s.Name, Addr: s.Addr.Addr(), Port: s.Addr.Port(), Protocol: s.Protocol,
		Scheduler: sched, SchedFlags: flags, Timeouts: &to, Synproxy: s.Synproxy != nil && *s.Synproxy, ClientAddr: clientAddr,
		Timestamps: ts, Persistence: p, Mark: s.Mark})
	if err != nil {
		return err
	}
	return setLimits(tx, svc, s.Limits)
}

// persistence is cur changed by s's -p and -M.
func persistence(cur nat.Persistence, s ServiceSpec) (nat.Persistence, error) {
	if s.Persistent != nil {
		cur.Timeout = *s.Persistent
	}
	if s.Netmask != nil {
		if cur.Timeout == 0 {
			return cur, fmt.Errorf("service %s: netmask (-M) needs persistence (-p)", s.ServiceKey)
		}
		cur.Mask = *s.Netmask
	}
	return cur, nil
}

func editService(tx *nat.Tx, s ServiceSpec) error {
	svc, err := txService(tx, s.ServiceKey)
	if err != nil {
		return err
	}
	if err := editScheduler(tx, svc, s); err != nil {
		return err
	}
	if s.Synproxy != nil {
		if err := tx.SetSynproxy(svc, *s.Synproxy); err != nil {
			return err
		}
	}
	if s.ClientAddr != nil {
		if err := tx.SetClientAddr(svc, *s.ClientAddr); err != nil {
			return err
		}
	}
	if s.Timestamps != nil {
		if err := tx.SetTimestamps(svc, *s.Timestamps); err != nil {
			return err
		}
	}
	if s.Name != "" {
		if err := tx.SetName(svc, s.Name); err != nil {
			return err
		}
	}
	if err := setLimits(tx, svc, s.Limits); err != nil {
		return err
	}
	if s.Persistent != nil || s.Netmask != nil {
		p, err := persistence(tx.Persistence(svc), s)
		if err != nil {
			return err
		}
		if err := tx.SetPersistence(svc, p); err != nil {
			return err
		}
	}
	if s.EstablishedTimeout > 0 {
		if err := estTimeout(s.EstablishedTimeout); err != nil {
			return err
		}
		t := tx.Timeouts(svc)
		t.SetEstablished(s.EstablishedTimeout)
		return tx.SetTimeouts(svc, t)
	}
	return nil
}

// editScheduler sets the scheduler and its flags s names: flags not named
// stay as they are while the scheduler does, and go with it (they are
// its own).
func editScheduler(tx *nat.Tx, svc *nat.Service, s ServiceSpec) error {
	sched, flags := svc.Scheduler(), svc.SchedFlags()
	if s.Scheduler != "" && s.Scheduler != sched {
		sched, flags = s.Scheduler, 0
	}
	if s.SchedFlags != nil {
		var err error
		if flags, err = nat.ParseSchedFlags(sched, *s.SchedFlags); err != nil {
			return err
		}
	}
	if sched == svc.Scheduler() && flags == svc.SchedFlags() {
		return nil
	}
	return tx.SetScheduler(svc, sched, flags)
}

func destOp(tx *nat.Tx, kind OpKind, k ServiceKey, d DestSpec) error {
	svc, err := txService(tx, k)
	if err != nil {
		return err
	}
	ap := d.Addr
	switch kind {
	case OpAddDest:
		w := 1
		if d.Weight != nil {
			w = *d.Weight
		}
		if _, err = tx.AddDest(svc, ap.Addr(), ap.Port(), w); err != nil {
			return err
		}
		return setThresholds(tx, svc, d)
	case OpEditDest:
		if !slices.ContainsFunc(tx.Dests(svc), func(x *nat.Dest) bool { return x.Addr == ap.Addr() && x.Port == ap.Port() }) {
			return fmt.Errorf("real server %s: %w", ap, nat.ErrNoDest)
		}
		if err := setThresholds(tx, svc, d); err != nil || d.Weight == nil {
			return err
		}
		return tx.SetWeight(svc, ap.Addr(), ap.Port(), *d.Weight)
	}
	return tx.DeleteDest(svc, ap.Addr(), ap.Port())
}

// setThresholds sets the thresholds d gives (-x, -y) on its server, the
// one not given kept as the server has it.
func setThresholds(tx *nat.Tx, svc *nat.Service, d DestSpec) error {
	if d.UThreshold == nil && d.LThreshold == nil {
		return nil
	}
	th := tx.Thresholds(svc, tx.Dest(svc, d.Addr.Addr(), d.Addr.Port()))
	if d.UThreshold != nil {
		th.Upper = *d.UThreshold
	}
	if d.LThreshold != nil {
		th.Lower = *d.LThreshold
	}
	return tx.SetThresholds(svc, d.Addr.Addr(), d.Addr.Port(), th)
}

// one runs a single operation as its own transaction.
func (m *Manager) one(op Op) error { return m.Update(func(tx *nat.Tx) error { return do(tx, op) }) }

// AddService adds a service (ipvsadm -A).
func (m *Manager) AddService(s ServiceSpec) error { return m.one(Op{Kind: OpAddService, Service: s}) }

// EditService changes a service's scheduler, SYN proxy, name or ESTABLISHED
// timeout (ipvsadm -E). Open connections keep going.
func (m *Manager) EditService(s ServiceSpec) error { return m.one(Op{Kind: OpEditService, Service: s}) }

// DeleteService removes a service (ipvsadm -D).
func (m *Manager) DeleteService(k ServiceKey) error {
	return m.one(Op{Kind: OpDeleteService, Service: ServiceSpec{ServiceKey: k}})
}

// Clear removes every service (ipvsadm -C).
func (m *Manager) Clear() error { return m.one(Op{Kind: OpClear}) }

// AddDest adds a real server (ipvsadm -a).
func (m *Manager) AddDest(k ServiceKey, d DestSpec) error {
	return m.one(Op{Kind: OpAddDest, Service: ServiceSpec{ServiceKey: k}, Dest: d})
}

// EditDest changes a real server's weight (ipvsadm -e).
func (m *Manager) EditDest(k ServiceKey, d DestSpec) error {
	return m.one(Op{Kind: OpEditDest, Service: ServiceSpec{ServiceKey: k}, Dest: d})
}

// DeleteDest removes a real server (ipvsadm -d).
func (m *Manager) DeleteDest(k ServiceKey, rip netip.AddrPort) error {
	return m.one(Op{Kind: OpDeleteDest, Service: ServiceSpec{ServiceKey: k}, Dest: DestSpec{Addr: rip}})
}

// AddLocalAddr adds a LIP (ipvsadm -P -z).
func (m *Manager) AddLocalAddr(k ServiceKey, lip netip.Addr) error {
	return m.one(Op{Kind: OpAddLocalAddr, Service: ServiceSpec{ServiceKey: k}, LocalAddr: lip})
}

// DeleteLocalAddr removes a LIP (ipvsadm -Q -z).
func (m *Manager) DeleteLocalAddr(k ServiceKey, lip netip.Addr) error {
	return m.one(Op{Kind: OpDeleteLocalAddr, Service: ServiceSpec{ServiceKey: k}, LocalAddr: lip})
}

// SetTimeouts is ipvsadm --set tcp tcpfin udp (0 leaves one as is).
func (m *Manager) SetTimeouts(t Timeouts) error { return m.one(Op{Kind: OpSetTimeouts, Timeouts: t}) }

// Timeouts are the defaults new services get, in seconds.
func (m *Manager) Timeouts() api.Timeouts { return apiTimeouts(m.bal.DefaultTimeouts()) }

func apiTimeouts(t nat.Timeouts) api.Timeouts {
	return api.Timeouts{TCP: uint32(t.Established() / time.Second), TCPFin: uint32(t.FinWait() / time.Second), UDP: uint32(t.UDP / time.Second)}
}

func apiTraffic(t nat.Traffic) api.Traffic {
	return api.Traffic{Conns: t.Conns, InPkts: t.InPkts, OutPkts: t.OutPkts, InBytes: t.InBytes, OutBytes: t.OutBytes}
}

func apiRate(r nat.Rate) api.Rate {
	return api.Rate{CPS: r.CPS, InPPS: r.InPPS, OutPPS: r.OutPPS, InBPS: r.InBPS, OutBPS: r.OutBPS}
}

// protoName is a protocol as the API writes it.
func protoName(p nat.Protocol) string { return strings.ToLower(p.String()) }

// Zero clears the counters (ipvsadm -Z).
func (m *Manager) Zero() { m.bal.Zero() }

// ZeroService clears one service's counters and its servers' (ipvsadm -Z
// -t|-u), and no other's.
func (m *Manager) ZeroService(k ServiceKey) error {
	svc, err := m.service(k)
	if err != nil {
		return err
	}
	svc.Zero()
	return nil
}

// Services lists the services, sorted by protocol and VIP:port.
func (m *Manager) Services() []api.Service {
	svcs := slices.Clone(m.bal.Services()) // the published list is shared with the data path: sort a copy
	slices.SortFunc(svcs, func(a, b *nat.Service) int {
		switch {
		case (a.Mark == 0) != (b.Mark == 0):
			// Match services after VIP:port ones, as ipvsadm lists FWM
			// after TCP and UDP.
			return cmp.Compare(min(a.Mark, 1), min(b.Mark, 1))
		case a.Mark != 0:
			return cmp.Compare(a.Mark, b.Mark)
		}
		if c := cmp.Compare(protoName(a.Protocol), protoName(b.Protocol)); c != 0 {
			return c
		}
		return netip.AddrPortFrom(a.Addr, a.Port).Compare(netip.AddrPortFrom(b.Addr, b.Port))
	})
	return m.list(svcs)
}

// ServicesAsAdded lists the services in the order they were added, their
// real servers in theirs: the order a kernel's table lists them in, which
// ipvsadm --nosort shows.
func (m *Manager) ServicesAsAdded() []api.Service { return m.list(m.bal.Services()) }

func (m *Manager) list(svcs []*nat.Service) []api.Service {
	var out []api.Service
	for _, s := range svcs {
		key := api.ServiceKey{Protocol: protoName(s.Protocol), Addr: netip.AddrPortFrom(s.Addr, s.Port).String()}
		if s.Mark != 0 {
			key = api.ServiceKey{FWMark: s.Mark}
		}
		v := api.Service{
			ServiceKey: key,
			Match:      apiMatch(s),
			Name:       s.Name(), Scheduler: s.Scheduler(), SchedFlags: s.SchedFlags().Names(s.Scheduler()), Synproxy: s.Synproxy(), ClientAddress: s.ClientAddr().String(),
			TCPTimestamps:      s.Timestamps().String(),
			Persistent:         uint32(s.Persistence().Timeout / time.Second),
			PersistenceNetmask: nat.NetmaskString(s.Persistence().Mask, s.Addr.Is4()),
			Timeouts:           apiTimeouts(s.Timeouts()), Stats: apiTraffic(s.Traffic()), Rate: apiRate(s.Rate()),
		}
		for _, d := range s.Dests() {
			a, ia, _ := d.Conns()
			th := d.Thresholds()
			v.Dests = append(v.Dests, api.Dest{Addr: d.String(), Forward: "FullNat", Weight: d.Weight(), ActiveConn: a, InActConn: ia, PersistConn: d.PersistConns(),
				UThreshold: th.Upper, LThreshold: th.Lower, Overloaded: d.Overloaded(),
				Stats: apiTraffic(d.Traffic()), Rate: apiRate(d.Rate())})
		}
		for _, l := range s.LocalAddrs() {
			c, conf, ex := l.Stats()
			v.LocalAddrs = append(v.LocalAddrs, api.LocalAddr{Addr: l.Addr.String(), Conns: c, Conflicts: conf, Exhausted: ex})
		}
		if m.health != nil {
			v.Health = m.health(s)
		}
		listDefence(&v, s)
		out = append(out, v)
	}
	return out
}

// Conns lists the connections.
func (m *Manager) Conns() []api.Conn {
	var out []api.Conn
	for _, c := range m.bal.Table().Conns() {
		out = append(out, api.Conn{Protocol: c.Protocol.String(), State: c.State, ExpiresMs: c.Expires.Milliseconds(),
			Source: c.Client.String(), Virtual: c.VIP.String(), Local: c.LIP.String(), Destination: c.RIP.String()})
	}
	// Persistence templates, as IPVS lists them among its connections:
	// state NONE, from the client network's port 0 (ipvsadm -lnc).
	for _, t := range m.bal.TemplateList() {
		proto := t.Protocol.String()
		if t.Mark != 0 {
			// A fwmark template's protocol is IPPROTO_IP, which
			// ip_vs_proto_name writes "IP" (its virtual address the mark).
			proto = "IP"
		}
		out = append(out, api.Conn{Protocol: proto, State: "NONE", ExpiresMs: t.Expires.Milliseconds(),
			Source: t.Client.String(), Virtual: t.VIP.String(), Destination: t.RIP.String()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

// Info describes the running tapvs.
func (m *Manager) Info() api.Info {
	return api.Info{Version: m.Version, Size: m.bal.MaxConns(), Conns: m.bal.Table().Len(), Services: len(m.bal.Services())}
}
