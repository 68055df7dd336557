package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/vishvananda/netlink"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/netstack"
)

var web = netip.AddrPortFrom(lab.VIP, lab.HTTPPort)

// get does one short HTTP request through the VIP and returns the RS's name
// and the source it saw.
func (e *env) get(hc *http.Client) (rs string, saw netip.AddrPort) {
	e.t.Helper()
	resp, err := hc.Get("http://" + web.String() + "/")
	if err != nil {
		e.t.Fatalf("GET via VIP: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	var addr, src string
	if _, err := fmt.Sscanf(string(body), "%s %s saw %s", &rs, &addr, &src); err != nil {
		e.t.Fatalf("answer %q: %v", body, err)
	}
	saw, err = netip.ParseAddrPort(src)
	if err != nil {
		e.t.Fatal(err)
	}
	return rs, saw
}

func (e *env) service(name string) *nat.Service {
	for _, s := range e.d.Balancer.Services() {
		if s.Name() == name {
			return s
		}
	}
	e.t.Fatalf("no service %s", name)
	return nil
}

// alternates sends n HTTP requests, each of which must reach the other
// real server than the one before.
func (e *env) alternates(n int) {
	e.t.Helper()
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	prev := ""
	for i := range n {
		rs, _ := e.get(hc)
		if rs == prev {
			e.t.Fatalf("request %d went to %s twice in a row", i, rs)
		}
		prev = rs
	}
}

// (a) rr alternates exactly between the two real servers.
func TestRoundRobinAlternates(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	e.alternates(10)
	if a, b := e.rs[0].Requests.Load(), e.rs[1].Requests.Load(); a != 5 || b != 5 {
		t.Fatalf("rs1 %d, rs2 %d requests; want 5 and 5", a, b)
	}
}

// (a) wrr follows the weights.
func TestWeightedRoundRobinFollowsWeights(t *testing.T) {
	e := setup(t, services("wrr", 3, 1), "")
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	for range 40 {
		e.get(hc)
	}
	if a, b := e.rs[0].Requests.Load(), e.rs[1].Requests.Load(); a != 30 || b != 10 {
		t.Fatalf("rs1 %d, rs2 %d requests; want 30 and 10 for weights 3:1", a, b)
	}
}

// (b) real servers see a LIP, the client sees the VIP, and (g) the servers,
// on two subnets behind a router, are reached through the router's MAC.
func TestFullNATAddressesOnTheWire(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	capRS := [2]*capture{startCapture(t, e.top.RS[0], "eth0"), startCapture(t, e.top.RS[1], "eth0")}
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	lips := map[netip.Addr]bool{lab.LIP1: true, lab.LIP2: true}
	for range 4 {
		_, saw := e.get(hc)
		if !lips[saw.Addr()] {
			t.Fatalf("the real server saw %v, not a LIP", saw)
		}
	}
	// Each get returned once its answer was read; the connections' FINs
	// and last ACKs may still be on their way into the captures.
	for _, c := range append(capRS[:], capClient, capRouter) {
		if !eventually(5*time.Second, func() bool { return tcpFlowsClosed(c.packets(), lab.HTTPPort) }) {
			t.Fatal("the HTTP connections' closes did not all reach a capture within 5s")
		}
		c.stop()
	}

	client := lab.ClientAddr.Addr()
	ps := tcpPort(capClient.packets(), lab.HTTPPort)
	if len(ps) < 4*5 {
		t.Fatalf("client side: only %d HTTP packets captured", len(ps))
	}
	for _, p := range ps {
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		src, dst := addr(ip.SrcIP), addr(ip.DstIP)
		if !(src == client && dst == lab.VIP || src == lab.VIP && dst == client) {
			t.Fatalf("client side carries %v -> %v: only client <-> VIP may appear", src, dst)
		}
	}
	for i, rsAddr := range []netip.Addr{lab.RS1, lab.RS2} {
		ps := tcpPort(capRS[i].packets(), lab.HTTPPort)
		if len(ps) < 2*5 {
			t.Fatalf("rs%d: only %d HTTP packets captured", i+1, len(ps))
		}
		for _, p := range ps {
			ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			src, dst := addr(ip.SrcIP), addr(ip.DstIP)
			if !(lips[src] && dst == rsAddr || src == rsAddr && lips[dst]) {
				t.Fatalf("rs%d sees %v -> %v: only LIP <-> RS may appear", i+1, src, dst)
			}
		}
	}
	routerMAC := ifaceMAC(t, e.top.Router, e.top.TapServer)
	toRS := 0
	for _, p := range tcpPort(capRouter.packets(), lab.HTTPPort) {
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if dst := addr(ip.DstIP); dst == lab.RS1 || dst == lab.RS2 {
			toRS++
			if eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet); eth.DstMAC.String() != routerMAC {
				t.Fatalf("frame to %v went to MAC %v, not the router's %v", dst, eth.DstMAC, routerMAC)
			}
		}
	}
	if toRS == 0 {
		t.Fatal("no frame toward the real servers crossed the router's link")
	}
	onlyLIPToRS(t, capRouter.packets(), routerMAC, net.HardwareAddr(e.d.Stack.Server.LinkAddress()).String(), e.d.Config())
}

// onlyLIPToRS checks that a capture of the link between tapvs and the
// router holds nothing but FULLNAT traffic and the address resolution it
// needs: every IPv4 frame is LIP:port -> RS:80 from tapvs's MAC to the
// router's, or the way back, the LIP's port from the local port range;
// every ARP frame is between the router and tapvs about the router's
// address, tapvs's own or a LIP. No client address, no VIP. (These
// services have no health checks, so tapvs's stack sends nothing else.)
func onlyLIPToRS(t *testing.T, ps []gopacket.Packet, routerMAC, tapvsMAC string, cfg *config.Config) {
	t.Helper()
	lips := map[netip.Addr]bool{lab.LIP1: true, lab.LIP2: true}
	rss := map[netip.Addr]bool{lab.RS1: true, lab.RS2: true}
	arpAddrs := map[netip.Addr]bool{lab.RouterAddr.Addr(): true, lab.TapvsServer.Addr(): true, lab.LIP1: true, lab.LIP2: true}
	macs := map[string]bool{routerMAC: true, tapvsMAC: true}
	ipv4, arps := 0, 0
	for i, p := range ps {
		eth, ok := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		if !ok {
			t.Fatalf("router link frame %d is not Ethernet: %v", i, p)
		}
		switch eth.EthernetType {
		case layers.EthernetTypeARP:
			arps++
			a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP)
			if !ok {
				t.Fatalf("router link frame %d: undecodable ARP: %v", i, p)
			}
			sha, spa, tpa := net.HardwareAddr(a.SourceHwAddress).String(), addr(a.SourceProtAddress), addr(a.DstProtAddress)
			if !macs[eth.SrcMAC.String()] || !macs[sha] || !arpAddrs[spa] || !arpAddrs[tpa] {
				t.Fatalf("router link frame %d: ARP from %v (%v, %v) about %v: only the router and tapvs may resolve each other", i, eth.SrcMAC, sha, spa, tpa)
			}
		case layers.EthernetTypeIPv4:
			ipv4++
			ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if !ok {
				t.Fatalf("router link frame %d: IPv4 %v -> %v, protocol %v: only TCP between LIPs and real servers may cross", i, ip.SrcIP, ip.DstIP, ip.Protocol)
			}
			src, dst := addr(ip.SrcIP), addr(ip.DstIP)
			sport, dport := uint16(tcp.SrcPort), uint16(tcp.DstPort)
			inRange := func(p uint16) bool { return p >= cfg.PortMin && p <= cfg.PortMax }
			out := lips[src] && rss[dst] && dport == lab.HTTPPort && inRange(sport) &&
				eth.SrcMAC.String() == tapvsMAC && eth.DstMAC.String() == routerMAC
			back := rss[src] && lips[dst] && sport == lab.HTTPPort && inRange(dport) &&
				eth.SrcMAC.String() == routerMAC && eth.DstMAC.String() == tapvsMAC
			if !out && !back {
				t.Fatalf("router link frame %d: %v %v:%d -> %v %v:%d: only LIP:[%d-%d] <-> RS:%d between tapvs (%v) and the router (%v) may appear",
					i, eth.SrcMAC, src, sport, eth.DstMAC, dst, dport, cfg.PortMin, cfg.PortMax, lab.HTTPPort, tapvsMAC, routerMAC)
			}
		case layers.EthernetTypeIPv6:
			// tapvs has no IPv6; the router's kernel does its own link-local
			// chores on its end of the TAP: duplicate address detection,
			// router solicitation, multicast listener reports. Those, and
			// only from the router, are not tapvs's doing.
			ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			ic, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			chore := ok && map[uint8]bool{
				layers.ICMPv6TypeRouterSolicitation: true, layers.ICMPv6TypeNeighborSolicitation: true,
				layers.ICMPv6TypeNeighborAdvertisement: true, layers.ICMPv6TypeMLDv2MulticastListenerReportMessageV2: true,
			}[ic.TypeCode.Type()]
			if eth.SrcMAC.String() != routerMAC || !chore || !(ip.SrcIP.IsLinkLocalUnicast() || ip.SrcIP.IsUnspecified()) {
				t.Fatalf("router link frame %d: IPv6 %v -> %v from %v: only the router's own link-local ICMPv6 chores may appear", i, ip.SrcIP, ip.DstIP, eth.SrcMAC)
			}
		default:
			t.Fatalf("router link frame %d: ethertype %v from %v to %v: only IPv4, ARP and the router's IPv6 chores may cross", i, eth.EthernetType, eth.SrcMAC, eth.DstMAC)
		}
	}
	if ipv4 == 0 {
		t.Fatal("the router link capture holds no IPv4 frame")
	}
	t.Logf("router link: %d IPv4 frames, all LIP <-> RS; %d ARP", ipv4, arps)
}

