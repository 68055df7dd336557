package nat

import (
	"sync"
	"testing"

	"github.com/tapvs/tapvs/tcprw"
	"github.com/tapvs/tapvs/wire"
)

// The client's reader and the server's translate through a connection's
// one rewriter while the server's reader changes it (a TOA connection's
// SYN-ACK naming the ack TOA goes with, again and again; a PROXY
// connection's server acknowledging the header): under -race, no reader
// ever sees a record change under it, and at the end the record holds the
// last change with nothing else moved.
func TestRewriterSharedByBothReaders(t *testing.T) {
	const n = 500
	run := func(t *testing.T, r *rig, client [][]byte, server [][]byte) {
		var wg sync.WaitGroup
		for _, side := range []struct {
			s      Side
			frames [][]byte
		}{{ClientSide, client}, {ServerSide, server}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f := &Frame{Buf: make([]byte, 4096)}
				for i := range n {
					b := side.frames[i%len(side.frames)]
					restore(f, b)
					if v := r.b.Process(side.s, f); v != Forward {
						t.Errorf("%v frame %d: verdict %v", side.s, i, v)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	conn := func(t *testing.T, r *rig) *Conn {
		in := tupleKey{src: wire.In16(client.AsSlice()), dst: wire.In16(vip.AsSlice()), sport: 40000, dport: 80, proto: TCP}
		c := r.b.table.lookup(&in)
		if c == nil {
			t.Fatal("no connection")
		}
		return c
	}

	t.Run("toa", func(t *testing.T) {
		r, _ := toaRig(t, false)
		syn := frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, syn: true, srcMAC: macClient})
		if r.b.Process(ClientSide, syn) != Forward {
			t.Fatal("SYN")
		}
		info := r.b.Table().Conns()[0]
		synAck := func(isn uint32) []byte {
			return frame(t, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: TCP, syn: true, ack: true, seq: isn, ackNum: 1}).Bytes()
		}
		data := func(ack uint32) []byte {
			return frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: TCP, ack: true, seq: 1, ackNum: ack, payload: make([]byte, 100), srcMAC: macClient}).Bytes()
		}
		before := *conn(t, r).rw.Load()
		run(t, r, [][]byte{data(1001), data(2001)}, [][]byte{synAck(1000), synAck(2000)})
		after := *conn(t, r).rw.Load()
		if after.Flags&tcprw.TOAKnown == 0 || after.TOAAck != 2001 {
			t.Fatalf("TOA's ack %d (flags %#x), want the last SYN-ACK's 2001", after.TOAAck, after.Flags)
		}
		after.TOAAck, after.Flags = before.TOAAck, before.Flags
		if after != before {
			t.Fatalf("the record moved beyond TOA's ack: %+v, was %+v", after, before)
		}
	})

	t.Run("proxy", func(t *testing.T) {
		r := proxyRig(t, ClientAddrProxyV2, false)
		first, later, _ := proxyFlow(t, r)
		c := conn(t, r)
		before := *c.rw.Load()
		ends := before.HeaderStart() + before.Insert // the server's ack of the whole header
		info := r.b.Table().Conns()[0]
		ack := func(a uint32) []byte {
			return frame(t, pktSpec{src: info.RIP.Addr(), dst: lip1, sport: 8080, dport: info.LIP.Port(), proto: TCP, ack: true, seq: 7001, ackNum: a, srcMAC: macGateway}).Bytes()
		}
		run(t, r, [][]byte{first, later}, [][]byte{ack(ends - 1), ack(ends), ack(ends + 1400)})
		after := *c.rw.Load()
		if after.Flags&tcprw.Past == 0 {
			t.Fatalf("the server's ack of the header did not set Past: %+v", after)
		}
		after.Flags = before.Flags
		if after != before {
			t.Fatalf("the record moved beyond Past: %+v, was %+v", after, before)
		}
	})
}
