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

// matchBalancer has match service FWM 1 (tcp vip:80,443) and, on the same
// VIP, a port-0 service (persistent on every port): both key VIP:0, and
// both have rs1 and rs2 on port 0, weight 5. It returns the two services.
func matchBalancer(t *testing.T) (bal *nat.Balancer, match, all *nat.Service) {
	t.Helper()
	bal, err := nat.New(nat.Config{MaxConns: 100, PortMin: 5000, PortMax: 6000, Timeouts: nat.DefaultTimeouts()})
	if err != nil {
		t.Fatal(err)
	}
	err = bal.Update(func(tx *nat.Tx) error {
		if err := tx.SetMarks(map[uint32]nat.Match{1: {Addr: vip.Addr(), Protocol: nat.TCP, Ports: []nat.PortRange{{Lo: 80, Hi: 80}, {Lo: 443, Hi: 443}}}}); err != nil {
			return err
		}
		for _, sc := range []nat.ServiceConfig{
			{Name: "fwm", Mark: 1, Scheduler: "wrr"},
			{Name: "all", Addr: vip.Addr(), Protocol: nat.TCP, Scheduler: "wrr", Persistence: nat.Persistence{Timeout: time.Minute}},
		} {
			s, err := tx.AddService(sc)
			if err != nil {
				return err
			}
			if _, err := tx.AddLocalAddr(s, lip); err != nil {
				return err
			}
			for _, rs := range []netip.AddrPort{port0(rs1), port0(rs2)} {
				if _, err := tx.AddDest(s, rs.Addr(), rs.Port(), 5); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if match, err = bal.MatchService(1); err != nil {
		t.Fatal(err)
	}
	if all, err = bal.Service(nat.TCP, vip.Addr(), 0); err != nil {
		t.Fatal(err)
	}
	return bal, match, all
}

func port0(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr(), 0) }

// A match service is checked by its mark: its servers go out and back,
// its quorum brings in its sorry server (on port 0: the client's port) and
// takes it out, and its scripts get its mark; the port-0 service of the
// same VIP, whose servers have the same addresses, is another service,
// never moved. Its key is its mark, whatever VIP it is given with.
func TestMatchServiceChecked(t *testing.T) {
	bal, match, all := matchBalancer(t)
	vip0 := netip.AddrPortFrom(vip.Addr(), 0)
	fwm := Key{Proto: nat.TCP, VIP: vip0, Mark: 1}
	out := filepath.Join(t.TempDir(), "runs")
	sh := script(t, `echo "$1 $TAPVS_STATE $TAPVS_PROTO $TAPVS_VIP_ADDR:$TAPVS_VIP_PORT fwmark=$TAPVS_FWMARK rs=$TAPVS_RS_ADDR:$TAPVS_RS_PORT" >> "$2"`)
	argv := func(name string) []string { return []string{sh, name, out} }
	sorry0 := port0(sorry)
	c := New(bal, nil, nic, quiet)
	c.SetVS([]VS{{Proto: nat.TCP, VIP: vip0, Mark: 1, Sorry: sorry0, Quorum: 1, QuorumUp: argv("quorum_up"), QuorumDown: argv("quorum_down"),
		Servers: []Server{{RS: port0(rs1), Weight: 5}, {RS: port0(rs2), Weight: 5}}}})
	spec := Spec{Type: "tcp", Port: 80, Rise: 1, Fall: 1}
	var st []*state
	c.targs = map[Key][]Target{}
	for _, rs := range []netip.AddrPort{port0(rs1), port0(rs2)} {
		tg := Target{Proto: nat.TCP, VIP: vip0, Mark: 1, RS: rs, Spec: spec, Weight: 5, NotifyDown: argv("notify_down")}
		s := &state{t: tg, up: true, weight: 5}
		c.state[tg.stateKey()] = s
		c.targs[Key{Mark: 1}] = append(c.targs[Key{Mark: 1}], tg)
		st = append(st, s)
	}
	allUntouched := func(step string) {
		t.Helper()
		weights(t, step+": the port-0 service", all, map[netip.AddrPort]int{port0(rs1): 5, port0(rs2): 5, sorry0: -1})
	}

	c.record(match, st[0], errProbe)
	weights(t, "rs1 down", match, map[netip.AddrPort]int{port0(rs1): 0, port0(rs2): 5, sorry0: -1})
	allUntouched("rs1 down")
	for _, k := range []Key{fwm, {Mark: 1}, {Proto: nat.UDP, Mark: 1}} {
		if up, checked, why := c.Up(k, port0(rs1)); up || !checked || why != errProbe.Error() {
			t.Fatalf("Up(%+v, rs1): %v %v %q, want down, checked, %q", k, up, checked, why, errProbe)
		}
		if got := c.Targets(k); len(got) != 2 || got[0].RS != port0(rs1) {
			t.Fatalf("Targets(%+v): %+v", k, got)
		}
		if up, known := c.Serving(k); !up || !known {
			t.Fatalf("Serving(%+v): %v %v, want up, known", k, up, known)
		}
	}
	allKey := Key{Proto: nat.TCP, VIP: vip0}
	if _, checked, _ := c.Up(allKey, port0(rs1)); checked {
		t.Fatal("the port-0 service's rs1 is reported checked: its key is not the match service's")
	}
	if _, known := c.Serving(allKey); known || len(c.Targets(allKey)) != 0 {
		t.Fatal("the port-0 service has the match service's quorum or targets")
	}

	c.record(match, st[1], errProbe)
	weights(t, "both down", match, map[netip.AddrPort]int{port0(rs1): 0, port0(rs2): 0, sorry0: 1})
	allUntouched("both down")
	if up, _ := c.Serving(fwm); up {
		t.Fatal("both down: still serving")
	}
	c.record(match, st[1], nil)
	weights(t, "rs2 back", match, map[netip.AddrPort]int{port0(rs1): 0, port0(rs2): 5, sorry0: -1})
	allUntouched("rs2 back")
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"notify_down down tcp 172.25.254.100:0 fwmark=1 rs=10.20.1.2:0",
		"notify_down down tcp 172.25.254.100:0 fwmark=1 rs=10.20.2.2:0",
		"quorum_down down tcp 172.25.254.100:0 fwmark=1 rs=:",
		"quorum_up up tcp 172.25.254.100:0 fwmark=1 rs=:",
	}
	if got := strings.TrimSpace(string(b)); got != strings.Join(want, "\n") {
		t.Fatalf("scripts ran:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}

	// The sorry server a reload no longer names goes (startQuorum).
	c.record(match, st[1], errProbe)
	weights(t, "both down again", match, map[netip.AddrPort]int{sorry0: 1})
	next := New(bal, nil, nic, quiet)
	next.SetVS([]VS{{Proto: nat.TCP, VIP: vip0, Mark: 1, Quorum: 1, Servers: []Server{{RS: port0(rs1), Weight: 5}, {RS: port0(rs2), Weight: 5}}}})
	next.startQuorum(c)
	weights(t, "reloaded without a sorry server", match, map[netip.AddrPort]int{sorry0: -1})
	allUntouched("reloaded")
}

// A check that connects, of a server on port 0 with no port of its own
// (a runtime check set before such a server was added), fails with the
// reason, without dialling port 0.
func TestCheckPortZero(t *testing.T) {
	c := New(nil, nil, nic, quiet)
	for _, typ := range []string{"tcp", "http", "ssl", "smtp", "udp", "dns"} {
		err := c.checkFrom([]netip.Addr{lip}, Target{RS: port0(rs1), Spec: Spec{Type: typ, Timeout: time.Second}})
		if err == nil || err.Error() != typ+": the server is on port 0 (the client's port): the check needs a port of its own" {
			t.Errorf("%s: %v", typ, err)
		}
	}
	for typ, need := range map[string]bool{"tcp": true, "http": true, "ssl": true, "smtp": true, "udp": true, "dns": true, "ping": false, "misc": false} {
		if got := (&Spec{Type: typ}).NeedsPort(); got != need {
			t.Errorf("%s: NeedsPort %v, want %v", typ, got, need)
		}
	}
}

// A misc check of a match service's server has its mark and its VIP's
// port 0 in its environment; a VIP:port service's has mark 0.
func TestMiscEnvMark(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	sh := script(t, `echo "$TAPVS_VIP_ADDR:$TAPVS_VIP_PORT $TAPVS_FWMARK $TAPVS_RS_PORT" >> "$1"`)
	spec := Spec{Type: "misc", Script: []string{sh, out}, Timeout: 5 * time.Second}
	for _, tg := range []Target{
		{Proto: nat.TCP, VIP: netip.AddrPortFrom(vip.Addr(), 0), Mark: 7, RS: port0(rs1), Spec: spec},
		{Proto: nat.TCP, VIP: vip, RS: rs1, Spec: spec},
	} {
		if _, err := runMisc(tg); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "172.25.254.100:0 7 0\n172.25.254.100:80 0 80" {
		t.Fatalf("environment %q", got)
	}
}
