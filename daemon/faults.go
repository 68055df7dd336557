package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// faults serves the control API's fault routes (control.Faults): the
// file's faults: at start and after each reload, changed at run time in
// between. Every change goes through reloadMu, so a reload and the API
// never interleave their lists.
type faults struct{ d *Daemon }

// Faults are the faults in force, as the control API changes them
// (pkg/tapvs's way to them).
func (d *Daemon) Faults() control.Faults { return faults{d} }

// faultNotes say how long a runtime fault lasts.
var faultNotes = []string{"faults set at run time last until the next reload, which sets the file's faults:"}

// Faults lists the faults in force with their counters.
func (f faults) Faults() []api.FaultView {
	d := f.d
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	var out []api.FaultView
	for _, fs := range d.Balancer.Faults() {
		src := "file"
		if d.runtimeFaults[fs.Target] {
			src = "runtime"
		}
		out = append(out, faultView(fs, src))
	}
	return out
}

// faultView is fs as the API lists it, from src ("file" or "runtime").
func faultView(fs nat.FaultStats, src string) api.FaultView {
	return api.FaultView{Fault: config.FaultSpec(fs.Fault), Source: src, Frames: fs.Frames, Dropped: fs.Dropped, Refused: fs.Refused,
		Delayed: fs.Delayed, Reset: fs.Reset}
}

// SetFaults replaces the faults in force with fs.
func (f faults) SetFaults(fs []api.Fault) ([]string, error) {
	if len(fs) > config.MaxFaults {
		return nil, fmt.Errorf("faults: %d faults: at most %d", len(fs), config.MaxFaults)
	}
	list := make([]nat.Fault, 0, len(fs))
	for i, in := range fs {
		nf, err := f.d.runtimeFault(in)
		if err != nil {
			return nil, fmt.Errorf("faults[%d]: %w", i, err)
		}
		list = append(list, nf)
	}
	return faultNotes, f.d.changeFaults(true, func() error { return f.d.Balancer.SetFaults(list) })
}

// AddFault sets in, in place of the fault on its target if there is one.
func (f faults) AddFault(in api.Fault) ([]string, error) {
	nf, err := f.d.runtimeFault(in)
	if err != nil {
		return nil, err
	}
	return faultNotes, f.d.changeFaults(true, func() error { return f.d.Balancer.SetFault(nf) })
}

// RemoveFault clears the fault on target's target.
func (f faults) RemoveFault(target api.Fault) ([]string, error) {
	t, err := config.ParseFaultTarget(target)
	if err != nil {
		return nil, oneLine(err)
	}
	cleared := false
	if err := f.d.changeFaults(true, func() error { cleared = f.d.Balancer.ClearFault(t); return nil }); err != nil {
		return nil, err
	}
	if !cleared {
		return nil, fmt.Errorf("%s: %w", t, control.ErrNoFault)
	}
	return faultNotes, nil
}

// runtimeFault reads a fault the API was given, as the file's are read,
// and checks that its service or real server runs.
func (d *Daemon) runtimeFault(in api.Fault) (nat.Fault, error) {
	nf, err := config.ParseFault(in)
	if err != nil {
		return nf, oneLine(err)
	}
	t := nf.Target
	switch {
	case t.Mark != 0:
		if _, err := d.Balancer.MatchService(t.Mark); err != nil {
			return nf, fmt.Errorf("fault.service: %w", err)
		}
	case t.VIP.IsValid():
		if _, err := d.Balancer.Service(t.Protocol, t.VIP.Addr(), t.VIP.Port()); err != nil {
			return nf, fmt.Errorf("fault.service: %w", err)
		}
	case t.Server.IsValid():
		found := false
		for _, s := range d.Balancer.Services() {
			if s.Dest(t.Server.Addr(), t.Server.Port()) != nil {
				found = true
				break
			}
		}
		if !found {
			return nf, fmt.Errorf("fault.server: %s is no service's real server: %w", t.Server, nat.ErrNoDest)
		}
	}
	return nf, nil
}

// oneLine is a reading's refusals as the API's one line.
func oneLine(err error) error {
	return errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
}

// running is the faults in force, without their counters.
func running(b *nat.Balancer) []nat.Fault {
	var out []nat.Fault
	for _, fs := range b.Faults() {
		out = append(out, fs.Fault)
	}
	return out
}

// changeFaults makes change to the faults in force and says which are
// then, loudly: a fault left on by mistake is an outage nobody ordered.
// With runtime, the targets whose fault the change set or changed are
// marked as set at run time, and those it cleared unmarked. It takes
// reloadMu (a reload's list and the API's never interleave).
func (d *Daemon) changeFaults(runtime bool, change func() error) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	return d.changeFaultsLocked(runtime, change)
}

// changeFaultsLocked is changeFaults with reloadMu held, or before the
// API serves.
func (d *Daemon) changeFaultsLocked(runtime bool, change func() error) error {
	before := running(d.Balancer)
	if err := change(); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	after := running(d.Balancer)
	if runtime {
		if d.runtimeFaults == nil {
			d.runtimeFaults = map[nat.FaultTarget]bool{}
		}
		kept := map[nat.FaultTarget]bool{}
		for _, f := range after {
			if !slices.Contains(before, f) {
				d.runtimeFaults[f.Target] = true
			}
			kept[f.Target] = true
		}
		for t := range d.runtimeFaults {
			if !kept[t] {
				delete(d.runtimeFaults, t)
			}
		}
	}
	logFaults(d.log, after, len(before))
	return nil
}

// logFaults says which faults are in force, a warning each.
func logFaults(log *slog.Logger, fs []nat.Fault, had int) {
	for _, f := range fs {
		spec := config.FaultSpec(f)
		log.Warn("fault in force: traffic is disturbed on purpose", "target", f.Target.String(), "direction", f.Dir.String(),
			"blackhole", f.Blackhole, "loss", f.Loss, "every", f.Every, "syn", f.SYN.String(), "drop_fin", f.DropFIN,
			"latency", f.Latency, "jitter", f.Jitter, "rate", spec.Rate, "duplicate", f.Duplicate, "reorder", f.Reorder,
			"reset_bytes", f.ResetBytes, "reset_after", f.ResetAfter)
	}
	if len(fs) == 0 && had > 0 {
		log.Info("faults cleared", "were", had)
	}
}
