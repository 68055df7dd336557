package nat

import (
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/tapvs/tapvs/csum"
)

// A plain TCP connection's server side starts at tapvs's ISN for the tuple:
// the SYN's sequence number is replaced (its timestamp option blanked to
// NOPs, the other options kept), the client's later sequence numbers carry
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
	out := tupleKey{src: v4in16(rs1.AsSlice()), dst: v4in16(lip1.AsSlice()), sport: 8080, dport: c.LIP.Port(), proto: TCP}
	lo, hi := r.b.isnKey.isn(&out, before), r.b.isnKey.isn(&out, after)
	if got := s.tcp.Seq; got-lo > hi-lo {
		t.Fatalf("SYN seq %#x, want tapvs's ISN for the tuple, in [%#x, %#x]", got, lo, hi)
	}
	server := s.tcp.Seq
	po := parsedOpts(t, s.tcp)
	if po.TS || po.MSS != 1460 || po.WScale != 7 || !po.SACKPerm {
		t.Fatalf("SYN options %+v: want MSS, window scale and SACK kept, timestamps gone", po)
	}
	for _, o := range s.tcp.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps {
			t.Fatal("a timestamp option is left in the SYN")
		}
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
	a := tupleKey{src: v4in16(rs1.AsSlice()), dst: v4in16(lip1.AsSlice()), sport: 8080, dport: 5000, proto: TCP}
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
	out := tupleKey{src: v4in16(rs1.AsSlice()), dst: v4in16(lip1.AsSlice()), sport: 8080, dport: c.LIP.Port(), proto: TCP}
	if lo, hi := r.b.isnKey.isn(&out, before), r.b.isnKey.isn(&out, time.Now()); second-lo > hi-lo {
		t.Fatalf("second SYN seq %#x, want a fresh ISN for the tuple in [%#x, %#x] (the old offset gives %#x)", second, lo, hi, first-1000+5)
	}
	if int32(second-(first+2)) <= 0 {
		t.Fatalf("second ISN %#x is not after the first connection's end %#x", second, first+2)
	}
}
