package tapvs_test

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tapvs/tapvs/pkg/tapvs"
	"github.com/tapvs/tapvs/pkg/tapvstest"
)

// refused wants err to be exactly want, or to start with it when want ends
// in "...".
func refused(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: no error, want %q", what, want)
	case strings.HasSuffix(want, "..."):
		if !strings.HasPrefix(err.Error(), strings.TrimSuffix(want, "...")) {
			t.Errorf("%s: %q, want %q", what, err, want)
		}
	case err.Error() != want:
		t.Errorf("%s: %q, want %q", what, err, want)
	}
}

// dump is s's fields: %+v of s would be its key alone (ServiceKey's String).
func dump(s tapvs.ServiceStatus) string {
	return fmt.Sprintf("%#v", s)
}

// service reads one service of the lab's tapvs.
func service(t *testing.T, l *tapvstest.Lab, k tapvs.ServiceKey) tapvs.ServiceStatus {
	t.Helper()
	s, ok := l.LB.Service(k)
	if !ok {
		t.Fatalf("service %s is not listed", k)
	}
	return s
}

// connects says whether a connection to addr through tapvs is made within
// a second (many times what one made takes in the lab).
func connects(t *testing.T, l *tapvstest.Lab, addr netip.AddrPort) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := l.Dial(ctx, "tcp4", addr.String())
	if err != nil {
		return false
	}
	// A connection tapvs refuses after the handshake (SYN proxy) ends
	// at the first read; the lab's HTTP server answers a request.
	c.SetDeadline(time.Now().Add(time.Second))
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err = c.Read(b)
	return err == nil
}

