package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/internal/logbuf"
	"github.com/tapvs/tapvs/nat"
)

func newManager(t *testing.T) *Manager {
	t.Helper()
	b, err := nat.New(nat.Config{MaxConns: 100, PortMin: 5000, PortMax: 65535, Timeouts: nat.DefaultTimeouts()})
	if err != nil {
		t.Fatal(err)
	}
	return NewManager(b, nil)
}

// serve runs m's API over HTTP for the test and returns a function that
// makes a request and reads the status and body.
func serve(t *testing.T, m *Manager) func(method, path, body string) (int, string) {
	srv := httptest.NewServer(NewServer(m, slog.New(slog.NewTextHandler(io.Discard, nil))).Handler())
	t.Cleanup(srv.Close)
	return func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
}

func TestAPIErrorsAndCodes(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	if c, _ := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80","scheduler":"rr"}`); c != 204 {
		t.Fatalf("add: %d", c)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80"}`, 409, api.CodeServiceExists},
		{"DELETE", "/v1/services/tcp/10.0.0.9:80", "", 404, api.CodeNoService},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:81","shceduler":"rr"}`, 400, api.CodeInvalid},
		{"POST", "/v1/services/tcp/10.0.0.1:80/dests", `{"addr":"10.1.0.1:80","weight":70000}`, 400, api.CodeInvalid},
		{"DELETE", "/v1/services/tcp/10.0.0.1:80/dests/10.1.0.9:80", "", 404, api.CodeNoDest},
		{"POST", "/v1/services", `{"protocol":"sctp","addr":"10.0.0.1:80"}`, 400, api.CodeInvalid},
	} {
		c, body := do(tc.method, tc.path, tc.body)
		if c != tc.status || !strings.Contains(body, `"code":"`+tc.code+`"`) {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, c, body, tc.status, tc.code)
		}
	}
	if svcs := m.Services(); len(svcs) != 1 || len(svcs[0].Dests) != 0 {
		t.Fatalf("refused requests changed the state: %+v", svcs)
	}
	// Profiles are served here, on the owner-only socket (not on the
	// metrics address: see metrics).
	if c, body := do("GET", "/debug/pprof/", ""); c != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/ on the control API: %d", c)
	}
}

// The helper process: connects as another user and reports what happened.
func TestPeerHelper(t *testing.T) {
	sock := os.Getenv("TAPVS_PEER_HELPER_SOCK")
	if sock == "" {
		return
	}
	_, err := api.Dial(sock).Info()
	fmt.Printf("RESULT %v\n", err)
	// The same by hand, to tell which refusal it was: the connect goes
	// through (the file is open to all) and the server closes the
	// connection without a byte of answer (the peer check), rather than
	// the connect being denied (the file's mode).
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Printf("PEER connect refused: %v\n", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, werr := c.Write([]byte("GET /v1/info HTTP/1.0\r\nHost: tapvs\r\n\r\n"))
	n, rerr := c.Read(make([]byte, 512))
	closed := func(err error) bool {
		return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	}
	switch {
	case n == 0 && (closed(werr) || closed(rerr)):
		fmt.Printf("PEER closed by the server unanswered (write: %v, read: %v)\n", werr, rerr)
	default:
		fmt.Printf("PEER answered %d bytes (write: %v, read: %v)\n", n, werr, rerr)
	}
}

func TestSocketIsPrivate(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to connect as another user")
		}
		t.Skip("needs root to connect as another user (with CI=true this fails)")
	}
	dir, err := os.MkdirTemp("", "tapvs-ctl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// uid 65534 must reach the socket through the directory: what refuses
	// it has to be the socket's mode or the peer check, not the path.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("chmod %s: %v", dir, err)
	}
	sock := filepath.Join(dir, "tapvs.sock")
	logs := &logbuf.Buffer{}
	srv := NewServer(newManager(t), slog.New(slog.NewTextHandler(logs, nil)))
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
	if _, err := api.Dial(sock).Info(); err != nil {
		t.Fatalf("root: %v", err)
	}
	self, err := os.ReadFile(os.Args[0]) // Go's build dir is private: run a copy uid 65534 can read
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "helper.test")
	if err := os.WriteFile(helper, self, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func() string {
		cmd := exec.Command(helper, "-test.run=^TestPeerHelper$")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TAPVS_PEER_HELPER_SOCK="+sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper as uid 65534: %v: %s", err, out)
		}
		t.Logf("helper as uid 65534: %s", strings.TrimSpace(string(out)))
		return string(out)
	}
	// Mode 0600 alone keeps uid 65534 out at connect.
	if out := asNobody(); !strings.Contains(out, "PEER connect refused") || !strings.Contains(out, "permission denied") {
		t.Fatalf("uid 65534 was not refused the connect by the socket's mode: %s", out)
	}
	// Open the file to everyone: the peer check must still refuse uid
	// 65534, by closing its connection unanswered, and say so in the log.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatalf("chmod %s: %v", sock, err)
	}
	out := asNobody()
	if !strings.Contains(out, "RESULT ") || strings.Contains(out, "RESULT <nil>") {
		t.Fatalf("a connection from uid 65534 was served: %s", out)
	}
	if !strings.Contains(out, "PEER closed by the server unanswered") {
		t.Fatalf("uid 65534 was not refused by the peer check: %s", out)
	}
	if n := strings.Count(logs.String(), "control API: refused a peer\" uid=65534"); n != 2 {
		t.Fatalf("the log shows %d refusals of uid 65534, want 2 (one per connection):\n%s", n, logs)
	}
	// And a second tapvs may not take the socket over.
	if err := NewServer(newManager(t), slog.New(slog.NewTextHandler(io.Discard, nil))).Listen(sock); err == nil || !strings.Contains(err.Error(), "another tapvs") {
		t.Fatalf("second listener: %v", err)
	}
}

