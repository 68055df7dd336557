package nat

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/wire"
)

// BenchmarkForward is the per-packet cost of the data path for an existing
// connection: parse, lookup, state step, rewrite and checksum update, both
// directions (ns/op is per packet).
func BenchmarkForward(b *testing.B) {
	for _, conns := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			r := newRig(b, TCP, "rr", func(c *Config) { c.MaxConns = conns + 10 })
			for i := range conns {
				src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				r.b.Process(ClientSide, frame(b, pktSpec{src: src, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient}))
			}
			in := frame(b, pktSpec{src: netip.AddrFrom4([4]byte{10, 0, 0, 0}), dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, payload: make([]byte, 1400), srcMAC: macClient})
			var info ConnInfo
			for _, ci := range r.b.Table().Conns() {
				if ci.Client.Addr() == netip.AddrFrom4([4]byte{10, 0, 0, 0}) {
					info = ci
				}
			}
			back := frame(b, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: TCP, ack: true, payload: make([]byte, 1400)})
			inB, backB := append([]byte(nil), in.Bytes()...), append([]byte(nil), back.Bytes()...)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i&1 == 0 {
					copy(in.Buf[in.Off:in.Off+54], inB[:54]) // headers only: the payload is untouched
					in.Len = len(inB)
					if r.b.Process(ClientSide, in) != Forward {
						b.Fatal("not forwarded")
					}
				} else {
					copy(back.Buf[back.Off:back.Off+54], backB[:54])
					back.Len = len(backB)
					if r.b.Process(ServerSide, back) != Forward {
						b.Fatal("not forwarded")
					}
				}
			}
		})
	}
}

// BenchmarkForwardTOA is BenchmarkForward's one connection with TOA on:
// "steady" once the client has acknowledged server data (no option: the
// cost of the check), "insert" while it has not (every client segment gets
// the option: an upload before the server answers).
func BenchmarkForwardTOA(b *testing.B) {
	for _, mode := range []string{"steady", "insert"} {
		b.Run(mode, func(b *testing.B) {
			r, _ := toaRig(b, false)
			syn := frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
			r.b.Process(ClientSide, syn)
			info := r.b.Table().Conns()[0]
			const rsISN = 1000
			sa := frame(b, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: TCP, syn: true, ack: true, seq: rsISN, ackNum: 1})
			if r.b.Process(ServerSide, sa) != Forward {
				b.Fatal("SYN-ACK not forwarded")
			}
			ack := uint32(rsISN + 1)
			if mode == "steady" {
				ack += 1400
			}
			in := frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 1, ackNum: ack, payload: make([]byte, 1400), srcMAC: macClient})
			back := frame(b, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: TCP, ack: true, seq: rsISN + 1, ackNum: 1, payload: make([]byte, 1400)})
			inB, backB := append([]byte(nil), in.Bytes()...), append([]byte(nil), back.Bytes()...)
			off := in.Off
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i&1 == 0 {
					in.Off = off // TOA moved the headers 8 bytes left
					copy(in.Buf[in.Off:in.Off+54], inB[:54])
					in.Len = len(inB)
					if r.b.Process(ClientSide, in) != Forward {
						b.Fatal("not forwarded")
					}
				} else {
					copy(back.Buf[back.Off:back.Off+54], backB[:54])
					back.Len = len(backB)
					if r.b.Process(ServerSide, back) != Forward {
						b.Fatal("not forwarded")
					}
				}
			}
			b.StopTimer()
			if ins, _ := r.b.Stats.TOA(); (mode == "insert") != (ins > 0) {
				b.Fatalf("%s: %d inserted", mode, ins)
			}
		})
	}
}

// BenchmarkForwardMovingAcks is BenchmarkForward with one connection whose
// acks move on every packet, both ways, as in a bidirectional transfer: the
// worst case for the ack each direction records (reset.go). The checksums
// go stale; a connection's packets are rewritten incrementally, not checked.
func BenchmarkForwardMovingAcks(b *testing.B) {
	r := newRig(b, TCP, "rr", nil)
	r.b.Process(ClientSide, frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient}))
	info := r.b.Table().Conns()[0]
	in := frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, payload: make([]byte, 1400), srcMAC: macClient})
	back := frame(b, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: TCP, ack: true, payload: make([]byte, 1400)})
	inB, backB := append([]byte(nil), in.Bytes()...), append([]byte(nil), back.Bytes()...)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, orig, side := in, inB, ClientSide
		if i&1 == 1 {
			f, orig, side = back, backB, ServerSide
		}
		copy(f.Buf[f.Off:f.Off+54], orig[:54])
		binary.BigEndian.PutUint32(f.Buf[f.Off+14+20+8:], uint32(i)*1400)
		f.Len = len(orig)
		if r.b.Process(side, f) != Forward {
			b.Fatal("not forwarded")
		}
	}
}

