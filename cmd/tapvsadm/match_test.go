package main

import (
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// svcsFWM are a VIP:port service and two match services (-f), in the
// order they were added: the fake daemon's sorted list reverses it, so
// that only a sort by mark first puts FWM 1 before FWM 2.
var svcsFWM = []api.Service{
	{ServiceKey: api.ServiceKey{FWMark: 1}, Match: &api.Match{VIP: "172.25.254.100", Protocol: "tcp", Ports: "80,443,8000-8099"},
		Scheduler: "rr", Persistent: 600, Timeouts: api.Timeouts{TCP: 900},
		Dests: []api.Dest{
			{Addr: "10.20.2.2:8443", Forward: "FullNat", Weight: 1, ActiveConn: 2, PersistConn: 1},
			{Addr: "10.20.1.2:0", Forward: "FullNat", Weight: 1, ActiveConn: 4, InActConn: 1, PersistConn: 3},
		},
		LocalAddrs: []api.LocalAddr{{Addr: "172.25.84.10"}}},
	{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:443"}, Scheduler: "wlc", Timeouts: api.Timeouts{TCP: 900},
		Dests: []api.Dest{{Addr: "10.20.1.2:443", Forward: "FullNat", Weight: 1}}},
	{ServiceKey: api.ServiceKey{FWMark: 2}, Match: &api.Match{VIP: "2001:db8::1", Protocol: "tcp", Ports: "80,443"},
		Scheduler: "wlc", Timeouts: api.Timeouts{TCP: 900},
		Dests: []api.Dest{{Addr: "[fd00:20:1::2]:0", Forward: "FullNat", Weight: 1}}},
}

// Match services in the listings, each a golden file written from
// ipvsadm's print_service_entry: svc_name "FWM  %d" ("FWM  %d IPv6" for
// an IPv6 one), "-f %d" ("-f %d -6") with FMT_RULE, services sorted by
// ipvs_cmp_services, whose first key is the fwmark (VIP:port services,
// mark 0, first); a real server's port 0 printed as it is ("%s:%s").
func TestMatchGoldens(t *testing.T) {
	sock, _ := fakeDaemon(t, svcsFWM, nil)
	golden(t, "list-fwm.txt", tapvsadm(t, sock, "", "-ln"))
	golden(t, "save-fwm.txt", tapvsadm(t, sock, "", "-S", "-n"))
	if got, want := tapvsadm(t, sock, "", "-ln", "-f", "1"), strings.Join(strings.Split(tapvsadm(t, sock, "", "-ln"), "\n")[:3], "\n")+
		"\nFWM  1 rr persistent 600\n  -> 10.20.1.2:0                  FullNat 1      4          1         \n  -> 10.20.2.2:8443               FullNat 1      2          0         \n"; got != want {
		t.Errorf("-ln -f 1:\n%s\nwant\n%s", got, want)
	}
}

// -S's match services, -6 included, come back through -R as the same
// operations, each naming its service by mark; a real server without a
// port is port 0 (the client's), not the service's.
func TestMatchSaveRestores(t *testing.T) {
	sock, batches := fakeDaemon(t, svcsFWM, nil)
	tapvsadm(t, sock, tapvsadm(t, sock, "", "-S", "-n"), "-R")
	tapvsadm(t, sock, "", "-A", "-f", "7", "-s", "rr", "-p", "600")
	tapvsadm(t, sock, "", "-a", "-f", "7", "-r", "10.20.1.2", "-b")
	b := batches()
	if len(b) != 3 {
		t.Fatalf("batches %+v", b)
	}
	var marks []uint32
	for _, op := range b[0].Ops {
		if op.Service == nil || op.Service.FWMark == 0 {
			continue
		}
		if op.Service.Protocol != "" || op.Service.Addr != "" {
			t.Errorf("op %+v names a match service by more than its mark", op)
		}
		marks = append(marks, op.Service.FWMark)
		if op.Op == "add-service" && op.Service.FWMark == 1 && (op.Service.Persistent == nil || *op.Service.Persistent != 600 || op.Service.Scheduler != "rr") {
			t.Errorf("FWM 1 restored as %+v", op.Service)
		}
	}
	if want := []uint32{1, 1, 1, 2, 2, 1}; !equalU32(marks, want) {
		t.Errorf("restored ops of marks %v, want %v", marks, want)
	}
	add := b[1].Ops[0]
	if add.Op != "add-service" || add.Service.FWMark != 7 || add.Service.Scheduler != "rr" || *add.Service.Persistent != 600 {
		t.Errorf("-A -f 7: %+v", add.Service)
	}
	if d := b[2].Ops[0]; d.Op != "add-dest" || d.Service.FWMark != 7 || d.Dest.Addr != "10.20.1.2:0" {
		t.Errorf("-a -f 7 -r 10.20.1.2: %+v %+v", d.Service, d.Dest)
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
