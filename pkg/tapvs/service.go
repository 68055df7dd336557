package tapvs

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tapvs/tapvs/control"
	"github.com/tapvs/tapvs/defence"
	"github.com/tapvs/tapvs/nat"
)

// The changes tapvsadm makes besides adding and removing (ipvsadm -E, -e,
// -Z, --set, -P/-Q, the allow and deny lists): each goes through the
// control plane's Manager as tapvsadm's requests do, so it is refused or
// applied exactly as there. A change of several fields is one batch, one
// operation per field, so that a refusal says which field it is about and
// nothing is applied.

// ClientAddr is how the real servers learn the client's address: tapvs
// connects to them from a local address (FULLNAT), so they see none.
type ClientAddr string

// The ways of passing the client's address on.
const (
	ClientAddrNone ClientAddr = "none"     // the servers see the local address only
	TOA            ClientAddr = "toa"      // a TCP option in the SYN (TCP only)
	ProxyV1        ClientAddr = "proxy-v1" // HAProxy's PROXY protocol, text (TCP only)
	ProxyV2        ClientAddr = "proxy-v2" // HAProxy's PROXY protocol, binary
)

// Timestamps is what a TCP service without SYN proxy does with the
// client's TCP timestamps.
type Timestamps string

// The ways of treating the client's timestamps.
const (
	TimestampsTranslate Timestamps = "translate" // kept, shifted per connection
	TimestampsRemove    Timestamps = "remove"    // taken out of every segment
)

// Limits bound a service's new connections (tapvsadm --source-cps,
// --source-conns, --half-open); 0 is no limit.
type Limits struct {
	SourceCPS   int // new connections per second from one source address
	SourceConns int // connections open at once from one source address
	// HalfOpen bounds the handshakes the clients have not finished (a
	// TCP service without SYN proxy).
	HalfOpen int
}

// ServiceEdit changes some of a service's settings (tapvsadm -E): a nil
// field is left as it is. Open connections keep going, made the way they
// were. With Go 1.26's new(value): ServiceEdit{Scheduler: new("rr")}.
type ServiceEdit struct {
	Name *string
	// Scheduler, changed, drops the old scheduler's flags unless
	// SchedFlags names the new one's.
	Scheduler  *string
	SchedFlags *[]string // an empty list clears them
	Synproxy   *bool
	ClientAddr *ClientAddr
	Timestamps *Timestamps
	// Persistence is the persistence timeout (-p), whole seconds; 0 turns
	// persistence off. PersistenceMask is the prefix length of the client
	// network a persistence template covers (-M).
	Persistence     *time.Duration
	PersistenceMask *int
	// EstablishedTimeout is the ESTABLISHED (and UDP) timeout of the
	// service's new connections (-V), whole seconds.
	EstablishedTimeout *time.Duration
	// Limits replaces the three limits.
	Limits *Limits
}

// RealServerEdit changes some of a real server's settings (tapvsadm -e):
// a nil field is left as it is.
type RealServerEdit struct {
	// Weight 0 quiesces the server: it keeps its connections and takes no
	// new one.
	Weight                 *int
	UThreshold, LThreshold *uint32
}

// Timeouts are the connection timeouts (tapvsadm --set): TCP is the
// ESTABLISHED one, TCPFin FIN_WAIT's, UDP a UDP connection's. Whole
// seconds; in SetTimeouts, 0 leaves one as it is.
type Timeouts struct {
	TCP, TCPFin, UDP time.Duration
}

// change is one control operation and what it carries of the caller's
// value: its refusal is said with field before it.
type change struct {
	field string
	op    control.Op
}

// apply runs cs as one batch, all or nothing.
func (lb *LB) apply(cs []change) error {
	ops := make([]control.Op, len(cs))
	for i, c := range cs {
		ops[i] = c.op
	}
	err := lb.d.Manager.Batch(ops)
	if err == nil {
		return nil
	}
	var be *control.BatchError
	if errors.As(err, &be) && be.Index < len(cs) {
		return fmt.Errorf("tapvs: %s: %w", cs[be.Index].field, be.Err)
	}
	return fmt.Errorf("tapvs: %w", err)
}

