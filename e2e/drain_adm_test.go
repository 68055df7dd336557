package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/bgp/bgptest"
	"github.com/tapvs/tapvs/lab"
)

// Issue 21, the operator's side: ipvsadm --bgp shows the session with a
// router and what it learned; --drain takes the VIP from the router while
// a connection held open goes on serving; --drain --wait times out while
// it is open and ends once it is closed and gone from the table; --undrain
// gives the router the VIP back.
func TestOperatorDrainsOverBGP(t *testing.T) {
	need(t)
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	r := bgptest.Start(t, 65001, "")
	e := setup(t, services("rr", 1, 1), fmt.Sprintf(`bgp:
  asn: 65001
  router_id: 10.9.9.9
  connect_retry: 1s
  peers:
    - {address: 127.0.0.1, asn: 65000, port: %d, local_address: 127.0.0.2}
`, r.Port))
	self := bgptest.SpeakerAddr
	vip := netip.PrefixFrom(lab.VIP, 32)
	lips := map[netip.Prefix]netip.Addr{netip.PrefixFrom(lab.LIP1, 32): self, netip.PrefixFrom(lab.LIP2, 32): self}
	all := map[netip.Prefix]netip.Addr{vip: self}
	for p, nh := range lips {
		all[p] = nh
	}
	r.WaitLearned(t, all)

	var out string
	if !eventually(10*time.Second, func() bool {
		out = e.must("--bgp")
		return strings.Contains(out, "established")
	}) {
		t.Fatalf("ipvsadm --bgp never showed the session up:\n%s", out)
	}
	rs := rows(out)
	if len(rs) != 8 || strings.Join(rs[0], " ") != "BGP AS 65001 router-id 10.9.9.9" ||
		rs[2][0] != "127.0.0.1" || rs[2][1] != "65000" || rs[2][2] != "established" || rs[2][4] != "1" ||
		strings.Join(rs[7], " ") != "Announced 3 Withdrawn 0" {
		t.Fatalf("ipvsadm --bgp:\n%s", out)
	}
	for _, want := range []string{vip.String() + " vip", netip.PrefixFrom(lab.LIP1, 32).String() + " lip", netip.PrefixFrom(lab.LIP2, 32).String() + " lip"} {
		found := false
		for _, row := range rs[4:7] {
			found = found || len(row) == 3 && strings.Join(row[:2], " ") == want
		}
		if !found {
			t.Errorf("ipvsadm --bgp does not list %q:\n%s", want, out)
		}
	}

	// A connection held open across the drain.
	c, err := lab.Dial(e.ctx(10*time.Second), e.top.Client, "tcp4", web.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	request := func(what string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: tapvs\r\n\r\n"); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", what, resp.Status)
		}
	}
	request("before the drain")

	out = e.must("--drain")
	if !strings.HasPrefix(out, "Drain on since ") || !strings.Contains(out, ": 1 connection left\n") || !strings.HasSuffix(out, "Withdrawn: "+lab.VIP.String()+"\n") {
		t.Fatalf("ipvsadm --drain:\n%s", out)
	}
	r.WaitLearned(t, lips)
	request("drained, on the connection opened before")
	if out = e.must("--bgp"); !strings.HasSuffix(strings.SplitN(out, "\n", 2)[0], " draining") || strings.Contains(out, vip.String()) {
		t.Fatalf("ipvsadm --bgp while drained:\n%s", out)
	}

	start := time.Now()
	out, errOut, code := e.adm("", "--drain", "--wait", "--timeout", "1s")
	if code != 1 || errOut != "drain: 1 connection left after 1s (--timeout); the VIPs stay withdrawn\n" || time.Since(start) < time.Second {
		t.Fatalf("--drain --wait --timeout 1s with a connection open: exit %d after %s, stdout %q, stderr %q", code, time.Since(start), out, errOut)
	}
	c.Close()
	out, errOut, code = e.adm("", "--drain", "--wait", "--timeout", "2m")
	if code != 0 || !strings.HasSuffix(out, "no connection left: tapvs can be stopped\n") || errOut != "" {
		t.Fatalf("--drain --wait once the connection is closed: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if n := e.d.Balancer.Table().Len(); n != 0 {
		t.Fatalf("the wait ended with %d connections in the table", n)
	}
	r.WaitLearned(t, lips) // a second --drain changed nothing

	if out = e.must("--undrain"); !strings.HasPrefix(out, "Drain off: the VIPs are announced") {
		t.Fatalf("ipvsadm --undrain: %q", out)
	}
	r.WaitLearned(t, all)
	if out = e.must("--drain-status"); out != "Drain off: the VIPs are announced, 0 connections\n" {
		t.Fatalf("ipvsadm --drain-status: %q", out)
	}
}
