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

// CIDRSet is an immutable set of IPv4 prefixes and IPv6 prefixes of at
// most /64 (an IPv6 client is listed, as it is counted, by its /64: a
// Source). A lookup costs one binary search per distinct prefix length of
// the source's family in the set (at most 33 for IPv4, 65 for IPv6), and
// no allocation. The zero value is the empty set.
type CIDRSet struct {
	list   []netip.Prefix // sorted, as listed
	byLen  []cidrLen      // IPv4: the address as a number
	byLen6 []cidrLen      // IPv6: the /64 as a number (Source's key)
}

type cidrLen struct {
	mask uint64
	nets []uint64 // sorted network numbers of this length
}

// MaxBits6 is the longest IPv6 prefix a list holds: a Source's /64.
const MaxBits6 = 64

// NewCIDRSet checks and indexes a list: IPv4 prefixes and IPv6 ones of at
// most /64, without host bits, each once, at most MaxCIDRs.
func NewCIDRSet(in []netip.Prefix) (CIDRSet, error) {
	if len(in) > MaxCIDRs {
		return CIDRSet{}, fmt.Errorf("%d prefixes: at most %d", len(in), MaxCIDRs)
	}
	list := slices.Clone(in)
	for _, p := range list {
		if err := checkPrefix(p); err != nil {
			return CIDRSet{}, fmt.Errorf("%s %w", p, err)
		}
	}
	slices.SortFunc(list, comparePrefix)
	for i := 1; i < len(list); i++ {
		if list[i] == list[i-1] {
			return CIDRSet{}, fmt.Errorf("%s is listed twice", list[i])
		}
	}
	return CIDRSet{list: list, byLen: index(list, true), byLen6: index(list, false)}, nil
}

// checkPrefix says why p cannot be listed (a phrase after it), or nil.
func checkPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid() || p.Addr().Is4In6():
		return fmt.Errorf("is not an IPv4 or IPv6 prefix")
	case p.Addr().Is6() && p.Bits() > MaxBits6:
		return fmt.Errorf("is longer than /%d: an IPv6 client is listed by its /64 (one host holds a whole /64)", MaxBits6)
	case p.Masked() != p:
		return fmt.Errorf("has host bits set (%s?)", p.Masked())
	}
	return nil
}

// index groups a sorted list's prefixes of one family (IPv4: v4) by
// length, each length's network numbers sorted.
func index(list []netip.Prefix, v4 bool) []cidrLen {
	width := MaxBits6
	if v4 {
		width = 32
	}
	var out []cidrLen
	for bitsLen := 0; bitsLen <= width; bitsLen++ {
		var nets []uint64
		for _, p := range list {
			if p.Addr().Is4() == v4 && p.Bits() == bitsLen {
				nets = append(nets, prefixNumber(p.Addr()))
			}
		}
		if len(nets) > 0 {
			slices.Sort(nets)
			out = append(out, cidrLen{mask: prefixMask(bitsLen, width), nets: nets})
		}
	}
	return out
}

// Prefixes are the set's prefixes, sorted; the caller must not change them.
func (c *CIDRSet) Prefixes() []netip.Prefix { return c.list }

// Empty reports whether the set has no prefix.
func (c *CIDRSet) Empty() bool { return len(c.byLen)+len(c.byLen6) == 0 }

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// prefixMask is the mask of a prefix of bitsLen bits of a width-bit
// number (IPv4's 32, IPv6's /64); 0 for /0 (Go's shift past 63 is 0).
func prefixMask(bitsLen, width int) uint64 {
	return ^uint64(0) << (64 - bitsLen) >> (64 - width)
}

// prefixNumber is an address as a Source keys it: IPv4's 32 bits, IPv6's
// first 64.
func prefixNumber(a netip.Addr) uint64 {
	if a.Is4() {
		b := a.As4()
		return uint64(binary.BigEndian.Uint32(b[:]))
	}
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8])
}

// contains reports whether a prefix of the set holds the source.
func (c *CIDRSet) contains(id Source) bool {
	ls := c.byLen
	if id.fam == 6 {
		ls = c.byLen6
	}
	for i := range ls {
		l := &ls[i]
		if _, ok := slices.BinarySearch(l.nets, id.key&l.mask); ok {
			return true
		}
	}
	return false
}

// ParsePrefix reads a source prefix as the config, the API and tapvsadm
// take it: an IPv4 prefix or an IPv6 one of at most /64, without host
// bits, or an IPv4 address (a /32).
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		switch {
		case err == nil && a.Is6() && a.Zone() == "" && !a.Is4In6():
			return netip.Prefix{}, fmt.Errorf("%q is an IPv6 address: an IPv6 client is listed by its /64 (%s)", s, netip.PrefixFrom(a, MaxBits6).Masked())
		case err != nil || !a.Is4():
			return netip.Prefix{}, fmt.Errorf("%q is not a prefix or an IPv4 address", s)
		}
		return netip.PrefixFrom(a, 32), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 or IPv6 prefix", s)
	}
	if err := checkPrefix(p); err != nil {
		return netip.Prefix{}, fmt.Errorf("%q %w", s, err)
	}
	return p, nil
}
