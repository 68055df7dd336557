package netstack

import (
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/internal/logbuf"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun"
)

// listDev hands out its frames one per Read, then reports itself closed.
type listDev struct {
	memDev
	frames [][]byte
}

func (d *listDev) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	if len(d.frames) == 0 {
		return 0, os.ErrClosed
	}
	sizes[0] = copy(bufs[0][off:], d.frames[0])
	d.frames = d.frames[1:]
	return 1, nil
}

// A frame that makes processing panic is dropped and counted, the first
// panic is logged with its stack, and the reader forwards the frames after
// it: no single frame stops the data path.
func TestReaderSurvivesAPanic(t *testing.T) {
	bal := testBalancer(t)

	poison := tcpFrame(t, client, vip, false, 13) // 13 bytes of payload mark it
	good := tcpFrame(t, client, vip, false, 100)
	in := &listDev{frames: [][]byte{tcpFrame(t, client, vip, true, 0), poison, good, poison, good, good}}
	out := &memDev{}
	var logs logbuf.Buffer
	st, err := New(bal, NICConfig{Devs: []tun.Device{in}, MTU: 1500, Address: netip.MustParsePrefix("172.25.254.254/24")},
		NICConfig{Devs: []tun.Device{out}, MTU: 1500, Address: netip.MustParsePrefix("172.25.84.4/24")}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.s.Close()
	st.Client.process = func(side nat.Side, f *nat.Frame) nat.Verdict {
		if f.Len == len(poison) {
			var b []byte
			_ = b[f.Len] // a bug the fuzzers did not find
		}
		return bal.Process(side, f)
	}
	st.Client.start()
	st.Client.Wait()
	qs := &st.Client.Stats()[0]
	if out.written != 4 || qs.Panics.Load() != 2 || qs.Received.Load() != 6 {
		t.Fatalf("forwarded %d of 4, panics %d of 2, received %d", out.written, qs.Panics.Load(), qs.Received.Load())
	}
	log := logs.String()
	if strings.Count(log, "BUG: a frame made the data path panic") != 1 || !strings.Contains(log, "index out of range") || !strings.Contains(log, "contain_test.go") {
		t.Fatalf("want one log line with the panic and its stack, got:\n%s", log)
	}
}

// The reader allocates nothing per frame in steady state: over the whole
// run (typically millions of frames) the only allocations are the reader's
// start-up, a handful (8 or 9 when written), however many frames pass, so
// even one allocation per thousand frames fails. A run that failed (frames
// not coming out; testing.Benchmark keeps the reason to itself) has N = 0
// and no allocations at all: that is a failure too.
func TestFramePathAllocs(t *testing.T) {
	const startup = 64 // the reader's start-up allocations, with room to spare
	res := testing.Benchmark(func(b *testing.B) { framePath(b, 1400) })
	if res.N == 0 {
		t.Fatal("the frame path failed: not every frame came out the other side (BenchmarkFramePath says why)")
	}
	if a := res.AllocsPerOp(); a != 0 {
		t.Fatalf("%d allocations per frame", a)
	}
	if res.MemAllocs > startup {
		t.Fatalf("%d allocations over %d frames: more than the reader's start-up (%d)", res.MemAllocs, res.N, startup)
	}
}

// recDev is a listDev that keeps what is written to it.
type recDev struct {
	listDev
	wrote [][]byte
}

func (d *recDev) Write(frames [][]byte) (int, error) {
	for _, f := range frames {
		d.wrote = append(d.wrote, append([]byte(nil), f...))
	}
	return len(frames), nil
}

// Frames the balancer held and lets go with a Release verdict (a server's
// SYN-ACK releasing the client's held ACK) leave back out the side the
// frame came in on, in order, in the reader's batch, with the device's
// virtio-net header or none.
func TestReleasedFramesLeaveBackOutTheSide(t *testing.T) {
	for _, h := range []int{0, tun.VNetHdrLen} {
		bal := testBalancer(t)
		in := &recDev{listDev: listDev{memDev: memDev{vnet: h}, frames: [][]byte{tcpFrame(t, netip.MustParseAddr("172.25.84.20"), netip.MustParseAddr("172.25.84.10"), false, 1)}}}
		out := &memDev{vnet: h}
		st, err := New(bal, NICConfig{Devs: []tun.Device{out}, MTU: 1500, Address: netip.MustParsePrefix("172.25.254.254/24")},
			NICConfig{Devs: []tun.Device{in}, MTU: 1500, Address: netip.MustParsePrefix("172.25.84.4/24")}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		held := func(s string) []byte {
			q := make([]byte, tun.VNetHdrLen, tun.VNetHdrLen+len(s))
			q[0] = tun.VNetNeedsCsum // a header of its own, kept
			return append(q, s...)
		}
		st.Server.process = func(side nat.Side, f *nat.Frame) nat.Verdict {
			if side != nat.ServerSide {
				t.Errorf("frame from the %v side", side)
			}
			f.Released = [][]byte{held("first"), held("second")}
			return nat.Release
		}
		st.Server.start()
		st.Server.Wait()
		st.s.Close()
		qs := &st.Server.Stats()[0]
		if len(in.wrote) != 2 || out.written != 0 || qs.Released.Load() != 2 || qs.Stolen.Load() != 1 {
			t.Fatalf("header %d: back %d frames, across %d; released %d, stolen %d", h, len(in.wrote), out.written, qs.Released.Load(), qs.Stolen.Load())
		}
		for i, want := range []string{"first", "second"} {
			f := in.wrote[i]
			if len(f) != h+len(want) || string(f[h:]) != want || h > 0 && f[0] != tun.VNetNeedsCsum {
				t.Fatalf("header %d: frame %d is % x", h, i, f)
			}
		}
	}
}
