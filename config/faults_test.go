package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

const faultConfig = matchConfig + `faults:
  - {server: 10.20.1.2:443, blackhole: true}
  - {service: tcp 172.25.254.100:443, direction: to_client, loss: 0.05}
  - {service: fwm 1, syn: refuse}
  - {client: 172.25.254.7/28, direction: to_server, every: 10}
  - {client: 172.25.254.200, syn: drop}
  - {server: 10.20.2.2:8443, direction: to_server, loss: 1}
`

func TestFaultsConfig(t *testing.T) {
	c := parse(t, faultConfig)
	ap := netip.MustParseAddrPort
	want := []nat.Fault{
		{Target: nat.FaultTarget{Server: ap("10.20.1.2:443")}, Dir: nat.FaultBoth, Blackhole: true},
		{Target: nat.FaultTarget{Protocol: nat.TCP, VIP: ap("172.25.254.100:443")}, Dir: nat.FaultToClient, Loss: 0.05},
		{Target: nat.FaultTarget{Mark: 1}, Dir: nat.FaultBoth, SYN: nat.SYNRefuse},
		{Target: nat.FaultTarget{Client: netip.MustParsePrefix("172.25.254.0/28")}, Dir: nat.FaultToServer, Every: 10},
		{Target: nat.FaultTarget{Client: netip.MustParsePrefix("172.25.254.200/32")}, Dir: nat.FaultBoth, SYN: nat.SYNDrop},
		{Target: nat.FaultTarget{Server: ap("10.20.2.2:8443")}, Dir: nat.FaultToServer, Loss: 1},
	}
	if len(c.Faults) != len(want) {
		t.Fatalf("read %d faults: %+v", len(c.Faults), c.Faults)
	}
	for i := range want {
		if c.Faults[i] != want[i] {
			t.Errorf("faults[%d] read as %+v, want %+v", i, c.Faults[i], want[i])
		}
	}
	bal := running(t, c)
	if err := bal.SetFaults(c.Faults); err != nil {
		t.Fatal(err)
	}
	if len(bal.Faults()) != len(want) {
		t.Fatal("not all set")
	}
	if c := parse(t, matchConfig); c.Faults != nil {
		t.Fatalf("no faults: section read as %+v", c.Faults)
	}
}

func TestFaultsConfigRefusals(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"{server: 10.20.1.2:443, blackhole: true}", "{blackhole: true}", "faults[0]: names 0 targets"},
		{"{server: 10.20.1.2:443, blackhole: true}", "{server: 10.20.1.2:443, client: 10.0.0.0/8, blackhole: true}", "faults[0]: names 2 targets"},
		{"{server: 10.20.1.2:443, blackhole: true}", "{server: 10.20.1.2:444, blackhole: true}", "faults[0].server: 10.20.1.2:444 is no real server of this file's services"},
		{"{server: 10.20.1.2:443, blackhole: true}", "{server: 10.20.1.2, blackhole: true}", `faults[0].server: "10.20.1.2" is not an address:port`},
		{"{server: 10.20.1.2:443, blackhole: true}", "{server: 10.20.1.2:443}", "faults[0]: does nothing"},
		{"service: tcp 172.25.254.100:443,", "service: tcp 172.25.254.100:444,", "faults[1].service: tcp 172.25.254.100:444 is no service of this file"},
		{"service: tcp 172.25.254.100:443,", "service: sctp 172.25.254.100:443,", `faults[1].service: "sctp 172.25.254.100:443"`},
		{"service: tcp 172.25.254.100:443,", "service: tcp,", `faults[1].service: "tcp" is not a service`},
		{"service: tcp 172.25.254.100:443,", "service: tcp 172.25.254.100,", `faults[1].service: "172.25.254.100" is not a VIP:port`},
		{"service: fwm 1,", "service: fwm 0,", `faults[2].service: "0" is not a mark`},
		{"service: fwm 1,", "service: fwm 3,", "faults[2].service: fwm 3 is no service of this file"},
		{"direction: to_client, loss: 0.05", "direction: sideways, loss: 0.05", `faults[1].direction: "sideways" is not a direction`},
		{"direction: to_client, loss: 0.05", "direction: to_client, loss: 1.5", "faults[1].loss: 1.5 is not a probability"},
		{"direction: to_client, loss: 0.05", "direction: to_client, loss: -0.5", "faults[1].loss: -0.5 is not a probability"},
		{"every: 10", "every: -1", "faults[3].every: -1 is not a count"},
		{"every: 10", "every: 1048577", "faults[3].every: 1048577 is not a count"},
		{"{service: fwm 1, syn: refuse}", "{service: fwm 1, syn: reject}", `faults[2].syn: "reject" is not a SYN fault`},
		{"{service: fwm 1, syn: refuse}", "{service: fwm 1, syn: drop, direction: to_client}", "faults[2]: syn: SYNs go to the server"},
		{"client: 172.25.254.7/28", "client: 172.25.254.7/33", `faults[3].client: "172.25.254.7/33" is not a prefix`},
		{"client: 172.25.254.7/28", "client: nowhere", `faults[3].client: "nowhere" is not an address or a prefix`},
		{"client: 172.25.254.7/28", "client: '::ffff:172.25.254.0/120'", "faults[3].client: \"::ffff:172.25.254.0/120\": write an IPv4 prefix as IPv4"},
		{"client: 172.25.254.200,", "client: 172.25.254.0/28,", "faults[4]: has the target of faults[3]"},
	} {
		if !strings.Contains(faultConfig, tc.from) {
			t.Fatalf("bad test: %q not in the config", tc.from)
		}
		_, err := Parse(strings.Replace(faultConfig, tc.from, tc.to, 1))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s -> %s: %v, want %q", tc.from, tc.to, err, tc.want)
		}
	}
	// The bounds: 256 faults, every 1048576.
	var b strings.Builder
	for i := range MaxFaults {
		fmt.Fprintf(&b, "  - {client: 10.0.%d.%d, every: %d}\n", i/256, i%256, 1<<20)
	}
	if c, err := Parse(matchConfig + "faults:\n" + b.String()); err != nil || len(c.Faults) != MaxFaults || c.Faults[0].Every != 1<<20 {
		t.Errorf("256 faults, every 1048576: %v", err)
	}
	many := matchConfig + "faults:\n" + strings.Repeat("  - {client: 10.0.0.1, blackhole: true}\n", MaxFaults+1)
	if _, err := Parse(many); err == nil || !strings.Contains(err.Error(), "faults: 257 faults: at most 256") {
		t.Errorf("too many: %v", err)
	}
}

func TestParseServiceKey(t *testing.T) {
	for in, want := range map[string]ServiceKey{
		"tcp 172.25.254.100:80":   {Protocol: nat.TCP, VIP: netip.MustParseAddr("172.25.254.100"), Port: 80},
		"UDP [fd00::100]:53":      {Protocol: nat.UDP, VIP: netip.MustParseAddr("fd00::100"), Port: 53},
		" fwm  4294967295 ":       {Mark: 4294967295},
		"tcp [::ffff:10.0.0.1]:1": {Protocol: nat.TCP, VIP: netip.MustParseAddr("10.0.0.1"), Port: 1},
	} {
		if got, err := ParseServiceKey(in); err != nil || got != want {
			t.Errorf("%q: %+v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "tcp", "fwm 4294967296", "fwm x", "fwm 0", "icmp 1.2.3.4:1", "tcp 1.2.3.4"} {
		if _, err := ParseServiceKey(in); err == nil {
			t.Errorf("%q read", in)
		}
	}
}
