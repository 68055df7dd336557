package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/health"
)

// withCheck is valid with the first service's health_check set to the
// flow mapping body check.
func withCheck(check string) string {
	return strings.Replace(valid, "port: 80\n    local", "port: 80\n    health_check: {"+check+"}\n    local", 1)
}

// keepalived's checkers and knobs: each value accepted is what the check
// holds; each refusal is one line naming its field.
func TestHealthKeepalivedFields(t *testing.T) {
	dir := t.TempDir()
	caPEM := testCAPEM
	ca := filepath.Join(dir, "ca.pem")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	const f = "services[0].health_check."
	cases := []struct {
		name, check string
		want        string                  // "" accepted
		ok          func(*health.Spec) bool // what an accepted check holds
	}{
		{"ssl defaults", "type: ssl", "", func(s *health.Spec) bool {
			return s.Type == "ssl" && s.Path == "/" && !s.Verify && s.CAPEM == nil && s.ServerName == "" && s.VirtualHost == ""
		}},
		{"ssl all", "type: ssl, http_path: /h, http_status: 204, virtualhost: www.example.test, server_name: sni.example.test, verify: true, ca_file: " + ca, "", func(s *health.Spec) bool {
			return s.Path == "/h" && s.Status == 204 && s.VirtualHost == "www.example.test" && s.ServerName == "sni.example.test" && s.Verify && bytes.Equal(s.CAPEM, caPEM)
		}},
		{"http virtualhost with a port", "type: http, virtualhost: 'www.example.test:8080'", "", func(s *health.Spec) bool { return s.VirtualHost == "www.example.test:8080" }},
		{"virtualhost on tcp", "type: tcp, virtualhost: a.test", f + "virtualhost: is only for type http or ssl, not tcp", nil},
		{"virtualhost with a space", "type: http, virtualhost: 'a b'", f + `virtualhost: "a b" is not a host name`, nil},
		{"virtualhost with a slash", "type: http, virtualhost: a/b", f + `virtualhost: "a/b" is not a host name`, nil},
		{"server_name on http", "type: http, server_name: a.test", f + "server_name: is only for type ssl, not http", nil},
		{"server_name with a port", "type: ssl, server_name: 'a.test:1'", f + `server_name: "a.test:1" is not a host name`, nil},
		{"verify on http", "type: http, verify: true", f + "verify: is only for type ssl, not http", nil},
		{"ca_file without verify", "type: ssl, ca_file: " + ca, f + "ca_file: is used only with verify: true", nil},
		{"ca_file missing", "type: ssl, verify: true, ca_file: " + filepath.Join(dir, "none"), f + "ca_file: open ", nil},
		{"ca_file not PEM", "type: ssl, verify: true, ca_file: " + notPEM, f + "ca_file: \"" + notPEM + "\" holds no PEM certificate", nil},
		{"ssl status 600", "type: ssl, http_status: 600", f + "http_status: 600 is not an HTTP status", nil},
		{"unknown type", "type: bfd", f + `type: "bfd" is not a check (tcp, http, ssl, smtp, ping, misc, udp, dns or none)`, nil},

		{"timing defaults", "type: tcp", "", func(s *health.Spec) bool {
			return s.Retry == 0 && s.DelayBeforeRetry == time.Second && s.Warmup == 0 && s.Timeout == time.Second
		}},
		{"timing set", "retry: 3, delay_before_retry: 250ms, warmup: 5s, connect_timeout: 500ms", "", func(s *health.Spec) bool {
			return s.Retry == 3 && s.DelayBeforeRetry == 250*time.Millisecond && s.Warmup == 5*time.Second && s.Timeout == 500*time.Millisecond
		}},
		{"warmup 0s", "warmup: 0s", "", func(s *health.Spec) bool { return s.Warmup == 0 }},
		{"retry 100", "retry: 100", "", func(s *health.Spec) bool { return s.Retry == 100 }},
		{"retry 101", "retry: 101", f + "retry: 101 is out of range 0-100", nil},
		{"retry -1", "retry: -1", f + "retry: -1 is out of range 0-100", nil},
		{"delay_before_retry 9ms", "delay_before_retry: 9ms", f + `delay_before_retry: "9ms" is not a duration from 10ms to 1h`, nil},
		{"warmup past 1h", "warmup: 2h", f + `warmup: "2h" is not a duration from 10ms to 1h`, nil},
		{"connect_timeout and timeout", "timeout: 1s, connect_timeout: 1s", f + "connect_timeout: is timeout by keepalived's name: set one of them", nil},
		{"connect_timeout past the interval", "interval: 1s, connect_timeout: 2s", f + "connect_timeout: 2s is longer than the interval 1s", nil},

		{"misc", "type: misc, script: [/bin/check, '10.0.0.1', -v], misc_dynamic: true", "", func(s *health.Spec) bool {
			return reflect.DeepEqual(s.Script, []string{"/bin/check", "10.0.0.1", "-v"}) && s.MiscDynamic && s.Timeout == 2*time.Second
		}},
		{"misc timeout", "type: misc, script: [/bin/true], timeout: 300ms", "", func(s *health.Spec) bool { return s.Timeout == 300*time.Millisecond }},
		{"misc without script", "type: misc", f + "script: a misc check needs a script: [path, args...]", nil},
		{"misc relative script", "type: misc, script: [check.sh]", f + `script: "check.sh" is not an absolute path`, nil},
		{"misc NUL", `type: misc, script: [/bin/check, "a\0b"]`, f + "script: an argument holds a NUL byte", nil},
		{"script on tcp", "type: tcp, script: [/bin/true]", f + "script: is only for type misc, not tcp", nil},
		{"misc_dynamic on http", "type: http, misc_dynamic: true", f + "misc_dynamic: is only for type misc, not http", nil},

		{"udp", "type: udp, payload: 'de ad be ef', require_reply: 'CAFE'", "", func(s *health.Spec) bool {
			return bytes.Equal(s.Payload, []byte{0xde, 0xad, 0xbe, 0xef}) && bytes.Equal(s.RequireReply, []byte{0xca, 0xfe})
		}},
		{"udp bare", "type: udp", "", func(s *health.Spec) bool { return s.Payload == nil && s.RequireReply == nil }},
		{"udp payload not hex", "type: udp, payload: xyz", f + `payload: "xyz" is not up to 1024 bytes in hex`, nil},
		{"udp payload 1024", "type: udp, payload: '" + strings.Repeat("00", 1024) + "'", "", nil},
		{"udp payload 1025", "type: udp, payload: " + strings.Repeat("00", 1025), f + "payload: ", nil},
		{"require_reply odd", "type: udp, require_reply: abc", f + `require_reply: "abc" is not up to 1024 bytes in hex`, nil},
		{"payload on dns", "type: dns, payload: 00", f + "payload: is only for type udp, not dns", nil},

		{"dns defaults", "type: dns", "", func(s *health.Spec) bool { return s.DNSName == "." && s.DNSType == 1 }},
		{"dns set", "type: dns, dns_name: www.example.test, dns_type: aaaa", "", func(s *health.Spec) bool { return s.DNSName == "www.example.test" && s.DNSType == 28 }},
		{"dns bad type", "type: dns, dns_type: ANY", f + `dns_type: "ANY" is not a query type`, nil},
		{"dns empty label", "type: dns, dns_name: a..b", f + `dns_name: "a..b" is not a DNS name`, nil},
		{"dns long label", "type: dns, dns_name: " + strings.Repeat("a", 64) + ".test", f + "dns_name: ", nil},
		{"dns_name on udp", "type: udp, dns_name: a.test", f + "dns_name: is only for type dns, not udp", nil},
		{"dns_type on tcp", "type: tcp, dns_type: A", f + "dns_type: is only for type dns, not tcp", nil},

		{"smtp default helo", "type: smtp", "", func(s *health.Spec) bool { return s.Type == "smtp" && s.HeloName == "" }},
		{"smtp helo_name", "type: smtp, helo_name: lb1.example.test, port: 25", "", func(s *health.Spec) bool { return s.HeloName == "lb1.example.test" && s.Port == 25 }},
		{"smtp helo_name with CRLF", `type: smtp, helo_name: "a\r\nQUIT"`, f + `helo_name: "a\r\nQUIT" is not a host name`, nil},
		{"smtp helo_name with a port", "type: smtp, helo_name: 'a.test:25'", f + `helo_name: "a.test:25" is not a host name`, nil},
		{"helo_name on http", "type: http, helo_name: a.test", f + "helo_name: is only for type smtp, not http", nil},
		{"ping", "type: ping", "", func(s *health.Spec) bool { return s.Type == "ping" }},
		{"ping with a port", "type: ping, port: 80", f + "port: a ping check has no port", nil},
	}
	for _, tc := range cases {
		c, err := Parse(withCheck(tc.check))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want it to say %q", tc.name, err, tc.want)
		case tc.want != "" && strings.Count(err.Error(), "health_check.") != 1:
			t.Errorf("%s: %v: more than the one line", tc.name, err)
		case tc.want == "" && tc.ok != nil && !tc.ok(c.Services[0].RealServers[0].Health):
			t.Errorf("%s: check %+v", tc.name, c.Services[0].RealServers[0].Health)
		}
	}
}

