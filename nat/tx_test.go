package nat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// addressedRig is a rig whose balancer knows tapvs's own addresses, as the
// daemon's does.
func addressedRig(t *testing.T) *rig {
	return newRig(t, TCP, "rr", func(c *Config) {
		c.ClientNet = netip.MustParsePrefix("172.25.254.254/24")
		c.ServerNet = netip.MustParsePrefix("172.25.84.4/24")
	})
}

// A transaction that is refused anywhere changes nothing: not the services,
// not the addresses the data path answers for, not a weight.
func TestTxRefusedChangesNothing(t *testing.T) {
	r := addressedRig(t)
	before := r.b.set.Load()
	err := r.b.Update(func(tx *Tx) error {
		s, err := tx.AddService(ServiceConfig{Addr: mustAddr("172.25.254.101"), Port: 80, Protocol: TCP, Scheduler: "rr"})
		if err != nil {
			return err
		}
		if _, err := tx.AddLocalAddr(s, mustAddr("172.25.84.12")); err != nil {
			return err
		}
		if err := tx.SetWeight(r.svc, rs1, 8080, 9); err != nil {
			return err
		}
		tx.DeleteService(r.svc)
		_, err = tx.AddLocalAddr(s, mustAddr("10.9.9.9")) // not in the server side's subnet
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "10.9.9.9 is not in the server side's subnet") {
		t.Fatalf("refusal: %v", err)
	}
	if r.b.set.Load() != before || len(r.b.Services()) != 1 || r.d1.Weight() != 1 {
		t.Fatalf("a refused transaction changed the running state: %d services, weight %d", len(r.b.Services()), r.d1.Weight())
	}
	vips, lips := r.b.Addresses()
	if len(vips) != 1 || len(lips) != 1 {
		t.Fatalf("addresses after a refusal: %v %v", vips, lips)
	}
}

// The rules between addresses: a VIP, a LIP and a real server are three
// hosts, none of them tapvs, and each refusal says which and why.
func TestTxAddressRules(t *testing.T) {
	r := addressedRig(t)
	svc := func(tx *Tx) *Service { return tx.lookup(r.svc.key) }
	for _, tc := range []struct {
		name string
		do   func(tx *Tx) error
		want string
	}{
		{"VIP 0.0.0.0", func(tx *Tx) error {
			_, err := tx.AddService(ServiceConfig{Addr: mustAddr("0.0.0.0"), Port: 1, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "VIP 0.0.0.0 is the unspecified address"},
		{"VIP broadcast", func(tx *Tx) error {
			_, err := tx.AddService(ServiceConfig{Addr: mustAddr("255.255.255.255"), Port: 1, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "is the broadcast address"},
		{"VIP multicast", func(tx *Tx) error {
			_, err := tx.AddService(ServiceConfig{Addr: mustAddr("239.1.1.1"), Port: 1, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "multicast"},
		{"VIP loopback", func(tx *Tx) error {
			_, err := tx.AddService(ServiceConfig{Addr: mustAddr("127.0.0.2"), Port: 1, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "loopback"},
		{"VIP own", func(tx *Tx) error {
			_, err := tx.AddService(ServiceConfig{Addr: mustAddr("172.25.84.4"), Port: 1, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "tapvs's own address on the server side"},
		{"VIP is a LIP", func(tx *Tx) error {
			_, err := tx.AddService(ServiceConfig{Addr: lip1, Port: 1, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "is already a local address"},
		{"VIP is a real server", func(tx *Tx) error {
			_, err := tx.AddService(ServiceConfig{Addr: rs1, Port: 1, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "is already a real server"},
		{"VIP port 0", func(tx *Tx) error {
			_, err := tx.AddService(ServiceConfig{Addr: vip, Port: 0, Protocol: TCP, Scheduler: "rr"})
			return err
		}, "port 0"},
		{"LIP is a VIP", func(tx *Tx) error { _, err := tx.AddLocalAddr(svc(tx), vip); return err }, "not in the server side's subnet"},
		{"LIP is a real server", func(tx *Tx) error {
			if _, err := tx.AddDest(svc(tx), mustAddr("172.25.84.50"), 80, 1); err != nil {
				return err
			}
			_, err := tx.AddLocalAddr(svc(tx), mustAddr("172.25.84.50"))
			return err
		}, "local address 172.25.84.50 is already a real server"},
		{"LIP network address", func(tx *Tx) error { _, err := tx.AddLocalAddr(svc(tx), mustAddr("172.25.84.0")); return err }, "network address of the server side's subnet"},
		{"LIP twice", func(tx *Tx) error { _, err := tx.AddLocalAddr(svc(tx), lip1); return err }, ErrLocalAddrExists.Error()},
		{"RS is a LIP", func(tx *Tx) error { _, err := tx.AddDest(svc(tx), lip1, 80, 1); return err }, "real server 172.25.84.10:80 is already a local address"},
		{"RS is a VIP", func(tx *Tx) error { _, err := tx.AddDest(svc(tx), vip, 80, 1); return err }, "client side's subnet"},
		{"RS port 0", func(tx *Tx) error { _, err := tx.AddDest(svc(tx), mustAddr("10.1.1.1"), 0, 1); return err }, "port 0"},
		{"RS 0.0.0.0", func(tx *Tx) error { _, err := tx.AddDest(svc(tx), mustAddr("0.0.0.0"), 80, 1); return err }, "unspecified"},
		{"RS twice", func(tx *Tx) error { _, err := tx.AddDest(svc(tx), rs1, 8080, 1); return err }, ErrDestExists.Error()},
		{"weight", func(tx *Tx) error { return tx.SetWeight(svc(tx), rs1, 8080, 65536) }, "out of range"},
		{"timeout", func(tx *Tx) error {
			to := DefaultTimeouts()
			to.UDP = MaxTimeout + 1
			return tx.SetTimeouts(svc(tx), to)
		}, "udp"},
		{"UDP synproxy", func(tx *Tx) error {
			s, err := tx.AddService(ServiceConfig{Addr: vip, Port: 53, Protocol: UDP, Scheduler: "rr", Synproxy: true})
			_ = s
			return err
		}, "only a TCP service"},
	} {
		err := r.b.Update(tc.do)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if len(r.b.Services()) != 1 || len(r.svc.Dests()) != 2 || len(r.svc.LocalAddrs()) != 1 {
		t.Fatal("a refused change was applied")
	}
}

// A LIP taken off while connections use it stays the server side's address
// until they end: it cannot become a VIP or a real server meanwhile, but
// can once they have.
func TestTxRetiringLIPKeepsItsRole(t *testing.T) {
	r := addressedRig(t)
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})); v != Forward {
		t.Fatalf("SYN: %v", v)
	}
	lip2 := mustAddr("172.25.84.11")
	if _, err := r.b.AddLocalAddr(r.svc, lip2); err != nil {
		t.Fatal(err)
	}
	if err := r.b.DeleteLocalAddr(r.svc, lip1); err != nil {
		t.Fatal(err)
	}
	err := r.b.Update(func(tx *Tx) error { _, err := tx.AddDest(r.svc, lip1, 80, 1); return err })
	if err == nil || !strings.Contains(err.Error(), "is still the local address of 1 connections") {
		t.Fatalf("real server on a retiring LIP: %v", err)
	}
	for _, c := range r.b.Table().Conns() {
		if c.LIP.Addr() != lip1 {
			t.Fatalf("connection %+v", c)
		}
	}
	r.b.table.now.Store(int64(200 * time.Second)) // past its SYN_RECV timeout
	r.b.Sweep()
	if err := r.b.Update(func(tx *Tx) error { _, err := tx.AddDest(r.svc, lip1, 80, 1); return err }); err != nil {
		t.Fatalf("after its connections ended: %v", err)
	}
}

// A health check's change asked for while a transaction is open is not
// undone by that transaction's commit: the checker's changes are
// transactions too, so it waits for the open one and is made on what that
// one left, whichever runs first.
func TestTxKeepsConcurrentHealthChange(t *testing.T) {
	r := newRig(t, TCP, "wrr", nil)
	health := make(chan error, 1)
	err := r.b.Update(func(tx *Tx) error {
		if err := tx.SetWeight(r.svc, rs1, 8080, 5); err != nil {
			return err
		}
		go func() { // the checker removes rs2 meanwhile
			health <- r.b.Update(func(tx *Tx) error { return tx.DeleteDest(r.svc, rs2, 8080) })
		}()
		_, err := tx.AddDest(r.svc, mustAddr("10.20.3.2"), 8080, 2)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-health; err != nil {
		t.Fatal(err)
	}
	ds := r.svc.Dests()
	if r.d1.Weight() != 5 || len(ds) != 2 || r.svc.Dest(rs2, 8080) != nil || r.svc.Dest(mustAddr("10.20.3.2"), 8080) == nil {
		t.Fatalf("weight %d, servers %v", r.d1.Weight(), ds)
	}
}

// A real server deleted and added again in one Tx is the new entry, with
// the new weight; the old one's counts go to the service's.
func TestTxDeleteThenAddDest(t *testing.T) {
	r := newRig(t, TCP, "wrr", nil)
	r.d2.total.Store(7)
	var d *Dest
	if err := r.b.Update(func(tx *Tx) error {
		if err := tx.DeleteDest(r.svc, rs2, 8080); err != nil {
			return err
		}
		var err error
		d, err = tx.AddDest(r.svc, rs2, 8080, 4)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := r.svc.Dest(rs2, 8080); got != d || got.Weight() != 4 || len(r.svc.Dests()) != 2 {
		t.Fatalf("rs2 is %p weight %d (want the new %p, weight 4), %d servers", got, got.Weight(), d, len(r.svc.Dests()))
	}
	if tr := r.svc.Traffic(); tr.Conns != 7 {
		t.Fatalf("service counts %d connections, want the deleted entry's 7", tr.Conns)
	}
}

// Errors keep their kind through a transaction, for the API's codes.
func TestTxErrorKinds(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	_, err := r.b.AddService(ServiceConfig{Addr: vip, Port: 80, Protocol: TCP, Scheduler: "rr"})
	if !errors.Is(err, ErrServiceExists) {
		t.Fatalf("%v", err)
	}
	if err := r.b.DeleteService(TCP, vip, 81); !errors.Is(err, ErrNoService) {
		t.Fatalf("%v", err)
	}
}

// Transactions run while readers forward: nothing the packet path reads is
// written in place (run with -race).
func TestTxConcurrentWithTraffic(t *testing.T) {
	r := addressedRig(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f := frame(t, pktSpec{src: client, dst: vip, sport: uint16(20000 + i%1000), dport: 80, proto: TCP, syn: true, srcMAC: macClient})
			r.b.Process(ClientSide, f)
			for _, s := range r.b.Services() {
				_, _ = s.Scheduler(), s.Name()
			}
		}
	}()
	for i := range 200 {
		err := r.b.Update(func(tx *Tx) error {
			s, err := tx.AddService(ServiceConfig{Name: "x", Addr: mustAddr("172.25.254.101"), Port: uint16(1000 + i), Protocol: TCP, Scheduler: "rr"})
			if err != nil {
				return err
			}
			if _, err := tx.AddLocalAddr(s, mustAddr("172.25.84.12")); err != nil {
				return err
			}
			tx.SetName(r.svc, fmt.Sprint("web", i))
			if err := tx.SetScheduler(r.svc, []string{"rr", "wlc"}[i%2], 0); err != nil {
				return err
			}
			return tx.SetWeight(r.svc, rs2, 8080, i%3)
		})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			r.b.Clear()
			r.b.Update(func(tx *Tx) error {
				s, _ := tx.AddService(ServiceConfig{Addr: vip, Port: 80, Protocol: TCP, Scheduler: "rr"})
				tx.AddLocalAddr(s, lip1)
				d, _ := tx.AddDest(s, rs2, 8080, 1)
				d.SetNextHopMAC(macGateway)
				r.svc = s
				return nil
			})
		}
		r.b.Sweep()
	}
	close(stop)
	<-done
}

// A real server added while another service (or the same one, before a
// reload took it out) already reaches its address starts with that next
// hop: its first connection is not dropped as no_neighbor.
func TestAddedDestKnowsItsNextHop(t *testing.T) {
	r := newRig(t, TCP, "rr", nil) // rs1 and rs2 resolved (macGateway)
	var d *Dest
	if err := r.b.Update(func(tx *Tx) error {
		s, err := tx.AddService(ServiceConfig{Addr: vip, Port: 81, Protocol: TCP, Scheduler: "rr"})
		if err != nil {
			return err
		}
		if _, err := tx.AddLocalAddr(s, lip1); err != nil {
			return err
		}
		d, err = tx.AddDest(s, rs1, 8080, 1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if mac, ok := d.NextHopMAC(); !ok || mac != macGateway {
		t.Fatalf("the new entry's next hop: %v %v, want %v", mac, ok, macGateway)
	}
	f := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 81, proto: TCP, syn: true, srcMAC: macClient})
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatalf("first SYN: %v, drops %v", v, r.b.Stats.Drops())
	}
}

// The snapshot is made from the last one by each Tx's changes: after any
// sequence of them it holds what one built from scratch would (every
// service by key, a VIP per service, the LIPs of all), and the address
// index counts every address of every service.
func TestSnapshotFollowsChanges(t *testing.T) {
	b, err := New(Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts()})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for range 400 {
		_ = b.Update(func(tx *Tx) error {
			for range 1 + rng.IntN(4) {
				vip := netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(8))})
				port := uint16(80 + rng.IntN(3))
				s, err := tx.Service(TCP, vip, port)
				switch op := rng.IntN(6); {
				case err != nil:
					_, err = tx.AddService(ServiceConfig{Addr: vip, Port: port, Protocol: TCP, Scheduler: "rr"})
				case op == 0:
					tx.DeleteService(s)
				case op == 1:
					_, err = tx.AddLocalAddr(s, netip.AddrFrom4([4]byte{172, 25, 84, byte(10 + rng.IntN(4))}))
				case op == 2:
					if ls := tx.LocalAddrs(s); len(ls) > 0 {
						err = tx.DeleteLocalAddr(s, ls[rng.IntN(len(ls))].Addr)
					}
				case op == 3:
					_, err = tx.AddDest(s, netip.AddrFrom4([4]byte{192, 168, 0, byte(rng.IntN(6))}), 8080, 1)
				case op == 4:
					if ds := tx.Dests(s); len(ds) > 0 {
						err = tx.DeleteDest(s, ds[rng.IntN(len(ds))].Addr, 8080)
					}
				}
				_ = err // refusals (an address in use) are part of the test
			}
			if rng.IntN(5) == 0 {
				return errors.New("abandoned")
			}
			return nil
		})
		set := b.set.Load()
		vips, lips, use := map[addr16]bool{}, map[addr16]bool{}, map[netip.Addr][numRoles]int32{}
		for _, s := range b.Services() {
			if set.service(s.key) != s {
				t.Fatalf("%s not found by its key", s)
			}
			vips[s.key.addr] = true
			c := use[s.Addr]
			c[roleVIP]++
			use[s.Addr] = c
			for _, l := range s.LocalAddrs() {
				lips[l.a16] = true
				c := use[l.Addr]
				c[roleLIP]++
				use[l.Addr] = c
			}
			for _, d := range s.Dests() {
				c := use[d.Addr]
				c[roleRS]++
				use[d.Addr] = c
			}
		}
		if set.byKey.n != len(b.Services()) || set.vips.n != len(vips) || set.lips.n != len(lips) {
			t.Fatalf("snapshot: %d services, %d VIPs, %d LIPs; from scratch %d, %d, %d",
				set.byKey.n, set.vips.n, set.lips.n, len(b.Services()), len(vips), len(lips))
		}
		for a := range vips {
			if !set.hasVIP(&a) {
				t.Fatalf("VIP %v missing", netip.AddrFrom16(a))
			}
		}
		for a := range lips {
			if !set.hasLIP(&a) {
				t.Fatalf("LIP %v missing", netip.AddrFrom16(a))
			}
		}
		if len(b.idx.use) != len(use) {
			t.Fatalf("the index holds %d addresses, the services %d", len(b.idx.use), len(use))
		}
		for a, c := range use {
			if u := b.idx.use[a]; u == nil || u.n != c {
				t.Fatalf("index of %s: %v, want %v", a, u, c)
			}
		}
	}
}

// Changes reports what each commit published for the stack to follow: a
// VIP or LIP coming in or going (not a second service on the same
// address), and the real servers to resolve; a reader too far behind is
// told to read the whole state.
func TestChanges(t *testing.T) {
	b, err := New(Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: DefaultTimeouts()})
	if err != nil {
		t.Fatal(err)
	}
	since := b.Generation()
	vipA, lipA, rsA := mustAddr("10.0.0.1"), mustAddr("172.25.84.10"), mustAddr("192.168.0.1")
	add := func(port uint16) *Service {
		var s *Service
		if err := b.Update(func(tx *Tx) error {
			var err error
			if s, err = tx.AddService(ServiceConfig{Addr: vipA, Port: port, Protocol: TCP, Scheduler: "rr"}); err != nil {
				return err
			}
			if _, err = tx.AddLocalAddr(s, lipA); err != nil {
				return err
			}
			_, err = tx.AddDest(s, rsA, 8080, 1)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s80 := add(80)
	got, gen, ok := b.Changes(since)
	if !ok || gen != b.Generation() || len(got) != 3 {
		t.Fatalf("after the first service: %+v gen %d ok %v", got, gen, ok)
	}
	want := map[Change]bool{{Side: ClientSide, Addr: vipA, Added: true}: true, {Side: ServerSide, Addr: lipA, Added: true}: true}
	for _, c := range got {
		if c.Dest != nil {
			if c.Dest != s80.Dest(rsA, 8080) {
				t.Fatalf("dest change %v", c.Dest)
			}
			continue
		}
		if !want[c] {
			t.Fatalf("change %+v", c)
		}
	}
	// A second service on the same VIP and LIP: only its real server.
	since = gen
	add(81)
	if got, _, _ := b.Changes(since); len(got) != 1 || got[0].Dest == nil {
		t.Fatalf("a second service on the same addresses: %+v", got)
	}
	// Both go: the addresses go once the last holder does.
	since = b.Generation()
	if err := b.DeleteService(TCP, vipA, 80); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := b.Changes(since); len(got) != 0 {
		t.Fatalf("one of two services on the addresses deleted: %+v", got)
	}
	if err := b.DeleteService(TCP, vipA, 81); err != nil {
		t.Fatal(err)
	}
	got, _, _ = b.Changes(since)
	if len(got) != 2 || got[0].Added || got[1].Added {
		t.Fatalf("the last service deleted: %+v", got)
	}
	// More changes than are kept: the reader is told to read the whole.
	old := b.Generation()
	loadServices(t, b, maxChangeLog/3+1)
	if _, _, ok := b.Changes(old); ok {
		t.Fatal("a reader behind more changes than are kept was not told")
	}
	if _, _, ok := b.Changes(b.Generation()); !ok {
		t.Fatal("an up-to-date reader was told to read the whole")
	}
}