// BenchmarkLookup is the connection table's lookup alone as the table grows.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1000, 100000, 1000000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			t := newTable(n)
			keys := make([]tupleKey, n)
			for i := range keys {
				keys[i] = tupleKey{src: wire.In16([]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), dst: vip.As16(), sport: 40000, dport: 80, proto: TCP}
				t.insert(&keys[i], &Conn{in: keys[i]}, false)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if t.lookup(&keys[i%n]) == nil {
					b.Fatal("miss")
				}
			}
		})
	}
}

// BenchmarkConnMemory makes connections through the data path (a SYN each
// from a distinct client) and reports the heap they hold per connection,
// table entries under both keys included. Run with -benchtime 1000000x for
// the 1M figure.
func BenchmarkConnMemory(b *testing.B) {
	n := b.N
	r := newRig(b, TCP, "rr", func(c *Config) { c.MaxConns = n + 10 })
	// (LIPs x ports x servers) bounds the connections: 10 LIPs, 2 servers
	// and 60536 ports hold 1.2M.
	for i := range 9 {
		if _, err := r.b.AddLocalAddr(r.svc, netip.AddrFrom4([4]byte{172, 25, 84, byte(20 + i)})); err != nil {
			b.Fatal(err)
		}
	}
	syn := frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
	orig := append([]byte(nil), syn.Bytes()...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := 0; i < n; i++ {
		copy(syn.Buf[syn.Off:], orig)
		syn.Len = len(orig)
		// A distinct client address and port per connection.
		bs := syn.Bytes()
		bs[14+12+1], bs[14+12+2], bs[14+12+3] = byte(i>>16), byte(i>>8), byte(i)
		binary.BigEndian.PutUint16(bs[34:], uint16(1024+i%60000))
		// Both checksums again: a SYN that makes state must verify.
		fixIPChecksum(bs)
		tcp := bs[34 : 14+int(binary.BigEndian.Uint16(bs[16:]))] // not the Ethernet padding
		tcp[16], tcp[17] = 0, 0
		binary.BigEndian.PutUint16(tcp[16:], csum.Checksum(tcp, csum.PseudoV4(bs[26:30], bs[30:34], wire.ProtoTCP, len(tcp))))
		if r.b.Process(ClientSide, syn) != Forward {
			b.Fatalf("conn %d: %v", i, r.b.Stats.Drops())
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if r.b.Table().Len() != n {
		b.Fatalf("%d connections in the table, want %d", r.b.Table().Len(), n)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/conn")
	// One sweep over the whole table (nothing has expired): the sweeper's
	// cost per interval at this size.
	start := time.Now()
	r.b.Sweep()
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "sweep-ms")
	// Then every connection comes due at once: the cost per expiry.
	r.b.table.now.Add(int64(time.Hour))
	start = time.Now()
	if got := r.b.Sweep(); got != n {
		b.Fatalf("swept %d of %d", got, n)
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(n), "expire-ns/conn")
	runtime.KeepAlive(r)
}

// BenchmarkForwardUDP is BenchmarkForward for one UDP flow of 512-byte
// datagrams, with and without a PROXY v2 header before each client
// datagram (client_address: proxy-v2): the header's cost per packet, both
// directions averaged as in BenchmarkForward.
func BenchmarkForwardUDP(b *testing.B) {
	for _, mode := range []ClientAddr{ClientAddrNone, ClientAddrProxyV2} {
		b.Run("client_address="+mode.String(), func(b *testing.B) {
			r := newRig(b, UDP, "rr", nil)
			setClientAddr(b, r, mode)
			in := udpFrom(b, 40000, make([]byte, 512))
			if r.b.Process(ClientSide, in) != Forward {
				b.Fatal("not forwarded")
			}
			info := r.b.Table().Conns()[0]
			in = udpFrom(b, 40000, make([]byte, 512))
			back := frame(b, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: UDP, payload: make([]byte, 512)})
			inB, backB, inOff := append([]byte(nil), in.Bytes()...), append([]byte(nil), back.Bytes()...), in.Off
			const hdrs = 14 + 20 + 8
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i&1 == 0 {
					// The header moved the frame's start into the headroom:
					// it starts again where the reader put it.
					in.Off, in.Len = inOff, len(inB)
					copy(in.Buf[in.Off:in.Off+hdrs], inB[:hdrs])
					if r.b.Process(ClientSide, in) != Forward {
						b.Fatal("not forwarded")
					}
				} else {
					copy(back.Buf[back.Off:back.Off+hdrs], backB[:hdrs])
					back.Len = len(backB)
					if r.b.Process(ServerSide, back) != Forward {
						b.Fatal("not forwarded")
					}
				}
			}
		})
	}
}

// BenchmarkForwardTimestamps is BenchmarkForward's one connection with
// timestamps on every segment, as Linux sends them (NOP, NOP, timestamp):
// translated (the client's TSval and the server's TSecr shifted, in the
// walk over the options), and removed (the SYN's blanked; later segments
// carry none, as a client then sends them).
func BenchmarkForwardTimestamps(b *testing.B) {
	for _, mode := range []Timestamps{TimestampsTranslate, TimestampsRemove} {
		b.Run("tcp_timestamps="+mode.String(), func(b *testing.B) {
			r := newRig(b, TCP, "rr", nil)
			r.setWeight(b, rs2, 8080, 0)
			if err := r.b.Update(func(tx *Tx) error { return tx.SetTimestamps(r.svc, mode) }); err != nil {
				b.Fatal(err)
			}
			r.b.Process(ClientSide, frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient, opts: synOpts(1460, 7, 500)}))
			lport := r.b.Table().Conns()[0].LIP.Port()
			var opts func(v, e uint32) []layers.TCPOption
			if mode == TimestampsTranslate {
				opts = func(v, e uint32) []layers.TCPOption {
					return []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, tsOpt(v, e)}
				}
			} else {
				opts = func(uint32, uint32) []layers.TCPOption { return nil }
			}
			in := frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 501, payload: make([]byte, 1400), srcMAC: macClient, opts: opts(501, 7)})
			back := frame(b, pktSpec{src: rs1, dst: lip1, sport: 8080, dport: lport, proto: TCP, ack: true, payload: make([]byte, 1400), opts: opts(8, 501)})
			hdr := 14 + 20 + 20 + len(in.Bytes()) - 14 - 20 - 20 - 1400
			benchPair(b, r, in, back, hdr, hdr)
		})
	}
}

