package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tapvs/tapvs/lab"
)

// keepalivedServices: web checked by ssl (SSL_GET) on a TLS server each
// real server runs on 8443, web2 by a misc script (MISC_CHECK, with
// misc_dynamic) that exits with the code a file per server holds.
const keepalivedServices = `
  - name: web
    vip: 172.25.254.100
    port: 80
    scheduler: rr
    local_addresses: [172.25.84.10]
    health_check: {type: ssl, port: 8443, http_path: /health, virtualhost: www.example.com, interval: 300ms, timeout: 250ms, rise: 2, fall: 2}
    real_servers:
      - {address: 10.20.1.2, port: 80, weight: 2}
      - {address: 10.20.2.2, port: 80, weight: 5}
  - name: web2
    vip: 172.25.254.100
    port: 8081
    scheduler: rr
    local_addresses: [172.25.84.11]
    health_check: {type: misc, script: [%s], misc_dynamic: true, interval: 200ms, timeout: 150ms, rise: 1, fall: 1}
    real_servers:
      - {address: 10.20.1.2, port: 80, weight: 3}
      - {address: 10.20.2.2, port: 80, weight: 3}
  - name: echo
    vip: 172.25.254.100
    port: 9001
    protocol: udp
    scheduler: rr
    local_addresses: [172.25.84.11]
    health_check: {type: udp, payload: '70696e67', require_reply: '7273312073617720', interval: 200ms, timeout: 150ms, rise: 1, fall: 2}
    real_servers:
      - {address: 10.20.1.2, port: 9001, weight: 4}
      - {address: 10.20.2.2, port: 9009, weight: 4, health_check: {type: udp, payload: '70696e67', interval: 500ms, timeout: 150ms, rise: 100, fall: 1}}
  - name: mail
    vip: 172.25.254.100
    port: 25
    scheduler: rr
    local_addresses: [172.25.84.11]
    health_check: {type: smtp, helo_name: lb1.example.test, interval: 200ms, timeout: 150ms, rise: 1, fall: 1}
    real_servers:
      - {address: 10.20.1.2, port: 2525, weight: 2}
      - {address: 10.20.2.2, port: 2525, weight: 2}
  - name: names
    vip: 172.25.254.100
    port: 53
    protocol: udp
    scheduler: rr
    local_addresses: [172.25.84.11]
    health_check: {type: dns, dns_name: www.example.test, dns_type: A, interval: 200ms, timeout: 150ms, rise: 1, fall: 1}
    real_servers:
      - {address: 10.20.1.2, port: 5353, weight: 3}
      - {address: 10.20.2.2, port: 5353, weight: 3}
  - name: pinged
    vip: 172.25.254.100
    port: 8082
    scheduler: rr
    local_addresses: [172.25.84.11]
    health_check: {type: ping, interval: 200ms, timeout: 150ms, rise: 1, fall: 1}
    real_servers:
      - {address: 10.20.1.2, port: 80, weight: 6}
      - {address: 10.20.2.2, port: 80, weight: 6}`

// startTLS serves HTTPS on addr inside namespace ns (httptest's
// certificate, not verified by the check): /health answers 200 to a
// request for www.example.com, 421 to any other Host.
func startTLS(t *testing.T, ns string, addr netip.AddrPort) *httptest.Server {
	t.Helper()
	var l net.Listener
	if err := lab.InNetns(ns, func() (err error) {
		l, err = net.Listen("tcp4", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "www.example.com" || r.URL.Path != "/health" {
			w.WriteHeader(http.StatusMisdirectedRequest)
		}
	}))
	s.Listener.Close()
	s.Listener = l
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// startSMTP answers SMTP on addr inside namespace ns as a mail server
// does (220, 250 to a HELO naming lb1.example.test, 221 to QUIT) until it
// is closed; it records nothing, the check's pass is the proof.
func startSMTP(t *testing.T, ns string, addr netip.AddrPort) net.Listener {
	t.Helper()
	l := listenIn(t, ns, addr.Addr(), addr.Port())
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := textproto.NewConn(c)
				tc.PrintfLine("220 rs ESMTP")
				for {
					line, err := tc.ReadLine()
					if err != nil {
						return
					}
					switch {
					case line == "HELO lb1.example.test":
						tc.PrintfLine("250 rs")
					case line == "QUIT":
						tc.PrintfLine("221 rs closing")
						return
					default:
						tc.PrintfLine("500 %q", line)
					}
				}
			}()
		}
	}()
	return l
}

