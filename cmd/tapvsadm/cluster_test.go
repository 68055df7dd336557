package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
)

// Issue 21: --bgp lists the speaker; --drain, --undrain and --drain-status
// drive the drain, --drain --wait until the last connection is gone.
func TestParseCluster(t *testing.T) {
	cases := []struct {
		args string
		want command
	}{
		{"--bgp", command{op: "bgp", bgp: true}},
		{"-L --bgp", command{op: "bgp", bgp: true}},
		{"-ln --bgp", command{op: "bgp", bgp: true, numeric: true}},
		{"--bgp -n", command{op: "bgp", bgp: true, numeric: true}},
		{"--drain", command{op: "drain"}},
		{"--drain --wait", command{op: "drain", wait: true}},
		{"--drain --wait --timeout 90s", command{op: "drain", wait: true, timeout: 90 * time.Second}},
		{"--wait --timeout=5m --drain", command{op: "drain", wait: true, timeout: 5 * time.Minute}},
		{"--undrain", command{op: "undrain"}},
		{"--drain-status", command{op: "drain-status"}},
		{"--drain-status --socket /tmp/x.sock", command{op: "drain-status", socket: "/tmp/x.sock"}},
	}
	for _, c := range cases {
		got, err := parse(strings.Fields(c.args))
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if *got != c.want {
			t.Errorf("%q:\n got %+v\nwant %+v", c.args, *got, c.want)
		}
	}
	for args, want := range map[string]string{
		"--bgp -c":                         "Illegal option for bgp: it takes -L and -n only",
		"--bgp --stats":                    "Illegal option for bgp",
		"--bgp -t 1.1.1.1:80":              "Illegal option for bgp",
		"--bgp --bgp":                      "multiple '--bgp' options specified",
		"-A -t 1.1.1.1:80 --bgp":           "multiple commands specified",
		"--bgp -Z":                         "multiple commands specified",
		"--drain --undrain":                "multiple commands specified",
		"--drain --drain":                  "multiple commands specified",
		"--drain -L":                       "multiple commands specified",
		"--drain -n":                       "Illegal option for drain: it takes --wait and --timeout only",
		"--drain -t 1.1.1.1:80":            "Illegal option for drain",
		"--undrain --wait":                 "--wait belongs to --drain",
		"--drain-status -n":                "Illegal option for drain-status: it takes no option",
		"--drain-status --wait":            "--wait belongs to --drain",
		"--drain --timeout 5m":             "--timeout to --drain --wait",
		"-ln --wait":                       "--wait belongs to --drain",
		"--drain --wait --timeout":         "option --timeout requires an argument",
		"--drain --wait --timeout 5":       `illegal --timeout "5"`,
		"--drain --wait --timeout 0s":      `illegal --timeout "0s"`,
		"--drain --wait --timeout -1s":     "option --timeout requires an argument",
		"--drain --wait --timeout=-1s":     "option --timeout requires an argument",
		"--drain --wait --timeout forever": `illegal --timeout "forever"`,
	} {
		if _, err := parse(strings.Fields(args)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", args, err, want)
		}
	}
}

var testNow = time.Date(2026, 12, 6, 9, 30, 0, 0, time.UTC)

func TestAge(t *testing.T) {
	for since, want := range map[string]string{
		"2026-12-06T09:30:00Z":      "0s",
		"2026-12-06T09:29:18Z":      "42s",
		"2026-12-06T09:26:48Z":      "3m12s",
		"2026-12-06T09:29:00Z":      "1m00s",
		"2026-12-06T04:22:59Z":      "5h07m",
		"2026-12-04T06:00:00Z":      "2d03h",
		"2026-12-06T10:00:00Z":      "0s", // a clock behind the daemon's
		"2026-12-06T10:00:00+01:00": "30m00s",
		"":                          "-",
		"yesterday":                 "-",
	} {
		if got := age(since, testNow); got != want {
			t.Errorf("age(%q): %q, want %q", since, got, want)
		}
	}
}

