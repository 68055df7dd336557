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
// real servers reached through the pod (a masqueraded LIP) never are. The
// returned func removes the table; one left by a tapvs that died is
// replaced.
func Publish(name string, ports []PublishedPort, nsName string) (remove func() error, err error) {
	// Checked before the namespace's nftables is touched.
	for _, p := range ports {
		if !p.VIP.Is4() || (p.Protocol != unix.IPPROTO_TCP && p.Protocol != unix.IPPROTO_UDP) {
			return nil, fmt.Errorf("publish %s: %d/%d to %s: only TCP and UDP to IPv4", name, p.Protocol, p.Port, p.VIP)
		}
	}
	t, err := newTable("publish", name, nsName, "tapvs-publish-"+name)
	if err != nil {
		return nil, err
	}
	chain := t.c.AddChain(&nftables.Chain{Name: "prerouting", Table: t.t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, name)
	local := make([]byte, 4)
	binary.NativeEndian.PutUint32(local, unix.RTN_LOCAL)
	for _, p := range ports {
		// iifname != <name> fib daddr type local meta l4proto <p> th dport <port> dnat ip to <vip>
		t.c.AddRule(&nftables.Rule{Table: t.t, Chain: chain, Exprs: []expr.Any{
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
	return t.commit()
}
