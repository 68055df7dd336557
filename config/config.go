// Package config reads tapvs's configuration (YAML through viper, with TAPVS_
// environment overrides) and validates all of it before anything starts:
// an error names the field and the reason.
package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tapvs/tapvs/bgp"
	"github.com/tapvs/tapvs/handoff"
	"github.com/tapvs/tapvs/health"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// MaxConnections bounds limits.max_connections.
const MaxConnections = 1 << 30

// raw mirrors the file. Numbers are wide ints so that "70000 is not a port" can
// be said instead of a silent overflow.
type raw struct {
	Interfaces struct {
		Client   rawIface `mapstructure:"client"`
		Server   rawIface `mapstructure:"server"`
		Offload  bool     `mapstructure:"offload"`
		BusyPoll string   `mapstructure:"busy_poll"`
	} `mapstructure:"interfaces"`
	Services []rawService `mapstructure:"services"`
	Limits   struct {
		MaxConnections int    `mapstructure:"max_connections"`
		LocalPortMin   int    `mapstructure:"local_port_min"`
		LocalPortMax   int    `mapstructure:"local_port_max"`
		PortQuarantine string `mapstructure:"port_quarantine"`
	} `mapstructure:"limits"`
	Timeouts rawTimeouts `mapstructure:"timeouts"`
	Synproxy rawSynproxy `mapstructure:"synproxy"`
	Sweep    string      `mapstructure:"sweep_interval"`
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
}

type rawIface struct {
	Name     string     `mapstructure:"name"`
	MTU      int        `mapstructure:"mtu"`
	Queues   int        `mapstructure:"queues"`
	TxQLen   int        `mapstructure:"txqueuelen"`
	MAC      string     `mapstructure:"mac"`
	Address  string     `mapstructure:"address"`
	Address6 string     `mapstructure:"address6"`
	Netns    string     `mapstructure:"netns"`
	Routes   []rawRoute `mapstructure:"routes"`
	// The kernel's end of the TAP, for tapvs in a container: see Interface.
	PeerAddress string       `mapstructure:"peer_address"`
	Masquerade  bool         `mapstructure:"masquerade"`
	Publish     []rawPublish `mapstructure:"publish"`
}

type rawPublish struct {
	Protocol string `mapstructure:"protocol"`
	Port     int    `mapstructure:"port"`
	VIP      string `mapstructure:"vip"`
}

type rawRoute struct {
	Dst string `mapstructure:"dst"`
	Via string `mapstructure:"via"`
}

type rawTimeouts struct {
	TCP map[string]string `mapstructure:"tcp"`
	UDP string            `mapstructure:"udp"`
}

type rawSynproxy struct {
	MSS           int    `mapstructure:"mss"`
	WScale        int    `mapstructure:"wscale"`
	SACK          bool   `mapstructure:"sack"`
	Timestamps    bool   `mapstructure:"timestamps"`
	MaxQueued     int    `mapstructure:"max_queued"`
	SYNRetries    int    `mapstructure:"syn_retries"`
	RetryInterval string `mapstructure:"retry_interval"`
	AckStorm      int    `mapstructure:"ack_storm"`
}

type rawHealth struct {
	Type       string `mapstructure:"type"`
	Port       int    `mapstructure:"port"`
	Interval   string `mapstructure:"interval"`
	Timeout    string `mapstructure:"timeout"`
	Rise       int    `mapstructure:"rise"`
	Fall       int    `mapstructure:"fall"`
	Path       string `mapstructure:"http_path"`
	Status     int    `mapstructure:"http_status"`
	BodySHA256 string `mapstructure:"http_body_sha256"`
	OnFailure  string `mapstructure:"on_failure"`
}

