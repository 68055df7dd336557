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
