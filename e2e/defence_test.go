package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

const webAddr = "172.25.254.100:80"

// keepAlive is one HTTP/1.1 connection to the web service from the client,
// kept open for more requests.
type keepAlive struct {
	c net.Conn
	r *bufio.Reader
}

func openKeepAlive(t *testing.T, e *env) (*keepAlive, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	c, err := lab.Dial(ctx, e.top.Client, "tcp4", webAddr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, r: bufio.NewReader(c)}, nil
}

// get asks for / on the open connection and returns the answer's body.
func (k *keepAlive) get() (string, error) {
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// A deny prefix added live with tapvsadm (DPVS's --add-blklst) refuses the
// client's new connections, counted as denied, while the connection it
// already has keeps working; deleting it lets new ones in again.
func TestDenyListLive(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	open, err := openKeepAlive(t, e)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := open.get(); err != nil || !strings.Contains(body, "saw") {
		t.Fatalf("before the deny: %q %v", body, err)
	}
	e.must("--add-blklst", "-t", webAddr, "-k", "172.25.254.0/24")
	if out := e.must("--get-blklst", "-t", webAddr); !strings.Contains(out, "172.25.254.0/24") {
		t.Fatalf("--get-blklst:\n%s", out)
	}
	denied := e.d.Balancer.Stats.Drop(nat.DropDenied)
	if _, err := openKeepAlive(t, e); err == nil {
		t.Fatal("a new connection from a denied source was opened")
	}
	if !eventually(5*time.Second, func() bool { return e.d.Balancer.Stats.Drop(nat.DropDenied) > denied }) {
		t.Fatalf("denied SYNs not counted: %v", e.d.Balancer.Stats.Drops())
	}
	for range 3 {
		if body, err := open.get(); err != nil || !strings.Contains(body, "saw") {
			t.Fatalf("the open connection after the deny: %q %v", body, err)
		}
	}
	e.must("--del-blklst", "-t", webAddr, "-k", "172.25.254.0/24")
	again, err := openKeepAlive(t, e)
	if err != nil {
		t.Fatalf("after --del-blklst: %v", err)
	}
	if body, err := again.get(); err != nil || !strings.Contains(body, "saw") {
		t.Fatalf("after --del-blklst: %q %v", body, err)
	}
}

// A per-source limit of N concurrent connections lets N in and refuses the
// next, counted as src_conn_limit.
func TestSourceConnLimit(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	const n = 2
	e.must("-E", "-t", webAddr, "--source-conns", fmt.Sprint(n))
	if out := e.must("-S"); !strings.Contains(out, "--source-conns 2") {
		t.Fatalf("-S does not show the limit:\n%s", out)
	}
	for i := range n {
		k, err := openKeepAlive(t, e)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, n, err)
		}
		if body, err := k.get(); err != nil || !strings.Contains(body, "saw") {
			t.Fatalf("connection %d: %q %v", i+1, body, err)
		}
	}
	before := e.d.Balancer.Stats.Drop(nat.DropSrcConnLimit)
	if _, err := openKeepAlive(t, e); err == nil {
		t.Fatalf("connection %d of a limit of %d was opened", n+1, n)
	}
	if !eventually(5*time.Second, func() bool { return e.d.Balancer.Stats.Drop(nat.DropSrcConnLimit) > before }) {
		t.Fatalf("src_conn_limit not counted: %v", e.d.Balancer.Stats.Drops())
	}
}
