package connrec

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tapvs/tapvs/tcprw"
	"github.com/tapvs/tapvs/wire"
)

func a16(s string) [16]byte { return netip.MustParseAddr(s).As16() }

// samples are records of every kind: the fuzz target's seeds and the
// round trip's cases.
func samples() map[string]Record {
	v4 := Record{
		Kind: KindOpen, Proto: wire.ProtoTCP, State: StateEstablished, Version: 7, LifetimeMS: 90000,
		Client: a16("::ffff:198.51.100.7"), VIP: a16("::ffff:192.0.2.10"),
		LIP: a16("::ffff:10.0.0.2"), Server: a16("::ffff:10.0.1.5"),
		CPort: 40000, VPort: 80, LPort: 5001, RPort: 8080,
		Ext: ExtRewriter | ExtAcks,
		Rewriter: tcprw.Rewriter{Client: 0x11223344, TSClient: 0x55667788,
			Flags: tcprw.TSClientOn},
		Acks: Acks{Valid: [2]bool{true, false}, Ack: [2]uint32{0xdeadbeef, 0}},
	}
	m := map[string]Record{"tcp": v4}

	r := v4
	r.Flags, r.Rewriter.Flags = FlagTSRemove, tcprw.TSRemove
	m["tcp_ts_remove"] = r

	r = v4
	r.Flags, r.Ext = FlagSynproxy, ExtRewriter|ExtAcks|ExtSynproxy
	r.Rewriter = tcprw.Rewriter{Client: 1, Server: 2, Start: 3, TSServer: 4, TOAAck: 5, WinIn: 7, WinOut: 2, WinOutR: 7,
		Flags: tcprw.TSServerOn | tcprw.TOAKnown | tcprw.Storm}
	r.Synproxy = Synproxy{ClientISN: 9, Cookie: 10, ClientTSval: 11, OurTSval: 12, MSS: 1460, WScale: 7, OurWScale: -1, SACK: true, TS: true, TSOn: true}
	m["synproxy"] = r

	r = v4
	r.ClientAddr = ClientAddrTOA
	r.Rewriter.TOAAck, r.Rewriter.Flags = 1234, tcprw.TOAKnown|tcprw.TSClientOn
	m["toa"] = r

	r = v4
	r.ClientAddr = ClientAddrProxyV2
	r.Rewriter.Start, r.Rewriter.Insert, r.Rewriter.Flags = 1000, 28, tcprw.Past
	m["proxy_v2"] = r

	r = v4
	r.Proto, r.Ext, r.Rewriter, r.Acks = wire.ProtoUDP, 0, tcprw.Rewriter{}, Acks{}
	m["udp"] = r
	r.ClientAddr = ClientAddrProxyV2
	m["udp_proxy_v2"] = r

	r = v4
	r.Flags = FlagClient6 | FlagServer6
	r.Client, r.VIP, r.LIP, r.Server = a16("2001:db8::7"), a16("2001:db8::10"), a16("fd00::2"), a16("fd00:1::5")
	m["ipv6"] = r
	r.Flags = FlagClient6
	r.LIP, r.Server = v4.LIP, v4.Server
	m["nat64"] = r
	r.Flags = FlagServer6
	r.Client, r.VIP, r.LIP, r.Server = v4.Client, v4.VIP, a16("fd00::2"), a16("fd00:1::5")
	m["nat46"] = r

	r = v4
	r.Kind, r.Ext, r.Rewriter, r.Acks, r.State = KindClosed, 0, tcprw.Rewriter{}, Acks{}, StateClose
	m["tombstone"] = r

	r = v4
	r.Ext |= ExtNextHop
	r.NextHop = [6]byte{2, 0, 0, 0, 0, 1}
	m["nexthop"] = r

	// Templates: a /24 on port 80, an IPv6 one of an all-ports service
	// whose server has port 0.
	tmpl := Record{Kind: KindTemplate, Proto: wire.ProtoTCP, LifetimeMS: 300000,
		Client: a16("::ffff:198.51.100.0"), VIP: v4.VIP, LIP: a16("::ffff:0.0.0.0"), Server: v4.Server, VPort: 80, RPort: 8080}
	m["template"] = tmpl
	tmpl.Proto, tmpl.Flags = wire.ProtoUDP, FlagClient6|FlagServer6
	tmpl.Client, tmpl.VIP, tmpl.LIP, tmpl.Server, tmpl.VPort, tmpl.RPort = a16("2001:db8::"), a16("2001:db8::10"), [16]byte{}, a16("fd00:1::5"), 0, 0
	m["template6_all_ports"] = tmpl
	tmpl = m["template"]
	tmpl.Flags, tmpl.LIP, tmpl.Server = FlagServer6, [16]byte{}, a16("fd00:1::5")
	m["template46"] = tmpl
	return m
}

