package config

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

const defended = "port: 80\n    allow: [10.0.0.0/8, 172.25.254.1]\n    deny: [10.1.0.0/16]\n    limits: {source_cps: 5, source_conns: 2, half_open: 100}\n    local"

func TestDefenceParsed(t *testing.T) {
	c, err := Parse(strings.Replace(valid, "port: 80\n    local", defended, 1))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Services[0]
	if len(s.Allow) != 2 || s.Allow[1] != netip.MustParsePrefix("172.25.254.1/32") || len(s.Deny) != 1 ||
		s.Limits != (nat.Limits{SourceCPS: 5, SourceConns: 2, HalfOpen: 100}) {
		t.Fatalf("parsed %+v %+v %+v", s.Allow, s.Deny, s.Limits)
	}
}

// An IPv6 service's lists hold IPv6 prefixes of at most /64.
func TestDefenceIPv6Lists(t *testing.T) {
	in := strings.Replace(valid6, "  - vip: 2001:db8::1\n    port: 80\n", "  - vip: 2001:db8::1\n    port: 80\n    allow: ['fd00:25::/32', '::/0']\n    deny: ['fd00:25:254::/64']\n", 1)
	c, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Services[1]
	if len(s.Allow) != 2 || s.Allow[0] != netip.MustParsePrefix("fd00:25::/32") || s.Allow[1] != netip.MustParsePrefix("::/0") ||
		len(s.Deny) != 1 || s.Deny[0] != netip.MustParsePrefix("fd00:25:254::/64") {
		t.Fatalf("parsed allow %v deny %v", s.Allow, s.Deny)
	}
}

func TestDefenceRefusalsNameTheField(t *testing.T) {
	for in, want := range map[string]string{
		"allow: [10.0.0.1/8]":                       `services[0].allow[0]: "10.0.0.1/8" has host bits set (10.0.0.0/8?)`,
		"deny: [10.0.0.0/8, nonsense]":              `services[0].deny[1]: "nonsense" is not a prefix or an IPv4 address`,
		"deny: ['2001:db8::/32']":                   `services[0].deny[0]: 2001:db8::/32 is IPv6 and the service's VIP 172.25.254.100 is IPv4: a list holds prefixes of its clients' family`,
		"allow: ['2001:db8::1']":                    `services[0].allow[0]: "2001:db8::1" is an IPv6 address: an IPv6 client is listed by its /64 (2001:db8::/64)`,
		"allow: ['2001:db8::/96']":                  `services[0].allow[0]: "2001:db8::/96" is longer than /64`,
		"deny: [10.0.0.0/8, 10.0.0.0/8]":            `services[0].deny[1]: 10.0.0.0/8 is deny[0] already`,
		"limits: {source_cps: -1}":                  "services[0].limits.source_cps: -1 is out of range",
		"limits: {source_conns: 2000000}":           "services[0].limits.source_conns: 2000000 is out of range",
		"limits: {half_open: 1.5}":                  "half_open",
		"limits: {half_opn: 1}":                     "half_opn",
		"protocol: udp\n    limits: {half_open: 1}": "services[0].limits.half_open: only a TCP service has half-open connections",
	} {
		_, err := Parse(strings.Replace(valid, "port: 80\n    local", "port: 80\n    "+in+"\n    local", 1))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

// A reload that changes the lists and limits applies them as a diff; one
// that does not change them makes no change.
func TestDefenceApplied(t *testing.T) {
	b, err := nat.New(nat.Config{MaxConns: 10, PortMin: 5000, PortMax: 6000, Timeouts: nat.DefaultTimeouts()})
	if err != nil {
		t.Fatal(err)
	}
	apply := func(text string) int {
		t.Helper()
		c, err := Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		if err := b.Update(func(tx *nat.Tx) error {
			err := c.Apply(tx, nil)
			n = tx.Changes()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	apply(strings.Replace(valid, "port: 80\n    local", defended, 1))
	s := b.Services()[0]
	if len(s.Allow()) != 2 || len(s.Deny()) != 1 || s.Limits().SourceConns != 2 {
		t.Fatalf("applied %v %v %+v", s.Allow(), s.Deny(), s.Limits())
	}
	// The same lists in another order: nothing to do.
	if n := apply(strings.Replace(valid, "port: 80\n    local", strings.Replace(defended, "10.0.0.0/8, 172.25.254.1", "172.25.254.1/32, 10.0.0.0/8", 1), 1)); n != 0 {
		t.Fatalf("%d changes for the same lists", n)
	}
	apply(valid)
	if len(s.Allow()) != 0 || len(s.Deny()) != 0 || s.Limits() != (nat.Limits{}) {
		t.Fatalf("not removed: %v %v %+v", s.Allow(), s.Deny(), s.Limits())
	}
}
