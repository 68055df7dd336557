package bench

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// The router's ruleset (nftRules) tracks the kernel paths' flows but not
// tapvs's: a datagram from a LIP, and one routed to a LIP, leave the
// router's conntrack table as it was, and one of neither is tracked. In
// two namespaces joined by a veth, "c" (the LIP, and an address of no
// path) and "r" (the router, with the bench's ruleset; the LIP subnet on a
// veth of its own, so a datagram to a LIP is forwarded).
func TestRouterLeavesLIPsUntracked(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (network namespaces, nft)")
		}
		t.Skip("needs root (network namespaces, nft); with CI=true this fails")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing", tool)
		}
	}
	p := fmt.Sprintf("tvbt%04x", rand.N(0x10000))
	c, r := p+"-c", p+"-r"
	lip := lab.LIP1
	toLIP := lab.LIP2
	cAddr, rAddr := netip.MustParseAddr("10.50.0.2"), netip.MustParseAddr("10.50.0.1")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", c)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", c).Run() })
	run("ip", "netns", "add", r)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", r).Run() })
	for _, s := range [][]string{
		{"ip", "-n", c, "link", "add", "v", "type", "veth", "peer", "name", "v", "netns", r},
		{"ip", "-n", c, "addr", "add", "10.50.0.2/24", "dev", "v"},
		{"ip", "-n", c, "addr", "add", lip.String() + "/32", "dev", "v"},
		{"ip", "-n", c, "link", "set", "v", "up"},
		{"ip", "-n", c, "route", "add", toLIP.String() + "/32", "via", "10.50.0.1"},
		{"ip", "-n", r, "addr", "add", "10.50.0.1/24", "dev", "v"},
		{"ip", "-n", r, "link", "set", "v", "up"},
		{"ip", "-n", r, "link", "add", "s0", "type", "veth", "peer", "name", "s1"},
		{"ip", "-n", r, "addr", "add", lab.RouterAddr.String(), "dev", "s0"},
		{"ip", "-n", r, "link", "set", "s0", "up"},
		{"ip", "-n", r, "link", "set", "s1", "up"},
		{"ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.v.rp_filter=0"},
	} {
		run(s...)
	}
	cmd := exec.Command("ip", "netns", "exec", r, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nftRules())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	send := func(from, to netip.Addr) {
		t.Helper()
		err := lab.InNetns(c, func() error {
			conn, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 9)))
			if err != nil {
				return err
			}
			defer conn.Close()
			_, err = conn.Write([]byte("x"))
			return err
		})
		if err != nil {
			t.Fatalf("udp %s -> %s: %v", from, to, err)
		}
	}
	count := func() int {
		t.Helper()
		var n int
		err := lab.InNetns(r, func() error {
			b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
			if err != nil {
				return err
			}
			n, err = strconv.Atoi(strings.TrimSpace(string(b)))
			return err
		})
		if err != nil {
			t.Fatalf("conntrack count: %v", err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("%d conntrack entries before any datagram", n)
	}
	send(lip, rAddr)   // from a LIP
	send(cAddr, toLIP) // to a LIP, forwarded
	// Then one of no tapvs path: the veth delivers in order, so once its
	// entry is there the two before it have been through conntrack's hook.
	send(cAddr, rAddr)
	n := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n = count(); n > 0 {
			break
		}
	}
	if n != 1 {
		t.Fatalf("%d conntrack entries, want 1 (the datagram of no tapvs path; the LIPs' untracked)", n)
	}
}
