// Package synproxy is tapvs's SYN proxy: stateless SYN cookies in Alibaba
// LVS's layout, the TCP options of the proxied handshake, and, once the
// real server has answered, the connection's rewriter (tcprw.Rewriter: its
// sequence numbers, SACK blocks, timestamps and window scale), which State
// fixes and publishes and every packet is translated through.
//
// The flow (DESIGN §3): a client's SYN is answered with a SYN-ACK whose ISN
// is a cookie, and nothing is remembered. A client ACK whose ack-1 is a valid
// cookie proves the handshake: only then is a connection made and a SYN sent
// to the real server with the client's ISN and options. The real server's
// SYN-ACK fixes the difference between its ISN and the cookie; from then on
// every packet is translated so that neither end sees a foreign number.
package synproxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dchest/siphash"

	"github.com/tapvs/tapvs/wire"
)

// MSSTable is LVS's list of MSS values an IPv4 cookie can carry (4 bits
// of index).
var MSSTable = [...]uint16{64, 256, 512, 536, 1024, 1280, 1440, 1452, 1460, 4312}

// MSSTable6 is the list for IPv6 flows. IPv6's header is 20 bytes longer,
// so the same MTU leaves an MSS 20 smaller (RFC 8200 8.3: MTU - 60), and
// with the IPv4 table every common IPv6 MSS would round down a step: 1440
// (Ethernet) to 1280, 1220 (IPv6's minimum MTU) to 1024. As Linux keeps a
// table per family (net/ipv4/syncookies.c, net/ipv6/syncookies.c), the
// MTU-derived entries here are IPv4's less 20 (1432 PPPoE, 1440 Ethernet,
// 4292), with 1220 (the 1280 minimum MTU), 1420 (1480: IPv6 in IPv4
// tunnels) and 8940 (9000 jumbo frames) from Linux's; the small ones stay
// so a client asking for little is never given more. A cookie's index is
// looked up in the table of its flow's family, which Make and Check agree
// on (the flow's addresses), so the index bits are the same as IPv4's.
var MSSTable6 = [...]uint16{64, 256, 512, 536, 1024, 1220, 1420, 1432, 1440, 4292, 8940}

// Options are the client's SYN options a cookie carries.
type Options struct {
	MSS    uint16 // rounded down to an entry of the flow's table (MSSTable, MSSTable6)
	WScale int8   // -1: the client did not offer window scaling
	SACK   bool
	TS     bool
}

const (
	cookieBits = 24
	cookieMask = 1<<cookieBits - 1
	maxAge     = 4 // minutes a cookie stays valid, as LVS and Linux
	noWScale   = 0xf
)

type keys struct{ k [2]sipKey }

// sipKey is one SipHash key, its two halves.
type sipKey struct{ k0, k1 uint64 }

// Cookies makes and checks SYN cookies:
//
//	cookie = H(s,d,sp,dp,0,k0) + client_isn + (count<<24) +
//	         ((H(s,d,sp,dp,count,k1) + data) & 0xFFFFFF)
//
// with count the minute, H SipHash-2-4 under keys that change every
// rotateMinutes, and data: bits 12-15 the MSS index, 16-19 the client's
// window scale (15: none), 20 timestamps, 21 SACK. The low 12 bits of data
// are zero, so a forged or stale cookie is caught by them as well as by its
// age.
//
// The keys are drawn at random (NewCookies), or, for a cluster, derived
// from a secret the instances share (NewSharedCookies): then the instance
// a client's ACK reaches checks the cookie another made, and a handshake
// outlives the instance that answered its SYN.
type Cookies struct {
	cur, prev atomic.Pointer[keys]
	made      atomic.Uint32 // the minute the current keys were made
	shared    []byte        // the cluster's secret; nil: random keys
	// Minute returns the current minute counter; tests replace it.
	Minute func() uint32
}

// rotateMinutes is how long one set of keys makes cookies. A cookie lives
// maxAge minutes, far less, so the previous keys (which Check still tries)
// cover every cookie alive at a rotation.
const rotateMinutes = 30

