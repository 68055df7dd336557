package nat

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// persistRig is the rig's service (rr over rs1 and rs2) made persistent.
func persistRig(t testing.TB, p Persistence, mod func(*Config)) *rig {
	t.Helper()
	r := newRig(t, TCP, "rr", mod)
	if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, p) }); err != nil {
		t.Fatal(err)
	}
	return r
}

// synTo sends a SYN from src:sport to vip:dport and returns the verdict
// and, when forwarded, the real server and port it was sent to.
func synTo(t testing.TB, b *Balancer, src netip.Addr, sport, dport uint16) (Verdict, netip.AddrPort) {
	t.Helper()
	f := frame(t, pktSpec{src: src, dst: vip, sport: sport, dport: dport, proto: TCP, syn: true, srcMAC: macClient})
	v := b.Process(ClientSide, f)
	if v != Forward {
		return v, netip.AddrPort{}
	}
	d := decode(t, f)
	return v, netip.AddrPortFrom(addr(d.ip.DstIP), uint16(d.tcp.DstPort))
}

// mustSyn is synTo that must be forwarded; it returns the server's address.
func mustSyn(t *testing.T, b *Balancer, src netip.Addr, sport uint16) netip.Addr {
	t.Helper()
	v, to := synTo(t, b, src, sport, 80)
	if v != Forward {
		t.Fatalf("SYN %v:%d: verdict %v, drops %v", src, sport, v, b.Stats.Drops())
	}
	return to.Addr()
}

// tick moves the rig's clock by d and sweeps.
func (r *rig) tick(d time.Duration) {
	r.b.table.now.Add(int64(d))
	r.b.Sweep()
}

// One client's connections all go to one server, however many it opens,
// while rr spreads other clients; without persistence the same client's
// connections alternate (what persistence changes).
func TestPersistClientSticks(t *testing.T) {
	plain := newRig(t, TCP, "rr", nil)
	seen := map[netip.Addr]int{}
	for i := range 4 {
		seen[mustSyn(t, plain.b, client, uint16(10000+i))]++
	}
	if len(seen) != 2 {
		t.Fatalf("without persistence, rr sent one client's 4 connections to %v: want both servers", seen)
	}

	r := persistRig(t, Persistence{Timeout: 600 * time.Second}, nil)
	first := mustSyn(t, r.b, client, 10000)
	for i := range 20 {
		if got := mustSyn(t, r.b, client, uint16(10001+i)); got != first {
			t.Fatalf("connection %d of %v went to %v, its first to %v", i+2, client, got, first)
		}
	}
	spread := map[netip.Addr]int{}
	for i := range 10 {
		spread[mustSyn(t, r.b, clientAddr(i), 20000)]++
	}
	if len(spread) != 2 {
		t.Fatalf("10 other clients went to %v: the scheduler must still spread new clients", spread)
	}
	if n := r.b.Templates(); n != 11 {
		t.Fatalf("templates %d, want 11 (one per client)", n)
	}
	if a, b := r.d1.PersistConns(), r.d2.PersistConns(); a+b != 11 || a == 0 || b == 0 {
		t.Fatalf("PersistConns %d and %d, want 11 in all, some each", a, b)
	}
	list := r.b.TemplateList()
	if len(list) != 11 {
		t.Fatalf("TemplateList has %d, want 11", len(list))
	}
	for _, ti := range list {
		if ti.Client == netip.AddrPortFrom(client, 0) {
			if ti.RIP != netip.AddrPortFrom(first, 8080) || ti.Conns != 21 || ti.VIP != netip.AddrPortFrom(vip, 80) || ti.Expires != 600*time.Second {
				t.Fatalf("template of %v: %+v, want to %v:8080, 21 connections, 600s", client, ti, first)
			}
		}
	}
}