// Issue 9, item 3: the API reads exactly one JSON value, and refuses
// addresses and values the balancer cannot use, each with the reason and
// without changing anything.
func TestAPIRefusesBadInput(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	if c, b := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80"}`); c != 204 {
		t.Fatalf("add: %d %s", c, b)
	}
	if c, b := do("POST", "/v1/services/tcp/10.0.0.1:80/laddrs", `{"addr":"10.0.9.1"}`); c != 204 {
		t.Fatalf("add LIP: %d %s", c, b)
	}
	before := m.Services()
	for _, tc := range []struct{ method, path, body, want string }{
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.2:80"} junk`, "more after the JSON value"},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.2:80"}{"protocol":"tcp","addr":"10.0.0.3:80"}`, "more after the JSON value"},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"0.0.0.0:80"}`, "the unspecified address"},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"255.255.255.255:80"}`, "the broadcast address"},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"224.1.1.1:80"}`, "multicast"},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"127.0.0.1:80"}`, "loopback"},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.9.1:80"}`, "is already a local address"},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.2:80","established_timeout":4294967295}`, "ESTABLISHED timeout"},
		{"POST", "/v1/services/tcp/10.0.0.1:80/dests", `{"addr":"0.0.0.0:80"}`, "the unspecified address"},
		{"POST", "/v1/services/tcp/10.0.0.1:80/dests", `{"addr":"10.1.0.1:0"}`, "port 0"},
		{"POST", "/v1/services/tcp/10.0.0.1:80/dests", `{"addr":"10.0.9.1:80"}`, "is already a local address"},
		{"POST", "/v1/services/tcp/10.0.0.1:80/dests", `{"addr":"10.1.0.1:80","weight":1.5}`, "request body"},
		{"POST", "/v1/services/tcp/10.0.0.1:80/laddrs", `{"addr":"10.0.0.1"}`, "is already a VIP"},
		{"PUT", "/v1/timeouts", `{"tcp":4294967295}`, "is not a timeout"},
		{"POST", "/v1/batch", `{"ops":[{"op":"add-service","service":{"protocol":"tcp","addr":"10.0.0.5:80"}},{"op":"frobnicate"}]}`, `"op":1`},
	} {
		c, body := do(tc.method, tc.path, tc.body)
		if c < 400 || !strings.Contains(body, tc.want) || strings.Count(strings.TrimSpace(body), "\n") != 0 {
			t.Errorf("%s %s %s: %d %s, want one line with %q", tc.method, tc.path, tc.body, c, body, tc.want)
		}
	}
	if after := m.Services(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("refused requests changed the state:\n%+v\n%+v", before, after)
	}
	if tos := m.Timeouts(); tos.TCP != 90 {
		t.Fatalf("timeouts changed: %+v", tos)
	}
}

