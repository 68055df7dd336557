package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
)

// The harness's IPv6 side. Every lab is dual-stack (lab.Topology.Build
// gives each namespace its IPv6 addresses and routes, AddressTAPs the TAPs'
// kernel ends theirs); topoOpts.ipv6 also gives tapvs its own IPv6
// addresses and the route to the real servers' IPv6 network. setup6,
// services6 and setMTU are in ipv6_test.go.

// needIPv6 fails a test that needs IPv6 on a host whose kernel has none
// (ipv6.disable=1): there the lab is IPv4 only.
func needIPv6(t testing.TB) {
	t.Helper()
	if !lab.HasIPv6() {
		t.Fatal("this host's kernel has no IPv6 (/proc/sys/net/ipv6 is missing): the lab is IPv4 only")
	}
}

// dial opens a connection from the client's namespace to addr, IPv4 or
// IPv6 ("tcp" or "udp" pick the family from the address), bounded by d.
func (e *env) dial(network string, addr netip.AddrPort, d time.Duration) (net.Conn, error) {
	return lab.Dial(e.ctx(d), e.top.Client, network, addr.String())
}

// nsRun runs a command inside namespace ns (ip netns exec) and returns
// its combined output; the error names the command and carries the output.
// It is killed after 30s.
func nsRun(ns string, name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.WaitDelay = time.Second
	done := make(chan struct{})
	defer close(done)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
	}()
	if err := cmd.Wait(); err != nil {
		return out.String(), fmt.Errorf("%s in %s: %w: %s", strings.Join(append([]string{name}, args...), " "), ns, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// mustRun is nsRun that fails the test on error.
func mustRun(t testing.TB, ns, name string, args ...string) string {
	t.Helper()
	out, err := nsRun(ns, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ip6Of returns p's IPv6 header, or nil for a frame that is not IPv6
// (ethertype 0x86DD).
func ip6Of(p gopacket.Packet) *layers.IPv6 {
	eth, ok := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !ok || eth.EthernetType != layers.EthernetTypeIPv6 {
		return nil
	}
	ip, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	return ip
}

// inetSum is the folded one's-complement sum of b (RFC 1071) added to
// acc, written out here so that what checks tapvs's checksums shares no
// code with them.
func inetSum(b []byte, acc uint64) uint16 {
	for ; len(b) >= 2; b = b[2:] {
		acc += uint64(b[0])<<8 | uint64(b[1])
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// pseudoV6 is the sum of the IPv6 pseudo-header (RFC 8200 8.1): source,
// destination, upper-layer length and next header.
func pseudoV6(src, dst []byte, proto uint8, length int) uint16 {
	var b [40]byte
	copy(b[0:16], src)
	copy(b[16:32], dst)
	binary.BigEndian.PutUint32(b[32:], uint32(length))
	b[39] = proto
	return inetSum(b[:], 0)
}

// l4Sum6 checks the TCP, UDP or ICMPv6 checksum of an IPv6 packet (raw:
// from its IPv6 header on, no extension headers) from scratch. ok: the
// checksum verifies; partial: the field holds exactly the folded
// pseudo-header sum, as a sender that left the rest to offload writes it.
func l4Sum6(raw []byte) (proto uint8, ok, partial bool) {
	if len(raw) < 40 {
		return 0, false, false
	}
	proto = raw[6]
	plen := int(binary.BigEndian.Uint16(raw[4:]))
	if 40+plen > len(raw) {
		return proto, false, false
	}
	l4 := raw[40 : 40+plen]
	off := map[uint8]int{6: 16, 17: 6, 58: 2}[proto]
	if off == 0 || len(l4) < off+2 {
		return proto, false, false
	}
	ps := pseudoV6(raw[8:24], raw[24:40], proto, len(l4))
	if inetSum(l4, uint64(ps)) == 0xffff {
		return proto, true, false
	}
	return proto, false, binary.BigEndian.Uint16(l4[off:]) == ps
}

// checkTCPSums6 verifies the TCP checksum of every IPv6 TCP segment in ps
// from the bytes, as checkTCPSums does for IPv4: a partial checksum (the
// pseudo-header sum alone, left for a NIC that veths and TAPs never are)
// is allowed unless full, and counted. from, if valid, limits the check to
// segments from that address (what tapvs wrote rather than a kernel). It
// fails the test on no IPv6 TCP segment at all.
func checkTCPSums6(t *testing.T, ps []gopacket.Packet, from netip.Addr, full bool) (partial int) {
	t.Helper()
	n := 0
	for i, p := range ps {
		ip := ip6Of(p)
		if ip == nil || ip.NextHeader != layers.IPProtocolTCP {
			continue
		}
		if from.IsValid() && addr(ip.SrcIP) != from {
			continue
		}
		n++
		raw := p.Data()[14:]
		if 40+int(ip.Length) > len(raw) {
			t.Fatalf("segment %d: IPv6 payload length %d past the %d bytes captured", i, ip.Length, len(raw)-40)
		}
		_, ok, part := l4Sum6(raw)
		switch {
		case ok:
		case part && !full:
			partial++
		default:
			t.Fatalf("segment %d (%v -> %v, %d bytes): TCP checksum does not verify", i, ip.SrcIP, ip.DstIP, ip.Length)
		}
	}
	if n == 0 {
		t.Fatal("no IPv6 TCP segment captured")
	}
	return partial
}

// flows6 returns the IPv6 TCP segments of ps to or from port as
// (source, destination) pairs.
func flows6(ps []gopacket.Packet, port uint16) [][2]netip.AddrPort {
	var out [][2]netip.AddrPort
	for _, p := range tcpPort(ps, port) {
		ip := ip6Of(p)
		if ip == nil {
			continue
		}
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		out = append(out, [2]netip.AddrPort{
			netip.AddrPortFrom(addr(ip.SrcIP), uint16(tcp.SrcPort)),
			netip.AddrPortFrom(addr(ip.DstIP), uint16(tcp.DstPort)),
		})
	}
	return out
}

// l4Sum6, which the IPv6 tests' checksum checks rest on, agrees with
// gopacket's own checksums, refuses a segment changed by one byte, and
// tells a partial checksum (the pseudo-header sum alone) from both.
// It needs no lab.
func TestL4Sum6(t *testing.T) {
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
		SrcIP: lab.ClientAddr6.Addr().AsSlice(), DstIP: lab.VIP6.AsSlice()}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: 1, ACK: true, Window: 512}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, tcp, gopacket.Payload("odd-length payload!")); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	if proto, ok, partial := l4Sum6(raw); proto != 6 || !ok || partial {
		t.Fatalf("gopacket's segment: protocol %d, ok %v, partial %v", proto, ok, partial)
	}
	bad := append([]byte(nil), raw...)
	bad[len(bad)-1] ^= 0x40
	if _, ok, partial := l4Sum6(bad); ok || partial {
		t.Fatalf("a changed segment: ok %v, partial %v", ok, partial)
	}
	part := append([]byte(nil), raw...)
	binary.BigEndian.PutUint16(part[40+16:], pseudoV6(part[8:24], part[24:40], 6, len(part)-40))
	if _, ok, partial := l4Sum6(part); ok || !partial {
		t.Fatalf("a partial checksum: ok %v, partial %v", ok, partial)
	}
	if _, ok, _ := l4Sum6(raw[:len(raw)-1]); ok {
		t.Fatal("a segment cut short of its payload length verifies")
	}
}
