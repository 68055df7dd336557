package control

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// The control plane's side of a service's defence (nat's defence.go): one
// prefix at a time on its allow and deny lists, as DPVS's ipvsadm
// --add-blklst/--del-blklst and --add-whtlst/--del-whtlst, and limits set
// with the service (-A/-E).

// listOp adds a prefix to, or deletes one from, a service's allow or deny
// list.
func listOp(tx *nat.Tx, op Op) error {
	svc, err := txService(tx, op.Service.ServiceKey)
	if err != nil {
		return err
	}
	deny := op.Kind == OpAddDeny || op.Kind == OpDeleteDeny
	name, list, set := "allow", tx.Allow(svc), tx.SetAllow
	if deny {
		name, list, set = "deny", tx.Deny(svc), tx.SetDeny
	}
	i := slices.Index(list, op.Prefix)
	switch op.Kind {
	case OpAddDeny, OpAddAllow:
		if i >= 0 {
			return fmt.Errorf("service %s: %s is in its %s list already", svc, op.Prefix, name)
		}
		list = append(slices.Clone(list), op.Prefix)
	default:
		if i < 0 {
			return fmt.Errorf("service %s: %s is not in its %s list", svc, op.Prefix, name)
		}
		list = slices.Delete(slices.Clone(list), i, i+1)
	}
	return set(svc, list)
}

// setLimits changes the limits l sets and leaves the others.
func setLimits(tx *nat.Tx, svc *nat.Service, l LimitsSpec) error {
	if l == (LimitsSpec{}) {
		return nil
	}
	cur := tx.Limits(svc)
	if l.SourceCPS != nil {
		cur.SourceCPS = *l.SourceCPS
	}
	if l.SourceConns != nil {
		cur.SourceConns = *l.SourceConns
	}
	if l.HalfOpen != nil {
		cur.HalfOpen = *l.HalfOpen
	}
	return tx.SetLimits(svc, cur)
}

// listDefence adds a service's lists and limits to its listing.
func listDefence(v *api.Service, s *nat.Service) {
	str := func(ps []netip.Prefix) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.String())
		}
		return out
	}
	v.Allow, v.Deny = str(s.Allow()), str(s.Deny())
	l := s.Limits()
	v.Limits = api.LimitsView{SourceCPS: uint32(l.SourceCPS), SourceConns: uint32(l.SourceConns), HalfOpen: uint32(l.HalfOpen)}
}