// tcpFlowsClosed reports whether every TCP connection to or from port in
// ps has closed on the wire: a FIN each way, then an ACK of the later FIN.
func tcpFlowsClosed(ps []gopacket.Packet, port uint16) bool {
	type flow struct{ a, b netip.AddrPort }
	type state struct {
		fin      [2]bool
		lastFin  int // the direction of the second FIN
		lastAckd bool
	}
	flows := map[flow]*state{}
	for _, p := range tcpPort(ps, port) {
		// IPv4 or IPv6: the flow's addresses from whichever it is.
		nf := p.NetworkLayer().NetworkFlow()
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		src := netip.AddrPortFrom(addr(nf.Src().Raw()), uint16(tcp.SrcPort))
		dst := netip.AddrPortFrom(addr(nf.Dst().Raw()), uint16(tcp.DstPort))
		k, dir := flow{src, dst}, 0
		if src.Port() == port { // from the server's end
			k, dir = flow{dst, src}, 1
		}
		st := flows[k]
		if st == nil {
			st = &state{}
			flows[k] = st
		}
		if st.fin[0] && st.fin[1] && dir != st.lastFin && tcp.ACK && !tcp.FIN {
			st.lastAckd = true
		}
		if tcp.FIN && !st.fin[dir] {
			st.fin[dir] = true
			if st.fin[0] && st.fin[1] {
				st.lastFin = dir
			}
		}
		if tcp.RST {
			st.fin, st.lastAckd = [2]bool{true, true}, true
		}
	}
	for _, st := range flows {
		if !st.lastAckd {
			return false
		}
	}
	return len(flows) > 0
}

