package main

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// An option is one row of ipvsadm's grammar: its names, the values it
// reads, the command it is or the field it sets (with the checks of its
// value), and its line in -h. Adding an option is adding a row.
type option struct {
	long  string // --add-service
	short string // its one-letter names: "A"; "Ll" for --list; "" for none
	// bundle: its short names take no value and may be bundled (-lnc is
	// -l -n -c). Any other short name takes the rest of its word as its
	// first value (-t1.2.3.4:80, -p60).
	bundle bool
	op     string // the command it is ("add-service"); "" for an option
	// meta names the values it reads, one word each, as -h prints them:
	// "tcp tcpfin udp" is three values, "" none.
	meta string
	// def makes its one value optional: what it is when the next word is
	// not a number (-p alone is ipvsadm's 300 seconds).
	def string
	// bare makes its value optional in another way: what it is when the
	// next word is none or an option (-L --timeout -n), where a word that
	// only looks like one (-1s) is still refused as its value.
	bare string
	// kin is what options that set one field share: a second of them is
	// "multiple <kin> specified", refused before its value is read.
	kin string
	// again: it may be named twice, its kin words the refusal (-t -t is
	// "multiple service addresses", not "multiple '--tcp-service'").
	again bool
	// set checks one value and sets its field, or refuses an option tapvs
	// does not have. It is called once for an option without values, once
	// per value otherwise; nil for a command that takes none.
	set  func(c *command, u use) error
	help string // its line in -h ("\n" continues it); "" for none
}

// A use is one value given to an option.
type use struct {
	name string // the option as typed (after expand): -t, --tcp-service
	k    int    // which of its values: --set's 0 (tcp), 1 (tcpfin), 2 (udp)
	v    string // the value; "" for an option without one
}

// commands are ipvsadm's commands, in -h's order; --bgp is listed with
// them, though -L --bgp is one command (parse settles it).
var commands = []option{
	{long: "--add-service", short: "A", op: "add-service", help: "add virtual service with options"},
	{long: "--edit-service", short: "E", op: "edit-service", help: "edit virtual service with options"},
	{long: "--delete-service", short: "D", op: "delete-service", help: "delete virtual service"},
	{long: "--clear", short: "C", bundle: true, op: "clear", help: "clear the whole table"},
	{long: "--restore", short: "R", bundle: true, op: "restore", help: "restore rules from stdin"},
	{long: "--save", short: "S", bundle: true, op: "save", help: "save rules to stdout"},
	{long: "--add-server", short: "a", op: "add-server", help: "add real server with options"},
	{long: "--edit-server", short: "e", op: "edit-server", help: "edit real server with options"},
	{long: "--delete-server", short: "d", op: "delete-server", help: "delete real server"},
	{long: "--list", short: "Ll", bundle: true, op: "list", help: "list the table"},
	{long: "--zero", short: "Z", bundle: true, op: "zero", help: "zero counters in a service or all services"},
	{long: "--set", op: "set", meta: "tcp tcpfin udp", set: setTimeout, help: "set connection timeout values"},
	{long: "--add-laddr", short: "P", op: "add-laddr", help: "add local address"},
	{long: "--del-laddr", short: "Q", op: "del-laddr", help: "del local address"},
	{long: "--get-laddr", short: "G", bundle: true, op: "get-laddr", help: "get local address"},
	{long: "--capture", op: "capture", meta: "FILE", set: text(func(c *command) *string { return &c.capture }),
		help: "write a pcap of both sides of a service's traffic"},
	{long: "--add-blklst", op: "add-blklst", help: "add a source to a service's deny list (DPVS's blacklist)"},
	{long: "--del-blklst", op: "del-blklst", help: "delete a source from a service's deny list"},
	{long: "--get-blklst", op: "get-blklst", help: "list the deny lists"},
	{long: "--add-whtlst", op: "add-whtlst", help: "add a source to a service's allow list (DPVS's whitelist: when not\n" +
		"empty, only its sources may open connections)"},
	{long: "--del-whtlst", op: "del-whtlst", help: "delete a source from a service's allow list"},
	{long: "--get-whtlst", op: "get-whtlst", help: "list the allow lists"},
	{long: "--bgp", set: flag(func(c *command) { c.bgp = true }), help: "list the BGP speaker: its peers, announced routes and counters"},
	{long: "--drain", op: "drain", help: "withdraw the VIPs from every BGP peer; open connections go on"},
	{long: "--undrain", op: "undrain", help: "end a drain: announce the VIPs again"},
	{long: "--drain-status", op: "drain-status", help: "how a drain stands: connections left, VIPs withdrawn"},
	{long: "--health", op: "health", help: "show a service's health check, set it (--check) or stop it (--off)\nuntil the next reload, which re-applies the file's"},
	{long: "--fault", op: "fault", help: "show the faults in force, set one on a service (-t|-u|-f), a real\nserver (-r) or clients (--client) with --with, clear it (--off),\nor all of them (--off alone), until the next reload"},
	{long: "--events", op: "events", help: "print tapvs's events, one a line, until interrupted (or --count N):\nservers up and down, connections, drops, reloads"},
	{long: "--help", short: "h", bundle: true, op: "help", help: "display this help message"},
	{long: "--version", short: "v", bundle: true, op: "version", help: "display the version"},
}

