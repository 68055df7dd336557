package nat

import "testing"

// In a cluster the cookie keys derive from the cluster's secret
// (Config.CookieSecret): a handshake whose SYN-ACK one instance sent
// completes on another that the client's ACK reaches (a rehash, the first
// instance gone), which opens the server side; an instance with another
// secret refuses the cookie (bad_cookie) and opens nothing.
func TestSynproxySharedCookiesAcrossInstances(t *testing.T) {
	rig := func(secret string) *rig {
		r := newRig(t, TCP, "rr", func(c *Config) { c.Synproxy, c.CookieSecret = DefaultSynproxy(), []byte(secret) })
		r.b.Attach(recordLink{new([]sent)})
		setSynproxy(t, r)
		r.setWeight(t, rs2, 8080, 0)
		return r
	}
	a, b, other := rig("cluster key 0123456789abcdef"), rig("cluster key 0123456789abcdef"), rig("another key 0123456789abcdef")
	syn := frame(t, pktSpec{src: client, dst: vip, sport: 47000, dport: 80, proto: TCP, syn: true, seq: 5000, srcMAC: macClient, opts: synOpts(1460, 7, 1)})
	if v := a.b.Process(ClientSide, syn); v != Reply {
		t.Fatalf("SYN to the first instance: %v", v)
	}
	cookie := decode(t, syn).tcp.Seq
	ack := func() *Frame {
		return frame(t, pktSpec{src: client, dst: vip, sport: 47000, dport: 80, proto: TCP, ack: true, seq: 5001, ackNum: cookie + 1, srcMAC: macClient})
	}
	bad := other.b.Stats.Drop(DropBadCookie)
	if v := other.b.Process(ClientSide, ack()); v != Drop || other.b.Stats.Drop(DropBadCookie) != bad+1 || other.b.Table().Len() != 0 {
		t.Fatalf("another secret's instance: %v, bad_cookie +%d, %d connections; want Drop, +1, 0",
			v, other.b.Stats.Drop(DropBadCookie)-bad, other.b.Table().Len())
	}
	if v := b.b.Process(ClientSide, ack()); v != Forward {
		t.Fatalf("the cookie's ACK on the second instance: %v, drops %v; want Forward (a SYN to the server)", v, b.b.Stats.Drops())
	}
	c := b.b.table.lookup(&tupleKey{src: client.As16(), dst: vip.As16(), sport: 47000, dport: 80, proto: TCP})
	if c == nil || c.sp == nil {
		t.Fatal("the second instance opened no proxied connection")
	}
}
