package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// command is one parsed ipvsadm invocation.
type command struct {
	op       string // add-service, edit-service, delete-service, clear, restore, save, add-server, edit-server, delete-server, list, zero, set, add-laddr, del-laddr, get-laddr, help, capture, add-blklst, del-blklst, get-blklst, add-whtlst, del-whtlst, get-whtlst, bgp, drain, undrain, drain-status
	proto    string // tcp, udp
	service  string // VIP:port
	sched    string
	persist  *uint32
	real     string // RIP:port
	forward  string // fullnat (-b); others are refused
	weight   *int
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
	set      [3]uint32
	capture  string
	count    int
	socket   string
	prefix   string // -k: a source prefix of the deny (blklst) or allow (whtlst) list
	// Limits on new connections (--source-cps, --source-conns, --half-open);
	// nil: not given.
	cps, srcConns, halfOpen *uint32
	bgp                     bool          // --bgp: the BGP listing (alone or with -L)
	wait                    bool          // --wait: --drain waits for the last connection
	timeout                 time.Duration // --timeout of --drain --wait; 0: not given
}

// defaultDrainWait bounds --drain --wait without --timeout: a wait that
// never ends would hang the script that stops a node.
const defaultDrainWait = 5 * time.Minute

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// Short options that take no argument may be bundled: -lnc is -l -n -c.
var bundleable = map[byte]string{
	'L': "--list", 'l': "--list", 'n': "--numeric", 'c': "--connection", 'Z': "--zero", 'C': "--clear",
	'S': "--save", 'R': "--restore", 'h': "--help", 'g': "--gatewaying", 'i': "--ipip", 'm': "--masquerading",
	'b': "--fullnat", 'G': "--get-laddr",
}

var shortLong = map[string]string{
	"-A": "--add-service", "-E": "--edit-service", "-D": "--delete-service", "-a": "--add-server",
	"-e": "--edit-server", "-d": "--delete-server", "-t": "--tcp-service", "-u": "--udp-service",
	"-s": "--scheduler", "-p": "--persistent", "-r": "--real-server", "-w": "--weight", "-P": "--add-laddr",
	"-Q": "--del-laddr", "-z": "--laddr", "-j": "--synproxy", "-V": "--est-timeout", "-f": "--fwmark-service",
	"-x": "--u-threshold", "-y": "--l-threshold", "-M": "--netmask", "-k": "--blklst-address",
}

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
		case len(a) > 2 && a[0] == '-' && allBundleable(a[1:]):
			for i := 1; i < len(a); i++ {
				out = append(out, bundleable[a[i]])
			}
		case len(a) > 2 && a[0] == '-' && shortLong[a[:2]] != "":
			out = append(out, a[:2], a[2:]) // -t1.2.3.4:80
		default:
			out = append(out, a)
		}
	}
	return out
}

func allBundleable(s string) bool {
	for i := 0; i < len(s); i++ {
		if bundleable[s[i]] == "" {
			return false
		}
	}
	return true
}

