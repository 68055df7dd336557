package nat

import "net/netip"

// Changes of one step each, as one-change transactions: the tests' short
// forms of Balancer.Update. The daemon, the control plane and the config
// change a balancer through a Tx only.

// AddService adds a virtual service with no real servers and no local
// addresses yet: a Tx of one change.
func (b *Balancer) AddService(sc ServiceConfig) (s *Service, err error) {
	err = b.Update(func(tx *Tx) error {
		s, err = tx.AddService(sc)
		return err
	})
	return s, err
}

// AddLocalAddr adds a LIP to a service and starts answering for it: a Tx
// of one change.
func (b *Balancer) AddLocalAddr(s *Service, addr netip.Addr) (l *LocalAddr, err error) {
	err = b.Update(func(tx *Tx) error {
		l, err = tx.AddLocalAddr(s, addr)
		return err
	})
	return l, err
}

// DeleteService removes a virtual service: a Tx of one change.
func (b *Balancer) DeleteService(proto Protocol, addr netip.Addr, port uint16) error {
	return b.Update(func(tx *Tx) error {
		s, err := tx.Service(proto, addr, port)
		if err == nil {
			tx.DeleteService(s)
		}
		return err
	})
}

// Clear removes every virtual service (ipvsadm -C): a Tx.
func (b *Balancer) Clear() {
	b.Update(func(tx *Tx) error { tx.Clear(); return nil })
}

// DeleteLocalAddr takes a LIP off a service: a Tx of one change.
func (b *Balancer) DeleteLocalAddr(s *Service, addr netip.Addr) error {
	return b.Update(func(tx *Tx) error { return tx.DeleteLocalAddr(s, addr) })
}
