package nat

import (
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func (r *rig) setFaults(t *testing.T, fs ...Fault) {
	t.Helper()
	if err := r.b.SetFaults(fs); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) drops(reason DropReason) uint64 { return r.b.Stats.drops[reason].Load() }

// open makes an established connection from client:sport and returns the
// server side's view of it: the real server and the local port.
func (r *rig) open(t *testing.T, sport uint16) (netip.Addr, uint16) {
	t.Helper()
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: sport, dport: 80, proto: TCP, syn: true, srcMAC: macClient})); v != Forward {
		t.Fatalf("SYN: %v", v)
	}
	var rip netip.Addr
	var lport uint16
	for _, ci := range r.b.Table().Conns() {
		if ci.Client.Port() == sport {
			rip, lport = ci.RIP.Addr(), ci.LIP.Port()
		}
	}
	if v := r.b.Process(ServerSide, frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, syn: true, ack: true})); v != Forward {
		t.Fatalf("SYN-ACK: %v", v)
	}
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: sport, dport: 80, proto: TCP, ack: true, srcMAC: macClient})); v != Forward {
		t.Fatalf("ACK: %v", v)
	}
	return rip, lport
}

func TestFaultRefusals(t *testing.T) {
	svc := FaultTarget{Protocol: TCP, VIP: netip.AddrPortFrom(vip, 80)}
	for _, c := range []struct {
		f    Fault
		want string
	}{
		{Fault{Dir: FaultBoth, Blackhole: true}, "exactly one of"},
		{Fault{Target: FaultTarget{VIP: svc.VIP, Server: netip.AddrPortFrom(rs1, 8080)}, Dir: FaultBoth, Blackhole: true}, "exactly one of"},
		{Fault{Target: FaultTarget{VIP: svc.VIP, Client: netip.MustParsePrefix("10.0.0.0/8")}, Dir: FaultBoth, Blackhole: true}, "exactly one of"},
		{Fault{Target: FaultTarget{Server: netip.AddrPortFrom(rs1, 8080), Client: netip.MustParsePrefix("10.0.0.0/8")}, Dir: FaultBoth, Blackhole: true}, "exactly one of"},
		{Fault{Target: FaultTarget{VIP: svc.VIP, Mark: 1}, Dir: FaultBoth, Blackhole: true}, "not both"},
		{Fault{Target: svc, Blackhole: true}, "direction"},
		{Fault{Target: svc, Dir: FaultBoth + 1, Blackhole: true}, "direction"},
		{Fault{Target: svc, Dir: FaultBoth, Loss: 1.01}, "loss"},
		{Fault{Target: svc, Dir: FaultBoth, Loss: -0.1}, "loss"},
		{Fault{Target: svc, Dir: FaultBoth, Loss: math.NaN()}, "loss"},
		{Fault{Target: svc, Dir: FaultToClient, SYN: SYNDrop}, "syn"},
		{Fault{Target: svc, Dir: FaultBoth, SYN: SYNRefuse + 1}, "syn"},
		{Fault{Target: svc, Dir: FaultBoth}, "does nothing"},
	} {
		if err := c.f.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.f, err, c.want)
		}
	}
	for _, f := range []Fault{
		{Target: svc, Dir: FaultToServer, Loss: 1},
		{Target: svc, Dir: FaultToServer, Loss: 0.5},
		{Target: svc, Dir: FaultToClient, Every: 1},
		{Target: svc, Dir: FaultToServer, SYN: SYNDrop},
		{Target: FaultTarget{Mark: 7}, Dir: FaultBoth, Blackhole: true},
		{Target: FaultTarget{Client: netip.MustParsePrefix("10.0.0.0/8")}, Dir: FaultBoth, Blackhole: true},
	} {
		if err := f.Check(); err != nil {
			t.Errorf("%+v: %v", f, err)
		}
	}
	r := newRig(t, TCP, "rr", nil)
	one := Fault{Target: svc, Dir: FaultBoth, Blackhole: true}
	err := r.b.SetFaults([]Fault{one, {Target: svc, Dir: FaultToServer, Every: 2}})
	if err == nil || !strings.Contains(err.Error(), "fault 1 (service TCP 172.25.254.100:80): fault 0 has the same target") {
		t.Fatalf("same target twice: %v", err)
	}
	if err := r.b.SetFaults([]Fault{one, {Target: svc}}); err == nil || !strings.Contains(err.Error(), "fault 1") {
		t.Fatalf("a bad second fault: %v", err)
	}
	if r.b.Faults() != nil || r.b.faults.Load() != nil {
		t.Fatal("a refused list was set")
	}
	// Client prefixes are the same target whatever their host bits.
	err = r.b.SetFaults([]Fault{
		{Target: FaultTarget{Client: netip.MustParsePrefix("10.1.2.3/16")}, Dir: FaultBoth, Blackhole: true},
		{Target: FaultTarget{Client: netip.MustParsePrefix("10.1.0.0/16")}, Dir: FaultBoth, Blackhole: true},
	})
	if err == nil {
		t.Fatal("10.1.2.3/16 and 10.1.0.0/16 both set")
	}
}