// TestLayout pins the bytes of one record, written out field by field from
// the layout in the package comment.
func TestLayout(t *testing.T) {
	r := samples()["synproxy"]
	r.Ext |= ExtNextHop
	r.NextHop = [6]byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	want := strings.Join([]string{
		"01", "01", "00ac", // kind open, version 1, length 172
		"06", "01", "01", "00", // TCP, ESTABLISHED, SYNPROXY, no client address
		"00000007", "00015f90", // version 7, 90 s
		"00000000000000000000ffffc6336407", // client
		"00000000000000000000ffffc000020a", // VIP
		"00000000000000000000ffff0a000002", // LIP
		"00000000000000000000ffff0a000105", // real server
		"9c40", "0050", "1389", "1f90",     // ports
		"0124", "00000001" + "00000002" + "00000003" + "00000000" + "00000000" + "00000004" + "00000005",
		"0000" + "0000" + "07" + "02" + "07" + "64", "0000", // REWRITER: Flags TSServerOn|TOAKnown|Storm = 0x64
		"0215", "00000009" + "0000000a" + "0000000b" + "0000000c" + "05b4" + "07" + "ff" + "07", "00", // SYNPROXY
		"030a", "01" + "00" + "deadbeef" + "00000000", // ACKS
		"8106", "02aabbccddee", // NEXTHOP
	}, "")
	got := hex.EncodeToString(r.AppendTo(nil))
	if got != want {
		t.Fatalf("encoding\n got %s\nwant %s", got, want)
	}
	if r.Len() != 172 {
		t.Errorf("Len %d, want 172", r.Len())
	}
}

// TestSizes pins each kind's length (docs/design.md's table).
func TestSizes(t *testing.T) {
	want := map[string]int{"tcp": 140, "tcp_ts_remove": 140, "synproxy": 164, "toa": 140, "proxy_v2": 140,
		"udp": 88, "udp_proxy_v2": 88, "ipv6": 140, "nat64": 140, "nat46": 140, "tombstone": 88, "nexthop": 148,
		"template": 88, "template6_all_ports": 88, "template46": 88}
	for name, r := range samples() {
		if n := len(r.AppendTo(nil)); n != want[name] || n != r.Len() {
			t.Errorf("%s: %d bytes (Len %d), want %d", name, n, r.Len(), want[name])
		}
	}
}

