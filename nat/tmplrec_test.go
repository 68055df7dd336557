package nat

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/tapvs/tapvs/connrec"
)

// templates exports r's templates as encoded records, each decoded back
// (what a takeover or a peer reads).
func templateRecords(t *testing.T, b *Balancer) []connrec.Record {
	t.Helper()
	var out []connrec.Record
	b.ExportTemplates(func(r *connrec.Record) bool {
		got, _, err := connrec.Decode(r.AppendTo(nil))
		if err != nil {
			t.Fatalf("an exported template does not decode: %v (%+v)", err, *r)
		}
		out = append(out, got)
		return true
	})
	return out
}

// A template exported and imported into another balancer with the same
// service sends the client's next connection there to the template's
// server, with what was left of its lifetime, where the scheduler alone
// would have picked the other; a /24 template stays a /24 one.
func TestTemplateExportImport(t *testing.T) {
	p := Persistence{Timeout: 10 * time.Minute, Mask: 24}
	old := persistRig(t, p, nil)
	mustSyn(t, old.b, client, 10000) // rr's first: rs1; a second client takes rs2
	other := netip.MustParseAddr("198.51.100.77")
	if got := mustSyn(t, old.b, other, 10000); got != rs2 {
		t.Fatalf("the second client went to %v, want rs2", got)
	}
	old.tick(time.Minute)
	recs := templateRecords(t, old.b)
	if len(recs) != 2 {
		t.Fatalf("%d template records, want 2", len(recs))
	}
	for _, r := range recs {
		if r.Kind != connrec.KindTemplate || r.CPort != 0 || r.VPort != 80 || r.RPort != 8080 {
			t.Errorf("record %+v", r)
		}
		if left := time.Duration(r.LifetimeMS) * time.Millisecond; left != 9*time.Minute {
			t.Errorf("lifetime %v, want the 9m left", left)
		}
		if want := maskAddr(&r.Client, 24); r.Client != want {
			t.Errorf("client %v not the /24", r.Client)
		}
	}

	// The successor: the same service, empty. Only the other client's
	// template comes: its next connection must go to rs2, though rr's
	// first pick here is rs1.
	next := persistRig(t, p, nil)
	var otherRec connrec.Record
	for _, r := range recs {
		if r.Server == rs2.As16() {
			otherRec = r
		}
	}
	if err := next.b.ImportConn(&otherRec); err != nil {
		t.Fatal(err)
	}
	if n := next.b.Stats.TemplatesImported(); n != 1 {
		t.Fatalf("TemplatesImported %d, want 1", n)
	}
	list := next.b.TemplateList()
	if len(list) != 1 || list[0].RIP.Addr() != rs2 || list[0].Expires != 9*time.Minute || list[0].Conns != 0 {
		t.Fatalf("templates after import: %+v", list)
	}
	// Imported again (a second copy): refreshed, not doubled.
	if err := next.b.ImportConn(&otherRec); err != nil || next.b.Templates() != 1 {
		t.Fatalf("imported twice: %v, %d templates", err, next.b.Templates())
	}
	next.tick(8 * time.Minute) // within its 9 minutes
	if got := mustSyn(t, next.b, netip.MustParseAddr("198.51.100.5"), 20000); got != rs2 {
		t.Fatalf("a client of the imported /24 went to %v, want its template's rs2", got)
	}
	if next.b.Templates() != 1 {
		t.Fatalf("%d templates, want the imported one used, not another made", next.b.Templates())
	}
	// Re-armed by that connection, it expires once the connection (a
	// SYN never answered) has and its timeout has passed.
	next.tick(11 * time.Minute)
	if next.b.Templates() != 0 {
		t.Fatalf("%d templates 11 minutes on, want the imported one expired", next.b.Templates())
	}
}

