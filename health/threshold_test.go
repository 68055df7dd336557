package health

import (
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// A server that a check with on_failure: remove took out comes back, when
// it passes again, with its configured thresholds (ipvsadm -x, -y), not
// without any.
func TestRemovedServerComesBackWithItsThresholds(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	s := newState(c, rs1, Spec{Type: "tcp", Rise: 1, Fall: 1, Remove: true}, 5)
	s.t.Thresholds = nat.Thresholds{Upper: 10, Lower: 5}
	c.record(svc, s, errProbe)
	if _, listed := weightOf(t, svc, rs1); listed {
		t.Fatal("a failed check with on_failure: remove left rs1 listed")
	}
	c.record(svc, s, nil)
	d := svc.Dest(rs1.Addr(), rs1.Port())
	if d == nil {
		t.Fatal("rs1 passed: not added back")
	}
	if d.Weight() != 5 || d.Thresholds() != s.t.Thresholds {
		t.Fatalf("rs1 back with weight %d and thresholds %+v, want 5 and %+v", d.Weight(), d.Thresholds(), s.t.Thresholds)
	}
}
