package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// Persistence prints as ipvsadm prints it (print_service_entry): "
// persistent N" after the scheduler, " mask M" when not the whole
// address, before synproxy; -S writes -p and -M, which read back;
// --persistent-conn is ipvsadm's PersistConn layout; templates list in
// -c as IPVS lists them, leaving from the unspecified local address.
func TestPersistenceListing(t *testing.T) {
	svcs := []api.Service{
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, Scheduler: "rr", Persistent: 600, PersistenceNetmask: "255.255.255.0", Synproxy: true,
			Dests: []api.Dest{{Addr: "10.20.1.2:80", Forward: "FullNat", Weight: 1, ActiveConn: 3, InActConn: 1, PersistConn: 2}}},
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.101:0"}, Scheduler: "wlc", Persistent: 300},
		{ServiceKey: api.ServiceKey{Protocol: "udp", Addr: "[2001:db8::1]:53"}, Scheduler: "rr", Persistent: 60, PersistenceNetmask: "64"},
		{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.102:80"}, Scheduler: "rr"},
	}
	var b bytes.Buffer
	printList(&b, api.Info{Version: "1.2.1", Size: 4096}, svcs, &command{})
	want := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  172.25.254.100:80 rr persistent 600 mask 255.255.255.0 synproxy\n" +
		"  -> 10.20.1.2:80                 FullNat 1      3          1         \n" +
		"TCP  172.25.254.101:0 wlc persistent 300\n" +
		"TCP  172.25.254.102:80 rr\n" +
		"UDP  [2001:db8::1]:53 rr persistent 60 mask 64\n" // sorted as libipvs sorts
	if b.String() != want {
		t.Fatalf("-L:\n%q\nwant\n%q", b.String(), want)
	}

	b.Reset()
	printList(&b, api.Info{Version: "1.2.1", Size: 4096}, svcs[:1], &command{pconn: true})
	want = "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n" +
		"  -> RemoteAddress:Port\n" +
		"TCP  172.25.254.100:80 rr persistent 600 mask 255.255.255.0 synproxy\n" +
		"  -> 10.20.1.2:80                 1         2           3          1         \n"
	if b.String() != want {
		t.Fatalf("-L --persistent-conn:\n%q\nwant\n%q", b.String(), want)
	}

	b.Reset()
	printRules(&b, svcs, api.Timeouts{}, &command{})
	want = "-A -t 172.25.254.100:80 -s rr -p 600 -M 255.255.255.0 -j enable\n" +
		"-a -t 172.25.254.100:80 -r 10.20.1.2:80 -b -w 1\n" +
		"-A -t 172.25.254.101:0 -s wlc -p 300 -j disable\n" +
		"-A -t 172.25.254.102:80 -s rr -j disable\n" +
		"-A -u [2001:db8::1]:53 -s rr -p 60 -M 64 -j disable\n"
	if b.String() != want {
		t.Fatalf("-S:\n%s\nwant\n%s", b.String(), want)
	}
	for i, line := range []string{"-A -t 172.25.254.100:80 -s rr -p 600 -M 255.255.255.0 -j enable", "", "-A -u [2001:db8::1]:53 -s rr -p 60 -M 64"} {
		if line == "" {
			continue
		}
		c, err := parse(strings.Fields(line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		op, ok, err := opOf(c)
		if !ok || err != nil || op.Service.Persistent == nil || *op.Service.Persistent != svcs[i].Persistent || op.Service.PersistenceNetmask != svcs[i].PersistenceNetmask {
			t.Fatalf("%s read back as %+v (%v)", line, op.Service, err)
		}
	}

	b.Reset()
	printConns(&b, []api.Conn{
		{Protocol: "TCP", State: "NONE", ExpiresMs: 599000, Source: "172.25.253.0:0", Virtual: "172.25.254.100:80", Destination: "10.20.1.2:80"},
		{Protocol: "TCP", State: "ESTABLISHED", ExpiresMs: 89500, Source: "172.25.253.10:40000", Virtual: "172.25.254.100:80", Local: "172.25.84.10:5000", Destination: "10.20.1.2:80"},
	}, &command{})
	want = "IPVS connection entries\n" +
		"pro expire state       source             virtual            local              destination\n" +
		"TCP 09:59  NONE        172.25.253.0:0     172.25.254.100:80  0.0.0.0:0          10.20.1.2:80\n" +
		"TCP 01:30  ESTABLISHED 172.25.253.10:40000 172.25.254.100:80  172.25.84.10:5000  10.20.1.2:80\n"
	if b.String() != want {
		t.Fatalf("-lnc:\n%s\nwant\n%s", b.String(), want)
	}
}
