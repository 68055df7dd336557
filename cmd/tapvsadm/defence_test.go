package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

func TestParseLists(t *testing.T) {
	for args, want := range map[string]api.Op{
		"--add-blklst -t 172.25.254.100:80 -k 10.0.0.0/8":                 {Op: "add-deny", Prefix: "10.0.0.0/8"},
		"--del-blklst -t 172.25.254.100:80 --blklst-address=192.0.2.7":    {Op: "delete-deny", Prefix: "192.0.2.7"},
		"--add-whtlst -t 172.25.254.100:80 -k 172.25.254.0/24":            {Op: "add-allow", Prefix: "172.25.254.0/24"},
		"--del-whtlst -t 172.25.254.100:80 --whtlst-address 172.25.254.1": {Op: "delete-allow", Prefix: "172.25.254.1"},
	} {
		c, err := parse(strings.Fields(args))
		if err != nil {
			t.Fatalf("%s: %v", args, err)
		}
		op, ok, err := opOf(c)
		if err != nil || !ok || op.Op != want.Op || op.Prefix != want.Prefix || op.Service == nil || op.Service.Addr != "172.25.254.100:80" {
			t.Errorf("%s: %+v %v %v", args, op, ok, err)
		}
	}
	c, err := parse(strings.Fields("-E -t 172.25.254.100:80 --source-conns 2 --half-open 100"))
	if err != nil {
		t.Fatal(err)
	}
	op, _, _ := opOf(c)
	if l := op.Service.Limits; l == nil || *l.SourceConns != 2 || *l.HalfOpen != 100 || l.SourceCPS != nil {
		t.Fatalf("limits %+v", op.Service.Limits)
	}
	for args, want := range map[string]string{
		"--add-blklst -t 1.1.1.1:80":                      "needs a source address or prefix (-k)",
		"--add-blklst -k 10.0.0.0/8":                      "needs a service",
		"--add-blklst -t 1.1.1.1:80 -k 10.0.0.0/8 -k 1.2": "multiple",
		"-A -t 1.1.1.1:80 -k 10.0.0.0/8":                  "Illegal option for add-service",
		"--get-blklst -k 10.0.0.0/8":                      "Illegal option",
		"--add-whtlst -t 1.1.1.1:80 -k 1.0.0.0/8 -s rr":   "Illegal option",
		"-E -t 1.1.1.1:80 --source-cps -1":                "requires an argument",
		"-E -t 1.1.1.1:80 --source-cps 5000000000":        "illegal --source-cps",
		"-a -t 1.1.1.1:80 -r 2.2.2.2:80 --half-open 5":    "Illegal option",
	} {
		if _, err := parse(strings.Fields(args)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}

func TestPrintListsAndRules(t *testing.T) {
	svcs := []api.Service{{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, Scheduler: "rr",
		Deny: []string{"10.0.0.0/8"}, Allow: []string{"172.25.254.0/24"}, Limits: api.LimitsView{SourceConns: 2}}}
	var b bytes.Buffer
	if err := printLists(&b, svcs, &command{op: "get-blklst"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "BLACKLIST") || !strings.Contains(b.String(), "TCP   172.25.254.100:80      10.0.0.0/8") {
		t.Fatalf("get-blklst:\n%s", b.String())
	}
	b.Reset()
	printRules(&b, svcs, api.Timeouts{}, &command{})
	want := "-A -t 172.25.254.100:80 -s rr -j disable --source-cps 0 --source-conns 2 --half-open 0\n" +
		"--add-blklst -t 172.25.254.100:80 -k 10.0.0.0/8\n--add-whtlst -t 172.25.254.100:80 -k 172.25.254.0/24\n"
	if b.String() != want {
		t.Fatalf("-S:\n%s\nwant\n%s", b.String(), want)
	}
	// What -S writes, -R reads.
	for _, line := range strings.Split(strings.TrimSpace(want), "\n") {
		c, err := parse(strings.Fields(line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if _, ok, err := opOf(c); !ok || err != nil {
			t.Fatalf("%s: not a rule", line)
		}
	}
}
