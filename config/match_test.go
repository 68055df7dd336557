package config

import (
	"net/netip"
	"slices"
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
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 172.25.254.0/23", "marks[1].vip: 172.25.254.0/23 is more than 256 addresses (IPv4 /24 or longer, IPv6 /120 or longer)"},
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 172.25.254.97/29", "marks[1].vip: 172.25.254.97/29 has host bits set: its prefix is 172.25.254.96/29"},
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 172.25.254.96/33", `marks[1].vip: "172.25.254.96/33" is not an address or a prefix`},
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 0.0.0.0/0", "marks[1].vip: 0.0.0.0/0 is more than 256 addresses"},
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 172.25.254.96/-1", `marks[1].vip: "172.25.254.96/-1" is not an address or a prefix`},
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 172.25.254.96/x", `marks[1].vip: "172.25.254.96/x" is not an address or a prefix`},
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 172.25.254.x/29", `marks[1].vip: "172.25.254.x" is not an IP address`},
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: '::ffff:172.25.254.96/125'", `marks[1].vip: ::ffff:172.25.254.96 is an IPv4-mapped IPv6 address`},
		// A prefix holding tapvs's own client address, or its subnet's
		// broadcast address: the dry run refuses the address by name.
		{"mark: 2, vip: 172.25.254.100", "mark: 2, vip: 172.25.254.248/29", "marks: mark 2: VIP 172.25.254.254 is tapvs's own address on the client side"},
		// Overlap across prefixes: a port of one VIP in two selectors.
		{"mark: 2, vip: 172.25.254.100, protocol: udp, ports: [53]", "mark: 2, vip: 172.25.254.96/29, protocol: tcp, ports: [443]", "marks: mark 2: port 443 of tcp 172.25.254.96/29 is mark 1's too"},
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

// A selector's vip may be a prefix of up to 256 addresses: read as its
// first address and length (a /32 is the address alone), listed as
// written, and the running match service answers on each of its
// addresses. IPv6's bound is /120.
func TestMatchConfigPrefix(t *testing.T) {
	for _, tc := range []struct {
		vip  string
		addr string
		bits int
	}{
		{"172.25.254.96/29", "172.25.254.96", 29},
		{"172.25.254.100/32", "172.25.254.100", 0},
		{"172.25.254.0/24", "172.25.254.0", 24},
	} {
		a, bits, err := vipPrefix(tc.vip)
		if err != nil || a != netip.MustParseAddr(tc.addr) || bits != tc.bits {
			t.Errorf("vip %s read as %v /%d (%v), want %s /%d", tc.vip, a, bits, err, tc.addr, tc.bits)
		}
	}
	if _, _, err := vipPrefix("fd00::/119"); err == nil || !strings.Contains(err.Error(), "fd00::/119 is more than 256 addresses") {
		t.Errorf("fd00::/119: %v", err)
	}
	if a, bits, err := vipPrefix("fd00::100/120"); err != nil || a != netip.MustParseAddr("fd00::100") || bits != 120 {
		t.Errorf("fd00::100/120 read as %v /%d (%v)", a, bits, err)
	}
	c := parse(t, strings.Replace(matchConfig, "vip: 172.25.254.100, protocol: tcp", "vip: 172.25.254.96/29, protocol: tcp", 1))
	if m := c.Marks[1]; m.Addr != netip.MustParseAddr("172.25.254.96") || m.Bits != 29 || m.VIPString() != "172.25.254.96/29" {
		t.Fatalf("mark 1 read as %+v", m)
	}
	if s := c.Services[0]; s.VIP != netip.MustParseAddr("172.25.254.96") {
		t.Fatalf("its service read as %+v", s)
	}
	bal := running(t, c)
	svc, err := bal.MatchService(1)
	if err != nil || svc.VIPPrefix() != netip.MustParsePrefix("172.25.254.96/29") {
		t.Fatalf("FWM 1: %v, %v", svc, err)
	}
	vips, _ := bal.Addresses()
	for a := netip.MustParseAddr("172.25.254.96"); a != netip.MustParseAddr("172.25.254.104"); a = a.Next() {
		if !slices.Contains(vips, a) {
			t.Errorf("the balancer does not answer for %v of the prefix: %v", a, vips)
		}
	}
	if n := len(vips); n != 8 { // web-443's 172.25.254.100 is one of them
		t.Errorf("%d VIPs, want 8 for the prefix (web-443's inside it): %v", n, vips)
	}
}
