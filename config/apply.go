package config

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/tapvs/tapvs/nat"
)

// A reload follows keepalived's model: it applies what changed in the file
// since the file applied before, not the difference between the file and
// the running state. Each value the file declares (a service's scheduler, a
// real server's weight, the default timeouts...) and each service, real
// server and local address is one subject, and decide is the one rule for
// all of them:
//
//   - the file changed it (or adds it): it is made the file's; if a runtime
//     change (the control API, tapvsadm) differed from the file before, that
//     change is overridden and named (Drift.Reverted);
//   - the file did not change it and a runtime change did (an ipvsadm -e -w 0
//     drain, a declared real server deleted): the runtime change is kept,
//     and named (Drift.Kept) at every reload until the file changes it;
//   - the file before declared it and this one does not: it is deleted;
//   - neither declares it (added at run time): it is kept, and named.
//
// The first start is a reload from an empty file: everything is applied.

// Drift is what a reload did with the changes made at run time.
type Drift struct {
	Reverted []Named // overridden by a change of the file's
	Kept     []Named // kept: the file did not change them, or does not declare them
}

// Named is one runtime change a reload names.
type Named struct {
	Subject Subject
	// Declared: the file declares the subject (a runtime change of it);
	// else it was added at run time.
	Declared bool
	// Text is how the log line and the API name it: "tcp
	// 172.25.254.100:80 real server 10.20.1.2:80 weight 0 (file: weight 1)".
	Text string
}

// Subject is what a Named is about: a service (Setting "" and no real
// server nor local address: the service itself), one of its settings, real
// servers or local addresses, or (zero ServiceKey) the balancer's default
// timeouts.
type Subject struct {
	Service   ServiceKey
	Setting   string         // "scheduler", "allow", "timeouts"...
	Dest      netip.AddrPort // a real server
	LocalAddr netip.Addr     // a local address
}

func (n Named) String() string { return n.Text }

// Texts are the names' texts.
func Texts(n []Named) []string {
	out := make([]string, len(n))
	for i, x := range n {
		out[i] = x.Text
	}
	return out
}

// val is one subject's value in a file or in the running state, as a
// reload compares it: v is comparable (==), and only formatted (Subject's
// show) when the reload names it, so that a reload of many services
// formats nothing it does not name. ok false: there is none (not
// declared, not running).
type val struct {
	v  any
	ok bool
}

func some(v any) val { return val{v: v, ok: true} }

func (a val) same(b val) bool { return a.ok == b.ok && (!a.ok || a.v == b.v) }

// presence is the value of a service's or a local address's existence.
type presence struct{}

var present = some(presence{})

// changed is a service's presence in the file before, when the new file
// declares it otherwise: not the same value.
type changed struct{}

// fate is what a reload does with one subject.
type fate uint8

const (
	leave      fate = iota // as the file says, or nowhere
	change                 // the file changed it, the running value was the file's before: made the new file's
	override               // the file changed it and a runtime change differed: made the file's, named
	keepChange             // the file did not change it, a runtime change did: kept, named
	keepAdded              // no file declares it: added at run time, kept, named
	remove                 // the file before declared it, this one does not: deleted
)

// decide is the reload's rule (see above) for one subject: prev is the
// value the file applied before declared, next the new file's, run the
// running one.
func decide(prev, next, run val) fate {
	switch {
	case !next.ok && !run.ok:
		return leave
	case !next.ok && prev.ok:
		return remove
	case !next.ok:
		return keepAdded
	case run.same(next):
		return leave
	case prev.same(next):
		return keepChange
	case run.same(prev):
		return change
	}
	return override
}

// Apply makes tx's services what c says, as if c owned everything in tx:
// those c lacks are deleted, its new ones added, and the rest changed
// where they differ. It is start's (tx empty) and the dry run's; a reload
// is Reconcile. held, if not nil, reports the real servers a failed health
// check holds out: their weight, or their absence, is the checker's and
// stays. Every change tx refuses is reported, with its field, and then the
// caller's Update applies none.
//
// validate runs it against an empty balancer, so that the rules between
// addresses are the balancer's own; against the running one (a reload) it
// also refuses what conflicts with the running state, such as a VIP that is
// still the address of a retiring LIP's connections.
func (c *Config) Apply(tx *nat.Tx, held func(Service, RealServer) bool) error {
	_, err := c.Reconcile(tx, nil, held)
	return err
}

