package tapvs

import (
	"net/netip"
	"time"

	"github.com/tapvs/tapvs/nat"
)

// ServiceStatus is a service as it runs (tapvsadm -L): its settings and
// what went through it.
type ServiceStatus struct {
	// Service is its settings as AddService takes them: adding it back
	// makes the same service, but for a real server of weight 0 (quiesced),
	// which RealServer's Weight 0 would add as 1.
	Service
	// Match is a match service's selector; nil for another.
	Match *Mark
	// Timeouts are its connections' (Service.EstablishedTimeout is TCP's).
	Timeouts                   Timeouts
	Conns                      uint64 // every connection it scheduled
	InPackets, OutPackets      uint64 // In: client to server
	InBytes, OutBytes          uint64
	ActiveConns, InactiveConns int64 // its real servers' together
	Rate                       Rate
}

// Services lists every service with its settings and counters, in the
// order they were added; the real servers' own counters are RealServers'.
func (lb *LB) Services() []ServiceStatus {
	var out []ServiceStatus
	def := lb.d.Balancer.DefaultTimeouts().Established()
	for _, s := range lb.d.Balancer.Services() {
		st := ServiceStatus{Service: Service{ServiceKey: keyOf(s), Name: s.Name(), Scheduler: s.Scheduler(),
			SchedFlags: s.SchedFlags().Names(s.Scheduler()), Synproxy: s.Synproxy(),
			ClientAddr: ClientAddr(s.ClientAddr().String()), Timestamps: Timestamps(s.Timestamps().String())}}
		if p := s.Persistence(); p.Timeout != 0 {
			st.Persistence = p.Timeout
			// nat keeps the whole address as its full length; Service's 0.
			// A match service's family is its selector's.
			a := s.Addr
			if m := s.Selector(); m != nil {
				a = m.Addr
			}
			if p.Mask > 0 && p.Mask < a.BitLen() {
				st.PersistenceMask = p.Mask
			}
		}
		to := s.Timeouts()
		st.Timeouts = Timeouts{TCP: to.Established(), TCPFin: to.FinWait(), UDP: to.UDP}
		if e := to.Established(); e != def {
			st.EstablishedTimeout = e
		}
		l := s.Limits()
		st.Limits = Limits{SourceCPS: l.SourceCPS, SourceConns: l.SourceConns, HalfOpen: l.HalfOpen}
		st.Allow, st.Deny = s.Allow(), s.Deny()
		for _, la := range s.LocalAddrs() {
			st.LocalAddrs = append(st.LocalAddrs, la.Addr)
		}
		for _, d := range s.Dests() {
			th := d.Thresholds()
			st.RealServers = append(st.RealServers, RealServer{Addr: netip.AddrPortFrom(d.Addr, d.Port), Weight: d.Weight(), UThreshold: th.Upper, LThreshold: th.Lower})
			a, ia, _ := d.Conns()
			st.ActiveConns += a
			st.InactiveConns += ia
		}
		if m := s.Selector(); m != nil {
			st.Match = markOf(s.Mark, *m)
		}
		t := s.Traffic()
		st.Conns, st.InPackets, st.OutPackets, st.InBytes, st.OutBytes = t.Conns, t.InPkts, t.OutPkts, t.InBytes, t.OutBytes
		st.Rate = rateOf(s.Rate())
		out = append(out, st)
	}
	return out
}

// Service reads one service; ok is false if there is none by k.
func (lb *LB) Service(k ServiceKey) (s ServiceStatus, ok bool) {
	if k.Mark == 0 && k.Protocol == "" {
		k.Protocol = TCP
	}
	for _, s := range lb.Services() {
		if s.ServiceKey == k {
			return s, true
		}
	}
	return ServiceStatus{}, false
}

// keyOf is s's key.
func keyOf(s *nat.Service) ServiceKey {
	if s.Mark != 0 {
		return ServiceKey{Mark: s.Mark}
	}
	return ServiceKey{Protocol: protocolOf(s.Protocol), VIP: netip.AddrPortFrom(s.Addr, s.Port)}
}

// Template is a persistence template (tapvsadm -lnc lists them as
// connections in state NONE): while it lasts, the new connections of the
// client network Client to the service go to Real.
type Template struct {
	Protocol Protocol
	Client   netip.Addr     // the client's address masked by the service's PersistenceMask
	VIP      netip.AddrPort // the service's (port 0 for a port 0 service)
	Real     netip.AddrPort // the real server (port 0 for a port 0 service)
	// Expires is how long it has left once its connections have closed.
	Expires time.Duration
	Conns   int64 // its connections open now
}

// Templates is a snapshot of the persistence templates of every service.
func (lb *LB) Templates() []Template {
	var out []Template
	for _, t := range lb.d.Balancer.TemplateList() {
		out = append(out, Template{Protocol: protocolOf(t.Protocol), Client: t.Client.Addr(), VIP: t.VIP, Real: t.RIP, Expires: t.Expires, Conns: t.Conns})
	}
	return out
}
