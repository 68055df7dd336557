package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

const onePortService = `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 80}`

// Port exhaustion shows per LIP in -G: with one local port, a connection
// to the one real server holds it, and a second connection finds no port:
// it is not made, EXHAUSTED counts each attempt (each a conflict on the one
// port tried), and the first connection is untouched.
func TestGShowsPortExhaustionPerLIP(t *testing.T) {
	e := setup(t, onePortService, "limits: {local_port_min: 40000, local_port_max: 40000}\n")
	g := rows(e.must("-G", "-t", "172.25.254.100:80"))
	fields(t, g[0], "VIP:VPORT", "TOTAL", "SNAT_IP", "CONFLICTS", "CONNS", "EXHAUSTED")
	fields(t, g[1], "172.25.254.100:80", "1", "172.25.84.10", "0", "0", "0")

	first, err := lab.Dial(e.ctx(5*time.Second), e.top.Client, "tcp4", web.String())
	if err != nil {
		t.Fatalf("the first connection: %v", err)
	}
	defer first.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if c, err := lab.Dial(ctx, e.top.Client, "tcp4", web.String()); err == nil {
		c.Close()
		t.Fatal("a second connection to the same server was made with the LIP's one port taken")
	}
	g = rows(e.must("-G", "-t", "172.25.254.100:80"))
	if len(g) != 2 || len(g[1]) != 6 {
		t.Fatalf("-G: %q", g)
	}
	fields(t, g[1][:3], "172.25.254.100:80", "1", "172.25.84.10")
	conflicts, _ := strconv.Atoi(g[1][3])
	conns, _ := strconv.Atoi(g[1][4])
	exhausted, _ := strconv.Atoi(g[1][5])
	if conns != 1 || exhausted < 1 || conflicts != 0 {
		t.Fatalf("-G row %q: want CONNS 1, EXHAUSTED at least 1 (the refused SYN and its retries) and no CONFLICTS (the LIP's port map knows its one port is held: no tuple is tried in the table)", g[1])
	}
	// The connection holding the port still works.
	if err := askOver(first); err != nil {
		t.Fatalf("the first connection after the second was refused: %v", err)
	}
}

// askOver sends one HTTP request over c and reads the start of the answer.
func askOver(c net.Conn) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return err
	}
	b := make([]byte, 12)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b[:9]) != "HTTP/1.1 " {
		return fmt.Errorf("answer %q", b)
	}
	return nil
}
