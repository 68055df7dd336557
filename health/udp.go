package health

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// keepalived's UDP_CHECK and DNS_CHECK: a datagram from the LIP through
// the stack, and what comes back.

// maxReply bounds what a reply is read into: a datagram past it is
// truncated, and a DNS reply so truncated does not parse.
const maxReply = 4096

// exchange sends payload from local to remote and waits for a reply until
// ctx ends. got is the reply (nil when none came before the timeout); err
// is the socket's: an ICMP error (port unreachable) comes back as one.
//
// It waits on the endpoint itself, not through gonet's UDPConn: an ICMP
// error wakes its waiters with EventErr alone, which gonet's Read does not
// wait for, so an error that came after the Read began was missed and the
// check passed on "silence" (seen in e2e on a loaded machine).
func (c *Checker) exchange(ctx context.Context, local, remote tcpip.FullAddress, proto tcpip.NetworkProtocolNumber, payload []byte) (got []byte, err error) {
	var wq waiter.Queue
	ep, terr := c.st.NewEndpoint(udp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("dial: %s", terr)
	}
	defer ep.Close()
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if terr := ep.Bind(local); terr != nil {
		return nil, fmt.Errorf("dial: bind %v: %s", local.Addr, terr)
	}
	if terr := ep.Connect(remote); terr != nil {
		return nil, fmt.Errorf("dial: %s", terr)
	}
	var r bytes.Reader
	r.Reset(payload)
	if _, terr := ep.Write(&r, tcpip.WriteOptions{}); terr != nil {
		return nil, fmt.Errorf("send: %s", terr)
	}
	buf := make([]byte, maxReply)
	for {
		w := tcpip.SliceWriter(buf)
		res, terr := ep.Read(&w, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
			return buf[:res.Count], nil
		case *tcpip.ErrWouldBlock:
		default: // the ICMP error: ErrConnectionRefused for a closed port
			return nil, errors.New(terr.String())
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, nil
		}
	}
}

// udpCheck sends the payload. With RequireReply the reply must come and
// start with it; without, as keepalived, only an ICMP error (the port is
// closed) fails: a reply, or none by the timeout, passes.
func (c *Checker) udpCheck(ctx context.Context, local, remote tcpip.FullAddress, proto tcpip.NetworkProtocolNumber, spec Spec) error {
	got, err := c.exchange(ctx, local, remote, proto, spec.Payload)
	if err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	if spec.RequireReply == nil {
		return nil
	}
	if got == nil {
		return fmt.Errorf("udp: no reply in %s", spec.Timeout)
	}
	if !bytes.HasPrefix(got, spec.RequireReply) {
		n := min(len(got), 32)
		return fmt.Errorf("udp: reply %s does not start with %s", hex.EncodeToString(got[:n]), hex.EncodeToString(spec.RequireReply))
	}
	return nil
}

// dnsCheck sends one query (recursion desired, a random ID) and passes on
// a NOERROR response to it, as keepalived's DNS_CHECK.
func (c *Checker) dnsCheck(ctx context.Context, local, remote tcpip.FullAddress, proto tcpip.NetworkProtocolNumber, spec Spec) error {
	q, err := dnsQuestion(spec.DNSName, spec.DNSType)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	id := uint16(rand.Uint32())
	msg := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true}, Questions: []dnsmessage.Question{q}}
	query, err := msg.Pack()
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	got, err := c.exchange(ctx, local, remote, proto, query)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	if got == nil {
		return fmt.Errorf("dns: no reply in %s", spec.Timeout)
	}
	if err := dnsReply(got, id, q); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	return nil
}

// dnsQuestion is the question for name (made absolute) and type t.
func dnsQuestion(name string, t uint16) (dnsmessage.Question, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return dnsmessage.Question{}, err
	}
	return dnsmessage.Question{Name: n, Type: dnsmessage.Type(t), Class: dnsmessage.ClassINET}, nil
}

// dnsReply checks a reply, outside input, to the query id asking q: a
// response, of that ID, to that one question, with RCODE NOERROR. The
// answers themselves are not required (keepalived's DNS_CHECK does not).
func dnsReply(b []byte, id uint16, q dnsmessage.Question) error {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	switch {
	case h.ID != id:
		return fmt.Errorf("reply ID %d, want %d", h.ID, id)
	case !h.Response:
		return errors.New("reply is a query, not a response")
	case h.RCode != dnsmessage.RCodeSuccess:
		return fmt.Errorf("rcode %s", h.RCode)
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return fmt.Errorf("reply question: %w", err)
	}
	if len(qs) != 1 || qs[0].Type != q.Type || qs[0].Class != q.Class || !strings.EqualFold(qs[0].Name.String(), q.Name.String()) {
		return fmt.Errorf("reply to another question (%d questions)", len(qs)) // not its name: the sender's bytes, unlogged
	}
	return nil
}
