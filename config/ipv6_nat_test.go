//go:build natv6

// These tests need the balancer to take IPv6 services (nat's checkHost
// refuses IPv6 until the nat side of issue #15 lands): run them with
// `go test -tags natv6 ./config/`, and drop the build tag then.

package config

import (
	"strings"
	"testing"
)

// A whole IPv6 configuration is accepted: its fields and the balancer's
// rules between them.
func TestIPv6Accepted(t *testing.T) {
	c, err := Parse(valid6)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Services) != 2 || !c.Services[1].VIP.Is6() {
		t.Fatalf("services: %+v", c.Services)
	}
	// An IPv6 service through the control plane's kind of file.
	if _, err := ParseNoServices(valid6[:strings.Index(valid6, "services:")]); err != nil {
		t.Fatalf("ParseNoServices: %v", err)
	}
}
