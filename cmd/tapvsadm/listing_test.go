package main

import (
	"context"
	goflag "flag"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
)

var update = goflag.Bool("update", false, "rewrite testdata's golden listings")

// golden compares got with testdata/name, or writes it there with
// -update (then read it against the format strings its test cites).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s:\n got %q\nwant %q", name, got, want)
	}
}

// svcs25 are in the order they were added; ipvsadm's order differs in
// each key: family, protocol, address, port, and a service's real servers
// by address then port.
var svcs25 = []api.Service{
	{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "[2001:db8::1]:80"}, Scheduler: "rr", Timeouts: api.Timeouts{TCP: 900},
		Dests: []api.Dest{{Addr: "[fd00:20:1::2]:80", Forward: "FullNat", Weight: 1}}},
	{ServiceKey: api.ServiceKey{Protocol: "udp", Addr: "172.25.254.100:53"}, Scheduler: "rr", Timeouts: api.Timeouts{TCP: 900},
		Dests: []api.Dest{{Addr: "10.20.1.2:53", Forward: "FullNat", Weight: 1}}},
	{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, Scheduler: "wrr", Timeouts: api.Timeouts{TCP: 900},
		Dests: []api.Dest{
			{Addr: "10.20.1.3:80", Forward: "FullNat", Weight: 2, ActiveConn: 5, InActConn: 1},
			{Addr: "10.20.1.2:8080", Forward: "FullNat", Weight: 1},
			{Addr: "10.20.1.2:80", Forward: "FullNat", Weight: 1, ActiveConn: 3},
		},
		LocalAddrs: []api.LocalAddr{{Addr: "172.25.84.10"}, {Addr: "172.25.84.11"}}},
	{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.99:443"}, Scheduler: "wlc", Synproxy: true, Timeouts: api.Timeouts{TCP: 60},
		Dests: []api.Dest{{Addr: "10.20.1.4:443", Forward: "FullNat", Weight: 3}}},
}

// names25 names some hosts and ports, one host long enough for ipvsadm to
// cut it (svc_name[33], dname[28]).
func names25() *resolver {
	return fakeNames(map[string]string{
		"172.25.254.100": "vip.example.",
		"172.25.254.99":  "www.a-long-virtual-service.example.com",
		"10.20.1.2":      "a-very-long-real-server-name.example.com.",
		"fd00:20:1::2":   "rs6",
	}, map[string]string{"80/tcp": "http", "443/tcp": "https", "53/udp": "domain"})
}

// The listings of issue 25, each a golden file written from ipvsadm's
// own format strings (ipvsadm.c, and Alibaba's and DPVS's where they add):
//
//	list.txt, list-nosort.txt, list-names.txt: list_all's "IP Virtual
//	  Server version %d.%d.%d (size=%d)", print_title's "Prot
//	  LocalAddress:Port Scheduler Flags" / "  -> RemoteAddress:Port
//	  Forward Weight ActiveConn InActConn", print_service_entry's "%s %s"
//	  (svc_name "%s  %s", cut at 33) and "  -> %-28s %-7s %-6d %-10u
//	  %-10u" (dname cut at 28); addrport_to_anyname's "%s:%s" with names.
//	  Sorted by ipvs_cmp_services and ipvs_cmp_dests unless --nosort.
//	timeout.txt: list_timeout's "Timeout (tcp tcpfin udp): %d %d %d".
//	save.txt, save-n.txt: Alibaba's print_service_entry with FMT_RULE,
//	  "-A %s -s %s" " -j enable"|" -j disable" " -V %u", "-a %s -r %s %s
//	  -w %d", then print_laddrs_rules's "-P %s -z %s".
//	conns.txt: list_conn's "IPVS connection entries" and "pro expire
//	  %-11s %-18s %-18s %s" with DPVS's local column (print_conn_entry's
//	  "%-18s %-18s %-18s %s"), expiry "%02d:%02d".
func TestListingGoldens(t *testing.T) {
	conns := []api.Conn{
		{Protocol: "TCP", State: "ESTABLISHED", ExpiresMs: 899500, Source: "198.51.100.7:40000", Virtual: "172.25.254.100:80", Local: "172.25.84.10:5002", Destination: "10.20.1.2:80"},
		{Protocol: "UDP", State: "UDP", ExpiresMs: 6000001, Source: "198.51.100.8:5353", Virtual: "172.25.254.100:53", Local: "172.25.84.11:6000", Destination: "10.20.1.2:53"},
	}
	sock, _ := fakeDaemon(t, svcs25, conns)
	golden(t, "list.txt", tapvsadm(t, sock, "", "-ln"))
	golden(t, "list-nosort.txt", tapvsadm(t, sock, "", "-ln", "--nosort"))
	golden(t, "timeout.txt", tapvsadm(t, sock, "", "-L", "--timeout"))
	golden(t, "save-n.txt", tapvsadm(t, sock, "", "-S", "-n"))
	if got := tapvsadm(t, sock, "", "-L", "-n", "--sort"); got != tapvsadm(t, sock, "", "-ln") {
		t.Errorf("--sort is not the default order:\n%s", got)
	}
	withNames(t, names25())
	golden(t, "list-names.txt", tapvsadm(t, sock, "", "-L"))
	golden(t, "save.txt", tapvsadm(t, sock, "", "-S"))
	golden(t, "conns.txt", tapvsadm(t, sock, "", "-lnc"))
	golden(t, "conns-names.txt", tapvsadm(t, sock, "", "-lc"))
}

