package e2e

import (
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/tapvs/tapvs/hostnft"
	"github.com/tapvs/tapvs/tun"
)

// A TAP moved into a named namespace gets its kernel end's addresses there
// (peer_address, peer_address6, the IPv6 one not tentative), and the
// masquerade tables (ip and ip6) are made in that namespace, replace those
// a dead tapvs left, and go when removed; so do the published ports'
// tables, an IPv4 and an IPv6 VIP in one call. A later call without IPv6
// removes a left ip6 table. Forwarding reads that namespace's sysctls. The
// sidecar pod (sidecar_test.go) covers IPv4 in tapvs's own namespace, with
// traffic; TestSidecarIPv6 both families, with traffic.
func TestPeerAddressMasqueradePublishInNetns(t *testing.T) {
	need(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft is missing (apt-get install nftables; bash .ci/deps installs it): %v", err)
	}
	ns := nsPrefix + "p-peer"
	claim(t, nsPrefix+"p")
	exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })

	devs, err := tun.OpenTAP(tun.TAPConfig{Name: "tvtp-s", Queues: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	peer, peer6 := netip.MustParsePrefix("172.31.84.1/24"), netip.MustParsePrefix("fd00:31:84::1/64")
	if err := tun.SetupLink("tvtp-s", tun.LinkConfig{MTU: 1500, Netns: ns, PeerAddress: peer, PeerAddress6: peer6}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "-n", ns, "-br", "addr", "show", "dev", "tvtp-s").CombinedOutput()
	if err != nil || !strings.Contains(string(out), peer.String()) || !strings.Contains(string(out), peer6.String()) ||
		(!strings.Contains(string(out), "UP") && !strings.Contains(string(out), "UNKNOWN")) {
		t.Fatalf("the kernel end in %s: %v %s", ns, err, out)
	}
	// No duplicate address detection: the address is usable at once.
	if out, err := exec.Command("ip", "-n", ns, "-6", "addr", "show", "dev", "tvtp-s", "to", peer6.String()).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "nodad") || strings.Contains(string(out), "tentative") {
		t.Fatalf("the kernel end's IPv6 address in %s: %v %s", ns, err, out)
	}
	for _, want := range [][2]bool{{false, true}, {true, false}} {
		for i, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			v := "0"
			if want[i] {
				v = "1"
			}
			if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", k+"="+v).CombinedOutput(); err != nil {
				t.Fatalf("sysctl %s=%s: %v %s", k, v, err, out)
			}
		}
		if v4, v6, err := hostnft.Forwarding(ns); err != nil || v4 != want[0] || v6 != want[1] {
			t.Fatalf("Forwarding(%s): %v %v %v, want %v", ns, v4, v6, err, want)
		}
	}

	nft := func() string {
		out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
		return string(out)
	}
	src, src6 := netip.MustParsePrefix("172.31.84.4/24"), netip.MustParsePrefix("fd00:31:84::4/64")
	if _, err := hostnft.Masquerade("tvtp-s", src, src6, ns); err != nil { // left behind, as by a killed tapvs
		t.Fatal(err)
	}
	remove, err := hostnft.Masquerade("tvtp-s", src, src6, ns)
	if err != nil {
		t.Fatal(err)
	}
	rules := nft()
	if !strings.Contains(rules, "table ip tapvs-tvtp-s") || !strings.Contains(rules, "table ip6 tapvs-tvtp-s") || strings.Count(rules, "masquerade") != 2 ||
		!strings.Contains(rules, `ip saddr 172.31.84.0/24 oifname != "tvtp-s" masquerade`) ||
		!strings.Contains(rules, `ip6 saddr fd00:31:84::/64 oifname != "tvtp-s" masquerade`) {
		t.Fatalf("nft list ruleset in %s:\n%s", ns, rules)
	}
	if out, _ := exec.Command("nft", "list", "table", "ip", "tapvs-tvtp-s").CombinedOutput(); !strings.Contains(string(out), "No such file") {
		t.Fatalf("the table is in the caller's namespace too:\n%s", out)
	}
	unpublish, err := hostnft.Publish("tvtp-s", []hostnft.PublishedPort{{Protocol: syscall.IPPROTO_TCP, Port: 80, VIP: netip.MustParseAddr("172.31.254.100")},
		{Protocol: syscall.IPPROTO_UDP, Port: 53, VIP: netip.MustParseAddr("172.31.254.100")},
		{Protocol: syscall.IPPROTO_TCP, Port: 8080, VIP: netip.MustParseAddr("fd00:31:254::100")}}, ns)
	if err != nil {
		t.Fatal(err)
	}
	rules = nft()
	for _, want := range []string{"table ip tapvs-publish-tvtp-s", "table ip6 tapvs-publish-tvtp-s", "type nat hook prerouting",
		`iifname != "tvtp-s" fib daddr type local tcp dport 80 dnat to 172.31.254.100`,
		`iifname != "tvtp-s" fib daddr type local udp dport 53 dnat to 172.31.254.100`,
		`iifname != "tvtp-s" fib daddr type local tcp dport 8080 dnat to fd00:31:254::100`} {
		if !strings.Contains(rules, want) {
			t.Fatalf("nft list ruleset in %s lacks %q:\n%s", ns, want, rules)
		}
	}
	if strings.Count(rules, "dnat to") != 3 {
		t.Fatalf("nft list ruleset in %s: want 3 dnat rules:\n%s", ns, rules)
	}
	if err := unpublish(); err != nil {
		t.Fatal(err)
	}
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	if rules := nft(); strings.Contains(rules, "tapvs-") {
		t.Fatalf("removed, yet:\n%s", rules)
	}
	// An IPv6 table left (a dead tapvs whose file had IPv6) goes when a
	// later tapvs masquerades IPv4 only.
	if _, err := hostnft.Masquerade("tvtp-s", src, src6, ns); err != nil {
		t.Fatal(err)
	}
	remove, err = hostnft.Masquerade("tvtp-s", src, netip.Prefix{}, ns)
	if err != nil {
		t.Fatal(err)
	}
	if rules := nft(); strings.Contains(rules, "table ip6") || !strings.Contains(rules, "table ip tapvs-tvtp-s") {
		t.Fatalf("IPv4 only after a left IPv6 table:\n%s", rules)
	}
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	if rules := nft(); strings.Contains(rules, "tapvs-") {
		t.Fatalf("removed, yet:\n%s", rules)
	}
}
