// Connection lifecycle over IPv6 (issue #15): expiry, draining, and
// malformed IPv6 frames. go test -run 'TestIPv6Expiry|TestIPv6Drain|TestIPv6Malformed' ./e2e/

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// expiryServices6: a UDP echo whose flows time out after 1s, and two TCP
// services (plain and SYNPROXY) whose established connections time out
// after 2s, to the first real server's IPv6 address, where the TCP test
// listens itself.
const expiryServices6 = `
  - name: echo6-short
    vip: fd00:25:254::100
    port: 9001
    protocol: udp
    local_addresses: [fd00:25:84::11]
    real_servers:
      - {address: fd00:20:1::2, port: 9001}
    timeouts: {udp: 1s}
  - name: idle6
    vip: fd00:25:254::100
    port: 9100
    local_addresses: [fd00:25:84::10]
    real_servers:
      - {address: fd00:20:1::2, port: 9100}
    timeouts: {tcp: {established: 2s}}
  - name: idle6-synproxy
    vip: fd00:25:254::100
    port: 9101
    synproxy: true
    local_addresses: [fd00:25:84::10]
    real_servers:
      - {address: fd00:20:1::2, port: 9101}
    timeouts: {tcp: {established: 2s}}`

// TestIPv6Expiry: (udp) an IPv6 UDP flow's entry carries the service's 1s
// timeout, is gone (and counted expired) soon after a second of silence and
// not before, and a later datagram from the same socket makes a new entry
// and is echoed; (tcp) as TestExpiryResetsBothEnds, an idle established
// IPv6 connection, plain and behind SYNPROXY, is ended after its 2s
// timeout by an RST to each end, which both kernels accept (their blocked
// reads fail with ECONNRESET); on the wire the client's RST comes from
// [VIP6]:port and the server's from an IPv6 LIP, checksums valid.
func TestIPv6Expiry(t *testing.T) {
	e := setup6(t, expiryServices6, "")
	t.Run("udp", func(t *testing.T) {
		echo := netip.AddrPortFrom(lab.VIP6, lab.EchoPort)
		c, err := e.dial("udp6", echo, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		me := netip.MustParseAddrPort(c.LocalAddr().String())
		ask := func(msg string) {
			t.Helper()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("%q: no echo: %v", msg, err)
			}
			if got := string(buf[:n]); !strings.HasPrefix(got, "rs1 saw ["+lab.LIP2v6.String()+"]:") || !strings.HasSuffix(got, ": "+msg) {
				t.Fatalf("echo %q: want rs1 to have seen the LIP %v", got, lab.LIP2v6)
			}
		}
		entry := func() (nat.ConnInfo, bool) {
			for _, ci := range e.d.Balancer.Table().Conns() {
				if ci.Protocol == nat.UDP && ci.Client == me {
					return ci, true
				}
			}
			return nat.ConnInfo{}, false
		}
		created0, expired0 := e.d.Balancer.Stats.Conns()
		ask("one")
		last := time.Now()
		ci, ok := entry()
		if !ok {
			t.Fatalf("no UDP entry for the client %v: %+v", me, e.d.Balancer.Table().Conns())
		}
		if ci.VIP != echo || ci.LIP.Addr() != lab.LIP2v6 || ci.RIP != netip.AddrPortFrom(lab.RS1v6, lab.EchoPort) || ci.Expires > time.Second {
			t.Fatalf("entry %+v: want %v via %v to [%v]:%d, expiring within the service's 1s", ci, echo, lab.LIP2v6, lab.RS1v6, lab.EchoPort)
		}
		if !eventually(10*time.Second, func() bool { _, ok := entry(); return !ok }) {
			t.Fatalf("the UDP entry outlived its 1s timeout by 10s: %+v", e.d.Balancer.Table().Conns())
		}
		// Not before the timeout, give or take the table's coarse clock.
		if el := time.Since(last); el < 900*time.Millisecond {
			t.Fatalf("the entry was gone %v after the last datagram, before the 1s timeout", el)
		}
		if _, expired := e.d.Balancer.Stats.Conns(); expired != expired0+1 {
			t.Fatalf("connections expired %d -> %d, want one more", expired0, expired)
		}
		ask("two")
		if _, ok := entry(); !ok {
			t.Fatal("the datagram after expiry made no new entry")
		}
		if created, _ := e.d.Balancer.Stats.Conns(); created != created0+2 {
			t.Fatalf("connections created %d -> %d, want two: the first flow and the one after its expiry", created0, created)
		}
	})
	for i, port := range []uint16{9100, 9101} {
		t.Run(fmt.Sprint(port), func(t *testing.T) {
			capClient := startCapture(t, e.top.Client, e.top.TapClient)
			capRS := startCapture(t, e.top.RS[0], "eth0")
			var ln net.Listener
			if err := lab.InNetns(e.top.RS[0], func() (err error) {
				ln, err = net.Listen("tcp6", netip.AddrPortFrom(lab.RS1v6, port).String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			cl, err := e.dial("tcp6", netip.AddrPortFrom(lab.VIP6, port), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
			sv, err := ln.Accept()
			if err != nil {
				t.Fatalf("the real server got no connection: %v", err)
			}
			defer sv.Close()
			resetByExpiry(t, e, cl, sv, uint64(2*(i+1)))
			// The RSTs on the wire.
			client := netip.MustParseAddrPort(cl.LocalAddr().String())
			rstOf := func(c *capture, from, to netip.AddrPort, anyFromPort bool) bool {
				for _, p := range c.packets() {
					ip := ip6Of(p)
					tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
					if ip == nil || !ok || !tcp.RST {
						continue
					}
					src := netip.AddrPortFrom(addr(ip.SrcIP), uint16(tcp.SrcPort))
					dst := netip.AddrPortFrom(addr(ip.DstIP), uint16(tcp.DstPort))
					if dst.Addr() != to.Addr() || (to.Port() != 0 && dst.Port() != to.Port()) ||
						src.Addr() != from.Addr() || (!anyFromPort && src.Port() != from.Port()) {
						continue
					}
					if _, ok, _ := l4Sum6(p.Data()[14:]); !ok {
						t.Fatalf("the RST %v -> %v: its checksum does not verify", src, dst)
					}
					return true
				}
				return false
			}
			if !eventually(5*time.Second, func() bool {
				return rstOf(capClient, netip.AddrPortFrom(lab.VIP6, port), client, false) &&
					(rstOf(capRS, netip.AddrPortFrom(lab.LIP1v6, 0), netip.AddrPortFrom(lab.RS1v6, port), true))
			}) {
				t.Fatalf("captured no RST [%v]:%d -> %v on the client's link and LIP6 -> [%v]:%d at the server, each with a valid checksum", lab.VIP6, port, client, lab.RS1v6, port)
			}
		})
	}
}

// TestIPv6Drain: weight 0 on one IPv6 real server, set with tapvsadm
// (-e with bracketed addresses), drains it: -ln shows the weight, no new
// connection goes to it, and a kept-alive connection that was open to it
// goes on being served by it, from the same LIP and port.
func TestIPv6Drain(t *testing.T) {
	e := setup6(t, services6("rr", 1, 1), "")
	keep := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return lab.Dial(ctx, e.top.Client, network, a)
		},
	}}
	defer keep.CloseIdleConnections()
	drained, rsAddr, saw := e.get6(keep)
	dest := netip.AddrPortFrom(rsAddr, lab.HTTPPort).String()
	e.must("-e", "-t", web6.String(), "-r", dest, "-b", "-w", "0")
	weights := map[string]string{}
	for _, r := range rows(e.must("-ln")) {
		if len(r) >= 4 && r[0] == "->" {
			weights[r[1]] = r[3]
		}
	}
	if weights[dest] != "0" {
		t.Fatalf("-ln after -e ... -w 0 shows weights %v; want %s at 0", weights, dest)
	}
	short := lab.HTTPClient(e.top.Client, 5*time.Second)
	for i := range 10 {
		if rs, _, _ := e.get6(short); rs == drained {
			t.Fatalf("new connection %d went to the drained %s", i, rs)
		}
	}
	for i := range 3 {
		rs, a, again := e.get6(keep)
		if rs != drained || a != rsAddr || again != saw {
			t.Fatalf("request %d over the open connection: %s %v saw %v; it was %s %v saw %v", i, rs, a, again, drained, rsAddr, saw)
		}
	}
	// And back: weight 1 lets new connections reach it again.
	e.must("-e", "-t", web6.String(), "-r", dest, "-b", "-w", "1")
	got := map[string]bool{}
	for range 4 {
		rs, _, _ := e.get6(short)
		got[rs] = true
	}
	if !got[drained] {
		t.Fatalf("after weight 1 again, new connections went to %v only", got)
	}
}

// probe is the payload of every malformed frame: never to be seen past
// tapvs.
const probe = "tapvs-malformed-ipv6-probe"

// frame6 is an Ethernet frame to dstMAC carrying an IPv6 packet from the
// client to the IPv6 VIP: the extension headers ext (their own next-header
// fields chained by the caller), first naming the first, then a TCP SYN
// from port 33333 to port 80 with the probe payload and a valid checksum.
func frame6(dstMAC net.HardwareAddr, first uint8, ext []byte) []byte {
	return frame6From(dstMAC, 33333, first, ext, probe)
}

// frame6From is frame6 from source port sport with the given payload.
func frame6From(dstMAC net.HardwareAddr, sport uint16, first uint8, ext []byte, payload string) []byte {
	src, dst := lab.ClientAddr6.Addr().As16(), lab.VIP6.As16()
	tcp := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12], tcp[13] = 5<<4, 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 1000)
	tcp = append(tcp, payload...)
	binary.BigEndian.PutUint16(tcp[16:], ^inetSum(tcp, uint64(pseudoV6(src[:], dst[:], 6, len(tcp)))))
	b := append([]byte(nil), dstMAC...)
	b = append(b, 2, 0, 0, 0, 0, 9, 0x86, 0xdd)
	b = append(b, 0x60, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ext)+len(tcp)))
	b = append(b, first, 64)
	b = append(b, src[:]...)
	b = append(b, dst[:]...)
	b = append(b, ext...)
	return append(b, tcp...)
}

