package nat

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// isn and tsval are the ISN and first TSval of the server side of a
// connection on out started at now.
func (k isnKey) isn(out *tupleKey, now time.Time) uint32 {
	isn, _ := k.start(out, now)
	return isn
}

func (k isnKey) tsval(out *tupleKey, now time.Time) uint32 {
	_, ts := k.start(out, now)
	return ts
}

// A plain TCP connection's server side starts at tapvs's ISN for the tuple:
// the SYN's sequence number is replaced (its options kept), the client's later sequence numbers carry
// the same offset, and the server's acknowledgements of them (ack, SACK
// blocks, after a NOP too: an odd offset) carry it back. Every checksum is
// recomputed from scratch by the decoder.
func TestPlainTCPSequenceOffset(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.setWeight(t, rs2, 8080, 0)
	var isn uint32 = 0xfffffff0 // the client's; the offset wraps
	before := time.Now()
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, seq: isn, srcMAC: macClient,
		opts: synOpts(1460, 7, 12345)})
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("SYN: %v", v)
	}
	after := time.Now()
	s := decode(t, syn)
	c := r.b.Table().Conns()[0]
	out := tupleKey{src: wire.In16(rs1.AsSlice()), dst: wire.In16(lip1.AsSlice()), sport: 8080, dport: c.LIP.Port(), proto: TCP}
	lo, hi := r.b.isnKey.isn(&out, before), r.b.isnKey.isn(&out, after)
	if got := s.tcp.Seq; got-lo > hi-lo {
		t.Fatalf("SYN seq %#x, want tapvs's ISN for the tuple, in [%#x, %#x]", got, lo, hi)
	}
	server := s.tcp.Seq
	po := parsedOpts(t, s.tcp)
	if !po.TS || po.MSS != 1460 || po.WScale != 7 || !po.SACKPerm {
		t.Fatalf("SYN options %+v: want MSS, window scale, SACK and timestamps kept", po)
	}

	data := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: isn + 1, ackNum: 5001, srcMAC: macClient, payload: []byte("hello")})
	if v := r.b.Process(ClientSide, data); v != Forward {
		t.Fatalf("data: %v", v)
	}
	if d := decode(t, data); d.tcp.Seq != server+1 || d.tcp.Ack != 5001 {
		t.Fatalf("data to the server: seq %#x ack %d, want %#x 5001 (the server's numbers untouched)", d.tcp.Seq, d.tcp.Ack, server+1)
	}

	sack := make([]byte, 8)
	for i, e := range []uint32{server + 100, server + 200} {
		sack[4*i], sack[4*i+1], sack[4*i+2], sack[4*i+3] = byte(e>>24), byte(e>>16), byte(e>>8), byte(e)
	}
	back := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: c.LIP.Port(), proto: TCP, ack: true, seq: 5001, ackNum: server + 6, srcMAC: macGateway,
		opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindSACK, OptionLength: 10, OptionData: sack}}})
	if v := r.b.Process(ServerSide, back); v != Forward {
		t.Fatalf("server ACK: %v", v)
	}
	d := decode(t, back)
	if d.tcp.Ack != isn+6 || d.tcp.Seq != 5001 {
		t.Fatalf("to the client: ack %#x seq %d, want %#x 5001", d.tcp.Ack, d.tcp.Seq, isn+6)
	}
	var edges []uint32
	for _, o := range d.tcp.Options {
		if o.OptionType == layers.TCPOptionKindSACK {
			for i := 0; i+4 <= len(o.OptionData); i += 4 {
				edges = append(edges, uint32(o.OptionData[i])<<24|uint32(o.OptionData[i+1])<<16|uint32(o.OptionData[i+2])<<8|uint32(o.OptionData[i+3]))
			}
		}
	}
	if len(edges) != 2 || edges[0] != isn+100 || edges[1] != isn+200 {
		t.Fatalf("SACK edges %#x, want the client's own %#x %#x", edges, isn+100, isn+200)
	}
}

