package main

import (
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"

	"github.com/tapvs/tapvs/control/api"
)

// --fault: the faults in force (nat/fault.go), shown, set (--with) or
// cleared (--off) at run time through the control API, until the next
// reload. What a fault does is written in the configuration file's
// faults: names, key=value separated by commas, and tapvs validates it as
// the file's reader does. The target is a service (-t, -u, -f), a real
// server (-r host:port, in every service that has it) or clients
// (--client prefix).

// faultNames are the keys --with takes: the file's, less the target's.
var faultNames = []string{"direction", "blackhole", "loss", "every", "syn", "drop_fin",
	"latency", "jitter", "rate", "duplicate", "reorder", "reset_bytes", "reset_after"}

// faultKinds say what a key --with could not read takes (the strings are
// tapvs's to refuse, naming the field).
var faultKinds = map[string]string{"blackhole": "true or false", "drop_fin": "true or false", "loss": "a number", "every": "a number",
	"duplicate": "a number", "reorder": "a number", "reset_bytes": "a whole number (0 or more)"}

// faultOption reads --with's key=value,...
func faultOption(c *command, u use) error {
	raw := map[string]any{}
	for _, kv := range strings.Split(u.v, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return usagef("--with: %q is not key=value (blackhole=true, loss=0.05, every=10, syn=refuse, direction=to_client)", kv)
		}
		if !slices.Contains(faultNames, k) {
			return usagef("--with: unknown %s (the file's faults: names: %s)", k, strings.Join(faultNames, ", "))
		}
		if _, dup := raw[k]; dup {
			return usagef("--with: %s given twice", k)
		}
		raw[k] = strings.TrimSpace(v)
	}
	var f api.Fault
	for k, v := range raw {
		if err := mapstructure.WeakDecode(map[string]any{k: v}, &f); err != nil {
			return usagef("--with: %s: %q is not %s", k, v, faultKinds[k])
		}
	}
	c.fault = &f
	return nil
}

// checkFault enforces what --fault takes: at most one target, and --with
// or --off or neither (a listing).
func (c *command) checkFault() error {
	if c.op != "fault" {
		if c.fault != nil || c.faultClient != "" {
			return usagef("Illegal option for %s: --with and --client belong to --fault", c.op)
		}
		return nil
	}
	targets := 0
	for _, set := range []bool{c.service != "", c.real != "", c.faultClient != ""} {
		if set {
			targets++
		}
	}
	switch {
	case targets > 1:
		return usagef("--fault names one target: a service (-t|-u|-f), a real server (-r) or clients (--client)")
	case c.fault != nil && c.checkOff:
		return usagef("--fault takes --with or --off, not both")
	case c.fault != nil && targets == 0:
		return usagef("--fault --with needs a target: a service (-t|-u|-f), a real server (-r) or clients (--client)")
	}
	if c.ruleOptions() || c.listOptions() || c.count != 0 || c.healthCheck != nil {
		return usagef("Illegal option for fault: it takes -t|-u|-f, -r, --client, --with, --off and -n only")
	}
	return nil
}

// faultTarget is the target c names, as the API writes it.
func (c *command) faultTarget() api.Fault {
	var t api.Fault
	switch {
	case c.proto == fwm:
		t.Service = "fwm " + c.service
	case c.service != "":
		t.Service = c.proto + " " + c.service
	case c.real != "":
		t.Server = c.real
	default:
		t.Client = c.faultClient
	}
	return t
}

// fault runs --fault: set, clear one or all, or show.
func fault(cl *api.Client, c *command, out io.Writer) error {
	t := c.faultTarget()
	switch {
	case c.fault != nil:
		f := *c.fault
		f.Service, f.Server, f.Client = t.Service, t.Server, t.Client
		return cl.AddFault(f)
	case c.checkOff && t == (api.Fault{}):
		return cl.SetFaults(nil)
	case c.checkOff:
		return cl.RemoveFault(t)
	}
	fs, err := cl.Faults()
	if err != nil {
		return err
	}
	for _, f := range fs {
		if t == (api.Fault{}) || f.Service == t.Service && f.Server == t.Server && f.Client == t.Client {
			printFault(out, f)
		}
	}
	return nil
}

