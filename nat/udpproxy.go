package nat

import (
	"sync/atomic"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/proxyhdr"
	"github.com/tapvs/tapvs/tun"
	"github.com/tapvs/tapvs/wire"
)

// A UDP service with ClientAddrProxyV2 puts a PROXY protocol v2 header
// (command PROXY, AF_INET or AF_INET6, DGRAM: the client's address and
// port, then the VIP's) before the payload of every datagram toward its real server, as
// DPVS does: UDP has no stream start, so each datagram carries its own.
// Datagrams from the server are not changed. The header goes in place: the
// Ethernet, IP and UDP headers move into the reader's headroom
// (Frame.open) and the payload stays where it is.

// udpProxyLen is the header's length for IPv4 addresses, no TLVs;
// udpProxyLen6 for IPv6.
const (
	udpProxyLen  = proxyhdr.V2IPv4
	udpProxyLen6 = proxyhdr.V2IPv6
)

// defaultServerMTU is the server side's MTU when Config.ServerMTU is 0:
// the config's default.
const defaultServerMTU = 1500

// udpProxyCounters counts the headers written, per reader, each on its own
// cache line: the count is per packet, and a line shared by every reader
// would be written by all of them.
type udpProxyCounters [MaxQueues]struct {
	n atomic.Uint64
	_ [56]byte
}

// UDPProxyHeaders is how many PROXY v2 headers were put before UDP
// datagrams toward real servers.
func (s *Stats) UDPProxyHeaders() uint64 {
	var t uint64
	for i := range s.udpProxy {
		t += s.udpProxy[i].n.Load()
	}
	return t
}

// udpProxyV2 puts the PROXY v2 header before the payload of p, a client
// datagram of c not yet rewritten or translated (its addresses are still
// the client's and the VIP's, which the header carries), and fixes the IP
// and UDP lengths and checksums for it. p and f then describe the grown frame. A
// verdict other than Forward is a counted drop.
func (b *Balancer) udpProxyV2(c *Conn, p *pkt, f *Frame) Verdict {
	if f.VNet.GSOType() != tun.VNetGSONone {
		// A super-frame the kernel would cut into datagrams after tapvs:
		// one header before the whole would reach the server as one
		// header on the first segment and none on the others.
		return b.Stats.drop(DropUDPProxyGSO)
	}
	n := udpProxyLen
	ipLen := len(p.b) - p.l3 // parse trimmed the frame to the IP packet
	if p.v6 {
		n = udpProxyLen6
	}
	// The IP packet the server side carries: NAT64 makes the client's
	// IPv6 headers (extension headers included) one 20-byte IPv4 header,
	// NAT46 the client's IPv4 header (options included) one 40-byte IPv6
	// header; the PROXY header stays the client's family (AF_INET6,
	// AF_INET).
	wireLen := ipLen
	switch {
	case c.nat64():
		wireLen = wire.IPv4MinLen + len(p.b) - p.l4
	case c.nat46():
		wireLen = wire.IPv6Len + len(p.b) - p.l4
	}
	udpLen := p.udp().Length() // l4ok checked it is within the packet
	mtu := b.cfg.ServerMTU
	if mtu <= 0 {
		mtu = defaultServerMTU
	}
	if (wireLen+n > mtu && f.reasm == 0) || wireLen+n > 0xffff {
		// Fragmenting it, or sending it over the MTU, would give the server
		// a datagram it may never get whole; a datagram without the header
		// would be read as one with a wrong client. Neither is sent. A
		// datagram that came in fragments leaves in fragments anyway
		// (frag.go), up to 65535 bytes (the UDP length, shorter, fits
		// then too).
		return b.Stats.drop(DropUDPProxyBig)
	}
	at := p.l4 + wire.UDPLen
	src, dst, sport, dport := p.key16(p.src()), p.key16(p.dst()), p.sport(), p.dport()
	if !f.open(at, n) {
		// The reader always leaves room (netstack.Headroom); a frame
		// without it cannot grow in place, so it is as good as too big.
		return b.Stats.drop(DropUDPProxyBig)
	}
	p.b = f.Buf[f.Off : f.Off+len(p.b)+n]
	hdr := p.b[at : at+n]
	var sum uint32 // the header's sum, from the values it was written from
	if p.v6 {
		proxyhdr.V2Raw6(hdr, proxyhdr.Datagram, src, dst, sport, dport)
		sum = proxyhdr.V2Sum6(proxyhdr.Datagram, src, dst, sport, dport)
		p.ip6().SetPayloadLen(ipLen + n - wire.IPv6Len)
	} else {
		s4, d4 := [4]byte(wire.In4(&src)), [4]byte(wire.In4(&dst))
		proxyhdr.V2Raw4(hdr, proxyhdr.Datagram, s4, d4, sport, dport)
		sum = proxyhdr.V2Sum4(proxyhdr.Datagram, s4, d4, sport, dport)
		ip := p.ip4()
		ip.SetTotalLen(ipLen + n)
		csum.Adjust(ip.CsumField(), csum.Fold(csum.Replace16(0, uint16(ipLen), uint16(ipLen+n))))
	}

	udp := p.udp()
	oldLen, newLen := uint16(udpLen), uint16(udpLen+n)
	udp.SetLength(int(newLen))
	// The length is in the UDP checksum twice: the header's field and the
	// pseudo-header's.
	lenDelta := csum.Replace16(0, oldLen, newLen)
	switch {
	case p.partial:
		// The field holds the pseudo-header sum alone (not complemented):
		// only its length changes; the kernel that finishes the checksum
		// sums the header and the rest of the datagram.
		csum.AdjustPartial(udp.CsumField(), csum.Fold(lenDelta))
	default:
		// The header starts at an even offset of the datagram (8), so its
		// 16-bit words line up with the checksum's. AdjustUDP keeps 0 (no
		// checksum) as 0 and sends a computed 0 as 0xffff.
		// The header's sum comes from the values it was written from.
		csum.AdjustUDP(udp.CsumField(), csum.Fold(sum+lenDelta+lenDelta))
	}
	b.Stats.udpProxy[f.Queue&(MaxQueues-1)].n.Add(1)
	return Forward
}