// The ISN for a tuple rises with time, 1 every 64 ns, as Linux's own do: a
// connection reusing the tuple later starts past where the earlier one
// ended (unless that one sent more than the clock moved). Other tuples get
// unrelated values.
func TestISNRisesPerTuple(t *testing.T) {
	k := newISNKey()
	a := tupleKey{src: wire.In16(rs1.AsSlice()), dst: wire.In16(lip1.AsSlice()), sport: 8080, dport: 5000, proto: TCP}
	b := a
	b.dport = 5001
	t0 := time.Unix(1_700_000_000, 0)
	if d := k.isn(&a, t0.Add(time.Second)) - k.isn(&a, t0); d != uint32(time.Second/64) {
		t.Fatalf("a second later the ISN moved %d, want %d", d, time.Second/64)
	}
	if int32(k.isn(&a, t0.Add(30*time.Second))-k.isn(&a, t0)) <= 0 {
		t.Fatal("30 s later the ISN is not after the earlier one")
	}
	if k.isn(&a, t0) == k.isn(&b, t0) || newISNKey().isn(&a, t0) == k.isn(&a, t0) {
		t.Fatal("another tuple, or another key, gives the same ISN")
	}
}

// A SYN whose options do not parse cannot have its timestamp blanked: it is
// dropped (bad_tcp_options) rather than sent half-rewritten. Options were
// checked when the connection was made, so only a later SYN can be one.
func TestRetransmittedSYNWithBadOptionsDropped(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	syn := func(opts []layers.TCPOption) *Frame {
		return frame(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: TCP, syn: true, seq: 1, srcMAC: macClient, opts: opts})
	}
	if v := r.b.Process(ClientSide, syn(synOpts(1460, 7, 1))); v != Forward {
		t.Fatalf("SYN: %v", v)
	}
	bad := syn([]layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindNop}, {OptionType: 8, OptionLength: 2}})
	if v := r.b.Process(ClientSide, bad); v != Drop || r.b.Stats.Drop(DropBadOptions) != 1 {
		t.Fatalf("a SYN with a 2-byte timestamp option: %v, bad_tcp_options %d", v, r.b.Stats.Drop(DropBadOptions))
	}
}

// An ICMP error from the server side quotes a segment as the server got
// it, with tapvs's sequence number; the client gets it quoting its own, so
// its stack can match the error to what it has in flight.
func TestICMPQuoteCarriesTheClientsSequence(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.setWeight(t, rs2, 8080, 0)
	var isn uint32 = 123456
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 40002, dport: 80, proto: TCP, syn: true, seq: isn, srcMAC: macClient})
	if v := r.b.Process(ClientSide, syn); v != Forward {
		t.Fatalf("SYN: %v", v)
	}
	sent := append([]byte(nil), syn.Bytes()[14:14+20+20]...) // LIP -> RIP, tapvs's ISN
	errFrame := icmpFrame(t, rs1, lip1, 3, 4, sent)          // fragmentation needed
	if v := r.b.Process(ServerSide, errFrame); v != Forward {
		t.Fatalf("ICMP error: %v %v", v, r.b.Stats.Drops())
	}
	q := errFrame.Bytes()[14+20+8:]
	if seq := uint32(q[24])<<24 | uint32(q[25])<<16 | uint32(q[26])<<8 | uint32(q[27]); seq != isn {
		t.Fatalf("quoted seq %d, want the client's ISN %d", seq, isn)
	}
	if c := csum.Checksum(errFrame.Bytes()[14+20:], 0); c != 0 {
		t.Fatalf("the ICMP checksum does not verify (residue %#04x)", c)
	}
}

