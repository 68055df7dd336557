package control

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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

func TestAPIErrorsAndCodes(t *testing.T) {
	m := newManager(t)
	srv := httptest.NewServer(NewServer(m, slog.New(slog.NewTextHandler(io.Discard, nil))).Handler())
	defer srv.Close()
	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, _ := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80","scheduler":"rr"}`); c != 204 {
		t.Fatalf("add: %d", c)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80"}`, 409, CodeServiceExists},
		{"DELETE", "/v1/services/tcp/10.0.0.9:80", "", 404, CodeNoService},
		{"POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:81","shceduler":"rr"}`, 400, CodeInvalid},
		{"POST", "/v1/services/tcp/10.0.0.1:80/dests", `{"addr":"10.1.0.1:80","weight":70000}`, 400, CodeInvalid},
		{"DELETE", "/v1/services/tcp/10.0.0.1:80/dests/10.1.0.9:80", "", 404, CodeNoDest},
		{"POST", "/v1/services", `{"protocol":"sctp","addr":"10.0.0.1:80"}`, 400, CodeInvalid},
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
	_, err := Dial(sock).Info()
	fmt.Printf("RESULT %v\n", err)
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
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "tapvs.sock")
	srv := NewServer(newManager(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
	if _, err := Dial(sock).Info(); err != nil {
		t.Fatalf("root: %v", err)
	}
	// Open the file to everyone: the peer check must still refuse uid 65534.
	os.Chmod(sock, 0o666)
	self, err := os.ReadFile(os.Args[0]) // Go's build dir is private: run a copy uid 65534 can read
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "helper.test")
	if err := os.WriteFile(helper, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helper, "-test.run=^TestPeerHelper$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TAPVS_PEER_HELPER_SOCK="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	t.Logf("helper as uid 65534: %s", strings.TrimSpace(string(out)))
	if !strings.Contains(string(out), "RESULT ") || strings.Contains(string(out), "RESULT <nil>") {
		t.Fatalf("a connection from uid 65534 was served: %s", out)
	}
	// And a second tapvs may not take the socket over.
	if err := NewServer(newManager(t), slog.New(slog.NewTextHandler(io.Discard, nil))).Listen(sock); err == nil || !strings.Contains(err.Error(), "another tapvs") {
		t.Fatalf("second listener: %v", err)
	}
}
