package main

import (
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// svcsThresh have real servers with and without thresholds, one
// overloaded, a name long enough to be cut at 28.
var svcsThresh = []api.Service{
	{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, Scheduler: "wlc", Timeouts: api.Timeouts{TCP: 900},
		Dests: []api.Dest{
			{Addr: "10.20.1.3:80", Forward: "FullNat", Weight: 1, UThreshold: 2, ActiveConn: 2, Overloaded: true},
			{Addr: "10.20.1.2:80", Forward: "FullNat", Weight: 3, UThreshold: 100, LThreshold: 50, ActiveConn: 31, InActConn: 4},
			{Addr: "10.20.1.4:80", Forward: "FullNat", Weight: 1},
		}},
	{ServiceKey: api.ServiceKey{Protocol: "udp", Addr: "[2001:db8::53]:53"}, Scheduler: "rr", Timeouts: api.Timeouts{TCP: 900},
		Dests: []api.Dest{{Addr: "[fd00:20:1::53]:53", Forward: "FullNat", Weight: 1, UThreshold: 2147483647, LThreshold: 2147483647, ActiveConn: 7}}},
}

// --thresholds lists the real servers as ipvsadm's print_title and
// print_service_entry do with FMT_THRESHOLDS: the title "%-33s %-10s
// %-10s %-10s %-10s" (Prot LocalAddress:Port, Uthreshold, Lthreshold,
// ActiveConn, InActConn) over "  -> RemoteAddress:Port", each service's
// line as -L's, each server "  -> %-28s %-10u %-10u %-10u %-10u". -S
// writes -x and -y after -w where they are not 0 (ipvsadm's -S loses
// them); -R reads them back into the same servers.
func TestThresholdsListing(t *testing.T) {
	sock, batches := fakeDaemon(t, svcsThresh, nil)
	golden(t, "list-thresholds.txt", tapvsadm(t, sock, "", "-ln", "--thresholds"))
	golden(t, "save-thresholds.txt", tapvsadm(t, sock, "", "-S", "-n"))

	tapvsadm(t, sock, tapvsadm(t, sock, "", "-S", "-n"), "-R")
	b := batches()
	if len(b) != 1 {
		t.Fatalf("-R sent %d batches", len(b))
	}
	got := map[string][2]uint32{}
	for _, op := range b[0].Ops {
		if op.Op != "add-dest" {
			continue
		}
		var th [2]uint32
		if op.Dest.UThreshold != nil {
			th[0] = *op.Dest.UThreshold
		}
		if op.Dest.LThreshold != nil {
			th[1] = *op.Dest.LThreshold
		}
		got[op.Dest.Addr] = th
	}
	for _, s := range svcsThresh {
		for _, d := range s.Dests {
			if th, ok := got[d.Addr]; !ok || th != [2]uint32{d.UThreshold, d.LThreshold} {
				t.Errorf("%s: -S | -R gave -x %d -y %d (sent: %v), want -x %d -y %d", d.Addr, th[0], th[1], ok, d.UThreshold, d.LThreshold)
			}
		}
	}
}