// A client that reuses its port while the entry of its last connection on
// it lingers (TIME_WAIT) opens a new connection on that entry: the server,
// which may hold the tuple in TIME_WAIT, gets a fresh ISN for it, not the
// new client ISN shifted by the old offset.
func TestClientPortReuseGetsAFreshISN(t *testing.T) {
	r := newRig(t, TCP, "rr", nil)
	r.setWeight(t, rs2, 8080, 0)
	spec := pktSpec{src: client, dst: vip, sport: 40003, dport: 80, proto: TCP, srcMAC: macClient}
	send := func(side Side, s pktSpec) decoded {
		t.Helper()
		f := frame(t, s)
		if v := r.b.Process(side, f); v != Forward {
			t.Fatalf("%+v: %v", s, v)
		}
		return decode(t, f)
	}
	s1 := spec
	s1.syn, s1.seq = true, 1000
	first := send(ClientSide, s1).tcp.Seq
	c := r.b.Table().Conns()[0]
	fromRS := pktSpec{src: rs1, dst: lip1, sport: 8080, dport: c.LIP.Port(), proto: TCP, srcMAC: macGateway}
	// The client closes; the server closes: the entry goes to TIME_WAIT.
	fin := spec
	fin.fin, fin.ack, fin.seq, fin.ackNum = true, true, 1001, 9001
	send(ClientSide, fin)
	sfin := fromRS
	sfin.fin, sfin.ack, sfin.seq, sfin.ackNum = true, true, 9000, first+2
	send(ServerSide, sfin)
	if st := r.b.Table().Conns()[0].State; st != "TIME_WAIT" {
		t.Fatalf("entry in %s, want TIME_WAIT", st)
	}
	s2 := spec
	s2.syn, s2.seq = true, 5 // a new connection, with an ISN lower than the last one's
	before := time.Now()
	second := send(ClientSide, s2).tcp.Seq
	out := tupleKey{src: wire.In16(rs1.AsSlice()), dst: wire.In16(lip1.AsSlice()), sport: 8080, dport: c.LIP.Port(), proto: TCP}
	if lo, hi := r.b.isnKey.isn(&out, before), r.b.isnKey.isn(&out, time.Now()); second-lo > hi-lo {
		t.Fatalf("second SYN seq %#x, want a fresh ISN for the tuple in [%#x, %#x] (the old offset gives %#x)", second, lo, hi, first-1000+5)
	}
	if int32(second-(first+2)) <= 0 {
		t.Fatalf("second ISN %#x is not after the first connection's end %#x", second, first+2)
	}
}

// tsOf is a decoded segment's timestamp option; ok false without one.
func tsOf(d decoded) (val, ecr uint32, ok bool) {
	for _, o := range d.tcp.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps && len(o.OptionData) == 8 {
			return binary.BigEndian.Uint32(o.OptionData), binary.BigEndian.Uint32(o.OptionData[4:]), true
		}
	}
	return 0, 0, false
}

// tsRig is a rig with one real server (rs1) and helpers that send a frame
// through and decode what comes out.
type tsRig struct {
	*rig
	t *testing.T
}

func (r tsRig) send(side Side, s pktSpec) decoded {
	r.t.Helper()
	f := frame(r.t, s)
	if v := r.b.Process(side, f); v != Forward {
		r.t.Fatalf("%v %+v: %v (drops %v)", side, s, v, r.b.Stats.Drops())
	}
	return decode(r.t, f)
}

func (r tsRig) fromClient(cport uint16, s pktSpec) decoded {
	r.t.Helper()
	s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = client, vip, cport, 80, TCP, macClient
	return r.send(ClientSide, s)
}

func (r tsRig) fromServer(lport uint16, s pktSpec) decoded {
	r.t.Helper()
	s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = rs1, lip1, 8080, lport, TCP, macGateway
	return r.send(ServerSide, s)
}

func newTSRig(t *testing.T, mod func(*Config)) tsRig {
	r := newRig(t, TCP, "rr", mod)
	r.setWeight(t, rs2, 8080, 0)
	return tsRig{r, t}
}

