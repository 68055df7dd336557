package config

import (
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// The faults: section (nat/fault.go): the network misbehaving on purpose,
// for failover and chaos tests, on a service, a real server or a client
// prefix, one direction or both. Never active unless set; a reload sets
// the file's list, and an empty one clears them.
//
//	faults:
//	  - {server: 10.20.1.2:8080, blackhole: true}           # a dead server: its health checks fail too
//	  - {service: tcp 172.25.254.100:80, direction: to_client, loss: 0.05}
//	  - {service: fwm 1, syn: refuse}                       # connections refused, as a closed port
//	  - {client: 172.25.254.0/28, direction: to_server, every: 10}
//	  - {server: 10.20.1.3:8080, latency: 80ms, jitter: 20ms, rate: 8mbit} # a slow, far server
//	  - {service: tcp 172.25.254.100:443, reorder: 0.01, duplicate: 0.01}
//	  - {client: 172.25.254.9, direction: to_client, reset_bytes: 1048576} # downloads cut at 1 MiB
//	  - {server: 10.20.1.4:8080, reset_after: 30s}                       # connections reset at 30s
//	  - {server: 10.20.1.5:8080, direction: to_server, drop_fin: true}   # half-closes never complete

// MaxFaults bounds the faults in force (the balancer's bound).
const MaxFaults = nat.MaxFaults

// readFaults reads faults: after the services, whose keys and real
// servers a fault must name.
func readFaults(e *errs, r *raw, services []Service) []nat.Fault {
	if len(r.Faults) > MaxFaults {
		e.add("faults", "%d faults: at most %d", len(r.Faults), MaxFaults)
		return nil
	}
	keys := map[ServiceKey]bool{}
	servers := map[netip.AddrPort]bool{}
	for _, s := range services {
		keys[s.key()] = true
		for _, rs := range s.RealServers {
			servers[netip.AddrPortFrom(rs.Address, rs.Port)] = true
		}
	}
	var out []nat.Fault
	seen := map[nat.FaultTarget]int{}
	for i, rf := range r.Faults {
		f := fmt.Sprintf("faults[%d]", i)
		ft, ok := faultOf(e, f, rf)
		if !ok {
			continue
		}
		t := ft.Target
		switch {
		case t.VIP.IsValid() || t.Mark != 0:
			if k := (ServiceKey{Protocol: t.Protocol, VIP: t.VIP.Addr(), Port: t.VIP.Port(), Mark: t.Mark}); !keys[k] {
				e.add(f+".service", "%s is no service of this file", k)
				continue
			}
		case t.Server.IsValid():
			if !servers[t.Server] {
				e.add(f+".server", "%s is no real server of this file's services", t.Server)
				continue
			}
		}
		if j, dup := seen[t]; dup {
			e.add(f, "has the target of faults[%d]: one fault per target", j)
			continue
		}
		seen[t] = i
		out = append(out, ft)
	}
	return out
}

// ParseFault reads a fault as the API takes it (POST /v1/faults), each
// refusal naming its field ("fault.loss: ..."). Whether its service or
// server exists is the caller's to check.
func ParseFault(rf api.Fault) (nat.Fault, error) {
	var e errs
	f, _ := faultOf(&e, "fault", rf)
	return f, e.err()
}

// faultOf reads rf, adding its refusals to e under f.
func faultOf(e *errs, f string, rf api.Fault) (nat.Fault, bool) {
	var ft nat.Fault
	t, ok := targetOf(e, f, rf) // and on: every bad field is said at once
	ft.Target = t
	d, err := nat.ParseFaultDir(rf.Direction)
	if err != nil {
		e.add(f+".direction", "%v", err)
		ok = false
	}
	ft.Dir = d
	if !(rf.Loss >= 0 && rf.Loss <= 1) {
		e.add(f+".loss", "%v is not a probability (0 to 1: 0.05 drops 5%% of frames)", rf.Loss)
		ok = false
	}
	ft.Loss = rf.Loss
	if rf.Every < 0 || rf.Every > maxEvery {
		e.add(f+".every", "%d is not a count (1: every frame, up to %d)", rf.Every, maxEvery)
		ok = false
	}
	ft.Every = uint32(max(rf.Every, 0))
	ft.Blackhole = rf.Blackhole
	if ft.SYN, err = nat.ParseSYNFault(rf.SYN); err != nil {
		e.add(f+".syn", "%v", err)
		ok = false
	}
	ft.DropFIN = rf.DropFIN
	for _, p := range []struct {
		name, eg string
		v        float64
		to       *float64
	}{{"duplicate", "0.01 sends 1% of frames twice", rf.Duplicate, &ft.Duplicate}, {"reorder", "0.01 holds 1% of frames back", rf.Reorder, &ft.Reorder}} {
		if !(p.v >= 0 && p.v <= 1) {
			e.add(f+"."+p.name, "%v is not a probability (0 to 1: %s)", p.v, p.eg)
			ok = false
		}
		*p.to = p.v
	}
	for _, d := range []struct {
		name, s string
		r       span
		to      *time.Duration
	}{
		{"latency", rf.Latency, latencyRange, &ft.Latency},
		{"jitter", rf.Jitter, latencyRange, &ft.Jitter},
		{"reset_after", rf.ResetAfter, resetAfterRange, &ft.ResetAfter},
	} {
		if d.s == "" {
			continue
		}
		*d.to = duration(e, f+"."+d.name, d.s, d.r)
		ok = ok && !e.refused(f+"."+d.name)
	}
	if ft.Rate, err = ParseRate(rf.Rate); err != nil {
		e.add(f+".rate", "%v", err)
		ok = false
	}
	ft.ResetBytes = rf.ResetBytes
	if !ok {
		return ft, false
	}
	if err := ft.Check(); err != nil {
		e.add(f, "%v", err)
		return ft, false
	}
	return ft, true
}

// ParseFaultTarget reads the target of rf (its service, server or
// client; the rest is not read), as DELETE /v1/faults names one.
func ParseFaultTarget(rf api.Fault) (nat.FaultTarget, error) {
	var e errs
	t, _ := targetOf(&e, "fault", rf)
	return t, e.err()
}

// targetOf reads rf's target, adding its refusals to e under f.
func targetOf(e *errs, f string, rf api.Fault) (nat.FaultTarget, bool) {
	var t nat.FaultTarget
	ok := true
	n := 0
	if rf.Service != "" {
		n++
		if k, err := ParseServiceKey(rf.Service); err != nil {
			e.add(f+".service", "%v", err)
			ok = false
		} else if k.Mark != 0 {
			t.Mark = k.Mark
		} else {
			t.Protocol, t.VIP = k.Protocol, netip.AddrPortFrom(k.VIP, k.Port)
		}
	}
	if rf.Server != "" {
		n++
		if ap, err := netip.ParseAddrPort(rf.Server); err != nil {
			e.add(f+".server", "%q is not an address:port (10.20.1.2:8080, [fd00::2]:8080; port 0 for a match service's server)", rf.Server)
			ok = false
		} else {
			t.Server = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	if rf.Client != "" {
		n++
		if p, err := clientPrefix(rf.Client); err != nil {
			e.add(f+".client", "%v", err)
			ok = false
		} else {
			t.Client = p
		}
	}
	if n != 1 {
		e.add(f, "names %d targets: one of service, server or client", n)
		return t, false
	}
	return t, ok
}

const maxEvery = 1 << 20

// The duration fields' ranges (nat.Fault's).
var (
	latencyRange    = span{0, nat.MaxLatency, "from 0 to 1m (50ms, 1.5s)"}
	resetAfterRange = span{0, nat.MaxResetAge, "from 0 to 24h (30s, 1.5m)"}
)

// MaxRate bounds a rate cap (the balancer's bound): 100gbit, far above
// what a TAP device carries.
const MaxRate = nat.MaxRate

// rateUnits are tc's units of a rate: bytes a second for each unit.
// "bit" units are bits and "bps" ones bytes, as tc has them (its "mbps"
// is megabytes, not megabits).
var rateUnits = map[string]struct{ mul, div uint64 }{
	"":     {1, 1},
	"bps":  {1, 1},
	"kbps": {1e3, 1},
	"mbps": {1e6, 1},
	"gbps": {1e9, 1},
	"bit":  {1, 8},
	"kbit": {1e3, 8},
	"mbit": {1e6, 8},
	"gbit": {1e9, 8},
}

// ParseRate reads a rate cap as tc writes one, in bytes a second: a whole
// number of bytes a second ("250000"), or of a unit: bit, kbit, mbit,
// gbit (bits a second; a fraction of a byte is dropped) or bps, kbps,
// mbps, gbps (bytes), in any case. "" and "0" are no cap; 0 with a unit is
// refused, as a cap of nothing is a mistake.
func ParseRate(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	t := strings.ToLower(strings.TrimSpace(s))
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	u, ok := rateUnits[t[i:]]
	if i == 0 || !ok {
		return 0, fmt.Errorf("%q is not a rate (bytes a second, or a whole number of bit, kbit, mbit, gbit, bps, kbps, mbps, gbps: 8mbit, 250000)", s)
	}
	n, err := strconv.ParseUint(t[:i], 10, 64)
	hi, lo := bits.Mul64(n, u.mul)
	if err != nil || hi != 0 || lo/u.div > MaxRate {
		return 0, fmt.Errorf("%q is above 100gbit (%d bytes a second)", s, uint64(MaxRate))
	}
	if n == 0 && i < len(t) {
		return 0, fmt.Errorf("%q is no rate: leave rate out (or 0) for no cap", s)
	}
	return lo / u.div, nil
}

// FormatRate is r as ParseRate reads it back to r: in kbit, mbit or gbit
// when that is exact, else in bytes a second; "" for none.
func FormatRate(r uint64) string {
	switch {
	case r == 0:
		return ""
	case r%125_000_000 == 0:
		return strconv.FormatUint(r/125_000_000, 10) + "gbit"
	case r%125_000 == 0:
		return strconv.FormatUint(r/125_000, 10) + "mbit"
	case r%125 == 0:
		return strconv.FormatUint(r/125, 10) + "kbit"
	}
	return strconv.FormatUint(r, 10)
}

// durationText is d as the file writes it, "" for none.
func durationText(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// FaultSpec is f as the file and the API write it, the inverse of
// ParseFault.
func FaultSpec(f nat.Fault) api.Fault {
	out := api.Fault{Direction: f.Dir.String(), Blackhole: f.Blackhole, Loss: f.Loss, Every: int(f.Every), SYN: f.SYN.String(),
		DropFIN: f.DropFIN, Latency: durationText(f.Latency), Jitter: durationText(f.Jitter), Rate: FormatRate(f.Rate),
		Duplicate: f.Duplicate, Reorder: f.Reorder, ResetBytes: f.ResetBytes, ResetAfter: durationText(f.ResetAfter)}
	switch t := f.Target; {
	case t.Mark != 0:
		out.Service = ServiceKey{Mark: t.Mark}.String()
	case t.VIP.IsValid():
		out.Service = ServiceKey{Protocol: t.Protocol, VIP: t.VIP.Addr(), Port: t.VIP.Port()}.String()
	case t.Server.IsValid():
		out.Server = t.Server.String()
	default:
		out.Client = t.Client.String()
	}
	return out
}

// clientPrefix is a prefix or a bare address (a /32 or /128), masked.
func clientPrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or a prefix", s)
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a prefix (172.25.254.0/24, fd00::/64)", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write an IPv4 prefix as IPv4", s)
	}
	return p.Masked(), nil
}

// ParseServiceKey reads a service's key as tapvsadm and the API write it:
// "tcp 172.25.254.100:80", "udp [fd00::100]:53", "fwm 1".
func ParseServiceKey(s string) (ServiceKey, error) {
	proto, rest, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return ServiceKey{}, fmt.Errorf("%q is not a service (tcp 172.25.254.100:80, udp [fd00::100]:53, fwm 1)", s)
	}
	rest = strings.TrimSpace(rest)
	if strings.EqualFold(proto, "fwm") {
		m, err := strconv.ParseUint(rest, 10, 32)
		if err != nil || m == 0 {
			return ServiceKey{}, fmt.Errorf("%q is not a mark (1-%d)", rest, uint32(nat.MaxMark))
		}
		return ServiceKey{Mark: uint32(m)}, nil
	}
	p, err := nat.ParseProtocol(strings.ToLower(proto))
	if err != nil {
		return ServiceKey{}, fmt.Errorf("%q: %w", s, err)
	}
	ap, err := netip.ParseAddrPort(rest)
	if err != nil {
		return ServiceKey{}, fmt.Errorf("%q is not a VIP:port (172.25.254.100:80, [fd00::100]:53)", rest)
	}
	return ServiceKey{Protocol: p, VIP: ap.Addr().Unmap(), Port: ap.Port()}, nil
}
