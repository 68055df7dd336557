// Command tapvsadm is ipvsadm for tapvs: the same commands, options and
// output (Alibaba's FULLNAT/SYNPROXY ipvsadm), spoken to a running tapvs
// over its control socket. Installed or linked as "ipvsadm" it works as
// scripts and keepalived-era habits expect.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"github.com/google/shlex"

	"github.com/tapvs/tapvs/control/api"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c, err := parse(args)
	if err != nil {
		fmt.Fprintln(stderr, err)
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "Try `ipvsadm -h' or 'ipvsadm --help' for more information.")
		}
		return 2
	}
	if c.op == "help" {
		fmt.Fprint(stdout, helpText)
		return 0
	}
	if c.op == "version" {
		fmt.Fprintln(stdout, versionLine())
		return 0
	}
	sock := c.socket
	if sock == "" {
		sock = os.Getenv("TAPVS_SOCKET")
	}
	if sock == "" {
		sock = api.DefaultSocket
	}
	cl := api.Dial(sock)
	// What a reload of tapvs's configuration file does with a change: kept
	// across reloads, unless the file changes that value. On stderr, so
	// that what a script reads on stdout is ipvsadm's.
	cl.OnNote = func(n string) { fmt.Fprintln(stderr, "note: "+n) }
	if c.op == "restore" {
		return restore(cl, stdin, stderr)
	}
	if err := execute(cl, c, stdout); err != nil {
		fmt.Fprintln(stderr, message(err, c.op))
		return 1
	}
	return 0
}

// message words an API error of the command op as ipvsadm would.
func message(err error, op string) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case api.CodeNoService:
			return noService(op)
		case api.CodeServiceExists:
			return "Service already exists"
		case api.CodeNoDest:
			return "No such destination"
		case api.CodeDestExists:
			return "Destination already exists"
		case api.CodeNoLocalAddr:
			return "No such local address"
		case api.CodeLocalExists:
			return "Local address already exists"
		case api.CodeNoBGP:
			return "BGP: this tapvs has no bgp: section, it announces nothing"
		}
		return ae.Message
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return ue.msg
	}
	var fe *failure
	if errors.As(err, &fe) {
		return fe.msg
	}
	return "Can not talk to tapvs: " + err.Error() + "\nIs tapvs running, and is this its control socket (--socket or TAPVS_SOCKET)?"
}

// noService is ipvsadm's message for a service that does not exist, which
// depends on the command (ipvs_strerror's ESRCH): one on the service itself
// (-E, -D, -Z, a listing of it) says "No such service", one on what a
// service holds (its real servers, local addresses, lists) "Service not
// defined".
func noService(op string) string {
	switch op {
	case "edit-service", "delete-service", "zero", "list", "get-laddr", "get-blklst", "get-whtlst":
		return "No such service"
	}
	return "Service not defined"
}

// opOf turns a command that changes the rules into its control API
// operation; ok is false for one that does not (a listing, -Z, -S).
func opOf(c *command) (op api.Op, ok bool, err error) {
	key := c.key()
	svc := &api.ServiceSpec{ServiceKey: key}
	switch c.op {
	case "add-service", "edit-service":
		svc.Scheduler, svc.Synproxy, svc.ClientAddress, svc.EstablishedTimeout = c.sched, c.synproxy, c.client, c.estTO
		svc.TCPTimestamps, svc.SchedFlags = c.tcpTS, c.schedFlags
		if c.cps != nil || c.srcConns != nil || c.halfOpen != nil {
			svc.Limits = &api.Limits{SourceCPS: c.cps, SourceConns: c.srcConns, HalfOpen: c.halfOpen}
		}
		svc.Persistent, svc.PersistenceNetmask = c.persist, c.netmask
		return api.Op{Op: c.op, Service: svc}, true, nil
	case "delete-service":
		return api.Op{Op: c.op, Service: svc}, true, nil
	case "clear":
		return api.Op{Op: c.op}, true, nil
	case "add-server", "edit-server", "delete-server":
		real := c.real // a match service's server without a port: 0, the client's
		if c.proto != fwm {
			if real, err = withServicePort(c.real, c.service); err != nil {
				return op, false, err
			}
		}
		d := &api.DestSpec{Addr: real, Weight: c.weight, Forward: c.forward, UThreshold: c.uthresh, LThreshold: c.lthresh}
		return api.Op{Op: strings.Replace(c.op, "server", "dest", 1), Service: svc, Dest: d}, true, nil
	case "add-laddr", "del-laddr":
		return api.Op{Op: map[string]string{"add-laddr": "add-laddr", "del-laddr": "delete-laddr"}[c.op], Service: svc, LocalAddr: c.laddr}, true, nil
	case "add-blklst", "del-blklst", "add-whtlst", "del-whtlst":
		return api.Op{Op: listOps[c.op], Service: svc, Prefix: c.prefix}, true, nil
	case "set":
		return api.Op{Op: "set-timeouts", Timeouts: &api.Timeouts{TCP: c.set[0], TCPFin: c.set[1], UDP: c.set[2]}}, true, nil
	}
	return op, false, nil
}

