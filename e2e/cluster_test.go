package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// needRouter stops a test whose router is not installed (in CI: fails).
func needRouter(t *testing.T, router string) {
	t.Helper()
	bin := map[string]string{lab.RouterFRR: "/usr/lib/frr/bgpd", lab.RouterBIRD: "bird"}[router]
	if bin == "" {
		return
	}
	if _, err := exec.LookPath(bin); err == nil {
		return
	}
	msg := fmt.Sprintf("the cluster test needs %s (apt-get install frr bird2; bash .ci/deps installs them)", bin)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// startCluster builds a cluster lab of n tapvs processes behind router and
// starts it; everything goes when the test ends, whatever its outcome.
func startCluster(t *testing.T, router string, n int) *lab.Cluster {
	t.Helper()
	need(t)
	needRouter(t, router)
	bin := filepath.Join(t.TempDir(), "tapvs")
	if err := prebuilt(bin, "TAPVS_E2E_TAPVS", "../cmd/tapvs"); err != nil {
		t.Fatal(err)
	}
	var rnd [2]byte
	rand.Read(rnd[:])
	prefix := nsPrefix + hex.EncodeToString(rnd[:])
	claim(t, prefix)
	c := &lab.Cluster{Prefix: prefix, Instances: n, Router: router, TapvsBin: bin, Logs: testWriter{t}}
	if err := c.Build(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("router (%s):\n%s", router, c.RouterState())
		}
		if err := c.Destroy(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// spread opens n short HTTP connections from the client to the VIP, each
// from a new source port, and counts them by the instance whose LIP the
// real server saw; a connection that fails is counted under 0.
func spread(t *testing.T, c *lab.Cluster, n int) map[int]int {
	t.Helper()
	hc := lab.HTTPClient(c.Client, 5*time.Second)
	by := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			inst := 0
			if resp, err := hc.Get("http://" + netip.AddrPortFrom(lab.VIP, lab.HTTPPort).String() + "/"); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var name, rs, saw string
				fmt.Sscanf(string(body), "%s %s saw %s", &name, &rs, &saw)
				if src, err := netip.ParseAddrPort(saw); err == nil {
					inst = lab.InstanceOf(src.Addr())
				}
			}
			mu.Lock()
			by[inst]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return by
}

// The lab's data path without BGP: the router's static ECMP route over
// three tapvs processes, each in its own namespace, spreads flows over all
// three, each answering from its own LIPs.
func TestClusterStatic(t *testing.T) {
	c := startCluster(t, lab.RouterStatic, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.WaitNextHops(ctx, lab.VIP, 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	by := spread(t, c, 300)
	t.Logf("300 connections by instance: %v", by)
	if by[0] != 0 {
		t.Fatalf("%d of 300 connections failed", by[0])
	}
	for n := 1; n <= 3; n++ {
		if by[n] < 60 {
			t.Errorf("instance %d carried %d of 300 connections, fewer than 20%%", n, by[n])
		}
	}
}