// Reconcile is a reload: it applies to a running balancer what changed from
// prev (the configuration applied before) to c, by decide's rule, and
// names the runtime changes it overrides and those it keeps. A nil prev
// owns everything in tx: every difference is made c's and nothing is kept
// or named (Apply). The default timeouts are one of its subjects.
func (c *Config) Reconcile(tx *nat.Tx, prev *Config, held func(Service, RealServer) bool) (Drift, error) {
	return c.reconcile(tx, prev, held, nil)
}

// Keeps is what a reload of c, unchanged since it was applied, does with
// the running state of the services keys (keys nil: of every service, and
// of the default timeouts): it keeps each runtime change (no value's file
// text changed), and names it. It changes nothing in tx. The control API's
// notes are made from it, so that what they tell a change is what a reload
// does with it.
func (c *Config) Keeps(tx *nat.Tx, keys []ServiceKey, held func(Service, RealServer) bool) []Named {
	d, _ := c.reconcile(tx, c, held, keys)
	return d.Kept
}

func (c *Config) reconcile(tx *nat.Tx, prev *Config, held func(Service, RealServer) bool, keys []ServiceKey) (Drift, error) {
	if held == nil {
		held = func(Service, RealServer) bool { return false }
	}
	r := &reconcile{tx: tx, held: held, owned: prev == nil}
	var only map[ServiceKey]bool // keys as a set; nil: every service
	if keys != nil {
		// A change's notes look at its services only: nothing here may
		// cost the size of the whole configuration more than a scan.
		only = map[ServiceKey]bool{}
		for _, k := range keys {
			only[k] = true
		}
	}
	want := services(c, only)
	if prev != nil {
		r.prev = services(prev, only)
	}
	var running []*nat.Service
	var declared []int // indexes in c.Services
	for i := range c.Services {
		if only == nil || only[c.Services[i].key()] {
			declared = append(declared, i)
		}
	}
	if only == nil {
		var pt val
		if prev != nil {
			pt = some(prev.Timeouts)
		}
		if r.decide(Subject{Setting: "timeouts"}, pt, some(c.Timeouts), some(tx.DefaultTimeouts())) {
			if err := tx.SetDefaultTimeouts(c.Timeouts); err != nil {
				return Drift{}, fmt.Errorf("timeouts: %w", err)
			}
		}
		running = tx.Services()
	} else {
		for k := range only {
			if s, err := txService(tx, k); err == nil {
				running = append(running, s)
			}
		}
	}
	// Everything that goes goes first, so that an address can change roles
	// (a real server that becomes a local address) in one file, whatever
	// the order of its services.
	for _, s := range running {
		k := keyOf(s)
		sc := want[k]
		if sc == nil {
			if r.decide(Subject{Service: k}, r.declares(k), val{}, present) {
				tx.DeleteService(s)
			}
			continue
		}
		if err := r.prune(s, sc); err != nil {
			return Drift{}, err
		}
	}
	if only == nil {
		// After the deletions: a mark whose service the file deletes
		// may go or move with it.
		if err := tx.SetMarks(c.Marks); err != nil {
			return Drift{}, fmt.Errorf("marks: %w", err)
		}
	}
	var errs []error
	for _, i := range declared {
		for _, err := range r.applyService(c.Services[i]) {
			errs = append(errs, fmt.Errorf("services[%d].%w", i, err))
		}
	}
	return r.drift, errors.Join(errs...)
}

// ServiceKey is a service's key: its protocol, VIP and port, or a match
// service's mark alone (match.go).
type ServiceKey struct {
	Protocol nat.Protocol
	VIP      netip.Addr
	Port     uint16
	Mark     uint32
}

// services indexes c's services by key: those in only, or (nil) all.
func services(c *Config, only map[ServiceKey]bool) map[ServiceKey]*Service {
	m := map[ServiceKey]*Service{}
	for i := range c.Services {
		if sc := &c.Services[i]; only == nil || only[sc.key()] {
			m[sc.key()] = sc
		}
	}
	return m
}

