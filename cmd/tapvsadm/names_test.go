package main

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain keeps the tests off the host's names: a listing without -n
// names nothing unless a test gives it names (withNames).
func TestMain(m *testing.M) {
	naming = fakeNames(nil, nil)
	os.Exit(m.Run())
}

// fakeNames is a resolver that knows hosts and services ("80/tcp": "http")
// and no other.
func fakeNames(hosts map[string]string, services map[string]string) *resolver {
	return &resolver{
		host: func(_ context.Context, a netip.Addr) ([]string, error) {
			if n, ok := hosts[a.String()]; ok {
				return []string{n}, nil
			}
			return nil, errors.New("no name")
		},
		service: func(port uint16, proto string) string {
			return services[strconv.Itoa(int(port))+"/"+proto]
		},
		timeout: time.Second,
	}
}

// withNames gives the listings names for the rest of a test.
func withNames(t *testing.T, r *resolver) {
	old := naming
	naming = r
	t.Cleanup(func() { naming = old })
}

// parseServices reads services(5): the first name of a port/protocol wins,
// comments and aliases are skipped, a bad line is skipped.
func TestParseServices(t *testing.T) {
	m := parseServices(strings.NewReader("# comment\n" +
		"http\t\t80/tcp\t\twww # WorldWideWeb HTTP\n" +
		"www-alt 80/tcp\n" +
		"domain 53/udp\n" +
		"bad 70000/tcp\n" +
		"noproto 99\n" +
		"Upper 22/TCP\n" +
		"\n"))
	want := map[string]string{"80/tcp": "http", "53/udp": "domain", "22/tcp": "Upper"}
	if len(m) != len(want) {
		t.Fatalf("got %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s: %q, want %q", k, m[k], v)
		}
	}
}