// TestRoundTrip: every kind decodes to the record it was made from, with
// the length consumed, after bytes of another record.
func TestRoundTrip(t *testing.T) {
	for name, r := range samples() {
		if err := r.Check(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b := r.AppendTo([]byte{0xff})
		got, n, err := Decode(append(b[1:], 0xee, 0xee))
		if err != nil || n != len(b)-1 || got != r {
			t.Errorf("%s: Decode = %+v, %d, %v; want %+v, %d", name, got, n, err, r, len(b)-1)
		}
	}
}

// TestDecodeNoAlloc: reading a record allocates nothing, accepted or refused.
func TestDecodeNoAlloc(t *testing.T) {
	r := samples()["synproxy"]
	good := r.AppendTo(nil)
	bad := bytes.Clone(good)
	bad[85] = 0 // lport 0
	for _, b := range [][]byte{good, bad} {
		if a := testing.AllocsPerRun(100, func() { _, _, _ = Decode(b) }); a != 0 {
			t.Errorf("Decode allocates %v times", a)
		}
	}
}

// TestRefusals: each bad field refuses the record whole, naming it.
func TestRefusals(t *testing.T) {
	base := samples()["synproxy"]
	enc := func(r Record) []byte { return r.AppendTo(nil) }
	mod := func(f func(b []byte)) []byte { b := enc(base); f(b); return b }
	with := func(f func(r *Record)) []byte { r := base; f(&r); return enc(r) }
	tmplWith := func(f func(r *Record)) []byte { r := samples()["template"]; f(&r); return enc(r) }
	ext := func(t, l byte, v ...byte) []byte { // base plus one extension at its end
		b := enc(base)
		e := append([]byte{t, l}, v...)
		for len(e)%4 != 0 {
			e = append(e, 0)
		}
		b = append(b, e...)
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "connrec: length: past the bytes given"},
		{"short", enc(base)[:100], "connrec: length: past the bytes given"},
		{"kind", mod(func(b []byte) { b[0] = 4 }), "connrec: kind:"},
		{"kind 0", mod(func(b []byte) { b[0] = 0 }), "connrec: kind:"},
		{"version", mod(func(b []byte) { b[1] = 2 }), "connrec: record version: not 1"},
		{"len odd", mod(func(b []byte) { b[3]-- }), "connrec: length: not a multiple"},
		{"len small", mod(func(b []byte) { binary.BigEndian.PutUint16(b[2:], 84) }), "connrec: length: not a multiple"},
		{"len big", mod(func(b []byte) { binary.BigEndian.PutUint16(b[2:], 260) }), "connrec: length: not a multiple"},
		{"proto", mod(func(b []byte) { b[4] = 1 }), "connrec: proto:"},
		{"state", mod(func(b []byte) { b[5] = 11 }), "connrec: state: not 0..10"},
		{"udp state", with(func(r *Record) {
			r.Proto, r.Flags, r.Ext, r.State = wire.ProtoUDP, 0, 0, StateSynRecv
		}), "connrec: state: not ESTABLISHED"},
		{"flags", mod(func(b []byte) { b[6] |= 0x10 }), "connrec: flags: reserved"},
		{"udp synproxy", with(func(r *Record) { r.Proto, r.Ext = wire.ProtoUDP, 0 }), "connrec: flags: SYNPROXY or timestamps remove on UDP"},
		{"46 LIP v4", with(func(r *Record) { r.Flags |= FlagServer6 }), "connrec: LIP: family not the flags' (b2)"},
		{"client addr", mod(func(b []byte) { b[7] = 4 }), "connrec: client address mode: not 0..3"},
		{"udp toa", with(func(r *Record) {
			r.Proto, r.Flags, r.Ext, r.ClientAddr = wire.ProtoUDP, 0, 0, ClientAddrTOA
		}), "connrec: client address mode: TOA or PROXY v1 on UDP"},
		{"lifetime", with(func(r *Record) { r.LifetimeMS = MaxLifetimeMS + 1 }), "connrec: lifetime:"},
		{"client family", with(func(r *Record) { r.Client = a16("2001:db8::1") }), "connrec: client address: family"},
		{"vip family", with(func(r *Record) { r.VIP = a16("2001:db8::1") }), "connrec: VIP: family"},
		{"lip family", with(func(r *Record) { r.LIP = a16("2001:db8::1") }), "connrec: LIP: family"},
		{"rs family", with(func(r *Record) { r.Server = a16("2001:db8::1") }), "connrec: real server: family"},
		{"cport", with(func(r *Record) { r.CPort = 0 }), "connrec: cport: 0"},
		{"vport", with(func(r *Record) { r.VPort = 0 }), "connrec: vport: 0"},
		{"lport", with(func(r *Record) { r.LPort = 0 }), "connrec: lport: 0"},
		{"rport", with(func(r *Record) { r.RPort = 0 }), "connrec: rport: 0"},
		{"ext unknown", ext(0x05, 2, 1, 2), "connrec: extension: unknown type"},
		{"ext order", ext(0x03, acksLen, make([]byte, acksLen)...), "connrec: extension: types not in ascending"},
		{"ext past", mod(func(b []byte) { b[CoreLen+1] = 200 }), "connrec: extension: header or value past"},
		{"ext len", mod(func(b []byte) { b[CoreLen+1] = 34 }), "connrec: extension: value of the wrong length"},
		{"ext pad", mod(func(b []byte) { b[CoreLen+38] = 1 }), "connrec: extension: padding not zero"},
		{"rewriter flags", mod(func(b []byte) { b[CoreLen+2+35] |= 0x80 }), "connrec: rewriter flags"},
		{"rewriter win", with(func(r *Record) { r.Rewriter.WinOut = 15 }), "connrec: rewriter window shift"},
		{"rewriter neg", with(func(r *Record) { r.Rewriter.WinIn = -1 }), "connrec: rewriter window shift"},
		{"no rewriter", with(func(r *Record) { r.Ext &^= ExtRewriter }), "connrec: rewriter: missing"},
		{"no acks", with(func(r *Record) { r.Ext &^= ExtAcks }), "connrec: acks: missing"},
		{"no synproxy", with(func(r *Record) { r.Ext &^= ExtSynproxy }), "connrec: synproxy: present without"},
		{"synproxy without flag", with(func(r *Record) { r.Flags = 0 }), "connrec: synproxy: present without"},
		{"sp wscale", with(func(r *Record) { r.Synproxy.OurWScale = 15 }), "connrec: synproxy window scale"},
		{"sp bits", mod(func(b []byte) { b[CoreLen+40+2+20] |= 8 }), "connrec: synproxy options"},
		{"acks bits", mod(func(b []byte) { b[CoreLen+64+2] |= 4 }), "connrec: acks valid"},
		{"acks pad", mod(func(b []byte) { b[CoreLen+64+3] = 1 }), "connrec: acks valid"},
		{"acks invalid nonzero", with(func(r *Record) { r.Acks.Ack[1] = 5 }), "connrec: acks valid"},
		{"tombstone ext", with(func(r *Record) { r.Kind = KindClosed }), "connrec: extension: a known extension on a tombstone"},
		{"template ext", with(func(r *Record) {
			r.Kind, r.State, r.Flags, r.CPort, r.LIP, r.LPort = KindTemplate, StateNone, 0, 0, a16("::ffff:0.0.0.0"), 0
			r.Ext = ExtAcks
		}), "connrec: extension: a known extension on a tombstone or template"},
		{"template state", tmplWith(func(r *Record) { r.State = StateEstablished }), "connrec: state: not NONE (0) on a template"},
		{"template synproxy", tmplWith(func(r *Record) { r.Flags = FlagSynproxy }), "connrec: flags: SYNPROXY or timestamps remove on a template"},
		{"template ts remove", tmplWith(func(r *Record) { r.Flags = FlagTSRemove }), "connrec: flags: SYNPROXY or timestamps remove on a template"},
		{"template flags", tmplWith(func(r *Record) { r.Flags = 0x10 }), "connrec: flags: reserved"},
		{"template proto", tmplWith(func(r *Record) { r.Proto = 1 }), "connrec: proto:"},
		{"template 46 server v4", tmplWith(func(r *Record) { r.Flags, r.LIP = FlagServer6, [16]byte{} }), "connrec: real server: family not the flags' (b2)"},
		{"template client address", tmplWith(func(r *Record) { r.ClientAddr = ClientAddrTOA }), "connrec: client address mode: not 0 on a template"},
		{"template lifetime", tmplWith(func(r *Record) { r.LifetimeMS = MaxLifetimeMS + 1 }), "connrec: lifetime:"},
		{"template cport", tmplWith(func(r *Record) { r.CPort = 1 }), "connrec: cport: not 0 on a template"},
		{"template lip", tmplWith(func(r *Record) { r.LIP = a16("::ffff:10.0.0.2") }), "connrec: LIP: not unspecified"},
		{"template lip v6 form", tmplWith(func(r *Record) { r.LIP = [16]byte{} }), "connrec: LIP: family"},
		{"template lport", tmplWith(func(r *Record) { r.LPort = 5 }), "connrec: LIP: not unspecified"},
		{"template client family", tmplWith(func(r *Record) { r.Client = a16("2001:db8::1") }), "connrec: client address: family"},
		{"template vip family", tmplWith(func(r *Record) { r.VIP = a16("2001:db8::1") }), "connrec: VIP: family"},
		{"template rs family", tmplWith(func(r *Record) { r.Server = a16("2001:db8::1") }), "connrec: real server: family"},
	} {
		r, n, err := Decode(tc.b)
		var e *Error
		if err == nil || !errors.As(err, &e) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
		if n != 0 || r != (Record{}) {
			t.Errorf("%s: refused, yet returned %d bytes of a record", tc.name, n)
		}
	}
}

