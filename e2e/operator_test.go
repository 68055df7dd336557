package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/internal/logbuf"
	"github.com/tapvs/tapvs/lab"
)

// adm runs the ipvsadm-named tapvsadm against the lab's tapvs.
func (e *env) adm(stdin string, args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	cmd := exec.Command(ipvsadmBin, args...)
	cmd.Env = append(os.Environ(), "TAPVS_SOCKET="+e.top.Socket)
	cmd.Stdin = strings.NewReader(stdin)
	var o, eb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &eb
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return o.String(), eb.String(), code
}

// must runs a command that has to succeed.
func (e *env) must(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.adm("", args...)
	if code != 0 {
		e.t.Fatalf("ipvsadm %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// rows splits output into whitespace-separated fields per line.
func rows(out string) [][]string {
	var r [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		r = append(r, strings.Fields(l))
	}
	return r
}

func fields(t *testing.T, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("columns %q, want %q", got, want)
	}
}

// The seed's command sequence, as typed, against a running tapvs; then real
// traffic, with -G, -ln and -lnc checked column by column.
func TestSeedSequenceWithIpvsadm(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	e.must("-C")
	e.must("-A", "-t", "172.25.254.100:80", "-s", "wrr")
	e.must("-a", "-t", "172.25.254.100:80", "-r", "10.20.1.2:80", "-b")
	e.must("-a", "-t", "172.25.254.100:80", "-r", "10.20.2.2:80", "-b")
	e.must("-P", "-t", "172.25.254.100:80", "-z", "172.25.84.10")

	g := rows(e.must("-G", "-t", "172.25.254.100:80"))
	fields(t, g[0], "VIP:VPORT", "TOTAL", "SNAT_IP", "CONFLICTS", "CONNS", "EXHAUSTED")
	fields(t, g[1], "172.25.254.100:80", "1", "172.25.84.10", "0", "0", "0")

	ln := rows(e.must("-ln"))
	fields(t, ln[0], "IP", "Virtual", "Server", "version", "1.2.1", "(size=1048576)")
	fields(t, ln[1], "Prot", "LocalAddress:Port", "Scheduler", "Flags")
	fields(t, ln[2], "->", "RemoteAddress:Port", "Forward", "Weight", "ActiveConn", "InActConn")
	fields(t, ln[3], "TCP", "172.25.254.100:80", "wrr")
	fields(t, ln[4], "->", "10.20.1.2:80", "FullNat", "1", "0", "0")
	fields(t, ln[5], "->", "10.20.2.2:80", "FullNat", "1", "0", "0")
	if len(ln) != 6 {
		t.Fatalf("-ln after -C shows %d lines: %q", len(ln), ln)
	}
	lnc := rows(e.must("-lnc"))
	fields(t, lnc[0], "IPVS", "connection", "entries")
	fields(t, lnc[1], "pro", "expire", "state", "source", "virtual", "local", "destination")
	if len(lnc) != 2 {
		t.Fatalf("connections before any traffic: %q", lnc)
	}

	// Real traffic: two finished requests and one kept-alive connection.
	// Every packet of them is after start, and the last of the kept one
	// after kept: the bounds of each entry's expiry.
	start := time.Now()
	short := lab.HTTPClient(e.top.Client, 5*time.Second)
	e.get(short)
	e.get(short)
	keep := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, n, a string) (net.Conn, error) { return lab.Dial(ctx, e.top.Client, n, a) }}}
	defer keep.CloseIdleConnections()
	kept := time.Now()
	keptRS, _ := e.get(keep)
	keptDest := map[string]string{"rs1": "10.20.1.2:80", "rs2": "10.20.2.2:80"}[keptRS]

	ln = rows(e.must("-ln"))
	var active, inactive int
	for _, r := range ln[4:] {
		if r[0] != "->" || r[2] != "FullNat" || r[3] != "1" {
			t.Fatalf("dest row %q", r)
		}
		a, _ := strconv.Atoi(r[4])
		ia, _ := strconv.Atoi(r[5])
		active += a
		inactive += ia
		if r[1] == map[string]string{"rs1": "10.20.1.2:80", "rs2": "10.20.2.2:80"}[keptRS] && a != 1 {
			t.Fatalf("%s holds the kept-alive connection but shows ActiveConn %d", r[1], a)
		}
	}
	if active != 1 || inactive != 2 {
		t.Fatalf("ActiveConn %d InActConn %d, want 1 and 2: %q", active, inactive, ln)
	}
	// The finished connections are in TIME_WAIT once the client's FIN,
	// sent as it closed, has crossed tapvs: read until it has (or the
	// checks below say what is there instead).
	var listed time.Time
	eventually(3*time.Second, func() bool {
		out := e.must("-lnc")
		listed, lnc = time.Now(), rows(out)
		return strings.Count(out, " TIME_WAIT ") == 2
	})
	t.Logf("-lnc after traffic: %q", lnc)
	// An entry's expiry counts down from its state's timeout (the lab's
	// are the defaults) from its last packet: at most the timeout, at
	// least the timeout less the time since that packet (printed rounded
	// up to the second, so one second of slack below).
	tos := e.d.Config().Timeouts
	timeout := map[string]time.Duration{"ESTABLISHED": tos.Established(), "TIME_WAIT": tos.TCP[5]} // nat's state order: NONE, ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT
	if timeout["ESTABLISHED"] != 90*time.Second || timeout["TIME_WAIT"] != 7*time.Second {
		t.Fatalf("the lab's timeouts are not the defaults this test reads: %v", timeout)
	}
	states := map[string]int{}
	for _, r := range lnc[2:] {
		// The local column is the LIP:lport the connection leaves from
		// (DPVS's), the one LIP here and a port of its range.
		if len(r) != 7 || r[0] != "TCP" || r[4] != "172.25.254.100:80" || !strings.HasPrefix(r[3], "172.25.254.1:") {
			t.Fatalf("connection row %q", r)
		}
		if lip, err := netip.ParseAddrPort(r[5]); err != nil || lip.Addr() != lab.LIP1 || lip.Port() == 0 {
			t.Fatalf("local %q, want %s:port", r[5], lab.LIP1)
		}
		if r[6] != "10.20.1.2:80" && r[6] != "10.20.2.2:80" {
			t.Fatalf("destination %q", r[6])
		}
		r = append(r[:5], r[6]) // the rest reads mainline's columns
		mm, ss, ok := strings.Cut(r[1], ":")
		m, merr := strconv.Atoi(mm)
		sec, serr := strconv.Atoi(ss)
		if !ok || merr != nil || serr != nil {
			t.Fatalf("expire %q is not mm:ss", r[1])
		}
		expire := time.Duration(m*60+sec) * time.Second
		// The kept connection is the ESTABLISHED one; the two finished
		// ones are in TIME_WAIT.
		since := listed.Sub(start)
		switch r[2] {
		case "ESTABLISHED":
			if r[5] != keptDest {
				t.Fatalf("ESTABLISHED entry %q is not the kept connection's (to %s)", r, keptDest)
			}
			since = listed.Sub(kept)
		case "TIME_WAIT":
		default:
			t.Fatalf("entry %q: state %s is neither the kept connection's ESTABLISHED nor a finished one's TIME_WAIT", r, r[2])
		}
		to := timeout[r[2]]
		if expire > to || expire < to-since-time.Second {
			t.Fatalf("entry %q: expire %v, want within [%v, %v] (the %s timeout less %v since its last packet)", r, expire, to-since-time.Second, to, r[2], since.Round(time.Millisecond))
		}
		states[r[2]]++
	}
	if states["ESTABLISHED"] != 1 || states["TIME_WAIT"] != 2 || len(lnc)-2 != 3 {
		t.Fatalf("states %v in %d entries, want 1 ESTABLISHED and 2 TIME_WAIT", states, len(lnc)-2)
	}
	// -G after traffic: the one LIP took all three connections (a port
	// each toward its server), none conflicting, none refused a port.
	g = rows(e.must("-G", "-t", "172.25.254.100:80"))
	fields(t, g[0], "VIP:VPORT", "TOTAL", "SNAT_IP", "CONFLICTS", "CONNS", "EXHAUSTED")
	fields(t, g[1], "172.25.254.100:80", "1", "172.25.84.10", "0", "3", "0")
	if len(g) != 2 {
		t.Fatalf("-G shows %d lines: %q", len(g), g)
	}
}