// options are what the commands take, in -h's order, then those -h does
// not list.
var options = []option{
	{long: "--tcp-service", short: "t", meta: "service-address", kin: "service addresses", again: true, set: service("tcp"),
		help: "service-address is host[:port]"},
	{long: "--udp-service", short: "u", meta: "service-address", kin: "service addresses", again: true, set: service("udp"),
		help: "service-address is host[:port]"},
	{long: "--fwmark-service", short: "f", meta: "fwmark", kin: "service addresses", again: true, set: fwmark,
		help: "fwmark names a selector of the configuration's marks:\n(a VIP, a protocol, ports); tapvs sees no kernel marks"},
	{long: "--scheduler", short: "s", meta: "scheduler", set: text(func(c *command) *string { return &c.sched }),
		help: "one of rr|wrr|lc|wlc|sed|nq|sh|mh|dh|lblc|lblcr|fo|ovf,\nthe default scheduler is wlc"},
	{long: "--sched-flags", meta: "flags", set: schedFlags, help: "scheduler flags, comma-separated: sh-fallback,sh-port (sh),\nmh-fallback,mh-port (mh); -b is --fullnat here"},
	{long: "--real-server", short: "r", meta: "server-address", set: realServer, help: "server-address is host (and port)"},
	{long: "--fullnat", short: "b", bundle: true, set: flag(func(c *command) { c.forward = "fullnat" }),
		help: "full NAT (the only method tapvs has; the default)"},
	{long: "--weight", short: "w", meta: "weight", set: weight, help: "capacity of real server"},
	{long: "--u-threshold", short: "x", meta: "uthreshold", set: threshold(func(c *command) **uint32 { return &c.uthresh }, "u_threshold"),
		help: "upper threshold of connections"},
	{long: "--l-threshold", short: "y", meta: "lthreshold", set: threshold(func(c *command) **uint32 { return &c.lthresh }, "l_threshold"),
		help: "lower threshold of connections"},
	{long: "--laddr", short: "z", meta: "local-address", set: laddr, help: "local address (LIP) for FULLNAT"},
	{long: "--synproxy", short: "j", meta: "enable|disable", set: synproxy, help: "SYN proxy for a TCP service"},
	{long: "--client-address", meta: "none|toa|proxy-v1|proxy-v2", set: clientAddress,
		help: "how real servers learn the client's address (UDP: proxy-v2)"},
	// DPVS's ipvsadm spelling; its insecure modes (trusting a client's
	// own header) are not offered.
	{long: "--proxy-protocol", meta: "v1|v2|disable", set: proxyProtocol,
		help: "DPVS's spelling of --client-address proxy-v1|proxy-v2|none"},
	{long: "--tcp-timestamps", meta: "translate|remove", set: tcpTimestamps,
		help: "TCP timestamps toward the real servers: kept, shifted per\nconnection (default), or removed as LVS FULLNAT does"},
	{long: "--est-timeout", short: "V", meta: "seconds", set: estTimeout, help: "ESTABLISHED timeout of a service"},
	{long: "--numeric", short: "n", bundle: true, set: flag(func(c *command) { c.numeric = true }), help: "numeric output of addresses and ports"},
	{long: "--connection", short: "c", bundle: true, set: flag(func(c *command) { c.conns = true }), help: "output of current IPVS connections"},
	{long: "--stats", set: flag(func(c *command) { c.stats = true }), help: "output of statistics information"},
	{long: "--rate", set: flag(func(c *command) { c.rate = true }), help: "output of rate information"},
	{long: "--thresholds", set: flag(func(c *command) { c.thresh = true }), help: "output of thresholds information"},
	{long: "--exact", short: "X", bundle: true, set: flag(func(c *command) { c.exact = true }), help: "expand numbers (display exact values)"},
	{long: "--sort", set: flag(func(*command) {}), help: "sort the listing (the default: ipvsadm's order)"},
	{long: "--nosort", set: flag(func(c *command) { c.nosort = true }), help: "list services and servers in the order they were added"},
	{long: "--count", meta: "N", set: count, help: "frames to capture (default 100); events to print (--events)"},
	{long: "--kind", meta: "kinds", set: text(func(c *command) *string { return &c.kinds }),
		help: "the events --events prints, comma-separated: server_up, server_down,\nconn_opened, conn_closed, conn_reset, conn_expired, drops, quorum_lost,\nquorum_gained, reload_applied, reload_refused, or a group: server, conn,\nquorum, reload"},
	// DPVS spells the address -k for its blacklist; one option serves both
	// lists here, and the command says which.
	{long: "--blklst-address", short: "k", meta: "address[/len]", kin: "source addresses", set: text(func(c *command) *string { return &c.prefix }),
		help: "source IPv4 address or prefix (IPv6: a /64 or shorter) of a deny or allow list"},
	{long: "--source-cps", meta: "N", set: limit(func(c *command) **uint32 { return &c.cps }),
		help: "new connections per second from one source (0: no limit)"},
	{long: "--source-conns", meta: "N", set: limit(func(c *command) **uint32 { return &c.srcConns }),
		help: "concurrent connections from one source (0: no limit)"},
	{long: "--half-open", meta: "N", set: limit(func(c *command) **uint32 { return &c.halfOpen }),
		help: "TCP handshakes awaiting the client's ACK, for a service\nwithout SYN proxy (0: no limit)"},
	{long: "--wait", set: flag(func(c *command) { c.wait = true }), help: "--drain: wait until no connection is left (poll every 200ms)"},
	{long: "--timeout", meta: "[duration]", bare: listTimeouts, set: timeout,
		help: "-L: the timeouts --set sets; --drain --wait: how long it waits\n(default 5m; 90s, 1h...), then exit 1"},
	{long: "--check", meta: "key=value,...", set: checkOption,
		help: "--health: the check, in the file's health_check: names\n(type=http,http_path=/healthz,http_status=200,rise=2,fall=3)"},
	{long: "--off", set: flag(func(c *command) { c.checkOff = true }), help: "--health: no check of the service until the next reload;\n--fault: clear the fault"},
	{long: "--with", meta: "key=value,...", set: faultOption,
		help: "--fault: what it does, in the file's faults: names\n(blackhole=true; loss=0.05; every=10; syn=drop|refuse;\ndirection=to_server|to_client|both; drop_fin=true;\nlatency=50ms; jitter=10ms; rate=8mbit; duplicate=0.01;\nreorder=0.01; reset_bytes=1048576; reset_after=30s)"},
	{long: "--client", meta: "address[/len]", set: text(func(c *command) *string { return &c.faultClient }),
		help: "--fault: the clients it acts on"},
	{long: "--socket", meta: "PATH", set: text(func(c *command) *string { return &c.socket }),
		help: "tapvs's control socket (or TAPVS_SOCKET; default /run/tapvs/tapvs.sock)"},

	{long: "--persistent", short: "p", meta: "timeout", def: "300", set: persistent,
		help: "persistent service: a client's connections go to one\nreal server for timeout seconds after its last (0: off)"},
	{long: "--netmask", short: "M", meta: "netmask", set: text(func(c *command) *string { return &c.netmask }),
		help: "persistent granularity mask: a client network shares\na server (255.255.255.0; IPv6: a prefix length)"},
	{long: "--ipv6", short: "6", bundle: true, set: ipv6, help: "fwmark uses IPv6 (-S writes it; the selector's family decides)"},
	{long: "--persistent-conn", set: flag(func(c *command) { c.pconn = true }), help: "output of persistence templates per real server"},
	{long: "--whtlst-address", meta: "address[/len]", kin: "source addresses", set: text(func(c *command) *string { return &c.prefix })},
	// What tapvs does not do, refused by the name typed.
	{long: "--gatewaying", short: "g", bundle: true, set: refuse("%s: tapvs forwards with FULLNAT only (-b)")},
	{long: "--ipip", short: "i", bundle: true, set: refuse("%s: tapvs forwards with FULLNAT only (-b)")},
	{long: "--masquerading", short: "m", bundle: true, set: refuse("%s: tapvs forwards with FULLNAT only (-b)")},
}

