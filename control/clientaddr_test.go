package control

import (
	"strings"
	"testing"
)

// The API sets a service's client address mode on add and edit, lists it,
// and refuses a mode it does not know or one the protocol cannot carry,
// naming the field, with the state untouched.
func TestAPIClientAddress(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	if c, body := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80","client_address":"proxy-v2"}`); c != 204 {
		t.Fatalf("add: %d %s", c, body)
	}
	if c, body := do("POST", "/v1/services", `{"protocol":"udp","addr":"10.0.0.1:53"}`); c != 204 {
		t.Fatalf("add udp: %d %s", c, body)
	}
	if got := m.Services()[0].ClientAddress; got != "proxy-v2" {
		t.Fatalf("listed as %q", got)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"client_address":"proxy-v3"}`, `client_address: \"proxy-v3\" is not a client address mode`},
	} {
		if c, body := do("PUT", "/v1/services/tcp/10.0.0.1:80", tc.body); c != 400 || !strings.Contains(body, tc.want) {
			t.Fatalf("%s: %d %s, want 400 %s", tc.body, c, body, tc.want)
		}
	}
	if c, body := do("PUT", "/v1/services/udp/10.0.0.1:53", `{"client_address":"toa"}`); c != 400 || !strings.Contains(body, "toa is a TCP option") {
		t.Fatalf("toa on udp: %d %s", c, body)
	}
	if got := m.Services()[0].ClientAddress; got != "proxy-v2" {
		t.Fatalf("a refused edit changed it to %q", got)
	}
	if c, body := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"client_address":"toa"}`); c != 204 {
		t.Fatalf("edit: %d %s", c, body)
	}
	svcs := m.Services()
	if svcs[0].ClientAddress != "toa" || svcs[1].ClientAddress != "none" {
		t.Fatalf("after the edit: %q, %q", svcs[0].ClientAddress, svcs[1].ClientAddress)
	}
}

// The API sets what a service does with TCP timestamps on add and edit,
// lists it (translate by default), and refuses a mode it does not know or
// one on a UDP service, naming the field, with the state untouched.
func TestAPITCPTimestamps(t *testing.T) {
	m := newManager(t)
	do := serve(t, m)
	if c, body := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:80","tcp_timestamps":"remove"}`); c != 204 {
		t.Fatalf("add: %d %s", c, body)
	}
	if c, body := do("POST", "/v1/services", `{"protocol":"tcp","addr":"10.0.0.1:81"}`); c != 204 {
		t.Fatalf("add: %d %s", c, body)
	}
	if c, body := do("POST", "/v1/services", `{"protocol":"udp","addr":"10.0.0.1:53"}`); c != 204 {
		t.Fatalf("add udp: %d %s", c, body)
	}
	if s := m.Services(); s[0].TCPTimestamps != "remove" || s[1].TCPTimestamps != "translate" {
		t.Fatalf("listed as %q, %q", s[0].TCPTimestamps, s[1].TCPTimestamps)
	}
	if c, body := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"tcp_timestamps":"strip"}`); c != 400 || !strings.Contains(body, `tcp_timestamps: \"strip\" is not a timestamp mode`) {
		t.Fatalf("strip: %d %s", c, body)
	}
	if c, body := do("PUT", "/v1/services/udp/10.0.0.1:53", `{"tcp_timestamps":"remove"}`); c != 400 || !strings.Contains(body, "tcp_timestamps is a TCP setting") {
		t.Fatalf("remove on udp: %d %s", c, body)
	}
	if got := m.Services()[0].TCPTimestamps; got != "remove" {
		t.Fatalf("a refused edit changed it to %q", got)
	}
	if c, body := do("PUT", "/v1/services/tcp/10.0.0.1:80", `{"tcp_timestamps":"translate"}`); c != 204 {
		t.Fatalf("edit: %d %s", c, body)
	}
	if got := m.Services()[0].TCPTimestamps; got != "translate" {
		t.Fatalf("after the edit: %q", got)
	}
}