// (c) 64 MiB each way arrives intact (hashes compared), and it does not
// matter which server the rr picks.
func TestBulk64MiBBothWaysIntact(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	bulk := netip.AddrPortFrom(lab.VIP, lab.BulkPort)
	const n = 64 << 20
	for range 2 { // rr: one of each pair to each server
		if _, err := lab.Upload(e.ctx(2*time.Minute), e.top.Client, bulk, n); err != nil {
			t.Fatal(err)
		}
		if _, err := lab.Download(e.ctx(2*time.Minute), e.top.Client, bulk, n); err != nil {
			t.Fatal(err)
		}
	}
}

// (d) UDP echo through the VIP, and an ICMP port unreachable from the real
// server reaches the client as "connection refused": tapvs translated it.
// The wire shows it was the real server's error, not tapvs's own stack
// answering: the RS's port unreachable (RS -> LIP, quoting LIP -> RS:9002)
// crossed the router's link, and the client got one from the VIP quoting
// its datagram as it sent it, every checksum valid.
func TestUDPEchoAndICMPErrors(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	echo := netip.AddrPortFrom(lab.VIP, lab.EchoPort)
	for range 2 {
		reply, err := lab.UDPEcho(e.ctx(5*time.Second), e.top.Client, echo, "hello")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(reply, "saw "+lab.LIP2.String()+":") || !strings.HasSuffix(reply, ": hello") {
			t.Fatalf("echo reply %q: want the RS to have seen LIP %v", reply, lab.LIP2)
		}
	}
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	const closedPort = 9002
	c, err := lab.Dial(e.ctx(5*time.Second), e.top.Client, "udp4", netip.AddrPortFrom(lab.VIP, closedPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	c.Write([]byte("anyone?"))
	_, err = c.Read(make([]byte, 100))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read after sending to a port nobody listens on: %v; want connection refused (translated ICMP)", err)
	}
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	e.checkPortUnreachable(capClient, capRouter, local, "anyone?", false)

	// With offload all the way, the client's kernel leaves the UDP checksum
	// to a NIC that never computes it (a partial sum in the datagram), and
	// the real server quotes that: no wire in the lab carries the full
	// checksum a quote would translate. A datagram with a full checksum,
	// sent raw from the same socket's port, shows the quoted checksum is
	// translated back to the client's own.
	if err := sendRawUDP(e.top.Client, local, netip.AddrPortFrom(lab.VIP, closedPort), []byte("full sum")); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 100)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read after the raw datagram: %v; want connection refused (translated ICMP)", err)
	}
	e.checkPortUnreachable(capClient, capRouter, local, "full sum", true)
}

