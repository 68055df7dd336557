package main

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/tapvs/tapvs/control/api"
)

// The layouts are ipvsadm's (and Alibaba's additions for FULLNAT, -G and
// synproxy), so that what parses ipvsadm's output parses tapvsadm's.

func svcName(s api.Service) string {
	return fmt.Sprintf("%s  %s", strings.ToUpper(s.Protocol), s.Addr)
}

func printList(w io.Writer, info api.Info, svcs []api.Service, c *command) {
	fmt.Fprintf(w, "IP Virtual Server version %s (size=%d)\n", info.Version, info.Size)
	switch {
	case c.stats:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n", "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
		fmt.Fprintf(w, "  -> RemoteAddress:Port\n")
	case c.rate:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n", "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
		fmt.Fprintf(w, "  -> RemoteAddress:Port\n")
	case c.pconn:
		fmt.Fprintf(w, "%-33s %-9s %-11s %-10s %-10s\n", "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")
		fmt.Fprintf(w, "  -> RemoteAddress:Port\n")
	default:
		fmt.Fprintf(w, "Prot LocalAddress:Port Scheduler Flags\n")
		fmt.Fprintf(w, "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
	for _, s := range svcs {
		switch {
		case c.stats:
			fmt.Fprintf(w, "%-33s %s\n", svcName(s), traffic(s.Stats, c.exact))
			for _, d := range s.Dests {
				fmt.Fprintf(w, "  -> %-28s %s\n", d.Addr, traffic(d.Stats, c.exact))
			}
		case c.rate:
			fmt.Fprintf(w, "%-33s %s\n", svcName(s), rate(s.Rate, c.exact))
			for _, d := range s.Dests {
				fmt.Fprintf(w, "  -> %-28s %s\n", d.Addr, rate(d.Rate, c.exact))
			}
		default:
			line := fmt.Sprintf("%s %s", svcName(s), s.Scheduler)
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
				if c.pconn {
					fmt.Fprintf(w, "  -> %-28s %-9d %-11d %-10d %-10d\n", d.Addr, d.Weight, d.PersistConn, d.ActiveConn, d.InActConn)
					continue
				}
				fmt.Fprintf(w, "  -> %-28s %-7s %-6d %-10d %-10d\n", d.Addr, d.Forward, d.Weight, d.ActiveConn, d.InActConn)
			}
		}
	}
}

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

// traffic is the five --stats columns.
func traffic(t api.Traffic, exact bool) string {
	return strings.Join([]string{largenum(t.Conns, exact), largenum(t.InPkts, exact), largenum(t.OutPkts, exact),
		largenum(t.InBytes, exact), largenum(t.OutBytes, exact)}, " ")
}

// rate is the five --rate columns.
func rate(r api.Rate, exact bool) string {
	return strings.Join([]string{largenum(uint64(r.CPS+0.5), exact), largenum(uint64(r.InPPS+0.5), exact),
		largenum(uint64(r.OutPPS+0.5), exact), largenum(uint64(r.InBPS+0.5), exact), largenum(uint64(r.OutBPS+0.5), exact)}, " ")
}

func printConns(w io.Writer, conns []api.Conn, c *command) {
	fmt.Fprintf(w, "IPVS connection entries\n")
	fmt.Fprintf(w, "pro expire %-11s %-18s %-18s %s\n", "state", "source", "virtual", "destination")
	for _, x := range conns {
		if c.service != "" && (x.Virtual != c.service || !strings.EqualFold(x.Protocol, c.proto)) {
			continue
		}
		sec := (x.ExpiresMs + 999) / 1000
		fmt.Fprintf(w, "%-3s %02d:%02d  %-11s %-18s %-18s %s\n", x.Protocol, sec/60, sec%60, x.State, x.Source, x.Virtual, x.Destination)
	}
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
			fmt.Fprintf(w, "%-20s %-8d\n", s.Addr, 0)
			continue
		}
		for i, l := range s.LocalAddrs {
			if i == 0 {
				fmt.Fprintf(w, "%-20s %-8d %-20s %-10d %-10d %-10d\n", s.Addr, len(s.LocalAddrs), l.Addr, l.Conflicts, l.Conns, l.Exhausted)
			} else {
				fmt.Fprintf(w, "%-20s %-8s %-20s %-10d %-10d %-10d\n", "", "", l.Addr, l.Conflicts, l.Conns, l.Exhausted)
			}
		}
	}
	return nil
}

// printRules writes -S output: commands that -R reads back.
func printRules(w io.Writer, svcs []api.Service, c *command) {
	for _, s := range svcs {
		flag := "-t"
		if s.Protocol == "udp" {
			flag = "-u"
		}
		line := fmt.Sprintf("-A %s %s -s %s", flag, s.Addr, s.Scheduler)
		if s.Persistent > 0 {
			line += fmt.Sprintf(" -p %d", s.Persistent)
			if s.PersistenceNetmask != "" {
				line += " -M " + s.PersistenceNetmask
			}
		}
		if s.Synproxy {
			line += " -j enable"
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
			fmt.Fprintf(w, "--add-blklst %s %s -k %s\n", flag, s.Addr, p)
		}
		for _, p := range s.Allow {
			fmt.Fprintf(w, "--add-whtlst %s %s -k %s\n", flag, s.Addr, p)
		}
		for _, d := range s.Dests {
			fmt.Fprintf(w, "-a %s %s -r %s -b -w %d\n", flag, s.Addr, d.Addr, d.Weight)
		}
		for _, l := range s.LocalAddrs {
			fmt.Fprintf(w, "-P %s %s -z %s\n", flag, s.Addr, l.Addr)
		}
	}
}

// largenum prints a counter in 8 columns, as ipvsadm: exact, or scaled to
// K, M, G or T once it no longer fits.
func largenum(n uint64, exact bool) string {
	if exact || n < 100000000 {
		return fmt.Sprintf("%8d", n)
	}
	for _, unit := range []string{"K", "M", "G", "T"} {
		n /= 1000
		if n < 10000000 {
			return fmt.Sprintf("%7d%s", n, unit)
		}
	}
	return fmt.Sprintf("%7dP", n/1000)
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
			fmt.Fprintf(w, "%-5s %-22s %s\n", strings.ToUpper(s.Protocol), s.Addr, p)
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
