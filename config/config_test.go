package config

import (
	"os"
	"strings"
	"testing"
	"time"
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
	if len(c.Services) != 4 || c.Services[0].Scheduler != "wrr" || !c.Services[1].Synproxy || c.Timeouts.UDP != 300*time.Second ||
		c.Synproxy.MSS != 1460 || c.Synproxy.WScale != 7 || c.Synproxy.RetryInterval != time.Second {
		t.Fatalf("unexpected: %+v", c.Services)
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
		"lip subnet":   {"[172.25.84.10]", "[10.9.9.9]", "services[0].local_addresses[0]: 10.9.9.9 is not in the server side's subnet"},
		"via":          {"via: 172.25.84.1", "via: 10.1.1.1", "interfaces.server.routes[0].via: 10.1.1.1 is not on-link"},
		"weight":       {"weight: 0}", "weight: -1}", "services[0].real_servers[1].weight: -1 is out of range"},
		"unknown key":  {"port: 80\n    local", "port: 80\n    schedular: rr\n    local", "schedular"},
		"ipv6":         {"vip: 172.25.254.100", "vip: 2001:db8::1", "only IPv4 is supported yet"},
		"no lips":      {"local_addresses: [172.25.84.10]", "local_addresses: []", "FULLNAT needs at least one local address"},
		"busy poll":    {"interfaces:\n", "interfaces:\n  busy_poll: 2s\n", `interfaces.busy_poll: "2s" is not a duration from 0 to 1s`},
		"udp synproxy": {"port: 80\n    local", "port: 80\n    protocol: udp\n    synproxy: true\n    local", "services[0].synproxy: only a TCP service can have a SYN proxy"},
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

func TestTimeouts(t *testing.T) {
	c, err := Parse(valid + "timeouts: {tcp: {established: 15m, fin_wait: 1s}, udp: 10s}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Services[0].Timeouts.UDP != 10*time.Second || c.Timeouts.TCP[1] != 15*time.Minute {
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
	f.WriteString(valid)
	f.Close()
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

func TestWatchSeesWritesAndReplacements(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/tapvs.yaml"
	if err := os.WriteFile(path, []byte(valid), 0o644); err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 10)
	Watch(path, func() { changed <- struct{}{} })
	wait := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(3 * time.Second):
			t.Fatalf("no change seen after %s", what)
		}
		for len(changed) > 0 {
			<-changed
		}
	}
	time.Sleep(100 * time.Millisecond)
	os.WriteFile(path, []byte(valid+"\n# edited\n"), 0o644)
	wait("a write")
	// Editors and config managers write a new file and rename it over.
	os.WriteFile(path+".tmp", []byte(valid), 0o644)
	os.Rename(path+".tmp", path)
	wait("a rename over the file")
}
