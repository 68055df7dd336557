package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/health"
	"github.com/tapvs/tapvs/nat"
)

// The services: section. Only a file brings services in a Config (a
// program adds them through the control plane, which checks its own), so
// they are read and checked in one step; the rules between them and the
// interfaces are the balancer's (the dry run).

type rawService struct {
	Name           string       `mapstructure:"name"`
	VIP            string       `mapstructure:"vip"`
	Port           int          `mapstructure:"port"`
	Protocol       string       `mapstructure:"protocol"`
	Scheduler      string       `mapstructure:"scheduler"`
	SchedulerFlags []string     `mapstructure:"scheduler_flags"`
	LocalAddresses []string     `mapstructure:"local_addresses"`
	RealServers    []rawRS      `mapstructure:"real_servers"`
	Timeouts       rawTimeouts  `mapstructure:"timeouts"`
	Synproxy       bool         `mapstructure:"synproxy"`
	ClientAddress  string       `mapstructure:"client_address"`
	TCPTimestamps  string       `mapstructure:"tcp_timestamps"`
	Health         *rawHealth   `mapstructure:"health_check"`
	Allow          []string     `mapstructure:"allow"`
	Deny           []string     `mapstructure:"deny"`
	Limits         rawSvcLimits `mapstructure:"limits"`

	// keepalived's virtual-server behaviour (quorum.go)
	SorryServer        string   `mapstructure:"sorry_server"`
	SorryServerInhibit bool     `mapstructure:"sorry_server_inhibit"`
	Quorum             *int     `mapstructure:"quorum"`
	Hysteresis         int      `mapstructure:"hysteresis"`
	QuorumUp           []string `mapstructure:"quorum_up"`
	QuorumDown         []string `mapstructure:"quorum_down"`
	Alpha              bool     `mapstructure:"alpha"`
	Omega              bool     `mapstructure:"omega"`
	// keepalived's names: seconds, and the client network a template
	// covers (an IPv4 netmask, or a prefix length: IPv6's 64).
	PersistenceTimeout     int `mapstructure:"persistence_timeout"`
	PersistenceGranularity any `mapstructure:"persistence_granularity"`
	// FWMark makes a match service of the marks: selector it names
	// (match.go): vip, port and protocol are the mark's.
	FWMark int `mapstructure:"fwmark"`
}

type rawRS struct {
	Address string     `mapstructure:"address"`
	Port    int        `mapstructure:"port"`
	Weight  *int       `mapstructure:"weight"`
	Health  *rawHealth `mapstructure:"health_check"` // replaces the service's check for this server
	// keepalived's uthreshold and lthreshold: ipvsadm's -x and -y.
	UThreshold int `mapstructure:"uthreshold"`
	LThreshold int `mapstructure:"lthreshold"`

	NotifyUp   []string `mapstructure:"notify_up"` // keepalived's, run when its check puts it back
	NotifyDown []string `mapstructure:"notify_down"`
}

// Service is one virtual service.
type Service struct {
	Name      string
	VIP       netip.Addr
	Port      uint16
	Protocol  nat.Protocol
	Scheduler string
	// SchedulerFlags are the scheduler's flags (sh-port...), ipvsadm's
	// --sched-flags and keepalived's sh-port, sh-fallback, mh-port,
	// mh-fallback keywords.
	SchedulerFlags nat.SchedFlags
	LocalAddresses []netip.Addr
	RealServers    []RealServer
	Timeouts       nat.Timeouts
	Synproxy       bool
	// ClientAddress is how the real servers learn the client's address:
	// none, toa, proxy-v1 or proxy-v2.
	ClientAddress nat.ClientAddr
	// TCPTimestamps is what plain TCP connections do with the client's
	// timestamps: translate (the default) or remove.
	TCPTimestamps nat.Timestamps
	// Allow and Deny are the service's source prefixes (defence.go).
	Allow, Deny []netip.Prefix
	Limits      nat.Limits
	// VS is keepalived's virtual-server behaviour: sorry server, quorum,
	// alpha and omega (quorum.go).
	VS
	// Persistence is persistence_timeout and persistence_granularity
	// (nat.Persistence.Normal: as the balancer keeps it).
	Persistence nat.Persistence
	// Mark, if not 0, makes a match service (fwmark:, match.go): VIP and
	// Protocol are the mark's, Port 0.
	Mark uint32
}

// RealServer is one real server of a service.
type RealServer struct {
	Address netip.Addr
	Port    uint16
	Weight  int
	// Thresholds are its connection thresholds (uthreshold, lthreshold):
	// overloaded at the upper, no new connection until below the lower.
	Thresholds nat.Thresholds
	Health     *health.Spec // nil: not checked
	// NotifyUp and NotifyDown are keepalived's notify_up and notify_down:
	// run when the server's check puts it back or takes it out.
	NotifyUp, NotifyDown []string
}

