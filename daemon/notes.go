package daemon

import (
	"errors"
	"fmt"
	"slices"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/nat"
)

// errLookOnly ends the transaction notes looks through.
var errLookOnly = errors.New("notes: nothing to change")

// notes say, for a change the control API applied, what a reload of the
// configuration file will do with it. They are made from config.Keeps: the
// reload's own rule, run without changing anything on the services the
// change touched; so they cannot tell other than what a reload does. A
// reload of an unchanged file keeps every runtime change: one to what the
// file declares until the file changes that value, one the file does not
// declare always. The API answers them and tapvsadm prints them, so that no
// runtime change is lost to a reload without the operator having been told.
func (d *Daemon) notes(ops []control.Op) []string {
	if len(ops) == 0 {
		return nil
	}
	cfg := d.Config()
	var keys []config.ServiceKey // nil: every service, and the defaults
	for _, op := range ops {
		if op.Kind == control.OpClear || op.Kind == control.OpSetTimeouts {
			keys = nil
			break
		}
		keys = append(keys, serviceKey(op.Service.ServiceKey))
	}
	var kept []config.Named
	_ = d.Balancer.Update(func(tx *nat.Tx) error {
		kept = cfg.Keeps(tx, keys, d.heldDown)
		return errLookOnly
	})
	// Indexed, so that a batch's notes cost its size: a service's own
	// settings (and itself) by service, its real servers and local
	// addresses by subject.
	own := map[config.ServiceKey][]config.Named{}
	parts := map[config.Subject]config.Named{}
	for _, n := range kept {
		if s := n.Subject; s.Dest.IsValid() || s.LocalAddr.IsValid() {
			parts[s] = n
		} else {
			own[s.Service] = append(own[s.Service], n)
		}
	}
	var out []string
	note := func(format string, a ...any) {
		if n := fmt.Sprintf(format, a...); !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	say := func(n config.Named) {
		if n.Declared {
			note("%s: kept across reloads unless the file changes this value", n.Text)
		} else {
			note("%s is not in the configuration file: kept across reloads", n.Text)
		}
	}
	for _, op := range ops {
		k := serviceKey(op.Service.ServiceKey)
		switch op.Kind {
		case control.OpClear, control.OpSetTimeouts:
			services := 0
			for _, n := range kept {
				s := n.Subject
				switch {
				case op.Kind == control.OpClear && n.Declared && s.Setting == "" && !s.Dest.IsValid() && !s.LocalAddr.IsValid():
					services++
				case op.Kind == control.OpSetTimeouts && s.Setting == "timeouts" && s.Service == (config.ServiceKey{}):
					say(n)
				case op.Kind == control.OpSetTimeouts && s.Setting == "timeouts" && n.Declared:
					services++
				}
			}
			if services > 0 && op.Kind == control.OpClear {
				note("%d services the configuration file declares: deleted, kept so across reloads unless the file changes them", services)
			} else if services > 0 {
				note("the timeouts of %d services the configuration file declares: kept across reloads unless the file changes them", services)
			}
		case control.OpAddService, control.OpEditService, control.OpDeleteService:
			for _, n := range own[k] {
				say(n)
			}
		case control.OpAddAllow, control.OpDeleteAllow, control.OpAddDeny, control.OpDeleteDeny:
			list := "deny"
			if op.Kind == control.OpAddAllow || op.Kind == control.OpDeleteAllow {
				list = "allow"
			}
			for _, n := range own[k] {
				if n.Subject.Setting == list {
					say(n)
				}
			}
		case control.OpAddDest, control.OpEditDest, control.OpDeleteDest:
			for _, setting := range []string{"", "thresholds"} { // its weight or presence, its thresholds
				if n, ok := parts[config.Subject{Service: k, Dest: op.Dest.Addr, Setting: setting}]; ok {
					say(n)
				}
			}
		case control.OpAddLocalAddr, control.OpDeleteLocalAddr:
			if n, ok := parts[config.Subject{Service: k, LocalAddr: op.LocalAddr}]; ok {
				say(n)
			}
		}
	}
	return out
}

func serviceKey(k control.ServiceKey) config.ServiceKey {
	return config.ServiceKey{Protocol: k.Protocol, VIP: k.Addr.Addr(), Port: k.Addr.Port(), Mark: k.Mark}
}
