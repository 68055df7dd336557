package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/tapvs/tapvs/tun"
)

// The interfaces: section: tapvs's two TAPs, their addresses, routes and,
// for a sidecar, the kernel's end (peer_address, masquerade, publish).
// IPv6's own rules are in family.go.

type rawIface struct {
	Name     string     `mapstructure:"name"`
	MTU      int        `mapstructure:"mtu"`
	Queues   int        `mapstructure:"queues"`
	TxQLen   int        `mapstructure:"txqueuelen"`
	MAC      string     `mapstructure:"mac"`
	Address  string     `mapstructure:"address"`
	Address6 string     `mapstructure:"address6"`
	Netns    string     `mapstructure:"netns"`
	Routes   []rawRoute `mapstructure:"routes"`
	// The kernel's end of the TAP, for tapvs in a container: see Interface.
	PeerAddress  string       `mapstructure:"peer_address"`
	PeerAddress6 string       `mapstructure:"peer_address6"`
	Masquerade   bool         `mapstructure:"masquerade"`
	Publish      []rawPublish `mapstructure:"publish"`
}

type rawPublish struct {
	Protocol string `mapstructure:"protocol"`
	Port     int    `mapstructure:"port"`
	VIP      string `mapstructure:"vip"`
}

type rawRoute struct {
	Dst string `mapstructure:"dst"`
	Via string `mapstructure:"via"`
}

// Interface is one TAP side.
type Interface struct {
	Name   string
	MTU    int
	Queues int
	// TxQLen is the TAP's transmit queue in frames per queue, where frames
	// wait for tapvs to read them (`ip link set ... txqueuelen`); 0 leaves
	// the kernel's (1000).
	TxQLen  int
	MAC     net.HardwareAddr // tapvs's own MAC on this side; random if empty
	Address netip.Prefix
	// Address6 is tapvs's own IPv6 address on this side with its prefix
	// (optional): IPv6 VIPs (client side) and LIPs (server side) need it,
	// and neighbour discovery answers for them on its link.
	Address6 netip.Prefix
	Netns    string
	Routes   []Route
	// PeerAddress, if set, is the address tapvs gives the kernel's end of
	// the TAP, in Address's subnet: where only tapvs holds CAP_NET_ADMIN (a
	// sidecar in a pod), nothing else can.
	PeerAddress netip.Prefix
	// PeerAddress6 is the kernel end's IPv6 address, in Address6's prefix:
	// a key of its own beside PeerAddress as Address6 is beside Address,
	// so that each family's pair (tapvs's address, the kernel's) is read
	// side by side, and an IPv6-only pod gives only this one.
	PeerAddress6 netip.Prefix
	// Masquerade has the kernel masquerade packets from Address's subnet
	// (with PeerAddress) and Address6's prefix (with PeerAddress6) that
	// leave its namespace by another interface (nftables): a sidecar's
	// LIPs reaching real servers outside the pod, which have no route back
	// to them. Needs the namespace's net.ipv4.ip_forward and
	// net.ipv6.conf.all.forwarding for the families masqueraded.
	Masquerade bool
	// Publish has the kernel send new connections to its own addresses on
	// these ports to their VIPs (DNAT): clients outside a pod reach a
	// sidecar's services at the pod's address. Client side only; needs
	// the peer address of each VIP's family, a route toward the clients and
	// the namespace's forwarding of that family.
	Publish []Published
}

// Published is a port of the namespace's own addresses sent to a VIP.
type Published struct {
	Protocol uint8 // syscall.IPPROTO_TCP or IPPROTO_UDP
	Port     uint16
	VIP      netip.Addr
}

// Route is a route out of one side.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// maxTxQLen bounds a TAP's transmit queue: each queued frame holds a buffer
// of up to 64 KiB (with offload) in the kernel.
const maxTxQLen = 100000

