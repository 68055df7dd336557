package health

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// keepalived's UDP_CHECK and DNS_CHECK: a datagram from the LIP through
// the stack, and what comes back.

// maxReply bounds what a reply is read into: a datagram past it is
// truncated, and a DNS reply so truncated does not parse.
const maxReply = 4096

// exchange sends payload from local to remote and waits for a reply until
// ctx ends. got is the reply (nil when none came before the timeout); err
// is the socket's: an ICMP error (port unreachable) comes back as one.
func (c *Checker) exchange(ctx context.Context, local, remote tcpip.FullAddress, proto tcpip.NetworkProtocolNumber, payload []byte) (got []byte, err error) {
	conn, err := gonet.DialUDP(c.st, &local, &remote, proto)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write(payload); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, maxReply)
	n, err := conn.Read(buf)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return nil, nil // gonet's deadline error is a net.Error, not os's
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
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
