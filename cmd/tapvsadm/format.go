package main

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tapvs/tapvs/control/api"
)

// The layouts are ipvsadm's (and Alibaba's additions for FULLNAT, -G and
// synproxy), so that what parses ipvsadm's output parses tapvsadm's.

// svcName is a service as -L names it: "TCP  172.25.254.100:80", or
// "TCP  172.25.254.100:http" without -n; ipvsadm cuts an IPv4 one at 33
// bytes (print_service_entry's svc_name[33]).
func svcName(s api.Service, c *command) string {
	if s.FWMark != 0 {
		return fwmName(s)
	}
	n := fmt.Sprintf("%s  %s", strings.ToUpper(s.Protocol), naming.addrPort(s.Addr, s.Protocol, c.numeric))
	if !isIPv6(s.Addr) && len(n) > 33 {
		n = n[:33]
	}
	return n
}

// destName is a real server as -L names it; ipvsadm cuts one of an IPv4
// service at 28 bytes (dname[28]).
func destName(s api.Service, d api.Dest, c *command) string {
	n := naming.addrPort(d.Addr, s.Protocol, c.numeric)
	if !svcIPv6(s) && len(n) > 28 {
		n = n[:28]
	}
	return n
}

func isIPv6(addrPort string) bool {
	ap, err := netip.ParseAddrPort(addrPort)
	return err == nil && ap.Addr().Is6()
}

// sortServices puts services and their real servers in ipvsadm's order
// (libipvs's ipvs_cmp_services and ipvs_cmp_dests: family, protocol,
// address, port), unless --nosort asked for tapvs's own (the order they
// were added in, as the kernel's table lists them). It sorts a copy.
func sortServices(svcs []api.Service, c *command) []api.Service {
	if c.nosort {
		return svcs
	}
	svcs = slices.Clone(svcs)
	key := func(a string) netip.AddrPort { ap, _ := netip.ParseAddrPort(a); return ap }
	slices.SortStableFunc(svcs, func(a, b api.Service) int {
		// ipvs_cmp_services compares fwmark first: VIP:port services
		// (mark 0), then match services by mark.
		if d := cmp.Compare(a.FWMark, b.FWMark); d != 0 {
			return d
		}
		x, y := key(a.Addr), key(b.Addr)
		if d := cmp.Compare(family(x), family(y)); d != 0 {
			return d
		}
		if d := cmp.Compare(protoNumber(a.Protocol), protoNumber(b.Protocol)); d != 0 {
			return d
		}
		return x.Compare(y)
	})
	for i := range svcs {
		svcs[i].Dests = slices.Clone(svcs[i].Dests)
		slices.SortStableFunc(svcs[i].Dests, func(a, b api.Dest) int { return key(a.Addr).Compare(key(b.Addr)) })
	}
	return svcs
}

// family orders IPv4 before IPv6, as AF_INET (2) sorts before AF_INET6.
func family(ap netip.AddrPort) int {
	if ap.Addr().Is6() {
		return 6
	}
	return 4
}

// protoNumber orders TCP (6) before UDP (17), as IPPROTO_ numbers do.
func protoNumber(p string) int {
	switch strings.ToLower(p) {
	case "tcp":
		return 6
	case "udp":
		return 17
	}
	return 256
}

