package daemon

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/health"
	"github.com/tapvs/tapvs/nat"
)

// runtimeCheck is a service's health check set through the control API
// (control.Checks): it replaces the file's check of every real server of
// the service until the next reload, which re-applies the file's.
type runtimeCheck struct {
	spec *health.Spec     // nil: no check (cleared at run time)
	set  *api.HealthCheck // as it was set; nil when cleared
}

// reloadNote is told with every runtime check change.
const reloadNote = "health check changed at run time: the next reload of the configuration file (SIGHUP, a change to the file, POST /v1/reload) re-applies the configuration file's check of this service"

// checks serves the control API's health routes (control.Checks).
type checks struct{ d *Daemon }

// Checks are the running health checks, as the control API changes them
// (pkg/tapvs's way to them).
func (d *Daemon) Checks() control.Checks { return checks{d} }

// HealthCheck reports a service's check and its servers' state.
func (c checks) HealthCheck(k control.ServiceKey) (api.Health, error) {
	d := c.d
	d.reloadMu.Lock()
	rc, runtime := d.runtimeChecks[k]
	d.reloadMu.Unlock()
	h := api.Health{Source: "none", Servers: d.checkViews(k)}
	switch {
	case runtime:
		h.Source, h.Check = "runtime", rc.set // nil: stopped at run time
	case len(h.Servers) > 0:
		h.Source = "file"
	}
	return h, nil
}

// SetHealthCheck validates hc as the file's health_check: block is and
// restarts the service's checks with it.
func (c checks) SetHealthCheck(k control.ServiceKey, hc api.HealthCheck) ([]string, error) {
	spec, err := config.RuntimeHealthCheck(hc)
	if err != nil {
		// The file's refusals are a line each: the API's is one line.
		return nil, fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if err := c.d.portless(k, spec); err != nil {
		return nil, err
	}
	rc := runtimeCheck{spec: spec}
	if spec != nil {
		rc.set = &hc
	}
	return c.d.setRuntimeCheck(k, rc), nil
}

// ClearHealthCheck stops the service's checks and puts back the servers
// they held out.
func (c checks) ClearHealthCheck(k control.ServiceKey) ([]string, error) {
	return c.d.setRuntimeCheck(k, runtimeCheck{}), nil
}

func (d *Daemon) setRuntimeCheck(k control.ServiceKey, rc runtimeCheck) []string {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.runtimeChecks == nil {
		d.runtimeChecks = map[control.ServiceKey]runtimeCheck{}
	}
	// The servers deleted since the last change are no longer the
	// checker's, so that the release below does not put them back.
	d.followLocked()
	d.runtimeChecks[k] = rc
	d.startHealth(d.Config(), func(t health.Target) bool { return t.Key() == checkKey(k) }, true)
	d.log.Warn("health check changed at run time; a reload re-applies the file's", "service", k.String(), "check", checkType(rc.spec))
	return []string{reloadNote}
}

// portless refuses a check that connects to the server's port for a
// service with a real server on port 0 (a match service's, or an
// all-ports service's, which takes the client's port): it needs a port of
// its own, as the file's health_check does.
func (d *Daemon) portless(k control.ServiceKey, spec *health.Spec) error {
	if spec == nil || spec.Port != 0 || !spec.NeedsPort() {
		return nil
	}
	svc, err := d.service(k)
	if err != nil {
		return nil // the API answers for a service that is not there
	}
	for _, dst := range svc.Dests() {
		if dst.Port == 0 {
			return fmt.Errorf("health_check.port: is needed: real server %s is on port 0 (it takes the client's port), so a %s check has no port of its own to connect to (keepalived's connect_port)", dst, spec.Type)
		}
	}
	return nil
}

// service is k's running service.
func (d *Daemon) service(k control.ServiceKey) (*nat.Service, error) {
	if k.Mark != 0 {
		return d.Balancer.MatchService(k.Mark)
	}
	return d.Balancer.Service(k.Protocol, k.Addr.Addr(), k.Addr.Port())
}

// checkKey is a control key as the checker names the service.
func checkKey(k control.ServiceKey) health.Key {
	return health.Key{Proto: k.Protocol, VIP: k.Addr, Mark: k.Mark}.Norm()
}

// controlKey is a checker's key as the control API names the service.
func controlKey(k health.Key) control.ServiceKey {
	if k.Mark != 0 {
		return control.ServiceKey{Mark: k.Mark}
	}
	return control.ServiceKey{Protocol: k.Proto, Addr: k.VIP}
}

// configKey is a configured service's key, as the control API names it.
func configKey(sc *config.Service) control.ServiceKey {
	if sc.Mark != 0 {
		return control.ServiceKey{Mark: sc.Mark}
	}
	return control.ServiceKey{Protocol: sc.Protocol, Addr: netip.AddrPortFrom(sc.VIP, sc.Port)}
}

func checkType(s *health.Spec) string {
	if s == nil {
		return "none"
	}
	return s.Type
}

// checkViews are the states of a service's checked servers.
func (d *Daemon) checkViews(k control.ServiceKey) []api.HealthView {
	hc := d.checker.Load()
	if hc == nil {
		return []api.HealthView{}
	}
	out := []api.HealthView{}
	for _, t := range hc.Targets(checkKey(k)) {
		up, _, why := hc.Up(t.Key(), t.RS)
		out = append(out, api.HealthView{Dest: t.RS.String(), Healthy: up, Reason: why})
	}
	return out
}

// targets are what cfg checks, with the runtime checks in place of the
// file's for their services: a runtime check covers every real server the
// service has now. Called with reloadMu held.
func (d *Daemon) targets(cfg *config.Config) []health.Target {
	var out []health.Target
	weights := map[control.ServiceKey]map[netip.AddrPort]int{} // the file's weights, for runtime checks
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		k := configKey(sc)
		_, runtime := d.runtimeChecks[k]
		for _, rs := range sc.RealServers {
			ap := netip.AddrPortFrom(rs.Address, rs.Port)
			if runtime {
				if weights[k] == nil {
					weights[k] = map[netip.AddrPort]int{}
				}
				weights[k][ap] = rs.Weight
				continue
			}
			if rs.Health != nil {
				out = append(out, health.Target{Proto: sc.Protocol, VIP: netip.AddrPortFrom(sc.VIP, sc.Port), Mark: sc.Mark, RS: ap, Spec: *rs.Health, Weight: rs.Weight,
					Thresholds: rs.Thresholds, Alpha: sc.Alpha, NotifyUp: rs.NotifyUp, NotifyDown: rs.NotifyDown})
			}
		}
	}
	for k, rc := range d.runtimeChecks {
		svc, err := d.service(k)
		if rc.spec == nil || err != nil {
			continue
		}
		for _, dst := range svc.Dests() {
			ap := netip.AddrPortFrom(dst.Addr, dst.Port)
			w, ok := weights[k][ap]
			if !ok {
				w = max(dst.Weight(), 1) // added at run time: its weight now
			}
			out = append(out, health.Target{Proto: svc.Protocol, VIP: netip.AddrPortFrom(svc.Addr, svc.Port), Mark: svc.Mark, RS: ap, Spec: *rc.spec, Weight: w, Thresholds: dst.Thresholds()})
		}
	}
	return out
}