// An imported template that names another server replaces the one here,
// as a quiescent template gives way; refusals are counted by reason and
// change nothing.
func TestTemplateImportRefusals(t *testing.T) {
	p := Persistence{Timeout: time.Minute, Mask: 32}
	r := persistRig(t, p, func(c *Config) { c.MaxTemplates = 1 })
	mustSyn(t, r.b, client, 10000) // its template: rs1
	rec := templateRecords(t, r.b)[0]
	moved := rec
	moved.Server = rs2.As16()
	if err := r.b.ImportConn(&moved); err != nil {
		t.Fatal(err)
	}
	if l := r.b.TemplateList(); len(l) != 1 || l[0].RIP.Addr() != rs2 || r.b.Templates() != 1 {
		t.Fatalf("after a template naming rs2: %+v, %d", l, r.b.Templates())
	}
	if got := mustSyn(t, r.b, client, 10001); got != rs2 {
		t.Fatalf("the client went to %v, want the imported rs2", got)
	}

	for name, c := range map[string]struct {
		edit func(*connrec.Record)
		want ImportReason
	}{
		"unknown service":                 {func(r *connrec.Record) { r.VPort = 81 }, ImportUnknownService},
		"unknown server":                  {func(r *connrec.Record) { r.RPort = 9090 }, ImportUnknownDest},
		"a second client, MaxTemplates 1": {func(r *connrec.Record) { r.Client[15] ^= 2 }, ImportTableFull},
		"invalid (a cport)":               {func(r *connrec.Record) { r.CPort = 1 }, ImportInvalid},
	} {
		bad := rec
		c.edit(&bad)
		before := r.b.Stats.ImportRefusal(c.want)
		err := r.b.ImportConn(&bad)
		var ie *ImportError
		if !errors.As(err, &ie) || ie.Reason != c.want || r.b.Stats.ImportRefusal(c.want) != before+1 {
			t.Errorf("%s: %v, want refused as %v and counted", name, err, c.want)
		}
		if l := r.b.TemplateList(); len(l) != 1 || l[0].RIP.Addr() != rs2 {
			t.Errorf("%s: templates changed: %+v", name, l)
		}
	}

	// A service without persistence takes no template.
	plain := newRig(t, TCP, "rr", nil)
	if err := plain.b.ImportConn(&rec); err == nil {
		t.Fatal("a template imported into a service without persistence")
	}
}

// A /24 service refuses a template whose client is not a /24 network.
func TestTemplateImportMask(t *testing.T) {
	r := persistRig(t, Persistence{Timeout: time.Minute, Mask: 24}, nil)
	rec := connrec.Record{Kind: connrec.KindTemplate, Proto: 6, LifetimeMS: 1000, Client: client.As16(), VIP: vip.As16(),
		LIP: addr16{10: 0xff, 11: 0xff}, Server: rs1.As16(), VPort: 80, RPort: 8080}
	err := r.b.ImportConn(&rec)
	var ie *ImportError
	if !errors.As(err, &ie) || ie.Reason != ImportInvalid || !errors.Is(err, errTmplMask) {
		t.Fatalf("a /32 template into a /24 service: %v", err)
	}
	rec.Client = maskAddr(&rec.Client, 24)
	if err := r.b.ImportConn(&rec); err != nil || r.b.Templates() != 1 {
		t.Fatalf("its /24: %v, %d templates", err, r.b.Templates())
	}
	// No connection holds it: it lasts its lifetime (1 s), no more.
	r.tick(900 * time.Millisecond)
	if r.b.Templates() != 1 {
		t.Fatal("expired before its lifetime")
	}
	r.tick(300 * time.Millisecond)
	if r.b.Templates() != 0 {
		t.Fatal("still there past its lifetime")
	}
}

