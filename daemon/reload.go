package daemon

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
)

// Reload reads the configuration at path and applies what changed to the
// running tapvs, through the same operations as the control API: services,
// real servers, weights, schedulers, SYN proxy, timeouts, local addresses
// and health checks. A file that does not validate is refused whole, with
// its fields named, and nothing changes. Interfaces and limits cannot change
// under a running data path: they are reported as needing a restart.
func (d *Daemon) Reload(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		d.log.Error("reload refused: the running configuration is kept", "err", err)
		return err
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	old := d.Config()
	if !reflect.DeepEqual(old.Client, cfg.Client) || !reflect.DeepEqual(old.Server, cfg.Server) ||
		old.Offload != cfg.Offload || old.BusyPoll != cfg.BusyPoll || old.MaxConns != cfg.MaxConns || old.PortMin != cfg.PortMin || old.PortMax != cfg.PortMax ||
		old.ControlSocket != cfg.ControlSocket || old.MetricsListen != cfg.MetricsListen {
		d.log.Warn("reload: interfaces, limits, control socket and metrics address change only with a restart; the rest is applied")
	}
	n, err := d.apply(cfg)
	d.cfg.Store(cfg)
	d.startHealth(cfg)
	if err != nil {
		d.log.Error("reload applied partly", "changes", n, "err", err)
		return err
	}
	d.log.Info("reload applied", "changes", n)
	return nil
}

func keyOf(s config.Service) control.ServiceKey {
	return control.ServiceKey{Protocol: strings.ToLower(s.Protocol.String()), Addr: netip.AddrPortFrom(s.VIP, s.Port).String()}
}

// apply makes the running services what cfg says, and counts the changes.
func (d *Daemon) apply(cfg *config.Config) (int, error) {
	m := d.Manager
	n := 0
	var errs []string
	note := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			n++
		}
	}
	want := map[control.ServiceKey]config.Service{}
	for _, s := range cfg.Services {
		want[keyOf(s)] = s
	}
	running := map[control.ServiceKey]control.Service{}
	for _, s := range m.Services() {
		running[s.ServiceKey] = s
		if _, ok := want[s.ServiceKey]; !ok {
			note(m.DeleteService(s.ServiceKey))
		}
	}
	for _, sc := range cfg.Services {
		k := keyOf(sc)
		cur, exists := running[k]
		sp := sc.Synproxy
		if !exists {
			note(m.AddService(control.ServiceSpec{ServiceKey: k, Name: sc.Name, Scheduler: sc.Scheduler, Synproxy: &sp}))
			cur = control.Service{ServiceKey: k}
		} else if cur.Scheduler != sc.Scheduler || cur.Synproxy != sc.Synproxy {
			note(m.EditService(control.ServiceSpec{ServiceKey: k, Scheduler: sc.Scheduler, Synproxy: &sp}))
		}
		if svc, err := d.Balancer.Service(sc.Protocol, sc.VIP, sc.Port); err == nil && svc.Timeouts() != sc.Timeouts {
			svc.SetTimeouts(sc.Timeouts)
			n++
		}
		d.applyDests(k, cur, sc, note)
		d.applyLIPs(k, cur, sc, note)
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return n, nil
}

func (d *Daemon) applyDests(k control.ServiceKey, cur control.Service, sc config.Service, note func(error)) {
	m := d.Manager
	want := map[string]config.RealServer{}
	for _, rs := range sc.RealServers {
		want[netip.AddrPortFrom(rs.Address, rs.Port).String()] = rs
	}
	have := map[string]control.Dest{}
	for _, dst := range cur.Dests {
		have[dst.Addr] = dst
		if _, ok := want[dst.Addr]; !ok {
			note(m.DeleteDest(k, dst.Addr))
		}
	}
	for addr, rs := range want {
		if d.heldDown(sc, rs) {
			continue // the check puts it back, with this configuration's weight, when it recovers
		}
		w := rs.Weight
		if cur, ok := have[addr]; !ok {
			note(m.AddDest(k, control.DestSpec{Addr: addr, Weight: &w}))
		} else if cur.Weight != w {
			note(m.EditDest(k, control.DestSpec{Addr: addr, Weight: &w}))
		}
	}
}

// heldDown reports whether a failed health check holds the server out
// (quiesced or removed): a reload must not put it back.
func (d *Daemon) heldDown(sc config.Service, rs config.RealServer) bool {
	hc := d.checker.Load()
	if hc == nil || rs.Health == nil {
		return false
	}
	up, checked, _ := hc.Up(sc.Protocol, netip.AddrPortFrom(sc.VIP, sc.Port), netip.AddrPortFrom(rs.Address, rs.Port))
	return checked && !up
}

func (d *Daemon) applyLIPs(k control.ServiceKey, cur control.Service, sc config.Service, note func(error)) {
	m := d.Manager
	want := map[string]bool{}
	for _, l := range sc.LocalAddresses {
		want[l.String()] = true
	}
	have := map[string]bool{}
	for _, l := range cur.LocalAddrs {
		have[l.Addr] = true
		if !want[l.Addr] {
			note(m.DeleteLocalAddr(k, l.Addr))
		}
	}
	for _, l := range sc.LocalAddresses {
		if !have[l.String()] {
			note(m.AddLocalAddr(k, l.String()))
		}
	}
}
