package config

import (
	"strings"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// scheduler_flags take the scheduler's flags by ipvsadm's (and
// keepalived's) names, refuse others naming the field, and a reload that
// changes only the flags rebuilds the service's scheduler with them.
func TestSchedulerFlags(t *testing.T) {
	withFlags := func(sched, flags string) string {
		return strings.Replace(valid, "port: 80\n    local", "port: 80\n    scheduler: "+sched+"\n    scheduler_flags: "+flags+"\n    local", 1)
	}
	c := parse(t, withFlags("sh", "[sh-port, sh-fallback]"))
	if got := c.Services[0].SchedulerFlags; got != nat.SchedPort|nat.SchedFallback {
		t.Fatalf("sh-port, sh-fallback: %v", got)
	}
	for _, tc := range []struct{ sched, flags, want string }{
		{"sh", "[mh-port]", `services[0].scheduler_flags: "mh-port" is not a flag of scheduler sh (it takes sh-fallback, sh-port)`},
		{"wlc", "[sh-port]", `services[0].scheduler_flags: "sh-port" is not a flag of scheduler wlc (it takes none; sh and mh take them)`},
	} {
		if _, err := Parse(withFlags(tc.sched, tc.flags)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: %v, want %s", tc.sched, tc.flags, err, tc.want)
		}
	}
	bal := running(t, parse(t, withFlags("mh", "[mh-port]")))
	if s := bal.Services()[0]; s.Scheduler() != "mh" || s.SchedFlags() != nat.SchedPort {
		t.Fatalf("applied: %s %v", s.Scheduler(), s.SchedFlags())
	}
	if err := apply(bal, parse(t, withFlags("mh", "[mh-fallback]")), nil); err != nil {
		t.Fatal(err)
	}
	if s := bal.Services()[0]; s.Scheduler() != "mh" || s.SchedFlags() != nat.SchedFallback {
		t.Fatalf("reloaded: %s %v", s.Scheduler(), s.SchedFlags())
	}
}