// What -S writes, with names or without, -R reads back into the same
// rules: the batch is the same either way, and -S's every line is in it.
func TestSaveRestoresItself(t *testing.T) {
	sock, batches := fakeDaemon(t, svcs25, nil)
	withNames(t, names25())
	for _, args := range [][]string{{"-S", "-n"}, {"-S"}} {
		tapvsadm(t, sock, tapvsadm(t, sock, "", args...), "-R")
	}
	b := batches()
	if len(b) != 2 || len(b[0].Ops) != len(b[1].Ops) || len(b[0].Ops) != 12 {
		t.Fatalf("-R sent %+v", b)
	}
	for i := range b[0].Ops {
		x, y := b[0].Ops[i], b[1].Ops[i]
		if x.Op != y.Op || x.Service.ServiceKey != y.Service.ServiceKey || x.Dest != nil && x.Dest.Addr != y.Dest.Addr {
			t.Errorf("op %d: -S -n gave %+v, -S %+v", i, x, y)
		}
	}
	// -V: the one service whose ESTABLISHED timeout is not the default.
	for _, op := range b[0].Ops {
		if op.Op != "add-service" {
			continue
		}
		want := uint32(0)
		if op.Service.Addr == "172.25.254.99:443" {
			want = 60
		}
		if op.Service.EstablishedTimeout != want {
			t.Errorf("%s: -V %d, want %d", op.Service.Addr, op.Service.EstablishedTimeout, want)
		}
	}
}

// -R takes a whole command per line ("ipvsadm -A ..."), blank lines and
// comments; a bad line is refused by its number and what is wrong in it,
// and nothing is sent.
func TestRestoreIpvsadmLines(t *testing.T) {
	sock, batches := fakeDaemon(t, nil, nil)
	in := "# saved by ipvsadm -S\n\nipvsadm -A -t 172.25.254.100:80 -s rr\n  tapvsadm -a -t 172.25.254.100:80 -r 10.20.1.2:80 -b -w 1\n/sbin/ipvsadm -P -t 172.25.254.100:80 -z 172.25.84.10\n"
	tapvsadm(t, sock, in, "-R")
	if b := batches(); len(b) != 1 || len(b[0].Ops) != 3 || b[0].Ops[0].Op != "add-service" || b[0].Ops[1].Op != "add-dest" || b[0].Ops[2].Op != "add-laddr" {
		t.Fatalf("-R sent %+v", b)
	}
	for _, tc := range []struct{ in, want string }{
		{"ipvsadm -A -t 1.1.1.1:80\n\n# x\nipvsadm -a -t 1.1.1.1:80 -r 2.2.2.2:nosuchport\n",
			"line 4: ipvsadm -a -t 1.1.1.1:80 -r 2.2.2.2:nosuchport: Illegal address or port: 2.2.2.2:nosuchport\n"},
		{"ipvsadm -A -t 1.1.1.1:80 -s rr -w 1\n", "line 1: ipvsadm -A -t 1.1.1.1:80 -s rr -w 1: Illegal option for add-service: -r, -w, -x, -y, -b and -z belong to real servers and local addresses\n"},
		{"ipvsadm\n", "line 1: ipvsadm: not a rule: only commands that change the rules can be restored\n"},
		{"ipvsadm -ln\n", "line 1: ipvsadm -ln: not a rule: only commands that change the rules can be restored\n"},
		{"/sbin/ipvsadm -A -t 1.1.1.1:80\nipvsadm2 -C\n", "line 2: ipvsadm2 -C: unknown option ipvsadm2\n"},
	} {
		var o, e strings.Builder
		if c := run([]string{"-R", "--socket", sock}, strings.NewReader(tc.in), &o, &e); c != 1 || e.String() != tc.want {
			t.Errorf("%q: exit %d, stderr %q, want %q", tc.in, c, e.String(), tc.want)
		}
	}
	if b := batches(); len(b) != 1 {
		t.Fatalf("a refused restore sent %d batches", len(b)-1)
	}
}

