package e2e

import (
	"io"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
)

// No port cliff: short connections at twice what the old 60 s port
// quarantine let a pool carry (LIPs × ports × servers / 60 s) keep their
// rate for three minutes, and the real servers, which close first and so
// hold every tuple in TIME_WAIT for 60 s, accept each reused tuple's SYN
// with a SYN-ACK: tapvs's ISN and timestamp for the tuple are past the old
// connection's (nat/seq.go).
//
// The pool is small (2 LIPs × 50 ports × 2 servers = 200 tuples, 3.3
// connections/s under the quarantine) so that the rate, 6.7/s, reuses
// every tuple every 30 s, well inside the servers' TIME_WAIT.
func TestNoPortCliffTuplesReusedFromTimeWait(t *testing.T) {
	const (
		lips, ports, servers = 2, 50, 2
		oldCapacity          = float64(lips*ports*servers) / 60 // per second
	)
	rate := 2 * oldCapacity
	minutes := 3
	if s := os.Getenv("TAPVS_CLIFF_MINUTES"); s != "" { // a shorter run by hand; CI runs the three minutes
		minutes, _ = strconv.Atoi(s)
	}
	svcs := `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80}`
	e := setup(t, svcs, "\nlimits: {local_port_min: 7000, local_port_max: 7049}\n")
	capRouter := startCapture(t, e.top.Router, e.top.TapServer)
	hc := lab.HTTPClient(e.top.Client, 3*time.Second)

	// One connection per slot, never catching up: a connection that
	// stalls (a SYN retransmitted after a challenge ACK, 1 s) costs its
	// slots, and the minute's count shows it.
	interval := time.Duration(float64(time.Second) / rate)
	perMinute := make([]int, minutes)
	var slow, failed int
	start := time.Now()
	// The slots: a ticker drops the ticks a slow receiver misses, so a
	// stalled connection's slots stay lost.
	slots := time.NewTicker(interval)
	defer slots.Stop()
	for m := range minutes {
		end := start.Add(time.Duration(m+1) * time.Minute)
		for time.Now().Before(end) {
			t0 := time.Now()
			resp, err := hc.Get("http://" + web.String() + "/")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			switch {
			case err != nil:
				failed++
			default:
				perMinute[m]++
				if time.Since(t0) > 500*time.Millisecond {
					slow++
				}
			}
			<-slots.C
		}
	}
	t.Logf("connections per minute %v at %.1f/s offered (old capacity %.1f/s); %d failed, %d took over 500 ms",
		perMinute, rate, oldCapacity, failed, slow)
	want := int(0.9 * rate * 60 * 0.9) // the first minute at 90% of the offered rate, on a busy machine
	if perMinute[0] < want {
		t.Fatalf("first minute: %d connections, want at least %d (90%% of %.1f/s)", perMinute[0], want, rate)
	}
	for m, n := range perMinute {
		if float64(n) < 0.9*float64(perMinute[0]) {
			t.Fatalf("minute %d: %d connections, under 90%% of the first minute's %d: %v", m+1, n, perMinute[0], perMinute)
		}
	}
	if failed > 0 {
		t.Fatalf("%d connections failed", failed)
	}

	// The wire: every SYN to a real server got a SYN-ACK, none a challenge
	// ACK (which the client would answer with an RST, then send its SYN
	// again a second later), and most SYNs reused a tuple whose server had
	// closed it less than 60 s before (in its TIME_WAIT).
	if !eventually(5*time.Second, func() bool { return tcpFlowsClosed(capRouter.packets(), lab.HTTPPort) }) {
		t.Fatal("the last connections' closes did not reach the capture within 5s")
	}
	capRouter.stop()
	type tuple struct {
		lip netip.AddrPort
		rs  netip.AddrPort
	}
	serverFIN := map[tuple]time.Time{}
	var syns, synAcks, challenges, rsts, reusedInTW int
	pending := map[tuple]bool{} // SYN sent, no answer yet
	for _, p := range capRouter.packets() {
		ipl, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcpl, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ipl == nil || tcpl == nil {
			continue
		}
		at := p.Metadata().Timestamp
		fromRS := uint16(tcpl.SrcPort) == lab.HTTPPort
		var tp tuple
		if fromRS {
			tp = tuple{netip.AddrPortFrom(addr(ipl.DstIP), uint16(tcpl.DstPort)), netip.AddrPortFrom(addr(ipl.SrcIP), uint16(tcpl.SrcPort))}
		} else {
			tp = tuple{netip.AddrPortFrom(addr(ipl.SrcIP), uint16(tcpl.SrcPort)), netip.AddrPortFrom(addr(ipl.DstIP), uint16(tcpl.DstPort))}
		}
		switch {
		case !fromRS && tcpl.SYN:
			syns++
			pending[tp] = true
			if fin, seen := serverFIN[tp]; seen && at.Sub(fin) < 60*time.Second {
				reusedInTW++ // the server closed it first, under 60 s ago: it is in TIME_WAIT
			}
		case !fromRS && tcpl.RST:
			rsts++
		case fromRS && tcpl.SYN && tcpl.ACK:
			synAcks++
			delete(pending, tp)
		case fromRS && tcpl.ACK && pending[tp]:
			challenges++ // an ACK, not a SYN-ACK, to a SYN: the server kept its TIME_WAIT
			delete(pending, tp)
		case fromRS && tcpl.FIN:
			serverFIN[tp] = at
		}
	}
	t.Logf("router link: %d SYNs to the servers, %d SYN-ACKs, %d challenge ACKs, %d client RSTs (a client's own abort, none answering a challenge); %d SYNs reused a tuple the server had closed",
		syns, synAcks, challenges, rsts, reusedInTW)
	total := 0
	for _, n := range perMinute {
		total += n
	}
	if syns < total || synAcks != syns || challenges != 0 {
		t.Fatalf("%d connections: %d SYNs, %d SYN-ACKs, %d challenge ACKs, %d RSTs", total, syns, synAcks, challenges, rsts)
	}
	// 200 tuples, each reused about every 30 s: all but the first pass over
	// the pool reuse a tuple the server closed (TIME_WAIT lasts 60 s).
	if reusedInTW < syns-lips*ports*servers-syns/10 {
		t.Fatalf("only %d of %d SYNs reused a tuple from the servers' TIME_WAIT", reusedInTW, syns)
	}
	if q := e.d.Balancer.Quarantined(); q != 0 {
		t.Fatalf("%d tuples quarantined", q)
	}
}
