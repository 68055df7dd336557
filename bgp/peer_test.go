package bgp

import (
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/tapvs/tapvs/bgp/bgptest"
)

// badPeer listens on a loopback port and answers every session of the
// speaker with what misbehave writes, then closes it; it counts the
// sessions it saw.
func badPeer(t *testing.T, misbehave func(net.Conn)) (port uint16, sessions chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	sessions = make(chan struct{}, 1000)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				misbehave(c)
				select {
				case sessions <- struct{}{}:
				default:
				}
			}()
		}
	}()
	return uint16(l.Addr().(*net.TCPAddr).Port), sessions
}

func openMessage(t *testing.T, as uint16) []byte {
	t.Helper()
	m, err := bgp.NewBGPOpenMessage(as, 9, netip.MustParseAddr("127.0.0.3"), []bgp.OptionParameterInterface{
		bgp.NewOptionParameterCapability([]bgp.ParameterCapabilityInterface{bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC), bgp.NewCapFourOctetASNumber(uint32(as))})})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A peer that sends garbage, one that sends a good OPEN and then a
// malformed message, and one that refuses the session never disturb the
// speaker's session with a good router, nor what it announces there; the
// speaker counts their failures and keeps trying.
func TestBadPeersLeaveTheGoodOneAlone(t *testing.T) {
	good := bgptest.Start(t, 65001, "")
	garbagePort, garbage := badPeer(t, func(c net.Conn) {
		b := make([]byte, 4096)
		rand.Read(b)
		c.Write(b)
		io.Copy(io.Discard, io.LimitReader(c, 1<<16))
	})
	notified := make(chan uint8, 100) // the error codes of the speaker's NOTIFICATIONs
	malformedPort, malformed := badPeer(t, func(c net.Conn) {
		c.Write(openMessage(t, 65000))
		ka, _ := bgp.NewBGPKeepAliveMessage().Serialize()
		c.Write(ka)
		// An UPDATE whose total path attribute length runs past the message.
		c.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0, 27, 2, 0, 0, 0xff, 0xf0, 0x40, 1, 1, 0})
		// The speaker answers with a NOTIFICATION and closes: read its
		// messages until it does (the deadline bounds the wait).
		b, _ := io.ReadAll(io.LimitReader(c, 1<<16))
		for len(b) >= 19 {
			n := int(b[16])<<8 | int(b[17])
			if n < 19 || n > len(b) {
				break
			}
			if b[18] == bgp.BGP_MSG_NOTIFICATION && n > 19 {
				notified <- b[19]
			}
			b = b[n:]
		}
	})
	refused := bgptest.FreePort(t) // nothing listens there
	cfg := speakerConfig(good)
	bad := netip.MustParseAddr("127.0.0.3")
	cfg.Peers = append(cfg.Peers,
		Peer{Address: bad, ASN: 65000, Port: garbagePort},
		Peer{Address: netip.MustParseAddr("127.0.0.4"), ASN: 65000, Port: refused},
	)
	s, err := Start(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Announce(Own(vip, lip)); err != nil {
		t.Fatal(err)
	}
	good.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self, lip: self})
	for i := 0; i < 3; i++ { // three garbage sessions, each ended by the speaker
		select {
		case <-garbage:
		case <-time.After(20 * time.Second):
			t.Fatalf("garbage session %d never happened", i)
		}
	}
	// The same address, now a peer that opens well and then misbehaves: a
	// reload changes its port.
	cfg.Peers[1].Port = malformedPort
	if _, _, _, err := s.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-malformed:
		case <-time.After(20 * time.Second):
			t.Fatalf("malformed session %d never happened", i)
		}
	}
	select {
	case code := <-notified:
		if code != bgp.BGP_ERROR_UPDATE_MESSAGE_ERROR {
			t.Errorf("the speaker answered the malformed UPDATE with NOTIFICATION code %d, want %d (UPDATE message error)", code, bgp.BGP_ERROR_UPDATE_MESSAGE_ERROR)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the speaker never answered the malformed UPDATE with a NOTIFICATION")
	}
	st := s.Status()
	for _, p := range st.Peers {
		switch p.Address {
		case bgptest.RouterAddr:
			if p.State != "established" || p.Established != 1 {
				t.Errorf("the good router's session %+v: want the first one, still established", p)
			}
		case bad:
			if p.Changes < 4 || p.Established < 1 {
				t.Errorf("the misbehaving peer %+v: want its sessions and their ends counted", p)
			}
		default:
			if p.State == "established" || p.Established != 0 {
				t.Errorf("the refusing peer %+v: want it never established", p)
			}
		}
	}
	good.WaitLearned(t, map[netip.Prefix]netip.Addr{vip: self, lip: self})
	if err := s.Announce(Own(lip)); err != nil {
		t.Fatal(err)
	}
	good.WaitLearned(t, map[netip.Prefix]netip.Addr{lip: self})
}

// FuzzPeerMessage runs what the speaker runs on a peer's bytes (GoBGP's
// parser, and its validation of an UPDATE) on any input: a peer is outside
// input, and a panic there would take the data path down with the
// process. The seeds are the messages of a session.
func FuzzPeerMessage(f *testing.F) {
	open, err := bgp.NewBGPOpenMessage(65000, 9, netip.MustParseAddr("10.0.0.1"), []bgp.OptionParameterInterface{
		bgp.NewOptionParameterCapability([]bgp.ParameterCapabilityInterface{bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC), bgp.NewCapFourOctetASNumber(65000)})})
	if err != nil {
		f.Fatal(err)
	}
	nlri, _ := bgp.NewIPAddrPrefix(netip.MustParsePrefix("172.25.254.100/32"))
	nh, _ := bgp.NewPathAttributeNextHop(netip.MustParseAddr("10.0.0.1"))
	update := bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), nh,
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65000})}),
		bgp.NewPathAttributeCommunities([]uint32{1})}, []bgp.PathNLRI{{NLRI: nlri}})
	for _, m := range []*bgp.BGPMessage{open, update, bgp.NewBGPKeepAliveMessage(), bgp.NewBGPNotificationMessage(6, 2, nil)} {
		b, err := m.Serialize()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := bgp.ParseBGPMessage(b)
		if err != nil {
			return
		}
		if u, ok := m.Body.(*bgp.BGPUpdate); ok {
			bgp.ValidateUpdateMsg(u, map[bgp.Family]bgp.BGPAddPathMode{bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_NONE, bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_NONE}, true, false, false)
		}
	})
}