// -L --timeout asks tapvs for the timeouts --set sets and nothing else.
func TestListTimeout(t *testing.T) {
	sock, _ := fakeDaemon(t, nil, nil)
	if got, want := tapvsadm(t, sock, "", "-L", "--timeout"), "Timeout (tcp tcpfin udp): 900 120 300\n"; got != want {
		t.Fatalf("-L --timeout: %q, want %q", got, want)
	}
}

// A real server's first three rates are ipvsadm's "%8u", never scaled;
// the service's, and both byte rates, print_largenum's.
func TestRateOfServerUnscaled(t *testing.T) {
	svcs := []api.Service{{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"},
		Rate:  api.Rate{CPS: 123456789, InBPS: 123456789},
		Dests: []api.Dest{{Addr: "10.20.1.2:80", Rate: api.Rate{CPS: 123456789, InPPS: 100000000, OutPPS: 1, InBPS: 123456789}}}}}
	var b strings.Builder
	printList(&b, api.Info{Version: "1.2.1", Size: 1}, svcs, &command{numeric: true, rate: true})
	want := "TCP  172.25.254.100:80             123456K        0        0  123456K        0\n" +
		"  -> 10.20.1.2:80                 123456789 100000000        1  123456K        0\n"
	if !strings.HasSuffix(b.String(), want) {
		t.Fatalf("--rate:\n%s\nwant its end\n%s", b.String(), want)
	}
}

// -v is one line in ipvsadm's layout, without asking tapvs (no socket
// here); the build's version is its module's, else its commit's.
func TestVersion(t *testing.T) {
	var o, e strings.Builder
	if c := run([]string{"-v", "--socket", "/nonexistent/tapvs.sock"}, nil, &o, &e); c != 0 ||
		!regexp.MustCompile(`^tapvsadm \S+ \(ipvsadm for tapvs, IPVS v1\.2\.1\)\n$`).MatchString(o.String()) || e.Len() != 0 {
		t.Fatalf("-v: exit %d, %q, %q", c, o.String(), e.String())
	}
	for _, tc := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}, "0123456789ab-dirty"},
		{debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}}, "abc"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel"},
	} {
		if got := buildVersion(&tc.bi); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.bi, got, tc.want)
		}
	}
}

// Without -n, a listing does not hang where no resolver answers: each
// reverse lookup is bounded, and once one has timed out the rest are not
// tried, so a table of many addresses waits once.
func TestNamesBounded(t *testing.T) {
	var calls atomic.Int32
	r := &resolver{
		host: func(ctx context.Context, _ netip.Addr) ([]string, error) {
			calls.Add(1)
			<-ctx.Done()
			return nil, ctx.Err()
		},
		service: func(uint16, string) string { return "" },
		timeout: 20 * time.Millisecond,
	}
	for _, a := range []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.1:81"} {
		if got := r.addrPort(a, "tcp", false); got != a {
			t.Errorf("%s: %q", a, got)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d lookups after the first timed out, want 1 in all", n)
	}
	// An address without a name is no timeout: the next is still looked
	// up.
	r = names25()
	for a, want := range map[string]string{"192.0.2.1:80": "192.0.2.1:http", "172.25.254.100:80": "vip.example:http"} {
		if got := r.addrPort(a, "tcp", false); got != want {
			t.Errorf("%s: %q, want %q", a, got, want)
		}
	}
}
