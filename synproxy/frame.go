package synproxy

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/csum"
)

// Segment is a TCP segment synproxy sends itself: a SYN-ACK to a client, a
// SYN to a real server, an RST.
type Segment struct {
	SrcMAC, DstMAC [6]byte
	Src, Dst       [4]byte
	Sport, Dport   uint16
	Seq, Ack       uint32
	Flags          uint8
	Window         uint16
	Opts           []byte // already laid out, a multiple of 4 bytes
}

// FrameLen is the size of the frame Write produces.
func (s *Segment) FrameLen() int { return 14 + 20 + 20 + len(s.Opts) }

// Write lays the segment out as an Ethernet/IPv4/TCP frame in b, with full
// checksums, and returns its length.
func (s *Segment) Write(b []byte) int {
	n := s.FrameLen()
	b = b[:n]
	copy(b[0:6], s.DstMAC[:])
	copy(b[6:12], s.SrcMAC[:])
	b[12], b[13] = 0x08, 0x00
	ip := b[14:34]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:], uint16(n-14))
	ip[4], ip[5], ip[6], ip[7] = 0, 0, 0x40, 0 // no ID, DF
	ip[8], ip[9] = 64, 6
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], s.Src[:])
	copy(ip[16:20], s.Dst[:])
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
	tcp := b[34:]
	binary.BigEndian.PutUint16(tcp[0:], s.Sport)
	binary.BigEndian.PutUint16(tcp[2:], s.Dport)
	binary.BigEndian.PutUint32(tcp[4:], s.Seq)
	binary.BigEndian.PutUint32(tcp[8:], s.Ack)
	tcp[12] = byte((20+len(s.Opts))/4) << 4
	tcp[13] = s.Flags
	binary.BigEndian.PutUint16(tcp[14:], s.Window)
	tcp[16], tcp[17], tcp[18], tcp[19] = 0, 0, 0, 0
	copy(tcp[20:], s.Opts)
	binary.BigEndian.PutUint16(tcp[16:], csum.Checksum(tcp, csum.PseudoV4(s.Src[:], s.Dst[:], 6, len(tcp))))
	return n
}