// followServers restarts the checks when a service with a runtime check
// and its checker disagree on the service's real servers: one added with
// tapvsadm -a or the API after the check was set (checked from now on, as
// every server was when it was set), or one deleted (no longer checked,
// and so not put back when the check is cleared). The checks' state
// carries over (health.Checker.Start). A server the checker itself
// removed (on_failure: remove, and down) stays its target.
func (d *Daemon) followServers() {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.followLocked()
}

// followLocked is followServers with reloadMu held.
func (d *Daemon) followLocked() {
	hc := d.checker.Load()
	for k, rc := range d.runtimeChecks {
		if rc.spec == nil {
			continue
		}
		svc, err := d.service(k)
		if err != nil {
			continue
		}
		has := map[netip.AddrPort]bool{}
		for _, dst := range svc.Dests() {
			has[netip.AddrPortFrom(dst.Addr, dst.Port)] = true
		}
		checked := map[netip.AddrPort]bool{}
		changed := ""
		if hc != nil {
			for _, t := range hc.Targets(checkKey(k)) {
				checked[t.RS] = true
				if up, _, _ := hc.Up(t.Key(), t.RS); !has[t.RS] && (up || !t.Spec.Remove) {
					changed = "deleted"
				}
			}
		}
		for rs := range has {
			if !checked[rs] {
				changed = "added"
			}
		}
		if changed != "" {
			d.log.Info("runtime health check follows the service's servers", "service", k.String(), "server", changed)
			d.startHealth(d.Config(), nil, false)
			return
		}
	}
}
