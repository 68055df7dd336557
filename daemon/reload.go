package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/control/api"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/health"
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

func (d *Daemon) reload(path string) (res api.Reload, err error) {
	defer func() { d.reloadEvent(res, err) }()
	cfg, err := config.Load(path)
	if err != nil {
		d.log.Error("reload refused: the running configuration is kept", "err", err)
		return api.Reload{}, err
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	running := d.Config()
	var applied *config.Config
	res, applied, err = decideReload(d.Manager, running, cfg, d.heldDown)
	if len(res.Restart) > 0 {
		d.log.Warn("reload: these change only with a restart; the running values are kept and the services are applied", "fields", strings.Join(res.Restart, ", "))
	}
	if err != nil {
		d.log.Error("reload refused: the running configuration is kept", "err", err)
		return api.Reload{}, err
	}
	if restart, err := d.cluster.reload(cfg); err != nil {
		// The services are applied; the speaker keeps what it ran.
		d.log.Error("reload: bgp: the running bgp: section is kept", "err", err)
		res.Restart = append(res.Restart, "bgp ("+err.Error()+")")
		applied.BGP = running.BGP
	} else {
		res.Restart = append(res.Restart, restart...)
		applied.BGP = cfg.BGP // the speaker's: its ASN and router ID are the running ones
	}
	d.cfg.Store(applied)
	// The file is the source of truth for faults too.
	if len(d.runtimeFaults) > 0 {
		d.log.Warn("reload: the faults set at run time are replaced by the file's", "faults", len(d.runtimeFaults))
	}
	if err := d.changeFaultsLocked(false, func() error { return d.Balancer.SetFaults(cfg.Faults) }); err != nil {
		d.log.Error("reload: the running faults are kept", "err", err) // checked by the file's reading: not expected
	} else {
		d.runtimeFaults = nil
	}
	// The file is the source of truth for checks: runtime ones end here,
	// and the servers they held out that the file does not check come back.
	overridden := d.runtimeChecks
	d.runtimeChecks = nil
	if len(overridden) > 0 {
		d.log.Warn("reload: the health checks set at run time are replaced by the file's", "services", len(overridden))
	}
	d.startHealth(cfg, func(t health.Target) bool {
		_, ok := overridden[controlKey(t.Key())]
		return ok
	}, false)
	res.Restart = nonNil(res.Restart)
	level := slog.LevelInfo
	if len(res.Reverted) > 0 {
		level = slog.LevelWarn // a runtime change was overridden: say so louder
	}
	d.log.Log(context.Background(), level, "reload applied", "changes", res.Changes,
		"reverted", strings.Join(res.Reverted, "; "), "kept", strings.Join(res.Kept, "; "))
	return res, nil
}

// decideReload is a reload's decision, made against the balancer in one
// transaction through m: the settings of next that wait for a restart
// (named by their keys in the file), the services' changes, the runtime
// changes it reverts and those it keeps, and the configuration that runs
// then: running's RestartOnly part with next's Reloadable part, so that
// the next reload compares against what runs and warns again until a
// restart takes the new values. The restart list is filled in even when
// the transaction is refused, and then nothing changed. It needs no TAP:
// a balancer (nat.New) and its manager are enough (reload_test.go).
func decideReload(m *control.Manager, running, next *config.Config, held func(config.Service, config.RealServer) bool) (api.Reload, *config.Config, error) {
	res := api.Reload{Restart: running.RestartOnly.Changed(&next.RestartOnly)}
	var drift config.Drift
	err := m.Update(func(tx *nat.Tx) error {
		var err error
		drift, err = next.Reconcile(tx, running, held)
		res.Changes = tx.Changes()
		return err
	})
	if err != nil {
		return api.Reload{Restart: res.Restart}, nil, err
	}
	res.Reverted, res.Kept = config.Texts(drift.Reverted), config.Texts(drift.Kept)
	return res, &config.Config{RestartOnly: running.RestartOnly, Reloadable: next.Reloadable}, nil
}

// nonNil is s, or an empty list: the API answers [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// heldDown reports whether a failed health check, or its service's lost
// quorum, holds the server out (quiesced or removed): a reload must not put
// it back.
func (d *Daemon) heldDown(sc config.Service, rs config.RealServer) bool {
	hc := d.checker.Load()
	if hc == nil {
		return false
	}
	k := checkKey(configKey(&sc))
	if up, known := hc.Serving(k); known && !up {
		return true // below quorum: its quorum puts it back
	}
	if rs.Health == nil {
		return false
	}
	up, checked, _ := hc.Up(k, netip.AddrPortFrom(rs.Address, rs.Port))
	return checked && !up
}
