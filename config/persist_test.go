package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/nat"
)

const persistConfig = `
interfaces:
  client: {name: tc, address: 172.25.254.254/24}
  server: {name: ts, address: 172.25.84.4/24}
services:
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    persistence_timeout: 600
    persistence_granularity: 255.255.255.0
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 80}
  - name: all
    vip: 172.25.254.101
    port: 0
    persistence_timeout: 60
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2}
      - {address: 10.20.2.2, port: 8443}
`

// keepalived's persistence_timeout and persistence_granularity, and a
// port-0 (all ports) service with servers of port 0, are read and
// applied; a reload changes them.
func TestPersistenceConfig(t *testing.T) {
	c := parse(t, persistConfig)
	want := nat.Persistence{Timeout: 600 * time.Second, Mask: 24}
	if got := c.Services[0].Persistence; got != want {
		t.Fatalf("web's persistence %+v, want %+v", got, want)
	}
	if got := c.Services[1].Persistence; got != (nat.Persistence{Timeout: time.Minute, Mask: 32}) {
		t.Fatalf("all's persistence %+v, want 60s of the whole address", got)
	}
	bal := running(t, c)
	web, err := bal.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
	if err != nil {
		t.Fatal(err)
	}
	if got := web.Persistence(); got != want {
		t.Fatalf("running web's persistence %+v, want %+v", got, want)
	}
	all, err := bal.Service(nat.TCP, netip.MustParseAddr("172.25.254.101"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := all.Dests(); len(d) != 2 || d[0].Port != 0 || d[1].Port != 8443 {
		t.Fatalf("all's servers %v, want port 0 and 8443", d)
	}

	// A reload: a new timeout and granularity, then persistence off.
	next := parse(t, strings.Replace(persistConfig, "persistence_timeout: 600\n    persistence_granularity: 255.255.255.0", "persistence_timeout: 30\n    persistence_granularity: 16", 1))
	if err := apply(bal, next, nil); err != nil {
		t.Fatal(err)
	}
	if got := web.Persistence(); got != (nat.Persistence{Timeout: 30 * time.Second, Mask: 16}) {
		t.Fatalf("after reload, web's persistence %+v, want 30s /16", got)
	}
	off := parse(t, strings.Replace(persistConfig, "    persistence_timeout: 600\n    persistence_granularity: 255.255.255.0\n", "", 1))
	if err := apply(bal, off, nil); err != nil {
		t.Fatal(err)
	}
	if got := web.Persistence(); got != (nat.Persistence{}) {
		t.Fatalf("after reload without it, web's persistence %+v, want none", got)
	}
}

func TestPersistenceConfigRefusals(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"    persistence_timeout: 60\n", "", "services[1].port: 0 (all ports) needs persistence_timeout"},
		{"persistence_timeout: 600", "persistence_timeout: 2678401", "services[0].persistence_timeout: 2678401 is out of range 0-2678400 seconds"},
		{"persistence_timeout: 600", "persistence_timeout: -1", "services[0].persistence_timeout: -1 is out of range"},
		{"persistence_granularity: 255.255.255.0", "persistence_granularity: 255.0.255.0", `services[0].persistence_granularity: "255.0.255.0" is not a netmask`},
		{"persistence_granularity: 255.255.255.0", "persistence_granularity: 33", `services[0].persistence_granularity: "33" is not a prefix length 1-32`},
		{"persistence_granularity: 255.255.255.0", "persistence_granularity: [1]", "services[0].persistence_granularity: [1] is not a netmask"},
		{"    persistence_timeout: 600\n", "", "services[0].persistence_granularity: needs persistence_timeout"},
		{"port: 80}\n", "port: 0}\n", "services[0].real_servers[0].port: 0 is not a port"},
		{"- {address: 10.20.1.2}\n", "- {address: 10.20.1.2, health_check: {type: tcp}}\n", "services[1].real_servers[0].health_check.port: is needed"},
	} {
		if !strings.Contains(persistConfig, tc.from) {
			t.Fatalf("bad test: %q not in the config", tc.from)
		}
		_, err := Parse(strings.Replace(persistConfig, tc.from, tc.to, 1))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q -> %q: error %v, want it to say %q", tc.from, tc.to, err, tc.want)
		}
	}
}
