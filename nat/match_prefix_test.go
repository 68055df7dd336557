package nat

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/connrec"
)

// Issue 25: a selector's VIP may be a prefix (what iptables -d 10.0.0.0/29
// -j MARK marks for a kernel LVS).

// prefix29 is the prefix the tests' selector covers: vip (172.25.254.100)
// is one of its 8 addresses.
var prefix29 = netip.MustParsePrefix("172.25.254.96/29")

// prefixMark is mark 1 on every address of prefix29, TCP 80 and 443.
var prefixMark = Match{Addr: prefix29.Addr(), Bits: 29, Protocol: TCP, Ports: []PortRange{{80, 80}, {443, 443}}}

// prefixRig is matchRig's persistent match service on prefixMark.
func prefixRig(t *testing.T) (*rig, *Service) { return matchRigOn(t, prefixMark) }

// synAt is synTo to dst rather than the rig's VIP.
func synAt(t testing.TB, b *Balancer, src, dst netip.Addr, sport, dport uint16) (Verdict, netip.AddrPort) {
	t.Helper()
	f := frame(t, pktSpec{src: src, dst: dst, sport: sport, dport: dport, proto: TCP, syn: true, srcMAC: macClient})
	v := b.Process(ClientSide, f)
	if v != Forward {
		return v, netip.AddrPort{}
	}
	d := decode(t, f)
	return v, netip.AddrPortFrom(addr(d.ip.DstIP), uint16(d.tcp.DstPort))
}

// Every address of the prefix is the service's, and answered for; none
// outside it is; one client keeps one server across every VIP and port of
// the selector with one template, listed as IPVS lists a fwmark template.
func TestMatchPrefixLookup(t *testing.T) {
	r, svc := prefixRig(t)
	if svc.Addr != prefix29.Addr() || svc.VIPPrefix() != prefix29 || svc.Selector().VIPString() != "172.25.254.96/29" {
		t.Fatalf("service at %v, prefix %v, selector %s", svc.Addr, svc.VIPPrefix(), svc.Selector().VIPString())
	}
	vips, _ := r.b.Addresses()
	var want []netip.Addr
	for a := prefix29.Addr(); prefix29.Contains(a); a = a.Next() {
		want = append(want, a)
	}
	if !slices.Equal(vips, want) {
		t.Fatalf("answers for %v, want the prefix's 8: %v", vips, want)
	}
	_, first := synAt(t, r.b, client, prefix29.Addr(), 10000, 80)
	sport := uint16(10001)
	for _, dst := range want {
		for _, port := range []uint16{80, 443} {
			if v, to := synAt(t, r.b, client, dst, sport, port); v != Forward || to != netip.AddrPortFrom(first.Addr(), port) {
				t.Fatalf("SYN to %v:%d: %v to %v, want %v:%d (the client's one template)", dst, port, v, to, first.Addr(), port)
			}
			sport++
		}
	}
	if n := r.b.Templates(); n != 1 {
		t.Fatalf("templates %d, want 1 for all 8 VIPs and both ports", n)
	}
	if l := r.b.TemplateList(); len(l) != 1 || l[0].VIP != netip.MustParseAddrPort("0.0.0.1:0") || l[0].Mark != 1 || l[0].Conns != 17 {
		t.Fatalf("templates %+v, want one of mark 1 with 17 connections", l)
	}
	if _, to := synAt(t, r.b, clientAddr(1), netip.MustParseAddr("172.25.254.103"), 20000, 443); to.Addr() == first.Addr() {
		t.Fatalf("a second client went to %v too: rr must give it the other", to)
	}
	for _, dst := range []string{"172.25.254.95", "172.25.254.104"} {
		if v, _ := synAt(t, r.b, client, netip.MustParseAddr(dst), 30000, 80); v == Forward {
			t.Fatalf("SYN to %s, outside the prefix, forwarded", dst)
		}
	}
	if v, _ := synAt(t, r.b, client, netip.MustParseAddr("172.25.254.101"), 30000, 81); v != Drop {
		t.Fatalf("SYN to port 81 of the prefix: %v, want Drop", v)
	}
}