// reconcile is one Reconcile's state.
type reconcile struct {
	tx    *nat.Tx
	held  func(Service, RealServer) bool
	owned bool                    // no prev: the file owns everything in tx
	prev  map[ServiceKey]*Service // what the configuration applied before declared
	drift Drift
}

// declares is a service's presence in the configuration applied before.
func (r *reconcile) declares(k ServiceKey) val {
	if r.prev[k] == nil {
		return val{}
	}
	return present
}

// decide applies decide to one subject and names the runtime change it
// overrides or keeps. It reports whether the subject is to be made the new
// file's (or, if the file no longer declares it, deleted). With no
// configuration before (owned), the running value stands for the file's
// before: every difference is the file's, and is applied.
func (r *reconcile) decide(sub Subject, prev, next, run val) bool {
	if r.owned {
		prev = run
	}
	switch decide(prev, next, run) {
	case change, remove:
		return true
	case override:
		r.drift.Reverted = append(r.drift.Reverted, Named{sub, true, fmt.Sprintf("%s %s -> %s", sub, sub.show(run, "deleted"), sub.show(next, ""))})
		return true
	case keepChange:
		in := "file: " + sub.show(next, "")
		if next == present {
			in = "declared in the file"
		}
		r.drift.Kept = append(r.drift.Kept, Named{sub, true, fmt.Sprintf("%s %s (%s)", sub, sub.show(run, "deleted"), in)})
	case keepAdded:
		r.drift.Kept = append(r.drift.Kept, Named{sub, false, sub.String()})
	}
	return false
}

// String is how a reload names the subject: "tcp 172.25.254.100:80 real
// server 10.20.1.2:80".
func (s Subject) String() string {
	switch {
	case s.Service == ServiceKey{}:
		return s.Setting
	case s.Dest.IsValid() && s.Setting != "":
		return s.Service.String() + " real server " + s.Dest.String() + " " + s.Setting
	case s.Dest.IsValid():
		return s.Service.String() + " real server " + s.Dest.String()
	case s.LocalAddr.IsValid():
		return s.Service.String() + " local address " + s.LocalAddr.String()
	case s.Setting != "":
		return s.Service.String() + " " + s.Setting
	}
	return s.Service.String()
}

// show is how a reload names one of the subject's values (absent: none).
func (s Subject) show(v val, absent string) string {
	if !v.ok {
		return absent
	}
	switch x := v.v.(type) {
	case presence:
		return "added"
	case nat.Timeouts:
		return timeoutsText(x)
	case nat.Thresholds:
		return fmt.Sprintf("uthreshold %d lthreshold %d", x.Upper, x.Lower)
	}
	switch {
	case s.Dest.IsValid():
		return fmt.Sprintf("weight %v", v.v)
	case s.Setting == "name":
		return fmt.Sprintf("%q", v.v)
	}
	return fmt.Sprint(v.v)
}

// prune deletes a running service's local addresses and real servers that
// sc does not have and the configuration before declared; those added at
// run time are kept.
func (r *reconcile) prune(svc *nat.Service, sc *Service) error {
	k := keyOf(svc)
	old := r.prev[k]
	for _, l := range r.tx.LocalAddrs(svc) {
		if slices.Contains(sc.LocalAddresses, l.Addr) {
			continue
		}
		if !r.decide(Subject{Service: k, LocalAddr: l.Addr}, lipVal(old, l.Addr), val{}, present) {
			continue
		}
		if err := r.tx.DeleteLocalAddr(svc, l.Addr); err != nil {
			return err
		}
	}
	for _, dst := range r.tx.Dests(svc) {
		ap := netip.AddrPortFrom(dst.Addr, dst.Port)
		if findRS(sc, dst.Addr, dst.Port) != nil {
			continue
		}
		if !r.decide(Subject{Service: k, Dest: ap}, rsVal(old, ap), val{}, some(r.tx.Weight(svc, dst))) {
			continue
		}
		if err := r.tx.DeleteDest(svc, dst.Addr, dst.Port); err != nil {
			return err
		}
	}
	return nil
}

