package control

import (
	"fmt"
	"strconv"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// Match services (nat/match.go) are named by their mark alone, as IPVS
// names a firewall-mark service: {"fwmark": 1} in a body, fwm/1 in a path
// (/v1/services/fwm/1). tapvs sees no kernel marks: the number names a
// selector of the configuration's marks:.

// parseMarkKey reads a match service's key; ok is false for a key that
// names no mark (a VIP:port service's).
func parseMarkKey(k api.ServiceKey) (_ ServiceKey, ok bool, err error) {
	switch {
	case k.Protocol == "fwm":
		n, err := strconv.ParseUint(k.Addr, 10, 32)
		if err != nil || n == 0 {
			return ServiceKey{}, true, fmt.Errorf("%q is not a mark (1-4294967295)", k.Addr)
		}
		if k.FWMark != 0 && k.FWMark != uint32(n) {
			return ServiceKey{}, true, fmt.Errorf("fwmark %d and fwm/%d name two services", k.FWMark, n)
		}
		return ServiceKey{Mark: uint32(n)}, true, nil
	case k.FWMark != 0:
		if k.Protocol != "" || k.Addr != "" {
			return ServiceKey{}, true, fmt.Errorf("fwmark %d names the service alone: leave protocol and addr out (its selector in the configuration's marks: has them)", k.FWMark)
		}
		return ServiceKey{Mark: k.FWMark}, true, nil
	}
	return ServiceKey{}, false, nil
}

// apiMatch is a match service's selector as listed; nil for others.
func apiMatch(s *nat.Service) *api.Match {
	m := s.Selector()
	if m == nil {
		return nil
	}
	return &api.Match{VIP: m.VIPString(), Protocol: protoName(m.Protocol), Ports: m.PortsString()}
}
