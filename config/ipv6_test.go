package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// valid6 is valid with an IPv6 service beside an IPv4 one: both sides have
// address6, and the server side routes IPv6 through a router in its prefix
// and through one known by its link-local address.
const valid6 = `
interfaces:
  client: {name: tc, address: 172.25.254.254/24, address6: fd00:25:254::fe/64}
  server:
    name: ts
    address: 172.25.84.4/24
    address6: fd00:25:84::4/64
    routes:
      - {dst: 10.20.0.0/16, via: 172.25.84.1}
      - {dst: fd00:20::/32, via: fd00:25:84::1}
      - {dst: fd00:21::1/48, via: fe80::1}
services:
  - vip: 172.25.254.100
    port: 80
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 80}
  - vip: 2001:db8::1
    port: 80
    local_addresses: [fd00:25:84::10, fd00:25:84::11]
    real_servers:
      - {address: 'fd00:20:1::2', port: 80}
      - {address: 'fd00:20:2::2', port: 8080, weight: 0}
`

// The fields of an IPv6 configuration are read as given. (Parse also needs
// the balancer to accept IPv6 services: ipv6_nat_test.go.)
func TestIPv6Fields(t *testing.T) {
	c, err := parseFields(valid6, false)
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	if c.Client.Address6 != p("fd00:25:254::fe/64") || c.Server.Address6 != p("fd00:25:84::4/64") || c.Client.Address != p("172.25.254.254/24") {
		t.Fatalf("addresses: client %s %s, server %s", c.Client.Address, c.Client.Address6, c.Server.Address6)
	}
	wantRoutes := []Route{{p("10.20.0.0/16"), a("172.25.84.1")}, {p("fd00:20::/32"), a("fd00:25:84::1")}, {p("fd00:21::/48"), a("fe80::1")}}
	if !slices.Equal(c.Server.Routes, wantRoutes) {
		t.Fatalf("routes %v, want %v", c.Server.Routes, wantRoutes)
	}
	s := c.Services[1]
	if s.VIP != a("2001:db8::1") || !slices.Equal(s.LocalAddresses, []netip.Addr{a("fd00:25:84::10"), a("fd00:25:84::11")}) ||
		s.RealServers[0].Address != a("fd00:20:1::2") || s.RealServers[1].Port != 8080 || s.RealServers[1].Weight != 0 {
		t.Fatalf("IPv6 service: %+v", s)
	}
	if c.Services[0].VIP != a("172.25.254.100") {
		t.Fatalf("IPv4 service beside it: %+v", c.Services[0])
	}
}

