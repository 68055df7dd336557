package synproxy

import (
	"bytes"
	"testing"
)

// sharedAt is a jar of secret's keys whose clock reads *minute, rotated
// for it.
func sharedAt(secret string, minute *uint32) *Cookies {
	c := NewSharedCookies([]byte(secret))
	c.Minute = func() uint32 { return *minute }
	c.Rotate()
	return c
}

// Two instances with the same secret check each other's cookies, with the
// options they carry; an instance with another secret refuses them.
func TestSharedCookiesCheckAcrossJars(t *testing.T) {
	m := uint32(29_000_010)
	a, b, other := sharedAt("cluster", &m), sharedAt("cluster", &m), sharedAt("another", &m)
	in := Options{MSS: 1460, WScale: 7, SACK: true, TS: true}
	cookie, want := a.Make(&flow, 1234, in)
	if got, ok := b.Check(&flow, 1234, cookie); !ok || got != want {
		t.Fatalf("the peer with the same secret: %+v, %v; want %+v, true", got, ok, want)
	}
	if _, ok := other.Check(&flow, 1234, cookie); ok {
		t.Fatal("a jar with another secret accepted the cookie")
	}
	// Random keys are not shared.
	if _, ok := NewCookies().Check(&flow, 1234, cookie); ok {
		t.Fatal("a jar with random keys accepted a shared cookie")
	}
}

// The shared keys change with the wall clock's half hour, on every
// instance at once: a cookie made in the last minute of one period checks
// on an instance already in the next (its previous keys), including one
// that started in the next period and never rotated; a cookie made in
// the next period on an instance whose clock is still in the last one is
// refused (its age), never opened under wrong keys.
func TestSharedCookiesAcrossAPeriod(t *testing.T) {
	base := uint32(29_000_010) / rotateMinutes * rotateMinutes // a period's first minute
	m1, m2 := base-1, base
	behind, ahead := sharedAt("cluster", &m1), sharedAt("cluster", &m2)
	late, _ := behind.Make(&flow, 7, Options{MSS: 1460, WScale: -1})
	if _, ok := ahead.Check(&flow, 7, late); !ok {
		t.Fatal("a cookie from the period's last minute is refused by an instance in the next period")
	}
	if behind.Due() {
		t.Fatal("due within its period")
	}
	m1 = base
	if !behind.Due() {
		t.Fatal("not due at the next period's first minute")
	}
	behind.Rotate()
	if !bytes.Equal(keyBytes(behind.cur.Load()), keyBytes(ahead.cur.Load())) || !bytes.Equal(keyBytes(behind.prev.Load()), keyBytes(ahead.prev.Load())) {
		t.Fatal("two instances rotated into the same period hold different keys")
	}
	if _, ok := behind.Check(&flow, 7, late); !ok {
		t.Fatal("a cookie from the last period is refused after the rotation")
	}
	if keyBytes(ahead.cur.Load()) == nil || bytes.Equal(keyBytes(ahead.cur.Load()), keyBytes(ahead.prev.Load())) {
		t.Fatal("a period's keys equal the last period's")
	}
}

// Random keys rotate rotateMinutes after they were drawn.
func TestRandomCookiesDue(t *testing.T) {
	c := NewCookies()
	m := c.Minute()
	c.Minute = func() uint32 { return m }
	m += rotateMinutes - 1
	if c.Due() {
		t.Fatalf("due %d minutes after drawing", rotateMinutes-1)
	}
	m++
	if !c.Due() {
		t.Fatalf("not due %d minutes after drawing", rotateMinutes)
	}
	c.Rotate()
	if c.Due() {
		t.Fatal("due right after rotating")
	}
}

// The derived keys are not the secret, and depend on the period.
func TestDeriveKeys(t *testing.T) {
	s := []byte("0123456789abcdef0123456789abcdef")
	k0, k1 := keyBytes(deriveKeys(s, 0)), keyBytes(deriveKeys(s, 1))
	if bytes.Equal(k0, k1) || bytes.Equal(k0, s) {
		t.Fatalf("keys %x, %x from secret %x", k0, k1, s)
	}
	if !bytes.Equal(k0, keyBytes(deriveKeys(s, 0))) {
		t.Fatal("the same period derived two sets of keys")
	}
}

func keyBytes(k *keys) []byte {
	if k == nil {
		return nil
	}
	var b []byte
	for _, s := range k.k {
		for _, v := range []uint64{s.k0, s.k1} {
			for i := range 8 {
				b = append(b, byte(v>>(8*i)))
			}
		}
	}
	return b
}

// A successor process adopts its predecessor's random keys (tapvs run
// --takeover): the cookies made under the current and the previous keys
// check in the successor's jar. Shared keys are not handed over (nil), and
// a shared jar refuses a predecessor's; a wrong length is refused and
// leaves the keys as they were.
func TestKeysHandedToASuccessor(t *testing.T) {
	old := NewCookies()
	before, _ := old.Make(&flow, 1, Options{MSS: 1460, WScale: -1})
	old.Rotate()
	after, _ := old.Make(&flow, 2, Options{MSS: 1460, WScale: -1})
	succ := NewCookies()
	if _, ok := succ.Check(&flow, 2, after); ok {
		t.Fatal("a fresh jar accepts another's cookie")
	}
	k := old.Keys()
	if len(k) != KeysLen {
		t.Fatalf("%d bytes of keys, want %d", len(k), KeysLen)
	}
	if err := succ.AdoptKeys(k[:KeysLen-1]); err == nil {
		t.Fatal("a short encoding adopted")
	}
	if err := succ.AdoptKeys(k); err != nil {
		t.Fatal(err)
	}
	if _, ok := succ.Check(&flow, 2, after); !ok {
		t.Fatal("the successor refuses a cookie made under the current keys")
	}
	if _, ok := succ.Check(&flow, 1, before); !ok {
		t.Fatal("the successor refuses a cookie made under the previous keys")
	}
	if succ.made.Load() != old.made.Load() || succ.Due() != old.Due() {
		t.Fatal("the successor's rotation clock differs from its predecessor's")
	}
	shared := NewSharedCookies([]byte("cluster"))
	if shared.Keys() != nil {
		t.Fatal("shared keys handed over")
	}
	if err := shared.AdoptKeys(k); err == nil {
		t.Fatal("a shared jar adopted a predecessor's random keys")
	}
}
