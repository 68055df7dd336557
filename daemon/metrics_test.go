package daemon

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/metrics"
)

// scrape reads /metrics and returns its sample lines that begin with one
// of prefixes. It dials on the test's own thread, the one in the test's
// namespace (http.Get would dial from any thread, in any namespace).
func scrape(t *testing.T, d *Daemon, prefixes ...string) []string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", d.Metrics.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: tapvs\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
			}
		}
	}
	return out
}

// Issue 21: the daemon's /metrics carries its BGP speaker and its drain.
// The peer cannot be reached (nothing answers in this namespace): its
// session is down, the routes are the speaker's all the same.
func TestMetricsOfBGPAndDrain(t *testing.T) {
	inNewNetns(t)
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(base + `bgp:
  asn: 65001
  router_id: 10.0.0.1
  peers: [{address: 172.25.84.254, asn: 65000}]
metrics: {listen: "127.0.0.1:0"}
control: {socket: ""}
`)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := func(what string, lines ...string) {
		t.Helper()
		var got []string
		for i := 0; ; i++ {
			got = scrape(t, d, "tapvs_bgp_peer_up", "tapvs_bgp_peer_sessions_total", "tapvs_bgp_routes_announced", "tapvs_draining")
			if strings.Join(got, "\n") == strings.Join(lines, "\n") {
				return
			}
			if i == 50 { // 5 s: the announcer passes every 100 ms
				t.Fatalf("%s:\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(lines, "\n"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	want("running",
		`tapvs_bgp_peer_sessions_total{peer="172.25.84.254"} 0`,
		`tapvs_bgp_peer_up{peer="172.25.84.254"} 0`,
		`tapvs_bgp_routes_announced{kind="lip"} 1`,
		`tapvs_bgp_routes_announced{kind="vip"} 1`,
		"tapvs_draining 0")
	d.cluster.Drain(true)
	want("drained: the VIP withdrawn, the LIP kept",
		`tapvs_bgp_peer_sessions_total{peer="172.25.84.254"} 0`,
		`tapvs_bgp_peer_up{peer="172.25.84.254"} 0`,
		`tapvs_bgp_routes_announced{kind="lip"} 1`,
		`tapvs_bgp_routes_announced{kind="vip"} 0`,
		"tapvs_draining 1")
}

// The metrics read the real speaker: a session up with a router (a GoBGP
// on loopback) is tapvs_bgp_peer_up 1 and one session; a drain's
// withdrawals are counted.
func TestMetricsOfAnEstablishedPeer(t *testing.T) {
	g := newClusterRig(t)
	g.expect(t, vip80, vip443, lip10, lip11)
	mc := metrics.New(g.d.Balancer, nil, nil)
	mc.SetCluster(g.c)
	peer := `{peer="127.0.0.1"}`
	gather := func() map[string]float64 {
		t.Helper()
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(mc)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
				}
				name := mf.GetName()
				if len(ls) > 0 {
					name += "{" + strings.Join(ls, ",") + "}"
				}
				got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		return got
	}
	m := gather()
	if m["tapvs_bgp_peer_up"+peer] != 1 || m["tapvs_bgp_peer_sessions_total"+peer] != 1 || m["tapvs_bgp_peer_state_changes_total"+peer] < 1 ||
		m[`tapvs_bgp_routes_announced{kind="vip"}`] != 2 || m[`tapvs_bgp_routes_announced{kind="lip"}`] != 2 ||
		m["tapvs_bgp_announcements_total"] != 4 || m["tapvs_draining"] != 0 {
		t.Fatalf("established, four routes: %v", m)
	}
	g.c.Drain(true)
	g.expect(t, lip10, lip11)
	m = gather()
	if m[`tapvs_bgp_routes_announced{kind="vip"}`] != 0 || m[`tapvs_bgp_routes_announced{kind="lip"}`] != 2 ||
		m["tapvs_bgp_withdrawals_total"] != 2 || m["tapvs_draining"] != 1 || m["tapvs_bgp_peer_up"+peer] != 1 {
		t.Fatalf("drained: %v", m)
	}
}