// The settings of tapvsadm -E, each through EditService: visible in the
// listing at once, all or nothing, each refusal naming its field.
func TestEditService(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	k := l.Service
	key := k.String()

	refused(t, "scheduler foo", l.LB.EditService(k, tapvs.ServiceEdit{Scheduler: new("foo")}),
		`tapvs: ServiceEdit.Scheduler: service `+key+`: "foo" is not a scheduler (one of [rr wrr lc wlc sed nq sh mh dh lblc lblcr fo ovf])`)
	refused(t, "rr with sh-port", l.LB.EditService(k, tapvs.ServiceEdit{Scheduler: new("lc"), SchedFlags: &[]string{"sh-port"}}),
		`tapvs: ServiceEdit.SchedFlags: ...`)
	refused(t, "client address foo", l.LB.EditService(k, tapvs.ServiceEdit{ClientAddr: new(tapvs.ClientAddr("foo"))}),
		`tapvs: ServiceEdit.ClientAddr: service `+key+`: "foo" is not a client address mode (none, toa, proxy-v1, proxy-v2)`)
	refused(t, "timestamps foo", l.LB.EditService(k, tapvs.ServiceEdit{Timestamps: new(tapvs.Timestamps("foo"))}),
		`tapvs: ServiceEdit.Timestamps: service `+key+`: ...`)
	refused(t, "persistence 1.5s", l.LB.EditService(k, tapvs.ServiceEdit{Persistence: new(1500 * time.Millisecond)}),
		`tapvs: ServiceEdit.Persistence: service `+key+`: 1.5s is not a whole number of seconds`)
	refused(t, "mask without persistence", l.LB.EditService(k, tapvs.ServiceEdit{PersistenceMask: new(24)}),
		`tapvs: ServiceEdit.PersistenceMask: ...`)
	refused(t, "ESTABLISHED timeout 0", l.LB.EditService(k, tapvs.ServiceEdit{EstablishedTimeout: new(time.Duration(0))}),
		`tapvs: ServiceEdit.EstablishedTimeout: service `+key+`: 0s is not a timeout (from 1s to ...`)
	refused(t, "empty name", l.LB.EditService(k, tapvs.ServiceEdit{Name: new("")}), `tapvs: ServiceEdit.Name: ...`)
	refused(t, "negative source conns", l.LB.EditService(k, tapvs.ServiceEdit{Limits: &tapvs.Limits{SourceConns: -1}}),
		`tapvs: ServiceEdit.Limits.SourceConns: ...`)
	refused(t, "no such service", l.LB.EditService(tapvs.ServiceKey{VIP: netip.AddrPortFrom(l.VIP, 1)}, tapvs.ServiceEdit{Scheduler: new("rr")}),
		`tapvs: ServiceEdit.Scheduler: ...`)
	refused(t, "nothing, of no such service", l.LB.EditService(tapvs.ServiceKey{VIP: netip.AddrPortFrom(l.VIP, 1)}, tapvs.ServiceEdit{}),
		`tapvs: ServiceEdit: ...`)
	if err := l.LB.EditService(k, tapvs.ServiceEdit{}); err != nil {
		t.Errorf("nothing to change: %v", err)
	}

	// All or nothing: a good scheduler with a bad limit changes neither.
	before := service(t, l, k)
	refused(t, "lc with a negative limit", l.LB.EditService(k, tapvs.ServiceEdit{Scheduler: new("lc"), Limits: &tapvs.Limits{SourceCPS: -1}}),
		`tapvs: ServiceEdit.Limits.SourceCPS: ...`)
	if after := service(t, l, k); !reflect.DeepEqual(before, after) {
		t.Errorf("a refused edit changed the service:\nbefore %s\nafter  %s", dump(before), dump(after))
	}

	if err := l.LB.EditService(k, tapvs.ServiceEdit{Scheduler: new("sh"), SchedFlags: &[]string{"sh-port"}, Name: new("edited"),
		Persistence: new(300 * time.Second), PersistenceMask: new(24), EstablishedTimeout: new(123 * time.Second),
		Limits: &tapvs.Limits{SourceConns: 50}, Timestamps: new(tapvs.TimestampsRemove)}); err != nil {
		t.Fatal(err)
	}
	s := service(t, l, k)
	if s.Scheduler != "sh" || !reflect.DeepEqual(s.SchedFlags, []string{"sh-port"}) || s.Name != "edited" || s.Persistence != 300*time.Second ||
		s.PersistenceMask != 24 || s.EstablishedTimeout != 123*time.Second || s.Timeouts.TCP != 123*time.Second ||
		s.Limits != (tapvs.Limits{SourceConns: 50}) || s.Timestamps != tapvs.TimestampsRemove {
		t.Errorf("after the edit, listed %s", dump(s))
	}
	// Persistence: one request makes one template, of the client's /24.
	first := answer(t, l, l.URL())
	for range 3 {
		if got := answer(t, l, l.URL()); got != first {
			t.Errorf("persistent service: %s answered after %s", got, first)
		}
	}
	// The server that answered has the template; the other none.
	for _, rs := range l.LB.RealServers() {
		want := int64(0)
		for _, lr := range l.RealServers {
			if lr.Name == first && lr.Addr == rs.Addr.Addr() {
				want = 1
			}
		}
		if rs.PersistConns != want {
			t.Errorf("%s answered; %s has %d persistence templates, want %d", first, rs.Addr, rs.PersistConns, want)
		}
	}
	tmpls := l.LB.Templates()
	if len(tmpls) != 1 || tmpls[0].Client != netip.MustParseAddr("172.25.254.0") || tmpls[0].VIP != k.VIP || tmpls[0].Protocol != tapvs.TCP {
		t.Errorf("templates %+v: want one, of 172.25.254.0 to %s", tmpls, k.VIP)
	}
	// Changing the scheduler alone drops sh's flags (they are its own).
	// A mask of the whole address is no mask.
	if err := l.LB.EditService(k, tapvs.ServiceEdit{PersistenceMask: new(32)}); err != nil {
		t.Fatal(err)
	}
	if s := service(t, l, k); s.PersistenceMask != 0 || s.Persistence != 300*time.Second {
		t.Errorf("mask /32: listed %d, persistence %v", s.PersistenceMask, s.Persistence)
	}
	if err := l.LB.EditService(k, tapvs.ServiceEdit{Scheduler: new("wrr"), Persistence: new(time.Duration(0))}); err != nil {
		t.Fatal(err)
	}
	if s := service(t, l, k); s.Scheduler != "wrr" || len(s.SchedFlags) != 0 || s.Persistence != 0 || s.PersistenceMask != 0 {
		t.Errorf("after wrr and no persistence, listed %s", dump(s))
	}

	// SYN proxy and a client address mode; requests still answered, the
	// real server seeing a PROXY header it does not read as HTTP... so
	// the mode goes back to none before the request.
	if err := l.LB.EditService(k, tapvs.ServiceEdit{Synproxy: new(true), ClientAddr: new(tapvs.ProxyV2)}); err != nil {
		t.Fatal(err)
	}
	if s := service(t, l, k); !s.Synproxy || s.ClientAddr != tapvs.ProxyV2 {
		t.Errorf("after synproxy and proxy-v2, listed %s", dump(s))
	}
	if err := l.LB.EditService(k, tapvs.ServiceEdit{ClientAddr: new(tapvs.ClientAddrNone)}); err != nil {
		t.Fatal(err)
	}
	if got := answer(t, l, l.URL()); got != "rs1" && got != "rs2" {
		t.Errorf("through the SYN proxy, %q answered", got)
	}
}

