package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// nginxServices is one service on port 8088 of two real nginx servers,
// with no health check in the file.
const nginxServices = `
  - name: nginx
    vip: 172.25.254.100
    port: 8088
    scheduler: rr
    local_addresses: [172.25.84.10]
    real_servers:
      - {address: 10.20.1.2, port: 8088}
      - {address: 10.20.2.2, port: 8088}`

// A check set with tapvsadm at run time, on a service the file checks
// not: a real nginx stopped goes down in -Ln within the check's bounds and
// comes back when it starts again; a reload re-applies the file (no check),
// which puts a server the runtime check held out back.
func TestRuntimeCheckWithTapvsadm(t *testing.T) {
	e := setup(t, nginxServices, "")
	var stops [2]func()
	for i, a := range []netip.Addr{lab.RS1, lab.RS2} {
		_, stops[i] = runNginx(t, e.top.RS[i], t.TempDir(), a, []int{8088}, "")
	}
	const svc = "172.25.254.100:8088"
	// weight is rs's weight in -Ln of the service, "-" if not listed.
	weight := func(rs string) string {
		for _, r := range rows(e.must("-Ln", "-t", svc)) {
			if len(r) >= 4 && r[0] == "->" && r[1] == rs {
				return r[3]
			}
		}
		return "-"
	}
	_, errOut, code := e.adm("", "--health", "-t", svc, "--check", "type=http,http_path=/,http_status=200,interval=200ms,timeout=150ms,rise=2,fall=2")
	if code != 0 || !strings.Contains(errOut, "note: ") || !strings.Contains(errOut, "next reload") {
		t.Fatalf("--health --check: exit %d, stderr %q: want 0 and a note that a reload re-applies the file", code, errOut)
	}
	show := e.must("--health", "-t", svc)
	if !strings.HasPrefix(show, "TCP  "+svc+" health runtime --check type=http,interval=200ms,timeout=150ms,rise=2,fall=2,http_path=/,http_status=200\n") {
		t.Fatalf("--health:\n%s", show)
	}
	if save := e.must("-Sn"); !strings.HasSuffix(save, "\n--health -t "+svc+" --check type=http,interval=200ms,timeout=150ms,rise=2,fall=2,http_path=/,http_status=200\n") {
		t.Fatalf("-Sn does not end with the runtime check:\n%s", save)
	}
	if !eventually(2*time.Second, func() bool { return strings.Count(e.must("--health", "-t", svc), " up\n") == 2 }) {
		t.Fatalf("both servers not up under the runtime check:\n%s", e.must("--health", "-t", svc))
	}

	// nginx on rs2 stops: fall (2) x interval + timeout, and an interval
	// of margin, as TestHealthChecksReloadAndMetrics bounds it.
	const bound = 2*200*time.Millisecond + 150*time.Millisecond + 200*time.Millisecond
	start := time.Now()
	stops[1]()
	if !eventually(bound, func() bool { return weight("10.20.2.2:8088") == "0" }) {
		t.Fatalf("rs2 not quiesced within %v of nginx stopping:\n%s", bound, e.must("-Ln", "-t", svc))
	}
	t.Logf("rs2 quiesced %v after nginx stopped", time.Since(start).Round(10*time.Millisecond))
	if w := weight("10.20.1.2:8088"); w != "1" {
		t.Fatalf("rs1's weight %s, want 1", w)
	}
	if s := e.must("--health", "-t", svc); !strings.Contains(s, "10.20.2.2:8088") || !strings.Contains(s, "down: ") {
		t.Fatalf("--health with rs2 down:\n%s", s)
	}

	// A reload re-applies the file: no check, rs2 back with its weight.
	file := filepath.Join(t.TempDir(), "tapvs.yaml")
	if err := os.WriteFile(file, []byte(e.top.Config(nginxServices, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Reload(file); err != nil {
		t.Fatal(err)
	}
	if w := weight("10.20.2.2:8088"); w != "1" {
		t.Fatalf("after reload rs2's weight is %s, want the file's 1:\n%s", w, e.must("-Ln", "-t", svc))
	}
	if s := e.must("--health", "-t", svc); s != "TCP  "+svc+" health none\n" {
		t.Fatalf("--health after reload:\n%s", s)
	}
}