// A template outlives its timeout while a connection it made is open
// (given the timeout again), expires once none is and its time is up, and
// the client is then scheduled afresh: rr's next server.
func TestPersistTemplateExpiry(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: 60 * time.Second}, nil)
	fl := openFlow(t, r.b, client, 10000, vip) // established: 90s
	first := fl.rip

	r.tick(59 * time.Second)
	fl.exchange(t, r.b)                                      // the flow's 90s start again
	if got := mustSyn(t, r.b, client, 10001); got != first { // refreshes: 60s from here
		t.Fatalf("within the timeout, went to %v, not %v", got, first)
	}
	r.tick(61 * time.Second) // the template's time is up, the established flow (90s) is not
	if r.b.Templates() != 1 {
		t.Fatalf("a template with an open connection expired")
	}
	fl.exchange(t, r.b) // keeps the flow alive
	if got := mustSyn(t, r.b, client, 10002); got != first {
		t.Fatalf("the template given more time sent the client to %v, not %v", got, first)
	}
	r.tick(10 * time.Minute) // every connection ends, then the template
	if n := r.b.Templates(); n != 0 || r.b.Table().Len() != 0 {
		t.Fatalf("after every connection and the timeout: templates %d, connections %d, want 0 and 0", n, r.b.Table().Len())
	}
	if r.d1.PersistConns()+r.d2.PersistConns() != 0 {
		t.Fatalf("PersistConns not given back: %d %d", r.d1.PersistConns(), r.d2.PersistConns())
	}
	// rr's next pick is the other server: a client with a template would
	// not have been asked about.
	if got := mustSyn(t, r.b, client, 10003); got == first {
		t.Fatalf("after expiry the client went back to %v: not rescheduled", got)
	}
}

// Without a connection, a template lasts its timeout from its last use,
// and is gone within the wheel's tick (100 ms) after it, as a
// connection is.
func TestPersistTemplateDeadline(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: 60 * time.Second}, nil)
	mustSyn(t, r.b, client, 10000)
	r.tick(30 * time.Second) // the SYN's entry (a few seconds) is gone
	if r.b.Table().Len() != 0 || r.b.Templates() != 1 {
		t.Fatalf("at 30s: connections %d, templates %d, want 0 and 1", r.b.Table().Len(), r.b.Templates())
	}
	r.tick(30*time.Second - time.Millisecond)
	if r.b.Templates() != 1 {
		t.Fatal("expired before its timeout")
	}
	r.tick(time.Millisecond)
	if r.b.Templates() != 1 {
		t.Fatal("expired at its deadline, before the wheel's tick passed")
	}
	r.tick(time.Duration(wheelTick))
	if r.b.Templates() != 0 {
		t.Fatal("lives past its timeout with no connection")
	}

	// Each use refreshes it: used at 50s, it is there at 109s (with no
	// connection left), and gone at 110s.
	mustSyn(t, r.b, client, 10001)
	r.tick(50 * time.Second)
	mustSyn(t, r.b, client, 10002)
	r.tick(59*time.Second + time.Duration(wheelTick))
	if r.b.Table().Len() != 0 || r.b.Templates() != 1 {
		t.Fatalf("59s after its last use: connections %d, templates %d, want 0 and 1", r.b.Table().Len(), r.b.Templates())
	}
	r.tick(time.Second)
	if r.b.Templates() != 0 {
		t.Fatal("lives past its timeout from its last use")
	}
}

// A connection the template chose a server for but that is not made (the
// server's next hop unknown) holds no count in it; with no server at all
// no template is made (or counted), and a quiescent one stays until a
// server can replace it.
func TestPersistNoServer(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: time.Minute}, nil)
	rs3 := netip.MustParseAddr("10.20.3.2")
	if err := r.b.Update(func(tx *Tx) error {
		if _, err := tx.AddDest(r.svc, rs3, 8080, 1); err != nil {
			return err
		}
		if err := tx.SetWeight(r.svc, rs1, 8080, 0); err != nil {
			return err
		}
		return tx.SetWeight(r.svc, rs2, 8080, 0)
	}); err != nil {
		t.Fatal(err)
	}
	if v, _ := synTo(t, r.b, client, 10000, 80); v != Drop || r.b.Stats.Drop(DropNoNeighbor) != 1 {
		t.Fatalf("to a server of no next hop: %v, drops %v", v, r.b.Stats.Drops())
	}
	if l := r.b.TemplateList(); len(l) != 1 || l[0].Conns != 0 || l[0].RIP.Addr() != rs3 {
		t.Fatalf("templates %+v, want one to %v holding no connection", l, rs3)
	}
	r.setWeight(t, rs3, 8080, 0)
	if v, _ := synTo(t, r.b, client, 10001, 80); v != Drop || r.b.Stats.Drop(DropNoDest) != 1 {
		t.Fatalf("every server drained: %v, drops %v", v, r.b.Stats.Drops())
	}
	if v, _ := synTo(t, r.b, clientAddr(1), 10000, 80); v != Drop || r.b.Stats.Drop(DropNoDest) != 2 {
		t.Fatalf("every server drained, a new client: %v, drops %v", v, r.b.Stats.Drops())
	}
	if n := r.b.Templates(); n != 1 {
		t.Fatalf("templates %d, want the quiescent one only", n)
	}
}

