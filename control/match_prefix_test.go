package control

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/nat"
)

// A match service on a VIP prefix through the API: its selector listed
// with the prefix, and its persistence template among the connections as
// IPVS lists a fwmark template, protocol IP and the mark as the virtual
// address (ip_vs_sched_persist's <IPPROTO_IP, caddr, 0, fwmark, 0, daddr,
// 0>), IPv4's and IPv6's.
func TestAPIMatchPrefix(t *testing.T) {
	m := newManager(t)
	prefix := netip.MustParsePrefix("10.0.0.0/30")
	prefix6 := netip.MustParsePrefix("2001:db8::100/126")
	if err := m.Update(func(tx *nat.Tx) error {
		if err := tx.SetMarks(map[uint32]nat.Match{
			1: {Addr: prefix.Addr(), Bits: 30, Protocol: nat.TCP, Ports: []nat.PortRange{{Lo: 80, Hi: 80}}},
			2: {Addr: prefix6.Addr(), Bits: 126, Protocol: nat.TCP, Ports: []nat.PortRange{{Lo: 80, Hi: 80}}},
		}); err != nil {
			return err
		}
		for _, mark := range []uint32{1, 2} {
			s, err := tx.AddService(nat.ServiceConfig{Mark: mark, Scheduler: "rr", Persistence: nat.Persistence{Timeout: 600 * time.Second}})
			if err != nil {
				return err
			}
			rs := "10.1.0.1"
			if mark == 2 {
				rs = "fd00:1::1"
			}
			if _, err := tx.AddDest(s, netip.MustParseAddr(rs), 0, 1); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	svcs := m.Services()
	if len(svcs) != 2 || svcs[0].Match == nil || svcs[0].Match.VIP != "10.0.0.0/30" || svcs[1].Match == nil || svcs[1].Match.VIP != "2001:db8::100/126" {
		t.Fatalf("listed %+v", svcs)
	}
	do := serve(t, m)
	if c, b := do("GET", "/v1/services", ""); c != 200 || !strings.Contains(b, `"match":{"vip":"10.0.0.0/30","protocol":"tcp","ports":"80"}`) {
		t.Fatalf("GET /v1/services: %d %s", c, b)
	}
	for _, rec := range []connrec.Record{
		{Kind: connrec.KindTemplate, Proto: uint8(nat.TCP), LifetimeMS: 60000, Client: netip.MustParseAddr("198.51.100.7").As16(),
			VIP: netip.MustParseAddr("10.0.0.3").As16(), VPort: 80, Server: netip.MustParseAddr("10.1.0.1").As16(),
			LIP: netip.MustParseAddr("::ffff:0.0.0.0").As16()},
		{Kind: connrec.KindTemplate, Proto: uint8(nat.TCP), LifetimeMS: 60000, Client: netip.MustParseAddr("2001:db8:1::7").As16(),
			VIP: netip.MustParseAddr("2001:db8::102").As16(), VPort: 80, Server: netip.MustParseAddr("fd00:1::1").As16(),
			Flags: connrec.FlagClient6 | connrec.FlagServer6},
	} {
		if err := m.bal.ImportConn(&rec); err != nil {
			t.Fatal(err)
		}
	}
	conns := m.Conns()
	if len(conns) != 2 {
		t.Fatalf("conns %+v, want the two templates", conns)
	}
	for _, want := range []struct{ source, virtual, dest string }{
		{"198.51.100.7:0", "0.0.0.1:0", "10.1.0.1:0"},
		{"[2001:db8:1::7]:0", "[0:2::]:0", "[fd00:1::1]:0"},
	} {
		found := false
		for _, c := range conns {
			if c.Source == want.source {
				found = true
				if c.Protocol != "IP" || c.State != "NONE" || c.Virtual != want.virtual || c.Destination != want.dest || c.Local != "" {
					t.Errorf("template listed as %+v, want IP NONE %s -> %s -> %s", c, want.source, want.virtual, want.dest)
				}
			}
		}
		if !found {
			t.Errorf("no template from %s in %+v", want.source, conns)
		}
	}
}
