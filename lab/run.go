package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/daemon"
	"github.com/tapvs/tapvs/nat"
)

// Options are the lab command's.
type Options struct {
	ConfigPath string
	Requests   int
	BulkBytes  int64 // per throughput measurement; 0 skips it
	Keep       bool
	Out        io.Writer
	Log        *slog.Logger
}

// Prefix is the lab's namespace prefix; config.yaml names its namespaces.
const Prefix = "tvs"

// Run builds the lab, runs tapvs in it from the configuration file, shows
// traffic crossing it, and tears everything down when done (or, with Keep,
// when ctx ends).
func Run(ctx context.Context, o Options) error {
	cfg, err := config.Load(o.ConfigPath)
	if err != nil {
		return err
	}
	top := NewTopology(Prefix, cfg.Client.Name, cfg.Server.Name)
	if cfg.Client.Netns != top.Client || cfg.Server.Netns != top.Router {
		return fmt.Errorf("%s: the lab puts the client side in netns %q and the server side in %q; the file says %q and %q",
			o.ConfigPath, top.Client, top.Router, cfg.Client.Netns, cfg.Server.Netns)
	}
	for _, ns := range top.Namespaces() {
		if InNetns(ns, func() error { return nil }) == nil {
			return fmt.Errorf("netns %s exists: a lab is already up (stop it, or remove it: %s)", ns,
				"for n in "+strings.Join(top.Namespaces(), " ")+"; do ip netns del $n; done")
		}
	}
	fmt.Fprintf(o.Out, "building the lab: namespaces %s\n", strings.Join(top.Namespaces(), ", "))
	if err := top.Build(); err != nil {
		return err
	}
	defer func() {
		if err := top.Destroy(); err != nil {
			o.Log.Warn("lab teardown", "err", err)
		} else {
			fmt.Fprintln(o.Out, "lab removed")
		}
	}()
	d, err := top.StartTapvs(ctx, cfg, o.Log)
	if err != nil {
		return err
	}
	defer d.Close()
	for i, addr := range []netip.Addr{RS1, RS2} {
		b, err := StartBackend(top.RS[i], fmt.Sprintf("rs%d", i+1), addr)
		if err != nil {
			return err
		}
		defer b.Close()
	}
	if err := demo(ctx, top, d, o); err != nil {
		return err
	}
	if hasService(cfg, VIP6, HTTPPort, nat.TCP) {
		if err := demo6(ctx, top, cfg, o); err != nil {
			return err
		}
	}
	created, expired := d.Balancer.Stats.Conns()
	fmt.Fprintf(o.Out, "tapvs: %d connections made, %d expired, %d in the table\n", created, expired, d.Balancer.Table().Len())
	if !o.Keep {
		return nil
	}
	fmt.Fprintf(o.Out, `
The lab stays up until Ctrl-C. Try, in another shell:
  ip netns exec %[1]s curl -s http://%[2]s/           # through tapvs (wrr over rs1, rs2)
  ip netns exec %[1]s ping -c 3 %[2]s                 # answered by tapvs's stack
  ip netns exec %[3]s ss -tn                          # the RS sees LIPs %[4]s, %[5]s
  ip netns exec %[6]s tcpdump -ni tap-s               # the server side of tapvs
  go run ./cmd/tapvsadm -lnc                          # ipvsadm: -ln, -lnc, -G, --stats, -S ...
  go run ./cmd/tapvsadm -e -t %[2]s:80 -r %[7]s:80 -w 0   # drain rs1
  curl -s http://%[8]s/metrics | grep tapvs_rs_        # Prometheus metrics
  ip netns list
`, top.Client, VIP, top.RS[0], LIP1, LIP2, top.Router, RS1, d.Config().MetricsListen)
	if hasService(cfg, VIP6, HTTPPort, nat.TCP) {
		fmt.Fprintf(o.Out, "  ip netns exec %s curl -s http://[%s]/   # IPv6 through tapvs\n", top.Client, VIP6)
	}
	if hasService(cfg, VIP64, HTTPPort, nat.TCP) {
		fmt.Fprintf(o.Out, "  ip netns exec %s curl -s http://[%s]/    # NAT64: IPv6 client, IPv4 real servers\n", top.Client, VIP64)
	}
	if hasService(cfg, VIP46, HTTPPort, nat.TCP) {
		fmt.Fprintf(o.Out, "  ip netns exec %s curl -s http://%s/    # NAT46: IPv4 client, IPv6 real servers\n", top.Client, VIP46)
	}
	<-ctx.Done()
	return nil
}

