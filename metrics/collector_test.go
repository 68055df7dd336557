package metrics

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/netstack"
	"github.com/tapvs/tapvs/tun"
)

var (
	vip      = netip.MustParseAddrPort("172.25.254.100:80")
	lip      = netip.MustParseAddr("172.25.84.10")
	rs1      = netip.MustParseAddrPort("10.20.1.2:80")
	rs2      = netip.MustParseAddrPort("10.20.2.2:80")
	client   = netip.MustParseAddrPort("172.25.254.1:40000")
	quiet    = slog.New(slog.NewTextHandler(io.Discard, nil))
	rsMAC    = [6]byte{2, 0, 0, 0, 0, 9}
	vipLabel = "TCP/172.25.254.100:80"
)

// testBalancer has the service "web" at vip, one LIP, rs1 (weight 3, the
// only one the scheduler can pick) and rs2 (weight 0, drained).
func testBalancer(t *testing.T) *nat.Balancer {
	t.Helper()
	bal, err := nat.New(nat.Config{MaxConns: 100, PortMin: 5000, PortMax: 6000, Timeouts: nat.DefaultTimeouts(), Readers: 2,
		ClientMAC: [6]byte{2, 0, 0, 0, 0, 1}, ServerMAC: [6]byte{2, 0, 0, 0, 0, 2}})
	if err != nil {
		t.Fatal(err)
	}
	err = bal.Update(func(tx *nat.Tx) error {
		s, err := tx.AddService(nat.ServiceConfig{Name: "web", Addr: vip.Addr(), Port: vip.Port(), Protocol: nat.TCP, Scheduler: "wrr"})
		if err != nil {
			return err
		}
		if _, err := tx.AddLocalAddr(s, lip); err != nil {
			return err
		}
		for _, d := range []struct {
			ap netip.AddrPort
			w  int
		}{{rs1, 3}, {rs2, 0}} {
			dst, err := tx.AddDest(s, d.ap.Addr(), d.ap.Port(), d.w)
			if err != nil {
				return err
			}
			dst.SetNextHopMAC(rsMAC)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bal
}

// tcpFrame is an Ethernet frame of a TCP segment without options or
// payload: 40 bytes of IP.
func tcpFrame(t *testing.T, src, dst netip.AddrPort, syn, ack bool, seq, ackn uint32) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 7}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), SYN: syn, ACK: ack, Seq: seq, Ack: ackn, Window: 64240}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// process runs a frame through the balancer as reader q and returns the
// rewritten frame's IPv4 and TCP headers.
func process(t *testing.T, bal *nat.Balancer, side nat.Side, q int, frame []byte) (*layers.IPv4, *layers.TCP) {
	t.Helper()
	f := &nat.Frame{Buf: frame, Len: len(frame), Queue: q}
	if v := bal.Process(side, f); v != nat.Forward {
		t.Fatalf("%v frame: verdict %v, want Forward", side, v)
	}
	p := gopacket.NewPacket(f.Bytes(), layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("forwarded frame is not TCP/IPv4: %v", p)
	}
	return ip, tcp
}

// handshake opens one connection from client through the balancer to rs1:
// SYN and ACK in (reader 0 and 1), SYN-ACK out (reader 1).
func handshake(t *testing.T, bal *nat.Balancer) {
	t.Helper()
	ip, tcp := process(t, bal, nat.ClientSide, 0, tcpFrame(t, client, vip, true, false, 1000, 0))
	if got := netip.AddrFrom4([4]byte(ip.DstIP.To4())); got != rs1.Addr() {
		t.Fatalf("SYN went to %s, want %s", got, rs1.Addr())
	}
	local := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip.SrcIP.To4())), uint16(tcp.SrcPort))
	if local.Addr() != lip {
		t.Fatalf("SYN from %s, want the LIP %s", local, lip)
	}
	process(t, bal, nat.ServerSide, 1, tcpFrame(t, rs1, local, true, true, 5000, 1001))
	process(t, bal, nat.ClientSide, 1, tcpFrame(t, client, vip, false, true, 1001, 5001))
}

