package control

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// The edge refuses every malformed field of an operation with the field and
// the reason, and gives the Manager typed keys for the rest.
func TestParseOp(t *testing.T) {
	key := api.ServiceKey{Protocol: "tcp", Addr: "10.0.0.1:80"}
	svc := &api.ServiceSpec{ServiceKey: key}
	for _, tc := range []struct {
		op   api.Op
		want string
	}{
		{api.Op{Op: "frobnicate"}, `"frobnicate" is not an operation`},
		{api.Op{Op: "add-service"}, "add-service needs a service"},
		{api.Op{Op: "add-dest", Service: svc}, "add-dest needs a real server"},
		{api.Op{Op: "set-timeouts"}, "set-timeouts needs timeouts"},
		{api.Op{Op: "delete-service", Service: &api.ServiceSpec{ServiceKey: api.ServiceKey{Protocol: "sctp", Addr: "10.0.0.1:80"}}}, "not a protocol"},
		{api.Op{Op: "delete-service", Service: &api.ServiceSpec{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "10.0.0.1"}}}, `"10.0.0.1" is not VIP:port`},
		{api.Op{Op: "add-service", Service: &api.ServiceSpec{ServiceKey: key, PersistenceNetmask: "255.0.255.0"}}, `persistence_netmask: "255.0.255.0" is not a netmask`},
		{api.Op{Op: "add-service", Service: &api.ServiceSpec{ServiceKey: key, PersistenceNetmask: "33"}}, `persistence_netmask: "33" is not a prefix length 1-32`},
		{api.Op{Op: "add-service", Service: &api.ServiceSpec{ServiceKey: key, PersistenceNetmask: "0.0.0.0"}}, `persistence_netmask: "0.0.0.0" is not a netmask`},
		{api.Op{Op: "add-service", Service: &api.ServiceSpec{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "[fd00::1]:80"}, PersistenceNetmask: "255.255.255.0"}}, `persistence_netmask: "255.255.255.0" is not a prefix length 1-128`},
		{api.Op{Op: "add-dest", Service: svc, Dest: &api.DestSpec{Addr: "10.1.0.1"}}, `"10.1.0.1" is not RIP:port`},
		{api.Op{Op: "add-dest", Service: svc, Dest: &api.DestSpec{Addr: "10.1.0.1:80", Forward: "tunnel"}}, "FULLNAT only"},
		{api.Op{Op: "add-laddr", Service: svc, LocalAddr: "10.0.9"}, `"10.0.9" is not a local address`},
		{api.Op{Op: "add-deny", Service: svc, Prefix: "10.0.0.1/8"}, `prefix: "10.0.0.1/8" has host bits set (10.0.0.0/8?)`},
		{api.Op{Op: "add-allow", Service: svc, Prefix: "2001:db8::/96"}, `prefix: "2001:db8::/96" is longer than /64`},
		{api.Op{Op: "delete-allow", Service: svc}, `prefix: "" is not a prefix or an IPv4 address`},
		{api.Op{Op: "add-deny", Prefix: "10.0.0.0/8"}, "add-deny needs a service"},
		// IPv6: [address]:port, without a zone or an IPv4-mapped form.
		{api.Op{Op: "delete-service", Service: &api.ServiceSpec{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "2001:db8::1:80"}}}, `"2001:db8::1:80" is not VIP:port (IPv6: [VIP]:port)`},
		{api.Op{Op: "delete-service", Service: &api.ServiceSpec{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "[fe80::1%tc]:80"}}}, `"[fe80::1%tc]:80" has a zone: tapvs's addresses are not scoped to a link`},
		{api.Op{Op: "delete-service", Service: &api.ServiceSpec{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "[::ffff:10.0.0.1]:80"}}}, `"[::ffff:10.0.0.1]:80" is an IPv4-mapped IPv6 address: write the IPv4 address 10.0.0.1`},
		{api.Op{Op: "add-dest", Service: svc, Dest: &api.DestSpec{Addr: "fd00:20:1::2"}}, `"fd00:20:1::2" is not RIP:port (IPv6: [RIP]:port)`},
		{api.Op{Op: "add-dest", Service: svc, Dest: &api.DestSpec{Addr: "[fd00:20:1::2%ts]:80"}}, `"[fd00:20:1::2%ts]:80" has a zone`},
		{api.Op{Op: "add-dest", Service: svc, Dest: &api.DestSpec{Addr: "[::ffff:10.1.0.1]:80"}}, `is an IPv4-mapped IPv6 address: write the IPv4 address 10.1.0.1`},
		{api.Op{Op: "add-laddr", Service: svc, LocalAddr: "fd00:25:84::10%ts"}, `"fd00:25:84::10%ts" has a zone`},
		{api.Op{Op: "add-laddr", Service: svc, LocalAddr: "::ffff:172.25.84.10"}, `is an IPv4-mapped IPv6 address: write the IPv4 address 172.25.84.10`},
		{api.Op{Op: "add-laddr", Service: svc, LocalAddr: "[fd00:25:84::10]"}, `"[fd00:25:84::10]" is not a local address`},
	} {
		if _, err := parseOp(tc.op); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.op, err, tc.want)
		}
	}
	w := 2
	op, err := parseOp(api.Op{Op: "edit-dest", Service: svc, Dest: &api.DestSpec{Addr: "10.1.0.1:80", Forward: "FNAT", Weight: &w}})
	want := Op{Kind: OpEditDest, Service: ServiceSpec{ServiceKey: ServiceKey{Protocol: nat.TCP, Addr: netip.MustParseAddrPort("10.0.0.1:80")}},
		Dest: DestSpec{Addr: netip.MustParseAddrPort("10.1.0.1:80"), Weight: &w}}
	if err != nil || op.Kind != want.Kind || op.Service.ServiceKey != want.Service.ServiceKey || op.Dest.Addr != want.Dest.Addr || *op.Dest.Weight != 2 {
		t.Fatalf("%+v %v, want %+v", op, err, want)
	}
	// IPv6 keys, real servers and local addresses are read in either
	// form ipvsadm writes them.
	key6 := &api.ServiceSpec{ServiceKey: api.ServiceKey{Protocol: "udp", Addr: "[2001:DB8::1]:53"}}
	op, err = parseOp(api.Op{Op: "add-dest", Service: key6, Dest: &api.DestSpec{Addr: "[fd00:20:1::2]:53"}})
	if err != nil || op.Service.Addr != netip.MustParseAddrPort("[2001:db8::1]:53") || op.Service.Protocol != nat.UDP || op.Dest.Addr != netip.MustParseAddrPort("[fd00:20:1::2]:53") {
		t.Fatalf("IPv6 real server: %+v %v", op, err)
	}
	for _, lip := range []string{"fd00:25:84::10", "[fd00:25:84::10]:0"} {
		op, err = parseOp(api.Op{Op: "add-laddr", Service: key6, LocalAddr: lip})
		if err != nil || op.LocalAddr != netip.MustParseAddr("fd00:25:84::10") {
			t.Fatalf("IPv6 local address %s: %+v %v", lip, op, err)
		}
	}
	// A batch names the first malformed operation.
	_, err = parseBatch([]api.Op{{Op: "clear"}, {Op: "add-laddr", Service: svc, LocalAddr: "x"}})
	var be *BatchError
	if !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("batch: %v", err)
	}
}

