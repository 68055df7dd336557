package daemon

import (
	"fmt"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/nat"
)

// syncInstance is one instance's configuration for the sync test: base's
// service with lip as its LIP and a sync: section.
func syncInstance(t *testing.T, lip string, id int, listen, peer netip.AddrPort, peerID int) *config.Config {
	t.Helper()
	text := fmt.Sprintf(`
interfaces:
  client: {name: tvd-c, address: 172.25.254.254/24}
  server: {name: tvd-s, address: 172.25.84.4/24}
services:
  - vip: 172.25.254.100
    port: 80
    local_addresses: [%s]
    real_servers: [{address: 172.25.84.20, port: 8080}]
sync:
  listen: %s
  id: %d
  peers: [{address: %s, id: %d}]
  keys: [{id: 7, key: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f}]
`, lip, listen, id, peer, peerID)
	c, err := config.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// balancerOf is the balancer Start makes for c, without its TAPs.
func balancerOf(t *testing.T, c *config.Config) *nat.Balancer {
	t.Helper()
	bal, err := nat.New(nat.Config{MaxConns: c.MaxConns, PortMin: c.PortMin, PortMax: c.PortMax, Timeouts: c.Timeouts,
		ClientNet: c.Client.Address, ServerNet: c.Server.Address, Readers: 1, SyncFeed: syncFeedLen(c),
		ClientMAC: [6]byte{2, 0, 0, 0, 0, 1}, ServerMAC: [6]byte{2, 0, 0, 0, 0, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bal.Update(func(tx *nat.Tx) error { return c.Apply(tx, nil) }); err != nil {
		t.Fatal(err)
	}
	return bal
}

// syncPair is two instances' configurations over loopback and their
// balancers: A with LIP 172.25.84.10 and id 1, B with 172.25.84.11 and id
// 2, backing A's LIP up.
func syncPair(t *testing.T) (ca, cb *config.Config, a, b *nat.Balancer) {
	addrs := freePorts(t, 2)
	ca = syncInstance(t, "172.25.84.10", 1, addrs[0], addrs[1], 2)
	cb = syncInstance(t, "172.25.84.11", 2, addrs[1], addrs[0], 1)
	a, b = balancerOf(t, ca), balancerOf(t, cb)
	b.SetBackupLIPs([]netip.Addr{netip.MustParseAddr("172.25.84.10")})
	return ca, cb, a, b
}

// runSync starts c's connection sync on bal, closed when the test ends.
func runSync(t *testing.T, c *config.Config, bal *nat.Balancer) *connSync {
	t.Helper()
	s, err := startSync(c.Sync, bal, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// freePorts are n loopback UDP addresses free a moment ago.
func freePorts(t *testing.T, n int) []netip.AddrPort {
	var out []netip.AddrPort
	for range n {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c.LocalAddr().(*net.UDPAddr).AddrPort())
		c.Close()
	}
	return out
}

// established is the record of an established plain FULLNAT connection
// of base's service on lip.
func established(t *testing.T, lip string, cport uint16) connrec.Record {
	t.Helper()
	r := connrec.Record{Kind: connrec.KindOpen, Proto: 6, State: connrec.StateEstablished, Version: 1, LifetimeMS: 60000,
		Client: netip.MustParseAddr("::ffff:172.25.254.1").As16(), VIP: netip.MustParseAddr("::ffff:172.25.254.100").As16(),
		LIP: netip.MustParseAddr("::ffff:" + lip).As16(), Server: netip.MustParseAddr("::ffff:172.25.84.20").As16(),
		CPort: cport, VPort: 80, LPort: 20000 + cport%1000, RPort: 8080, Ext: connrec.ExtRewriter | connrec.ExtAcks}
	r.Rewriter.Client, r.Rewriter.Start = 12345, 1
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	return r
}

// The daemon's sync wiring without root: two instances over loopback. B
// starts after A holds connections and gets them by its join copy (A's
// ExportConns through connsync to B's ImportConn) as shadows on A's LIP,
// which B backs up; a record on a LIP B does not back up is refused and
// counted (unknown_lip), and a repeated one is stale. Each sees the
// other alive.
func TestSyncCopiesTheTableToAPeer(t *testing.T) {
	ca, cb, a, b := syncPair(t)
	for i := range uint16(3) {
		r := established(t, "172.25.84.10", 40000+i)
		if err := a.ImportConn(&r); err != nil {
			t.Fatal(err)
		}
	}
	sa, sb := runSync(t, ca, a), runSync(t, cb, b)
	deadline := time.Now().Add(10 * time.Second)
	for b.Table().Len() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := b.Table().Len(); n != 3 {
		t.Fatalf("B holds %d connections, want A's 3 (refused %v)", n, b.Stats.ImportRefused())
	}
	for _, ci := range b.Table().Conns() {
		if ci.LIP.Addr().String() != "172.25.84.10" {
			t.Errorf("shadow on %v", ci.LIP)
		}
	}
	for _, s := range []*connSync{sa, sb} {
		for time.Now().Before(deadline) {
			if s.Stats().Alive == 1 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if alive := s.Stats().Alive; alive != 1 {
			t.Errorf("peers alive %d, want 1", alive)
		}
	}
	// What B applies goes through its apply: a LIP it neither owns nor
	// backs up is refused, the same version again is stale.
	r := established(t, "172.25.84.12", 41000)
	sb.apply(1, r.AppendTo(nil))
	r = established(t, "172.25.84.10", 40000)
	sb.apply(1, r.AppendTo(nil))
	if got := b.Stats.ImportRefused(); got["unknown_lip"] != 1 || got["stale"] < 1 {
		t.Errorf("refused %v", got)
	}
}

// The refresh runs a third of the shortest ESTABLISHED timeout, at most
// every 30 s.
func TestRefreshInterval(t *testing.T) {
	addrs := freePorts(t, 2)
	c := syncInstance(t, "172.25.84.10", 1, addrs[0], addrs[1], 2)
	bal := balancerOf(t, c)
	if got := refreshInterval(bal); got != maxRefresh {
		t.Errorf("default timeouts (90 s established): %v", got)
	}
	if err := bal.Update(func(tx *nat.Tx) error { return tx.SetAllTimeouts(6*time.Second, 0, 0) }); err != nil {
		t.Fatal(err)
	}
	if got := refreshInterval(bal); got != 2*time.Second {
		t.Errorf("6 s established: %v", got)
	}
}

// tcpFrame is an Ethernet frame of a TCP segment, as a reader hands it to
// the balancer.
func tcpFrame(t *testing.T, src, dst netip.AddrPort, syn, ack, rst bool, seq, ackN uint32) *nat.Frame {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), SYN: syn, ACK: ack, RST: rst, Seq: seq, Ack: ackN, Window: 65535}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	const headroom = 128
	b := make([]byte, headroom+len(buf.Bytes())+256)
	copy(b[headroom:], buf.Bytes())
	return &nat.Frame{Buf: b, Off: headroom, Len: len(buf.Bytes())}
}

// waitState waits (bounded) until bal holds one connection in state.
func waitState(t *testing.T, bal *nat.Balancer, state string) {
	t.Helper()
	var cs []nat.ConnInfo
	for range 500 {
		if cs = bal.Table().Conns(); len(cs) == 1 && cs[0].State == state {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("connections %+v, want one %s (refused %v)", cs, state, bal.Stats.ImportRefused())
}

// The daemon's change feed path without root: a connection A makes
// (client SYN, server SYN-ACK, client ACK through its balancer) reaches B
// as a shadow once ESTABLISHED, on A's LIP and local port, and its next
// state step (the client's RST: CLOSE) follows it there.
func TestSyncSendsConnectionChanges(t *testing.T) {
	ca, cb, a, b := syncPair(t)
	for _, d := range a.Services()[0].Dests() {
		d.SetNextHopMAC([6]byte{2, 0, 0, 0, 0, 7})
	}
	sa := runSync(t, ca, a)
	sb := runSync(t, cb, b)
	// B's join copy first, while A holds nothing: the connection then
	// reaches B through A's feed alone (a copy taken after the handshake
	// would carry it, and the feed could send its ESTABLISHED and CLOSE
	// steps as one record).
	poll(t, "B's join copy", sb.Joined)

	cli, vip := netip.MustParseAddrPort("172.25.254.1:40000"), netip.MustParseAddrPort("172.25.254.100:80")
	forward := func(side nat.Side, f *nat.Frame) {
		t.Helper()
		if v := a.Process(side, f); v != nat.Forward {
			t.Fatalf("%v: %v, drops %v", side, v, a.Stats.Drops())
		}
	}
	forward(nat.ClientSide, tcpFrame(t, cli, vip, true, false, false, 1000, 0))
	ci := a.Table().Conns()[0]
	forward(nat.ServerSide, tcpFrame(t, ci.RIP, ci.LIP, true, true, false, 5000, 1001))
	forward(nat.ClientSide, tcpFrame(t, cli, vip, false, true, false, 1001, 5001))
	waitState(t, b, "ESTABLISHED")
	if got := b.Table().Conns()[0]; got.LIP != ci.LIP || got.Client != cli || got.RIP != ci.RIP {
		t.Errorf("B's shadow %+v, A's connection %+v", got, ci)
	}
	forward(nat.ClientSide, tcpFrame(t, cli, vip, false, false, true, 1001, 0))
	waitState(t, b, "CLOSE")
	if st := sa.Stats().Stats; st.Queued < 2 {
		t.Errorf("A queued %d records", st.Queued)
	}
}
