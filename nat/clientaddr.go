package nat

import (
	"fmt"
	"strings"
)

// ClientAddr is how a service tells its real servers the client's own
// address, which FULLNAT hides behind a local address.
type ClientAddr uint8

const (
	// ClientAddrNone: the servers see only the LIP.
	ClientAddrNone ClientAddr = iota
	// ClientAddrTOA: a TCP option (kind 254, length 8: the client's port and
	// IPv4 address), on the client segments that complete the server's
	// handshake, where the Linux TOA module reads it (Alibaba LVS, DPVS).
	ClientAddrTOA
	// ClientAddrProxyV1: HAProxy's PROXY protocol v1 (a text line) at the
	// start of the client's stream toward the server. TCP only.
	ClientAddrProxyV1
	// ClientAddrProxyV2: PROXY protocol v2 (binary) at the start of the
	// stream; for UDP, before every datagram toward the server.
	ClientAddrProxyV2
)

var clientAddrNames = [...]string{"none", "toa", "proxy-v1", "proxy-v2"}

func (c ClientAddr) String() string {
	if int(c) < len(clientAddrNames) {
		return clientAddrNames[c]
	}
	return fmt.Sprintf("ClientAddr(%d)", uint8(c))
}

// ParseClientAddr reads a ClientAddr by its name (String).
func ParseClientAddr(s string) (ClientAddr, error) {
	for i, n := range clientAddrNames {
		if s == n {
			return ClientAddr(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not a client address mode (%s)", s, strings.Join(clientAddrNames[:], ", "))
}

// check reports why a protocol cannot carry c.
func (c ClientAddr) check(p Protocol) error {
	switch {
	case int(c) >= len(clientAddrNames):
		return fmt.Errorf("client address mode %d is not one", uint8(c))
	case p == UDP && c == ClientAddrTOA:
		return fmt.Errorf("toa is a TCP option: a UDP service can have proxy-v2 or none")
	case p == UDP && c == ClientAddrProxyV1:
		return fmt.Errorf("PROXY protocol v1 is TCP only: a UDP service can have proxy-v2 or none")
	}
	return nil
}

// open makes room for n bytes at offset at of the frame (at most the
// length of its headers): the at bytes before it, and the virtio-net header
// before them, move n bytes toward the start of the buffer, into the
// headroom the reader leaves (netstack.Headroom); what follows stays where
// it is. It returns false, changing nothing, when the headroom is too small.
// Only headers move, never the payload: that is what the headroom is for.
func (f *Frame) open(at, n int) bool {
	h := len(f.VNet)
	start := f.Off - h
	if n <= 0 || at < 0 || at > f.Len || start-n < 0 {
		return false
	}
	copy(f.Buf[start-n:], f.Buf[start:f.Off+at])
	f.Off -= n
	f.Len += n
	if h > 0 {
		f.VNet = f.Buf[f.Off-h : f.Off]
	}
	return true
}
