package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Each bound of a value is pinned on both sides: the last value accepted
// and the first refused, refused with one line naming its own field (a
// value refused for another field's sake, as a tiny MTU is by the MSS it
// implies, does not count).
func TestBoundsNameTheirField(t *testing.T) {
	const hc = "port: 80\n    local"
	health := func(s string) [2]string {
		return [2]string{hc, "port: 80\n    health_check: {" + s + "}\n    local"}
	}
	cases := []struct {
		name string
		edit [2]string // replace edit[0] in valid by edit[1]; "" appends edit[1]
		want string    // "" accepted
	}{
		{"port range of one", [2]string{"", "limits: {local_port_min: 6000, local_port_max: 6000}\n"}, ""},
		{"port range reversed", [2]string{"", "limits: {local_port_min: 6001, local_port_max: 6000}\n"}, "limits.local_port_min: 6001 is above local_port_max 6000"},
		{"port range 1-65535", [2]string{"", "limits: {local_port_min: 1, local_port_max: 65535}\n"}, ""},
		{"local_port_min 0", [2]string{"", "limits: {local_port_min: 0}\n"}, "limits.local_port_min: 0 is not a port"},
		{"local_port_max 65536", [2]string{"", "limits: {local_port_max: 65536}\n"}, "limits.local_port_max: 65536 is not a port"},

		{"timeout equals interval", health("interval: 2s, timeout: 2s"), ""},
		{"timeout past interval", health("interval: 2s, timeout: 2001ms"), "services[0].health_check.timeout: 2.001s is longer than the interval 2s"},
		{"interval 10ms", health("interval: 10ms, timeout: 10ms"), ""},
		{"interval 9ms", health("interval: 9ms, timeout: 10ms"), `services[0].health_check.interval: "9ms" is not a duration from 10ms to 1h`},
		{"interval 1h", health("interval: 1h"), ""},
		{"interval past 1h", health("interval: 1h0m0.001s"), `services[0].health_check.interval: "1h0m0.001s" is not a duration from 10ms to 1h`},
		{"rise 1, fall 1", health("rise: 1, fall: 1"), ""},
		{"rise 100, fall 100", health("rise: 100, fall: 100"), ""},
		{"rise 101", health("rise: 101"), "services[0].health_check.rise: 101 is out of range 1-100"},
		{"rise -1", health("rise: -1"), "services[0].health_check.rise: -1 is out of range 1-100"},
		{"fall 101", health("fall: 101"), "services[0].health_check.fall: 101 is out of range 1-100"},
		{"fall -1", health("fall: -1"), "services[0].health_check.fall: -1 is out of range 1-100"},

		{"server mtu 576", [2]string{"name: ts\n", "name: ts\n    mtu: 576\n"}, ""},
		{"server mtu 575", [2]string{"name: ts\n", "name: ts\n    mtu: 575\n"}, "interfaces.server.mtu: 575 is not an MTU (576-65535)"},
		{"server mtu 100", [2]string{"name: ts\n", "name: ts\n    mtu: 100\n"}, "interfaces.server.mtu: 100 is not an MTU (576-65535)"},
		{"server mtu 65535", [2]string{"name: ts\n", "name: ts\n    mtu: 65535\n"}, ""},
		{"server mtu 65536", [2]string{"name: ts\n", "name: ts\n    mtu: 65536\n"}, "interfaces.server.mtu: 65536 is not an MTU (576-65535)"},
		{"client mtu 576", [2]string{"name: tc,", "name: tc, mtu: 576,"}, ""},
		{"client mtu 575", [2]string{"name: tc,", "name: tc, mtu: 575,"}, "interfaces.client.mtu: 575 is not an MTU (576-65535)"},
		{"client mtu 100", [2]string{"name: tc,", "name: tc, mtu: 100,"}, "interfaces.client.mtu: 100 is not an MTU (576-65535)"},
		{"client mtu 65536", [2]string{"name: tc,", "name: tc, mtu: 65536,"}, "interfaces.client.mtu: 65536 is not an MTU (576-65535)"},

		{"max_connections 1", [2]string{"", "limits: {max_connections: 1}\n"}, ""},
		{"max_connections 2^30", [2]string{"", "limits: {max_connections: 1073741824}\n"}, ""},
		{"max_connections 0", [2]string{"", "limits: {max_connections: 0}\n"}, "limits.max_connections: 0 is out of range 1-1073741824"},
		{"max_connections 2^30+1", [2]string{"", "limits: {max_connections: 1073741825}\n"}, "limits.max_connections: 1073741825 is out of range 1-1073741824"},
		{"port_quarantine 0", [2]string{"", "limits: {port_quarantine: 0s}\n"}, ""},
		{"port_quarantine 1h", [2]string{"", "limits: {port_quarantine: 1h}\n"}, ""},
		{"port_quarantine past 1h", [2]string{"", "limits: {port_quarantine: 1h0m0.001s}\n"}, `limits.port_quarantine: "1h0m0.001s" is not a duration from 0 (off) to 1h`},
		{"port_quarantine negative", [2]string{"", "limits: {port_quarantine: -1ms}\n"}, `limits.port_quarantine: "-1ms" is not a duration from 0 (off) to 1h`},
		{"busy_poll 0", [2]string{"interfaces:\n", "interfaces:\n  busy_poll: 0s\n"}, ""},
		{"busy_poll 1s", [2]string{"interfaces:\n", "interfaces:\n  busy_poll: 1s\n"}, ""},
		{"busy_poll past 1s", [2]string{"interfaces:\n", "interfaces:\n  busy_poll: 1.001s\n"}, `interfaces.busy_poll: "1.001s" is not a duration from 0 to 1s`},
		{"busy_poll negative", [2]string{"interfaces:\n", "interfaces:\n  busy_poll: -1ms\n"}, `interfaces.busy_poll: "-1ms" is not a duration from 0 to 1s`},
		{"io auto", [2]string{"interfaces:\n", "interfaces:\n  io: auto\n"}, ""},
		{"io uring", [2]string{"interfaces:\n", "interfaces:\n  io: uring\n"}, ""},
		{"io syscalls", [2]string{"interfaces:\n", "interfaces:\n  io: syscalls\n"}, ""},
		{"pollers 0", [2]string{"interfaces:\n", "interfaces:\n  pollers: 0\n"}, ""},
		{"pollers 64", [2]string{"interfaces:\n", "interfaces:\n  pollers: 64\n"}, ""},
		{"pollers 65", [2]string{"interfaces:\n", "interfaces:\n  pollers: 65\n"}, "interfaces.pollers: 65 is not a poller count (0: auto, or 1-64)"},
		{"pollers negative", [2]string{"interfaces:\n", "interfaces:\n  pollers: -1\n"}, "interfaces.pollers: -1 is not a poller count (0: auto, or 1-64)"},
		{"io unknown", [2]string{"interfaces:\n", "interfaces:\n  io: epoll\n"}, `interfaces.io: "epoll" is not one of auto, uring, syscalls`},
		{"sweep 10ms", [2]string{"", "sweep_interval: 10ms\n"}, ""},
		{"sweep 9ms", [2]string{"", "sweep_interval: 9ms\n"}, `sweep_interval: "9ms" is not a duration from 10ms to 1m`},
		{"sweep 1m", [2]string{"", "sweep_interval: 1m\n"}, ""},
		{"sweep past 1m", [2]string{"", "sweep_interval: 1m0.001s\n"}, `sweep_interval: "1m0.001s" is not a duration from 10ms to 1m`},
		{"control socket relative", [2]string{"", "control: {socket: run/tapvs.sock}\n"}, `control.socket: "run/tapvs.sock" is not an absolute path`},
		{"one name for both sides", [2]string{"name: ts\n", "name: tc\n"}, `interfaces.server.name: "tc" is the client side's name too`},
		{"name of 15", [2]string{"name: ts\n", "name: ts34567890abcde\n"}, ""},
		{"name of 16", [2]string{"name: ts\n", "name: ts34567890abcdef\n"}, `interfaces.server.name: "ts34567890abcdef" is not an interface name`},
		{"queues 1", [2]string{"name: ts\n", "name: ts\n    queues: 1\n"}, ""},
		{"queues 64", [2]string{"name: ts\n", "name: ts\n    queues: 64\n"}, ""},
		{"queues 0", [2]string{"name: ts\n", "name: ts\n    queues: 0\n"}, "interfaces.server.queues: 0 is not a queue count (1-64)"},
		{"queues 65", [2]string{"name: ts\n", "name: ts\n    queues: 65\n"}, "interfaces.server.queues: 65 is not a queue count (1-64)"},
		{"txqueuelen 0", [2]string{"name: ts\n", "name: ts\n    txqueuelen: 0\n"}, ""},
		{"txqueuelen 100000", [2]string{"name: ts\n", "name: ts\n    txqueuelen: 100000\n"}, ""},
		{"txqueuelen 100001", [2]string{"name: ts\n", "name: ts\n    txqueuelen: 100001\n"}, "interfaces.server.txqueuelen: 100001 is not a queue length in frames"},
		{"publish port 1", [2]string{"name: tc,", "name: tc, peer_address: 172.25.254.1/24, publish: [{port: 1, vip: 172.25.254.100}],"}, ""},
		{"publish port 65535", [2]string{"name: tc,", "name: tc, peer_address: 172.25.254.1/24, publish: [{port: 65535, vip: 172.25.254.100}],"}, ""},
		{"publish port 65536", [2]string{"name: tc,", "name: tc, peer_address: 172.25.254.1/24, publish: [{port: 65536, vip: 172.25.254.100}],"}, "interfaces.client.publish[0].port: 65536 is not a port"},

		{"wscale -1", [2]string{"", "synproxy: {wscale: -1}\n"}, ""},
		{"wscale 14", [2]string{"", "synproxy: {wscale: 14}\n"}, ""},
		{"wscale -2", [2]string{"", "synproxy: {wscale: -2}\n"}, "synproxy.wscale: -2 is not a window scale"},
		{"wscale 15", [2]string{"", "synproxy: {wscale: 15}\n"}, "synproxy.wscale: 15 is not a window scale"},
		{"max_queued 1", [2]string{"", "synproxy: {max_queued: 1}\n"}, ""},
		{"max_queued 64", [2]string{"", "synproxy: {max_queued: 64}\n"}, ""},
		{"max_queued 0", [2]string{"", "synproxy: {max_queued: 0}\n"}, "synproxy.max_queued: 0 is out of range 1-64"},
		{"max_queued 65", [2]string{"", "synproxy: {max_queued: 65}\n"}, "synproxy.max_queued: 65 is out of range 1-64"},
		{"syn_retries 0", [2]string{"", "synproxy: {syn_retries: 0}\n"}, ""},
		{"syn_retries 10", [2]string{"", "synproxy: {syn_retries: 10}\n"}, ""},
		{"syn_retries -1", [2]string{"", "synproxy: {syn_retries: -1}\n"}, "synproxy.syn_retries: -1 is out of range 0-10"},
		{"syn_retries 11", [2]string{"", "synproxy: {syn_retries: 11}\n"}, "synproxy.syn_retries: 11 is out of range 0-10"},
		{"retry_interval 10ms", [2]string{"", "synproxy: {retry_interval: 10ms}\n"}, ""},
		{"retry_interval 1m", [2]string{"", "synproxy: {retry_interval: 1m}\n"}, ""},
		{"retry_interval 9ms", [2]string{"", "synproxy: {retry_interval: 9ms}\n"}, `synproxy.retry_interval: "9ms" is not a duration from 10ms to 1m`},
		{"retry_interval past 1m", [2]string{"", "synproxy: {retry_interval: 1m0.001s}\n"}, `synproxy.retry_interval: "1m0.001s" is not a duration from 10ms to 1m`},
		{"ack_storm 2", [2]string{"", "synproxy: {ack_storm: 2}\n"}, ""},
		{"ack_storm 65535", [2]string{"", "synproxy: {ack_storm: 65535}\n"}, ""},
		{"ack_storm 1", [2]string{"", "synproxy: {ack_storm: 1}\n"}, "synproxy.ack_storm: 1 is out of range 2-65535"},
		{"ack_storm 65536", [2]string{"", "synproxy: {ack_storm: 65536}\n"}, "synproxy.ack_storm: 65536 is out of range 2-65535"},
		{"http status 100", health("type: http, http_status: 100"), ""},
		{"http status 599", health("type: http, http_status: 599"), ""},
		{"http status 99", health("type: http, http_status: 99"), "services[0].health_check.http_status: 99 is not an HTTP status"},
		{"http status 600", health("type: http, http_status: 600"), "services[0].health_check.http_status: 600 is not an HTTP status"},
		{"weight 65535", [2]string{"weight: 0}", "weight: 65535}"}, ""},
		{"weight 65536", [2]string{"weight: 0}", "weight: 65536}"}, "services[0].real_servers[1].weight: 65536 is out of range 0-65535"},
		{"source limits at their bounds", [2]string{hc, "port: 80\n    limits: {source_cps: 1048576, source_conns: 0, half_open: 16777216}\n    local"}, ""},
		{"source_cps past its bound", [2]string{hc, "port: 80\n    limits: {source_cps: 1048577}\n    local"}, "services[0].limits.source_cps: 1048577 is out of range 0 (no limit)-1048576"},
		{"half_open past its bound", [2]string{hc, "port: 80\n    limits: {half_open: 16777217}\n    local"}, "services[0].limits.half_open: 16777217 is out of range 0 (no limit)-16777216"},
		{"4096 prefixes", [2]string{hc, "port: 80\n    deny: [" + prefixes(4096) + "]\n    local"}, ""},
		{"4097 prefixes", [2]string{hc, "port: 80\n    deny: [" + prefixes(4097) + "]\n    local"}, "services[0].deny: 4097 prefixes: at most 4096"},

		{"high_thresh 512 KiB", [2]string{"", "fragments: {high_thresh: 524288}\n"}, ""},
		{"high_thresh below", [2]string{"", "fragments: {high_thresh: 524287}\n"}, "fragments.high_thresh: 524287 bytes is out of range 524288-1073741824"},
		{"high_thresh 1 GiB", [2]string{"", "fragments: {high_thresh: 1073741824, source_thresh: 1073741824}\n"}, ""},
		{"high_thresh past 1 GiB", [2]string{"", "fragments: {high_thresh: 1073741825}\n"}, "fragments.high_thresh: 1073741825 bytes is out of range 524288-1073741824"},
		{"source_thresh 0", [2]string{"", "fragments: {source_thresh: 0}\n"}, ""},
		{"source_thresh 128 KiB", [2]string{"", "fragments: {source_thresh: 131072}\n"}, ""},
		{"source_thresh below", [2]string{"", "fragments: {source_thresh: 131071}\n"}, "fragments.source_thresh: 131071 bytes is out of range 131072-1073741824 (or 0: a quarter of high_thresh)"},
		{"source_thresh negative", [2]string{"", "fragments: {source_thresh: -1}\n"}, "fragments.source_thresh: -1 bytes is out of range"},
		{"source_thresh past 1 GiB", [2]string{"", "fragments: {high_thresh: 1073741824, source_thresh: 1073741825}\n"}, "fragments.source_thresh: 1073741825 bytes is out of range"},
		{"source_thresh at high_thresh", [2]string{"", "fragments: {high_thresh: 524288, source_thresh: 524288}\n"}, ""},
		{"source_thresh past high_thresh", [2]string{"", "fragments: {high_thresh: 524288, source_thresh: 524289}\n"}, "fragments.source_thresh: 524289 bytes is above high_thresh 524288"},
		{"fragments time 1s", [2]string{"", "fragments: {time: 1s}\n"}, ""},
		{"fragments time 5m", [2]string{"", "fragments: {time: 5m}\n"}, ""},
		{"fragments time below", [2]string{"", "fragments: {time: 999ms}\n"}, `fragments.time: "999ms" is not a duration from 1s to 5m`},
		{"fragments time past", [2]string{"", "fragments: {time: 5m0.001s}\n"}, `fragments.time: "5m0.001s" is not a duration from 1s to 5m`},
		{"fragments time not one", [2]string{"", "fragments: {time: soon}\n"}, `fragments.time: "soon" is not a duration from 1s to 5m`},

		{"mss 64", [2]string{"", "synproxy: {mss: 64}\n"}, ""},
		{"mss 63", [2]string{"", "synproxy: {mss: 63}\n"}, "synproxy.mss: 63 is not an MSS (64-65495)"},
		{"mss 65495", [2]string{"", "synproxy: {mss: 65495}\n"}, ""},
		{"mss 65496", [2]string{"", "synproxy: {mss: 65496}\n"}, "synproxy.mss: 65496 is not an MSS (64-65495)"},
	}
	for _, tc := range cases {
		y := valid + tc.edit[1]
		if tc.edit[0] != "" {
			if !strings.Contains(valid, tc.edit[0]) {
				t.Fatalf("%s: bad test: %q not in config", tc.name, tc.edit[0])
			}
			y = strings.Replace(valid, tc.edit[0], tc.edit[1], 1)
		}
		_, err := Parse(y)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want it to say %q", tc.name, err, tc.want)
		}
	}
}

