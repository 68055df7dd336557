package hostnft

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Masquerade makes the kernel of the namespace the TAP name is in (nsName,
// or the caller's if "") masquerade packets from src that leave by any
// other interface, in an nftables table of its own, tapvs-<name>.
//
// It is what lets tapvs run as a sidecar: the pod's kernel forwards the
// LIPs' packets (src is the server side's subnet) out of the pod's own
// interface, where nothing outside knows a route back to a LIP; masqueraded
// to the pod's address, the real servers' answers come back to the pod and
// conntrack hands them to the LIP on the TAP. tapvs's own FULLNAT is
// unchanged beneath it. The returned func removes the table; a table left by
// an earlier tapvs that died is replaced.
func Masquerade(name string, src netip.Prefix, nsName string) (remove func() error, err error) {
	if !src.Addr().Is4() {
		return nil, fmt.Errorf("masquerade %s: %s is not IPv4", name, src)
	}
	t, err := newTable("masquerade", name, nsName, "tapvs-"+name)
	if err != nil {
		return nil, err
	}
	chain := t.c.AddChain(&nftables.Chain{Name: "postrouting", Table: t.t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	p := src.Masked()
	mask := net.CIDRMask(p.Bits(), 32)
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, name)
	// ip saddr <src> oifname != <name> masquerade
	t.c.AddRule(&nftables.Rule{Table: t.t, Chain: chain, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
		&expr.Masq{},
	}})
	return t.commit()
}