// Every IPv6 refusal is one line naming the field and the reason; the keys
// that stay IPv4 only say so.
func TestIPv6Refusals(t *testing.T) {
	const lip6 = "local_addresses: [fd00:25:84::10, fd00:25:84::11]"
	cases := map[string]struct{ from, to, want string }{
		"address is IPv6":       {"address: 172.25.84.4/24", "address: fd00:25:84::5/64", "interfaces.server.address: fd00:25:84::5/64 is IPv6: address is the side's IPv4 address; give its IPv6 address as address6"},
		"address6 syntax":       {"address6: fd00:25:84::4/64", "address6: fd00:25:84::4", `interfaces.server.address6: "fd00:25:84::4" is not an IPv6 address with prefix length (like fd00:25:84::4/64)`},
		"address6 zone":         {"address6: fd00:25:84::4/64", "address6: fe80::4%ts/64", `interfaces.server.address6: "fe80::4%ts/64" is not an IPv6 address with prefix length`},
		"address6 is IPv4":      {"address6: fd00:25:84::4/64", "address6: 172.25.84.5/24", "interfaces.server.address6: 172.25.84.5/24 is IPv4: address6 is the side's IPv6 address; its IPv4 address goes in address"},
		"address6 mapped":       {"address6: fd00:25:84::4/64", "address6: '::ffff:172.25.84.5/120'", "interfaces.server.address6: ::ffff:172.25.84.5/120 is an IPv4-mapped address"},
		"address6 link-local":   {"address6: fd00:25:84::4/64", "address6: fe80::4/64", "interfaces.server.address6: fe80::4/64 is link-local: address6 needs a global or unique local address"},
		"address6 multicast":    {"address6: fd00:25:84::4/64", "address6: ff02::1/64", "interfaces.server.address6: ff02::1/64 is a multicast address, not a host"},
		"address6 unspecified":  {"address6: fd00:25:84::4/64", "address6: '::/64'", "interfaces.server.address6: ::/64 is the unspecified address, not a host"},
		"address6 loopback":     {"address6: fd00:25:84::4/64", "address6: '::1/128'", "interfaces.server.address6: ::1/128 is the loopback address"},
		"address6 anycast":      {"address6: fd00:25:84::4/64", "address6: 'fd00:25:84::/64'", "interfaces.server.address6: fd00:25:84::/64 is its prefix's Subnet-Router anycast address"},
		"route dst":             {"dst: fd00:20::/32", "dst: fd00:20::", `interfaces.server.routes[1].dst: "fd00:20::" is not a prefix (like 10.20.0.0/16 or fd00:20::/48)`},
		"route mixed v6 via":    {"dst: 10.20.0.0/16, via: 172.25.84.1", "dst: 10.20.0.0/16, via: 'fd00:25:84::1'", "interfaces.server.routes[0].via: fd00:25:84::1 is IPv6 but dst 10.20.0.0/16 is IPv4: a route's dst and via are of one family"},
		"route mixed v4 via":    {"via: fd00:25:84::1}", "via: 172.25.84.1}", "interfaces.server.routes[1].via: 172.25.84.1 is IPv4 but dst fd00:20::/32 is IPv6: a route's dst and via are of one family"},
		"route via off-link":    {"via: fd00:25:84::1}", "via: 'fd00:25:85::1'}", "interfaces.server.routes[1].via: fd00:25:85::1 is not on-link (not in fd00:25:84::/64, nor link-local fe80::/10)"},
		"route via zone":        {"via: fe80::1}", "via: 'fe80::1%ts'}", `interfaces.server.routes[2].via: "fe80::1%ts" is not a router's address`},
		"route v6 no address6":  {"    address6: fd00:25:84::4/64\n", "", "interfaces.server.routes[1].dst: fd00:20::/32 is IPv6 and this side has no address6"},
		"VIP needs address6":    {", address6: fd00:25:254::fe/64}", "}", "services[1].vip: 2001:db8::1 is IPv6 and interfaces.client has no address6"},
		"LIP needs address6":    {"    address6: fd00:25:84::4/64\n    routes:\n      - {dst: 10.20.0.0/16, via: 172.25.84.1}\n      - {dst: fd00:20::/32, via: fd00:25:84::1}\n      - {dst: fd00:21::1/48, via: fe80::1}\n", "", "services[1].local_addresses[0]: fd00:25:84::10 is IPv6 and interfaces.server has no address6"},
		"VIP zone":              {"vip: 2001:db8::1", "vip: 'fe80::1%tc'", `services[1].vip: "fe80::1%tc" has a zone: a service's addresses are not scoped to a link`},
		"VIP mapped":            {"vip: 2001:db8::1", "vip: '::ffff:172.25.254.101'", "services[1].vip: ::ffff:172.25.254.101 is an IPv4-mapped IPv6 address: write it as 172.25.254.101"},
		"LIP other family":      {"[172.25.84.10]", "[172.25.84.10, fd00:25:84::12]", "services[0].local_addresses[1]: local address fd00:25:84::12 is IPv6 but service TCP 172.25.254.100:80's server side is IPv4 (172.25.84.10): its local addresses and real servers are one family"},
		"LIP v4 for v6 VIP":     {lip6, "local_addresses: [fd00:25:84::10, 172.25.84.11]", "services[1].local_addresses[1]: local address 172.25.84.11 is IPv4 but service TCP [2001:db8::1]:80's server side is IPv6 (fd00:25:84::10): its local addresses and real servers are one family"},
		"RS other family":       {"{address: 10.20.1.2, port: 80}", "{address: 'fd00:20:1::3', port: 80}", "services[0].real_servers[0]: real server [fd00:20:1::3]:80 is IPv6 but service TCP 172.25.254.100:80's server side is IPv4 (172.25.84.10): its local addresses and real servers are one family"},
		"NAT46 RS v4":           {"[172.25.84.10]", "[fd00:25:84::12]", "services[0].real_servers[0]: real server 10.20.1.2:80 is IPv4 but service TCP 172.25.254.100:80's server side is IPv6 (fd00:25:84::12): its local addresses and real servers are one family"},
		"RS v4 for v6 VIP":      {"{address: 'fd00:20:2::2', port: 8080, weight: 0}", "{address: 10.20.2.2, port: 8080}", "services[1].real_servers[1]: real server 10.20.2.2:8080 is IPv4 but service TCP [2001:db8::1]:80's server side is IPv6 (fd00:25:84::10): its local addresses and real servers are one family"},
		"RS zone":               {"{address: 'fd00:20:1::2', port: 80}", "{address: 'fd00:20:1::2%ts', port: 80}", `services[1].real_servers[0].address: "fd00:20:1::2%ts" has a zone`},
		"duplicate v6 service":  {"  - vip: 2001:db8::1\n    port: 80\n", "  - vip: 2001:db8::1\n    port: 80\n    local_addresses: [fd00:25:84::12]\n    real_servers: [{address: 'fd00:20:1::2', port: 80}]\n  - vip: 2001:db8::1\n    port: 80\n", "services[2]: TCP [2001:db8::1]:80 is already defined by services[1]"},
		"v4 list on v6 VIP":     {"  - vip: 2001:db8::1\n    port: 80\n", "  - vip: 2001:db8::1\n    port: 80\n    deny: ['fd00:25:254::/64', 10.0.0.0/8]\n", "services[1].deny[1]: 10.0.0.0/8 is IPv4 and the service's VIP 2001:db8::1 is IPv6: a list holds prefixes of its clients' family"},
		"peer_address v6":       {"name: ts\n", "name: ts\n    peer_address: fd00:25:84::1/64\n", "interfaces.server.peer_address: fd00:25:84::1/64 is IPv6: peer_address is the kernel end's IPv4 address; give its IPv6 address as peer_address6"},
		"peer_address6 v4":      {"name: ts\n", "name: ts\n    peer_address6: 172.25.84.1/24\n", "interfaces.server.peer_address6: 172.25.84.1/24 is IPv4: peer_address6 is the kernel end's IPv6 address; its IPv4 address goes in peer_address"},
		"peer_address6 syntax":  {"name: ts\n", "name: ts\n    peer_address6: fd00:25:84::1\n    peer_address: 172.25.84.1/24\n    masquerade: true\n", `interfaces.server.peer_address6: "fd00:25:84::1" is not an IPv6 address with prefix length (like fd00:25:84::1/64)`},
		"peer_address6 subnet":  {"name: ts\n", "name: ts\n    peer_address6: fd00:25:85::1/64\n", "interfaces.server.peer_address6: fd00:25:85::1/64 is not in address6's prefix fd00:25:84::/64"},
		"peer_address6 prefix":  {"name: ts\n", "name: ts\n    peer_address6: fd00:25:84::1/48\n", "interfaces.server.peer_address6: fd00:25:84::1/48 is not in address6's prefix fd00:25:84::/64"},
		"peer_address6 self":    {"name: ts\n", "name: ts\n    peer_address6: fd00:25:84::4/64\n", "interfaces.server.peer_address6: fd00:25:84::4 is tapvs's own address6 on this side"},
		"peer_address6 anycast": {"name: ts\n", "name: ts\n    peer_address6: 'fd00:25:84::/64'\n", "interfaces.server.peer_address6: fd00:25:84::/64 is its prefix's Subnet-Router anycast address"},
		"peer_address6 no address6": {"    address6: fd00:25:84::4/64\n    routes:\n      - {dst: 10.20.0.0/16, via: 172.25.84.1}\n      - {dst: fd00:20::/32, via: fd00:25:84::1}\n      - {dst: fd00:21::1/48, via: fe80::1}\n",
			"    peer_address6: fd00:25:84::1/64\n    routes:\n      - {dst: 10.20.0.0/16, via: 172.25.84.1}\n", "interfaces.server.peer_address6: needs address6: the kernel end's IPv6 address is in tapvs's IPv6 prefix on this side"},
		"masquerade address6": {"name: ts\n", "name: ts\n    peer_address: 172.25.84.1/24\n    masquerade: true\n", "interfaces.server.masquerade: this side has address6 but no peer_address6: its IPv6 prefix would leave unmasqueraded; give peer_address6"},
		"masquerade no peer":  {"name: ts\n", "name: ts\n    masquerade: true\n", "interfaces.server.masquerade: needs peer_address (IPv4) or peer_address6 (IPv6): the kernel's route back to this side"},
		"address6 refused":    {"    address6: fd00:25:84::4/64\n", "    address6: fd00:25:84::4\n    peer_address: 172.25.84.1/24\n    peer_address6: fd00:25:85::1/64\n    masquerade: true\n", `interfaces.server.address6: "fd00:25:84::4" is not an IPv6 address`},
		"publish v6 no peer6": {"name: tc,", "name: tc, peer_address: 172.25.254.1/24, publish: [{port: 80, vip: '2001:db8::1'}],", "interfaces.client.publish[0].vip: 2001:db8::1 is IPv6 and this side has no peer_address6: the kernel has no route to it"},
		"publish v4 no peer":  {"name: tc,", "name: tc, peer_address6: 'fd00:25:254::1/64', publish: [{port: 80, vip: 172.25.254.100}],", "interfaces.client.publish[0].vip: 172.25.254.100 is IPv4 and this side has no peer_address: the kernel has no route to it"},
		"publish no peer":     {"name: tc,", "name: tc, publish: [{port: 80, vip: '2001:db8::1'}],", "interfaces.client.publish: needs peer_address or peer_address6: the kernel's route to the VIPs"},
		"publish v6 mapped":   {"name: tc,", "name: tc, peer_address6: 'fd00:25:254::1/64', publish: [{port: 80, vip: '::ffff:172.25.254.100'}],", "interfaces.client.publish[0].vip: ::ffff:172.25.254.100 is an IPv4-mapped IPv6 address: write it as 172.25.254.100"},
		"mtu below 1280":      {"name: ts\n", "name: ts\n    mtu: 1279\n", "interfaces.server.mtu: 1279 is below IPv6's minimum MTU of 1280, and this side has address6"},
		"mtu 576 IPv6":        {"name: ts\n", "name: ts\n    mtu: 576\n", "interfaces.server.mtu: 576 is below IPv6's minimum MTU of 1280, and this side has address6"},
		"publish v6 zone":     {"name: tc,", "name: tc, peer_address6: 'fd00:25:254::1/64', publish: [{port: 80, vip: 'fe80::1%tc'}],", "interfaces.client.publish[0].vip: fe80::1%tc has a zone: a VIP is not scoped to a link"},
	}
	// A missing address6 refuses each address that needs it: a line each.
	extra := map[string]int{"route v6 no address6": 3, "LIP needs address6": 1, "peer_address6 no address6": 2}
	for name, tc := range cases {
		if !strings.Contains(valid6, tc.from) {
			t.Fatalf("%s: bad test: %q not in config", name, tc.from)
		}
		_, err := Parse(strings.Replace(valid6, tc.from, tc.to, 1))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		lines := strings.Split(err.Error(), "\n")
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, tc.want) }) || len(lines) != extra[name]+1 {
			t.Errorf("%s: error %q, want %d line(s), one saying %q", name, err, extra[name]+1, tc.want)
		}
	}
}