// prefixes is n distinct IPv4 host prefixes, comma-separated.
func prefixes(n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf("10.9.%d.%d/32", i/256, i%256)
	}
	return strings.Join(p, ", ")
}

// An HTTP check without a path asks for /; a TCP check has no path.
func TestHTTPPathDefault(t *testing.T) {
	for _, tc := range []struct{ check, path string }{{"type: http", "/"}, {"type: http, http_path: /health", "/health"}, {"type: tcp", ""}} {
		c, err := Parse(strings.Replace(valid, "port: 80\n    local", "port: 80\n    health_check: {"+tc.check+"}\n    local", 1))
		if err != nil {
			t.Fatal(err)
		}
		if h := c.Services[0].RealServers[0].Health; h.Path != tc.path {
			t.Errorf("%s: path %q, want %q", tc.check, h.Path, tc.path)
		}
	}
}

// Health checks' own connections take ports outside the balancer's range:
// below it when it starts at 2048 or later, else above it when it ends by
// 64511, else none.
func TestOwnPorts(t *testing.T) {
	for _, tc := range []struct{ min, max, lo, hi uint16 }{
		{2048, 65535, 1024, 2047}, {5000, 6000, 1024, 4999}, {2047, 64511, 64512, 65535}, {1, 64510, 64511, 65535}, {2047, 64512, 0, 0},
	} {
		c := &Config{RestartOnly: RestartOnly{PortMin: tc.min, PortMax: tc.max}}
		if lo, hi := c.OwnPorts(); lo != tc.lo || hi != tc.hi {
			t.Errorf("range %d-%d: own ports %d-%d, want %d-%d", tc.min, tc.max, lo, hi, tc.lo, tc.hi)
		}
	}
}

