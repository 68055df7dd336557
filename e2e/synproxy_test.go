package e2e

import (
	"bufio"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/lab"
	"github.com/tapvs/tapvs/nat"
)

const synproxyServices = `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    synproxy: true
    local_addresses: [172.25.84.10, 172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 80}
      - {address: 10.20.2.2, port: 80}
  - name: bulk
    vip: 172.25.254.100
    port: 9000
    scheduler: rr
    synproxy: true
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 9000}
      - {address: 10.20.2.2, port: 9000}`

func setSysctl(t *testing.T, ns, key, value string) {
	t.Helper()
	if err := lab.InNetns(ns, func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(key, ".", "/"), []byte(value), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
}

// Real clients through a synproxy VIP: HTTP, and 64 MiB both ways with
// timestamps and SACK on, then off.
func TestSynproxyRealClients(t *testing.T) {
	e := setup(t, synproxyServices, "")
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	prev := ""
	for i := range 10 {
		rs, saw := e.get(hc)
		if rs == prev {
			t.Fatalf("request %d went to %s twice in a row", i, rs)
		}
		if saw.Addr() != lab.LIP1 && saw.Addr() != lab.LIP2 {
			t.Fatalf("the real server saw %v", saw)
		}
		prev = rs
	}
	bulk := netip.AddrPortFrom(lab.VIP, lab.BulkPort)
	for _, mode := range []string{"1", "0"} {
		setSysctl(t, e.top.Client, "net.ipv4.tcp_timestamps", mode)
		setSysctl(t, e.top.Client, "net.ipv4.tcp_sack", mode)
		if _, err := lab.Upload(e.ctx(2*time.Minute), e.top.Client, bulk, 64<<20); err != nil {
			t.Fatalf("timestamps/SACK %s: %v", mode, err)
		}
		if _, err := lab.Download(e.ctx(2*time.Minute), e.top.Client, bulk, 64<<20); err != nil {
			t.Fatalf("timestamps/SACK %s: %v", mode, err)
		}
	}
	cookies, opened, failed, _ := e.d.Balancer.Stats.Synproxy()
	if opened < 14 || cookies < opened || failed != 0 {
		t.Fatalf("synproxy counters: cookies %d opened %d failed %d", cookies, opened, failed)
	}
	if d := e.d.Balancer.Stats.Drops(); d["bad_cookie"] != 0 || d["synproxy_state"] != 0 || d["ack_storm"] != 0 {
		t.Fatalf("drops during clean traffic: %v", d)
	}
}

// craft builds a TCP frame from a client that exists only on the wire.
func craft(t testing.TB, srcMAC, dstMAC net.HardwareAddr, src netip.Addr, sport uint16, tcp *layers.TCP, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: lab.VIP.AsSlice()}
	tcp.SrcPort, tcp.DstPort = layers.TCPPort(sport), 80
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tsOption(val, ecr uint32) layers.TCPOption {
	d := make([]byte, 8)
	binary.BigEndian.PutUint32(d, val)
	binary.BigEndian.PutUint32(d[4:], ecr)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: d}
}

func tsOf(tcp *layers.TCP) (val, ecr uint32, ok bool) {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps && len(o.OptionData) == 8 {
			return binary.BigEndian.Uint32(o.OptionData), binary.BigEndian.Uint32(o.OptionData[4:]), true
		}
	}
	return 0, 0, false
}

// wireServices adds to the synproxy services a plain UDP echo service, whose
// datagrams cross tapvs's client reader after whatever was injected before
// them: seen at a real server, they prove that reader is past those frames.
const wireServices = synproxyServices + `
  - name: echo
    vip: 172.25.254.100
    port: 9001
    protocol: udp
    scheduler: rr
    local_addresses: [172.25.84.11]
    real_servers:
      - {address: 10.20.1.2, port: 9001}
      - {address: 10.20.2.2, port: 9001}`

