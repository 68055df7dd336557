package config

import (
	"net/netip"
	"strings"
	"time"

	"github.com/tapvs/tapvs/frag"
	"github.com/tapvs/tapvs/nat"
)

// The sections of one value or a few: limits:, interfaces' busy_poll,
// sweep_interval, log:, control:, metrics:, synproxy: and fragments:. All
// are RestartOnly's.

// MaxConnections bounds limits.max_connections.
const MaxConnections = 1 << 30

type rawLimits struct {
	MaxConnections int    `mapstructure:"max_connections"`
	LocalPortMin   int    `mapstructure:"local_port_min"`
	LocalPortMax   int    `mapstructure:"local_port_max"`
	PortQuarantine string `mapstructure:"port_quarantine"`
}

type rawFragments struct {
	Reassembly   bool   `mapstructure:"reassembly"`
	HighThresh   int    `mapstructure:"high_thresh"`
	SourceThresh int    `mapstructure:"source_thresh"`
	Time         string `mapstructure:"time"`
}

// Fragments is the fragments: section: whether fragments to a VIP or LIP
// are reassembled (nat.Config.NoReassembly when not: dropped as
// fragment), and the reassembly's bounds (frag.Config), named as Linux's
// sysctls an operator knows them by: the bytes held in all
// (net.ipv4.ipfrag_high_thresh), from one source (an IPv4 address, an
// IPv6 /64; 0: a quarter of HighThresh), and how long an incomplete
// datagram is held (ipfrag_time). A restart changes them.
type Fragments struct {
	Reassembly   bool
	HighThresh   int
	SourceThresh int
	Time         time.Duration
}

// NAT is f as the balancer takes it.
func (f Fragments) NAT() (cfg frag.Config, off bool) {
	return frag.Config{MaxBytes: f.HighThresh, MaxPerSource: f.SourceThresh, Timeout: f.Time}, !f.Reassembly
}

type rawSynproxy struct {
	MSS           int    `mapstructure:"mss"`
	WScale        int    `mapstructure:"wscale"`
	SACK          bool   `mapstructure:"sack"`
	Timestamps    bool   `mapstructure:"timestamps"`
	MaxQueued     int    `mapstructure:"max_queued"`
	SYNRetries    int    `mapstructure:"syn_retries"`
	RetryInterval string `mapstructure:"retry_interval"`
	AckStorm      int    `mapstructure:"ack_storm"`
}

// span is the range a duration field takes, and how a refusal says it.
type span struct {
	lo, hi time.Duration
	words  string // "from 0 to 1s"
}

var (
	busyPollRange   = span{0, time.Second, "from 0 to 1s"}
	quarantineRange = span{0, time.Hour, "from 0 (off) to 1h"}
	sweepRange      = span{10 * time.Millisecond, time.Minute, "from 10ms to 1m"}
	fragTimeRange   = span{time.Second, 5 * time.Minute, "from 1s to 5m"}
	retryRange      = span{10 * time.Millisecond, time.Minute, "from 10ms to 1m"}
)

// duration reads a duration field from the file, refusing the text as
// the file gives it when it is not a duration in r (check would say it
// as Go writes it).
func duration(e *errs, f, s string, r span) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d < r.lo || d > r.hi {
		e.add(f, "%q is not a duration %s", s, r.words)
	}
	return d
}

func (r span) check(e *errs, f string, d time.Duration) {
	if d < r.lo || d > r.hi {
		e.add(f, "%q is not a duration %s", d, r.words)
	}
}

// bounds is the range an integer field takes, and how a refusal says it.
// The file's reading holds its wide number to it before narrowing it to
// the field's type; check holds the field to it.
type bounds struct {
	lo, hi int
	words  string // "is not an MSS (64-65495)"
}