// samples gathers c through a pedantic registry (which checks the
// collector against its descriptions) and returns every sample of the
// named families as a line "name{label="value",...} value", labels sorted
// by name, lines sorted.
func samples(t *testing.T, c prometheus.Collector, names ...string) []string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out []string
	for _, mf := range mfs {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			slices.Sort(ls)
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			line := mf.GetName()
			if len(ls) > 0 {
				line += "{" + strings.Join(ls, ",") + "}"
			}
			out = append(out, line+" "+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	slices.Sort(out)
	return out
}

// compare fails the test unless got is the sample lines of want (blank
// lines and # comments ignored, any order).
func compare(t *testing.T, got []string, want string) {
	t.Helper()
	var w []string
	for _, line := range strings.Split(want, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			w = append(w, line)
		}
	}
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Fatalf("samples:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(w, "\n"))
	}
}

// The balancer's counters for one handshake, a dropped frame and a
// checked server, exactly as Prometheus reads them.
func TestExpositionOfTraffic(t *testing.T) {
	bal := testBalancer(t)
	handshake(t, bal)
	if v := bal.Process(nat.ClientSide, &nat.Frame{Buf: tcpFrame(t, client, netip.AddrPortFrom(vip.Addr(), 81), true, false, 1, 0), Len: 54}); v != nat.Drop {
		t.Fatalf("SYN to a port without a service: %v, want Drop", v)
	}
	health := func(s *nat.Service, d *nat.Dest) (up, checked bool) {
		if s.Name() != "web" {
			t.Errorf("health asked about service %q", s.Name())
		}
		switch d.String() {
		case rs1.String():
			return true, true
		case rs2.String():
			return false, false // unchecked: no tapvs_rs_up
		}
		t.Errorf("health asked about %s", d)
		return false, false
	}
	c := New(bal, nil, health)
	const want = `
# HELP tapvs_connections Connections in the table.
# TYPE tapvs_connections gauge
tapvs_connections 1
# HELP tapvs_connections_created_total Connections made.
# TYPE tapvs_connections_created_total counter
tapvs_connections_created_total 1
# HELP tapvs_connections_max Connection table limit.
# TYPE tapvs_connections_max gauge
tapvs_connections_max 100
# HELP tapvs_rs_active_connections ESTABLISHED connections (ipvsadm ActiveConn).
# TYPE tapvs_rs_active_connections gauge
tapvs_rs_active_connections{rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 1
tapvs_rs_active_connections{rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
# HELP tapvs_rs_inactive_connections Other connections (ipvsadm InActConn).
# TYPE tapvs_rs_inactive_connections gauge
tapvs_rs_inactive_connections{rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
tapvs_rs_inactive_connections{rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
# HELP tapvs_rs_scheduled_total Connections the scheduler gave this server.
# TYPE tapvs_rs_scheduled_total counter
tapvs_rs_scheduled_total{rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 1
tapvs_rs_scheduled_total{rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
# HELP tapvs_rs_weight Scheduling weight (0: drained).
# TYPE tapvs_rs_weight gauge
tapvs_rs_weight{rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 3
tapvs_rs_weight{rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
# HELP tapvs_rs_up Health check state (1 healthy, 0 failed); absent when unchecked.
# TYPE tapvs_rs_up gauge
tapvs_rs_up{rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 1
# HELP tapvs_rs_packets_total Packets through tapvs, by direction (in: client to server).
# TYPE tapvs_rs_packets_total counter
tapvs_rs_packets_total{direction="in",rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 2
tapvs_rs_packets_total{direction="out",rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 1
tapvs_rs_packets_total{direction="in",rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
tapvs_rs_packets_total{direction="out",rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
# HELP tapvs_rs_bytes_total IP bytes through tapvs, by direction.
# TYPE tapvs_rs_bytes_total counter
tapvs_rs_bytes_total{direction="in",rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 80
tapvs_rs_bytes_total{direction="out",rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 40
tapvs_rs_bytes_total{direction="in",rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
tapvs_rs_bytes_total{direction="out",rs="10.20.2.2:80",service="web",vip="TCP/172.25.254.100:80"} 0
# HELP tapvs_service_connections_total Connections made to the service.
# TYPE tapvs_service_connections_total counter
tapvs_service_connections_total{service="web",vip="TCP/172.25.254.100:80"} 1
# HELP tapvs_lip_connections Connections bound to the local address (ports in use).
# TYPE tapvs_lip_connections gauge
tapvs_lip_connections{lip="172.25.84.10",service="web",vip="TCP/172.25.254.100:80"} 1
`
	names := []string{"tapvs_connections", "tapvs_connections_created_total", "tapvs_connections_max",
		"tapvs_rs_active_connections", "tapvs_rs_inactive_connections", "tapvs_rs_scheduled_total", "tapvs_rs_weight",
		"tapvs_rs_up", "tapvs_rs_packets_total", "tapvs_rs_bytes_total", "tapvs_service_connections_total", "tapvs_lip_connections"}
	compare(t, samples(t, c, names...), want)
	// Every drop reason is exported, the one that happened with its count.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("a pedantic registry refuses the collector: %v", err)
	}
	drops := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "tapvs_drops_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			drops[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if len(drops) != len(bal.Stats.Drops()) || drops["no_service"] != 1 || drops["malformed"] != 0 {
		t.Fatalf("drops exported: %v", drops)
	}
	// No collector: no health gauge at all.
	if n := len(samples(t, New(bal, nil, nil), "tapvs_rs_up")); n != 0 {
		t.Fatalf("%d tapvs_rs_up without a health checker", n)
	}
}