// udpPort returns the captured UDP packets to or from port.
func udpPort(ps []gopacket.Packet, port uint16) []gopacket.Packet {
	var out []gopacket.Packet
	for _, p := range ps {
		if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && (uint16(udp.DstPort) == port || uint16(udp.SrcPort) == port) {
			out = append(out, p)
		}
	}
	return out
}

// synAcks returns every SYN-ACK captured, whatever its addresses and ports.
func synAcks(ps []gopacket.Packet) []*layers.TCP {
	var out []*layers.TCP
	for _, p := range ps {
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && tcp.SYN && tcp.ACK {
			out = append(out, tcp)
		}
	}
	return out
}

// On the wire: the real server hears nothing until the client's ACK proves
// the handshake; then a SYN carrying the client's ISN, and the ACK that
// completes the server's handshake echoes the server's own TSval. The
// server's SYN-ACK stops at tapvs: the client sees one SYN-ACK, the cookie.
func TestSynproxyOnTheWire(t *testing.T) {
	e := setup(t, wireServices, "")
	capClient := startCapture(t, e.top.Client, e.top.TapClient)
	capRS := [2]*capture{startCapture(t, e.top.RS[0], "eth0"), startCapture(t, e.top.RS[1], "eth0")}
	vipMAC := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	myMAC, _ := net.ParseMAC(ifaceMAC(t, e.top.Client, e.top.TapClient))
	ghost := netip.MustParseAddr("172.25.254.77") // on the wire only: the client netns drops what comes back
	const isn, sport = 0x7fff0000, 50123

	synOpts := []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		tsOption(111, 0),
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
	}
	if _, err := inject(e.top.Client, e.top.TapClient, craft(t, myMAC, vipMAC, ghost, sport, &layers.TCP{SYN: true, Seq: isn, Window: 64240, Options: synOpts}, nil)); err != nil {
		t.Fatal(err)
	}
	var synack *layers.TCP
	if !eventually(2*time.Second, func() bool {
		for _, p := range tcpPort(capClient.packets(), sport) {
			if tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP); tcp.SYN && tcp.ACK {
				synack = tcp
				return true
			}
		}
		return false
	}) {
		t.Fatal("no SYN-ACK from the VIP")
	}
	ourTS, ourEcr, ok := tsOf(synack)
	if !ok || synack.Ack != isn+1 || ourEcr != 111 {
		t.Fatalf("SYN-ACK ack %#x (want %#x), timestamps present %v, TSecr %d (want the client's 111)", synack.Ack, uint32(isn+1), ok, ourEcr)
	}
	// Had the SYN gone on to a real server, it would be there before a
	// datagram that tapvs's one client reader read after it. Echoes go
	// round robin: send them until each real server has seen one.
	echo := netip.AddrPortFrom(lab.VIP, lab.EchoPort)
	for i := 0; ; i++ {
		if len(udpPort(capRS[0].packets(), lab.EchoPort)) > 0 && len(udpPort(capRS[1].packets(), lab.EchoPort)) > 0 {
			break
		}
		if i == 10 {
			t.Fatalf("after %d echoes, rs1 saw %d and rs2 %d datagrams", i, len(udpPort(capRS[0].packets(), lab.EchoPort)), len(udpPort(capRS[1].packets(), lab.EchoPort)))
		}
		if _, err := lab.UDPEcho(e.ctx(3*time.Second), e.top.Client, echo, "marker"); err != nil {
			t.Fatalf("echo %d through the VIP: %v", i, err)
		}
		// The echo came back: its datagram is at the server; wait for
		// the capture to have read it too.
		eventually(time.Second, func() bool {
			return len(udpPort(capRS[0].packets(), lab.EchoPort))+len(udpPort(capRS[1].packets(), lab.EchoPort)) >= 2*(i+1)
		})
	}
	for i, c := range capRS {
		if n := len(tcpPort(c.packets(), 80)); n != 0 {
			t.Fatalf("rs%d saw %d packets before the client's ACK", i+1, n)
		}
	}
	// The echoes have entries of their own; the SYN may not.
	for _, c := range e.d.Balancer.Table().Conns() {
		if c.Protocol != nat.UDP {
			t.Fatalf("the SYN made a connection entry: %+v", c)
		}
	}

	if _, err := inject(e.top.Client, e.top.TapClient, craft(t, myMAC, vipMAC, ghost, sport,
		&layers.TCP{ACK: true, Seq: isn + 1, Ack: synack.Seq + 1, Window: 502, Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOption(112, ourTS)}}, nil)); err != nil {
		t.Fatal(err)
	}
	var seen []*layers.TCP
	if !eventually(3*time.Second, func() bool {
		for _, c := range capRS {
			if ps := tcpPort(c.packets(), 80); len(ps) >= 3 {
				seen = seen[:0]
				for _, p := range ps {
					seen = append(seen, p.Layer(layers.LayerTypeTCP).(*layers.TCP))
				}
				return true
			}
		}
		return false
	}) {
		t.Fatal("the real server never completed a handshake with tapvs")
	}
	syn, rsSynAck, ack := seen[0], seen[1], seen[2]
	if !syn.SYN || syn.ACK || syn.Seq != isn {
		t.Fatalf("the server's first packet: SYN=%v ACK=%v seq %#x, want a SYN with the client's ISN %#x", syn.SYN, syn.ACK, syn.Seq, uint32(isn))
	}
	if v, _, ok := tsOf(syn); !ok || v != 112 {
		t.Fatalf("SYN TSval %d (timestamps present %v), want the client's 112", v, ok)
	}
	if !rsSynAck.SYN || !rsSynAck.ACK {
		t.Fatal("the server did not answer with a SYN-ACK")
	}
	rsTS, _, ok := tsOf(rsSynAck)
	if !ok {
		t.Fatal("the server's SYN-ACK has no timestamps: the TSecr check below would prove nothing")
	}
	_, ecr, ok := tsOf(ack)
	if !ack.ACK || ack.SYN || ack.Ack != rsSynAck.Seq+1 || !ok || ecr != rsTS {
		t.Fatalf("completing ACK: ack %#x (want %#x), timestamps present %v, TSecr %d (want the server's TSval %d)", ack.Ack, rsSynAck.Seq+1, ok, ecr, rsTS)
	}

	// The server's SYN-ACK is not forwarded, translated (its seq would then
	// be the cookie's) or not. A request makes the server answer: that
	// answer crosses tapvs's server reader after the SYN-ACK did, so once
	// it is in the client capture, a forwarded SYN-ACK would be too.
	req := []byte("GET / HTTP/1.0\r\n\r\n")
	if _, err := inject(e.top.Client, e.top.TapClient, craft(t, myMAC, vipMAC, ghost, sport,
		&layers.TCP{ACK: true, PSH: true, Seq: isn + 1, Ack: synack.Seq + 1, Window: 502, Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOption(113, ourTS)}}, req)); err != nil {
		t.Fatal(err)
	}
	if !eventually(3*time.Second, func() bool {
		for _, p := range tcpPort(capClient.packets(), sport) {
			if tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP); uint16(tcp.SrcPort) == 80 && len(tcp.Payload) > 0 {
				return true
			}
		}
		return false
	}) {
		t.Fatal("the server's answer to the request never reached the client side")
	}
	all := synAcks(capClient.packets())
	if len(all) != 1 || all[0].Seq != synack.Seq || all[0].Ack != isn+1 {
		for _, sa := range all {
			t.Logf("SYN-ACK on the client side: %d -> %d seq %#x ack %#x", sa.SrcPort, sa.DstPort, sa.Seq, sa.Ack)
		}
		t.Fatalf("%d SYN-ACKs reached the client side, want only tapvs's cookie (seq %#x); the server's ISN is %#x", len(all), synack.Seq, rsSynAck.Seq)
	}
	for _, p := range capClient.packets() {
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && tcp.Seq == rsSynAck.Seq {
			t.Fatalf("a segment with the server's ISN %#x reached the client side: %d -> %d", rsSynAck.Seq, tcp.SrcPort, tcp.DstPort)
		}
	}
}