// byName finds a row by any of its names: --list, -L, -l.
var byName = names(commands, options)

func names(tables ...[]option) map[string]*option {
	m := map[string]*option{}
	for _, rows := range tables {
		for i := range rows {
			o := &rows[i]
			m[o.long] = o
			for _, s := range o.short {
				m["-"+string(s)] = o
			}
		}
	}
	return m
}

func flag(f func(c *command)) func(*command, use) error {
	return func(c *command, _ use) error { f(c); return nil }
}

func text(field func(c *command) *string) func(*command, use) error {
	return func(c *command, u use) error { *field(c) = u.v; return nil }
}

func refuse(format string) func(*command, use) error {
	return func(_ *command, u use) error { return usagef(format, u.name) }
}

// u32 reads a decimal uint32, as ipvsadm's string_to_number does.
func u32(v string) (uint32, bool) {
	n, err := strconv.ParseUint(v, 10, 32)
	return uint32(n), err == nil
}

func limit(field func(c *command) **uint32) func(*command, use) error {
	return func(c *command, u use) error {
		n, ok := u32(u.v)
		if !ok {
			return usagef("illegal %s %q", u.name, u.v)
		}
		*field(c) = &n
		return nil
	}
}

// threshold reads -x or -y as ipvsadm does (0 to INT_MAX), with its
// message ("illegal u_threshold specified").
func threshold(field func(c *command) **uint32, name string) func(*command, use) error {
	return func(c *command, u use) error {
		n, ok := u32(u.v)
		if !ok || n > math.MaxInt32 {
			return usagef("illegal %s specified", name)
		}
		*field(c) = &n
		return nil
	}
}