// checkPortUnreachable finds in the captures the client's datagram with
// payload msg, the real server's port unreachable about it on the router's
// link and the one tapvs sent the client, and checks what each says.
// fullSum: the client's datagram carries a full UDP checksum, which the
// quote must carry back unchanged.
func (e *env) checkPortUnreachable(capClient, capRouter *capture, local netip.AddrPort, msg string, fullSum bool) {
	t := e.t.(*testing.T)
	t.Helper()
	const closedPort = 9002
	quotes := func(p gopacket.Packet) bool {
		return isPortUnreachable(p) && strings.HasSuffix(string(p.Layer(layers.LayerTypeICMPv4).LayerPayload()), msg)
	}
	// The client's socket heard the error, so it crossed the client's TAP;
	// the capture may not have read it yet.
	var sent, toClient, fromRS gopacket.Packet
	if !eventually(5*time.Second, func() bool {
		sent, toClient, fromRS = nil, nil, nil
		for _, p := range capClient.packets() {
			if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && u.DstPort == closedPort && string(u.Payload) == msg && p.Layer(layers.LayerTypeICMPv4) == nil {
				sent = p
			}
			if quotes(p) {
				toClient = p
			}
		}
		for _, p := range capRouter.packets() {
			if quotes(p) {
				fromRS = p
			}
		}
		return sent != nil && toClient != nil && fromRS != nil
	}) {
		t.Fatalf("%q: captured the client's datagram %v, an ICMP port unreachable to the client %v, one from the RS %v", msg, sent != nil, toClient != nil, fromRS != nil)
	}

	// Server side: the real server's own error, about the datagram tapvs
	// sent it from a LIP.
	outer, quoted, qudp := icmpQuote(t, "router link", fromRS)
	if src, dst := addr(outer.SrcIP), addr(outer.DstIP); src != lab.RS1 || dst != lab.LIP2 {
		t.Fatalf("the RS's port unreachable goes %v -> %v; want %v -> %v", src, dst, lab.RS1, lab.LIP2)
	}
	if src, dst := addr(quoted.SrcIP), addr(quoted.DstIP); src != lab.LIP2 || dst != lab.RS1 || qudp.DstPort != closedPort {
		t.Fatalf("the RS's error quotes %v:%d -> %v:%d; want %v -> %v:%d", src, qudp.SrcPort, dst, qudp.DstPort, lab.LIP2, lab.RS1, closedPort)
	}
	// Client side: from the VIP, quoting the client's datagram.
	outer, quoted, qudp = icmpQuote(t, "client link", toClient)
	client := lab.ClientAddr.Addr()
	if src, dst := addr(outer.SrcIP), addr(outer.DstIP); src != lab.VIP || dst != client {
		t.Fatalf("the client's port unreachable goes %v -> %v; want %v -> %v", src, dst, lab.VIP, client)
	}
	if src, dst := addr(quoted.SrcIP), addr(quoted.DstIP); src != client || dst != lab.VIP ||
		uint16(qudp.SrcPort) != local.Port() || qudp.DstPort != closedPort {
		t.Fatalf("the client's error quotes %v:%d -> %v:%d; want %v -> %v:%d", src, qudp.SrcPort, dst, qudp.DstPort, local, lab.VIP, closedPort)
	}
	// The quote is the datagram the client sent: the IP header but for the
	// TTL (the router took one) and its checksum (valid, checked in
	// icmpQuote), the UDP header (its checksum too when it was a full one)
	// and the payload.
	sip := sent.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	sh, qh := append([]byte(nil), sip.Contents...), append([]byte(nil), quoted.Contents...)
	for _, h := range [][]byte{sh, qh} {
		h[8], h[10], h[11] = 0, 0, 0
	}
	if string(sh) != string(qh) || quoted.TTL != sip.TTL-1 {
		t.Fatalf("the quoted IP header\n%x\nis not the client's\n%x\n(TTL and checksum zeroed; TTL quoted %d, sent %d)", qh, sh, quoted.TTL, sip.TTL)
	}
	su := sent.Layer(layers.LayerTypeUDP).(*layers.UDP)
	sb, qb := append([]byte(nil), su.Contents...), append([]byte(nil), qudp.Contents...)
	if !fullSum {
		sb[6], sb[7], qb[6], qb[7] = 0, 0, 0, 0
	}
	if string(sb) != string(qb) || string(su.Payload) != string(qudp.Payload) {
		t.Fatalf("the quoted UDP datagram %x %q is not the client's %x %q", qudp.Contents, qudp.Payload, su.Contents, su.Payload)
	}
	if fullSum {
		udp := append(append([]byte(nil), qudp.Contents...), qudp.Payload...)
		if csum.Checksum(udp, csum.PseudoV4(quoted.SrcIP.To4(), quoted.DstIP.To4(), 17, len(udp))) != 0 {
			t.Fatalf("the quoted UDP checksum %#04x does not verify for %v -> %v", qudp.Checksum, client, lab.VIP)
		}
	}
}

