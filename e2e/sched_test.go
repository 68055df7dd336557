package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// sh with --sched-flags sh-port, set with tapvsadm on a running tapvs:
// -ln and -S show it as ipvsadm does, one client's connections (each from
// a new source port) reach both servers; with the flag cleared they all
// reach one (the client's address alone is hashed); a flag of another
// scheduler is refused, naming it, and the service keeps its own.
func TestSchedFlagsShPort(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	e.must("-E", "-t", "172.25.254.100:80", "-s", "sh", "--sched-flags", "sh-port")
	ln := rows(e.must("-ln", "-t", "172.25.254.100:80"))
	fields(t, ln[3], "TCP", "172.25.254.100:80", "sh", "(sh-port)")
	if saved := e.must("-Sn"); !strings.Contains(saved, "-A -t 172.25.254.100:80 -s sh --sched-flags sh-port -j disable\n") {
		t.Fatalf("-S:\n%s", saved)
	}
	hc := lab.HTTPClient(e.top.Client, 5*time.Second) // a connection, and a source port, per request
	servers := func() map[string]int {
		seen := map[string]int{}
		for range 24 {
			rs, _ := e.get(hc)
			seen[rs]++
		}
		return seen
	}
	if seen := servers(); len(seen) != 2 {
		t.Fatalf("sh-port: 24 connections of one client reached %v, want both servers", seen)
	}
	if _, errOut, code := e.adm("", "-E", "-t", "172.25.254.100:80", "--sched-flags", "mh-port"); code == 0 ||
		!strings.Contains(errOut, `"mh-port" is not a flag of scheduler sh`) {
		t.Fatalf("-E --sched-flags mh-port on sh: exit %d %q", code, errOut)
	}
	fields(t, rows(e.must("-ln", "-t", "172.25.254.100:80"))[3], "TCP", "172.25.254.100:80", "sh", "(sh-port)")
	e.must("-E", "-t", "172.25.254.100:80", "--sched-flags", ",")
	fields(t, rows(e.must("-ln", "-t", "172.25.254.100:80"))[3], "TCP", "172.25.254.100:80", "sh")
	if seen := servers(); len(seen) != 1 {
		t.Fatalf("sh without sh-port: 24 connections of one client reached %v, want one server", seen)
	}
}