// readIface reads one side from the file: what its text cannot give is
// refused here, the rest by Interface.check.
func readIface(e *errs, f string, r rawIface) Interface {
	i := Interface{Name: r.Name, MTU: r.MTU, Queues: r.Queues, TxQLen: r.TxQLen, Netns: r.Netns, Masquerade: r.Masquerade}
	if r.MAC != "" {
		m, err := net.ParseMAC(r.MAC)
		if err != nil {
			e.add(f+".mac", "%q is not a unicast Ethernet address", r.MAC)
		}
		i.MAC = m
	}
	i.Address = readPrefix(e, f+".address", r.Address, "an address with prefix length (like 172.25.84.4/24)")
	if r.Address6 != "" {
		i.Address6 = readPrefix(e, f+".address6", r.Address6, "an IPv6 address with prefix length (like fd00:25:84::4/64)")
	}
	for j, rr := range r.Routes {
		i.Routes = append(i.Routes, readRoute(e, fmt.Sprintf("%s.routes[%d]", f, j), rr))
	}
	if r.PeerAddress != "" {
		i.PeerAddress = readPrefix(e, f+".peer_address", r.PeerAddress, "an IPv4 address with prefix length (like 172.25.84.1/24)")
	}
	if r.PeerAddress6 != "" {
		i.PeerAddress6 = readPrefix(e, f+".peer_address6", r.PeerAddress6, "an IPv6 address with prefix length (like fd00:25:84::1/64)")
	}
	for j, rp := range r.Publish {
		pf := fmt.Sprintf("%s.publish[%d]", f, j)
		var p Published
		switch strings.ToLower(rp.Protocol) {
		case "", "tcp":
			p.Protocol = syscall.IPPROTO_TCP
		case "udp":
			p.Protocol = syscall.IPPROTO_UDP
		default:
			e.add(pf+".protocol", "%q is not tcp or udp", rp.Protocol)
		}
		p.Port, _ = port(e, pf+".port", rp.Port)
		if v, err := netip.ParseAddr(rp.VIP); err != nil {
			e.add(pf+".vip", "%q is not an IP address", rp.VIP)
		} else {
			p.VIP = v
		}
		i.Publish = append(i.Publish, p)
	}
	return i
}

// readPrefix reads an address with its prefix length; what is not one is
// refused as not being what.
func readPrefix(e *errs, f, s, what string) netip.Prefix {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		e.add(f, "%q is not %s", s, what)
	}
	return p
}

// check checks side i, f being its key ("interfaces.client"). A value the
// file's reading refused (e has its field) is taken as absent, so that
// what depends on it is not refused for it too.
func (i *Interface) check(e *errs, f string) {
	if err := tun.CheckIfName(i.Name); err != nil {
		e.add(f+".name", "%q is not an interface name: it %v", i.Name, err)
	}
	if i.Netns != "" {
		if err := tun.CheckNetnsName(i.Netns); err != nil {
			e.add(f+".netns", "%q is not a network namespace's name: it %v", i.Netns, err)
		}
	}
	if i.MTU < 576 || i.MTU > 65535 {
		e.add(f+".mtu", "%d is not an MTU (576-65535)", i.MTU)
	}
	if i.Queues < 1 || i.Queues > 64 {
		e.add(f+".queues", "%d is not a queue count (1-64)", i.Queues)
	}
	if i.TxQLen < 0 || i.TxQLen > maxTxQLen {
		e.add(f+".txqueuelen", "%d is not a queue length in frames (1-%d, or 0 for the kernel's)", i.TxQLen, maxTxQLen)
	}
	if i.MAC != nil && (len(i.MAC) != 6 || i.MAC[0]&1 == 1) {
		e.add(f+".mac", "%q is not a unicast Ethernet address", i.MAC)
	}
	switch {
	case !i.Address.IsValid():
		e.add(f+".address", "is not set: tapvs's own IPv4 address on this side, with prefix length (like 172.25.84.4/24)")
	case !i.Address.Addr().Is4():
		e.add(f+".address", "%s is IPv6: address is the side's IPv4 address; give its IPv6 address as address6", i.Address)
	}
	if i.Address6.IsValid() {
		checkAddress6(e, f+".address6", i.Address6)
		if i.MTU >= 576 && i.MTU < 1280 {
			// Linux turns IPv6 off on a link below IPv6's minimum MTU
			// (RFC 8200 5): the side's IPv6 could never work.
			e.add(f+".mtu", "%d is below IPv6's minimum MTU of 1280, and this side has address6", i.MTU)
		}
	}
	a4, a6 := i.Address, i.Address6
	if e.refused(f + ".address") {
		a4 = netip.Prefix{}
	}
	// has6: address6 was given; if it was refused, that refusal is the one
	// to fix, and the routes are not refused for its absence too.
	has6 := a6.IsValid() || e.refused(f+".address6")
	if e.refused(f + ".address6") {
		a6 = netip.Prefix{}
	}
	for j := range i.Routes {
		checkRoute(e, fmt.Sprintf("%s.routes[%d]", f, j), &i.Routes[j], a4, a6, has6)
	}
	i.checkKernelEnd(e, f, a4, a6, has6)
}