var (
	mssBounds      = bounds{64, 65495, "is not an MSS (64-65495)"}
	wscaleBounds   = bounds{-1, 14, "is not a window scale (0-14, or -1 for none)"}
	queuedBounds   = bounds{1, 64, "is out of range 1-64"}
	retriesBounds  = bounds{0, 10, "is out of range 0-10"}
	ackStormBounds = bounds{2, 65535, "is out of range 2-65535"}
	maxConnsBounds = bounds{1, MaxConnections, "is out of range 1-1073741824"}
	// A 64 KiB datagram in 1500-byte fragments is charged about 94 KiB
	// (each fragment a 2 KiB chunk): the bounds leave room for one from
	// a source, a quarter of high_thresh included.
	highThreshBounds   = bounds{512 << 10, 1 << 30, "bytes is out of range 524288-1073741824"}
	sourceThreshBounds = bounds{128 << 10, 1 << 30, "bytes is out of range 131072-1073741824 (or 0: a quarter of high_thresh)"}
)

func (b bounds) check(e *errs, f string, v int) bool {
	if v < b.lo || v > b.hi {
		e.add(f, "%d %s", v, b.words)
		return false
	}
	return true
}

// readGlobals reads limits:, sweep_interval, log:, control: and metrics:.
func (c *Config) readGlobals(e *errs, r *raw) {
	c.MaxConns = r.Limits.MaxConnections
	c.PortMin, _ = port(e, "limits.local_port_min", r.Limits.LocalPortMin)
	c.PortMax, _ = port(e, "limits.local_port_max", r.Limits.LocalPortMax)
	c.PortQuarantine = duration(e, "limits.port_quarantine", r.Limits.PortQuarantine, quarantineRange)
	c.Sweep = duration(e, "sweep_interval", r.Sweep, sweepRange)
	c.Fragments = Fragments{Reassembly: r.Frags.Reassembly, HighThresh: r.Frags.HighThresh, SourceThresh: r.Frags.SourceThresh,
		Time: duration(e, "fragments.time", r.Frags.Time, fragTimeRange)}
	c.LogLevel, c.LogFormat = r.Log.Level, r.Log.Format
	c.ControlSocket, c.MetricsListen = r.Control.Socket, r.Metrics.Listen
}

// readSynproxy reads synproxy:; an mss of 0 is the server side's MTU - 40
// (check).
func readSynproxy(e *errs, r rawSynproxy) nat.SynproxyConfig {
	c := nat.SynproxyConfig{SACK: r.SACK, Timestamps: r.Timestamps, MaxQueued: r.MaxQueued, SYNRetries: r.SYNRetries}
	if r.MSS != 0 && mssBounds.check(e, "synproxy.mss", r.MSS) {
		c.MSS = uint16(r.MSS)
	}
	if wscaleBounds.check(e, "synproxy.wscale", r.WScale) {
		c.WScale = int8(r.WScale)
	}
	if ackStormBounds.check(e, "synproxy.ack_storm", r.AckStorm) {
		c.AckStorm = uint32(r.AckStorm)
	}
	c.RetryInterval = duration(e, "synproxy.retry_interval", r.RetryInterval, retryRange)
	return c
}