// printList writes -L. Its format strings are ipvsadm's print_title and
// print_service_entry (ipvsadm.c): the title "%-33s %8s %8s %8s %8s %8s"
// for --stats and --rate, a real server "  -> %-28s %-7s %-6d %-10u %-10u",
// each counter print_largenum's; --thresholds "%-33s %-10s %-10s %-10s
// %-10s" and a real server "  -> %-28s %-10u %-10u %-10u %-10u"
// (Uthreshold, Lthreshold, ActiveConn, InActConn), its service line the
// default one, as print_service_entry prints it for every format but
// --stats and --rate. (ipvsadm's listing of one service, -t|-u,
// has no version line; tapvsadm's has always had one, and scripts and
// tests count its rows, so it stays.)
func printList(w io.Writer, info api.Info, svcs []api.Service, c *command) {
	fmt.Fprintf(w, "IP Virtual Server version %s (size=%d)\n", info.Version, info.Size)
	switch {
	case c.stats:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n", "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
		fmt.Fprintf(w, "  -> RemoteAddress:Port\n")
	case c.rate:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n", "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
		fmt.Fprintf(w, "  -> RemoteAddress:Port\n")
	case c.thresh:
		fmt.Fprintf(w, "%-33s %-10s %-10s %-10s %-10s\n", "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
		fmt.Fprintf(w, "  -> RemoteAddress:Port\n")
	case c.pconn:
		fmt.Fprintf(w, "%-33s %-9s %-11s %-10s %-10s\n", "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")
		fmt.Fprintf(w, "  -> RemoteAddress:Port\n")
	default:
		fmt.Fprintf(w, "Prot LocalAddress:Port Scheduler Flags\n")
		fmt.Fprintf(w, "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
	for _, s := range sortServices(svcs, c) {
		name := svcName(s, c)
		switch {
		case c.stats:
			fmt.Fprintf(w, "%-33s%s\n", name, traffic(s.Stats, c.exact))
			for _, d := range s.Dests {
				fmt.Fprintf(w, "  -> %-28s%s\n", destName(s, d, c), traffic(d.Stats, c.exact))
			}
		case c.rate:
			r := s.Rate
			fmt.Fprintf(w, "%-33s%s%s%s%s%s\n", name, largenum(round(r.CPS), c.exact), largenum(round(r.InPPS), c.exact),
				largenum(round(r.OutPPS), c.exact), largenum(round(r.InBPS), c.exact), largenum(round(r.OutBPS), c.exact))
			for _, d := range s.Dests {
				// A real server's first three rates are "%8u", never
				// scaled; its byte rates print_largenum's.
				r := d.Rate
				fmt.Fprintf(w, "  -> %-28s %8d %8d %8d%s%s\n", destName(s, d, c), round(r.CPS), round(r.InPPS), round(r.OutPPS),
					largenum(round(r.InBPS), c.exact), largenum(round(r.OutBPS), c.exact))
			}
		default:
			line := fmt.Sprintf("%s %s", name, s.Scheduler)
			if len(s.SchedFlags) > 0 {
				line += " (" + strings.Join(s.SchedFlags, ",") + ")" // ipvsadm's print_sched_flags
			}
			if s.Persistent > 0 {
				// ipvsadm's order: persistent, its mask, then synproxy.
				line += fmt.Sprintf(" persistent %d", s.Persistent)
				if s.PersistenceNetmask != "" {
					line += " mask " + s.PersistenceNetmask
				}
			}
			if s.Synproxy {
				line += " synproxy"
			}
			line += clientFlag(s.ClientAddress)
			if s.TCPTimestamps == "remove" {
				line += " ts-remove"
			}
			fmt.Fprintln(w, line)
			for _, d := range s.Dests {
				if c.thresh {
					fmt.Fprintf(w, "  -> %-28s %-10d %-10d %-10d %-10d\n", destName(s, d, c), d.UThreshold, d.LThreshold, d.ActiveConn, d.InActConn)
					continue
				}
				if c.pconn {
					fmt.Fprintf(w, "  -> %-28s %-9d %-11d %-10d %-10d\n", destName(s, d, c), d.Weight, d.PersistConn, d.ActiveConn, d.InActConn)
					continue
				}
				fmt.Fprintf(w, "  -> %-28s %-7s %-6d %-10d %-10d\n", destName(s, d, c), d.Forward, d.Weight, d.ActiveConn, d.InActConn)
			}
		}
	}
}

// round is a rate to the nearest whole number.
func round(f float64) uint64 { return uint64(f + 0.5) }

// clientFlag is a service's client address mode in the -L flags, as DPVS's
// ipvsadm prints its proxy protocol (" ppv2"); TOA, always on in DPVS, is
// " toa" here.
func clientFlag(mode string) string {
	switch mode {
	case "toa":
		return " toa"
	case "proxy-v1":
		return " ppv1"
	case "proxy-v2":
		return " ppv2"
	}
	return ""
}

// traffic is the five --stats columns, each print_largenum's.
func traffic(t api.Traffic, exact bool) string {
	return largenum(t.Conns, exact) + largenum(t.InPkts, exact) + largenum(t.OutPkts, exact) +
		largenum(t.InBytes, exact) + largenum(t.OutBytes, exact)
}

// printConns writes -lnc: ipvsadm's title and expiry ("IPVS connection
// entries", list_conn's "pro expire %-11s %-18s %-18s %s" and "%02d:%02d"),
// with the local address (LIP:lport) each FULLNAT connection leaves from in
// its own column before the destination, where DPVS's print_conn_entry
// prints it ("%-3s %-6s %-11s %-18s %-18s %-18s %s": client, virtual,
// local, destination).
func printConns(w io.Writer, conns []api.Conn, c *command) {
	fmt.Fprintf(w, "IPVS connection entries\n")
	fmt.Fprintf(w, "pro expire %-11s %-18s %-18s %-18s %s\n", "state", "source", "virtual", "local", "destination")
	for _, x := range conns {
		if c.service != "" && c.proto != fwm && (x.Virtual != c.service || !strings.EqualFold(x.Protocol, c.proto)) {
			continue
		}
		sec := (x.ExpiresMs + 999) / 1000
		if x.Local == "" {
			// A persistence template leaves from no LIP: the unspecified
			// address, so that every line has the same columns for awk.
			x.Local = "0.0.0.0:0"
			if strings.HasPrefix(x.Virtual, "[") {
				x.Local = "[::]:0"
			}
		}
		fmt.Fprintf(w, "%-3s %-6s %-11s %-18s %-18s %-18s %s\n", x.Protocol, fmt.Sprintf("%02d:%02d", sec/60, sec%60), x.State,
			naming.addrPort(x.Source, x.Protocol, c.numeric), naming.addrPort(x.Virtual, x.Protocol, c.numeric),
			naming.addrPort(x.Local, x.Protocol, c.numeric), naming.addrPort(x.Destination, x.Protocol, c.numeric))
	}
}

// printTimeout writes -L --timeout as list_timeout does.
func printTimeout(w io.Writer, t api.Timeouts) {
	fmt.Fprintf(w, "Timeout (tcp tcpfin udp): %d %d %d\n", t.TCP, t.TCPFin, t.UDP)
}

// printLaddrs writes -G: Alibaba's columns, then EXHAUSTED, the allocations
// that found no free local port on the LIP (ports are per (LIP, RIP:port),
// so CONNS is also the ports it holds). A column added at the end leaves
// the others where scripts reading Alibaba's layout find them.
func printLaddrs(w io.Writer, svcs []api.Service, c *command) error {
	if c.service != "" {
		if svcs = only(svcs, c); len(svcs) == 0 {
			return &api.Error{Code: api.CodeNoService}
		}
	}
	fmt.Fprintf(w, "%-20s %-8s %-20s %-10s %-10s %-10s\n", "VIP:VPORT", "TOTAL", "SNAT_IP", "CONFLICTS", "CONNS", "EXHAUSTED")
	for _, s := range svcs {
		if len(s.LocalAddrs) == 0 {
			fmt.Fprintf(w, "%-20s %-8d\n", svcAddr(s), 0)
			continue
		}
		for i, l := range s.LocalAddrs {
			if i == 0 {
				fmt.Fprintf(w, "%-20s %-8d %-20s %-10d %-10d %-10d\n", svcAddr(s), len(s.LocalAddrs), l.Addr, l.Conflicts, l.Conns, l.Exhausted)
			} else {
				fmt.Fprintf(w, "%-20s %-8s %-20s %-10d %-10d %-10d\n", "", "", l.Addr, l.Conflicts, l.Conns, l.Exhausted)
			}
		}
	}
	return nil
}

// printRules writes -S: commands that -R reads back, in the layout of
// Alibaba's ipvsadm (print_service_entry with FMT_RULE): a service as
// "-A %s -s %s", then " -j enable" or " -j disable" and " -V %u" when its
// ESTABLISHED timeout is not the default (defaults: what --set sets), its
// real servers as "-a %s -r %s %s -w %d", and every local address after
// all the services as print_laddrs_rules's "-P %s -z %s". Services are in
// ipvsadm's order. What tapvs adds (client address, timestamps, limits,
// deny and allow lists) follows in its own options. Without -n ports are
// named as /etc/services names them, which -R reads back; addresses stay
// numbers, since -R takes no host name (a name's address may have changed
// by the time the rules are restored).
func printRules(w io.Writer, svcs []api.Service, defaults api.Timeouts, c *command) {
	svcs = sortServices(svcs, &command{})
	svcArg := func(s api.Service) string { return ruleService(s, c.numeric) }
	for _, s := range svcs {
		svc := svcArg(s)
		line := fmt.Sprintf("-A %s -s %s", svc, s.Scheduler)
		if len(s.SchedFlags) > 0 {
			// ipvsadm writes -b, which is --fullnat in tapvsadm.
			line += " --sched-flags " + strings.Join(s.SchedFlags, ",")
		}
		if s.Persistent > 0 {
			line += fmt.Sprintf(" -p %d", s.Persistent)
			if s.PersistenceNetmask != "" {
				line += " -M " + s.PersistenceNetmask
			}
		}
		if s.Synproxy {
			line += " -j enable"
		} else {
			line += " -j disable"
		}
		if s.Timeouts.TCP != 0 && s.Timeouts.TCP != defaults.TCP {
			line += fmt.Sprintf(" -V %d", s.Timeouts.TCP)
		}
		switch s.ClientAddress {
		case "proxy-v1", "proxy-v2":
			line += " --proxy-protocol " + strings.TrimPrefix(s.ClientAddress, "proxy-")
		case "toa":
			line += " --client-address toa"
		}
		if s.TCPTimestamps == "remove" {
			line += " --tcp-timestamps remove"
		}
		if l := s.Limits; l != (api.LimitsView{}) {
			line += fmt.Sprintf(" --source-cps %d --source-conns %d --half-open %d", l.SourceCPS, l.SourceConns, l.HalfOpen)
		}
		fmt.Fprintln(w, line)
		for _, p := range s.Deny {
			fmt.Fprintf(w, "--add-blklst %s -k %s\n", svc, p)
		}
		for _, p := range s.Allow {
			fmt.Fprintf(w, "--add-whtlst %s -k %s\n", svc, p)
		}
		for _, d := range s.Dests {
			line := fmt.Sprintf("-a %s -r %s -b -w %d", svc, rulePort(d.Addr, s.Protocol, c.numeric), d.Weight)
			// ipvsadm's -S writes no thresholds (they are lost at -R);
			// tapvsadm's follow in ipvsadm's own options.
			if d.UThreshold != 0 {
				line += fmt.Sprintf(" -x %d", d.UThreshold)
			}
			if d.LThreshold != 0 {
				line += fmt.Sprintf(" -y %d", d.LThreshold)
			}
			fmt.Fprintln(w, line)
		}
	}
	for _, s := range svcs {
		for _, l := range s.LocalAddrs {
			fmt.Fprintf(w, "-P %s -z %s\n", svcArg(s), l.Addr)
		}
	}
}

// ruleService is a service as -S names it: -t|-u and its address.
func ruleService(s api.Service, numeric bool) string {
	if s.FWMark != 0 {
		return fwmRule(s)
	}
	flag := "-t"
	if s.Protocol == "udp" {
		flag = "-u"
	}
	return flag + " " + rulePort(s.Addr, s.Protocol, numeric)
}

// rulePort is an address and port of -S: the port named unless numeric,
// the address always a number.
func rulePort(addrPort, proto string, numeric bool) string {
	ap, err := netip.ParseAddrPort(addrPort)
	if numeric || err != nil {
		return addrPort
	}
	host := ap.Addr().String()
	if ap.Addr().Is6() {
		host = "[" + host + "]"
	}
	return host + ":" + naming.port(ap.Port(), proto)
}

// largenum is a counter as ipvsadm's print_largenum prints it, its
// separating space included: "%9llu" below 100 million, then "%8lluK"
// (thousands) below a billion, "%8lluM" below 100 billion, "%8lluG"
// below 100 trillion, "%8lluT"; with --exact the whole number in
// "%*llu", 9 wide or one more than its digits.
func largenum(n uint64, exact bool) string {
	switch {
	case exact:
		return fmt.Sprintf("%*d", max(9, len(strconv.FormatUint(n, 10))+1), n)
	case n < 100_000_000:
		return fmt.Sprintf("%9d", n)
	case n < 1_000_000_000:
		return fmt.Sprintf("%8dK", n/1_000)
	case n < 100_000_000_000:
		return fmt.Sprintf("%8dM", n/1_000_000)
	case n < 100_000_000_000_000:
		return fmt.Sprintf("%8dG", n/1_000_000_000)
	}
	return fmt.Sprintf("%8dT", n/1_000_000_000_000)
}

// printLists writes --get-blklst or --get-whtlst: DPVS's two columns, a
// line for each prefix of each service.
func printLists(w io.Writer, svcs []api.Service, c *command) error {
	if c.service != "" {
		if svcs = only(svcs, c); len(svcs) == 0 {
			return &api.Error{Code: api.CodeNoService}
		}
	}
	head := "BLACKLIST"
	if c.op == "get-whtlst" {
		head = "WHITELIST"
	}
	fmt.Fprintf(w, "%-5s %-22s %s\n", "PROT", "VIP:VPORT", head)
	for _, s := range svcs {
		list := s.Deny
		if c.op == "get-whtlst" {
			list = s.Allow
		}
		for _, p := range list {
			fmt.Fprintf(w, "%-5s %-22s %s\n", strings.ToUpper(svcProto(s)), svcAddr(s), p)
		}
	}
	return nil
}

// printBGP writes --bgp: the speaker, a line per peer, a line per announced
// route, then the counters. Times are ages (3m12s) as of now.
func printBGP(w io.Writer, b api.BGP, now time.Time) {
	line := fmt.Sprintf("BGP AS %d router-id %s", b.ASN, b.RouterID)
	if b.Draining {
		line += " draining"
	}
	if b.Joining {
		line += " joining (no route announced until connection sync holds the table)"
	}
	fmt.Fprintln(w, line)
	fmt.Fprintf(w, "%-24s %-10s %-12s %-8s %-8s %-8s %-8s %-8s %s\n", "Peer", "AS", "State", "Since", "Sessions", "Changes", "MsgRcvd", "MsgSent", "LastError")
	for _, p := range b.Peers {
		fmt.Fprintf(w, "%-24s %-10d %-12s %-8s %-8d %-8d %-8d %-8d %s\n", p.Address, p.ASN, p.State, age(p.Since, now),
			p.Established, p.Changes, p.Received, p.Sent, oneLine(p.LastError))
	}
	fmt.Fprintf(w, "%-43s %-4s %s\n", "Prefix", "Kind", "Since")
	for _, r := range b.Routes {
		backup := ""
		if r.Backup > 0 { // another instance's LIP, announced as its backup
			backup = fmt.Sprintf("    backup %d", r.Backup)
		}
		fmt.Fprintf(w, "%-43s %-4s %s%s\n", r.Prefix, r.Kind, age(r.Since, now), backup)
	}
	fmt.Fprintf(w, "Announced %d Withdrawn %d\n", b.Announced, b.Withdrawn)
}

// printDrain writes the answer of --drain, --undrain and --drain-status.
func printDrain(w io.Writer, d api.Drain, now time.Time) {
	if !d.Draining {
		fmt.Fprintf(w, "Drain off: the VIPs are announced, %s\n", connections(d.Conns))
		return
	}
	left := connections(d.Conns) + " left"
	if d.Empty {
		left = "no connection left: tapvs can be stopped"
	}
	fmt.Fprintf(w, "Drain on since %s (%s): %s\n", d.Since, age(d.Since, now), left)
	if len(d.Withdrawn) == 0 {
		fmt.Fprintln(w, "Withdrawn: none (nothing announced)")
		return
	}
	fmt.Fprintf(w, "Withdrawn: %s\n", strings.Join(d.Withdrawn, " "))
}

// connections is "1 connection", "2 connections".
func connections(n int) string {
	if n == 1 {
		return "1 connection"
	}
	return fmt.Sprintf("%d connections", n)
}

// age is how long ago an RFC 3339 time was, in the human form of a BGP
// listing: 42s, 3m12s, 5h07m, 2d03h; "-" for a time it cannot read.
func age(since string, now time.Time) string {
	t, err := time.Parse(time.RFC3339, since)
	if err != nil {
		return "-"
	}
	d := max(now.Sub(t), 0) / time.Second
	switch {
	case d < 60:
		return fmt.Sprintf("%ds", d)
	case d < 3600:
		return fmt.Sprintf("%dm%02ds", d/60, d%60)
	case d < 86400:
		return fmt.Sprintf("%dh%02dm", d/3600, d%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", d/86400, d%86400/3600)
}

// oneLine keeps a peer's error on its line and off the terminal's
// controls: GoBGP's reasons carry the router's own words (RFC 8203's
// shutdown communication), where a newline would break the columns and an
// escape sequence reach the operator's terminal.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	return strings.Join(strings.Fields(s), " ")
}
