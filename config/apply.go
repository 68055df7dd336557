package config

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tapvs/tapvs/nat"
)

// Drift is what a reload found changed at run time (by the control API or
// tapvsadm) and what it did with it. The file owns what it declares: a
// runtime change to a declared service, real server, local address or
// setting is set back to the file's value, and named in Reverted. What was
// added at run time and the file does not declare is the operator's, as it
// is keepalived's: it is left as it is, and named in Kept at every reload.
type Drift struct {
	Reverted []string // "tcp 172.25.254.100:80 real server 10.20.1.2:80 weight 7 -> 1"
	Kept     []string // "tcp 172.25.254.100:81", "tcp 172.25.254.100:80 real server 10.20.1.9:80"
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

// Reconcile is Apply against a running balancer whose state prev (the
// configuration applied before) declared and the control API may have
// changed since. What prev declared and c does not is deleted (the file
// took it away); what neither declares was added at run time and is kept;
// what c declares is made what c says, and where the running value was not
// prev's (a runtime change) that is named in the Drift. A nil prev owns
// everything in tx: nothing is kept and nothing named (Apply).
func (c *Config) Reconcile(tx *nat.Tx, prev *Config, held func(Service, RealServer) bool) (Drift, error) {
	if held == nil {
		held = func(Service, RealServer) bool { return false }
	}
	r := &reconcile{tx: tx, held: held, owned: prev == nil}
	if prev != nil {
		r.prev = services(prev)
	}
	// Everything that goes goes first, so that an address can change roles
	// (a real server that becomes a local address) in one file, whatever
	// the order of its services.
	want := services(c)
	for _, s := range tx.Services() {
		k := keyOf(s)
		sc := want[k]
		if sc == nil {
			if r.declared(k) {
				tx.DeleteService(s)
			} else {
				r.keep(k.String())
			}
			continue
		}
		if err := r.prune(s, sc); err != nil {
			return Drift{}, err
		}
	}
	var errs []error
	for i, sc := range c.Services {
		for _, err := range r.applyService(sc) {
			errs = append(errs, fmt.Errorf("services[%d].%w", i, err))
		}
	}
	return r.drift, errors.Join(errs...)
}

type serviceKey struct {
	proto nat.Protocol
	vip   netip.Addr
	port  uint16
}

func keyOf(s *nat.Service) serviceKey { return serviceKey{s.Protocol, s.Addr, s.Port} }

// String is the key as tapvsadm and the API write it: "tcp 10.0.0.1:80".
func (k serviceKey) String() string {
	return strings.ToLower(k.proto.String()) + " " + netip.AddrPortFrom(k.vip, k.port).String()
}

// services indexes c's services by key.
func services(c *Config) map[serviceKey]*Service {
	m := map[serviceKey]*Service{}
	for i := range c.Services {
		sc := &c.Services[i]
		m[serviceKey{sc.Protocol, sc.VIP, sc.Port}] = sc
	}
	return m
}

// reconcile is one Reconcile's state.
type reconcile struct {
	tx    *nat.Tx
	held  func(Service, RealServer) bool
	owned bool                    // no prev: the file owns everything in tx
	prev  map[serviceKey]*Service // what the configuration applied before declared
	drift Drift
}

// declared reports whether the configuration applied before declared the
// service (or, with no prev, owns it).
func (r *reconcile) declared(k serviceKey) bool { return r.owned || r.prev[k] != nil }

func (r *reconcile) keep(what string) { r.drift.Kept = append(r.drift.Kept, what) }

// revert names a runtime value the reload sets back to the file's: was is
// the running value, prev the one the configuration before declared (ok
// false: none), now the file's.
func (r *reconcile) revert(what string, was, now any, prev any, ok bool) {
	if r.owned || ok && fmt.Sprint(prev) == fmt.Sprint(was) {
		return // a change of the file's, not of the running state's
	}
	r.drift.Reverted = append(r.drift.Reverted, fmt.Sprintf("%s %v -> %v", what, was, now))
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
		if !r.owned && (old == nil || !slices.Contains(old.LocalAddresses, l.Addr)) {
			r.keep(fmt.Sprintf("%s local address %s", k, l.Addr))
			continue
		}
		if err := r.tx.DeleteLocalAddr(svc, l.Addr); err != nil {
			return err
		}
	}
	for _, dst := range r.tx.Dests(svc) {
		if findRS(sc, dst.Addr, dst.Port) != nil {
			continue
		}
		if !r.owned && (old == nil || findRS(old, dst.Addr, dst.Port) == nil) {
			r.keep(fmt.Sprintf("%s real server %s", k, netip.AddrPortFrom(dst.Addr, dst.Port)))
			continue
		}
		if err := r.tx.DeleteDest(svc, dst.Addr, dst.Port); err != nil {
			return err
		}
	}
	return nil
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
	k := serviceKey{sc.Protocol, sc.VIP, sc.Port}
	old := r.prev[k]
	svc, err := tx.Service(sc.Protocol, sc.VIP, sc.Port)
	if err != nil {
		to := sc.Timeouts
		if svc, err = tx.AddService(nat.ServiceConfig{Name: sc.Name, Addr: sc.VIP, Port: sc.Port, Protocol: sc.Protocol,
			Scheduler: sc.Scheduler, Timeouts: &to, Synproxy: sc.Synproxy, ClientAddr: sc.ClientAddress,
			Timestamps: sc.TCPTimestamps}); err != nil {
			return []error{fmt.Errorf("vip: %w", err)}
		}
		if old != nil {
			r.revert(k.String(), "deleted", "added", nil, false)
		}
	} else {
		errs = r.setService(svc, k, sc, old)
	}
	errs = append(errs, r.applyDefence(svc, k, sc, old)...)
	have := tx.LocalAddrs(svc)
	for j, l := range sc.LocalAddresses {
		if slices.ContainsFunc(have, func(x *nat.LocalAddr) bool { return x.Addr == l }) {
			continue
		}
		if _, err := tx.AddLocalAddr(svc, l); err != nil {
			errs = append(errs, fmt.Errorf("local_addresses[%d]: %w", j, err))
		} else if old != nil && slices.Contains(old.LocalAddresses, l) {
			r.revert(fmt.Sprintf("%s local address %s", k, l), "deleted", "added", nil, false)
		}
	}
	cur := map[netip.AddrPort]*nat.Dest{}
	for _, dst := range tx.Dests(svc) {
		cur[netip.AddrPortFrom(dst.Addr, dst.Port)] = dst
	}
	for j, rs := range sc.RealServers {
		if r.held(sc, rs) {
			continue // the check puts it back, with this configuration's weight, when it recovers
		}
		ap := netip.AddrPortFrom(rs.Address, rs.Port)
		what := fmt.Sprintf("%s real server %s", k, ap)
		var was *RealServer
		if old != nil {
			was = findRS(old, rs.Address, rs.Port)
		}
		dst, ok := cur[ap]
		switch {
		case !ok:
			if _, err := tx.AddDest(svc, rs.Address, rs.Port, rs.Weight); err != nil {
				errs = append(errs, fmt.Errorf("real_servers[%d]: %w", j, err))
			} else if was != nil {
				r.revert(what, "deleted", "added", nil, false)
			}
		case tx.Weight(svc, dst) != rs.Weight:
			w := tx.Weight(svc, dst)
			if err := tx.SetWeight(svc, rs.Address, rs.Port, rs.Weight); err != nil {
				errs = append(errs, fmt.Errorf("real_servers[%d]: %w", j, err))
			} else if was != nil {
				r.revert(what+" weight", w, rs.Weight, was.Weight, true)
			} else {
				r.revert(what+" weight", w, rs.Weight, nil, false)
			}
		}
	}
	return errs
}

