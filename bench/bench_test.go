package bench

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string // in the error; "" for none
	}{
		{Options{}, ""},
		{Options{Paths: PathNames, Workloads: WorkloadNames, BusyPoll: time.Second}, ""},
		{Options{Paths: []string{"tapvs", "lvs"}}, `unknown path "lvs"`},
		{Options{Workloads: []string{"short", "long"}}, `unknown workload "long"`},
		{Options{BusyPoll: -time.Microsecond}, "busy-poll"},
		{Options{BusyPoll: time.Second + 1}, "busy-poll"},
		{Options{Queues: 64, TxQueueLen: 100000}, ""},
		{Options{Queues: -1}, "queues"},
		{Options{Queues: 65}, "queues"},
		{Options{Pollers: 64, Queues: 64}, ""},
		{Options{Pollers: -1}, "pollers"},
		{Options{Pollers: 65}, "pollers"},
		{Options{Pollers: 2, IO: "syscalls"}, "pollers: 2 io_uring pollers, but io is syscalls"},
		{Options{TxQueueLen: -1}, "tap-txqueuelen"},
		{Options{TxQueueLen: 100001}, "tap-txqueuelen"},
		{Options{FloodRate: 1_000_000}, ""},
		{Options{FloodRate: -1}, "flood-rate"},
		{Options{FloodRate: 1_000_001}, "flood-rate"},
		{Options{Sustained: 2 * time.Minute}, ""},
		{Options{Sustained: 90 * time.Second}, "sustained: 1m30s is under 2m0s"},
	} {
		err := c.o.Check()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
}

func TestWants(t *testing.T) {
	all := Options{}
	some := Options{Workloads: []string{"short", "udp"}}
	for _, w := range WorkloadNames {
		// sustained runs minutes per path: only when named.
		if all.wants(w) != (w != "sustained") {
			t.Errorf("no workloads chosen: %s wanted %v", w, all.wants(w))
		}
		if got := w == "short" || w == "udp"; some.wants(w) != got {
			t.Errorf("%s wanted: %v, want %v", w, some.wants(w), got)
		}
	}
}

// The table, the --paths help and Check name the paths by PathNames:
// setup's paths must be those, in that order.
func TestPathsArePathNames(t *testing.T) {
	ps := paths(1)
	if len(ps) != len(PathNames) {
		t.Fatalf("%d paths, %d names", len(ps), len(PathNames))
	}
	for i, p := range ps {
		if p.Name != PathNames[i] {
			t.Errorf("path %d is %q, want %q", i, p.Name, PathNames[i])
		}
		// HAProxy's TCP mode cannot carry UDP; behind tapvs+proxy-v2 the
		// servers read a PROXY header first, which iperf3 cannot;
		// tapvs+ts-remove is there for the HTTP workloads.
		noIperf := p.Name == "tapvs+proxy-v2" || p.Name == "tapvs+ts-remove"
		if p.UDP != (!strings.HasPrefix(p.Name, "haproxy") && !noIperf) || p.Iperf.IsValid() == noIperf {
			t.Errorf("%s: UDP %v, iperf3 at %v", p.Name, p.UDP, p.Iperf)
		}
		// The flood workload runs through the SYN proxies, and only those.
		if p.Synproxy != strings.Contains(p.Name, "synproxy") {
			t.Errorf("%s: Synproxy %v", p.Name, p.Synproxy)
		}
		// Its drops are counted on the client's device towards the balancer.
		if wantDev := map[bool]string{true: tapClient, false: "direct"}[strings.HasPrefix(p.Name, "tapvs")]; p.Dev != wantDev {
			t.Errorf("%s: device %q, want %q", p.Name, p.Dev, wantDev)
		}
		if p.cpuSeconds == nil {
			t.Errorf("%s: no CPU accounting", p.Name)
		}
		// tapvs runs with connection sync for tapvs+sync alone.
		if p.Sync != (p.Name == "tapvs+sync") {
			t.Errorf("%s: Sync %v", p.Name, p.Sync)
		}
	}
}

// Each kernel NAT path leaves for the real servers from its own address,
// none of them the router's own (HAProxy's): a path that reused another's
// tuples would meet that path's TIME_WAITs on the servers, which the
// kernel's SYN proxy cannot end (see snatNFT).
func TestKernelPathsOwnSource(t *testing.T) {
	rules := nftRules()
	if strings.Contains(rules, "masquerade") {
		t.Error("the kernel paths masquerade: they share the router's address")
	}
	seen := map[string]string{}
	for _, vip := range []netip.Addr{vipNFT, vipSP, vipSPNoTS} {
		var src string
		for l := range strings.Lines(rules) {
			if f := strings.Fields(l); len(f) == 8 && f[4] == vip.String() && f[5] == "snat" {
				src = f[7]
			}
		}
		if src == "" {
			t.Errorf("%s: no snat rule of its own in\n%s", vip, rules)
			continue
		}
		a, err := netip.ParseAddr(src)
		if err != nil || lab.RSNet.Contains(a) || a == lab.VIP {
			t.Errorf("%s: snat to %q, not an address of its own", vip, src)
		}
		if other, ok := seen[src]; ok {
			t.Errorf("%s and %s both leave from %s", other, vip, src)
		}
		seen[src] = vip.String()
	}
}

// tapvs's services for the bench parse, and tapvs+proxy-v2's is a TCP
// service that tells its servers the client by a PROXY v2 header, on the
// port the path and nginx use.
func TestTapvsServices(t *testing.T) {
	top := lab.NewTopology(benchPrefix, tapClient, tapServer)
	top.IPv6 = true
	cfg, err := config.Parse(top.Config(tapvsService+tapvsService6, ""))
	if err != nil {
		t.Fatal(err)
	}
	var pp *config.Service
	for i := range cfg.Services {
		if cfg.Services[i].Name == "web-pp" {
			pp = &cfg.Services[i]
		}
	}
	if pp == nil {
		t.Fatal("no web-pp service")
	}
	if pp.ClientAddress != nat.ClientAddrProxyV2 || pp.Protocol != nat.TCP || pp.Port != ppHTTPPort {
		t.Fatalf("web-pp: %+v", pp)
	}
	for _, rs := range pp.RealServers {
		if rs.Port != ppHTTPPort {
			t.Errorf("web-pp's real server %v: not nginx's PROXY port %d", rs, ppHTTPPort)
		}
	}
}

// nginx on the real servers requires the PROXY header on the proxy-v2
// port, and only there; nginx -t checks the file when nginx is installed.
func TestNginxConfig(t *testing.T) {
	dir := t.TempDir()
	if err := writeNginx(dir, lab.RS1); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(dir, "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("listen %s:%d proxy_protocol ", lab.RS1, ppHTTPPort); !strings.Contains(string(conf), want) || strings.Count(string(conf), "proxy_protocol") != 1 {
		t.Fatalf("want one %q in\n%s", want, conf)
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no nginx to check the file with (.ci/run installs nginx-light)")
		}
		t.Skip("no nginx to check the file with")
	}
	// -t also binds the listen addresses, which are the real servers' own
	// (in their namespaces, not here): the syntax check is what counts.
	out, _ := exec.Command(nginx, "-t", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput()
	if !strings.Contains(string(out), "syntax is ok") {
		t.Fatalf("nginx -t:\n%s", out)
	}
}
