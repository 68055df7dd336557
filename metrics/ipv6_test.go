package metrics

import (
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// A service's vip label writes its address and port as ipvsadm does:
// [2001:db8::1]:80 for IPv6, so the port is not read as part of the
// address. (Real servers' labels are nat.Dest.String, netip.AddrPort's
// form, the same.)
func TestVIPLabelForms(t *testing.T) {
	for _, tc := range []struct {
		addr string
		port uint16
		want string
	}{
		{"172.25.254.100", 80, "172.25.254.100:80"},
		{"2001:db8::1", 80, "[2001:db8::1]:80"},
		{"2001:db8:0:0:1:0:0:1", 65535, "[2001:db8::1:0:0:1]:65535"},
	} {
		s := &nat.Service{Addr: netip.MustParseAddr(tc.addr), Port: tc.port}
		if got := netipPort(s); got != tc.want {
			t.Errorf("%s port %d: %q, want %q", tc.addr, tc.port, got, tc.want)
		}
	}
}