func parse(args []string) (*command, error) {
	c := &command{}
	args = expand(args)
	setOp := func(op string) error {
		if c.op != "" && c.op != op {
			return usagef("multiple commands specified")
		}
		c.op = op
		return nil
	}
	seen := map[string]bool{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if l, ok := shortLong[a]; ok {
			a = l
		} else if len(a) == 2 && a[0] == '-' && bundleable[a[1]] != "" {
			a = bundleable[a[1]]
		}
		// Each option once, as ipvsadm's set_option has it: a second -r
		// must not silently replace the first.
		if seen[a] && a != "--tcp-service" && a != "--udp-service" {
			if c.op != "" && "--"+c.op == a || a == "--list" || a == "--set" {
				return nil, usagef("multiple commands specified")
			}
			return nil, usagef("multiple '%s' options specified", a)
		}
		seen[a] = true
		val := func() (string, error) {
			// A value that looks like an option is the next option, not
			// this one's value: --capture -t VIP lacks its file. An empty
			// one (--capture=) is none.
			if i+1 >= len(args) || args[i+1] == "" || len(args[i+1]) > 1 && args[i+1][0] == '-' {
				return "", usagef("option %s requires an argument", args[i])
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		switch a {
		case "--add-service", "--edit-service", "--delete-service", "--add-server", "--edit-server",
			"--delete-server", "--list", "--zero", "--clear", "--save", "--restore", "--help", "--add-laddr",
			"--del-laddr", "--get-laddr", "--add-blklst", "--del-blklst", "--get-blklst", "--add-whtlst",
			"--del-whtlst", "--get-whtlst", "--drain", "--undrain", "--drain-status":
			err = setOp(strings.TrimPrefix(a, "--"))
		case "--bgp":
			// A listing of its own, which -L may name too (-L --bgp, -ln
			// --bgp): the command is settled after the loop.
			c.bgp = true
		case "--wait":
			c.wait = true
		case "--timeout":
			if v, err = val(); err == nil {
				d, perr := time.ParseDuration(v)
				if perr != nil || d <= 0 {
					return nil, usagef("illegal --timeout %q: a duration such as 90s or 5m", v)
				}
				c.timeout = d
			}
		case "--blklst-address", "--whtlst-address":
			// DPVS spells the address -k for its blacklist; one option
			// serves both lists here, and the command says which.
			if c.prefix != "" {
				return nil, usagef("multiple source addresses specified")
			}
			c.prefix, err = val()
		case "--source-cps", "--source-conns", "--half-open":
			if v, err = val(); err == nil {
				n, perr := strconv.ParseUint(v, 10, 32)
				if perr != nil {
					return nil, usagef("illegal %s %q", a, v)
				}
				x := uint32(n)
				*map[string]**uint32{"--source-cps": &c.cps, "--source-conns": &c.srcConns, "--half-open": &c.halfOpen}[a] = &x
			}
		case "--set":
			if err = setOp("set"); err == nil {
				for k := range 3 {
					if v, err = val(); err != nil {
						return nil, usagef("--set needs three values: tcp tcpfin udp")
					}
					n, perr := strconv.ParseUint(v, 10, 32)
					if perr != nil {
						return nil, usagef("illegal timeout %q for --set", v)
					}
					c.set[k] = uint32(n)
				}
			}
		case "--capture":
			if err = setOp("capture"); err == nil {
				c.capture, err = val()
			}
		case "--count":
			if v, err = val(); err == nil {
				if c.count, err = strconv.Atoi(v); err != nil || c.count < 1 {
					return nil, usagef("illegal count %q", v)
				}
			}
		case "--tcp-service", "--udp-service":
			if c.service != "" {
				return nil, usagef("multiple service addresses specified")
			}
			c.proto = map[string]string{"--tcp-service": "tcp", "--udp-service": "udp"}[a]
			if v, err = val(); err == nil {
				c.service, err = hostPort(v, c.proto)
			}
		case "--fwmark-service":
			return nil, usagef("firewall-mark services (-f) are not supported: tapvs matches VIP:port")
		case "--scheduler":
			c.sched, err = val()
		case "--persistent":
			n := uint32(300) // ipvsadm's default
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				p, perr := strconv.ParseUint(args[i+1], 10, 32)
				if perr != nil {
					return nil, usagef("illegal persistence timeout %q", args[i+1])
				}
				n = uint32(p)
				i++
			}
			c.persist = &n
		case "--real-server":
			if v, err = val(); err == nil {
				c.real, err = hostPort(v, c.proto)
			}
		case "--fullnat":
			c.forward = "fullnat"
		case "--gatewaying", "--ipip", "--masquerading":
			return nil, usagef("%s: tapvs forwards with FULLNAT only (-b)", args[i])
		case "--weight":
			if v, err = val(); err == nil {
				w, perr := strconv.Atoi(v)
				if perr != nil || w < 0 || w > 65535 {
					return nil, usagef("Illegal weight specified")
				}
				c.weight = &w
			}
		case "--laddr":
			if v, err = val(); err == nil {
				c.laddr, err = localAddr(v)
			}
		case "--synproxy":
			if v, err = val(); err == nil {
				on := v == "enable" || v == "1"
				if !on && v != "disable" && v != "0" {
					return nil, usagef("-j takes enable or disable")
				}
				c.synproxy = &on
			}
		case "--client-address":
			if v, err = val(); err == nil {
				switch v {
				case "none", "toa", "proxy-v1", "proxy-v2":
					c.client = v
				default:
					return nil, usagef("--client-address takes none, toa, proxy-v1 or proxy-v2")
				}
			}
		case "--proxy-protocol":
			// DPVS's ipvsadm spelling; its insecure modes (trusting a
			// client's own header) are not offered.
			if v, err = val(); err == nil {
				switch v {
				case "v1", "v2":
					c.client = "proxy-" + v
				case "disable", "none":
					c.client = "none"
				default:
					return nil, usagef("--proxy-protocol takes v1, v2 or disable (tapvs never trusts a client's own header: no insecure modes)")
				}
			}
		case "--tcp-timestamps":
			if v, err = val(); err == nil {
				if v != "translate" && v != "remove" {
					return nil, usagef("--tcp-timestamps takes translate or remove")
				}
				c.tcpTS = v
			}
		case "--est-timeout":
			if v, err = val(); err == nil {
				n, perr := strconv.ParseUint(v, 10, 32)
				if perr != nil || n == 0 {
					return nil, usagef("illegal ESTABLISHED timeout %q", v)
				}
				c.estTO = uint32(n)
			}
		case "--numeric":
			c.numeric = true
		case "--connection":
			c.conns = true
		case "--stats":
			c.stats = true
		case "--rate":
			c.rate = true
		case "--exact":
			c.exact = true
		case "--socket":
			c.socket, err = val()
		case "--u-threshold", "--l-threshold", "--netmask":
			return nil, usagef("%s is not supported", args[i])
		default:
			return nil, usagef("unknown option %s", args[i])
		}
		if err != nil {
			return nil, err
		}
	}
	if c.bgp {
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

// check enforces what each command needs, as ipvsadm does.
func (c *command) check() error {
	needSvc := map[string]bool{"add-service": true, "edit-service": true, "delete-service": true, "add-server": true,
		"edit-server": true, "delete-server": true, "add-laddr": true, "del-laddr": true, "capture": true,
		"add-blklst": true, "del-blklst": true, "add-whtlst": true, "del-whtlst": true}
	if needSvc[c.op] && c.service == "" {
		return usagef("the %s command needs a service (-t or -u)", c.op)
	}
	// ipvsadm's option/command compatibility: an option that means nothing
	// to the command is an error, not silently ignored.
	if err := c.checkCluster(); err != nil {
		return err
	}
	svcOpts := c.sched != "" || c.persist != nil || c.synproxy != nil || c.client != "" || c.tcpTS != "" || c.estTO != 0 || c.cps != nil || c.srcConns != nil || c.halfOpen != nil
	destOpts := c.real != "" || c.weight != nil || c.forward != ""
	switch c.op {
	case "add-service", "edit-service":
		if destOpts || c.laddr != "" {
			return usagef("Illegal option for %s: -r, -w, -b and -z belong to real servers and local addresses", c.op)
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

// checkCluster enforces what --bgp and the drain commands take: nothing
// of a service's, -n for the listing, --wait and --timeout for --drain.
func (c *command) checkCluster() error {
	if c.wait && c.op != "drain" || c.timeout != 0 && !c.wait {
		return usagef("--wait belongs to --drain, and --timeout to --drain --wait")
	}
	switch c.op {
	case "bgp", "drain", "undrain", "drain-status":
	default:
		return nil
	}
	if c.service != "" || c.real != "" || c.laddr != "" || c.prefix != "" || c.sched != "" || c.persist != nil ||
		c.synproxy != nil || c.client != "" || c.tcpTS != "" || c.estTO != 0 || c.weight != nil || c.forward != "" ||
		c.cps != nil || c.srcConns != nil || c.halfOpen != nil || c.conns || c.stats || c.rate || c.exact ||
		c.count != 0 || c.numeric && c.op != "bgp" {
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
