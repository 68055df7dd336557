package health

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzDNSReply: any bytes as the reply to a query for ok.test. A with ID
// 0x1234: no panic, and a pass only for a parseable response of that ID,
// NOERROR, to that one question.
func FuzzDNSReply(f *testing.F) {
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("ok.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	seed := func(m dnsmessage.Message) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	ok := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x1234, Response: true}, Questions: []dnsmessage.Question{q},
		Answers: []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 1},
			Body: &dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}}}}}
	seed(ok)
	nx := ok
	nx.RCode, nx.Answers = dnsmessage.RCodeNameError, nil
	seed(nx)
	two := ok
	two.Questions = []dnsmessage.Question{q, q}
	seed(two)
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x34, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c}) // a question that points at itself
	f.Fuzz(func(t *testing.T, b []byte) {
		if dnsReply(b, 0x1234, q) != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(b)
		if err != nil || h.ID != 0x1234 || !h.Response || h.RCode != dnsmessage.RCodeSuccess {
			t.Fatalf("passed: header %+v, err %v", h, err)
		}
		qs, err := p.AllQuestions()
		if err != nil || len(qs) != 1 || qs[0].Type != q.Type || qs[0].Class != q.Class {
			t.Fatalf("passed: questions %v, err %v", qs, err)
		}
	})
}