// tapvsadm -e through EditRealServer: a weight and thresholds, seen in
// RealServers and in where the requests go.
func TestEditRealServer(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	k := l.Service
	rs1 := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
	stats := func() tapvs.RealServerStats {
		for _, rs := range l.LB.RealServers() {
			if rs.Service == k && rs.Addr == rs1 {
				return rs
			}
		}
		t.Fatalf("%s is not listed", rs1)
		return tapvs.RealServerStats{}
	}
	if err := l.LB.EditRealServer(k, rs1, tapvs.RealServerEdit{Weight: new(3), UThreshold: new(uint32(100)), LThreshold: new(uint32(10))}); err != nil {
		t.Fatal(err)
	}
	if s := stats(); s.Weight != 3 || s.UThreshold != 100 || s.LThreshold != 10 {
		t.Errorf("after weight 3 and thresholds 100 and 10: %+v", s)
	}
	if s := service(t, l, k); s.RealServers[0] != (tapvs.RealServer{Addr: rs1, Weight: 3, UThreshold: 100, LThreshold: 10}) {
		t.Errorf("the service lists %+v", s.RealServers)
	}
	// One threshold alone keeps the other.
	if err := l.LB.EditRealServer(k, rs1, tapvs.RealServerEdit{UThreshold: new(uint32(200))}); err != nil {
		t.Fatal(err)
	}
	if s := stats(); s.UThreshold != 200 || s.LThreshold != 10 || s.Weight != 3 {
		t.Errorf("after upper threshold 200: %+v", s)
	}
	refused(t, "lower above upper", l.LB.EditRealServer(k, rs1, tapvs.RealServerEdit{Weight: new(5), LThreshold: new(uint32(300))}),
		`tapvs: RealServerEdit.LThreshold: ...`)
	refused(t, "weight -1", l.LB.EditRealServer(k, rs1, tapvs.RealServerEdit{Weight: new(-1)}), `tapvs: RealServerEdit.Weight: ...`)
	if s := stats(); s.Weight != 3 || s.LThreshold != 10 {
		t.Errorf("a refused edit changed the server: %+v", s)
	}
	refused(t, "no such server", l.LB.EditRealServer(k, netip.AddrPortFrom(rs1.Addr(), 1), tapvs.RealServerEdit{}), `tapvs: RealServerEdit: ...`)
	// Weight 0 quiesces: every request goes to rs2.
	if err := l.LB.EditRealServer(k, rs1, tapvs.RealServerEdit{Weight: new(0)}); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if got := answer(t, l, l.URL()); got != "rs2" {
			t.Errorf("rs1 quiesced, yet %s answered", got)
		}
	}
}