// thresholds reads a real server's uthreshold and lthreshold, each 0 (no
// limit; lthreshold: 3/4 of uthreshold) to nat.MaxThreshold, lthreshold
// not above uthreshold, as IPVS refuses.
func thresholds(e *errs, rf string, upper, lower int) nat.Thresholds {
	ok := true
	for _, v := range []struct {
		key string
		n   int
	}{{"uthreshold", upper}, {"lthreshold", lower}} {
		if v.n < 0 || v.n > nat.MaxThreshold {
			e.add(rf+"."+v.key, "%d is out of range 0-%d", v.n, nat.MaxThreshold)
			ok = false
		}
	}
	if !ok {
		return nat.Thresholds{}
	}
	t := nat.Thresholds{Upper: uint32(upper), Lower: uint32(lower)}
	if t.Lower > t.Upper {
		e.add(rf+".lthreshold", "%d is above uthreshold %d, which IPVS refuses (uthreshold 0: no limit)", lower, upper)
	}
	return t
}

// readServices reads the file's services onto base, the default timeouts.
func readServices(e *errs, r *raw, base nat.Timeouts, marks map[uint32]nat.Match) []Service {
	var out []Service
	seen := map[string]string{}
	has6 := sides6{client: r.Interfaces.Client.Address6 != "", server: r.Interfaces.Server.Address6 != ""}
	for i, rs := range r.Services {
		f := fmt.Sprintf("services[%d]", i)
		s := service(e, f, rs, base, has6, marks)
		key := fmt.Sprintf("%s %s", s.Protocol, netip.AddrPortFrom(s.VIP, s.Port))
		if s.Mark != 0 {
			key = fmt.Sprintf("fwmark %d", s.Mark)
		}
		if prev, dup := seen[key]; dup && s.VIP.IsValid() {
			e.add(f, "%s is already defined by %s", key, prev)
		}
		seen[key] = f
		out = append(out, s)
	}
	return out
}

// persistence reads persistence_timeout and persistence_granularity.
func persistence(e *errs, f string, r rawService, vip netip.Addr) nat.Persistence {
	var p nat.Persistence
	v4 := !vip.Is6()
	if r.PersistenceTimeout < 0 || time.Duration(r.PersistenceTimeout)*time.Second > nat.MaxPersistTimeout {
		e.add(f+".persistence_timeout", "%d is out of range 0-%d seconds", r.PersistenceTimeout, int(nat.MaxPersistTimeout/time.Second))
		return p
	}
	p.Timeout = time.Duration(r.PersistenceTimeout) * time.Second
	if r.PersistenceGranularity != nil {
		var s string
		switch g := r.PersistenceGranularity.(type) {
		case string:
			s = g
		case int:
			s = strconv.Itoa(g)
		default:
			e.add(f+".persistence_granularity", "%v is not a netmask (255.255.255.0) or a prefix length", g)
			return p
		}
		bits, err := nat.ParseNetmask(s, v4)
		switch {
		case err != nil:
			e.add(f+".persistence_granularity", "%v", err)
		case p.Timeout == 0:
			e.add(f+".persistence_granularity", "needs persistence_timeout")
		default:
			p.Mask = bits
		}
	}
	return p.Normal(v4)
}

func port(e *errs, f string, p int) (uint16, bool) {
	if p < 1 || p > 65535 {
		e.add(f, "%d is not a port", p)
		return 0, false
	}
	return uint16(p), true
}