// NewCookies returns a cookie jar with fresh random keys.
func NewCookies() *Cookies {
	c := &Cookies{Minute: wallMinute}
	c.Rotate()
	c.prev.Store(c.cur.Load())
	return c
}

// NewSharedCookies returns a cookie jar whose keys derive from secret and
// the half hour of the wall clock (HMAC-SHA256 over a label and the
// period's number): every jar with the same secret makes and checks the
// same cookies, as long as the clocks agree to within a minute or so (the
// minute counter is in the cookie already). The secret is not used
// directly, so the keys reveal nothing of it.
func NewSharedCookies(secret []byte) *Cookies {
	c := &Cookies{Minute: wallMinute, shared: append([]byte(nil), secret...)}
	c.Rotate()
	return c
}

func wallMinute() uint32 { return uint32(time.Now().Unix() / 60) }

// Due reports whether the keys are due to rotate: random keys
// rotateMinutes after they were drawn, shared ones when the wall clock's
// half hour has changed (at the same moment on every instance).
func (c *Cookies) Due() bool {
	now, made := c.Minute(), c.made.Load()
	if c.shared != nil {
		return now/rotateMinutes != made/rotateMinutes
	}
	return now-made >= rotateMinutes
}

// Rotate replaces the keys: random keys are drawn anew, shared ones
// derived for the current half hour. Cookies made under the previous keys
// stay valid until the next rotation, so rotating no more often than every
// maxAge minutes never refuses a live handshake.
func (c *Cookies) Rotate() {
	now := c.Minute()
	if c.shared != nil {
		p := now / rotateMinutes
		// The previous period's keys too, even at the start: an instance
		// whose clock is a little behind still makes cookies under them.
		c.prev.Store(deriveKeys(c.shared, p-1))
		c.cur.Store(deriveKeys(c.shared, p))
		c.made.Store(now)
		return
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("synproxy: no randomness for cookie keys: " + err.Error())
	}
	if old := c.cur.Load(); old != nil {
		c.prev.Store(old)
	}
	c.cur.Store(keysOf(&b))
	c.made.Store(now)
}

// cookieLabel separates the cookie keys' derivation from any other use of
// the cluster's secret.
const cookieLabel = "tapvs synproxy cookie keys v1"

// deriveKeys is the keys of period p under secret.
func deriveKeys(secret []byte, p uint32) *keys {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(cookieLabel))
	m.Write(binary.BigEndian.AppendUint32(nil, p))
	return keysOf((*[32]byte)(m.Sum(nil)))
}

func keysOf(b *[32]byte) *keys {
	k := &keys{}
	for i := range k.k {
		k.k[i] = sipKey{binary.LittleEndian.Uint64(b[16*i:]), binary.LittleEndian.Uint64(b[16*i+8:])}
	}
	return k
}

// Flow is what a cookie is bound to: the client's addresses and ports as the
// client sends them (client -> VIP), addresses in 16-byte form (IPv4 as
// ::ffff:a.b.c.d). All 16 bytes are hashed whatever the family.
type Flow struct {
	Src, Dst     [16]byte
	Sport, Dport uint16
}

// MSSTableOf is the MSS table of f's family: MSSTable when both addresses
// are IPv4 (as Segment.Write decides), MSSTable6 otherwise.
func MSSTableOf(f *Flow) []uint16 {
	if wire.Is4(&f.Src) && wire.Is4(&f.Dst) {
		return MSSTable[:]
	}
	return MSSTable6[:]
}

// The message a cookie's hash is over: the addresses, the ports, the
// count (or 0).
const (
	hashMsgSrc   = 0
	hashMsgDst   = 16
	hashMsgSport = 32
	hashMsgDport = 34
	hashMsgCount = 36
	hashMsgLen   = 40
)

func (k *keys) hash(f *Flow, count uint32, i int) uint32 {
	var m [hashMsgLen]byte
	copy(m[hashMsgSrc:hashMsgDst], f.Src[:])
	copy(m[hashMsgDst:hashMsgSport], f.Dst[:])
	binary.LittleEndian.PutUint16(m[hashMsgSport:], f.Sport)
	binary.LittleEndian.PutUint16(m[hashMsgDport:], f.Dport)
	binary.LittleEndian.PutUint32(m[hashMsgCount:], count)
	key := &k.k[i]
	return uint32(siphash.Hash(key.k0, key.k1, m[:]))
}

