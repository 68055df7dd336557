package config

import (
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"

	srcdefence "github.com/tapvs/tapvs/defence" // config has a func defence
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// FuzzConfig parses any text as a configuration file. Nothing panics; a
// refusal names at least one field on each of its lines; and what is
// accepted applies cleanly to an empty balancer and says what the rules
// say (ports and weights in range, timeouts within bounds, names the
// kernel and the metrics can take).
func FuzzConfig(f *testing.F) {
	shipped, err := os.ReadFile("../config.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(shipped))
	f.Add(valid)
	f.Add(valid + "limits: {max_connections: 1.5}\n")
	f.Add(valid + "timeouts: {tcp: {established: 2562047h}}\n")
	f.Add(strings.Replace(valid, "[172.25.84.10]", "[172.25.84.10, 172.25.84.10]", 1))
	f.Add("services: [{vip: 0.0.0.0, port: 0}]\n")
	f.Add("a: &a [*a, *a]\n")
	f.Add(strings.Replace(valid, "port: 80\n    local", "port: 80\n    allow: [10.0.0.0/8, 192.0.2.7]\n    deny: [10.1.0.0/16]\n    limits: {source_cps: 5, source_conns: 2, half_open: 100}\n    local", 1))
	f.Add(strings.Replace(valid, "port: 80\n    local", "port: 80\n    deny: [10.0.0.1/8, '::/0', 10.0.0.0/8, 10.0.0.0/8]\n    limits: {half_open: -1}\n    local", 1))
	f.Add(withVS("sorry_server: '[2001:db8::9]:80'\n    sorry_server_inhibit: true\n    quorum: 3\n    hysteresis: 1\n    quorum_up: [/bin/up]\n    quorum_down: [/bin/down, x]\n    alpha: true\n    omega: true\n    health_check: {type: tcp}",
		"notify_up: [/bin/nu], notify_down: [rel]"))
	f.Add(strings.Replace(valid, "port: 80\n    local", "port: 80\n    scheduler: mh\n    scheduler_flags: [mh-fallback, flag-2, sh-port]\n    local", 1))
	f.Add(valid6)
	// Issue 25: persistence and all-ports services.
	f.Add(strings.Replace(valid, "port: 80\n    local", "port: 0\n    persistence_timeout: 600\n    persistence_granularity: 255.255.255.0\n    local", 1))
	f.Add(strings.Replace(valid, "port: 80\n    local", "port: 80\n    persistence_timeout: -5\n    persistence_granularity: {a: 1}\n    local", 1))
	f.Add(strings.Replace(valid6, "port: 80\n    local", "port: 80\n    persistence_timeout: 1\n    persistence_granularity: 129\n    local", 1))
	f.Add(strings.Replace(valid6, "via: fd00:25:84::1}", "via: 172.25.84.1}", 1))
	f.Add(strings.Replace(valid6, "[172.25.84.10]", "[fd00:25:84::12]", 1))
	// Issue 25: match services (marks: and fwmark:).
	f.Add(matchConfig)
	f.Add(strings.Replace(matchConfig, `ports: [80, 443, "8000-8099"]`, `ports: [65535, "1-1", " 7 - 9 ", "-", "1-2-3", 1.5, {a: 1}]`, 1))
	f.Add(strings.Replace(matchConfig, "fwmark: 1\n", "fwmark: 2\n    vip: ::1\n", 1))
	f.Add(strings.Replace(matchConfig, "mark: 2, vip: 172.25.254.100", "mark: 4294967295, vip: 'fd00::1'", 1))
	// A selector's VIP prefix (172.25.254.96/29), and ones that are not.
	f.Add(strings.Replace(matchConfig, "vip: 172.25.254.100, protocol: tcp", "vip: 172.25.254.96/29, protocol: tcp", 1))
	f.Add(strings.Replace(matchConfig, "vip: 172.25.254.100, protocol: udp", "vip: '172.25.254.97/+29 ', protocol: udp", 1))
	f.Add(strings.Replace(matchConfig, "vip: 172.25.254.100, protocol: udp", "vip: 172.25.254.0/23, protocol: udp", 1))
	f.Add(strings.Replace(matchConfig, "vip: 172.25.254.100, protocol: udp", "vip: 'fd00::100/-1', protocol: udp", 1))
	// Issue 26: faults.
	f.Add(faultConfig)
	f.Add(strings.Replace(faultConfig, "{client: 172.25.254.7/28, direction: to_server, every: 10}", "{client: '::/0', direction: both, every: 4294967296, loss: .NaN}", 1))
	f.Add(strings.Replace(faultConfig, "{service: fwm 1, syn: refuse}", "{service: 'fwm 1 ', server: '[::ffff:10.20.1.2]:443', syn: [refuse]}", 1))
	f.Add(strings.Replace(faultConfig, "latency: 80ms, jitter: 20ms, rate: 8mbit", "latency: 2562047h, jitter: -1ns, rate: 18446744073709551615GBIT", 1))
	f.Add(strings.Replace(faultConfig, "reset_bytes: 1048576, drop_fin: true", "reset_bytes: -0.0, drop_fin: 1, reset_after: 1e300", 1))
	// Issue 20: names and timeouts that were taken unchecked.
	f.Add(strings.Replace(valid, "  - vip:", "  - name: \"web\\0\\n\\xff\"\n    vip:", 1))
	f.Add(strings.Replace(valid, "  - vip:", "  - name: "+strings.Repeat("w", 200)+"\n    vip:", 1))
	f.Add(strings.Replace(valid, "{name: tc,", "{name: abcdefghijklmnop, netns: ../../proc/1/ns/net,", 1))
	f.Add(strings.Replace(valid, "{name: tc,", "{name: 'a:b', netns: /proc/1/ns/net,", 1))
	f.Add(strings.Replace(valid, "{name: tc,", "{name: '..', netns: '.',", 1))
	f.Add(valid + "timeouts: {tcp: {established: 1ns}, udp: 999ms}\n")
	// A hold time whose default keepalive (a third) is no whole second.
	f.Add(strings.Replace(validBGP, "  peers:", "  hold_time: 10s\n  peers:", 1))
	f.Add(validHandoff + "synproxy: {mss: 0, wscale: -1}\n")
	// Backup LIPs: one the instance's own, one mapped, one without a rank.
	f.Add(strings.Replace(validBGP, "  peers:", "  med: 4294967095\n  backup_lips: [{address: 172.25.84.10, rank: 0}, {address: '::ffff:10.0.2.11', rank: 100}, {address: 'fd00::11'}]\n  peers:", 1))
	// keepalived's checkers and knobs.
	f.Add(withCheck("type: ssl, virtualhost: 'www.example.test:8443', server_name: a.test, verify: true, ca_file: /dev/null, retry: 2, delay_before_retry: 50ms, warmup: 1s"))
	f.Add(withCheck("type: misc, script: [/bin/true, -x], misc_dynamic: true, connect_timeout: 1s"))
	f.Add(withCheck("type: udp, payload: 'de ad', require_reply: '00'"))
	f.Add(withCheck("type: dns, dns_name: 'a..b', dns_type: aaaa"))
	f.Add(withCheck("type: smtp, helo_name: lb1.example.test, port: 25"))
	f.Add(withCheck("type: ping, port: 7"))
	// Issue 25: a real server's thresholds, in range and not.
	f.Add(strings.Replace(valid, "{address: 10.20.1.2, port: 80}", "{address: 10.20.1.2, port: 80, uthreshold: 100, lthreshold: 50}", 1))
	f.Add(strings.Replace(valid, "{address: 10.20.1.2, port: 80}", "{address: 10.20.1.2, port: 80, uthreshold: -1, lthreshold: 2147483648}", 1))
	f.Add(strings.Replace(valid, "weight: 0}", "weight: 0, lthreshold: 3}", 1))
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 1<<16 {
			return
		}
		c, err := Parse(text)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.Contains(line, ": ") {
					t.Fatalf("a refusal that names no field: %q", line)
				}
			}
			return
		}
		// Parse's own dry run, with both families' prefixes.
		if err := dryRun(c); err != nil {
			t.Fatalf("accepted, then refused: %v", err)
		}
		// What the file's reading accepts, the typed rules (a program's,
		// pkg/tapvs's) accept too, unchanged.
		again := *c
		if err := again.Validate(); err != nil || !reflect.DeepEqual(&again, c) {
			t.Fatalf("accepted, then Validate said %v, or changed it", err)
		}
		if c.MaxConns < 1 || c.MaxConns > MaxConnections || c.PortMin < 1 || c.PortMin > c.PortMax || len(c.Services) == 0 {
			t.Fatalf("accepted out of range: %+v", c)
		}
		for _, side := range []Interface{c.Client, c.Server} {
			if tun.CheckIfName(side.Name) != nil || side.Netns != "" && tun.CheckNetnsName(side.Netns) != nil {
				t.Fatalf("accepted interface %q in netns %q", side.Name, side.Netns)
			}
			if a6 := side.Address6; a6.IsValid() && (a6.Addr().Is4() || a6.Addr().Is4In6() || a6.Addr().IsLinkLocalUnicast() || a6.Addr().IsMulticast()) {
				t.Fatalf("accepted address6 %s", a6)
			}
			for _, r := range side.Routes {
				if r.Via.IsValid() && r.Via.Is4() != r.Dst.Addr().Is4() {
					t.Fatalf("accepted route %s via %s", r.Dst, r.Via)
				}
			}
		}
		for n, m := range c.Marks {
			if n == 0 || len(m.Ports) == 0 || !m.Addr.IsValid() || nat.CheckVIPPrefix(m.Prefix()) != nil || m.Bits == m.Addr.BitLen() {
				t.Fatalf("accepted mark %d %+v", n, m)
			}
			if _, err := m.Normal(); err != nil {
				t.Fatalf("accepted mark %d %+v: %v", n, m, err)
			}
		}
		for _, s := range c.Services {
			// Port 0 (all ports) only with persistence, as in IPVS; a
			// match service's port is 0, its VIP and protocol its mark's.
			if s.Mark != 0 {
				m, ok := c.Marks[s.Mark]
				if !ok || m.Addr != s.VIP || m.Protocol != s.Protocol || s.Port != 0 {
					t.Fatalf("accepted match service %+v of mark %+v", s, m)
				}
			}
			if s.Port == 0 && s.Mark == 0 && s.Persistence.Timeout == 0 || len(s.LocalAddresses) == 0 || len(s.RealServers) == 0 || s.Timeouts.Check() != nil || nat.CheckName(s.Name) != nil {
				t.Fatalf("accepted service %+v", s)
			}
			if p := s.Persistence; p.Timeout < 0 || p.Timeout > nat.MaxPersistTimeout || p.Timeout > 0 && (p.Mask < 1 || p.Mask > 128 || s.VIP.Is4() && p.Mask > 32) {
				t.Fatalf("accepted persistence %+v", s)
			}
			for _, rs := range s.RealServers {
				if rs.Port == 0 && s.Port != 0 {
					t.Fatalf("accepted real server port 0 on service port %d", s.Port)
				}
				if rs.Thresholds.Check() != nil {
					t.Fatalf("accepted thresholds %+v", rs.Thresholds)
				}
			}
			if len(s.Allow) > srcdefence.MaxCIDRs || len(s.Deny) > srcdefence.MaxCIDRs || s.Limits.SourceCPS < 0 || s.Limits.SourceConns < 0 || s.Limits.HalfOpen < 0 {
				t.Fatalf("accepted defence %+v", s)
			}
			for _, p := range append(append([]netip.Prefix(nil), s.Allow...), s.Deny...) {
				if !p.Addr().Is4() || p.Masked() != p {
					t.Fatalf("accepted prefix %s", p)
				}
			}
			// The server side is one family: the VIP's, or the other
			// (NAT64, NAT46).
			out := s.LocalAddresses[0]
			for _, l := range s.LocalAddresses {
				if l.Is4() != out.Is4() || l.Zone() != "" {
					t.Fatalf("accepted local address %s for VIP %s", l, s.VIP)
				}
			}
			for _, rs := range s.RealServers {
				if rs.Address.Is4() != out.Is4() || rs.Address.Zone() != "" {
					t.Fatalf("accepted real server %s for VIP %s", rs.Address, s.VIP)
				}
				if rs.Port == 0 && s.Port != 0 || rs.Weight < 0 || rs.Weight > nat.MaxWeight {
					t.Fatalf("accepted real server %+v", rs)
				}
			}
		}
	})
}
