package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/nat"
)

// withThresholds is configA with 10.20.1.2:80's keepalived keys set to
// keys ("uthreshold: 2, lthreshold: 1").
func withThresholds(keys string) string {
	return strings.Replace(configA, "{address: 10.20.1.2, port: 80, weight: 1}", "{address: 10.20.1.2, port: 80, weight: 1, "+keys+"}", 1)
}

// thresholdsOf is a running real server's thresholds.
func thresholdsOf(t *testing.T, bal *nat.Balancer, rs string) nat.Thresholds {
	t.Helper()
	s, err := bal.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(rs)
	d := s.Dest(ap.Addr(), ap.Port())
	if d == nil {
		t.Fatalf("no real server %s", rs)
	}
	return d.Thresholds()
}

// A real server's uthreshold and lthreshold (keepalived's names) are read
// in IPVS's range and order, refused naming the key; a start applies them,
// a reload applies what the file changed, and a runtime change the file
// did not change is kept and named, as a weight's is.
func TestRealServerThresholds(t *testing.T) {
	c := parse(t, withThresholds("uthreshold: 100, lthreshold: 50"))
	if got := c.Services[0].RealServers[0].Thresholds; got != (nat.Thresholds{Upper: 100, Lower: 50}) {
		t.Fatalf("read %+v", got)
	}
	for keys, want := range map[string]string{
		"uthreshold: 2, lthreshold: 3": "services[0].real_servers[0].lthreshold: 3 is above uthreshold 2, which IPVS refuses (uthreshold 0: no limit)",
		"lthreshold: 1":                "services[0].real_servers[0].lthreshold: 1 is above uthreshold 0, which IPVS refuses (uthreshold 0: no limit)",
		"uthreshold: -1":               "services[0].real_servers[0].uthreshold: -1 is out of range 0-2147483647",
		"lthreshold: 2147483648":       "services[0].real_servers[0].lthreshold: 2147483648 is out of range 0-2147483647",
	} {
		if _, err := Parse(withThresholds(keys)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", keys, err, want)
		}
	}

	bal := running(t, c)
	if got := thresholdsOf(t, bal, "10.20.1.2:80"); got != (nat.Thresholds{Upper: 100, Lower: 50}) {
		t.Fatalf("started with %+v", got)
	}
	if got := thresholdsOf(t, bal, "10.20.2.2:80"); got != (nat.Thresholds{}) {
		t.Fatalf("a server without the keys has %+v", got)
	}
	reload := func(prev, next *Config) Drift {
		t.Helper()
		var d Drift
		if err := bal.Update(func(tx *nat.Tx) (err error) { d, err = next.Reconcile(tx, prev, nil); return err }); err != nil {
			t.Fatal(err)
		}
		return d
	}
	// The file changes them: applied.
	b := parse(t, withThresholds("uthreshold: 2"))
	if d := reload(c, b); len(d.Kept)+len(d.Reverted) != 0 {
		t.Fatalf("reload named %+v", d)
	}
	if got := thresholdsOf(t, bal, "10.20.1.2:80"); got != (nat.Thresholds{Upper: 2}) {
		t.Fatalf("reloaded to %+v", got)
	}
	// tapvsadm -e -x 9: kept by a reload of the same file, and named.
	if err := bal.Update(func(tx *nat.Tx) error {
		s, err := tx.Service(nat.TCP, netip.MustParseAddr("172.25.254.100"), 80)
		if err != nil {
			return err
		}
		return tx.SetThresholds(s, netip.MustParseAddr("10.20.1.2"), 80, nat.Thresholds{Upper: 9})
	}); err != nil {
		t.Fatal(err)
	}
	d := reload(b, b)
	want := "tcp 172.25.254.100:80 real server 10.20.1.2:80 thresholds uthreshold 9 lthreshold 0 (file: uthreshold 2 lthreshold 0)"
	if !slices.Contains(Texts(d.Kept), want) || thresholdsOf(t, bal, "10.20.1.2:80") != (nat.Thresholds{Upper: 9}) {
		t.Fatalf("kept %q, running %+v; want %q kept", Texts(d.Kept), thresholdsOf(t, bal, "10.20.1.2:80"), want)
	}
	// The file changes them again: the runtime change is overridden, named.
	d = reload(b, parse(t, withThresholds("uthreshold: 4, lthreshold: 4")))
	want = "tcp 172.25.254.100:80 real server 10.20.1.2:80 thresholds uthreshold 9 lthreshold 0 -> uthreshold 4 lthreshold 4"
	if !slices.Contains(Texts(d.Reverted), want) || thresholdsOf(t, bal, "10.20.1.2:80") != (nat.Thresholds{Upper: 4, Lower: 4}) {
		t.Fatalf("reverted %q, running %+v; want %q", Texts(d.Reverted), thresholdsOf(t, bal, "10.20.1.2:80"), want)
	}
}
