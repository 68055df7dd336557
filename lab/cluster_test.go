package lab

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/config"
)

// readmeBlocks returns the code blocks of README's cluster section, in order.
func readmeBlocks(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "## A cluster:")
	if !ok {
		t.Fatal("README.md has no cluster section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	var blocks []string
	for {
		_, rest, ok := strings.Cut(sec, "```")
		if !ok {
			return blocks
		}
		_, rest, _ = strings.Cut(rest, "\n") // the fence's language
		block, after, ok := strings.Cut(rest, "```")
		if !ok {
			t.Fatal("a code block of the cluster section does not end")
		}
		blocks = append(blocks, block)
		sec = after
	}
}

// The router configurations README gives users are the ones the cluster
// lab runs (and TestClusterFRR and TestClusterBIRD prove): every line of
// each snippet is a line of the lab's configuration. The bgp: and
// handoff: sections README shows are instance 1's of a three-instance lab,
// which tapvs accepts in the lab's instance configuration.
func TestREADMEClusterSnippets(t *testing.T) {
	blocks := readmeBlocks(t)
	if len(blocks) != 3 {
		t.Fatalf("README's cluster section has %d code blocks, want 3 (tapvs's bgp:, FRR, BIRD)", len(blocks))
	}
	c := &Cluster{Prefix: "x", Instances: 3, Router: RouterFRR, Dir: "/nonexistent"}
	ours := ClusterBGP(1, 3) + ClusterHandoff(1, 3)
	if !strings.Contains(c.config(1, ""), ours) {
		t.Fatal("the lab's instance configuration has no bgp: and handoff: sections together")
	}
	cfg := strings.Replace(c.config(1, ""), ours, blocks[0], 1)
	got, err := config.Parse(cfg)
	if err != nil {
		t.Fatalf("README's bgp: section in the lab's instance configuration: %v", err)
	}
	if got.BGP == nil || len(got.BGP.Peers) != 1 || got.BGP.Peers[0].Address != routerAddr(1) || got.BGP.RouterID != instanceAddr(1) {
		t.Fatalf("README's bgp: section is not instance 1's of the lab: %+v", got.BGP)
	}
	inst1, err := config.Parse(c.config(1, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.BGP.BackupLIPs, inst1.BGP.BackupLIPs) {
		t.Fatalf("README's backup_lips %+v are not instance 1's of the lab: %+v", got.BGP.BackupLIPs, inst1.BGP.BackupLIPs)
	}
	if got.Handoff == nil || got.Handoff.Listen != netip.AddrPortFrom(instanceAddr(1), ClusterHandoffPort) || len(got.Handoff.Peers) != 2 {
		t.Fatalf("README's handoff: section is not instance 1's of the lab: %+v", got.Handoff)
	}
	for i, conf := range map[int]string{1: FRRConfig(clusterRouterID), 2: BIRDConfig(clusterRouterID, 1)} {
		lines := map[string]bool{}
		for _, l := range strings.Split(conf, "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		for _, l := range strings.Split(blocks[i], "\n") {
			if l = strings.TrimSpace(l); l != "" && !lines[l] {
				t.Errorf("README's cluster block %d has %q, which the lab's configuration does not:\n%s", i+1, l, conf)
			}
		}
	}
}

// InstanceOf reads an instance's number from its address or its LIPs and
// from nothing else.
func TestInstanceOf(t *testing.T) {
	for a, want := range map[string]int{
		"10.1.3.2": 3, "172.26.2.10": 2, "172.26.7.11": 7,
		"10.1.3.1": 0, "10.0.0.2": 0, "172.25.254.100": 0, "fd00::1": 0,
	} {
		if got := InstanceOf(netip.MustParseAddr(a)); got != want {
			t.Errorf("InstanceOf(%s) = %d, want %d", a, got, want)
		}
	}
	for n := 1; n <= MaxClusterInstances; n++ {
		if InstanceOf(instanceAddr(n)) != n || InstanceOf(ClusterLIP(n, 0)) != n || InstanceOf(ClusterLIP(n, 1)) != n {
			t.Errorf("instance %d's addresses do not name it", n)
		}
	}
}

// A cluster's settings are checked before anything is built.
func TestClusterCheck(t *testing.T) {
	for _, c := range []Cluster{
		{Prefix: "", Instances: 3, TapvsBin: "x"},
		{Prefix: "twelve-chars", Instances: 3, TapvsBin: "x"},
		{Prefix: "a/b", Instances: 3, TapvsBin: "x"},
		{Prefix: "p", Instances: 0, TapvsBin: "x"},
		{Prefix: "p", Instances: MaxClusterInstances + 1, TapvsBin: "x"},
		{Prefix: "p", Instances: 3},
		{Prefix: "p", Instances: 3, TapvsBin: "x", Router: "quagga"},
	} {
		if err := c.check(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
	c := Cluster{Prefix: "elevenchars", Instances: MaxClusterInstances, TapvsBin: "x"}
	if err := c.check(); err != nil || c.Router != RouterFRR {
		t.Errorf("%+v: %v, want accepted with FRR", c, err)
	}
}

// A Sync cluster's instance configuration is valid: its sync: section
// names the instance and its two peers by their addresses on the router's
// links, and it has the bulk servers behind SYNPROXY too.
func TestClusterSyncConfig(t *testing.T) {
	c := &Cluster{Prefix: "x", Instances: 3, Router: RouterFRR, Dir: "/nonexistent", Sync: true}
	got, err := config.Parse(c.config(2, ""))
	if err != nil {
		t.Fatal(err)
	}
	s := got.Sync
	if s == nil || s.ID != 2 || s.Listen != netip.AddrPortFrom(instanceAddr(2), ClusterSyncPort) || len(s.Peers) != 2 ||
		s.Peers[0].ID != 1 || s.Peers[1].Addr != netip.AddrPortFrom(instanceAddr(3), ClusterSyncPort) {
		t.Fatalf("sync %+v", s)
	}
	i := slices.IndexFunc(got.Services, func(s config.Service) bool { return s.Port == ClusterSynproxyBulkPort })
	if i < 0 || !got.Services[i].Synproxy {
		t.Fatalf("no SYNPROXY bulk service: %+v", got.Services)
	}
	if plain, _ := config.Parse((&Cluster{Prefix: "x", Instances: 3, Router: RouterFRR, Dir: "/nonexistent"}).config(2, "")); plain.Sync != nil || len(plain.Services) != len(got.Services)-1 {
		t.Fatalf("a cluster without Sync has sync %+v, %d services", plain.Sync, len(plain.Services))
	}
}
