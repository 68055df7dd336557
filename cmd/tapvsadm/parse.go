package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tapvs/tapvs/control/api"
)

// command is one parsed ipvsadm invocation.
type command struct {
	op       string // add-service, edit-service, delete-service, clear, restore, save, add-server, edit-server, delete-server, list, zero, set, add-laddr, del-laddr, get-laddr, help, capture, add-blklst, del-blklst, get-blklst, add-whtlst, del-whtlst, get-whtlst, bgp, drain, undrain, drain-status
	proto    string // tcp, udp
	service  string // VIP:port
	sched    string
	persist  *uint32
	netmask  string // -M: the persistence netmask, as typed
	real     string // RIP:port
	forward  string // fullnat (-b); others are refused
	weight   *int
	uthresh  *uint32 // -x; nil: not given
	lthresh  *uint32 // -y; nil: not given
	laddr    string
	synproxy *bool
	client   string // --client-address or --proxy-protocol, as the API names it
	tcpTS    string // --tcp-timestamps translate|remove
	estTO    uint32
	numeric  bool
	conns    bool
	stats    bool
	rate     bool
	exact    bool
	pconn    bool // --persistent-conn
	thresh   bool // --thresholds: the servers' -x and -y listed
	set      [3]uint32
	capture  string
	count    int
	kinds    string // --kind: the events --events prints
	socket   string
	prefix   string // -k: a source prefix of the deny (blklst) or allow (whtlst) list
	// Limits on new connections (--source-cps, --source-conns, --half-open);
	// nil: not given.
	cps, srcConns, halfOpen *uint32
	bgp                     bool          // --bgp: the BGP listing (alone or with -L)
	wait                    bool          // --wait: --drain waits for the last connection
	timeout                 time.Duration // --timeout of --drain --wait; 0: not given
	timeouts                bool          // -L --timeout: the timeouts, not the table
	nosort                  bool          // --nosort: the order services were added in
	schedFlags              *[]string     // --sched-flags' names; nil: not given

	ipv6 bool // -6: with -f, the selector is IPv6's

	healthCheck *api.HealthCheck // --health --check
	checkOff    bool             // --health --off, --fault --off
	fault       *api.Fault       // --fault --with: what it does, without its target
	faultClient string           // --fault --client
}

// defaultDrainWait bounds --drain --wait without --timeout: a wait that
// never ends would hang the script that stops a node.
const defaultDrainWait = 5 * time.Minute

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// expand turns bundles and attached values into one option per word.
func expand(args []string) []string {
	var out []string
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--"):
			if k, v, ok := strings.Cut(a, "="); ok {
				out = append(out, k, v)
			} else {
				out = append(out, a)
			}
		case len(a) > 2 && a[0] == '-' && bundled(a[1:]):
			for i := 1; i < len(a); i++ {
				out = append(out, byName["-"+a[i:i+1]].long)
			}
		case len(a) > 2 && a[0] == '-' && byName[a[:2]] != nil && !byName[a[:2]].bundle:
			out = append(out, a[:2], a[2:]) // -t1.2.3.4:80
		default:
			out = append(out, a)
		}
	}
	return out
}

// bundled reports whether every letter of s names an option that may be
// bundled: -lnc.
func bundled(s string) bool {
	for i := range len(s) {
		if o := byName["-"+s[i:i+1]]; o == nil || !o.bundle {
			return false
		}
	}
	return true
}

// parse reads one ipvsadm command line, option by option, each as its
// row in commands or options says.
func parse(args []string) (*command, error) {
	p := &parser{c: &command{}, words: expand(args), seen: map[*option]bool{}, kin: map[string]bool{}}
	for ; p.i < len(p.words); p.i++ {
		if err := p.option(); err != nil {
			return nil, err
		}
	}
	c := p.c
	if c.bgp {
		// A listing of its own, which -L may name too (-L --bgp, -ln
		// --bgp).
		if c.op != "" && c.op != "list" {
			return nil, usagef("multiple commands specified")
		}
		c.op = "bgp"
	}
	if c.op == "" {
		c.op = "list" // ipvsadm with no command lists
	}
	return c, c.check()
}

// A parser walks the words of one command line.
type parser struct {
	c     *command
	words []string
	i     int              // the word being read
	seen  map[*option]bool // the options named so far
	kin   map[string]bool  // the kins named so far
}

// option reads the option at p.i and its values.
func (p *parser) option() error {
	name := p.words[p.i]
	o := byName[name]
	if o == nil {
		return usagef("unknown option %s", name)
	}
	if err := p.once(o); err != nil {
		return err
	}
	if o.op != "" {
		if p.c.op != "" {
			return usagef("multiple commands specified")
		}
		p.c.op = o.op
	}
	switch n := len(strings.Fields(o.meta)); {
	case o.set == nil:
		return nil
	case n == 0:
		return o.set(p.c, use{name: name})
	default:
		// One value at a time: --set 1 x names x, not the missing third.
		for k := range n {
			v, err := p.value(o, name, n)
			if err != nil {
				return err
			}
			if err := o.set(p.c, use{name, k, v}); err != nil {
				return err
			}
		}
		return nil
	}
}