type rawService struct {
	Name           string       `mapstructure:"name"`
	VIP            string       `mapstructure:"vip"`
	Port           int          `mapstructure:"port"`
	Protocol       string       `mapstructure:"protocol"`
	Scheduler      string       `mapstructure:"scheduler"`
	LocalAddresses []string     `mapstructure:"local_addresses"`
	RealServers    []rawRS      `mapstructure:"real_servers"`
	Timeouts       rawTimeouts  `mapstructure:"timeouts"`
	Synproxy       bool         `mapstructure:"synproxy"`
	ClientAddress  string       `mapstructure:"client_address"`
	TCPTimestamps  string       `mapstructure:"tcp_timestamps"`
	Health         *rawHealth   `mapstructure:"health_check"`
	Allow          []string     `mapstructure:"allow"`
	Deny           []string     `mapstructure:"deny"`
	Limits         rawSvcLimits `mapstructure:"limits"`
}

type rawRS struct {
	Address string     `mapstructure:"address"`
	Port    int        `mapstructure:"port"`
	Weight  *int       `mapstructure:"weight"`
	Health  *rawHealth `mapstructure:"health_check"` // replaces the service's check for this server
}

// Config is a validated configuration.
type Config struct {
	Client, Server Interface
	// Offload opens both TAPs with a virtio-net header and checksum/TSO
	// offload (64 KiB super-frames); tapvs falls back to plain TAPs if the
	// kernel refuses.
	Offload bool
	// BusyPoll, if set, has one thread poll every queue and sleep only
	// after this long without a frame (0: a reader per queue that sleeps
	// whenever its queue is empty).
	BusyPoll time.Duration
	Services []Service
	MaxConns int
	// PortQuarantine keeps closed TCP connections' reply tuples from reuse
	// (the real server's TIME_WAIT); 0 turns it off.
	PortQuarantine time.Duration
	PortMin        uint16
	PortMax        uint16
	Timeouts       nat.Timeouts
	Synproxy       nat.SynproxyConfig
	Sweep          time.Duration
	LogLevel       string
	LogFormat      string
	ControlSocket  string // "" disables the control API
	MetricsListen  string // "" disables the Prometheus endpoint
	// BGP, if set, announces the VIPs that can serve and the LIPs to the
	// routers it names (package bgp); nil announces nothing.
	BGP *bgp.Config
	// Handoff, if set, hands client segments that no connection here
	// holds to the cluster's other instances, and continues those they
	// hand here (package handoff); nil drops them.
	Handoff *handoff.Config
}

// Interface is one TAP side.
type Interface struct {
	Name   string
	MTU    int
	Queues int
	// TxQLen is the TAP's transmit queue in frames per queue, where frames
	// wait for tapvs to read them (`ip link set ... txqueuelen`); 0 leaves
	// the kernel's (1000).
	TxQLen  int
	MAC     net.HardwareAddr // tapvs's own MAC on this side; random if empty
	Address netip.Prefix
	// Address6 is tapvs's own IPv6 address on this side with its prefix
	// (optional): IPv6 VIPs (client side) and LIPs (server side) need it,
	// and neighbour discovery answers for them on its link.
	Address6 netip.Prefix
	Netns    string
	Routes   []Route
	// PeerAddress, if set, is the address tapvs gives the kernel's end of
	// the TAP, in Address's subnet: where only tapvs holds CAP_NET_ADMIN (a
	// sidecar in a pod), nothing else can.
	PeerAddress netip.Prefix
	// Masquerade has the kernel masquerade packets from Address's subnet
	// that leave its namespace by another interface (nftables): a sidecar's
	// LIPs reaching real servers outside the pod, which have no route back
	// to them. Needs PeerAddress and the namespace's net.ipv4.ip_forward.
	Masquerade bool
	// Publish has the kernel send new connections to its own addresses on
	// these ports to their VIPs (DNAT): clients outside a pod reach a
	// sidecar's services at the pod's address. Client side only; needs
	// PeerAddress, a route toward the clients and net.ipv4.ip_forward.
	Publish []Published
}

// Published is a port of the namespace's own addresses sent to a VIP.
type Published struct {
	Protocol uint8 // syscall.IPPROTO_TCP or IPPROTO_UDP
	Port     uint16
	VIP      netip.Addr
}

