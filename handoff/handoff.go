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
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapvs/tapvs/clusterauth"
	"github.com/tapvs/tapvs/tun"
)

// The envelope: magic "TVH", version 1, 4 bytes of mark (big-endian; zero
// but for a datagram reassembled from fragments: nat.FragMark, MarkBits
// bits, the others zero, so that it leaves the instance that takes it
// cut as the fragments came; an instance older than the mark refuses a
// marked frame as of another version), the tag, then the payload: the
// frame's virtio-net header (tun.VNetHdrLen bytes, zeros for a plain frame)
// and the Ethernet frame. The tag covers the mark.
const (
	version   = 1
	headerLen = 8
	tagLen    = clusterauth.TagLen
	// Overhead is the envelope's bytes before the payload.
	Overhead = headerLen + tagLen
	// MinFrame and MaxFrame bound a payload: a virtio-net header and an
	// Ethernet header, and what one UDP datagram over IPv4 holds (65507
	// bytes) less the envelope: a TSO super-frame of 64 KiB fits.
	MinFrame = tun.VNetHdrLen + 14
	MaxFrame = 65507 - Overhead
	// KeyLen is the shared key's length.
	KeyLen = clusterauth.KeyLen
	// MarkBits is how many low bits of the mark may be set
	// (nat.MarkBits: handoff does not import nat).
	MarkBits = 17
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

// Sealer seals envelopes under a key, for one goroutine at a time.
type Sealer struct{ mac clusterauth.MAC }

// NewSealer makes a Sealer under key.
func NewSealer(key []byte) *Sealer { return &Sealer{mac: *clusterauth.NewMAC(key)} }

// tag computes the tag of datagram d (header and frame; its tag bytes are
// not read).
func (s *Sealer) tag(d []byte) []byte { return s.mac.Tag(d[:headerLen], d[Overhead:]) }

// Seal writes frame's envelope with mark into dst (at least
// Overhead+len(frame) bytes) and returns the datagram.
func (s *Sealer) Seal(dst []byte, frame []byte, mark uint32) []byte {
	n := Overhead + len(frame)
	d := dst[:n]
	copy(d, magic[:])
	d[3] = version
	binary.BigEndian.PutUint32(d[4:headerLen], mark)
	copy(d[Overhead:], frame)
	copy(d[headerLen:Overhead], s.tag(d))
	return d
}

// Open checks a datagram and returns the frame in it (a slice of b) and
// its mark. Every length is checked before a byte is read, and the tag
// before the frame is returned.
func (s *Sealer) Open(b []byte) ([]byte, uint32, error) {
	if len(b) < Overhead+MinFrame {
		return nil, 0, ErrShort
	}
	if len(b) > Overhead+MaxFrame {
		return nil, 0, ErrLong
	}
	if [3]byte(b[:3]) != magic {
		return nil, 0, ErrMagic
	}
	mark := binary.BigEndian.Uint32(b[4:headerLen])
	if b[3] != version || mark>>MarkBits != 0 {
		return nil, 0, ErrVersion
	}
	if !s.mac.Check(b[:headerLen], b[Overhead:], b[headerLen:Overhead]) {
		return nil, 0, ErrTag
	}
	return b[Overhead:], mark, nil
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
	deliver func(frame []byte, mark uint32)
	sends   sync.Pool // *sendBuf, one per concurrent Send
	bucket  clusterauth.Bucket

	sent, sendErrors, rateLimited, tooBig, received atomic.Uint64
	refused                                         *clusterauth.Refusals
	notPeer                                         atomic.Uint64 // datagrams from an address not among the peers
	done                                            chan struct{}
}

// Start binds cfg.Listen and delivers every frame received whose tag
// checks to deliver, with its mark, from one goroutine, in a buffer reused
// once deliver returns.
func Start(cfg Config, deliver func(frame []byte, mark uint32), log *slog.Logger) (*Handoff, error) {
	if len(cfg.Key) != KeyLen {
		return nil, fmt.Errorf("handoff: key of %d bytes, want %d", len(cfg.Key), KeyLen)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Listen))
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", cfg.Listen, err)
	}
	h := &Handoff{cfg: cfg, conn: conn, log: log, deliver: deliver, done: make(chan struct{}),
		refused: clusterauth.NewRefusals([]error{ErrShort, ErrLong, ErrMagic, ErrVersion, ErrTag}, []string{"short", "long", "magic", "version", "tag"})}
	h.sends.New = func() any { return &sendBuf{Sealer: *NewSealer(cfg.Key)} }
	h.bucket.Init(cfg.Rate, time.Now())
	go h.receive()
	log.Info("handoff: listening", "listen", cfg.Listen, "peers", len(cfg.Peers), "rate", cfg.Rate)
	return h, nil
}

// Send hands payload (a virtio-net header and a frame) with its mark to
// every peer. It is called by the data path's readers, concurrently; it
// does not block or allocate.
func (h *Handoff) Send(frame []byte, mark uint32) {
	if len(frame) < MinFrame || len(frame) > MaxFrame {
		h.tooBig.Add(1)
		return
	}
	if !h.bucket.Take(time.Now()) {
		h.rateLimited.Add(1)
		return
	}
	sb := h.sends.Get().(*sendBuf)
	d := sb.Seal(sb.buf[:], frame, mark)
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
	clusterauth.ReadLoop(h.conn, buf, func(b []byte, from netip.AddrPort) {
		if clusterauth.PeerIndex(h.cfg.Peers, from) < 0 {
			// Peers send from their listen address: anything else is
			// refused before its tag costs a hash.
			h.notPeer.Add(1)
			return
		}
		frame, mark, err := sealer.Open(b)
		if err != nil {
			h.refused.Count(err)
			return
		}
		h.received.Add(1)
		h.deliver(frame, mark)
	})
}

// Stats reads the counters.
func (h *Handoff) Stats() Stats {
	s := Stats{Sent: h.sent.Load(), SendErrors: h.sendErrors.Load(), RateLimited: h.rateLimited.Load(),
		TooBig: h.tooBig.Load(), Received: h.received.Load(), Refused: h.refused.Load()}
	s.Refused["not_peer"] = h.notPeer.Load()
	return s
}

// Close stops receiving.
func (h *Handoff) Close() {
	h.conn.Close()
	<-h.done
}
