package health

import (
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/events"
	"github.com/tapvs/tapvs/nat"
)

// drain is every event waiting on s.
func drain(s *events.Sub) []events.Event {
	var out []events.Event
	for {
		select {
		case e := <-s.C():
			out = append(out, e)
		default:
			return out
		}
	}
}

// The checker publishes a server's moves, at the fall-th failure and the
// rise-th pass and not between, with the failure's reason, and the
// service's quorum lost and gained.
func TestEventsServerAndQuorum(t *testing.T) {
	bal, svc := testBalancer(t, rs1, rs2)
	c := New(bal, nil, nic, quiet)
	bus := events.New()
	c.SetEvents(bus)
	sub := bus.Subscribe(events.Filter{}, 64)
	defer sub.Close()
	c.SetVS([]VS{{Proto: nat.TCP, VIP: vip, Quorum: 6, Servers: []Server{{RS: rs1, Weight: 5}, {RS: rs2, Weight: 5}}}})
	spec := Spec{Type: "tcp", Rise: 2, Fall: 2}
	s1 := newState(c, rs1, spec, 5)
	newState(c, rs2, spec, 5)
	c.startQuorum(nil)
	drain(sub)

	c.record(svc, s1, errProbe)
	if ev := drain(sub); len(ev) != 0 {
		t.Fatalf("one failure of two published: %v", ev)
	}
	c.record(svc, s1, errProbe)
	ev := drain(sub)
	name := "tcp " + vip.String()
	if len(ev) != 2 || ev[0].Kind != events.ServerDown || ev[0].Service != name || ev[0].Server != rs1 || ev[0].Reason != errProbe.Error() ||
		ev[1].Kind != events.QuorumLost || ev[1].Service != name || ev[1].Server.IsValid() || ev[1].Reason != "weights 5, quorum 6, hysteresis 0" {
		t.Fatalf("down: %+v", ev)
	}
	c.record(svc, s1, errProbe)
	c.record(svc, s1, nil)
	if ev := drain(sub); len(ev) != 0 {
		t.Fatalf("no move published: %v", ev)
	}
	c.record(svc, s1, nil)
	ev = drain(sub)
	if len(ev) != 2 || ev[0].Kind != events.ServerUp || ev[0].Server != rs1 || ev[0].Reason != "" ||
		ev[1].Kind != events.QuorumGained || ev[1].Reason != "weights 10, quorum 6, hysteresis 0" {
		t.Fatalf("up: %+v", ev)
	}
}

func TestEventName(t *testing.T) {
	if got := (Key{Proto: nat.UDP, VIP: netip.MustParseAddrPort("10.0.0.1:53")}).EventName(); got != "udp 10.0.0.1:53" {
		t.Fatal(got)
	}
	if got := (Key{Mark: 7}).EventName(); got != "fwm 7" {
		t.Fatal(got)
	}
}
