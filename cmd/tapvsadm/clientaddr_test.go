package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// --client-address and DPVS's --proxy-protocol set the same thing; -L shows
// it as DPVS does (ppv1, ppv2) and toa; -S writes what -R reads back.
func TestClientAddressFlags(t *testing.T) {
	for line, want := range map[string]string{
		"-A -t 1.1.1.1:80 --proxy-protocol v2":       "proxy-v2",
		"-A -t 1.1.1.1:80 --proxy-protocol v1":       "proxy-v1",
		"-E -t 1.1.1.1:80 --proxy-protocol disable":  "none",
		"-A -t 1.1.1.1:80 --client-address toa":      "toa",
		"-A -u 1.1.1.1:53 --client-address proxy-v2": "proxy-v2",
	} {
		c, err := parse(strings.Fields(line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		op, ok, err := opOf(c)
		if !ok || err != nil || op.Service == nil || op.Service.ClientAddress != want {
			t.Fatalf("%s: %+v %v %v, want client_address %q", line, op.Service, ok, err, want)
		}
	}
	for line, want := range map[string]string{
		"-A -t 1.1.1.1:80 --proxy-protocol v2-insecure": "no insecure modes",
		"-A -t 1.1.1.1:80 --client-address uoa":         "none, toa, proxy-v1 or proxy-v2",
		"-D -t 1.1.1.1:80 --proxy-protocol v2":          "Illegal option",
	} {
		if _, err := parse(strings.Fields(line)); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want %q", line, err, want)
		}
	}

	svcs := []api.Service{
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, Scheduler: "rr", ClientAddress: "proxy-v2"},
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:81"}, Scheduler: "rr", Synproxy: true, ClientAddress: "toa"},
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:82"}, Scheduler: "rr", ClientAddress: "none"},
	}
	var b bytes.Buffer
	printList(&b, api.Info{Version: "1.2.1", Size: 1}, svcs, &command{})
	for _, want := range []string{"TCP  172.25.254.100:80 rr ppv2\n", "TCP  172.25.254.100:81 rr synproxy toa\n", "TCP  172.25.254.100:82 rr\n"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("-L has no %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printRules(&b, svcs, api.Timeouts{}, &command{})
	want := "-A -t 172.25.254.100:80 -s rr -j disable --proxy-protocol v2\n" +
		"-A -t 172.25.254.100:81 -s rr -j enable --client-address toa\n" +
		"-A -t 172.25.254.100:82 -s rr -j disable\n"
	if b.String() != want {
		t.Fatalf("-S:\n%s\nwant\n%s", b.String(), want)
	}
	for i, line := range strings.Split(strings.TrimSpace(want), "\n") {
		c, err := parse(strings.Fields(line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		op, ok, err := opOf(c)
		if got := op.Service.ClientAddress; !ok || err != nil || got != svcs[i].ClientAddress && !(got == "" && svcs[i].ClientAddress == "none") {
			t.Fatalf("%s read back as %q", line, got)
		}
	}
}

// --tcp-timestamps sets what a service does with TCP timestamps; -L shows
// a removing service (ts-remove), -S writes what -R reads back.
func TestTCPTimestampsFlag(t *testing.T) {
	c, err := parse(strings.Fields("-A -t 1.1.1.1:80 --tcp-timestamps remove"))
	if err != nil {
		t.Fatal(err)
	}
	if op, ok, err := opOf(c); !ok || err != nil || op.Service.TCPTimestamps != "remove" {
		t.Fatalf("%+v %v %v, want tcp_timestamps remove", op.Service, ok, err)
	}
	for line, want := range map[string]string{
		"-A -t 1.1.1.1:80 --tcp-timestamps strip":             "translate or remove",
		"-a -t 1.1.1.1:80 -r 2.2.2.2 --tcp-timestamps remove": "Illegal option",
	} {
		if _, err := parse(strings.Fields(line)); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want %q", line, err, want)
		}
	}
	svcs := []api.Service{
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, Scheduler: "rr", TCPTimestamps: "remove"},
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:81"}, Scheduler: "rr", TCPTimestamps: "translate"},
	}
	var b bytes.Buffer
	printList(&b, api.Info{Version: "1.2.1", Size: 1}, svcs, &command{})
	for _, want := range []string{"TCP  172.25.254.100:80 rr ts-remove\n", "TCP  172.25.254.100:81 rr\n"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("-L has no %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printRules(&b, svcs, api.Timeouts{}, &command{})
	if want := "-A -t 172.25.254.100:80 -s rr -j disable --tcp-timestamps remove\n-A -t 172.25.254.100:81 -s rr -j disable\n"; b.String() != want {
		t.Fatalf("-S:\n%s\nwant\n%s", b.String(), want)
	}
}