// synRecv counts half-open (SYN_RECV) TCP sockets in a namespace.
func synRecv(t testing.TB, ns string) int {
	n := 0
	if err := lab.InNetns(ns, func() error {
		f, err := os.Open("/proc/thread-self/net/tcp")
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) > 3 && fs[3] == "03" {
				n++
			}
		}
		return sc.Err()
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// procNet reads a file of /proc/thread-self/net/ inside namespace ns.
func procNet(t testing.TB, ns, name string) string {
	t.Helper()
	var b []byte
	if err := lab.InNetns(ns, func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/" + name)
		return err
	}); err != nil {
		t.Fatalf("reading %s in %s: %v", name, ns, err)
	}
	return string(b)
}

// snmpField returns one counter of a /proc/net/snmp or netstat table: a
// line of names under prefix, then a line of values.
func snmpField(t testing.TB, text, prefix, name string) uint64 {
	t.Helper()
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != prefix+":" || len(values) != len(names) || values[0] != prefix+":" {
			continue
		}
		for j, n := range names {
			if n == name {
				v, err := strconv.ParseUint(values[j], 10, 64)
				if err != nil {
					t.Fatalf("%s %s: %v", prefix, name, err)
				}
				return v
			}
		}
	}
	t.Fatalf("no counter %s %s", prefix, name)
	return 0
}

