package hostnft

import (
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// What the rules cannot say is refused before any kernel is asked (so
// these run without root): an IPv6 subnet to masquerade, a published port
// to an IPv6 VIP or of a protocol other than TCP and UDP. The namespace
// named does not exist: it is never opened.
func TestRefusedBeforeTheKernel(t *testing.T) {
	const ns = "tapvs-hostnft-test-no-such-ns"
	if _, err := Masquerade("tap-s", netip.MustParsePrefix("fd00:25:84::4/64"), ns); err == nil ||
		err.Error() != "masquerade tap-s: fd00:25:84::4/64 is not IPv4" {
		t.Fatalf("IPv6 masquerade: %v", err)
	}
	vip := netip.MustParseAddr("172.25.254.100")
	for _, c := range []struct {
		port PublishedPort
		want string
	}{
		{PublishedPort{Protocol: unix.IPPROTO_TCP, Port: 80, VIP: netip.MustParseAddr("fd00::100")}, "publish tap-c: 6/80 to fd00::100: only TCP and UDP to IPv4"},
		{PublishedPort{Protocol: unix.IPPROTO_ICMP, Port: 0, VIP: vip}, "publish tap-c: 1/0 to 172.25.254.100: only TCP and UDP to IPv4"},
		{PublishedPort{Protocol: unix.IPPROTO_SCTP, Port: 80, VIP: vip}, "publish tap-c: 132/80 to 172.25.254.100"},
	} {
		ok := PublishedPort{Protocol: unix.IPPROTO_UDP, Port: 53, VIP: vip}
		if _, err := Publish("tap-c", []PublishedPort{ok, c.port}, ns); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.port, err, c.want)
		}
	}
	// A valid request reaches the namespace, which is checked by name.
	if _, err := Publish("tap-c", nil, "../../proc/1/ns/net"); err == nil || !strings.Contains(err.Error(), `netns "../../proc/1/ns/net"`) {
		t.Fatalf("a path for a namespace: %v", err)
	}
}
