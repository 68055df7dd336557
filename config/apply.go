package config

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tapvs/tapvs/nat"
)

// Apply makes tx's services what c says: those c lacks are deleted, its new
// ones added, and the rest changed where they differ. held, if not nil,
// reports the real servers a failed health check holds out: their weight,
// or their absence, is the checker's and stays. Every change tx refuses is
// reported, with its field, and then the caller's Update applies none.
//
// validate runs it against an empty balancer, so that the rules between
// addresses are the balancer's own; against the running one (a reload) it
// also refuses what conflicts with the running state, such as a VIP that is
// still the address of a retiring LIP's connections.
func (c *Config) Apply(tx *nat.Tx, held func(Service, RealServer) bool) error {
	if held == nil {
		held = func(Service, RealServer) bool { return false }
	}
	cfg := c
	// Everything that goes goes first, so that an address can change roles
	// (a real server that becomes a local address) in one file, whatever
	// the order of its services.
	want := map[serviceKey]*Service{}
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		want[serviceKey{sc.Protocol, sc.VIP, sc.Port}] = sc
	}
	for _, s := range tx.Services() {
		sc := want[serviceKey{s.Protocol, s.Addr, s.Port}]
		if sc == nil {
			tx.DeleteService(s)
			continue
		}
		if err := prune(tx, s, sc); err != nil {
			return err
		}
	}
	var errs []error
	for i, sc := range cfg.Services {
		for _, err := range applyService(tx, sc, held) {
			errs = append(errs, fmt.Errorf("services[%d].%w", i, err))
		}
	}
	return errors.Join(errs...)
}

type serviceKey struct {
	proto nat.Protocol
	vip   netip.Addr
	port  uint16
}

// prune deletes a running service's local addresses and real servers that
// sc does not have.
func prune(tx *nat.Tx, svc *nat.Service, sc *Service) error {
	for _, l := range tx.LocalAddrs(svc) {
		if !slices.Contains(sc.LocalAddresses, l.Addr) {
			if err := tx.DeleteLocalAddr(svc, l.Addr); err != nil {
				return err
			}
		}
	}
	for _, dst := range tx.Dests(svc) {
		if !slices.ContainsFunc(sc.RealServers, func(rs RealServer) bool { return rs.Address == dst.Addr && rs.Port == dst.Port }) {
			if err := tx.DeleteDest(svc, dst.Addr, dst.Port); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyService adds sc, or makes the running service what it says; prune
// has taken away what it lacks. Each error starts with its field's name.
func applyService(tx *nat.Tx, sc Service, held func(Service, RealServer) bool) (errs []error) {
	svc, err := tx.Service(sc.Protocol, sc.VIP, sc.Port)
	if err != nil {
		to := sc.Timeouts
		if svc, err = tx.AddService(nat.ServiceConfig{Name: sc.Name, Addr: sc.VIP, Port: sc.Port, Protocol: sc.Protocol,
			Scheduler: sc.Scheduler, Timeouts: &to, Synproxy: sc.Synproxy, ClientAddr: sc.ClientAddress,
			Timestamps: sc.TCPTimestamps}); err != nil {
			return []error{fmt.Errorf("vip: %w", err)}
		}
	} else {
		tx.SetName(svc, sc.Name)
		if svc.Scheduler() != sc.Scheduler {
			if err := tx.SetScheduler(svc, sc.Scheduler); err != nil {
				errs = append(errs, fmt.Errorf("scheduler: %w", err))
			}
		}
		if svc.Synproxy() != sc.Synproxy {
			if err := tx.SetSynproxy(svc, sc.Synproxy); err != nil {
				errs = append(errs, fmt.Errorf("synproxy: %w", err))
			}
		}
		if svc.ClientAddr() != sc.ClientAddress {
			if err := tx.SetClientAddr(svc, sc.ClientAddress); err != nil {
				errs = append(errs, fmt.Errorf("client_address: %w", err))
			}
		}
		if svc.Timestamps() != sc.TCPTimestamps {
			if err := tx.SetTimestamps(svc, sc.TCPTimestamps); err != nil {
				errs = append(errs, fmt.Errorf("tcp_timestamps: %w", err))
			}
		}
		if svc.Timeouts() != sc.Timeouts {
			if err := tx.SetTimeouts(svc, sc.Timeouts); err != nil {
				errs = append(errs, fmt.Errorf("timeouts: %w", err))
			}
		}
	}
	errs = append(errs, applyDefence(tx, svc, &sc)...)
	have := tx.LocalAddrs(svc)
	for j, l := range sc.LocalAddresses {
		if !slices.ContainsFunc(have, func(x *nat.LocalAddr) bool { return x.Addr == l }) {
			if _, err := tx.AddLocalAddr(svc, l); err != nil {
				errs = append(errs, fmt.Errorf("local_addresses[%d]: %w", j, err))
			}
		}
	}
	cur := map[netip.AddrPort]*nat.Dest{}
	for _, dst := range tx.Dests(svc) {
		cur[netip.AddrPortFrom(dst.Addr, dst.Port)] = dst
	}
	for j, rs := range sc.RealServers {
		if held(sc, rs) {
			continue // the check puts it back, with this configuration's weight, when it recovers
		}
		dst, ok := cur[netip.AddrPortFrom(rs.Address, rs.Port)]
		switch {
		case !ok:
			if _, err := tx.AddDest(svc, rs.Address, rs.Port, rs.Weight); err != nil {
				errs = append(errs, fmt.Errorf("real_servers[%d]: %w", j, err))
			}
		case tx.Weight(svc, dst) != rs.Weight:
			if err := tx.SetWeight(svc, rs.Address, rs.Port, rs.Weight); err != nil {
				errs = append(errs, fmt.Errorf("real_servers[%d]: %w", j, err))
			}
		}
	}
	return errs
}
