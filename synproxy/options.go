package synproxy

import (
	"encoding/binary"

	"github.com/tapvs/tapvs/tcpopt"
)

// SynOptions are the options to put on a SYN or SYN-ACK.
type SynOptions struct {
	MSS          uint16
	WScale       int8 // -1: none
	SACKPerm     bool
	TS           bool
	TSval, TSecr uint32
}

// Write lays the options out as Linux does (MSS, SACK-permitted, timestamps,
// window scale, padded with NOPs) into b, which has room for 20 bytes, and
// returns their length, a multiple of 4.
func (o *SynOptions) Write(b []byte) int {
	n := 0
	b[0], b[1] = tcpopt.MSS, 4
	binary.BigEndian.PutUint16(b[2:], o.MSS)
	n = 4
	switch {
	case o.TS:
		if o.SACKPerm {
			b[n], b[n+1] = tcpopt.SACKPermitted, 2
		} else {
			b[n], b[n+1] = tcpopt.NOP, tcpopt.NOP
		}
		b[n+2], b[n+3] = tcpopt.Timestamps, 10
		binary.BigEndian.PutUint32(b[n+4:], o.TSval)
		binary.BigEndian.PutUint32(b[n+8:], o.TSecr)
		n += 12
	case o.SACKPerm:
		b[n], b[n+1], b[n+2], b[n+3] = tcpopt.NOP, tcpopt.NOP, tcpopt.SACKPermitted, 2
		n += 4
	}
	if o.WScale >= 0 {
		b[n], b[n+1], b[n+2], b[n+3] = tcpopt.NOP, tcpopt.WindowScale, 3, byte(o.WScale)
		n += 4
	}
	return n
}
