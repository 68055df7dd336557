// Package takeover hands a running tapvs's TAP queues and connection table
// to a new tapvs process over a unix socket (tapvs run --takeover), so that
// a restart keeps the interfaces and the connections through them.
//
// The protocol, one SOCK_SEQPACKET message per step (type byte, then the
// body; big-endian; every message at most MaxMessage bytes):
//
//	new → old  HELLO    "tapvs-takeover" | min u16 | max u16    (protocol versions the new one speaks)
//	old → new  ACCEPT   version u16                              or REFUSE  reason (text)
//	new → old  READY
//	           (old: stops its readers between batches and its timers: the freeze)
//	old → new  QUEUES   count u8 | count × (side u8 | queue u8 | vnethdr u8 | mac [6] | namelen u8 | name)
//	                    with the count descriptors attached (SCM_RIGHTS), in the same order
//	old → new  RECORDS  (len u16 | record)…                     zero or more messages
//	old → new  NEXTHOPS (address [16] | mac [6])…               the real servers' next hops; zero or more messages
//	old → new  KEYS     keys                                     version 2 on: SYNPROXY's cookie keys (at most MaxKeys
//	                                                             bytes, opaque here); none when they need not travel
//	old → new  END      records u32 | table u8 (1: the table was exported, 0: this build cannot)
//	new → old  DONE                                              or ABORT  reason (text)
//	           (old: exits 0 without its teardown; new: starts the rest once the old one is gone)
//
// Anything else, or a message out of order, ends the session. Before DONE
// the old process owns the queues: if the new one refuses, aborts, dies or
// goes quiet, the old one unfreezes and serves on (a new one that goes
// quiet after QUEUES is killed first, so that two never read one queue).
// If the old one dies before END, the new one gives up what it got and
// starts cold.
package takeover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The protocol versions this build speaks.
//
// Version 2 adds KEYS: a successor that got none (version 1) answers the
// handshakes its predecessor's cookies began with bad_cookie.
const (
	MinVersion = 1
	MaxVersion = 2
)

// keysVersion is the first version with KEYS.
const keysVersion = 2

// MaxKeys bounds a KEYS message's body.
const MaxKeys = 256

// MaxMessage bounds every message either side accepts.
const MaxMessage = 64 << 10

// MaxQueues bounds the descriptors one QUEUES message may carry (the
// kernel's SCM_MAX_FD is 253).
const MaxQueues = 128

const magic = "tapvs-takeover"

// Message types.
const (
	msgHello byte = iota + 1
	msgAccept
	msgRefuse
	msgReady
	msgQueues
	msgRecords
	msgEnd
	msgDone
	msgAbort
	msgNextHops
	msgKeys
)

var msgNames = [...]string{msgHello: "HELLO", msgAccept: "ACCEPT", msgRefuse: "REFUSE", msgReady: "READY",
	msgQueues: "QUEUES", msgRecords: "RECORDS", msgEnd: "END", msgDone: "DONE", msgAbort: "ABORT", msgNextHops: "NEXTHOPS", msgKeys: "KEYS"}

func msgName(t byte) string {
	if int(t) < len(msgNames) && msgNames[t] != "" {
		return msgNames[t]
	}
	return fmt.Sprintf("message type %d", t)
}

// Queue describes one TAP queue handed over.
type Queue struct {
	Side       uint8 // 0 client, 1 server
	Index      uint8 // the queue's place on its side
	VNetHdrLen uint8 // 0 or tun.VNetHdrLen
	MAC        [6]byte
	Name       string // the interface's name
}

// ErrBadMessage is the error for a message that is malformed or out of place.
var ErrBadMessage = errors.New("bad takeover message")

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadMessage, fmt.Sprintf(format, a...))
}

func appendHello(b []byte, lo, hi uint16) []byte {
	b = append(b, msgHello)
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, lo)
	return binary.BigEndian.AppendUint16(b, hi)
}

func parseHello(m []byte) (lo, hi uint16, err error) {
	if len(m) != 1+len(magic)+4 || m[0] != msgHello || string(m[1:1+len(magic)]) != magic {
		return 0, 0, bad("not a HELLO from tapvs run --takeover (%d bytes)", len(m))
	}
	b := m[1+len(magic):]
	lo, hi = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
	if lo > hi {
		return 0, 0, bad("HELLO: versions %d..%d", lo, hi)
	}
	return lo, hi, nil
}

