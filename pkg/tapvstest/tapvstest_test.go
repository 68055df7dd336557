package tapvstest_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// get asks the lab's default service once and returns the answering
// server's name and the source it saw.
func get(t *testing.T, l *tapvstest.Lab) (name string, saw netip.AddrPort) {
	t.Helper()
	resp, err := l.HTTPClient().Get(l.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var addr, src string
	if _, err := fmt.Sscanf(string(body), "%s %s saw %s", &name, &addr, &src); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	if saw, err = netip.ParseAddrPort(src); err != nil {
		t.Fatal(err)
	}
	return name, saw
}

func TestDefaultLabBalances(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	seen := map[string]int{}
	for range 6 {
		name, saw := get(t, l)
		seen[name]++
		if saw.Addr() != l.LocalAddrs[0] && saw.Addr() != l.LocalAddrs[1] {
			t.Errorf("%s saw the source %s, not a local address %v (FULLNAT)", name, saw, l.LocalAddrs)
		}
	}
	if seen["rs1"] != 3 || seen["rs2"] != 3 {
		t.Errorf("rr over two servers, six requests: %v", seen)
	}
	if r := l.RealServers[0].Requests() + l.RealServers[1].Requests(); r != 6 {
		t.Errorf("the servers counted %d requests, want 6", r)
	}
}

// A lab of three real servers running the test's own server, not the
// built-in ones, behind a service the test adds.
func TestOwnServers(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 3, NoBackends: true, NoService: true})
	svc := tapvs.Service{ServiceKey: tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.AddrPortFrom(l.VIP, 7000)},
		Scheduler: "rr", LocalAddrs: l.LocalAddrs[:1]}
	for _, rs := range l.RealServers {
		ln, err := rs.Listen("tcp4", 7000)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s\n", rs.Name)
				c.Close()
			}
		}()
		svc.RealServers = append(svc.RealServers, tapvs.RealServer{Addr: netip.AddrPortFrom(rs.Addr, 7000)})
	}
	if err := l.LB.AddService(svc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.LB.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 3 {
		c, err := l.Dial(ctx, "tcp4", svc.VIP.String())
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		seen[strings.TrimSpace(line)] = true
	}
	if len(seen) != 3 {
		t.Errorf("rr over three servers, three connections reached %v", seen)
	}
}

// An IPv6 service and a NAT64 one through the Go API, on the lab's
// dual-stack real servers.
func TestIPv6AndNAT64(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{NoService: true})
	if !l.VIP6.IsValid() {
		t.Fatal("no IPv6 in this kernel: the lab is IPv4 only")
	}
	v6 := tapvs.Service{ServiceKey: tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.AddrPortFrom(l.VIP6, tapvstest.HTTPPort)},
		Scheduler: "rr", LocalAddrs: l.LocalAddrs6}
	nat64 := tapvs.Service{ServiceKey: tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.AddrPortFrom(l.VIP6, 8000)},
		Scheduler: "rr", LocalAddrs: l.LocalAddrs}
	for _, rs := range l.RealServers {
		v6.RealServers = append(v6.RealServers, tapvs.RealServer{Addr: netip.AddrPortFrom(rs.Addr6, tapvstest.HTTPPort)})
		nat64.RealServers = append(nat64.RealServers, tapvs.RealServer{Addr: netip.AddrPortFrom(rs.Addr, tapvstest.HTTPPort)})
	}
	for _, s := range []tapvs.Service{v6, nat64} {
		if err := l.LB.AddService(s); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.LB.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		svc  tapvs.Service
		lips []netip.Addr
	}{{v6, l.LocalAddrs6}, {nat64, l.LocalAddrs}} {
		seen := map[string]bool{}
		for range 4 {
			resp, err := l.HTTPClient().Get("http://" + c.svc.VIP.String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var name, addr, src string
			fmt.Sscanf(string(body), "%s %s saw %s", &name, &addr, &src)
			saw, err := netip.ParseAddrPort(src)
			if err != nil || (saw.Addr() != c.lips[0] && saw.Addr() != c.lips[1]) {
				t.Fatalf("%v: %s saw %q, not one of the local addresses %v", c.svc.VIP, name, src, c.lips)
			}
			seen[name] = true
		}
		if len(seen) != 2 {
			t.Errorf("%v: rr over two servers reached %v", c.svc.VIP, seen)
		}
	}
}

// Everything NewLab made is gone once the test that made it has ended.
func TestCleanup(t *testing.T) {
	var client string
	var lnk []byte
	t.Run("lab", func(t *testing.T) {
		l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 3})
		client = l.Client
		if err := l.Run(l.Client, func() error {
			_, err := net.Interfaces()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var err error
		if lnk, err = exec.Command("ip", "-n", l.Client, "-o", "link").Output(); err != nil {
			t.Fatal(err)
		}
	})
	if client == "" {
		return // the subtest failed before the lab was up
	}
	if !strings.Contains(string(lnk), client[:len(client)-len("-client")]+"c") {
		t.Errorf("the client's namespace has no TAP while the lab ran: %s", lnk)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	prefix := strings.TrimSuffix(client, "-client")
	if strings.Contains(string(out), prefix) {
		t.Errorf("namespaces of %s left after the test: %s", prefix, out)
	}
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), prefix) {
		t.Errorf("links of %s left in this namespace: %s", prefix, out)
	}
}
