package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

const removedServices = `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    local_addresses: [172.25.84.10]
    health_check: {type: tcp, interval: 200ms, timeout: 150ms, rise: 2, fall: 2, on_failure: remove}
    real_servers:
      - {address: 10.20.1.2, port: 80, weight: 2}
      - {address: 10.20.2.2, port: 80, weight: 5}`

// A TCP connect check with on_failure: remove: a real server whose port
// stops accepting leaves -ln (not weight 0: gone), new connections go to
// the other, and when it accepts again it is listed again with its weight.
func TestTCPCheckRemovesAndAddsBack(t *testing.T) {
	e := setup(t, removedServices, "")
	const interval, timeout, fall, rise = 200 * time.Millisecond, 150 * time.Millisecond, 2, 2
	bound := func(n int) time.Duration { return time.Duration(n)*interval + timeout + interval } // as in TestHealthChecksReloadAndMetrics
	dests := func() []string {
		var ds []string
		for _, r := range rows(e.must("-ln", "-t", "172.25.254.100:80"))[4:] {
			ds = append(ds, strings.Join(r[:4], " "))
		}
		slices.Sort(ds) // servers are listed in the order they passed their first checks
		return ds
	}
	both := "-> 10.20.1.2:80 FullNat 2,-> 10.20.2.2:80 FullNat 5"
	if !eventually(bound(rise), func() bool { return strings.Join(dests(), ",") == both }) {
		t.Fatalf("-ln at start: %q, want %q", dests(), both)
	}

	e.rs[1].StopHTTP()
	only := "-> 10.20.1.2:80 FullNat 2"
	if !eventually(bound(fall), func() bool { return strings.Join(dests(), ",") == only }) {
		w, up, why := e.weightOf("172.25.254.100:80", "10.20.2.2:80")
		t.Fatalf("rs2 not removed within %v: -ln %q (weight %d up %v: %s)", bound(fall), dests(), w, up, why)
	}
	// The checker still follows it, down for the TCP connect it tried.
	var health []string
	for _, s := range e.d.Manager.Services() {
		for _, h := range s.Health {
			health = append(health, fmt.Sprintf("%s %s up=%v %s", s.Addr, h.Dest, h.Healthy, h.Reason))
		}
	}
	if len(health) != 2 || !strings.Contains(strings.Join(health, "\n"), "172.25.254.100:80 10.20.2.2:80 up=false tcp connect") {
		t.Fatalf("health while rs2 is removed: %q, want rs2 down for a failed TCP connect", health)
	}
	short := lab.HTTPClient(e.top.Client, 5*time.Second)
	for i := range 6 {
		if rs, _ := e.get(short); rs != "rs1" {
			t.Fatalf("new connection %d went to %s while it was removed", i, rs)
		}
	}

	if err := e.rs[1].StartHTTP(); err != nil {
		t.Fatal(err)
	}
	// Put back, it has its next hop at once: the checker's change is a
	// transaction, which starts it with the one known (before, it waited
	// for the once-a-second sync or its first packet's resolution).
	web := e.service("web")
	var back *nat.Dest
	if !eventually(bound(rise), func() bool { back = web.Dest(lab.RS2, lab.HTTPPort); return back != nil }) {
		t.Fatalf("rs2 not put back within %v", bound(rise))
	}
	if _, ok := back.NextHopMAC(); !ok {
		t.Fatal("rs2 was put back without its next hop")
	}
	if !eventually(bound(rise), func() bool { return strings.Join(dests(), ",") == both }) {
		t.Fatalf("rs2 not added back with weight 5 within %v: -ln %q", bound(rise), dests())
	}
	seen := map[string]int{}
	for range 6 {
		rs, _ := e.get(short)
		seen[rs]++
	}
	if seen["rs2"] == 0 {
		t.Fatalf("rs2 added back but got no new connection: %v", seen)
	}
}