// StartTapvs runs tapvs from cfg in this topology: it creates the TAPs and
// moves them in, their kernel ends get their addresses, and it returns once
// tapvs knows every real server's next hop (10s at most). On error nothing
// of tapvs is left running.
func (t *Topology) StartTapvs(ctx context.Context, cfg *config.Config, log *slog.Logger) (*daemon.Daemon, error) {
	d, err := daemon.Start(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := t.AddressTAPs(); err != nil {
		d.Close()
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := waitResolved(rctx, d); err != nil {
		d.Close()
		return nil, fmt.Errorf("tapvs could not reach the real servers' next hop: %w", err)
	}
	return d, nil
}

// waitResolved waits until tapvs knows the next hop of every real server,
// or ctx ends.
func waitResolved(ctx context.Context, d *daemon.Daemon) error {
	for {
		err := d.Stack.ResolveAll(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// demo sends the lab's traffic and prints what each real server saw.
func demo(ctx context.Context, top *Topology, d *daemon.Daemon, o Options) error {
	web := netip.AddrPortFrom(VIP, HTTPPort)
	fmt.Fprintf(o.Out, "\n%d HTTP requests from %s (%s) to the VIP %s:\n", o.Requests, top.Client, ClientAddr.Addr(), web)
	hc := HTTPClient(top.Client, 5*time.Second)
	perRS := map[string]int{}
	lipSeen := 0
	for i := 1; i <= o.Requests; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := hc.Get("http://" + web.String() + "/")
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		var name, rsAddr, saw string
		fmt.Sscanf(string(body), "%s %s saw %s", &name, &rsAddr, &saw)
		src, _ := netip.ParseAddrPort(saw)
		what := "a LIP"
		if src.Addr() != LIP1 && src.Addr() != LIP2 {
			what = "NOT a LIP"
		} else {
			lipSeen++
		}
		perRS[name]++
		fmt.Fprintf(o.Out, "  request %2d: answered by %s (%s), which saw the source %s (%s)\n", i, name, rsAddr, saw, what)
	}
	var names []string
	for n := range perRS {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, perRS[n]))
	}
	fmt.Fprintf(o.Out, "balance: %s; %d of %d requests reached the RS from a LIP\n", strings.Join(parts, ", "), lipSeen, o.Requests)
	if lipSeen != o.Requests || len(perRS) < 2 && o.Requests > 1 {
		return errors.New("the lab did not balance over both real servers with FULLNAT sources")
	}

	sp := netip.AddrPortFrom(VIP, SynproxyPort)
	fmt.Fprintf(o.Out, "through SYNPROXY (%s): ", sp)
	for i := range 4 {
		resp, err := hc.Get("http://" + sp.String() + "/")
		if err != nil {
			return fmt.Errorf("synproxy request %d: %w", i+1, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(o.Out, "%s; ", strings.Fields(string(body))[0])
	}
	cookies, opened, _, _ := d.Balancer.Stats.Synproxy()
	fmt.Fprintf(o.Out, "%d SYNs answered with cookies, %d handshakes proved before any server saw a SYN\n", cookies, opened)

	if err := demoClientAddr(ctx, top, hc, o); err != nil {
		return err
	}

	echo := netip.AddrPortFrom(VIP, EchoPort)
	reply, err := UDPEcho(ctx, top.Client, echo, "hello")
	if err != nil {
		return fmt.Errorf("udp echo via %s: %w", echo, err)
	}
	fmt.Fprintf(o.Out, "udp echo via %s: %q\n", echo, reply)
	rtt, err := Ping(ctx, top.Client, VIP)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "ping %s: reply in %v\n", VIP, rtt.Round(time.Microsecond))

	if o.BulkBytes > 0 {
		bulk := netip.AddrPortFrom(VIP, BulkPort)
		direct := netip.AddrPortFrom(RS1, BulkPort)
		fmt.Fprintf(o.Out, "bulk TCP, %d MiB upload and download, client -> real server:\n", o.BulkBytes>>20)
		via, err := measure(ctx, top.Client, bulk, o.BulkBytes)
		if err != nil {
			return fmt.Errorf("through tapvs: %w", err)
		}
		base, err := measure(ctx, top.Client, direct, o.BulkBytes)
		if err != nil {
			return fmt.Errorf("direct: %w", err)
		}
		fmt.Fprintf(o.Out, "  kernel routed path (client -> router -> RS): %6.2f Gbit/s\n", base)
		fmt.Fprintf(o.Out, "  through tapvs (client -> VIP -> LIP -> RS):  %6.2f Gbit/s = %.2fx the routed path\n", via, via/base)
	}
	return nil
}

// hasService reports whether cfg has a service at vip:port.
func hasService(cfg *config.Config, vip netip.Addr, port uint16, proto nat.Protocol) bool {
	return slices.ContainsFunc(cfg.Services, func(s config.Service) bool {
		return s.VIP == vip && s.Port == port && s.Protocol == proto
	})
}

// demo6 runs demoFamily through the IPv6 VIP (IPv6 LIPs and real
// servers) and then, when config.yaml has them, through the NAT64 VIP
// (IPv4 LIPs and real servers behind an IPv6 VIP) and the NAT46 VIP (IPv6
// ones behind an IPv4 VIP).
func demo6(ctx context.Context, top *Topology, cfg *config.Config, o Options) error {
	n := max(o.Requests, 2)
	if err := demoFamily(ctx, top, cfg, o, n, VIP6, [2]netip.Addr{LIP1v6, LIP2v6},
		"\nIPv6: %d HTTP requests from %s (%s) to the VIP %s:\n",
		"IPv6: %d of %d requests reached the RS from an IPv6 LIP, over %d real servers\n"); err != nil {
		return err
	}
	if hasService(cfg, VIP64, HTTPPort, nat.TCP) {
		if err := demoFamily(ctx, top, cfg, o, n, VIP64, [2]netip.Addr{LIP1, LIP2},
			"\nNAT64: %d HTTP requests from %s (%s) to the VIP %s, whose real servers are IPv4:\n",
			"NAT64: %d of %d requests from an IPv6 client reached an IPv4 RS from an IPv4 LIP, over %d real servers\n"); err != nil {
			return err
		}
	}
	if !hasService(cfg, VIP46, HTTPPort, nat.TCP) {
		return nil
	}
	return demoFamily(ctx, top, cfg, o, n, VIP46, [2]netip.Addr{LIP1v6, LIP2v6},
		"\nNAT46: %d HTTP requests from %s (%s) to the VIP %s, whose real servers are IPv6:\n",
		"NAT46: %d of %d requests from an IPv4 client reached an IPv6 RS from an IPv6 LIP, over %d real servers\n")
}

// demoFamily sends n HTTP requests from the client's address of vip's
// family to vip
// (and a datagram, if vip has the echo service) and prints what each real
// server saw, which must be one of lips; header and summary are the
// output's first and last lines (n, client, its address, the VIP; the
// LIP count, n, the servers reached).
func demoFamily(ctx context.Context, top *Topology, cfg *config.Config, o Options, n int, vip netip.Addr, lips [2]netip.Addr, header, summary string) error {
	web := netip.AddrPortFrom(vip, HTTPPort)
	client := ClientAddr6.Addr()
	if vip.Is4() { // NAT46
		client = ClientAddr.Addr()
	}
	fmt.Fprintf(o.Out, header, n, top.Client, client, web)
	hc := HTTPClient(top.Client, 5*time.Second)
	perRS := map[string]int{}
	lipSeen := 0
	for i := 1; i <= n; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := hc.Get("http://" + web.String() + "/")
		if err != nil {
			return fmt.Errorf("request %d to %s: %w", i, web, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("request %d to %s: %w", i, web, err)
		}
		var name, rsAddr, saw string
		fmt.Sscanf(string(body), "%s %s saw %s", &name, &rsAddr, &saw)
		src, _ := netip.ParseAddrPort(saw)
		if src.Addr() == lips[0] || src.Addr() == lips[1] {
			lipSeen++
		}
		perRS[name]++
		fmt.Fprintf(o.Out, "  request %2d: answered by %s (%s), which saw the source %s\n", i, name, rsAddr, saw)
	}
	fmt.Fprintf(o.Out, summary, lipSeen, n, len(perRS))
	if lipSeen != n || len(perRS) < 2 {
		return fmt.Errorf("the lab did not balance %s over both real servers from its local addresses %v", web, lips)
	}
	if hasService(cfg, vip, EchoPort, nat.UDP) {
		echo := netip.AddrPortFrom(vip, EchoPort)
		reply, err := UDPEcho(ctx, top.Client, echo, "hello")
		if err != nil {
			return fmt.Errorf("udp echo via %s: %w", echo, err)
		}
		fmt.Fprintf(o.Out, "udp echo via %s: %q\n", echo, reply)
	}
	return nil
}

// demoClientAddr sends requests and a datagram through the services whose
// real servers are told the client's address by a PROXY header
// (config.yaml's web-proxy and echo-proxy), and prints, for each, the
// address the server was told next to the LIP it saw the connection from.
func demoClientAddr(ctx context.Context, top *Topology, hc *http.Client, o Options) error {
	web := netip.AddrPortFrom(VIP, ProxyHTTPPort)
	fmt.Fprintf(o.Out, "through %s, whose real servers are told the client by a PROXY v2 header:\n", web)
	for i := 1; i <= 4; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := hc.Get("http://" + web.String() + "/")
		if err != nil {
			return fmt.Errorf("client address request %d: %w", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("client address request %d: %w", i, err)
		}
		var name, rsAddr, saw, told string
		fmt.Sscanf(string(body), "%s %s saw %s told %s", &name, &rsAddr, &saw, &told)
		t, err := netip.ParseAddrPort(told)
		if err != nil || t.Addr() != ClientAddr.Addr() {
			return fmt.Errorf("client address request %d: the real server was told %q, not the client %s (answer %q)", i, told, ClientAddr.Addr(), body)
		}
		fmt.Fprintf(o.Out, "  request %d: %s saw the connection from %s and was told the client is %s\n", i, name, saw, told)
	}
	echo := netip.AddrPortFrom(VIP, ProxyEchoPort)
	reply, err := UDPEcho(ctx, top.Client, echo, "hello")
	if err != nil {
		return fmt.Errorf("udp echo via %s: %w", echo, err)
	}
	if !strings.Contains(reply, " told "+ClientAddr.Addr().String()+":") {
		return fmt.Errorf("udp echo via %s: the real server was not told the client: %q", echo, reply)
	}
	fmt.Fprintf(o.Out, "  udp echo via %s: %q\n", echo, reply)
	return nil
}

// measure returns the mean of an upload and a download in Gbit/s.
func measure(ctx context.Context, ns string, addr netip.AddrPort, n int64) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	up, err := Upload(ctx, ns, addr, n)
	if err != nil {
		return 0, err
	}
	down, err := Download(ctx, ns, addr, n)
	if err != nil {
		return 0, err
	}
	return float64(2*n*8) / (up + down).Seconds() / 1e9, nil
}