// A VIP:port service of an address in the prefix comes first, as it does
// for a single VIP: the other addresses keep the selector's port.
func TestMatchPrefixExactWins(t *testing.T) {
	r, _ := prefixRig(t)
	exactVIP := netip.MustParseAddr("172.25.254.98")
	if err := r.b.Update(func(tx *Tx) error {
		exact, err := tx.AddService(ServiceConfig{Addr: exactVIP, Port: 443, Protocol: TCP, Scheduler: "rr"})
		if err != nil {
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
	if v, to := synAt(t, r.b, client, exactVIP, 10000, 443); v != Forward || to != netip.AddrPortFrom(rs2, 9443) {
		t.Fatalf("SYN to %v:443: %v to %v, want its own service's %v:9443", exactVIP, v, to, rs2)
	}
	if v, to := synAt(t, r.b, client, exactVIP.Next(), 10001, 443); v != Forward || to.Port() != 443 {
		t.Fatalf("SYN to %v:443: %v to %v, want the selector's", exactVIP.Next(), v, to)
	}
	// The exact service's VIP is in the prefix: deleting the match
	// service leaves it answered for, and only it.
	if err := r.b.Update(func(tx *Tx) error {
		s, err := tx.MatchService(1)
		if err == nil {
			tx.DeleteService(s)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if v, _ := synAt(t, r.b, clientAddr(2), exactVIP.Next(), 10002, 443); v == Forward {
		t.Fatal("the prefix's service deleted, a SYN to another address of it was forwarded")
	}
}

// The prefix's addresses are released with its service: another service
// (or a LIP) may take one once it is gone, none while it runs; a refused
// service's claims are given back.
func TestMatchPrefixClaims(t *testing.T) {
	r, svc := prefixRig(t)
	inside := netip.MustParseAddr("172.25.254.97")
	if err := r.b.Update(func(tx *Tx) error { _, err := tx.AddLocalAddr(svc, inside); return err }); err == nil || !strings.Contains(err.Error(), "172.25.254.97 is already a VIP") {
		t.Fatalf("a LIP inside the prefix: %v", err)
	}
	// Deleted (no connection holds it), its addresses are free: .97 may
	// be a LIP.
	if err := r.b.Update(func(tx *Tx) error {
		tx.DeleteService(svc)
		other, err := tx.AddService(ServiceConfig{Addr: netip.MustParseAddr("172.25.254.50"), Port: 80, Protocol: TCP, Scheduler: "rr"})
		if err != nil {
			return err
		}
		_, err = tx.AddLocalAddr(other, inside)
		return err
	}); err != nil {
		t.Fatalf("%v as a LIP once the prefix's service is gone: %v", inside, err)
	}
	if vips, _ := r.b.Addresses(); !slices.Equal(vips, []netip.Addr{netip.MustParseAddr("172.25.254.50")}) {
		t.Fatalf("the prefix's service deleted, the balancer answers for %v", vips)
	}
	// A LIP at .99: the prefix's service is refused at .99, and .96-.98,
	// claimed before it, are free again in the same transaction.
	r2 := newRig(t, TCP, "rr", nil)
	if err := r2.b.Update(func(tx *Tx) error {
		if _, err := tx.AddLocalAddr(r2.svc, netip.MustParseAddr("172.25.254.99")); err != nil {
			return err
		}
		if err := tx.SetMarks(map[uint32]Match{1: prefixMark}); err != nil {
			return err
		}
		if _, err := tx.AddService(ServiceConfig{Mark: 1, Scheduler: "rr", Persistence: Persistence{Timeout: time.Minute}}); err == nil || !strings.Contains(err.Error(), "VIP 172.25.254.99 is already a local address") {
			t.Errorf("the prefix over a LIP: %v", err)
		}
		_, err := tx.AddLocalAddr(r2.svc, inside)
		return err
	}); err != nil {
		t.Fatalf("after the refused prefix, %v as a LIP: %v", inside, err)
	}
	vips, _ := r2.b.Addresses()
	if len(vips) != 1 || vips[0] != vip {
		t.Fatalf("after a refused prefix service the balancer answers for %v, want %v alone", vips, vip)
	}
}

// The bounds of a prefix and the overlap rule across prefixes.
func TestMatchPrefixRefusals(t *testing.T) {
	r := newRig(t, TCP, "rr", func(c *Config) {
		c.ClientNet, c.ClientNet6 = netip.MustParsePrefix("172.25.254.254/24"), netip.MustParsePrefix("fd00:25:254::fe/64")
	})
	m := func(p string, ports ...uint16) Match {
		pp := netip.MustParsePrefix(p)
		out := Match{Addr: pp.Addr(), Bits: pp.Bits(), Protocol: TCP}
		for _, port := range ports {
			out.Ports = append(out.Ports, PortRange{port, port})
		}
		return out
	}
	for _, tc := range []struct {
		marks map[uint32]Match
		want  string
	}{
		{map[uint32]Match{1: m("10.1.2.0/23", 80)}, "mark 1: VIP 10.1.2.0/23 is more than 256 addresses (IPv4 /24 or longer, IPv6 /120 or longer)"},
		{map[uint32]Match{1: m("fd00::/119", 80)}, "mark 1: VIP fd00::/119 is more than 256 addresses"},
		{map[uint32]Match{1: {Addr: netip.MustParseAddr("172.25.254.97"), Bits: 29, Protocol: TCP, Ports: []PortRange{{80, 80}}}}, "mark 1: VIP 172.25.254.97/29 has host bits set: its prefix is 172.25.254.96/29"},
		{map[uint32]Match{1: {Addr: vip, Bits: 33, Protocol: TCP, Ports: []PortRange{{80, 80}}}}, "is not a prefix"},
		{map[uint32]Match{1: m("172.25.254.248/29", 80)}, "mark 1: VIP 172.25.254.254 is tapvs's own address"},
		{map[uint32]Match{1: m("172.25.254.0/29", 80)}, "mark 1: VIP 172.25.254.0 is the network address"},
		{map[uint32]Match{1: m("172.25.254.96/29", 80, 443), 2: m("172.25.254.100/32", 80)}, "mark 2: port 80 of tcp 172.25.254.100 is mark 1's too"},
		{map[uint32]Match{1: m("172.25.254.96/29", 80, 443), 2: m("172.25.254.96/28", 8080, 443)}, "mark 2: port 443 of tcp 172.25.254.96/28 is mark 1's too"},
		{map[uint32]Match{1: m("172.25.254.96/28", 80), 2: m("172.25.254.103/32", 80)}, "mark 2: port 80 of tcp 172.25.254.103 is mark 1's too"},
	} {
		err := r.b.Update(func(tx *Tx) error { return tx.SetMarks(tc.marks) })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.marks, err, tc.want)
		}
	}
	// Accepted: the bounds themselves, prefixes side by side, a prefix
	// and an address in it on other ports, a /32 as the address alone.
	ok := map[uint32]Match{
		1: m("172.25.254.96/29", 80, 443), 2: m("172.25.254.104/29", 80), 3: m("172.25.254.100/32", 8080),
		4: m("fd00::100/120", 80), 5: m("10.1.2.0/24", 80), 6: m("172.25.254.96/28", 22),
	}
	if err := r.b.Update(func(tx *Tx) error { return tx.SetMarks(ok) }); err != nil {
		t.Fatal(err)
	}
	if got := r.b.Marks()[3]; got.Bits != 0 || got.VIPString() != "172.25.254.100" {
		t.Fatalf("a /32 selector kept as %+v (%s), want the address alone", got, got.VIPString())
	}
	// A running service's prefix may not change under it.
	r2, _ := prefixRig(t)
	for _, p := range []string{"172.25.254.96/28", "172.25.254.100/32", "172.25.254.96/30"} {
		err := r2.b.Update(func(tx *Tx) error { return tx.SetMarks(map[uint32]Match{1: m(p, 80)}) })
		if err == nil || !strings.Contains(err.Error(), "mark 1 moves to tcp "+strings.TrimSuffix(p, "/32")+", but service FWM 1 uses it") {
			t.Errorf("moving mark 1 to %s: %v", p, err)
		}
	}
	// Nor its protocol, nor its length alone, the rest as it was.
	for _, tc := range []struct {
		m    Match
		want string
	}{
		{Match{Addr: prefix29.Addr(), Bits: 28, Protocol: TCP, Ports: prefixMark.Ports}, "mark 1 moves to tcp 172.25.254.96/28"},
		{Match{Addr: prefix29.Addr(), Bits: 29, Protocol: UDP, Ports: prefixMark.Ports}, "mark 1 moves to udp 172.25.254.96/29"},
	} {
		err := r2.b.Update(func(tx *Tx) error { return tx.SetMarks(map[uint32]Match{1: tc.m}) })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.m, err, tc.want)
		}
	}
	// Its ports may: the same prefix, written as it was.
	if err := r2.b.Update(func(tx *Tx) error { return tx.SetMarks(map[uint32]Match{1: m("172.25.254.96/29", 443)}) }); err != nil {
		t.Fatal(err)
	}
}

// MarkAddr is the mark in a template's first four address bytes, as
// ip_vs_sched_persist writes it.
func TestMarkAddr(t *testing.T) {
	for _, tc := range []struct {
		mark uint32
		v4   bool
		want string
	}{
		{1, true, "0.0.0.1"}, {0x01020304, true, "1.2.3.4"}, {4294967295, true, "255.255.255.255"},
		{1, false, "0:1::"}, {0x01020304, false, "102:304::"},
	} {
		if got := MarkAddr(tc.mark, tc.v4); got != netip.MustParseAddr(tc.want) {
			t.Errorf("MarkAddr(%d, %v) = %v, want %s", tc.mark, tc.v4, got, tc.want)
		}
	}
}

// A prefix service's template record names it by an address and port of
// the prefix that no VIP:port service takes, and a successor with the
// same services finds the service by it; the client keeps its server on
// every address of the prefix.
func TestTemplatePrefixService(t *testing.T) {
	old, _ := prefixRig(t)
	other := netip.MustParseAddr("198.51.100.77")
	synAt(t, old.b, client, prefix29.Addr(), 10000, 80)
	if v, to := synAt(t, old.b, other, netip.MustParseAddr("172.25.254.103"), 10000, 443); v != Forward || to.Addr() != rs2 {
		t.Fatalf("second client: %v to %v, want rs2", v, to)
	}
	// .96's ports are both services of their own: the records go by .97.
	if err := old.b.Update(func(tx *Tx) error {
		for _, port := range []uint16{80, 443} {
			if _, err := tx.AddService(ServiceConfig{Addr: prefix29.Addr(), Port: port, Protocol: TCP, Scheduler: "rr"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var rec connrec.Record
	recs := templateRecords(t, old.b)
	for _, r := range recs {
		if r.VIP != netip.MustParseAddr("172.25.254.97").As16() || r.VPort != 80 {
			t.Fatalf("a template record names %v:%d, want 172.25.254.97:80", netip.AddrFrom16(r.VIP).Unmap(), r.VPort)
		}
		if r.Server == rs2.As16() {
			rec = r
		}
	}
	if len(recs) != 2 {
		t.Fatalf("%d template records, want 2", len(recs))
	}
	next, _ := prefixRig(t)
	if err := next.b.ImportConn(&rec); err != nil {
		t.Fatal(err)
	}
	for i, dst := range []string{"172.25.254.96", "172.25.254.100", "172.25.254.103"} {
		if v, to := synAt(t, next.b, other, netip.MustParseAddr(dst), uint16(20000+i), 443); v != Forward || to.Addr() != rs2 {
			t.Fatalf("after the import, the client's SYN to %s:443: %v to %v, want its template's rs2", dst, v, to)
		}
	}
}