// faultArgs are f's target and action as --fault takes them.
func faultArgs(f api.Fault) string {
	var target string
	switch {
	case strings.HasPrefix(f.Service, "fwm "):
		target = "-f " + strings.TrimPrefix(f.Service, "fwm ")
	case f.Service != "":
		proto, addr, _ := strings.Cut(f.Service, " ")
		target = map[string]string{"tcp": "-t ", "udp": "-u "}[proto] + addr
	case f.Server != "":
		target = "-r " + f.Server
	default:
		target = "--client " + f.Client
	}
	return target + " --with " + faultText(f)
}

// faultText is what f does as --with takes it, in the file's order.
func faultText(f api.Fault) string {
	var kvs []string
	v := reflect.ValueOf(f)
	t := v.Type()
	for i := range t.NumField() {
		name := t.Field(i).Tag.Get("mapstructure")
		if !slices.Contains(faultNames, name) || v.Field(i).IsZero() {
			continue
		}
		var s string
		switch fv := v.Field(i); fv.Kind() {
		case reflect.Float64:
			s = strconv.FormatFloat(fv.Float(), 'g', -1, 64)
		case reflect.Int:
			s = strconv.FormatInt(fv.Int(), 10)
		case reflect.Uint64:
			s = strconv.FormatUint(fv.Uint(), 10)
		case reflect.Bool:
			s = strconv.FormatBool(fv.Bool())
		default:
			s = fv.String()
		}
		kvs = append(kvs, name+"="+s)
	}
	return strings.Join(kvs, ",")
}

// printFault writes one fault in force: how to set it again, where it
// comes from, and what it did. A fault of the delay family (latency,
// jitter, rate, duplicate, reorder) says its delayed frames, one of the
// reset family (reset_bytes, reset_after) the connections it reset, before
// the counters every fault has; the line ends with those, as it did
// before the families were (scripts read its end).
//
//	--fault -t 172.25.254.100:80 --with direction=to_client,loss=0.05  runtime  seen 200 dropped 9 refused 0
//	--fault -r 10.20.1.2:80 --with direction=both,latency=80ms,reset_after=30s  runtime  delayed 40 reset 2  seen 40 dropped 0 refused 0
func printFault(w io.Writer, f api.FaultView) {
	var more string
	if x := f.Fault; x.Latency != "" || x.Jitter != "" || x.Rate != "" || x.Duplicate != 0 || x.Reorder != 0 {
		more += fmt.Sprintf("delayed %d ", f.Delayed)
	}
	if x := f.Fault; x.ResetBytes != 0 || x.ResetAfter != "" {
		more += fmt.Sprintf("reset %d ", f.Reset)
	}
	if more != "" {
		more += " "
	}
	fmt.Fprintf(w, "--fault %s  %s  %sseen %d dropped %d refused %d\n", faultArgs(f.Fault), f.Source, more, f.Frames, f.Dropped, f.Refused)
}

// printFaults follows a listing (-L) when faults are in force, so that
// nobody forgets one is on.
func printFaults(w io.Writer, fs []api.FaultView) {
	if len(fs) == 0 {
		return
	}
	fmt.Fprintf(w, "Faults in force (%d; tapvsadm --fault --off clears them):\n", len(fs))
	for _, f := range fs {
		printFault(w, f)
	}
}

// saveFaults writes -S's runtime faults, after the rules (the file's are
// the file's to restore).
func saveFaults(cl *api.Client, out io.Writer) error {
	fs, err := cl.Faults()
	if err != nil {
		return err
	}
	for _, f := range fs {
		if f.Source == "runtime" {
			fmt.Fprintf(out, "--fault %s\n", faultArgs(f.Fault))
		}
	}
	return nil
}