// fieldError is a refusal made here, before the control plane sees the
// change; it names the service as nat's refusals do.
func fieldError(field string, k ServiceKey, format string, a ...any) error {
	return fmt.Errorf("tapvs: %s: service %s: %s", field, k, fmt.Sprintf(format, a...))
}

// seconds checks a duration the control plane keeps in whole seconds, as
// tapvsadm and the API give them.
func seconds(d time.Duration) error {
	if d < 0 || d%time.Second != 0 {
		return fmt.Errorf("%v is not a whole number of seconds", d)
	}
	return nil
}

// serviceChanges are the operations that add s whole; field is how the
// caller names s ("Service", "Config.Services[2]").
func serviceChanges(s Service, field string) ([]change, error) {
	k, err := s.control()
	if err != nil {
		return nil, fmt.Errorf("tapvs: %s: service %s: %w", field, s.ServiceKey, err)
	}
	f := func(name string) string { return field + "." + name }
	if len(s.LocalAddrs) == 0 {
		return nil, fieldError(f("LocalAddrs"), s.ServiceKey, "no local address (FULLNAT needs one to reach the real servers from)")
	}
	if err := nat.CheckName(s.Name); err != nil {
		return nil, fieldError(f("Name"), s.ServiceKey, "%v", err)
	}
	sched := s.Scheduler
	if sched == "" {
		sched = "wlc"
	}
	if err := nat.ValidScheduler(sched); err != nil {
		return nil, fieldError(f("Scheduler"), s.ServiceKey, "%v", err)
	}
	spec := control.ServiceSpec{ServiceKey: k, Name: s.Name, Scheduler: s.Scheduler}
	if s.SchedFlags != nil {
		if _, err := nat.ParseSchedFlags(sched, s.SchedFlags); err != nil {
			return nil, fieldError(f("SchedFlags"), s.ServiceKey, "%v", err)
		}
		spec.SchedFlags = &s.SchedFlags
	}
	// Persistence goes in with the service: a port 0 service is refused
	// without it.
	if s.Persistence != 0 {
		if err := seconds(s.Persistence); err != nil {
			return nil, fieldError(f("Persistence"), s.ServiceKey, "%v", err)
		}
		spec.Persistent = &s.Persistence
	}
	if s.PersistenceMask != 0 {
		if s.Persistence == 0 {
			return nil, fieldError(f("PersistenceMask"), s.ServiceKey, "a mask needs persistence (%s)", f("Persistence"))
		}
		spec.Netmask = &s.PersistenceMask
	}
	cs := []change{{"add service " + s.ServiceKey.String(), control.Op{Kind: control.OpAddService, Service: spec}}}
	// The other settings are edits of the service just added, one
	// operation each, as tapvsadm -E makes them.
	edit := ServiceEdit{}
	if s.Synproxy {
		edit.Synproxy = &s.Synproxy
	}
	if s.ClientAddr != "" {
		edit.ClientAddr = &s.ClientAddr
	}
	if s.Timestamps != "" {
		edit.Timestamps = &s.Timestamps
	}
	if s.EstablishedTimeout != 0 {
		edit.EstablishedTimeout = &s.EstablishedTimeout
	}
	if s.Limits != (Limits{}) {
		edit.Limits = &s.Limits
	}
	ecs, err := edit.changes(s.ServiceKey, k, field)
	if err != nil {
		return nil, err
	}
	cs = append(cs, ecs...)
	for i, l := range s.LocalAddrs {
		if err := control.CheckAddr(l); err != nil {
			return nil, fieldError(fmt.Sprintf("%s[%d]", f("LocalAddrs"), i), s.ServiceKey, "%v", err)
		}
		cs = append(cs, change{fmt.Sprintf("%s[%d]", f("LocalAddrs"), i), control.Op{Kind: control.OpAddLocalAddr, Service: spec, LocalAddr: l}})
	}
	for i, rs := range s.RealServers {
		if err := control.CheckAddr(rs.Addr.Addr()); err != nil {
			return nil, fieldError(fmt.Sprintf("%s[%d]", f("RealServers"), i), s.ServiceKey, "%v", err)
		}
		cs = append(cs, change{fmt.Sprintf("%s[%d]", f("RealServers"), i), control.Op{Kind: control.OpAddDest, Service: spec, Dest: destSpec(rs)}})
	}
	for _, l := range []struct {
		name string
		kind control.OpKind
		ps   []netip.Prefix
	}{{"Allow", control.OpAddAllow, s.Allow}, {"Deny", control.OpAddDeny, s.Deny}} {
		for i, p := range l.ps {
			name := fmt.Sprintf("%s[%d]", f(l.name), i)
			cp, err := prefix(p)
			if err != nil {
				return nil, fieldError(name, s.ServiceKey, "%v", err)
			}
			cs = append(cs, change{name, control.Op{Kind: l.kind, Service: spec, Prefix: cp}})
		}
	}
	return cs, nil
}

