package config

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/bgp"
)

const validBGP = valid + `
bgp:
  asn: 65001
  router_id: 10.1.1.2
  peers:
    - {address: 10.1.1.1, asn: 65000}
`

func TestBGPDefaults(t *testing.T) {
	c, err := Parse(validBGP)
	if err != nil {
		t.Fatal(err)
	}
	b := c.BGP
	if b == nil || b.ASN != 65001 || b.RouterID != netip.MustParseAddr("10.1.1.2") || b.HoldTime != 9*time.Second ||
		b.Keepalive != 3*time.Second || b.ConnectRetry != 5*time.Second || !b.AnnounceLIPs || b.HasMED || b.GracefulRestart != 0 || b.Restarting ||
		len(b.Peers) != 1 || b.Peers[0].Port != 179 || b.Peers[0].ASN != 65000 {
		t.Fatalf("bgp %+v", b)
	}
	if c, _ := Parse(valid); c.BGP != nil {
		t.Fatal("no bgp: section, yet a speaker configured")
	}
}

func TestBGPValues(t *testing.T) {
	c, err := Parse(strings.Replace(validBGP, "  peers:", `  hold_time: 30s
  keepalive: 10s
  connect_retry: 2s
  graceful_restart: 120s
  next_hop: 10.1.1.3
  next_hop6: fd00::3
  communities: ["65001:100", "0:65535"]
  med: 4294967295
  announce_lips: false
  peers:
    - {address: "fd00::1", asn: 4200000000, port: 1179, local_address: "fd00::2", password: s3cret}`, 1))
	if err != nil {
		t.Fatal(err)
	}
	b := c.BGP
	if b.HoldTime != 30*time.Second || b.Keepalive != 10*time.Second || b.ConnectRetry != 2*time.Second || b.GracefulRestart != 120*time.Second ||
		b.NextHop.String() != "10.1.1.3" || b.NextHop6.String() != "fd00::3" || len(b.Communities) != 2 ||
		b.Communities[0] != 65001<<16|100 || b.Communities[1] != 65535 || !b.HasMED || b.MED != 1<<32-1 || b.AnnounceLIPs ||
		len(b.Peers) != 2 || b.Peers[1].ASN != 65000 || b.Peers[0].Port != 1179 || b.Peers[0].Password != "s3cret" ||
		b.Peers[0].LocalAddress.String() != "fd00::2" || b.Peers[0].ASN != 4200000000 {
		t.Fatalf("bgp %+v", b)
	}
}

// bgp.backup_lips: each another instance's LIP with its rank, 1 unless
// given; IPv4-mapped addresses read as IPv4.
func TestBGPBackupLIPs(t *testing.T) {
	c, err := Parse(strings.Replace(validBGP, "  peers:", "  backup_lips:\n    - {address: 172.26.84.11}\n    - {address: '::ffff:172.26.84.12', rank: 2}\n  peers:", 1))
	if err != nil {
		t.Fatal(err)
	}
	want := []bgp.BackupLIP{{Addr: netip.MustParseAddr("172.26.84.11"), Rank: 1}, {Addr: netip.MustParseAddr("172.26.84.12"), Rank: 2}}
	if !slices.Equal(c.BGP.BackupLIPs, want) {
		t.Fatalf("backup_lips %+v, want %+v", c.BGP.BackupLIPs, want)
	}
	if c, _ := Parse(validBGP); len(c.BGP.BackupLIPs) != 0 {
		t.Fatalf("backup_lips %+v without the key", c.BGP.BackupLIPs)
	}
}