// BenchmarkConnPhases is one short TCP connection's whole life in the
// balancer, timed by phase (issue 24's "profile by phase"): what nat
// costs per connection, apart from the TAP I/O around it. A connection
// here is what `tapvs bench`'s short workload makes (wrk asking nginx with
// Connection: close): the client's SYN, the server's SYN-ACK, the client's
// ACK and request, the server's response, then the server closes (its FIN,
// the client's ACK and FIN, the server's last ACK), and the entry expires.
// The table's clock moves 100 µs per connection (10 000 connections/s,
// about the bench's rate) and the sweeper runs every second of it, as the
// daemon's default sweep_interval: expiry is each sweep's cost shared by
// the connections it ends, the wheel's ticks included, with the TIME_WAIT
// entries of the last 7 s in the table as on a busy box. Each phase's
// frames are built outside the timed calls (with gopacket: ns/op, the
// whole iteration, is mostly building); the per-phase metrics are only
// Process and Sweep, and "conn-ns" their sum: nat's time per connection,
// to set against the CPU per connection `tapvs bench` reports.
func BenchmarkConnPhases(b *testing.B) {
	r := newRig(b, TCP, "rr", func(c *Config) { c.MaxConns = 1 << 20 })
	phases := []string{"syn", "synack", "ack", "request", "response", "close", "expiry"}
	spent := make([]time.Duration, len(phases))
	const step, sweep = int64(100 * time.Microsecond), int64(time.Second)
	now, lastSweep, swept := int64(0), int64(0), 0
	sweepNow := func() {
		r.b.table.now.Store(now)
		t0 := time.Now()
		swept += r.b.Sweep()
		spent[6] += time.Since(t0)
		lastSweep = now
	}
	body := make([]byte, 120) // about wrk's GET; the response is nginx's 612-byte page and headers
	page := make([]byte, 850)
	timed := func(phase int, side Side, f *Frame) {
		t0 := time.Now()
		v := r.b.Process(side, f)
		spent[phase] += time.Since(t0)
		if v != Forward {
			b.Fatalf("%s: %v", phases[phase], v)
		}
	}
	const rsISN, cISN = 5000, 1000
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now += step
		r.b.table.now.Store(now)
		if now-lastSweep >= sweep {
			sweepNow()
		}
		c := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		in := func(s pktSpec) *Frame {
			s.src, s.dst, s.sport, s.dport, s.proto, s.srcMAC = c, vip, 40000, 80, TCP, macClient
			return frame(b, s)
		}
		timed(0, ClientSide, in(pktSpec{syn: true, seq: cISN}))
		key := tupleKey{src: wire.In16(c.AsSlice()), dst: vip.As16(), sport: 40000, dport: 80, proto: TCP}
		conn := r.b.table.lookup(&key)
		if conn == nil {
			b.Fatal("no entry after the SYN")
		}
		rip, lport := netip.AddrFrom16(conn.out.src).Unmap(), conn.out.dport
		out := func(s pktSpec) *Frame {
			s.src, s.dst, s.sport, s.dport, s.proto = rip, lip1, 8080, lport, TCP
			return frame(b, s)
		}
		timed(1, ServerSide, out(pktSpec{syn: true, ack: true, seq: rsISN, ackNum: cISN + 1}))
		timed(2, ClientSide, in(pktSpec{ack: true, seq: cISN + 1, ackNum: rsISN + 1}))
		timed(3, ClientSide, in(pktSpec{ack: true, seq: cISN + 1, ackNum: rsISN + 1, payload: body}))
		timed(4, ServerSide, out(pktSpec{ack: true, seq: rsISN + 1, ackNum: cISN + 1 + 120, payload: page}))
		srvEnd := uint32(rsISN + 1 + 850)
		timed(5, ServerSide, out(pktSpec{fin: true, ack: true, seq: srvEnd, ackNum: cISN + 1 + 120}))
		timed(5, ClientSide, in(pktSpec{ack: true, seq: cISN + 1 + 120, ackNum: srvEnd + 1}))
		timed(5, ClientSide, in(pktSpec{fin: true, ack: true, seq: cISN + 1 + 120, ackNum: srvEnd + 1}))
		timed(5, ServerSide, out(pktSpec{ack: true, seq: srvEnd + 1, ackNum: cISN + 1 + 121}))
	}
	// The last connections' entries expire as the clock goes on.
	for k := 0; k < 600 && r.b.Table().Len() > 0; k++ {
		now += sweep
		sweepNow()
	}
	b.StopTimer()
	if swept != b.N || r.b.Table().Len() != 0 {
		b.Fatalf("expiry: %d of %d swept, %d left", swept, b.N, r.b.Table().Len())
	}
	var sum time.Duration
	for i, p := range phases {
		b.ReportMetric(float64(spent[i].Nanoseconds())/float64(b.N), p+"-ns")
		sum += spent[i]
	}
	b.ReportMetric(float64(sum.Nanoseconds())/float64(b.N), "conn-ns")
}