// checkKernelEnd checks a sidecar's keys: the kernel end's addresses
// (peer_address, peer_address6), the masquerade and the published ports.
// a4 and a6 are the side's addresses (zero if absent or refused); has6
// says address6 was given.
func (i *Interface) checkKernelEnd(e *errs, f string, a4, a6 netip.Prefix, has6 bool) {
	// A peer address given but refused is not missing.
	hasPeer := i.PeerAddress.IsValid() || e.refused(f+".peer_address")
	hasPeer6 := i.PeerAddress6.IsValid() || e.refused(f+".peer_address6")
	if pa := i.PeerAddress; pa.IsValid() {
		switch {
		case !pa.Addr().Is4():
			e.add(f+".peer_address", "%s is IPv6: peer_address is the kernel end's IPv4 address; give its IPv6 address as peer_address6", pa)
		case a4.IsValid() && (pa.Masked() != a4.Masked()):
			e.add(f+".peer_address", "%s is not in address's subnet %s", pa, a4.Masked())
		case pa.Addr() == a4.Addr():
			e.add(f+".peer_address", "%s is tapvs's own address on this side", pa.Addr())
		}
	}
	if pa := i.PeerAddress6; pa.IsValid() {
		switch {
		case pa.Addr().Is4():
			e.add(f+".peer_address6", "%s is IPv4: peer_address6 is the kernel end's IPv6 address; its IPv4 address goes in peer_address", pa)
		case !has6:
			e.add(f+".peer_address6", "needs address6: the kernel end's IPv6 address is in tapvs's IPv6 prefix on this side")
		case a6.IsValid() && (pa.Masked() != a6.Masked()):
			e.add(f+".peer_address6", "%s is not in address6's prefix %s", pa, a6.Masked())
		case pa.Addr() == a6.Addr():
			e.add(f+".peer_address6", "%s is tapvs's own address6 on this side", pa.Addr())
		case pa.Bits() < 127 && pa.Addr() == pa.Masked().Addr():
			e.add(f+".peer_address6", "%s is its prefix's Subnet-Router anycast address (host bits all zero), not a host", pa)
		}
	}
	if i.Masquerade {
		switch {
		case !hasPeer && !hasPeer6:
			e.add(f+".masquerade", "needs peer_address (IPv4) or peer_address6 (IPv6): the kernel's route back to this side")
		case has6 && !hasPeer6:
			// Each family masquerades with its peer address: the IPv6
			// LIPs would leave unmasqueraded, with no way back.
			e.add(f+".masquerade", "this side has address6 but no peer_address6: its IPv6 prefix would leave unmasqueraded; give peer_address6")
		case !hasPeer:
			// address is always there, so a side without peer_address is
			// refused only where IPv4 leaves by it: an IPv4 route needs
			// the kernel end's IPv4 address as its next hop, and what it
			// carries would leave unmasqueraded (the server side's IPv4
			// LIPs: Config.check).
			for j, rt := range i.Routes {
				if rt.Dst.Addr().Is4() {
					e.add(f+".masquerade", "this side has an IPv4 route (routes[%d], %s) but no peer_address: the kernel end has no IPv4 address to route it by, and its IPv4 would leave unmasqueraded; give peer_address", j, rt.Dst)
					break
				}
			}
		}
	}
	if len(i.Publish) > 0 && !hasPeer && !hasPeer6 {
		e.add(f+".publish", "needs peer_address or peer_address6: the kernel's route to the VIPs")
	}
	for j, p := range i.Publish {
		pf := fmt.Sprintf("%s.publish[%d]", f, j)
		if p.Protocol != syscall.IPPROTO_TCP && p.Protocol != syscall.IPPROTO_UDP {
			e.add(pf+".protocol", "%d is not tcp (%d) or udp (%d)", p.Protocol, syscall.IPPROTO_TCP, syscall.IPPROTO_UDP)
		}
		port(e, pf+".port", int(p.Port))
		// A VIP of a family the kernel end has no address of is refused
		// once there is a peer address at all (else publish's own line is
		// the one to fix).
		switch {
		case !p.VIP.IsValid():
			e.add(pf+".vip", "is not set: the VIP the port is sent to")
		case p.VIP.Is4In6():
			e.add(pf+".vip", "%s is an IPv4-mapped IPv6 address: write it as %s", p.VIP, p.VIP.Unmap())
		case p.VIP.Zone() != "":
			e.add(pf+".vip", "%s has a zone: a VIP is not scoped to a link", p.VIP)
		case p.VIP.Is4() && !hasPeer && hasPeer6:
			e.add(pf+".vip", "%s is IPv4 and this side has no peer_address: the kernel has no route to it", p.VIP)
		case p.VIP.Is6() && !hasPeer6 && hasPeer:
			e.add(pf+".vip", "%s is IPv6 and this side has no peer_address6: the kernel has no route to it", p.VIP)
		}
	}
}