func service(proto string) func(*command, use) error {
	return func(c *command, u use) (err error) {
		c.proto = proto
		c.service, err = hostPort(u.v, proto)
		return err
	}
}

// realServer reads -r with the service's protocol given so far (a port
// may be a service name).
func realServer(c *command, u use) (err error) {
	proto := c.proto
	if proto == fwm {
		proto = "" // a match service's port names are TCP's
	}
	c.real, err = hostPort(u.v, proto)
	return err
}

func laddr(c *command, u use) (err error) {
	c.laddr, err = localAddr(u.v)
	return err
}

func setTimeout(c *command, u use) error {
	n, ok := u32(u.v)
	if !ok {
		return usagef("illegal timeout %q for --set", u.v)
	}
	c.set[u.k] = n
	return nil
}

func persistent(c *command, u use) error {
	n, ok := u32(u.v)
	if !ok {
		return usagef("illegal persistence timeout %q", u.v)
	}
	c.persist = &n
	return nil
}

func weight(c *command, u use) error {
	w, err := strconv.Atoi(u.v)
	if err != nil || w < 0 || w > 65535 {
		return usagef("Illegal weight specified")
	}
	c.weight = &w
	return nil
}

func synproxy(c *command, u use) error {
	on := u.v == "enable" || u.v == "1"
	if !on && u.v != "disable" && u.v != "0" {
		return usagef("-j takes enable or disable")
	}
	c.synproxy = &on
	return nil
}

func clientAddress(c *command, u use) error {
	switch u.v {
	case "none", "toa", "proxy-v1", "proxy-v2":
		c.client = u.v
		return nil
	}
	return usagef("--client-address takes none, toa, proxy-v1 or proxy-v2")
}

func proxyProtocol(c *command, u use) error {
	switch u.v {
	case "v1", "v2":
		c.client = "proxy-" + u.v
	case "disable", "none":
		c.client = "none"
	default:
		return usagef("--proxy-protocol takes v1, v2 or disable (tapvs never trusts a client's own header: no insecure modes)")
	}
	return nil
}