func service(e *errs, f string, r rawService, base nat.Timeouts, has6 sides6, marks map[uint32]nat.Match) Service {
	s := Service{Name: r.Name, Scheduler: r.Scheduler, Synproxy: r.Synproxy}
	if err := nat.CheckName(r.Name); err != nil {
		e.add(f+".name", "%q is not a service name: it %v", r.Name, err)
		s.Name = ""
	}
	if s.Scheduler == "" {
		s.Scheduler = "wlc" // ipvsadm's default
	}
	if err := nat.ValidScheduler(s.Scheduler); err != nil {
		e.add(f+".scheduler", "%v", err)
	} else if s.SchedulerFlags, err = nat.ParseSchedFlags(s.Scheduler, r.SchedulerFlags); err != nil {
		e.add(f+".scheduler_flags", "%v", err)
	}
	if r.FWMark != 0 {
		matchService(e, f, r, marks, &s)
	} else if vip, err := hostAddr(r.VIP); err != nil {
		e.add(f+".vip", "%v", err)
	} else if vip.Is6() && !has6.client {
		e.add(f+".vip", "%s is IPv6 and interfaces.client has no address6: IPv6 VIPs are answered for by the client side's IPv6 address", vip)
	} else {
		s.VIP = vip
	}
	switch {
	case r.FWMark != 0: // its selector's ports (match.go)
	case r.Port == 0 && r.PersistenceTimeout > 0:
		s.Port = 0 // all ports: IPVS allows it with persistence only (nat/persist.go)
	case r.Port == 0:
		e.add(f+".port", "0 (all ports) needs persistence_timeout, as in IPVS")
	default:
		s.Port, _ = port(e, f+".port", r.Port)
	}
	s.Persistence = persistence(e, f, r, s.VIP)
	proto := r.Protocol
	if proto == "" {
		proto = "tcp"
	}
	if s.Mark != 0 {
		proto = strings.ToLower(s.Protocol.String()) // its selector's
	}
	switch p, err := nat.ParseProtocol(proto); {
	case r.FWMark != 0 && s.Mark == 0: // refused by matchService: no protocol of its own
	case err != nil:
		e.add(f+".protocol", "%v", err)
	default:
		s.Protocol = p
		if r.Synproxy && p != nat.TCP {
			e.add(f+".synproxy", "only a TCP service can have a SYN proxy")
		}
	}
	if r.ClientAddress != "" {
		c, err := nat.ParseClientAddr(r.ClientAddress)
		switch {
		case err != nil:
			e.add(f+".client_address", "%v", err)
		case s.Protocol == nat.UDP && (c == nat.ClientAddrTOA || c == nat.ClientAddrProxyV1):
			e.add(f+".client_address", "%s is TCP only: a UDP service can have proxy-v2 or none", c)
		default:
			s.ClientAddress = c
		}
	}
	if r.TCPTimestamps != "" {
		ts, err := nat.ParseTimestamps(r.TCPTimestamps)
		switch {
		case err != nil:
			e.add(f+".tcp_timestamps", "%v", err)
		case s.Protocol == nat.UDP:
			e.add(f+".tcp_timestamps", "a UDP service has no TCP timestamps")
		default:
			s.TCPTimestamps = ts
		}
	}
	if len(r.LocalAddresses) == 0 {
		e.add(f+".local_addresses", "FULLNAT needs at least one local address")
	}
	for j, l := range r.LocalAddresses {
		lf := fmt.Sprintf("%s.local_addresses[%d]", f, j)
		a, err := hostAddr(l)
		switch {
		case err != nil:
			e.add(lf, "%v", err)
		case a.Is6() && !has6.server:
			e.add(lf, "%s is IPv6 and interfaces.server has no address6: real servers reach IPv6 local addresses by the server side's IPv6 address", a)
		default:
			s.LocalAddresses = append(s.LocalAddresses, a)
		}
	}
	if len(r.RealServers) == 0 {
		e.add(f+".real_servers", "no real server is configured")
	}
	for j, rs := range r.RealServers {
		rf := fmt.Sprintf("%s.real_servers[%d]", f, j)
		var out RealServer
		if a, err := hostAddr(rs.Address); err != nil {
			e.add(rf+".address", "%v", err)
		} else {
			out.Address = a
		}
		if rs.Port != 0 || r.Port != 0 {
			out.Port, _ = port(e, rf+".port", rs.Port)
		} // else the server of an all-ports service takes each client's port
		hf := rf + ".health_check"
		switch {
		case rs.Health != nil:
			out.Health = healthSpec(e, hf, rs.Health)
		case r.Health != nil:
			hf = f + ".health_check"
			out.Health = healthSpec(e, hf, r.Health)
		}
		if out.Health != nil && out.Health.Port == 0 && out.Health.NeedsPort() && rs.Port == 0 && r.Port == 0 {
			// A match service's or an all-ports service's server on port
			// 0 takes each client's port (keepalived's connect_port).
			e.add(hf+".port", "is needed: real_servers[%d] is on port 0 (it takes the client's port), so a %s check has no port of its own to connect to", j, out.Health.Type)
		}
		out.Weight = 1
		if rs.Weight != nil {
			out.Weight = *rs.Weight
		}
		if out.Weight < 0 || out.Weight > 65535 {
			e.add(rf+".weight", "%d is out of range 0-65535", out.Weight)
		}
		out.Thresholds = thresholds(e, rf, rs.UThreshold, rs.LThreshold)
		out.NotifyUp = script(e, rf+".notify_up", rs.NotifyUp)
		out.NotifyDown = script(e, rf+".notify_down", rs.NotifyDown)
		switch {
		case out.Health != nil:
		case len(rs.NotifyUp) > 0:
			e.add(rf+".notify_up", "the server has no health_check: it never goes up or down")
		case len(rs.NotifyDown) > 0:
			e.add(rf+".notify_down", "the server has no health_check: it never goes up or down")
		}
		s.RealServers = append(s.RealServers, out)
	}
	s.VS = vs(e, f, r, s)
	s.Timeouts = timeouts(e, f+".timeouts", r.Timeouts, base)
	defence(e, f, r, &s)
	return s
}
