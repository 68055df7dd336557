package connsync

import (
	"encoding/binary"
	"errors"

	"github.com/tapvs/tapvs/clusterauth"
)

// The message: a 32-byte header, a 16-byte tag, the payload.
//
//	off size field
//	0   3    magic "TVS"
//	3   1    version (1)
//	4   1    type (UPDATE, HELLO, COPY_REQ, COPY_DATA, COPY_END)
//	5   1    key id
//	6   2    sender instance id
//	8   8    sender boot epoch (unix ns at start)
//	16  8    sequence number (per sender and epoch, from 1, +1 per message)
//	24  2    record count
//	26  2    payload length
//	28  4    reserved, 0
//	32  16   HMAC-SHA256(key, header ‖ payload)[:16]
//	48  …    payload
//
// Payloads: UPDATE holds records; COPY_DATA a copy's nonce (8) then
// records; HELLO the UPDATE datagrams the sender has sent this epoch (8);
// COPY_REQ a nonce (8); COPY_END the
// nonce, the COPY_DATA datagrams and the records of the copy (8+4+4).
// Integers are big-endian.
const (
	version   = 1
	headerLen = 32
	tagLen    = clusterauth.TagLen
	// Overhead is a message's bytes before its payload.
	Overhead = headerLen + tagLen
	// MaxDatagram bounds a message: what one UDP datagram over IPv4 holds.
	MaxDatagram = 65507

	helloLen   = 8
	nonceLen   = 8
	copyEndLen = nonceLen + 8
)

var magic = [3]byte{'T', 'V', 'S'}

// Type is a message's type.
type Type uint8

// The message types.
const (
	Update Type = 1 + iota
	Hello
	CopyReq
	CopyData
	CopyEnd
)

// Errors of Open and of the receiver, one per reason a datagram is
// refused; reasons names them for the counters.
var (
	ErrShort      = errors.New("connsync: shorter than its header and declared payload")
	ErrLong       = errors.New("connsync: longer than the largest datagram or its declared payload")
	ErrMagic      = errors.New("connsync: not a sync datagram (magic)")
	ErrVersion    = errors.New("connsync: unknown version or type, or reserved bits set")
	ErrKey        = errors.New("connsync: unknown key id")
	ErrTag        = errors.New("connsync: tag does not check (another key, or altered)")
	ErrReplay     = errors.New("connsync: sequence number seen already or left the window")
	ErrStaleEpoch = errors.New("connsync: boot epoch older than the sender's last")
	ErrNotPeer    = errors.New("connsync: source address or sender id not a peer's")
	ErrBadRecords = errors.New("connsync: payload does not parse as its type's (count, records, body)")
)

var refusals = [...]error{ErrShort, ErrLong, ErrMagic, ErrVersion, ErrKey, ErrTag, ErrReplay, ErrStaleEpoch, ErrNotPeer, ErrBadRecords}

// reasons are refusals' names, in their order.
var reasons = [len(refusals)]string{"short", "long", "magic", "version", "key", "tag", "replay", "stale_epoch", "not_peer", "bad_records"}

// Header is a message's header, decoded.
type Header struct {
	Type   Type
	KeyID  uint8
	Sender uint16
	Epoch  uint64
	Seq    uint64
	Count  uint16
}

// Key is one shared key and its id: two can be live while the key is
// rotated; the first of Config.Keys signs.
type Key struct {
	ID     uint8
	Secret []byte // clusterauth.KeyLen bytes
}

// sealer writes messages under one key, for one goroutine at a time.
type sealer struct {
	id  uint8
	mac *clusterauth.MAC
}

// seal fills d's header and tag for h and the payload already at
// d[Overhead:], and returns d.
func (s *sealer) seal(d []byte, h Header) []byte {
	copy(d, magic[:])
	d[3] = version
	d[4] = byte(h.Type)
	d[5] = s.id
	binary.BigEndian.PutUint16(d[6:], h.Sender)
	binary.BigEndian.PutUint64(d[8:], h.Epoch)
	binary.BigEndian.PutUint64(d[16:], h.Seq)
	binary.BigEndian.PutUint16(d[24:], h.Count)
	binary.BigEndian.PutUint16(d[26:], uint16(len(d)-Overhead))
	clear(d[28:headerLen])
	copy(d[headerLen:Overhead], s.mac.Tag(d[:headerLen], d[Overhead:]))
	return d
}

