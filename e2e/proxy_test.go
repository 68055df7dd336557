package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/tapvs/tapvs/lab"
)

// PROXY protocol services to the test's own servers on the first real
// server (startProxyServers): for each of v1 and v2, without and with
// SYNPROXY, a VIP port to the client-speaks-first server (rs 7001) and one
// to the banner server (rs 7002); and the lab's bulk backend behind a
// PROXY header (lab.ProxyBulkPort) as v2 and as v1 with SYNPROXY.
const proxyServices = `
  - {name: v1-echo, vip: 172.25.254.100, port: 7101, client_address: proxy-v1, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 7001}]}
  - {name: v1-banner, vip: 172.25.254.100, port: 7102, client_address: proxy-v1, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 7002}]}
  - {name: v2-echo, vip: 172.25.254.100, port: 7201, client_address: proxy-v2, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 7001}]}
  - {name: v2-banner, vip: 172.25.254.100, port: 7202, client_address: proxy-v2, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 7002}]}
  - {name: v1-sp-echo, vip: 172.25.254.100, port: 7301, synproxy: true, client_address: proxy-v1, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 7001}]}
  - {name: v1-sp-banner, vip: 172.25.254.100, port: 7302, synproxy: true, client_address: proxy-v1, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 7002}]}
  - {name: v2-sp-echo, vip: 172.25.254.100, port: 7401, synproxy: true, client_address: proxy-v2, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 7001}]}
  - {name: v2-sp-banner, vip: 172.25.254.100, port: 7402, synproxy: true, client_address: proxy-v2, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 7002}]}
  - {name: v2-bulk, vip: 172.25.254.100, port: 9102, client_address: proxy-v2, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 9002}]}
  - {name: v1-sp-bulk, vip: 172.25.254.100, port: 9302, synproxy: true, client_address: proxy-v1, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 9002}]}
`

// proxyCase is one of the services above: its VIP ports (echo, banner)
// and the header version it sends.
type proxyCase struct {
	name         string
	echo, banner uint16
	version      byte
	sig          string // the first 4 bytes of its header, for nftables
	synproxy     bool
	bulk         uint16 // a bulk service of the same kind, 0: none
}

var proxyCases = []proxyCase{
	{name: "v1", echo: 7101, banner: 7102, version: 1, sig: "0x50524f58"},
	{name: "v2", echo: 7201, banner: 7202, version: 2, sig: "0x0d0a0d0a", bulk: 9102},
	{name: "v1-synproxy", echo: 7301, banner: 7302, version: 1, sig: "0x50524f58", synproxy: true, bulk: 9302},
	{name: "v2-synproxy", echo: 7401, banner: 7402, version: 2, sig: "0x0d0a0d0a", synproxy: true},
}

// startProxyServers runs, in the first real server's namespace, the
// test's two servers, each reading the PROXY header with go-proxyproto:
//
//   - 7001, the client speaks first: after the header it reads one line and
//     answers "v<version> told <source the header gave> first <line>";
//   - 7002, the server speaks first: right after reading the header, with
//     nothing read from the client, it writes "banner v<version> told
//     <source>" and closes.
//
// A connection whose header does not parse is answered "no header: <err>".
func startProxyServers(t testing.TB, e *env) {
	t.Helper()
	for _, port := range []uint16{7001, 7002} {
		var l net.Listener
		if err := lab.InNetns(e.top.RS[0], func() (err error) {
			l, err = net.Listen("tcp4", netip.AddrPortFrom(lab.RS1, port).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go serveProxied(c, port == 7002)
			}
		}()
	}
}

func serveProxied(c net.Conn, banner bool) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	if err != nil {
		fmt.Fprintf(c, "no header: %v\n", err)
		return
	}
	if banner {
		fmt.Fprintf(c, "banner v%d told %s\n", h.Version, h.SourceAddr)
		return
	}
	line, _ := br.ReadString('\n')
	fmt.Fprintf(c, "v%d told %s first %s", h.Version, h.SourceAddr, line)
}

