package nat

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/tapvs/tapvs/wire"
)

// A port map hands out every port of its range once, in turn from where it
// starts, and none more; a port given back is found wherever it is, but
// only after the ports past the last one taken have had their turn.
func TestPortMapTakesEveryPortInTurn(t *testing.T) {
	const span = 130 // not a multiple of 64: the last word's spare bits are never handed out
	m := newPortMap(span, 100)
	for i := range uint32(span) {
		got, ok := m.take()
		if want := (100 + i) % span; !ok || got != want {
			t.Fatalf("take %d: %d %v, want %d", i, got, ok, want)
		}
	}
	if got, ok := m.take(); ok {
		t.Fatalf("a full map handed out %d", got)
	}
	m.put(7)
	m.put(120)
	if got, _ := m.take(); got != 120 {
		t.Fatalf("took %d, want 120: the first free port past the last taken (99)", got)
	}
	if got, _ := m.take(); got != 7 {
		t.Fatalf("took %d, want 7 (the search wraps)", got)
	}
	if _, ok := m.take(); ok {
		t.Fatal("a port handed out twice")
	}
}

// Readers take and give back ports of one map at once: no port is ever
// held twice. Run with -race.
func TestPortMapConcurrent(t *testing.T) {
	m := newPortMap(1000, 0)
	var held [1000]sync.Mutex // a port's mutex is locked while a reader holds the port
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []uint32
			for i := range 20000 {
				if i%3 != 2 {
					if p, ok := m.take(); ok {
						if !held[p].TryLock() {
							t.Errorf("port %d handed out while held", p)
							return
						}
						mine = append(mine, p)
					}
				} else if len(mine) > 0 {
					p := mine[0]
					mine = mine[1:]
					held[p].Unlock()
					m.put(p)
				}
			}
		}()
	}
	wg.Wait()
}

// A LIP's whole range toward a server is used before it reports
// exhaustion, however the free ports are scattered: with 1 000 ports all
// held but one, far from where the search starts, the next connection
// gets exactly that one. (A search by trying 256 tuples from a cursor
// reported this pool exhausted.)
func TestLastFreePortFound(t *testing.T) {
	r := newRig(t, UDP, "rr", func(c *Config) { c.PortMin, c.PortMax, c.MaxConns = 20000, 20999, 4000 })
	r.setWeight(t, rs2, 8080, 0)
	for i := range 1000 {
		f := frame(t, pktSpec{src: client, dst: vip, sport: uint16(30000 + i), dport: 80, proto: UDP, srcMAC: macClient})
		if v := r.b.Process(ClientSide, f); v != Forward {
			t.Fatalf("flow %d: %v %v", i, v, r.b.Stats.Drops())
		}
	}
	if v := r.b.Process(ClientSide, frame(t, pktSpec{src: client, dst: vip, sport: 40000, dport: 80, proto: UDP, srcMAC: macClient})); v != Drop || r.b.Stats.Drop(DropPortExhausted) != 1 {
		t.Fatalf("1001st flow on 1000 ports: %v %v", v, r.b.Stats.Drops())
	}
	var freed netip.AddrPort
	for _, c := range r.b.table.Conns() {
		if c.LIP.Port() == 20600 {
			freed = c.LIP
			r.b.release(r.b.table.lookup(&tupleKey{src: wire.In16(client.AsSlice()), dst: wire.In16(vip.AsSlice()), sport: c.Client.Port(), dport: 80, proto: UDP}))
		}
	}
	if !freed.IsValid() {
		t.Fatal("no connection held port 20600")
	}
	f := frame(t, pktSpec{src: client, dst: vip, sport: 40001, dport: 80, proto: UDP, srcMAC: macClient})
	if v := r.b.Process(ClientSide, f); v != Forward {
		t.Fatalf("with one port free: %v %v", v, r.b.Stats.Drops())
	}
	if got := decode(t, f).udp.SrcPort; got != 20600 {
		t.Fatalf("took port %d, want the free 20600", got)
	}
}

// TestPortMapClaim: claim takes a given port if free (an imported
// connection's), once; take passes it by; put frees it; an index outside
// the range is never claimed, whether the range ends a word or not.
func TestPortMapClaim(t *testing.T) {
	for _, span := range []uint32{64, 100} {
		m := newPortMap(span, 0)
		if !m.claim(0) || m.claim(0) {
			t.Fatalf("span %d: claim(0) twice", span)
		}
		if i, ok := m.take(); !ok || i != 1 {
			t.Fatalf("span %d: take after claim(0) = %d, %v", span, i, ok)
		}
		m.put(0)
		if !m.claim(0) || !m.claim(span-1) {
			t.Fatalf("span %d: claim after put, or of the last port", span)
		}
		if m.claim(span) || m.claim(span+64) {
			t.Fatalf("span %d: claimed past the range", span)
		}
	}
}
