package bench

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/tun/tuntest"
)

// checkSYN decodes an IPv4 packet as gopacket does and checks it is a SYN
// with an MSS option from a random source to `to`, both checksums right.
func checkSYN(t *testing.T, pkt []byte, to netip.AddrPort) {
	t.Helper()
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil || p.ErrorLayer() != nil {
		t.Fatalf("not an IPv4 TCP packet: %v", p)
	}
	src, _ := netip.AddrFromSlice(ip.SrcIP)
	if !ip.DstIP.Equal(net.IP(to.Addr().AsSlice())) || uint16(tcp.DstPort) != to.Port() || tcp.SrcPort < 1024 {
		t.Errorf("%s:%d → %s:%d, want a port ≥ 1024 → %s", src, tcp.SrcPort, ip.DstIP, tcp.DstPort, to)
	}
	if !tcp.SYN || tcp.ACK || tcp.RST || tcp.FIN || ip.TTL != 64 || ip.Length != synLen {
		t.Errorf("flags %v, TTL %d, length %d: want a bare SYN, TTL 64, %d bytes", tcp, ip.TTL, ip.Length, synLen)
	}
	if len(tcp.Options) != 1 || tcp.Options[0].OptionType != layers.TCPOptionKindMSS || string(tcp.Options[0].OptionData) != "\x05\xb4" {
		t.Errorf("options %v, want MSS 1460", tcp.Options)
	}
	if s := csum.Checksum(pkt[:20], 0); s != 0 {
		t.Errorf("IPv4 header checksum off by %#x", s)
	}
	if s := csum.Checksum(pkt[20:synLen], csum.PseudoV4(pkt[12:16], pkt[16:20], unix.IPPROTO_TCP, synLen-20)); s != 0 {
		t.Errorf("TCP checksum off by %#x", s)
	}
	if !allowedSource(src) {
		t.Errorf("source %s is one a SYN-ACK could be delivered to", src)
	}
}

func allowedSource(a netip.Addr) bool {
	for _, p := range []string{"0.0.0.0/8", "10.0.0.0/8", "127.0.0.0/8", "172.16.0.0/12", "224.0.0.0/3"} {
		if netip.MustParsePrefix(p).Contains(a) {
			return false
		}
	}
	return a.Is4()
}

func TestSpoofedSYN(t *testing.T) {
	to := netip.MustParseAddrPort("172.25.254.100:8080")
	rnd := rand.New(rand.NewPCG(1, 2))
	var b [synLen]byte
	for i := range 1000 {
		for j := range b {
			b[j] = 0xff // spoofedSYN writes every byte
		}
		spoofedSYN(b[:], randomSource(rnd), to, uint16(1024+i), rnd.Uint32())
		checkSYN(t, b[:], to)
	}
}

// randomSource spreads over the unicast space but the ranges whose SYN-ACKs
// could reach a namespace of the lab, or are not unicast.
func TestRandomSource(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	firsts := map[byte]bool{}
	for range 100000 {
		a := randomSource(rnd)
		if !allowedSource(a) {
			t.Fatalf("%s", a)
		}
		firsts[a.As4()[0]] = true
	}
	if len(firsts) < 200 { // 223 first bytes less 0, 10, 127: 220
		t.Errorf("%d first bytes in 100000 sources", len(firsts))
	}
}

// A paced flood into a veth of a namespace of the test's own: the frames on
// the wire are the SYNs, and it never sends more than its rate.
func TestPacedFlood(t *testing.T) {
	ns := fmt.Sprintf("tvpf%04x", rand.N(0x10000))
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	run("ip", "-n", ns, "addr", "add", "10.77.0.1/24", "dev", "v0")
	run("ip", "-n", ns, "link", "set", "v0", "up")
	run("ip", "-n", ns, "link", "set", "v1", "up")
	run("ip", "-n", ns, "neigh", "add", "10.77.0.2", "lladdr", "02:00:00:00:00:02", "dev", "v0")
	var sock int
	if err := lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName("v1")
		if err != nil {
			return err
		}
		sock = tuntest.PacketSocket(t, ifi.Index, unix.ETH_P_IP)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	to := netip.MustParseAddrPort("10.77.0.2:80")
	const rate = 2000
	stop, err := pacedFlood(ns, to, rate)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	buf := make([]byte, 2048)
	for got := 0; got < 100; got++ { // each read waits 1 s at most
		n, _, err := unix.Recvfrom(sock, buf, 0)
		for try := 0; err == unix.EINTR && try < 100; try++ {
			// The Go runtime's signals (preemption) interrupt a blocking
			// read; Recvfrom does not retry it.
			n, _, err = unix.Recvfrom(sock, buf, 0)
		}
		if err != nil {
			t.Fatalf("after %d SYNs: %v", got, err)
		}
		if n < 14 || n-14 != synLen {
			t.Fatalf("a frame of %d bytes", n)
		}
		checkSYN(t, buf[14:n], to)
	}
	r, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	// The rate is measured against the time since the start, and the
	// flood never sends what is not due yet: it cannot exceed the rate.
	if r <= 0 || r > rate {
		t.Errorf("%.0f SYN/s, want 0 < rate ≤ %d", r, rate)
	}
	if r2, _ := stop(); r2 != r {
		t.Errorf("a second stop: %.0f, want the first's %.0f", r2, r)
	}
	if _, err := pacedFlood(ns, netip.MustParseAddrPort("[fd00::1]:80"), rate); err == nil {
		t.Error("an IPv6 VIP accepted")
	}
	if _, err := pacedFlood(ns, to, 0); err == nil {
		t.Error("rate 0 accepted")
	}
}