// talk connects from the client's namespace to the VIP at port, writes
// send (nothing if empty), and returns the first line it reads back and
// the connection's local address: the client's own address and port.
func talk(t testing.TB, e *env, port uint16, send string, within time.Duration) (line, local string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, err := lab.Dial(ctx, e.top.Client, "tcp4", netip.AddrPortFrom(lab.VIP, port).String())
	if err != nil {
		t.Fatalf("dial VIP:%d: %v", port, err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if send != "" {
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatalf("VIP:%d: write: %v", port, err)
		}
	}
	line, err = bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("VIP:%d: read: %v (got %q)", port, err, line)
	}
	return strings.TrimRight(line, "\n"), c.LocalAddr().String()
}

// (1) A server reading the header with go-proxyproto is told the client's
// own address and port, for v1 and v2, with and without SYNPROXY; the
// client speaks first (as HTTP does) and its first line follows the header.
func TestProxyProtocolClientAddr(t *testing.T) {
	e := setup(t, proxyServices, "")
	startProxyServers(t, e)
	for _, pc := range proxyCases {
		for range 3 {
			line, local := talk(t, e, pc.echo, "hello\n", 10*time.Second)
			if want := fmt.Sprintf("v%d told %s first hello", pc.version, local); line != want {
				t.Errorf("%s: the server answered %q, want %q", pc.name, line, want)
			}
		}
	}
	if n := e.d.Balancer.Stats.ProxyHeaders(); n < 12 {
		t.Errorf("tapvs_proxy_headers_total %d, want at least one per connection (12)", n)
	}
}

// (3) The server speaks first: the header reaches it right after the
// handshake, with no client data to carry it, and its banner arrives at a
// client that only reads.
func TestProxyProtocolServerFirst(t *testing.T) {
	e := setup(t, proxyServices, "")
	startProxyServers(t, e)
	for _, pc := range proxyCases {
		line, local := talk(t, e, pc.banner, "", 10*time.Second)
		if want := fmt.Sprintf("banner v%d told %s", pc.version, local); line != want {
			t.Errorf("%s: banner %q, want %q", pc.name, line, want)
		}
	}
}

// (5) A client that sends its own PROXY header is not believed: tapvs's
// comes first, and the client's is data after it.
func TestProxyProtocolFakeHeader(t *testing.T) {
	e := setup(t, proxyServices, "")
	startProxyServers(t, e)
	const fake = "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n"
	for _, pc := range proxyCases {
		line, local := talk(t, e, pc.echo, fake+"hello\n", 10*time.Second)
		if want := fmt.Sprintf("v%d told %s first %s", pc.version, local, strings.TrimRight(fake, "\n")); line != want {
			t.Errorf("%s: the server answered %q, want %q", pc.name, line, want)
		}
	}
}

// (2) 64 MiB each way through PROXY services (v2 plain, v1 with SYNPROXY)
// to the lab's bulk backend, which requires the header; SACK and
// timestamps on at both ends; the data hash-checked.
func TestProxyProtocolBulk(t *testing.T) {
	e := setup(t, proxyServices, "")
	for _, ns := range []string{e.top.Client, e.top.RS[0]} {
		for _, k := range []string{"net.ipv4.tcp_sack", "net.ipv4.tcp_timestamps"} {
			if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-w", k+"=1").CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v %s", ns, k, err, out)
			}
		}
	}
	const n = 64 << 20
	for _, pc := range proxyCases {
		if pc.bulk == 0 {
			continue
		}
		addr := netip.AddrPortFrom(lab.VIP, pc.bulk)
		if el, err := lab.Upload(e.ctx(60*time.Second), e.top.Client, addr, n); err != nil {
			t.Fatalf("%s: upload: %v", pc.name, err)
		} else {
			t.Logf("%s: 64 MiB up in %v", pc.name, el)
		}
		if el, err := lab.Download(e.ctx(60*time.Second), e.top.Client, addr, n); err != nil {
			t.Fatalf("%s: download: %v", pc.name, err)
		} else {
			t.Logf("%s: 64 MiB down in %v", pc.name, el)
		}
	}
	if d := e.d.Balancer.Stats.Drop(0); d != 0 {
		t.Logf("malformed drops: %d", d)
	}
}