func execute(cl *api.Client, c *command, out io.Writer) error {
	if op, ok, err := opOf(c); err != nil || ok {
		if err != nil {
			return err
		}
		return cl.Batch([]api.Op{op})
	}
	switch c.op {
	case "get-laddr":
		svcs, err := cl.Services()
		if err != nil {
			return err
		}
		return printLaddrs(out, svcs, c)
	case "get-blklst", "get-whtlst":
		svcs, err := cl.Services()
		if err != nil {
			return err
		}
		return printLists(out, svcs, c)
	case "zero":
		if c.service == "" {
			return cl.Zero()
		}
		// -Z with a service zeroes that one only.
		return cl.ZeroService(c.key())
	case "save":
		svcs, err := cl.Services()
		if err != nil {
			return err
		}
		defaults, err := cl.Timeouts()
		if err != nil {
			return err
		}
		printRules(out, svcs, defaults, c)
		if err := saveChecks(cl, out, svcs, c); err != nil {
			return err
		}
		return saveFaults(cl, out)
	case "capture":
		return capture(cl, c, out)
	case "health":
		return health(cl, c, out)
	case "fault":
		return fault(cl, c, out)
	case "events":
		return printEvents(cl, c, out)
	case "bgp":
		b, err := cl.BGP()
		if err != nil {
			return err
		}
		printBGP(out, b, now())
		return nil
	case "drain", "undrain", "drain-status":
		f := map[string]func() (api.Drain, error){"drain": cl.Drain, "undrain": cl.Undrain, "drain-status": cl.DrainStatus}[c.op]
		d, err := f()
		if err != nil {
			return err
		}
		printDrain(out, d, now())
		if c.wait {
			return drainWait(cl, d, c, out)
		}
		return nil
	case "list":
		if c.conns {
			conns, err := cl.Conns()
			if err != nil {
				return err
			}
			printConns(out, conns, c)
			return nil
		}
		if c.timeouts {
			t, err := cl.Timeouts()
			if err != nil {
				return err
			}
			printTimeout(out, t)
			return nil
		}
		info, err := cl.Info()
		if err != nil {
			return err
		}
		list := cl.Services
		if c.nosort {
			list = cl.ServicesAsAdded
		}
		svcs, err := list()
		if err != nil {
			return err
		}
		if c.service != "" {
			svcs = only(svcs, c)
			if len(svcs) == 0 {
				return &api.Error{Code: api.CodeNoService}
			}
		}
		printList(out, info, svcs, c)
		fs, err := cl.Faults()
		if err != nil {
			return err
		}
		printFaults(out, fs)
		return nil
	}
	return usagef("command %s is not implemented", c.op)
}

// failure is a command that ran and did not do what was asked (a drain
// that did not empty in time): its message is the line to print.
type failure struct{ msg string }

func (f *failure) Error() string { return f.msg }

// now and drainPoll are the clock and the pace of --drain --wait; tests
// set them.
var (
	now       = time.Now
	drainPoll = 200 * time.Millisecond
)

// drainWait polls the drain d started until it holds no connection,
// printing the count as it falls, or fails once --timeout has passed (the
// VIPs stay withdrawn: --undrain takes them back) or when the drain is
// ended meanwhile.
func drainWait(cl *api.Client, d api.Drain, c *command, out io.Writer) error {
	limit := c.timeout
	if limit == 0 {
		limit = defaultDrainWait
	}
	deadline := time.Now().Add(limit)
	last, waited := d.Conns, false
	for !d.Empty {
		if !d.Draining {
			return &failure{fmt.Sprintf("drain: ended by someone else while waiting (%s)", connections(d.Conns))}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return &failure{fmt.Sprintf("drain: %s left after %s (--timeout); the VIPs stay withdrawn", connections(d.Conns), limit)}
		}
		time.Sleep(min(drainPoll, left))
		var err error
		if d, err = cl.DrainStatus(); err != nil {
			return err
		}
		if d.Conns != last && !d.Empty {
			fmt.Fprintf(out, "%s left\n", connections(d.Conns))
			last = d.Conns
		}
		waited = true
	}
	if waited {
		fmt.Fprintln(out, "no connection left: tapvs can be stopped")
	}
	return nil
}

