package defence

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// newSet indexes the prefixes listed in list, separated by spaces.
func newSet(list string) (CIDRSet, error) {
	var in []netip.Prefix
	for _, f := range strings.Fields(list) {
		in = append(in, netip.MustParsePrefix(f))
	}
	return NewCIDRSet(in)
}

// src is the Source of an address written out.
func src(a string) Source {
	b := netip.MustParseAddr(a).As16()
	return SourceOf(&b)
}

func TestCIDRSet(t *testing.T) {
	s, err := newSet("10.0.0.0/8 192.168.1.0/24 172.25.254.1/32 192.168.0.0/16 2001:db8::/32 fd00:25:254::/64 fd00:1::/48 2001:db8:ff00::/40")
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{
		"10.1.2.3": true, "11.0.0.0": false, "192.168.1.77": true, "192.168.200.1": true,
		"192.169.0.1": false, "172.25.254.1": true, "172.25.254.2": false, "0.0.0.0": false,
		"2001:db8:1::1": true, "2001:db9::1": false, "fd00:25:254::1": true, "fd00:25:254:0:ffff::9": true,
		"fd00:25:254:1::1": false, "fd00:1:0:ffff::1": true, "fd00:1:1::1": false, "::": false,
		// IPv4's numbers in an IPv6 address's first or last bits are not IPv4's.
		"a01:203::": false, "::10.1.2.3": false,
	} {
		if got := s.contains(src(a)); got != want {
			t.Errorf("%s: contains %v, want %v", a, got, want)
		}
	}
	all, _ := newSet("0.0.0.0/0")
	if !all.contains(src("203.0.113.9")) || all.contains(src("2001:db8::1")) {
		t.Error("0.0.0.0/0 does not hold every IPv4 source, or holds an IPv6 one")
	}
	all6, _ := newSet("::/0")
	if !all6.contains(src("2001:db8::1")) || all6.contains(src("203.0.113.9")) {
		t.Error("::/0 does not hold every IPv6 source, or holds an IPv4 one")
	}
	for in, want := range map[string]string{
		"10.0.0.1/8":             "host bits",
		"2001:db8::1/64":         "host bits set (2001:db8::/64?)",
		"2001:db8::/65":          "is longer than /64",
		"2001:db8::/64":          "",
		"::ffff:10.0.0.0/104":    "is not an IPv4 or IPv6 prefix",
		"10.0.0.0/8 10.0.0.0/8":  "twice",
		"10.0.0.0/8 10.0.0.0/16": "",
	} {
		_, err := newSet(in)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
	if _, err := NewCIDRSet([]netip.Prefix{{}}); err == nil || !strings.Contains(err.Error(), "is not an IPv4 or IPv6 prefix") {
		t.Errorf("the zero prefix: %v", err)
	}
	many := make([]netip.Prefix, MaxCIDRs+1)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	}
	if _, err := NewCIDRSet(many); err == nil {
		t.Error("more than MaxCIDRs accepted")
	}
	exactly := make([]netip.Prefix, MaxCIDRs)
	for i := range exactly {
		exactly[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	}
	if _, err := NewCIDRSet(exactly); err != nil {
		t.Errorf("MaxCIDRs prefixes refused: %v", err)
	}
	// No prefix: empty, and a list of none lets every source in.
	none, err := NewCIDRSet(nil)
	if err != nil || !none.Empty() || (&Lists{Allow: none}).Check(src("2001:db8::1")) != OK || (&Lists{Allow: none}).check(src("10.0.0.1")) != OK {
		t.Errorf("the empty set: %v, empty %v", err, none.Empty())
	}
	// Sorted by address, then by length.
	s, _ = newSet("192.0.0.0/8 10.0.0.0/16 10.0.0.0/8 2001:db8::/32")
	if got := fmt.Sprint(s.Prefixes()); got != "[10.0.0.0/8 10.0.0.0/16 192.0.0.0/8 2001:db8::/32]" {
		t.Errorf("Prefixes() %s", got)
	}
	// The set keeps its own sorted copy: the caller's slice is its own.
	in := []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("10.0.0.0/8")}
	s, _ = NewCIDRSet(in)
	if got := s.Prefixes(); len(got) != 2 || got[0] != in[1] || got[1] != in[0] || in[0].Bits() != 16 {
		t.Fatalf("Prefixes() %v from %v", got, in)
	}
}