// What the bounds let through is what the configuration holds: the port
// range, the check's interval, timeout, rise and fall (0 is the default,
// 2), the MTU and the MSS it implies.
func TestBoundsKeepTheirValues(t *testing.T) {
	y := strings.Replace(valid, "port: 80\n    local", "port: 80\n    health_check: {interval: 10ms, timeout: 10ms, rise: 100, fall: 1}\n    local", 1)
	y = strings.Replace(y, "name: ts\n", "name: ts\n    mtu: 576\n", 1)
	c, err := Parse(y + "limits: {local_port_min: 6000, local_port_max: 6000}\n")
	if err != nil {
		t.Fatal(err)
	}
	h := c.Services[0].RealServers[0].Health
	if h == nil || h.Interval != 10*time.Millisecond || h.Timeout != 10*time.Millisecond || h.Rise != 100 || h.Fall != 1 {
		t.Fatalf("health check %+v", h)
	}
	if c.PortMin != 6000 || c.PortMax != 6000 || c.Server.MTU != 576 || c.Synproxy.MSS != 536 {
		t.Fatalf("ports %d-%d, MTU %d, MSS %d", c.PortMin, c.PortMax, c.Server.MTU, c.Synproxy.MSS)
	}
	c, err = Parse(strings.Replace(valid, "port: 80\n    local", "port: 80\n    health_check: {rise: 0, fall: 0}\n    local", 1))
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Services[0].RealServers[0].Health; h == nil || h.Rise != 2 || h.Fall != 2 || h.Interval != 2*time.Second || h.Timeout != time.Second {
		t.Fatalf("defaults: %+v", h)
	}
}

