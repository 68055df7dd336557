package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/nat"
)

const matchConfig = `
interfaces:
  client: {name: tc, address: 172.25.254.254/24}
  server: {name: ts, address: 172.25.84.4/24}
marks:
  - {mark: 1, vip: 172.25.254.100, protocol: tcp, ports: [80, 443, "8000-8099"]}
  - {mark: 2, vip: 172.25.254.100, protocol: udp, ports: [53]}
services:
  - name: web-sticky
    fwmark: 1
    scheduler: rr
    persistence_timeout: 600
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2}
      - {address: 10.20.2.2, port: 8443}
  - name: web-443
    vip: 172.25.254.100
    port: 443
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 443}
`

// marks: and a service's fwmark: are read and applied as a match service
// (its VIP and protocol the mark's, port 0, servers on port 0 allowed),
// beside a VIP:port service on one of its ports; a reload changes the
// ports and removes the service and its mark.
func TestMatchConfig(t *testing.T) {
	c := parse(t, matchConfig)
	vip := netip.MustParseAddr("172.25.254.100")
	s := c.Services[0]
	if s.Mark != 1 || s.VIP != vip || s.Protocol != nat.TCP || s.Port != 0 || s.Persistence.Timeout != 600*time.Second {
		t.Fatalf("web-sticky read as %+v", s)
	}
	if m := c.Marks[1]; m.Addr != vip || m.Protocol != nat.TCP || len(m.Ports) != 3 {
		t.Fatalf("mark 1 read as %+v", m)
	}
	if m := c.Marks[2]; m.Protocol != nat.UDP || len(m.Ports) != 1 || m.Ports[0] != (nat.PortRange{Lo: 53, Hi: 53}) {
		t.Fatalf("mark 2 read as %+v", m)
	}
	// The largest mark, the last port, a range to it, tcp by default.
	edge := parse(t, strings.Replace(strings.Replace(matchConfig, "fwmark: 1\n", "fwmark: 4294967295\n", 1),
		`{mark: 1, vip: 172.25.254.100, protocol: tcp, ports: [80, 443, "8000-8099"]}`, `{mark: 4294967295, vip: 172.25.254.100, ports: [65535, "1-79"]}`, 1))
	if m := edge.Marks[4294967295]; m.Protocol != nat.TCP || len(m.Ports) != 2 || m.Ports[0] != (nat.PortRange{Lo: 65535, Hi: 65535}) || m.Ports[1] != (nat.PortRange{Lo: 1, Hi: 79}) ||
		edge.Services[0].Mark != 4294967295 {
		t.Fatalf("mark 4294967295 read as %+v, its service as %+v", m, edge.Services[0])
	}
	bal := running(t, c)
	svc, err := bal.MatchService(1)
	if err != nil {
		t.Fatal(err)
	}
	if p := svc.Selector().PortsString(); p != "80,443,8000-8099" || svc.Name() != "web-sticky" {
		t.Fatalf("running FWM 1: %q, ports %q", svc.Name(), p)
	}
	if d := svc.Dests(); len(d) != 2 || d[0].Port != 0 || d[1].Port != 8443 {
		t.Fatalf("FWM 1's servers %v, want port 0 and 8443", d)
	}
	if _, err := bal.Service(nat.TCP, vip, 443); err != nil {
		t.Fatalf("the VIP:443 service beside the selector: %v", err)
	}

	next := parse(t, strings.Replace(matchConfig, `ports: [80, 443, "8000-8099"]`, `ports: [80, 443]`, 1))
	if err := apply(bal, next, nil); err != nil {
		t.Fatal(err)
	}
	if p := svc.Selector().PortsString(); p != "80,443" {
		t.Fatalf("after a reload, ports %q, want 80,443", p)
	}
	gone := parse(t, strings.Replace(strings.Replace(matchConfig, "  - {mark: 1, vip: 172.25.254.100, protocol: tcp, ports: [80, 443, \"8000-8099\"]}\n", "", 1),
		"  - name: web-sticky\n    fwmark: 1\n    scheduler: rr\n    persistence_timeout: 600\n    local_addresses: [172.25.84.10]\n    real_servers:\n      - {address: 10.20.1.2}\n      - {address: 10.20.2.2, port: 8443}\n", "", 1))
	if err := apply(bal, gone, nil); err != nil {
		t.Fatalf("a reload without the service and its mark: %v", err)
	}
	if _, err := bal.MatchService(1); err == nil {
		t.Fatal("FWM 1 still runs after a reload that removed it")
	}
	if err := apply(bal, c, nil); err != nil {
		t.Fatalf("a reload that adds it back: %v", err)
	}
	if _, err := bal.MatchService(1); err != nil {
		t.Fatalf("FWM 1 after a reload that adds it: %v", err)
	}
}

