package hostnft

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
// real servers reached through the pod (a masqueraded LIP) never are. A
// VIP may be of either family: IPv4's ports are in table ip
// tapvs-publish-<name>, IPv6's in table ip6 of that name (a client reaches
// the namespace's IPv6 addresses). The returned func removes the tables;
// those left by a tapvs that died are replaced.
func Publish(name string, ports []PublishedPort, nsName string) (remove func() error, err error) {
	var v4, v6 bool
	// Checked before the namespace's nftables is touched.
	for _, p := range ports {
		if !p.VIP.IsValid() || p.VIP.Is4In6() || p.VIP.Zone() != "" || (p.Protocol != unix.IPPROTO_TCP && p.Protocol != unix.IPPROTO_UDP) {
			return nil, fmt.Errorf("publish %s: %d/%d to %s: only TCP and UDP to an IPv4 or IPv6 address", name, p.Protocol, p.Port, p.VIP)
		}
		v4 = v4 || p.VIP.Is4()
		v6 = v6 || p.VIP.Is6()
	}
	t, err := newTable("publish", name, nsName, "tapvs-publish-"+name, v4, v6)
	if err != nil {
		return nil, err
	}
	var chain4, chain6 *nftables.Chain
	if v4 {
		chain4 = t.c.AddChain(&nftables.Chain{Name: "prerouting", Table: t.t4, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	}
	if v6 {
		chain6 = t.c.AddChain(&nftables.Chain{Name: "prerouting", Table: t.t6, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	}
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, name)
	local := make([]byte, 4)
	binary.NativeEndian.PutUint32(local, unix.RTN_LOCAL)
	for _, p := range ports {
		tb, chain, family := t.t4, chain4, uint32(unix.NFPROTO_IPV4)
		if p.VIP.Is6() {
			tb, chain, family = t.t6, chain6, unix.NFPROTO_IPV6
		}
		// iifname != <name> fib daddr type local meta l4proto <p> th dport <port> dnat ip to <vip> (ip6 for IPv6)
		t.c.AddRule(&nftables.Rule{Table: tb, Chain: chain, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: local},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p.Protocol}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.Port)},
			&expr.Immediate{Register: 1, Data: p.VIP.AsSlice()},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: family, RegAddrMin: 1},
		}})
	}
	return t.commit()
}
