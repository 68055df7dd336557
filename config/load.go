package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/fsnotify/fsnotify"
	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// The file's way in: viper reads YAML (and TAPVS_ environment overrides)
// into raw, which mirrors the file with wide numbers and strings; read
// turns it into a Config, refusing only what the text cannot give (a
// string that is no address, a number too wide for its field); then the
// Config is checked as every configuration is (check, Validate), and the
// services, which only a file brings, on their own terms (services.go).

// raw mirrors the file. Numbers are wide ints so that "70000 is not a port" can
// be said instead of a silent overflow.
type raw struct {
	Interfaces struct {
		Client   rawIface `mapstructure:"client"`
		Server   rawIface `mapstructure:"server"`
		Offload  bool     `mapstructure:"offload"`
		BusyPoll string   `mapstructure:"busy_poll"`
		IO       string   `mapstructure:"io"`
		Pollers  int      `mapstructure:"pollers"`
		Groups   [][]int  `mapstructure:"poll_groups"`
	} `mapstructure:"interfaces"`
	Services []rawService `mapstructure:"services"`
	Marks    []rawMark    `mapstructure:"marks"`
	Faults   []api.Fault  `mapstructure:"faults"`
	Limits   rawLimits    `mapstructure:"limits"`
	Timeouts rawTimeouts  `mapstructure:"timeouts"`
	Synproxy rawSynproxy  `mapstructure:"synproxy"`
	Sweep    string       `mapstructure:"sweep_interval"`
	Frags    rawFragments `mapstructure:"fragments"`
	Control  struct {
		Socket string `mapstructure:"socket"`
	} `mapstructure:"control"`
	Metrics struct {
		Listen string `mapstructure:"listen"`
	} `mapstructure:"metrics"`
	Log struct {
		Level  string `mapstructure:"level"`
		Format string `mapstructure:"format"`
	} `mapstructure:"log"`
	BGP     *rawBGP     `mapstructure:"bgp"`
	Handoff *rawHandoff `mapstructure:"handoff"`
	Sync    *rawSync    `mapstructure:"sync"`
}

// Load reads the file at path (YAML), applies TAPVS_ environment overrides
// (TAPVS_LIMITS_MAX_CONNECTIONS=..., TAPVS_LOG_LEVEL=debug) and validates.
func Load(path string) (*Config, error) {
	v := viper.New()
	setDefaults(v)
	v.SetConfigFile(path)
	v.SetEnvPrefix("TAPVS")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, oneLine(err))
	}
	return decode(v, path, false)
}

// Watch calls changed (from viper's watcher goroutine) whenever the file at
// path is written or replaced, as editors and config managers do.
func Watch(path string, changed func()) {
	v := viper.New()
	v.SetConfigFile(path)
	v.OnConfigChange(func(fsnotify.Event) { changed() })
	v.WatchConfig()
}

// Parse reads YAML from text, for tests and tools.
func Parse(text string) (*Config, error) { return parseText(text, false) }

// ParseNoServices is Parse for a configuration whose services come later,
// through the control plane (pkg/tapvs): an empty services list is not
// refused. A file for `tapvs run` must name its services: an empty one
// there is more likely a mistake than an intent.
func ParseNoServices(text string) (*Config, error) { return parseText(text, true) }

func parseText(text string, noServices bool) (*Config, error) {
	return dryRunOf(parseFields(text, noServices))
}

// parseFields is parseText without the balancer's rules between values
// (dryRun): each field read and checked on its own terms.
func parseFields(text string, noServices bool) (*Config, error) {
	v := viper.New()
	setDefaults(v)
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(text)); err != nil {
		return nil, fmt.Errorf("config: %w", oneLine(err))
	}
	return decodeFields(v, "config", noServices)
}

// oneLine is err on one line: a YAML parser's message can take several.
func oneLine(err error) error {
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}

