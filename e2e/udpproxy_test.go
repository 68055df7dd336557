package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

// The lab's real servers echo each datagram on lab.ProxyEchoPort after the
// PROXY v2 header they require, read with go-proxyproto, saying whom the
// header told them of: "<rs> saw <LIP:port> told <client:port>: <payload>".
// echo-proxy puts the header before every datagram; echo-plain sends the
// same servers the bare datagrams, which they answer "no PROXY header".
const udpProxyServices = `
  - name: echo-proxy
    vip: 172.25.254.100
    port: 9003
    protocol: udp
    scheduler: rr
    client_address: proxy-v2
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9003}
      - {address: 10.20.2.2, port: 9003}
  - name: echo-plain
    vip: 172.25.254.100
    port: 9004
    protocol: udp
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9003}`

// A UDP service with client_address: proxy-v2: every datagram reaches the
// server with a PROXY v2 header naming the client's own address and port,
// the answers come back untouched, and a datagram the header would take
// past the server side's MTU is dropped and counted, never sent.
func TestProxyUDP(t *testing.T) {
	e := setup(t, udpProxyServices, "")
	dial := func(port uint16) net.Conn {
		c, err := lab.Dial(e.ctx(10*time.Second), e.top.Client, "udp4", netip.AddrPortFrom(lab.VIP, port).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ask := func(c net.Conn, payload []byte) (string, error) {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(payload); err != nil {
			return "", fmt.Errorf("send %d bytes: %w", len(payload), err)
		}
		buf := make([]byte, 65536)
		n, err := c.Read(buf)
		if err != nil {
			return "", fmt.Errorf("answer to %d bytes: %w", len(payload), err)
		}
		return string(buf[:n]), nil
	}

	lip := netip.MustParseAddr("172.25.84.11")
	servers := map[string]bool{}
	for flow := range 4 { // rr over two servers: each gets two flows
		c := dial(lab.ProxyEchoPort)
		me := c.LocalAddr().String()
		for i := range 5 {
			payload := fmt.Sprintf("flow %d datagram %d", flow, i)
			got, err := ask(c, []byte(payload))
			if err != nil {
				t.Fatal(err)
			}
			// "rsN saw 172.25.84.11:port told <me>: <payload>"
			name, rest, _ := strings.Cut(got, " saw ")
			saw, rest, _ := strings.Cut(rest, " told ")
			told, echoed, _ := strings.Cut(rest, ": ")
			from, err := netip.ParseAddrPort(saw)
			if err != nil || from.Addr() != lip {
				t.Fatalf("%q: the datagram did not come from the LIP %v", got, lip)
			}
			if told != me || echoed != payload {
				t.Fatalf("%q: told %q, echoed %q; the client is %s and sent %q", got, told, echoed, me, payload)
			}
			servers[name] = true
		}
	}
	if len(servers) != 2 {
		t.Fatalf("answers from %v, want both real servers", servers)
	}
	if n := e.d.Balancer.Stats.UDPProxyHeaders(); n != 20 {
		t.Fatalf("%d headers counted, 20 datagrams sent", n)
	}

	// The same server without the header says it got none: the header
	// above was tapvs's.
	if got, err := ask(dial(9004), []byte("bare")); err != nil || !strings.HasSuffix(got, "no PROXY header") {
		t.Fatalf("echo-plain: %q, %v", got, err)
	}

	// The server side's MTU is 1500: a 1472-byte payload fills it without
	// the header (IP 20 + UDP 8), so with it the datagram is dropped and
	// the client hears nothing; one 28 bytes shorter just fits.
	c := dial(lab.ProxyEchoPort)
	if _, err := ask(c, []byte("small")); err != nil {
		t.Fatal(err)
	}
	svc := e.service("echo-proxy")
	inBytes := func() (n uint64) {
		for _, d := range svc.Dests() {
			n += d.Traffic().InBytes
		}
		return n
	}
	big, bytesBefore := e.d.Balancer.Stats.Drop(nat.DropUDPProxyBig), inBytes()
	if got, err := ask(c, make([]byte, 1472)); err == nil {
		t.Fatalf("a datagram too big for the header was answered: %.60q", got)
	}
	if n := e.d.Balancer.Stats.Drop(nat.DropUDPProxyBig); n != big+1 || inBytes() != bytesBefore {
		t.Fatalf("udp_proxy_too_big %d -> %d, %d bytes sent to the servers", big, n, inBytes()-bytesBefore)
	}
	// The echo of the datagram that fits is longer than the MTU: the
	// server sends it in fragments, which tapvs reassembles, rewrites and
	// cuts again for the client.
	reassembled := e.d.Balancer.Reassembled()
	payload := strings.Repeat("x", 1472-28)
	if got, err := ask(c, []byte(payload)); err != nil || !strings.HasSuffix(got, ": "+payload) {
		t.Fatalf("the echo over the MTU: %.60q, %v", got, err)
	}
	if n := inBytes() - bytesBefore; n != 1500 {
		t.Fatalf("%d IP bytes sent to the server, want 1500: the datagram with its header", n)
	}
	if e.d.Balancer.Reassembled() == reassembled {
		t.Fatal("the echo over the MTU came back whole: no fragment reassembled")
	}
}
