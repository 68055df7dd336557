package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tapvs/tapvs/control/api"
)

// IPv6 is written as ipvsadm writes it: [2001:db8::1]:80 with a port, a
// bare address without one.
func TestParseIPv6(t *testing.T) {
	cases := []struct {
		args string
		want command
	}{
		{"-A -t [2001:db8::1]:80 -s wrr", command{op: "add-service", proto: "tcp", service: "[2001:db8::1]:80", sched: "wrr"}},
		{"-A -t [2001:DB8:0::1]:http", command{op: "add-service", proto: "tcp", service: "[2001:db8::1]:80"}},
		{"-A -t[2001:db8::1]:80", command{op: "add-service", proto: "tcp", service: "[2001:db8::1]:80"}},
		{"--add-service --udp-service=[2001:db8::53]:53", command{op: "add-service", proto: "udp", service: "[2001:db8::53]:53"}},
		{"-L -t 2001:db8::1", command{op: "list", proto: "tcp", service: "[2001:db8::1]:0"}},
		{"-a -t [2001:db8::1]:80 -r [fd00:20:1::2]:8080 -b", command{op: "add-server", proto: "tcp", service: "[2001:db8::1]:80", real: "[fd00:20:1::2]:8080", forward: "fullnat"}},
		{"-a -t [2001:db8::1]:80 -r fd00:20:1::2", command{op: "add-server", proto: "tcp", service: "[2001:db8::1]:80", real: "[fd00:20:1::2]:0"}},
		{"-P -t [2001:db8::1]:80 -z fd00:25:84::10", command{op: "add-laddr", proto: "tcp", service: "[2001:db8::1]:80", laddr: "fd00:25:84::10"}},
		{"-Q -t [2001:db8::1]:80 -z [fd00:25:84::10]:0", command{op: "del-laddr", proto: "tcp", service: "[2001:db8::1]:80", laddr: "fd00:25:84::10"}},
		{"-G -t [2001:db8::1]:80", command{op: "get-laddr", proto: "tcp", service: "[2001:db8::1]:80"}},
	}
	for _, c := range cases {
		got, err := parse(strings.Fields(c.args))
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if *got != c.want {
			t.Errorf("%q:\n got %+v\nwant %+v", c.args, *got, c.want)
		}
	}
	// A real server without a port takes the service's, in either family.
	c, err := parse(strings.Fields("-a -t [2001:db8::1]:80 -r fd00:20:1::2"))
	if err != nil {
		t.Fatal(err)
	}
	if op, ok, err := opOf(c); !ok || err != nil || op.Dest.Addr != "[fd00:20:1::2]:80" {
		t.Fatalf("%+v %v %v, want the real server [fd00:20:1::2]:80", op.Dest, ok, err)
	}
	for args, want := range map[string]string{
		"-A -t [2001:db8::1]":                   "Illegal address or port: [2001:db8::1]",
		"-A -t [2001:db8::1]80":                 "Illegal address or port",
		"-A -t [fe80::1%eth0]:80":               "Illegal address or port: [fe80::1%eth0]:80",
		"-A -t [2001:db8::1]:70000":             "Illegal address or port",
		"-a -t [2001:db8::1]:80 -r [::1":        "Illegal address or port",
		"-P -t [2001:db8::1]:80 -z [fd00::10]":  "Illegal local address: [fd00::10]",
		"-P -t [2001:db8::1]:80 -z fd00::10%ts": "Illegal local address: fd00::10%ts",
	} {
		if _, err := parse(strings.Fields(args)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", args, err, want)
		}
	}
}

// fakeDaemon answers the control API's listings with svcs and conns on a
// unix socket, and records the batches it is sent.
func fakeDaemon(t *testing.T, svcs []api.Service, conns []api.Conn) (sock string, batches func() []api.Batch) {
	t.Helper()
	sock = t.TempDir() + "/tapvs.sock"
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []api.Batch
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(v); err != nil {
			t.Errorf("fake daemon: %v", err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, r *http.Request) { reply(w, api.Info{Version: "1.2.1", Size: 4096}) })
	// svcs is the order they were added in (--nosort's); the sorted list
	// is reversed here, so that a listing shows ipvsadm's order only if
	// tapvsadm sorts it.
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("order") == "added" {
			reply(w, svcs)
			return
		}
		rev := slices.Clone(svcs)
		slices.Reverse(rev)
		reply(w, rev)
	})
	mux.HandleFunc("GET /v1/timeouts", func(w http.ResponseWriter, r *http.Request) { reply(w, api.Timeouts{TCP: 900, TCPFin: 120, UDP: 300}) })
	mux.HandleFunc("GET /v1/conns", func(w http.ResponseWriter, r *http.Request) { reply(w, conns) })
	mux.HandleFunc("GET /v1/capture", func(w http.ResponseWriter, r *http.Request) {
		// The service named in the query, as the pcap's content.
		if _, err := io.WriteString(w, r.URL.Query().Get("proto")+" "+r.URL.Query().Get("addr")); err != nil {
			t.Errorf("fake daemon: capture: %v", err)
		}
	})
	mux.HandleFunc("POST /v1/batch", func(w http.ResponseWriter, r *http.Request) {
		var b api.Batch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			t.Errorf("fake daemon: batch: %v", err)
		}
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	fakeHealthRoutes(mux, &mu)
	fakeFaultRoutes(mux, &mu)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return sock, func() []api.Batch {
		mu.Lock()
		defer mu.Unlock()
		return append([]api.Batch(nil), got...)
	}
}