// Errors read like ipvsadm's, exit non-zero and leave the state untouched.
func TestIpvsadmErrorsLeaveStateAlone(t *testing.T) {
	e := setup(t, services("wrr", 1, 1), "")
	before := e.must("-Sn")
	cases := []struct {
		args []string
		want string
	}{
		// ipvsadm's messages for a service that does not exist depend on
		// the command (ipvs_strerror).
		{[]string{"-D", "-t", "1.2.3.4:80"}, "No such service"},
		{[]string{"-E", "-t", "1.2.3.4:80", "-s", "rr"}, "No such service"},
		{[]string{"-L", "-n", "-t", "1.2.3.4:80"}, "No such service"},
		{[]string{"-a", "-t", "1.2.3.4:80", "-r", "10.20.1.3:80"}, "Service not defined"},
		{[]string{"-d", "-t", "1.2.3.4:80", "-r", "10.20.1.3:80"}, "Service not defined"},
		{[]string{"-P", "-t", "1.2.3.4:80", "-z", "172.25.84.12"}, "Service not defined"},
		{[]string{"-A", "-t", "172.25.254.100:80", "-s", "rr"}, "Service already exists"},
		{[]string{"-a", "-t", "172.25.254.100:80", "-r", "10.20.1.2:80", "-b"}, "Destination already exists"},
		{[]string{"-d", "-t", "172.25.254.100:80", "-r", "10.20.9.9:80"}, "No such destination"},
		{[]string{"-A", "-t", "172.25.254.100:81", "-s", "fifo"}, `"fifo" is not a scheduler`},
		{[]string{"-a", "-t", "172.25.254.100:80", "-r", "10.20.1.3:80", "-w", "70000"}, "Illegal weight specified"},
		{[]string{"-a", "-t", "172.25.254.100:80", "-r", "10.20.1.3:80", "-m"}, "FULLNAT only"},
		{[]string{"-P", "-t", "172.25.254.100:80", "-z", "127.0.0.1:80"}, "local address 127.0.0.1 is a loopback address"},
		{[]string{"-P", "-t", "172.25.254.100:80", "-z", "10.9.9.9"}, "not in the server side's subnet"},
		{[]string{"-A", "-t", "0.0.0.0:80"}, "VIP 0.0.0.0 is the unspecified address"},
		{[]string{"-A", "-t", "172.25.84.10:80"}, "VIP 172.25.84.10 is already a local address"},
		{[]string{"-A", "-t", "172.25.254.254:80"}, "VIP 172.25.254.254 is tapvs's own address on the client side"},
		{[]string{"-a", "-t", "172.25.254.100:80", "-r", "172.25.84.10:80"}, "real server 172.25.84.10:80 is already a local address"},
		{[]string{"-a", "-t", "172.25.254.100:80", "-r", "10.20.1.3:80", "-r", "10.20.1.4:80"}, "multiple '--real-server' options specified"},
		{[]string{"-E", "-t", "172.25.254.100:80", "-V", "4294967295"}, "ESTABLISHED timeout"},
		{[]string{"-A", "-t", "not-an-address:80"}, "Illegal address or port"},
		{[]string{"-A", "-u", "172.25.254.100:53", "-j", "enable"}, "only a TCP service can have a SYN proxy"},
		// Not supported: other forwarding methods; what persistence and
		// thresholds refuse (IPVS's: a lower threshold above the upper).
		{[]string{"-a", "-t", "172.25.254.100:80", "-r", "10.20.1.3:80", "-g"}, "-g: tapvs forwards with FULLNAT only (-b)\nTry `ipvsadm -h'"},
		{[]string{"-a", "-t", "172.25.254.100:80", "-r", "10.20.1.3:80", "-i"}, "-i: tapvs forwards with FULLNAT only (-b)\nTry `ipvsadm -h'"},
		{[]string{"-e", "-t", "172.25.254.100:80", "-r", "10.20.1.2:80", "-g", "-w", "5"}, "-g: tapvs forwards with FULLNAT only (-b)\nTry `ipvsadm -h'"},
		{[]string{"-A", "-t", "172.25.254.100:82", "-s", "rr", "-M", "255.255.255.0"}, "netmask (-M) needs persistence (-p)"},
		{[]string{"-A", "-t", "172.25.254.100:0", "-s", "rr"}, "port 0 (all ports) needs persistence (-p), as in IPVS"},
		{[]string{"-E", "-t", "172.25.254.100:80", "-p", "60", "-M", "255.0.255.0"}, `persistence_netmask: "255.0.255.0" is not a netmask`},
		{[]string{"-E", "-t", "172.25.254.100:80", "-p", "4294967295"}, "persistence timeout"},
		{[]string{"-a", "-t", "172.25.254.100:80", "-r", "10.20.1.3:80", "-x", "2", "-y", "3"}, "real server 10.20.1.3:80 has lower threshold 3 above its upper threshold 2"},
		{[]string{"-e", "-t", "172.25.254.100:80", "-r", "10.20.1.2:80", "-w", "5", "-y", "10"}, "real server 10.20.1.2:80 has lower threshold 10 above its upper threshold 0"},
		{[]string{"-e", "-t", "172.25.254.100:80", "-r", "10.20.1.2:80", "-x", "2147483648"}, "illegal u_threshold specified"},
	}
	for _, c := range cases {
		_, errOut, code := e.adm("", c.args...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("ipvsadm %s: exit %d, %q; want non-zero and %q", strings.Join(c.args, " "), code, errOut, c.want)
		}
	}
	if after := e.must("-Sn"); after != before {
		t.Fatalf("refused commands changed the rules:\n%s\nwas\n%s", after, before)
	}
	e.get(lab.HTTPClient(e.top.Client, 5*time.Second))
}

