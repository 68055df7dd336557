package control

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/defence"
	"github.com/tapvs/tapvs/nat"
)

// The HTTP edge: the API's strings (package api) become typed keys here and
// nowhere else, so the Manager never parses and a malformed field is
// refused, naming it, before any transaction starts.

// parseKey reads a service's protocol and VIP:port.
func parseKey(k api.ServiceKey) (ServiceKey, error) {
	if mk, ok, err := parseMarkKey(k); ok {
		return mk, err
	}
	p, err := nat.ParseProtocol(k.Protocol)
	if err != nil {
		return ServiceKey{}, err
	}
	ap, err := netip.ParseAddrPort(k.Addr)
	if err != nil {
		return ServiceKey{}, fmt.Errorf("%q is not VIP:port (IPv6: [VIP]:port)", k.Addr)
	}
	if err := plainAddr(k.Addr, ap.Addr()); err != nil {
		return ServiceKey{}, err
	}
	return ServiceKey{Protocol: p, Addr: ap}, nil
}

// CheckAddr refuses what the API refuses of a VIP, LIP or real server
// address given typed (pkg/tapvs): the edge's check below, without the
// text it was read from.
func CheckAddr(a netip.Addr) error { return plainAddr(a.String(), a) }

// plainAddr refuses what netip reads but no VIP, LIP or real server can
// be: an address with a zone (tapvs's sides are its links: its addresses
// are not scoped to one), and an IPv4-mapped IPv6 address (an IPv4 host
// written as IPv6, which would make it an IPv6 service's).
func plainAddr(s string, a netip.Addr) error {
	switch {
	case a.Zone() != "":
		return fmt.Errorf("%q has a zone: tapvs's addresses are not scoped to a link", s)
	case a.Is4In6():
		return fmt.Errorf("%q is an IPv4-mapped IPv6 address: write the IPv4 address %s", s, a.Unmap())
	}
	return nil
}

// parseService reads a service to add or edit.
func parseService(s api.ServiceSpec) (ServiceSpec, error) {
	k, err := parseKey(s.ServiceKey)
	if err != nil {
		return ServiceSpec{}, err
	}
	var persist *time.Duration
	if s.Persistent != nil {
		d := time.Duration(*s.Persistent) * time.Second
		persist = &d
	}
	var mask *int
	if s.PersistenceNetmask != "" {
		// A match service's family is its selector's; a dotted mask is
		// IPv4's.
		v4 := k.Addr.Addr().Is4() || k.Mark != 0 && strings.Contains(s.PersistenceNetmask, ".")
		bits, err := nat.ParseNetmask(s.PersistenceNetmask, v4)
		if err != nil {
			return ServiceSpec{}, fmt.Errorf("persistence_netmask: %w", err)
		}
		mask = &bits
	}
	var client *nat.ClientAddr
	if s.ClientAddress != "" {
		c, err := nat.ParseClientAddr(s.ClientAddress)
		if err != nil {
			return ServiceSpec{}, fmt.Errorf("client_address: %w", err)
		}
		client = &c
	}
	var ts *nat.Timestamps
	if s.TCPTimestamps != "" {
		t, err := nat.ParseTimestamps(s.TCPTimestamps)
		if err != nil {
			return ServiceSpec{}, fmt.Errorf("tcp_timestamps: %w", err)
		}
		ts = &t
	}
	// Seconds as uint32 cannot overflow a Duration; the Manager checks the
	// value against nat's limit.
	return ServiceSpec{ServiceKey: k, Name: s.Name, Scheduler: s.Scheduler, SchedFlags: s.SchedFlags, Synproxy: s.Synproxy, ClientAddr: client, Timestamps: ts,
		EstablishedTimeout: time.Duration(s.EstablishedTimeout) * time.Second, Limits: limitsOf(s.Limits),
		Persistent: persist, Netmask: mask}, nil
}

// parseDest reads a real server; tapvs forwards by FULLNAT only, so any
// other method is refused here rather than silently ignored.
func parseDest(d api.DestSpec) (DestSpec, error) {
	ap, err := netip.ParseAddrPort(d.Addr)
	if err != nil {
		return DestSpec{}, fmt.Errorf("%q is not RIP:port (IPv6: [RIP]:port)", d.Addr)
	}
	if err := plainAddr(d.Addr, ap.Addr()); err != nil {
		return DestSpec{}, err
	}
	switch strings.ToLower(d.Forward) {
	case "", "fullnat", "fnat":
	default:
		return DestSpec{}, fmt.Errorf("forwarding method %q: tapvs does FULLNAT only (-b)", d.Forward)
	}
	return DestSpec{Addr: ap, Weight: d.Weight, UThreshold: d.UThreshold, LThreshold: d.LThreshold}, nil
}

