package tapvs

import (
	"fmt"
	"net/netip"

	"github.com/tapvs/tapvs/nat"
)

// Mark is the selector of the match service on mark (tapvsadm -f): the
// configuration file's marks: entry. tapvs sees no kernel firewall marks;
// the number only names the selector.
type Mark struct {
	Mark uint32 // 1 and up
	// VIP and Bits are the selector's VIPs: the prefix VIP/Bits (VIP its
	// first address, at most 256 addresses: IPv4 /24, IPv6 /120 or
	// longer), or VIP alone when Bits is 0.
	VIP      netip.Addr
	Bits     int
	Protocol Protocol // "" is TCP
	Ports    []PortRange
}

// PortRange is First to Last, both in; Last 0 is First alone.
type PortRange struct {
	First, Last uint16
}

// marks are cfg's selectors as the configuration's marks:, each refusal
// naming its field.
func (cfg Config) marks() (map[uint32]nat.Match, error) {
	if len(cfg.Marks) == 0 {
		return nil, nil
	}
	out := map[uint32]nat.Match{}
	for i, m := range cfg.Marks {
		f := fmt.Sprintf("Config.Marks[%d]", i)
		if m.Mark == 0 {
			return nil, fmt.Errorf("%s.Mark: 0 is not a mark (1-%d)", f, uint32(nat.MaxMark))
		}
		if _, dup := out[m.Mark]; dup {
			return nil, fmt.Errorf("%s.Mark: %d is defined twice", f, m.Mark)
		}
		if !m.VIP.IsValid() || m.VIP.Zone() != "" || m.VIP.Is4In6() {
			return nil, fmt.Errorf("%s.VIP: %q is not a VIP", f, m.VIP)
		}
		if m.Bits != 0 {
			if m.Bits < 0 || m.Bits > m.VIP.BitLen() {
				return nil, fmt.Errorf("%s.Bits: %d is not a prefix length of %s", f, m.Bits, m.VIP)
			}
			if err := nat.CheckVIPPrefix(netip.PrefixFrom(m.VIP, m.Bits)); err != nil {
				return nil, fmt.Errorf("%s.Bits: %w", f, err)
			}
		}
		p, err := m.Protocol.nat()
		if err != nil {
			return nil, fmt.Errorf("%s.Protocol: %w", f, err)
		}
		nm := nat.Match{Addr: m.VIP, Bits: m.Bits, Protocol: p}
		if m.Bits == m.VIP.BitLen() {
			nm.Bits = 0 // one address, as the configuration's reading stores it
		}
		for _, r := range m.Ports {
			last := r.Last
			if last == 0 {
				last = r.First
			}
			nm.Ports = append(nm.Ports, nat.PortRange{Lo: r.First, Hi: last})
		}
		if _, err := nm.Normal(); err != nil {
			return nil, fmt.Errorf("%s.Ports: %w", f, err)
		}
		out[m.Mark] = nm
	}
	return out, nil
}

// markOf is a running selector as a Mark.
func markOf(mark uint32, m nat.Match) *Mark {
	out := &Mark{Mark: mark, VIP: m.Addr, Bits: m.Bits, Protocol: protocolOf(m.Protocol)}
	for _, r := range m.Ports {
		out.Ports = append(out.Ports, PortRange{First: r.Lo, Last: r.Hi})
	}
	return out
}
