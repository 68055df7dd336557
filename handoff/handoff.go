// Package handoff passes client frames between the instances of a tapvs
// cluster: a segment that reaches an instance holding no connection for it
// (the ECMP router moved its flow: a drain, a dead instance, a rehash when
// the next hops change) is sent to every other instance, and the one that
// holds the connection continues it. Katran and Beamer call this daisy
// chaining; LVS has nothing like it, and loses such connections.
//
// A frame travels in a UDP datagram between the instances' own addresses,
// on the kernel stacks of their namespaces (where their BGP sessions are),
// behind an 8-byte header and a 16-byte HMAC-SHA256 tag under the
// cluster's shared key, with its virtio-net header (a TSO super-frame
// travels whole, and the receiving TAP segments it). A datagram from an
// address that is not a peer's, or whose tag does not check, is counted
// and dropped before any byte of its frame is read. A frame received is
// only ever matched against the connections its instance holds
// (nat.Frame.HandedOff): it opens none and is never handed on, so a frame
// crosses at most one hop.
package handoff

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/tun"
)

// The envelope: magic "TVH", version 1, 4 reserved bytes (zero), the tag,
// then the payload: the frame's virtio-net header (tun.VNetHdrLen bytes,
// zeros for a plain frame) and the Ethernet frame.
const (
	version   = 1
	headerLen = 8
	tagLen    = 16
	// Overhead is the envelope's bytes before the payload.
	Overhead = headerLen + tagLen
	// MinFrame and MaxFrame bound a payload: a virtio-net header and an
	// Ethernet header, and what one UDP datagram over IPv4 holds (65507
	// bytes) less the envelope: a TSO super-frame of 64 KiB fits.
	MinFrame = tun.VNetHdrLen + 14
	MaxFrame = 65507 - Overhead
	// KeyLen is the shared key's length.
	KeyLen = 32
)

var magic = [3]byte{'T', 'V', 'H'}

// Errors of Open, one per reason a datagram is refused.
var (
	ErrShort   = errors.New("handoff: shorter than the envelope and an Ethernet header")
	ErrLong    = errors.New("handoff: longer than a UDP datagram holds")
	ErrMagic   = errors.New("handoff: not a hand-off datagram (magic)")
	ErrVersion = errors.New("handoff: unknown version or reserved bits set")
	ErrTag     = errors.New("handoff: tag does not check (another key, or altered)")
)

// Sealer seals envelopes under a key: an HMAC and its scratch, for one
// goroutine at a time.
type Sealer struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewSealer makes a Sealer under key.
func NewSealer(key []byte) *Sealer { return &Sealer{mac: hmac.New(sha256.New, key)} }

// tag computes the tag of datagram d (header and frame; its tag bytes are
// not read).
func (s *Sealer) tag(d []byte) []byte {
	s.mac.Reset()
	s.mac.Write(d[:headerLen])
	s.mac.Write(d[Overhead:])
	return s.mac.Sum(s.sum[:0])[:tagLen]
}

// Seal writes frame's envelope into dst (at least Overhead+len(frame)
// bytes) and returns the datagram.
func (s *Sealer) Seal(dst []byte, frame []byte) []byte {
	n := Overhead + len(frame)
	d := dst[:n]
	copy(d, magic[:])
	d[3] = version
	clear(d[4:headerLen])
	copy(d[Overhead:], frame)
	copy(d[headerLen:Overhead], s.tag(d))
	return d
}

// Open checks a datagram and returns the frame in it (a slice of b). Every
// length is checked before a byte is read, and the tag before the frame is
// returned.
func (s *Sealer) Open(b []byte) ([]byte, error) {
	if len(b) < Overhead+MinFrame {
		return nil, ErrShort
	}
	if len(b) > Overhead+MaxFrame {
		return nil, ErrLong
	}
	if [3]byte(b[:3]) != magic {
		return nil, ErrMagic
	}
	if b[3] != version || binary.BigEndian.Uint32(b[4:8]) != 0 {
		return nil, ErrVersion
	}
	if !hmac.Equal(s.tag(b), b[headerLen:Overhead]) {
		return nil, ErrTag
	}
	return b[Overhead:], nil
}

// Config is the handoff: section, validated.
type Config struct {
	Listen netip.AddrPort   // this instance's UDP address
	Peers  []netip.AddrPort // the other instances'
	Key    []byte           // KeyLen bytes, the cluster's
	// Rate bounds the frames sent per second (each to every peer): a flood
	// of segments no instance holds costs the cluster at most this.
	Rate int
}

// Stats are the handoff's counters.
type Stats struct {
	Sent        uint64 // frames handed over (each to every peer)
	SendErrors  uint64 // datagrams the kernel refused
	RateLimited uint64 // frames not handed over: past Rate
	TooBig      uint64 // frames not handed over: past MaxFrame
	Received    uint64 // frames received and checked, given to the balancer
	Refused     map[string]uint64
}