// prefix reads p as tapvsadm's prefix is read (an IPv4 prefix without
// host bits).
func prefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, errors.New("no prefix")
	}
	return defence.ParsePrefix(p.String())
}

// changes are e's operations on the service k (ck to the control plane):
// one per field, so a refusal names it. field is how the caller names e.
func (e ServiceEdit) changes(k ServiceKey, ck control.ServiceKey, field string) ([]change, error) {
	f := func(name string) string { return field + "." + name }
	var cs []change
	add := func(name string, s control.ServiceSpec) {
		s.ServiceKey = ck
		cs = append(cs, change{f(name), control.Op{Kind: control.OpEditService, Service: s}})
	}
	if e.Name != nil {
		if *e.Name == "" {
			return nil, fieldError(f("Name"), k, "an empty name: a service keeps a name once it has one")
		}
		add("Name", control.ServiceSpec{Name: *e.Name})
	}
	switch {
	case e.Scheduler != nil:
		// The scheduler and its flags in one operation: the flags are
		// read as the new scheduler's.
		if err := nat.ValidScheduler(*e.Scheduler); err != nil {
			return nil, fieldError(f("Scheduler"), k, "%v", err)
		}
		name := "Scheduler"
		if e.SchedFlags != nil {
			name = "SchedFlags"
		}
		add(name, control.ServiceSpec{Scheduler: *e.Scheduler, SchedFlags: e.SchedFlags})
	case e.SchedFlags != nil:
		add("SchedFlags", control.ServiceSpec{SchedFlags: e.SchedFlags})
	}
	if e.Synproxy != nil {
		add("Synproxy", control.ServiceSpec{Synproxy: e.Synproxy})
	}
	if e.ClientAddr != nil {
		c, err := nat.ParseClientAddr(string(*e.ClientAddr))
		if err != nil {
			return nil, fieldError(f("ClientAddr"), k, "%v", err)
		}
		add("ClientAddr", control.ServiceSpec{ClientAddr: &c})
	}
	if e.Timestamps != nil {
		t, err := nat.ParseTimestamps(string(*e.Timestamps))
		if err != nil {
			return nil, fieldError(f("Timestamps"), k, "%v", err)
		}
		add("Timestamps", control.ServiceSpec{Timestamps: &t})
	}
	if e.Persistence != nil {
		if err := seconds(*e.Persistence); err != nil {
			return nil, fieldError(f("Persistence"), k, "%v", err)
		}
		add("Persistence", control.ServiceSpec{Persistent: e.Persistence})
	}
	if e.PersistenceMask != nil {
		add("PersistenceMask", control.ServiceSpec{Netmask: e.PersistenceMask})
	}
	if e.EstablishedTimeout != nil {
		d := *e.EstablishedTimeout
		if err := seconds(d); err != nil {
			return nil, fieldError(f("EstablishedTimeout"), k, "%v", err)
		}
		if d == 0 {
			// The control plane reads 0 as "unchanged"; here it would be a
			// timeout of nothing.
			return nil, fieldError(f("EstablishedTimeout"), k, "%v", nat.CheckTimeout(d))
		}
		add("EstablishedTimeout", control.ServiceSpec{EstablishedTimeout: d})
	}
	if e.Limits != nil {
		l := *e.Limits
		for _, v := range []struct {
			name string
			spec control.LimitsSpec
		}{
			{"SourceCPS", control.LimitsSpec{SourceCPS: &l.SourceCPS}},
			{"SourceConns", control.LimitsSpec{SourceConns: &l.SourceConns}},
			{"HalfOpen", control.LimitsSpec{HalfOpen: &l.HalfOpen}},
		} {
			add("Limits."+v.name, control.ServiceSpec{Limits: v.spec})
		}
	}
	return cs, nil
}