// lipVal is a local address's presence in sc (nil: none).
func lipVal(sc *Service, a netip.Addr) val {
	if sc == nil || !slices.Contains(sc.LocalAddresses, a) {
		return val{}
	}
	return present
}

// rsVal is a real server's value in sc (nil: none): its weight.
func rsVal(sc *Service, ap netip.AddrPort) val {
	if sc == nil {
		return val{}
	}
	if rs := findRS(sc, ap.Addr(), ap.Port()); rs != nil {
		return some(rs.Weight)
	}
	return val{}
}

// rsThresholds is a real server's thresholds in sc (none: not declared).
func rsThresholds(sc *Service, ap netip.AddrPort) val {
	if rs := findRS(sc, ap.Addr(), ap.Port()); rs != nil {
		return some(rs.Thresholds)
	}
	return val{}
}

func findRS(sc *Service, a netip.Addr, port uint16) *RealServer {
	for i := range sc.RealServers {
		if rs := &sc.RealServers[i]; rs.Address == a && rs.Port == port {
			return rs
		}
	}
	return nil
}

// applyService adds sc, or makes the running service what it says; prune
// has taken away what it lacks. Each error starts with its field's name.
func (r *reconcile) applyService(sc Service) (errs []error) {
	tx := r.tx
	k := sc.key()
	old := r.prev[k]
	svc, err := txService(tx, k)
	if err != nil {
		// Not running: new in the file, or deleted at run time, which
		// stays deleted unless the file changed the service.
		var was val
		if old != nil {
			was = some(changed{})
			if reflect.DeepEqual(*old, sc) {
				was = present
			}
		}
		if !r.decide(Subject{Service: k}, was, present, val{}) {
			return nil
		}
		to := sc.Timeouts
		if svc, err = tx.AddService(nat.ServiceConfig{Name: sc.Name, Addr: sc.VIP, Port: sc.Port, Protocol: sc.Protocol,
			Scheduler: sc.Scheduler, SchedFlags: sc.SchedulerFlags, Timeouts: &to, Synproxy: sc.Synproxy, ClientAddr: sc.ClientAddress,
			Timestamps: sc.TCPTimestamps, Persistence: sc.Persistence, Mark: sc.Mark}); err != nil {
			return []error{fmt.Errorf("vip: %w", err)}
		}
		// A service the reload adds is the file's whole: its lists and
		// servers are added, not decided against the file before.
		defer func(owned bool) { r.owned = owned }(r.owned)
		r.owned = true
	} else {
		errs = r.setService(svc, k, sc, old)
	}
	errs = append(errs, r.applyDefence(svc, k, sc, old)...)
	have := tx.LocalAddrs(svc)
	for j, l := range sc.LocalAddresses {
		var run val
		if slices.ContainsFunc(have, func(x *nat.LocalAddr) bool { return x.Addr == l }) {
			run = present
		}
		if !r.decide(Subject{Service: k, LocalAddr: l}, lipVal(old, l), present, run) {
			continue
		}
		if _, err := tx.AddLocalAddr(svc, l); err != nil {
			errs = append(errs, fmt.Errorf("local_addresses[%d]: %w", j, err))
		}
	}
	cur := map[netip.AddrPort]*nat.Dest{}
	for _, dst := range tx.Dests(svc) {
		cur[netip.AddrPortFrom(dst.Addr, dst.Port)] = dst
	}
	for j, rs := range sc.RealServers {
		ap := netip.AddrPortFrom(rs.Address, rs.Port)
		dst, ok := cur[ap]
		if ok {
			// Its thresholds are a subject of their own: a check that
			// holds the server out holds its weight, not them.
			var prev val
			if old != nil {
				prev = rsThresholds(old, ap)
			}
			if r.decide(Subject{Service: k, Dest: ap, Setting: "thresholds"}, prev, some(rs.Thresholds), some(tx.Thresholds(svc, dst))) {
				if err := tx.SetThresholds(svc, rs.Address, rs.Port, rs.Thresholds); err != nil {
					errs = append(errs, fmt.Errorf("real_servers[%d]: %w", j, err))
				}
			}
		}
		if r.held(sc, rs) {
			continue // the check puts it back, with this configuration's weight, when it recovers
		}
		var run val
		if ok {
			run = some(tx.Weight(svc, dst))
		}
		if !r.decide(Subject{Service: k, Dest: ap}, rsVal(old, ap), some(rs.Weight), run) {
			continue
		}
		if ok {
			err = tx.SetWeight(svc, rs.Address, rs.Port, rs.Weight)
		} else if _, err = tx.AddDest(svc, rs.Address, rs.Port, rs.Weight); err == nil && rs.Thresholds != (nat.Thresholds{}) {
			err = tx.SetThresholds(svc, rs.Address, rs.Port, rs.Thresholds) // a server added is the file's whole
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("real_servers[%d]: %w", j, err))
		}
	}
	return errs
}

