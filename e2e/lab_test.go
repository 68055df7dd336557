package e2e

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/lab"
)

// `tapvs lab` (README's first command) from the shipped config.yaml:
// balance over both real servers, SYNPROXY, the UDP echo, the ping, and the
// real servers told the client's own address by a PROXY header. The lab
// uses its own namespace names (tvs-*), so it refuses to start while a
// developer's lab is up: the test then fails saying so.
func TestLabCommand(t *testing.T) {
	need(t)
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := lab.Run(ctx, lab.Options{ConfigPath: "../config.yaml", Requests: 6, Out: &out,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"6 of 6 requests reached the RS from a LIP",
		"handshakes proved before any server saw a SYN",
		"was told the client is " + lab.ClientAddr.Addr().String() + ":",
		"udp echo via 172.25.254.100:9003: \"rs",
		"told " + lab.ClientAddr.Addr().String() + ":",
		"IPv6: 6 of 6 requests reached the RS from an IPv6 LIP, over 2 real servers",
		"udp echo via [fd00:25:254::100]:9001: \"rs",
		"NAT64: 6 of 6 requests from an IPv6 client reached an IPv4 RS from an IPv4 LIP, over 2 real servers",
		"udp echo via [fd00:25:254::64]:9001: \"rs",
		"NAT46: 6 of 6 requests from an IPv4 client reached an IPv6 RS from an IPv6 LIP, over 2 real servers",
		"udp echo via 172.25.254.46:9001: \"rs",
		"lab removed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the lab's output has no %q", want)
		}
	}
}
