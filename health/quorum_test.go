package health

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/nat"
)

var sorry = netip.MustParseAddrPort("10.20.9.9:8080")

// keepalived's quorum rule at its edges: down below quorum-hysteresis or at
// 0, up at quorum+hysteresis and above 0, else as it was.
func TestQuorumRule(t *testing.T) {
	for _, c := range []struct {
		was       bool
		sum, q, h int
		want      bool
	}{
		{true, 1, 1, 0, true}, {true, 0, 1, 0, false},
		{false, 0, 1, 0, false}, {false, 1, 1, 0, true},
		{true, 5, 8, 3, true}, {true, 4, 8, 3, false}, // down below 8-3
		{false, 10, 8, 3, false}, {false, 11, 8, 3, true}, // up at 8+3
		{true, 7, 8, 0, false}, {false, 8, 8, 0, true},
		{true, 0, 1, 5, false}, // 0 is down whatever the hysteresis
		{false, 0, 0, 0, false},
	} {
		if got := quorum(c.was, c.sum, c.q, c.h); got != c.want {
			t.Errorf("quorum(was %v, sum %d, quorum %d, hysteresis %d) = %v, want %v", c.was, c.sum, c.q, c.h, got, c.want)
		}
	}
}

// recorder is a script appending its state and environment to a file, one
// line a run.
func recorder(t *testing.T) (argv []string, lines func() []string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "runs")
	p := script(t, `echo "$1 $TAPVS_STATE $TAPVS_PROTO $TAPVS_VIP_ADDR:$TAPVS_VIP_PORT rs=$TAPVS_RS_ADDR:$TAPVS_RS_PORT w=$TAPVS_WEIGHTS" >> "$2"`)
	return []string{p, "?", out}, func() []string {
		b, err := os.ReadFile(out)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

func named(argv []string, name string) []string {
	a := append([]string(nil), argv...)
	a[1] = name
	return a
}

// weights checks each server's weight (-1: not listed).
func weights(t *testing.T, step string, svc *nat.Service, want map[netip.AddrPort]int) {
	t.Helper()
	for rs, w := range want {
		got, listed := weightOf(t, svc, rs)
		if !listed {
			got = -1
		}
		if got != w {
			t.Fatalf("%s: %s weight %d, want %d (-1: not listed)", step, rs, got, w)
		}
	}
}

func serving(t *testing.T, c *Checker) bool {
	t.Helper()
	up, known := c.Serving(tcpVIP)
	if !known {
		t.Fatal("the service's quorum is unknown")
	}
	return up
}

// The sorry server goes in as the only server when the last real server
// fails, and out when one is back; quorum_down and quorum_up run once each,
// with the service in their environment.
func TestQuorumSorryServerInAndOut(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	argv, runs := recorder(t)
	c.SetVS([]VS{{Proto: nat.TCP, VIP: vip, Sorry: sorry, Quorum: 1,
		QuorumUp: named(argv, "quorum_up"), QuorumDown: named(argv, "quorum_down"),
		Servers: []Server{{RS: rs1, Weight: 5}, {RS: rs2, Weight: 5}}}})
	spec := Spec{Type: "tcp", Rise: 1, Fall: 1}
	s1, s2 := newState(c, rs1, spec, 5), newState(c, rs2, spec, 5)

	c.record(svc, s1, errProbe)
	weights(t, "rs1 down", svc, map[netip.AddrPort]int{rs1: 0, rs2: 5, sorry: -1})
	c.record(svc, s2, errProbe)
	weights(t, "both down", svc, map[netip.AddrPort]int{rs1: 0, rs2: 0, sorry: 1})
	if serving(t, c) {
		t.Fatal("both down: still serving")
	}
	c.record(svc, s2, errProbe) // a further failure is no transition
	c.record(svc, s1, nil)
	weights(t, "rs1 back", svc, map[netip.AddrPort]int{rs1: 5, rs2: 0, sorry: -1})
	if !serving(t, c) {
		t.Fatal("rs1 back: not serving")
	}
	want := []string{
		"quorum_down down tcp 172.25.254.100:80 rs=: w=0",
		"quorum_up up tcp 172.25.254.100:80 rs=: w=5",
	}
	if got := runs(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("scripts ran:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// sorry_server_inhibit keeps the sorry server listed at weight 0 when the
// quorum is reached, and at 1 when it is lost.
func TestQuorumSorryServerInhibit(t *testing.T) {
	bal, svc := testBalancer(t, rs1)
	c := New(bal, nil, nic, quiet)
	c.SetVS([]VS{{Proto: nat.TCP, VIP: vip, Sorry: sorry, SorryInhibit: true, Quorum: 1, Servers: []Server{{RS: rs1, Weight: 5}}}})
	s1 := newState(c, rs1, Spec{Type: "tcp", Rise: 1, Fall: 1}, 5)
	c.startQuorum(nil)
	weights(t, "start", svc, map[netip.AddrPort]int{rs1: 5, sorry: 0})
	c.record(svc, s1, errProbe)
	weights(t, "down", svc, map[netip.AddrPort]int{rs1: 0, sorry: 1})
	c.record(svc, s1, nil)
	weights(t, "up", svc, map[netip.AddrPort]int{rs1: 5, sorry: 0})
}

// Quorum with hysteresis, both ways: weights 5, 3 and 4 (12), quorum 8,
// hysteresis 3: down below 5, up at 11. The servers still up are quiesced
// while the quorum is lost (no new connection), and a server passing then
// is held at 0 until the quorum is reached.
func TestQuorumHysteresis(t *testing.T) {
	rs3 := netip.MustParseAddrPort("10.20.3.2:80")
	bal, svc := testBalancer(t, rs1, rs2, rs3)
	setWeight(t, bal, svc, rs1, 5)
	setWeight(t, bal, svc, rs2, 3)
	setWeight(t, bal, svc, rs3, 4)
	c := New(bal, nil, nic, quiet)
	argv, runs := recorder(t)
	c.SetVS([]VS{{Proto: nat.TCP, VIP: vip, Quorum: 8, Hysteresis: 3,
		QuorumUp: named(argv, "quorum_up"), QuorumDown: named(argv, "quorum_down"),
		Servers: []Server{{RS: rs1, Weight: 5}, {RS: rs2, Weight: 3}, {RS: rs3, Weight: 4}}}})
	spec := Spec{Type: "tcp", Rise: 1, Fall: 1}
	s1, s2 := newState(c, rs1, spec, 5), newState(c, rs2, spec, 3)
	// rs3 is not checked: always up, with its configured weight.

	c.record(svc, s1, errProbe) // 7: below quorum, not below 8-3
	if !serving(t, c) {
		t.Fatal("7 >= 5: lost the quorum inside the hysteresis")
	}
	weights(t, "7", svc, map[netip.AddrPort]int{rs1: 0, rs2: 3, rs3: 4})
	c.record(svc, s2, errProbe) // 4 < 5
	if serving(t, c) {
		t.Fatal("4 < 5: still serving")
	}
	weights(t, "4", svc, map[netip.AddrPort]int{rs1: 0, rs2: 0, rs3: 0})
	c.record(svc, s1, nil) // 9: above quorum, below 8+3
	if serving(t, c) {
		t.Fatal("9 < 11: serving again inside the hysteresis")
	}
	weights(t, "9", svc, map[netip.AddrPort]int{rs1: 0, rs2: 0, rs3: 0})
	c.record(svc, s2, nil) // 12 >= 11
	if !serving(t, c) {
		t.Fatal("12 >= 11: not serving")
	}
	weights(t, "12", svc, map[netip.AddrPort]int{rs1: 5, rs2: 3, rs3: 4})
	want := "quorum_down down tcp 172.25.254.100:80 rs=: w=4\nquorum_up up tcp 172.25.254.100:80 rs=: w=12"
	if got := strings.Join(runs(), "\n"); got != want {
		t.Fatalf("scripts ran:\n%s\nwant:\n%s", got, want)
	}
}

// notify_up and notify_down run once per transition of their server, with
// the server and the service in their environment.
func TestNotifyOncePerTransition(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	argv, runs := recorder(t)
	s1 := newState(c, rs1, Spec{Type: "tcp", Rise: 2, Fall: 2}, 5)
	s1.t.NotifyUp, s1.t.NotifyDown = named(argv, "notify_up"), named(argv, "notify_down")
	for range 4 {
		c.record(svc, s1, errProbe)
	}
	for range 3 {
		c.record(svc, s1, nil)
	}
	want := "notify_down down tcp 172.25.254.100:80 rs=10.20.1.2:80 w=\nnotify_up up tcp 172.25.254.100:80 rs=10.20.1.2:80 w="
	if got := strings.Join(runs(), "\n"); got != want {
		t.Fatalf("scripts ran:\n%s\nwant:\n%s", got, want)
	}
}

// alpha: a checked server starts down (out, and the sorry server in) until
// its first check passes; without alpha it starts up.
func TestAlphaStartsDown(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	c.SetVS([]VS{{Proto: nat.TCP, VIP: vip, Sorry: sorry, Quorum: 1, Servers: []Server{{RS: rs1, Weight: 5}, {RS: rs2, Weight: 5}}}})
	never := Spec{Type: "tcp", Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}
	c.Start([]Target{
		{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: never, Weight: 5, Alpha: true},
		{Proto: nat.TCP, VIP: vip, RS: rs2, Spec: never, Weight: 5, Alpha: true},
	}, nil)
	defer c.Close()
	weights(t, "alpha start", svc, map[netip.AddrPort]int{rs1: 0, rs2: 0, sorry: 1})
	if up, _, _ := c.Up(tcpVIP, rs1); up {
		t.Fatal("alpha: rs1 starts up")
	}
	c.record(svc, c.state[stateKey{tcpVIP, rs1}], nil)
	weights(t, "first pass", svc, map[netip.AddrPort]int{rs1: 5, rs2: 0, sorry: -1})

	bal2, svc2 := testBalancer(t, rs1)
	c2 := New(bal2, nil, nic, quiet)
	c2.SetVS([]VS{{Proto: nat.TCP, VIP: vip, Sorry: sorry, Quorum: 1, Servers: []Server{{RS: rs1, Weight: 5}}}})
	c2.Start([]Target{{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: never, Weight: 5}}, nil)
	defer c2.Close()
	weights(t, "no alpha", svc2, map[netip.AddrPort]int{rs1: 5, sorry: -1})
}

// A reload (a checker replacing another) keeps a lost quorum: the servers
// the reload put back at the file's weights are quiesced again, the sorry
// server stays, and no script runs; a sorry server the file no longer
// names goes.
func TestQuorumSurvivesReload(t *testing.T) {
	bal, svc := testBalancer(t, rs1)
	argv, runs := recorder(t)
	v := VS{Proto: nat.TCP, VIP: vip, Sorry: sorry, Quorum: 1, QuorumUp: named(argv, "quorum_up"), QuorumDown: named(argv, "quorum_down"),
		Servers: []Server{{RS: rs1, Weight: 5}}}
	never := Spec{Type: "tcp", Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}
	tg := []Target{{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: never, Weight: 5}}
	prev := New(bal, nil, nic, quiet)
	prev.SetVS([]VS{v})
	prev.Start(tg, nil)
	prev.record(svc, prev.state[stateKey{tcpVIP, rs1}], errProbe)
	prev.Close()
	weights(t, "down", svc, map[netip.AddrPort]int{rs1: 0, sorry: 1})

	next := New(bal, nil, nic, quiet)
	next.SetVS([]VS{v})
	next.Start(tg, prev)
	weights(t, "reloaded", svc, map[netip.AddrPort]int{rs1: 0, sorry: 1})
	if serving(t, next) {
		t.Fatal("reloaded: serving")
	}
	next.Close()

	v.Sorry = netip.AddrPort{}
	last := New(bal, nil, nic, quiet)
	last.SetVS([]VS{v})
	last.Start(tg, next)
	defer last.Close()
	weights(t, "sorry server dropped from the file", svc, map[netip.AddrPort]int{rs1: 0, sorry: -1})
	if got := runs(); len(got) != 1 || !strings.HasPrefix(got[0], "quorum_down") {
		t.Fatalf("scripts ran: %q, want quorum_down once", got)
	}
}

// omega: Shutdown runs notify_down of the servers still up and quorum_down
// of a service still up; without omega, and at Close (a reload), nothing.
func TestOmega(t *testing.T) {
	for _, omega := range []bool{true, false} {
		bal, _ := testBalancer(t, rs1, rs2)
		argv, runs := recorder(t)
		c := New(bal, nil, nic, quiet)
		c.SetVS([]VS{{Proto: nat.TCP, VIP: vip, Quorum: 1, Omega: omega, QuorumDown: named(argv, "quorum_down"),
			Servers: []Server{{RS: rs1, Weight: 5}, {RS: rs2, Weight: 5}}}})
		never := Spec{Type: "tcp", Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}
		c.Start([]Target{
			{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: never, Weight: 5, NotifyDown: named(argv, "notify_down")},
			{Proto: nat.TCP, VIP: vip, RS: rs2, Spec: never, Weight: 5, Alpha: true, NotifyDown: named(argv, "notify_down")},
		}, nil)
		c.Shutdown()
		var want []string
		if omega {
			want = []string{"notify_down down tcp 172.25.254.100:80 rs=10.20.1.2:80 w=", "quorum_down down tcp 172.25.254.100:80 rs=: w=0"}
		}
		if got := runs(); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("omega %v: scripts ran %q, want %q", omega, got, want)
		}
	}
}

// A script past its timeout is killed and logged; the move it follows stands.
func TestQuorumScriptTimeout(t *testing.T) {
	bal, svc := testBalancer(t, rs1)
	c := New(bal, nil, nic, quiet)
	c.scriptTimeout = 100 * time.Millisecond
	slow := script(t, "sleep 30")
	c.SetVS([]VS{{Proto: nat.TCP, VIP: vip, Sorry: sorry, Quorum: 1, QuorumDown: []string{slow}, Servers: []Server{{RS: rs1, Weight: 5}}}})
	s1 := newState(c, rs1, Spec{Type: "tcp", Rise: 1, Fall: 1}, 5)
	start := time.Now()
	c.record(svc, s1, errProbe)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a script past its timeout held the move %s", d)
	}
	weights(t, "down", svc, map[netip.AddrPort]int{rs1: 0, sorry: 1})
}

// A server failing while its service is below quorum keeps the weight to
// restore: the 0 it has then is the quorum's, not an operator's.
func TestQuorumKeepsTheWeightOfAServerFailingBelowQuorum(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	c.SetVS([]VS{{Proto: nat.TCP, VIP: vip, Quorum: 8, Servers: []Server{{RS: rs1, Weight: 5}, {RS: rs2, Weight: 5}}}})
	spec := Spec{Type: "tcp", Rise: 1, Fall: 1}
	s1, s2 := newState(c, rs1, spec, 5), newState(c, rs2, spec, 5)
	c.record(svc, s1, errProbe) // 5 < 8: rs2 quiesced by the quorum
	weights(t, "rs1 down", svc, map[netip.AddrPort]int{rs1: 0, rs2: 0})
	c.record(svc, s2, errProbe)
	c.record(svc, s1, nil)
	c.record(svc, s2, nil)
	weights(t, "both back", svc, map[netip.AddrPort]int{rs1: 5, rs2: 5})
}