// -p and -M through the manager: a persistent service's settings listed,
// an edit of the netmask alone, -M without persistence refused naming it,
// and -p 0 turning persistence off.
func TestManagerPersistence(t *testing.T) {
	m := newManager(t)
	p600, p0 := uint32(600), uint32(0)
	do := func(op api.Op) error {
		o, err := parseOp(op)
		if err != nil {
			return err
		}
		return m.Batch([]Op{o})
	}
	key := api.ServiceKey{Protocol: "tcp", Addr: "10.0.0.1:80"}
	if err := do(api.Op{Op: "add-service", Service: &api.ServiceSpec{ServiceKey: key, Scheduler: "rr", Persistent: &p600}}); err != nil {
		t.Fatal(err)
	}
	if err := do(api.Op{Op: "edit-service", Service: &api.ServiceSpec{ServiceKey: key, PersistenceNetmask: "255.255.0.0"}}); err != nil {
		t.Fatal(err)
	}
	if s := m.Services()[0]; s.Persistent != 600 || s.PersistenceNetmask != "255.255.0.0" {
		t.Fatalf("listed persistent %d mask %q, want 600 255.255.0.0", s.Persistent, s.PersistenceNetmask)
	}
	other := api.ServiceKey{Protocol: "tcp", Addr: "10.0.0.1:81"}
	if err := do(api.Op{Op: "add-service", Service: &api.ServiceSpec{ServiceKey: other, PersistenceNetmask: "24"}}); err == nil || !strings.Contains(err.Error(), "netmask (-M) needs persistence (-p)") {
		t.Fatalf("-M without -p: %v", err)
	}
	if err := do(api.Op{Op: "edit-service", Service: &api.ServiceSpec{ServiceKey: key, Persistent: &p0}}); err != nil {
		t.Fatal(err)
	}
	if s := m.Services()[0]; s.Persistent != 0 || s.PersistenceNetmask != "" {
		t.Fatalf("after -p 0: persistent %d mask %q", s.Persistent, s.PersistenceNetmask)
	}
}