// opener checks messages under the live keys, for one goroutine at a time.
type opener struct {
	macs [256]*clusterauth.MAC // by key id; nil: unknown
	max  int                   // the largest datagram
}

// open checks b's lengths, magic, version, type, key and tag, cheapest
// first, and returns its header and payload (a slice of b). The payload's
// body is checked by body.
func (o *opener) open(b []byte) (Header, []byte, error) {
	if len(b) < Overhead {
		return Header{}, nil, ErrShort
	}
	if len(b) > o.max {
		return Header{}, nil, ErrLong
	}
	if [3]byte(b[:3]) != magic {
		return Header{}, nil, ErrMagic
	}
	h := Header{Type: Type(b[4]), KeyID: b[5], Sender: binary.BigEndian.Uint16(b[6:]),
		Epoch: binary.BigEndian.Uint64(b[8:]), Seq: binary.BigEndian.Uint64(b[16:]), Count: binary.BigEndian.Uint16(b[24:])}
	if b[3] != version || h.Type < Update || h.Type > CopyEnd || binary.BigEndian.Uint32(b[28:]) != 0 {
		return Header{}, nil, ErrVersion
	}
	switch n := int(binary.BigEndian.Uint16(b[26:])); {
	case len(b)-Overhead < n:
		return Header{}, nil, ErrShort
	case len(b)-Overhead > n:
		return Header{}, nil, ErrLong
	}
	mac := o.macs[h.KeyID]
	if mac == nil {
		return Header{}, nil, ErrKey
	}
	if !mac.Check(b[:headerLen], b[Overhead:], b[headerLen:Overhead]) {
		return Header{}, nil, ErrTag
	}
	return h, b[Overhead:], nil
}

// body checks a payload against its type: fixed lengths for HELLO,
// COPY_REQ and COPY_END (with no records), and for UPDATE and COPY_DATA
// exactly h.Count records (at least one), each as long as recLen says,
// filling the payload. It appends the records' ends to ends (for the
// second, delivering walk) and returns it.
func body(h Header, p []byte, recLen func([]byte) (int, error), ends []int) ([]int, error) {
	switch h.Type {
	case Hello:
		if len(p) != helloLen || h.Count != 0 {
			return ends, ErrBadRecords
		}
	case CopyReq:
		if len(p) != nonceLen || h.Count != 0 {
			return ends, ErrBadRecords
		}
	case CopyEnd:
		if len(p) != copyEndLen || h.Count != 0 {
			return ends, ErrBadRecords
		}
	case Update, CopyData:
		off := 0
		if h.Type == CopyData {
			off = nonceLen
		}
		if len(p) < off || h.Count == 0 {
			return ends, ErrBadRecords
		}
		for range h.Count {
			n, err := recLen(p[off:])
			if err != nil || n <= 0 || n > len(p)-off {
				return ends, ErrBadRecords
			}
			off += n
			ends = append(ends, off)
		}
		if off != len(p) {
			return ends, ErrBadRecords
		}
	default: // open refuses these first
		return ends, ErrVersion
	}
	return ends, nil
}

// window is a sender's anti-replay window (RFC 6479): a ring of bitmap
// blocks, the newest sequence number, and the epoch it belongs to. A
// number more than windowLen below the newest is too old.
type window struct {
	epoch uint64
	top   uint64
	bits  [windowBlocks]uint64
}

const (
	windowBlocks = 16
	windowLen    = (windowBlocks - 1) * 64 // 960: the oldest block is being reused
)

// fresh reports whether seq may be accepted: new to the window and not
// too old. It changes nothing.
func (w *window) fresh(seq uint64) bool {
	if seq > w.top {
		return true
	}
	if w.top-seq >= windowLen {
		return false
	}
	return w.bits[seq/64%windowBlocks]&(1<<(seq%64)) == 0
}

// mark records seq, sliding the window when it is the newest.
func (w *window) mark(seq uint64) {
	if seq > w.top {
		cur, blk := w.top/64, seq/64
		for i := uint64(1); i <= min(blk-cur, windowBlocks); i++ {
			w.bits[(cur+i)%windowBlocks] = 0
		}
		w.top = seq
	}
	w.bits[seq/64%windowBlocks] |= 1 << (seq % 64)
}