// startDNS runs a DNS server (miekg/dns, CoreDNS's engine) on UDP addr
// inside namespace ns, authoritative for www.example.test (an A record);
// while *fail is set it answers SERVFAIL, as a broken resolver does.
func startDNS(t *testing.T, ns string, addr netip.AddrPort, fail *atomic.Bool) {
	t.Helper()
	var pc net.PacketConn
	if err := lab.InNetns(ns, func() (err error) {
		pc, err = net.ListenPacket("udp4", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		switch {
		case fail.Load():
			m.Rcode = dns.RcodeServerFailure
		case len(q.Question) == 1 && q.Question[0].Name == "www.example.test." && q.Question[0].Qtype == dns.TypeA:
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "www.example.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(10, 20, 9, 9)}}
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: h}
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	t.Cleanup(func() { srv.Shutdown(); <-done })
}

// keepalived's checkers end to end: an ssl check takes out a real server
// whose TLS server stops (quiesced) and puts it back with its weight when
// it serves again; a misc script's exit code does the same on another
// service, and with misc_dynamic its code 2-255 sets the weight (code-2);
// a udp check passes on a real echo and fails on the ICMP port
// unreachable of a closed port, which comes back through tapvs (also when
// it comes after the check began to wait: health/udp.go's exchange); an
// smtp check follows a mail server that stops and comes back, a dns check
// a DNS server that answers SERVFAIL for a while, and a ping
// check a server whose kernel stops answering echo requests and starts
// again.
func TestKeepalivedCheckers(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "check.sh")
	// The server's address comes from the environment tapvs gives it.
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit $(cat "+dir+"/code-$TAPVS_RS_ADDR)\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	code := func(rs netip.Addr, c int) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "code-"+rs.String()), []byte(fmt.Sprint(c)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code(lab.RS1, 0)
	code(lab.RS2, 0)
	e := setup(t, fmt.Sprintf(keepalivedServices, script), "")
	// The udp check without require_reply fails only on a port unreachable,
	// and a Linux server sends those one a second per destination after a
	// burst of six: the dns checks' refusals (to the same LIP) would use
	// them up and leave the udp check a pass. The docs say so to operators;
	// here the servers' limit is lifted so that the check's reading, not
	// the kernel's budget, is what the test sees.
	for _, ns := range e.top.RS {
		mustRun(t, ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
	}
	startTLS(t, e.top.RS[0], netip.AddrPortFrom(lab.RS1, 8443))
	tls2 := startTLS(t, e.top.RS[1], netip.AddrPortFrom(lab.RS2, 8443))
	const bound = 5 * time.Second
	weight := func(t *testing.T, svc, rs string, want int, up bool) string {
		t.Helper()
		var w int
		var gotUp bool
		var why string
		if !eventually(bound, func() bool { w, gotUp, why = e.weightOf(svc, rs); return w == want && gotUp == up }) {
			t.Fatalf("%s %s: weight %d up %v (%s), want weight %d up %v", svc, rs, w, gotUp, why, want, up)
		}
		return why
	}

	t.Run("ssl", func(t *testing.T) {
		// Both pass their first checks (a Host other than the virtualhost
		// would get 421 and fail them).
		if !eventually(bound, func() bool {
			c := 0
			for _, s := range e.d.Manager.Services() {
				for _, h := range s.Health {
					if s.Addr == "172.25.254.100:80" && h.Healthy && h.Reason == "" {
						c++
					}
				}
			}
			return c == 2
		}) {
			t.Fatal("the ssl checks never reported both servers")
		}
		tls2.Close()
		if why := weight(t, "172.25.254.100:80", "10.20.2.2:80", 0, false); !strings.HasPrefix(why, "ssl: ") {
			t.Fatalf("rs2 down for %q, want the ssl check's reason", why)
		}
		weight(t, "172.25.254.100:80", "10.20.1.2:80", 2, true)
		startTLS(t, e.top.RS[1], netip.AddrPortFrom(lab.RS2, 8443))
		weight(t, "172.25.254.100:80", "10.20.2.2:80", 5, true)
	})
	t.Run("udp", func(t *testing.T) {
		if why := weight(t, "172.25.254.100:9001", "10.20.2.2:9009", 0, false); !strings.HasPrefix(why, "udp: ") || strings.Contains(why, "no reply") {
			t.Fatalf("rs2 down for %q, want the ICMP error", why)
		}
		// rs1 has been checked as long, its echo required: still up.
		if w, up, why := e.weightOf("172.25.254.100:9001", "10.20.1.2:9001"); w != 4 || !up || why != "" {
			t.Fatalf("rs1 behind a real echo: weight %d up %v (%s)", w, up, why)
		}
	})
	t.Run("smtp", func(t *testing.T) {
		startSMTP(t, e.top.RS[0], netip.AddrPortFrom(lab.RS1, 2525))
		mail2 := startSMTP(t, e.top.RS[1], netip.AddrPortFrom(lab.RS2, 2525))
		weight(t, "172.25.254.100:25", "10.20.1.2:2525", 2, true)
		weight(t, "172.25.254.100:25", "10.20.2.2:2525", 2, true)
		mail2.Close()
		if why := weight(t, "172.25.254.100:25", "10.20.2.2:2525", 0, false); !strings.HasPrefix(why, "smtp connect: ") {
			t.Fatalf("rs2 down for %q, want the smtp check's connect", why)
		}
		startSMTP(t, e.top.RS[1], netip.AddrPortFrom(lab.RS2, 2525))
		weight(t, "172.25.254.100:25", "10.20.2.2:2525", 2, true)
		weight(t, "172.25.254.100:25", "10.20.1.2:2525", 2, true)
	})
	t.Run("dns", func(t *testing.T) {
		var ok1, fail2 atomic.Bool
		startDNS(t, e.top.RS[0], netip.AddrPortFrom(lab.RS1, 5353), &ok1)
		startDNS(t, e.top.RS[1], netip.AddrPortFrom(lab.RS2, 5353), &fail2)
		weight(t, "172.25.254.100:53", "10.20.1.2:5353", 3, true)
		weight(t, "172.25.254.100:53", "10.20.2.2:5353", 3, true)
		fail2.Store(true)
		if why := weight(t, "172.25.254.100:53", "10.20.2.2:5353", 0, false); why != "dns: rcode RCodeServerFailure" {
			t.Fatalf("rs2 down for %q, want the dns check's SERVFAIL", why)
		}
		weight(t, "172.25.254.100:53", "10.20.1.2:5353", 3, true)
		fail2.Store(false)
		weight(t, "172.25.254.100:53", "10.20.2.2:5353", 3, true)
	})
	t.Run("ping", func(t *testing.T) {
		weight(t, "172.25.254.100:8082", "10.20.1.2:80", 6, true)
		weight(t, "172.25.254.100:8082", "10.20.2.2:80", 6, true)
		mustRun(t, e.top.RS[1], "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
		t.Cleanup(func() { nsRun(e.top.RS[1], "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=0") })
		if why := weight(t, "172.25.254.100:8082", "10.20.2.2:80", 0, false); !strings.HasPrefix(why, "ping: no echo reply") {
			t.Fatalf("rs2 down for %q, want no echo reply", why)
		}
		weight(t, "172.25.254.100:8082", "10.20.1.2:80", 6, true)
		mustRun(t, e.top.RS[1], "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=0")
		weight(t, "172.25.254.100:8082", "10.20.2.2:80", 6, true)
	})
	t.Run("misc", func(t *testing.T) {
		weight(t, "172.25.254.100:8081", "10.20.1.2:80", 3, true)
		code(lab.RS1, 1)
		if why := weight(t, "172.25.254.100:8081", "10.20.1.2:80", 0, false); why != "misc: "+script+" exited 1" {
			t.Fatalf("rs1 down for %q, want the script's exit 1", why)
		}
		weight(t, "172.25.254.100:8081", "10.20.2.2:80", 3, true)
		code(lab.RS1, 9) // passes, weight 7
		weight(t, "172.25.254.100:8081", "10.20.1.2:80", 7, true)
		code(lab.RS1, 0) // passes, weight unchanged
		code(lab.RS2, 2) // passes, weight 0: drained, still up
		weight(t, "172.25.254.100:8081", "10.20.2.2:80", 0, true)
		weight(t, "172.25.254.100:8081", "10.20.1.2:80", 7, true)
	})
}
