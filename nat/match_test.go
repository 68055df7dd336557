package nat

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// webMark is the selector the match tests define as mark 1: TCP 80, 443
// and 8000-8099 of the rig's VIP.
var webMark = Match{Addr: vip, Protocol: TCP, Ports: []PortRange{{443, 443}, {80, 80}, {8000, 8099}}}

// matchRig is the rig with its VIP:80 service replaced by a persistent
// match service on mark 1 (webMark): rr over rs1 and rs2 on port 0, the
// client's port.
func matchRig(t *testing.T) (*rig, *Service) { return matchRigOn(t, webMark) }

// matchRigOn is matchRig with mark 1 being m.
func matchRigOn(t *testing.T, m Match) (*rig, *Service) {
	t.Helper()
	r := newRig(t, TCP, "rr", nil)
	var svc *Service
	if err := r.b.Update(func(tx *Tx) error {
		tx.DeleteService(r.svc)
		if err := tx.SetMarks(map[uint32]Match{1: m}); err != nil {
			return err
		}
		var err error
		if svc, err = tx.AddService(ServiceConfig{Mark: 1, Scheduler: "rr", Persistence: Persistence{Timeout: 600 * time.Second}}); err != nil {
			return err
		}
		if _, err = tx.AddLocalAddr(svc, lip1); err != nil {
			return err
		}
		for _, a := range []netip.Addr{rs1, rs2} {
			d, err := tx.AddDest(svc, a, 0, 1)
			if err != nil {
				return err
			}
			d.SetNextHopMAC(macGateway)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return r, svc
}

// A persistent match service keeps a client on one server across 80, 443
// and its range, each connection to the port the client asked for, with
// one template; other clients spread; a port outside the selector is no
// service's.
func TestMatchServicePersistent(t *testing.T) {
	r, svc := matchRig(t)
	if svc.Mark != 1 || svc.Addr != vip || svc.Port != 0 || svc.String() != "FWM 1" {
		t.Fatalf("service %v: mark %d at %v:%d, want FWM 1 at %v:0", svc, svc.Mark, svc.Addr, svc.Port, vip)
	}
	v, first := synTo(t, r.b, client, 10000, 80)
	if v != Forward || first.Port() != 80 {
		t.Fatalf("SYN to 80: %v to %v, want forwarded to port 80", v, first)
	}
	for i, port := range []uint16{443, 8000, 8099, 80, 443} {
		if v, to := synTo(t, r.b, client, uint16(10001+i), port); v != Forward || to != netip.AddrPortFrom(first.Addr(), port) {
			t.Fatalf("SYN to %d: %v to %v, want %v:%d (the client's template)", port, v, to, first.Addr(), port)
		}
	}
	if n := r.b.Templates(); n != 1 {
		t.Fatalf("templates %d, want 1 for 80 and 443 together", n)
	}
	if l := r.b.TemplateList(); len(l) != 1 || l[0].VIP != netip.MustParseAddrPort("0.0.0.1:0") || l[0].Mark != 1 || l[0].RIP != netip.AddrPortFrom(first.Addr(), 0) || l[0].Conns != 6 {
		t.Fatalf("templates %+v, want one of mark 1 (0.0.0.1:0, as IPVS keys it) to %v:0 with 6 connections", l, first.Addr())
	}
	spread := map[netip.Addr]int{}
	for i := range 10 {
		_, to := synTo(t, r.b, clientAddr(i), 20000, []uint16{80, 443}[i%2])
		spread[to.Addr()]++
	}
	if len(spread) != 2 {
		t.Fatalf("10 other clients went to %v: the scheduler must still spread new clients", spread)
	}
	drops := r.b.Stats.Drop(DropNoService)
	for _, port := range []uint16{79, 81, 442, 444, 7999, 8100, 22} {
		if v, _ := synTo(t, r.b, client, 30000, port); v != Drop {
			t.Fatalf("SYN to %d, outside the selector: %v, want Drop", port, v)
		}
	}
	if n := r.b.Stats.Drop(DropNoService) - drops; n != 7 {
		t.Fatalf("%v counted %d for 7 ports outside the selector", DropNoService, n)
	}
	f := frame(t, pktSpec{src: client, dst: vip, sport: 1000, dport: 443, proto: UDP, srcMAC: macClient})
	if v := r.b.Process(ClientSide, f); v != Drop {
		t.Fatalf("UDP to 443 of a TCP selector: %v, want Drop", v)
	}
	if s, err := r.b.MatchService(1); err != nil || s != svc {
		t.Fatalf("MatchService(1): %v, %v", s, err)
	}
	if _, err := r.b.MatchService(2); err == nil {
		t.Fatal("MatchService(2) found a service")
	}
}

// A VIP:port service of a port in a selector wins over it, as it does
// over a port-0 service; deleted, the selector takes the port again.
func TestMatchExactServiceWins(t *testing.T) {
	r, _ := matchRig(t)
	var exact *Service
	if err := r.b.Update(func(tx *Tx) error {
		var err error
		if exact, err = tx.AddService(ServiceConfig{Addr: vip, Port: 443, Protocol: TCP, Scheduler: "rr"}); err != nil {
			return err
		}
		if _, err = tx.AddLocalAddr(exact, lip1); err != nil {
			return err
		}
		d, err := tx.AddDest(exact, rs2, 9443, 1)
		if err != nil {
			return err
		}
		d.SetNextHopMAC(macGateway)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if v, to := synTo(t, r.b, client, 10000, 443); v != Forward || to != netip.AddrPortFrom(rs2, 9443) {
		t.Fatalf("SYN to 443 with a service of its own: %v to %v, want %v:9443", v, to, rs2)
	}
	if n := r.b.Templates(); n != 0 {
		t.Fatalf("templates %d: the exact service is not persistent", n)
	}
	if v, to := synTo(t, r.b, client, 10001, 80); v != Forward || to.Port() != 80 {
		t.Fatalf("SYN to 80: %v to %v, want the match service's", v, to)
	}
	if err := r.b.DeleteService(TCP, vip, 443); err != nil {
		t.Fatal(err)
	}
	if v, to := synTo(t, r.b, client, 10002, 443); v != Forward || to.Port() != 443 {
		t.Fatalf("SYN to 443 once its own service is gone: %v to %v, want the selector's, port 443", v, to)
	}
}

// A reload's new ports for a mark reach the running service; its VIP may
// not move under it, nor the mark go while it is used.
func TestMatchSetMarks(t *testing.T) {
	r, svc := matchRig(t)
	narrow := webMark
	narrow.Ports = []PortRange{{80, 80}}
	if err := r.b.Update(func(tx *Tx) error { return tx.SetMarks(map[uint32]Match{1: narrow}) }); err != nil {
		t.Fatal(err)
	}
	if v, _ := synTo(t, r.b, client, 10000, 443); v != Drop {
		t.Fatalf("SYN to 443 after the mark lost it: %v, want Drop", v)
	}
	if v, _ := synTo(t, r.b, client, 10001, 80); v != Forward {
		t.Fatalf("SYN to 80: %v, want Forward", v)
	}
	if p := svc.Selector().PortsString(); p != "80" {
		t.Fatalf("selector ports %q, want 80", p)
	}
	moved := narrow
	moved.Addr = netip.MustParseAddr("172.25.254.101")
	for _, c := range []struct {
		defs map[uint32]Match
		want string
	}{
		{map[uint32]Match{}, "mark 1 is no longer defined, but service FWM 1 uses it"},
		{map[uint32]Match{1: moved}, "mark 1 moves to tcp 172.25.254.101, but service FWM 1 uses it"},
	} {
		if err := r.b.Update(func(tx *Tx) error { return tx.SetMarks(c.defs) }); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error with %q", err, c.want)
		}
	}
	if err := r.b.Update(func(tx *Tx) error {
		s, err := tx.MatchService(1)
		if err != nil {
			return err
		}
		tx.DeleteService(s)
		return tx.SetMarks(nil)
	}); err != nil {
		t.Fatalf("the service deleted, then its mark: %v", err)
	}
	if v, _ := synTo(t, r.b, client, 10002, 80); v != Drop {
		t.Fatalf("SYN to 80 with no service: %v, want Drop", v)
	}
	if m := r.b.set.Load().matches; m != nil {
		t.Fatalf("the snapshot keeps %v with no match service left", m)
	}
}

// Each refusal names what is wrong, and leaves the marks as they were.
func TestMatchRefusals(t *testing.T) {
	r, _ := matchRig(t)
	other := Match{Addr: vip, Protocol: TCP, Ports: []PortRange{{8050, 8200}}}
	udp := Match{Addr: vip, Protocol: UDP, Ports: []PortRange{{80, 80}}} // another protocol: no overlap
	for _, c := range []struct {
		fn   func(tx *Tx) error
		want string
	}{
		{func(tx *Tx) error { return tx.SetMarks(map[uint32]Match{1: webMark, 2: other}) }, "mark 2: port 8050 of tcp 172.25.254.100 is mark 1's too"},
		{func(tx *Tx) error {
			return tx.SetMarks(map[uint32]Match{1: webMark, 2: {Addr: vip, Protocol: TCP, Ports: []PortRange{{8099, 8099}}}})
		}, "mark 2: port 8099 of tcp 172.25.254.100 is mark 1's too"},
		{func(tx *Tx) error {
			return tx.SetMarks(map[uint32]Match{1: webMark, 2: {Addr: vip, Protocol: TCP, Ports: []PortRange{{1, 80}}}})
		}, "mark 2: port 80 of tcp 172.25.254.100 is mark 1's too"},
		{func(tx *Tx) error {
			return tx.SetMarks(map[uint32]Match{1: webMark, 3: {Addr: vip, Ports: webMark.Ports}})
		}, "mark 3: protocol proto(0): only tcp and udp"},
		{func(tx *Tx) error {
			return tx.SetMarks(map[uint32]Match{1: webMark, 3: {Protocol: UDP, Ports: webMark.Ports}})
		}, "mark 3: VIP invalid IP"},
		{func(tx *Tx) error { return tx.SetMarks(map[uint32]Match{1: webMark, 0: udp}) }, "mark 0 is no mark"},
		{func(tx *Tx) error {
			return tx.SetMarks(map[uint32]Match{1: webMark, 3: {Addr: vip, Protocol: TCP}})
		}, "mark 3: has no ports"},
		{func(tx *Tx) error {
			return tx.SetMarks(map[uint32]Match{1: webMark, 3: {Addr: vip, Protocol: TCP, Ports: []PortRange{{90, 89}}}})
		}, "mark 3: port range 90-89"},
		{func(tx *Tx) error {
			return tx.SetMarks(map[uint32]Match{1: webMark, 3: {Addr: vip, Protocol: TCP, Ports: []PortRange{{0, 10}}}})
		}, "mark 3: port range 0-10"},
		{func(tx *Tx) error {
			return tx.SetMarks(map[uint32]Match{1: webMark, 3: {Addr: vip, Protocol: TCP, Ports: []PortRange{{90, 99}, {95, 95}}}})
		}, "mark 3: ports 90-99 and 95 overlap"},
		{func(tx *Tx) error {
			return tx.SetMarks(map[uint32]Match{1: webMark, 3: {Addr: vip, Protocol: TCP, Ports: []PortRange{{99, 100}, {90, 99}}}})
		}, "mark 3: ports 90-99 and 99-100 overlap"},
		{func(tx *Tx) error { _, err := tx.AddService(ServiceConfig{Mark: 7, Scheduler: "rr"}); return err }, "mark 7 is not defined"},
		{func(tx *Tx) error { _, err := tx.AddService(ServiceConfig{Mark: 1, Scheduler: "rr"}); return err }, "service FWM 1: service already exists"},
	} {
		if err := r.b.Update(c.fn); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error with %q", err, c.want)
		}
	}
	// Ranges that touch do not overlap; another VIP's selector may have
	// the same ports.
	adjacent := Match{Addr: vip, Protocol: TCP, Ports: []PortRange{{8100, 8100}, {81, 442}, {65535, 65535}}}
	other6 := Match{Addr: netip.MustParseAddr("172.25.254.101"), Protocol: TCP, Ports: webMark.Ports}
	if err := r.b.Update(func(tx *Tx) error {
		return tx.SetMarks(map[uint32]Match{1: webMark, 2: udp, 3: adjacent, 4: other6})
	}); err != nil {
		t.Fatalf("a UDP selector on the same ports, adjacent ranges, another VIP: %v", err)
	}
	if err := r.b.Update(func(tx *Tx) error { return tx.SetMarks(map[uint32]Match{1: webMark, 2: udp}) }); err != nil {
		t.Fatal(err)
	}
	if m := r.b.Marks(); len(m) != 2 || m[1].PortsString() != "80,443,8000-8099" {
		t.Fatalf("marks %+v", m)
	}
	// A match service needs no persistence (a port-0 service does).
	if err := r.b.Update(func(tx *Tx) error {
		_, err := tx.AddService(ServiceConfig{Mark: 2, Scheduler: "rr"})
		return err
	}); err != nil {
		t.Fatalf("a match service without persistence: %v", err)
	}
}

// The selector lookup the data path makes on a VIP:port miss allocates
// nothing.
func TestMatchLookupAllocs(t *testing.T) {
	r, svc := matchRig(t)
	set := r.b.set.Load()
	a := vip.As16()
	if n := testing.AllocsPerRun(100, func() {
		if set.match(&a, TCP, 8042) != svc || set.match(&a, TCP, 9000) != nil {
			panic("wrong service")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per lookup", n)
	}
}

// A connection of a match service moves to another instance (connection
// sync): the importer finds the service by the selector of its VIP's port.
func TestMatchImport(t *testing.T) {
	a, _ := matchRig(t)
	b, _ := matchRig(t)
	if v, _ := synTo(t, a.b, client, 10000, 8042); v != Forward {
		t.Fatal("SYN to 8042 not forwarded")
	}
	recs := exportAll(a.b)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	if err := b.b.ImportConn(&recs[0]); err != nil {
		t.Fatalf("import: %v", err)
	}
	if c := b.b.Table().Conns(); len(c) != 1 || c[0].VIP.Port() != 8042 || c[0].RIP.Port() != 8042 {
		t.Fatalf("imported %+v", c)
	}
}
