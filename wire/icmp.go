package wire

import "gvisor.dev/gvisor/pkg/tcpip/header"

// The ICMP error types that quote a packet: ICMPv4's (RFC 792) and
// ICMPv6's (RFC 4443 2.1).
const (
	ICMP4Unreach  = uint8(header.ICMPv4DstUnreachable) // 3
	ICMP4TimeEx   = uint8(header.ICMPv4TimeExceeded)   // 11
	ICMP4Param    = uint8(header.ICMPv4ParamProblem)   // 12
	ICMP6Unreach  = uint8(header.ICMPv6DstUnreachable) // 1
	ICMP6TooBig   = uint8(header.ICMPv6PacketTooBig)   // 2
	ICMP6TimeEx   = uint8(header.ICMPv6TimeExceeded)   // 3
	ICMP6ParamErr = uint8(header.ICMPv6ParamProblem)   // 4
)

// ICMP4FragNeeded is Destination Unreachable's code for fragmentation
// needed and DF set (RFC 1191).
const ICMP4FragNeeded = uint8(header.ICMPv4FragmentationNeeded)

// Least MTUs: IPv6's (RFC 8200 5: a Packet Too Big never says less, and an
// ICMPv6 error is no longer than this) and IPv4's (RFC 791).
const (
	IPv6MinMTU = header.IPv6MinimumMTU
	IPv4MinMTU = header.IPv4MinimumMTU
)

// ICMP4to6 maps an ICMPv4 error's type and code (and a fragmentation
// needed's next-hop MTU) to ICMPv6's (RFC 7915 4.2) with its 32-bit field:
// a Packet Too Big's MTU, a parameter problem's pointer. ok is false for
// what has no counterpart.
func ICMP4to6(typ, code uint8, mtu uint16) (t6, c6 uint8, field uint32, ok bool) {
	switch typ {
	case ICMP4Unreach:
		switch code {
		case 0, 1, 5, 6, 7, 8, 11, 12: // net, host, source route failed, unknown, isolated, for TOS
			return ICMP6Unreach, 0, 0, true // no route to destination
		case 2: // protocol unreachable: the next header field is not understood
			return ICMP6ParamErr, 1, IPv6NextHdrOff, true
		case 3:
			return ICMP6Unreach, 4, 0, true // port unreachable
		case ICMP4FragNeeded:
			// Fragmentation needed: the IPv6 packet is 20 bytes longer
			// than the IPv4 one that did not fit; a router too old to say
			// (MTU 0) or a tiny MTU gives IPv6's minimum.
			return ICMP6TooBig, 0, max(uint32(mtu)+IPv6Len-IPv4MinLen, IPv6MinMTU), true
		case 9, 10, 13: // administratively prohibited
			return ICMP6Unreach, 1, 0, true
		}
	case ICMP4TimeEx:
		if code <= 1 { // TTL exceeded in transit, reassembly time exceeded
			return ICMP6TimeEx, code, 0, true
		}
	}
	return 0, 0, 0, false
}

// ICMP6to4 maps an ICMPv6 error's type, code and 32-bit field (a Packet
// Too Big's MTU) to ICMPv4's (RFC 7915 5.2) with the 16-bit field of a
// fragmentation needed (the next-hop MTU), maxMTU being the IPv4 side's.
func ICMP6to4(typ, code uint8, field uint32, maxMTU int) (t4, c4 uint8, mtu uint16, ok bool) {
	switch typ {
	case ICMP6Unreach:
		switch code {
		case 0, 2, 3: // no route, beyond scope, address unreachable
			return ICMP4Unreach, 1, 0, true // host unreachable
		case 1:
			return ICMP4Unreach, 10, 0, true // communication administratively prohibited
		case 4:
			return ICMP4Unreach, 3, 0, true // port unreachable
		}
	case ICMP6TooBig:
		// The IPv4 packet is 20 bytes shorter than the IPv6 one that did
		// not fit, and no longer than the server side's link carries.
		m := min(max(int64(field)-(IPv6Len-IPv4MinLen), IPv4MinMTU), int64(maxMTU), 0xffff)
		return ICMP4Unreach, ICMP4FragNeeded, uint16(m), true
	case ICMP6TimeEx:
		if code <= 1 {
			return ICMP4TimeEx, code, 0, true
		}
	case ICMP6ParamErr:
		if code == 1 { // unrecognized next header
			return ICMP4Unreach, 2, 0, true // protocol unreachable
		}
	}
	return 0, 0, 0, false
}
