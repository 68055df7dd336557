package tapvs

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"time"

	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/control/api"
)

// HealthCheck is a service's health check: the configuration file's
// health_check: block (docs/operating.md), a field for each of its keys
// with the same defaults and rules; a zero field is the file's default.
// Durations are from 10ms to 1h.
type HealthCheck struct {
	// Type is tcp (the default), http, ssl, smtp, ping, misc, udp, dns, or
	// none (no check).
	Type       string
	Port       int // the real server's port: 0 is its service port
	Interval   time.Duration
	Timeout    time.Duration
	Rise, Fall int    // passes to be put back, failures to be taken out
	Path       string // http, ssl: the path asked ("/healthz")
	Status     int    // http, ssl: the status wanted; 0 is any 2xx
	BodySHA256 string // http, ssl: the body's SHA-256, hex
	// OnFailure is what a failing server gets: "quiesce" (weight 0, the
	// default) or "remove".
	OnFailure string

	// keepalived's timing: ConnectTimeout is its name for Timeout; Retry
	// and DelayBeforeRetry retry a failed probe before it counts; Warmup
	// delays the first probe.
	ConnectTimeout   time.Duration
	Retry            int
	DelayBeforeRetry time.Duration
	Warmup           time.Duration

	VirtualHost string   // http, ssl: the Host header
	ServerName  string   // ssl: the SNI name
	Verify      bool     // ssl: check the server's certificate
	CAFile      string   // ssl: the certificates Verify trusts
	Script      []string // misc: the command and its arguments
	MiscDynamic bool     // misc: the exit status sets the weight (keepalived's misc_dynamic)
	Payload     string   // udp: the datagram sent, hex
	Require     string   // udp: the reply wanted, hex
	DNSName     string   // dns: the name asked
	DNSType     string   // dns: the type asked (A, AAAA, ...)
	HeloName    string   // smtp: HELO's name
}

// api is h as the file's block reads.
func (h HealthCheck) api() api.HealthCheck {
	d := func(v time.Duration) string {
		if v == 0 {
			return ""
		}
		return v.String()
	}
	return api.HealthCheck{Type: h.Type, Port: h.Port, Interval: d(h.Interval), Timeout: d(h.Timeout), Rise: h.Rise, Fall: h.Fall,
		Path: h.Path, Status: h.Status, BodySHA256: h.BodySHA256, OnFailure: h.OnFailure,
		ConnectTimeout: d(h.ConnectTimeout), Retry: h.Retry, DelayBeforeRetry: d(h.DelayBeforeRetry), Warmup: d(h.Warmup),
		VirtualHost: h.VirtualHost, ServerName: h.ServerName, Verify: h.Verify, CAFile: h.CAFile, Script: h.Script,
		MiscDynamic: h.MiscDynamic, Payload: h.Payload, Require: h.Require, DNSName: h.DNSName, DNSType: h.DNSType, HeloName: h.HeloName}
}

// healthCheckOf is a check as set, read back.
func healthCheckOf(a api.HealthCheck) (*HealthCheck, error) {
	var err error
	d := func(s string) time.Duration {
		if s == "" {
			return 0
		}
		v, e := time.ParseDuration(s)
		err = errors.Join(err, e)
		return v
	}
	h := &HealthCheck{Type: a.Type, Port: a.Port, Interval: d(a.Interval), Timeout: d(a.Timeout), Rise: a.Rise, Fall: a.Fall,
		Path: a.Path, Status: a.Status, BodySHA256: a.BodySHA256, OnFailure: a.OnFailure,
		ConnectTimeout: d(a.ConnectTimeout), Retry: a.Retry, DelayBeforeRetry: d(a.DelayBeforeRetry), Warmup: d(a.Warmup),
		VirtualHost: a.VirtualHost, ServerName: a.ServerName, Verify: a.Verify, CAFile: a.CAFile, Script: a.Script,
		MiscDynamic: a.MiscDynamic, Payload: a.Payload, Require: a.Require, DNSName: a.DNSName, DNSType: a.DNSType, HeloName: a.HeloName}
	return h, err
}

