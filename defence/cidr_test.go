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

func TestCIDRSet(t *testing.T) {
	s, err := newSet("10.0.0.0/8 192.168.1.0/24 172.25.254.1/32 192.168.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{
		"10.1.2.3": true, "11.0.0.0": false, "192.168.1.77": true, "192.168.200.1": true,
		"192.169.0.1": false, "172.25.254.1": true, "172.25.254.2": false, "0.0.0.0": false,
	} {
		if got := s.contains(v4u32(netip.MustParseAddr(a))); got != want {
			t.Errorf("%s: contains %v, want %v", a, got, want)
		}
	}
	all, _ := newSet("0.0.0.0/0")
	if !all.contains(v4u32(netip.MustParseAddr("203.0.113.9"))) {
		t.Error("0.0.0.0/0 does not hold everything")
	}
	for in, want := range map[string]string{
		"10.0.0.1/8":             "host bits",
		"2001:db8::/32":          "not an IPv4 prefix",
		"10.0.0.0/8 10.0.0.0/8":  "twice",
		"10.0.0.0/8 10.0.0.0/16": "",
	} {
		_, err := newSet(in)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
	many := make([]netip.Prefix, MaxCIDRs+1)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	}
	if _, err := NewCIDRSet(many); err == nil {
		t.Error("more than MaxCIDRs accepted")
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
	deny, _ := newSet("172.25.254.0/24")
	allow, _ := newSet("172.25.0.0/16")
	src := func(a string) Source {
		b := netip.MustParseAddr(a).As16()
		return SourceOf(&b)
	}
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
		{Lists{Allow: allow}, "172.25.253.1", OK},
		{Lists{Allow: allow}, "172.26.0.1", NotAllowed},
		{Lists{Allow: allow}, "2001:db8::1", NotAllowed},
		{Lists{Allow: allow, Deny: deny}, "172.25.254.1", Denied},
		{Lists{Allow: allow, Deny: deny}, "172.25.253.1", OK},
		// An IPv6 address whose low 32 bits are in a list is not.
		{Lists{Allow: allow, Deny: deny}, "2001:db8::172.25.254.1", NotAllowed},
	} {
		if got := c.lists.Check(src(c.src)); got != c.want {
			t.Errorf("%s against allow %v deny %v: %v, want %v", c.src, c.lists.Allow.Prefixes(), c.lists.Deny.Prefixes(), got, c.want)
		}
	}
	if !(&Lists{}).Empty() || (&Lists{Deny: deny}).Empty() || (&Lists{Allow: allow}).Empty() {
		t.Error("Empty is wrong")
	}
}

// ParsePrefix answers the prefix (an address as a /32) or an error that
// says what is wrong with it.
func TestParsePrefix(t *testing.T) {
	cases := [][2]string{
		{"10.0.0.0/8", "10.0.0.0/8"}, {"10.1.2.3", "10.1.2.3/32"}, {"0.0.0.0/0", "0.0.0.0/0"},
		{"10.0.0.1/8", "host bits set (10.0.0.0/8?)"}, {"2001:db8::1", "not an IPv4 prefix or address"},
		{"::/0", "not an IPv4 prefix"}, {"10.0.0.0/33", "not an IPv4 prefix"}, {"", "not an IPv4 prefix or address"},
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
// answers an IPv4 prefix without host bits that a set takes and that reads
// back the same, or an error naming what it was given.
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
		if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p {
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
