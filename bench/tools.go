package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// netnsClient runs iperf3, wrk and hping3 in the client's namespace, and
// counts half-open connections in the real servers'.
type netnsClient struct {
	ns      string
	servers []string
}

func (c netnsClient) iperf(ctx context.Context, to netip.AddrPort, streams int, sec string) (bps, bytes float64, err error) {
	out, err := run(ctx, c.ns, "iperf3", "-c", to.Addr().String(), "-p", strconv.Itoa(int(to.Port())), "-t", sec, "-P", strconv.Itoa(streams), "-J")
	if err != nil {
		return 0, 0, err
	}
	return parseIperf(out, to)
}

// parseIperf reads the bits per second and bytes the server received from
// iperf3 -J's report.
func parseIperf(out []byte, to netip.AddrPort) (bps, bytes float64, err error) {
	var j struct {
		End struct {
			SumReceived struct {
				Bps   float64 `json:"bits_per_second"`
				Bytes float64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &j); err != nil || j.Error != "" {
		return 0, 0, fmt.Errorf("iperf3 to %s: %v %s", to, err, j.Error)
	}
	return j.End.SumReceived.Bps, j.End.SumReceived.Bytes, nil
}

// iperfUDP sends 64-byte UDP datagrams as fast as iperf3 can and returns the
// packets per second the server received.
func (c netnsClient) iperfUDP(ctx context.Context, to netip.AddrPort, sec string) (float64, error) {
	out, err := run(ctx, c.ns, "iperf3", "-c", to.Addr().String(), "-p", strconv.Itoa(int(to.Port())), "-t", sec, "-u", "-b", "0", "-l", "64", "-J")
	if err != nil {
		return 0, err
	}
	return parseIperfUDP(out, to)
}

// parseIperfUDP reads iperf3 -u -J's report: the packets that arrived (sent
// less lost) per second.
func parseIperfUDP(out []byte, to netip.AddrPort) (float64, error) {
	var j struct {
		End struct {
			Sum struct {
				Packets int64   `json:"packets"`
				Lost    int64   `json:"lost_packets"`
				Seconds float64 `json:"seconds"`
			} `json:"sum"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &j); err != nil || j.Error != "" || j.End.Sum.Seconds == 0 {
		return 0, fmt.Errorf("iperf3 -u to %s: %v %s", to, err, j.Error)
	}
	return float64(j.End.Sum.Packets-j.End.Sum.Lost) / j.End.Sum.Seconds, nil
}

type wrkResult struct {
	rps, requests float64
	p50, p99      time.Duration
	connectErrors int
}

var (
	reRPS  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reReqs = regexp.MustCompile(`([0-9]+) requests in`)
	reErr  = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
	reLat  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)
)

// wrk runs conns connections (on up to 2 threads) for sec seconds.
func (c netnsClient) wrk(ctx context.Context, to netip.AddrPort, sec string, close bool, conns int) (wrkResult, error) {
	out, err := run(ctx, c.ns, wrkArgs(to, sec, close, conns)...)
	if err != nil {
		return wrkResult{}, err
	}
	return parseWrk(out, to)
}

// wrkArgs is the wrk command line; close asks for a new connection per
// request.
func wrkArgs(to netip.AddrPort, sec string, close bool, conns int) []string {
	args := []string{"wrk", fmt.Sprintf("-t%d", min(conns, 2)), fmt.Sprintf("-c%d", conns), "-d" + sec + "s", "--latency"}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	return append(args, "http://"+to.String()+"/")
}

// parseWrk reads wrk --latency's report. Connect errors beyond 1% of the
// requests fail the measurement: the figure would be the errors' rate.
func parseWrk(out []byte, to netip.AddrPort) (wrkResult, error) {
	w, err := scanWrk(out, to)
	if err == nil && w.connectErrors > int(w.requests/100) {
		return w, fmt.Errorf("wrk to %s: %d connect errors in %.0f requests", to, w.connectErrors, w.requests)
	}
	return w, err
}

// scanWrk reads wrk --latency's report, connect errors included.
func scanWrk(out []byte, to netip.AddrPort) (wrkResult, error) {
	var w wrkResult
	m := reRPS.FindSubmatch(out)
	n := reReqs.FindSubmatch(out)
	if m == nil || n == nil {
		return w, fmt.Errorf("wrk to %s: no result in %q", to, out)
	}
	w.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	w.requests, _ = strconv.ParseFloat(string(n[1]), 64)
	if e := reErr.FindSubmatch(out); e != nil {
		w.connectErrors, _ = strconv.Atoi(string(e[1]))
	}
	for _, l := range reLat.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(l[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(l[3])]
		if string(l[1]) == "50" {
			w.p50 = time.Duration(v * float64(unit))
		} else {
			w.p99 = time.Duration(v * float64(unit))
		}
	}
	return w, nil
}

// run runs args in namespace ns and returns their output; a tool that
// hangs is killed after 2 minutes.
func run(ctx context.Context, ns string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out, fmt.Errorf("%s: %v: %s%s", args[0], err, out, ee.Stderr)
		}
		return out, err
	}
	return out, nil
}
