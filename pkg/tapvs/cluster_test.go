package tapvs_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tapvs/tapvs/bgp/bgptest"
	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// Without BGP a drain only counts the connections: on, it says when it
// began and whether any is left; the VIP still serves; off again.
func TestDrainWithoutBGP(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	if _, err := l.LB.BGP(); !errors.Is(err, tapvs.ErrNoBGP) {
		t.Fatalf("BGP() without Config.BGP: %v, want ErrNoBGP", err)
	}
	if d, err := l.LB.DrainStatus(); err != nil || d.Draining || !d.Since.IsZero() {
		t.Fatalf("before: %+v %v", d, err)
	}
	before := time.Now().Add(-time.Second)
	d, err := l.LB.Drain()
	if err != nil || !d.Draining || !d.Empty || d.Conns != 0 || d.Since.Before(before) || len(d.Withdrawn) != 0 {
		t.Fatalf("Drain() = %+v, %v; want on since now, empty, nothing withdrawn", d, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := l.Dial(ctx, "tcp4", l.Service.VIP.String())
	if err != nil {
		t.Fatalf("a drained tapvs refuses nothing itself: %v", err)
	}
	defer c.Close()
	eventually(t, "the drain counts the connection", func() bool {
		d, err = l.LB.DrainStatus()
		return err == nil && d.Draining && d.Conns == 1 && !d.Empty
	})
	if d, err = l.LB.Undrain(); err != nil || d.Draining || d.Empty || !d.Since.IsZero() || d.Conns != 1 {
		t.Fatalf("Undrain() = %+v, %v", d, err)
	}
}

// With BGP the speaker's session and routes are read back typed, and a
// drain takes the VIP back from the router while the local addresses stay.
func TestBGPAndDrain(t *testing.T) {
	r := bgptest.Start(t, 65001, "")
	l := tapvstest.NewLab(t, tapvstest.Options{BGP: &tapvs.BGP{ASN: 65001, RouterID: netip.MustParseAddr("10.9.9.9"), ConnectRetry: time.Second,
		Peers: []tapvs.BGPPeer{{Addr: bgptest.RouterAddr, ASN: bgptest.RouterASN, Port: r.Port, LocalAddr: bgptest.SpeakerAddr}}}})
	vip := netip.PrefixFrom(l.VIP, 32)
	all := map[netip.Prefix]netip.Addr{vip: bgptest.SpeakerAddr}
	lips := map[netip.Prefix]netip.Addr{}
	for _, a := range l.LocalAddrs {
		all[netip.PrefixFrom(a, 32)], lips[netip.PrefixFrom(a, 32)] = bgptest.SpeakerAddr, bgptest.SpeakerAddr
	}
	r.WaitLearned(t, all)
	var b tapvs.BGPStatus
	eventually(t, "the session is up", func() bool {
		var err error
		b, err = l.LB.BGP()
		return err == nil && len(b.Peers) == 1 && b.Peers[0].Established()
	})
	p := b.Peers[0]
	if b.ASN != 65001 || b.RouterID != netip.MustParseAddr("10.9.9.9") || p.Addr != bgptest.RouterAddr || p.ASN != bgptest.RouterASN ||
		p.Sessions != 1 || p.Sent == 0 || p.Received == 0 || p.Since.IsZero() || time.Since(p.Since) > time.Minute || b.Draining {
		t.Fatalf("BGP() = %+v", b)
	}
	var routes []string
	for _, rt := range b.Routes {
		if rt.LocalAddr == (rt.Prefix == vip) || rt.Since.IsZero() {
			t.Errorf("route %+v", rt)
		}
		routes = append(routes, rt.Prefix.String())
	}
	slices.Sort(routes)
	var want []string
	for pfx := range all {
		want = append(want, pfx.String())
	}
	slices.Sort(want)
	if !slices.Equal(routes, want) || b.Announced != uint64(len(all)) {
		t.Fatalf("routes %v (announced %d), want %v", routes, b.Announced, want)
	}

	d, err := l.LB.Drain()
	if err != nil || !d.Draining || !slices.Equal(d.Withdrawn, []netip.Addr{l.VIP}) {
		t.Fatalf("Drain() = %+v, %v; want the VIP %s withdrawn", d, err, l.VIP)
	}
	r.WaitLearned(t, lips)
	if b, err = l.LB.BGP(); err != nil || !b.Draining || b.Withdrawn != 1 || len(b.Routes) != len(lips) {
		t.Fatalf("drained: BGP() = %+v, %v", b, err)
	}
	if _, err := l.LB.Undrain(); err != nil {
		t.Fatal(err)
	}
	r.WaitLearned(t, all)
}