// The deny list is looked at first; an allow list that is not empty lets
// in only its sources; an IPv6 source is in neither list.
func TestListsCheck(t *testing.T) {
	deny, _ := newSet("172.25.254.0/24 fd00:25:254::/64")
	allow, _ := newSet("172.25.0.0/16 fd00:25::/32")
	allow4, _ := newSet("172.25.0.0/16")
	for _, c := range []struct {
		lists Lists
		src   string
		want  Reason
	}{
		{Lists{}, "172.25.254.1", OK},
		{Lists{}, "2001:db8::1", OK},
		{Lists{Deny: deny}, "172.25.254.1", Denied},
		{Lists{Deny: deny}, "172.25.253.1", OK},
		{Lists{Deny: deny}, "2001:db8::1", OK},
		{Lists{Deny: deny}, "fd00:25:254::1", Denied},
		{Lists{Deny: deny}, "fd00:25:254:1::1", OK},
		{Lists{Allow: allow}, "172.25.253.1", OK},
		{Lists{Allow: allow}, "172.26.0.1", NotAllowed},
		{Lists{Allow: allow}, "2001:db8::1", NotAllowed},
		{Lists{Allow: allow}, "fd00:25:1::1", OK},
		{Lists{Allow: allow4}, "fd00:25:1::1", NotAllowed},
		{Lists{Allow: allow, Deny: deny}, "172.25.254.1", Denied},
		{Lists{Allow: allow, Deny: deny}, "172.25.253.1", OK},
		{Lists{Allow: allow, Deny: deny}, "fd00:25:254::1", Denied},
		// An IPv6 address whose low 32 bits are in a list is not.
		{Lists{Allow: allow, Deny: deny}, "2001:db8::172.25.254.1", NotAllowed},
	} {
		if got := c.lists.Check(src(c.src)); got != c.want {
			t.Errorf("%s against allow %v deny %v: %v, want %v", c.src, c.lists.Allow.Prefixes(), c.lists.Deny.Prefixes(), got, c.want)
		}
	}
	deny6, _ := newSet("fd00:25:254::/64")
	if !(&Lists{}).Empty() || (&Lists{Deny: deny}).Empty() || (&Lists{Allow: allow}).Empty() || (&Lists{Deny: deny6}).Empty() || deny6.Empty() {
		t.Error("Empty is wrong")
	}
	// Only IPv6 prefixes: Check's quick path must not skip them.
	if got := (&Lists{Deny: deny6}).Check(src("fd00:25:254::7")); got != Denied {
		t.Errorf("an IPv6-only deny list: %v", got)
	}
	if got := (&Lists{Allow: deny6}).Check(src("fd00:25:253::7")); got != NotAllowed {
		t.Errorf("an IPv6-only allow list: %v", got)
	}
}

// ParsePrefix answers the prefix (an IPv4 address as a /32) or an error
// that says what is wrong with it.
func TestParsePrefix(t *testing.T) {
	cases := [][2]string{
		{"10.0.0.0/8", "10.0.0.0/8"}, {"10.1.2.3", "10.1.2.3/32"}, {"0.0.0.0/0", "0.0.0.0/0"},
		{"10.0.0.1/8", "host bits set (10.0.0.0/8?)"}, {"2001:db8::1", `"2001:db8::1" is an IPv6 address: an IPv6 client is listed by its /64 (2001:db8::/64)`},
		{"::/0", "::/0"}, {"2001:db8:1::/48", "2001:db8:1::/48"}, {"2001:db8::/64", "2001:db8::/64"},
		{"2001:db8::/65", "is longer than /64"}, {"2001:db8::1/64", "host bits set (2001:db8::/64?)"},
		{"fe80::1%eth0", "not a prefix or an IPv4 address"}, {"::ffff:10.0.0.1", "not a prefix or an IPv4 address"},
		{"10.0.0.0/33", "not an IPv4 or IPv6 prefix"}, {"", "not a prefix or an IPv4 address"},
	}
	for _, c := range cases {
		p, err := ParsePrefix(c[0])
		got := p.String()
		if err != nil {
			got = err.Error()
		}
		if err == nil && got != c[1] || err != nil && !strings.Contains(got, c[1]) {
			t.Errorf("%q: %s, want %q", c[0], got, c[1])
		}
	}
}

// FuzzParsePrefix: whatever the config or the API hands in, ParsePrefix
// answers an IPv4 prefix, or an IPv6 one of at most /64, without host
// bits, that a set takes and that reads back the same, or an error naming
// what it was given.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.1.2.3", "0.0.0.0/0", "10.0.0.1/8", "2001:db8::/32", "::ffff:10.0.0.1", "10.0.0.0/", "/8", "1.2.3.4/32", "10.0.0.0/08", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
				t.Fatalf("%q: error %q does not name it", s, err)
			}
			return
		}
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Is6() && p.Bits() > MaxBits6 || p.Masked() != p {
			t.Fatalf("%q: %s", s, p)
		}
		if _, err := NewCIDRSet([]netip.Prefix{p}); err != nil {
			t.Fatalf("%q: %s refused by a set: %v", s, p, err)
		}
		if back, err := ParsePrefix(p.String()); err != nil || back != p {
			t.Fatalf("%q: %s reads back as %s, %v", s, p, back, err)
		}
	})
}