// A plain TCP connection keeps its timestamps (the default, translate):
// the server side's TSval starts at tapvs's timestamp start for the tuple
// and moves with the client's clock from there, on the SYN, on a
// retransmitted SYN (the offset stays as the first SYN fixed it) and on
// every later segment; the server's echo of it (TSecr) goes back to the
// client as the client's own; the server's TSval and the client's TSecr
// (the server's clock) go through untouched, and a TSecr without ACK is
// not an echo. A segment whose options stop parsing before its timestamp
// is dropped rather than sent with the client's unshifted TSval.
func TestTimestampsTranslated(t *testing.T) {
	r := newTSRig(t, nil)
	const cport = 40010
	var cts uint32 = 0xfffffff0 // the client's clock; the offset wraps
	before := time.Now()
	syn := r.fromClient(cport, pktSpec{syn: true, seq: 100, opts: synOpts(1460, 7, cts)})
	after := time.Now()
	c := r.b.Table().Conns()[0]
	lport := c.LIP.Port()
	out := tupleKey{src: wire.In16(rs1.AsSlice()), dst: wire.In16(lip1.AsSlice()), sport: 8080, dport: lport, proto: TCP}
	lo, hi := r.b.isnKey.tsval(&out, before), r.b.isnKey.tsval(&out, after)
	val, ecr, ok := tsOf(syn)
	if !ok || val-lo > hi-lo || ecr != 0 {
		t.Fatalf("SYN to the server: timestamps %v %#x %#x, want TSval tapvs's start for the tuple in [%#x, %#x], TSecr 0", ok, val, ecr, lo, hi)
	}
	start := val
	// A retransmission 1 s of the client's clock later: the same offset.
	if v, _, _ := tsOf(r.fromClient(cport, pktSpec{syn: true, seq: 100, opts: synOpts(1460, 7, cts+1000)})); v != start+1000 {
		t.Fatalf("retransmitted SYN's TSval %#x, want %#x (the first SYN's offset)", v, start+1000)
	}

	sa := r.fromServer(lport, pktSpec{syn: true, ack: true, seq: 9000, ackNum: syn.tcp.Seq + 1,
		opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(777, start+1000)}})
	if v, e, _ := tsOf(sa); v != 777 || e != cts+1000 {
		t.Fatalf("SYN-ACK to the client: TSval %d TSecr %#x, want 777 (the server's own) and %#x (the client's own)", v, e, uint32(cts+1000))
	}
	data := r.fromClient(cport, pktSpec{ack: true, seq: 101, ackNum: 9001, payload: []byte("GET"),
		opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(cts+1050, 777)}})
	if v, e, _ := tsOf(data); v != start+1050 || e != 777 {
		t.Fatalf("data to the server: TSval %#x TSecr %d, want %#x and 777", v, e, start+1050)
	}
	// After a SACK block (an odd offset): still found and shifted back.
	sack := make([]byte, 8)
	binary.BigEndian.PutUint32(sack, 9001)
	binary.BigEndian.PutUint32(sack[4:], 9002)
	back := r.fromServer(lport, pktSpec{ack: true, seq: 9001, ackNum: data.tcp.Seq + 3,
		opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindSACK, OptionLength: 10, OptionData: sack},
			{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(790, start+1050)}})
	if v, e, _ := tsOf(back); v != 790 || e != cts+1050 {
		t.Fatalf("ACK to the client: TSval %d TSecr %#x, want 790 and %#x", v, e, uint32(cts+1050))
	}
	if back.tcp.Ack != 104 {
		t.Fatalf("ACK to the client: ack %d, want 104", back.tcp.Ack)
	}
	rst := r.fromServer(lport, pktSpec{rst: true, seq: 9001, opts: []layers.TCPOption{tsOpt(791, 5)}})
	if _, e, _ := tsOf(rst); e != 5 {
		t.Fatalf("RST without ACK: TSecr %d, want 5 untouched (not an echo)", e)
	}

	bad := frame(t, pktSpec{src: client, dst: vip, sport: cport, dport: 80, proto: TCP, ack: true, seq: 104, ackNum: 9001, srcMAC: macClient,
		opts: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, {OptionType: 8, OptionLength: 2}, tsOpt(cts+1060, 790)}})
	if v := r.b.Process(ClientSide, bad); v != Drop || r.b.Stats.Drop(DropBadOptions) != 1 {
		t.Fatalf("a data segment with a 2-byte timestamp option before its real one: %v, bad_tcp_options %d", v, r.b.Stats.Drop(DropBadOptions))
	}
}

