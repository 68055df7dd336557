package control

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// An IPv6 service added through the API is listed as ipvsadm writes it:
// [VIP]:port, [RIP]:port, and its local addresses bare.
func TestIPv6ServiceListed(t *testing.T) {
	b, err := nat.New(nat.Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: nat.DefaultTimeouts(),
		ClientNet6: netip.MustParsePrefix("fd00:25:254::fe/64"), ServerNet6: netip.MustParsePrefix("fd00:25:84::4/64")})
	if err != nil {
		t.Fatal(err)
	}
	do := serve(t, NewManager(b, nil))
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"[2001:db8::1]:80","scheduler":"wrr"}`},
		{"POST", "/v1/services/tcp/%5B2001:db8::1%5D:80/laddrs", `{"addr":"fd00:25:84::10"}`},
		{"POST", "/v1/services/tcp/%5B2001:db8::1%5D:80/dests", `{"addr":"[fd00:20:1::2]:8080","weight":3}`},
	} {
		if c, body := do(r.method, r.path, r.body); c != 204 {
			t.Fatalf("%s %s %s: %d %s", r.method, r.path, r.body, c, body)
		}
	}
	c, body := do("GET", "/v1/services", "")
	for _, want := range []string{`"addr":"[2001:db8::1]:80"`, `"addr":"[fd00:20:1::2]:8080"`, `"addr":"fd00:25:84::10"`} {
		if c != 200 || !strings.Contains(body, want) {
			t.Fatalf("services: %d %s, want %s", c, body, want)
		}
	}
}
