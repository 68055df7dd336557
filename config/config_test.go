package config

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/nat"
)

const valid = `
interfaces:
  client: {name: tc, address: 172.25.254.254/24}
  server:
    name: ts
    address: 172.25.84.4/24
    routes: [{dst: 10.20.0.0/16, via: 172.25.84.1}]
services:
  - vip: 172.25.254.100
    port: 80
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80, weight: 0}
`

func TestShippedConfigIsValid(t *testing.T) {
	c, err := Load("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Services) != 14 || c.Services[2].ClientAddress != nat.ClientAddrProxyV2 || c.Services[5].ClientAddress != nat.ClientAddrProxyV2 || c.Services[0].Scheduler != "wrr" || !c.Services[1].Synproxy || c.Timeouts.UDP != 300*time.Second ||
		c.Synproxy.MSS != 1460 || c.Synproxy.WScale != 7 || c.Synproxy.RetryInterval != time.Second {
		t.Fatalf("unexpected: %+v", c.Services)
	}
	// The IPv6 services, and NAT64's: an IPv6 VIP, IPv4 behind it.
	if s := c.Services[6]; !s.VIP.Is6() || !s.LocalAddresses[0].Is6() || !s.RealServers[0].Address.Is6() || !c.Client.Address6.IsValid() || !c.Server.Address6.IsValid() {
		t.Fatalf("web6: %+v", s)
	}
	if s := c.Services[10]; s.Name != "web64" || !s.VIP.Is6() || !s.LocalAddresses[0].Is4() || !s.RealServers[0].Address.Is4() {
		t.Fatalf("web64: %+v", s)
	}
	// NAT46's: an IPv4 VIP, IPv6 behind it.
	if s := c.Services[12]; s.Name != "web46" || !s.VIP.Is4() || !s.LocalAddresses[0].Is6() || !s.RealServers[0].Address.Is6() {
		t.Fatalf("web46: %+v", s)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(valid)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Services[0]
	if s.Scheduler != "wlc" || s.Protocol.String() != "TCP" || s.RealServers[0].Weight != 1 || s.RealServers[1].Weight != 0 {
		t.Fatalf("defaults: %+v", s)
	}
	if c.PortMin != 5000 || c.PortMax != 65535 || c.Client.MTU != 1500 || c.Client.Queues != 1 || c.BusyPoll != 0 {
		t.Fatalf("limits/interfaces defaults: %+v", c)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	cases := map[string]struct{ from, to, want string }{
		"port":         {"port: 80}\n", "port: 70000}\n", "services[0].real_servers[0].port: 70000 is not a port"},
		"vip":          {"vip: 172.25.254.100", "vip: 300.1.1.1", `services[0].vip: "300.1.1.1" is not an IP address`},
		"scheduler":    {"port: 80\n    local", "port: 80\n    scheduler: fifo\n    local", `services[0].scheduler: "fifo" is not a scheduler`},
		"lip subnet":   {"[172.25.84.10]", "[10.9.9.9]", "services[0].local_addresses[0]: local address 10.9.9.9 is not in the server side's subnet"},
		"via":          {"via: 172.25.84.1", "via: 10.1.1.1", "interfaces.server.routes[0].via: 10.1.1.1 is not on-link"},
		"weight":       {"weight: 0}", "weight: -1}", "services[0].real_servers[1].weight: -1 is out of range"},
		"unknown key":  {"port: 80\n    local", "port: 80\n    schedular: rr\n    local", "schedular"},
		"ipv6":         {"vip: 172.25.254.100", "vip: 2001:db8::1", "services[0].vip: 2001:db8::1 is IPv6 and interfaces.client has no address6"},
		"no lips":      {"local_addresses: [172.25.84.10]", "local_addresses: []", "FULLNAT needs at least one local address"},
		"txqueuelen":   {"name: ts\n", "name: ts\n    txqueuelen: -1\n", "interfaces.server.txqueuelen: -1 is not a queue length in frames"},
		"client addr":  {"port: 80\n    local", "port: 80\n    client_address: uoa\n    local", `services[0].client_address: "uoa" is not a client address mode`},
		"udp toa":      {"port: 80\n    local", "port: 80\n    protocol: udp\n    client_address: toa\n    local", "services[0].client_address: toa is TCP only"},
		"timestamps":   {"port: 80\n    local", "port: 80\n    tcp_timestamps: strip\n    local", `services[0].tcp_timestamps: "strip" is not a timestamp mode (translate, remove)`},
		"udp ts":       {"port: 80\n    local", "port: 80\n    protocol: udp\n    tcp_timestamps: remove\n    local", "services[0].tcp_timestamps: a UDP service has no TCP timestamps"},
		"busy poll":    {"interfaces:\n", "interfaces:\n  busy_poll: 2s\n", `interfaces.busy_poll: "2s" is not a duration from 0 to 1s`},
		"udp synproxy": {"port: 80\n    local", "port: 80\n    protocol: udp\n    synproxy: true\n    local", "services[0].synproxy: only a TCP service can have a SYN proxy"},
		"peer subnet":  {"name: ts\n", "name: ts\n    peer_address: 172.25.85.1/24\n", "interfaces.server.peer_address: 172.25.85.1/24 is not in address's subnet 172.25.84.0/24"},
		"peer prefix":  {"name: ts\n", "name: ts\n    peer_address: 172.25.84.1/16\n", "interfaces.server.peer_address: 172.25.84.1/16 is not in address's subnet"},
		"peer is self": {"name: ts\n", "name: ts\n    peer_address: 172.25.84.4/24\n", "interfaces.server.peer_address: 172.25.84.4 is tapvs's own address"},
		"peer syntax":  {"name: ts\n", "name: ts\n    peer_address: 172.25.84.1\n", `interfaces.server.peer_address: "172.25.84.1" is not an IPv4 address with prefix length`},
		"masq no peer": {"name: ts\n", "name: ts\n    masquerade: true\n", "interfaces.server.masquerade: needs peer_address"},
		"publish srv":  {"name: ts\n", "name: ts\n    peer_address: 172.25.84.1/24\n    publish: [{port: 80, vip: 172.25.254.100}]\n", "interfaces.server.publish: is the client side's"},
		"publish peer": {"name: tc,", "name: tc, publish: [{port: 80, vip: 172.25.254.100}],", "interfaces.client.publish: needs peer_address"},
		"publish port": {"name: tc,", "name: tc, peer_address: 172.25.254.1/24, publish: [{port: 0, vip: 172.25.254.100}],", "interfaces.client.publish[0].port: 0 is not a port"},
		"publish prot": {"name: tc,", "name: tc, peer_address: 172.25.254.1/24, publish: [{protocol: sctp, port: 80, vip: 172.25.254.100}],", `interfaces.client.publish[0].protocol: "sctp" is not tcp or udp`},
		"publish vip":  {"name: tc,", "name: tc, peer_address: 172.25.254.1/24, publish: [{port: 80, vip: foo}],", `interfaces.client.publish[0].vip: "foo" is not an IP address`},
	}
	for name, tc := range cases {
		if !strings.Contains(valid, tc.from) {
			t.Fatalf("%s: bad test: %q not in config", name, tc.from)
		}
		_, err := Parse(strings.Replace(valid, tc.from, tc.to, 1))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to say %q", name, err, tc.want)
		}
	}
}

// The sidecar's keys: the kernel end's address and the masquerade.
func TestPeerAddressAndMasquerade(t *testing.T) {
	c, err := Parse(strings.Replace(valid, "name: ts\n", "name: ts\n    peer_address: 172.25.84.1/24\n    masquerade: true\n", 1))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.PeerAddress.String() != "172.25.84.1/24" || !c.Server.Masquerade || c.Client.PeerAddress.IsValid() || c.Client.Masquerade {
		t.Fatalf("client %+v, server %+v", c.Client, c.Server)
	}
	c, err = Parse(strings.Replace(valid, "name: tc,", "name: tc, peer_address: 172.25.254.1/24, publish: [{port: 80, vip: 172.25.254.100}, {protocol: udp, port: 53, vip: 172.25.254.100}],", 1))
	if err != nil {
		t.Fatal(err)
	}
	if want := []Published{{syscall.IPPROTO_TCP, 80, netip.MustParseAddr("172.25.254.100")}, {syscall.IPPROTO_UDP, 53, netip.MustParseAddr("172.25.254.100")}}; !slices.Equal(c.Client.Publish, want) {
		t.Fatalf("publish: %+v", c.Client.Publish)
	}
}

func TestTimeouts(t *testing.T) {
	c, err := Parse(valid + "timeouts: {tcp: {established: 15m, fin_wait: 1s}, udp: 10s}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Services[0].Timeouts.UDP != 10*time.Second || c.Timeouts.Established() != 15*time.Minute {
		t.Fatalf("timeouts: %+v", c.Timeouts)
	}
	if _, err := Parse(valid + "timeouts: {tcp: {establised: 1s}}\n"); err == nil || !strings.Contains(err.Error(), "timeouts.tcp.establised: not a TCP state") {
		t.Fatalf("misspelled state: %v", err)
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(valid); err != nil {
		t.Fatalf("writing %s: %v", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("closing %s: %v", f.Name(), err)
	}
	t.Setenv("TAPVS_LIMITS_MAX_CONNECTIONS", "1234")
	t.Setenv("TAPVS_LOG_LEVEL", "debug")
	c, err := Load(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConns != 1234 || c.LogLevel != "debug" {
		t.Fatalf("overrides not applied: max %d level %s", c.MaxConns, c.LogLevel)
	}
	t.Setenv("TAPVS_LOG_LEVEL", "loud")
	if _, err := Load(f.Name()); err == nil || !strings.Contains(err.Error(), `log.level: "loud"`) {
		t.Fatalf("bad override: %v", err)
	}
}

func TestSynproxySettings(t *testing.T) {
	c, err := Parse(valid + "synproxy: {wscale: -1, sack: false, retry_interval: 200ms}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Synproxy.WScale != -1 || c.Synproxy.SACK || !c.Synproxy.Timestamps || c.Synproxy.RetryInterval != 200*time.Millisecond || c.Synproxy.MSS != 1460 {
		t.Fatalf("synproxy: %+v", c.Synproxy)
	}
	for field, bad := range map[string]string{"wscale": "15", "mss": "20", "max_queued": "0", "retry_interval": "1ms", "ack_storm": "1"} {
		_, err := Parse(valid + "synproxy: {" + field + ": " + bad + "}\n")
		if err == nil || !strings.Contains(err.Error(), "synproxy."+field) {
			t.Errorf("synproxy.%s: %s: error %v", field, bad, err)
		}
	}
}

// Watch reports a write to the file and a new file renamed over it (as
// editors and config managers save), each seen with the content it left.
// Each case has a directory and a watcher of its own, so no late event of
// one change can stand in for another: the rename's watcher never saw a
// write to its file.
func TestWatchSeesWritesAndReplacements(t *testing.T) {
	watch := func(t *testing.T) (path string, seen chan string) {
		path = t.TempDir() + "/tapvs.yaml"
		if err := os.WriteFile(path, []byte(valid), 0o644); err != nil {
			t.Fatalf("writing %s: %v", path, err)
		}
		seen = make(chan string, 10)
		// Watch returns once the watch is in place: what happens after is seen.
		Watch(path, func() {
			b, err := os.ReadFile(path)
			if err != nil {
				seen <- "read error: " + err.Error()
				return
			}
			seen <- string(b)
		})
		return path, seen
	}
	// await waits for a change reported with content want. A write shows
	// first as the file truncated or part written (what tapvs's reload lets
	// settle), so a prefix of want may come before it; other content is a
	// change the test did not make.
	await := func(t *testing.T, seen chan string, what, want string) {
		t.Helper()
		timeout := time.After(3 * time.Second)
		for {
			select {
			case got := <-seen:
				if got == want {
					return
				}
				if !strings.HasPrefix(want, got) {
					t.Fatalf("after %s the watcher saw %q, want %q", what, got, want)
				}
			case <-timeout:
				t.Fatalf("no change with the new content seen after %s", what)
			}
		}
	}
	t.Run("write", func(t *testing.T) {
		path, seen := watch(t)
		edited := valid + "\n# edited\n"
		if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
			t.Fatalf("writing %s: %v", path, err)
		}
		await(t, seen, "a write", edited)
	})
	t.Run("rename over", func(t *testing.T) {
		path, seen := watch(t)
		replaced := valid + "\n# replaced\n"
		if err := os.WriteFile(path+".tmp", []byte(replaced), 0o644); err != nil {
			t.Fatalf("writing %s.tmp: %v", path, err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatalf("renaming over %s: %v", path, err)
		}
		await(t, seen, "a rename over the file", replaced)
	})
}

// Issue 9, item 3: values that were accepted and then refused at start, or
// silently became something else. Each is refused with one line that names
// the field and the reason.
func TestRefusedWithOneLine(t *testing.T) {
	cases := map[string]struct{ from, to, want string }{
		"duplicate LIP":            {"[172.25.84.10]", "[172.25.84.10, 172.25.84.10]", "services[0].local_addresses[1]: local address 172.25.84.10: local address already exists"},
		"duplicate real server":    {"{address: 10.20.2.2, port: 80, weight: 0}", "{address: 10.20.1.2, port: 80, weight: 0}", "services[0].real_servers[1]: real server 10.20.1.2:80: destination already exists"},
		"ack_storm 2^32+1":         {"services:", "synproxy: {ack_storm: 4294967297}\nservices:", "synproxy.ack_storm: 4294967297 is out of range 2-65535"},
		"ack_storm 2^32":           {"services:", "synproxy: {ack_storm: 4294967296}\nservices:", "synproxy.ack_storm: 4294967296 is out of range 2-65535"},
		"timeout overflow":         {"services:", "timeouts: {tcp: {established: 2562047h}}\nservices:", `timeouts.tcp.established: "2562047h" is not a timeout`},
		"udp timeout overflow":     {"services:", "timeouts: {udp: 2562047h}\nservices:", `timeouts.udp: "2562047h" is not a timeout`},
		"quarantine overflow":      {"services:", "limits: {port_quarantine: 2562047h}\nservices:", `limits.port_quarantine: "2562047h" is not a duration from 0 (off) to 1h`},
		"VIP 0.0.0.0":              {"vip: 172.25.254.100", "vip: 0.0.0.0", "services[0].vip: VIP 0.0.0.0 is the unspecified address, not a host"},
		"VIP broadcast":            {"vip: 172.25.254.100", "vip: 255.255.255.255", "services[0].vip: VIP 255.255.255.255 is the broadcast address, not a host"},
		"VIP multicast":            {"vip: 172.25.254.100", "vip: 224.0.0.1", "services[0].vip: VIP 224.0.0.1 is a multicast address, not a host"},
		"VIP loopback":             {"vip: 172.25.254.100", "vip: 127.0.0.1", "services[0].vip: VIP 127.0.0.1 is a loopback address"},
		"VIP is tapvs":             {"vip: 172.25.254.100", "vip: 172.25.254.254", "services[0].vip: VIP 172.25.254.254 is tapvs's own address on the client side"},
		"VIP is a LIP":             {"vip: 172.25.254.100", "vip: 172.25.84.10", "services[0].local_addresses[0]: local address 172.25.84.10 is already a VIP"},
		"VIP subnet broadcast":     {"vip: 172.25.254.100", "vip: 172.25.254.255", "services[0].vip: VIP 172.25.254.255 is the broadcast address of the client side's subnet 172.25.254.0/24"},
		"real server 0.0.0.0":      {"{address: 10.20.1.2, port: 80}", "{address: 0.0.0.0, port: 80}", "services[0].real_servers[0]: real server 0.0.0.0:80 is the unspecified address, not a host"},
		"real server port 0":       {"{address: 10.20.1.2, port: 80}", "{address: 10.20.1.2, port: 0}", "services[0].real_servers[0].port: 0 is not a port"},
		"real server is a LIP":     {"{address: 10.20.1.2, port: 80}", "{address: 172.25.84.10, port: 80}", "services[0].real_servers[0]: real server 172.25.84.10:80 is already a local address"},
		"real server is tapvs":     {"{address: 10.20.1.2, port: 80}", "{address: 172.25.84.4, port: 80}", "services[0].real_servers[0]: real server 172.25.84.4:80 is tapvs's own address on the server side"},
		"real server client side":  {"{address: 10.20.1.2, port: 80}", "{address: 172.25.254.7, port: 80}", "services[0].real_servers[0]: real server 172.25.254.7:80 is in the client side's subnet"},
		"max_connections 1.5":      {"services:", "limits: {max_connections: 1.5}\nservices:", "limits.max_connections: 1.5 is not a whole number"},
		"max_connections 1e30":     {"services:", "limits: {max_connections: 1e30}\nservices:", "limits.max_connections: 1e+30 is not a whole number"},
		"max_connections too many": {"services:", "limits: {max_connections: 1099511627776}\nservices:", "limits.max_connections: 1099511627776 is out of range 1-1073741824"},
		"port not a number":        {"port: 80\n    local", "port: eighty\n    local", `services[0].port: "eighty" is not a whole number`},
		"weight 1.5":               {"weight: 0}", "weight: 1.5}", "services[0].real_servers[1].weight: 1.5 is not a whole number"},
		"offload not a bool":       {"interfaces:\n", "interfaces:\n  offload: 3\n", "interfaces.offload: 3 is not a boolean"},
	}
	for name, tc := range cases {
		if !strings.Contains(valid, tc.from) {
			t.Fatalf("%s: bad test: %q not in config", name, tc.from)
		}
		_, err := Parse(strings.Replace(valid, tc.from, tc.to, 1))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") != 0 {
			t.Errorf("%s: error %q, want one line saying %q", name, msg, tc.want)
		}
	}
}

// An address may change roles within one file: what a file takes away is
// taken first, whatever the order of its services.
func TestDryRunAcceptsWholeFile(t *testing.T) {
	two := valid + `  - vip: 172.25.254.100
    port: 81
    local_addresses: [172.25.84.11]
    real_servers: [{address: 10.20.1.2, port: 80}]
`
	c, err := Parse(two)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Services) != 2 {
		t.Fatalf("%d services", len(c.Services))
	}
}

func TestEnvironmentOverrideMustBeANumber(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(valid); err != nil {
		t.Fatalf("writing %s: %v", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("closing %s: %v", f.Name(), err)
	}
	t.Setenv("TAPVS_LIMITS_MAX_CONNECTIONS", "12abc")
	if _, err := Load(f.Name()); err == nil || !strings.Contains(err.Error(), `limits.max_connections: "12abc" is not a whole number`) {
		t.Fatalf("TAPVS_LIMITS_MAX_CONNECTIONS=12abc: %v", err)
	}
}

// A file for `tapvs run` must name its services; a configuration whose
// services come through the control plane (pkg/tapvs) may have none.
func TestParseNoServices(t *testing.T) {
	const ifaces = "interfaces:\n  client: {name: tc, address: 172.25.254.254/24}\n  server: {name: ts, address: 172.25.84.4/24}\n"
	if _, err := Parse(ifaces); err == nil || !strings.Contains(err.Error(), "services: no service is configured") {
		t.Fatalf("Parse without services: %v", err)
	}
	c, err := ParseNoServices(ifaces)
	if err != nil || len(c.Services) != 0 || c.Client.Name != "tc" {
		t.Fatalf("ParseNoServices: %+v, %v", c, err)
	}
	if _, err := ParseNoServices(ifaces + "services:\n  - {vip: 1.2.3.4, port: 0}\n"); err == nil {
		t.Fatal("ParseNoServices let a bad service through")
	}
}

// Issue 20, item 5: outside input that was taken unchecked. Service names
// become metrics labels; interface names and namespaces go to the kernel;
// a timeout of a nanosecond expires every entry at its next packet. Each
// is refused with one line naming the field.
func TestNamesAndTimeoutsRefused(t *testing.T) {
	const svc = "  - vip: 172.25.254.100\n"
	named := func(name string) (string, string) { return svc, svc + "    name: " + name + "\n" }
	cases := map[string]struct{ from, to, want string }{
		"name with NUL":             {svc, svc + "    name: \"web\\0\"\n", `services[0].name: "web\x00" is not a service name: it has the unprintable character U+0000 at byte 3`},
		"name with a line break":    {svc, svc + "    name: \"web\\nx\"\n", `services[0].name: "web\nx" is not a service name: it has the unprintable character U+000A at byte 3`},
		"name not UTF-8":            {svc, svc + "    name: !!binary d2Vi/w==\n", `services[0].name: "web\xff" is not a service name: it is not UTF-8`},
		"name of 129 bytes":         {svc, svc + "    name: " + strings.Repeat("a", 129) + "\n", `services[0].name: "` + strings.Repeat("a", 129) + `" is not a service name: it is 129 bytes long, more than 128`},
		"interface name 16 bytes":   {"{name: tc,", "{name: tapvs-client-side,", `interfaces.client.name: "tapvs-client-side" is not an interface name: it is 17 bytes long`},
		"interface name IFNAMSIZ":   {"{name: tc,", "{name: abcdefghijklmnop,", `interfaces.client.name: "abcdefghijklmnop" is not an interface name: it is 16 bytes long`},
		"interface name with /":     {"{name: tc,", "{name: a/b,", `interfaces.client.name: "a/b" is not an interface name: it has "/" at byte 1`},
		"interface name with :":     {"{name: tc,", "{name: 'tc:0',", `interfaces.client.name: "tc:0" is not an interface name: it has ":" at byte 2`},
		"interface name with %":     {"{name: tc,", "{name: 'tc%d',", `interfaces.client.name: "tc%d" is not an interface name: it has "%" at byte 2`},
		"interface name with space": {"name: ts\n", "name: \"t s\"\n", `interfaces.server.name: "t s" is not an interface name: it has " " at byte 1`},
		"interface name with tab":   {"name: ts\n", "name: \"t\\ts\"\n", `interfaces.server.name: "t\ts" is not an interface name: it has "\t" at byte 1`},
		"interface name with NUL":   {"name: ts\n", "name: \"t\\0s\"\n", `interfaces.server.name: "t\x00s" is not an interface name: it has "\x00" at byte 1`},
		"interface name .":          {"{name: tc,", "{name: '.',", `interfaces.client.name: "." is not an interface name: it is . or .., a directory's name`},
		"interface name ..":         {"{name: tc,", "{name: '..',", `interfaces.client.name: ".." is not an interface name: it is . or .., a directory's name`},
		"interface name UTF-8":      {"{name: tc,", "{name: tà,", `interfaces.client.name: "tà" is not an interface name: it has "\xc3" at byte 1`},
		"netns a path":              {"{name: tc,", "{name: tc, netns: /proc/1/ns/net,", `interfaces.client.netns: "/proc/1/ns/net" is not a network namespace's name: it has a '/'`},
		"netns out of /run/netns":   {"{name: tc,", "{name: tc, netns: ../../proc/1/ns/net,", `interfaces.client.netns: "../../proc/1/ns/net" is not a network namespace's name: it has a '/'`},
		"netns ..":                  {"name: ts\n", "name: ts\n    netns: '..'\n", `interfaces.server.netns: ".." is not a network namespace's name: it is . or .., a directory's name`},
		"netns with NUL":            {"name: ts\n", "name: ts\n    netns: \"a\\0\"\n", `interfaces.server.netns: "a\x00" is not a network namespace's name: it has the character U+0000 at byte 1`},
		"netns of 256 bytes":        {"name: ts\n", "name: ts\n    netns: " + strings.Repeat("n", 256) + "\n", `interfaces.server.netns: "` + strings.Repeat("n", 256) + `" is not a network namespace's name: it is 256 bytes long`},
		"timeout of 1ns":            {"services:", "timeouts: {tcp: {established: 1ns}}\nservices:", `timeouts.tcp.established: "1ns" is not a timeout (from 1s to 720h0m0s)`},
		"udp timeout of 999ms":      {"services:", "timeouts: {udp: 999ms}\nservices:", `timeouts.udp: "999ms" is not a timeout (from 1s to 720h0m0s)`},
		"service timeout of 1ns":    {"port: 80\n    local", "port: 80\n    timeouts: {tcp: {syn_recv: 1ns}}\n    local", `services[0].timeouts.tcp.syn_recv: "1ns" is not a timeout (from 1s to 720h0m0s)`},
	}
	for name, tc := range cases {
		if !strings.Contains(valid, tc.from) {
			t.Fatalf("%s: bad test: %q not in config", name, tc.from)
		}
		_, err := Parse(strings.Replace(valid, tc.from, tc.to, 1))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") != 0 {
			t.Errorf("%s: error %q, want one line saying %q", name, msg, tc.want)
		}
	}
	// What is still taken: a name with spaces and any printable UTF-8, a
	// 15-byte interface name, a namespace's name, a 1s timeout.
	from, to := named(`"web (front) – été"`)
	ok := strings.Replace(valid, from, to, 1)
	ok = strings.Replace(ok, "{name: tc,", "{name: tapvs-client-0, netns: tvs-client,", 1)
	ok = strings.Replace(ok, "services:", "timeouts: {tcp: {established: 1s}}\nservices:", 1)
	c, err := Parse(ok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Services[0].Name != "web (front) – été" || c.Client.Name != "tapvs-client-0" || c.Client.Netns != "tvs-client" || c.Timeouts.Established() != time.Second {
		t.Fatalf("accepted as %q %q %q %v", c.Services[0].Name, c.Client.Name, c.Client.Netns, c.Timeouts.Established())
	}
}
