package daemon

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/tun/tuntest"
)

// inNewNetns runs the rest of the test on a thread in a network namespace
// of its own, so the TAPs it makes touch nothing else; the namespace goes
// when the test ends.
func inNewNetns(t *testing.T) { tuntest.InNewNetns(t) }

const base = `
interfaces:
  client: {name: tvd-c, address: 172.25.254.254/24, queues: 2}
  server: {name: tvd-s, address: 172.25.84.4/24, queues: 2}
services:
  - vip: 172.25.254.100
    port: 80
    local_addresses: [172.25.84.10]
    real_servers: [{address: 172.25.84.20, port: 8080}]
`

func gone(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := netlink.LinkByName(n); err == nil {
			t.Errorf("TAP %s is still there", n)
		}
	}
}

// Start builds the running tapvs from the file: both TAPs, the services,
// the addresses the stack answers for; Reload applies a changed file
// through the same diff; Close removes the TAPs.
func TestStartReloadClose(t *testing.T) {
	inNewNetns(t)
	cfg, err := config.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	for _, n := range []string{"tvd-c", "tvd-s"} {
		l, err := netlink.LinkByName(n)
		if err != nil || l.Attrs().Flags&1 == 0 { // net.FlagUp
			t.Fatalf("TAP %s: %v, up %v", n, err, err == nil && l.Attrs().Flags&1 != 0)
		}
	}
	if svcs := d.Balancer.Services(); len(svcs) != 1 || len(svcs[0].Dests()) != 1 || len(svcs[0].LocalAddrs()) != 1 {
		t.Fatalf("services after start: %d", len(svcs))
	}
	vips, lips := d.Balancer.Addresses()
	if len(vips) != 1 || vips[0].String() != "172.25.254.100" || len(lips) != 1 || lips[0].String() != "172.25.84.10" {
		t.Fatalf("answering for %v and %v", vips, lips)
	}

	// A second service and a second real server.
	path := filepath.Join(t.TempDir(), "tapvs.yaml")
	next := base + `  - vip: 172.25.254.101
    port: 53
    protocol: udp
    local_addresses: [172.25.84.11]
    real_servers: [{address: 172.25.84.21, port: 53}]
`
	next = strings.Replace(next, "real_servers: [{address: 172.25.84.20, port: 8080}]", "real_servers: [{address: 172.25.84.20, port: 8080}, {address: 172.25.84.22, port: 8080, weight: 3}]", 1)
	if err := os.WriteFile(path, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	gen := d.Balancer.Generation()
	if err := d.Reload(path); err != nil {
		t.Fatal(err)
	}
	if svcs := d.Balancer.Services(); len(svcs) != 2 || d.Balancer.Generation() != gen+1 {
		t.Fatalf("after reload: %d services, generation %d -> %d (one publish)", len(svcs), gen, d.Balancer.Generation())
	}
	s, err := d.Balancer.Service(nat.TCP, vips[0], 80)
	if err != nil || len(s.Dests()) != 2 {
		t.Fatalf("the changed service: %v", err)
	}

	// A refused file changes nothing.
	if err := os.WriteFile(path, []byte(strings.Replace(next, "weight: 3", "weight: -3", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(path); err == nil || !strings.Contains(err.Error(), "weight") {
		t.Fatalf("a negative weight: %v", err)
	}
	if d.Balancer.Generation() != gen+1 || len(d.Balancer.Services()) != 2 {
		t.Fatal("a refused reload changed the balancer")
	}

	d.Close()
	closed = true
	gone(t, "tvd-c", "tvd-s")
}

// A start that fails half way leaves no TAP behind: the server side's
// namespace does not exist, after the client side was opened.
func TestStartRefusedLeavesNothing(t *testing.T) {
	inNewNetns(t)
	cfg, err := config.Parse(strings.Replace(base, "{name: tvd-s,", "{name: tvd-s, netns: tapvs-no-such-ns,", 1))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Start(cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		d.Close()
		t.Fatal("started with a side in a namespace that does not exist")
	}
	if !strings.Contains(err.Error(), "tapvs-no-such-ns") {
		t.Fatalf("the error does not name the namespace: %v", err)
	}
	gone(t, "tvd-c", "tvd-s")
}

// apiDaemon starts a daemon from text in a namespace of the test's own and
// returns it with do, which sends one request to its control API's
// handler (the namespace has no loopback up) and returns the status and
// body. The daemon is closed when the test ends.
func apiDaemon(t *testing.T, text string) (*Daemon, func(method, path, body string) (int, string)) {
	t.Helper()
	inNewNetns(t)
	cfg, err := config.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	h := control.NewServer(d.Manager, slog.New(slog.DiscardHandler)).Handler()
	return d, func(method, path, body string) (int, string) {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
		return w.Code, w.Body.String()
	}
}