// Route is a route out of one side.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// Service is one virtual service.
type Service struct {
	Name           string
	VIP            netip.Addr
	Port           uint16
	Protocol       nat.Protocol
	Scheduler      string
	LocalAddresses []netip.Addr
	RealServers    []RealServer
	Timeouts       nat.Timeouts
	Synproxy       bool
	// ClientAddress is how the real servers learn the client's address:
	// none, toa, proxy-v1 or proxy-v2.
	ClientAddress nat.ClientAddr
	// TCPTimestamps is what plain TCP connections do with the client's
	// timestamps: translate (the default) or remove.
	TCPTimestamps nat.Timestamps
	// Allow and Deny are the service's source prefixes (defence.go).
	Allow, Deny []netip.Prefix
	Limits      nat.Limits
}

// RealServer is one real server of a service.
type RealServer struct {
	Address netip.Addr
	Port    uint16
	Weight  int
	Health  *health.Spec // nil: not checked
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
	c, err := parseFields(text, noServices)
	if err != nil {
		return nil, err
	}
	if err := dryRun(c); err != nil {
		return nil, err
	}
	return c, nil
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

func setDefaults(v *viper.Viper) {
	v.SetDefault("interfaces.client.name", "tap-c")
	v.SetDefault("interfaces.server.name", "tap-s")
	v.SetDefault("interfaces.client.mtu", 1500)
	v.SetDefault("interfaces.server.mtu", 1500)
	v.SetDefault("interfaces.client.queues", 1)
	v.SetDefault("interfaces.offload", true)
	v.SetDefault("interfaces.busy_poll", "0s")
	v.SetDefault("interfaces.server.queues", 1)
	v.SetDefault("limits.max_connections", 1<<20)
	v.SetDefault("limits.local_port_min", 5000)
	v.SetDefault("limits.local_port_max", 65535)
	v.SetDefault("limits.port_quarantine", "0s")
	v.SetDefault("sweep_interval", "1s")
	sp := nat.DefaultSynproxy()
	v.SetDefault("synproxy.mss", 0) // 0: the server side's MTU - 40
	v.SetDefault("synproxy.wscale", sp.WScale)
	v.SetDefault("synproxy.sack", sp.SACK)
	v.SetDefault("synproxy.timestamps", sp.Timestamps)
	v.SetDefault("synproxy.max_queued", sp.MaxQueued)
	v.SetDefault("synproxy.syn_retries", sp.SYNRetries)
	v.SetDefault("synproxy.retry_interval", sp.RetryInterval.String())
	v.SetDefault("synproxy.ack_storm", sp.AckStorm)
	v.SetDefault("control.socket", "/run/tapvs/tapvs.sock")
	v.SetDefault("metrics.listen", "")
	v.SetDefault("log.level", "info")
	v.SetDefault("log.format", "text")
}

func decode(v *viper.Viper, name string, noServices bool) (*Config, error) {
	c, err := decodeFields(v, name, noServices)
	if err != nil {
		return nil, err
	}
	if err := dryRun(c); err != nil {
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

// errs collects every problem so the operator sees them all at once.
type errs []error

func (e *errs) add(field, format string, a ...any) {
	*e = append(*e, fmt.Errorf("%s: %s", escape(field), escape(fmt.Sprintf(format, a...))))
}

// escape keeps a refusal on one line when it quotes the file: a key or a
// value can hold a line break.
func escape(s string) string { return lineBreaks.Replace(s) }

var lineBreaks = strings.NewReplacer("\n", `\n`, "\r", `\r`)

func validate(r *raw, noServices bool) (*Config, error) {
	var e errs
	c := &Config{LogLevel: r.Log.Level, LogFormat: r.Log.Format, MaxConns: r.Limits.MaxConnections,
		ControlSocket: r.Control.Socket, MetricsListen: r.Metrics.Listen, Offload: r.Interfaces.Offload}
	if c.ControlSocket != "" && !strings.HasPrefix(c.ControlSocket, "/") {
		e.add("control.socket", "%q is not an absolute path", c.ControlSocket)
	}
	if c.MetricsListen != "" {
		if _, err := netip.ParseAddrPort(c.MetricsListen); err != nil {
			e.add("metrics.listen", "%q is not ip:port", c.MetricsListen)
		}
	}
	c.Client = iface(&e, "interfaces.client", r.Interfaces.Client)
	c.Server = iface(&e, "interfaces.server", r.Interfaces.Server)
	if len(c.Server.Publish) > 0 {
		e.add("interfaces.server.publish", "is the client side's: clients reach the VIPs there")
	}
	if c.Client.Name == c.Server.Name && c.Client.Name != "" {
		e.add("interfaces.server.name", "%q is the client side's name too", c.Server.Name)
	}
	if r.Limits.MaxConnections < 1 || r.Limits.MaxConnections > MaxConnections {
		e.add("limits.max_connections", "%d is out of range 1-%d", r.Limits.MaxConnections, MaxConnections)
	}
	pmin, okMin := port(&e, "limits.local_port_min", r.Limits.LocalPortMin)
	pmax, okMax := port(&e, "limits.local_port_max", r.Limits.LocalPortMax)
	if okMin && okMax && pmin > pmax {
		e.add("limits.local_port_min", "%d is above local_port_max %d", pmin, pmax)
	}
	c.PortMin, c.PortMax = pmin, pmax
	if d, err := time.ParseDuration(r.Limits.PortQuarantine); err != nil || d < 0 || d > time.Hour {
		e.add("limits.port_quarantine", "%q is not a duration from 0 (off) to 1h", r.Limits.PortQuarantine)
	} else {
		c.PortQuarantine = d
	}
	if d, err := time.ParseDuration(r.Interfaces.BusyPoll); err != nil || d < 0 || d > time.Second {
		e.add("interfaces.busy_poll", "%q is not a duration from 0 to 1s", r.Interfaces.BusyPoll)
	} else {
		c.BusyPoll = d
	}
	c.Timeouts = timeouts(&e, "timeouts", r.Timeouts, nat.DefaultTimeouts())
	if d, err := time.ParseDuration(r.Sweep); err != nil || d < 10*time.Millisecond || d > time.Minute {
		e.add("sweep_interval", "%q is not a duration from 10ms to 1m", r.Sweep)
	} else {
		c.Sweep = d
	}
	switch r.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		e.add("log.level", "%q is not one of debug, info, warn, error", r.Log.Level)
	}
	switch r.Log.Format {
	case "text", "json":
	default:
		e.add("log.format", "%q is not one of text, json", r.Log.Format)
	}
	c.Synproxy = synproxyConfig(&e, r.Synproxy, c.Server.MTU)
	c.BGP = bgpConfig(&e, r.BGP)
	c.Handoff = handoffConfig(&e, r.Handoff)
	if c.Handoff != nil && c.Client.Queues+c.Server.Queues >= nat.MaxQueues {
		e.add("handoff", "its receiver is a reader of its own: the two sides' queues (%d) must leave one of %d", c.Client.Queues+c.Server.Queues, nat.MaxQueues)
	}
	if len(r.Services) == 0 && !noServices {
		e.add("services", "no service is configured")
	}
	seen := map[string]string{}
	has6 := sides6{client: r.Interfaces.Client.Address6 != "", server: r.Interfaces.Server.Address6 != ""}
	for i, rs := range r.Services {
		f := fmt.Sprintf("services[%d]", i)
		s := service(&e, f, rs, c.Timeouts, has6)
		key := fmt.Sprintf("%s %s", s.Protocol, netip.AddrPortFrom(s.VIP, s.Port))
		if prev, dup := seen[key]; dup && s.VIP.IsValid() {
			e.add(f, "%s is already defined by %s", key, prev)
		}
		seen[key] = f
		c.Services = append(c.Services, s)
	}
	if c.HasHealthChecks() && okMin && okMax {
		if lo, _ := c.OwnPorts(); lo == 0 {
			e.add("limits.local_port_min", "health checks need ports for tapvs's own connections outside %d-%d: start the range at 2048 or later, or end it before 64512", pmin, pmax)
		}
	}
	if len(e) > 0 {
		return nil, errors.Join(e...)
	}
	return c, nil
}

// dryRun applies the rules between values (no address both a VIP and a
// LIP, none of them tapvs's own, no real server twice, a LIP in its side's
// prefix), which are the balancer's: the configuration is applied to an
// empty one, and every refusal named.
func dryRun(c *Config) error {
	nc := nat.Config{Timeouts: c.Timeouts, ClientNet: c.Client.Address, ServerNet: c.Server.Address, ClientNet6: c.Client.Address6, ServerNet6: c.Server.Address6}
	return nat.DryRun(nc, func(tx *nat.Tx) error { return c.Apply(tx, nil) })
}

// HasHealthChecks reports whether any real server is checked.
func (c *Config) HasHealthChecks() bool {
	for _, s := range c.Services {
		for _, rs := range s.RealServers {
			if rs.Health != nil {
				return true
			}
		}
	}
	return false
}

// OwnPorts is the port range for tapvs's own connections from LIPs (health
// checks): outside the balancer's local port range, so a check's replies are
// never taken for a balanced connection's. lo is 0 if there is no room.
func (c *Config) OwnPorts() (lo, hi uint16) {
	switch {
	case c.PortMin >= 2048:
		return 1024, c.PortMin - 1
	case c.PortMax <= 64511:
		return c.PortMax + 1, 65535
	}
	return 0, 0
}

// maxTxQLen bounds a TAP's transmit queue: each queued frame holds a buffer
// of up to 64 KiB (with offload) in the kernel.
const maxTxQLen = 100000

func iface(e *errs, f string, r rawIface) Interface {
	i := Interface{Name: r.Name, MTU: r.MTU, Queues: r.Queues, TxQLen: r.TxQLen, Netns: r.Netns}
	if err := tun.CheckIfName(r.Name); err != nil {
		e.add(f+".name", "%q is not an interface name: it %v", r.Name, err)
	}
	if r.Netns != "" {
		if err := tun.CheckNetnsName(r.Netns); err != nil {
			e.add(f+".netns", "%q is not a network namespace's name: it %v", r.Netns, err)
		}
	}
	if r.MTU < 576 || r.MTU > 65535 {
		e.add(f+".mtu", "%d is not an MTU (576-65535)", r.MTU)
	}
	if r.Queues < 1 || r.Queues > 64 {
		e.add(f+".queues", "%d is not a queue count (1-64)", r.Queues)
	}
	if r.TxQLen < 0 || r.TxQLen > maxTxQLen {
		e.add(f+".txqueuelen", "%d is not a queue length in frames (1-%d, or 0 for the kernel's)", r.TxQLen, maxTxQLen)
	}
	if r.MAC != "" {
		m, err := net.ParseMAC(r.MAC)
		if err != nil || len(m) != 6 || m[0]&1 == 1 {
			e.add(f+".mac", "%q is not a unicast Ethernet address", r.MAC)
		}
		i.MAC = m
	}
	p, err := netip.ParsePrefix(r.Address)
	switch {
	case err != nil:
		e.add(f+".address", "%q is not an address with prefix length (like 172.25.84.4/24)", r.Address)
	case !p.Addr().Is4():
		e.add(f+".address", "%s is IPv6: address is the side's IPv4 address; give its IPv6 address as address6", p)
	default:
		i.Address = p
	}
	if r.Address6 != "" {
		i.Address6 = address6(e, f+".address6", r.Address6)
	}
	for j, rr := range r.Routes {
		i.Routes = append(i.Routes, route(e, fmt.Sprintf("%s.routes[%d]", f, j), rr, i, r.Address6 != ""))
	}
	if r.PeerAddress != "" {
		pa, err := netip.ParsePrefix(r.PeerAddress)
		switch {
		case err == nil && !pa.Addr().Is4():
			e.add(f+".peer_address", "%s is IPv6: an IPv6 peer address is not built yet (the kernel's end takes an IPv4 address)", pa)
		case err != nil:
			e.add(f+".peer_address", "%q is not an IPv4 address with prefix length (like 172.25.84.1/24)", r.PeerAddress)
		case i.Address.IsValid() && (pa.Masked() != i.Address.Masked()):
			e.add(f+".peer_address", "%s is not in address's subnet %s", pa, i.Address.Masked())
		case pa.Addr() == i.Address.Addr():
			e.add(f+".peer_address", "%s is tapvs's own address on this side", pa.Addr())
		default:
			i.PeerAddress = pa
		}
	}
	if r.Masquerade {
		switch {
		case r.PeerAddress == "":
			e.add(f+".masquerade", "needs peer_address: the kernel's route back to this side")
		case r.Address6 != "":
			// The kernel masquerades address's IPv4 subnet only: IPv6
			// local addresses would leave with no way back.
			e.add(f+".masquerade", "masquerades IPv4 only: IPv6 masquerade is not built yet, so this side cannot have address6 with it")
		}
		i.Masquerade = true
	}
	for j, rp := range r.Publish {
		pf := fmt.Sprintf("%s.publish[%d]", f, j)
		if r.PeerAddress == "" && j == 0 {
			e.add(f+".publish", "needs peer_address: the kernel's route to the VIPs")
		}
		var p Published
		switch strings.ToLower(rp.Protocol) {
		case "", "tcp":
			p.Protocol = syscall.IPPROTO_TCP
		case "udp":
			p.Protocol = syscall.IPPROTO_UDP
		default:
			e.add(pf+".protocol", "%q is not tcp or udp", rp.Protocol)
		}
		if rp.Port < 1 || rp.Port > 65535 {
			e.add(pf+".port", "%d is not a port", rp.Port)
		}
		p.Port = uint16(rp.Port)
		if v, err := netip.ParseAddr(rp.VIP); err == nil && !v.Is4() {
			e.add(pf+".vip", "%s is IPv6: IPv6 publish is not built yet (the kernel's DNAT here is IPv4 only)", v)
		} else if err != nil {
			e.add(pf+".vip", "%q is not an IPv4 address", rp.VIP)
		} else {
			p.VIP = v
		}
		i.Publish = append(i.Publish, p)
	}
	return i
}

func synproxyConfig(e *errs, r rawSynproxy, serverMTU int) nat.SynproxyConfig {
	c := nat.SynproxyConfig{SACK: r.SACK, Timestamps: r.Timestamps}
	mss := r.MSS
	if mss == 0 {
		mss = serverMTU - 40
	}
	if mss < 64 || mss > 65495 {
		e.add("synproxy.mss", "%d is not an MSS (64-65495)", mss)
	}
	c.MSS = uint16(mss)
	if r.WScale < -1 || r.WScale > 14 {
		e.add("synproxy.wscale", "%d is not a window scale (0-14, or -1 for none)", r.WScale)
	}
	c.WScale = int8(r.WScale)
	if r.MaxQueued < 1 || r.MaxQueued > 64 {
		e.add("synproxy.max_queued", "%d is out of range 1-64", r.MaxQueued)
	}
	c.MaxQueued = r.MaxQueued
	if r.SYNRetries < 0 || r.SYNRetries > 10 {
		e.add("synproxy.syn_retries", "%d is out of range 0-10", r.SYNRetries)
	}
	c.SYNRetries = r.SYNRetries
	if d, err := time.ParseDuration(r.RetryInterval); err != nil || d < 10*time.Millisecond || d > time.Minute {
		e.add("synproxy.retry_interval", "%q is not a duration from 10ms to 1m", r.RetryInterval)
	} else {
		c.RetryInterval = d
	}
	if r.AckStorm < 2 || r.AckStorm > 65535 {
		e.add("synproxy.ack_storm", "%d is out of range 2-65535", r.AckStorm)
	}
	c.AckStorm = uint32(r.AckStorm)
	return c
}

func healthSpec(e *errs, f string, r *rawHealth) *health.Spec {
	if r.Type == "none" {
		return nil
	}
	s := &health.Spec{Type: r.Type, Rise: r.Rise, Fall: r.Fall, Path: r.Path, Status: r.Status, BodySHA256: strings.ToLower(r.BodySHA256)}
	if s.Type == "" {
		s.Type = "tcp"
	}
	if s.Type != "tcp" && s.Type != "http" {
		e.add(f+".type", "%q is not a check (tcp, http or none)", r.Type)
	}
	if r.Port != 0 {
		s.Port, _ = port(e, f+".port", r.Port)
	}
	dur := func(field, v, def string) time.Duration {
		if v == "" {
			v = def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Millisecond || d > time.Hour {
			e.add(f+"."+field, "%q is not a duration from 10ms to 1h", v)
		}
		return d
	}
	s.Interval = dur("interval", r.Interval, "2s")
	s.Timeout = dur("timeout", r.Timeout, "1s")
	if s.Timeout > s.Interval {
		e.add(f+".timeout", "%s is longer than the interval %s", s.Timeout, s.Interval)
	}
	if s.Rise == 0 {
		s.Rise = 2
	}
	if s.Fall == 0 {
		s.Fall = 2
	}
	if s.Rise < 1 || s.Rise > 100 {
		e.add(f+".rise", "%d is out of range 1-100", s.Rise)
	}
	if s.Fall < 1 || s.Fall > 100 {
		e.add(f+".fall", "%d is out of range 1-100", s.Fall)
	}
	if s.Type == "http" {
		if s.Path == "" {
			s.Path = "/"
		}
		if !strings.HasPrefix(s.Path, "/") {
			e.add(f+".http_path", "%q does not start with /", s.Path)
		}
		if s.Status != 0 && (s.Status < 100 || s.Status > 599) {
			e.add(f+".http_status", "%d is not an HTTP status", s.Status)
		}
		if s.BodySHA256 != "" {
			if b, err := hex.DecodeString(s.BodySHA256); err != nil || len(b) != 32 {
				e.add(f+".http_body_sha256", "%q is not a SHA-256 in hex", r.BodySHA256)
			}
		}
	}
	switch r.OnFailure {
	case "", "quiesce":
	case "remove":
		s.Remove = true
	default:
		e.add(f+".on_failure", "%q is not quiesce or remove", r.OnFailure)
	}
	return s
}

func port(e *errs, f string, p int) (uint16, bool) {
	if p < 1 || p > 65535 {
		e.add(f, "%d is not a port", p)
		return 0, false
	}
	return uint16(p), true
}

func timeouts(e *errs, f string, r rawTimeouts, base nat.Timeouts) nat.Timeouts {
	t := base
	for state, s := range r.TCP {
		d, err := time.ParseDuration(s)
		if err == nil {
			err = nat.CheckTimeout(d)
		}
		if err != nil {
			e.add(fmt.Sprintf("%s.tcp.%s", f, state), "%q is not a timeout (from %v to %v)", s, nat.MinTimeout, nat.MaxTimeout)
			continue
		}
		if !t.SetTCP(state, d) {
			e.add(fmt.Sprintf("%s.tcp.%s", f, state), "not a TCP state (one of %s)", strings.Join(nat.TCPStateNames(), ", "))
		}
	}
	if r.UDP != "" {
		if d, err := time.ParseDuration(r.UDP); err != nil || nat.CheckTimeout(d) != nil {
			e.add(f+".udp", "%q is not a timeout (from %v to %v)", r.UDP, nat.MinTimeout, nat.MaxTimeout)
		} else {
			t.UDP = d
		}
	}
	return t
}

func service(e *errs, f string, r rawService, base nat.Timeouts, has6 sides6) Service {
	s := Service{Name: r.Name, Scheduler: r.Scheduler, Synproxy: r.Synproxy}
	if err := nat.CheckName(r.Name); err != nil {
		e.add(f+".name", "%q is not a service name: it %v", r.Name, err)
		s.Name = ""
	}
	if s.Scheduler == "" {
		s.Scheduler = "wlc" // ipvsadm's default
	}
	if err := nat.ValidScheduler(s.Scheduler); err != nil {
		e.add(f+".scheduler", "%v", err)
	}
	if vip, err := hostAddr(r.VIP); err != nil {
		e.add(f+".vip", "%v", err)
	} else if vip.Is6() && !has6.client {
		e.add(f+".vip", "%s is IPv6 and interfaces.client has no address6: IPv6 VIPs are answered for by the client side's IPv6 address", vip)
	} else {
		s.VIP = vip
	}
	s.Port, _ = port(e, f+".port", r.Port)
	proto := r.Protocol
	if proto == "" {
		proto = "tcp"
	}
	if p, err := nat.ParseProtocol(proto); err != nil {
		e.add(f+".protocol", "%v", err)
	} else {
		s.Protocol = p
		if r.Synproxy && p != nat.TCP {
			e.add(f+".synproxy", "only a TCP service can have a SYN proxy")
		}
	}
	if r.ClientAddress != "" {
		c, err := nat.ParseClientAddr(r.ClientAddress)
		switch {
		case err != nil:
			e.add(f+".client_address", "%v", err)
		case s.Protocol == nat.UDP && (c == nat.ClientAddrTOA || c == nat.ClientAddrProxyV1):
			e.add(f+".client_address", "%s is TCP only: a UDP service can have proxy-v2 or none", c)
		default:
			s.ClientAddress = c
		}
	}
	if r.TCPTimestamps != "" {
		ts, err := nat.ParseTimestamps(r.TCPTimestamps)
		switch {
		case err != nil:
			e.add(f+".tcp_timestamps", "%v", err)
		case s.Protocol == nat.UDP:
			e.add(f+".tcp_timestamps", "a UDP service has no TCP timestamps")
		default:
			s.TCPTimestamps = ts
		}
	}
	if len(r.LocalAddresses) == 0 {
		e.add(f+".local_addresses", "FULLNAT needs at least one local address")
	}
	for j, l := range r.LocalAddresses {
		lf := fmt.Sprintf("%s.local_addresses[%d]", f, j)
		a, err := hostAddr(l)
		switch {
		case err != nil:
			e.add(lf, "%v", err)
		case a.Is6() && !has6.server:
			e.add(lf, "%s is IPv6 and interfaces.server has no address6: real servers reach IPv6 local addresses by the server side's IPv6 address", a)
		default:
			s.LocalAddresses = append(s.LocalAddresses, a)
		}
	}
	if len(r.RealServers) == 0 {
		e.add(f+".real_servers", "no real server is configured")
	}
	for j, rs := range r.RealServers {
		rf := fmt.Sprintf("%s.real_servers[%d]", f, j)
		var out RealServer
		if a, err := hostAddr(rs.Address); err != nil {
			e.add(rf+".address", "%v", err)
		} else {
			out.Address = a
		}
		out.Port, _ = port(e, rf+".port", rs.Port)
		switch {
		case rs.Health != nil:
			out.Health = healthSpec(e, rf+".health_check", rs.Health)
		case r.Health != nil:
			out.Health = healthSpec(e, f+".health_check", r.Health)
		}
		out.Weight = 1
		if rs.Weight != nil {
			out.Weight = *rs.Weight
		}
		if out.Weight < 0 || out.Weight > 65535 {
			e.add(rf+".weight", "%d is out of range 0-65535", out.Weight)
		}
		s.RealServers = append(s.RealServers, out)
	}
	s.Timeouts = timeouts(e, f+".timeouts", r.Timeouts, base)
	defence(e, f, r, &s)
	return s
}