func TestFaultSYN(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	svc := FaultTarget{Protocol: TCP, VIP: netip.AddrPortFrom(vip, 80)}
	r.setFaults(t, Fault{Target: svc, Dir: FaultToServer, SYN: SYNRefuse})
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, seq: 1000, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Reply {
		t.Fatalf("refused SYN: %v", v)
	}
	d := decode(t, syn)
	if !d.tcp.RST || !d.tcp.ACK || d.tcp.SYN || d.tcp.Ack != 1001 || d.tcp.Seq != 0 ||
		d.ip.SrcIP.String() != vip.String() || d.ip.DstIP.String() != client.String() ||
		d.tcp.SrcPort != 80 || d.tcp.DstPort != 40000 || [6]byte(d.eth.DstMAC) != macClient || [6]byte(d.eth.SrcMAC) != macClientNIC {
		t.Fatalf("the refusal: %+v %+v %v", d.tcp, d.ip, d.eth.DstMAC)
	}
	if r.b.Table().Len() != 0 {
		t.Fatal("a refused SYN made an entry")
	}
	if fs := r.b.Faults(); len(fs) != 1 || fs[0].Frames != 1 || fs[0].Refused != 1 || fs[0].Dropped != 0 {
		t.Fatalf("counters: %+v", fs)
	}
	// A SYN with data counts its bytes in the ack.
	syn = frame(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, syn: true, seq: 1000, payload: []byte("abc"), srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Reply || decode(t, syn).tcp.Ack != 1004 {
		t.Fatalf("SYN with data: %v, ack %d", v, decode(t, syn).tcp.Ack)
	}

	// Dropped: no entry, counted, and only the prefix's clients.
	other := netip.MustParseAddr("172.25.254.9")
	r.setFaults(t, Fault{Target: FaultTarget{Client: netip.PrefixFrom(client, 32)}, Dir: FaultToServer, SYN: SYNDrop})
	before := r.drops(DropFault)
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 40002, dport: 80, proto: TCP, syn: true, srcMAC: macClient})); v != Drop {
		t.Fatalf("dropped SYN: %v", v)
	}
	if r.b.Table().Len() != 0 || r.drops(DropFault) != before+1 {
		t.Fatalf("entries %d, fault drops %d", r.b.Table().Len(), r.drops(DropFault)-before)
	}
	if fs := r.b.Faults(); fs[0].Frames != 1 || fs[0].Dropped != 1 {
		t.Fatalf("counters: %+v", fs)
	}
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: other, dst: vip, sport: 40002, dport: 80, proto: TCP, syn: true, srcMAC: macClient})); v != Forward {
		t.Fatalf("another client's SYN: %v", v)
	}
	// Established connections' frames are not a SYN fault's business.
	r.setFaults(t)
	r.open(t, 40003)
	r.setFaults(t, Fault{Target: svc, Dir: FaultToServer, SYN: SYNDrop})
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 40003, dport: 80, proto: TCP, ack: true, payload: []byte("x"), srcMAC: macClient})); v != Forward {
		t.Fatalf("an open connection's data: %v", v)
	}
}

