package bench

import (
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var to = netip.MustParseAddrPort("10.98.0.1:80")

func testdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The testdata are real outputs of wrk 4.1 and iperf3 3.12.
func TestParseWrk(t *testing.T) {
	for _, c := range []struct {
		file string
		want wrkResult
	}{
		{"wrk-1conn.txt", wrkResult{rps: 1214.33, requests: 1216, p50: 1240 * time.Microsecond, p99: 12110 * time.Microsecond}},
		{"wrk-close.txt", wrkResult{rps: 724.49, requests: 728, p50: 8760 * time.Microsecond, p99: 17090 * time.Microsecond}},
	} {
		got, err := parseWrk(testdata(t, c.file), to)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		// Within a nanosecond: the latencies pass through float64.
		if got.rps != c.want.rps || got.requests != c.want.requests || absDur(got.p50-c.want.p50) > 1 || absDur(got.p99-c.want.p99) > 1 {
			t.Errorf("%s: got %+v, want %+v", c.file, got, c.want)
		}
	}
}

func absDur(d time.Duration) time.Duration { return max(d, -d) }

func TestParseWrkUnits(t *testing.T) {
	out := "  Latency Distribution\n     50%  812.00us\n     75%    1.00ms\n     99%    1.50s \n  10 requests in 1.00s, 1KB read\nRequests/sec:     10.00\n"
	got, err := parseWrk([]byte(out), to)
	if err != nil {
		t.Fatal(err)
	}
	if got.p50 != 812*time.Microsecond || got.p99 != 1500*time.Millisecond {
		t.Errorf("p50 %s p99 %s, want 812µs 1.5s", got.p50, got.p99)
	}
}

// Connect errors beyond 1% of the requests fail the measurement; read,
// write and timeout errors do not.
func TestParseWrkSocketErrors(t *testing.T) {
	base := string(testdata(t, "wrk-close.txt")) // 728 requests: 7 connect errors are within 1%
	for _, c := range []struct {
		line string
		fail bool
	}{
		{"  Socket errors: connect 7, read 0, write 0, timeout 0\n", false},
		{"  Socket errors: connect 8, read 0, write 0, timeout 0\n", true},
		{"  Socket errors: connect 0, read 500, write 500, timeout 500\n", false},
	} {
		out := strings.Replace(base, "Requests/sec:", c.line+"Requests/sec:", 1)
		_, err := parseWrk([]byte(out), to)
		if (err != nil) != c.fail {
			t.Errorf("%q: error %v, want failure %v", c.line, err, c.fail)
		}
		if err != nil && !strings.Contains(err.Error(), "10.98.0.1:80") {
			t.Errorf("the error does not name the path's address: %v", err)
		}
	}
}

func TestParseWrkNoResult(t *testing.T) {
	if _, err := parseWrk([]byte("unable to connect to 10.98.0.1:80 Connection refused\n"), to); err == nil {
		t.Error("no error for output without a result")
	}
}

func TestWrkArgs(t *testing.T) {
	got := wrkArgs(to, "5", true, 32)
	want := []string{"wrk", "-t2", "-c32", "-d5s", "--latency", "-H", "Connection: close", "http://10.98.0.1:80/"}
	if !slices.Equal(got, want) {
		t.Errorf("short connections: %q, want %q", got, want)
	}
	// One connection keeps one thread (wrk needs a connection per thread)
	// and keeps the connection alive.
	got = wrkArgs(to, "5", false, 1)
	want = []string{"wrk", "-t1", "-c1", "-d5s", "--latency", "http://10.98.0.1:80/"}
	if !slices.Equal(got, want) {
		t.Errorf("one connection: %q, want %q", got, want)
	}
}

func TestParseIperf(t *testing.T) {
	bps, bytes, err := parseIperf(testdata(t, "iperf3-tcp.json"), to)
	if err != nil {
		t.Fatal(err)
	}
	// The receiver's sums, not the sender's.
	if bps != 34795859414.5002 || bytes != 4352901120 {
		t.Errorf("got %v bit/s, %v bytes", bps, bytes)
	}
	_, _, err = parseIperf(testdata(t, "iperf3-refused.json"), to)
	if err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("a refused connection: %v", err)
	}
	if _, _, err := parseIperf([]byte("iperf3: error"), to); err == nil {
		t.Error("no error for output that is not JSON")
	}
}

func TestParseIperfUDP(t *testing.T) {
	pps, err := parseIperfUDP(testdata(t, "iperf3-udp.json"), to)
	if err != nil {
		t.Fatal(err)
	}
	// Packets that arrived: sent less lost, per second.
	if want := (324020.0 - 19846) / 1.000419; math.Abs(pps-want) > 1e-6 {
		t.Errorf("got %v pps, want %v", pps, want)
	}
	if _, err := parseIperfUDP(testdata(t, "iperf3-refused.json"), to); err == nil {
		t.Error("no error for a refused connection")
	}
	if _, err := parseIperfUDP([]byte(`{"end": {"sum": {"packets": 5}}}`), to); err == nil {
		t.Error("no error for a run of no duration")
	}
}