// setDefaults gives viper Default's values: a key the file leaves out
// reads as Default has it, and a key the file gives is checked as given
// (mtu: 0 is refused, not taken for "the default").
func setDefaults(v *viper.Viper) {
	d := Default()
	for _, s := range []struct {
		key string
		i   Interface
	}{{"client", d.Client}, {"server", d.Server}} {
		v.SetDefault("interfaces."+s.key+".name", s.i.Name)
		v.SetDefault("interfaces."+s.key+".mtu", s.i.MTU)
		v.SetDefault("interfaces."+s.key+".queues", s.i.Queues)
	}
	v.SetDefault("interfaces.offload", d.Offload)
	v.SetDefault("interfaces.busy_poll", d.BusyPoll.String())
	v.SetDefault("interfaces.io", d.IO)
	v.SetDefault("interfaces.pollers", d.Pollers)
	v.SetDefault("limits.max_connections", d.MaxConns)
	v.SetDefault("limits.local_port_min", int(d.PortMin))
	v.SetDefault("limits.local_port_max", int(d.PortMax))
	v.SetDefault("limits.port_quarantine", d.PortQuarantine.String())
	v.SetDefault("sweep_interval", d.Sweep.String())
	v.SetDefault("fragments.reassembly", d.Fragments.Reassembly)
	v.SetDefault("fragments.high_thresh", d.Fragments.HighThresh)
	v.SetDefault("fragments.source_thresh", d.Fragments.SourceThresh)
	v.SetDefault("fragments.time", d.Fragments.Time.String())
	sp := d.Synproxy
	v.SetDefault("synproxy.mss", int(sp.MSS)) // 0: the server side's MTU - 40
	v.SetDefault("synproxy.wscale", int(sp.WScale))
	v.SetDefault("synproxy.sack", sp.SACK)
	v.SetDefault("synproxy.timestamps", sp.Timestamps)
	v.SetDefault("synproxy.max_queued", sp.MaxQueued)
	v.SetDefault("synproxy.syn_retries", sp.SYNRetries)
	v.SetDefault("synproxy.retry_interval", sp.RetryInterval.String())
	v.SetDefault("synproxy.ack_storm", int(sp.AckStorm))
	v.SetDefault("control.socket", d.ControlSocket)
	v.SetDefault("metrics.listen", d.MetricsListen)
	v.SetDefault("log.level", d.LogLevel)
	v.SetDefault("log.format", d.LogFormat)
}

func decode(v *viper.Viper, name string, noServices bool) (*Config, error) {
	return dryRunOf(decodeFields(v, name, noServices))
}

// dryRunOf is c once the balancer's rules between values (dryRun) pass,
// or the first refusal: decodeFields' or parseFields', or the dry run's.
func dryRunOf(c *Config, err error) (*Config, error) {
	if err == nil {
		err = dryRun(c)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

func decodeFields(v *viper.Viper, name string, noServices bool) (*Config, error) {
	var r raw
	err := v.Unmarshal(&r, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		// Not viper's weak typing, which makes 1.5 an int 1 and 1e30 an int
		// min: numbers are read exactly or refused (strict).
		dc.WeaklyTypedInput = false
		dc.DecodeHook = strict
	})
	if err != nil {
		return nil, decodeErrors(name, err)
	}
	return validate(&r, noServices)
}

// maxExact is the largest integer a YAML float holds exactly (2^53).
const maxExact = 1 << 53

// strict converts what a file or the environment gives to a field's type
// when that loses nothing: a whole float to an int, a number to the string
// of a duration field ("busy_poll: 0"), and the environment's strings to
// ints and bools. Anything else is refused with the value and the reason.
func strict(from, to reflect.Type, data any) (any, error) {
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		switch v := data.(type) {
		case float64:
			if v != math.Trunc(v) || math.Abs(v) > maxExact {
				return nil, fmt.Errorf("%v is not a whole number", v)
			}
			return int64(v), nil
		case string: // from the environment
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not a whole number", v)
			}
			return n, nil
		case bool:
			return nil, fmt.Errorf("%v is not a number", v)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		switch v := data.(type) {
		case float64:
			if v != math.Trunc(v) || v < 0 || v > maxExact {
				return nil, fmt.Errorf("%v is not a whole number (0 or more)", v)
			}
			return uint64(v), nil
		case int:
			if v < 0 {
				return nil, fmt.Errorf("%d is not a whole number (0 or more)", v)
			}
		case string: // from the environment
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not a whole number (0 or more)", v)
			}
			return n, nil
		case bool:
			return nil, fmt.Errorf("%v is not a number", v)
		}
	case reflect.Bool:
		if v, ok := data.(string); ok { // from the environment
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return nil, fmt.Errorf("%q is not true or false", v)
			}
			return b, nil
		}
	case reflect.String:
		switch v := data.(type) {
		case int, int64, uint64:
			return fmt.Sprint(v), nil
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64), nil
		}
	}
	return data, nil
}