// dropsOf reads tapvs_drops_total by reason from a metrics scrape.
func dropsOf(t *testing.T, body string) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	for _, s := range regexp.MustCompile(`(?m)^tapvs_drops_total\{reason="([a-z0-9_]+)"\} ([0-9.e+]+)$`).FindAllStringSubmatch(body, -1) {
		v, err := strconv.ParseFloat(s[2], 64)
		if err != nil {
			t.Fatalf("metric %q: %v", s[0], err)
		}
		m[s[1]] = uint64(v)
	}
	if len(m) == 0 {
		t.Fatal("no tapvs_drops_total in the metrics")
	}
	return m
}

// TestIPv6Malformed: IPv6 frames written raw onto the client's link
// toward tapvs's MAC (AF_PACKET in the client's namespace), each kind in a
// burst of 20: a truncated IPv6 header, a wrong version, a payload length
// past the frame or of 0, an extension header whose length runs past the
// packet or that is cut short, are each counted as "malformed"; a routing
// header with segments left, AH, and a chain of nine extension headers as
// "ipv6_ext_header"; a first fragment not a multiple of 8 bytes long as
// "fragment_malformed" and one past 65535 bytes as "fragment_too_big". Each
// burst moves tapvs_drops_total (scraped from the metrics) by exactly its
// count under its reason and nothing else; none of them crosses to the
// servers' side (the probe payload never shows on the router's link); and
// tapvs keeps serving: a kept-alive connection opened before goes on, and
// new requests work.
func TestIPv6Malformed(t *testing.T) {
	e := setup6(t, services6("rr", 1, 1), "metrics: {listen: \"127.0.0.1:0\"}\n")
	keep := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return lab.Dial(ctx, e.top.Client, network, a)
		},
	}}
	defer keep.CloseIdleConnections()
	keptRS, _, keptSaw := e.get6(keep)
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)

	mac := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	good := frame6(mac, 6, nil)
	const (
		nhTCP      = 6
		nhHopByHop = 0
		nhRouting  = 43
		nhFragment = 44
		nhAH       = 51
		nhDestOpts = 60
	)
	padN := func(next uint8) []byte { return []byte{next, 0, 1, 4, 0, 0, 0, 0} } // an 8-byte options header
	malformed, ext := nat.DropMalformed.String(), nat.DropIPv6Ext.String()
	var nine []byte
	for i := range 9 {
		next := uint8(nhDestOpts)
		if i == 8 {
			next = nhTCP
		}
		nine = append(nine, padN(next)...)
	}
	routing := func(segLeft byte) []byte {
		h := []byte{nhTCP, 2, 0, segLeft, 0, 0, 0, 0} // type 0, one address
		a := lab.VIP6.As16()
		return append(h, a[:]...)
	}
	cases := []struct {
		name   string
		frame  []byte
		reason string
	}{
		{"truncated IPv6 header", good[:14+30], malformed},
		{"version 4 in an IPv6 frame", func() []byte { b := bytes.Clone(good); b[14] = 0x40; return b }(), malformed},
		{"payload length past the frame", func() []byte {
			b := bytes.Clone(good)
			binary.BigEndian.PutUint16(b[14+4:], uint16(len(b)-14-40+100))
			return b
		}(), malformed},
		{"payload length 0", func() []byte { b := bytes.Clone(good); b[14+4], b[14+5] = 0, 0; return b }(), malformed},
		{"destination options whose length runs past the packet", frame6(mac, nhDestOpts, []byte{nhTCP, 30, 1, 4, 0, 0, 0, 0}), malformed},
		{"hop-by-hop header cut short", func() []byte {
			b := frame6(mac, nhHopByHop, nil)
			b = b[:14+40+4] // 4 bytes of it
			binary.BigEndian.PutUint16(b[14+4:], 4)
			return b
		}(), malformed},
		{"routing header with segments left", frame6(mac, nhRouting, routing(1)), ext},
		{"AH", frame6(mac, nhAH, []byte{nhTCP, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), ext},
		{"nine extension headers", frame6(mac, nhDestOpts, nine), ext},
		{"first fragment of 46 bytes", frame6(mac, nhFragment, []byte{nhTCP, 0, 0, 1, 0, 0, 0x12, 0x34}), nat.DropFragMalformed.String()},
		{"fragment past 65535 bytes", frame6(mac, nhFragment, []byte{nhTCP, 0, 0xff, 0xf8, 0, 0, 0x12, 0x34}), nat.DropFragTooBig.String()},
	}

	in, err := newInjector(e.top.Client, e.top.TapClient)
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	drops0 := dropsOf(t, scrape(t, e.d.Metrics.Addr()))
	delta := func() map[string]uint64 {
		d := map[string]uint64{}
		for k, v := range dropsOf(t, scrape(t, e.d.Metrics.Addr())) {
			if v != drops0[k] {
				d[k] = v - drops0[k]
			}
		}
		return d
	}
	const burst = 20
	want := map[string]uint64{}
	for _, tc := range cases {
		frames := make([][]byte, burst)
		for j := range frames {
			frames[j] = tc.frame
		}
		if sent, err := in.send(frames...); err != nil || sent != burst {
			t.Fatalf("%s: the TAP took %d of %d frames: %v", tc.name, sent, burst, err)
		}
		want[tc.reason] += burst
		if !eventually(5*time.Second, func() bool { return maps.Equal(delta(), want) }) {
			t.Fatalf("after %d frames of %q: tapvs_drops_total moved by %v, want exactly %v", burst, tc.name, delta(), want)
		}
	}
	t.Logf("drops by reason: %v", want)

	// A control: a SYN with a destination options header, which tapvs may
	// rewrite, is not dropped. It reaches the real server with the header,
	// from an IPv6 LIP to [RS6]:80, its checksum valid past the header;
	// the server's SYN-ACK comes back to the client from [VIP6]:80.
	capRS := [2]*capture{startCapture(t, e.top.RS[0], "eth0"), startCapture(t, e.top.RS[1], "eth0")}
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	const control = "tapvs-ipv6-destopts-control"
	if sent, err := in.send(frame6From(mac, 33334, nhDestOpts, padN(nhTCP), control)); err != nil || sent != 1 {
		t.Fatalf("the control SYN: the TAP took %d of 1: %v", sent, err)
	}
	var atRS, synAck bool
	if !eventually(5*time.Second, func() bool {
		for i, c := range capRS {
			for _, p := range c.packets() {
				raw := p.Data()[14:]
				if ip := ip6Of(p); ip == nil || !bytes.Contains(raw, []byte(control)) {
					continue
				}
				atRS = true
				src, dst := netip.AddrFrom16([16]byte(raw[8:24])), netip.AddrFrom16([16]byte(raw[24:40]))
				rs := []netip.Addr{lab.RS1v6, lab.RS2v6}[i]
				if raw[6] != nhDestOpts || raw[40] != nhTCP || (src != lab.LIP1v6 && src != lab.LIP2v6) || dst != rs {
					t.Fatalf("the control SYN reached rs%d as %v -> %v, next header %d then %d; want LIP6 -> %v with its destination options", i+1, src, dst, raw[6], raw[40], rs)
				}
				l4 := raw[48 : 40+int(binary.BigEndian.Uint16(raw[4:]))]
				if binary.BigEndian.Uint16(l4[2:]) != lab.HTTPPort || inetSum(l4, uint64(pseudoV6(raw[8:24], raw[24:40], nhTCP, len(l4)))) != 0xffff {
					t.Fatalf("the control SYN at rs%d: port %d, checksum does not verify past the extension header", i+1, binary.BigEndian.Uint16(l4[2:]))
				}
			}
		}
		for _, p := range capClient.packets() {
			ip := ip6Of(p)
			tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if ip == nil || !ok || addr(ip.SrcIP) != lab.VIP6 || tcp.SrcPort != 80 || tcp.DstPort != 33334 || !tcp.SYN || !tcp.ACK {
				continue
			}
			// Partial: the real server's kernel left its checksum to
			// offload, and tapvs passes that on (see checkTCPSums6).
			if _, ok, partial := l4Sum6(p.Data()[14:]); !(ok || partial) || tcp.Ack != 2 {
				t.Fatalf("the SYN-ACK to the control SYN: ack %d (want 2), checksum valid %v, partial %v", tcp.Ack, ok, partial)
			}
			synAck = true
		}
		return atRS && synAck
	}) {
		t.Fatalf("the control SYN with destination options: at a real server %v, its SYN-ACK at the client %v", atRS, synAck)
	}
	if d := delta(); !maps.Equal(d, want) {
		t.Fatalf("the control SYN moved the drops: %v, want still %v", d, want)
	}

	// tapvs keeps serving: the open connection and new ones.
	for range 2 {
		if rs, _, saw := e.get6(keep); rs != keptRS || saw != keptSaw {
			t.Fatalf("the kept-alive connection moved: %s saw %v, was %s saw %v", rs, saw, keptRS, keptSaw)
		}
	}
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	for range 2 {
		e.get6(hc)
	}
	capRouter.stop()
	for i, p := range capRouter.packets() {
		if bytes.Contains(p.Data(), []byte(probe)) {
			t.Fatalf("router link frame %d carries the probe payload: a malformed frame crossed tapvs", i)
		}
	}
}
