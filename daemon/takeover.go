package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/tapvs/tapvs/config"
	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/nat"
	"github.com/tapvs/tapvs/netstack"
	"github.com/tapvs/tapvs/takeover"
	"github.com/tapvs/tapvs/tun"
	"golang.org/x/sys/unix"
)

// A restart that keeps the TAPs (tapvs run --takeover): the running tapvs
// listens on a takeover socket next to its control socket, and a new one
// started with --takeover takes its TAP queues over it (package takeover
// has the protocol). The TAPs never go away, so the kernel's ends keep
// their addresses, routes and namespaces and the neighbours their entries
// (the new process keeps the sides' MACs).

// TakeoverSocket is where cfg's tapvs listens for a successor: beside the
// control socket (/run/tapvs/tapvs.sock → /run/tapvs/tapvs.takeover.sock);
// "" without a control socket.
func TakeoverSocket(cfg *config.Config) string {
	if cfg.ControlSocket == "" {
		return ""
	}
	return strings.TrimSuffix(cfg.ControlSocket, ".sock") + ".takeover.sock"
}

// ServeTakeover listens on the takeover socket (TakeoverSocket), for a
// successor to take this process over; none without a control socket.
// Only a process that ends through Abandon once HandedOver is closed may
// call it (tapvs run): one that kept reading after handing its queues over
// would split their frames with its successor. Call it once, after Start.
func (d *Daemon) ServeTakeover() error {
	path := TakeoverSocket(d.Config())
	if path == "" {
		return nil
	}
	srv, err := takeover.Listen(path, d, d.log)
	if err != nil {
		return err
	}
	d.takeover = srv
	return nil
}

// timers is the balancer's timer loop (expiry, SYN retries, sweeping):
// it writes frames and changes the table, so a takeover's freeze stops it.
type timers struct {
	stop chan struct{}
	done chan struct{}
}

func (d *Daemon) startTimers() {
	t := timers{stop: make(chan struct{}), done: make(chan struct{})}
	d.timers = t
	sweep := d.Config().Sweep
	go func() {
		defer close(t.done)
		d.Balancer.Run(t.stop, sweep)
	}()
}

func (d *Daemon) stopTimers() {
	if d.timers.stop == nil {
		return
	}
	select {
	case <-d.timers.stop:
	default:
		close(d.timers.stop)
	}
	<-d.timers.done
}

var _ takeover.Source = (*Daemon)(nil)

// Freeze is the old side's freeze (takeover.Source): no reload, no reader,
// no timer until Resume or the exit. The readers stop between batches; the
// frames that arrive meanwhile wait in the TAPs' rings.
func (d *Daemon) Freeze() ([]takeover.Queue, []tun.Passer, error) {
	d.reloadMu.Lock()
	if err := d.Stack.Pause(); err != nil {
		if !errors.Is(err, netstack.ErrCannotPause) { // refused before any change
			d.Stack.Resume() // the readers stopped
		}
		d.reloadMu.Unlock()
		return nil, nil, err
	}
	d.stopTimers()
	cfg := d.Config()
	cmac, smac := d.Stack.MACs()
	client, server := d.Stack.Devices()
	var qs []takeover.Queue
	var devs []tun.Passer
	for side, sd := range []struct {
		name string
		mac  [6]byte
		devs []tun.Device
	}{{cfg.Client.Name, cmac, client}, {cfg.Server.Name, smac, server}} {
		for i, dev := range sd.devs {
			p, ok := dev.(tun.Passer)
			if !ok { // Pause has checked
				d.resume()
				return nil, nil, fmt.Errorf("%s queue %d cannot be passed", sd.name, i)
			}
			qs = append(qs, takeover.Queue{Side: uint8(side), Index: uint8(i), VNetHdrLen: uint8(dev.VNetHdrLen()), MAC: sd.mac, Name: sd.name})
			devs = append(devs, p)
		}
	}
	return qs, devs, nil
}

// Export hands over the connection table (takeover.Source), one record
// per connection, then the persistence templates. The table is frozen: nothing reads a queue or runs a
// timer, so the records are the table as the successor will find it.
func (d *Daemon) Export(yield func([]byte) bool) bool {
	buf := make([]byte, 0, connrec.MaxLen)
	more := true
	put := func(r *connrec.Record) bool {
		buf = r.AppendTo(buf[:0])
		more = yield(buf)
		return more
	}
	d.Balancer.ExportConns(put)
	if more {
		d.Balancer.ExportTemplates(put) // persistence templates (nat/tmplrec.go)
	}
	return true
}

