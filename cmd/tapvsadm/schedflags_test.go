package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// --sched-flags sends its names (the server checks them against the
// scheduler) and belongs to services; -L shows the flags after the
// scheduler as ipvsadm does, "sh (sh-fallback,sh-port)", and -S writes
// them as --sched-flags (ipvsadm's -b is --fullnat here), which -R reads
// back.
func TestSchedFlagsOption(t *testing.T) {
	for line, want := range map[string][]string{
		"-A -t 1.1.1.1:80 -s sh --sched-flags sh-port":             {"sh-port"},
		"-A -t 1.1.1.1:80 -s mh --sched-flags mh-fallback,mh-port": {"mh-fallback", "mh-port"},
		"-E -t 1.1.1.1:80 --sched-flags ,":                         {},
		"-E -t 1.1.1.1:80 -s rr":                                   nil,
	} {
		c, err := parse(strings.Fields(line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		op, ok, err := opOf(c)
		if !ok || err != nil || op.Service == nil {
			t.Fatalf("%s: %+v %v %v", line, op.Service, ok, err)
		}
		if got := op.Service.SchedFlags; (got == nil) != (want == nil) || got != nil && !slices.Equal(*got, want) {
			t.Fatalf("%s: sched_flags %v, want %v", line, got, want)
		}
	}
	for _, line := range []string{"-a -t 1.1.1.1:80 -r 2.2.2.2 --sched-flags sh-port", "-D -t 1.1.1.1:80 --sched-flags sh-port"} {
		if _, err := parse(strings.Fields(line)); err == nil || !strings.Contains(err.Error(), "Illegal option") {
			t.Fatalf("%s: %v, want Illegal option", line, err)
		}
	}
	svcs := []api.Service{
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, Scheduler: "sh", SchedFlags: []string{"sh-fallback", "sh-port"}},
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:81"}, Scheduler: "mh", SchedFlags: []string{"mh-port"}, Synproxy: true},
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:82"}, Scheduler: "lblcr"},
	}
	var b bytes.Buffer
	printList(&b, api.Info{Version: "1.2.1", Size: 1}, svcs, &command{})
	for _, want := range []string{"TCP  172.25.254.100:80 sh (sh-fallback,sh-port)\n", "TCP  172.25.254.100:81 mh (mh-port) synproxy\n", "TCP  172.25.254.100:82 lblcr\n"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("-L has no %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printRules(&b, svcs, api.Timeouts{}, &command{})
	want := "-A -t 172.25.254.100:80 -s sh --sched-flags sh-fallback,sh-port -j disable\n" +
		"-A -t 172.25.254.100:81 -s mh --sched-flags mh-port -j enable\n" +
		"-A -t 172.25.254.100:82 -s lblcr -j disable\n"
	if b.String() != want {
		t.Fatalf("-S:\n%s\nwant\n%s", b.String(), want)
	}
	for i, line := range strings.Split(strings.TrimSpace(want), "\n") {
		c, err := parse(strings.Fields(line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		op, _, _ := opOf(c)
		got := op.Service.SchedFlags
		if op.Service.Scheduler != svcs[i].Scheduler || len(svcs[i].SchedFlags) > 0 && (got == nil || !slices.Equal(*got, svcs[i].SchedFlags)) {
			t.Fatalf("%s read back as %s %v", line, op.Service.Scheduler, got)
		}
	}
}