func TestNetmaskText(t *testing.T) {
	for _, c := range []struct {
		in   string
		v4   bool
		bits int
		out  string
	}{
		{"255.255.255.0", true, 24, "255.255.255.0"}, {"24", true, 24, "255.255.255.0"}, {"255.255.255.255", true, 32, ""},
		{"255.255.255.128", true, 25, "255.255.255.128"}, {"128.0.0.0", true, 1, "128.0.0.0"}, {"1", true, 1, "128.0.0.0"},
		{"64", false, 64, "64"}, {"128", false, 128, ""}, {"1", false, 1, "1"},
	} {
		bits, err := ParseNetmask(c.in, c.v4)
		if err != nil || bits != c.bits || NetmaskString(bits, c.v4) != c.out {
			t.Errorf("%q: /%d %v, printed %q; want /%d %q", c.in, bits, err, NetmaskString(bits, c.v4), c.bits, c.out)
		}
	}
	for _, c := range []struct {
		in string
		v4 bool
	}{{"0", true}, {"33", true}, {"0.0.0.0", true}, {"255.0.255.0", true}, {"255.255.255.1", true}, {"::", true}, {"x", true},
		{"129", false}, {"0", false}, {"255.255.255.0", false}, {"ffff::", false}} {
		if bits, err := ParseNetmask(c.in, c.v4); err == nil {
			t.Errorf("%q (v4 %v) taken as /%d", c.in, c.v4, bits)
		}
	}
}

// -M 255.255.255.0: two clients of one /24 share a template and a server;
// a client of another /24 does not; with the whole address (the default)
// the same two clients are two clients.
func TestPersistNetmask(t *testing.T) {
	a, b := netip.MustParseAddr("172.25.253.10"), netip.MustParseAddr("172.25.253.200")
	other := netip.MustParseAddr("172.25.252.10")

	r := persistRig(t, Persistence{Timeout: time.Minute, Mask: 24}, nil)
	first := mustSyn(t, r.b, a, 10000)
	for i := range 6 {
		if got := mustSyn(t, r.b, b, uint16(10001+i)); got != first {
			t.Fatalf("%v (the /24 of %v) went to %v, not %v", b, a, got, first)
		}
	}
	if got := mustSyn(t, r.b, other, 10000); got == first {
		t.Fatalf("%v, another /24, went to %v too (rr's next is the other server)", other, got)
	}
	if n := r.b.Templates(); n != 2 {
		t.Fatalf("templates %d, want 2 (one per /24)", n)
	}
	for _, ti := range r.b.TemplateList() {
		if ti.Client.Addr() != netip.MustParseAddr("172.25.253.0") && ti.Client.Addr() != netip.MustParseAddr("172.25.252.0") {
			t.Fatalf("template client %v is not a /24's network", ti.Client)
		}
	}

	whole := persistRig(t, Persistence{Timeout: time.Minute}, nil)
	if mustSyn(t, whole.b, a, 10000) == mustSyn(t, whole.b, b, 10000) {
		t.Fatal("/32: two clients went to one server under rr: the mask is not the whole address")
	}

	// A changed netmask drops the templates (their keys are the old
	// mask's); a changed timeout keeps them.
	if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, Persistence{Timeout: 2 * time.Minute, Mask: 24}) }); err != nil {
		t.Fatal(err)
	}
	if r.b.Templates() != 2 {
		t.Fatalf("a new timeout dropped templates: %d left", r.b.Templates())
	}
	if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, Persistence{Timeout: time.Minute, Mask: 16}) }); err != nil {
		t.Fatal(err)
	}
	if r.b.Templates() != 0 {
		t.Fatalf("a new netmask kept %d templates", r.b.Templates())
	}
	if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, Persistence{}) }); err != nil {
		t.Fatal(err)
	}
	mustSyn(t, r.b, a, 11000)
	if r.b.Templates() != 0 {
		t.Fatal("persistence off, a template was made")
	}
}