// checkGlobals checks what readGlobals and readSynproxy read, and gives
// the SYN proxy its MSS if it has none.
func (c *Config) checkGlobals(e *errs) {
	if c.ControlSocket != "" && !strings.HasPrefix(c.ControlSocket, "/") {
		e.add("control.socket", "%q is not an absolute path", c.ControlSocket)
	}
	if c.MetricsListen != "" {
		if _, err := netip.ParseAddrPort(c.MetricsListen); err != nil {
			e.add("metrics.listen", "%q is not ip:port", c.MetricsListen)
		}
	}
	maxConnsBounds.check(e, "limits.max_connections", c.MaxConns)
	_, okMin := port(e, "limits.local_port_min", int(c.PortMin))
	_, okMax := port(e, "limits.local_port_max", int(c.PortMax))
	if okMin && okMax && c.PortMin > c.PortMax {
		e.add("limits.local_port_min", "%d is above local_port_max %d", c.PortMin, c.PortMax)
	}
	quarantineRange.check(e, "limits.port_quarantine", c.PortQuarantine)
	busyPollRange.check(e, "interfaces.busy_poll", c.BusyPoll)
	switch c.IO {
	case "auto", "uring", "syscalls":
	default:
		e.add("interfaces.io", "%q is not one of auto, uring, syscalls", c.IO)
	}
	if c.Pollers < 0 || c.Pollers > 64 {
		e.add("interfaces.pollers", "%d is not a poller count (0: auto, or 1-64)", c.Pollers)
	}
	c.checkPollGroups(e)
	sweepRange.check(e, "sweep_interval", c.Sweep)
	c.checkFragments(e)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		e.add("log.level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		e.add("log.format", "%q is not one of text, json", c.LogFormat)
	}
	sp := &c.Synproxy
	if sp.MSS == 0 && !e.refused("synproxy.mss") {
		mss := c.Server.MTU - 40
		if mssBounds.check(e, "synproxy.mss", mss) {
			sp.MSS = uint16(mss)
		}
	} else {
		mssBounds.check(e, "synproxy.mss", int(sp.MSS))
	}
	wscaleBounds.check(e, "synproxy.wscale", int(sp.WScale))
	queuedBounds.check(e, "synproxy.max_queued", sp.MaxQueued)
	retriesBounds.check(e, "synproxy.syn_retries", sp.SYNRetries)
	retryRange.check(e, "synproxy.retry_interval", sp.RetryInterval)
	ackStormBounds.check(e, "synproxy.ack_storm", int(sp.AckStorm))
}

// checkFragments checks fragments:: each bound in its range, one source's
// no more than all.
func (c *Config) checkFragments(e *errs) {
	f := c.Fragments
	okHigh := highThreshBounds.check(e, "fragments.high_thresh", f.HighThresh)
	if f.SourceThresh != 0 && sourceThreshBounds.check(e, "fragments.source_thresh", f.SourceThresh) && okHigh && f.SourceThresh > f.HighThresh {
		e.add("fragments.source_thresh", "%d bytes is above high_thresh %d", f.SourceThresh, f.HighThresh)
	}
	fragTimeRange.check(e, "fragments.time", f.Time)
}

// checkPollGroups checks interfaces.poll_groups: each group a poller's
// queue indexes, every index below the larger side's queue count in
// exactly one group, as many groups as interfaces.pollers when that is
// set too, and an io that has pollers.
func (c *Config) checkPollGroups(e *errs) {
	g := c.PollGroups
	if len(g) == 0 {
		return
	}
	const key = "interfaces.poll_groups"
	queues := max(c.Client.Queues, c.Server.Queues)
	switch {
	case c.IO == "syscalls":
		e.add(key, "io_uring pollers' groups, but io is syscalls")
		return
	case c.Pollers != 0 && c.Pollers != len(g):
		e.add(key, "%d groups, but interfaces.pollers is %d", len(g), c.Pollers)
		return
	case len(g) > queues:
		e.add(key, "%d groups for %d queues a side: a group would read nothing", len(g), queues)
		return
	}
	seen := make([]bool, queues)
	for k, qs := range g {
		if len(qs) == 0 {
			e.add(key, "group %d is empty", k)
			return
		}
		for _, q := range qs {
			switch {
			case q < 0 || q >= queues:
				e.add(key, "group %d: queue %d is not one (the larger side has %d: 0-%d)", k, q, queues, queues-1)
				return
			case seen[q]:
				e.add(key, "group %d: queue %d is in another group too", k, q)
				return
			}
			seen[q] = true
		}
	}
	for q, ok := range seen {
		if !ok {
			e.add(key, "queue %d is in no group", q)
			return
		}
	}
}
