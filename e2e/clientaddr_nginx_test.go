package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// nginxProxyServices are four PROXY protocol services to nginx on the first
// real server: v1 and v2, each without and with SYNPROXY.
const nginxProxyServices = `
  - {name: v1, vip: 172.25.254.100, port: 8181, scheduler: rr, client_address: proxy-v1, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 8181}]}
  - {name: v2, vip: 172.25.254.100, port: 8182, scheduler: rr, client_address: proxy-v2, local_addresses: [172.25.84.10], real_servers: [{address: 10.20.1.2, port: 8182}]}
  - {name: v1-sp, vip: 172.25.254.100, port: 8183, scheduler: rr, synproxy: true, client_address: proxy-v1, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 8183}]}
  - {name: v2-sp, vip: 172.25.254.100, port: 8184, scheduler: rr, synproxy: true, client_address: proxy-v2, local_addresses: [172.25.84.11], real_servers: [{address: 10.20.1.2, port: 8184}]}
`

// nginx behind tapvs, with `listen ... proxy_protocol`, logs the client's
// own address and port ($proxy_protocol_addr:$proxy_protocol_port) for
// PROXY v1 and v2, with and without SYNPROXY, while the connection itself
// comes from a LIP ($remote_addr).
func TestProxyProtocolNginx(t *testing.T) {
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatalf("nginx is missing (apt-get install nginx-light; bash .ci/deps installs it): %v", err)
	}
	e := setup(t, nginxProxyServices, "")
	dir := t.TempDir()
	logPath := startNginx(t, e.top.RS[0], dir, lab.RS1, []int{8181, 8182, 8183, 8184})

	var want []string // "port client-ip:client-port" for every request, in order
	for _, port := range []int{8181, 8182, 8183, 8184} {
		for range 3 {
			local := getFrom(t, e, netip.AddrPortFrom(lab.VIP, uint16(port)))
			want = append(want, fmt.Sprintf("%d %s", port, local))
		}
	}
	lines := waitLines(t, logPath, len(want), 10*time.Second)
	for i, l := range lines {
		// The log line: server_port proxy_protocol_addr:proxy_protocol_port remote_addr
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("log line %q", l)
		}
		if got := f[0] + " " + f[1]; got != want[i] {
			t.Errorf("request %d: nginx logged %q, want %q (the client's own address and port)", i, got, want[i])
		}
		if f[2] != lab.LIP1.String() && f[2] != lab.LIP2.String() {
			t.Errorf("request %d: the connection came from %s, not a LIP", i, f[2])
		}
	}
}

// getFrom makes one HTTP request from the client's namespace to addr over a
// connection of its own and returns that connection's local address.
func getFrom(t testing.TB, e *env, addr netip.AddrPort) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := lab.Dial(ctx, e.top.Client, "tcp4", addr.String())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	local := c.LocalAddr().String()
	used := false
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, fmt.Errorf("a second connection")
			}
			used = true
			return c, nil
		}}}
	resp, err := hc.Get("http://" + addr.String() + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", addr, resp.Status)
	}
	return local
}

// startNginx runs nginx in namespace ns, listening on addr (IPv4 or IPv6)
// at each port with proxy_protocol, and returns its access log's path. nginx stops when
// the test ends.
func startNginx(t testing.TB, ns, dir string, addr netip.Addr, ports []int) string {
	t.Helper()
	logPath, _ := runNginx(t, ns, dir, addr, ports, " proxy_protocol")
	return logPath
}

// runNginx runs nginx in namespace ns, listening on addr at each port
// with listen's parameters, and returns its access log's path and a stop
// that ends it (at the latest when the test ends).
func runNginx(t testing.TB, ns, dir string, addr netip.Addr, ports []int, listen string) (string, func()) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o777); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "access.log")
	var servers strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&servers, "  server { listen %s%s; location / { return 200 \"ok\\n\"; } }\n", netip.AddrPortFrom(addr, uint16(p)), listen)
	}
	conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 1024; }
http {
  log_format pp '$server_port $proxy_protocol_addr:$proxy_protocol_port $remote_addr';
  access_log %[2]s pp;
  client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp; uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
%[3]s}
`, dir, logPath, servers.String())
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "nginx", "-p", dir, "-c", confPath, "-g", "daemon off;")
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output: %s\nerror.log: %s", out, errLog)
		}
	})
	// Ready when every port accepts a connection in its namespace.
	for _, p := range ports {
		var err error
		if !eventually(10*time.Second, func() bool {
			err = lab.InNetns(ns, func() error {
				c, err := net.DialTimeout("tcp", netip.AddrPortFrom(addr, uint16(p)).String(), time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			return err == nil
		}) {
			t.Fatalf("nginx never listened on %s:%d: %v (%s)", addr, p, err, out)
		}
	}
	return logPath, stop
}

// waitLines waits until the file has n lines (nginx writes a request's log
// line after answering it) and returns them.
func waitLines(t testing.TB, path string, n int, within time.Duration) []string {
	t.Helper()
	var b []byte
	var lines []string
	if !eventually(within, func() bool {
		b, _ = os.ReadFile(path)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(b) > 0 && len(lines) >= n
	}) {
		t.Fatalf("%s has %d of %d lines:\n%s", path, len(lines), n, b)
	}
	return lines
}
