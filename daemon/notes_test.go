package daemon

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/nat"
)

// The notes on a change are what a reload of the unchanged file does with
// it (config.Keeps): a batch's notes name each runtime change once, a
// change back to the file's value has none, and --set and -C, which touch
// every service, get one note for the declared ones. A reload of the
// unchanged file then keeps what the notes said it keeps.
func TestNotesAreWhatAReloadDoes(t *testing.T) {
	inNewNetns(t)
	text := strings.ReplaceAll(base, "tvd-", "tvn-") + `  - vip: 172.25.254.101
    port: 53
    protocol: udp
    local_addresses: [172.25.84.11]
    real_servers: [{address: 172.25.84.21, port: 53}]
`
	path := filepath.Join(t.TempDir(), "tapvs.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	change := func(ops ...control.Op) []string {
		t.Helper()
		if err := d.Manager.Batch(ops); err != nil {
			t.Fatal(err)
		}
		return d.notes(ops)
	}
	web := control.ServiceSpec{ServiceKey: control.ServiceKey{Protocol: nat.TCP, Addr: netip.MustParseAddrPort("172.25.254.100:80")}}
	weight := func(w int) control.Op {
		return control.Op{Kind: control.OpEditDest, Service: web, Dest: control.DestSpec{Addr: netip.MustParseAddrPort("172.25.84.20:8080"), Weight: &w}}
	}
	check := func(what string, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s: notes\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	check("a drain, twice in a batch", change(weight(0), weight(0)),
		"tcp 172.25.254.100:80 real server 172.25.84.20:8080 weight 0 (file: weight 1): kept across reloads unless the file changes this value")
	check("back to the file's weight", change(weight(1)))
	upper := func(x uint32) control.Op {
		return control.Op{Kind: control.OpEditDest, Service: web, Dest: control.DestSpec{Addr: netip.MustParseAddrPort("172.25.84.20:8080"), UThreshold: &x}}
	}
	check("-e -x 5", change(upper(5)),
		"tcp 172.25.254.100:80 real server 172.25.84.20:8080 thresholds uthreshold 5 lthreshold 0 (file: uthreshold 0 lthreshold 0): kept across reloads unless the file changes this value")
	check("back to the file's thresholds", change(upper(0)))
	check("--set", change(control.Op{Kind: control.OpSetTimeouts, Timeouts: control.Timeouts{TCP: 100 * time.Second}}),
		"timeouts (tcp 1m40s, tcpfin 7s, udp 5m0s) (file: (tcp 1m30s, tcpfin 7s, udp 5m0s)): kept across reloads unless the file changes this value",
		"the timeouts of 2 services the configuration file declares: kept across reloads unless the file changes them")
	check("-C", change(control.Op{Kind: control.OpClear}),
		"2 services the configuration file declares: deleted, kept so across reloads unless the file changes them")

	if err := d.Reload(path); err != nil {
		t.Fatal(err)
	}
	if n := len(d.Balancer.Services()); n != 0 {
		t.Fatalf("%d services after a reload of the unchanged file, want the -C kept", n)
	}
	if got := d.Balancer.DefaultTimeouts().Established(); got != 100*time.Second {
		t.Fatalf("default tcp timeout %v after a reload of the unchanged file, want the --set 1m40s", got)
	}
}
