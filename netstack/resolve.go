package netstack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/tapvs/tapvs/nat"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Resolve asks for a server's next hop to be resolved (nat.Link). It never
// blocks: the data path calls it when a packet finds the MAC unknown.
func (st *Stack) Resolve(d *nat.Dest) {
	select {
	case st.resolveReq <- d:
	default:
	}
}

// refreshEvery is how often every server's next hop is looked up again, so a
// router that changes its MAC is followed.
const refreshEvery = 5 * time.Second

// resolver keeps every real server's next-hop MAC in its nat.Dest, so the
// data path never resolves per packet.
func (st *Stack) resolver() {
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-st.stop:
			return
		case d := <-st.resolveReq:
			if err := st.resolveOne(d); err != nil {
				// Asked by the data path or at start: the periodic pass says
				// so loudly if it stays unresolved.
				st.log.Debug("next hop unresolved", "real_server", d.String(), "err", err)
			}
		case <-t.C:
			if err := st.ResolveAll(context.Background()); err != nil {
				st.log.Warn("next hop unresolved", "err", err)
			}
		}
	}
}

// ResolveAll resolves the next hop of every real server of every service,
// waiting up to the context's deadline for each. A server address is looked
// up once however many services have it: with many services the real
// servers are mostly the same few hosts.
func (st *Stack) ResolveAll(ctx context.Context) error {
	byAddr := map[netip.Addr][]*nat.Dest{}
	var order []netip.Addr
	for _, svc := range st.bal.Services() {
		for _, d := range svc.Dests() {
			if byAddr[d.Addr] == nil {
				order = append(order, d.Addr)
			}
			byAddr[d.Addr] = append(byAddr[d.Addr], d)
		}
	}
	var errs []error
	for _, a := range order {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		ds := byAddr[a]
		if err := st.resolveOne(ds[0]); err != nil {
			errs = append(errs, err)
			continue
		}
		mac, _ := ds[0].NextHopMAC()
		for _, d := range ds[1:] {
			d.SetNextHopMAC(mac)
		}
	}
	return errors.Join(errs...)
}

func (st *Stack) resolveOne(d *nat.Dest) error {
	mac, err := st.NextHopMAC(d.Addr, time.Second)
	if err != nil {
		return fmt.Errorf("real server %s: %w", d, err)
	}
	if old, ok := d.NextHopMAC(); !ok || old != mac {
		st.log.Info("next hop resolved", "real_server", d.String(), "mac", tcpip.LinkAddress(mac[:]).String())
	}
	d.SetNextHopMAC(mac)
	return nil
}

// NextHopMAC finds the route to addr out of the server side and resolves its
// next hop through the stack's neighbor table: ARP for an IPv4 address,
// neighbour discovery for an IPv6 one (a solicitation from the route's
// local address, the side's own IPv6 address or a LIP).
func (st *Stack) NextHopMAC(addr netip.Addr, wait time.Duration) ([6]byte, error) {
	var mac [6]byte
	proto := protocol(addr)
	r, terr := st.s.FindRoute(ServerNIC, tcpip.Address{}, toTCPIP(addr), proto, false)
	if terr != nil {
		if !st.hasAddress(ServerNIC, proto) {
			// FindRoute says the same when a route is there but
			// the side has no address of the family to send from.
			return mac, fmt.Errorf("no route to %s: the server side has no address of its family (an own address or a LIP)", addr)
		}
		return mac, fmt.Errorf("no route to %s: %s", addr, terr)
	}
	nh, local := r.NextHop(), r.LocalAddress()
	r.Release()
	if nh.Len() == 0 {
		nh = toTCPIP(addr)
	}
	ch := make(chan stack.LinkResolutionResult, 1)
	terr = st.s.GetLinkAddress(ServerNIC, nh, local, proto, func(res stack.LinkResolutionResult) { ch <- res })
	if terr != nil {
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return mac, fmt.Errorf("resolve %s: %s", nh, terr)
		}
	}
	select {
	case res := <-ch:
		if res.Err != nil {
			return mac, fmt.Errorf("resolve %s: %s", nh, res.Err)
		}
		copy(mac[:], res.LinkAddress)
		return mac, nil
	case <-time.After(wait):
		return mac, fmt.Errorf("resolve %s: no answer in %s", nh, wait)
	case <-st.stop:
		return mac, errors.New("stopped")
	}
}

// hasAddress reports whether a NIC has an address of a protocol.
func (st *Stack) hasAddress(id tcpip.NICID, proto tcpip.NetworkProtocolNumber) bool {
	for _, pa := range st.s.AllAddresses()[id] {
		if pa.Protocol == proto {
			return true
		}
	}
	return false
}
