package main

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
)

func ref[T any](v T) *T { return &v }

// words splits a command line as a shell would for these tests; an empty
// word is written ” (strings.Fields cannot make one).
func words(line string) []string {
	w := strings.Fields(line)
	for i := range w {
		if w[i] == "''" {
			w[i] = ""
		}
	}
	return w
}

var (
	svc = command{proto: "tcp", service: "1.1.1.1:80"}
	// everyOption is every option by its short and its long name, with its
	// value attached (-t1.2.3.4:80, --udp-service=...), bundled (-lnc) or
	// apart: the whole command each line parses to.
	everyOption = []struct {
		line string
		want command
	}{
		// Commands.
		{"-A -t 1.1.1.1:80", with(svc, op("add-service"))},
		{"--add-service --tcp-service 1.1.1.1:80", with(svc, op("add-service"))},
		{"--add-service --tcp-service=1.1.1.1:80", with(svc, op("add-service"))},
		{"-t 1.1.1.1:80 -A", with(svc, op("add-service"))},
		{"-A -t1.1.1.1:80", with(svc, op("add-service"))},
		{"-E -t 1.1.1.1:80 -s rr", with(svc, func(c *command) { c.op, c.sched = "edit-service", "rr" })},
		{"--edit-service -t 1.1.1.1:80", with(svc, op("edit-service"))},
		{"-D -t 1.1.1.1:80", with(svc, op("delete-service"))},
		{"--delete-service -t 1.1.1.1:80", with(svc, op("delete-service"))},
		{"-C", command{op: "clear"}},
		{"--clear", command{op: "clear"}},
		{"-R", command{op: "restore"}},
		{"--restore", command{op: "restore"}},
		{"-S", command{op: "save"}},
		{"--save -n", command{op: "save", numeric: true}},
		{"-Sn", command{op: "save", numeric: true}},
		{"-a -t 1.1.1.1:80 -r 2.2.2.2:80", with(svc, func(c *command) { c.op, c.real = "add-server", "2.2.2.2:80" })},
		{"--add-server -t 1.1.1.1:80 --real-server 2.2.2.2:8080", with(svc, func(c *command) { c.op, c.real = "add-server", "2.2.2.2:8080" })},
		{"-e -t 1.1.1.1:80 -r 2.2.2.2 -w 0", with(svc, func(c *command) { c.op, c.real, c.weight = "edit-server", "2.2.2.2:0", ref(0) })},
		{"--edit-server -t 1.1.1.1:80 -r 2.2.2.2 --weight=65535", with(svc, func(c *command) { c.op, c.real, c.weight = "edit-server", "2.2.2.2:0", ref(65535) })},
		{"-a -t 1.1.1.1:80 -r 2.2.2.2 -x 100 -y50", with(svc, func(c *command) {
			c.op, c.real, c.uthresh, c.lthresh = "add-server", "2.2.2.2:0", ref(uint32(100)), ref(uint32(50))
		})},
		{"-e -t 1.1.1.1:80 -r 2.2.2.2 --u-threshold=2147483647 --l-threshold 0", with(svc, func(c *command) {
			c.op, c.real, c.uthresh, c.lthresh = "edit-server", "2.2.2.2:0", ref(uint32(2147483647)), ref(uint32(0))
		})},
		{"-Ln --thresholds", command{op: "list", numeric: true, thresh: true}},
		{"-d -t 1.1.1.1:80 -r2.2.2.2:80", with(svc, func(c *command) { c.op, c.real = "delete-server", "2.2.2.2:80" })},
		{"--delete-server -t 1.1.1.1:80 -r 2.2.2.2:80", with(svc, func(c *command) { c.op, c.real = "delete-server", "2.2.2.2:80" })},
		{"-L", command{op: "list"}},
		{"-l", command{op: "list"}},
		{"--list", command{op: "list"}},
		{"", command{op: "list"}},
		{"-n", command{op: "list", numeric: true}},
		{"-lnc", command{op: "list", numeric: true, conns: true}},
		{"-cnL", command{op: "list", numeric: true, conns: true}},
		{"-L -t 1.1.1.1:80 --numeric --connection", with(svc, func(c *command) { c.op, c.numeric, c.conns = "list", true, true })},
		{"-L --stats --rate --exact", command{op: "list", stats: true, rate: true, exact: true}},
		{"-Ln --persistent-conn", command{op: "list", numeric: true, pconn: true}},
		// Issue 25: match services, -f MARK (-6 after it).
		{"-A -f 1 -s rr", command{op: "add-service", proto: "fwm", service: "1", sched: "rr"}},
		{"--add-server --fwmark-service=4294967295 -r 2.2.2.2", command{op: "add-server", proto: "fwm", service: "4294967295", real: "2.2.2.2:0"}},
		{"-D -f1 -6", command{op: "delete-service", proto: "fwm", service: "1", ipv6: true}},
		{"-Ln --fwmark-service 007 --ipv6", command{op: "list", numeric: true, proto: "fwm", service: "7", ipv6: true}},
		{"-Z", command{op: "zero"}},
		{"--zero -u 1.1.1.1:53", command{op: "zero", proto: "udp", service: "1.1.1.1:53"}},
		{"--set 900 120 300", command{op: "set", set: [3]uint32{900, 120, 300}}},
		{"--set=0 0 4294967295", command{op: "set", set: [3]uint32{0, 0, 4294967295}}},
		{"-P -t 1.1.1.1:80 -z 10.0.0.9", with(svc, func(c *command) { c.op, c.laddr = "add-laddr", "10.0.0.9" })},
		{"--add-laddr -t 1.1.1.1:80 --laddr 10.0.0.9:80", with(svc, func(c *command) { c.op, c.laddr = "add-laddr", "10.0.0.9" })},
		{"-Q -t 1.1.1.1:80 -z10.0.0.9", with(svc, func(c *command) { c.op, c.laddr = "del-laddr", "10.0.0.9" })},
		{"--del-laddr -t 1.1.1.1:80 --laddr=[fd00::9]:0", with(svc, func(c *command) { c.op, c.laddr = "del-laddr", "fd00::9" })},
		{"-G", command{op: "get-laddr"}},
		{"--get-laddr -t 1.1.1.1:80", with(svc, op("get-laddr"))},
		{"--capture x.pcap -t 1.1.1.1:80", with(svc, func(c *command) { c.op, c.capture = "capture", "x.pcap" })},
		{"--capture=- -u 1.1.1.1:53 --count 5", command{op: "capture", proto: "udp", service: "1.1.1.1:53", capture: "-", count: 5}},
		{"--add-blklst -t 1.1.1.1:80 -k 10.0.0.0/8", with(svc, func(c *command) { c.op, c.prefix = "add-blklst", "10.0.0.0/8" })},
		{"--del-blklst -t 1.1.1.1:80 -k10.0.0.1", with(svc, func(c *command) { c.op, c.prefix = "del-blklst", "10.0.0.1" })},
		{"--get-blklst", command{op: "get-blklst"}},
		{"--get-blklst -t 1.1.1.1:80", with(svc, op("get-blklst"))},
		{"--add-whtlst -t 1.1.1.1:80 --whtlst-address 10.0.0.0/8", with(svc, func(c *command) { c.op, c.prefix = "add-whtlst", "10.0.0.0/8" })},
		{"--del-whtlst -t 1.1.1.1:80 --blklst-address=10.0.0.1", with(svc, func(c *command) { c.op, c.prefix = "del-whtlst", "10.0.0.1" })},
		{"--get-whtlst -n", command{op: "get-whtlst", numeric: true}},
		{"--bgp", command{op: "bgp", bgp: true}},
		{"--bgp -l", command{op: "bgp", bgp: true}},
		{"--drain --wait --timeout=90s", command{op: "drain", wait: true, timeout: 90 * time.Second}},
		{"--undrain", command{op: "undrain"}},
		{"--drain-status", command{op: "drain-status"}},
		// Issue 25: a service's health check at run time.
		{"--health -t 1.1.1.1:80", with(svc, op("health"))},
		{"--health -t 1.1.1.1:80 --off", with(svc, func(c *command) { c.op, c.checkOff = "health", true })},
		{"--health -t 1.1.1.1:80 --check type=http,http_path=/healthz,http_status=200,rise=2,fall=3,verify=true", with(svc, func(c *command) {
			c.op, c.healthCheck = "health", &api.HealthCheck{Type: "http", Path: "/healthz", Status: 200, Rise: 2, Fall: 3, Verify: true}
		})},
		{"--check=type=misc,script=/bin/true --health -t 1.1.1.1:80", with(svc, func(c *command) {
			c.op, c.healthCheck = "health", &api.HealthCheck{Type: "misc", Script: []string{"/bin/true"}}
		})},
		// Issue 26: faults.
		{"--fault", command{op: "fault"}},
		{"--fault --off", command{op: "fault", checkOff: true}},
		{"--fault -t 1.1.1.1:80 --with direction=to_client,loss=0.05", with(svc, func(c *command) {
			c.op, c.fault = "fault", &api.Fault{Direction: "to_client", Loss: 0.05}
		})},
		{"--fault -r 2.2.2.2:8080 --with=blackhole=true,every=3,syn=refuse", command{op: "fault", real: "2.2.2.2:8080", fault: &api.Fault{Blackhole: true, Every: 3, SYN: "refuse"}}},
		{"--fault --client 10.0.0.0/8 --with drop_fin=true,latency=50ms,jitter=5ms,rate=8mbit,duplicate=0.01,reorder=0.02,reset_bytes=1024,reset_after=30s",
			command{op: "fault", faultClient: "10.0.0.0/8", fault: &api.Fault{DropFIN: true, Latency: "50ms", Jitter: "5ms", Rate: "8mbit", Duplicate: 0.01, Reorder: 0.02, ResetBytes: 1024, ResetAfter: "30s"}}},
		{"--fault --client 10.0.0.0/8 --off", command{op: "fault", faultClient: "10.0.0.0/8", checkOff: true}},
		{"--fault --client=10.0.0.1 -n", command{op: "fault", faultClient: "10.0.0.1", numeric: true}},
		// Issue 26: events.
		{"--events", command{op: "events"}},
		{"--events --kind server_down,conn -t 1.1.1.1:80 --count 3", with(svc, func(c *command) { c.op, c.kinds, c.count = "events", "server_down,conn", 3 })},
		{"--events -f 1", command{op: "events", proto: "fwm", service: "1"}},
		{"-h", command{op: "help"}},
		{"--help", command{op: "help"}},
		// Issue 25: the listing's timeouts and order, the version.
		{"-L --timeout", command{op: "list", timeouts: true}},
		{"--timeout -n", command{op: "list", timeouts: true, numeric: true}},
		{"-L --sort", command{op: "list"}},
		{"-L --nosort -n", command{op: "list", nosort: true, numeric: true}},
		{"-L -n -X --stats", command{op: "list", numeric: true, exact: true, stats: true}},
		{"-v", command{op: "version"}},
		{"--version", command{op: "version"}},
		// Service options.
		{"-A -t 1.1.1.1:http", with(svc, op("add-service"))},
		{"-A -t 1.1.1.1", with(svc, func(c *command) { c.op, c.service = "add-service", "1.1.1.1:0" })},
		{"-A -t [2001:db8::1]:80", with(svc, func(c *command) { c.op, c.service = "add-service", "[2001:db8::1]:80" })},
		{"-A --udp-service=1.1.1.1:53", command{op: "add-service", proto: "udp", service: "1.1.1.1:53"}},
		{"-A -u1.1.1.1:53", command{op: "add-service", proto: "udp", service: "1.1.1.1:53"}},
		{"-A -t 1.1.1.1:80 -srr", with(svc, func(c *command) { c.op, c.sched = "add-service", "rr" })},
		{"-A -t 1.1.1.1:80 --scheduler=wlc", with(svc, func(c *command) { c.op, c.sched = "add-service", "wlc" })},
		{"-A -t 1.1.1.1:80 -p", with(svc, func(c *command) { c.op, c.persist = "add-service", ref(uint32(300)) })},
		{"-A -t 1.1.1.1:80 -p 60", with(svc, func(c *command) { c.op, c.persist = "add-service", ref(uint32(60)) })},
		{"-A -t 1.1.1.1:80 -p60", with(svc, func(c *command) { c.op, c.persist = "add-service", ref(uint32(60)) })},
		{"-A -p -t 1.1.1.1:80", with(svc, func(c *command) { c.op, c.persist = "add-service", ref(uint32(300)) })},
		{"-A -t 1.1.1.1:80 --persistent=0", with(svc, func(c *command) { c.op, c.persist = "add-service", ref(uint32(0)) })},
		{"-A -t 1.1.1.1:80 -p 600 -M 255.255.255.0", with(svc, func(c *command) { c.op, c.persist, c.netmask = "add-service", ref(uint32(600)), "255.255.255.0" })},
		{"-E -t 1.1.1.1:80 --netmask=24", with(svc, func(c *command) { c.op, c.netmask = "edit-service", "24" })},
		{"-A -t 1.1.1.1:80 -j enable", with(svc, func(c *command) { c.op, c.synproxy = "add-service", ref(true) })},
		{"-A -t 1.1.1.1:80 -j 1", with(svc, func(c *command) { c.op, c.synproxy = "add-service", ref(true) })},
		{"-A -t 1.1.1.1:80 --synproxy disable", with(svc, func(c *command) { c.op, c.synproxy = "add-service", ref(false) })},
		{"-A -t 1.1.1.1:80 -j0", with(svc, func(c *command) { c.op, c.synproxy = "add-service", ref(false) })},
		{"-A -t 1.1.1.1:80 --client-address none", with(svc, func(c *command) { c.op, c.client = "add-service", "none" })},
		{"-A -t 1.1.1.1:80 --client-address=toa", with(svc, func(c *command) { c.op, c.client = "add-service", "toa" })},
		{"-A -t 1.1.1.1:80 --client-address proxy-v1", with(svc, func(c *command) { c.op, c.client = "add-service", "proxy-v1" })},
		{"-A -t 1.1.1.1:80 --client-address proxy-v2", with(svc, func(c *command) { c.op, c.client = "add-service", "proxy-v2" })},
		{"-A -t 1.1.1.1:80 --proxy-protocol v1", with(svc, func(c *command) { c.op, c.client = "add-service", "proxy-v1" })},
		{"-A -t 1.1.1.1:80 --proxy-protocol v2", with(svc, func(c *command) { c.op, c.client = "add-service", "proxy-v2" })},
		{"-A -t 1.1.1.1:80 --proxy-protocol disable", with(svc, func(c *command) { c.op, c.client = "add-service", "none" })},
		{"-A -t 1.1.1.1:80 --proxy-protocol none", with(svc, func(c *command) { c.op, c.client = "add-service", "none" })},
		// Both name the client address: the last one given counts.
		{"-A -t 1.1.1.1:80 --client-address toa --proxy-protocol v2", with(svc, func(c *command) { c.op, c.client = "add-service", "proxy-v2" })},
		{"-A -t 1.1.1.1:80 -s sh --sched-flags sh-fallback,sh-port", with(svc, func(c *command) {
			c.op, c.sched, c.schedFlags = "add-service", "sh", &[]string{"sh-fallback", "sh-port"}
		})},
		{"-E -t 1.1.1.1:80 --sched-flags=,", with(svc, func(c *command) { c.op, c.schedFlags = "edit-service", &[]string{} })},
		{"-A -t 1.1.1.1:80 --tcp-timestamps translate", with(svc, func(c *command) { c.op, c.tcpTS = "add-service", "translate" })},
		{"-A -t 1.1.1.1:80 --tcp-timestamps=remove", with(svc, func(c *command) { c.op, c.tcpTS = "add-service", "remove" })},
		{"-A -t 1.1.1.1:80 -V 1", with(svc, func(c *command) { c.op, c.estTO = "add-service", 1 })},
		{"-A -t 1.1.1.1:80 --est-timeout=4294967295", with(svc, func(c *command) { c.op, c.estTO = "add-service", 4294967295 })},
		{"-E -t 1.1.1.1:80 --source-cps 0 --source-conns 4294967295 --half-open=7", with(svc, func(c *command) {
			c.op, c.cps, c.srcConns, c.halfOpen = "edit-service", ref(uint32(0)), ref(uint32(4294967295)), ref(uint32(7))
		})},
		// Real server options.
		{"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -b", with(svc, func(c *command) { c.op, c.real, c.forward = "add-server", "2.2.2.2:80", "fullnat" })},
		{"-a -t 1.1.1.1:80 -r 2.2.2.2:80 --fullnat -w3", with(svc, func(c *command) { c.op, c.real, c.forward, c.weight = "add-server", "2.2.2.2:80", "fullnat", ref(3) })},
		{"-a -t [2001:db8::1]:80 -r fd00::2", with(svc, func(c *command) { c.op, c.service, c.real = "add-server", "[2001:db8::1]:80", "[fd00::2]:0" })},
		// Listing and the socket.
		{"-L -n --socket /tmp/t.sock", command{op: "list", numeric: true, socket: "/tmp/t.sock"}},
		{"--socket=/tmp/t.sock -Z", command{op: "zero", socket: "/tmp/t.sock"}},
	}
)

