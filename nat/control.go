package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Errors of control-plane operations, for callers that speak ipvsadm.
var (
	ErrServiceExists   = errors.New("service already exists")
	ErrNoService       = errors.New("service not defined")
	ErrDestExists      = errors.New("destination already exists")
	ErrNoDest          = errors.New("no such destination")
	ErrLocalAddrExists = errors.New("local address already exists")
	ErrNoLocalAddr     = errors.New("no such local address")
)

// Service finds a virtual service.
func (b *Balancer) Service(proto Protocol, addr netip.Addr, port uint16) (*Service, error) {
	if s := b.set.Load().service(svcKey{addr: addr.As16(), port: port, proto: proto}); s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("%s %s: %w", proto, netip.AddrPortFrom(addr, port), ErrNoService)
}

// conns counts the service's open connections.
func (s *Service) conns() int64 {
	var n int64
	for _, d := range s.Dests() {
		a, ia, _ := d.Conns()
		n += a + ia
	}
	return n
}

// Addresses are the VIPs and LIPs the stack must answer ARP for: those of
// the services, of deleted ones whose connections are still open, and the
// backup LIPs (SetBackupLIPs).
func (b *Balancer) Addresses() (vips, lips []netip.Addr) {
	set := b.set.Load()
	set.vips.each(func(a addr16, _ int32) { vips = append(vips, netip.AddrFrom16(a).Unmap()) })
	set.lips.each(func(a addr16, _ int32) { lips = append(lips, netip.AddrFrom16(a).Unmap()) })
	slices.SortFunc(vips, netip.Addr.Compare)
	slices.SortFunc(lips, netip.Addr.Compare)
	return vips, lips
}

// SetBackupLIPs makes the other instances' LIPs this instance backs up
// exactly want. The snapshot counts each as a LIP, so that the stack
// answers ARP and neighbour discovery for it on the server side once a
// router sends its replies here, and the data path takes a reply to it as
// one to a LIP of its own: continued if a connection here holds it,
// dropped and counted (no connection) if not, never passed to the stack,
// which would answer a stray segment with a reset. A backup LIP is never
// allocated from: no service lists it. It reports whether the set
// changed (the stack's addresses are then to sync).
func (b *Balancer) SetBackupLIPs(want []netip.Addr) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := make(map[addr16]bool, len(want))
	lips := map[addr16]int32{}
	for _, a := range want {
		k := a.As16()
		if next[k] {
			continue
		}
		next[k] = true
		if !b.backups[k] {
			lips[k]++
		}
	}
	for k := range b.backups {
		if !next[k] {
			lips[k]--
		}
	}
	if len(lips) > 0 {
		b.backups = next // a new map: the published snapshot holds the old one
		b.publish(nil, nil, nil, lips, nil)
	}
	return len(lips) > 0
}

// BackupLIPs are the addresses SetBackupLIPs set, in order.
func (b *Balancer) BackupLIPs() []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]netip.Addr, 0, len(b.backups))
	for k := range b.backups {
		out = append(out, netip.AddrFrom16(k).Unmap())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// SetTimeouts sets the ESTABLISHED, FIN_WAIT and UDP timeouts of every
// service and of services made later (ipvsadm --set tcp tcpfin udp); zero
// leaves a value unchanged.
func (tx *Tx) SetAllTimeouts(tcp, tcpfin, udp time.Duration) error {
	apply := func(t Timeouts) Timeouts {
		if tcp > 0 {
			t.TCP[stEstablished] = tcp
		}
		if tcpfin > 0 {
			t.TCP[stFinWait] = tcpfin
		}
		if udp > 0 {
			t.UDP = udp
		}
		return t
	}
	if err := tx.SetDefaultTimeouts(apply(tx.DefaultTimeouts())); err != nil {
		return err
	}
	for _, s := range tx.services() {
		if err := tx.SetTimeouts(s, apply(tx.Timeouts(s))); err != nil {
			return err
		}
	}
	return nil
}

// DefaultTimeouts are the timeouts new services get.
func (b *Balancer) DefaultTimeouts() Timeouts {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg.Timeouts
}

// MaxConns is the connection table's limit.
func (b *Balancer) MaxConns() int { return int(b.table.max) }

// Zero clears every service's and server's counters (ipvsadm -Z).
func (b *Balancer) Zero() {
	for _, s := range b.Services() {
		s.Zero()
	}
}

// Zero clears the service's counters and its servers' (ipvsadm -Z -t).
func (s *Service) Zero() {
	s.mu.Lock()
	s.gone = Traffic{}
	s.mu.Unlock()
	for _, d := range s.Dests() {
		d.zero()
	}
}

// rateInterval is the rate estimator's period, IPVS's 2 seconds.
const rateInterval = 2 * time.Second

// estimate updates every server's rate from the change in its counters.
func (b *Balancer) estimate(el time.Duration) {
	sec := el.Seconds()
	for _, s := range b.Services() {
		for _, d := range s.Dests() {
			t := d.Traffic()
			last := d.lastTraffic.Swap(&t)
			if last == nil || t.Conns < last.Conns || t.InPkts < last.InPkts {
				continue // first sample, or counters zeroed
			}
			d.rate.Store(&Rate{
				CPS:    float64(t.Conns-last.Conns) / sec,
				InPPS:  float64(t.InPkts-last.InPkts) / sec,
				OutPPS: float64(t.OutPkts-last.OutPkts) / sec,
				InBPS:  float64(t.InBytes-last.InBytes) / sec,
				OutBPS: float64(t.OutBytes-last.OutBytes) / sec,
			})
		}
	}
}
