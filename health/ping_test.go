package health

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tapvs/tapvs/nat"
)

// keepalived's PING_CHECK over IPv4 and IPv6: a server whose stack answers
// echo requests passes; an address nobody holds fails by the timeout.
func TestCheckPing(t *testing.T) {
	lip6 := netip.MustParseAddr("fd00:2::10")
	rs6 := netip.MustParseAddrPort("[fd00:20::2]:80")
	st := loopStack(t, lip, lip6, rs1.Addr(), rs6.Addr())
	c := New(nil, st, nic, quiet)
	lips := []netip.Addr{lip, lip6}
	spec := Spec{Type: "ping", Timeout: 300 * time.Millisecond}
	for _, rs := range []netip.AddrPort{rs1, rs6} {
		if err := c.checkFrom(lips, Target{Proto: nat.TCP, VIP: vip, RS: rs, Spec: spec}); err != nil {
			t.Errorf("ping %s: %v, want a pass", rs, err)
		}
	}
	for _, rs := range []netip.AddrPort{rs2, netip.MustParseAddrPort("[fd00:20::3]:80")} {
		err := c.checkFrom(lips, Target{Proto: nat.TCP, VIP: vip, RS: rs, Spec: spec})
		if err == nil || !strings.Contains(err.Error(), "ping: no echo reply from") {
			t.Errorf("ping %s (nobody there): %v, want no echo reply", rs, err)
		}
	}
}

// A reply is this probe's only with the reply type, the sequence sent, the
// whole data echoed and nothing more: any other is waited past.
func TestEchoed(t *testing.T) {
	for _, v4 := range []bool{true, false} {
		hdrLen := header.ICMPv6EchoMinimumSize
		if v4 {
			hdrLen = header.ICMPv4MinimumSize
		}
		req := append(make([]byte, hdrLen), "0123456789abcdef"...)
		if v4 {
			header.ICMPv4(req).SetType(header.ICMPv4Echo)
		} else {
			header.ICMPv6(req).SetType(header.ICMPv6EchoRequest)
		}
		reply := func(edit func(b []byte)) []byte {
			b := bytes.Clone(req)
			if v4 {
				header.ICMPv4(b).SetType(header.ICMPv4EchoReply)
				header.ICMPv4(b).SetSequence(7)
			} else {
				header.ICMPv6(b).SetType(header.ICMPv6EchoReply)
				header.ICMPv6(b).SetSequence(7)
			}
			if edit != nil {
				edit(b)
			}
			return b
		}
		if !echoed(reply(nil), req, hdrLen, v4, 7) {
			t.Errorf("v4=%v: the reply was not taken", v4)
		}
		for name, b := range map[string][]byte{
			"another sequence": reply(func(b []byte) { b[7]++ }),
			"other data":       reply(func(b []byte) { b[len(b)-1]++ }),
			"the request":      reply(func(b []byte) { b[0] = req[0] }),
			"short":            reply(nil)[:hdrLen],
			"longer":           append(reply(nil), 0),
			"empty":            nil,
		} {
			if echoed(b, req, hdrLen, v4, 7) {
				t.Errorf("v4=%v, %s: taken as the reply", v4, name)
			}
		}
	}
}
