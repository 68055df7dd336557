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

// NAT46: an IPv4 VIP with IPv6 local addresses and real servers is
// accepted, read with its families as given.
func TestNAT46Accepted(t *testing.T) {
	c, err := Parse(strings.Replace(strings.Replace(valid6, "[172.25.84.10]", "['fd00:25:84::12']", 1),
		"{address: 10.20.1.2, port: 80}", "{address: 'fd00:20:1::3', port: 80}", 1))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Services[0]; !s.VIP.Is4() || !s.LocalAddresses[0].Is6() || !s.RealServers[0].Address.Is6() {
		t.Fatalf("NAT46 service: %+v", s)
	}
}
