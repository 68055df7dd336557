package tapvs_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
)

// Start tapvs between namespaces "client" and "router" (made beforehand,
// e.g. by ip netns add), balancing TCP 172.25.254.100:80 over two servers
// behind the router. It needs root, or root in a user namespace that owns
// those namespaces, so it is not run by go test.
func ExampleStart() {
	ctx := context.Background()
	lb, err := tapvs.Start(ctx, tapvs.Config{
		Client: tapvs.Side{TAP: "tap-c", Netns: "client", Addr: netip.MustParsePrefix("172.25.254.254/24")},
		Server: tapvs.Side{TAP: "tap-s", Netns: "router", Addr: netip.MustParsePrefix("172.25.84.4/24"),
			Routes: []tapvs.Route{{Dst: netip.MustParsePrefix("10.20.0.0/16"), Via: netip.MustParseAddr("172.25.84.1")}}},
		Services: []tapvs.Service{{
			ServiceKey: tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.MustParseAddrPort("172.25.254.100:80")},
			Scheduler:  "rr",
			LocalAddrs: []netip.Addr{netip.MustParseAddr("172.25.84.10")},
			RealServers: []tapvs.RealServer{
				{Addr: netip.MustParseAddrPort("10.20.1.2:80")},
				{Addr: netip.MustParseAddrPort("10.20.2.2:80"), Weight: 2},
			},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer lb.Close()
	// Now give the TAPs' kernel ends their addresses (172.25.254.1/24 on
	// tap-c in "client", 172.25.84.1/24 on tap-s in "router"), then wait
	// for tapvs to find the real servers' next hop.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := lb.WaitReady(wctx); err != nil {
		log.Fatal(err)
	}
	for _, c := range lb.Connections() {
		fmt.Println(c.Client, "->", c.VIP, "as", c.Local, "->", c.Real, c.State)
	}
}

// Take a real server out of a service and put it back, as a test of the
// servers' failover would.
func ExampleLB_RemoveRealServer() {
	var lb *tapvs.LB // from tapvs.Start
	web := tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.MustParseAddrPort("172.25.254.100:80")}
	rs := netip.MustParseAddrPort("10.20.1.2:80")
	if err := lb.RemoveRealServer(web, rs); err != nil {
		log.Fatal(err)
	}
	// ... new connections go to the other servers ...
	if err := lb.AddRealServer(web, tapvs.RealServer{Addr: rs, Weight: 1}); err != nil {
		log.Fatal(err)
	}
	for _, s := range lb.RealServers() {
		fmt.Println(s.Service, s.Addr, s.Conns, "connections")
	}
}

// Drain an instance announced over BGP, as a test of a cluster's rolling
// restart would: its VIPs leave the routers, its connections finish, then
// it can be closed without breaking any.
func ExampleLB_Drain() {
	var lb *tapvs.LB // from tapvs.Start with Config.BGP
	if _, err := lb.Drain(); err != nil {
		log.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		d, err := lb.DrainStatus()
		if err != nil {
			log.Fatal(err)
		}
		if d.Empty {
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("%d connections left after a minute", d.Conns)
		}
	}
	lb.Close()
}

// Change a running service's scheduler and turn persistence on, as
// tapvsadm -E -t 172.25.254.100:80 -s sh -p 300 would; then give one real
// server three times the others' share and quiesce another (tapvsadm -e
// -w). Each change is all or nothing; a refusal names the field.
func ExampleLB_EditService() {
	var lb *tapvs.LB // from tapvs.Start
	web := tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.MustParseAddrPort("172.25.254.100:80")}
	err := lb.EditService(web, tapvs.ServiceEdit{
		Scheduler:   new("sh"),
		SchedFlags:  &[]string{"sh-port"},
		Persistence: new(300 * time.Second),
		ClientAddr:  new(tapvs.ProxyV2),
	})
	if err != nil {
		log.Fatal(err) // e.g. tapvs: ServiceEdit.Scheduler: service tcp 172.25.254.100:80: "foo" is not a scheduler (...)
	}
	if err := lb.EditRealServer(web, netip.MustParseAddrPort("10.20.1.2:80"), tapvs.RealServerEdit{Weight: new(3)}); err != nil {
		log.Fatal(err)
	}
	if err := lb.EditRealServer(web, netip.MustParseAddrPort("10.20.2.2:80"), tapvs.RealServerEdit{Weight: new(0)}); err != nil {
		log.Fatal(err)
	}
	if s, ok := lb.Service(web); ok {
		fmt.Println(s.Scheduler, s.Persistence, s.RealServers)
	}
}

// Refuse a client network's new connections to a service and limit each
// source, as a test of a service's behaviour behind an abusive client
// would.
func ExampleLB_AddDeny() {
	var lb *tapvs.LB // from tapvs.Start
	web := tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.MustParseAddrPort("172.25.254.100:80")}
	if err := lb.AddDeny(web, netip.MustParsePrefix("172.25.254.0/28")); err != nil {
		log.Fatal(err)
	}
	if err := lb.EditService(web, tapvs.ServiceEdit{Limits: &tapvs.Limits{SourceCPS: 100, SourceConns: 20}}); err != nil {
		log.Fatal(err)
	}
	// ... the clients of 172.25.254.0/28 connect no more ...
	if err := lb.RemoveDeny(web, netip.MustParsePrefix("172.25.254.0/28")); err != nil {
		log.Fatal(err)
	}
}
