package daemon

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/nat"
)

// A reload's decision, without a TAP or root: a balancer started from a
// file as Start starts it, a runtime change through the control plane,
// then reloads of edited files. What waits for a restart is named and
// keeps its running value; the services are the file's; a runtime change
// the file did not touch is kept, one it changed is reverted; a refused
// transaction changes nothing.
func TestDecideReload(t *testing.T) {
	parse := func(text string) *config.Config {
		t.Helper()
		c, err := config.Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	running := parse(base)
	bal, err := nat.New(nat.Config{MaxConns: running.MaxConns, PortMin: running.PortMin, PortMax: running.PortMax, Timeouts: running.Timeouts,
		ClientNet: running.Client.Address, ServerNet: running.Server.Address, Readers: 1,
		ClientMAC: [6]byte{2, 0, 0, 0, 0, 1}, ServerMAC: [6]byte{2, 0, 0, 0, 0, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bal.Update(func(tx *nat.Tx) error { return running.Apply(tx, nil) }); err != nil {
		t.Fatal(err)
	}
	m := control.NewManager(bal, nil)
	vip := netip.MustParseAddrPort("172.25.254.100:80")
	rs20, rs21 := netip.MustParseAddrPort("172.25.84.20:8080"), netip.MustParseAddrPort("172.25.84.21:8080")
	zero := 0
	if err := m.EditDest(control.ServiceKey{Protocol: nat.TCP, Addr: vip}, control.DestSpec{Addr: rs20, Weight: &zero}); err != nil {
		t.Fatal(err) // ipvsadm -e -w 0: a drain
	}
	state := func() (sched string, weights map[netip.AddrPort]int) {
		s, err := bal.Service(nat.TCP, vip.Addr(), vip.Port())
		if err != nil {
			t.Fatal(err)
		}
		weights = map[netip.AddrPort]int{}
		for _, d := range s.Dests() {
			weights[netip.AddrPortFrom(d.Addr, d.Port)] = d.Weight()
		}
		return s.Scheduler(), weights
	}

	// The client side's MTU and the table's size wait for a restart; the
	// scheduler and a new real server are applied; the drain is kept.
	text := strings.Replace(base, "queues: 2}\n  server", "queues: 2, mtu: 1400}\n  server", 1)
	text = strings.Replace(text, "port: 80\n", "port: 80\n    scheduler: rr\n", 1)
	text = strings.Replace(text, "port: 8080}]", "port: 8080}, {address: 172.25.84.21, port: 8080}]", 1)
	next := parse(text + "limits: {max_connections: 4096}\n")
	res, applied, err := decideReload(m, running, next, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"interfaces.client", "limits.max_connections"}; !slices.Equal(res.Restart, want) {
		t.Errorf("restart %v, want %v", res.Restart, want)
	}
	if want := "tcp 172.25.254.100:80 real server 172.25.84.20:8080 weight 0 (file: weight 1)"; !slices.Contains(res.Kept, want) || len(res.Reverted) != 0 {
		t.Errorf("kept %q, reverted %q: want the drain kept, %q", res.Kept, res.Reverted, want)
	}
	if sched, w := state(); sched != "rr" || !maps.Equal(w, map[netip.AddrPort]int{rs20: 0, rs21: 1}) || res.Changes == 0 {
		t.Errorf("after the reload: scheduler %s, weights %v, %d changes", sched, w, res.Changes)
	}
	if !reflect.DeepEqual(applied.RestartOnly, running.RestartOnly) || !reflect.DeepEqual(applied.Reloadable, next.Reloadable) {
		t.Errorf("the configuration that runs: %+v\nwant the running restart-only values and the file's services", applied)
	}

	// The file changes the drained server's weight: the drain is
	// overridden, and named.
	next2 := parse(strings.Replace(text, "{address: 172.25.84.20, port: 8080}", "{address: 172.25.84.20, port: 8080, weight: 3}", 1) + "limits: {max_connections: 4096}\n")
	res, applied, err = decideReload(m, applied, next2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "tcp 172.25.254.100:80 real server 172.25.84.20:8080 weight 0 -> weight 3"; !slices.Equal(res.Reverted, []string{want}) {
		t.Errorf("reverted %q, want %q", res.Reverted, want)
	}
	if _, w := state(); w[rs20] != 3 {
		t.Errorf("weights %v after the file set 3", w)
	}

	// A transaction the balancer refuses changes nothing, and still says
	// what would wait for a restart.
	bad := parse(text)
	bad.Services[0].Scheduler = "nosuch"
	bad.Services[0].RealServers[1].Weight = 9
	res, got, err := decideReload(m, applied, bad, nil)
	if err == nil || !strings.Contains(err.Error(), "services[0].scheduler") || got != nil {
		t.Fatalf("a scheduler the balancer refuses: %v, %+v", err, got)
	}
	if !slices.Equal(res.Restart, []string{"interfaces.client"}) { // against the running values: max_connections is back to them
		t.Errorf("refused reload: restart %v", res.Restart)
	}
	if sched, w := state(); sched != "rr" || !maps.Equal(w, map[netip.AddrPort]int{rs20: 3, rs21: 1}) {
		t.Errorf("a refused reload changed the balancer: scheduler %s, weights %v", sched, w)
	}
}