// A tuple reused for a new connection gets a server-side TSval at or past
// where the last connection on it ended, whatever the new client's clock
// says: what a real server holding the tuple in TIME_WAIT needs to accept
// the SYN (PAWS). The client's clock here is a 1 kHz one, as Linux's, from
// the test's own time: the first connection lasts 30 ms of it and ends far
// ahead of the second client's clock. Both ways a tuple is reused are
// covered: the client reusing its port on the closing entry, and a new
// client port given the freed local port (one port in the range).
func TestTimestampsRiseAcrossTupleReuse(t *testing.T) {
	r := newTSRig(t, func(c *Config) { c.PortMin, c.PortMax = 6000, 6000 })
	t0 := time.Now()
	clock := func(base uint32) uint32 { return base + uint32(time.Since(t0).Milliseconds()) }
	const first, second = 0x7000_0000, 1000 // two clients' clocks
	var lastTS uint32
	conn := func(cport uint16, base uint32, wait time.Duration) (synTS uint32) {
		t.Helper()
		syn := r.fromClient(cport, pktSpec{syn: true, seq: 100, opts: synOpts(1460, 7, clock(base))})
		synTS, _, _ = tsOf(syn)
		if int32(synTS-lastTS) < 0 && lastTS != 0 {
			t.Fatalf("new connection on the tuple starts at TSval %#x, before the last one's last %#x", synTS, lastTS)
		}
		r.fromServer(6000, pktSpec{syn: true, ack: true, seq: 9000, ackNum: syn.tcp.Seq + 1, opts: []layers.TCPOption{tsOpt(5, synTS)}})
		time.Sleep(wait) // the connection's life, on the client's clock
		fin := r.fromClient(cport, pktSpec{fin: true, ack: true, seq: 101, ackNum: 9001, opts: []layers.TCPOption{tsOpt(clock(base), 5)}})
		lastTS, _, _ = tsOf(fin)
		r.fromServer(6000, pktSpec{fin: true, ack: true, seq: 9001, ackNum: fin.tcp.Seq + 1, opts: []layers.TCPOption{tsOpt(6, lastTS)}})
		return synTS
	}
	conn(40020, first, 30*time.Millisecond)
	if st := r.b.Table().Conns()[0].State; st != "TIME_WAIT" {
		t.Fatalf("entry in %s, want TIME_WAIT", st)
	}
	// The same client port, on the closing entry; the new connection's
	// client clock is far behind the first's.
	conn(40020, second, 30*time.Millisecond)
	// The entry expires; another client port gets the one local port.
	r.b.table.now.Store(int64(time.Minute))
	if r.b.Sweep() != 1 {
		t.Fatal("the closed entry did not expire")
	}
	conn(40021, first, 0)
	if c := r.b.Table().Conns()[0]; c.LIP.Port() != 6000 {
		t.Fatalf("local port %d, want the reused 6000", c.LIP.Port())
	}
}

