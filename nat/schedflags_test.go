package nat

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/dchest/siphash"
	"github.com/tapvs/tapvs/wire"
)

// Flag names are the scheduler's own (sh-port is not mh's), flag-1 and
// flag-2 are their bits' other names, and anything else, or any flag of a
// scheduler that takes none, is refused naming it; Names prints them as
// ipvsadm's print_sched_flags does, fallback first.
func TestSchedFlagsNames(t *testing.T) {
	for _, tc := range []struct {
		sched string
		names []string
		want  SchedFlags
		err   string
	}{
		{"sh", nil, 0, ""},
		{"sh", []string{"sh-port"}, SchedPort, ""},
		{"sh", []string{"sh-fallback"}, SchedFallback, ""},
		{"sh", []string{"sh-port", "sh-fallback"}, SchedPort | SchedFallback, ""},
		{"mh", []string{"mh-port", "mh-fallback"}, SchedPort | SchedFallback, ""},
		{"mh", []string{"flag-1"}, SchedFallback, ""},
		{"sh", []string{"flag-2"}, SchedPort, ""},
		{"mh", []string{"sh-port"}, 0, `"sh-port" is not a flag of scheduler mh (it takes mh-fallback, mh-port)`},
		{"sh", []string{"sh-port", "mh-port"}, 0, `"mh-port" is not a flag of scheduler sh (it takes sh-fallback, sh-port)`},
		{"sh", []string{"flag-3"}, 0, `"flag-3" is not a flag of scheduler sh (it takes sh-fallback, sh-port)`},
		{"rr", []string{"flag-1"}, 0, `"flag-1" is not a flag of scheduler rr (it takes none; sh and mh take them)`},
		{"wlc", []string{"sh-port"}, 0, `"sh-port" is not a flag of scheduler wlc (it takes none; sh and mh take them)`},
		{"fifo", []string{"sh-port"}, 0, `"fifo" is not a scheduler (one of [rr wrr lc wlc sed nq sh mh dh lblc lblcr fo ovf])`},
		{"fifo", nil, 0, ""},
	} {
		got, err := ParseSchedFlags(tc.sched, tc.names)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s %v: %v, want %s", tc.sched, tc.names, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s %v: %v %v, want %v", tc.sched, tc.names, got, err, tc.want)
		}
		if err := CheckSchedFlags(tc.sched, got); err != nil {
			t.Errorf("%s %v: %v", tc.sched, got, err)
		}
	}
	for _, tc := range []struct {
		sched string
		f     SchedFlags
		want  []string
	}{
		{"sh", SchedPort | SchedFallback, []string{"sh-fallback", "sh-port"}},
		{"mh", SchedPort, []string{"mh-port"}},
		{"sh", 0, nil},
		{"rr", SchedFallback | SchedPort, []string{"flag-1", "flag-2"}},
		{"sh", SchedPort | 4, []string{"sh-port", "flag-3"}},
	} {
		if got := tc.f.Names(tc.sched); !slices.Equal(got, tc.want) {
			t.Errorf("%s %d: %v, want %v", tc.sched, tc.f, got, tc.want)
		}
	}
	for _, tc := range []struct {
		sched string
		f     SchedFlags
		err   string
	}{
		{"rr", SchedPort, "scheduler flags flag-2 do not fit scheduler rr (it takes none; sh and mh take them)"},
		{"sh", 4, "scheduler flags flag-3 do not fit scheduler sh (it takes sh-fallback, sh-port)"},
		{"rr", 0, ""},
		{"mh", SchedPort | SchedFallback, ""},
	} {
		err := CheckSchedFlags(tc.sched, tc.f)
		if (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
			t.Errorf("%s %d: %v, want %q", tc.sched, tc.f, err, tc.err)
		}
	}
}

// v4Key is a connection from client:sport to dst, in the data path's form.
func v4Key(client string, sport uint16, dst string) tupleKey {
	k := tupleKey{src: wire.In16(netip.MustParseAddr(client).AsSlice()), sport: sport, dport: 80, proto: TCP}
	if dst != "" {
		k.dst = wire.In16(netip.MustParseAddr(dst).AsSlice())
	}
	return k
}

// destIndex is d's index in ds, -1 for none.
func destIndex(ds []*Dest, d *Dest) int { return slices.Index(ds, d) }

