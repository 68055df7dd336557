package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// withVS is valid with the first service's keepalived keys (flow mapping
// entries, one a line of the service) and its first real server's extra
// fields.
func withVS(svc, rs string) string {
	s := valid
	if svc != "" {
		s = strings.Replace(s, "port: 80\n    local", "port: 80\n    "+svc+"\n    local", 1)
	}
	if rs != "" {
		s = strings.Replace(s, "{address: 10.20.1.2, port: 80}", "{address: 10.20.1.2, port: 80, "+rs+"}", 1)
	}
	return s
}

// keepalived's virtual-server keys: each value accepted is what the
// service holds; each refusal is one line naming its field.
func TestVirtualServerFields(t *testing.T) {
	const f = "services[0]."
	const rf = "services[0].real_servers[0]."
	check := "health_check: {type: tcp}"
	cases := []struct {
		name, svc, rs string
		want          string // "" accepted
		ok            func(Service) bool
	}{
		{"defaults", "", "", "", func(s Service) bool {
			return reflect.DeepEqual(s.VS, VS{Quorum: 1}) && s.RealServers[0].NotifyUp == nil
		}},
		{"all", "sorry_server: '10.20.9.9:8080'\n    sorry_server_inhibit: true\n    quorum: 3\n    hysteresis: 1\n    quorum_up: [/bin/up, a]\n    quorum_down: [/bin/down]\n    alpha: true\n    omega: true\n    " + check,
			"notify_up: [/bin/nu, x], notify_down: [/bin/nd]", "", func(s Service) bool {
				return s.VS.Sorry == netip.MustParseAddrPort("10.20.9.9:8080") && s.SorryInhibit && s.Quorum == 3 && s.Hysteresis == 1 &&
					reflect.DeepEqual(s.QuorumUp, []string{"/bin/up", "a"}) && reflect.DeepEqual(s.QuorumDown, []string{"/bin/down"}) && s.Alpha && s.Omega &&
					reflect.DeepEqual(s.RealServers[0].NotifyUp, []string{"/bin/nu", "x"}) && reflect.DeepEqual(s.RealServers[0].NotifyDown, []string{"/bin/nd"})
			}},
		{"sorry IPv6 behind IPv4 LIPs", "sorry_server: '[2001:db8::9]:80'", "", f + "sorry_server: [2001:db8::9]:80: the service has no local address of its family", nil},
		{"sorry without port", "sorry_server: 10.20.9.9", "", f + `sorry_server: "10.20.9.9" is not ADDR:PORT`, nil},
		{"sorry port 0", "sorry_server: '10.20.9.9:0'", "", f + `sorry_server: "0" is not a port`, nil},
		{"sorry not an address", "sorry_server: 'www:80'", "", f + "sorry_server: ", nil},
		{"sorry is a real server", "sorry_server: '10.20.2.2:80'", "", f + "sorry_server: 10.20.2.2:80 is also a real server of the service", nil},
		{"inhibit without sorry", "sorry_server_inhibit: true", "", f + "sorry_server_inhibit: there is no sorry_server", nil},
		{"quorum 0", "quorum: 0", "", f + "quorum: 0 is out of range 1-1073741824", nil},
		{"quorum huge", "quorum: 1073741825", "", f + "quorum: 1073741825 is out of range", nil},
		{"hysteresis negative", "hysteresis: -1", "", f + "hysteresis: -1 is out of range 0-1073741824", nil},
		{"quorum_up relative", "quorum_up: [up.sh]", "", f + `quorum_up: "up.sh" is not an absolute path`, nil},
		{"quorum_down NUL", `quorum_down: [/bin/d, "a\0b"]`, "", f + "quorum_down: an argument holds a NUL byte", nil},
		{"notify_up relative", check, "notify_up: [nu]", rf + `notify_up: "nu" is not an absolute path`, nil},
		{"notify_down NUL", check, `notify_down: [/bin/nd, "\0"]`, rf + "notify_down: an argument holds a NUL byte", nil},
		{"notify without a check", "", "notify_down: [/bin/nd]", rf + "notify_down: the server has no health_check: it never goes up or down", nil},
		{"unknown key", "quorum_upp: [/bin/x]", "", "quorum_upp", nil},
		// The bounds themselves are accepted.
		{"quorum 1", "quorum: 1", "", "", func(s Service) bool { return s.Quorum == 1 }},
		{"quorum max", "quorum: 1073741824", "", "", func(s Service) bool { return s.Quorum == 1<<30 }},
		{"hysteresis 0", "hysteresis: 0", "", "", func(s Service) bool { return s.Hysteresis == 0 }},
		{"hysteresis max", "hysteresis: 1073741824", "", "", func(s Service) bool { return s.Hysteresis == 1<<30 }},
		{"hysteresis huge", "hysteresis: 1073741825", "", f + "hysteresis: 1073741825 is out of range", nil},
		{"sorry port 1", "sorry_server: '10.20.9.9:1'", "", "", func(s Service) bool { return s.VS.Sorry.Port() == 1 }},
		{"sorry port 65535", "sorry_server: '10.20.9.9:65535'", "", "", func(s Service) bool { return s.VS.Sorry.Port() == 65535 }},
		{"sorry port 65536", "sorry_server: '10.20.9.9:65536'", "", f + `sorry_server: "65536" is not a port`, nil},
		{"sorry the real server's address, another port", "sorry_server: '10.20.2.2:81'", "", "", func(s Service) bool { return s.VS.Sorry == netip.MustParseAddrPort("10.20.2.2:81") }},
		{"sorry another address, the real server's port", "sorry_server: '10.20.9.2:80'", "", "", func(s Service) bool { return s.VS.Sorry == netip.MustParseAddrPort("10.20.9.2:80") }},
	}
	for _, tc := range cases {
		c, err := Parse(withVS(tc.svc, tc.rs))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want it to say %q", tc.name, err, tc.want)
		case tc.want != "" && strings.Count(err.Error(), "\n") > 1:
			t.Errorf("%s: %v: more than the one line", tc.name, err)
		case tc.want == "" && tc.ok != nil && !tc.ok(c.Services[0]):
			t.Errorf("%s: service %+v", tc.name, c.Services[0])
		}
	}
}
