package health

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/events"
	"github.com/tapvs/tapvs/nat"
)

// keepalived's virtual-server behaviour: a service's quorum (the weights
// of its up real servers summed) with hysteresis, its quorum_up and
// quorum_down scripts, its sorry server, and each real server's notify_up
// and notify_down. As keepalived does it: when the quorum is lost, the
// sorry server (if any) is added as the service's only server (weight 1),
// and tapvs also quiesces the servers still up, so that a service below
// quorum takes no new connection on its real servers (and, without a
// weight above 0, its VIP is no longer announced); when it is gained
// again, the up servers get their weights back and the sorry server goes.
//
// Every move is a nat.Tx, under qmu, with the script it triggers: moves
// and scripts of one checker keep their order, and a slow script (bounded
// by scriptTimeout) delays the next transition, not a check's probes.

// VS is a service's keepalived behaviour.
type VS struct {
	Proto        nat.Protocol
	VIP          netip.AddrPort // a match service's: its selector's VIP, port 0
	Mark         uint32         // a match service's mark (Target.Mark)
	Sorry        netip.AddrPort // invalid: none
	SorryInhibit bool           // keep the sorry server listed at weight 0 when not in use
	Quorum       int            // >= 1
	Hysteresis   int
	QuorumUp     []string // argv, run without a shell; nil: none
	QuorumDown   []string
	Omega        bool     // Shutdown runs quorum_down and notify_down where they apply
	Servers      []Server // every real server the file declares, checked or not
}

// Server is a real server of a VS with its configured weight (what an
// unchecked server, always up, counts in the quorum).
type Server struct {
	RS         netip.AddrPort
	Weight     int
	Thresholds nat.Thresholds // what it has when the quorum adds it back
}

func (v *VS) key() Key { return Key{Proto: v.Proto, VIP: v.VIP, Mark: v.Mark}.Norm() }

type vsState struct {
	v  VS
	up bool // the quorum is reached (c.mu)
}

// The environment of notify and quorum scripts, besides misc's: the new
// state, and for a quorum script the weights summed.
const (
	envState   = "TAPVS_STATE" // up or down
	envWeights = "TAPVS_WEIGHTS"
)

// defaultScriptTimeout bounds a notify or quorum script.
const defaultScriptTimeout = 10 * time.Second

// SetVS sets the services' keepalived behaviour; call it before Start. A
// service starts with its quorum reached, or as the checker Start replaces
// left it.
func (c *Checker) SetVS(list []VS) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range list {
		c.vs[v.key()] = &vsState{v: v, up: true}
	}
}

// Serving reports whether a service has its quorum; known is false for a
// service the checker has no VS of.
func (c *Checker) Serving(k Key) (up, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.vs[k.Norm()]
	if v == nil {
		return false, false
	}
	return v.up, true
}

// servingLocked reports whether k's service has its quorum (true without
// a VS). c.mu is held.
func (c *Checker) servingLocked(k stateKey) bool {
	v := c.vs[k.svc]
	return v == nil || v.up
}

// startQuorum takes each service's quorum state from prev (on reload),
// lets go of a sorry server the file no longer names, and applies each
// service's state to the balancer (the reload may have put back what a
// lost quorum held out). c.qmu is not held; no loop runs yet.
func (c *Checker) startQuorum(prev *Checker) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if prev != nil {
		for k, p := range prev.vs {
			n := c.vs[k]
			if n != nil {
				c.mu.Lock()
				n.up = p.up
				c.mu.Unlock()
			}
			if p.v.Sorry.IsValid() && (n == nil || n.v.Sorry != p.v.Sorry) {
				c.dropSorry(p.v)
			}
		}
	}
	for k := range c.vs {
		c.evalQuorum(k, true)
	}
}

// dropSorry removes a sorry server the configuration no longer has.
func (c *Checker) dropSorry(v VS) {
	err := c.bal.Update(func(tx *nat.Tx) error {
		svc, err := v.key().txService(tx)
		if err != nil {
			return nil // the service went too
		}
		if tx.Dest(svc, v.Sorry.Addr(), v.Sorry.Port()) == nil {
			return nil
		}
		return tx.DeleteDest(svc, v.Sorry.Addr(), v.Sorry.Port())
	})
	if err != nil {
		c.log.Warn("sorry server no longer configured, but could not be removed", "service", v.key().String(), "sorry_server", v.Sorry.String(), "err", err)
	}
}

// evalQuorum sums the weights of k's up servers and moves the service
// when it crosses a threshold: down below Quorum-Hysteresis (or at 0), up
// at Quorum+Hysteresis (and above 0), keepalived's rule. force applies the
// state even when it did not change (at start). c.qmu is held.
func (c *Checker) evalQuorum(k Key, force bool) {
	c.mu.Lock()
	v := c.vs[k]
	if v == nil {
		c.mu.Unlock()
		return
	}
	var up []Server
	sum := 0
	for _, sv := range v.v.Servers {
		w := sv.Weight
		if s := c.state[stateKey{k, sv.RS}]; s != nil {
			if !s.up {
				continue
			}
			w = s.weight
		}
		up = append(up, Server{RS: sv.RS, Weight: w, Thresholds: sv.Thresholds})
		sum += w
	}
	was := v.up
	now := quorum(was, sum, v.v.Quorum, v.v.Hysteresis)
	v.up = now
	c.mu.Unlock()
	if now == was && !force {
		return
	}
	if err := c.applyQuorum(v.v, now, now && !was, up); err != nil {
		c.log.Warn("quorum: the service could not be moved", "service", k.String(), "up", now, "err", err)
	}
	if now == was {
		return
	}
	argv := v.v.QuorumDown
	if now {
		argv = v.v.QuorumUp
		c.publish(events.QuorumGained, k, netip.AddrPort{}, fmt.Sprintf("weights %d, quorum %d, hysteresis %d", sum, v.v.Quorum, v.v.Hysteresis))
		c.log.Info("quorum gained: real servers back in service", "service", k.String(), "weights", sum, "quorum", v.v.Quorum, "hysteresis", v.v.Hysteresis)
	} else {
		c.publish(events.QuorumLost, k, netip.AddrPort{}, fmt.Sprintf("weights %d, quorum %d, hysteresis %d", sum, v.v.Quorum, v.v.Hysteresis))
		c.log.Warn("quorum lost: real servers out of service", "service", k.String(), "weights", sum, "quorum", v.v.Quorum, "hysteresis", v.v.Hysteresis, "sorry_server", v.v.Sorry.String())
	}
	c.runQuorum(v.v, argv, now, sum)
}