// A side's keys that stay IPv4 go on working beside address6, and the
// refusals that were IPv4's are unchanged (the old file's behaviour).
func TestIPv6BesideSidecarKeys(t *testing.T) {
	c, err := parseFields(strings.Replace(valid6, "name: tc,", "name: tc, peer_address: 172.25.254.1/24, publish: [{port: 80, vip: 172.25.254.100}],", 1), false)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Client.PeerAddress.IsValid() || len(c.Client.Publish) != 1 || !c.Client.Address6.IsValid() {
		t.Fatalf("client %+v", c.Client)
	}
}

// valid6's server side's IPv4 route and its IPv4 service (with its IPv4
// LIP), removed to make the server side IPv6 only.
const (
	valid4Route   = "      - {dst: 10.20.0.0/16, via: 172.25.84.1}\n"
	valid4Service = "  - vip: 172.25.254.100\n    port: 80\n    local_addresses: [172.25.84.10]\n    real_servers:\n      - {address: 10.20.1.2, port: 80}\n"
)

// A dual-stack sidecar: each family's kernel end, masquerade of both and
// publish of a VIP of each family in one file; an IPv6-only kernel end
// (peer_address6 alone) masquerades and publishes IPv6.
func TestIPv6SidecarKeys(t *testing.T) {
	c, err := Parse(strings.NewReplacer(
		"name: tc,", "name: tc, peer_address: 172.25.254.1/24, peer_address6: 'fd00:25:254::1/64', publish: [{port: 80, vip: 172.25.254.100}, {protocol: udp, port: 53, vip: '2001:db8::1'}],",
		"name: ts\n", "name: ts\n    peer_address: 172.25.84.1/24\n    peer_address6: fd00:25:84::1/64\n    masquerade: true\n").Replace(valid6))
	if err != nil {
		t.Fatal(err)
	}
	if c.Client.PeerAddress6.String() != "fd00:25:254::1/64" || c.Server.PeerAddress6.String() != "fd00:25:84::1/64" || !c.Server.Masquerade ||
		c.Server.PeerAddress.String() != "172.25.84.1/24" {
		t.Fatalf("client %+v\nserver %+v", c.Client, c.Server)
	}
	want := []Published{{6, 80, netip.MustParseAddr("172.25.254.100")}, {17, 53, netip.MustParseAddr("2001:db8::1")}}
	if !slices.Equal(c.Client.Publish, want) {
		t.Fatalf("publish %+v, want %+v", c.Client.Publish, want)
	}
	c, err = Parse(strings.NewReplacer(
		// A /127 (RFC 6164) has no Subnet-Router anycast address: the
		// kernel end may have the address with host bits zero.
		"name: tc, address: 172.25.254.254/24, address6: fd00:25:254::fe/64", "name: tc, address: 172.25.254.254/24, address6: 'fd00:25:254::ff/127', peer_address6: 'fd00:25:254::fe/127', publish: [{port: 80, vip: '2001:db8::1'}]",
		// The server side carries IPv6 only: no IPv4 route, no IPv4 LIP.
		"name: ts\n", "name: ts\n    peer_address6: fd00:25:84::1/64\n    masquerade: true\n",
		valid4Route, "", valid4Service, "").Replace(valid6))
	if err != nil {
		t.Fatal(err)
	}
	if c.Client.PeerAddress.IsValid() || c.Server.PeerAddress.IsValid() || c.Client.PeerAddress6.String() != "fd00:25:254::fe/127" || len(c.Client.Publish) != 1 {
		t.Fatalf("client %+v\nserver %+v", c.Client, c.Server)
	}
}

