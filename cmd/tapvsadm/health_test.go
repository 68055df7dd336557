package main

import (
	"bytes"
	"testing"

	"github.com/google/shlex"

	"github.com/tapvs/tapvs/control/api"
)

// --health's listing, and its check written as --check reads it back
// (shell-quoted where a value needs it).
func TestHealthListing(t *testing.T) {
	hc := api.HealthCheck{Type: "misc", Interval: "2s", Rise: 2, Fall: 3, Script: []string{"/usr/local/bin/check", "--name", "a b"}, MiscDynamic: true}
	var out bytes.Buffer
	printHealth(&out, &command{proto: "tcp", service: "172.25.254.100:80"}, api.Health{Source: "runtime", Check: &hc, Servers: []api.HealthView{
		{Dest: "10.20.1.2:80", Healthy: true}, {Dest: "10.20.2.2:80", Reason: "exit status 1"}}})
	want := `TCP  172.25.254.100:80 health runtime --check 'type=misc,interval=2s,rise=2,fall=3,script=/usr/local/bin/check --name '"'"'a b'"'"',misc_dynamic=true'
  -> 10.20.1.2:80                 up
  -> 10.20.2.2:80                 down: exit status 1
`
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	args, err := shlex.Split("--health -t 172.25.254.100:80 --check " + checkText(hc))
	if err != nil {
		t.Fatal(err)
	}
	c, err := parse(args)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkText(*c.healthCheck); got != checkText(hc) {
		t.Fatalf("read back as %s, want %s", got, checkText(hc))
	}
	out.Reset()
	printHealth(&out, &command{proto: "udp", service: "10.0.0.1:53"}, api.Health{Source: "runtime"})
	if out.String() != "UDP  10.0.0.1:53 health runtime --off\n" {
		t.Fatalf("stopped at run time: %q", out.String())
	}
	out.Reset()
	printHealth(&out, &command{proto: "udp", service: "10.0.0.1:53"}, api.Health{Source: "none"})
	if out.String() != "UDP  10.0.0.1:53 health none\n" {
		t.Fatalf("no check: %q", out.String())
	}
}