// (4) The segment that carries the header is lost: an nftables rule on the
// router drops the first one of each connection toward the servers (its
// payload starts with the header's signature; ct mark makes it once per
// connection). The server speaks first, so nothing from the client's
// application can carry the header again: it must come back by TCP alone
// (plain: the server repeats its SYN-ACK and the client's ACK takes the
// header again; SYNPROXY: tapvs answers the repeated SYN-ACK with its
// header ACK). The client-speaks-first servers, whose request also carries
// the header, must get it too.
func TestProxyProtocolHeaderLost(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft is missing (apt-get install nftables): %v", err)
	}
	e := setup(t, proxyServices, "")
	startProxyServers(t, e)
	var rules strings.Builder
	rules.WriteString("table ip pplost {\n  chain pplost {\n    type filter hook forward priority 0; policy accept;\n")
	for _, pc := range proxyCases {
		for _, port := range []int{7001, 7002} {
			// The header starts the payload: after a 20-byte TCP header,
			// or a 32-byte one with timestamps.
			for _, off := range []int{160, 256} {
				fmt.Fprintf(&rules, "    ip daddr %s tcp dport %d ct mark 0 @th,%d,32 %s ct mark set 1 counter drop comment \"%s-%d-%d\"\n",
					lab.RS1, port, off, pc.sig, pc.name, port, off)
			}
		}
	}
	rules.WriteString("  }\n}\n")
	nft := func(args ...string) string {
		cmd := exec.Command("ip", append([]string{"netns", "exec", e.top.Router, "nft"}, args...)...)
		if args[0] == "-f" {
			cmd.Stdin = strings.NewReader(rules.String())
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nft %v: %v %s", args, err, out)
		}
		return string(out)
	}
	nft("-f", "-")
	// Under SYNPROXY the client's handshake was with tapvs: the server's
	// repeated SYN-ACK is answered by tapvs, never passed on. The client
	// counts the SYN-ACKs it gets from the SYNPROXY ports: one per
	// connection, the cookie's.
	clientRules := "table ip ppsynack {\n  chain in {\n    type filter hook input priority 0; policy accept;\n" +
		"    ip saddr " + lab.VIP.String() + " tcp sport { 7301, 7302, 7401, 7402 } tcp flags & (syn|ack) == syn|ack counter\n  }\n}\n"
	cmd := exec.Command("ip", "netns", "exec", e.top.Client, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(clientRules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("client nft: %v %s", err, out)
	}
	before := e.d.Balancer.Stats.ProxyHeaders()
	dropped := func() int {
		total := 0
		for _, m := range regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(nft("list", "table", "ip", "pplost"), -1) {
			var k int
			fmt.Sscan(m[1], &k)
			total += k
		}
		return total
	}
	conns := 0
	for _, pc := range proxyCases {
		// Two rules match a header segment (one per sig and port): each
		// connection drops exactly one segment, so the total counts them.
		d0 := dropped()
		line, local := talk(t, e, pc.banner, "", 15*time.Second)
		if want := fmt.Sprintf("banner v%d told %s", pc.version, local); line != want {
			t.Errorf("%s: banner %q, want %q", pc.name, line, want)
		}
		if d := dropped() - d0; d != 1 {
			t.Errorf("%s banner: the router dropped %d header segments, want exactly 1", pc.name, d)
		}
		d0 = dropped()
		line, local = talk(t, e, pc.echo, "hello\n", 15*time.Second)
		if want := fmt.Sprintf("v%d told %s first hello", pc.version, local); line != want {
			t.Errorf("%s: the server answered %q, want %q", pc.name, line, want)
		}
		if d := dropped() - d0; d != 1 {
			t.Errorf("%s echo: the router dropped %d header segments, want exactly 1", pc.name, d)
		}
		conns += 2
	}
	out, err := exec.Command("ip", "netns", "exec", e.top.Client, "nft", "list", "table", "ip", "ppsynack").CombinedOutput()
	if m := regexp.MustCompile(`counter packets (\d+)`).FindSubmatch(out); err != nil || m == nil || string(m[1]) != "4" {
		t.Errorf("the client got SYN-ACKs from the SYNPROXY ports: %s (%v), want 4 (one per connection: a repeated server SYN-ACK is tapvs's to answer)", m, err)
	}
	if sent := e.d.Balancer.Stats.ProxyHeaders() - before; sent < uint64(2*conns) {
		t.Errorf("%d headers sent for %d connections that each lost one", sent, conns)
	}
}