func with(c command, f func(*command)) command { f(&c); return c }

func op(op string) func(*command) { return func(c *command) { c.op = op } }

// Every option parses to the command it means.
func TestParseEveryOption(t *testing.T) {
	for _, c := range everyOption {
		got, err := parse(words(c.line))
		if err != nil {
			t.Errorf("%q: %v", c.line, err)
			continue
		}
		if !reflect.DeepEqual(*got, c.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", c.line, *got, c.want)
		}
	}
}

// everyRefusal is every refusal of the grammar, word for word: ipvsadm's
// wording where ipvsadm has one, and which of two mistakes is named when a
// line has both.
var everyRefusal = []struct{ line, want string }{
	// Names it does not know.
	{"-Y", "unknown option -Y"},
	{"--nope", "unknown option --nope"},
	{"--", "unknown option --"},
	{"list", "unknown option list"},
	{"-lx", "unknown option -lx"}, // -x is not bundleable: the word stays whole
	{"-nt", "unknown option -nt"},
	{"-At", "unknown option t"}, // -A's tail is read as its own word
	{"-A1 -t 1.1.1.1:80", "unknown option 1"},
	{"--numeric=x", "unknown option x"}, // a flag's =value is the next word
	{"--add-service=x", "unknown option x"},
	{"-A -t 1.1.1.1:80 -s rr wrr", "unknown option wrr"},
	{"--set 1 2 3 4", "unknown option 4"},
	// Two commands, or one option twice.
	{"-A -D -t 1.1.1.1:80", "multiple commands specified"},
	{"-ZCRS", "multiple commands specified"},
	{"-l -L", "multiple commands specified"},
	{"-L --list", "multiple commands specified"},
	{"-h --help", "multiple commands specified"},
	{"--set 1 2 3 --set 1 2 3", "multiple commands specified"},
	{"--capture a -t 1.1.1.1:80 --capture b", "multiple commands specified"},
	{"-A --capture", "multiple commands specified"}, // the command before its value
	{"--capture -A", "option --capture requires an argument"},
	{"-A -t 1.1.1.1:80 --persistent -", "unknown option -"}, // -p's value is a number or nothing
	{"-A --set 1 2 3", "multiple commands specified"},
	{"-A -t 1.1.1.1:80 --bgp", "multiple commands specified"},
	{"--bgp --bgp", "multiple '--bgp' options specified"},
	{"-n -n", "multiple '--numeric' options specified"},
	{"-lnn", "multiple '--numeric' options specified"},
	{"-c --connection", "multiple '--connection' options specified"},
	{"--stats --stats", "multiple '--stats' options specified"},
	{"-A -t 1.1.1.1:80 -s rr --scheduler wrr", "multiple '--scheduler' options specified"},
	{"-A -t 1.1.1.1:80 -p -p", "multiple '--persistent' options specified"},
	{"-A -t 1.1.1.1:80 -j 1 -j 0", "multiple '--synproxy' options specified"},
	{"-A -t 1.1.1.1:80 -V 1 -V 2", "multiple '--est-timeout' options specified"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -r 3.3.3.3:80", "multiple '--real-server' options specified"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -b -b", "multiple '--fullnat' options specified"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -w 1 -w 2", "multiple '--weight' options specified"},
	{"-P -t 1.1.1.1:80 -z 10.0.0.9 -z 10.0.0.8", "multiple '--laddr' options specified"},
	{"-L --socket a --socket b", "multiple '--socket' options specified"},
	{"--capture a -t 1.1.1.1:80 --count 1 --count 2", "multiple '--count' options specified"},
	{"-E -t 1.1.1.1:80 --half-open 1 --half-open 2", "multiple '--half-open' options specified"},
	{"--drain --wait --wait", "multiple '--wait' options specified"},
	{"-A -t 1.1.1.1:80 --client-address toa --client-address none", "multiple '--client-address' options specified"},
	// Two services, two sources: the second is refused before its
	// value is read; the same list option twice is an option twice.
	{"-A -t 1.1.1.1:80 -t 1.1.1.2:80", "multiple service addresses specified"},
	{"-A -t 1.1.1.1:80 -u 1.1.1.1:53", "multiple service addresses specified"},
	{"-A -t 1.1.1.1:80 -t", "multiple service addresses specified"},
	{"--add-blklst -t 1.1.1.1:80 -k 1.0.0.0/8 -k 2.0.0.0/8", "multiple '--blklst-address' options specified"},
	{"--add-blklst -t 1.1.1.1:80 -k 1.0.0.0/8 --whtlst-address 2.0.0.0/8", "multiple source addresses specified"},
	{"--add-blklst -t 1.1.1.1:80 -k 1.0.0.0/8 --whtlst-address", "multiple source addresses specified"},
	// A value missing, empty, or looking like the next option.
	{"-A -t", "option -t requires an argument"},
	{"-A --tcp-service -n", "option --tcp-service requires an argument"},
	{"-A -u", "option -u requires an argument"},
	{"-A -t 1.1.1.1:80 -s", "option -s requires an argument"},
	{"-A -t 1.1.1.1:80 --scheduler ''", "option --scheduler requires an argument"},
	{"-A -t 1.1.1.1:80 --scheduler=", "option --scheduler requires an argument"},
	{"-a -t 1.1.1.1:80 -r", "option -r requires an argument"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -w -1", "option -w requires an argument"},
	{"-P -t 1.1.1.1:80 -z", "option -z requires an argument"},
	{"-A -t 1.1.1.1:80 -j", "option -j requires an argument"},
	{"-A -t 1.1.1.1:80 --client-address", "option --client-address requires an argument"},
	{"-A -t 1.1.1.1:80 --proxy-protocol", "option --proxy-protocol requires an argument"},
	{"-A -t 1.1.1.1:80 --tcp-timestamps", "option --tcp-timestamps requires an argument"},
	{"-A -t 1.1.1.1:80 --sched-flags", "option --sched-flags requires an argument"},
	{"-A -t 1.1.1.1:80 -V", "option -V requires an argument"},
	{"-E -t 1.1.1.1:80 --source-cps", "option --source-cps requires an argument"},
	{"-E -t 1.1.1.1:80 --source-conns -1", "option --source-conns requires an argument"},
	{"-E -t 1.1.1.1:80 --half-open", "option --half-open requires an argument"},
	{"--add-blklst -t 1.1.1.1:80 -k", "option -k requires an argument"},
	{"--add-whtlst -t 1.1.1.1:80 --whtlst-address", "option --whtlst-address requires an argument"},
	{"--capture", "option --capture requires an argument"},
	{"--capture=", "option --capture requires an argument"},
	{"--capture -t 1.1.1.1:80", "option --capture requires an argument"},
	{"--capture x -t 1.1.1.1:80 --count", "option --count requires an argument"},
	{"-L --socket", "option --socket requires an argument"},
	{"--drain --wait --timeout", "option --timeout requires an argument"},
	{"--drain --wait --timeout=-1s", "option --timeout requires an argument"},
	{"--set", "--set needs three values: tcp tcpfin udp"},
	{"--set 1 2", "--set needs three values: tcp tcpfin udp"},
	{"--set 1 -2 3", "--set needs three values: tcp tcpfin udp"},
	// Values it refuses; with --set, the bad value before the missing one.
	{"--set x", `illegal timeout "x" for --set`},
	{"--set 1 x", `illegal timeout "x" for --set`},
	{"--set 1 2 4294967296", `illegal timeout "4294967296" for --set`},
	{"-A -t 1.1.1.1:80 -p ''", `illegal persistence timeout ""`},
	{"-A -t 1.1.1.1:80 -p x", `illegal persistence timeout "x"`},
	{"-A -t 1.1.1.1:80 -p 4294967296", `illegal persistence timeout "4294967296"`},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -w x", "Illegal weight specified"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -w 65536", "Illegal weight specified"},
	{"-A -t 1.1.1.1:80 -j maybe", "-j takes enable or disable"},
	{"-A -t 1.1.1.1:80 --synproxy on", "-j takes enable or disable"},
	{"-A -t 1.1.1.1:80 --client-address uoa", "--client-address takes none, toa, proxy-v1 or proxy-v2"},
	{"-A -t 1.1.1.1:80 --proxy-protocol v2-insecure", "--proxy-protocol takes v1, v2 or disable (tapvs never trusts a client's own header: no insecure modes)"},
	{"-A -t 1.1.1.1:80 --tcp-timestamps strip", "--tcp-timestamps takes translate or remove"},
	{"-A -t 1.1.1.1:80 -V 0", `illegal ESTABLISHED timeout "0"`},
	{"-A -t 1.1.1.1:80 --est-timeout x", `illegal ESTABLISHED timeout "x"`},
	{"-E -t 1.1.1.1:80 --source-cps x", `illegal --source-cps "x"`},
	{"-E -t 1.1.1.1:80 --source-conns 4294967296", `illegal --source-conns "4294967296"`},
	{"-E -t 1.1.1.1:80 --half-open=1.5", `illegal --half-open "1.5"`},
	{"--capture x -t 1.1.1.1:80 --count 0", `illegal count "0"`},
	{"--capture x -t 1.1.1.1:80 --count x", `illegal count "x"`},
	{"--drain --wait --timeout 5", `illegal --timeout "5": a duration such as 90s or 5m`},
	{"--drain --wait --timeout 0s", `illegal --timeout "0s": a duration such as 90s or 5m`},
	{"-A -t 1.1.1.1:99999", "Illegal address or port: 1.1.1.1:99999"},
	{"-A -t [fe80::1%eth0]:80", "Illegal address or port: [fe80::1%eth0]:80"},
	{"-A -u host:53", "Illegal address or port: host:53"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2:nosuchport", "Illegal address or port: 2.2.2.2:nosuchport"},
	{"-P -t 1.1.1.1:80 -z fe80::1%eth0", "Illegal local address: fe80::1%eth0"},
	// What tapvs does not do, refused by name as typed.
	// Issue 25: -f names a selector of the configuration (marks:).
	{"-A -f 0", "invalid fwmark value `0' specified"},
	{"-A --fwmark-service 4294967296", "invalid fwmark value `4294967296' specified"},
	{"-A -f x", "invalid fwmark value `x' specified"},
	{"-A -f 1 -t 1.1.1.1:80", "multiple service addresses specified"},
	{"-A -t 1.1.1.1:80 -6", "-6 belongs to -f (fwmark uses IPv6)"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -g", "-g: tapvs forwards with FULLNAT only (-b)"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -bg", "--gatewaying: tapvs forwards with FULLNAT only (-b)"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 --ipip", "--ipip: tapvs forwards with FULLNAT only (-b)"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -i", "-i: tapvs forwards with FULLNAT only (-b)"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 --gatewaying", "--gatewaying: tapvs forwards with FULLNAT only (-b)"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -m", "-m: tapvs forwards with FULLNAT only (-b)"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 --masquerading", "--masquerading: tapvs forwards with FULLNAT only (-b)"},
	// The thresholds: ipvsadm's range (0 to INT_MAX) and messages; a
	// service's or a deletion's are refused.
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -x -1", "option -x requires an argument"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -x x", "illegal u_threshold specified"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -x 2147483648", "illegal u_threshold specified"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 --l-threshold=1e3", "illegal l_threshold specified"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -y 1 -y 2", "multiple '--l-threshold' options specified"},
	{"-d -t 1.1.1.1:80 -r 2.2.2.2 -x 1", "Illegal option for delete-server: -x and -y belong to -a and -e"},
	{"-E -t 1.1.1.1:80 -y 1", "Illegal option for edit-service: -r, -w, -x, -y, -b and -z belong to real servers and local addresses"},
	{"--health -t 1.1.1.1:80 -x 1", "Illegal option for health: it takes -t|-u|-f, --check, --off and -n only"},
	{"--bgp --thresholds", "Illegal option for bgp: it takes -L and -n only"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -M 255.0.0.0", "Illegal option for add-server: -s, -p, -j, -V and -z belong to services"},
	{"-D -t 1.1.1.1:80 -M 255.0.0.0", "Illegal option for delete-service"},
	// What each command needs and takes (check, after the words).
	{"-A", "the add-service command needs a service (-t, -u or -f)"},
	{"--capture x", "the capture command needs a service (-t, -u or -f)"},
	{"-d -t 1.1.1.1:80", "the delete-server command needs a real server (-r)"},
	{"-Q -t 1.1.1.1:80", "the del-laddr command needs a local address (-z)"},
	{"--del-whtlst -t 1.1.1.1:80", "the del-whtlst command needs a source address or prefix (-k)"},
	{"-A -t 1.1.1.1:80 -w 1", "Illegal option for add-service: -r, -w, -x, -y, -b and -z belong to real servers and local addresses"},
	{"-C -s rr", "Illegal option for clear"},
	{"-a -t 1.1.1.1:80 -r 2.2.2.2 -p", "Illegal option for add-server: -s, -p, -j, -V and -z belong to services"},
	{"-L -k 1.0.0.0/8", "Illegal option for list: -k belongs to --add/--del-blklst and --add/--del-whtlst"},
	{"--drain -c", "Illegal option for drain: it takes --wait and --timeout only"},
	{"--undrain --wait", "--wait belongs to --drain, and --timeout to --drain --wait"},
	// Issue 25: --health.
	{"--health", "the health command needs a service (-t, -u or -f)"},
	{"-L --kind conn", "Illegal option for list: --kind belongs to --events"},
	{"--events -w 1", "Illegal option for events: it takes --kind, -t|-u|-f and --count only"},
	{"--events -r 1.1.1.1:80", "Illegal option for events: it takes --kind, -t|-u|-f and --count only"},
	{"--health -t 1.1.1.1:80 --check type=tcp --off", "--health takes --check or --off, not both"},
	{"-L --off", "Illegal option for list: --check and --off belong to --health"},
	{"-A -t 1.1.1.1:80 --check type=tcp", "Illegal option for add-service: --check and --off belong to --health"},
	{"--health -t 1.1.1.1:80 -w 1", "Illegal option for health: it takes -t|-u|-f, --check, --off and -n only"},
	{"--health -t 1.1.1.1:80 --check rise=x", `--check: rise: "x" is not a number`},
	{"--health -t 1.1.1.1:80 --check type=ssl,verify=maybe", `--check: verify: "maybe" is not true or false`},
	{"--health -t 1.1.1.1:80 --check type=http,path=/", "--check: unknown path (the configuration file's health_check: names: type, port, interval, timeout, rise, fall, http_path, http_status, http_body_sha256, on_failure, connect_timeout, retry, delay_before_retry, warmup, virtualhost, server_name, verify, ca_file, script, misc_dynamic, payload, require_reply, dns_name, dns_type, helo_name)"},
	{"--health -t 1.1.1.1:80 --check type", `--check: "type" is not key=value (type=http,http_path=/healthz,rise=2,fall=3)`},
	{"--health -t 1.1.1.1:80 --check rise=1,rise=2", "--check: rise given twice"},
	// The commands of their own refuse every rule and listing option
	// (parse.go's ruleOptions, listOptions).
	{"--health -t 1.1.1.1:80 --sched-flags sh-port", "Illegal option for health: it takes -t|-u|-f, --check, --off and -n only"},
	{"--events -M 255.255.255.0", "Illegal option for events: it takes --kind, -t|-u|-f and --count only"},
	{"--events --persistent-conn", "Illegal option for events: it takes --kind, -t|-u|-f and --count only"},
	{"--fault -r 2.2.2.2:80 -y 1 --off", "Illegal option for fault: it takes -t|-u|-f, -r, --client, --with, --off and -n only"},
	{"--drain-status -z 1.2.3.4", "Illegal option for drain-status: it takes no option"},
	// Issue 26: --fault.
	{"--fault -t 1.1.1.1:80 -r 2.2.2.2:80 --with blackhole=true", "--fault names one target: a service (-t|-u|-f), a real server (-r) or clients (--client)"},
	{"--fault -t 1.1.1.1:80 --client 10.0.0.0/8 --off", "--fault names one target: a service (-t|-u|-f), a real server (-r) or clients (--client)"},
	{"--fault --with blackhole=true", "--fault --with needs a target: a service (-t|-u|-f), a real server (-r) or clients (--client)"},
	{"--fault -t 1.1.1.1:80 --with blackhole=true --off", "--fault takes --with or --off, not both"},
	{"--fault -t 1.1.1.1:80 -s rr", "Illegal option for fault: it takes -t|-u|-f, -r, --client, --with, --off and -n only"},
	{"--fault -t 1.1.1.1:80 --check type=tcp", "Illegal option for fault: --check and --off belong to --health"},
	{"-L --with blackhole=true", "Illegal option for list: --with and --client belong to --fault"},
	{"-A -t 1.1.1.1:80 --client 10.0.0.0/8", "Illegal option for add-service: --with and --client belong to --fault"},
	{"--fault -t 1.1.1.1:80 --with colour=red", "--with: unknown colour (the file's faults: names: direction, blackhole, loss, every, syn, drop_fin, latency, jitter, rate, duplicate, reorder, reset_bytes, reset_after)"},
	{"--fault -t 1.1.1.1:80 --with drop_fin=maybe", `--with: drop_fin: "maybe" is not true or false`},
	{"--fault -t 1.1.1.1:80 --with duplicate=often", `--with: duplicate: "often" is not a number`},
	{"--fault -t 1.1.1.1:80 --with reorder=often", `--with: reorder: "often" is not a number`},
	{"--fault -t 1.1.1.1:80 --with reset_bytes=-1", `--with: reset_bytes: "-1" is not a whole number (0 or more)`},
	{"--fault -t 1.1.1.1:80 --with reset_bytes=1.5", `--with: reset_bytes: "1.5" is not a whole number (0 or more)`},
	{"--fault -t 1.1.1.1:80 --with latency=1s,latency=2s", "--with: latency given twice"},
	{"--fault -t 1.1.1.1:80 --with loss=lots", `--with: loss: "lots" is not a number`},
	{"--fault -t 1.1.1.1:80 --with blackhole=maybe", `--with: blackhole: "maybe" is not true or false`},
	{"--fault -t 1.1.1.1:80 --with every=x", `--with: every: "x" is not a number`},
	{"--fault -t 1.1.1.1:80 --with loss", `--with: "loss" is not key=value (blackhole=true, loss=0.05, every=10, syn=refuse, direction=to_client)`},
	{"--fault -t 1.1.1.1:80 --with loss=0.1,loss=0.2", "--with: loss given twice"},
	// Issue 25: -L --timeout lists only the timeouts; --nosort is -L's.
	{"-L --timeout -c", "options conflicts in the list command"},
	{"-L --timeout --stats", "options conflicts in the list command"},
	{"-L --rate --timeout", "options conflicts in the list command"},
	{"-L --timeout -t 1.1.1.1:80", "options conflicts in the list command"},
	{"-A -t 1.1.1.1:80 --timeout", "--timeout without a duration belongs to -L (-L --timeout)"},
	{"-L --timeout 5", `illegal --timeout "5": a duration such as 90s or 5m`},
	{"-S --nosort", "Illegal option for save: --nosort belongs to -L"},
	{"-v -v", "multiple commands specified"},
}

func TestParseEveryRefusal(t *testing.T) {
	for _, c := range everyRefusal {
		_, err := parse(words(c.line))
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: %v, want %q", c.line, err, c.want)
		}
	}
}

// -h prints the help word for word (testdata/help.txt is its copy).
func TestHelpText(t *testing.T) {
	want, err := os.ReadFile("testdata/help.txt")
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"-h"}, nil, &out, &errOut); code != 0 || out.String() != string(want) || errOut.Len() != 0 {
		t.Fatalf("-h: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errOut.String(), out.String(), want)
	}
}

// The table's rows hold together: each name names one row, a bundled
// letter takes no value, only a one-value option has a default, every row
// does something.
func TestOptionTable(t *testing.T) {
	n := 0
	for _, rows := range [][]option{commands, options} {
		for _, o := range rows {
			n += 1 + len(o.short)
			if !strings.HasPrefix(o.long, "--") || o.op != "" && o.op != o.long[2:] {
				t.Errorf("%s: long name or command %q", o.long, o.op)
			}
			if o.bundle && (o.short == "" || o.meta != "") {
				t.Errorf("%s: bundled, but without a short name or with a value", o.long)
			}
			if o.def != "" && len(strings.Fields(o.meta)) != 1 {
				t.Errorf("%s: a default for %q", o.long, o.meta)
			}
			if o.set == nil && (o.op == "" || o.meta != "") {
				t.Errorf("%s: nothing reads it", o.long)
			}
			if o.again && o.kin == "" {
				t.Errorf("%s: named twice with nothing to refuse the second", o.long)
			}
		}
	}
	if n != len(byName) {
		t.Fatalf("%d names, %d rows by name: a name is in two rows", n, len(byName))
	}
}

// Each name of each row is in a line of everyOption or everyRefusal, as a
// word of its own (-n, --numeric) or given its value (--numeric=x): a new
// row comes with its test lines.
func TestEveryNameTested(t *testing.T) {
	tested := map[string]bool{}
	for _, line := range allLines() {
		for _, w := range words(line) {
			name, _, _ := strings.Cut(w, "=")
			tested[name] = true
		}
	}
	for name := range byName {
		if !tested[name] {
			t.Errorf("no test line names %s", name)
		}
	}
}

func allLines() []string {
	var lines []string
	for _, c := range everyOption {
		lines = append(lines, c.line)
	}
	for _, c := range everyRefusal {
		lines = append(lines, c.line)
	}
	return lines
}

// An option that needs a value refuses a missing one by the name typed;
// one with a default takes it.
func TestEveryValueMissing(t *testing.T) {
	for name, o := range byName {
		n := len(strings.Fields(o.meta))
		if n == 0 || o.set == nil {
			continue
		}
		_, err := parse([]string{name})
		want := "option " + name + " requires an argument"
		switch {
		case n > 1:
			want = o.long + " needs " + spelled(n) + " values: " + o.meta
		case o.def != "":
			if err != nil && strings.Contains(err.Error(), "argument") {
				t.Errorf("%s alone: %v, want its default %s", name, err, o.def)
			}
			continue
		case o.bare != "":
			if err != nil {
				t.Errorf("%s alone: %v, want it bare", name, err)
			}
			continue
		}
		if err == nil || err.Error() != want {
			t.Errorf("%s alone: %v, want %q", name, err, want)
		}
	}
}