// parseLIP reads a local address.
func parseLIP(s string) (netip.Addr, error) {
	// ipvsadm -z takes an address; the seed writes 127.0.0.1:80, so a port is
	// accepted and ignored ([fd00::10]:80 for IPv6).
	a, err := netip.ParseAddr(s)
	if ap, perr := netip.ParseAddrPort(s); perr == nil {
		a, err = ap.Addr(), nil
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not a local address", s)
	}
	if err := plainAddr(s, a); err != nil {
		return netip.Addr{}, err
	}
	return a, nil
}

// timeoutsOf reads ipvsadm --set's seconds.
func timeoutsOf(t api.Timeouts) Timeouts {
	sec := func(s uint32) time.Duration { return time.Duration(s) * time.Second }
	return Timeouts{TCP: sec(t.TCP), TCPFin: sec(t.TCPFin), UDP: sec(t.UDP)}
}

var opKinds = map[string]OpKind{
	"add-service": OpAddService, "edit-service": OpEditService, "delete-service": OpDeleteService,
	"clear": OpClear, "add-dest": OpAddDest, "edit-dest": OpEditDest, "delete-dest": OpDeleteDest,
	"add-laddr": OpAddLocalAddr, "delete-laddr": OpDeleteLocalAddr, "set-timeouts": OpSetTimeouts,
	"add-deny": OpAddDeny, "delete-deny": OpDeleteDeny, "add-allow": OpAddAllow, "delete-allow": OpDeleteAllow,
}

// parseOp reads one operation of a batch.
func parseOp(o api.Op) (Op, error) {
	kind, ok := opKinds[o.Op]
	if !ok {
		return Op{}, fmt.Errorf("%q is not an operation", o.Op)
	}
	op := Op{Kind: kind}
	need := func(what string, ok bool) error {
		if !ok {
			return fmt.Errorf("%s needs %s", o.Op, what)
		}
		return nil
	}
	var err error
	switch kind {
	case OpClear:
		return op, nil
	case OpSetTimeouts:
		if err := need("timeouts", o.Timeouts != nil); err != nil {
			return Op{}, err
		}
		op.Timeouts = timeoutsOf(*o.Timeouts)
		return op, nil
	}
	if err := need("a service", o.Service != nil); err != nil {
		return Op{}, err
	}
	switch kind {
	case OpAddService, OpEditService:
		op.Service, err = parseService(*o.Service)
	case OpDeleteService:
		op.Service.ServiceKey, err = parseKey(o.Service.ServiceKey)
	case OpAddDest, OpEditDest, OpDeleteDest:
		if err := need("a real server", o.Dest != nil); err != nil {
			return Op{}, err
		}
		if op.Dest, err = parseDest(*o.Dest); err == nil {
			op.Service.ServiceKey, err = parseKey(o.Service.ServiceKey)
		}
	case OpAddLocalAddr, OpDeleteLocalAddr:
		if op.LocalAddr, err = parseLIP(o.LocalAddr); err == nil {
			op.Service.ServiceKey, err = parseKey(o.Service.ServiceKey)
		}
	case OpAddDeny, OpDeleteDeny, OpAddAllow, OpDeleteAllow:
		if op.Prefix, err = defence.ParsePrefix(o.Prefix); err != nil {
			err = fmt.Errorf("prefix: %w", err)
		} else {
			op.Service.ServiceKey, err = parseKey(o.Service.ServiceKey)
		}
	}
	if err != nil {
		return Op{}, err
	}
	return op, nil
}

// parseBatch reads a batch's operations; a malformed one is refused as a
// BatchError naming it, before any is checked against the running state.
func parseBatch(ops []api.Op) ([]Op, error) {
	if err := checkBatchLen(len(ops)); err != nil {
		return nil, err
	}
	out := make([]Op, len(ops))
	for i, o := range ops {
		op, err := parseOp(o)
		if err != nil {
			return nil, &BatchError{Index: i, Err: err}
		}
		out[i] = op
	}
	return out, nil
}

// limitsOf reads a service's limits; nat checks their bounds.
func limitsOf(l *api.Limits) LimitsSpec {
	if l == nil {
		return LimitsSpec{}
	}
	n := func(p *uint32) *int {
		if p == nil {
			return nil
		}
		v := int(*p)
		return &v
	}
	return LimitsSpec{SourceCPS: n(l.SourceCPS), SourceConns: n(l.SourceConns), HalfOpen: n(l.HalfOpen)}
}