// interfaces.poll_groups: each group a poller's queue indexes, every index
// below the larger side's queue count (3 on the client side here, 1 on
// the server's) in exactly one group; refused with one line naming the
// field, and kept as given when accepted.
func TestPollGroups(t *testing.T) {
	y := strings.Replace(valid, "name: tc,", "name: tc, queues: 3,", 1)
	for _, tc := range []struct{ set, want string }{
		{"poll_groups: [[0, 2], [1]]", ""},
		{"poll_groups: [[2, 1, 0]]", ""},
		{"poll_groups: [[0, 2], [1]]\n  pollers: 2", ""},
		{"poll_groups: [[0, 2], [1]]\n  pollers: 3", "interfaces.poll_groups: 2 groups, but interfaces.pollers is 3"},
		{"poll_groups: [[0, 2], [1]]\n  io: syscalls", "interfaces.poll_groups: io_uring pollers' groups, but io is syscalls"},
		{"poll_groups: [[0], [1], [2], [0]]", "interfaces.poll_groups: 4 groups for 3 queues a side"},
		{"poll_groups: [[0, 1], []]", "interfaces.poll_groups: group 1 is empty"},
		{"poll_groups: [[0, 1], [3]]", "interfaces.poll_groups: group 1: queue 3 is not one (the larger side has 3: 0-2)"},
		{"poll_groups: [[0, 1], [-1]]", "interfaces.poll_groups: group 1: queue -1 is not one"},
		{"poll_groups: [[0, 1], [1, 2]]", "interfaces.poll_groups: group 1: queue 1 is in another group too"},
		{"poll_groups: [[0], [2]]", "interfaces.poll_groups: queue 1 is in no group"},
	} {
		c, err := Parse(strings.Replace(y, "interfaces:\n", "interfaces:\n  "+tc.set+"\n", 1))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.set, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want it to say %q", tc.set, err, tc.want)
		case tc.want == "" && (len(c.PollGroups) == 0 || c.PollGroups[0][0] != map[bool]int{true: 2, false: 0}[strings.Contains(tc.set, "[[2")]):
			t.Errorf("%s: kept as %v", tc.set, c.PollGroups)
		}
	}
}