// Every family has the label set the dashboards query by.
func TestLabelSets(t *testing.T) {
	bal := testBalancer(t)
	st := testStack(t, bal, nil)
	reg := prometheus.NewPedanticRegistry()
	mc := New(bal, st, func(*nat.Service, *nat.Dest) (bool, bool) { return false, true })
	mc.SetQuorum(func(*nat.Service) (bool, bool) { return true, true })
	reg.MustRegister(mc)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	rs := "rs service vip"
	want := map[string]string{
		"tapvs_connections": "", "tapvs_connections_max": "", "tapvs_ports_quarantined": "", "tapvs_fragment_bytes": "", "tapvs_fragments_reassembled_total": "", "tapvs_fragment_time_exceeded_total": "result",
		"tapvs_connections_created_total": "", "tapvs_connections_expired_total": "", "tapvs_expired_resets_total": "", "tapvs_drops_total": "reason",
		"tapvs_synproxy_syn_cookies_total": "", "tapvs_synproxy_handshakes_total": "", "tapvs_synproxy_server_failures_total": "",
		"tapvs_synproxy_syn_retries_total": "", "tapvs_synproxy_server_time_wait_total": "", "tapvs_proxy_headers_total": "", "tapvs_proxy_headers_cut_total": "",
		"tapvs_rs_active_connections": rs, "tapvs_rs_inactive_connections": rs, "tapvs_rs_scheduled_total": rs,
		"tapvs_rs_weight": rs, "tapvs_rs_overloaded": rs, "tapvs_rs_up": rs, "tapvs_rs_packets_total": "direction " + rs, "tapvs_rs_bytes_total": "direction " + rs,
		"tapvs_service_connections_total": "service vip", "tapvs_service_half_open": "service vip", "tapvs_service_quorum_up": "service vip", "tapvs_sources_untracked_total": "", "tapvs_toa_total": "result",
		"tapvs_lip_connections": "lip service vip", "tapvs_lip_port_conflicts_total": "lip service vip", "tapvs_lip_port_exhausted_total": "lip service vip",
		"tapvs_frames_total": "queue result side", "tapvs_udp_proxy_headers_total": "", "tapvs_tap_io_uring": "",
	}
	got := map[string]string{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "tapvs_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var names []string
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
				if l.GetName() == "vip" && l.GetValue() != vipLabel {
					t.Errorf("%s: vip %q, want %q", mf.GetName(), l.GetValue(), vipLabel)
				}
			}
			ls := strings.Join(names, " ")
			if prev, ok := got[mf.GetName()]; ok && prev != ls {
				t.Errorf("%s: label sets %q and %q", mf.GetName(), prev, ls)
			}
			got[mf.GetName()] = ls
		}
	}
	for name, ls := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s is missing", name)
		} else if g != ls {
			t.Errorf("%s: labels %q, want %q", name, g, ls)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: exported but not in this test", name)
		}
	}
}