// A batch is applied whole: every operation, checked against the ones
// before it, and one publish.
func TestBatchAppliesAll(t *testing.T) {
	m := newManager(t)
	w := 3
	svc := ServiceKey{Protocol: nat.TCP, Addr: netip.MustParseAddrPort("10.0.0.1:80")}
	rip := netip.MustParseAddrPort("10.1.0.1:80")
	ops := []Op{
		{Kind: OpAddService, Service: ServiceSpec{ServiceKey: svc, Scheduler: "wrr"}},
		{Kind: OpAddLocalAddr, Service: ServiceSpec{ServiceKey: svc}, LocalAddr: netip.MustParseAddr("10.0.9.1")},
		{Kind: OpAddDest, Service: ServiceSpec{ServiceKey: svc}, Dest: DestSpec{Addr: rip}},
		{Kind: OpEditDest, Service: ServiceSpec{ServiceKey: svc}, Dest: DestSpec{Addr: rip, Weight: &w}},
	}
	if err := m.Batch(ops); err != nil {
		t.Fatal(err)
	}
	s := m.Services()
	if len(s) != 1 || len(s[0].Dests) != 1 || s[0].Dests[0].Weight != 3 || len(s[0].LocalAddrs) != 1 {
		t.Fatalf("%+v", s)
	}
	// The same again: the first operation is refused (it exists), nothing more happens.
	err := m.Batch(append([]Op{{Kind: OpClear}}, ops[0], ops[0]))
	var be *BatchError
	if !errors.As(err, &be) || be.Index != 2 || !errors.Is(err, nat.ErrServiceExists) {
		t.Fatalf("%v", err)
	}
	if s := m.Services(); len(s) != 1 || len(s[0].Dests) != 1 {
		t.Fatalf("a refused batch cleared: %+v", s)
	}
}

// The listings' counters keep the JSON names they had when the API wrote
// nat's own types, so clients written against it read them still.
func TestCounterWireNames(t *testing.T) {
	for _, tc := range []struct{ nat, api any }{
		{nat.Traffic{Conns: 1, InPkts: 2, OutPkts: 3, InBytes: 4, OutBytes: 5}, apiTraffic(nat.Traffic{Conns: 1, InPkts: 2, OutPkts: 3, InBytes: 4, OutBytes: 5})},
		{nat.Rate{CPS: 1, InPPS: 2, OutPPS: 3, InBPS: 4, OutBPS: 5}, apiRate(nat.Rate{CPS: 1, InPPS: 2, OutPPS: 3, InBPS: 4, OutBPS: 5})},
	} {
		was, err := json.Marshal(tc.nat)
		if err != nil {
			t.Fatal(err)
		}
		now, err := json.Marshal(tc.api)
		if err != nil {
			t.Fatal(err)
		}
		if string(was) != string(now) {
			t.Errorf("wire form changed: was %s, now %s", was, now)
		}
	}
}

