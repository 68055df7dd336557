package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/tapvs/tapvs/nat"
)

// The timeouts: sections: the balancer's defaults (Reloadable.Timeouts)
// and each service's, which start from them.

type rawTimeouts struct {
	TCP map[string]string `mapstructure:"tcp"`
	UDP string            `mapstructure:"udp"`
}

func timeouts(e *errs, f string, r rawTimeouts, base nat.Timeouts) nat.Timeouts {
	t := base
	for state, s := range r.TCP {
		d, err := time.ParseDuration(s)
		if err == nil {
			err = nat.CheckTimeout(d)
		}
		if err != nil {
			e.add(fmt.Sprintf("%s.tcp.%s", f, state), "%q is not a timeout (from %v to %v)", s, nat.MinTimeout, nat.MaxTimeout)
			continue
		}
		if !t.SetTCP(state, d) {
			e.add(fmt.Sprintf("%s.tcp.%s", f, state), "not a TCP state (one of %s)", strings.Join(nat.TCPStateNames(), ", "))
		}
	}
	if r.UDP != "" {
		if d, err := time.ParseDuration(r.UDP); err != nil || nat.CheckTimeout(d) != nil {
			e.add(f+".udp", "%q is not a timeout (from %v to %v)", r.UDP, nat.MinTimeout, nat.MaxTimeout)
		} else {
			t.UDP = d
		}
	}
	return t
}