func tcpTimestamps(c *command, u use) error {
	if u.v != "translate" && u.v != "remove" {
		return usagef("--tcp-timestamps takes translate or remove")
	}
	c.tcpTS = u.v
	return nil
}

func estTimeout(c *command, u use) error {
	n, ok := u32(u.v)
	if !ok || n == 0 {
		return usagef("illegal ESTABLISHED timeout %q", u.v)
	}
	c.estTO = n
	return nil
}

func count(c *command, u use) error {
	n, err := strconv.Atoi(u.v)
	if err != nil || n < 1 {
		return usagef("illegal count %q", u.v)
	}
	c.count = n
	return nil
}

// listTimeouts is --timeout without a duration: -L --timeout.
const listTimeouts = "(list)"

func timeout(c *command, u use) error {
	if u.v == listTimeouts {
		c.timeouts = true
		return nil
	}
	d, err := time.ParseDuration(u.v)
	if err != nil || d <= 0 {
		return usagef("illegal --timeout %q: a duration such as 90s or 5m", u.v)
	}
	c.timeout = d
	return nil
}

// helpText is -h: the synopsis, then each row's line.
var helpText = usage + "\nCommands:\n" + helpLines(commands, 28, commandNames) + "\nOptions:\n" + helpLines(options, 36, optionNames)

const usage = `tapvsadm (ipvsadm for tapvs)
Usage:
  ipvsadm -A|E -t|u service-address|-f fwmark [-s scheduler] [-j enable|disable] [-V est-timeout]
        [--sched-flags flags] [--source-cps N] [--source-conns N] [--half-open N]
  ipvsadm -D -t|u service-address
  ipvsadm -C
  ipvsadm -R
  ipvsadm -S [-n]
  ipvsadm -a|e -t|u service-address -r server-address [-b] [-w weight]
        [-x upper-threshold] [-y lower-threshold]
  ipvsadm -d -t|u service-address -r server-address
  ipvsadm -L|l [-t|u service-address] [-n] [-c] [--stats] [--rate] [--thresholds] [--exact] [--nosort]
  ipvsadm -L --timeout
  ipvsadm -Z [-t|u service-address]
  ipvsadm --set tcp tcpfin udp
  ipvsadm -P|Q -t|u service-address -z local-address
  ipvsadm -G [-t|u service-address]
  ipvsadm --capture FILE -t|u service-address [--count N]
  ipvsadm --add-blklst|--del-blklst|--add-whtlst|--del-whtlst -t|u service-address -k address[/len]
  ipvsadm --get-blklst|--get-whtlst [-t|u service-address]
  ipvsadm --bgp [-L] [-n]
  ipvsadm --drain [--wait [--timeout duration]]
  ipvsadm --undrain|--drain-status
  ipvsadm --health -t|u service-address|-f fwmark [--check key=value,...|--off]
  ipvsadm --fault [-t|u service-address|-f fwmark|-r server-address|--client address[/len]]
        [--with key=value,...|--off]
  ipvsadm --events [--kind kinds] [-t|u service-address|-f fwmark] [--count N]
  ipvsadm -h
  ipvsadm -v
`

// commandNames is a command's names in -h: "--list            -L|-l".
func commandNames(o *option) string {
	var shorts []string
	for _, s := range o.short {
		shorts = append(shorts, "-"+string(s))
	}
	return pad(strings.TrimSpace(o.long+" "+o.meta), 18) + strings.Join(shorts, "|")
}

// optionNames is an option's names in -h: "--weight       -w weight".
func optionNames(o *option) string {
	if o.short == "" {
		return strings.TrimSpace(o.long + " " + o.meta)
	}
	return strings.TrimSpace(pad(o.long, 14) + " -" + o.short + " " + o.meta)
}

// helpLines prints the rows that have help, their names then their help
// from column width on (on a line of its own when the names reach it).
func helpLines(rows []option, width int, names func(*option) string) string {
	indent := "\n" + strings.Repeat(" ", 2+width)
	var b strings.Builder
	for i := range rows {
		o := &rows[i]
		if o.help == "" {
			continue
		}
		n, sep := names(o), indent
		if len(n) < width {
			sep = strings.Repeat(" ", width-len(n))
		}
		b.WriteString("  " + n + sep + strings.ReplaceAll(o.help, "\n", indent) + "\n")
	}
	return b.String()
}

func pad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return s + strings.Repeat(" ", n-len(s))
}
