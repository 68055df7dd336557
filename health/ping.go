package health

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// keepalived's PING_CHECK: an ICMP (or ICMPv6) echo request from the LIP
// through the stack; the server passes when its echo reply comes back
// before the timeout. The stack's ping endpoint sets the identifier (its
// bound "port") and the checksum, and hands back only replies to it.

// pingPayload is the echo's data: a random tag, so a reply must echo this
// probe's request and not an earlier one's.
const pingPayload = 16

func (c *Checker) pingCheck(ctx context.Context, local, remote tcpip.FullAddress, proto tcpip.NetworkProtocolNumber) error {
	tproto, hdrLen := icmp.ProtocolNumber6, header.ICMPv6EchoMinimumSize
	if proto == ipv4.ProtocolNumber {
		tproto, hdrLen = icmp.ProtocolNumber4, header.ICMPv4MinimumSize
	}
	var wq waiter.Queue
	ep, terr := c.st.NewEndpoint(tproto, proto, &wq)
	if terr != nil {
		return fmt.Errorf("ping: %s", terr)
	}
	defer ep.Close()
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	local.Port, remote.Port = 0, 0
	if terr := ep.Bind(local); terr != nil {
		return fmt.Errorf("ping: bind %v: %s", local.Addr, terr)
	}
	if terr := ep.Connect(remote); terr != nil {
		return fmt.Errorf("ping: %s", terr)
	}

	req := make([]byte, hdrLen+pingPayload)
	for i := hdrLen; i < len(req); i++ {
		req[i] = byte(rand.Uint32())
	}
	seq := uint16(rand.Uint32())
	if tproto == icmp.ProtocolNumber4 {
		h := header.ICMPv4(req)
		h.SetType(header.ICMPv4Echo)
		h.SetSequence(seq)
	} else {
		h := header.ICMPv6(req)
		h.SetType(header.ICMPv6EchoRequest)
		h.SetSequence(seq)
	}
	var r bytes.Reader
	r.Reset(req)
	if _, terr := ep.Write(&r, tcpip.WriteOptions{}); terr != nil {
		return fmt.Errorf("ping: send: %s", terr)
	}
	buf := make([]byte, hdrLen+pingPayload+64)
	for {
		w := tcpip.SliceWriter(buf)
		res, terr := ep.Read(&w, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
			if echoed(buf[:res.Count], req, hdrLen, tproto == icmp.ProtocolNumber4, seq) {
				return nil
			}
			continue // another probe's reply (or a stray): wait on
		case *tcpip.ErrWouldBlock:
		default:
			return fmt.Errorf("ping: %s", terr)
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return fmt.Errorf("ping: no echo reply from %s", remote.Addr)
		}
	}
}

// echoed says whether got is the echo reply to req: the reply type, the
// sequence sent and the same data. A reply's length is checked before any
// field is read.
func echoed(got, req []byte, hdrLen int, v4 bool, seq uint16) bool {
	if len(got) != len(req) {
		return false
	}
	if v4 {
		h := header.ICMPv4(got)
		if h.Type() != header.ICMPv4EchoReply || h.Sequence() != seq {
			return false
		}
	} else {
		h := header.ICMPv6(got)
		if h.Type() != header.ICMPv6EchoReply || h.Sequence() != seq {
			return false
		}
	}
	return bytes.Equal(got[hdrLen:], req[hdrLen:])
}
