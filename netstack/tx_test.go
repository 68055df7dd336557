package netstack

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/tapvs/tapvs/tun"
)

// batchDev is a memDev whose reader takes batches of n frames.
type batchDev struct {
	memDev
	n int
}

func (d *batchDev) BatchSize() int { return d.n }

// recTx records each batch it is handed, then sends it as syscallTx does.
type recTx struct{ batches [][2]int }

func (r *recTx) flush(qu *queue) {
	r.batches = append(r.batches, [2]int{len(qu.fwd), len(qu.back)})
	syscallTx{}.flush(qu)
}

// TestClassifyThenFlush checks a batch is classified whole before it is
// sent, in one flush per batch (a ring poller submits each flush as one
// batch of SQEs), and that syscallTx sends and counts it as before.
func TestClassifyThenFlush(t *testing.T) {
	bal := testBalancer(t)
	in := &batchDev{memDev: memDev{vnet: tun.VNetHdrLen}, n: 4}
	out := &memDev{vnet: tun.VNetHdrLen}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := New(bal, NICConfig{Devs: []tun.Device{in}, MTU: 1500, Address: netip.MustParsePrefix("172.25.254.254/24")},
		NICConfig{Devs: []tun.Device{out}, MTU: 1500, Address: netip.MustParsePrefix("172.25.84.4/24")}, log)
	if err != nil {
		t.Fatal(err)
	}
	qu := st.Client.queue(0)
	rec := &recTx{}
	qu.tx = rec
	frames := [][]byte{tcpFrame(t, client, vip, true, 0), tcpFrame(t, client, vip, false, 100), tcpFrame(t, client, vip, false, 200)}
	for i, f := range frames {
		qu.sizes[i] = copy(qu.bufs[i][Headroom:], f)
	}
	qu.handle(len(frames))
	if len(rec.batches) != 1 || rec.batches[0] != [2]int{3, 0} {
		t.Fatalf("flushes (forward, back): %v, want one of (3, 0)", rec.batches)
	}
	s := &st.Client.stats[0]
	if out.written != 3 || s.Received.Load() != 3 || s.Forwarded.Load() != 3 || s.TxErrors.Load() != 0 {
		t.Fatalf("written %d; received %d, forwarded %d, tx errors %d; want 3, 3, 3, 0",
			out.written, s.Received.Load(), s.Forwarded.Load(), s.TxErrors.Load())
	}
}