func TestFaultDrops(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	rip, lport := r.open(t, 40000)
	toServer := func() Verdict {
		return r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, payload: []byte("x"), srcMAC: macClient}))
	}
	toClient := func() Verdict {
		return r.b.Process(ServerSide, frame(t, pktSpec{src: rip, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, payload: []byte("y")}))
	}
	server := FaultTarget{Server: netip.AddrPortFrom(rip, 8080)}

	// Every third frame toward the client, and none the other way.
	r.setFaults(t, Fault{Target: server, Dir: FaultToClient, Every: 3})
	var got []Verdict
	for range 6 {
		got = append(got, toClient())
		if v := toServer(); v != Forward {
			t.Fatalf("to the server: %v", v)
		}
	}
	if want := []Verdict{Forward, Forward, Drop, Forward, Forward, Drop}; !slices.Equal(got, want) {
		t.Fatalf("every 3rd: %v", got)
	}
	fs := r.b.Faults()
	if fs[0].Frames != 6 || fs[0].Dropped != 2 {
		t.Fatalf("counters: %+v", fs[0])
	}
	// The same fault set again keeps its count; another starts afresh.
	r.setFaults(t, Fault{Target: server, Dir: FaultToClient, Every: 3})
	if toClient() != Forward || r.b.Faults()[0].Frames != 7 {
		t.Fatalf("kept: %+v", r.b.Faults())
	}
	r.setFaults(t, Fault{Target: server, Dir: FaultToClient, Every: 2})
	if toClient() != Forward || toClient() != Drop || r.b.Faults()[0].Frames != 2 {
		t.Fatalf("afresh: %+v", r.b.Faults())
	}

	// Another server's or service's fault leaves this connection alone.
	r.setFaults(t,
		Fault{Target: FaultTarget{Server: netip.AddrPortFrom(rip, 8081)}, Dir: FaultBoth, Blackhole: true},
		Fault{Target: FaultTarget{Protocol: TCP, VIP: netip.AddrPortFrom(vip, 81)}, Dir: FaultBoth, Blackhole: true},
		Fault{Target: FaultTarget{Protocol: UDP, VIP: netip.AddrPortFrom(vip, 80)}, Dir: FaultBoth, Blackhole: true},
		Fault{Target: FaultTarget{Mark: 1}, Dir: FaultBoth, Blackhole: true},
		Fault{Target: FaultTarget{Client: netip.MustParsePrefix("10.0.0.0/8")}, Dir: FaultBoth, Blackhole: true},
		Fault{Target: FaultTarget{Client: netip.MustParsePrefix("::/0")}, Dir: FaultBoth, Blackhole: true},
	)
	if toServer() != Forward || toClient() != Forward {
		t.Fatal("another target's fault dropped a frame")
	}
	// The service's blackhole, toward the server only.
	r.setFaults(t, Fault{Target: FaultTarget{Protocol: TCP, VIP: netip.AddrPortFrom(vip, 80)}, Dir: FaultToServer, Blackhole: true})
	if toServer() != Drop || toClient() != Forward {
		t.Fatal("service blackhole to_server")
	}
	// The client's prefix, both ways.
	r.setFaults(t, Fault{Target: FaultTarget{Client: netip.PrefixFrom(client, 24)}, Dir: FaultBoth, Loss: 1})
	if toServer() != Drop || toClient() != Drop {
		t.Fatal("client prefix, loss 1")
	}
	// Cleared: nothing is looked at any more.
	r.setFaults(t)
	if r.b.faults.Load() != nil || toServer() != Forward || toClient() != Forward {
		t.Fatal("cleared")
	}

	// Random loss: within 5 standard deviations of p over n frames.
	const n, p = 10000, 0.3
	r.setFaults(t, Fault{Target: server, Dir: FaultToServer, Loss: p})
	dropped := 0
	for range n {
		if toServer() == Drop {
			dropped++
		}
	}
	if sd := math.Sqrt(n * p * (1 - p)); math.Abs(float64(dropped)-n*p) > 5*sd {
		t.Fatalf("loss %v: %d of %d dropped", p, dropped, n)
	}
	if st := r.b.Faults()[0]; st.Frames != n || st.Dropped != uint64(dropped) {
		t.Fatalf("counters %+v, %d dropped", st, dropped)
	}
}

// TestFaultBlackholeServer: a blackholed server's frames to tapvs's own
// stack (its health checks' answers) are dropped too, toward a LIP or
// the stack's own address; other hosts' are not.
func TestFaultBlackholeServer(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	stack := netip.MustParseAddr("172.25.84.1")
	answer := func(src, dst netip.Addr) Verdict {
		return r.b.Process(ServerSide, frame(t, pktSpec{src: src, dst: dst, sport: 8080, dport: 33000, proto: TCP, syn: true, ack: true}))
	}
	r.setFaults(t, Fault{Target: FaultTarget{Server: netip.AddrPortFrom(rs1, 8080)}, Dir: FaultToClient, Blackhole: true})
	if answer(rs1, lip1) != Drop || answer(rs1, stack) != Drop {
		t.Fatal("a blackholed server's answer to the stack went through")
	}
	if answer(rs2, lip1) != Pass || answer(rs2, stack) != Pass {
		t.Fatal("another server's answer to the stack was dropped")
	}
	// Toward the server only, or only lossy: the stack's frames pass.
	r.setFaults(t, Fault{Target: FaultTarget{Server: netip.AddrPortFrom(rs1, 8080)}, Dir: FaultToServer, Blackhole: true})
	if answer(rs1, lip1) != Pass || answer(rs1, stack) != Pass {
		t.Fatal("to_server blackhole dropped the stack's frames")
	}
	r.setFaults(t, Fault{Target: FaultTarget{Server: netip.AddrPortFrom(rs1, 8080)}, Dir: FaultBoth, Loss: 1})
	if answer(rs1, lip1) != Pass {
		t.Fatal("loss dropped the stack's frames")
	}
	// A blackholed server's new connections: the SYN is dropped once the
	// server is chosen (rr: the first SYN goes to one of the two).
	r.setFaults(t, Fault{Target: FaultTarget{Server: netip.AddrPortFrom(rs1, 8080)}, Dir: FaultBoth, Blackhole: true})
	verdicts := map[Verdict]int{}
	for i := range 4 {
		verdicts[r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: uint16(41000 + i), dport: 80, proto: TCP, syn: true, srcMAC: macClient}))]++
	}
	if verdicts[Drop] != 2 || verdicts[Forward] != 2 {
		t.Fatalf("SYNs to two servers, one blackholed: %v", verdicts)
	}
}