// -S output restores with -R to the same rules; --set, -E, -e, -Q, -Z,
// --stats and --capture work on the running tapvs.
func TestIpvsadmSaveRestoreAndFriends(t *testing.T) {
	e := setup(t, services("wrr", 1, 1), "")
	saved := e.must("-Sn")
	for _, want := range []string{"-A -t 172.25.254.100:80 -s wrr -j disable", "-a -t 172.25.254.100:80 -r 10.20.1.2:80 -b -w 1", "-P -t 172.25.254.100:80 -z 172.25.84.10", "-A -u 172.25.254.100:9001 -s rr -j disable"} {
		if !strings.Contains(saved, want+"\n") {
			t.Fatalf("-S lacks %q:\n%s", want, saved)
		}
	}
	e.must("-C")
	if out := e.must("-Sn"); out != "" {
		t.Fatalf("after -C: %q", out)
	}
	// A restore is one transaction: a refused line (the last) leaves
	// nothing of the others behind.
	if _, errOut, code := e.adm(saved+"-a -t 172.25.254.100:80 -r 0.0.0.0:80\n", "-R"); code == 0 ||
		!strings.Contains(errOut, "-r 0.0.0.0:80: real server 0.0.0.0:80 is the unspecified address") || !strings.Contains(errOut, "nothing was restored") {
		t.Fatalf("-R with a bad line: exit %d %q", code, errOut)
	}
	if out := e.must("-Sn"); out != "" {
		t.Fatalf("a refused restore applied: %q", out)
	}
	if _, errOut, code := e.adm(saved, "-R"); code != 0 {
		t.Fatalf("-R: %s", errOut)
	}
	if again := e.must("-Sn"); again != saved {
		t.Fatalf("-S | -R does not round-trip:\n%s\nwas\n%s", again, saved)
	}
	// The same rules as some systems' ipvsadm -S writes them: whole
	// commands, with a comment and a blank line.
	e.must("-C")
	prefixed := "# ipvsadm -S\n\nipvsadm " + strings.ReplaceAll(strings.TrimSuffix(saved, "\n"), "\n", "\nipvsadm ") + "\n"
	if _, errOut, code := e.adm(prefixed, "-R"); code != 0 {
		t.Fatalf("-R of ipvsadm lines: %s", errOut)
	}
	if again := e.must("-Sn"); again != saved {
		t.Fatalf("-R of ipvsadm lines restored\n%s\nwas\n%s", again, saved)
	}
	e.get(lab.HTTPClient(e.top.Client, 5*time.Second)) // traffic flows through the restored rules

	// Edits: scheduler, synproxy, weight, a LIP off.
	e.must("-E", "-t", "172.25.254.100:80", "-s", "rr", "-j", "enable")
	e.must("-e", "-t", "172.25.254.100:80", "-r", "10.20.2.2:80", "-w", "3")
	e.must("-Q", "-t", "172.25.254.100:80", "-z", "172.25.84.11")
	ln := rows(e.must("-ln", "-t", "172.25.254.100:80"))
	fields(t, ln[3], "TCP", "172.25.254.100:80", "rr", "synproxy")
	fields(t, ln[5][:4], "->", "10.20.2.2:80", "FullNat", "3")
	g := rows(e.must("-G", "-t", "172.25.254.100:80"))
	if len(g) != 2 || g[1][2] != "172.25.84.10" {
		t.Fatalf("-G after -Q: %q", g)
	}
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	for range 4 {
		if _, saw := e.get(hc); saw.Addr() != lab.LIP1 {
			t.Fatalf("after -Q the RS saw %v", saw)
		}
	}

	// --set and the timeouts it reports.
	e.must("--set", "100", "10", "50")
	tos, err := e.d.Manager.Timeouts(), error(nil)
	if err != nil || tos.TCP != 100 || tos.TCPFin != 10 || tos.UDP != 50 {
		t.Fatalf("--set: %+v", tos)
	}
	if exp := e.d.Manager.Services()[0].Timeouts; exp.TCP != 100 {
		t.Fatalf("--set did not reach the services: %+v", exp)
	}
	if got := e.must("-L", "--timeout"); got != "Timeout (tcp tcpfin udp): 100 10 50\n" {
		t.Fatalf("-L --timeout after --set: %q", got)
	}
	// -S keeps a service's own ESTABLISHED timeout (-V), as Alibaba's
	// ipvsadm does, and only one that is not the default.
	e.must("-E", "-t", "172.25.254.100:80", "-V", "30")
	if rules := e.must("-Sn"); !strings.Contains(rules, "-A -t 172.25.254.100:80 -s rr -j enable -V 30\n") || strings.Count(rules, " -V ") != 1 {
		t.Fatalf("-S after -V 30:\n%s", rules)
	}
	e.must("-E", "-t", "172.25.254.100:80", "-V", "100")

	// --stats counts the traffic; -Z zeroes it.
	st := rows(e.must("-ln", "--stats", "-t", "172.25.254.100:80"))
	fields(t, st[1], "Prot", "LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
	conns, _ := strconv.Atoi(st[3][2])
	in, _ := strconv.Atoi(st[3][3])
	out, _ := strconv.Atoi(st[3][4])
	if conns < 5 || in < 3*conns || out < 3*conns {
		t.Fatalf("--stats service row %q: want at least 5 connections of 3+ packets each way", st[3])
	}
	e.must("-Z")
	st = rows(e.must("-ln", "--stats", "--exact", "-t", "172.25.254.100:80"))
	fields(t, st[3], "TCP", "172.25.254.100:80", "0", "0", "0", "0", "0")
	rt := rows(e.must("-ln", "--rate"))
	fields(t, rt[1], "Prot", "LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")

	// --rate moves with traffic: while short connections flow, the
	// estimator (every 2 s, from the change in the counters) shows them on
	// the service and on both servers (rr); once they stop, it falls to 0.
	rates := func() [][]int {
		var out [][]int
		for _, r := range rows(e.must("-ln", "--rate", "--exact", "-t", "172.25.254.100:80"))[3:] {
			cols := r[len(r)-5:]
			row := make([]int, 5)
			for i, c := range cols {
				var err error
				if row[i], err = strconv.Atoi(c); err != nil {
					t.Fatalf("--rate row %q: %v", r, err)
				}
			}
			out = append(out, row)
		}
		return out
	}
	flowing := make(chan struct{})
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		c := lab.HTTPClient(e.top.Client, 5*time.Second)
		for i := 0; i < 2000; i++ { // bounded: about 40 s at the pace below
			select {
			case <-flowing:
				return
			case <-time.After(20 * time.Millisecond): // paces the traffic
			}
			if resp, err := c.Get("http://" + web.String() + "/"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	stopTraffic := func() {
		select {
		case <-flowing:
		default:
			close(flowing)
		}
		<-trafficDone
	}
	defer stopTraffic()
	var rr [][]int
	moving := eventually(10*time.Second, func() bool {
		rr = rates()
		if len(rr) != 3 {
			return false
		}
		for _, r := range rr {
			// Each connection is at least 3 packets each way, each
			// packet at least 40 bytes.
			if r[0] < 1 || r[1] < 3*r[0] || r[2] < 3*r[0] || r[3] < 40*r[1] || r[4] < 40*r[2] {
				return false
			}
		}
		return true
	})
	if !moving {
		t.Fatalf("--rate while connections flow (service, then servers: CPS InPPS OutPPS InBPS OutBPS): %v", rr)
	}
	stopTraffic()
	if !eventually(10*time.Second, func() bool {
		rr = rates()
		for _, r := range rr {
			for _, v := range r {
				if v != 0 {
					return false
				}
			}
		}
		return len(rr) == 3
	}) {
		t.Fatalf("--rate after the traffic stopped: %v, want all 0", rr)
	}

	// --capture writes both sides of the service's traffic to a pcap.
	file := filepath.Join(t.TempDir(), "cap.pcap")
	done := make(chan string, 1)
	go func() {
		out, errOut, code := e.adm("", "--capture", file, "-t", "172.25.254.100:80", "--count", "20")
		if code != 0 {
			out = "failed: " + errOut
		}
		done <- out
	}()
	// The capture starts when tapvs has the request, which the test cannot
	// see from here: send requests until it has its 20 frames (each request
	// is about 20 frames across both sides). tapvsadm's start can take
	// longer than 50 requests on a loaded machine (it did): the bound is a
	// time, and the count of requests a second bound.
	captured := ""
	for i, deadline := 0, time.Now().Add(30*time.Second); captured == "" && i < 5000 && time.Now().Before(deadline); i++ {
		e.get(hc)
		select {
		case captured = <-done:
		default:
		}
	}
	if captured == "" {
		select {
		case captured = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("capture did not finish while requests were sent for 30s")
		}
	}
	if strings.HasPrefix(captured, "failed") {
		t.Fatal(captured)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	sides := map[string]int{}
	for n := 0; ; n++ {
		data, _, err := r.ReadPacketData()
		if err != nil {
			if n != 20 {
				t.Fatalf("%d frames in the capture, want 20", n)
			}
			break
		}
		ip := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		switch {
		case ip.SrcIP.Equal(lab.VIP.AsSlice()) || ip.DstIP.Equal(lab.VIP.AsSlice()):
			sides["client"]++
		case ip.SrcIP.Equal(lab.LIP1.AsSlice()) || ip.DstIP.Equal(lab.LIP1.AsSlice()):
			sides["server"]++
		}
	}
	if sides["client"] == 0 || sides["server"] == 0 {
		t.Fatalf("capture sides %v: want both", sides)
	}
}

// -Z with a service zeroes that service's counters and its servers', and
// no other's (ipvsadm's -Z -t); a service that does not exist is
// ipvsadm's "No such service", exit non-zero, and zeroes nothing.
func TestIpvsadmZeroOneService(t *testing.T) {
	e := setup(t, services("rr", 1, 1), "")
	hc := lab.HTTPClient(e.top.Client, 5*time.Second)
	for range 4 {
		e.get(hc)
	}
	for i := range 4 {
		if _, err := lab.UDPEcho(e.ctx(5*time.Second), e.top.Client, netip.AddrPortFrom(lab.VIP, lab.EchoPort), "zero"); err != nil {
			t.Fatalf("udp echo %d: %v", i, err)
		}
	}
	// conns is a service's row of --stats --exact: its connections and
	// packets in.
	conns := func(flag, svc string) (int, int) {
		st := rows(e.must("-ln", "--stats", "--exact", flag, svc))
		c, err1 := strconv.Atoi(st[3][2])
		in, err2 := strconv.Atoi(st[3][3])
		if err1 != nil || err2 != nil {
			t.Fatalf("--stats row %q", st[3])
		}
		return c, in
	}
	tcpSvc, udpSvc := "172.25.254.100:80", netip.AddrPortFrom(lab.VIP, lab.EchoPort).String()
	if c, _ := conns("-t", tcpSvc); c < 4 {
		t.Fatalf("tcp service: %d connections before -Z, want 4", c)
	}
	if c, _ := conns("-u", udpSvc); c < 1 {
		t.Fatalf("udp service: %d connections before -Z", c)
	}
	_, udpIn := conns("-u", udpSvc)

	_, errOut, code := e.adm("", "-Z", "-t", "172.25.254.100:81")
	if code == 0 || strings.TrimSpace(errOut) != "No such service" {
		t.Fatalf("-Z of a service that does not exist: exit %d %q, want non-zero and \"No such service\"", code, errOut)
	}
	if c, _ := conns("-t", tcpSvc); c < 4 {
		t.Fatalf("a refused -Z zeroed the tcp service: %d connections", c)
	}

	e.must("-Z", "-t", tcpSvc)
	st := rows(e.must("-ln", "--stats", "--exact", "-t", tcpSvc))
	fields(t, st[3], "TCP", tcpSvc, "0", "0", "0", "0", "0")
	for _, r := range st[4:] {
		fields(t, r[2:], "0", "0", "0", "0", "0")
	}
	if c, in := conns("-u", udpSvc); c < 1 || in < udpIn {
		t.Fatalf("-Z -t %s zeroed the udp service too: %d connections, %d packets in (were %d)", tcpSvc, c, in, udpIn)
	}
}

// Issue 20: a reload does not silently undo what tapvsadm changed. It
// applies what changed in the file since the file applied before
// (keepalived's model): an ipvsadm -e -w 0 drain and a declared server
// deleted with -d survive a reload for an unrelated edit of the file (the
// global timeouts, which reach the balancer's defaults), and are named
// (kept=), as are a service and a server the file does not declare, added
// at run time; an edit of the drained server's weight overrides the drain
// and is named (reverted=, level WARN). tapvsadm says so when the change is
// made, POST /v1/reload answers the same lists, and the log line has them.
func TestReloadNamesWhatItRevertsAndKeeps(t *testing.T) {
	var logs logbuf.Buffer
	e := setupWith(t, topoOpts{queues: 1, log: &logs}, services("wrr", 1, 1), "")
	file := filepath.Join(t.TempDir(), "tapvs.yaml")
	if err := os.WriteFile(file, []byte(e.top.Config(services("wrr", 1, 1), "")), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.d.ReloadOn(ctx, nil, file); close(done) }()
	defer func() { cancel(); <-done }()
	cl := api.Dial(e.top.Socket)
	// ReloadOn serves POST /v1/reload once it watches the file.
	var res api.Reload
	if !eventually(5*time.Second, func() bool { var err error; res, err = cl.Reload(); return err == nil }) {
		t.Fatal("POST /v1/reload was not served within 5s of ReloadOn")
	}
	if res.Changes != 0 || len(res.Reverted) != 0 || len(res.Kept) != 0 {
		t.Fatalf("a reload of the running file: %+v, want nothing", res)
	}

	for _, c := range []struct {
		args []string
		note string
	}{
		{[]string{"-e", "-t", "172.25.254.100:80", "-r", "10.20.1.2:80", "-w", "0"},
			"note: tcp 172.25.254.100:80 real server 10.20.1.2:80 weight 0 (file: weight 1): kept across reloads unless the file changes this value"},
		{[]string{"-d", "-t", "172.25.254.100:80", "-r", "10.20.2.2:80"},
			"note: tcp 172.25.254.100:80 real server 10.20.2.2:80 deleted (file: weight 1): kept across reloads unless the file changes this value"},
		{[]string{"-a", "-t", "172.25.254.100:80", "-r", "10.20.1.3:80", "-w", "2"},
			"note: tcp 172.25.254.100:80 real server 10.20.1.3:80 is not in the configuration file: kept across reloads"},
		{[]string{"-A", "-t", "172.25.254.100:81", "-s", "rr"},
			"note: tcp 172.25.254.100:81 is not in the configuration file: kept across reloads"},
		// Back to the file's value: nothing to keep, nothing said.
		{[]string{"-E", "-t", "172.25.254.100:80", "-s", "rr"},
			"note: tcp 172.25.254.100:80 scheduler rr (file: wrr): kept across reloads unless the file changes this value"},
		{[]string{"-E", "-t", "172.25.254.100:80", "-s", "wrr"}, ""},
		{[]string{"-a", "-t", "172.25.254.100:81", "-r", "10.20.1.2:80"}, ""},
		{[]string{"-P", "-t", "172.25.254.100:81", "-z", "172.25.84.12"}, ""},
	} {
		out, errOut, code := e.adm("", c.args...)
		if code != 0 || out != "" || strings.TrimSpace(errOut) != c.note {
			t.Fatalf("ipvsadm %s: exit %d, stdout %q, stderr %q; want 0, nothing and %q", strings.Join(c.args, " "), code, out, errOut, c.note)
		}
	}

	// An unrelated edit: the global timeouts. The runtime changes stay,
	// every one named; the timeouts reach the four declared services and
	// the balancer's defaults.
	wantKept := []string{
		"tcp 172.25.254.100:80 real server 10.20.1.2:80 weight 0 (file: weight 1)",
		"tcp 172.25.254.100:80 real server 10.20.1.3:80",
		"tcp 172.25.254.100:80 real server 10.20.2.2:80 deleted (file: weight 1)",
		"tcp 172.25.254.100:81",
	}
	reload := func(text string) api.Reload {
		t.Helper()
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		res, err := cl.Reload()
		if err != nil {
			t.Fatal(err)
		}
		if kept := slices.Sorted(slices.Values(res.Kept)); strings.Join(kept, "; ") != strings.Join(wantKept, "; ") {
			t.Fatalf("POST /v1/reload kept %q, want %q", res.Kept, wantKept)
		}
		return res
	}
	const timeouts = "timeouts: {tcp: {established: 10m}}\n"
	res = reload(e.top.Config(services("wrr", 1, 1), timeouts))
	if len(res.Reverted) != 0 || res.Changes != 5 {
		t.Fatalf("POST /v1/reload after an unrelated edit: %+v, want 5 changes (the defaults and 4 services' timeouts), nothing reverted", res)
	}
	line := `level=INFO msg="reload applied" changes=5 reverted="" kept="` + strings.Join(res.Kept, "; ") + `"`
	if !strings.Contains(logs.String(), line) {
		t.Fatalf("the log has no line %s:\n%s", line, logs.String())
	}
	if tos, err := cl.Timeouts(); err != nil || tos.TCP != 600 {
		t.Fatalf("default timeouts after the file changed them: %+v %v, want tcp 600", tos, err)
	}
	rules := e.must("-Sn")
	for _, want := range []string{
		"-a -t 172.25.254.100:80 -r 10.20.1.2:80 -b -w 0\n", // the drain
		// :81, added at run time, keeps the ESTABLISHED timeout it was
		// added with (90 s), no longer the default (600 s): -S says so.
		"-a -t 172.25.254.100:80 -r 10.20.1.3:80 -b -w 2\n", "-A -t 172.25.254.100:81 -s rr -j disable -V 90\n",
		"-a -t 172.25.254.100:81 -r 10.20.1.2:80 -b -w 1\n", "-P -t 172.25.254.100:81 -z 172.25.84.12\n",
	} {
		if !strings.Contains(rules, want) {
			t.Fatalf("after the reload the rules lack %q:\n%s", want, rules)
		}
	}
	if strings.Contains(rules, "10.20.2.2:80 ") {
		t.Fatalf("the real server deleted at run time is back:\n%s", rules)
	}
	// A later API-added service gets the file's new timeouts.
	e.must("-A", "-t", "172.25.254.100:82", "-s", "rr")
	if i := slices.IndexFunc(e.d.Manager.Services(), func(s api.Service) bool { return s.Addr == "172.25.254.100:82" }); i < 0 || e.d.Manager.Services()[i].Timeouts.TCP != 600 {
		t.Fatalf("a service added after the reload (%d): want tcp 600 in %+v", i, e.d.Manager.Services())
	}
	e.must("-D", "-t", "172.25.254.100:82")

	// The file edits the drained server's weight: that overrides the
	// drain, and says so.
	wantKept = wantKept[1:]
	res = reload(e.top.Config(services("wrr", 3, 1), timeouts))
	wantReverted := "tcp 172.25.254.100:80 real server 10.20.1.2:80 weight 0 -> weight 3"
	if strings.Join(res.Reverted, "; ") != wantReverted || res.Changes != 1 {
		t.Fatalf("POST /v1/reload after the file changed the drained weight: %+v, want 1 change, reverted %q", res, wantReverted)
	}
	line = `level=WARN msg="reload applied" changes=1 reverted="` + wantReverted + `" kept="` + strings.Join(res.Kept, "; ") + `"`
	if !strings.Contains(logs.String(), line) {
		t.Fatalf("the log has no line %s:\n%s", line, logs.String())
	}
	if rules := e.must("-Sn"); !strings.Contains(rules, "-a -t 172.25.254.100:80 -r 10.20.1.2:80 -b -w 3\n") {
		t.Fatalf("the file's weight 3 did not override the drain:\n%s", rules)
	}

	// A service the file no longer declares is the file's to take away.
	res = reload(e.top.Config(strings.SplitN(services("wrr", 3, 1), "  - name: echo", 2)[0], timeouts))
	if rules := e.must("-Sn"); strings.Contains(rules, "-A -u 172.25.254.100:9001") || !strings.Contains(rules, "-A -t 172.25.254.100:81") {
		t.Fatalf("after a reload of a file without the UDP service, %+v:\n%s", res, rules)
	}
}