// control.socket may name a stale socket (a tapvs that died left it): it
// is replaced. Anything else at the path is the operator's: Listen refuses
// it, naming the field, and leaves it as it was.
func TestListenRemovesOnlyAStaleSocket(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	file := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(file, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for name, kind := range map[string]string{"notes.txt": "a regular file", "sub": "a directory", "link": "a symbolic link"} {
		err := NewServer(newManager(t), quiet).Listen(filepath.Join(dir, name))
		if err == nil || !strings.HasPrefix(err.Error(), "control.socket: ") || !strings.Contains(err.Error(), kind) {
			t.Errorf("control.socket at %s: %v, want refused as %s with the field named", kind, err, kind)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("the regular file after Listen: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub")); err != nil {
		t.Fatalf("the directory after Listen: %v", err)
	}

	// A stale socket: bound, its listener gone without removing it.
	sock := filepath.Join(dir, "tapvs.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("the stale socket was not left behind: %v", err)
	}
	srv := NewServer(newManager(t), quiet)
	if err := srv.Listen(sock); err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer srv.Close()
	if _, err := api.Dial(sock).Info(); err != nil {
		t.Fatalf("the new socket: %v", err)
	}
}

// Issue 20, item 5: a service's name is a metrics label. One that is not
// printable UTF-8 (a NUL, a line break) or longer than nat.MaxNameLen is
// refused, naming the field, on add, on edit and in a batch; the state is
// untouched. JSON cannot carry invalid UTF-8: the decoder makes it U+FFFD.
func TestAPIRefusesBadNames(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	if c, b := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80","name":"web"}`); c != 204 {
		t.Fatalf("add: %d %s", c, b)
	}
	before := fmt.Sprint(m.Services())
	long := strings.Repeat("x", nat.MaxNameLen+1)
	huge := strings.Repeat("x", 8<<20)
	for _, tc := range []struct{ method, path, body, want string }{
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.2:80","name":"a\u0000b"}`, `name has the unprintable character U+0000 at byte 1`},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.2:80","name":"a\nb"}`, `name has the unprintable character U+000A at byte 1`},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.2:80","name":"` + long + `"}`, `name is 129 bytes long, more than 128`},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.2:80","name":"` + huge + `"}`, `name is 8388608 bytes long, more than 128`},
		{"PUT", "/v1/services/tcp/10.0.0.1:80", `{"name":"\u001b[31mred"}`, `name has the unprintable character U+001B at byte 0`},
		{"POST", "/v1/batch", `{"ops":[{"op":"edit-service","service":{"protocol":"tcp","addr":"10.0.0.1:80","name":"` + long + `"}}]}`, `name is 129 bytes long`},
	} {
		c, body := do(tc.method, tc.path, tc.body)
		if c != 400 || !strings.Contains(body, tc.want) || strings.Count(strings.TrimSpace(body), "\n") != 0 || len(body) > 1000 {
			if len(body) > 300 {
				body = body[:300] + "..."
			}
			t.Errorf("%s %s: %d %s, want 400 and one short line with %q", tc.method, tc.path, c, body, tc.want)
		}
	}
	if after := fmt.Sprint(m.Services()); after != before {
		t.Fatalf("refused names changed the state:\n%s\n%s", before, after)
	}
	// Printable UTF-8, spaces among it, is a name.
	if c, b := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"name":"web (front) – été"}`); c != 204 || m.Services()[0].Name != "web (front) – été" {
		t.Fatalf("a printable name: %d %s", c, b)
	}
}

// POST /v1/reload is served only where there is a file to reload; its
// answer is the reload's lists, a refusal one line. A change is answered
// with the notes SetNotes gives (200), which the client hands to OnNote;
// with none, 204.
func TestReloadAndNotes(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	if c, b := do("POST", "/v1/reload", ""); c != 404 || !strings.Contains(b, `"code":"`+api.CodeNoConfig+`"`) || !strings.Contains(b, "no configuration file to reload") {
		t.Fatalf("reload without a file: %d %s", c, b)
	}
	m.SetReload(func() (api.Reload, error) {
		return api.Reload{Changes: 1, Reverted: []string{"tcp 10.0.0.1:80 scheduler rr -> wrr"}, Kept: []string{"tcp 10.0.0.2:80"}, Restart: []string{}}, nil
	})
	if c, b := do("POST", "/v1/reload", ""); c != 200 || strings.TrimSpace(b) != `{"changes":1,"reverted":["tcp 10.0.0.1:80 scheduler rr -> wrr"],"kept":["tcp 10.0.0.2:80"],"restart":[]}` {
		t.Fatalf("reload: %d %s", c, b)
	}
	m.SetReload(func() (api.Reload, error) {
		return api.Reload{}, errors.New("services[0].port: 70000 is not a port\nservices[1].vip: \"x\" is not an address")
	})
	if c, b := do("POST", "/v1/reload", ""); c != 400 || strings.Count(strings.TrimSpace(b), "\n") != 0 ||
		!strings.Contains(b, `services[0].port: 70000 is not a port; services[1].vip`) {
		t.Fatalf("a refused reload: %d %s", c, b)
	}
	if c, b := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80"}`); c != 204 || b != "" {
		t.Fatalf("a change with no notes: %d %q", c, b)
	}
	var seen []Op
	m.SetNotes(func(ops []Op) []string {
		seen = ops
		return []string{"tcp 10.0.0.1:80 scheduler rr (file: wlc): kept across reloads unless the file changes this value"}
	})
	if c, b := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"scheduler":"rr"}`); c != 200 || !strings.Contains(b, `"notes":["tcp 10.0.0.1:80 scheduler rr (file: wlc): kept`) {
		t.Fatalf("a change with a note: %d %s", c, b)
	}
	if len(seen) != 1 || seen[0].Kind != OpEditService || seen[0].Service.Scheduler != "rr" {
		t.Fatalf("the notes were asked about %+v", seen)
	}
	// A refused change has no notes: the error is the answer.
	if c, _ := do("PUT", "/v1/services/tcp/10.0.0.9:80", `{"scheduler":"rr"}`); c != 404 {
		t.Fatalf("a refused change: %d", c)
	}
	// The client passes the notes on.
	sock := filepath.Join(t.TempDir(), "tapvs.sock")
	srv := NewServer(m, slog.New(slog.DiscardHandler))
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl := api.Dial(sock)
	var notes []string
	cl.OnNote = func(n string) { notes = append(notes, n) }
	if err := cl.Batch([]api.Op{{Op: "edit-service", Service: &api.ServiceSpec{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "10.0.0.1:80"}, Scheduler: "wrr"}}}); err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "tcp 10.0.0.1:80 scheduler rr (file: wlc): kept") {
		t.Fatalf("OnNote got %q", notes)
	}
}