// masquerade with peer_address6 alone is refused on a side that carries
// IPv4 (an IPv4 route, or the server side's IPv4 LIPs): the kernel end has
// no IPv4 address to route it by, and it would leave unmasqueraded. One
// line, naming the first IPv4 route, else the first IPv4 LIP; a refused
// peer address is not missing.
func TestMasqueradeIPv6OnlyRefusals(t *testing.T) {
	const ts6 = "name: ts\n    peer_address6: fd00:25:84::1/64\n    masquerade: true\n"
	route := "interfaces.server.masquerade: this side has an IPv4 route (routes[%d], 10.20.0.0/16) but no peer_address: the kernel end has no IPv4 address to route it by, and its IPv4 would leave unmasqueraded; give peer_address"
	lip := "interfaces.server.masquerade: services[%d]'s local address 172.25.84.10 is IPv4 but this side has no peer_address: the kernel end has no IPv4 address to route it by, and it would leave unmasqueraded; give peer_address"
	badPeer := "interfaces.server.peer_address: 172.25.85.1/24 is not in address's subnet 172.25.84.0/24"
	badPeer6 := "interfaces.server.peer_address6: fd00:25:85::1/64 is not in address6's prefix fd00:25:84::/64"
	unreadPeer := `interfaces.server.peer_address: "172.25.84.1" is not an IPv4 address with prefix length (like 172.25.84.1/24)`
	unreadPeer6 := `interfaces.server.peer_address6: "fd00:25:84::1" is not an IPv6 address with prefix length (like fd00:25:84::1/64)`
	v6first := "  - vip: 2001:db8::1\n    port: 80\n    local_addresses: [fd00:25:84::10, fd00:25:84::11]\n    real_servers:\n      - {address: 'fd00:20:1::2', port: 80}\n"
	cases := map[string]struct {
		repl []string
		want []string // the lines, in order; none: accepted
	}{
		"route":       {[]string{"name: ts\n", ts6}, []string{fmt.Sprintf(route, 0)}},
		"route later": {[]string{"name: ts\n", ts6, valid4Route, "", "via: fe80::1}\n", "via: fe80::1}\n" + valid4Route}, []string{fmt.Sprintf(route, 2)}},
		"client route": {[]string{"name: tc,", "name: tc, peer_address6: 'fd00:25:254::1/64', masquerade: true, routes: [{dst: 'fd00:30::/32', via: 'fd00:25:254::1'}, {dst: 0.0.0.0/0, via: 172.25.254.1}],"},
			[]string{"interfaces.client.masquerade: this side has an IPv4 route (routes[1], 0.0.0.0/0) but no peer_address: the kernel end has no IPv4 address to route it by, and its IPv4 would leave unmasqueraded; give peer_address"}},
		"LIP":           {[]string{"name: ts\n", ts6, valid4Route, ""}, []string{fmt.Sprintf(lip, 0)}},
		"LIP later":     {[]string{"name: ts\n", ts6, valid4Route, "", valid4Service, v6first + valid4Service, "vip: 2001:db8::1\n    port: 80\n    local_addresses: [fd00:25:84::10, fd00:25:84::11]\n    real_servers:\n      - {address: 'fd00:20:1::2', port: 80}\n      - {address: 'fd00:20:2::2', port: 8080, weight: 0}\n", "vip: 2001:db8::2\n    port: 80\n    local_addresses: [fd00:25:84::12]\n    real_servers:\n      - {address: 'fd00:20:2::2', port: 8080}\n"}, []string{fmt.Sprintf(lip, 1)}},
		"IPv6 only":     {[]string{"name: ts\n", ts6, valid4Route, "", valid4Service, ""}, nil},
		"no masquerade": {[]string{"name: ts\n", "name: ts\n    peer_address6: fd00:25:84::1/64\n"}, nil},
		"both peers":    {[]string{"name: ts\n", ts6 + "    peer_address: 172.25.84.1/24\n"}, nil},
		// The peer address to fix is the refused one.
		"peer refused":     {[]string{"name: ts\n", ts6 + "    peer_address: 172.25.85.1/24\n"}, []string{badPeer}},
		"peer refused LIP": {[]string{"name: ts\n", ts6 + "    peer_address: 172.25.85.1/24\n", valid4Route, ""}, []string{badPeer}},
		// A refused peer_address6 is there: what lacks is peer_address.
		"peer6 refused":     {[]string{"name: ts\n", "name: ts\n    peer_address6: fd00:25:85::1/64\n    masquerade: true\n"}, []string{badPeer6, fmt.Sprintf(route, 0)}},
		"peer unread LIP":   {[]string{"name: ts\n", ts6 + "    peer_address: 172.25.84.1\n", valid4Route, ""}, []string{unreadPeer}},
		"peer6 unread LIP":  {[]string{"name: ts\n", "name: ts\n    peer_address6: fd00:25:84::1\n    masquerade: true\n", valid4Route, ""}, []string{unreadPeer6, fmt.Sprintf(lip, 0)}},
		"peer6 refused LIP": {[]string{"name: ts\n", "name: ts\n    peer_address6: fd00:25:85::1/64\n    masquerade: true\n", valid4Route, ""}, []string{badPeer6, fmt.Sprintf(lip, 0)}},
	}
	for name, tc := range cases {
		for i := 0; i < len(tc.repl); i += 2 {
			if !strings.Contains(valid6, tc.repl[i]) {
				t.Fatalf("%s: bad test: %q not in config", name, tc.repl[i])
			}
		}
		_, err := Parse(strings.NewReplacer(tc.repl...).Replace(valid6))
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.want == nil:
		case err == nil:
			t.Errorf("%s: accepted, want %q", name, tc.want)
		case err.Error() != strings.Join(tc.want, "\n"):
			t.Errorf("%s: error\n%s\nwant\n%s", name, err, strings.Join(tc.want, "\n"))
		}
	}
}

// An IPv6 side's MTU may be IPv6's minimum, 1280; a side without address6
// may go lower (IPv4's 576 is the bound there).
func TestIPv6MTUFloor(t *testing.T) {
	if _, err := Parse(strings.Replace(valid6, "name: ts\n", "name: ts\n    mtu: 1280\n", 1)); err != nil {
		t.Fatalf("1280 on an IPv6 side: %v", err)
	}
	v4 := strings.Replace(valid6, "name: tc, address: 172.25.254.254/24, address6: fd00:25:254::fe/64", "name: tc, address: 172.25.254.254/24, mtu: 1000", 1)
	v4 = strings.Replace(v4, "  - vip: 2001:db8::1\n", "  - vip: 172.25.254.101\n", 1)
	if _, err := Parse(v4); err != nil {
		t.Fatalf("1000 on an IPv4-only side: %v", err)
	}
}
