package tapvstest_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
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

// Five real servers on three subnets, with the UDP service and three client
// addresses: each server on its own subnet's address, dual-stack, reached
// over TCP, UDP and IPv6; the client driven by hand from a chosen address,
// a byte at a time, through a Dialer.
func TestSubnetsUDPAndClient(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 5, Subnets: 3, UDP: true, Clients: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := []string{"10.20.1.2", "10.20.2.2", "10.20.3.2", "10.20.1.3", "10.20.2.3"}
	for i, rs := range l.RealServers {
		if rs.Addr.String() != want[i] || rs.Subnet != i%3 {
			t.Errorf("%s is %s on subnet %d, want %s on %d", rs.Name, rs.Addr, rs.Subnet, want[i], i%3)
		}
		out, err := l.Command(ctx, rs.Netns, "ip", "-o", "addr", "show", "dev", "eth0").Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), rs.Addr.String()+"/24") || !strings.Contains(string(out), rs.Addr6.String()+"/64") {
			t.Errorf("%s's eth0 has not %s and %s: %s", rs.Name, rs.Addr, rs.Addr6, out)
		}
	}
	// The router reaches each subnet through a bridge of its own.
	out, err := l.Command(ctx, l.Router, "ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, br := range []string{"br-a inet 10.20.1.1/24", "br-b inet 10.20.2.1/24", "br-c inet 10.20.3.1/24"} {
		if !strings.Contains(strings.Join(strings.Fields(string(out)), " "), br) {
			t.Errorf("the router has no %s: %s", br, out)
		}
	}
	seen := map[string]int{}
	for range 5 {
		name, _ := get(t, l)
		seen[name]++
		server, reply, err := l.Echo(ctx, "hi")
		if err != nil || reply != "hi" {
			t.Fatalf("echo: %q, %v", reply, err)
		}
		seen[server+"/udp"]++
	}
	for _, rs := range l.RealServers {
		if seen[rs.Name] != 1 || seen[rs.Name+"/udp"] != 1 || rs.Requests() != 1 || rs.Echoes() != 1 {
			t.Errorf("rr over five: %s answered %d requests and %d datagrams (counted %d and %d)", rs.Name, seen[rs.Name], seen[rs.Name+"/udp"], rs.Requests(), rs.Echoes())
		}
	}

	// IPv6 to every server, the three past the lab's first two too.
	v6 := tapvs.Service{ServiceKey: tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.AddrPortFrom(l.VIP6, tapvstest.HTTPPort)},
		Scheduler: "rr", LocalAddrs: l.LocalAddrs6}
	for _, rs := range l.RealServers {
		v6.RealServers = append(v6.RealServers, tapvs.RealServer{Addr: netip.AddrPortFrom(rs.Addr6, tapvstest.HTTPPort)})
	}
	if err := l.LB.AddService(v6); err != nil {
		t.Fatal(err)
	}
	if err := l.LB.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	seen6 := map[string]bool{}
	for range 5 {
		resp, err := l.HTTPClient().Get("http://" + v6.VIP.String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var name, addr string
		fmt.Sscanf(string(body), "%s %s", &name, &addr)
		seen6[name+" "+addr] = true
	}
	for _, rs := range l.RealServers {
		if !seen6[rs.Name+" "+rs.Addr6.String()] {
			t.Errorf("no IPv6 answer from %s at %s: %v", rs.Name, rs.Addr6, seen6)
		}
	}

	// A connection from the third client address, written by hand: tapvs
	// holds it from that address while the request is half sent.
	if len(l.ClientAddrs) != 3 || l.ClientAddrs[2].String() != "172.25.254.3" {
		t.Fatalf("client addresses %v", l.ClientAddrs)
	}
	d := l.Dialer(l.Client)
	d.LocalAddr = l.ClientAddrs[2]
	c, err := d.DialContext(ctx, "tcp4", l.URL()[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n"); err != nil {
		t.Fatal(err)
	}
	held := eventually(5*time.Second, func() bool {
		for _, cn := range l.LB.Connections() {
			if cn.Client.Addr() == l.ClientAddrs[2] && cn.VIP == l.Service.VIP && cn.State == "ESTABLISHED" {
				return true
			}
		}
		return false
	})
	if !held {
		t.Fatalf("no ESTABLISHED connection from %s: %v", l.ClientAddrs[2], l.LB.Connections())
	}
	if _, err := io.WriteString(c, "\r\n"); err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(c)
	if err != nil || !strings.Contains(string(body), " saw 172.25.84.1") {
		t.Errorf("answer %q, %v", body, err)
	}

	// An unconnected UDP socket: two datagrams from one port are one
	// connection, so one server answers both.
	pc, err := d.ListenPacket("udp4", "")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	vip := net.UDPAddrFromAddrPort(l.UDPService.VIP)
	var first string
	buf := make([]byte, 1500)
	for i := range 2 {
		if _, err := pc.WriteTo([]byte("x"), vip); err != nil {
			t.Fatal(err)
		}
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if from.String() != vip.String() {
			t.Errorf("answer from %s, not the VIP %s", from, vip)
		}
		name, _, _ := strings.Cut(string(buf[:n]), " ")
		if i == 0 {
			first = name
		} else if name != first {
			t.Errorf("one source port's datagrams answered by %s then %s", first, name)
		}
	}
}

// eventually polls cond until it holds or d has passed.
func eventually(d time.Duration, cond func() bool) bool {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); <-tick.C {
		if cond() {
			return true
		}
	}
	return cond()
}

// fatalTB records NewLab's Fatalf and ends its goroutine, as testing's does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Options that cannot make a lab are refused before anything is built,
// naming the field.
func TestOptionsRefused(t *testing.T) {
	for _, c := range []struct {
		o    tapvstest.Options
		want string
	}{
		{tapvstest.Options{RealServers: -1}, "Options.RealServers: -1 real servers: 1 to 253"},
		{tapvstest.Options{RealServers: 254}, "Options.RealServers: 254 real servers: 1 to 253"},
		{tapvstest.Options{Subnets: 3}, "Options.Subnets: 3 subnets for 2 real servers: 0 to 2"},
		{tapvstest.Options{Subnets: -1}, "Options.Subnets: -1 subnets"},
		{tapvstest.Options{Clients: 100}, "Options.Clients: 100 client addresses: 1 to 99"},
		{tapvstest.Options{Clients: -1}, "Options.Clients: -1 client addresses"},
		{tapvstest.Options{UDP: true, NoService: true}, "Options.UDP: a UDP service with NoService"},
	} {
		f := &fatalTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			tapvstest.NewLab(f, c.o)
		}()
		<-done
		if !strings.Contains(f.msg, c.want) {
			t.Errorf("%+v: %q, want it to say %q", c.o, f.msg, c.want)
		}
	}
}
