package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"

	"github.com/tapvs/tapvs/control/api"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/nat"
)

// Reload reads the configuration at path and applies what changed to the
// running tapvs, through the same operations as the control API: services,
// real servers, weights, schedulers, SYN proxy, timeouts, local addresses
// and health checks. A file that does not validate is refused whole, with
// its fields named, and nothing changes. Interfaces and limits cannot change
// under a running data path: they are reported as needing a restart.
//
// It applies what changed in the file since the file applied before, as
// keepalived does (config.Reconcile): a value the file changed is made the
// file's, overriding a runtime change (named: reverted=...); a runtime
// change (tapvsadm, the API) to a value the file did not change is kept,
// and so is what was added at run time and the file does not declare
// (named: kept=...). POST /v1/reload answers the same lists.
func (d *Daemon) Reload(path string) error {
	_, err := d.reload(path)
	return err
}

func (d *Daemon) reload(path string) (api.Reload, error) {
	cfg, err := config.Load(path)
	if err != nil {
		d.log.Error("reload refused: the running configuration is kept", "err", err)
		return api.Reload{}, err
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	running := d.Config()
	res := api.Reload{Restart: restartOnly(running, cfg)}
	if len(res.Restart) > 0 {
		d.log.Warn("reload: these change only with a restart; the running values are kept and the services are applied", "fields", strings.Join(res.Restart, ", "))
	}
	var drift config.Drift
	err = d.Manager.Update(func(tx *nat.Tx) error {
		var err error
		drift, err = cfg.Reconcile(tx, running, d.heldDown)
		res.Changes = tx.Changes()
		return err
	})
	if err != nil {
		d.log.Error("reload refused: the running configuration is kept", "err", err)
		return api.Reload{}, err
	}
	// The running configuration is the file's services and timeouts (the
	// next reload applies what changed since them) on the other values
	// tapvs started with: the next reload compares against what runs, so
	// it warns again until a restart takes the new values.
	applied := *running
	applied.Services, applied.Timeouts = cfg.Services, cfg.Timeouts
	if restart, err := d.cluster.reload(cfg); err != nil {
		// The services are applied; the speaker keeps what it ran.
		d.log.Error("reload: bgp: the running bgp: section is kept", "err", err)
		res.Restart = append(res.Restart, "bgp ("+err.Error()+")")
	} else {
		res.Restart = append(res.Restart, restart...)
		applied.BGP = cfg.BGP
	}
	d.cfg.Store(&applied)
	d.startHealth(cfg)
	res.Reverted, res.Kept = config.Texts(drift.Reverted), config.Texts(drift.Kept)
	res.Restart = nonNil(res.Restart)
	level := slog.LevelInfo
	if len(res.Reverted) > 0 {
		level = slog.LevelWarn // a runtime change was overridden: say so louder
	}
	d.log.Log(context.Background(), level, "reload applied", "changes", res.Changes,
		"reverted", strings.Join(res.Reverted, "; "), "kept", strings.Join(res.Kept, "; "))
	return res, nil
}

// nonNil is s, or an empty list: the API answers [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
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

// restartOnly names the settings of next that differ from the running ones
// and cannot change under a running data path: everything but the
// services and the timeouts (the defaults and the services').
func restartOnly(running, next *config.Config) []string {
	var fields []string
	differ := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			fields = append(fields, name)
		}
	}
	differ("interfaces.client", running.Client, next.Client)
	differ("interfaces.server", running.Server, next.Server)
	differ("interfaces.offload", running.Offload, next.Offload)
	differ("interfaces.busy_poll", running.BusyPoll, next.BusyPoll)
	differ("limits.max_connections", running.MaxConns, next.MaxConns)
	differ("limits.local_port_min", running.PortMin, next.PortMin)
	differ("limits.local_port_max", running.PortMax, next.PortMax)
	differ("limits.port_quarantine", running.PortQuarantine, next.PortQuarantine)
	differ("synproxy", running.Synproxy, next.Synproxy)
	differ("sweep_interval", running.Sweep, next.Sweep)
	differ("log.level", running.LogLevel, next.LogLevel)
	differ("log.format", running.LogFormat, next.LogFormat)
	differ("control.socket", running.ControlSocket, next.ControlSocket)
	differ("metrics.listen", running.MetricsListen, next.MetricsListen)
	differ("handoff", running.Handoff, next.Handoff)
	return fields
}