// sendRawUDP sends one UDP datagram with a full checksum computed here,
// through a raw socket in namespace ns, so that no offload leaves the
// checksum partial.
func sendRawUDP(ns string, src, dst netip.AddrPort, payload []byte) error {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	s, d := src.Addr().As4(), dst.Addr().As4()
	sum := csum.Checksum(udp, csum.PseudoV4(s[:], d[:], 17, len(udp)))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	return lab.InNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP)
		if err != nil {
			return fmt.Errorf("raw UDP socket: %w", err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: s}); err != nil {
			return fmt.Errorf("raw UDP socket: bind %v: %w", src.Addr(), err)
		}
		if err := unix.Sendto(fd, udp, 0, &unix.SockaddrInet4{Addr: d}); err != nil {
			return fmt.Errorf("raw UDP datagram to %v: %w", dst, err)
		}
		return nil
	})
}

func isPortUnreachable(p gopacket.Packet) bool {
	ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	return ok && ic.TypeCode == layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)
}

// icmpQuote checks an ICMP error's checksums (outer IP header, ICMP message,
// quoted IP header) and returns its outer header and the quoted IP and UDP
// headers.
func icmpQuote(t *testing.T, where string, p gopacket.Packet) (outer, quoted *layers.IPv4, qudp *layers.UDP) {
	t.Helper()
	outer = p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	msg := append(append([]byte(nil), ic.Contents...), ic.Payload...)
	if csum.Checksum(outer.Contents, 0) != 0 || csum.Checksum(msg, 0) != 0 {
		t.Fatalf("%s: ICMP error with a bad checksum: IP %#04x, ICMP %#04x", where, outer.Checksum, ic.Checksum)
	}
	q := gopacket.NewPacket(ic.Payload, layers.LayerTypeIPv4, gopacket.Default)
	quoted, _ = q.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	qudp, _ = q.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if quoted == nil || qudp == nil {
		t.Fatalf("%s: the ICMP error quotes no UDP datagram: %x", where, ic.Payload)
	}
	if csum.Checksum(quoted.Contents, 0) != 0 {
		t.Fatalf("%s: the quoted IP header's checksum %#04x does not verify", where, quoted.Checksum)
	}
	return outer, quoted, qudp
}