// kernelSYNs counts the SYNs the kernel of namespace ns sent: connects
// (ActiveOpens) and their retransmissions (TCPSynRetrans).
func kernelSYNs(t testing.TB, ns string) uint64 {
	return snmpField(t, procNet(t, ns, "snmp"), "Tcp", "ActiveOpens") +
		snmpField(t, procNet(t, ns, "netstat"), "TcpExt", "TCPSynRetrans")
}

// txDropped is the transmit drop counter of interface ifname in ns: for a
// TAP, frames the kernel threw away because its reader (tapvs) had let the
// queue fill.
func txDropped(t testing.TB, ns, ifname string) uint64 {
	t.Helper()
	for _, line := range strings.Split(procNet(t, ns, "dev"), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != ifname {
			continue
		}
		// 8 receive columns, then bytes packets errs drop ... for transmit.
		if f := strings.Fields(rest); len(f) >= 12 {
			v, err := strconv.ParseUint(f[11], 10, 64)
			if err != nil {
				t.Fatalf("%s tx drop: %v", ifname, err)
			}
			return v
		}
	}
	t.Fatalf("no %s in %s's /proc/net/dev", ifname, ns)
	return 0
}

// spoofed builds count TCP frames from random addresses of the client subnet
// (they exist only on the wire) to the VIP's port 80.
func spoofed(t testing.TB, count int, srcMAC, dstMAC net.HardwareAddr, mk func(i int) *layers.TCP) [][]byte {
	frames := make([][]byte, count)
	for i := range frames {
		host := byte(2 + rand.IntN(90)) // 172.25.254.2-91: not the client, VIP or tapvs
		src := netip.AddrFrom4([4]byte{172, 25, 254, host})
		frames[i] = craft(t, srcMAC, dstMAC, src, uint16(1024+rand.IntN(60000)), mk(i), nil)
	}
	return frames
}

// injectAtRate sends frames in bursts so the rate is about perSecond, and
// returns how many the device took and how long that took.
func injectAtRate(t testing.TB, ns, ifname string, frames [][]byte, perSecond int) (int, time.Duration) {
	const burst = 100
	in, err := newInjector(ns, ifname)
	if err != nil {
		t.Error(err)
		return 0, 0
	}
	defer in.close()
	tick := time.Duration(burst) * time.Second / time.Duration(perSecond)
	start := time.Now()
	next := start
	total := 0
	for i := 0; i < len(frames); i += burst {
		n, err := in.send(frames[i:min(i+burst, len(frames))]...)
		total += n
		if err != nil {
			t.Error(err)
			return total, time.Since(start)
		}
		next = next.Add(tick)
		time.Sleep(time.Until(next)) // pacing: a sender behind schedule does not sleep
	}
	return total, time.Since(start)
}