// FuzzImport: any bytes a peer or a predecessor sends, decoded and
// imported into a balancer with a persistent service: a refusal changes
// nothing it counts, and the templates stay consistent (each named server
// is the service's, the count is the map's, within the bound).
func FuzzImport(f *testing.F) {
	old := persistRig(f, Persistence{Timeout: time.Minute, Mask: 24}, nil)
	for i := range 3 {
		src := netip.AddrFrom4([4]byte{198, 51, byte(100 + i), 7})
		if v, _ := synTo(f, old.b, src, 10000, 80); v != Forward {
			f.Fatal("seed SYN not forwarded")
		}
	}
	old.b.ExportConns(func(r *connrec.Record) bool { f.Add(r.AppendTo(nil)); return true })
	old.b.ExportTemplates(func(r *connrec.Record) bool { f.Add(r.AppendTo(nil)); return true })
	// One balancer for every input (a new one per input made the run
	// build tables, not import records: 45 inputs a second); each input
	// starts with no templates (persistence off and on again drops them).
	r := persistRig(f, Persistence{Timeout: time.Minute, Mask: 24}, func(c *Config) { c.MaxTemplates = 2 })
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range []Persistence{{}, {Timeout: time.Minute, Mask: 24}} {
			if err := r.b.Update(func(tx *Tx) error { return tx.SetPersistence(r.svc, p) }); err != nil {
				t.Fatal(err)
			}
		}
		if r.b.Templates() != 0 {
			t.Fatalf("%d templates after a reset", r.b.Templates())
		}
		for len(b) > 0 {
			rec, n, err := connrec.Decode(b)
			if err != nil {
				return
			}
			b = b[n:]
			before, list := r.b.Templates(), r.b.TemplateList()
			if err := r.b.ImportConn(&rec); err != nil && (r.b.Templates() != before || len(r.b.TemplateList()) != len(list)) {
				t.Fatalf("a refused record (%v) changed the templates", err)
			}
			if n := r.b.Templates(); n > 2 || n != int64(len(r.b.TemplateList())) {
				t.Fatalf("%d templates counted, %d listed, bound 2", n, len(r.b.TemplateList()))
			}
			for _, ti := range r.b.TemplateList() {
				if ti.RIP.Addr() != rs1 && ti.RIP.Addr() != rs2 {
					t.Fatalf("a template to %v, not a server of the service", ti.RIP)
				}
			}
		}
	})
}

// Connection sync's running stream: a persistent service's connection,
// once ESTABLISHED, is fed with its template after it (IPVS's
// ip_vs_sync_conn sends cp->control), which a peer imports.
func TestFeedSendsTemplate(t *testing.T) {
	mc := moveCases()[0]
	r := feedRig(t)
	if err := r.b.Update(func(tx *Tx) error {
		return tx.SetPersistence(r.svc, Persistence{Timeout: time.Minute, Mask: 24})
	}); err != nil {
		t.Fatal(err)
	}
	mc.open(t, r)
	recs := drained(r.b)
	if len(recs) != 2 || recs[0].Kind != connrec.KindOpen || recs[1].Kind != connrec.KindTemplate {
		t.Fatalf("after the handshake: %d records %+v, want the connection's then its template's", len(recs), recs)
	}
	tr := recs[1]
	if tr.Server != rs1.As16() || tr.Client != maskAddr(&recs[0].Client, 24) || tr.VPort != 80 || tr.LifetimeMS != 60000 {
		t.Fatalf("template record %+v", tr)
	}
	peer := persistRig(t, Persistence{Timeout: time.Minute, Mask: 24}, nil)
	if err := peer.b.ImportConn(&tr); err != nil || peer.b.Templates() != 1 {
		t.Fatalf("the peer's import: %v, %d templates", err, peer.b.Templates())
	}
}