// Allow and deny lists refuse a client's new connections; limits are
// set and listed.
func TestDefence(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	k := l.Service
	vip := netip.AddrPortFrom(l.VIP, tapvstest.HTTPPort)
	client := netip.MustParsePrefix("172.25.254.1/32")
	if !connects(t, l, vip) {
		t.Fatal("no connection before any list")
	}
	if err := l.LB.AddDeny(k, client); err != nil {
		t.Fatal(err)
	}
	if connects(t, l, vip) {
		t.Error("the client is denied, yet connected")
	}
	if s := service(t, l, k); !reflect.DeepEqual(s.Deny, []netip.Prefix{client}) {
		t.Errorf("deny list %v", s.Deny)
	}
	refused(t, "denied twice", l.LB.AddDeny(k, client), "tapvs: add denied source 172.25.254.1/32 of "+k.String()+": ...")
	if err := l.LB.RemoveDeny(k, client); err != nil {
		t.Fatal(err)
	}
	if !connects(t, l, vip) {
		t.Error("the deny list is empty, yet the client did not connect")
	}
	refused(t, "host bits", l.LB.AddAllow(k, netip.MustParsePrefix("172.25.254.1/24")),
		`tapvs: add allowed source 172.25.254.1/24 of `+k.String()+`: "172.25.254.1/24" has host bits set (172.25.254.0/24?)`)
	refused(t, "not listed", l.LB.RemoveAllow(k, client), "tapvs: remove allowed source 172.25.254.1/32 of "+k.String()+": ...")
	other := netip.MustParsePrefix("10.99.0.0/16")
	if err := l.LB.AddAllow(k, other); err != nil {
		t.Fatal(err)
	}
	if connects(t, l, vip) {
		t.Error("only 10.99.0.0/16 is allowed, yet the client connected")
	}
	if err := l.LB.AddAllow(k, netip.MustParsePrefix("172.25.254.0/24")); err != nil {
		t.Fatal(err)
	}
	if !connects(t, l, vip) {
		t.Error("the client's /24 is allowed, yet it did not connect")
	}
	if err := l.LB.EditService(k, tapvs.ServiceEdit{Limits: &tapvs.Limits{SourceCPS: 100, SourceConns: 10, HalfOpen: 5}}); err != nil {
		t.Fatal(err)
	}
	if s := service(t, l, k); s.Limits != (tapvs.Limits{SourceCPS: 100, SourceConns: 10, HalfOpen: 5}) || len(s.Allow) != 2 {
		t.Errorf("listed limits %+v, allow %v", s.Limits, s.Allow)
	}
}

