package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unicode"
	"unicode/utf8"
)

// The rules every address and value an operator gives must follow. They are
// checked when a change is made (Tx), whatever it comes from: a
// configuration file, the control API, a restore. A refusal says which
// value and why, and nothing changes.

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// The checks' errors are phrases ("is a multicast address") that the caller
// puts after what it checked ("local address 224.0.0.1 ").

// checkHost refuses what cannot be the address of one host: a VIP, a LIP or
// a real server.
func checkHost(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("is missing")
	case a.Is4In6():
		return errors.New("is an IPv4-mapped IPv6 address: write it as IPv4")
	case a.Zone() != "":
		return errors.New("has a zone: only global addresses are balanced")
	case a.IsUnspecified():
		return errors.New("is the unspecified address, not a host")
	case a == broadcast4:
		return errors.New("is the broadcast address, not a host")
	case a.IsMulticast():
		return errors.New("is a multicast address, not a host")
	case a.IsLoopback():
		return errors.New("is a loopback address: it never leaves a host")
	case a.Is6() && a.IsLinkLocalUnicast():
		return errors.New("is a link-local address: it is not routed, and neighbour discovery uses it")
	}
	return nil
}

// family names an address's family in refusals.
func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// checkFamily refuses a LIP or real server a that would make service s's
// server side two families: a VIP of either family has LIPs and real
// servers of its own family (FULLNAT) or of the other (NAT64 behind an
// IPv6 VIP, NAT46 behind an IPv4 one: nat64.go), all of one family. peer
// is one of the LIPs and real servers s already has (invalid: none).
func checkFamily(s *Service, a, peer netip.Addr) error {
	if peer.IsValid() && peer.Is4() != a.Is4() {
		return fmt.Errorf("is %s but service %s's server side is %s (%s): its local addresses and real servers are one family", family(a), s, family(peer), peer)
	}
	return nil
}

// checkOnSubnet refuses the network and broadcast addresses of a subnet
// that a is in (none for /31 and /32, RFC 3021).
func checkOnSubnet(a netip.Addr, p netip.Prefix, side string) error {
	if !p.IsValid() || !p.Contains(a) || (p.Addr().Is4() && p.Bits() >= 31) || p.Bits() >= 127 {
		return nil
	}
	m := p.Masked()
	if a == m.Addr() {
		if a.Is6() {
			// RFC 4291 2.6.1: every router on the link answers to it.
			return fmt.Errorf("is the subnet-router anycast address of the %s side's subnet %s", side, m)
		}
		return fmt.Errorf("is the network address of the %s side's subnet %s", side, m)
	}
	if a.Is6() {
		return nil // IPv6 has no broadcast address
	}
	b := m.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	for i := range 4 {
		b[i] |= byte(host >> (8 * (3 - i)))
	}
	if a == netip.AddrFrom4(b) {
		return fmt.Errorf("is the broadcast address of the %s side's subnet %s", side, m)
	}
	return nil
}

// checkOwn refuses tapvs's own addresses and its subnets' network and
// broadcast addresses.
func (c *Config) checkOwn(a netip.Addr) error {
	for _, side := range []struct {
		p    netip.Prefix
		name string
	}{{c.ClientNet, "client"}, {c.ServerNet, "server"}, {c.ClientNet6, "client"}, {c.ServerNet6, "server"}} {
		if side.p.IsValid() && side.p.Addr() == a {
			return fmt.Errorf("is tapvs's own address on the %s side", side.name)
		}
		if err := checkOnSubnet(a, side.p, side.name); err != nil {
			return err
		}
	}
	return nil
}

// checkVIP, checkLIP and checkRS are each address kind's rules that need
// nothing but the address: the ones between addresses are the Tx's index's.
func (c *Config) checkVIP(a netip.Addr) error {
	if err := checkHost(a); err != nil {
		return err
	}
	if a.Is6() && !c.ClientNet6.IsValid() && c.ClientNet.IsValid() {
		// The stack answers neighbour discovery for VIPs from the
		// side's own IPv6 address.
		return errors.New("is IPv6, and the client side has no IPv6 address (interfaces.client.address6)")
	}
	return c.checkOwn(a)
}

func (c *Config) checkLIP(a netip.Addr) error {
	if err := checkHost(a); err != nil {
		return err
	}
	net := c.ServerNet
	if a.Is6() {
		net = c.ServerNet6
		if !net.IsValid() && c.ServerNet.IsValid() {
			return errors.New("is IPv6, and the server side has no IPv6 address (interfaces.server.address6)")
		}
	}
	if net.IsValid() && !net.Contains(a) {
		// The stack answers ARP (neighbour discovery) for LIPs on the
		// server side's link: the real servers' replies must find them
		// there.
		return fmt.Errorf("is not in the server side's subnet %s", net.Masked())
	}
	return c.checkOwn(a)
}

func (c *Config) checkRS(a netip.Addr, port uint16, allPorts bool) error {
	if err := checkHost(a); err != nil {
		return err
	}
	if port == 0 && !allPorts {
		// Only a server of an all-ports service may: it takes each
		// client's port (persist.go).
		return errors.New("has port 0, which is not a port")
	}
	for _, n := range []netip.Prefix{c.ClientNet, c.ClientNet6} {
		if n.IsValid() && n.Contains(a) {
			return fmt.Errorf("is in the client side's subnet %s: real servers are reached from the server side", n.Masked())
		}
	}
	return c.checkOwn(a)
}

// MaxWeight is the largest scheduling weight, as in IPVS.
const MaxWeight = 65535

func checkWeight(w int) error {
	if w < 0 || w > MaxWeight {
		return fmt.Errorf("has weight %d, out of range 0-%d", w, MaxWeight)
	}
	return nil
}

// MaxTimeout bounds every connection timeout: a deadline is the table's
// clock plus the timeout in nanoseconds, which must never overflow, and a
// timeout of more than a month is a typing error, not a policy.
const MaxTimeout = 30 * 24 * time.Hour

// MinTimeout is the shortest connection timeout. Expiry is checked by a
// sweep (sweep_interval, up to a minute) and a deadline moves only once it
// is behind by more than a slice of a second: a shorter timeout would not
// be kept, and one of a nanosecond expires every entry at its next packet.
// IPVS's shortest default is 2 s (TCP NONE); its timeouts are whole seconds.
const MinTimeout = time.Second

// CheckTimeout says why d cannot be a connection timeout, or nil.
func CheckTimeout(d time.Duration) error {
	if d < MinTimeout || d > MaxTimeout {
		return fmt.Errorf("%v is not a timeout (from %v to %v)", d, MinTimeout, MaxTimeout)
	}
	return nil
}

// MaxNameLen bounds a service's name, in bytes.
const MaxNameLen = 128

// CheckName says why s cannot be a service's name, or nil. A name is the
// service's label in metrics and logs: at most MaxNameLen bytes of UTF-8,
// each character printable (no NUL, line break or other control), or
// empty for none.
func CheckName(s string) error {
	switch {
	case len(s) > MaxNameLen:
		return fmt.Errorf("is %d bytes long, more than %d", len(s), MaxNameLen)
	case !utf8.ValidString(s):
		return errors.New("is not UTF-8")
	}
	for i, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("has the unprintable character %U at byte %d", r, i)
		}
	}
	return nil
}

// Check says which timeout is out of range, or nil.
func (t *Timeouts) Check() error {
	for i, d := range t.TCP {
		if err := CheckTimeout(d); err != nil {
			return fmt.Errorf("tcp %s: %w", lower(stateNames[i]), err)
		}
	}
	if err := CheckTimeout(t.UDP); err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	return nil
}