// TestSkippable: an unknown extension with bit 7 set is kept and written
// back where it was; a known one skipped by a reader is NEXTHOP.
func TestSkippable(t *testing.T) {
	r := samples()["nexthop"]
	b := r.AppendTo(nil)
	// 0x80 goes before NEXTHOP (0x81), 0x90 after it.
	before := []byte{0x80, 3, 1, 2, 3, 0, 0, 0}
	after := []byte{0x90, 0}
	after = append(after, 0, 0)
	nh := len(b) - padded(nextHopLen)
	b = append(append(append(append([]byte{}, b[:nh]...), before...), b[nh:]...), after...)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	got, n, err := Decode(b)
	if err != nil || n != len(b) {
		t.Fatalf("Decode: %d, %v", n, err)
	}
	if got.NextHop != r.NextHop || got.Ext != r.Ext {
		t.Errorf("known extensions lost: %+v", got)
	}
	if re := got.AppendTo(nil); !bytes.Equal(re, b) {
		t.Errorf("re-encoded\n %x\nwant %x", re, b)
	}
}

// TestBounds: the edges of what is accepted: a record of MaxLen bytes
// (Decode and Check), window scales of -1 and 14, and the client's ack
// not marked valid yet not 0 refused as the server's is.
func TestBounds(t *testing.T) {
	r := samples()["synproxy"]
	b := r.AppendTo(nil)
	pad := MaxLen - len(b)
	b = append(b, 0x90, byte(pad-2))
	b = append(b, make([]byte, pad-2)...)
	binary.BigEndian.PutUint16(b[2:], MaxLen)
	got, n, err := Decode(b)
	if err != nil || n != MaxLen {
		t.Fatalf("a record of MaxLen: %d, %v", n, err)
	}
	if err := got.Check(); err != nil || !bytes.Equal(got.AppendTo(nil), b) {
		t.Fatalf("Check of a record of MaxLen: %v", err)
	}
	for _, ws := range []int8{-1, 14} {
		r := samples()["synproxy"]
		r.Synproxy.WScale, r.Synproxy.OurWScale, r.Rewriter.WinIn, r.Rewriter.WinOut, r.Rewriter.WinOutR = ws, ws, 14, 14, 14
		if err := r.Check(); err != nil {
			t.Errorf("window scale %d, shifts 14: %v", ws, err)
		}
	}
	r.Acks = Acks{Valid: [2]bool{false, true}, Ack: [2]uint32{5, 6}}
	if err := r.Check(); err == nil || !strings.Contains(err.Error(), "acks valid") {
		t.Errorf("the client's ack not valid, not 0: %v", err)
	}
}