var testBGP = api.BGP{ASN: 65001, RouterID: "10.0.0.1", Announced: 5, Withdrawn: 1,
	Peers: []api.BGPPeer{
		{Address: "10.0.0.254", ASN: 65000, State: "established", Since: "2026-12-06T09:26:48Z", Changes: 4, Established: 2, Received: 131, Sent: 129, LastError: "peer closed\nthe session"},
		{Address: "fd00:0:0:ffff::fe", ASN: 4200000000, State: "active", Since: "2026-12-06T09:29:18Z", Changes: 1},
	},
	Routes: []api.BGPRoute{
		{Prefix: "172.25.254.100/32", Kind: "vip", Since: "2026-12-06T09:26:47Z"},
		{Prefix: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128", Kind: "vip", Since: "2026-12-06T09:26:47Z"},
		{Prefix: "172.25.84.10/32", Kind: "lip", Since: "2026-12-05T08:00:00Z"},
		{Prefix: "172.25.85.10/32", Kind: "lip", Backup: 2, Since: "2026-12-05T08:00:00Z"},
	}}

const testBGPOut = "" +
	"BGP AS 65001 router-id 10.0.0.1\n" +
	"Peer                     AS         State        Since    Sessions Changes  MsgRcvd  MsgSent  LastError\n" +
	"10.0.0.254               65000      established  3m12s    2        4        131      129      peer closed the session\n" +
	"fd00:0:0:ffff::fe        4200000000 active       42s      0        1        0        0        \n" +
	"Prefix                                      Kind Since\n" +
	"172.25.254.100/32                           vip  3m13s\n" +
	"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128  vip  3m13s\n" +
	"172.25.84.10/32                             lip  1d01h\n" +
	"172.25.85.10/32                             lip  1d01h    backup 2\n" +
	"Announced 5 Withdrawn 1\n"

// A router's words in a peer's error stay on the line and never drive the
// terminal.
func TestPeerErrorOnOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"hold timer expired":                        "hold timer expired",
		"shut\r\ndown\tnow ":                        "shut down now",
		"\x1b[2J\x1b]0;owned\x07red":                "?[2J?]0;owned?red",
		"bad \xff utf-8, \u202eevil, \u00e9t\u00e9": "bad ? utf-8, ?evil, \u00e9t\u00e9",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBGPLayout(t *testing.T) {
	var b bytes.Buffer
	printBGP(&b, testBGP, testNow)
	if b.String() != testBGPOut {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), testBGPOut)
	}
	b.Reset()
	printBGP(&b, api.BGP{ASN: 65001, RouterID: "10.0.0.1", Draining: true}, testNow)
	want := "BGP AS 65001 router-id 10.0.0.1 draining\n" +
		"Peer                     AS         State        Since    Sessions Changes  MsgRcvd  MsgSent  LastError\n" +
		"Prefix                                      Kind Since\n" +
		"Announced 0 Withdrawn 0\n"
	if b.String() != want {
		t.Fatalf("draining, nothing announced: got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	printBGP(&b, api.BGP{ASN: 65001, RouterID: "10.0.0.1", Joining: true}, testNow)
	if l, _, _ := strings.Cut(b.String(), "\n"); l != "BGP AS 65001 router-id 10.0.0.1 joining (no route announced until connection sync holds the table)" {
		t.Fatalf("joining: first line %q", l)
	}
}

func TestDrainLayout(t *testing.T) {
	for _, c := range []struct {
		d    api.Drain
		want string
	}{
		{api.Drain{Conns: 7, Withdrawn: []string{}}, "Drain off: the VIPs are announced, 7 connections\n"},
		{api.Drain{Draining: true, Since: "2026-12-06T09:26:48Z", Conns: 12, Withdrawn: []string{"172.25.254.100", "2001:db8::1"}},
			"Drain on since 2026-12-06T09:26:48Z (3m12s): 12 connections left\nWithdrawn: 172.25.254.100 2001:db8::1\n"},
		{api.Drain{Draining: true, Since: "2026-12-06T09:29:18Z", Empty: true, Withdrawn: []string{}},
			"Drain on since 2026-12-06T09:29:18Z (42s): no connection left: tapvs can be stopped\nWithdrawn: none (nothing announced)\n"},
	} {
		var b bytes.Buffer
		printDrain(&b, c.d, testNow)
		if b.String() != c.want {
			t.Errorf("%+v:\n got %q\nwant %q", c.d, b.String(), c.want)
		}
	}
}

// clusterDaemon is a tapvs's /v1/bgp and /v1/drain on a unix socket: bgp
// nil answers 404 no_bgp; each GET /v1/drain while draining takes the next
// of conns (the last one stays).
type clusterDaemon struct {
	mu       sync.Mutex
	bgp      *api.BGP
	draining bool
	conns    []int
	gets     int
	calls    []string
}

func (f *clusterDaemon) start(t *testing.T) string {
	t.Helper()
	sock := t.TempDir() + "/tapvs.sock"
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if err := json.NewEncoder(w).Encode(v); err != nil {
			t.Errorf("fake daemon: %v", err)
		}
	}
	drain := func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls = append(f.calls, r.Method)
		switch r.Method {
		case "POST":
			f.draining = true
		case "DELETE":
			f.draining = false
		}
		n := f.conns[0]
		if r.Method == "GET" && f.draining {
			f.gets++
			n = f.conns[min(f.gets, len(f.conns)-1)]
		}
		d := api.Drain{Draining: f.draining, Conns: n, Withdrawn: []string{}}
		if f.draining {
			d.Since, d.Empty, d.Withdrawn = "2026-12-06T09:26:48Z", n == 0, []string{"172.25.254.100"}
		}
		reply(w, http.StatusOK, d)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bgp", func(w http.ResponseWriter, r *http.Request) {
		if f.bgp == nil {
			reply(w, http.StatusNotFound, api.Error{Code: api.CodeNoBGP, Message: "this tapvs has no bgp: section"})
			return
		}
		reply(w, http.StatusOK, f.bgp)
	})
	mux.HandleFunc("/v1/drain", drain)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return sock
}