// Handoff sends and receives frames.
type Handoff struct {
	cfg     Config
	conn    *net.UDPConn
	log     *slog.Logger
	deliver func([]byte)
	sends   sync.Pool // *sendBuf, one per concurrent Send
	bucket  bucket

	sent, sendErrors, rateLimited, tooBig, received atomic.Uint64
	refused                                         [5]atomic.Uint64 // by refusals' order
	notPeer                                         atomic.Uint64    // datagrams from an address not among the peers
	done                                            chan struct{}
}

var refusals = [5]error{ErrShort, ErrLong, ErrMagic, ErrVersion, ErrTag}

// Start binds cfg.Listen and delivers every frame received whose tag
// checks to deliver, from one goroutine, in a buffer reused once deliver
// returns.
func Start(cfg Config, deliver func(frame []byte), log *slog.Logger) (*Handoff, error) {
	if len(cfg.Key) != KeyLen {
		return nil, fmt.Errorf("handoff: key of %d bytes, want %d", len(cfg.Key), KeyLen)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Listen))
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", cfg.Listen, err)
	}
	h := &Handoff{cfg: cfg, conn: conn, log: log, deliver: deliver, done: make(chan struct{})}
	h.sends.New = func() any { return &sendBuf{Sealer: *NewSealer(cfg.Key)} }
	h.bucket.init(cfg.Rate)
	go h.receive()
	log.Info("handoff: listening", "listen", cfg.Listen, "peers", len(cfg.Peers), "rate", cfg.Rate)
	return h, nil
}

// Send hands payload (a virtio-net header and a frame) to every peer. It
// is called by the data path's readers, concurrently; it does not block or
// allocate.
func (h *Handoff) Send(frame []byte) {
	if len(frame) < MinFrame || len(frame) > MaxFrame {
		h.tooBig.Add(1)
		return
	}
	if !h.bucket.take(time.Now()) {
		h.rateLimited.Add(1)
		return
	}
	sb := h.sends.Get().(*sendBuf)
	d := sb.Seal(sb.buf[:], frame)
	for _, p := range h.cfg.Peers {
		if _, err := h.conn.WriteToUDPAddrPort(d, p); err != nil {
			h.sendErrors.Add(1)
		}
	}
	h.sends.Put(sb)
	h.sent.Add(1)
}

// sendBuf is one Send's sealer and datagram.
type sendBuf struct {
	Sealer
	buf [Overhead + MaxFrame]byte
}

func (h *Handoff) receive() {
	defer close(h.done)
	sealer := NewSealer(h.cfg.Key)
	buf := make([]byte, Overhead+MaxFrame+1) // one more: a longer datagram is seen as longer
	for {
		n, from, err := h.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !h.fromPeer(from) {
			// Peers send from their listen address: anything else is
			// refused before its tag costs a hash.
			h.notPeer.Add(1)
			continue
		}
		frame, err := sealer.Open(buf[:n])
		if err != nil {
			for i, r := range refusals {
				if err == r {
					h.refused[i].Add(1)
				}
			}
			continue
		}
		h.received.Add(1)
		h.deliver(frame)
	}
}

// fromPeer reports whether a datagram from addr came from a peer's listen
// address (an IPv4 one may arrive IPv4-mapped on a dual-stack socket).
func (h *Handoff) fromPeer(addr netip.AddrPort) bool {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	for _, p := range h.cfg.Peers {
		if p == addr {
			return true
		}
	}
	return false
}

// Stats reads the counters.
func (h *Handoff) Stats() Stats {
	s := Stats{Sent: h.sent.Load(), SendErrors: h.sendErrors.Load(), RateLimited: h.rateLimited.Load(),
		TooBig: h.tooBig.Load(), Received: h.received.Load(), Refused: map[string]uint64{}}
	for i, name := range []string{"short", "long", "magic", "version", "tag"} {
		s.Refused[name] = h.refused[i].Load()
	}
	s.Refused["not_peer"] = h.notPeer.Load()
	return s
}

// Close stops receiving.
func (h *Handoff) Close() {
	h.conn.Close()
	<-h.done
}

// bucket is a token bucket of Rate tokens a second, holding at most one
// second's worth: lock-free, as every reader takes from it.
type bucket struct {
	rate   int64
	tokens atomic.Int64
	last   atomic.Int64 // unix nanoseconds of the last refill
}

func (b *bucket) init(rate int) {
	b.rate = int64(rate)
	b.tokens.Store(b.rate)
	b.last.Store(time.Now().UnixNano())
}

func (b *bucket) take(now time.Time) bool {
	t := now.UnixNano()
	last := b.last.Load()
	if elapsed := t - last; elapsed >= int64(time.Millisecond) && b.last.CompareAndSwap(last, t) {
		add := elapsed * b.rate / int64(time.Second)
		for {
			cur := b.tokens.Load()
			next := min(cur+add, b.rate)
			if b.tokens.CompareAndSwap(cur, next) {
				break
			}
		}
	}
	if b.tokens.Add(-1) >= 0 {
		return true
	}
	b.tokens.Add(1)
	return false
}
