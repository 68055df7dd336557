package config

import (
	"net"
	"net/netip"
	"strconv"
)

// keepalived's virtual-server behaviour, read from a service: its sorry
// server, quorum and hysteresis with their scripts, alpha and omega. The
// health checker runs it (health/quorum.go).

// VS is a service's keepalived behaviour.
type VS struct {
	// Sorry is the sorry_server, added as the only real server (weight 1)
	// while the service is below quorum; invalid: none. SorryInhibit
	// (sorry_server_inhibit) keeps it listed at weight 0 otherwise.
	Sorry        netip.AddrPort
	SorryInhibit bool
	// Quorum (default 1) and Hysteresis (default 0): the service is down
	// when the weights of its up servers sum below Quorum-Hysteresis (or
	// to 0), up again at Quorum+Hysteresis.
	Quorum, Hysteresis   int
	QuorumUp, QuorumDown []string // argv, run without a shell
	Alpha                bool     // checked servers start down until their first check passes
	Omega                bool     // on shutdown, run quorum_down and notify_down where they apply
}

// maxQuorum bounds quorum and hysteresis: a service's weights (each up to
// 65535) sum far below it, and quorum+hysteresis cannot overflow.
const maxQuorum = 1 << 30

func vs(e *errs, f string, r rawService, s Service) VS {
	v := VS{Quorum: 1, Hysteresis: r.Hysteresis, SorryInhibit: r.SorryServerInhibit, Alpha: r.Alpha, Omega: r.Omega}
	if r.SorryServer != "" {
		v.Sorry = sorryServer(e, f+".sorry_server", r.SorryServer, s, r.Port == 0)
	} else if r.SorryServerInhibit {
		e.add(f+".sorry_server_inhibit", "there is no sorry_server")
	}
	if r.Quorum != nil {
		v.Quorum = *r.Quorum
		if v.Quorum < 1 || v.Quorum > maxQuorum {
			e.add(f+".quorum", "%d is out of range 1-%d", v.Quorum, maxQuorum)
		}
	}
	if v.Hysteresis < 0 || v.Hysteresis > maxQuorum {
		e.add(f+".hysteresis", "%d is out of range 0-%d", v.Hysteresis, maxQuorum)
	}
	v.QuorumUp = script(e, f+".quorum_up", r.QuorumUp)
	v.QuorumDown = script(e, f+".quorum_down", r.QuorumDown)
	return v
}

// sorryServer reads ADDR:PORT ([v6]:PORT), a server that is not one of
// the service's real servers (it would be removed as the sorry server) and
// that one of its local addresses can reach (of its family): it is added
// only when the quorum is lost, so no dry run tries it. Port 0 is allowed
// where a real server's is (portless: a match service, an all-ports
// service): the sorry server then takes the client's port, as they do.
func sorryServer(e *errs, f, s string, svc Service, portless bool) netip.AddrPort {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		e.add(f, "%q is not ADDR:PORT", s)
		return netip.AddrPort{}
	}
	a, err := hostAddr(host)
	if err != nil {
		e.add(f, "%v", err)
		return netip.AddrPort{}
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 || n == 0 && !portless {
		e.add(f, "%q is not a port", p)
		return netip.AddrPort{}
	}
	ap := netip.AddrPortFrom(a, uint16(n))
	family := false
	for _, l := range svc.LocalAddresses {
		family = family || l.Is4() == a.Is4()
	}
	if !family && len(svc.LocalAddresses) > 0 {
		e.add(f, "%s: the service has no local address of its family", ap)
		return netip.AddrPort{}
	}
	for _, rs := range svc.RealServers {
		if rs.Address == a && rs.Port == ap.Port() {
			e.add(f, "%s is also a real server of the service", ap)
			return netip.AddrPort{}
		}
	}
	return ap
}
