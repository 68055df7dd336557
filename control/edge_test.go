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
		{api.Op{Op: "add-service", Service: &api.ServiceSpec{ServiceKey: key, Persistent: 300}}, "persistence (-p) is not supported yet"},
		{api.Op{Op: "add-dest", Service: svc, Dest: &api.DestSpec{Addr: "10.1.0.1"}}, `"10.1.0.1" is not RIP:port`},
		{api.Op{Op: "add-dest", Service: svc, Dest: &api.DestSpec{Addr: "10.1.0.1:80", Forward: "tunnel"}}, "FULLNAT only"},
		{api.Op{Op: "add-laddr", Service: svc, LocalAddr: "10.0.9"}, `"10.0.9" is not a local address`},
		{api.Op{Op: "add-deny", Service: svc, Prefix: "10.0.0.1/8"}, `prefix: "10.0.0.1/8" has host bits set (10.0.0.0/8?)`},
		{api.Op{Op: "add-allow", Service: svc, Prefix: "2001:db8::/32"}, `prefix: "2001:db8::/32" is not an IPv4 prefix`},
		{api.Op{Op: "delete-allow", Service: svc}, `prefix: "" is not an IPv4 prefix or address`},
		{api.Op{Op: "add-deny", Prefix: "10.0.0.0/8"}, "add-deny needs a service"},
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
	// A batch names the first malformed operation.
	_, err = parseBatch([]api.Op{{Op: "clear"}, {Op: "add-laddr", Service: svc, LocalAddr: "x"}})
	var be *BatchError
	if !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("batch: %v", err)
	}
}