// setService makes a running service's own settings sc's.
func (r *reconcile) setService(svc *nat.Service, k serviceKey, sc Service, old *Service) (errs []error) {
	tx := r.tx
	// prevOf is old's value of a setting, if old declared the service.
	prevOf := func(f func(*Service) any) (any, bool) {
		if old == nil {
			return nil, false
		}
		return f(old), true
	}
	if was := svc.Name(); was != sc.Name {
		if err := tx.SetName(svc, sc.Name); err != nil {
			errs = append(errs, fmt.Errorf("name: %w", err))
		} else {
			p, ok := prevOf(func(s *Service) any { return s.Name })
			r.revert(k.String()+" name", fmt.Sprintf("%q", was), fmt.Sprintf("%q", sc.Name), fmt.Sprintf("%q", p), ok)
		}
	}
	if was := svc.Scheduler(); was != sc.Scheduler {
		if err := tx.SetScheduler(svc, sc.Scheduler); err != nil {
			errs = append(errs, fmt.Errorf("scheduler: %w", err))
		} else {
			p, ok := prevOf(func(s *Service) any { return s.Scheduler })
			r.revert(k.String()+" scheduler", was, sc.Scheduler, p, ok)
		}
	}
	if was := svc.Synproxy(); was != sc.Synproxy {
		if err := tx.SetSynproxy(svc, sc.Synproxy); err != nil {
			errs = append(errs, fmt.Errorf("synproxy: %w", err))
		} else {
			p, ok := prevOf(func(s *Service) any { return s.Synproxy })
			r.revert(k.String()+" synproxy", was, sc.Synproxy, p, ok)
		}
	}
	if was := svc.ClientAddr(); was != sc.ClientAddress {
		if err := tx.SetClientAddr(svc, sc.ClientAddress); err != nil {
			errs = append(errs, fmt.Errorf("client_address: %w", err))
		} else {
			p, ok := prevOf(func(s *Service) any { return s.ClientAddress })
			r.revert(k.String()+" client_address", was, sc.ClientAddress, p, ok)
		}
	}
	if was := svc.Timestamps(); was != sc.TCPTimestamps {
		if err := tx.SetTimestamps(svc, sc.TCPTimestamps); err != nil {
			errs = append(errs, fmt.Errorf("tcp_timestamps: %w", err))
		} else {
			p, ok := prevOf(func(s *Service) any { return s.TCPTimestamps })
			r.revert(k.String()+" tcp_timestamps", was, sc.TCPTimestamps, p, ok)
		}
	}
	if was := svc.Timeouts(); was != sc.Timeouts {
		if err := tx.SetTimeouts(svc, sc.Timeouts); err != nil {
			errs = append(errs, fmt.Errorf("timeouts: %w", err))
		} else {
			p, ok := prevOf(func(s *Service) any { return timeoutsText(s.Timeouts) })
			r.revert(k.String()+" timeouts", timeoutsText(was), timeoutsText(sc.Timeouts), p, ok)
		}
	}
	return errs
}

// timeoutsText is a service's timeouts as tapvsadm's --set shows them.
func timeoutsText(t nat.Timeouts) string {
	return fmt.Sprintf("(tcp %v, tcpfin %v, udp %v)", t.Established(), t.FinWait(), t.UDP)
}
