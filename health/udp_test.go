package health

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tapvs/tapvs/nat"
)

// serveUDP answers each datagram to ap inside s with reply(datagram); a
// nil reply says nothing.
func serveUDP(t *testing.T, s *stack.Stack, ap netip.AddrPort, reply func([]byte) []byte) {
	t.Helper()
	la := tcpip.FullAddress{NIC: nic, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
	conn, err := gonet.DialUDP(s, &la, nil, protoOf(ap.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := reply(append([]byte(nil), buf[:n]...)); r != nil {
				conn.WriteTo(r, from)
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
}

// The udp check (UDP_CHECK) through the stack: with require_reply a reply
// must come and start with it; without, a reply or silence passes and an
// ICMP port unreachable fails.
func TestCheckUDP(t *testing.T) {
	st := loopStack(t, lip, rs1.Addr())
	bal, svc := testBalancer(t, rs1)
	c := New(bal, st, nic, quiet)
	var got [][]byte
	serveUDP(t, st, netip.AddrPortFrom(rs1.Addr(), 9000), func(b []byte) []byte {
		got = append(got, b)
		return append([]byte("pong:"), b...)
	})
	serveUDP(t, st, netip.AddrPortFrom(rs1.Addr(), 9001), func([]byte) []byte { return nil })
	cases := []struct {
		name string
		spec Spec
		want string
	}{
		{"reply required and matching", Spec{Port: 9000, Payload: []byte("ping"), RequireReply: []byte("pong:pi")}, ""},
		{"reply required, whole", Spec{Port: 9000, Payload: []byte("ping"), RequireReply: []byte("pong:ping")}, ""},
		{"reply required, longer than the reply", Spec{Port: 9000, Payload: []byte("ping"), RequireReply: []byte("pong:ping!")}, "udp: reply 706f6e673a70696e67 does not start with 706f6e673a70696e6721"},
		{"reply differs", Spec{Port: 9000, Payload: []byte("ping"), RequireReply: []byte("PONG")}, "does not start with"},
		{"reply not required", Spec{Port: 9000, Payload: []byte("ping")}, ""},
		{"silence, reply required", Spec{Port: 9001, Payload: []byte("ping"), RequireReply: []byte("pong")}, "udp: no reply in 300ms"},
		{"silence, no reply required", Spec{Port: 9001, Payload: []byte("ping")}, ""},
		{"port closed", Spec{Port: 9002, Payload: []byte("ping")}, "udp: "},
		{"port closed, reply required", Spec{Port: 9002, Payload: []byte("ping"), RequireReply: []byte("pong")}, "udp: "},
	}
	for _, tc := range cases {
		tc.spec.Type, tc.spec.Timeout = "udp", 300*time.Millisecond
		err := c.check(svc, Target{Proto: nat.UDP, VIP: vip, RS: rs1, Spec: tc.spec})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want a pass", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		case strings.HasPrefix(tc.name, "port closed") && strings.Contains(err.Error(), "no reply"):
			t.Errorf("%s: %v, want the ICMP error, not a timeout", tc.name, err)
		}
	}
	if len(got) == 0 || !bytes.Equal(got[0], []byte("ping")) {
		t.Fatalf("the server got %q, want the payload", got)
	}
}

// dnsServer answers by the name asked: ok. NOERROR with an A record;
// empty. NOERROR without answers; nx. NXDOMAIN; servfail. SERVFAIL;
// wrongid. another ID; query. no QR bit; other. another question; garbage.
// bytes that are not DNS; silent. nothing.
func dnsServer(b []byte) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil || len(m.Questions) != 1 {
		return nil
	}
	q := m.Questions[0]
	r := dnsmessage.Message{Header: dnsmessage.Header{ID: m.ID, Response: true, RecursionDesired: m.RecursionDesired}, Questions: m.Questions}
	switch strings.ToLower(q.Name.String()) {
	case "ok.test.":
		r.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
			Body: &dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}}}}
	case "empty.test.":
	case "nx.test.":
		r.RCode = dnsmessage.RCodeNameError
	case "servfail.test.":
		r.RCode = dnsmessage.RCodeServerFailure
	case "wrongid.test.":
		r.ID++
	case "query.test.":
		r.Response = false
	case "other.test.":
		r.Questions = []dnsmessage.Question{{Name: dnsmessage.MustNewName("ok.test."), Type: q.Type, Class: q.Class}}
	case "garbage.test.":
		return []byte{0xde, 0xad}
	default:
		return nil
	}
	out, err := r.Pack()
	if err != nil {
		return nil
	}
	return out
}

// The dns check (DNS_CHECK) through the stack: a NOERROR response to the
// query asked passes (answers or none); another rcode, another ID, a
// query, another question, bytes that do not parse, silence and a closed
// port fail.
func TestCheckDNS(t *testing.T) {
	st := loopStack(t, lip, rs1.Addr())
	bal, svc := testBalancer(t, rs1)
	c := New(bal, st, nic, quiet)
	var asked []dnsmessage.Question
	var rd []bool
	serveUDP(t, st, netip.AddrPortFrom(rs1.Addr(), 53), func(b []byte) []byte {
		var m dnsmessage.Message
		if m.Unpack(b) == nil && len(m.Questions) == 1 {
			asked = append(asked, m.Questions[0])
			rd = append(rd, m.RecursionDesired)
		}
		return dnsServer(b)
	})
	a, aaaa := uint16(dnsmessage.TypeA), uint16(dnsmessage.TypeAAAA)
	cases := []struct {
		name string
		typ  uint16
		port uint16
		want string
	}{
		{"ok.test", a, 53, ""},
		{"OK.test.", aaaa, 53, ""},
		{"empty.test", a, 53, ""},
		{"nx.test", a, 53, "dns: rcode RCodeNameError"},
		{"servfail.test", a, 53, "dns: rcode RCodeServerFailure"},
		{"wrongid.test", a, 53, "dns: reply ID"},
		{"query.test", a, 53, "dns: reply is a query"},
		{"other.test", a, 53, "dns: reply to another question (1 questions)"},
		{"garbage.test", a, 53, "dns: reply: "},
		{"silent.test", a, 53, "dns: no reply in 300ms"},
		{"ok.test", a, 54, "dns: "},
	}
	for _, tc := range cases {
		spec := Spec{Type: "dns", Port: tc.port, Timeout: 300 * time.Millisecond, DNSName: tc.name, DNSType: tc.typ}
		err := c.check(svc, Target{Proto: nat.UDP, VIP: vip, RS: rs1, Spec: spec})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want a pass", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %d: %v, want an error saying %q", tc.name, tc.port, err, tc.want)
		case tc.port == 54 && strings.Contains(err.Error(), "no reply"):
			t.Errorf("closed port: %v, want the ICMP error, not a timeout", err)
		}
	}
	if len(asked) < 2 || asked[0].Name.String() != "ok.test." || asked[0].Type != dnsmessage.TypeA || asked[0].Class != dnsmessage.ClassINET ||
		asked[1].Type != dnsmessage.TypeAAAA || !rd[0] {
		t.Fatalf("the server was asked %v (recursion desired %v)", asked, rd)
	}
}
