// Package outside is a project of its own that tests through tapvs: it
// imports tapvs's test helper as any other module would (go.mod), and its
// test passes as root and, under unshare -Urnm, as an ordinary user.
package outside

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// This project's "server": it greets whoever connects, with its own name.
func serve(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "hello from %s, you are %s\n", name, c.RemoteAddr())
		c.Close()
	}
}

// The project's server on two real servers behind tapvs: connections are
// balanced over both and reach them from tapvs's local addresses.
func TestBalancedOverTwoServers(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{RealServers: 2, NoBackends: true, NoService: true})
	svc := tapvs.Service{
		ServiceKey: tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.AddrPortFrom(l.VIP, 7000)},
		Name:       "greeter", Scheduler: "rr", LocalAddrs: l.LocalAddrs,
	}
	for _, rs := range l.RealServers {
		ln, err := rs.Listen("tcp4", 7000)
		if err != nil {
			t.Fatal(err)
		}
		go serve(ln, rs.Name)
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
	seen := map[string]int{}
	for range 4 {
		c, err := l.Dial(ctx, "tcp4", svc.VIP.String())
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		var name, you string
		if _, err := fmt.Sscanf(string(b), "hello from %s you are %s", &name, &you); err != nil {
			t.Fatalf("greeting %q: %v", b, err)
		}
		seen[strings.TrimSuffix(name, ",")]++
		src := netip.MustParseAddrPort(you).Addr()
		if src != l.LocalAddrs[0] && src != l.LocalAddrs[1] {
			t.Errorf("the server saw %s, not one of tapvs's local addresses %v", src, l.LocalAddrs)
		}
	}
	if seen["rs1"] != 2 || seen["rs2"] != 2 {
		t.Errorf("rr over two servers, four connections: %v", seen)
	}
	var conns uint64
	for _, rs := range l.LB.RealServers() {
		conns += rs.Conns
	}
	if conns != 4 {
		t.Errorf("tapvs counted %d connections to the real servers, want 4", conns)
	}
}