// once refuses a second of an option, as ipvsadm's set_option does: a
// second -r must not silently replace the first.
func (p *parser) once(o *option) error {
	if p.seen[o] && !o.again {
		if o.op != "" {
			return usagef("multiple commands specified")
		}
		return usagef("multiple '%s' options specified", o.long)
	}
	p.seen[o] = true
	if o.kin != "" {
		if p.kin[o.kin] {
			return usagef("multiple %s specified", o.kin)
		}
		p.kin[o.kin] = true
	}
	return nil
}

// value takes the word after p.i as one of o's n values. A word that
// looks like an option is the next option, not this one's value:
// --capture -t VIP lacks its file. An empty one (--capture=) is none.
func (p *parser) value(o *option, name string, n int) (string, error) {
	next, ok := "", p.i+1 < len(p.words)
	if ok {
		next = p.words[p.i+1]
	}
	switch {
	case o.def != "" && (!ok || strings.HasPrefix(next, "-")):
		return o.def, nil
	case o.bare != "" && (!ok || byName[next] != nil):
		return o.bare, nil
	case o.def == "" && (!ok || next == "" || len(next) > 1 && next[0] == '-'):
		if n > 1 {
			return "", usagef("%s needs %s values: %s", o.long, spelled(n), o.meta)
		}
		return "", usagef("option %s requires an argument", name)
	}
	p.i++
	return next, nil
}

func spelled(n int) string {
	if n < 10 {
		return strings.Fields("zero one two three four five six seven eight nine")[n]
	}
	return strconv.Itoa(n)
}

// check enforces what each command needs, as ipvsadm does.
func (c *command) check() error {
	needSvc := map[string]bool{"add-service": true, "edit-service": true, "delete-service": true, "add-server": true,
		"edit-server": true, "delete-server": true, "add-laddr": true, "del-laddr": true, "capture": true,
		"add-blklst": true, "del-blklst": true, "add-whtlst": true, "del-whtlst": true, "health": true}
	if needSvc[c.op] && c.service == "" {
		return usagef("the %s command needs a service (-t, -u or -f)", c.op)
	}
	if c.ipv6 && c.proto != fwm {
		return usagef("-6 belongs to -f (fwmark uses IPv6)")
	}
	// ipvsadm's option/command compatibility: an option that means nothing
	// to the command is an error, not silently ignored.
	if err := c.checkCluster(); err != nil {
		return err
	}
	if err := c.checkHealth(); err != nil {
		return err
	}
	if err := c.checkFault(); err != nil {
		return err
	}
	if err := c.checkEvents(); err != nil {
		return err
	}
	svcOpts := c.sched != "" || c.schedFlags != nil || c.persist != nil || c.netmask != "" || c.synproxy != nil || c.client != "" || c.tcpTS != "" || c.estTO != 0 || c.cps != nil || c.srcConns != nil || c.halfOpen != nil
	destOpts := c.real != "" || c.weight != nil || c.forward != "" || c.uthresh != nil || c.lthresh != nil
	switch c.op {
	case "add-service", "edit-service":
		if destOpts || c.laddr != "" {
			return usagef("Illegal option for %s: -r, -w, -x, -y, -b and -z belong to real servers and local addresses", c.op)
		}
	case "delete-service", "add-laddr", "del-laddr", "get-laddr", "clear", "zero", "save", "restore", "set",
		"add-blklst", "del-blklst", "get-blklst", "add-whtlst", "del-whtlst", "get-whtlst":
		if svcOpts || destOpts || c.laddr != "" && strings.Contains(c.op, "lst") {
			return usagef("Illegal option for %s", c.op)
		}
	case "add-server", "edit-server", "delete-server":
		if svcOpts || c.laddr != "" {
			return usagef("Illegal option for %s: -s, -p, -j, -V and -z belong to services", c.op)
		}
	}
	switch c.op {
	case "add-server", "edit-server", "delete-server":
		if c.real == "" {
			return usagef("the %s command needs a real server (-r)", c.op)
		}
		if c.op == "delete-server" && (c.uthresh != nil || c.lthresh != nil) {
			return usagef("Illegal option for delete-server: -x and -y belong to -a and -e")
		}
	case "add-laddr", "del-laddr":
		if c.laddr == "" {
			return usagef("the %s command needs a local address (-z)", c.op)
		}
	case "add-blklst", "del-blklst", "add-whtlst", "del-whtlst":
		if c.prefix == "" {
			return usagef("the %s command needs a source address or prefix (-k)", c.op)
		}
	}
	if c.prefix != "" && !strings.HasSuffix(c.op, "-blklst") && !strings.HasSuffix(c.op, "-whtlst") || strings.HasPrefix(c.op, "get-") && c.prefix != "" {
		return usagef("Illegal option for %s: -k belongs to --add/--del-blklst and --add/--del-whtlst", c.op)
	}
	return nil
}

