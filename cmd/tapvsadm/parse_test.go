package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

func TestParseIpvsadmGrammar(t *testing.T) {
	cases := []struct {
		args string
		want command
	}{
		{"-ln", command{op: "list", numeric: true}},
		{"-lnc", command{op: "list", numeric: true, conns: true}},
		{"-L -n --stats --exact", command{op: "list", numeric: true, stats: true, exact: true}},
		{"", command{op: "list"}},
		{"-A -t 172.25.254.100:80 -s wrr", command{op: "add-service", proto: "tcp", service: "172.25.254.100:80", sched: "wrr"}},
		{"-A -t 172.25.254.100:http -s wrr", command{op: "add-service", proto: "tcp", service: "172.25.254.100:80", sched: "wrr"}},
		{"-A -t172.25.254.100:80", command{op: "add-service", proto: "tcp", service: "172.25.254.100:80"}},
		{"--add-service --udp-service=10.0.0.1:53", command{op: "add-service", proto: "udp", service: "10.0.0.1:53"}},
		{"-a -t 172.25.254.100:80 -r 172.25.84.2:80 -b", command{op: "add-server", proto: "tcp", service: "172.25.254.100:80", real: "172.25.84.2:80", forward: "fullnat"}},
		{"-a -t 172.25.254.100:80 -r 172.25.84.2 -b", command{op: "add-server", proto: "tcp", service: "172.25.254.100:80", real: "172.25.84.2:0", forward: "fullnat"}},
		{"-P -t 172.25.254.100:80 -z 127.0.0.1:80", command{op: "add-laddr", proto: "tcp", service: "172.25.254.100:80", laddr: "127.0.0.1"}},
		{"-G", command{op: "get-laddr"}},
		{"--set 900 120 300", command{op: "set", set: [3]uint32{900, 120, 300}}},
		{"-Sn", command{op: "save", numeric: true}},
	}
	for _, c := range cases {
		got, err := parse(strings.Fields(c.args))
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		got.weight, got.persist, got.synproxy = nil, nil, nil
		if *got != c.want {
			t.Errorf("%q:\n got %+v\nwant %+v", c.args, *got, c.want)
		}
	}
	c, err := parse(strings.Fields("-E -t 1.1.1.1:80 -p -j disable -w 5 -r 2.2.2.2:80"))
	if err == nil || !strings.Contains(err.Error(), "Illegal option") {
		t.Fatalf("-E with -r parsed: %+v", c)
	}
	c, err = parse(strings.Fields("-E -t 1.1.1.1:80 -p -j disable"))
	if err != nil || *c.persist != 300 || *c.synproxy {
		t.Fatalf("-p without a timeout: %+v %v", c, err)
	}
	c, err = parse(strings.Fields("-A -t 1.1.1.1:80 -p 60"))
	if err != nil || *c.persist != 60 {
		t.Fatalf("-p 60: %+v %v", c, err)
	}
}