// A match service's fault is set on its mark and covers every port of its
// selector; its servers (on port 0) are named with port 0.
func TestFaultMatchService(t *testing.T) {
	r, _ := matchRig(t)
	syn := func(port uint16) Verdict {
		return r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 40000 + port, dport: port, proto: TCP, syn: true, srcMAC: macClient}))
	}
	r.setFaults(t, Fault{Target: FaultTarget{Mark: 2}, Dir: FaultBoth, SYN: SYNRefuse})
	if syn(443) != Forward {
		t.Fatal("another mark's fault")
	}
	r.setFaults(t, Fault{Target: FaultTarget{Mark: 1}, Dir: FaultBoth, SYN: SYNRefuse})
	if syn(80) != Reply || syn(8050) != Reply {
		t.Fatal("mark 1's SYN fault")
	}
	r.setFaults(t, Fault{Target: FaultTarget{Server: netip.AddrPortFrom(rs1, 0)}, Dir: FaultBoth, Blackhole: true},
		Fault{Target: FaultTarget{Server: netip.AddrPortFrom(rs2, 0)}, Dir: FaultBoth, Blackhole: true})
	if syn(8001) != Drop {
		t.Fatal("the match service's servers' blackholes")
	}
}

// SetFault replaces the fault on its target (a client prefix by its
// network, whatever its host bits) or adds one after the others, which
// keep their counters; ClearFault removes one; the bound holds.
func TestFaultSetAndClearOne(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	a := Fault{Target: FaultTarget{Client: netip.MustParsePrefix("10.1.0.0/16")}, Dir: FaultBoth, Every: 2}
	b := Fault{Target: FaultTarget{Server: netip.AddrPortFrom(rs1, 8080)}, Dir: FaultToClient, Blackhole: true}
	if err := r.b.SetFault(a); err != nil {
		t.Fatal(err)
	}
	if err := r.b.SetFault(b); err != nil {
		t.Fatal(err)
	}
	r.b.faults.Load().rules[1].frames.Add(5)
	a2 := a
	a2.Target.Client = netip.MustParsePrefix("10.1.2.3/16")
	a2.Every = 3
	if err := r.b.SetFault(a2); err != nil {
		t.Fatal(err)
	}
	fs := r.b.Faults()
	if len(fs) != 2 || fs[0].Every != 3 || fs[0].Target.Client.String() != "10.1.0.0/16" || fs[1].Fault != b || fs[1].Frames != 5 {
		t.Fatalf("after replacing the first: %+v", fs)
	}
	if err := r.b.SetFault(Fault{Target: b.Target}); err == nil || len(r.b.Faults()) != 2 || r.b.Faults()[1].Fault != b {
		t.Fatalf("a bad fault on b's target: %v, %+v", err, r.b.Faults())
	}
	if r.b.ClearFault(FaultTarget{Client: netip.MustParsePrefix("10.2.0.0/16")}) {
		t.Fatal("cleared a fault that is not there")
	}
	if !r.b.ClearFault(FaultTarget{Client: netip.MustParsePrefix("10.1.9.9/16")}) {
		t.Fatal("10.1.0.0/16's fault not cleared by its network")
	}
	if fs := r.b.Faults(); len(fs) != 1 || fs[0].Fault != b || fs[0].Frames != 5 {
		t.Fatalf("after clearing the first: %+v", fs)
	}
	if !r.b.ClearFault(b.Target) || r.b.faults.Load() != nil {
		t.Fatal("the last fault cleared: the set is not nil")
	}
	many := make([]Fault, MaxFaults+1)
	for i := range many {
		many[i] = Fault{Target: FaultTarget{Client: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32)}, Dir: FaultBoth, Blackhole: true}
	}
	if err := r.b.SetFaults(many); err == nil || !strings.Contains(err.Error(), "257 faults: at most 256") {
		t.Fatalf("257 faults: %v", err)
	}
	if err := r.b.SetFaults(many[:MaxFaults]); err != nil {
		t.Fatalf("256 faults: %v", err)
	}
	if err := r.b.SetFault(Fault{Target: FaultTarget{Client: netip.MustParsePrefix("11.0.0.0/8")}, Dir: FaultBoth, Blackhole: true}); err == nil {
		t.Fatal("a 257th fault set")
	}
}