func TestMaskAddr(t *testing.T) {
	for _, c := range []struct {
		in   string
		bits int
		want string
	}{
		{"10.1.2.3", 32, "10.1.2.3"}, {"10.1.2.3", 24, "10.1.2.0"}, {"10.1.2.255", 25, "10.1.2.128"},
		{"10.1.2.3", 0, "0.0.0.0"}, {"10.1.2.3", 9, "10.0.0.0"}, {"10.129.2.3", 9, "10.128.0.0"},
		{"2001:db8::1", 128, "2001:db8::1"}, {"2001:db8:1:2::1", 64, "2001:db8:1:2::"}, {"2001:db8:ffff::1", 33, "2001:db8:8000::"},
	} {
		a := netip.MustParseAddr(c.in).As16()
		if got := netip.AddrFrom16(maskAddr(&a, c.bits)).Unmap(); got != netip.MustParseAddr(c.want) {
			t.Errorf("mask %s/%d = %v, want %s", c.in, c.bits, got, c.want)
		}
	}
}

// A drained server's template is not used: the client's next connection
// gets a new template from the scheduler, while its open connection to the
// drained server goes on; so is a deleted server's.
func TestPersistQuiescentTemplate(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: 10 * time.Minute}, nil)
	fl := openFlow(t, r.b, client, 10000, vip)
	drained, other := r.d1, r.d2
	if fl.rip != drained.Addr {
		drained, other = other, drained
	}
	r.setWeight(t, drained.Addr, 8080, 0)
	for i := range 3 {
		if got := mustSyn(t, r.b, client, uint16(10001+i)); got != other.Addr {
			t.Fatalf("after the drain, connection %d went to %v, want %v", i, got, other.Addr)
		}
	}
	fl.exchange(t, r.b) // the drained server's connection still flows
	if drained.PersistConns() != 0 || other.PersistConns() != 1 || r.b.Templates() != 1 {
		t.Fatalf("PersistConns drained %d other %d, templates %d: want 0 1 1", drained.PersistConns(), other.PersistConns(), r.b.Templates())
	}
	// Weight back: the client stays on its new template's server.
	r.setWeight(t, drained.Addr, 8080, 1)
	if got := mustSyn(t, r.b, client, 10010); got != other.Addr {
		t.Fatalf("undrained, the client moved back to %v", got)
	}

	// Deleted: the same.
	if err := r.b.Update(func(tx *Tx) error { return tx.DeleteDest(r.svc, other.Addr, 8080) }); err != nil {
		t.Fatal(err)
	}
	if got := mustSyn(t, r.b, client, 10011); got != drained.Addr {
		t.Fatalf("its server deleted, the client went to %v, want %v", got, drained.Addr)
	}
}

// allPortsRig is the rig with a persistent all-ports service on its VIP
// too: rr over rs1 and rs2 on port 0.
func allPortsRig(t *testing.T) *rig {
	t.Helper()
	r := newRig(t, TCP, "rr", nil)
	if err := r.b.Update(func(tx *Tx) error {
		all, err := tx.AddService(ServiceConfig{Name: "all", Addr: vip, Port: 0, Protocol: TCP, Scheduler: "rr",
			Persistence: Persistence{Timeout: time.Minute}})
		if err != nil {
			return err
		}
		if _, err = tx.AddLocalAddr(all, lip1); err != nil {
			return err
		}
		for _, a := range []netip.Addr{rs1, rs2} {
			d, err := tx.AddDest(all, a, 0, 1)
			if err != nil {
				return err
			}
			d.SetNextHopMAC(macGateway)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

// A connection of an all-ports service moves to another instance
// (connection sync): its record names the client's port, which the
// importer finds the port-0 service and server by.
func TestPersistAllPortsImport(t *testing.T) {
	a, b := allPortsRig(t), allPortsRig(t)
	if v, _ := synTo(t, a.b, client, 10000, 443); v != Forward {
		t.Fatal("SYN to 443 not forwarded")
	}
	recs := exportAll(a.b)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	if err := b.b.ImportConn(&recs[0]); err != nil {
		t.Fatalf("import: %v", err)
	}
	if c := b.b.Table().Conns(); len(c) != 1 || c[0].VIP.Port() != 443 || c[0].RIP.Port() != 443 {
		t.Fatalf("imported %+v", c)
	}
}

// A template given a shorter timeout (-p) takes it at its next use, and
// expires by it, not at the tick its old deadline was filed under.
func TestPersistShorterTimeout(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: 10 * time.Minute}, nil)
	mustSyn(t, r.b, client, 10000)
	if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, Persistence{Timeout: time.Minute}) }); err != nil {
		t.Fatal(err)
	}
	r.tick(time.Second)
	mustSyn(t, r.b, client, 10001) // due at 61s now
	r.tick(61*time.Second + time.Duration(wheelTick))
	if n := r.b.Templates(); n != 0 {
		t.Fatalf("templates %d a minute after its last use with a minute's timeout", n)
	}
}