// setting decides one of a running service's settings, name being its
// field's: run is its running value, next the file's, of the file before
// (old, if it declared the service); set makes it next.
func (r *reconcile) setting(errs *[]error, k ServiceKey, name string, run, next val, old *Service, of func(*Service) val, set func() error) {
	var prev val
	if old != nil {
		prev = of(old)
	}
	if !r.decide(Subject{Service: k, Setting: name}, prev, next, run) {
		return
	}
	if err := set(); err != nil {
		*errs = append(*errs, fmt.Errorf("%s: %w", name, err))
	}
}

// sched is the setting "scheduler": its name and its flags, one setting
// because flags belong to a scheduler.
type sched struct {
	name  string
	flags nat.SchedFlags
}

// String is the scheduler as ipvsadm lists it: "sh (sh-fallback,sh-port)".
func (s sched) String() string {
	if s.flags == 0 {
		return s.name
	}
	return s.name + " (" + strings.Join(s.flags.Names(s.name), ",") + ")"
}

// setService makes a running service's own settings sc's, where decide
// says so.
func (r *reconcile) setService(svc *nat.Service, k ServiceKey, sc Service, old *Service) (errs []error) {
	tx := r.tx
	r.setting(&errs, k, "name", some(svc.Name()), some(sc.Name), old,
		func(s *Service) val { return some(s.Name) }, func() error { return tx.SetName(svc, sc.Name) })
	r.setting(&errs, k, "scheduler", some(sched{svc.Scheduler(), svc.SchedFlags()}), some(sched{sc.Scheduler, sc.SchedulerFlags}), old,
		func(s *Service) val { return some(sched{s.Scheduler, s.SchedulerFlags}) },
		func() error { return tx.SetScheduler(svc, sc.Scheduler, sc.SchedulerFlags) })
	r.setting(&errs, k, "synproxy", some(svc.Synproxy()), some(sc.Synproxy), old,
		func(s *Service) val { return some(s.Synproxy) }, func() error { return tx.SetSynproxy(svc, sc.Synproxy) })
	r.setting(&errs, k, "client_address", some(svc.ClientAddr()), some(sc.ClientAddress), old,
		func(s *Service) val { return some(s.ClientAddress) }, func() error { return tx.SetClientAddr(svc, sc.ClientAddress) })
	r.setting(&errs, k, "tcp_timestamps", some(svc.Timestamps()), some(sc.TCPTimestamps), old,
		func(s *Service) val { return some(s.TCPTimestamps) }, func() error { return tx.SetTimestamps(svc, sc.TCPTimestamps) })
	r.setting(&errs, k, "persistence", some(tx.Persistence(svc)), some(sc.Persistence), old,
		func(s *Service) val { return some(s.Persistence) }, func() error { return tx.SetPersistence(svc, sc.Persistence) })
	r.setting(&errs, k, "timeouts", some(tx.Timeouts(svc)), some(sc.Timeouts), old,
		func(s *Service) val { return some(s.Timeouts) }, func() error { return tx.SetTimeouts(svc, sc.Timeouts) })
	return errs
}

// timeoutsText is a service's timeouts as tapvsadm's --set shows them.
func timeoutsText(t nat.Timeouts) string {
	return fmt.Sprintf("(tcp %v, tcpfin %v, udp %v)", t.Established(), t.FinWait(), t.UDP)
}