// NextHops hands over the real servers' resolved next hops
// (takeover.Source), so that the successor's first segments to them leave
// at once instead of waiting for ARP.
func (d *Daemon) NextHops(yield func(takeover.NextHop) bool) {
	seen := map[netip.Addr]bool{}
	for _, s := range d.Balancer.Services() {
		for _, dst := range s.Dests() {
			mac, ok := dst.NextHopMAC()
			if !ok || seen[dst.Addr] {
				continue
			}
			seen[dst.Addr] = true
			if !yield(takeover.NextHop{Addr: dst.Addr, MAC: mac}) {
				return
			}
		}
	}
}

// Keys hands over SYNPROXY's cookie keys (takeover.Source), so that the
// handshakes whose SYN-ACK this process sent complete on the successor;
// none when they derive from the cluster's key, which the successor
// derives again.
func (d *Daemon) Keys() []byte { return d.Balancer.CookieKeys() }

// Resume undoes Freeze (takeover.Source): the takeover failed.
func (d *Daemon) Resume() error { return d.resume() }

func (d *Daemon) resume() error {
	defer d.reloadMu.Unlock()
	d.startTimers()
	return d.Stack.Resume()
}

// HandedOver is closed when a successor has taken over: tapvs run then
// ends through Abandon, not Close. Never closed without a takeover socket.
func (d *Daemon) HandedOver() <-chan struct{} {
	if d.takeover == nil {
		return nil
	}
	return d.takeover.HandedOver()
}

// Abandon ends a process that a successor has taken over: it lets go of
// what the successor opens again (the control socket, the metrics port,
// the BGP session, the handoff socket) and closes its copies of the TAP
// queues, but none of Close's teardown of what now is the successor's: the
// TAPs stay (the successor holds them), as do the host routes and the
// nftables tables. BGP sessions cannot be handed over (GoBGP opens its
// own): the speaker stops here and the successor's sessions come up after.
// With bgp.graceful_restart the routes stay at the routers in between
// (bgp.Speaker.Leave); without, they are withdrawn, and a router sends
// nothing to this instance for the few seconds in between.
func (d *Daemon) Abandon() { d.shutdown(false) }

// StartTakeover starts as a successor of the tapvs listening at cfg's
// takeover socket, or, if none listens there, as Start does.
func StartTakeover(cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	path := TakeoverSocket(cfg)
	if path == "" {
		return nil, errors.New("--takeover: the configuration has no control.socket, beside which the takeover socket is")
	}
	s, err := takeover.Dial(path)
	if errors.Is(err, takeover.ErrNoOld) {
		log.Info("takeover: no tapvs to take over; starting as usual", "socket", path)
		return Start(cfg, log)
	}
	if err != nil {
		return nil, err
	}
	// A record is checked whole as it arrives: one that does not decode
	// refuses the takeover (the old process serves on) rather than
	// starting with part of the table.
	var records []connrec.Record
	t, err := s.Receive(func(rec []byte) error {
		r, n, err := connrec.Decode(rec)
		if err != nil {
			return fmt.Errorf("connection record %d: %w", len(records), err)
		}
		if n != len(rec) {
			return fmt.Errorf("connection record %d: %d bytes after it", len(records), len(rec)-n)
		}
		records = append(records, r)
		return nil
	}, connrec.MaxLen)
	if err != nil {
		s.Close()
		if errors.Is(err, takeover.ErrRefused) {
			return nil, err
		}
		// The old process went away, or sent what cannot be used: it
		// serves on (it resumes on our end), or it is gone and its TAPs
		// with it, and a cold start makes them again.
		log.Warn("takeover failed before the queues were ours: starting cold; the old tapvs's connections are not carried over", "err", err)
		return Start(cfg, log)
	}
	succ := &successor{s: s, records: records, table: t.Table, hops: t.NextHops, keys: t.Keys}
	nics, err := adoptSides(cfg, t)
	if err != nil {
		s.Abort(err.Error())
		return nil, fmt.Errorf("takeover: %w", err)
	}
	log.Info("takeover: the queues are ours", "queues", len(t.FDs), "records", t.Records)
	d, err := start(cfg, log, nics, succ)
	if err != nil && !succ.done {
		s.Abort(err.Error())
	}
	return d, err
}