// A replaced template still on the wheel is not its key's any more: when
// its time comes the template that replaced it stays.
func TestPersistReplacedTemplateExpires(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: time.Minute}, nil)
	first := mustSyn(t, r.b, client, 10000)
	r.tick(30 * time.Second)
	r.setWeight(t, first, 8080, 0)
	second := mustSyn(t, r.b, client, 10001) // a new template, due at 90s
	r.tick(31 * time.Second)                 // the first's time (60s) has come
	if n := r.b.Templates(); n != 1 {
		t.Fatalf("templates %d, want the second one", n)
	}
	r.setWeight(t, first, 8080, 1)
	if got := mustSyn(t, r.b, client, 10002); got != second {
		t.Fatalf("the client went to %v, its template's server is %v", got, second)
	}
}

// Port 0 (all ports): one template per client covers every port of the
// VIP; each connection keeps its own port to the server; a service of its
// own port on the VIP wins.
func TestPersistAllPorts(t *testing.T) {
	r := allPortsRig(t)
	v, first := synTo(t, r.b, client, 10000, 443)
	if v != Forward || first.Port() != 443 {
		t.Fatalf("SYN to port 443: %v to %v, want forwarded to port 443", v, first)
	}
	for i, port := range []uint16{22, 8443, 443, 5000} {
		if v, to := synTo(t, r.b, client, uint16(10001+i), port); v != Forward || to != netip.AddrPortFrom(first.Addr(), port) {
			t.Fatalf("SYN to port %d: %v to %v, want %v:%d", port, v, to, first.Addr(), port)
		}
	}
	if n := r.b.Templates(); n != 1 {
		t.Fatalf("templates %d, want 1 for every port", n)
	}
	// Port 80 has its own service (not persistent, servers on 8080).
	if v, to := synTo(t, r.b, client, 10100, 80); v != Forward || to.Port() != 8080 {
		t.Fatalf("SYN to port 80: %v to %v: the port's own service must win", v, to)
	}
	if l := r.b.TemplateList(); len(l) != 1 || l[0].VIP != netip.AddrPortFrom(vip, 0) || l[0].RIP != netip.AddrPortFrom(first.Addr(), 0) {
		t.Fatalf("templates %+v, want one from %v:0 to %v:0", l, vip, first.Addr())
	}
	// UDP to the VIP has no service: port 0 is per protocol.
	f := frame(t, pktSpec{src: client, dst: vip, sport: 1000, dport: 443, proto: UDP, srcMAC: macClient})
	if v := r.b.Process(ClientSide, f); v != Drop {
		t.Fatalf("UDP to a TCP all-ports VIP: %v, want Drop", v)
	}
}