// decodeErrors turns the decoder's errors into one line per field.
func decodeErrors(name string, err error) error {
	var lines []error
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var de *mapstructure.DecodeError
		if errors.As(err, &de) {
			field := de.Name()
			if field == "" {
				field = name
			}
			inner := de.Unwrap()
			var pe *mapstructure.ParseError
			var ue *mapstructure.UnconvertibleTypeError
			switch {
			case errors.As(inner, &ue):
				inner = fmt.Errorf("%v is not a %s", ue.Value, kindName(ue.Expected.Type()))
			case errors.As(inner, &pe):
				inner = fmt.Errorf("%v is not a %s", pe.Value, kindName(pe.Expected.Type()))
			}
			lines = append(lines, fmt.Errorf("%s: %s", escape(field), escape(inner.Error())))
			return
		}
		lines = append(lines, fmt.Errorf("%s: %s", name, escape(err.Error())))
	}
	walk(err)
	return errors.Join(lines...)
}

func kindName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "whole number (0 or more)"
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.String:
		return "string"
	case reflect.Slice:
		return "list"
	case reflect.Map, reflect.Struct:
		return "mapping"
	}
	return t.String()
}

// errs collects every problem so the operator sees them all at once: the
// first for each field. A value read refused is not refused again by the
// check for what it then lacks.
type errs struct {
	list   []error
	fields map[string]bool // the fields refused
}

func (e *errs) add(field, format string, a ...any) {
	if e.fields[field] {
		return
	}
	if e.fields == nil {
		e.fields = map[string]bool{}
	}
	e.fields[field] = true
	e.list = append(e.list, fmt.Errorf("%s: %s", escape(field), escape(fmt.Sprintf(format, a...))))
}

// refused reports whether field has been refused.
func (e *errs) refused(field string) bool { return e.fields[field] }

// err is every refusal, one a line; nil if none.
func (e *errs) err() error { return errors.Join(e.list...) }

// escape keeps a refusal on one line when it quotes the file: a key or a
// value can hold a line break.
func escape(s string) string { return lineBreaks.Replace(s) }

var lineBreaks = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// validate reads the file's values onto Default's, checks them as any
// configuration is checked, and reads the services. noServices lets the
// list be empty (ParseNoServices).
func validate(r *raw, noServices bool) (*Config, error) {
	var e errs
	c := Default()
	c.Client = readIface(&e, "interfaces.client", r.Interfaces.Client)
	c.Server = readIface(&e, "interfaces.server", r.Interfaces.Server)
	c.Offload = r.Interfaces.Offload
	c.BusyPoll = duration(&e, "interfaces.busy_poll", r.Interfaces.BusyPoll, busyPollRange)
	c.IO = r.Interfaces.IO
	c.Pollers = r.Interfaces.Pollers
	c.PollGroups = r.Interfaces.Groups
	c.readGlobals(&e, r)
	c.Synproxy = readSynproxy(&e, r.Synproxy)
	c.Timeouts = timeouts(&e, "timeouts", r.Timeouts, nat.DefaultTimeouts())
	c.BGP = readBGP(&e, r.BGP)
	c.Handoff = readHandoff(&e, r.Handoff)
	c.Sync = readSync(&e, r.Sync)
	if len(r.Services) == 0 && !noServices {
		e.add("services", "no service is configured")
	}
	c.Marks = readMarks(&e, r, sides6{client: r.Interfaces.Client.Address6 != "", server: r.Interfaces.Server.Address6 != ""})
	c.Services = readServices(&e, r, c.Timeouts, c.Marks)
	c.Faults = readFaults(&e, r, c.Services)
	c.check(&e)
	if err := e.err(); err != nil {
		return nil, err
	}
	return c, nil
}