// BenchmarkForwardFaults is BenchmarkForward's one connection with no
// fault set (one pointer load per frame) and with a fault set on another
// service (the lookups a fault set costs every frame).
func BenchmarkForwardFaults(b *testing.B) {
	for _, mode := range []string{"none", "elsewhere"} {
		b.Run(mode, func(b *testing.B) {
			r := newRig(b, TCP, "rr", nil)
			if mode == "elsewhere" {
				if err := r.b.SetFaults([]Fault{{Target: FaultTarget{Protocol: TCP, VIP: netip.AddrPortFrom(vip, 81)}, Dir: FaultBoth, Blackhole: true}}); err != nil {
					b.Fatal(err)
				}
			}
			r.b.Process(ClientSide, frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient}))
			info := r.b.Table().Conns()[0]
			in := frame(b, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, payload: make([]byte, 1400), srcMAC: macClient})
			back := frame(b, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: TCP, ack: true, payload: make([]byte, 1400)})
			inB, backB := append([]byte(nil), in.Bytes()...), append([]byte(nil), back.Bytes()...)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f, orig, side := in, inB, ClientSide
				if i&1 == 1 {
					f, orig, side = back, backB, ServerSide
				}
				copy(f.Buf[f.Off:f.Off+54], orig[:54])
				f.Len = len(orig)
				if r.b.Process(side, f) != Forward {
					b.Fatal("not forwarded")
				}
			}
		})
	}
}