// EditService changes the settings e sets of a service, all or none.
func (lb *LB) EditService(k ServiceKey, e ServiceEdit) error {
	ck, err := k.control()
	if err != nil {
		return fmt.Errorf("tapvs: edit service %s: %w", k, err)
	}
	cs, err := e.changes(k, ck, "ServiceEdit")
	if err != nil {
		return err
	}
	if len(cs) == 0 {
		// Nothing to change, but the service must be there, as for -E.
		cs = []change{{"ServiceEdit", control.Op{Kind: control.OpEditService, Service: control.ServiceSpec{ServiceKey: ck}}}}
	}
	return lb.apply(cs)
}

// EditRealServer changes the settings e sets of a service's real server,
// all or none.
func (lb *LB) EditRealServer(k ServiceKey, addr netip.AddrPort, e RealServerEdit) error {
	ck, err := k.control()
	if err != nil {
		return fmt.Errorf("tapvs: edit real server %s of %s: %w", addr, k, err)
	}
	svc := control.ServiceSpec{ServiceKey: ck}
	var cs []change
	if e.Weight != nil {
		cs = append(cs, change{"RealServerEdit.Weight", control.Op{Kind: control.OpEditDest, Service: svc, Dest: control.DestSpec{Addr: addr, Weight: e.Weight}}})
	}
	if err := control.CheckAddr(addr.Addr()); err != nil {
		return fmt.Errorf("tapvs: edit real server %s of %s: %w", addr, k, err)
	}
	// Both thresholds in one operation: each is checked against the other.
	if e.UThreshold != nil || e.LThreshold != nil {
		var names []string
		if e.UThreshold != nil {
			names = append(names, "RealServerEdit.UThreshold")
		}
		if e.LThreshold != nil {
			names = append(names, "RealServerEdit.LThreshold")
		}
		cs = append(cs, change{strings.Join(names, ", "), control.Op{Kind: control.OpEditDest, Service: svc,
			Dest: control.DestSpec{Addr: addr, UThreshold: e.UThreshold, LThreshold: e.LThreshold}}})
	}
	if len(cs) == 0 {
		// Nothing to change, but the server must be there, as for -e.
		cs = append(cs, change{"RealServerEdit", control.Op{Kind: control.OpEditDest, Service: svc, Dest: control.DestSpec{Addr: addr}}})
	}
	return lb.apply(cs)
}

// AddLocalAddr adds a local address to a service (tapvsadm -P).
func (lb *LB) AddLocalAddr(k ServiceKey, a netip.Addr) error {
	if err := control.CheckAddr(a); err != nil {
		return fmt.Errorf("tapvs: add local address %s to %s: %w", a, k, err)
	}
	return lb.keyed(k, "add local address "+a.String()+" to", control.Op{Kind: control.OpAddLocalAddr, LocalAddr: a})
}

// RemoveLocalAddr removes a local address from a service (tapvsadm -Q):
// the connections made from it go on until they end.
func (lb *LB) RemoveLocalAddr(k ServiceKey, a netip.Addr) error {
	return lb.keyed(k, "remove local address "+a.String()+" from", control.Op{Kind: control.OpDeleteLocalAddr, LocalAddr: a})
}

