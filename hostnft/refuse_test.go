package hostnft

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// What the rules cannot say is refused before any kernel is asked (so
// these run without root): a subnet of the wrong family to masquerade, or
// none, a published port to an address that is not a VIP's or of a
// protocol other than TCP and UDP. The namespace named does not exist: it
// is never opened.
func TestRefusedBeforeTheKernel(t *testing.T) {
	const ns = "tapvs-hostnft-test-no-such-ns"
	v4, v6 := netip.MustParsePrefix("172.25.84.4/24"), netip.MustParsePrefix("fd00:25:84::4/64")
	for _, c := range []struct {
		src4, src6 netip.Prefix
		want       string
	}{
		{v6, netip.Prefix{}, "masquerade tap-s: fd00:25:84::4/64 is not IPv4"},
		{v4, v4, "masquerade tap-s: 172.25.84.4/24 is not IPv6"},
		{netip.Prefix{}, netip.MustParsePrefix("::ffff:172.25.84.4/120"), "masquerade tap-s: ::ffff:172.25.84.4/120 is not IPv6"},
		{netip.Prefix{}, netip.Prefix{}, "masquerade tap-s: no subnet"},
	} {
		if _, err := Masquerade("tap-s", c.src4, c.src6, ns); err == nil || err.Error() != c.want {
			t.Errorf("masquerade %v %v: %v, want %q", c.src4, c.src6, err, c.want)
		}
	}
	vip := netip.MustParseAddr("172.25.254.100")
	for _, c := range []struct {
		port PublishedPort
		want string
	}{
		{PublishedPort{Protocol: unix.IPPROTO_TCP, Port: 80, VIP: netip.MustParseAddr("::ffff:172.25.254.100")}, "publish tap-c: 6/80 to ::ffff:172.25.254.100: only TCP and UDP to an IPv4 or IPv6 address"},
		{PublishedPort{Protocol: unix.IPPROTO_TCP, Port: 80, VIP: netip.MustParseAddr("fe80::1%tap-c")}, "publish tap-c: 6/80 to fe80::1%tap-c: only"},
		{PublishedPort{Protocol: unix.IPPROTO_TCP, Port: 80}, "publish tap-c: 6/80 to invalid IP: only"},
		{PublishedPort{Protocol: unix.IPPROTO_ICMP, Port: 0, VIP: vip}, "publish tap-c: 1/0 to 172.25.254.100: only TCP and UDP"},
		{PublishedPort{Protocol: unix.IPPROTO_SCTP, Port: 80, VIP: vip}, "publish tap-c: 132/80 to 172.25.254.100"},
	} {
		ok := PublishedPort{Protocol: unix.IPPROTO_UDP, Port: 53, VIP: vip}
		if _, err := Publish("tap-c", []PublishedPort{ok, c.port}, ns); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.port, err, c.want)
		}
	}
	// A valid request reaches the namespace, which is checked by name:
	// an IPv6 VIP, an IPv6 subnet, the forwarding sysctls.
	const path = "../../proc/1/ns/net"
	if _, err := Publish("tap-c", []PublishedPort{{Protocol: unix.IPPROTO_TCP, Port: 80, VIP: netip.MustParseAddr("fd00::100")}}, path); err == nil || !strings.Contains(err.Error(), `netns "../../proc/1/ns/net"`) {
		t.Fatalf("a path for a namespace: %v", err)
	}
	if _, err := Masquerade("tap-s", netip.Prefix{}, v6, path); err == nil || !strings.Contains(err.Error(), `netns "../../proc/1/ns/net"`) {
		t.Fatalf("a path for a namespace: %v", err)
	}
	if _, _, err := Forwarding(path); err == nil || !strings.Contains(err.Error(), `forwarding: netns "../../proc/1/ns/net"`) {
		t.Fatalf("a path for a namespace: %v", err)
	}
}

// The caller's own namespace's forwarding is what its /proc/sys says.
func TestForwardingHere(t *testing.T) {
	want := func(p string) bool {
		b, err := readTrim(p)
		if err != nil {
			t.Fatal(err)
		}
		return b != "0"
	}
	v4, v6, err := Forwarding("")
	if err != nil {
		t.Fatal(err)
	}
	if v4 != want("/proc/sys/net/ipv4/ip_forward") || v6 != want("/proc/sys/net/ipv6/conf/all/forwarding") {
		t.Fatalf("forwarding v4 %v v6 %v", v4, v6)
	}
}

func readTrim(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}