// adoptSides makes the sides of the queues handed over, checking them
// against cfg and the kernel. On error every descriptor is closed.
func adoptSides(cfg *config.Config, t *takeover.Taken) (nics [2]netstack.NICConfig, err error) {
	used := make([]bool, len(t.FDs))
	defer func() {
		if err != nil {
			closeNICs(nics)
			for i, fd := range t.FDs {
				if !used[i] {
					closeFD(fd)
				}
			}
		}
	}()
	sides := [2]config.Interface{cfg.Client, cfg.Server}
	for i, q := range t.Queues {
		side := sides[q.Side]
		if q.Name != side.Name {
			return nics, fmt.Errorf("the old tapvs's %s TAP is %q, this configuration's %q", nat.Side(q.Side), q.Name, side.Name)
		}
		if int(q.Index) != len(nics[q.Side].Devs) {
			return nics, fmt.Errorf("%s queue %d sent as queue %d", q.Name, len(nics[q.Side].Devs), q.Index)
		}
		if len(nics[q.Side].Devs) > 0 && nics[q.Side].MAC != q.MAC {
			return nics, fmt.Errorf("%s: two MACs for one side", q.Name)
		}
		dev, err := tun.Adopt(t.FDs[i], q.Name, int(q.VNetHdrLen))
		if err != nil {
			return nics, err
		}
		used[i] = true
		nics[q.Side].Devs = append(nics[q.Side].Devs, dev)
		nics[q.Side].MAC = q.MAC
	}
	for i, side := range sides {
		if want := max(side.Queues, 1); len(nics[i].Devs) != want {
			return nics, fmt.Errorf("the old tapvs's %s TAP %s has %d queues, this configuration %d (a change of queues needs a cold restart)", nat.Side(i), side.Name, len(nics[i].Devs), want)
		}
		nics[i].MTU, nics[i].Address, nics[i].Address6 = uint32(side.MTU), side.Address, side.Address6
		for _, r := range side.Routes {
			nics[i].Routes = append(nics[i].Routes, netstack.Route{Dst: r.Dst, Via: r.Via})
		}
	}
	if nics[0].Devs[0].VNetHdrLen() != nics[1].Devs[0].VNetHdrLen() {
		return nics, errors.New("one side has offload and the other not")
	}
	return nics, nil
}

func closeFD(fd int) { unix.Close(fd) }

// successor is the new side's session while start runs.
type successor struct {
	s       *takeover.Session
	records []connrec.Record
	table   bool
	hops    []takeover.NextHop
	keys    []byte // the old process's cookie keys; nil: none came
	done    bool   // DONE was sent: the old process is going
}

// importTable loads the records into the balancer before the first frame
// is read. A record the balancer refuses (its service, real server or LIP
// is not in this configuration) is counted (ImportRefused) and logged in
// sum: that connection is lost, the others carry on.
func (succ *successor) importTable(bal *nat.Balancer, log *slog.Logger) {
	// The cookie keys: a cookie ACK the old process's SYN-ACK asked for
	// checks here. Refused (this process's keys derive from a cluster's
	// key its predecessor had not, or the old build's encoding differs),
	// those handshakes fail with bad_cookie and their clients retry.
	if succ.keys != nil {
		if err := bal.AdoptCookieKeys(succ.keys); err != nil {
			log.Warn("takeover: the old tapvs's SYN cookie keys are not used: handshakes it answered and not finished fail", "err", err)
		}
	}
	// The next hops first: the resolver refreshes them within seconds.
	macs := make(map[netip.Addr][6]byte, len(succ.hops))
	for _, h := range succ.hops {
		macs[h.Addr] = h.MAC
	}
	for _, s := range bal.Services() {
		for _, dst := range s.Dests() {
			if mac, ok := macs[dst.Addr]; ok {
				dst.SetNextHopMAC(mac)
			}
		}
	}
	if !succ.table {
		log.Warn("takeover: the old tapvs did not hand over its connection table: the TAPs were kept, but every connection open through it is lost")
		return
	}
	refused := 0
	var first error
	for i := range succ.records {
		if err := bal.ImportConn(&succ.records[i]); err != nil {
			if refused++; first == nil {
				first = err
			}
		}
	}
	succ.records = nil
	if refused > 0 {
		log.Warn("takeover: connections refused (lost)", "refused", refused, "carried", bal.Stats.Imported(), "first", first)
	}
	log.Info("takeover: connection table taken over", "connections", bal.Stats.Imported(), "templates", bal.Stats.TemplatesImported(), "refused", refused)
}

// handedOver says DONE and waits for the old process to let go.
func (succ *successor) handedOver(log *slog.Logger) error {
	if err := succ.s.Done(); err != nil {
		return fmt.Errorf("takeover: %w", err)
	}
	succ.done = true
	start := time.Now()
	err := succ.s.WaitGone(10 * time.Second)
	succ.s.Close()
	if err != nil {
		return fmt.Errorf("takeover: %w", err)
	}
	log.Info("takeover: the old tapvs has let go", "waited", time.Since(start).Round(time.Millisecond))
	return nil
}
