package connsync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/tapvs/tapvs/clusterauth"
)

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, clusterauth.KeyLen) }

// The tests' record format: a length byte (at least 2, itself included),
// then that many bytes less one.
func fakeLen(b []byte) (int, error) {
	if len(b) < 1 || b[0] < 2 || int(b[0]) > len(b) {
		return 0, errors.New("fake record: bad length")
	}
	return int(b[0]), nil
}

// rec is fake record i: 6 bytes, length and i.
func rec(i int) []byte {
	r := []byte{6, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(r[2:], uint32(i))
	return r
}

func testOpener(max int) *opener {
	o := &opener{max: max}
	o.macs[1] = clusterauth.NewMAC(secret(1))
	return o
}

// message seals a payload of type t under key id 1.
func message(t Type, count uint16, payload []byte, seq uint64) []byte {
	s := sealer{id: 1, mac: clusterauth.NewMAC(secret(1))}
	d := append(make([]byte, Overhead), payload...)
	return s.seal(d, Header{Type: t, Sender: 7, Epoch: 100, Seq: seq, Count: count})
}

func TestSealOpen(t *testing.T) {
	o := testOpener(1472)
	payload := append(rec(1), rec(2)...)
	d := message(Update, 2, payload, 5)
	h, p, err := o.open(d)
	if err != nil || !bytes.Equal(p, payload) || h != (Header{Type: Update, KeyID: 1, Sender: 7, Epoch: 100, Seq: 5, Count: 2}) {
		t.Fatalf("%+v %x %v", h, p, err)
	}
	ends, err := body(h, p, fakeLen, nil)
	if err != nil || len(ends) != 2 || ends[0] != 6 || ends[1] != 12 {
		t.Fatalf("body: %v %v", ends, err)
	}
	// Every byte altered is refused, by a header check or the tag.
	for i := range d {
		e := bytes.Clone(d)
		e[i] ^= 0x10
		if _, _, err := o.open(e); err == nil {
			t.Fatalf("byte %d altered, accepted", i)
		}
	}
}

func TestOpenRefusals(t *testing.T) {
	o := testOpener(200)
	ok := message(Update, 1, rec(1), 1)
	with := func(off int, b ...byte) []byte { e := bytes.Clone(ok); copy(e[off:], b); return e }
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"empty":         {nil, ErrShort},
		"header":        {ok[:Overhead-1], ErrShort},
		"truncated":     {ok[:len(ok)-1], ErrShort},
		"past max":      {make([]byte, 201), ErrLong},
		"trailing":      {append(bytes.Clone(ok), 0), ErrLong},
		"magic":         {with(0, 'X'), ErrMagic},
		"version":       {with(3, 2), ErrVersion},
		"type 0":        {with(4, 0), ErrVersion},
		"type 6":        {with(4, 6), ErrVersion},
		"reserved":      {with(31, 1), ErrVersion},
		"key id":        {with(5, 2), ErrKey},
		"tag":           {with(Overhead-1, ok[Overhead-1]^1), ErrTag},
		"payload bytes": {with(Overhead, 7), ErrTag},
	}
	for name, c := range cases {
		if _, _, err := o.open(c.b); err != c.want {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	nonce := make([]byte, nonceLen)
	bodies := map[string]struct {
		t     Type
		count uint16
		p     []byte
		ok    bool
	}{
		"update":             {Update, 2, append(rec(1), rec(2)...), true},
		"update count high":  {Update, 3, append(rec(1), rec(2)...), false},
		"update count low":   {Update, 1, append(rec(1), rec(2)...), false},
		"update none":        {Update, 0, nil, false},
		"update bad record":  {Update, 1, []byte{1, 0}, false},
		"update overrun":     {Update, 1, []byte{9, 0}, false},
		"copy data":          {CopyData, 1, append(bytes.Clone(nonce), rec(1)...), true},
		"copy data no nonce": {CopyData, 1, rec(1)[:4], false},
		"hello":              {Hello, 0, make([]byte, helloLen), true},
		"hello long":         {Hello, 0, make([]byte, helloLen+1), false},
		"hello count":        {Hello, 1, make([]byte, helloLen), false},
		"copy req":           {CopyReq, 0, nonce, true},
		"copy req short":     {CopyReq, 0, nonce[:7], false},
		"copy end":           {CopyEnd, 0, make([]byte, copyEndLen), true},
		"copy end count":     {CopyEnd, 1, make([]byte, copyEndLen), false},
	}
	for name, c := range bodies {
		h, p, err := o.open(message(c.t, c.count, c.p, 1))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := body(h, p, fakeLen, nil); (err == nil) != c.ok || err != nil && err != ErrBadRecords {
			t.Errorf("%s: %v, want ok=%v", name, err, c.ok)
		}
	}
}

// The replay window: each number once, in any order within the window;
// older ones refused; a jump clears what it passes.
func TestWindow(t *testing.T) {
	var w window
	take := func(seq uint64) bool {
		if !w.fresh(seq) {
			return false
		}
		w.mark(seq)
		return true
	}
	for _, s := range []uint64{1, 3, 2, 5, 4} {
		if !take(s) {
			t.Fatalf("%d refused", s)
		}
	}
	for _, s := range []uint64{1, 3, 5} {
		if take(s) {
			t.Fatalf("%d accepted twice", s)
		}
	}
	if !take(2000) || take(2000) {
		t.Fatal("2000: want once")
	}
	if take(2000 - windowLen) {
		t.Fatal("a number a window old accepted")
	}
	for _, s := range []uint64{2000 - windowLen + 1, 1999, 1500, 1100} {
		if !take(s) {
			t.Fatalf("%d (in the window, new) refused", s)
		}
	}
	// Bits set long ago (the blocks of 1041 and 1100, reused) do not hide new numbers.
	if !take(2000+64*3+1) || !take(2000+64*3+2) {
		t.Fatal("after a jump of blocks, new numbers refused")
	}
	if take(1999) || take(2000+64*3+1) {
		t.Fatal("marked numbers accepted again after a slide")
	}
}

// FuzzOpen: a datagram from anyone who reaches the port. open and body
// never panic, and what they accept is what seal makes of its header and
// payload, with records that fill it.
func FuzzOpen(f *testing.F) {
	o := testOpener(1472)
	f.Add(message(Update, 2, append(rec(1), rec(2)...), 1))
	f.Add(message(CopyData, 1, append(make([]byte, nonceLen), rec(3)...), 2))
	f.Add(message(Hello, 0, make([]byte, helloLen), 3))
	f.Add(message(CopyReq, 0, make([]byte, nonceLen), 4))
	f.Add(message(CopyEnd, 0, make([]byte, copyEndLen), 5))
	f.Add([]byte("TVS\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := o.open(b)
		if err != nil {
			return
		}
		s := sealer{id: h.KeyID, mac: clusterauth.NewMAC(secret(1))}
		again := s.seal(append(make([]byte, Overhead), p...), h)
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, which seal would not make", b)
		}
		ends, err := body(h, p, fakeLen, nil)
		if err != nil {
			return
		}
		if (h.Type == Update || h.Type == CopyData) && (len(ends) != int(h.Count) || ends[len(ends)-1] != len(p)) {
			t.Fatalf("records %v do not fill %d bytes as %d", ends, len(p), h.Count)
		}
	})
}

// FuzzBody: a payload behind a good tag (a peer's bug, or a key that
// leaked), which FuzzOpen's mutations rarely reach past the tag. body never
// panics or reads past the payload, and what it accepts is its type's shape.
func FuzzBody(f *testing.F) {
	f.Add(uint8(Update), uint16(2), append(rec(1), rec(2)...))
	f.Add(uint8(CopyData), uint16(1), append(make([]byte, nonceLen), rec(3)...))
	f.Add(uint8(Hello), uint16(0), make([]byte, helloLen))
	f.Add(uint8(CopyEnd), uint16(0), make([]byte, copyEndLen))
	f.Add(uint8(Update), uint16(3), []byte{2, 0, 9})
	f.Fuzz(func(t *testing.T, typ uint8, count uint16, p []byte) {
		h := Header{Type: Type(typ), Count: count}
		ends, err := body(h, p, fakeLen, nil)
		if err != nil {
			return
		}
		switch h.Type {
		case Update, CopyData:
			start := 0
			if h.Type == CopyData {
				start = nonceLen
			}
			if len(ends) != int(count) || ends[len(ends)-1] != len(p) {
				t.Fatalf("records %v do not fill %d bytes as %d", ends, len(p), count)
			}
			for _, end := range ends {
				if n, err := fakeLen(p[start:end]); err != nil || n != end-start {
					t.Fatalf("record %x accepted", p[start:end])
				}
				start = end
			}
		case Hello, CopyReq, CopyEnd:
			if count != 0 || len(p) != map[Type]int{Hello: helloLen, CopyReq: nonceLen, CopyEnd: copyEndLen}[h.Type] {
				t.Fatalf("%d: %d records, %d bytes accepted", typ, count, len(p))
			}
		default:
			t.Fatalf("type %d accepted", typ)
		}
	})
}
