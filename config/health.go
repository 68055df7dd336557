package config

import (
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/health"
)

// A service's or a real server's health_check: section.

// rawHealth is the block as the file spells it: the API's type, so that a
// check set at run time takes the same fields, refused by the same code
// (RuntimeHealthCheck).
type rawHealth = api.HealthCheck

// RuntimeHealthCheck validates a check set through the control API as the
// file's health_check: block is validated: the same refusals, one a line,
// naming the field. A nil Spec with no error is type none.
func RuntimeHealthCheck(r api.HealthCheck) (*health.Spec, error) {
	var e errs
	s := healthSpec(&e, "health_check", &r)
	if err := e.err(); err != nil {
		return nil, err
	}
	return s, nil
}

// dnsTypes are the query types a dns check may ask (keepalived's, and PTR
// and SRV).
var dnsTypes = map[string]dnsmessage.Type{
	"A": dnsmessage.TypeA, "AAAA": dnsmessage.TypeAAAA, "NS": dnsmessage.TypeNS, "CNAME": dnsmessage.TypeCNAME,
	"SOA": dnsmessage.TypeSOA, "MX": dnsmessage.TypeMX, "TXT": dnsmessage.TypeTXT, "PTR": dnsmessage.TypePTR, "SRV": dnsmessage.TypeSRV,
}

