package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/lab"
)

// TCP timestamps through a plain VIP, on one tuple reused from a real
// Linux server's TIME_WAIT again and again: the pool is one local port
// toward one server, the server closes each connection first and so holds
// (LIP:7000, RS:80) in TIME_WAIT for 60 s, and 15 connections in a row
// all open at the first SYN. The client keeps timestamps (Linux's default),
// so each SYN carries a TSval: without tapvs's per-tuple offset (nat/seq.go)
// a client clock behind the last connection's would have the server refuse
// the SYN (PAWS) and answer it with an ACK of the old connection.
//
// The tuple is reused both ways tapvs reuses one: ten connections from one
// client port, each opened as soon as the last one's socket is gone, while
// tapvs still holds its entry (the client reuses its port on the closing
// entry), then six from new client ports, each after the last one's entry
// has expired and the one local port is free again. Those six come from
// two client addresses in turn: Linux gives each (source, destination)
// address pair a clock of its own (a random offset, secure_tcp_ts_off), so
// they are two clients with unrelated clocks behind one LIP, and one of
// them is behind the other: passed through as they are, their TSvals would
// go back on the tuple.
//
// The wire, on both sides of tapvs: every SYN to the server has
// timestamps, a TSval at or past where the connection before it on the
// tuple ended, and is answered by a SYN-ACK with timestamps; no SYN is
// sent twice; on the client's side every SYN-ACK echoes the client's own
// TSval.
func TestTimestampsKeptOnTuplesReusedFromTimeWait(t *testing.T) {
	const (
		lport               = 7000
		sameCport, newCport = 10, 6
	)
	svcs := `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 80}`
	e := setup(t, svcs, "limits: {local_port_min: 7000, local_port_max: 7000}\ntimeouts: {tcp: {time_wait: 1s, close: 1s}}\n")
	client2 := netip.MustParseAddr("172.25.254.2")
	if out, err := exec.Command("ip", "-n", e.top.Client, "addr", "add", client2.String()+"/24", "dev", e.top.TapClient).CombinedOutput(); err != nil {
		t.Fatalf("a second client address: %v: %s", err, out)
	}
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	capClient := startCapture(t, e.top.Client, e.top.TapClient)

	// get makes one HTTP/1.0 request from src:cport (zero: any) and reads
	// the answer to the server's close.
	get := func(src netip.Addr, cport int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var c net.Conn
		err := lab.InNetns(e.top.Client, func() (err error) {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, uint16(cport))), Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) }); err != nil {
					return err
				}
				return serr
			}}
			c, err = d.DialContext(ctx, "tcp4", web.String())
			return err
		})
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: web\r\n\r\n"); err != nil {
			return err
		}
		b, err := io.ReadAll(c) // to the server's FIN: it closes first
		if err != nil {
			return err
		}
		if !strings.HasPrefix(string(b), "HTTP/1.0 200") && !strings.HasPrefix(string(b), "HTTP/1.1 200") {
			return errors.New("answer: " + string(b))
		}
		return nil
	}

	const cport = 41000
	for i := range sameCport {
		// The last connection's socket lingers until the server's ACK of
		// its FIN: until then the tuple is taken (EADDRNOTAVAIL).
		var err error
		if !eventually(3*time.Second, func() bool {
			err = get(netip.IPv4Unspecified(), cport)
			return !errors.Is(err, unix.EADDRNOTAVAIL)
		}) || err != nil {
			t.Fatalf("connection %d from port %d: %v", i+1, cport, err)
		}
	}
	for i := range newCport {
		if !eventually(10*time.Second, func() bool { return e.d.Balancer.Table().Len() == 0 }) {
			t.Fatalf("the last connection's entry did not expire: %d in the table", e.d.Balancer.Table().Len())
		}
		src := lab.ClientAddr.Addr()
		if i%2 == 1 {
			src = client2
		}
		if err := get(src, 0); err != nil {
			t.Fatalf("connection %d from a new port: %v", sameCport+i+1, err)
		}
	}
	const conns = sameCport + newCport

	// Both ends' FINs of every connection have crossed the router's link.
	fins := func() (rs, lip int) {
		for _, p := range tcpPort(capRouter.packets(), lab.HTTPPort) {
			if tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP); tcp.FIN && uint16(tcp.SrcPort) == lab.HTTPPort {
				rs++
			} else if tcp.FIN {
				lip++
			}
		}
		return
	}
	if !eventually(5*time.Second, func() bool { rs, lip := fins(); return rs >= conns && lip >= conns }) {
		rs, lip := fins()
		t.Fatalf("the capture has %d server FINs and %d LIP FINs, want %d each", rs, lip, conns)
	}
	capRouter.stop()
	capClient.stop()

	var syns, synAcks, challenges, reusedInTW int
	var last uint32 // the highest TSval the server got on the tuple so far
	seen := false
	var serverFIN time.Time
	pending := false
	for _, p := range tcpPort(capRouter.packets(), lab.HTTPPort) {
		ipl, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ipl == nil {
			continue
		}
		fromRS := uint16(tcp.SrcPort) == lab.HTTPPort
		lp := uint16(tcp.SrcPort)
		if fromRS {
			lp = uint16(tcp.DstPort)
		}
		if lp != lport {
			t.Fatalf("a segment on local port %d: the pool has only %d", lp, lport)
		}
		val, _, hasTS := tsOf(tcp)
		switch {
		case !fromRS && tcp.SYN:
			syns++
			if !hasTS {
				t.Fatalf("SYN %d to the server has no timestamps", syns)
			}
			if seen && int32(val-last) < 0 {
				t.Fatalf("SYN %d to the server: TSval %d, before the last connection's %d on the tuple", syns, val, last)
			}
			if !serverFIN.IsZero() && p.Metadata().Timestamp.Sub(serverFIN) < 60*time.Second {
				reusedInTW++
			}
			pending = true
		case tcp.SYN && tcp.ACK:
			synAcks++
			pending = false
			if !hasTS {
				t.Fatalf("SYN-ACK %d from the server has no timestamps", synAcks)
			}
		case pending && tcp.ACK:
			challenges++ // an ACK, not a SYN-ACK, to a SYN: the server kept its TIME_WAIT
			pending = false
		}
		if !fromRS && hasTS && (!seen || int32(val-last) > 0) {
			last, seen = val, true
		}
		if fromRS && tcp.FIN {
			serverFIN = p.Metadata().Timestamp
		}
	}
	t.Logf("router link: %d SYNs to the server on one tuple, %d SYN-ACKs, %d challenge ACKs; %d SYNs reused it from the server's TIME_WAIT",
		syns, synAcks, challenges, reusedInTW)
	if syns != conns || synAcks != conns || challenges != 0 || reusedInTW != conns-1 {
		t.Fatalf("%d connections: %d SYNs, %d SYN-ACKs, %d challenge ACKs, %d reused from TIME_WAIT (want %d, %d, 0, %d)",
			conns, syns, synAcks, challenges, reusedInTW, conns, conns, conns-1)
	}

	// The client's side: each SYN-ACK echoes the TSval of the client's SYN
	// it answers (the same port's last SYN).
	type end struct {
		a    netip.Addr
		port uint16
	}
	synTS := map[end]uint32{}
	var checked int
	for _, p := range tcpPort(capClient.packets(), lab.HTTPPort) {
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		val, ecr, hasTS := tsOf(tcp)
		switch {
		case tcp.SYN && !tcp.ACK:
			if !hasTS {
				t.Fatal("the client's SYN has no timestamps: the test proves nothing")
			}
			synTS[end{addr(p.NetworkLayer().(*layers.IPv4).SrcIP), uint16(tcp.SrcPort)}] = val
		case tcp.SYN && tcp.ACK:
			want, ok := synTS[end{addr(p.NetworkLayer().(*layers.IPv4).DstIP), uint16(tcp.DstPort)}]
			if !hasTS || !ok || ecr != want {
				t.Fatalf("SYN-ACK to client port %d: timestamps %v, TSecr %d, want the client's SYN's %d", tcp.DstPort, hasTS, ecr, want)
			}
			checked++
		}
	}
	if checked != conns {
		t.Fatalf("%d SYN-ACKs reached the client, want %d", checked, conns)
	}
}
