package daemon

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/internal/logbuf"
	"github.com/tapvs/tapvs/nat"
)

// count is how many times s is in the log so far.
func count(l *logbuf.Buffer, s string) int { return strings.Count(l.String(), s) }

// replace writes text to a new file and renames it over path, as editors
// and config managers save.
func replace(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(text), 0o600); err != nil {
		t.Fatalf("writing %s.tmp: %v", path, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatalf("renaming over %s: %v", path, err)
	}
}

// The running daemon reloads its file on SIGHUP and when the file is
// replaced (tapvs run's wiring, ReloadOn); an edit that does not validate
// is refused and the running configuration stays.
func TestReloadOnSIGHUPAndFileChange(t *testing.T) {
	inNewNetns(t)
	cfg, err := config.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	d, err := Start(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	vip := cfg.Services[0].VIP
	weight := func() int {
		s, err := d.Balancer.Service(nat.TCP, vip, 80)
		if err != nil || len(s.Dests()) != 1 {
			return -1
		}
		return s.Dests()[0].Weight()
	}
	if w := weight(); w != 1 {
		t.Fatalf("weight at start %d, want 1", w)
	}

	// The file changes before anything watches it: only the signal can
	// make the daemon read it.
	path := filepath.Join(t.TempDir(), "tapvs.yaml")
	withWeight := func(w string) string {
		return strings.Replace(base, "{address: 172.25.84.20, port: 8080}", "{address: 172.25.84.20, port: 8080, weight: "+w+"}", 1)
	}
	if err := os.WriteFile(path, []byte(withWeight("4")), 0o600); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.ReloadOn(ctx, hup, path); close(done) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("ReloadOn did not return when its context ended")
		}
	}()
	if w := weight(); w != 1 {
		t.Fatalf("weight %d before any signal, want still 1", w)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP to self: %v", err)
	}
	if !eventually(5*time.Second, func() bool { return weight() == 4 }) {
		t.Fatalf("after SIGHUP the weight is %d, want the file's 4", weight())
	}

	// An editor's save: a new file renamed over the old one.
	replace(t, path, withWeight("7"))
	if !eventually(5*time.Second, func() bool { return weight() == 7 }) {
		t.Fatalf("after the file was replaced the weight is %d, want 7", weight())
	}

	// A save that does not validate is refused whole: the weight stays 7
	// and the running configuration is the one last applied.
	refused := count(logs, "reload refused")
	replace(t, path, strings.Replace(withWeight("3"), "port: 80\n", "port: 70000\n", 1))
	if !eventually(5*time.Second, func() bool { return count(logs, "reload refused") > refused }) {
		t.Fatal("a refused edit was not reported as refused")
	}
	if w := weight(); w != 7 {
		t.Fatalf("a refused edit changed the weight to %d", w)
	}
	if got := d.Config().Services[0].RealServers[0].Weight; got != 7 {
		t.Fatalf("a refused edit changed the running configuration: weight %d", got)
	}
	if !strings.Contains(logs.String(), "services[0].port: 70000 is not a port") {
		t.Fatalf("the refusal does not name the field:\n%s", logs)
	}
}

// A reload that changes what takes a restart (limits, an interface) warns,
// naming each field, and keeps the running values as the ones the next
// reload compares against: every reload warns until the restart, and the
// running configuration says what runs.
func TestReloadWarnsUntilRestart(t *testing.T) {
	inNewNetns(t)
	cfg, err := config.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	d, err := Start(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	path := filepath.Join(t.TempDir(), "tapvs.yaml")
	next := strings.Replace(base, "queues: 2}\n  server", "queues: 2, mtu: 1400}\n  server", 1) + "limits: {max_connections: 4096}\n"
	if err := os.WriteFile(path, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	const warning = `fields="interfaces.client, limits.max_connections"`
	for i := 1; i <= 3; i++ {
		if err := d.Reload(path); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if n := count(logs, warning); n != i {
			t.Fatalf("after reload %d the restart warning was logged %d times, want %d:\n%s", i, n, i, logs)
		}
	}
	if got := d.Config(); got.MaxConns != cfg.MaxConns || got.Client.MTU != cfg.Client.MTU {
		t.Fatalf("the running configuration says max_connections %d, client mtu %d: want the values running, %d and %d",
			got.MaxConns, got.Client.MTU, cfg.MaxConns, cfg.Client.MTU)
	}
	if d.Balancer.MaxConns() != cfg.MaxConns {
		t.Fatalf("the table's limit changed to %d", d.Balancer.MaxConns())
	}
}
