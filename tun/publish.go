package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// PublishedPort is a port of the namespace's own addresses whose new
// connections the kernel sends to a VIP behind the TAP.
type PublishedPort struct {
	Protocol uint8 // unix.IPPROTO_TCP or unix.IPPROTO_UDP
	Port     uint16
	VIP      netip.Addr
}

// Publish makes the kernel of the namespace the TAP name is in (nsName, or
// the caller's if "") rewrite the destination of connections to any of its
// own addresses on a published port to that port's VIP (DNAT, an nftables
// table tapvs-publish-<name>): the inbound sidecar, where clients outside
// the pod reach the pod's address and tapvs balances what they send. The
// kernel forwards them into the TAP (the VIP's route) and conntrack turns
// tapvs's answers, which it routes back through the kernel end, into the
// pod's address again. Only new connections are matched, so the answers of
// real servers reached through the pod (a masqueraded LIP) never are. The
// returned func removes the table; one left by a tapvs that died is
// replaced.
func Publish(name string, ports []PublishedPort, nsName string) (remove func() error, err error) {
	var opts []nftables.ConnOption
	closeNS := func() {}
	if nsName != "" {
		ns, err := netnsByName(nsName)
		if err != nil {
			return nil, fmt.Errorf("publish %s: netns %q: %w", name, nsName, err)
		}
		closeNS = func() { ns.Close() }
		opts = append(opts, nftables.WithNetNSFd(int(ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		closeNS()
		return nil, fmt.Errorf("publish %s: nftables: %w", name, err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "tapvs-publish-" + name}
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	chain := c.AddChain(&nftables.Chain{Name: "prerouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, name)
	local := make([]byte, 4)
	binary.NativeEndian.PutUint32(local, unix.RTN_LOCAL)
	for _, p := range ports {
		if !p.VIP.Is4() || (p.Protocol != unix.IPPROTO_TCP && p.Protocol != unix.IPPROTO_UDP) {
			closeNS()
			return nil, fmt.Errorf("publish %s: %d/%d to %s: only TCP and UDP to IPv4", name, p.Protocol, p.Port, p.VIP)
		}
		// iifname != <name> fib daddr type local meta l4proto <p> th dport <port> dnat ip to <vip>
		c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: local},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p.Protocol}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.Port)},
			&expr.Immediate{Register: 1, Data: p.VIP.AsSlice()},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		}})
	}
	if err := c.Flush(); err != nil {
		closeNS()
		return nil, fmt.Errorf("publish %s: nftables table %s: %w", name, table.Name, err)
	}
	return func() error {
		defer closeNS()
		c.DelTable(table)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("publish %s: remove nftables table %s: %w", name, table.Name, err)
		}
		return nil
	}, nil
}