// A spoofed SYN flood reaches tapvs and is answered with cookies, nearly
// whole, yet leaves no half-open connection on the real servers and no entry
// in tapvs, while legitimate short connections keep succeeding.
func TestSynproxySpoofedFlood(t *testing.T) {
	e := setup(t, synproxyServices, "")
	vipMAC := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	myMAC, _ := net.ParseMAC(ifaceMAC(t, e.top.Client, e.top.TapClient))
	const n, rate = 40000, 20000
	// Of the SYNs sent, at least this many must have been answered with a
	// cookie. The TAP throws frames away only when tapvs's reader falls a
	// whole queue behind: that loss is counted and allowed, up to 10%.
	const minAnswered = n * 9 / 10
	frames := spoofed(t, n, myMAC, vipMAC, func(int) *layers.TCP {
		return &layers.TCP{SYN: true, Seq: rand.Uint32(), Window: 64240, Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}
	})
	cookies0, _, _, _ := e.d.Balancer.Stats.Synproxy()
	legit0 := kernelSYNs(t, e.top.Client)
	tapDrop0 := txDropped(t, e.top.Client, e.top.TapClient)
	recv0 := e.d.Stack.Client.Stats()[0].Received.Load()
	done := make(chan struct{})
	var delivered int
	var elapsed time.Duration
	go func() {
		defer close(done)
		delivered, elapsed = injectAtRate(t, e.top.Client, e.top.TapClient, frames, rate)
	}()
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	legit, maxHalfOpen := 0, 0
	for flooding := true; flooding; {
		select {
		case <-done:
			flooding = false
		default:
		}
		e.get(hc)
		legit++
		for i := range e.rs {
			maxHalfOpen = max(maxHalfOpen, synRecv(t, e.top.RS[i]))
		}
	}
	// Every SYN the TAP took is answered (a cookie) or was thrown away by
	// the TAP (counted): wait until the account closes. The client's kernel
	// sent the legitimate SYNs, each answered with a cookie too.
	var answered, tapDrops int64 // answered goes below 0 if SYNs from the client's kernel went unanswered
	account := func() bool {
		cookies, _, _, _ := e.d.Balancer.Stats.Synproxy()
		answered = int64(cookies-cookies0) - int64(kernelSYNs(t, e.top.Client)-legit0)
		tapDrops = int64(txDropped(t, e.top.Client, e.top.TapClient) - tapDrop0)
		return answered+tapDrops >= int64(delivered)
	}
	closed := eventually(5*time.Second, account)
	t.Logf("%d spoofed SYNs paced at %d/s: %d taken by the TAP in %v (%.0f/s achieved), %d answered with a cookie, %d thrown away by the TAP's queue, %d frames read by tapvs; %d legitimate requests served meanwhile, RS half-open peak %d",
		n, rate, delivered, elapsed.Round(time.Millisecond), float64(delivered)/elapsed.Seconds(), answered, tapDrops, e.d.Stack.Client.Stats()[0].Received.Load()-recv0, legit, maxHalfOpen)
	if maxHalfOpen != 0 {
		t.Fatalf("real servers held %d half-open connections", maxHalfOpen)
	}
	for i := range e.rs {
		if h := synRecv(t, e.top.RS[i]); h != 0 {
			t.Fatalf("rs%d has %d half-open connections after the flood", i+1, h)
		}
	}
	for _, c := range e.d.Balancer.Table().Conns() {
		if c.Client.Addr() != lab.ClientAddr.Addr() {
			t.Fatalf("a spoofed source has a connection entry: %+v", c)
		}
	}
	if legit < 5 {
		t.Fatalf("only %d legitimate requests got through during the flood", legit)
	}
	if delivered < minAnswered {
		t.Fatalf("the TAP took only %d of %d spoofed SYNs", delivered, n)
	}
	if !closed || answered > int64(delivered) {
		t.Fatalf("of %d spoofed SYNs taken by the TAP, %d were answered and %d thrown away by the TAP: the rest vanished in tapvs (or some were answered twice)", delivered, answered, tapDrops)
	}
	if answered < minAnswered {
		t.Fatalf("only %d of %d spoofed SYNs reached tapvs and were answered (want >= %d)", answered, n, minAnswered)
	}
}