// Timeouts, zeroed counters and local addresses.
func TestTimeoutsCountersLocalAddrs(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	k := l.Service
	before := l.LB.Timeouts()
	if err := l.LB.SetTimeouts(tapvs.Timeouts{TCP: 120 * time.Second, UDP: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if got := l.LB.Timeouts(); got != (tapvs.Timeouts{TCP: 120 * time.Second, TCPFin: before.TCPFin, UDP: 30 * time.Second}) {
		t.Errorf("timeouts %+v after TCP 120s and UDP 30s (TCPFin was %v)", got, before.TCPFin)
	}
	refused(t, "TCP 1.5s", l.LB.SetTimeouts(tapvs.Timeouts{TCP: 1500 * time.Millisecond}), "tapvs: Timeouts.TCP: 1.5s is not a whole number of seconds")
	refused(t, "UDP a year", l.LB.SetTimeouts(tapvs.Timeouts{TCP: 60 * time.Second, UDP: 365 * 24 * time.Hour}), "tapvs: Timeouts.UDP: ...")
	if got := l.LB.Timeouts(); got.TCP != 120*time.Second {
		t.Errorf("a refused change of the timeouts changed TCP's: %+v", got)
	}

	answer(t, l, l.URL())
	if s := service(t, l, k); s.Conns != 1 || s.InPackets == 0 || s.OutBytes == 0 {
		t.Errorf("after a request, the service counted %+v", s)
	}
	l.LB.ZeroCounters()
	if s := service(t, l, k); s.Conns != 0 || s.InPackets != 0 || s.OutBytes != 0 {
		t.Errorf("after ZeroCounters, the service counts %d connections, %d and %d", s.Conns, s.InPackets, s.OutBytes)
	}
	if n := l.LB.Counters(); n.ConnsCreated != 1 {
		t.Errorf("tapvs's own totals go on after ZeroCounters: %+v", n)
	}
	for _, rs := range l.LB.RealServers() {
		if rs.Conns != 0 || rs.InBytes != 0 {
			t.Errorf("after ZeroCounters, %+v", rs)
		}
	}
	answer(t, l, l.URL())
	if err := l.LB.ZeroService(k); err != nil {
		t.Fatal(err)
	}
	if s := service(t, l, k); s.Conns != 0 {
		t.Errorf("after ZeroService, the service counts %d connections", s.Conns)
	}
	refused(t, "zero no service", l.LB.ZeroService(tapvs.ServiceKey{VIP: netip.AddrPortFrom(l.VIP, 1)}), "tapvs: zero service tcp "+l.VIP.String()+":1: ...")

	// The estimate (every 2s, from the second on) sees the requests'
	// connections and packets; the service's is its servers' sum.
	eventually(t, "a rate estimated", func() bool {
		answer(t, l, l.URL())
		r := service(t, l, k).Rate
		return r.CPS > 0 && r.InPPS > 0 && r.OutPPS > 0 && r.InBPS > r.InPPS && r.OutBPS > r.OutPPS
	})
	var sum float64
	for _, s := range l.LB.RealServers() {
		sum += s.Rate.CPS
	}
	if sum <= 0 {
		t.Errorf("the service has a rate, its servers none: %+v", l.LB.RealServers())
	}

	lips := service(t, l, k).LocalAddrs
	if len(lips) != 2 {
		t.Fatalf("the lab's service has local addresses %v", lips)
	}
	// The connections of the rates above linger in TIME_WAIT: only the
	// new ones are looked at.
	old := map[netip.AddrPort]bool{}
	for _, c := range l.LB.Connections() {
		old[c.Client] = true
	}
	if err := l.LB.RemoveLocalAddr(k, lips[0]); err != nil {
		t.Fatal(err)
	}
	if got := service(t, l, k).LocalAddrs; !reflect.DeepEqual(got, lips[1:]) {
		t.Errorf("local addresses %v after removing %s", got, lips[0])
	}
	for range 3 {
		answer(t, l, l.URL())
	}
	for _, c := range l.LB.Connections() {
		if c.Local.Addr() == lips[0] && !old[c.Client] {
			t.Errorf("a connection from removed local address %s: %+v", lips[0], c)
		}
	}
	refused(t, "removed twice", l.LB.RemoveLocalAddr(k, lips[0]), "tapvs: remove local address "+lips[0].String()+" from "+k.String()+": ...")
	if err := l.LB.AddLocalAddr(k, lips[0]); err != nil {
		t.Fatal(err)
	}
	refused(t, "mapped", l.LB.AddLocalAddr(k, netip.MustParseAddr("::ffff:"+lips[0].String())),
		"tapvs: add local address ::ffff:"+lips[0].String()+" to "+k.String()+": ...")
	refused(t, "added twice", l.LB.AddLocalAddr(k, lips[0]), "tapvs: add local address "+lips[0].String()+" to "+k.String()+": ...")

	if err := l.LB.RemoveServices(); err != nil {
		t.Fatal(err)
	}
	if s := l.LB.Services(); len(s) != 0 {
		t.Errorf("every service removed, %d listed", len(s))
	}
}

// A service added with every setting lists them back; a bad one is refused
// naming the Service field.
func TestAddServiceSettings(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{})
	k := tapvs.ServiceKey{Protocol: tapvs.TCP, VIP: netip.AddrPortFrom(l.VIP, 8000)}
	rs1 := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
	svc := tapvs.Service{ServiceKey: k, Name: "full", Scheduler: "mh", SchedFlags: []string{"mh-port"}, LocalAddrs: l.LocalAddrs[:1],
		RealServers: []tapvs.RealServer{{Addr: rs1, Weight: 2, UThreshold: 10, LThreshold: 5}},
		Synproxy:    true, ClientAddr: tapvs.ClientAddrNone, Timestamps: tapvs.TimestampsTranslate,
		Persistence: time.Minute, PersistenceMask: 16, EstablishedTimeout: 2 * time.Minute,
		Limits: tapvs.Limits{SourceCPS: 10}, Allow: []netip.Prefix{netip.MustParsePrefix("172.25.0.0/16")},
		Deny: []netip.Prefix{netip.MustParsePrefix("172.25.9.0/24")}}

	for name, c := range map[string]struct {
		change func(*tapvs.Service)
		want   string
	}{
		"scheduler": {func(s *tapvs.Service) { s.Scheduler = "foo" },
			`tapvs: Service.Scheduler: service ` + k.String() + `: "foo" is not a scheduler (one of [rr wrr lc wlc sed nq sh mh dh lblc lblcr fo ovf])`},
		"flags":          {func(s *tapvs.Service) { s.SchedFlags = []string{"sh-port"} }, `tapvs: Service.SchedFlags: ...`},
		"client address": {func(s *tapvs.Service) { s.ClientAddr = "v3" }, `tapvs: Service.ClientAddr: ...`},
		"synproxy on udp": {func(s *tapvs.Service) { s.Protocol = tapvs.UDP },
			`tapvs: Service.Synproxy: service UDP ` + k.VIP.String() + `: only a TCP service can have a SYN proxy`},
		"persistence":    {func(s *tapvs.Service) { s.Persistence = -time.Second }, `tapvs: Service.Persistence: ...`},
		"mask":           {func(s *tapvs.Service) { s.Persistence = 0 }, `tapvs: Service.PersistenceMask: ...`},
		"limit":          {func(s *tapvs.Service) { s.Limits.HalfOpen = -2 }, `tapvs: Service.Limits.HalfOpen: ...`},
		"local address":  {func(s *tapvs.Service) { s.LocalAddrs = nil }, `tapvs: Service.LocalAddrs: ...`},
		"real server":    {func(s *tapvs.Service) { s.RealServers[0].LThreshold = 20 }, `tapvs: Service.RealServers[0]: ...`},
		"deny host bits": {func(s *tapvs.Service) { s.Deny = []netip.Prefix{netip.MustParsePrefix("172.25.9.1/24")} }, `tapvs: Service.Deny[0]: ...`},
		"name":           {func(s *tapvs.Service) { s.Name = "a\nb" }, `tapvs: Service.Name: ...`},
		"mapped real server": {func(s *tapvs.Service) { s.RealServers[0].Addr = netip.MustParseAddrPort("[::ffff:10.20.1.2]:80") },
			`tapvs: Service.RealServers[0]: service ` + k.String() + `: "::ffff:10.20.1.2" is an IPv4-mapped IPv6 address: write the IPv4 address 10.20.1.2`},
		"mapped VIP": {func(s *tapvs.Service) { s.VIP = netip.MustParseAddrPort("[::ffff:172.25.254.100]:8000") }, `tapvs: Service: service tcp [::ffff:172.25.254.100]:8000: VIP: ...`},
	} {
		bad := svc
		bad.RealServers = []tapvs.RealServer{svc.RealServers[0]}
		c.change(&bad)
		refused(t, name, l.LB.AddService(bad), c.want)
		if _, ok := l.LB.Service(k); ok {
			t.Fatalf("%s: refused, yet the service was added", name)
		}
	}

	if err := l.LB.AddService(svc); err != nil {
		t.Fatal(err)
	}
	got := service(t, l, k).Service
	if !reflect.DeepEqual(got, svc) {
		t.Errorf("added\n%+v\nlisted\n%+v", svc, got)
	}
	if got := answer(t, l, "http://"+k.VIP.String()); got != "rs1" {
		t.Errorf("the service's one server is rs1; %s answered", got)
	}
	// Listed, removed and added back: the same service.
	if err := l.LB.RemoveService(k); err != nil {
		t.Fatal(err)
	}
	if err := l.LB.AddService(got); err != nil {
		t.Fatal(err)
	}
	if again := service(t, l, k).Service; !reflect.DeepEqual(again, svc) {
		t.Errorf("added back from its listing, listed\n%+v", again)
	}
}

// A match service (tapvsadm -f): its selector from Config.Marks, its key
// the mark alone.
func TestMatchService(t *testing.T) {
	sel := tapvs.Mark{Mark: 7, VIP: netip.MustParseAddr("172.25.254.100"), Ports: []tapvs.PortRange{{First: 8080, Last: 8081}}}
	l := tapvstest.NewLab(t, tapvstest.Options{Marks: []tapvs.Mark{sel}})
	if l.VIP != sel.VIP {
		t.Fatalf("the lab's VIP is %s, not the selector's", l.VIP)
	}
	k := tapvs.MarkKey(7)
	rs1 := netip.AddrPortFrom(l.RealServers[0].Addr, tapvstest.HTTPPort)
	if err := l.LB.AddService(tapvs.Service{ServiceKey: k, Scheduler: "rr", LocalAddrs: l.LocalAddrs, RealServers: []tapvs.RealServer{{Addr: rs1}}}); err != nil {
		t.Fatal(err)
	}
	s := service(t, l, k)
	sel.Protocol = tapvs.TCP
	if s.Match == nil || !reflect.DeepEqual(*s.Match, sel) || s.String() != "fwm 7" {
		t.Errorf("match service listed %s with selector %+v", s, s.Match)
	}
	if got := answer(t, l, "http://"+netip.AddrPortFrom(l.VIP, 8081).String()); got != "rs1" {
		t.Errorf("through the match service, %s answered", got)
	}
	if err := l.LB.EditService(k, tapvs.ServiceEdit{Scheduler: new("wlc")}); err != nil {
		t.Fatal(err)
	}
	if err := l.LB.EditService(k, tapvs.ServiceEdit{Persistence: new(time.Minute), PersistenceMask: new(24)}); err != nil {
		t.Fatal(err)
	}
	if s := service(t, l, k); s.Scheduler != "wlc" || s.Persistence != time.Minute || s.PersistenceMask != 24 {
		t.Errorf("after the edits: %s", dump(s))
	}
	refused(t, "mark with a VIP", l.LB.EditService(tapvs.ServiceKey{Mark: 7, VIP: netip.AddrPortFrom(l.VIP, 80)}, tapvs.ServiceEdit{}),
		"tapvs: edit service fwm 7: mark 7 names the service alone: leave Protocol and VIP out (Config.Marks has them)")
	// A match service's check, as a VIP:port service's.
	if err := l.LB.SetHealthCheck(k, tapvs.HealthCheck{Type: "tcp"}); err != nil {
		t.Fatal(err)
	}
	if h, err := l.LB.HealthStatus(k); err != nil || h.Check == nil || h.Check.Type != "tcp" || len(h.Servers) != 1 || h.Servers[0].Addr != rs1 {
		t.Errorf("a match service's health: %+v, %v", h, err)
	}
	if err := l.LB.ClearHealthCheck(k); err != nil {
		t.Fatal(err)
	}
	if h, err := l.LB.HealthStatus(k); err != nil || h.Check != nil {
		t.Errorf("a match service's health, cleared: %+v, %v", h, err)
	}
	refused(t, "no mark 8", l.LB.AddService(tapvs.Service{ServiceKey: tapvs.MarkKey(8), LocalAddrs: l.LocalAddrs}), "tapvs: add service fwm 8: ...")
}

// Config.Marks is checked before anything starts, each field by its name.
func TestStartMarksRefused(t *testing.T) {
	l := tapvstest.NewLab(t, tapvstest.Options{NoService: true})
	side := func(tap, ns, addr string) tapvs.Side {
		return tapvs.Side{TAP: tap, Netns: ns, Addr: netip.MustParsePrefix(addr)}
	}
	vip := netip.MustParseAddr("172.25.254.100")
	for _, c := range []struct {
		mark tapvs.Mark
		want string
	}{
		{tapvs.Mark{VIP: vip, Ports: []tapvs.PortRange{{First: 80}}}, "tapvs: Config.Marks[0].Mark: 0 is not a mark (1-4294967295)"},
		{tapvs.Mark{Mark: 1, Ports: []tapvs.PortRange{{First: 80}}}, `tapvs: Config.Marks[0].VIP: ...`},
		{tapvs.Mark{Mark: 1, VIP: vip, Protocol: "sctp", Ports: []tapvs.PortRange{{First: 80}}}, `tapvs: Config.Marks[0].Protocol: protocol "sctp": tcp or udp`},
		{tapvs.Mark{Mark: 1, VIP: vip}, "tapvs: Config.Marks[0].Ports: has no ports"},
		{tapvs.Mark{Mark: 1, VIP: vip, Ports: []tapvs.PortRange{{First: 90, Last: 80}}}, "tapvs: Config.Marks[0].Ports: port range 90-80 is not ports 1-65535, low to high"},
		{tapvs.Mark{Mark: 1, VIP: vip, Bits: 33, Ports: []tapvs.PortRange{{First: 80}}}, "tapvs: Config.Marks[0].Bits: 33 is not a prefix length of 172.25.254.100"},
		{tapvs.Mark{Mark: 1, VIP: vip, Bits: -1, Ports: []tapvs.PortRange{{First: 80}}}, "tapvs: Config.Marks[0].Bits: -1 is not a prefix length of 172.25.254.100"},
		{tapvs.Mark{Mark: 1, VIP: vip, Bits: 29, Ports: []tapvs.PortRange{{First: 80}}}, "tapvs: Config.Marks[0].Bits: 172.25.254.100/29 has host bits set: its prefix is 172.25.254.96/29"},
		{tapvs.Mark{Mark: 1, VIP: netip.MustParseAddr("172.25.254.0"), Bits: 23, Ports: []tapvs.PortRange{{First: 80}}}, "tapvs: Config.Marks[0].Bits: 172.25.254.0/23 is more than 256 addresses (IPv4 /24 or longer, IPv6 /120 or longer)"},
	} {
		lb, err := tapvs.Start(context.Background(), tapvs.Config{Client: side("tvbadc", l.Client, "172.25.254.254/24"),
			Server: side("tvbads", l.Router, "172.25.84.4/24"), Marks: []tapvs.Mark{c.mark}})
		if err == nil {
			lb.Close()
		}
		refused(t, c.want, err, c.want)
	}
}
