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

// A TAP moved into a named namespace gets its kernel end's address there
// (peer_address), and the masquerade table is made in that namespace,
// replaces one a dead tapvs left, and goes when removed; so does the
// published ports' table. The sidecar pod
// (sidecar_test.go) covers both in tapvs's own namespace, with traffic.
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
	peer := netip.MustParsePrefix("172.31.84.1/24")
	if err := tun.SetupLink("tvtp-s", tun.LinkConfig{MTU: 1500, Netns: ns, PeerAddress: peer}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "-n", ns, "-br", "addr", "show", "dev", "tvtp-s").CombinedOutput()
	if err != nil || !strings.Contains(string(out), peer.String()) || (!strings.Contains(string(out), "UP") && !strings.Contains(string(out), "UNKNOWN")) {
		t.Fatalf("the kernel end in %s: %v %s", ns, err, out)
	}

	nft := func() string {
		out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
		return string(out)
	}
	src := netip.MustParsePrefix("172.31.84.4/24")
	if _, err := hostnft.Masquerade("tvtp-s", src, ns); err != nil { // left behind, as by a killed tapvs
		t.Fatal(err)
	}
	remove, err := hostnft.Masquerade("tvtp-s", src, ns)
	if err != nil {
		t.Fatal(err)
	}
	rules := nft()
	if !strings.Contains(rules, "table ip tapvs-tvtp-s") || strings.Count(rules, "masquerade") != 1 ||
		!strings.Contains(rules, `ip saddr 172.31.84.0/24 oifname != "tvtp-s" masquerade`) {
		t.Fatalf("nft list ruleset in %s:\n%s", ns, rules)
	}
	if out, _ := exec.Command("nft", "list", "table", "ip", "tapvs-tvtp-s").CombinedOutput(); !strings.Contains(string(out), "No such file") {
		t.Fatalf("the table is in the caller's namespace too:\n%s", out)
	}
	unpublish, err := hostnft.Publish("tvtp-s", []hostnft.PublishedPort{{Protocol: syscall.IPPROTO_TCP, Port: 80, VIP: netip.MustParseAddr("172.31.254.100")},
		{Protocol: syscall.IPPROTO_UDP, Port: 53, VIP: netip.MustParseAddr("172.31.254.100")}}, ns)
	if err != nil {
		t.Fatal(err)
	}
	rules = nft()
	for _, want := range []string{"table ip tapvs-publish-tvtp-s", "type nat hook prerouting",
		`iifname != "tvtp-s" fib daddr type local tcp dport 80 dnat to 172.31.254.100`,
		`iifname != "tvtp-s" fib daddr type local udp dport 53 dnat to 172.31.254.100`} {
		if !strings.Contains(rules, want) {
			t.Fatalf("nft list ruleset in %s lacks %q:\n%s", ns, want, rules)
		}
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
}
