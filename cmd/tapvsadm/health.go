package main

import (
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/google/shlex"

	"github.com/tapvs/tapvs/control/api"
)

// --health: a service's health check, shown, set (--check) or cleared
// (--off) at run time through the control API. The check is written in
// the configuration file's health_check: names, key=value separated by
// commas, so that nothing here repeats its fields or its validation:
// tapvs refuses a bad value as the file's reader does, naming the field.

// checkOption reads --check's key=value,... into the API's HealthCheck:
// only the names it has, each value of its field's type (script= is a
// command line, split as a shell would, run without one).
func checkOption(c *command, u use) error {
	raw := map[string]any{}
	for _, kv := range strings.Split(u.v, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return usagef("--check: %q is not key=value (type=http,http_path=/healthz,rise=2,fall=3)", kv)
		}
		if _, dup := raw[k]; dup {
			return usagef("--check: %s given twice", k)
		}
		if k == "script" {
			argv, err := shlex.Split(v)
			if err != nil {
				return usagef("--check: script: %v", err)
			}
			raw[k] = argv
			continue
		}
		raw[k] = v
	}
	var hc api.HealthCheck
	var md mapstructure.Metadata
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{Result: &hc, Metadata: &md, WeaklyTypedInput: true})
	if err != nil {
		return err
	}
	if err := dec.Decode(raw); err != nil {
		return usagef("--check: %s", badValue(raw))
	}
	if len(md.Unused) > 0 {
		slices.Sort(md.Unused)
		return usagef("--check: unknown %s (the configuration file's health_check: names: %s)", strings.Join(md.Unused, ", "), strings.Join(checkNames(), ", "))
	}
	c.healthCheck = &hc
	return nil
}

// badValue names the first key of raw whose value its field cannot take.
func badValue(raw map[string]any) string {
	keys := slices.Sorted(maps.Keys(raw))
	t := reflect.TypeFor[api.HealthCheck]()
	for _, k := range keys {
		var hc api.HealthCheck
		if mapstructure.WeakDecode(map[string]any{k: raw[k]}, &hc) == nil {
			continue
		}
		for i := range t.NumField() {
			if t.Field(i).Tag.Get("mapstructure") == k {
				want := map[reflect.Kind]string{reflect.Int: "a number", reflect.Bool: "true or false"}[t.Field(i).Type.Kind()]
				return fmt.Sprintf("%s: %q is not %s", k, raw[k], want)
			}
		}
	}
	return "a value does not fit its field"
}

// checkNames are the keys --check takes, in the file's order.
func checkNames() []string {
	var out []string
	t := reflect.TypeFor[api.HealthCheck]()
	for i := range t.NumField() {
		out = append(out, t.Field(i).Tag.Get("mapstructure"))
	}
	return out
}

// checkText is hc as --check takes it: the fields set, in the file's
// order; quoted for a shell when it holds a space or a quote.
func checkText(hc api.HealthCheck) string {
	var kvs []string
	v := reflect.ValueOf(hc)
	for i, name := range checkNames() {
		f := v.Field(i)
		if f.IsZero() {
			continue
		}
		var s string
		switch f.Kind() {
		case reflect.Slice:
			var words []string
			for _, w := range f.Interface().([]string) {
				words = append(words, shellQuote(w))
			}
			s = strings.Join(words, " ")
		case reflect.Int:
			s = strconv.FormatInt(f.Int(), 10)
		case reflect.Bool:
			s = strconv.FormatBool(f.Bool())
		default:
			s = f.String()
		}
		kvs = append(kvs, name+"="+s)
	}
	return shellQuote(strings.Join(kvs, ","))
}

// shellQuote quotes s for shlex (and a shell) if it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`#;&|<>()*?[]{}~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// health runs --health: set, clear or show.
func health(cl *api.Client, c *command, out io.Writer) error {
	k := c.key()
	switch {
	case c.healthCheck != nil:
		return cl.SetHealthCheck(k, *c.healthCheck)
	case c.checkOff:
		return cl.ClearHealthCheck(k)
	}
	h, err := cl.HealthCheck(k)
	if err != nil {
		return err
	}
	printHealth(out, c, h)
	return nil
}

// printHealth writes a service's check: where it comes from, the check
// set at run time, then each server's state.
//
//	TCP  172.25.254.100:80 health runtime --check type=http,http_path=/healthz
//	  -> 10.20.1.2:80                 up
//	  -> 10.20.2.2:80                 down: connect: connection refused
func printHealth(w io.Writer, c *command, h api.Health) {
	line := fmt.Sprintf("%s  %s health %s", strings.ToUpper(c.proto), c.service, h.Source)
	switch {
	case h.Check != nil:
		line += " --check " + checkText(*h.Check)
	case h.Source == "runtime":
		line += " --off"
	}
	fmt.Fprintln(w, line)
	for _, s := range h.Servers {
		state := "up"
		if !s.Healthy {
			state = "down"
			if s.Reason != "" {
				state += ": " + s.Reason
			}
		}
		fmt.Fprintf(w, "  -> %-28s %s\n", s.Dest, state)
	}
}

// saveChecks writes -S's runtime checks, after the rules: a --health line
// for each service whose check was set or stopped at run time (the file's
// checks are the file's to restore).
func saveChecks(cl *api.Client, out io.Writer, svcs []api.Service, c *command) error {
	for _, s := range sortServices(svcs, &command{}) {
		h, err := cl.HealthCheck(s.ServiceKey)
		if err != nil {
			return err
		}
		switch {
		case h.Source != "runtime":
		case h.Check != nil:
			fmt.Fprintf(out, "--health %s --check %s\n", ruleService(s, c.numeric), checkText(*h.Check))
		default:
			fmt.Fprintf(out, "--health %s --off\n", ruleService(s, c.numeric))
		}
	}
	return nil
}

// A restoredCheck is a --health or --fault line of -R's input.
type restoredCheck struct {
	c    *command
	line int
	text string
}

// restoreChecks applies -R's --health and --fault lines, after its rules were
// applied (not in their transaction: a refused one leaves the rules, and
// the checks before it, in place, and says so).
func restoreChecks(cl *api.Client, checks []restoredCheck, stderr io.Writer) int {
	for _, rc := range checks {
		run := health
		if rc.c.op == "fault" {
			run = fault
		}
		if err := run(cl, rc.c, io.Discard); err != nil {
			fmt.Fprintf(stderr, "line %d: %s: %s (the rules and the lines before it were restored)\n", rc.line, rc.text, message(err, rc.c.op))
			return 1
		}
	}
	return 0
}
