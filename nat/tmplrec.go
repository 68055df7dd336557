package nat

import (
	"errors"
	"time"

	"github.com/tapvs/tapvs/connrec"
	"github.com/tapvs/tapvs/wire"
)

// Persistence templates as records (connrec.KindTemplate), so that they
// outlive an instance as its connections do: a takeover hands them over
// with the table, and connection sync copies them to a peer that asks, as
// IPVS's sync daemon sends templates (IP_VS_CONN_F_TEMPLATE). A client
// that comes back after a restart, or to the peer after a failover, goes
// to the server its template names.
//
// An imported template counts no connections: the connections it gave its
// server here came as records of their own, which do not point at it, so
// it expires at its deadline even while they are open (IPVS's backup does
// the same until a connection of the client is scheduled through it, which
// re-arms it, as here).

// errTmplMask refuses a template whose client network is not masked as
// the service's netmask masks (another granularity there, or here).
var errTmplMask = errors.New("the client network is not masked by the service's netmask")

// ExportTemplates calls yield with each persistence template's record,
// service by service, until yield returns false. As ExportConns, no lock
// is held while yield runs (a shard's templates are copied out first), the
// record is ExportTemplates's own and written again for the next, and any
// goroutine may call it.
func (b *Balancer) ExportTemplates(yield func(*connrec.Record) bool) {
	var (
		r    connrec.Record
		list []*template
	)
	set := b.set.Load()
	for _, s := range set.services() {
		ts := s.tmpl.Load()
		timeout := s.Persistence().Timeout
		if timeout == 0 || ts == nil {
			continue
		}
		vip, vport, ok := s.key.addr, s.Port, true
		if isMatch(s) {
			vip, vport, ok = set.matchPort(s)
		}
		if !ok {
			continue // every port of its selector taken by VIP:port services: no flow reaches it
		}
		for i := range ts.shards {
			sh := &ts.shards[i]
			list = list[:0]
			sh.mu.Lock()
			for _, t := range sh.m {
				list = append(list, t)
			}
			sh.mu.Unlock()
			for _, t := range list {
				if t.record(&r, s, vip, vport, timeout, b.table.now.Load()) && !yield(&r) {
					return
				}
			}
		}
	}
}

// record writes t's record into r at now (the table's clock), naming the
// service by vip and vport. A template past its deadline that no
// connection holds is about to expire: false, no record. One still held
// would be re-armed by the sweep: it goes with its service's timeout.
func (t *template) record(r *connrec.Record, s *Service, vip addr16, vport uint16, timeout time.Duration, now int64) bool {
	if t.dead.Load() {
		return false
	}
	left := time.Duration(t.deadline.Load() - now)
	if left <= 0 {
		if t.conns.Load() == 0 {
			return false
		}
		left = timeout
	}
	*r = connrec.Record{
		Kind: connrec.KindTemplate, Proto: uint8(s.Protocol),
		LifetimeMS: uint32(min(left.Milliseconds(), connrec.MaxLifetimeMS)),
		Client:     t.client, VIP: vip, Server: t.dest.a16,
		VPort: vport, RPort: t.dest.Port,
	}
	if !wire.Is4(&t.client) {
		r.Flags |= connrec.FlagClient6
	}
	if wire.Is4(&t.dest.a16) {
		r.LIP = addr16{10: 0xff, 11: 0xff} // ::ffff:0.0.0.0: no LIP, of the server's family
	} else {
		r.Flags |= connrec.FlagServer6
	}
	return true
}

// importTemplate is ImportConn for a template (mu held, the record
// checked): the service (persistent, with the same netmask) and its server
// must be here. A template of the client network that names another server
// gives way to the record's, as a scheduling here would replace a
// quiescent one; one that names the same server keeps the later deadline.
func (b *Balancer) importTemplate(r *connrec.Record) (ImportReason, error) {
	// The service the exporter named: VIP:vport (vport 0: a port-0
	// service), else the match service whose selector has vport.
	set, proto := b.set.Load(), Protocol(r.Proto)
	svc := set.service(svcKey{addr: r.VIP, port: r.VPort, proto: proto})
	if svc == nil {
		svc = set.match(&r.VIP, proto, r.VPort)
	}
	if svc == nil {
		return refuse(ImportUnknownService, nil)
	}
	p, ts := svc.Persistence(), svc.tmpl.Load()
	if p.Timeout == 0 || ts == nil {
		return refuse(ImportUnknownService, nil)
	}
	if maskAddr(&r.Client, p.Mask) != r.Client {
		return refuse(ImportInvalid, errTmplMask)
	}
	var dest *Dest
	for _, d := range svc.Dests() {
		if d.a16 == r.Server && d.Port == r.RPort {
			dest = d
			break
		}
	}
	if dest == nil {
		return refuse(ImportUnknownDest, nil)
	}
	deadline := b.table.now.Load() + int64(time.Duration(r.LifetimeMS)*time.Millisecond)
	k := r.Client
	sh := ts.shard(&k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.m[k]
	switch {
	case t != nil && t.dest == dest:
		if t.deadline.Load() < deadline {
			t.deadline.Store(deadline) // filed at its old tick: the sweep files it again
		}
		b.Stats.templatesImported.Add(1)
		return 0, nil
	case t != nil:
		t.dest.persistConns.Add(-1)
		t.dead.Store(true)
	case b.templates.Add(1) > b.maxTemplates:
		b.templates.Add(-1)
		return refuse(ImportTableFull, nil)
	}
	if sh.m == nil {
		sh.m = map[addr16]*template{}
	}
	t = &template{client: k, dest: dest, svc: svc, ts: ts}
	t.deadline.Store(deadline)
	sh.m[k] = t
	dest.persistConns.Add(1)
	b.tmplWheel.file(t)
	b.Stats.templatesImported.Add(1)
	return 0, nil
}

// TemplatesImported is how many template records ImportConn took (made or
// refreshed a template).
func (s *Stats) TemplatesImported() uint64 { return s.templatesImported.Load() }

// matchPort is a VIP and port by which a flow reaches match service s
// (one of its selector's VIPs and ports that no VIP:port service takes):
// a template record names the service by them, the record having no field
// for a mark, and the importer, with the same services, finds s by them.
// The template is the service's, whichever of its VIPs the record names.
func (set *serviceSet) matchPort(s *Service) (addr16, uint16, bool) {
	m := s.match.Load()
	if m == nil {
		return addr16{}, 0, false
	}
	for _, a := range s.vips {
		for _, pr := range m.Ports {
			for p := uint32(pr.Lo); p <= uint32(pr.Hi); p++ {
				if set.service(svcKey{addr: a, port: uint16(p), proto: s.Protocol}) == nil {
					return a, uint16(p), true
				}
			}
		}
	}
	return addr16{}, 0, false
}

// tmplPort is the VIP and vport a template record of s names it by: its
// own, or a match service's matchPort.
func (b *Balancer) tmplPort(s *Service) (addr16, uint16, bool) {
	if !isMatch(s) {
		return s.key.addr, s.Port, true
	}
	return b.set.Load().matchPort(s)
}