// sh-port adds the source port to the folded address before the hash, so
// one client's connections spread over the servers (10.0.0.1 port 1000:
// bucket 47, worked out apart from this code; port 0, or no flag: 39);
// without it every port of a client goes to one server.
func TestSourceHashPort(t *testing.T) {
	ds := schedDests([3]int64{1}, [3]int64{1}, [3]int64{1}, [3]int64{1})
	plain, port := newSourceHash(ds, 0), newSourceHash(ds, SchedPort)
	k := v4Key("10.0.0.1", 1000, "")
	if got, want := port.pick(&k), port.buckets[47]; got != want {
		t.Fatalf("sh-port, 10.0.0.1 port 1000: %v, want bucket 47's %v", got, want)
	}
	if got, want := plain.pick(&k), plain.buckets[39]; got != want {
		t.Fatalf("sh, 10.0.0.1 port 1000: %v, want bucket 39's %v", got, want)
	}
	seen, seenPlain := map[*Dest]bool{}, map[*Dest]bool{}
	for p := range uint16(64) {
		k := v4Key("10.0.0.1", 40000+p, "")
		seen[port.pick(&k)] = true
		seenPlain[plain.pick(&k)] = true
	}
	if len(seen) != 4 || len(seenPlain) != 1 {
		t.Fatalf("64 ports of one client: sh-port used %d servers (want 4), sh %d (want 1)", len(seen), len(seenPlain))
	}
}

// A hashed server unavailable at pick time (its weight went to 0, the
// table not rebuilt yet): without sh-fallback the connection is refused,
// as IPVS does; with it the walk of IPVS's ip_vs_sh_get_fallback takes the
// first available server from bucket 2×hash on; nothing available, none.
// Five servers, so that a bucket's server is its number mod 5 and a walk
// from elsewhere (-2×hash, hash+1) lands on another.
func TestSourceHashFallback(t *testing.T) {
	ds := schedDests([3]int64{1}, [3]int64{1}, [3]int64{1}, [3]int64{1}, [3]int64{1})
	plain, fb := newSourceHash(ds, 0), newSourceHash(ds, SchedFallback)
	for b, d := range fb.buckets {
		if d != ds[b%5] {
			t.Fatalf("bucket %d: %v, want %v", b, d, ds[b%5])
		}
	}
	ds[1].weight.Store(0)
	ds[2].weight.Store(0)
	up := func(i int) bool { return i != 1 && i != 2 }
	checked := 0
	for i := range 256 {
		k := v4Key(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).String(), 0, "")
		ihash := bucket256(addrFold(&k.src))
		hashed := int(ihash % 5)
		p, f := destIndex(ds, plain.pick(&k)), destIndex(ds, fb.pick(&k))
		if up(hashed) {
			if p != hashed || f != hashed {
				t.Fatalf("client %d, bucket %d's server %d is up: sh %d, sh-fallback %d", i, ihash, hashed, p, f)
			}
			continue
		}
		if p != -1 {
			t.Fatalf("client %d hashes to drained server %d: sh picked %d, want none", i, hashed, p)
		}
		want := -1
		for o := range uint32(256) {
			if b := int((o + 2*ihash) % 256 % 5); up(b) {
				want = b
				break
			}
		}
		if f != want {
			t.Fatalf("client %d (bucket %d, server %d drained): sh-fallback picked %d, want %d", i, ihash, hashed, f, want)
		}
		checked++
	}
	if checked < 64 {
		t.Fatalf("only %d clients hashed to a drained server", checked)
	}
	for _, d := range ds {
		d.weight.Store(0)
	}
	if d := fb.pick(&tupleKey{}); d != nil {
		t.Fatalf("sh-fallback with every server drained picked %v", d)
	}
}

// mhWant is the slot mh hashes client, port and offset to, computed apart
// from mhSlot: SipHash of the address, or of address, port and offset
// (big-endian) when either is not 0.
func mhWant(src addr16, port uint16, offset uint32) uint32 {
	b := src[:]
	if port != 0 || offset != 0 {
		b = binary.BigEndian.AppendUint16(b, port)
		b = binary.BigEndian.AppendUint32(b, offset)
	}
	return uint32(siphash.Hash(2654435761, 2654435761, b) % mhTableSize)
}

