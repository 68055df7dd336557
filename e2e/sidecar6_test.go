package e2e

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/daemon"
	"github.com/tapvs/tapvs/lab"
)

// lockedLog is tapvs's log kept for a test to read while tapvs writes it.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The dual-stack sidecar without podman: a "pod" namespace holds both
// TAPs (tapvs gives their kernel ends peer_address and peer_address6), an
// interface toward a client namespace and one toward a real server's.
// Addresses: the pod is 10.88.0.2, fd00:88::2 to the client (10.88.0.1,
// fd00:88::1) and 10.89.0.2, fd00:89::2 to the real server (10.89.0.1,
// fd00:89::1, lab.Backend's HTTP). One configuration publishes port 80 of
// the pod to an IPv4 VIP and to an IPv6 VIP and masquerades both
// families of the server side.
const (
	sc6Pod, sc6Cli, sc6RS = nsPrefix + "q-pod", nsPrefix + "q-cli", nsPrefix + "q-rs"
	sc6TapC, sc6TapS      = "tvq-c", "tvq-s"
)

const sc6Config = `interfaces:
  client:
    name: ` + sc6TapC + `
    netns: ` + sc6Pod + `
    address: 172.25.254.254/24
    address6: fd00:25:254::fe/64
    peer_address: 172.25.254.1/24
    peer_address6: fd00:25:254::1/64
    routes:
      - {dst: 10.88.0.0/24, via: 172.25.254.1}
      - {dst: 'fd00:88::/64', via: 'fd00:25:254::1'}
    publish:
      - {protocol: tcp, port: 80, vip: 172.25.254.100}
      - {protocol: tcp, port: 80, vip: 'fd00:25:254::100'}
  server:
    name: ` + sc6TapS + `
    netns: ` + sc6Pod + `
    address: 172.25.84.4/24
    address6: fd00:25:84::4/64
    peer_address: 172.25.84.1/24
    peer_address6: fd00:25:84::1/64
    masquerade: true
    routes:
      - {dst: 10.89.0.0/24, via: 172.25.84.1}
      - {dst: 'fd00:89::/64', via: 'fd00:25:84::1'}
services:
  - vip: 172.25.254.100
    port: 80
    local_addresses: [172.25.84.10]
    real_servers: [{address: 10.89.0.1, port: 80}]
  - vip: 'fd00:25:254::100'
    port: 80
    local_addresses: ['fd00:25:84::10']
    real_servers: [{address: 'fd00:89::1', port: 80}]
sweep_interval: 100ms
control: {socket: %q}
`