// tcp_timestamps: remove (LVS's timestamp removal): the SYN's timestamp
// option is blanked to NOPs, the other options kept, the checksum still
// right; later segments and the server's go through as they are.
func TestTimestampsRemoved(t *testing.T) {
	r := newTSRig(t, nil)
	if err := r.b.Update(func(tx *Tx) error { return tx.SetTimestamps(r.svc, TimestampsRemove) }); err != nil {
		t.Fatal(err)
	}
	syn := r.fromClient(40030, pktSpec{syn: true, seq: 100, opts: synOpts(1460, 7, 12345)})
	po := parsedOpts(t, syn.tcp)
	if po.TS || po.MSS != 1460 || po.WScale != 7 || !po.SACKPerm {
		t.Fatalf("SYN options %+v: want MSS, window scale and SACK kept, timestamps gone", po)
	}
	if _, _, ok := tsOf(syn); ok {
		t.Fatal("a timestamp option is left in the SYN")
	}
	lport := r.b.Table().Conns()[0].LIP.Port()
	// A client that sends timestamps anyway: not shifted, and nor are the
	// server's echoes.
	if v, _, _ := tsOf(r.fromClient(40030, pktSpec{ack: true, seq: 101, opts: []layers.TCPOption{tsOpt(12400, 3)}})); v != 12400 {
		t.Fatalf("data TSval %d, want 12400 untouched", v)
	}
	if _, e, _ := tsOf(r.fromServer(lport, pktSpec{ack: true, seq: 9001, opts: []layers.TCPOption{tsOpt(4, 12400)}})); e != 12400 {
		t.Fatalf("server TSecr %d, want 12400 untouched", e)
	}
	// A service made before the change keeps translating its open
	// connections; a UDP service cannot have the setting.
	if _, err := r.b.AddService(ServiceConfig{Name: "dns", Addr: vip, Port: 53, Protocol: UDP, Scheduler: "rr", Timestamps: TimestampsRemove}); err == nil {
		t.Fatal("a UDP service took tcp_timestamps: remove")
	}
	if got, err := ParseTimestamps("remove"); err != nil || got != TimestampsRemove || got.String() != "remove" {
		t.Fatalf("ParseTimestamps(remove): %v %v", got, err)
	}
	if _, err := ParseTimestamps("strip"); err == nil {
		t.Fatal("ParseTimestamps took strip")
	}
}

// A connection open when its service changes mode keeps the mode it was
// made with: its timestamps are translated to its end.
func TestTimestampsModeIsPerConnection(t *testing.T) {
	r := newTSRig(t, nil)
	syn := r.fromClient(40040, pktSpec{syn: true, seq: 100, opts: synOpts(1460, 7, 500)})
	start, _, _ := tsOf(syn)
	if err := r.b.Update(func(tx *Tx) error { return tx.SetTimestamps(r.svc, TimestampsRemove) }); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := tsOf(r.fromClient(40040, pktSpec{ack: true, seq: 101, opts: []layers.TCPOption{tsOpt(510, 3)}})); v != start+10 {
		t.Fatalf("data TSval %#x after the service changed mode, want %#x", v, start+10)
	}
	if _, _, ok := tsOf(r.fromClient(40041, pktSpec{syn: true, seq: 100, opts: synOpts(1460, 7, 500)})); ok {
		t.Fatal("a new connection after the change kept its timestamps")
	}
}

// A timestamped connection's steady state allocates nothing either.
func TestSteadyStateAllocsWithTimestamps(t *testing.T) {
	r := newTSRig(t, nil)
	syn := r.fromClient(40050, pktSpec{syn: true, seq: 100, opts: synOpts(1460, 7, 500)})
	lport := r.b.Table().Conns()[0].LIP.Port()
	opts := func(v, e uint32) []layers.TCPOption {
		return []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(v, e)}
	}
	synTS, _, _ := tsOf(syn)
	in := frame(t, pktSpec{src: client, dst: vip, sport: 40050, dport: 80, proto: TCP, ack: true, seq: 101, payload: make([]byte, 1400), srcMAC: macClient, opts: opts(501, 7)})
	back := frame(t, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, payload: make([]byte, 1400), opts: opts(8, synTS+1)})
	if allocs := pairAllocs(t, r.rig, in, back); allocs != 0 {
		t.Fatalf("%v allocations per timestamped packet pair", allocs)
	}
}

