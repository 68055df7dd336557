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
// or the caller's if "") masquerade packets from src4 (IPv4) and src6
// (IPv6; either zero for none) that leave by any other interface, in
// nftables tables of their own, ip and ip6 tapvs-<name>.
//
// It is what lets tapvs run as a sidecar: the pod's kernel forwards the
// LIPs' packets (src is the server side's subnet) out of the pod's own
// interface, where nothing outside knows a route back to a LIP; masqueraded
// to the pod's address, the real servers' answers come back to the pod and
// conntrack hands them to the LIP on the TAP. tapvs's own FULLNAT is
// unchanged beneath it. The returned func removes the tables; tables left
// by an earlier tapvs that died are replaced.
func Masquerade(name string, src4, src6 netip.Prefix, nsName string) (remove func() error, err error) {
	// Checked before the namespace's nftables is touched.
	switch {
	case !src4.IsValid() && !src6.IsValid():
		return nil, fmt.Errorf("masquerade %s: no subnet", name)
	case src4.IsValid() && !src4.Addr().Is4():
		return nil, fmt.Errorf("masquerade %s: %s is not IPv4", name, src4)
	case src6.IsValid() && (!src6.Addr().Is6() || src6.Addr().Is4In6()):
		return nil, fmt.Errorf("masquerade %s: %s is not IPv6", name, src6)
	}
	t, err := newTable("masquerade", name, nsName, "tapvs-"+name, src4.IsValid(), src6.IsValid())
	if err != nil {
		return nil, err
	}
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, name)
	for _, m := range []struct {
		t   *nftables.Table
		src netip.Prefix
		off uint32 // the source address in the network header
	}{{t.t4, src4, 12}, {t.t6, src6, 8}} {
		if m.t == nil {
			continue
		}
		chain := t.c.AddChain(&nftables.Chain{Name: "postrouting", Table: m.t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
		p := m.src.Masked()
		n := uint32(p.Addr().BitLen() / 8)
		// ip saddr <src> oifname != <name> masquerade (ip6 saddr for IPv6)
		t.c.AddRule(&nftables.Rule{Table: m.t, Chain: chain, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: m.off, Len: n},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()), Xor: make([]byte, n)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
			&expr.Masq{},
		}})
	}
	return t.commit()
}