// A match service's template goes by a port of its selector that no
// VIP:port service takes (the record has no field for a mark), and the
// importer with the same services finds the match service by it: the
// client's next connection on any of the selector's ports keeps its
// server. With 80 taken by a VIP:80 service, 443 names it.
func TestTemplateMatchService(t *testing.T) {
	old, _ := matchRig(t)
	if v, to := synTo(t, old.b, client, 10000, 443); v != Forward || to.Addr() != rs1 {
		t.Fatalf("first SYN: %v to %v", v, to)
	}
	// The next client would be rr's rs2 in a fresh balancer: send the
	// template of one whose server is rs2.
	other := netip.MustParseAddr("198.51.100.77")
	if v, to := synTo(t, old.b, other, 10000, 8042); v != Forward || to.Addr() != rs2 {
		t.Fatalf("second SYN: %v to %v", v, to)
	}
	var rec connrec.Record
	for _, r := range templateRecords(t, old.b) {
		if r.Server == rs2.As16() {
			rec = r
		}
	}
	if rec.VPort != 80 || rec.RPort != 0 {
		t.Fatalf("the match service's template names vport %d rport %d, want its selector's first port 80 and the server's port 0", rec.VPort, rec.RPort)
	}
	next, _ := matchRig(t)
	if err := next.b.ImportConn(&rec); err != nil {
		t.Fatal(err)
	}
	if v, to := synTo(t, next.b, other, 20000, 443); v != Forward || to.Addr() != rs2 {
		t.Fatalf("the client's SYN to 443 after the import: %v to %v, want its template's rs2", v, to)
	}

	// 80 taken by a service of its own: the template goes by 443.
	if err := old.b.Update(func(tx *Tx) error {
		_, err := tx.AddService(ServiceConfig{Name: "exact", Addr: vip, Port: 80, Protocol: TCP, Scheduler: "rr"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range templateRecords(t, old.b) {
		if r.VPort != 443 {
			t.Fatalf("with VIP:80 a service of its own, a template names vport %d, want 443", r.VPort)
		}
	}
}

// The edges of a template's export and import: its deadline exactly now
// (no record unless a connection holds it, then its service's timeout), a
// replaced template's server no longer counting it, an older record not
// shortening a deadline, and the bound on templates exact.
func TestTemplateEdges(t *testing.T) {
	p := Persistence{Timeout: time.Minute, Mask: 32}
	r := persistRig(t, p, func(c *Config) { c.MaxTemplates = 2 })
	mustSyn(t, r.b, client, 10000) // rs1's template, held by the SYN's connection
	rec := templateRecords(t, r.b)[0]

	// The clock at the deadline, no sweep yet: held, it goes with the
	// service's timeout; let go, it is not sent.
	r.b.table.now.Add(int64(time.Minute))
	if recs := templateRecords(t, r.b); len(recs) != 1 || recs[0].LifetimeMS != 60000 {
		t.Fatalf("a held template at its deadline: %+v, want one record with the service's 60 s", recs)
	}
	c := r.b.table.lookup(&tupleKey{src: client.As16(), dst: vip.As16(), sport: 10000, dport: 80, proto: TCP})
	if c == nil || !r.b.release(c) {
		t.Fatal("the connection was not released")
	}
	if recs := templateRecords(t, r.b); len(recs) != 0 {
		t.Fatalf("a template at its deadline, no connection: %+v, want none", recs)
	}

	// A fresh balancer: rs1's template imported, then one naming rs2
	// replaces it; rs1 no longer counts it.
	n := persistRig(t, p, func(c *Config) { c.MaxTemplates = 2 })
	if err := n.b.ImportConn(&rec); err != nil {
		t.Fatal(err)
	}
	moved := rec
	moved.Server = rs2.As16()
	if err := n.b.ImportConn(&moved); err != nil {
		t.Fatal(err)
	}
	persist := map[netip.Addr]int64{}
	for _, d := range n.svc.Dests() {
		persist[d.Addr] = d.PersistConns()
	}
	if persist[rs1] != 0 || persist[rs2] != 1 || n.b.Templates() != 1 {
		t.Fatalf("after a replacing import: PersistConns %v, %d templates; want rs1 0, rs2 1, 1", persist, n.b.Templates())
	}
	// An older record of the same template does not shorten it; a
	// newer one lengthens it.
	short, long := moved, moved
	short.LifetimeMS, long.LifetimeMS = 10_000, 120_000
	for _, c := range []struct {
		rec  connrec.Record
		want time.Duration
	}{{short, time.Minute}, {long, 2 * time.Minute}} {
		if err := n.b.ImportConn(&c.rec); err != nil {
			t.Fatal(err)
		}
		if l := n.b.TemplateList(); len(l) != 1 || l[0].Expires != c.want {
			t.Fatalf("after a record of %d ms: %+v, want %v left", c.rec.LifetimeMS, l, c.want)
		}
	}
	// The bound, 2: a second client network is taken, a third refused,
	// and the count stays 2.
	second, third := rec, rec
	second.Client[15] ^= 2
	third.Client[15] ^= 4
	if err := n.b.ImportConn(&second); err != nil || n.b.Templates() != 2 {
		t.Fatalf("a second template within the bound: %v, %d", err, n.b.Templates())
	}
	if err := n.b.ImportConn(&third); err == nil || n.b.Templates() != 2 || n.b.Stats.ImportRefusal(ImportTableFull) != 1 {
		t.Fatalf("a third past the bound of 2: %v, %d templates, %d refused", err, n.b.Templates(), n.b.Stats.ImportRefusal(ImportTableFull))
	}
}