// An ACK flood with bad cookies reaches tapvs, is dropped as bad_cookie and
// creates no state.
func TestSynproxyBadCookieACKFlood(t *testing.T) {
	e := setup(t, synproxyServices, "")
	vipMAC := net.HardwareAddr(e.d.Stack.Client.LinkAddress())
	myMAC, _ := net.ParseMAC(ifaceMAC(t, e.top.Client, e.top.TapClient))
	const n = 20000
	frames := spoofed(t, n, myMAC, vipMAC, func(int) *layers.TCP {
		return &layers.TCP{ACK: true, Seq: rand.Uint32(), Ack: rand.Uint32(), Window: 502}
	})
	st := &e.d.Balancer.Stats
	bad0 := st.Drop(nat.DropBadCookie)
	_, opened0, _, _ := st.Synproxy()
	created0, _ := st.Conns()
	tapDrop0 := txDropped(t, e.top.Client, e.top.TapClient)
	taken, _ := injectAtRate(t, e.top.Client, e.top.TapClient, frames, 20000)
	sent := uint64(taken)
	if sent < n*9/10 {
		t.Fatalf("the TAP took only %d of %d ACKs", sent, n)
	}
	// Every ACK the TAP took is dropped as a bad cookie, opens a
	// connection, or was thrown away by the TAP when tapvs fell a whole
	// queue behind (counted): wait until that account closes.
	var bad, opened, tapDrops uint64
	closed := eventually(5*time.Second, func() bool {
		_, o, _, _ := st.Synproxy()
		bad, opened = st.Drop(nat.DropBadCookie)-bad0, o-opened0
		tapDrops = txDropped(t, e.top.Client, e.top.TapClient) - tapDrop0
		return bad+opened+tapDrops >= sent
	})
	t.Logf("%d bad-cookie ACKs built, %d taken by the TAP: %d dropped as bad_cookie, %d opened a connection, %d thrown away by the TAP's queue", n, sent, bad, opened, tapDrops)
	// A random 32-bit ack passes the check with odds of about 2 in a million,
	// so one stray success in a run is possible and allowed; no more.
	if opened > 1 {
		t.Fatalf("%d random ACKs passed the cookie check", opened)
	}
	if created, _ := st.Conns(); created-created0 > opened {
		t.Fatalf("%d connections created by %d ACKs that passed the cookie check", created-created0, opened)
	}
	if l := uint64(e.d.Balancer.Table().Len()); l > opened {
		t.Fatalf("%d connection entries after an ACK flood that passed %d cookie checks", l, opened)
	}
	for i := range e.rs {
		if h := synRecv(t, e.top.RS[i]); h != 0 {
			t.Fatalf("rs%d has %d half-open connections", i+1, h)
		}
	}
	if !closed || bad+opened > sent {
		t.Fatalf("of %d ACKs taken by the TAP, %d were dropped as bad_cookie, %d opened a connection and %d were thrown away by the TAP", sent, bad, opened, tapDrops)
	}
	if bad < n*9/10 {
		t.Fatalf("bad-cookie drops %d of %d built (want >= %d)", bad, n, n*9/10)
	}
	e.get(lab.HTTPClient(e.top.Client, 5*time.Second))
}
