package daemon

import (
	"net/netip"
	"reflect"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/nat"
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
		old.PortQuarantine != cfg.PortQuarantine || old.Synproxy != cfg.Synproxy || old.Sweep != cfg.Sweep ||
		old.ControlSocket != cfg.ControlSocket || old.MetricsListen != cfg.MetricsListen || old.LogLevel != cfg.LogLevel || old.LogFormat != cfg.LogFormat {
		d.log.Warn("reload: interfaces, limits, the synproxy section, sweep_interval, log, control socket and metrics address change only with a restart; the services are applied")
	}
	n := 0
	err = d.Manager.Update(func(tx *nat.Tx) error {
		err := cfg.Apply(tx, d.heldDown)
		n = tx.Changes()
		return err
	})
	if err != nil {
		d.log.Error("reload refused: the running configuration is kept", "err", err)
		return err
	}
	d.cfg.Store(cfg)
	d.startHealth(cfg)
	d.log.Info("reload applied", "changes", n)
	return nil
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