// (e) Entries expire by their timeouts and their ports go back to the pool.
func TestExpiryReturnsPortsToThePool(t *testing.T) {
	svcs := `
  - name: echo
    vip: 172.25.254.100
    port: 9001
    protocol: udp
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9001}
  - name: web
    vip: 172.25.254.100
    port: 80
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 80}`
	extra := `
limits: {local_port_min: 6000, local_port_max: 6001, port_quarantine: 0s} # timeouts alone return ports here
timeouts:
  udp: 1s
  tcp: {fin_wait: 1s, time_wait: 1s, close: 1s, close_wait: 1s, last_ack: 1s}
`
	e := setup(t, svcs, extra)
	echoAddr := netip.AddrPortFrom(lab.VIP, lab.EchoPort)
	lip := e.service("echo").LocalAddrs()[0]
	talk := func() (net.Conn, error) {
		c, err := lab.Dial(e.ctx(5*time.Second), e.top.Client, "udp4", echoAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write([]byte("x"))
		_, err = c.Read(make([]byte, 200))
		return c, err
	}
	// Two local ports toward this RS: two flows fit, a third does not.
	for i := range 2 {
		c, err := talk()
		if err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
		defer c.Close()
	}
	if conns, _, _ := lip.Stats(); conns != 2 {
		t.Fatalf("LIP holds %d connections, want 2", conns)
	}
	before := e.d.Balancer.Stats.Drop(nat.DropPortExhausted)
	c, err := talk()
	c.Close()
	if err == nil {
		t.Fatal("a third flow got through with only two local ports")
	}
	if e.d.Balancer.Stats.Drop(nat.DropPortExhausted) <= before {
		t.Fatal("port exhaustion was not counted")
	}
	if !eventually(5*time.Second, func() bool { n, _, _ := lip.Stats(); return n == 0 && e.d.Balancer.Table().Len() == 0 }) {
		n, _, _ := lip.Stats()
		t.Fatalf("after the UDP timeout: LIP holds %d, table %d", n, e.d.Balancer.Table().Len())
	}
	if c, err := talk(); err != nil {
		t.Fatalf("after expiry the ports should be free again: %v", err)
	} else {
		c.Close()
	}
	// TCP: a finished HTTP exchange goes through FIN states and expires.
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	for range 3 {
		e.get(hc)
	}
	if !eventually(5*time.Second, func() bool {
		for _, ci := range e.d.Balancer.Table().Conns() {
			if ci.Protocol == nat.TCP {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("TCP entries left after their timeouts: %+v", e.d.Balancer.Table().Conns())
	}
	if _, expired := e.d.Balancer.Stats.Conns(); expired < 3+3 {
		t.Fatalf("only %d connections expired", expired)
	}
}

// (f) Ping to the VIP is answered (by tapvs's stack).
func TestPingVIP(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	if _, err := lab.Ping(e.ctx(5*time.Second), e.top.Client, lab.VIP); err != nil {
		t.Fatal(err)
	}
}

// (h) A weight-0 server gets no new connections; its open ones keep working.
func TestWeightZeroDrains(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	keep := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return lab.Dial(ctx, e.top.Client, network, a)
		},
	}}
	defer keep.CloseIdleConnections()
	drained, saw := e.get(keep)
	rsAddr := lab.RS1
	if drained == "rs2" {
		rsAddr = lab.RS2
	}
	if err := e.d.Balancer.Update(func(tx *nat.Tx) error { return tx.SetWeight(e.service("web"), rsAddr, lab.HTTPPort, 0) }); err != nil {
		t.Fatal(err)
	}
	short := lab.HTTPClient(e.top.Client, 5*time.Second)
	for i := range 10 {
		if rs, _ := e.get(short); rs == drained {
			t.Fatalf("new connection %d went to the drained %s", i, rs)
		}
	}
	for range 3 {
		rs, again := e.get(keep)
		if rs != drained || again != saw {
			t.Fatalf("the open connection moved: %s %v, was %s %v", rs, again, drained, saw)
		}
	}
}

// (i) Malformed frames are counted and dropped without disturbing a flow
// that is running at the same time: 7 kinds x 50 frames, each frame counted
// as malformed and under no other reason, and 3 with a bad IP header
// checksum counted as such, all sent while a 32 MiB download is moving
// (it moved between the first and the last and had not ended), which
// arrives intact.
func TestMalformedFramesDropped(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	mac := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	good := goodFrame(t, mac)
	bad := map[string][]byte{}
	mutate := func(name string, f func(b []byte) []byte) { bad[name] = f(append([]byte(nil), good...)) }
	mutate("truncated IP header", func(b []byte) []byte { return b[:14+16] })
	mutate("IHL below 5", func(b []byte) []byte { b[14] = 0x43; return b })
	mutate("total length past the frame", func(b []byte) []byte { b[16], b[17] = 0x05, 0xdc; return b })
	mutate("total length below the header", func(b []byte) []byte { b[16], b[17] = 0, 12; return b })
	mutate("truncated TCP header", func(b []byte) []byte { b[16], b[17] = 0, 30; fixIPChecksum(b); return b[:14+30] })
	mutate("TCP data offset past the packet", func(b []byte) []byte { b[14+20+12] = 0xf0; return b })
	mutate("TCP data offset below 5", func(b []byte) []byte { b[14+20+12] = 0x30; return b })

	badSum := append([]byte(nil), good...)
	badSum[14+8]-- // TTL, the header checksum left as it was

	// The flow: a 32 MiB download read at a paced rate, which stops short
	// of its last 4 MiB until the garbage is all sent, so it is provably
	// running from before the first malformed frame to after the last.
	const n = 32 << 20
	conn, err := lab.Dial(e.ctx(5*time.Second), e.top.Client, "tcp4", netip.AddrPortFrom(lab.VIP, lab.BulkPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	hdr := [9]byte{'D'}
	binary.BigEndian.PutUint64(hdr[1:], n)
	if _, err := conn.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	var moved atomic.Int64
	injected := make(chan struct{})
	var injectedOnce sync.Once
	defer injectedOnce.Do(func() { close(injected) }) // a failed test lets the reader go
	done := make(chan error, 1)
	go func() {
		got, want := sha256.New(), sha256.New()
		buf := make([]byte, 64<<10)
		for moved.Load() < n {
			if moved.Load() >= n-4<<20 {
				<-injected
			}
			m, err := conn.Read(buf[:min(int64(len(buf)), n-moved.Load())])
			got.Write(buf[:m])
			moved.Add(int64(m))
			if err != nil {
				done <- fmt.Errorf("download: %d of %d bytes: %w", moved.Load(), n, err)
				return
			}
			time.Sleep(time.Millisecond) // pacing: at most 64 MiB/s
		}
		io.CopyN(want, lab.Stream(n), n)
		if string(got.Sum(nil)) != string(want.Sum(nil)) {
			done <- errors.New("download: data differs from what the server sent: corrupted")
			return
		}
		done <- nil
	}()
	if !eventually(30*time.Second, func() bool { return moved.Load() >= 1<<20 }) {
		t.Fatalf("the download moved only %d bytes in 30s", moved.Load())
	}

	in, err := newInjector(e.top.Client, e.top.TapClient)
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	drops0 := e.d.Balancer.Stats.Drops()
	delta := func() map[string]uint64 {
		d := map[string]uint64{}
		for k, v := range e.d.Balancer.Stats.Drops() {
			if v != drops0[k] {
				d[k] = v - drops0[k]
			}
		}
		return d
	}
	// Each kind of garbage in its own burst of 50, every frame of it counted
	// as malformed, and nothing else counted, before the next.
	const rounds = 50
	names := make([]string, 0, len(bad))
	for name := range bad {
		names = append(names, name)
	}
	sort.Strings(names)
	movedAtFirst := moved.Load()
	for i, name := range names {
		frames := make([][]byte, rounds)
		for j := range frames {
			frames[j] = bad[name]
		}
		if sent, err := in.send(frames...); err != nil || sent != rounds {
			t.Fatalf("%s: the TAP took %d of %d frames: %v", name, sent, rounds, err)
		}
		want := map[string]uint64{nat.DropMalformed.String(): uint64(rounds * (i + 1))}
		if !eventually(5*time.Second, func() bool { return maps.Equal(delta(), want) }) {
			t.Fatalf("after %d frames of %q: drops moved by %v, want exactly %v", rounds, name, delta(), want)
		}
	}
	if sent, err := in.send(badSum, badSum, badSum); err != nil || sent != 3 {
		t.Fatalf("bad IP checksum: the TAP took %d of 3 frames: %v", sent, err)
	}
	want := map[string]uint64{nat.DropMalformed.String(): rounds * uint64(len(bad)), nat.DropBadIPChecksum.String(): 3}
	if !eventually(5*time.Second, func() bool { return maps.Equal(delta(), want) }) {
		t.Fatalf("drops moved by %v, want exactly %v", delta(), want)
	}
	movedAtLast := moved.Load()
	select {
	case err := <-done:
		t.Fatalf("the download ended before the last malformed frame was sent (%v)", err)
	default:
	}
	if movedAtLast <= movedAtFirst || movedAtLast >= n {
		t.Fatalf("the download moved %d -> %d bytes of %d while the garbage was sent: not running through it", movedAtFirst, movedAtLast, n)
	}
	t.Logf("the download was at %d bytes at the first malformed frame, %d at the last", movedAtFirst, movedAtLast)
	injectedOnce.Do(func() { close(injected) })
	if err := <-done; err != nil {
		t.Fatalf("the flow running during the garbage failed: %v", err)
	}
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	e.get(hc) // still serving
}

// goodFrame is a well-formed TCP SYN from the client to the VIP's port 80.
func goodFrame(t *testing.T, dstMAC net.HardwareAddr) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: lab.ClientAddr.Addr().AsSlice(), DstIP: lab.VIP.AsSlice()}
	tcp := &layers.TCP{SrcPort: 33333, DstPort: 80, SYN: true, Seq: 1, Window: 1000}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(make([]byte, 32))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// addr is ip as a netip.Addr: IPv4 when it is one, else IPv6.
func addr(ip net.IP) netip.Addr {
	if v4 := ip.To4(); v4 != nil {
		a, _ := netip.AddrFromSlice(v4)
		return a
	}
	a, _ := netip.AddrFromSlice(ip)
	return a
}

func ifaceMAC(t testing.TB, ns, name string) string {
	var mac string
	if err := lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr.String()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// Multi-queue TAPs: one reader per queue on each side, sharing the sharded
// connection table; flows still balance exactly and bulk data arrives intact.
// The TAPs have the transmit queue length the config gives them
// (interfaces.*.txqueuelen, the flood setting in operating.md).
func TestMultiQueueTAPs(t *testing.T) {
	e := setupWith(t, topoOpts{queues: 2, txQLen: 3000}, services("rr", 1, 1), "")
	for _, ep := range []interface{ Stats() []netstack.QueueStats }{e.d.Stack.Client, e.d.Stack.Server} {
		if n := len(ep.Stats()); n != 2 {
			t.Fatalf("%d queues, want 2", n)
		}
	}
	for _, tap := range [][2]string{{e.top.Client, e.top.TapClient}, {e.top.Router, e.top.TapServer}} {
		if err := lab.InNetns(tap[0], func() error {
			l, err := netlink.LinkByName(tap[1])
			if err != nil {
				return err
			}
			if q := l.Attrs().TxQLen; q != 3000 {
				return fmt.Errorf("%s txqueuelen %d, want 3000", tap[1], q)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	bulk := netip.AddrPortFrom(lab.VIP, lab.BulkPort)
	errs := make(chan error, 4)
	for range 2 {
		go func() { _, err := lab.Upload(e.ctx(2*time.Minute), e.top.Client, bulk, 16<<20); errs <- err }()
		go func() { _, err := lab.Download(e.ctx(2*time.Minute), e.top.Client, bulk, 16<<20); errs <- err }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	// The kernel picks a TAP queue by a hash of each flow, so flows spread
	// over both queues of a side: every queue of both sides reads frames
	// and forwards them. Each HTTP request is a new connection from a new
	// source port; one more flow puts a side's next frame on either queue
	// with even odds, so 64 flows leave a queue idle with odds of 2^-63.
	busy := func() bool {
		for _, ep := range []*netstack.Endpoint{e.d.Stack.Client, e.d.Stack.Server} {
			for q := range ep.Stats() {
				if ep.Stats()[q].Received.Load() == 0 || ep.Stats()[q].Forwarded.Load() == 0 {
					return false
				}
			}
		}
		return true
	}
	flows := 4 // the bulk transfers
	for ; !busy() && flows < 64; flows++ {
		e.get(hc)
	}
	perQueue := func(ep *netstack.Endpoint) (out []string) {
		for q := range ep.Stats() {
			out = append(out, fmt.Sprintf("q%d %d read, %d forwarded", q, ep.Stats()[q].Received.Load(), ep.Stats()[q].Forwarded.Load()))
		}
		return out
	}
	if !busy() {
		t.Fatalf("after %d flows a queue never carried one: client %v, server %v", flows, perQueue(e.d.Stack.Client), perQueue(e.d.Stack.Server))
	}
	t.Logf("after %d flows: client %v, server %v", flows, perQueue(e.d.Stack.Client), perQueue(e.d.Stack.Server))
	a0, b0 := e.rs[0].Requests.Load(), e.rs[1].Requests.Load()
	for range 10 {
		e.get(hc)
	}
	if a, b := e.rs[0].Requests.Load()-a0, e.rs[1].Requests.Load()-b0; a != 5 || b != 5 {
		t.Fatalf("rs1 %d, rs2 %d requests; want 5 and 5", a, b)
	}
}

// fixIPChecksum recomputes a frame's IPv4 header checksum after a test
// changed a field of it.
func fixIPChecksum(b []byte) {
	ip := b[14 : 14+int(b[14]&0xf)*4]
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
}