// Make returns the cookie for a SYN with initial sequence number isn, and
// the options as they will be remembered (MSS rounded down to the table).
func (c *Cookies) Make(f *Flow, isn uint32, o Options) (uint32, Options) {
	table := MSSTableOf(f)
	idx := 0
	for i, m := range table {
		if m <= o.MSS {
			idx = i
		}
	}
	o.MSS = table[idx]
	ws := uint32(noWScale)
	if o.WScale >= 0 {
		o.WScale = min(o.WScale, 14)
		ws = uint32(o.WScale)
	}
	data := uint32(idx)<<12 | ws<<16
	if o.TS {
		data |= 1 << 20
	}
	if o.SACK {
		data |= 1 << 21
	}
	k := c.cur.Load()
	count := c.Minute()
	return k.hash(f, 0, 0) + isn + count<<cookieBits + (k.hash(f, count, 1)+data)&cookieMask, o
}

// Check validates the cookie of an ACK completing a handshake (cookie is the
// ACK's ack-1, isn its seq-1) and returns the options it carried.
func (c *Cookies) Check(f *Flow, isn, cookie uint32) (Options, bool) {
	count := c.Minute()
	table := MSSTableOf(f)
	for _, k := range [2]*keys{c.cur.Load(), c.prev.Load()} {
		if o, ok := k.check(f, isn, cookie, count, table); ok {
			return o, true
		}
	}
	return Options{}, false
}

func (k *keys) check(f *Flow, isn, cookie, count uint32, table []uint16) (Options, bool) {
	v := cookie - k.hash(f, 0, 0) - isn
	diff := (count - v>>cookieBits) & (1<<(32-cookieBits) - 1)
	if diff >= maxAge {
		return Options{}, false
	}
	data := (v - k.hash(f, count-diff, 1)) & cookieMask
	idx, ws := data>>12&0xf, int8(data>>16&0xf)
	if data&0xfff != 0 || data>>22 != 0 || int(idx) >= len(table) || ws != noWScale && ws > 14 {
		return Options{}, false
	}
	o := Options{MSS: table[idx], WScale: ws, SACK: data&(1<<21) != 0, TS: data&(1<<20) != 0}
	if ws == noWScale {
		o.WScale = -1
	}
	return o, true
}

// KeysLen is the length of Keys' encoding.
const KeysLen = 2*32 + 4

// Keys encodes the jar's random keys (current, previous, the minute they
// were made) for a successor process (tapvs run --takeover), so that a
// handshake whose SYN-ACK this process sent completes on the next; nil for
// shared keys, which the successor derives itself.
func (c *Cookies) Keys() []byte {
	if c.shared != nil {
		return nil
	}
	b := make([]byte, 0, KeysLen)
	for _, k := range [2]*keys{c.cur.Load(), c.prev.Load()} {
		for _, s := range k.k {
			b = binary.LittleEndian.AppendUint64(b, s.k0)
			b = binary.LittleEndian.AppendUint64(b, s.k1)
		}
	}
	return binary.BigEndian.AppendUint32(b, c.made.Load())
}

// AdoptKeys replaces the jar's random keys with a predecessor's (Keys). A
// jar with shared keys refuses them: its keys come from the cluster's
// secret, whatever the predecessor had.
func (c *Cookies) AdoptKeys(b []byte) error {
	if c.shared != nil {
		return errors.New("synproxy: cookie keys derive from the cluster's secret; a predecessor's are not adopted")
	}
	if len(b) != KeysLen {
		return fmt.Errorf("synproxy: cookie keys of %d bytes, want %d", len(b), KeysLen)
	}
	cur, prev := keysOf((*[32]byte)(b[:32])), keysOf((*[32]byte)(b[32:64]))
	c.prev.Store(prev)
	c.cur.Store(cur)
	c.made.Store(binary.BigEndian.Uint32(b[64:]))
	return nil
}
