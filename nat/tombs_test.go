package nat

import (
	"testing"

	"github.com/tapvs/tapvs/connrec"
)

// A connection a peer's tombstone ended stays ended: an open record of it
// that comes after the tombstone (reordered, or an older refresh) is
// refused as stale and makes no entry, whether the tombstone closed an
// entry here or found none; a new connection on the same client tuple
// (another local port) is not taken for it; a tombstone older than
// tombTTL is forgotten.
func TestTombstoneOutlivesALateOpenRecord(t *testing.T) {
	mc := moveCases()[0]
	_, b, rec, _, _ := mc.moved(t)
	closed := connrec.Record{Kind: connrec.KindClosed, Proto: rec.Proto, State: connrec.StateClose, Version: rec.Version + 2,
		Client: rec.Client, VIP: rec.VIP, LIP: rec.LIP, Server: rec.Server, CPort: rec.CPort, VPort: rec.VPort, LPort: rec.LPort, RPort: rec.RPort}
	if err := b.b.ImportConn(&closed); err != nil {
		t.Fatalf("tombstone: %v", err)
	}
	if n := b.b.Table().Len(); n != 0 {
		t.Fatalf("%d connections after the tombstone, want 0", n)
	}
	refresh := rec
	refresh.Version = rec.Version + 1 // sent before the close, arriving after
	stale := b.b.Stats.ImportRefusal(ImportStale)
	if err := b.b.ImportConn(&refresh); !isReason(err, ImportStale) || b.b.Table().Len() != 0 || b.b.Stats.ImportRefusal(ImportStale) != stale+1 {
		t.Fatalf("a late refresh: %v, %d connections; want stale (counted), none", err, b.b.Table().Len())
	}
	// A new connection on the same client tuple, from another local port.
	reused := rec
	reused.Version, reused.LPort = 1, rec.LPort+7
	if err := b.b.ImportConn(&reused); err != nil || b.b.Table().Len() != 1 {
		t.Fatalf("a new connection on the client tuple: %v, %d connections", err, b.b.Table().Len())
	}

	// A tombstone before its open record: the record is refused.
	other := newRig(t, TCP, "rr", nil)
	if err := other.b.ImportConn(&closed); err != nil {
		t.Fatalf("a tombstone of a connection not here: %v", err)
	}
	if err := other.b.ImportConn(&rec); !isReason(err, ImportStale) || other.b.Table().Len() != 0 {
		t.Fatalf("the open record after its tombstone: %v, %d connections; want stale, none", err, other.b.Table().Len())
	}
	// Newer than the tombstone: applied (the version is the peer's word).
	newer := rec
	newer.Version = closed.Version + 1
	if err := other.b.ImportConn(&newer); err != nil {
		t.Fatalf("a record newer than the tombstone: %v", err)
	}

	// Forgotten after tombTTL.
	late := newRig(t, TCP, "rr", nil)
	if err := late.b.ImportConn(&closed); err != nil {
		t.Fatal(err)
	}
	late.b.table.now.Add(tombTTL)
	if err := late.b.ImportConn(&rec); err != nil {
		t.Fatalf("the open record %v after its tombstone: %v", tombTTL, err)
	}
}

// The memory of tombstones is bounded: past maxTombs the oldest is
// forgotten first.
func TestTombsBounded(t *testing.T) {
	var ts tombs
	id := func(i int) connID {
		return connID{in: tupleKey{sport: uint16(i), dport: uint16(i >> 16), proto: TCP}}
	}
	for i := range maxTombs + 10 {
		ts.add(id(i), 1, 0)
	}
	if len(ts.m) != maxTombs || len(ts.ring) != maxTombs {
		t.Fatalf("%d remembered (%d in the ring), want %d", len(ts.m), len(ts.ring), maxTombs)
	}
	for i := range 10 {
		if ts.buries(id(i), 1, 0) {
			t.Fatalf("tombstone %d of the first 10 still remembered", i)
		}
	}
	if !ts.buries(id(10), 1, 0) || !ts.buries(id(maxTombs+9), 1, 0) {
		t.Fatal("the newest tombstones forgotten")
	}
	// The same connection again takes no second place.
	ts.add(id(maxTombs+9), 2, 0)
	if len(ts.m) != maxTombs || !ts.buries(id(11), 1, 0) {
		t.Fatal("a repeated tombstone pushed another out")
	}
}