// checkHealth enforces what --health takes: a service, and --check or
// --off or neither (a listing).
func (c *command) checkHealth() error {
	if c.op != "health" {
		if c.healthCheck != nil || c.checkOff && c.op != "fault" {
			return usagef("Illegal option for %s: --check and --off belong to --health", c.op)
		}
		return nil
	}
	if c.healthCheck != nil && c.checkOff {
		return usagef("--health takes --check or --off, not both")
	}
	if c.real != "" || c.ruleOptions() || c.listOptions() || c.count != 0 {
		return usagef("Illegal option for health: it takes -t|-u|-f, --check, --off and -n only")
	}
	return nil
}

// ruleOptions reports whether c has an option of the rules' commands: a
// service's, a real server's, a local address or a list's source. The
// commands of their own (--health, --fault, --events, the cluster's)
// take none.
func (c *command) ruleOptions() bool {
	return c.laddr != "" || c.prefix != "" || c.sched != "" || c.schedFlags != nil || c.persist != nil || c.netmask != "" ||
		c.synproxy != nil || c.client != "" || c.tcpTS != "" || c.estTO != 0 || c.weight != nil || c.forward != "" ||
		c.cps != nil || c.srcConns != nil || c.halfOpen != nil || c.uthresh != nil || c.lthresh != nil
}

// listOptions reports whether c has an option of -L's.
func (c *command) listOptions() bool {
	return c.conns || c.stats || c.rate || c.exact || c.thresh || c.pconn
}

// checkCluster enforces what --bgp and the drain commands take: nothing
// of a service's, -n for the listing, --wait and --timeout for --drain.
func (c *command) checkCluster() error {
	if c.timeouts {
		switch {
		case c.wait: // --drain --wait --timeout: its duration is missing
			return usagef("option --timeout requires an argument")
		case c.op != "list":
			return usagef("--timeout without a duration belongs to -L (-L --timeout)")
		case c.conns || c.service != "" || c.stats || c.rate:
			return usagef("options conflicts in the list command")
		}
	}
	if c.nosort && c.op != "list" {
		return usagef("Illegal option for %s: --nosort belongs to -L", c.op)
	}
	if c.wait && c.op != "drain" || c.timeout != 0 && !c.wait {
		return usagef("--wait belongs to --drain, and --timeout to --drain --wait")
	}
	switch c.op {
	case "bgp", "drain", "undrain", "drain-status":
	default:
		return nil
	}
	if c.service != "" || c.real != "" || c.ruleOptions() || c.listOptions() || c.count != 0 || c.numeric && c.op != "bgp" {
		takes := map[string]string{"bgp": "-L and -n only", "drain": "--wait and --timeout only"}[c.op]
		if takes == "" {
			takes = "no option"
		}
		return usagef("Illegal option for %s: it takes %s", c.op, takes)
	}
	return nil
}

// hostPort reads host[:port] as ipvsadm's parse_service does: an IPv6
// address with a port is in brackets ([2001:db8::1]:80), a bare one has no
// port (2001:db8::1), and the port may be a service name (http). A zone
// (fe80::1%eth0) is refused: ipvsadm's inet_pton reads none, and tapvs's
// addresses are not scoped to a link.
func hostPort(s, proto string) (string, error) {
	ap, err := addrPort(s, proto)
	if err != nil {
		return "", err
	}
	return ap.String(), nil
}

func addrPort(s, proto string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, "0"
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, usagef("Illegal address or port: %s", s)
	}
	if proto == "" {
		proto = "tcp"
	}
	p, err := net.LookupPort(proto, port)
	if err != nil {
		return netip.AddrPort{}, usagef("Illegal address or port: %s", s)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// localAddr reads -z's local address as ipvsadm does (parse_service: a
// port may follow, and means nothing): the address alone is sent.
func localAddr(s string) (string, error) {
	ap, err := addrPort(s, "")
	if err != nil {
		return "", usagef("Illegal local address: %s", s)
	}
	return ap.Addr().String(), nil
}

// checkEvents enforces what --events takes: --kind, a service to filter
// on, --count; --kind belongs to it alone.
func (c *command) checkEvents() error {
	if c.op != "events" {
		if c.kinds != "" {
			return usagef("Illegal option for %s: --kind belongs to --events", c.op)
		}
		return nil
	}
	if c.real != "" || c.ruleOptions() || c.listOptions() || c.healthCheck != nil || c.checkOff {
		return usagef("Illegal option for events: it takes --kind, -t|-u|-f and --count only")
	}
	return nil
}
