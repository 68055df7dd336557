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
	if s := b.set.Load().byKey[svcKey{addr: addr.As16(), port: port, proto: proto}]; s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("%s %s: %w", proto, netip.AddrPortFrom(addr, port), ErrNoService)
}

// DeleteService removes a virtual service. New flows to it are dropped as
// no_service; its open connections continue until they end, as in IPVS.
func (b *Balancer) DeleteService(proto Protocol, addr netip.Addr, port uint16) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.set.Load()
	s := cur.byKey[svcKey{addr: addr.As16(), port: port, proto: proto}]
	if s == nil {
		return fmt.Errorf("%s %s: %w", proto, netip.AddrPortFrom(addr, port), ErrNoService)
	}
	b.retire(s)
	b.publish(slices.DeleteFunc(slices.Clone(cur.list), func(x *Service) bool { return x == s }))
	return nil
}

// retire keeps a deleted service's VIP and LIPs answered while its
// connections last. Caller holds b.mu.
func (b *Balancer) retire(s *Service) {
	b.retireLIPs(s.LocalAddrs())
	if s.conns() > 0 {
		b.retiredSvcs = append(b.retiredSvcs, s)
	}
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
// the services, and of deleted ones whose connections are still open.
func (b *Balancer) Addresses() (vips, lips []netip.Addr) {
	set := b.set.Load()
	for a := range set.vips {
		vips = append(vips, netip.AddrFrom16(a).Unmap())
	}
	for a := range set.lips {
		lips = append(lips, netip.AddrFrom16(a).Unmap())
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	slices.SortFunc(lips, netip.Addr.Compare)
	return vips, lips
}

// Clear removes every virtual service (ipvsadm -C).
func (b *Balancer) Clear() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.set.Load().list {
		b.retire(s)
	}
	b.publish(nil)
}

// DeleteLocalAddr takes a LIP off a service. Connections bound to it keep
// working until they end.
func (b *Balancer) DeleteLocalAddr(s *Service, addr netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.mu.Lock()
	cur := *s.laddrs.Load()
	i := slices.IndexFunc(cur, func(l *LocalAddr) bool { return l.Addr == addr })
	if i < 0 {
		s.mu.Unlock()
		return fmt.Errorf("local address %s: %w", addr, ErrNoLocalAddr)
	}
	next := slices.Delete(slices.Clone(cur), i, i+1)
	s.laddrs.Store(&next)
	s.mu.Unlock()
	b.retireLIPs(cur[i : i+1])
	b.publish(b.set.Load().list)
	return nil
}

// retireLIPs keeps LIPs answered while connections use them. Caller holds b.mu.
func (b *Balancer) retireLIPs(ls []*LocalAddr) {
	for _, l := range ls {
		if l.inUse.Load() > 0 {
			b.retired = append(b.retired, l)
		}
	}
}

// SetTimeouts sets the ESTABLISHED, FIN_WAIT and UDP timeouts of every
// service and of services made later (ipvsadm --set tcp tcpfin udp); zero
// leaves a value unchanged.
func (b *Balancer) SetTimeouts(tcp, tcpfin, udp time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	apply := func(t *Timeouts) {
		if tcp > 0 {
			t.TCP[stEstablished] = tcp
		}
		if tcpfin > 0 {
			t.TCP[stFinWait] = tcpfin
		}
		if udp > 0 {
			t.UDP = udp
		}
	}
	apply(&b.cfg.Timeouts)
	for _, s := range b.set.Load().list {
		t := s.Timeouts()
		apply(&t)
		s.SetTimeouts(t)
	}
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
	for _, s := range b.set.Load().list {
		s.mu.Lock()
		s.gone = Traffic{}
		s.mu.Unlock()
		for _, d := range s.Dests() {
			d.zero()
		}
	}
}

// rateInterval is the rate estimator's period, IPVS's 2 seconds.
const rateInterval = 2 * time.Second

// estimate updates every server's rate from the change in its counters.
func (b *Balancer) estimate(el time.Duration) {
	sec := el.Seconds()
	for _, s := range b.set.Load().list {
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