// A check read twice from one file is the same check: a reload compares
// services (a CA is kept as its PEM, not as a pool that never compares
// equal).
func TestHealthSpecsCompare(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, testCAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	y := withCheck("type: ssl, verify: true, ca_file: " + ca + ", virtualhost: a.test")
	a, err := Parse(y)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(y)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Services, b.Services) {
		t.Fatal("one file read twice: the services differ")
	}
}

// testCAPEM is a self-signed certificate (crypto/tls's example).
var testCAPEM = []byte("-----BEGIN CERTIFICATE-----\nMIIBhTCCASugAwIBAgIQIRi6zePL6mKjOipn+dNuaTAKBggqhkjOPQQDAjASMRAw\nDgYDVQQKEwdBY21lIENvMB4XDTE3MTAyMDE5NDMwNloXDTE4MTAyMDE5NDMwNlow\nEjEQMA4GA1UEChMHQWNtZSBDbzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABD0d\n7VNhbWvZLWPuj/RtHFjvtJBEwOkhbN/BnnE8rnZR8+sbwnc/KhCk3FhnpHZnQz7B\n5aETbbIgmuvewdjvSBSjYzBhMA4GA1UdDwEB/wQEAwICpDATBgNVHSUEDDAKBggr\nBgEFBQcDATAPBgNVHRMBAf8EBTADAQH/MCkGA1UdEQQiMCCCDmxvY2FsaG9zdDo1\nNDUzgg4xMjcuMC4wLjE6NTQ1MzAKBggqhkjOPQQDAgNIADBFAiEA2zpJEPQyz6/l\nWf86aX6PepsntZv2GYlA5UpabfT2EZICICpJ5h/iI+i341gBmLiAFQOyTDT+/wQc\n6MF9+Yw1Yy0t\n-----END CERTIFICATE-----\n")

// validHost's bounds: 255 bytes, printable ASCII from '!' to '~', no '/'.
func TestValidHost(t *testing.T) {
	for h, want := range map[string]bool{
		strings.Repeat("a", 255): true, strings.Repeat("a", 256): false, "": false,
		"a!b": true, "a~b": true, "a b": false, "a\x7fb": false, "a\x1fb": false, "a/b": false,
		"www.example.test:8443": true,
	} {
		if got := validHost(h); got != want {
			t.Errorf("validHost(%q) = %v, want %v", h, got, want)
		}
	}
}
