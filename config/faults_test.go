package config

import (
	"fmt"
	"math"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

const faultConfig = matchConfig + `faults:
  - {server: 10.20.1.2:443, blackhole: true}
  - {service: tcp 172.25.254.100:443, direction: to_client, loss: 0.05}
  - {service: fwm 1, syn: refuse}
  - {client: 172.25.254.7/28, direction: to_server, every: 10}
  - {client: 172.25.254.200, syn: drop}
  - {server: 10.20.2.2:8443, direction: to_server, loss: 1}
  - {client: 172.25.254.16/28, latency: 80ms, jitter: 20ms, rate: 8mbit, duplicate: 0.01, reorder: 0.02}
  - {client: 172.25.254.32/28, direction: to_client, reset_bytes: 1048576, drop_fin: true}
  - {client: 172.25.254.48/28, reset_after: 1.5s, rate: 250001}
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
		{Target: nat.FaultTarget{Client: netip.MustParsePrefix("172.25.254.16/28")}, Dir: nat.FaultBoth,
			Latency: 80 * time.Millisecond, Jitter: 20 * time.Millisecond, Rate: 1_000_000, Duplicate: 0.01, Reorder: 0.02},
		{Target: nat.FaultTarget{Client: netip.MustParsePrefix("172.25.254.32/28")}, Dir: nat.FaultToClient, ResetBytes: 1 << 20, DropFIN: true},
		{Target: nat.FaultTarget{Client: netip.MustParsePrefix("172.25.254.48/28")}, Dir: nat.FaultBoth, ResetAfter: 1500 * time.Millisecond, Rate: 250001},
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
		// The delay family.
		{"latency: 80ms", "latency: 5x", `faults[6].latency: "5x" is not a duration from 0 to 1m (50ms, 1.5s)`},
		{"latency: 80ms", "latency: 80", `faults[6].latency: "80" is not a duration`},
		{"latency: 80ms", "latency: -1ms", `faults[6].latency: "-1ms" is not a duration from 0 to 1m`},
		{"latency: 80ms", "latency: 1m0.000000001s", `faults[6].latency: "1m0.000000001s" is not a duration from 0 to 1m`},
		{"jitter: 20ms", "jitter: 20", `faults[6].jitter: "20" is not a duration from 0 to 1m (50ms, 1.5s)`},
		{"jitter: 20ms", "jitter: -20ms", `faults[6].jitter: "-20ms" is not a duration`},
		{"jitter: 20ms", "jitter: 1m1s", `faults[6].jitter: "1m1s" is not a duration from 0 to 1m`},
		{"jitter: 20ms", "jitter: 81ms", "faults[6]: jitter: 81ms is not within 0 to the latency (80ms)"},
		{"latency: 80ms, jitter: 20ms", "jitter: 20ms", "faults[6]: jitter: 20ms is not within 0 to the latency (0s)"},
		{"rate: 8mbit", "rate: 8mbits", `faults[6].rate: "8mbits" is not a rate (bytes a second, or a whole number of bit, kbit, mbit, gbit, bps, kbps, mbps, gbps: 8mbit, 250000)`},
		{"rate: 8mbit", "rate: -8mbit", `faults[6].rate: "-8mbit" is not a rate`},
		{"rate: 8mbit", "rate: 0mbit", `faults[6].rate: "0mbit" is no rate: leave rate out (or 0) for no cap`},
		{"rate: 8mbit", "rate: 101gbit", `faults[6].rate: "101gbit" is above 100gbit (12500000000 bytes a second)`},
		{"rate: 8mbit", "rate: 12111bit", "faults[6]: rate: 1513 bytes/s is below 1514"},
		{"reset_bytes: 1048576", "reset_bytes: 1073741825", "faults[7]: reset_bytes: 1073741825 is above 1073741824"},
		{"duplicate: 0.01", "duplicate: 1.01", "faults[6].duplicate: 1.01 is not a probability (0 to 1: 0.01 sends 1% of frames twice)"},
		{"duplicate: 0.01", "duplicate: -0.01", "faults[6].duplicate: -0.01 is not a probability"},
		{"duplicate: 0.01", "duplicate: .nan", "faults[6].duplicate: NaN is not a probability"},
		{"reorder: 0.02", "reorder: 1.5", "faults[6].reorder: 1.5 is not a probability (0 to 1: 0.01 holds 1% of frames back)"},
		{"reorder: 0.02", "reorder: -1", "faults[6].reorder: -1 is not a probability"},
		{"reorder: 0.02", "reorder: .nan", "faults[6].reorder: NaN is not a probability"},
		// The reset family and drop_fin.
		{"reset_bytes: 1048576", "reset_bytes: -1", "faults[7].reset_bytes: -1 is not a whole number (0 or more)"},
		{"reset_bytes: 1048576", "reset_bytes: 1.5", "faults[7].reset_bytes: 1.5 is not a whole number (0 or more)"},
		{"reset_bytes: 1048576", "reset_bytes: -1.0", "faults[7].reset_bytes: -1 is not a whole number (0 or more)"},
		{"reset_bytes: 1048576", "reset_bytes: 9007199254740994.0", "faults[7].reset_bytes: 9.007199254740994e+15 is not a whole number (0 or more)"},
		{"reset_bytes: 1048576", "reset_bytes: 1e30", "faults[7].reset_bytes: 1e+30 is not a whole number (0 or more)"},
		{"reset_bytes: 1048576", "reset_bytes: x", `faults[7].reset_bytes: "x" is not a whole number (0 or more)`},
		{"reset_bytes: 1048576", "reset_bytes: true", "faults[7].reset_bytes: true is not a number"},
		{"drop_fin: true", "drop_fin: yes please", `faults[7].drop_fin: "yes please" is not true or false`},
		{"reset_bytes: 1048576, drop_fin: true", "drop_fin: false", "faults[7]: does nothing: set blackhole, loss"},
		{"reset_after: 1.5s", "reset_after: 30", `faults[8].reset_after: "30" is not a duration from 0 to 24h (30s, 1.5m)`},
		{"reset_after: 1.5s", "reset_after: -1s", `faults[8].reset_after: "-1s" is not a duration from 0 to 24h`},
		{"reset_after: 1.5s", "reset_after: 24h0m0.000000001s", `faults[8].reset_after: "24h0m0.000000001s" is not a duration from 0 to 24h`},
		{"{server: 10.20.1.2:443, blackhole: true}", "{server: 10.20.1.2:443, blackhole: true, latency: 1ms}", "faults[0]: blackhole: drops every frame"},
		// Every refusal of one fault said at once.
		{"latency: 80ms, jitter: 20ms, rate: 8mbit, duplicate: 0.01, reorder: 0.02", "latency: x, jitter: y, rate: z, duplicate: 2, reorder: 3",
			"faults[6].duplicate: 2 is not a probability (0 to 1: 0.01 sends 1% of frames twice)\nfaults[6].reorder: 3 is not a probability (0 to 1: 0.01 holds 1% of frames back)\n" +
				`faults[6].latency: "x" is not a duration from 0 to 1m (50ms, 1.5s)` + "\n" + `faults[6].jitter: "y" is not a duration from 0 to 1m (50ms, 1.5s)` + "\n" +
				`faults[6].rate: "z" is not a rate`},
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

// The new fields at their bounds are read, and read as written.
func TestFaultsConfigBounds(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		i        int
		want     func(nat.Fault) bool
	}{
		{"latency: 80ms, jitter: 20ms", "latency: 1m, jitter: 1m", 6, func(f nat.Fault) bool { return f.Latency == time.Minute && f.Jitter == time.Minute }},
		{"latency: 80ms, jitter: 20ms", "latency: 0, jitter: 0", 6, func(f nat.Fault) bool { return f.Latency == 0 && f.Jitter == 0 }},
		{"latency: 80ms, jitter: 20ms", "latency: 80ms, jitter: 80ms", 6, func(f nat.Fault) bool { return f.Jitter == 80*time.Millisecond }},
		{"rate: 8mbit", "rate: 12112bit", 6, func(f nat.Fault) bool { return f.Rate == nat.MinRate }},
		{"rate: 8mbit", "rate: 100gbit", 6, func(f nat.Fault) bool { return f.Rate == MaxRate }},
		{"rate: 8mbit", "rate: 0", 6, func(f nat.Fault) bool { return f.Rate == 0 }},
		{"rate: 8mbit", "rate: 1514", 6, func(f nat.Fault) bool { return f.Rate == 1514 }},
		{"duplicate: 0.01, reorder: 0.02", "duplicate: 1, reorder: 1", 6, func(f nat.Fault) bool { return f.Duplicate == 1 && f.Reorder == 1 }},
		{"duplicate: 0.01, reorder: 0.02", "duplicate: 0, reorder: 0", 6, func(f nat.Fault) bool { return f.Duplicate == 0 && f.Reorder == 0 }},
		{"reset_bytes: 1048576", "reset_bytes: 0", 7, func(f nat.Fault) bool { return f.ResetBytes == 0 && f.DropFIN }},
		{"reset_bytes: 1048576", "reset_bytes: 1.0", 7, func(f nat.Fault) bool { return f.ResetBytes == 1 }},
		{"reset_bytes: 1048576", "reset_bytes: 0.0", 7, func(f nat.Fault) bool { return f.ResetBytes == 0 }},
		{"reset_bytes: 1048576", "reset_bytes: 1073741824.0", 7, func(f nat.Fault) bool { return f.ResetBytes == nat.MaxResetBytes }},
		{"reset_bytes: 1048576", "reset_bytes: 1073741824", 7, func(f nat.Fault) bool { return f.ResetBytes == nat.MaxResetBytes }},
		{"reset_after: 1.5s", "reset_after: 24h", 8, func(f nat.Fault) bool { return f.ResetAfter == 24*time.Hour }},
		{"reset_after: 1.5s, rate: 250001", "reset_after: 0, rate: 250001", 8, func(f nat.Fault) bool { return f.ResetAfter == 0 && f.Rate == 250001 }},
	} {
		if !strings.Contains(faultConfig, tc.from) {
			t.Fatalf("bad test: %q not in the config", tc.from)
		}
		c, err := Parse(strings.Replace(faultConfig, tc.from, tc.to, 1))
		if err != nil {
			t.Errorf("%s: %v", tc.to, err)
			continue
		}
		if !tc.want(c.Faults[tc.i]) {
			t.Errorf("%s read as %+v", tc.to, c.Faults[tc.i])
		}
	}
}

// FaultSpec writes what ParseFault reads back to the same fault, the new
// fields in the file's words.
func TestFaultSpecRoundTrip(t *testing.T) {
	c := parse(t, faultConfig)
	for i, f := range c.Faults {
		back, err := ParseFault(FaultSpec(f))
		if err != nil || back != f {
			t.Errorf("faults[%d] %+v: written %+v, read back %+v, %v", i, f, FaultSpec(f), back, err)
		}
	}
	for i, want := range []api.Fault{
		{Client: "172.25.254.16/28", Direction: "both", Latency: "80ms", Jitter: "20ms", Rate: "8mbit", Duplicate: 0.01, Reorder: 0.02},
		{Client: "172.25.254.32/28", Direction: "to_client", ResetBytes: 1 << 20, DropFIN: true},
		{Client: "172.25.254.48/28", Direction: "both", ResetAfter: "1.5s", Rate: "250001"},
	} {
		if got := FaultSpec(c.Faults[6+i]); got != want {
			t.Errorf("faults[%d] written as %+v, want %+v", 6+i, got, want)
		}
	}
	if got := FaultSpec(nat.Fault{Target: nat.FaultTarget{Mark: 1}, Dir: nat.FaultBoth, Blackhole: true}); got != (api.Fault{Service: "fwm 1", Direction: "both", Blackhole: true}) {
		t.Errorf("a blackhole written as %+v: the new fields left out", got)
	}
}

// ParseRate reads tc's units, FormatRate writes what it reads back.
func TestParseRate(t *testing.T) {
	for in, want := range map[string]uint64{
		"":               0,
		"0":              0,
		"1514":           1514,
		" 250000 ":       250000,
		"0009":           9,
		"8bit":           1,
		"15bit":          1, // a fraction of a byte dropped
		"16bit":          2,
		"1kbit":          125,
		"8KBit":          1000,
		"8mbit":          1_000_000,
		"512kbit":        64_000,
		"1gbit":          125_000_000,
		"100GBIT":        MaxRate,
		"7bps":           7,
		"3kbps":          3000,
		"1mbps":          1_000_000,
		"2gbps":          2_000_000_000,
		"12500000000":    MaxRate,
		"12500000000bps": MaxRate,
	} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("%q: %d, %v, want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"mbit":                  `"mbit" is not a rate (bytes a second, or a whole number of bit, kbit, mbit, gbit, bps, kbps, mbps, gbps: 8mbit, 250000)`,
		"-1":                    `"-1" is not a rate`,
		"+1":                    `"+1" is not a rate`,
		"1.5mbit":               `"1.5mbit" is not a rate`,
		"8 mbit":                `"8 mbit" is not a rate`,
		"8tbit":                 `"8tbit" is not a rate`,
		"8mibit":                `"8mibit" is not a rate`,
		"8m":                    `"8m" is not a rate`,
		"0x10":                  `"0x10" is not a rate`,
		"1e6":                   `"1e6" is not a rate`,
		"0kbit":                 `"0kbit" is no rate: leave rate out (or 0) for no cap`,
		"0bps":                  `"0bps" is no rate`,
		"12500000001":           `"12500000001" is above 100gbit (12500000000 bytes a second)`,
		"101gbit":               `"101gbit" is above 100gbit`,
		"13gbps":                `"13gbps" is above 100gbit`,
		"100000000008bit":       `"100000000008bit" is above 100gbit`, // 12500000001 bytes
		"20000000000gbit":       `"20000000000gbit" is above 100gbit`, // past 64 bits before the division
		"18446744073709551616":  `"18446744073709551616" is above 100gbit`,
		"99999999999999999999k": `"99999999999999999999k" is not a rate`,
	} {
		if _, err := ParseRate(in); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	if r, err := ParseRate("100000000007bit"); err != nil || r != MaxRate {
		t.Errorf("100000000007bit: %d, %v", r, err)
	}
	for r, want := range map[uint64]string{
		0: "", 1: "1", 124: "124", 125: "1kbit", 126: "126", 1514: "1514", 2000: "16kbit", 124_875: "999kbit", 125_000: "1mbit",
		250_001: "250001", 1_000_000: "8mbit", 125_000_125: "1000001kbit", 124_875_000: "999mbit", 125_000_000: "1gbit", MaxRate: "100gbit",
		math.MaxUint64: "18446744073709551615",
	} {
		if got := FormatRate(r); got != want {
			t.Errorf("FormatRate(%d) = %q, want %q", r, got, want)
		}
		if back, err := ParseRate(FormatRate(r)); r <= MaxRate && (err != nil || back != r) {
			t.Errorf("%d written %q read back as %d, %v", r, FormatRate(r), back, err)
		}
	}
}

// strict reads an unsigned field from what a file or the environment
// gives only when nothing is lost.
func TestStrictUnsigned(t *testing.T) {
	to := reflect.TypeOf(uint64(0))
	for _, tc := range []struct {
		in   any
		want any
		err  string
	}{
		{float64(3), uint64(3), ""},
		{float64(0), uint64(0), ""},
		{float64(1 << 53), uint64(1 << 53), ""},
		{float64(1<<53 + 2), nil, "9.007199254740994e+15 is not a whole number (0 or more)"},
		{-0.5, nil, "-0.5 is not a whole number (0 or more)"},
		{-1.0, nil, "-1 is not a whole number (0 or more)"},
		{0.5, nil, "0.5 is not a whole number (0 or more)"},
		{0, 0, ""},
		{7, 7, ""},
		{-1, nil, "-1 is not a whole number (0 or more)"},
		{" 12 ", uint64(12), ""},
		{"0", uint64(0), ""},
		{"-1", nil, `"-1" is not a whole number (0 or more)`},
		{"x", nil, `"x" is not a whole number (0 or more)`},
		{true, nil, "true is not a number"},
		{uint64(5), uint64(5), ""},
	} {
		got, err := strict(reflect.TypeOf(tc.in), to, tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%#v: %v, %v, want %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%#v: %#v, %v, want %#v", tc.in, got, err, tc.want)
		}
	}
	if kindName(reflect.TypeOf(uint32(0))) != "whole number (0 or more)" {
		t.Error("an unsigned field's kind")
	}
}

// The shipped config.yaml's commented faults: section, uncommented, is
// valid on the file's own services: the examples cannot drift from what
// tapvs accepts.
func TestShippedFaultsSectionParses(t *testing.T) {
	b, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	section := shippedSection(t, "faults")
	c, err := Parse(string(b) + section)
	if err != nil {
		t.Fatalf("config.yaml's faults: section: %v\n%s", err, section)
	}
	if len(c.Faults) != 7 || c.Faults[4].Rate != 1_000_000 || c.Faults[5].ResetBytes != 1<<20 || !c.Faults[6].DropFIN {
		t.Fatalf("config.yaml's faults: section read as %+v", c.Faults)
	}
}