func TestParseRefusals(t *testing.T) {
	for args, want := range map[string]string{
		"-A -D -t 1.1.1.1:80":              "multiple commands",
		"-a -t 1.1.1.1:80":                 "needs a real server",
		"-A":                               "needs a service",
		"-A -t 1.1.1.1:80 -u 1.1.1.1:53":   "multiple service addresses",
		"-a -t 1.1.1.1:80 -r 2.2.2.2 -w x": "Illegal weight",
		"-A -f 0":                          "invalid fwmark value `0' specified",
		"--set 1 2":                        "three values",
		"-Y":                               "unknown option",
		"-A -t 1.1.1.1:nosuchservice":      "Illegal address or port",
		"-A -t 1.1.1.1:80 -j maybe":        "enable or disable",
		// Issue 9, item 3: a second -r replaced the first; --capture took
		// -t for its file name.
		"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -r 3.3.3.3:80": "multiple '--real-server' options specified",
		"-A -t 1.1.1.1:80 -s rr -s wrr":                "multiple '--scheduler' options specified",
		"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -w 1 -w 2":     "multiple '--weight' options specified",
		"--capture -t 1.1.1.1:80":                      "option --capture requires an argument",
		"-P -t 1.1.1.1:80 -z":                          "option -z requires an argument",
		"-l -l":                                        "multiple commands specified",
		"-A -t 1.1.1.1:80 -A":                          "multiple commands specified",
	} {
		_, err := parse(strings.Fields(args))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", args, err, want)
		}
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-Y"}, nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "Try `ipvsadm -h'") {
		t.Fatalf("exit %d, %q", code, errOut.String())
	}
	if code := run([]string{"-h"}, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "--add-laddr") {
		t.Fatalf("-h: exit %d", code)
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"-ln", "--socket", "/nonexistent/tapvs.sock"}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "Is tapvs running") {
		t.Fatalf("no daemon: exit %d, %q", code, errOut.String())
	}
}

func TestLargeNumbers(t *testing.T) {
	// ipvsadm's print_largenum: "%9llu" below 10^8, then K below 10^9,
	// M below 10^11, G below 10^14, T; every boundary on both sides.
	for n, want := range map[uint64]string{0: "        0", 99999999: " 99999999", 100000000: "  100000K",
		999999999: "  999999K", 1000000000: "    1000M", 99999999999: "   99999M", 100000000000: "     100G",
		123456789012: "     123G", 99999999999999: "   99999G", 100000000000000: "     100T",
		18446744073709551615: "18446744T"} {
		if got := largenum(n, false); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
	// --exact: "%*llu", 9 wide, or one more than its digits.
	for n, want := range map[uint64]string{0: "        0", 12345678: " 12345678", 123456789: " 123456789", 123456789012: " 123456789012"} {
		if got := largenum(n, true); got != want {
			t.Errorf("exact %d: %q, want %q", n, got, want)
		}
	}
}

func TestListLayout(t *testing.T) {
	var b bytes.Buffer
	svcs := []api.Service{{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, Scheduler: "wrr", Synproxy: true,
		Dests: []api.Dest{{Addr: "172.25.84.2:80", Forward: "FullNat", Weight: 1, ActiveConn: 3, InActConn: 12}}}}
	printList(&b, api.Info{Version: "1.2.1", Size: 4194304}, svcs, &command{})
	want := "IP Virtual Server version 1.2.1 (size=4194304)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  172.25.254.100:80 wrr synproxy\n" +
		"  -> 172.25.84.2:80               FullNat 1      3          12        \n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// Forwarding methods other than FULLNAT are refused as
// ipvsadm refuses an option: one line naming it, its usage hint, exit 2,
// and the daemon never asked (the socket here does not exist: reaching for
// it would exit 1 with "Is tapvs running").
func TestUnsupportedOptionsRefusedBeforeTheDaemon(t *testing.T) {
	for args, want := range map[string]string{
		"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -g":              "-g: tapvs forwards with FULLNAT only (-b)",
		"-a -t 1.1.1.1:80 -r 2.2.2.2:80 --gatewaying":    "--gatewaying: tapvs forwards with FULLNAT only (-b)",
		"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -i":              "-i: tapvs forwards with FULLNAT only (-b)",
		"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -m":              "-m: tapvs forwards with FULLNAT only (-b)",
		"-e -t 1.1.1.1:80 -r 2.2.2.2:80 -g -w 2":         "-g: tapvs forwards with FULLNAT only (-b)",
		"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -x 1e2":          "illegal u_threshold specified",
		"-e -t 1.1.1.1:80 -r 2.2.2.2:80 --l-threshold y": "illegal l_threshold specified",
		"-a -t 1.1.1.1:80 -r 2.2.2.2:80 -M 255.0.0.0":    "Illegal option for add-server: -s, -p, -j, -V and -z belong to services",
	} {
		var out, errOut bytes.Buffer
		code := run(append(strings.Fields(args), "--socket", "/nonexistent/tapvs.sock"), nil, &out, &errOut)
		lines := strings.Split(strings.TrimRight(errOut.String(), "\n"), "\n")
		if code != 2 || len(lines) != 2 || lines[0] != want || lines[1] != "Try `ipvsadm -h' or 'ipvsadm --help' for more information." || out.Len() != 0 {
			t.Errorf("ipvsadm %s: exit %d, stderr %q, stdout %q; want exit 2 and %q with the usage hint", args, code, errOut.String(), out.String(), want)
		}
	}
}

// -G prints each LIP's conflicts, connections (the ports it holds) and
// exhausted allocations, each from its own field, in Alibaba's columns with
// EXHAUSTED after them.
func TestLaddrLayout(t *testing.T) {
	var b bytes.Buffer
	svcs := []api.Service{
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, LocalAddrs: []api.LocalAddr{
			{Addr: "172.25.84.10", Conns: 7, Conflicts: 3, Exhausted: 2},
			{Addr: "172.25.84.11", Conns: 5, Conflicts: 0, Exhausted: 11}}},
		{ServiceKey: api.ServiceKey{Protocol: "udp", Addr: "172.25.254.100:53"}},
	}
	if err := printLaddrs(&b, svcs, &command{}); err != nil {
		t.Fatal(err)
	}
	want := "VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS      EXHAUSTED \n" +
		"172.25.254.100:80    2        172.25.84.10         3          7          2         \n" +
		"                              172.25.84.11         0          5          11        \n" +
		"172.25.254.100:53    0       \n"
	if b.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", b.String(), want)
	}
}

// ipvsadm's message for a service that does not exist depends on the
// command (ipvs_strerror's table): the service's own commands say "No such
// service", those on what it holds "Service not defined".
func TestNoSuchServiceByCommand(t *testing.T) {
	for args, want := range map[string]string{
		"-E -t 1.2.3.4:80 -s rr":                "No such service",
		"-D -t 1.2.3.4:80":                      "No such service",
		"-Z -t 1.2.3.4:80":                      "No such service",
		"-L -n -t 1.2.3.4:80":                   "No such service",
		"-G -t 1.2.3.4:80":                      "No such service",
		"-a -t 1.2.3.4:80 -r 10.0.0.1:80":       "Service not defined",
		"-e -t 1.2.3.4:80 -r 10.0.0.1:80 -w 2":  "Service not defined",
		"-d -t 1.2.3.4:80 -r 10.0.0.1:80":       "Service not defined",
		"-P -t 1.2.3.4:80 -z 10.0.0.9":          "Service not defined",
		"-Q -t 1.2.3.4:80 -z 10.0.0.9":          "Service not defined",
		"--add-blklst -t 1.2.3.4:80 -k 1.0.0.0": "Service not defined",
	} {
		c, err := parse(strings.Fields(args))
		if err != nil {
			t.Fatalf("%s: %v", args, err)
		}
		if got := message(&api.Error{Code: api.CodeNoService}, c.op); got != want {
			t.Errorf("%s (%s): %q, want %q", args, c.op, got, want)
		}
	}
}