// mh-port hashes the source port too (one client's ports spread; without
// the flag they share a server); mh-fallback, when the slot's server is
// unavailable at pick time, hashes again with offset o + the first hash
// for o from 0 (IPVS's ip_vs_mh_get_fallback); without it, none.
func TestMaglevFlags(t *testing.T) {
	ds := schedDests([3]int64{1}, [3]int64{1}, [3]int64{1}, [3]int64{1})
	plain, port := newMaglev(ds, 0), newMaglev(ds, SchedPort)
	seen, seenPlain := map[*Dest]bool{}, map[*Dest]bool{}
	for p := range uint16(64) {
		k := v4Key("10.0.0.1", 40000+p, "")
		d := port.pick(&k)
		if want := port.table[mhWant(k.src, k.sport, 0)]; d != want {
			t.Fatalf("mh-port, port %d: %v, want %v", k.sport, d, want)
		}
		seen[d] = true
		seenPlain[plain.pick(&k)] = true
	}
	if len(seen) != 4 || len(seenPlain) != 1 {
		t.Fatalf("64 ports of one client: mh-port used %d servers (want 4), mh %d (want 1)", len(seen), len(seenPlain))
	}

	fb := newMaglev(ds, SchedFallback)
	fbPort := newMaglev(ds, SchedFallback|SchedPort)
	ds[2].weight.Store(0)
	moved := 0
	for _, k := range mhClients(500) {
		k.sport = 777
		for _, m := range []*maglev{fb, fbPort} {
			var sport uint16
			if m == fbPort {
				sport = k.sport
			}
			ihash := mhWant(k.src, sport, 0)
			if m.table[ihash] != ds[2] {
				if m.pick(&k) != m.table[ihash] {
					t.Fatal("a client of a live server moved")
				}
				continue
			}
			var want *Dest
			for o := range uint32(mhTableSize) {
				if d := m.table[mhWant(k.src, sport, (o+ihash)%mhTableSize)]; d != ds[2] {
					want = d
					break
				}
			}
			if got := m.pick(&k); got != want || got == nil {
				t.Fatalf("mh-fallback (flags %d), client of the drained server: %v, want %v", m.flags, got, want)
			}
			moved++
		}
		if plain.table[mhWant(k.src, 0, 0)] == ds[2] && plain.pick(&k) != nil {
			t.Fatal("mh without mh-fallback picked a server for a client of the drained one")
		}
	}
	if moved < 100 {
		t.Fatalf("only %d clients hashed to the drained server", moved)
	}
	for _, d := range ds {
		d.weight.Store(0)
	}
	if d := fb.pick(&tupleKey{}); d != nil {
		t.Fatalf("mh-fallback with every server drained picked %v", d)
	}
}

// dh hashes the destination, not the source, to 256 buckets given to the
// live servers one each in turn whatever their weights (IPVS's dh); a
// server drained at pick time is refused, not fallen back from.
func TestDestHash(t *testing.T) {
	ds := schedDests([3]int64{3}, [3]int64{0}, [3]int64{1})
	h := newDestHash(ds)
	for b, d := range h.buckets {
		if want := ds[2*(b%2)]; d != want {
			t.Fatalf("bucket %d is %v, want %v", b, d, want)
		}
	}
	k := v4Key("10.0.0.1", 1000, "10.0.0.1") // bucket 39, as sh's source
	if got := h.pick(&k); got != ds[2] {
		t.Fatalf("destination 10.0.0.1 (bucket 39): %v, want %v", got, ds[2])
	}
	for i := range 64 {
		k2 := v4Key(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String(), uint16(i), "10.0.0.1")
		if got := h.pick(&k2); got != ds[2] {
			t.Fatalf("client %d to 10.0.0.1: %v, want %v: dh hashes the destination", i, got, ds[2])
		}
	}
	seen := map[*Dest]bool{}
	for i := range 64 {
		k2 := v4Key("10.0.0.1", 1000, netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}).String())
		seen[h.pick(&k2)] = true
	}
	if len(seen) != 2 || seen[ds[1]] {
		t.Fatalf("64 destinations went to %v, want the two live servers", seen)
	}
	ds[2].weight.Store(0)
	if d := h.pick(&k); d != nil {
		t.Fatalf("destination of a server drained at pick time: %v, want none", d)
	}
	if d := newDestHash(schedDests([3]int64{0})).pick(&k); d != nil {
		t.Fatalf("dh without a live server picked %v", d)
	}
}
