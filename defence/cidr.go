package defence

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxCIDRs bounds each of a service's allow and deny lists.
const MaxCIDRs = 4096

// CIDRSet is an immutable set of IPv4 prefixes. A lookup costs one binary
// search per distinct prefix length in the set (at most 33), and no
// allocation. The zero value is the empty set.
type CIDRSet struct {
	list  []netip.Prefix // sorted, as listed
	byLen []cidrLen
}

type cidrLen struct {
	mask uint32
	nets []uint32 // sorted network addresses of this length
}

// NewCIDRSet checks and indexes a list: IPv4 prefixes, without host bits,
// each once, at most MaxCIDRs.
func NewCIDRSet(in []netip.Prefix) (CIDRSet, error) {
	if len(in) > MaxCIDRs {
		return CIDRSet{}, fmt.Errorf("%d prefixes: at most %d", len(in), MaxCIDRs)
	}
	list := slices.Clone(in)
	for _, p := range list {
		if !p.IsValid() || !p.Addr().Is4() {
			return CIDRSet{}, fmt.Errorf("%s is not an IPv4 prefix", p)
		}
		if p.Masked() != p {
			return CIDRSet{}, fmt.Errorf("%s has host bits set (%s?)", p, p.Masked())
		}
	}
	slices.SortFunc(list, comparePrefix)
	for i := 1; i < len(list); i++ {
		if list[i] == list[i-1] {
			return CIDRSet{}, fmt.Errorf("%s is listed twice", list[i])
		}
	}
	s := CIDRSet{list: list}
	for bitsLen := 0; bitsLen <= 32; bitsLen++ {
		var nets []uint32
		for _, p := range list {
			if p.Bits() == bitsLen {
				nets = append(nets, v4u32(p.Addr()))
			}
		}
		if len(nets) > 0 {
			slices.Sort(nets)
			s.byLen = append(s.byLen, cidrLen{mask: prefixMask(bitsLen), nets: nets})
		}
	}
	return s, nil
}

// Prefixes are the set's prefixes, sorted; the caller must not change them.
func (c *CIDRSet) Prefixes() []netip.Prefix { return c.list }

// Empty reports whether the set has no prefix.
func (c *CIDRSet) Empty() bool { return len(c.byLen) == 0 }

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func prefixMask(bitsLen int) uint32 {
	if bitsLen == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bitsLen)
}

func v4u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// contains reports whether a prefix of the set holds ip, an IPv4 address
// as a number.
func (c *CIDRSet) contains(ip uint32) bool {
	for i := range c.byLen {
		l := &c.byLen[i]
		if _, ok := slices.BinarySearch(l.nets, ip&l.mask); ok {
			return true
		}
	}
	return false
}

// ParsePrefix reads a source prefix as the config, the API and tapvsadm
// take it: an IPv4 prefix without host bits, or an address (a /32).
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 prefix or address", s)
		}
		return netip.PrefixFrom(a, 32), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 prefix", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (%s?)", s, p.Masked())
	}
	return p, nil
}