// appendQueues encodes QUEUES' body.
func appendQueues(b []byte, qs []Queue) ([]byte, error) {
	if len(qs) == 0 || len(qs) > MaxQueues {
		return nil, fmt.Errorf("takeover: %d queues: 1 to %d", len(qs), MaxQueues)
	}
	b = append(b, msgQueues, byte(len(qs)))
	for _, q := range qs {
		if len(q.Name) == 0 || len(q.Name) > 15 {
			return nil, fmt.Errorf("takeover: interface name %q", q.Name)
		}
		b = append(b, q.Side, q.Index, q.VNetHdrLen)
		b = append(b, q.MAC[:]...)
		b = append(b, byte(len(q.Name)))
		b = append(b, q.Name...)
	}
	return b, nil
}

// parseQueues decodes QUEUES, checking every field; fds is how many
// descriptors came with it.
func parseQueues(m []byte, fds int) ([]Queue, error) {
	if len(m) < 2 || m[0] != msgQueues {
		return nil, bad("expected QUEUES, got %s", msgName(first(m)))
	}
	n := int(m[1])
	if n == 0 || n > MaxQueues {
		return nil, bad("QUEUES: count %d", n)
	}
	if n != fds {
		return nil, bad("QUEUES: %d queues described, %d descriptors attached", n, fds)
	}
	b := m[2:]
	qs := make([]Queue, 0, n)
	for i := range n {
		if len(b) < 10 {
			return nil, bad("QUEUES: queue %d truncated", i)
		}
		q := Queue{Side: b[0], Index: b[1], VNetHdrLen: b[2], MAC: [6]byte(b[3:9])}
		nl := int(b[9])
		b = b[10:]
		if nl == 0 || nl > 15 || len(b) < nl {
			return nil, bad("QUEUES: queue %d: name length %d", i, nl)
		}
		q.Name, b = string(b[:nl]), b[nl:]
		if q.Side > 1 {
			return nil, bad("QUEUES: queue %d: side %d", i, q.Side)
		}
		if q.VNetHdrLen != 0 && q.VNetHdrLen != 10 {
			return nil, bad("QUEUES: queue %d: vnet header length %d", i, q.VNetHdrLen)
		}
		qs = append(qs, q)
	}
	if len(b) != 0 {
		return nil, bad("QUEUES: %d bytes after the last queue", len(b))
	}
	return qs, nil
}

// parseRecords calls each for every record of a RECORDS message.
func parseRecords(m []byte, maxLen int, each func([]byte) error) error {
	b := m[1:]
	for len(b) > 0 {
		if len(b) < 2 {
			return bad("RECORDS: a truncated length")
		}
		n := int(binary.BigEndian.Uint16(b))
		if n == 0 || n > maxLen || len(b)-2 < n {
			return bad("RECORDS: record length %d (at most %d, %d bytes left)", n, maxLen, len(b)-2)
		}
		if err := each(b[2 : 2+n]); err != nil {
			return err
		}
		b = b[2+n:]
	}
	return nil
}

func first(m []byte) byte {
	if len(m) == 0 {
		return 0
	}
	return m[0]
}

// NextHop is a real server's next-hop MAC as the old process resolved it:
// the successor starts with it instead of resolving again (a connection's
// first segment to the server would wait for ARP, and the client's
// retransmission takes a second).
type NextHop struct {
	Addr netip.Addr
	MAC  [6]byte
}

const nextHopLen = 16 + 6

// MaxNextHops bounds the next hops a session carries.
const MaxNextHops = 1 << 16

// parseNextHops calls each for every entry of a NEXTHOPS message.
func parseNextHops(m []byte, each func(NextHop)) error {
	b := m[1:]
	if len(b) == 0 || len(b)%nextHopLen != 0 {
		return bad("NEXTHOPS: %d bytes, not a multiple of %d", len(b), nextHopLen)
	}
	for ; len(b) > 0; b = b[nextHopLen:] {
		a := netip.AddrFrom16([16]byte(b[:16])).Unmap()
		if !a.IsGlobalUnicast() {
			return bad("NEXTHOPS: address %s", a)
		}
		each(NextHop{Addr: a, MAC: [6]byte(b[16:22])})
	}
	return nil
}

// parseKeys decodes KEYS (a copy of its body) in protocol version v.
func parseKeys(m []byte, v uint16) ([]byte, error) {
	switch {
	case len(m) == 0 || m[0] != msgKeys:
		return nil, bad("expected KEYS, got %s", msgName(first(m)))
	case v < keysVersion:
		return nil, bad("KEYS in protocol version %d", v)
	case len(m) < 2 || len(m)-1 > MaxKeys:
		return nil, bad("KEYS: %d bytes (1 to %d)", len(m)-1, MaxKeys)
	}
	return append([]byte(nil), m[1:]...), nil
}