// tapvsadm runs one command line against sock; stdin feeds -R.
func tapvsadm(t *testing.T, sock, stdin string, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(append(args, "--socket", sock), strings.NewReader(stdin), &out, &errOut); code != 0 {
		t.Fatalf("tapvsadm %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	return out.String()
}

var svcs6 = []api.Service{
	{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "[2001:db8::1]:80"}, Scheduler: "wrr", Synproxy: true,
		Dests: []api.Dest{
			{Addr: "[fd00:20:1::2]:80", Forward: "FullNat", Weight: 1, ActiveConn: 3, InActConn: 12},
			{Addr: "[fd00:20:2:ffff:ffff:ffff:ffff:2]:65535", Forward: "FullNat", Weight: 0},
		},
		LocalAddrs: []api.LocalAddr{{Addr: "fd00:25:84::10", Conns: 7, Conflicts: 3, Exhausted: 2}, {Addr: "fd00:25:84::11"}}},
	{ServiceKey: api.ServiceKey{Protocol: "udp", Addr: "[2001:db8::53]:53"}, Scheduler: "rr", ClientAddress: "proxy-v2",
		Dests: []api.Dest{{Addr: "[fd00:20:1::53]:53", Forward: "FullNat", Weight: 2}}, LocalAddrs: []api.LocalAddr{{Addr: "fd00:25:84::12"}}},
	{ServiceKey: api.ServiceKey{Protocol: "tcp", Addr: "172.25.254.100:80"}, Scheduler: "wlc",
		Dests: []api.Dest{{Addr: "10.20.1.2:80", Forward: "FullNat", Weight: 1}}, LocalAddrs: []api.LocalAddr{{Addr: "172.25.84.10"}}},
}

// -ln, -lnc and -G print IPv6 as ipvsadm's addrport_to_anyname does,
// [address]:port, in its columns: an IPv6 address longer than a column
// widens it (ipvsadm truncates only IPv4 names), and IPv4 lines are as
// they were.
func TestListIPv6(t *testing.T) {
	conns := []api.Conn{
		{Protocol: "TCP", State: "ESTABLISHED", ExpiresMs: 899500, Source: "[2001:db8:ff::7]:40000", Virtual: "[2001:db8::1]:80", Local: "[fd00:25:84::10]:5001", Destination: "[fd00:20:1::2]:80"},
		{Protocol: "TCP", State: "SYN_RECV", ExpiresMs: 30000, Source: "198.51.100.7:40000", Virtual: "172.25.254.100:80", Local: "172.25.84.10:5002", Destination: "10.20.1.2:80"},
	}
	sock, _ := fakeDaemon(t, svcs6, conns)
	for _, tc := range []struct {
		args []string
		want string
	}{
		// ipvsadm's order: IPv4 before IPv6, TCP before UDP.
		{[]string{"-ln"}, "IP Virtual Server version 1.2.1 (size=4096)\n" +
			"Prot LocalAddress:Port Scheduler Flags\n" +
			"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
			"TCP  172.25.254.100:80 wlc\n" +
			"  -> 10.20.1.2:80                 FullNat 1      0          0         \n" +
			"TCP  [2001:db8::1]:80 wrr synproxy\n" +
			"  -> [fd00:20:1::2]:80            FullNat 1      3          12        \n" +
			"  -> [fd00:20:2:ffff:ffff:ffff:ffff:2]:65535 FullNat 0      0          0         \n" +
			"UDP  [2001:db8::53]:53 rr ppv2\n" +
			"  -> [fd00:20:1::53]:53           FullNat 2      0          0         \n"},
		{[]string{"-ln", "-t", "[2001:db8::1]:80", "--stats"}, "IP Virtual Server version 1.2.1 (size=4096)\n" +
			"Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n" +
			"  -> RemoteAddress:Port\n" +
			"TCP  [2001:db8::1]:80                    0        0        0        0        0\n" +
			"  -> [fd00:20:1::2]:80                   0        0        0        0        0\n" +
			"  -> [fd00:20:2:ffff:ffff:ffff:ffff:2]:65535        0        0        0        0        0\n"},
		{[]string{"-lnc"}, "IPVS connection entries\n" +
			"pro expire state       source             virtual            local              destination\n" +
			"TCP 15:00  ESTABLISHED [2001:db8:ff::7]:40000 [2001:db8::1]:80   [fd00:25:84::10]:5001 [fd00:20:1::2]:80\n" +
			"TCP 00:30  SYN_RECV    198.51.100.7:40000 172.25.254.100:80  172.25.84.10:5002  10.20.1.2:80\n"},
		{[]string{"-lnc", "-t", "[2001:db8::1]:80"}, "IPVS connection entries\n" +
			"pro expire state       source             virtual            local              destination\n" +
			"TCP 15:00  ESTABLISHED [2001:db8:ff::7]:40000 [2001:db8::1]:80   [fd00:25:84::10]:5001 [fd00:20:1::2]:80\n"},
		{[]string{"-G", "-t", "[2001:db8::1]:80"}, "VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS      EXHAUSTED \n" +
			"[2001:db8::1]:80     2        fd00:25:84::10       3          7          2         \n" +
			"                              fd00:25:84::11       0          0          0         \n"},
	} {
		if got := tapvsadm(t, sock, "", tc.args...); got != tc.want {
			t.Errorf("tapvsadm %s:\n got %q\nwant %q", strings.Join(tc.args, " "), got, tc.want)
		}
	}
}

// -S writes IPv6 rules that -R reads back into the same services: the
// batch -R sends names every address as -S listed it.
func TestSaveRestoreIPv6(t *testing.T) {
	sock, batches := fakeDaemon(t, svcs6, nil)
	saved := tapvsadm(t, sock, "", "-S", "-n")
	// Alibaba's layout: services in ipvsadm's order with their servers,
	// then every local address.
	want := "-A -t 172.25.254.100:80 -s wlc -j disable\n" +
		"-a -t 172.25.254.100:80 -r 10.20.1.2:80 -b -w 1\n" +
		"-A -t [2001:db8::1]:80 -s wrr -j enable\n" +
		"-a -t [2001:db8::1]:80 -r [fd00:20:1::2]:80 -b -w 1\n" +
		"-a -t [2001:db8::1]:80 -r [fd00:20:2:ffff:ffff:ffff:ffff:2]:65535 -b -w 0\n" +
		"-A -u [2001:db8::53]:53 -s rr -j disable --proxy-protocol v2\n" +
		"-a -u [2001:db8::53]:53 -r [fd00:20:1::53]:53 -b -w 2\n" +
		"-P -t 172.25.254.100:80 -z 172.25.84.10\n" +
		"-P -t [2001:db8::1]:80 -z fd00:25:84::10\n" +
		"-P -t [2001:db8::1]:80 -z fd00:25:84::11\n" +
		"-P -u [2001:db8::53]:53 -z fd00:25:84::12\n"
	if saved != want {
		t.Fatalf("-S:\n got %q\nwant %q", saved, want)
	}
	tapvsadm(t, sock, saved, "-R")
	b := batches()
	if len(b) != 1 {
		t.Fatalf("-R sent %d batches, want 1", len(b))
	}
	// What the batch rebuilds is what -S listed.
	var rebuilt []api.Service
	for _, op := range b[0].Ops {
		switch op.Op {
		case "add-service":
			rebuilt = append(rebuilt, api.Service{ServiceKey: op.Service.ServiceKey, Scheduler: op.Service.Scheduler,
				Synproxy: op.Service.Synproxy != nil && *op.Service.Synproxy, ClientAddress: op.Service.ClientAddress})
		case "add-dest":
			s := &rebuilt[len(rebuilt)-1]
			if s.ServiceKey != op.Service.ServiceKey {
				t.Fatalf("%+v: not the service before it", op)
			}
			s.Dests = append(s.Dests, api.Dest{Addr: op.Dest.Addr, Forward: "FullNat", Weight: *op.Dest.Weight})
		case "add-laddr":
			i := slices.IndexFunc(rebuilt, func(s api.Service) bool { return s.ServiceKey == op.Service.ServiceKey })
			if i < 0 {
				t.Fatalf("%+v: no service added before it", op)
			}
			s := &rebuilt[i]
			s.LocalAddrs = append(s.LocalAddrs, api.LocalAddr{Addr: op.LocalAddr})
		default:
			t.Fatalf("-R sent %+v", op)
		}
	}
	// Counters are not rules: compare without them.
	listed := sortServices(svcs6, &command{})
	for i := range listed {
		listed[i].Dests = append([]api.Dest(nil), listed[i].Dests...)
		for j := range listed[i].Dests {
			listed[i].Dests[j].ActiveConn, listed[i].Dests[j].InActConn = 0, 0
		}
		listed[i].LocalAddrs = append([]api.LocalAddr(nil), listed[i].LocalAddrs...)
		for j := range listed[i].LocalAddrs {
			listed[i].LocalAddrs[j] = api.LocalAddr{Addr: listed[i].LocalAddrs[j].Addr}
		}
	}
	if !reflect.DeepEqual(rebuilt, listed) {
		t.Fatalf("-R rebuilt\n%+v\nfrom -S of\n%+v", rebuilt, listed)
	}
}

// --capture names an IPv6 service in its query as -t gave it.
func TestCaptureIPv6(t *testing.T) {
	sock, _ := fakeDaemon(t, nil, nil)
	file := t.TempDir() + "/c.pcap"
	tapvsadm(t, sock, "", "--capture", file, "-u", "[2001:db8::53]:domain")
	if b, err := os.ReadFile(file); err != nil || string(b) != "udp [2001:db8::53]:53" {
		t.Fatalf("capture asked for %q (%v), want udp [2001:db8::53]:53", b, err)
	}
}
