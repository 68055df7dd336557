package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// Issue 25, IPVS's connection thresholds set with tapvsadm on a running
// tapvs (-e -x 2 -y 1 on one of two rr servers): -ln --thresholds lists
// them as ipvsadm does; two connections held open to that server bring
// it to its upper threshold, and every new connection goes to the other
// while they stay; closed, and their entries gone, it is below its lower
// threshold and takes new connections again. Each step waits on what it
// shows (the server's flag, the listing's counts), never on a guess.
func TestThresholdsStopAndResume(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "timeouts: {tcp: {fin_wait: 1s, close_wait: 1s, last_ack: 1s, time_wait: 1s, close: 1s}}\n")
	const svc, rs1 = "172.25.254.100:80", "10.20.1.2:80"
	e.must("-e", "-t", svc, "-r", rs1, "-x", "2", "-y", "1")
	row := func() []string {
		t.Helper()
		for _, r := range rows(e.must("-ln", "--thresholds", "-t", svc)) {
			if len(r) > 1 && r[0] == "->" && r[1] == rs1 {
				return r
			}
		}
		t.Fatalf("-ln --thresholds lists no %s", rs1)
		return nil
	}
	fields(t, row(), "->", rs1, "2", "1", "0", "0")
	ap := netip.MustParseAddrPort(rs1)
	dest := e.service("web").Dest(ap.Addr(), ap.Port())

	// hold opens a connection, asks over it which server it reached, and
	// keeps it open (the backends' HTTP server keeps an idle connection).
	hold := func() (net.Conn, string) {
		t.Helper()
		c, err := e.dial("tcp", web, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %v: %v", web, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("a held connection's answer: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		var rs, addr, saw string
		if _, err := fmt.Sscanf(string(body), "%s %s saw %s", &rs, &addr, &saw); err != nil {
			t.Fatalf("answer %q: %v", body, err)
		}
		c.SetDeadline(time.Time{})
		return c, addr
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// rr alternates: two of (at most) four connections reach rs1; those
	// to the other are closed.
	for i := 0; i < 4 && len(held) < 2; i++ {
		c, addr := hold()
		if addr+":80" == rs1 {
			held = append(held, c)
			continue
		}
		c.Close()
		if dest.Overloaded() {
			t.Fatalf("overloaded with %d connections held, under its upper threshold 2", len(held))
		}
	}
	if len(held) != 2 {
		t.Fatalf("%d of 4 rr connections reached %s, want 2", len(held), rs1)
	}
	if !dest.Overloaded() {
		t.Fatalf("2 connections held at upper threshold 2: not overloaded (-ln --thresholds %q)", row())
	}
	fields(t, row(), "->", rs1, "2", "1", "2", "0")

	hc := lab.HTTPClient(e.top.Client, 5*time.Second) // a connection per request
	for i := range 6 {
		if rs, _ := e.get(hc); rs != "rs2" {
			t.Fatalf("request %d with %s at its upper threshold reached %s, want rs2", i+1, rs1, rs)
		}
	}

	for _, c := range held {
		c.Close()
	}
	held = nil
	// Their entries end (FIN, then TIME_WAIT's 1s): below the lower
	// threshold (1), the flag goes.
	if !eventually(15*time.Second, func() bool { return !dest.Overloaded() }) {
		t.Fatalf("connections closed: still overloaded after 15s (-ln --thresholds %q)", row())
	}
	fields(t, row(), "->", rs1, "2", "1", "0", "0")
	seen := map[string]int{}
	for range 4 {
		rs, _ := e.get(hc)
		seen[rs]++
	}
	if seen["rs1"] == 0 || seen["rs2"] == 0 {
		t.Fatalf("below the lower threshold, 4 rr requests reached %v, want both servers", seen)
	}
	if out := e.must("-Sn"); !strings.Contains(out, "-a -t "+svc+" -r "+rs1+" -b -w 1 -x 2 -y 1\n") {
		t.Fatalf("-S:\n%s", out)
	}
}