// Each refusal is one line naming its field.
func TestMatchConfigRefusals(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"mark: 2, vip", "mark: 1, vip", "marks[1].mark: 1 is already defined by marks[0]"},
		{"mark: 2, vip", "mark: 0, vip", "marks[1].mark: 0 is not a mark (1-4294967295)"},
		{"mark: 2, vip", "mark: 4294967296, vip", "marks[1].mark: 4294967296 is not a mark"},
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 'fd00:25:254::100'", "marks[1].vip: fd00:25:254::100 is IPv6 and interfaces.client has no address6"},
		{"udp, ports: [53]", "udp, ports: [65536]", `marks[1].ports[0]: "65536" is not in ports 1-65535`},
		{"udp, ports: [53]", "udp, ports: [\"1-65536\"]", `marks[1].ports[0]: "1-65536" is not in ports 1-65535`},
		{"udp, ports: [53]", "udp, ports: [\"0-5\"]", `marks[1].ports[0]: "0-5" is not in ports 1-65535`},
		{"udp, ports: [53]", "udp, ports: []", "marks[1].ports: is empty"},
		{"udp, ports: [53]", "udp, ports: [0]", `marks[1].ports[0]: "0" is not in ports 1-65535`},
		{"udp, ports: [53]", "udp, ports: [\"60-50\"]", `marks[1].ports[0]: "60-50" runs high to low`},
		{"udp, ports: [53]", "udp, ports: [x]", `marks[1].ports[0]: "x" is not a port or a range`},
		{"udp, ports: [53]", "udp, ports: [[1]]", `marks[1].ports[0]: [1] is not a port or a range`},
		{"udp, ports: [53]", "udp, ports: [53, \"50-60\"]", "marks[1].ports: ports 50-60 and 53 overlap"},
		{"protocol: udp", "protocol: sctp", `marks[1].protocol: "sctp" is not a protocol`},
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 172.25.254.x", `marks[1].vip: "172.25.254.x" is not an IP address`},
		{"protocol: udp, ports: [53]", "protocol: tcp, ports: [53, 8050]", "marks: mark 2: port 8050 of tcp 172.25.254.100 is mark 1's too"},
		{"fwmark: 1\n", "fwmark: 3\n", "services[0].fwmark: 3 is not defined in marks:"},
		{"fwmark: 1\n", "fwmark: -1\n", "services[0].fwmark: -1 is not a mark"},
		{"fwmark: 1\n", "fwmark: 1\n    port: 80\n", "services[0].fwmark: a match service takes its vip, protocol and ports from marks"},
		{"  - name: web-443\n    vip: 172.25.254.100\n    port: 443\n", "  - name: web-443\n    fwmark: 1\n", "services[1]: fwmark 1 is already defined by services[0]"},
		{"fwmark: 1\n", "fwmark: 1\n    protocol: udp\n", "services[0].fwmark: a match service takes its vip"},
		{"fwmark: 1\n", "fwmark: 1\n    vip: 172.25.254.100\n", "services[0].fwmark: a match service takes its vip"},
	} {
		if !strings.Contains(matchConfig, tc.from) {
			t.Fatalf("bad test: %q not in the config", tc.from)
		}
		_, err := Parse(strings.Replace(matchConfig, tc.from, tc.to, 1))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q -> %q: error %v, want it to say %q", tc.from, tc.to, err, tc.want)
		}
	}
}
