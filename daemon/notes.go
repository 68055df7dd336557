package daemon

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
)

// notes say, for a change the control API applied, how the next reload of
// the configuration file will treat it (config.Reconcile's model): what the
// file declares is set back to the file's value, what it does not is kept.
// The API answers them and tapvsadm prints them, so that no runtime change
// is lost to a reload without the operator having been told.
func (d *Daemon) notes(ops []control.Op) []string {
	cfg := d.Config()
	declared := func(k control.ServiceKey) *config.Service {
		for i := range cfg.Services {
			if sc := &cfg.Services[i]; sc.Protocol == k.Protocol && sc.VIP == k.Addr.Addr() && sc.Port == k.Addr.Port() {
				return sc
			}
		}
		return nil
	}
	var out []string
	note := func(format string, a ...any) {
		if n := fmt.Sprintf(format, a...); !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	const back, keeps = "is declared in the configuration file: a reload sets it back to the file's", "is not in the configuration file: a reload keeps it"
	for _, op := range ops {
		k := op.Service.ServiceKey
		name := strings.ToLower(k.Protocol.String()) + " " + k.Addr.String()
		sc := declared(k)
		switch op.Kind {
		case control.OpClear:
			if n := len(cfg.Services); n > 0 {
				note("the configuration file declares %d services: a reload adds them back", n)
			}
		case control.OpSetTimeouts:
			if n := len(cfg.Services); n > 0 {
				note("the timeouts of the %d services the configuration file declares: a reload sets them back to the file's", n)
			}
		case control.OpAddService:
			if sc == nil {
				note("service %s %s", name, keeps)
			} else {
				note("service %s %s", name, back)
			}
		case control.OpEditService:
			if sc != nil {
				note("service %s %s", name, back)
			}
		case control.OpDeleteService:
			if sc != nil {
				note("service %s is declared in the configuration file: a reload adds it back", name)
			}
		case control.OpAddDest, control.OpEditDest, control.OpDeleteDest:
			if sc == nil {
				continue
			}
			ap := op.Dest.Addr
			rs := slices.IndexFunc(sc.RealServers, func(rs config.RealServer) bool { return rs.Address == ap.Addr() && rs.Port == ap.Port() })
			switch {
			case rs < 0 && op.Kind == control.OpAddDest:
				note("real server %s of %s %s", ap, name, keeps)
			case rs >= 0 && op.Kind == control.OpDeleteDest:
				note("real server %s of %s is declared in the configuration file: a reload adds it back", ap, name)
			case rs >= 0:
				note("real server %s of %s %s (weight %d)", ap, name, back, sc.RealServers[rs].Weight)
			}
		case control.OpAddLocalAddr, control.OpDeleteLocalAddr:
			if sc == nil {
				continue
			}
			in := slices.Contains(sc.LocalAddresses, op.LocalAddr)
			switch {
			case !in && op.Kind == control.OpAddLocalAddr:
				note("local address %s of %s %s", op.LocalAddr, name, keeps)
			case in && op.Kind == control.OpDeleteLocalAddr:
				note("local address %s of %s is declared in the configuration file: a reload adds it back", op.LocalAddr, name)
			}
		case control.OpAddDeny, control.OpDeleteDeny, control.OpAddAllow, control.OpDeleteAllow:
			if sc != nil {
				list := "deny"
				if op.Kind == control.OpAddAllow || op.Kind == control.OpDeleteAllow {
					list = "allow"
				}
				note("the %s list of %s %s", list, name, back)
			}
		}
	}
	return out
}