// Port 0 needs persistence, and a server of port 0 an all-ports service:
// each refusal names what is wrong.
func TestPersistRefusals(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	for _, c := range []struct {
		fn   func(tx *Tx) error
		want string
	}{
		{func(tx *Tx) error {
			_, err := tx.AddService(ServiceConfig{Addr: vip, Port: 0, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "port 0 (all ports) needs persistence"},
		{func(tx *Tx) error { _, err := tx.AddDest(r.svc, rs1, 0, 1); return err }, "port 0"},
		{func(tx *Tx) error { return tx.SetPersistence(r.svc, Persistence{Timeout: time.Minute, Mask: 33}) }, "netmask /33"},
		{func(tx *Tx) error {
			return tx.SetPersistence(r.svc, Persistence{Timeout: MaxPersistTimeout + time.Second})
		}, "persistence timeout"},
		{func(tx *Tx) error { return tx.SetPersistence(r.svc, Persistence{Timeout: time.Millisecond}) }, "below a second"},
		{func(tx *Tx) error {
			s, err := tx.AddService(ServiceConfig{Addr: vip, Port: 0, Protocol: UDP, Scheduler: "rr", Persistence: Persistence{Timeout: time.Minute}})
			if err != nil {
				return err
			}
			return tx.SetPersistence(s, Persistence{})
		}, "port 0 (all ports) needs persistence"},
	} {
		err := r.b.Update(c.fn)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error with %q", err, c.want)
		}
	}
	if err := r.b.Update(func(tx *Tx) error {
		return tx.SetPersistence(r.svc, Persistence{Timeout: MaxPersistTimeout, Mask: 32})
	}); err != nil {
		t.Fatalf("the largest timeout and /32: %v", err)
	}
}

// Templates are bounded: a new client network past the bound is dropped
// and counted, clients with a template go on, and an expired template
// makes room.
func TestPersistTemplateBound(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: time.Minute}, func(c *Config) { c.MaxTemplates = 2 })
	a, b, c := clientAddr(0), clientAddr(1), clientAddr(2)
	mustSyn(t, r.b, a, 10000)
	mustSyn(t, r.b, b, 10000)
	if v, _ := synTo(t, r.b, c, 10000, 80); v != Drop {
		t.Fatalf("a third client network past a bound of 2: %v, want Drop", v)
	}
	if n := r.b.Stats.Drop(DropTemplatesFull); n != 1 {
		t.Fatalf("%v counted %d, want 1", DropTemplatesFull, n)
	}
	if r.b.Templates() != 2 || r.b.Table().Len() != 2 {
		t.Fatalf("templates %d, connections %d, want 2 and 2", r.b.Templates(), r.b.Table().Len())
	}
	mustSyn(t, r.b, a, 10001) // a client with a template is not bounded
	r.tick(2 * time.Minute)
	mustSyn(t, r.b, c, 10000)
	if r.b.Templates() != 1 {
		t.Fatalf("templates %d after expiry and one new, want 1", r.b.Templates())
	}
}

// A deleted service's templates are given back at once.
func TestPersistServiceDeleted(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: time.Minute}, nil)
	mustSyn(t, r.b, client, 10000)
	if err := r.b.DeleteService(TCP, vip, 80); err != nil {
		t.Fatal(err)
	}
	if n := r.b.Templates(); n != 0 {
		t.Fatalf("templates %d after the service was deleted", n)
	}
}

// A connection that is scheduled but not made (no local port here) gives
// back its count in the template, which then expires on time.
func TestPersistFailedConnGivesBack(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: time.Minute}, func(c *Config) { c.PortMin, c.PortMax = 5000, 5000 })
	mustSyn(t, r.b, client, 10000)
	if v, _ := synTo(t, r.b, client, 10001, 80); v != Drop {
		t.Fatalf("with its one port taken: %v, want Drop", v)
	}
	l := r.b.TemplateList()
	if len(l) != 1 || l[0].Conns != 1 {
		t.Fatalf("templates %+v: want one holding 1 connection", l)
	}
}

// Readers opening connections of one client at once make one template
// and agree on its server.
func TestPersistConcurrent(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: time.Minute}, nil)
	const n = 8
	got := make([]netip.Addr, n)
	frames := make([]*Frame, n)
	for i := range frames {
		frames[i] = frame(t, pktSpec{src: client, dst: vip, sport: uint16(10000 + i), dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.b.Process(ClientSide, frames[i]) == Forward {
				got[i] = addr(decode(t, frames[i]).ip.DstIP)
			}
		}()
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] || !got[i].IsValid() {
			t.Fatalf("concurrent SYNs of one client went to %v", got)
		}
	}
	if r.b.Templates() != 1 {
		t.Fatalf("templates %d, want 1", r.b.Templates())
	}
}

// BenchmarkPersistPick is what persistence adds to a new connection: the
// template's lookup under its shard's lock (a client with a template),
// against rr's pick alone.
func BenchmarkPersistPick(b *testing.B) {
	r := newRig(b, TCP, "rr", func(c *Config) { c.MaxTemplates = 4096 })
	if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, Persistence{Timeout: time.Minute}) }); err != nil {
		b.Fatal(err)
	}
	ts, p := r.svc.tmpl.Load(), r.svc.Persistence()
	var clients [1024]tupleKey
	for i := range clients {
		clients[i].src = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).As16()
		r.b.persistPick(r.svc, ts, p, &clients[i])
	}
	b.Run("template", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_, t, _ := r.b.persistPick(r.svc, ts, p, &clients[i&1023])
			t.conns.Add(-1)
		}
	})
	b.Run("rr", func(b *testing.B) {
		b.ReportAllocs()
		sched := r.svc.dests.Load().sched
		for i := 0; i < b.N; i++ {
			sched.pick(&clients[i&1023])
		}
	})
}