func healthSpec(e *errs, f string, r *rawHealth) *health.Spec {
	if r.Type == "none" {
		return nil
	}
	s := &health.Spec{Type: r.Type, Rise: r.Rise, Fall: r.Fall, Path: r.Path, Status: r.Status, BodySHA256: strings.ToLower(r.BodySHA256)}
	if s.Type == "" {
		s.Type = "tcp"
	}
	switch s.Type {
	case "tcp", "http", "ssl", "smtp", "ping", "misc", "udp", "dns":
	default:
		e.add(f+".type", "%q is not a check (tcp, http, ssl, smtp, ping, misc, udp, dns or none)", r.Type)
	}
	if r.Port != 0 && s.Type == "ping" {
		e.add(f+".port", "a ping check has no port")
	} else if r.Port != 0 {
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
	timeout, tfield := r.Timeout, "timeout"
	if r.ConnectTimeout != "" {
		if r.Timeout != "" {
			e.add(f+".connect_timeout", "is timeout by keepalived's name: set one of them")
		}
		timeout, tfield = r.ConnectTimeout, "connect_timeout"
	}
	if timeout == "" && s.Type == "misc" {
		timeout = s.Interval.String() // keepalived's misc_timeout defaults to delay_loop
	}
	s.Timeout = dur(tfield, timeout, "1s")
	if s.Timeout > s.Interval {
		e.add(f+"."+tfield, "%s is longer than the interval %s", s.Timeout, s.Interval)
	}
	s.Retry = r.Retry
	if s.Retry < 0 || s.Retry > 100 {
		e.add(f+".retry", "%d is out of range 0-100", s.Retry)
	}
	s.DelayBeforeRetry = dur("delay_before_retry", r.DelayBeforeRetry, "1s") // keepalived's default
	if d, err := time.ParseDuration(r.Warmup); r.Warmup != "" && (err != nil || d != 0) {
		s.Warmup = dur("warmup", r.Warmup, "")
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
	healthTypes(e, f, r, s)
	if s.Type == "http" || s.Type == "ssl" {
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

// healthTypes reads the fields of the checks other than tcp's, refusing
// each on a check it does not belong to.
func healthTypes(e *errs, f string, r *rawHealth, s *health.Spec) {
	only := func(field string, set bool, types ...string) bool {
		if !set {
			return false
		}
		for _, t := range types {
			if s.Type == t {
				return true
			}
		}
		e.add(f+"."+field, "is only for type %s, not %s", strings.Join(types, " or "), s.Type)
		return false
	}
	if only("virtualhost", r.VirtualHost != "", "http", "ssl") {
		if !validHost(r.VirtualHost) {
			e.add(f+".virtualhost", "%q is not a host name (or host:port)", r.VirtualHost)
		}
		s.VirtualHost = r.VirtualHost
	}
	if only("server_name", r.ServerName != "", "ssl") {
		if !validHost(r.ServerName) || strings.Contains(r.ServerName, ":") {
			e.add(f+".server_name", "%q is not a host name", r.ServerName)
		}
		s.ServerName = r.ServerName
	}
	s.Verify = only("verify", r.Verify, "ssl")
	if only("ca_file", r.CAFile != "", "ssl") {
		if !r.Verify {
			e.add(f+".ca_file", "is used only with verify: true")
		}
		pem, err := os.ReadFile(r.CAFile) // read again at each reload
		if err != nil {
			e.add(f+".ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			e.add(f+".ca_file", "%q holds no PEM certificate", r.CAFile)
		}
		s.CAPEM = pem
	}
	only("script", len(r.Script) > 0, "misc")
	s.MiscDynamic = only("misc_dynamic", r.MiscDynamic, "misc")
	if s.Type == "misc" {
		if len(r.Script) == 0 {
			e.add(f+".script", "a misc check needs a script: [path, args...]")
		} else {
			s.Script = script(e, f+".script", r.Script)
		}
	}
	hexField := func(field, v string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(v, " ", ""))
		if err != nil || len(b) > 1024 {
			e.add(f+"."+field, "%q is not up to 1024 bytes in hex", v)
		}
		return b
	}
	if only("payload", r.Payload != "", "udp") {
		s.Payload = hexField("payload", r.Payload)
	}
	if only("require_reply", r.Require != "", "udp") {
		s.RequireReply = hexField("require_reply", r.Require)
	}
	if only("helo_name", r.HeloName != "", "smtp") {
		// Sent in the HELO line: a CR or LF would start another command.
		if !validHost(r.HeloName) || strings.Contains(r.HeloName, ":") {
			e.add(f+".helo_name", "%q is not a host name", r.HeloName)
		}
		s.HeloName = r.HeloName
	}
	only("dns_name", r.DNSName != "", "dns")
	only("dns_type", r.DNSType != "", "dns")
	if s.Type == "dns" {
		s.DNSName = r.DNSName
		if s.DNSName == "" {
			s.DNSName = "." // keepalived's default: the root
		}
		name := s.DNSName
		if !strings.HasSuffix(name, ".") {
			name += "."
		}
		// Packed as the check will pack it: labels of 1-63 bytes.
		n, err := dnsmessage.NewName(name)
		if err == nil {
			q := dnsmessage.Message{Questions: []dnsmessage.Question{{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
			_, err = q.Pack()
		}
		if err != nil {
			e.add(f+".dns_name", "%q is not a DNS name", r.DNSName)
		}
		typ := strings.ToUpper(r.DNSType)
		if typ == "" {
			typ = "A"
		}
		t, ok := dnsTypes[typ]
		if !ok {
			e.add(f+".dns_type", "%q is not a query type (A, AAAA, NS, CNAME, SOA, MX, TXT, PTR, SRV)", r.DNSType)
		}
		s.DNSType = uint16(t)
	}
}

// validHost is a Host header's value: printable, no spaces, at most 255
// bytes.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= ' ' || h[i] >= 0x7f || h[i] == '/' {
			return false
		}
	}
	return true
}

// script checks a program run without a shell (a misc check's, a notify
// or quorum script's): [absolute path, args...]. nil: none, or refused.
func script(e *errs, f string, argv []string) []string {
	switch {
	case len(argv) == 0:
		return nil
	case !filepath.IsAbs(argv[0]):
		e.add(f, "%q is not an absolute path (no shell, no PATH search)", argv[0])
	case strings.Contains(strings.Join(argv, ""), "\x00"):
		e.add(f, "an argument holds a NUL byte")
	default:
		return append([]string(nil), argv...)
	}
	return nil
}