// quorum is keepalived's quorum rule: whether a service that was up (or
// not) is up with its up servers' weights summing to sum.
func quorum(was bool, sum, q, h int) bool {
	switch {
	case was && (sum == 0 || sum < q-h):
		return false
	case !was && sum > 0 && sum >= q+h:
		return true
	}
	return was
}

// applyQuorum makes the balancer show v's state in one transaction:
// serving, the sorry server out (or at weight 0 with inhibit) and, when
// restore, the up servers back at their weights; not serving, the up
// servers at weight 0 and the sorry server in at weight 1.
func (c *Checker) applyQuorum(v VS, serving, restore bool, up []Server) error {
	return c.bal.Update(func(tx *nat.Tx) error {
		svc, err := v.key().txService(tx)
		if err != nil {
			return err
		}
		for _, u := range up {
			if serving && !restore {
				break
			}
			w := 0
			if serving {
				w = u.Weight
			}
			d := tx.Dest(svc, u.RS.Addr(), u.RS.Port())
			switch {
			case d == nil && serving: // put back while the quorum was lost, by a check that removes
				if _, err := addBack(tx, svc, u.RS, w, u.Thresholds); err != nil {
					return err
				}
			case d != nil && tx.Weight(svc, d) != w:
				if err := tx.SetWeight(svc, u.RS.Addr(), u.RS.Port(), w); err != nil {
					return err
				}
			}
		}
		if !v.Sorry.IsValid() {
			return nil
		}
		a, p := v.Sorry.Addr(), v.Sorry.Port()
		d := tx.Dest(svc, a, p)
		switch {
		case !serving && d == nil:
			_, err = tx.AddDest(svc, a, p, 1)
		case !serving && tx.Weight(svc, d) != 1:
			err = tx.SetWeight(svc, a, p, 1)
		case serving && d == nil:
			if v.SorryInhibit {
				_, err = tx.AddDest(svc, a, p, 0)
			}
		case serving && v.SorryInhibit:
			if tx.Weight(svc, d) != 0 {
				err = tx.SetWeight(svc, a, p, 0)
			}
		case serving:
			err = tx.DeleteDest(svc, a, p)
		}
		return err
	})
}

// runQuorum runs a quorum script, if any, with the service and its state
// in its environment.
func (c *Checker) runQuorum(v VS, argv []string, up bool, sum int) {
	if len(argv) == 0 {
		return
	}
	c.runScript(argv, v.key().String(), vipEnv(v.Proto, v.VIP, v.Mark, up, envWeights+"="+strconv.Itoa(sum)))
}

// notify runs a real server's notify_up or notify_down, if any.
func (c *Checker) notify(t Target, up bool) {
	argv := t.NotifyDown
	if up {
		argv = t.NotifyUp
	}
	if len(argv) == 0 {
		return
	}
	env := vipEnv(t.Proto, t.VIP, t.Mark, up,
		envRSAddr+"="+t.RS.Addr().Unmap().String(),
		envRSPort+"="+strconv.Itoa(int(t.RS.Port())))
	c.runScript(argv, t.key().String(), env)
}

func vipEnv(proto nat.Protocol, vip netip.AddrPort, mark uint32, up bool, more ...string) []string {
	state := "down"
	if up {
		state = "up"
	}
	return append([]string{
		envVIPAddr + "=" + vip.Addr().String(),
		envVIPPort + "=" + strconv.Itoa(int(vip.Port())),
		envProto + "=" + strings.ToLower(proto.String()),
		envMark + "=" + strconv.FormatUint(uint64(mark), 10),
		envState + "=" + state,
	}, more...)
}

// runScript runs argv for at most the checker's script timeout; a failure
// is logged, and changes nothing.
func (c *Checker) runScript(argv []string, service string, env []string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.scriptTimeout)
	defer cancel()
	err := command(ctx, argv, env...).Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s", c.scriptTimeout)
	}
	if err != nil {
		c.log.Warn("script failed", "service", service, "script", argv[0], "err", err)
	}
}

// Shutdown stops every check (Close) and then runs, for the services with
// omega, notify_down of each checked server still up and quorum_down of
// each service still up: keepalived's omega, at tapvs's stop (not at a
// reload, which replaces the checker with Close).
func (c *Checker) Shutdown() {
	c.Close()
	c.qmu.Lock()
	defer c.qmu.Unlock()
	for k, v := range c.vs {
		if !v.v.Omega {
			continue
		}
		for _, sv := range v.v.Servers {
			if s := c.state[stateKey{k, sv.RS}]; s != nil && s.up {
				c.notify(s.t, false)
			}
		}
		if v.up {
			c.runQuorum(v.v, v.v.QuorumDown, false, 0)
		}
	}
}
