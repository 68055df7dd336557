package main

import (
	"slices"
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

// -lnc with a match service's templates, a golden file written from
// ipvsadm's print_conn ("%-3s %-6s %-11s %-18s %-18s %s" with DPVS's
// local column): the kernel writes a fwmark template's protocol IPPROTO_IP
// as ip_vs_proto_name's "IP" and its virtual address as the mark
// (ip_vs_sched_persist's `.ip = htonl(svc->fwmark)`, port 0), which
// print_conn reads back as 0.0.0.1:0, or [0:2::]:0 for IPv6's mark 2; the
// template leaves from no LIP. The connections themselves show the
// address of the prefix the client asked for.
func TestMatchConnsGolden(t *testing.T) {
	conns := []api.Conn{
		{Protocol: "TCP", State: "ESTABLISHED", ExpiresMs: 899500, Source: "198.51.100.7:40000", Virtual: "172.25.254.97:80", Local: "172.25.84.10:5002", Destination: "10.20.1.2:80"},
		{Protocol: "TCP", State: "ESTABLISHED", ExpiresMs: 899000, Source: "198.51.100.7:40001", Virtual: "172.25.254.99:443", Local: "172.25.84.10:5003", Destination: "10.20.1.2:443"},
		{Protocol: "IP", State: "NONE", ExpiresMs: 599000, Source: "198.51.100.7:0", Virtual: "0.0.0.1:0", Destination: "10.20.1.2:0"},
		{Protocol: "IP", State: "NONE", ExpiresMs: 60000, Source: "[2001:db8:1::7]:0", Virtual: "[0:2::]:0", Destination: "[fd00:20:1::2]:0"},
	}
	prefixed := slices.Clone(svcsFWM)
	prefixed[0].Match = &api.Match{VIP: "172.25.254.96/29", Protocol: "tcp", Ports: "80,443"}
	sock, _ := fakeDaemon(t, prefixed, conns)
	golden(t, "conns-fwm.txt", tapvsadm(t, sock, "", "-lnc"))
}

// A selector's prefix where tapvsadm shows a match service's VIP: -G's
// column writes it whole (no port follows a prefix), one address as
// VIP:0; its family is the prefix's.
func TestMatchPrefixAddr(t *testing.T) {
	for _, tc := range []struct {
		vip, addr string
		v6        bool
	}{
		{"172.25.254.96/29", "172.25.254.96/29", false},
		{"172.25.254.100", "172.25.254.100:0", false},
		{"2001:db8::100/120", "2001:db8::100/120", true},
		{"2001:db8::1", "[2001:db8::1]:0", true},
		{"2001:db8::1/128", "[2001:db8::1]:0", true},
		{"x/29", "fwm/1", false},
		{"x", "fwm/1", false},
	} {
		s := api.Service{ServiceKey: api.ServiceKey{FWMark: 1}, Match: &api.Match{VIP: tc.vip, Protocol: "tcp", Ports: "80"}}
		if got := svcAddr(s); got != tc.addr {
			t.Errorf("svcAddr of %s: %q, want %q", tc.vip, got, tc.addr)
		}
		if got := svcIPv6(s); got != tc.v6 {
			t.Errorf("svcIPv6 of %s: %v", tc.vip, got)
		}
	}
}