// The bounds are inclusive: each limit itself is accepted, one past it
// refused (TestBGPErrorsNameTheField has the refusals).
func TestBGPLimitsAccepted(t *testing.T) {
	peer := "    - {address: 10.1.1.1, asn: 65000}"
	var peers, comms []string
	for i := range 64 {
		peers = append(peers, fmt.Sprintf("    - {address: 10.1.%d.1, asn: 65000}", i))
	}
	for i := range 32 {
		comms = append(comms, fmt.Sprintf("%q", fmt.Sprintf("1:%d", i)))
	}
	cases := map[string]struct{ from, to string }{
		"asn 1":       {"asn: 65001", "asn: 1"},
		"asn max":     {"asn: 65001", "asn: 4294967295"},
		"hold min":    {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  hold_time: 3s\n  keepalive: 1s"},
		"hold max":    {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  hold_time: 65535s\n  keepalive: 21845s"},
		"keepalive":   {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  keepalive: 3s"},
		"retry":       {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  connect_retry: 1h"},
		"gr min":      {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  graceful_restart: 1s"},
		"gr max":      {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  graceful_restart: 4095s"},
		"gr off":      {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  graceful_restart: 0s"},
		"med 0":       {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  med: 0"},
		"64 peers":    {peer, strings.Join(peers, "\n")},
		"32 comms":    {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  communities: [" + strings.Join(comms, ", ") + "]"},
		"password 80": {peer, "    - {address: 10.1.1.1, asn: 65000, password: " + strings.Repeat("x", 80) + "}"},
		"backup rank": {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  med: 4294967095\n  backup_lips: [{address: 172.26.84.11, rank: 100}, {address: 'fd00::11', rank: 1}]"},
	}
	for name, tc := range cases {
		if !strings.Contains(validBGP, tc.from) {
			t.Fatalf("%s: bad test: %q not in config", name, tc.from)
		}
		if _, err := Parse(strings.Replace(validBGP, tc.from, tc.to, 1)); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}

// Every bad bgp: value is refused with its field named.
func TestBGPErrorsNameTheField(t *testing.T) {
	peer := "    - {address: 10.1.1.1, asn: 65000}"
	cases := map[string]struct{ from, to, want string }{
		"asn 0":         {"asn: 65001", "asn: 0", "bgp.asn: 0 is not an AS number"},
		"asn trans":     {"asn: 65001", "asn: 23456", "bgp.asn: 23456 is not an AS number"},
		"asn big":       {"asn: 65001", "asn: 4294967296", "bgp.asn: 4294967296 is not an AS number"},
		"asn text":      {"asn: 65001", "asn: x", "bgp.asn"},
		"router id":     {"router_id: 10.1.1.2", "router_id: fd00::1", `bgp.router_id: "fd00::1" is not an IPv4 address`},
		"router id 0":   {"router_id: 10.1.1.2", "router_id: 0.0.0.0", `bgp.router_id: "0.0.0.0" is not an IPv4 address`},
		"hold":          {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  hold_time: 2s", `bgp.hold_time: "2s" is not whole seconds from 3s`},
		"hold frac":     {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  hold_time: 3.5s", `bgp.hold_time: "3.5s" is not whole seconds`},
		"keepalive":     {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  keepalive: 4s", "bgp.keepalive: 4s is more than a third of hold_time 9s"},
		"retry":         {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  connect_retry: 0s", `bgp.connect_retry: "0s" is not whole seconds`},
		"gr big":        {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  graceful_restart: 4096s", `bgp.graceful_restart: "4096s" is not whole seconds from 1s to 1h8m15s`},
		"gr frac":       {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  graceful_restart: 1.5s", `bgp.graceful_restart: "1.5s" is not whole seconds`},
		"gr text":       {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  graceful_restart: soon", `bgp.graceful_restart: "soon" is not whole seconds`},
		"next hop":      {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  next_hop: fd00::1", `bgp.next_hop: "fd00::1" is not a unicast IPv4 address`},
		"next hop6":     {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  next_hop6: 10.0.0.1", `bgp.next_hop6: "10.0.0.1" is not a unicast IPv6 address`},
		"community":     {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  communities: [\"65001:100\", \"65536:1\"]", `bgp.communities[1]: "65536:1" is not a community`},
		"community sep": {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  communities: [\"100\"]", `bgp.communities[0]: "100" is not a community`},
		"med":           {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  med: -1", "bgp.med: -1 is out of range"},
		"med big":       {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  med: 4294967296", "bgp.med: 4294967296 is out of range"},
		"hold max":      {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  hold_time: 65536s", `bgp.hold_time: "65536s" is not whole seconds`},
		"33 comms":      {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  communities: [" + strings.Repeat(`"1:1", `, 32) + `"1:1"]`, "bgp.communities: 33 communities: at most 32"},
		"65 peers":      {peer, strings.Repeat(peer+"\n", 65), "bgp.peers: 65 peers: at most 64"},
		"no peer":       {peer, "    []", "bgp.peers: no peer"},
		"peer addr":     {peer, "    - {address: 10.1.1.0/24, asn: 65000}", `bgp.peers[0].address: "10.1.1.0/24" is not a unicast IP address`},
		"peer mcast":    {peer, "    - {address: 224.0.0.5, asn: 65000}", `bgp.peers[0].address: "224.0.0.5" is not a unicast IP address`},
		"peer asn":      {peer, "    - {address: 10.1.1.1}", "bgp.peers[0].asn: 0 is not an AS number"},
		"peer port":     {peer, "    - {address: 10.1.1.1, asn: 65000, port: 0}", "bgp.peers[0].port: 0 is not a port"},
		"peer dup":      {peer, peer + "\n" + peer, "bgp.peers[1].address: 10.1.1.1 is peers[0]'s address too"},
		"peer local":    {peer, "    - {address: 10.1.1.1, asn: 65000, local_address: 'fd00::1'}", "bgp.peers[0].local_address: fd00::1 is not of the peer's family"},
		"peer password": {peer, "    - {address: 10.1.1.1, asn: 65000, password: " + strings.Repeat("x", 81) + "}", "bgp.peers[0].password: 81 bytes: a TCP-MD5 key is at most 80"},
		"unknown key":   {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  listen_port: 179", "listen_port"},
		"peer unknown":  {peer, "    - {address: 10.1.1.1, asn: 65000, multihop: 2}", "multihop"},
		"backup addr":   {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  backup_lips: [{address: 172.25.84.0/24}]", `bgp.backup_lips[0].address: "172.25.84.0/24" is not a unicast IP address`},
		"backup own":    {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  backup_lips: [{address: 172.25.84.10}]", "bgp.backup_lips[0].address: 172.25.84.10 is a LIP of this instance's own (services[0])"},
		"backup vip":    {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  backup_lips: [{address: 172.25.254.100}]", "bgp.backup_lips[0].address: 172.25.254.100 is a VIP of this instance"},
		"backup dup":    {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  backup_lips: [{address: 172.26.84.11}, {address: 172.26.84.11, rank: 2}]", "bgp.backup_lips[1].address: 172.26.84.11 is backup_lips[0] too"},
		"backup link":   {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  backup_lips: [{address: 172.25.84.11}]", "bgp.backup_lips[0].address: 172.25.84.11 is on the server side's link (interfaces.server 172.25.84.0/24)"},
		"backup rank 0": {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  backup_lips: [{address: 172.26.84.11, rank: 0}]", "bgp.backup_lips[0].rank: 0 is not a backup rank 1-100"},
		"backup rank":   {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  backup_lips: [{address: 172.26.84.11, rank: 101}]", "bgp.backup_lips[0].rank: 101 is not a backup rank 1-100"},
		"backup no lip": {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  announce_lips: false\n  backup_lips: [{address: 172.26.84.11}]", "bgp.backup_lips: are announced as backups of other instances' LIPs: they need announce_lips"},
		"backup med":    {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  med: 4294967196\n  backup_lips: [{address: 172.26.84.11}]", "bgp.med: 4294967196: a backup's MED adds up to 200"},
		"backup key":    {"router_id: 10.1.1.2", "router_id: 10.1.1.2\n  backup_lips: [{address: 172.26.84.11, med: 5}]", "med"},
	}
	for name, tc := range cases {
		if !strings.Contains(validBGP, tc.from) {
			t.Fatalf("%s: bad test: %q not in config", name, tc.from)
		}
		_, err := Parse(strings.Replace(validBGP, tc.from, tc.to, 1))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to say %q", name, err, tc.want)
		}
	}
}

// shippedSection is config.yaml's commented-out section name, uncommented.
func shippedSection(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "# "+name+":\n")
	if !ok {
		t.Fatalf("config.yaml has no commented %s: section", name)
	}
	section := name + ":\n"
	for _, l := range strings.Split(rest, "\n") {
		if !strings.HasPrefix(l, "#   ") {
			break
		}
		section += strings.TrimPrefix(l, "#") + "\n"
	}
	return section
}

// The shipped config.yaml's commented bgp: section, uncommented, is valid:
// the reference for every key cannot drift from what tapvs accepts.
func TestShippedBGPSectionParses(t *testing.T) {
	section := shippedSection(t, "bgp")
	c, err := Parse(valid + section)
	if err != nil {
		t.Fatalf("config.yaml's bgp: section: %v\n%s", err, section)
	}
	if c.BGP == nil || len(c.BGP.Peers) != 1 || !c.BGP.AnnounceLIPs {
		t.Fatalf("config.yaml's bgp: section read as %+v", c.BGP)
	}
}

const validHandoff = valid + `
handoff:
  listen: 10.1.1.2:7700
  peers: [10.1.2.2:7700, 10.1.3.2:7700]
  key: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
`

func TestHandoffSection(t *testing.T) {
	c, err := Parse(validHandoff)
	if err != nil {
		t.Fatal(err)
	}
	h := c.Handoff
	if h == nil || h.Listen.String() != "10.1.1.2:7700" || len(h.Peers) != 2 || h.Peers[1].String() != "10.1.3.2:7700" ||
		len(h.Key) != 32 || h.Key[31] != 0x1f || h.Rate != 100000 {
		t.Fatalf("handoff %+v", h)
	}
	if c, _ := Parse(valid); c.Handoff != nil {
		t.Fatal("no handoff: section, yet a handoff configured")
	}
	for name, tc := range map[string]struct{ from, to string }{
		"rate 1":      {"  listen:", "  rate: 1\n  listen:"},
		"rate max":    {"  listen:", "  rate: 10000000\n  listen:"},
		"listen any":  {"listen: 10.1.1.2:7700", "listen: 0.0.0.0:7700"},
		"ipv6":        {"peers: [10.1.2.2:7700, 10.1.3.2:7700]", "peers: ['[fd00::2]:7700']"},
		"other port":  {"peers: [10.1.2.2:7700, 10.1.3.2:7700]", "peers: [10.1.1.2:7701]"},
		"64 peers ok": {"peers: [10.1.2.2:7700, 10.1.3.2:7700]", "peers: [" + peerList(64) + "]"},
	} {
		if _, err := Parse(strings.Replace(validHandoff, tc.from, tc.to, 1)); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}

func peerList(n int) string {
	var l []string
	for i := range n {
		l = append(l, fmt.Sprintf("10.2.%d.2:7700", i))
	}
	return strings.Join(l, ", ")
}

// Every bad handoff: value is refused with its field named.
func TestHandoffErrorsNameTheField(t *testing.T) {
	peers := "peers: [10.1.2.2:7700, 10.1.3.2:7700]"
	key := "key: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	cases := map[string]struct{ from, to, want string }{
		"listen":      {"listen: 10.1.1.2:7700", "listen: 10.1.1.2", `handoff.listen: "10.1.1.2" is not ip:port`},
		"listen 0":    {"listen: 10.1.1.2:7700", "listen: 10.1.1.2:0", `handoff.listen: "10.1.1.2:0" is not ip:port`},
		"listen mc":   {"listen: 10.1.1.2:7700", "listen: 224.0.0.1:7700", `handoff.listen: "224.0.0.1:7700" is not ip:port`},
		"no peers":    {peers, "peers: []", "handoff.peers: no peer"},
		"65 peers":    {peers, "peers: [" + peerList(65) + "]", "handoff.peers: 65 peers: at most 64"},
		"peer syntax": {peers, "peers: [10.1.2.2]", `handoff.peers[0]: "10.1.2.2" is not ip:port`},
		"peer any":    {peers, "peers: [0.0.0.0:7700]", `handoff.peers[0]: "0.0.0.0:7700" is not ip:port of a unicast address`},
		"peer port 0": {peers, "peers: [10.1.2.2:0]", `handoff.peers[0]: "10.1.2.2:0" is not ip:port`},
		"peer self":   {peers, "peers: [10.1.1.2:7700]", "handoff.peers[0]: 10.1.1.2:7700 is this instance's own listen address"},
		"peer dup":    {peers, "peers: [10.1.2.2:7700, 10.1.2.2:7700]", "handoff.peers[1]: 10.1.2.2:7700 is peers[0] too"},
		"key short":   {key, "key: 0001", "handoff.key: is not 64 hex digits"},
		"key long":    {key, key + "00", "handoff.key: is not 64 hex digits"},
		"key hex":     {key, "key: zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "handoff.key: is not 64 hex digits"},
		"rate 0":      {"  listen:", "  rate: 0\n  listen:", "handoff.rate: 0 is out of range"},
		"rate big":    {"  listen:", "  rate: 10000001\n  listen:", "handoff.rate: 10000001 is out of range"},
		"unknown":     {"  listen:", "  mtu: 9000\n  listen:", "mtu"},
	}
	// 64 queues a side leave the handoff's receiver no reader number.
	full := strings.Replace(strings.Replace(validHandoff, "client: {name: tc,", "client: {name: tc, queues: 64,", 1), "name: ts\n", "name: ts\n    queues: 64\n", 1)
	if _, err := Parse(full); err == nil || !strings.Contains(err.Error(), "handoff: its receiver is a reader of its own: the two sides' queues (128) must leave one of 128") {
		t.Errorf("128 queues with a handoff: %v", err)
	}
	if _, err := Parse(strings.Replace(full, "queues: 64\n", "queues: 63\n", 1)); err != nil {
		t.Errorf("127 queues with a handoff: %v", err)
	}
	for name, tc := range cases {
		if !strings.Contains(validHandoff, tc.from) {
			t.Fatalf("%s: bad test: %q not in config", name, tc.from)
		}
		_, err := Parse(strings.Replace(validHandoff, tc.from, tc.to, 1))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to say %q", name, err, tc.want)
		}
	}
}

// The shipped config.yaml's commented handoff: section, uncommented, is
// valid.
func TestShippedHandoffSectionParses(t *testing.T) {
	section := shippedSection(t, "handoff")
	c, err := Parse(valid + section)
	if err != nil {
		t.Fatalf("config.yaml's handoff: section: %v\n%s", err, section)
	}
	if c.Handoff == nil || len(c.Handoff.Peers) != 2 || c.Handoff.Rate != 100000 {
		t.Fatalf("config.yaml's handoff: section read as %+v", c.Handoff)
	}
}