// fragments: gives the balancer its reassembly and bounds: the defaults
// are Linux's (4 MiB, a quarter of it a source, 30 s), a file's values are
// the balancer's, reassembly: false turns reassembly off; a Config a
// program builds is held to the same bounds by Validate, naming the field.
func TestFragmentsSection(t *testing.T) {
	c, err := Parse(valid)
	if err != nil {
		t.Fatal(err)
	}
	if fc, off := c.Fragments.NAT(); off || fc.MaxBytes != 4<<20 || fc.MaxPerSource != 0 || fc.Timeout != 30*time.Second {
		t.Fatalf("defaults: %+v, off %v", fc, off)
	}
	c, err = Parse(valid + "fragments: {reassembly: false, high_thresh: 8388608, source_thresh: 524288, time: 10s}\n")
	if err != nil {
		t.Fatal(err)
	}
	if fc, off := c.Fragments.NAT(); !off || fc.MaxBytes != 8<<20 || fc.MaxPerSource != 512<<10 || fc.Timeout != 10*time.Second {
		t.Fatalf("set: %+v, off %v", fc, off)
	}
	for _, tc := range []struct {
		f    Fragments
		want string
	}{
		{Fragments{Reassembly: true, HighThresh: 1 << 20, Time: time.Second}, ""},
		{Fragments{Reassembly: true, HighThresh: 100, Time: time.Second}, "fragments.high_thresh: 100 bytes is out of range"},
		{Fragments{Reassembly: true, HighThresh: 1 << 20, SourceThresh: 2 << 20, Time: time.Second}, "fragments.source_thresh: 2097152 bytes is above high_thresh 1048576"},
		{Fragments{Reassembly: true, HighThresh: 1 << 20, Time: 0}, `fragments.time: "0s" is not a duration from 1s to 5m`},
	} {
		b := Default()
		b.Fragments = tc.f
		var e errs
		b.checkFragments(&e)
		err := e.err()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: refused: %v", tc.f, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "\n") != 0):
			t.Errorf("%+v: %v, want one line saying %q", tc.f, err, tc.want)
		}
	}
}
