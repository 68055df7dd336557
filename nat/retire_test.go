package nat

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// A real server, a LIP or a whole service deleted while connections use it
// keeps serving those connections, both ways and rewritten as before, until
// they end; no new connection goes to it; and connections elsewhere are
// untouched. A deleted service's VIP refuses new connections (no_service)
// while its old ones last. Once the last connection on a retired LIP or
// VIP ends, the address is let go: the balancer no longer answers for it.
func TestDeletedServerLIPAndServiceKeepTheirConnections(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	b := r.b
	lip2 := mustAddr("172.25.84.11")
	vipB, lipB, rsB := mustAddr("172.25.254.101"), mustAddr("172.25.84.12"), mustAddr("10.20.3.2")
	var svcB *Service
	if err := b.Update(func(tx *Tx) error {
		if _, err := tx.AddLocalAddr(r.svc, lip2); err != nil {
			return err
		}
		var err error
		if svcB, err = tx.AddService(ServiceConfig{Name: "b", Addr: vipB, Port: 80, Protocol: TCP, Scheduler: "rr"}); err != nil {
			return err
		}
		if _, err := tx.AddLocalAddr(svcB, lipB); err != nil {
			return err
		}
		d, err := tx.AddDest(svcB, rsB, 8080, 1)
		if err != nil {
			return err
		}
		d.SetNextHopMAC(macGateway)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	now := int64(0)
	clock := func(d time.Duration) { now = int64(d); b.table.now.Store(now) }
	addresses := func(wantVIPs, wantLIPs []netip.Addr) {
		t.Helper()
		vips, lips := b.Addresses()
		if !slices.Equal(vips, wantVIPs) || !slices.Equal(lips, wantLIPs) {
			t.Fatalf("the balancer answers for VIPs %v and LIPs %v, want %v and %v", vips, lips, wantVIPs, wantLIPs)
		}
	}
	synTo := func(v netip.Addr, cport uint16) Verdict {
		return b.Process(ClientSide, frame(t, pktSpec{src: client, dst: v, sport: cport, dport: 80, proto: TCP, syn: true, srcMAC: macClient}))
	}

	// Connections on A over every (LIP, real server) pair, and on B.
	pairs := map[[2]netip.Addr]flow{}
	port := uint16(30000)
	for ; len(pairs) < 4 && port < 30016; port++ {
		fl := openFlow(t, b, client, port, vip)
		if _, ok := pairs[[2]netip.Addr{fl.lip, fl.rip}]; !ok {
			pairs[[2]netip.Addr{fl.lip, fl.rip}] = fl
		}
	}
	if len(pairs) != 4 {
		t.Fatalf("connections on A used the (LIP, server) pairs %v, want all 4", pairs)
	}
	onB := []flow{openFlow(t, b, client, 31000, vipB), openFlow(t, b, client, 31001, vipB)}
	addresses([]netip.Addr{vip, vipB}, []netip.Addr{lip1, lip2, lipB})

	if err := b.Update(func(tx *Tx) error {
		if err := tx.DeleteDest(r.svc, rs2, 8080); err != nil {
			return err
		}
		if err := tx.DeleteLocalAddr(r.svc, lip2); err != nil {
			return err
		}
		tx.DeleteService(svcB)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(b.Services()) != 1 || len(r.svc.Dests()) != 1 || len(r.svc.LocalAddrs()) != 1 {
		t.Fatalf("after the deletes: %d services, A has %d servers and %d LIPs", len(b.Services()), len(r.svc.Dests()), len(r.svc.LocalAddrs()))
	}
	// The retired addresses are still answered for: connections use them.
	addresses([]netip.Addr{vip, vipB}, []netip.Addr{lip1, lip2, lipB})

	// Every open connection keeps working, the deleted server's, the
	// retired LIP's and the deleted service's as the untouched one's.
	for _, fl := range pairs {
		fl.exchange(t, b)
	}
	for _, fl := range onB {
		fl.exchange(t, b)
	}

	// New connections on A go to the remaining server through the
	// remaining LIP, every one of them.
	for i := range 16 {
		if fl := openFlow(t, b, client, 32000+uint16(i), vip); fl.rip != rs1 || fl.lip != lip1 {
			t.Fatalf("new connection %d after the deletes went %v", i, fl)
		}
	}
	// The deleted service's VIP opens nothing.
	conns, noSvc := b.Table().Len(), b.Stats.Drop(DropNoService)
	if v := synTo(vipB, 33000); v != Drop || b.Stats.Drop(DropNoService) != noSvc+1 || b.Table().Len() != conns {
		t.Fatalf("SYN to the deleted service: %v, no_service +%d, table %d -> %d", v, b.Stats.Drop(DropNoService)-noSvc, conns, b.Table().Len())
	}

	// One connection on the retired LIP and one on the deleted service
	// carry on past the others' timeout: their addresses stay while they
	// last, however many others end.
	var lastOnLIP2 flow
	for _, fl := range pairs {
		if fl.lip == lip2 {
			lastOnLIP2 = fl
		}
	}
	clock(60 * time.Second)
	lastOnLIP2.exchange(t, b)
	onB[0].exchange(t, b)
	clock(100 * time.Second) // past the others' ESTABLISHED timeout (90s)
	if n := b.Sweep(); n == 0 || b.Table().Len() != 2 {
		t.Fatalf("at 100s: %d swept, %d left in the table, want only the 2 kept going", n, b.Table().Len())
	}
	addresses([]netip.Addr{vip, vipB}, []netip.Addr{lip1, lip2, lipB})
	lastOnLIP2.exchange(t, b)
	onB[0].exchange(t, b)
	if v := synTo(vipB, 33001); v != Drop {
		t.Fatalf("SYN to the deleted service while a connection lasts: %v", v)
	}

	// Their last connections end: the retired LIPs and VIP are let go.
	clock(300 * time.Second)
	b.Sweep()
	if b.Table().Len() != 0 {
		t.Fatalf("%d connections left at 300s", b.Table().Len())
	}
	addresses([]netip.Addr{vip}, []netip.Addr{lip1})
	if v := synTo(vipB, 33002); v != Pass {
		t.Fatalf("SYN to the let-go VIP: %v, want Pass (not the balancer's address)", v)
	}
	if v := b.Process(ServerSide, frame(t, pktSpec{src: lastOnLIP2.rip, dst: lip2, sport: 8080, dport: lastOnLIP2.lport, proto: TCP, ack: true, srcMAC: macGateway})); v != Pass {
		t.Fatalf("segment to the let-go LIP: %v, want Pass", v)
	}
	// A serves on as it was left.
	if fl := openFlow(t, b, client, 34000, vip); fl.rip != rs1 || fl.lip != lip1 {
		t.Fatalf("new connection at the end went %v", fl)
	}
}