// A connection on a closing entry starts past where the last one ended at
// the server even when that one outran tapvs's clocks: a Linux client
// stamps a segment with its pacing's departure time, so its TSvals can run
// ahead of its clock (10 ms on a handshake's ACK, seen in the e2e
// TestTimestampsKeptOnTuplesReusedFromTimeWait), and a client can send
// more bytes than the ISN clock moves (16 MiB here: 67 ms of it). The
// client reuses its port at once: the new SYN's TSval is past the last
// TSval the server got, and its ISN past the server's last ack, which a
// server holding the tuple in TIME_WAIT needs (PAWS; RFC 6191).
func TestPortReuseStartsPastAConnectionThatOutranTheClocks(t *testing.T) {
	r := newTSRig(t, nil)
	const cport = 40030
	syn := r.fromClient(cport, pktSpec{syn: true, seq: 100, opts: synOpts(1460, 7, 5000)})
	synTS, _, _ := tsOf(syn)
	lport := r.b.Table().Conns()[0].LIP.Port()
	r.fromServer(lport, pktSpec{syn: true, ack: true, seq: 9000, ackNum: syn.tcp.Seq + 1, opts: []layers.TCPOption{tsOpt(5, synTS)}})
	// The handshake's ACK 50 ms ahead of the SYN on the client's clock,
	// then 16 MiB, then the client's FIN: none of it took 50 ms here.
	const sent = 1 << 24
	r.fromClient(cport, pktSpec{ack: true, seq: 101, ackNum: 9001, opts: []layers.TCPOption{tsOpt(5050, 5)}})
	fin := r.fromClient(cport, pktSpec{fin: true, ack: true, seq: 101 + sent, ackNum: 9001, opts: []layers.TCPOption{tsOpt(5051, 5)}})
	lastTS, _, _ := tsOf(fin)
	if lastTS != synTS+51 {
		t.Fatalf("FIN's TSval %d, want the SYN's %d + 51", lastTS, synTS)
	}
	// An ACK the client sent before its FIN, reordered after it, does not
	// lower the mark.
	r.fromClient(cport, pktSpec{ack: true, seq: 101, ackNum: 9001, opts: []layers.TCPOption{tsOpt(5049, 5)}})
	lastAck := fin.tcp.Seq + 1
	r.fromServer(lport, pktSpec{fin: true, ack: true, seq: 9001, ackNum: lastAck, opts: []layers.TCPOption{tsOpt(6, lastTS)}})
	if st := r.b.Table().Conns()[0].State; st != "TIME_WAIT" {
		t.Fatalf("entry in %s, want TIME_WAIT", st)
	}
	again := r.fromClient(cport, pktSpec{syn: true, seq: 7, opts: synOpts(1460, 7, 5052)})
	if ts, _, _ := tsOf(again); int32(ts-lastTS) <= 0 {
		t.Fatalf("the new SYN's TSval %d is not past the last connection's last %d", ts, lastTS)
	}
	if int32(again.tcp.Seq-lastAck) <= 0 {
		t.Fatalf("the new SYN's ISN %#x is not past the server's last ack %#x", again.tcp.Seq, lastAck)
	}
	// The new connection's later segments follow its own start.
	ts2, _, _ := tsOf(again)
	r.fromServer(lport, pktSpec{syn: true, ack: true, seq: 20000, ackNum: again.tcp.Seq + 1, opts: []layers.TCPOption{tsOpt(7, ts2)}})
	ack := r.fromClient(cport, pktSpec{ack: true, seq: 8, ackNum: 20001, opts: []layers.TCPOption{tsOpt(5060, 7)}})
	if v, _, _ := tsOf(ack); v != ts2+8 || ack.tcp.Seq != again.tcp.Seq+1 {
		t.Fatalf("the new connection's ACK: TSval %d seq %#x, want %d and %#x", v, ack.tcp.Seq, ts2+8, again.tcp.Seq+1)
	}
}