// A server of its own port in an all-ports service takes every port's
// connections there; its template shows port 0, as IPVS's port-zero
// template does.
func TestPersistAllPortsFixedPort(t *testing.T) {
	r := allPortsRig(t)
	all, err := r.b.Service(TCP, vip, 0)
	if err != nil {
		t.Fatal(err)
	}
	rs3 := netip.MustParseAddr("10.20.3.2")
	if err := r.b.Update(func(tx *Tx) error {
		d, err := tx.AddDest(all, rs3, 8443, 1)
		if err != nil {
			return err
		}
		d.SetNextHopMAC(macGateway)
		if err := tx.SetWeight(all, rs1, 0, 0); err != nil {
			return err
		}
		return tx.SetWeight(all, rs2, 0, 0)
	}); err != nil {
		t.Fatal(err)
	}
	for i, port := range []uint16{443, 22} {
		if v, to := synTo(t, r.b, client, uint16(10000+i), port); v != Forward || to != netip.AddrPortFrom(rs3, 8443) {
			t.Fatalf("SYN to port %d: %v to %v, want %v:8443", port, v, to, rs3)
		}
	}
	if l := r.b.TemplateList(); len(l) != 1 || l[0].RIP != netip.AddrPortFrom(rs3, 0) {
		t.Fatalf("templates %+v, want one to %v:0", l, rs3)
	}
}

// BenchmarkSweepTemplates is a sweep a second with 1M live templates,
// none due (an hour's timeout): the wheel looks at the ten ticks passed,
// not at the templates.
func BenchmarkSweepTemplates(b *testing.B) {
	const n = 1 << 20
	r := newRig(b, TCP, "rr", func(c *Config) { c.MaxTemplates = n })
	if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, Persistence{Timeout: time.Hour}) }); err != nil {
		b.Fatal(err)
	}
	ts, p := r.svc.tmpl.Load(), r.svc.Persistence()
	for i := range n {
		k := tupleKey{src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).As16()}
		_, t, _ := r.b.persistPick(r.svc, ts, p, &k)
		t.conns.Add(-1)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.b.table.now.Add(int64(time.Second))
		if r.b.sweepTemplates(r.b.table.now.Load()) != 0 {
			b.Fatal("expired")
		}
	}
}

// BenchmarkNewConnPersist is a new connection's whole cost (a client's SYN
// through Process: lookup miss, scheduling, port, table insert, rewrite)
// with and without persistence, 1024 clients in turn each opening new
// connections, so that with persistence nearly every SYN finds its
// client's template (issue 25's budget: at most 20% more than without).
// The frames are built in batches outside the timer.
func BenchmarkNewConnPersist(b *testing.B) {
	for _, persist := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "persistent"}[persist], func(b *testing.B) {
			// A rig's local ports last about 120 000 connections: a
			// fresh one every 24 batches (98 304), outside the timer.
			const batch, perRig = 4096, 24 * 4096
			var r *rig
			fresh := func() {
				r = newRig(b, TCP, "rr", func(c *Config) { c.MaxConns = perRig + 1024; c.MaxTemplates = 4096 })
				if persist {
					if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, Persistence{Timeout: time.Minute}) }); err != nil {
						b.Fatal(err)
					}
				}
			}
			frames := make([]*Frame, 0, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%batch == 0 {
					b.StopTimer()
					if i%perRig == 0 {
						fresh()
					}
					frames = frames[:0]
					for j := i % perRig; j < i%perRig+batch; j++ {
						src := netip.AddrFrom4([4]byte{10, 1, byte(j >> 8 & 3), byte(j)})
						frames = append(frames, frame(b, pktSpec{src: src, dst: vip, sport: uint16(1024 + j>>10), dport: 80, proto: TCP, syn: true, srcMAC: macClient}))
					}
					b.StartTimer()
				}
				if v := r.b.Process(ClientSide, frames[i%batch]); v != Forward {
					b.Fatalf("SYN %d: %v", i, v)
				}
			}
		})
	}
}