// listOps are DPVS's list commands as the API's operations: the blacklist
// is the deny list, the whitelist the allow list.
var listOps = map[string]string{"add-blklst": "add-deny", "del-blklst": "delete-deny", "add-whtlst": "add-allow", "del-whtlst": "delete-allow"}

// withServicePort gives a real server without a port the service's port, as
// ipvsadm does.
func withServicePort(real, svc string) (string, error) {
	r, err := netip.ParseAddrPort(real)
	if err != nil {
		return "", err
	}
	if r.Port() == 0 {
		s, err := netip.ParseAddrPort(svc)
		if err != nil {
			return "", err
		}
		r = netip.AddrPortFrom(r.Addr(), s.Port())
	}
	return r.String(), nil
}

func only(svcs []api.Service, c *command) []api.Service {
	var out []api.Service
	for _, s := range svcs {
		if c.is(s) {
			out = append(out, s)
		}
	}
	return out
}

// restore applies rules from stdin, one ipvsadm command a line (the output
// of -S), as one transaction: every line is read and checked first, then
// all of them are applied or, if tapvs refuses one, none. A refusal names
// the line.
func restore(cl *api.Client, in io.Reader, stderr io.Writer) int {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ops []api.Op
	var lines []int
	var texts, cmds []string
	var checks []restoredCheck
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		words, err := shlex.Split(line)
		if err != nil {
			fmt.Fprintf(stderr, "line %d: %v\n", n, err)
			return 1
		}
		// Some systems' ipvsadm -S writes each rule as a whole command
		// ("ipvsadm -A -t ...", "/sbin/ipvsadm ..."): the program's name
		// is not an option.
		if len(words) > 0 && (path.Base(words[0]) == "ipvsadm" || path.Base(words[0]) == "tapvsadm") {
			words = words[1:]
		}
		c, err := parse(words)
		var op api.Op
		ok := false
		if err == nil && (c.op == "health" && (c.healthCheck != nil || c.checkOff) || c.op == "fault" && c.fault != nil) {
			// -S's runtime checks: applied after the rules, which
			// make their services.
			checks = append(checks, restoredCheck{c, n, line})
			continue
		}
		if err == nil {
			op, ok, err = opOf(c)
		}
		if err == nil && !ok {
			err = usagef("not a rule: only commands that change the rules can be restored")
		}
		if err != nil {
			fmt.Fprintf(stderr, "line %d: %s: %s\n", n, line, message(err, ""))
			return 1
		}
		ops, lines, texts, cmds = append(ops, op), append(lines, n), append(texts, line), append(cmds, c.op)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "line %d: %v\n", n+1, err)
		return 1
	}
	if len(ops) == 0 {
		return restoreChecks(cl, checks, stderr)
	}
	if err := cl.Batch(ops); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Op != nil && *ae.Op >= 0 && *ae.Op < len(ops) {
			fmt.Fprintf(stderr, "line %d: %s: %s (nothing was restored)\n", lines[*ae.Op], texts[*ae.Op], message(err, cmds[*ae.Op]))
		} else {
			fmt.Fprintln(stderr, message(err, "restore"))
		}
		return 1
	}
	return restoreChecks(cl, checks, stderr)
}

// versionLine is -v, in ipvsadm's layout ("ipvsadm v1.26 2008/5/15
// (compiled with popt and IPVS v1.2.1)", version()): tapvsadm's build
// (the module version or the commit it was built from) and the IPVS
// version tapvs answers as.
func versionLine() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = buildVersion(bi)
	}
	return fmt.Sprintf("tapvsadm %s (ipvsadm for tapvs, IPVS v%s)", v, api.IPVSVersion)
}

// buildVersion is a build's version: the module's when it has one (go
// install of a release), else its commit (12 hex digits, "-dirty" if
// built from changed files), else "devel".
func buildVersion(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value[:min(12, len(s.Value))]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev == "" {
		return "devel"
	}
	return rev + dirty
}