// healthFields are HealthCheck's field names by the file's keys, to say
// the file's refusals in HealthCheck's terms: api.HealthCheck has the same
// Go names with the keys as tags.
var healthFields = func() map[string]string {
	m := map[string]string{}
	t := reflect.TypeFor[api.HealthCheck]()
	for i := range t.NumField() {
		m[t.Field(i).Tag.Get("mapstructure")] = "HealthCheck." + t.Field(i).Name
	}
	return m
}()

var healthKey = regexp.MustCompile(`health_check\.([a-z0-9_]+)`)

// healthError is the checker's refusal with HealthCheck's field names in
// place of the file's keys.
func healthError(err error) error {
	msg := healthKey.ReplaceAllStringFunc(err.Error(), func(s string) string {
		if f, ok := healthFields[healthKey.FindStringSubmatch(s)[1]]; ok {
			return f
		}
		return s
	})
	return errors.New(msg)
}

// SetHealthCheck checks every real server of a service with hc, in place
// of any check it had: a server that fails it is taken out (quiesced, or
// removed with OnFailure "remove") and put back when it passes. A bad
// field is refused, naming it (HealthCheck.Path), and nothing changes.
func (lb *LB) SetHealthCheck(k ServiceKey, hc HealthCheck) error {
	ck, err := lb.checked(k)
	if err == nil {
		if _, err = lb.d.Checks().SetHealthCheck(ck, hc.api()); err != nil {
			err = healthError(err)
		}
	}
	if err != nil {
		return fmt.Errorf("tapvs: health check of %s: %w", k, err)
	}
	return nil
}

// ClearHealthCheck stops a service's checks; the servers they held out
// are put back with their weights.
func (lb *LB) ClearHealthCheck(k ServiceKey) error {
	ck, err := lb.checked(k)
	if err == nil {
		_, err = lb.d.Checks().ClearHealthCheck(ck)
	}
	if err != nil {
		return fmt.Errorf("tapvs: health check of %s: %w", k, err)
	}
	return nil
}

// checked is k for the checker, once the service is known to be there
// and one the checker takes, as the control API refuses it.
func (lb *LB) checked(k ServiceKey) (control.ServiceKey, error) {
	ck, err := k.control()
	if err != nil {
		return ck, err
	}
	if k.Mark != 0 {
		_, err := lb.d.Balancer.MatchService(k.Mark)
		return ck, err
	}
	_, err = lb.d.Balancer.Service(ck.Protocol, ck.Addr.Addr(), ck.Addr.Port())
	return ck, err
}

// ServerHealth is one real server as its service's health check sees it.
type ServerHealth struct {
	Addr    netip.AddrPort
	Healthy bool
	Reason  string // why the last probe failed; "" if it passed
}

// HealthStatus is a service's health check now.
type HealthStatus struct {
	// Check is the check set with SetHealthCheck; nil if none is, or it
	// was cleared.
	Check   *HealthCheck
	Servers []ServerHealth
}

// HealthStatus reads a service's health check and what it says of each
// real server.
func (lb *LB) HealthStatus(k ServiceKey) (HealthStatus, error) {
	ck, err := lb.checked(k)
	if err != nil {
		return HealthStatus{}, fmt.Errorf("tapvs: health check of %s: %w", k, err)
	}
	h, err := lb.d.Checks().HealthCheck(ck)
	if err != nil {
		return HealthStatus{}, fmt.Errorf("tapvs: health check of %s: %w", k, err)
	}
	var out HealthStatus
	// tapvs's own text: a bug if it does not read back.
	if h.Check != nil {
		if out.Check, err = healthCheckOf(*h.Check); err != nil {
			return HealthStatus{}, fmt.Errorf("tapvs: health check of %s: %w", k, err)
		}
	}
	for _, v := range h.Servers {
		a, err := netip.ParseAddrPort(v.Dest)
		if err != nil {
			return HealthStatus{}, fmt.Errorf("tapvs: health check of %s: server %q: %w", k, v.Dest, err)
		}
		out.Servers = append(out.Servers, ServerHealth{Addr: a, Healthy: v.Healthy, Reason: v.Reason})
	}
	return out, nil
}
