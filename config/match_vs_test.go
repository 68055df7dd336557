package config

import (
	"net/netip"
	"strings"
	"testing"
)

// keepalived's virtual_server fwmark N { ... }: a match service takes
// health checks and keepalived's virtual-server keys as a VIP:port service
// does. A server on port 0 takes the client's port, so a check that
// connects needs a port of its own (keepalived's connect_port), named in
// the refusal by the block it is missing from; ping and misc need none, and
// a server on a port of its own is checked there. Its sorry server may be
// on port 0 too (the client's port), which a VIP:port service's may not.
func TestMatchVirtualServer(t *testing.T) {
	const f = "services[0]."
	const rs0 = "- {address: 10.20.1.2}\n"
	const rs1 = "- {address: 10.20.2.2, port: 8443}\n"
	svc := func(keys string) [2]string { return [2]string{"fwmark: 1\n", "fwmark: 1\n    " + keys + "\n"} }
	server := func(from, fields string) [2]string {
		return [2]string{from, strings.TrimSuffix(from, "}\n") + ", " + fields + "}\n"}
	}
	cases := []struct {
		name  string
		edits [][2]string
		want  string // "" accepted
		ok    func(Service) bool
	}{
		{"service check with a port", [][2]string{svc("health_check: {type: tcp, port: 443}")}, "", func(s Service) bool {
			return s.RealServers[0].Health.Port == 443 && s.RealServers[1].Health.Port == 443 && s.RealServers[0].Health.Type == "tcp"
		}},
		{"server check with a port", [][2]string{server(rs0, "health_check: {type: http, port: 80, http_path: /hz}")}, "", func(s Service) bool {
			return s.RealServers[0].Health.Port == 80 && s.RealServers[0].Health.Path == "/hz" && s.RealServers[1].Health == nil
		}},
		{"a server on its own port needs none", [][2]string{server(rs1, "health_check: {type: tcp}")}, "", func(s Service) bool {
			return s.RealServers[1].Health.Port == 0 && s.RealServers[1].Port == 8443
		}},
		{"ping needs none", [][2]string{svc("health_check: {type: ping}")}, "", func(s Service) bool {
			return s.RealServers[0].Health.Type == "ping" && s.RealServers[0].Health.Port == 0
		}},
		{"misc needs none", [][2]string{svc("health_check: {type: misc, script: [/bin/true]}")}, "", func(s Service) bool {
			return s.RealServers[0].Health.Type == "misc"
		}},
		{"service check without a port", [][2]string{svc("health_check: {type: tcp}")},
			f + "health_check.port: is needed: real_servers[0] is on port 0 (it takes the client's port), so a tcp check has no port of its own", nil},
		{"server check without a port", [][2]string{server(rs0, "health_check: {type: http}")},
			f + "real_servers[0].health_check.port: is needed: real_servers[0] is on port 0 (it takes the client's port), so a http check", nil},
		{"service check, the port-0 server second", [][2]string{{rs0, "- {address: 10.20.1.2, port: 80}\n"}, {rs1, "- {address: 10.20.2.2}\n"}, svc("health_check: {type: ssl}")},
			f + "health_check.port: is needed: real_servers[1] is on port 0 (it takes the client's port), so a ssl check", nil},
		{"udp without a port", [][2]string{svc("health_check: {type: udp}")}, f + "health_check.port: is needed", nil},
		{"dns without a port", [][2]string{svc("health_check: {type: dns}")}, f + "health_check.port: is needed", nil},
		{"smtp without a port", [][2]string{svc("health_check: {type: smtp}")}, f + "health_check.port: is needed", nil},
		{"keepalived's keys", [][2]string{
			svc("sorry_server: '10.20.9.9:0'\n    sorry_server_inhibit: true\n    quorum: 2\n    hysteresis: 1\n    quorum_up: [/bin/up]\n    quorum_down: [/bin/down, x]\n    alpha: true\n    omega: true\n    health_check: {type: tcp, port: 80}"),
			server(rs0, "notify_up: [/bin/nu], notify_down: [/bin/nd]"),
		}, "", func(s Service) bool {
			return s.Sorry == netip.MustParseAddrPort("10.20.9.9:0") && s.SorryInhibit && s.Quorum == 2 && s.Hysteresis == 1 &&
				s.QuorumUp[0] == "/bin/up" && s.QuorumDown[1] == "x" && s.Alpha && s.Omega &&
				s.RealServers[0].NotifyUp[0] == "/bin/nu" && s.RealServers[0].NotifyDown[0] == "/bin/nd"
		}},
		{"sorry server on a port", [][2]string{svc("sorry_server: '10.20.9.9:8080'")}, "", func(s Service) bool {
			return s.Sorry == netip.MustParseAddrPort("10.20.9.9:8080")
		}},
		{"sorry server is a port-0 real server", [][2]string{svc("sorry_server: '10.20.1.2:0'")}, f + "sorry_server: 10.20.1.2:0 is also a real server of the service", nil},
		{"sorry server port -1", [][2]string{svc("sorry_server: '10.20.9.9:-1'")}, f + `sorry_server: "-1" is not a port`, nil},
		{"sorry server port 65536", [][2]string{svc("sorry_server: '10.20.9.9:65536'")}, f + `sorry_server: "65536" is not a port`, nil},
		{"notify without a check", [][2]string{server(rs0, "notify_up: [/bin/nu]")}, f + "real_servers[0].notify_up: the server has no health_check", nil},
		{"quorum 0", [][2]string{svc("quorum: 0")}, f + "quorum: 0 is out of range", nil},
	}
	for _, tc := range cases {
		text := matchConfig
		for _, ed := range tc.edits {
			if !strings.Contains(text, ed[0]) {
				t.Fatalf("%s: bad test: %q not in the config", tc.name, ed[0])
			}
			text = strings.Replace(text, ed[0], ed[1], 1)
		}
		c, err := Parse(text)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want it to say %q", tc.name, err, tc.want)
		case tc.want != "" && strings.Count(err.Error(), "\n") > 0:
			t.Errorf("%s: %v: more than one line", tc.name, err)
		case tc.want == "" && !tc.ok(c.Services[0]):
			t.Errorf("%s: read as %+v", tc.name, c.Services[0])
		}
	}
}
