package nat

import (
	"net/netip"
	"testing"
)

// flow is one TCP connection through the balancer as each end sees it: the
// client talks to vip:vport from cli:cport, and the real server rip:8080
// hears lip:lport.
type flow struct {
	cli, vip     netip.Addr
	cport, vport uint16
	lip, rip     netip.Addr
	lport        uint16
}

// openFlow makes an ESTABLISHED connection from cli:cport to v:80 (SYN,
// the server's SYN-ACK, the client's ACK), checking every verdict and
// every rewrite from scratch, and returns it as the server saw it.
func openFlow(t *testing.T, b *Balancer, cli netip.Addr, cport uint16, v netip.Addr) flow {
	t.Helper()
	syn := frame(t, pktSpec{src: cli, dst: v, sport: cport, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	if verdict := b.Process(ClientSide, syn); verdict != Forward {
		t.Fatalf("SYN %v:%d -> %v:80: verdict %v, drops %v", cli, cport, v, verdict, b.Stats.Drops())
	}
	d := decode(t, syn)
	fl := flow{cli: cli, vip: v, cport: cport, vport: 80, lip: addr(d.ip.SrcIP), rip: addr(d.ip.DstIP), lport: uint16(d.tcp.SrcPort)}
	if uint16(d.tcp.DstPort) != 8080 {
		t.Fatalf("SYN %v:%d went to port %d, want 8080", cli, cport, d.tcp.DstPort)
	}
	fl.fromServer(t, b, true, nil)
	fl.fromClient(t, b, false, nil)
	return fl
}

// fromClient sends a client segment on the flow and checks it reaches the
// flow's real server from the flow's LIP and port, checksums verified.
func (fl flow) fromClient(t *testing.T, b *Balancer, syn bool, payload []byte) {
	t.Helper()
	f := frame(t, pktSpec{src: fl.cli, dst: fl.vip, sport: fl.cport, dport: fl.vport, proto: TCP, syn: syn, ack: !syn, payload: payload, srcMAC: macClient})
	if v := b.Process(ClientSide, f); v != Forward {
		t.Fatalf("%v: client segment: verdict %v, drops %v", fl, v, b.Stats.Drops())
	}
	d := decode(t, f)
	if addr(d.ip.SrcIP) != fl.lip || addr(d.ip.DstIP) != fl.rip || uint16(d.tcp.SrcPort) != fl.lport || uint16(d.tcp.DstPort) != 8080 ||
		string(d.tcp.Payload) != string(payload) || [6]byte(d.eth.DstMAC) != macGateway {
		t.Fatalf("%v: client segment left as %v:%d -> %v:%d %q", fl, d.ip.SrcIP, d.tcp.SrcPort, d.ip.DstIP, d.tcp.DstPort, d.tcp.Payload)
	}
}

// fromServer sends the real server's segment on the flow and checks it
// reaches the client from the VIP, checksums verified.
func (fl flow) fromServer(t *testing.T, b *Balancer, syn bool, payload []byte) {
	t.Helper()
	f := frame(t, pktSpec{src: fl.rip, dst: fl.lip, sport: 8080, dport: fl.lport, proto: TCP, syn: syn, ack: true, payload: payload, srcMAC: macGateway})
	if v := b.Process(ServerSide, f); v != Forward {
		t.Fatalf("%v: server segment: verdict %v, drops %v", fl, v, b.Stats.Drops())
	}
	d := decode(t, f)
	if addr(d.ip.SrcIP) != fl.vip || addr(d.ip.DstIP) != fl.cli || uint16(d.tcp.SrcPort) != fl.vport || uint16(d.tcp.DstPort) != fl.cport ||
		string(d.tcp.Payload) != string(payload) || [6]byte(d.eth.DstMAC) != macClient {
		t.Fatalf("%v: server segment left as %v:%d -> %v:%d %q", fl, d.ip.SrcIP, d.tcp.SrcPort, d.ip.DstIP, d.tcp.DstPort, d.tcp.Payload)
	}
}

// exchange sends data both ways on the flow, each checked.
func (fl flow) exchange(t *testing.T, b *Balancer) {
	t.Helper()
	fl.fromClient(t, b, false, []byte("request"))
	fl.fromServer(t, b, false, []byte("response"))
}

func (fl flow) String() string {
	return netip.AddrPortFrom(fl.cli, fl.cport).String() + " -> " + netip.AddrPortFrom(fl.vip, fl.vport).String() +
		" via " + netip.AddrPortFrom(fl.lip, fl.lport).String() + " -> " + fl.rip.String()
}

// clientAddr is the i-th of many client addresses, for schedulers that
// hash the client's address.
func clientAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{172, 25, 253, byte(10 + i)})
}