// runAdm runs tapvsadm against sock at testNow, polling fast.
func runAdm(t *testing.T, sock string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	oldNow, oldPoll := now, drainPoll
	now, drainPoll = func() time.Time { return testNow }, 5*time.Millisecond
	t.Cleanup(func() { now, drainPoll = oldNow, oldPoll })
	var out, errOut bytes.Buffer
	code = run(append(args, "--socket", sock), nil, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBGPCommand(t *testing.T) {
	f := &clusterDaemon{bgp: &testBGP, conns: []int{0}}
	sock := f.start(t)
	for _, args := range [][]string{{"--bgp"}, {"-L", "--bgp"}, {"-ln", "--bgp"}} {
		if code, out, errOut := runAdm(t, sock, args...); code != 0 || out != testBGPOut || errOut != "" {
			t.Errorf("%v: exit %d, stdout\n%s\nstderr %q", args, code, out, errOut)
		}
	}
	f.bgp = nil
	code, out, errOut := runAdm(t, sock, "--bgp")
	if code != 1 || out != "" || errOut != "BGP: this tapvs has no bgp: section, it announces nothing\n" {
		t.Errorf("no bgp: section: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, _, errOut = runAdm(t, "/nonexistent/tapvs.sock", "--drain")
	if code != 1 || !strings.HasPrefix(errOut, "Can not talk to tapvs: ") {
		t.Errorf("no daemon: exit %d, stderr %q", code, errOut)
	}
}

func TestDrainCommands(t *testing.T) {
	f := &clusterDaemon{conns: []int{3}}
	sock := f.start(t)
	code, out, errOut := runAdm(t, sock, "--drain")
	if code != 0 || errOut != "" || out != "Drain on since 2026-12-06T09:26:48Z (3m12s): 3 connections left\nWithdrawn: 172.25.254.100\n" {
		t.Errorf("--drain: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ = runAdm(t, sock, "--drain-status"); code != 0 || !strings.HasPrefix(out, "Drain on since") {
		t.Errorf("--drain-status: exit %d, %q", code, out)
	}
	if code, out, _ = runAdm(t, sock, "--undrain"); code != 0 || out != "Drain off: the VIPs are announced, 3 connections\n" {
		t.Errorf("--undrain: exit %d, %q", code, out)
	}
	f.mu.Lock()
	calls := strings.Join(f.calls, " ")
	f.mu.Unlock()
	if calls != "POST GET DELETE" {
		t.Errorf("requests %q, want POST GET DELETE", calls)
	}
}

// --drain --wait prints the count each time it changes and exits 0 when
// the drain is empty; a timeout is one line and exit 1, the drain left on.
func TestDrainWait(t *testing.T) {
	f := &clusterDaemon{conns: []int{3, 3, 2, 2, 2, 1, 0}}
	code, out, errOut := runAdm(t, f.start(t), "--drain", "--wait")
	want := "Drain on since 2026-12-06T09:26:48Z (3m12s): 3 connections left\nWithdrawn: 172.25.254.100\n" +
		"2 connections left\n1 connection left\nno connection left: tapvs can be stopped\n"
	if code != 0 || errOut != "" || out != want {
		t.Errorf("exit %d, stdout\n%s\nwant\n%s\nstderr %q", code, out, want, errOut)
	}
	if f.gets != 6 {
		t.Errorf("%d polls, want 6 (until the first empty answer)", f.gets)
	}

	f = &clusterDaemon{conns: []int{0}}
	code, out, _ = runAdm(t, f.start(t), "--drain", "--wait")
	if code != 0 || out != "Drain on since 2026-12-06T09:26:48Z (3m12s): no connection left: tapvs can be stopped\nWithdrawn: 172.25.254.100\n" || f.gets != 0 {
		t.Errorf("empty at once: exit %d, %d polls, stdout %q", code, f.gets, out)
	}

	f = &clusterDaemon{conns: []int{5, 4}}
	start := time.Now()
	code, out, errOut = runAdm(t, f.start(t), "--drain", "--wait", "--timeout", "100ms")
	if code != 1 || errOut != "drain: 4 connections left after 100ms (--timeout); the VIPs stay withdrawn\n" ||
		!strings.HasSuffix(out, "4 connections left\n") || strings.Count(out, "4 connections left") != 1 {
		t.Errorf("timeout: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Errorf("gave up after %s, before the 100ms of --timeout", time.Since(start))
	}
	if !f.draining {
		t.Error("a timed out wait ended the drain")
	}
}

// A drain ended by another tapvsadm while one waits: the wait stops, one
// line, exit 1.
func TestDrainWaitEndedElsewhere(t *testing.T) {
	f := &clusterDaemon{conns: []int{5}}
	sock := f.start(t)
	done := make(chan struct{})
	var code int
	var errOut string
	go func() {
		defer close(done)
		code, _, errOut = runAdm(t, sock, "--drain", "--wait", "--timeout", "1m")
	}()
	for i := 0; ; i++ {
		f.mu.Lock()
		gets := f.gets
		f.mu.Unlock()
		if gets > 0 {
			break
		}
		if i > 2000 {
			t.Fatal("the wait never polled")
		}
		time.Sleep(time.Millisecond)
	}
	var out, e bytes.Buffer
	if run([]string{"--undrain", "--socket", sock}, nil, &out, &e) != 0 {
		t.Fatalf("--undrain: %s", e.String())
	}
	<-done
	if code != 1 || errOut != "drain: ended by someone else while waiting (5 connections)\n" {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}
