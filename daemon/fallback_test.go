package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/tun"
)

// trackedDev records whether the daemon closed a queue it was given.
type trackedDev struct {
	tun.Device
	closed atomic.Bool
}

func (d *trackedDev) Close() error {
	d.closed.Store(true)
	return d.Device.Close()
}

// opened is one call of openTAP as the test saw it.
type opened struct {
	cfg  tun.TAPConfig
	devs []*trackedDev
}

// When the kernel refuses offload on the server side after the client side
// was opened with it, Start closes the client's offload TAP and opens both
// sides plain: a frame leaves with the virtio-net header it came with, so a
// mixed pair would corrupt every frame crossing it.
func TestOffloadRefusedOnOneSideFallsBackToPlainOnBoth(t *testing.T) {
	inNewNetns(t)
	cfg, err := config.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Offload {
		t.Fatal("the base configuration must ask for offload (the default) for the fallback to be tested")
	}
	var mu sync.Mutex
	var calls []opened
	real := openTAP
	t.Cleanup(func() { openTAP = real })
	openTAP = func(c tun.TAPConfig) ([]tun.Device, error) {
		if c.Name == "tvd-s" && c.Offload {
			mu.Lock()
			calls = append(calls, opened{cfg: c})
			mu.Unlock()
			return nil, fmt.Errorf("tap %s: %w: test says no", c.Name, tun.ErrOffloadRefused)
		}
		devs, err := real(c)
		if err != nil {
			return nil, err
		}
		o := opened{cfg: c}
		out := make([]tun.Device, len(devs))
		for i, d := range devs {
			td := &trackedDev{Device: d}
			o.devs = append(o.devs, td)
			out[i] = td
		}
		mu.Lock()
		calls = append(calls, o)
		mu.Unlock()
		return out, nil
	}

	var logs bytes.Buffer
	d, err := Start(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Start with offload refused on the server side: %v (the fallback to plain TAPs should have taken over)", err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()

	mu.Lock()
	got := append([]opened(nil), calls...)
	mu.Unlock()
	// Client with offload, server refused, then both plain, in that order.
	want := []struct {
		name    string
		offload bool
	}{{"tvd-c", true}, {"tvd-s", true}, {"tvd-c", false}, {"tvd-s", false}}
	if len(got) != len(want) {
		t.Fatalf("%d TAP opens, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].cfg.Name != w.name || got[i].cfg.Offload != w.offload {
			t.Fatalf("open %d: %s offload=%v, want %s offload=%v", i, got[i].cfg.Name, got[i].cfg.Offload, w.name, w.offload)
		}
	}
	// The client's offload TAP was given back, every queue of it.
	first := got[0].devs
	if len(first) != 2 || first[0].VNetHdrLen() == 0 {
		t.Fatalf("the first client open: %d queues, virtio-net header %d; want 2 queues with offload", len(first), first[0].VNetHdrLen())
	}
	for i, dev := range first {
		if !dev.closed.Load() {
			t.Errorf("queue %d of the client's offload TAP was left open", i)
		}
	}
	// The stack runs on the plain pair, none of it closed.
	for _, c := range got[2:] {
		if len(c.devs) != 2 {
			t.Fatalf("%s plain: %d queues, want 2", c.cfg.Name, len(c.devs))
		}
		for i, dev := range c.devs {
			if h := dev.VNetHdrLen(); h != 0 || dev.closed.Load() {
				t.Errorf("%s queue %d: virtio-net header %d, closed %v; want a plain open queue", c.cfg.Name, i, h, dev.closed.Load())
			}
		}
	}
	for _, n := range []string{"tvd-c", "tvd-s"} {
		l, err := netlink.LinkByName(n)
		if err != nil || l.Attrs().Flags&1 == 0 { // net.FlagUp
			t.Fatalf("TAP %s after the fallback: %v, up %v", n, err, err == nil && l.Attrs().Flags&1 != 0)
		}
	}
	if svcs := d.Balancer.Services(); len(svcs) != 1 {
		t.Fatalf("%d services after start, want 1", len(svcs))
	}
	if !strings.Contains(logs.String(), "TAP offload refused") || strings.Contains(logs.String(), "TAP offload on") {
		t.Fatalf("the log does not report the fallback (and only it):\n%s", logs.String())
	}

	d.Close()
	closed = true
	gone(t, "tvd-c", "tvd-s")
}

// The TAPs get the noqueue qdisc (tun.SetupLink); a kernel that refuses it
// costs a warning naming the interface, not the start.
func TestQdiscRefusedWarns(t *testing.T) {
	inNewNetns(t)
	cfg, err := config.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	orig := setupLink
	t.Cleanup(func() { setupLink = orig })
	setupLink = func(name string, c tun.LinkConfig) error {
		// The real setup first (tvd-s gets noqueue too): the refusal
		// is the test's, reported after a link that works.
		if err := orig(name, c); err != nil || name != "tvd-s" {
			return err
		}
		return fmt.Errorf("link %s: %w: test says no", name, tun.ErrQdisc)
	}
	var logs bytes.Buffer
	d, err := Start(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Start with the qdisc refused: %v", err)
	}
	defer d.Close()
	if n := strings.Count(logs.String(), "the TAP keeps the kernel's default qdisc"); n != 1 || !strings.Contains(logs.String(), "interface=tvd-s") {
		t.Fatalf("want one warning naming tvd-s, got %d:\n%s", n, logs.String())
	}
	// The side not refused has noqueue, and the refused one is up.
	l, err := netlink.LinkByName("tvd-c")
	if err != nil {
		t.Fatal(err)
	}
	qs, err := netlink.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) == 0 || qs[0].Type() != "noqueue" {
		t.Errorf("tvd-c: qdiscs %v, want noqueue at the root", qs)
	}
	if s, err := netlink.LinkByName("tvd-s"); err != nil || s.Attrs().Flags&1 == 0 { // net.FlagUp
		t.Errorf("tvd-s after its qdisc was refused: %v, up %v", err, err == nil && s.Attrs().Flags&1 != 0)
	}
}