// memDev is a TAP queue in memory: Read hands out its frames, one per
// call, then reports the queue closed; Write keeps what is sent.
type memDev struct {
	mu      sync.Mutex
	frames  [][]byte
	written [][]byte
}

func (d *memDev) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.frames) == 0 {
		return 0, os.ErrClosed
	}
	sizes[0] = copy(bufs[0][off:], d.frames[0])
	d.frames = d.frames[1:]
	return 1, nil
}

func (d *memDev) Write(frames [][]byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range frames {
		d.written = append(d.written, append([]byte(nil), f...))
	}
	return len(frames), nil
}

func (d *memDev) BatchSize() int  { return 1 }
func (d *memDev) Name() string    { return "mem" }
func (d *memDev) Close() error    { return nil }
func (d *memDev) VNetHdrLen() int { return 0 }

var _ tun.Device = (*memDev)(nil)

// testStack is a netstack over in-memory queues: the client side's one
// queue reads frames, the server side's is empty.
func testStack(t *testing.T, bal *nat.Balancer, frames [][]byte) *netstack.Stack {
	t.Helper()
	cdev, sdev := &memDev{frames: frames}, &memDev{}
	st, err := netstack.New(bal,
		netstack.NICConfig{Devs: []tun.Device{cdev}, MTU: 1500, MAC: [6]byte{2, 0, 0, 0, 0, 1}, Address: netip.MustParsePrefix("172.25.254.254/24")},
		netstack.NICConfig{Devs: []tun.Device{sdev}, MTU: 1500, MAC: [6]byte{2, 0, 0, 0, 0, 2}, Address: netip.MustParsePrefix("172.25.84.4/24")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Frames per queue, by result, from the readers' own counters: a frame
// read and forwarded counts on its side and queue, and a panic contained
// by a reader is tapvs_frames_total{result="panic"}.
func TestFramesAndPanicCounter(t *testing.T) {
	bal := testBalancer(t)
	noService := tcpFrame(t, client, netip.AddrPortFrom(vip.Addr(), 81), true, false, 1, 0)
	st := testStack(t, bal, [][]byte{tcpFrame(t, client, vip, true, false, 1000, 0), noService})
	if err := st.Start(0); err != nil {
		t.Fatal(err)
	}
	st.Client.Wait() // the readers end when their queues have nothing left
	st.Server.Wait()
	defer st.Close()
	// A panic is a bug no frame is known to trigger: count one as the
	// reader would.
	st.Server.Stats()[0].Panics.Add(2)
	st.Server.Stats()[0].Released.Add(3)  // held frames a server's SYN-ACK let go
	st.Client.Stats()[0].Truncated.Add(4) // reads the kernel cut short

	s, err := Serve("127.0.0.1:0", New(bal, st, nil), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const want = `
# HELP tapvs_frames_total Frames per TAP queue, by what became of them.
# TYPE tapvs_frames_total counter
tapvs_frames_total{queue="0",result="received",side="client"} 2
tapvs_frames_total{queue="0",result="forwarded",side="client"} 1
tapvs_frames_total{queue="0",result="replied",side="client"} 0
tapvs_frames_total{queue="0",result="passed",side="client"} 0
tapvs_frames_total{queue="0",result="held",side="client"} 0
tapvs_frames_total{queue="0",result="released",side="client"} 0
tapvs_frames_total{queue="0",result="dropped",side="client"} 1
tapvs_frames_total{queue="0",result="truncated",side="client"} 4
tapvs_frames_total{queue="0",result="tx_error",side="client"} 0
tapvs_frames_total{queue="0",result="panic",side="client"} 0
tapvs_frames_total{queue="0",result="handed_off",side="client"} 0
tapvs_frames_total{queue="0",result="received",side="server"} 0
tapvs_frames_total{queue="0",result="forwarded",side="server"} 0
tapvs_frames_total{queue="0",result="replied",side="server"} 0
tapvs_frames_total{queue="0",result="passed",side="server"} 0
tapvs_frames_total{queue="0",result="held",side="server"} 0
tapvs_frames_total{queue="0",result="released",side="server"} 3
tapvs_frames_total{queue="0",result="dropped",side="server"} 0
tapvs_frames_total{queue="0",result="truncated",side="server"} 0
tapvs_frames_total{queue="0",result="tx_error",side="server"} 0
tapvs_frames_total{queue="0",result="panic",side="server"} 2
tapvs_frames_total{queue="0",result="handed_off",side="server"} 0
`
	compare(t, samples(t, New(bal, st, nil), "tapvs_frames_total"), want)
	// And on the wire, as Prometheus scrapes it.
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		`tapvs_frames_total{queue="0",result="panic",side="server"} 2`,
		`tapvs_frames_total{queue="0",result="forwarded",side="client"} 1`,
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("scrape lacks %s", line)
		}
	}
	// Not busy polling: no poll sleep counter.
	if n := len(samples(t, New(bal, st, nil), "tapvs_busy_poll_sleeps_total")); n != 0 {
		t.Fatalf("%d tapvs_busy_poll_sleeps_total without busy polling", n)
	}
	// Read/write system calls: io_uring off, and no enter counter.
	if s := samples(t, New(bal, st, nil), "tapvs_tap_io_uring"); len(s) != 1 || s[0] != "tapvs_tap_io_uring 0" {
		t.Fatalf("tapvs_tap_io_uring without io_uring: %v", s)
	}
	if n := len(samples(t, New(bal, st, nil), "tapvs_uring_enters_total")); n != 0 {
		t.Fatalf("%d tapvs_uring_enters_total without io_uring", n)
	}
}

// At most two scrapes run at once: a third, while two are in the
// collector, gets 503 at once; when they finish, scrapes work again.
func TestScrapeConcurrencyLimit(t *testing.T) {
	bal := testBalancer(t)
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	health := func(s *nat.Service, d *nat.Dest) (bool, bool) {
		if d.String() == rs1.String() {
			entered <- struct{}{}
			<-release
		}
		return true, true
	}
	s, err := Serve("127.0.0.1:0", New(bal, nil, health), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	url := "http://" + s.Addr() + "/metrics"
	get := func() (int, string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 2)
	for range 2 {
		go func() {
			code, body, err := get()
			done <- result{code, body, err}
		}()
	}
	<-entered
	<-entered // both scrapes are in the collector now
	code, body, err := get()
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "Limit of concurrent requests reached (2)") {
		t.Errorf("third scrape: %d %q %v, want 503", code, body, err)
	}
	close(release)
	for range 2 {
		r := <-done
		if r.err != nil || r.code != 200 || !strings.Contains(r.body, `tapvs_rs_up{rs="10.20.1.2:80",service="web",vip="TCP/172.25.254.100:80"} 1`) {
			t.Errorf("blocked scrape: %d %v\n%.300s", r.code, r.err, r.body)
		}
	}
	if code, _, err := get(); err != nil || code != 200 {
		t.Fatalf("scrape after the others finished: %d %v", code, err)
	}
}

// A service's quorum state, when something tracks it: 1 up, 0 below.
func TestServiceQuorum(t *testing.T) {
	bal := testBalancer(t)
	c := New(bal, nil, nil)
	if n := len(samples(t, c, "tapvs_service_quorum_up")); n != 0 {
		t.Fatalf("%d quorum samples without SetQuorum", n)
	}
	for _, up := range []bool{true, false} {
		c.SetQuorum(func(*nat.Service) (bool, bool) { return up, true })
		want := `tapvs_service_quorum_up{service="web",vip="` + vipLabel + `"} 0`
		if up {
			want = strings.Replace(want, "} 0", "} 1", 1)
		}
		compare(t, samples(t, c, "tapvs_service_quorum_up"), want)
	}
	c.SetQuorum(func(*nat.Service) (bool, bool) { return true, false })
	if n := len(samples(t, c, "tapvs_service_quorum_up")); n != 0 {
		t.Fatalf("%d quorum samples for an untracked service", n)
	}
}