// TestSidecarIPv6: a client in another namespace reaches the IPv6 VIP at
// the pod's IPv6 address (publish, table ip6 tapvs-publish-<tap>) with
// curl and with Go, and the real server, reached through the masqueraded
// IPv6 server side (table ip6 tapvs-<tap>), sees the pod's address, never
// the LIP: on the wire too (gopacket). IPv4 does the same beside it from
// the same file, and the app in the pod reaches the IPv6 VIP directly.
// With net.ipv6.conf.all.forwarding off at start, tapvs says so; the
// tables go when tapvs stops.
func TestSidecarIPv6(t *testing.T) {
	need(t)
	needIPv6(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft is missing (apt-get install nftables; bash .ci/deps installs it): %v", err)
	}
	claim(t, nsPrefix+"q")
	for _, ns := range []string{sc6Pod, sc6Cli, sc6RS} {
		exec.Command("ip", "netns", "del", ns).Run()
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v %s", ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		mustRun(t, ns, "ip", "link", "set", "lo", "up")
	}
	for _, l := range []struct{ peer, pod, peer4, pod4, peer6, pod6 string }{
		{sc6Cli, "eth0", "10.88.0.1/24", "10.88.0.2/24", "fd00:88::1/64", "fd00:88::2/64"},
		{sc6RS, "eth1", "10.89.0.1/24", "10.89.0.2/24", "fd00:89::1/64", "fd00:89::2/64"},
	} {
		mustRun(t, sc6Pod, "ip", "link", "add", l.pod, "type", "veth", "peer", "name", "eth0", "netns", l.peer)
		for _, a := range [][3]string{{sc6Pod, l.pod, l.pod4}, {sc6Pod, l.pod, l.pod6}, {l.peer, "eth0", l.peer4}, {l.peer, "eth0", l.peer6}} {
			args := []string{"addr", "add", a[2], "dev", a[1]}
			if strings.Contains(a[2], ":") {
				args = append(args, "nodad")
			}
			mustRun(t, a[0], "ip", args...)
		}
		mustRun(t, sc6Pod, "ip", "link", "set", l.pod, "up")
		mustRun(t, l.peer, "ip", "link", "set", "eth0", "up")
	}
	// The client and the real server know only the pod: their default
	// routes go to it.
	for _, r := range [][3]string{{sc6Cli, "10.88.0.2", "fd00:88::2"}, {sc6RS, "10.89.0.2", "fd00:89::2"}} {
		mustRun(t, r[0], "ip", "route", "add", "default", "via", r[1])
		mustRun(t, r[0], "ip", "-6", "route", "add", "default", "via", r[2])
	}
	// IPv4 forwards from the start; IPv6 not yet, which tapvs must say.
	mustRun(t, sc6Pod, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	mustRun(t, sc6Pod, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")

	rs, err := lab.StartBackendAt(sc6RS, "rs1", netip.MustParseAddr("10.89.0.1"), netip.MustParseAddr("fd00:89::1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Close)

	cfg, err := config.Parse(fmt.Sprintf(sc6Config, t.TempDir()+"/tapvs.sock"))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logged := &lockedLog{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logged), &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := daemon.Start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	closeTapvs := func() {
		if !closed {
			closed = true
			d.Close()
		}
	}
	t.Cleanup(closeTapvs)
	if l := logged.String(); !strings.Contains(l, "net.ipv6.conf.all.forwarding is 0") || strings.Contains(l, "net.ipv4.ip_forward is 0") {
		t.Fatalf("tapvs's log does not say (only) that IPv6 forwarding is off:\n%s", l)
	}
	mustRun(t, sc6Pod, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")

	// The kernel end's addresses, and the tables of both families.
	for _, want := range [][2]string{{sc6TapC, "fd00:25:254::1/64"}, {sc6TapS, "fd00:25:84::1/64"}, {sc6TapS, "172.25.84.1/24"}} {
		if out := mustRun(t, sc6Pod, "ip", "-br", "addr", "show", "dev", want[0]); !strings.Contains(out, want[1]) {
			t.Fatalf("%s in the pod: %s, want %s", want[0], out, want[1])
		}
	}
	rules := mustRun(t, sc6Pod, "nft", "list", "ruleset")
	for _, want := range []string{"table ip tapvs-" + sc6TapS, "table ip6 tapvs-" + sc6TapS,
		"table ip tapvs-publish-" + sc6TapC, "table ip6 tapvs-publish-" + sc6TapC,
		`ip6 saddr fd00:25:84::/64 oifname != "` + sc6TapS + `" masquerade`,
		`tcp dport 80 dnat to fd00:25:254::100`, `tcp dport 80 dnat to 172.25.254.100`} {
		if !strings.Contains(rules, want) {
			t.Fatalf("nft list ruleset in the pod lacks %q:\n%s", want, rules)
		}
	}

	capRS := startCapture(t, sc6RS, "eth0")
	// Inbound over IPv6: curl from the client's namespace to the pod's
	// IPv6 address. The first may wait for tapvs to resolve its next hop.
	var out string
	if !eventually(15*time.Second, func() bool {
		out, err = nsRun(sc6Cli, "curl", "-sS", "-g", "--max-time", "3", "http://[fd00:88::2]:80/")
		return err == nil
	}) {
		t.Fatalf("curl to the pod's [fd00:88::2]:80 from %s: %v %s", sc6Cli, err, out)
	}
	// rs1 answered on its IPv6 address and saw the pod's address on its
	// side (the masquerade), not the LIP nor the client.
	if f := strings.Fields(out); len(f) != 4 || f[0] != "rs1" || f[1] != "fd00:89::1" || !strings.HasPrefix(f[3], "[fd00:89::2]:") {
		t.Fatalf("curl over IPv6 through the pod: %q, want rs1 fd00:89::1 saw [fd00:89::2]:port", out)
	}
	// And with Go's client, over IPv6 then IPv4 (the same file's other
	// family): each sees the pod's address of its family.
	hc := lab.HTTPClient(sc6Cli, 5*time.Second)
	for _, c := range []struct{ url, want string }{
		{"http://[fd00:88::2]:80/", "rs1 fd00:89::1 saw [fd00:89::2]:"},
		{"http://10.88.0.2:80/", "rs1 10.89.0.1 saw 10.89.0.2:"},
	} {
		var body string
		if !eventually(15*time.Second, func() bool {
			resp, err := hc.Get(c.url)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return true
		}) || !strings.HasPrefix(body, c.want) {
			t.Fatalf("GET %s from %s: %q, want %q...", c.url, sc6Cli, body, c.want)
		}
	}
	// Outbound: the app in the pod reaches the IPv6 VIP itself.
	pod := lab.HTTPClient(sc6Pod, 5*time.Second)
	resp, err := pod.Get("http://[fd00:25:254::100]:80/")
	if err != nil {
		t.Fatalf("the app in the pod to the IPv6 VIP: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "rs1 fd00:89::1 saw [fd00:89::2]:") {
		t.Fatalf("the app in the pod to the IPv6 VIP: %q", b)
	}

	// On the wire at the real server: every IPv6 packet of port 80 is
	// between it and the pod's address; the LIP never leaves the pod.
	capRS.stop()
	n := 0
	for _, p := range tcpPort(capRS.packets(), 80) {
		ip := ip6Of(p)
		if ip == nil {
			continue
		}
		n++
		ends := [2]string{ip.SrcIP.String(), ip.DstIP.String()}
		if ends != [2]string{"fd00:89::2", "fd00:89::1"} && ends != [2]string{"fd00:89::1", "fd00:89::2"} {
			t.Fatalf("an IPv6 packet at the real server between %v, want the pod's fd00:89::2 and fd00:89::1", ends)
		}
		if tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP); tcp == nil {
			t.Fatalf("port 80 packet without TCP: %v", p)
		}
	}
	if n < 6 { // two connections (curl, Go) at least: SYN, SYN-ACK, ACK each
		t.Fatalf("%d IPv6 packets of port 80 at the real server, want two connections' at least", n)
	}

	// tapvs stops: its tables go, the kernel end's addresses with the TAPs.
	closeTapvs()
	if rules := mustRun(t, sc6Pod, "nft", "list", "ruleset"); strings.Contains(rules, "tapvs-") {
		t.Fatalf("tapvs stopped, yet in the pod:\n%s", rules)
	}
}