// AddAllow puts a source prefix on a service's allow list: once the list
// has one, only its sources may open connections to the service. Prefixes
// are IPv4, without host bits.
func (lb *LB) AddAllow(k ServiceKey, p netip.Prefix) error {
	return lb.list(k, "add allowed source", control.OpAddAllow, p)
}

// RemoveAllow takes a source prefix off a service's allow list.
func (lb *LB) RemoveAllow(k ServiceKey, p netip.Prefix) error {
	return lb.list(k, "remove allowed source", control.OpDeleteAllow, p)
}

// AddDeny puts a source prefix on a service's deny list: its sources may
// not open connections to the service. Open connections go on.
func (lb *LB) AddDeny(k ServiceKey, p netip.Prefix) error {
	return lb.list(k, "add denied source", control.OpAddDeny, p)
}

// RemoveDeny takes a source prefix off a service's deny list.
func (lb *LB) RemoveDeny(k ServiceKey, p netip.Prefix) error {
	return lb.list(k, "remove denied source", control.OpDeleteDeny, p)
}

func (lb *LB) list(k ServiceKey, what string, kind control.OpKind, p netip.Prefix) error {
	cp, err := prefix(p)
	if err != nil {
		return fmt.Errorf("tapvs: %s %s of %s: %w", what, p, k, err)
	}
	return lb.keyed(k, what+" "+cp.String()+" of", control.Op{Kind: kind, Prefix: cp})
}

// keyed runs op on the service k; what says what it does, before k.
func (lb *LB) keyed(k ServiceKey, what string, op control.Op) error {
	ck, err := k.control()
	if err == nil {
		op.Service.ServiceKey = ck
		err = lb.d.Manager.Batch([]control.Op{op})
	}
	if err != nil {
		var be *control.BatchError
		if errors.As(err, &be) {
			err = be.Err
		}
		return fmt.Errorf("tapvs: %s %s: %w", what, k, err)
	}
	return nil
}

// SetTimeouts sets the timeouts t gives (0 leaves one as it is) for the
// services and for their open connections, at their next packet.
func (lb *LB) SetTimeouts(t Timeouts) error {
	var cs []change
	for _, v := range []struct {
		name string
		d    time.Duration
		t    control.Timeouts
	}{{"TCP", t.TCP, control.Timeouts{TCP: t.TCP}}, {"TCPFin", t.TCPFin, control.Timeouts{TCPFin: t.TCPFin}}, {"UDP", t.UDP, control.Timeouts{UDP: t.UDP}}} {
		if v.d == 0 {
			continue
		}
		if err := seconds(v.d); err != nil {
			return fmt.Errorf("tapvs: Timeouts.%s: %w", v.name, err)
		}
		cs = append(cs, change{"Timeouts." + v.name, control.Op{Kind: control.OpSetTimeouts, Timeouts: v.t}})
	}
	if len(cs) == 0 {
		return nil
	}
	return lb.apply(cs)
}

// Timeouts reads the timeouts (tapvsadm -L --timeout).
func (lb *LB) Timeouts() Timeouts {
	t := lb.d.Manager.Timeouts()
	sec := func(s uint32) time.Duration { return time.Duration(s) * time.Second }
	return Timeouts{TCP: sec(t.TCP), TCPFin: sec(t.TCPFin), UDP: sec(t.UDP)}
}

// ZeroCounters sets every counter of every service and real server to 0
// (tapvsadm -Z); Counters' totals are tapvs's own and go on.
func (lb *LB) ZeroCounters() { lb.d.Manager.Zero() }

// ZeroService sets the counters of one service and its real servers to 0
// (tapvsadm -Z -t).
func (lb *LB) ZeroService(k ServiceKey) error {
	ck, err := k.control()
	if err == nil {
		err = lb.d.Manager.ZeroService(ck)
	}
	if err != nil {
		return fmt.Errorf("tapvs: zero service %s: %w", k, err)
	}
	return nil
}
