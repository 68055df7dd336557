package synproxy

import "github.com/tapvs/tapvs/tcpopt"

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
	out := tcpopt.AppendMSS(b[:0], o.MSS)
	switch {
	case o.TS:
		if o.SACKPerm {
			out = tcpopt.AppendSACKPermitted(out)
		} else {
			out = tcpopt.AppendNOPs(out, 2)
		}
		out = tcpopt.AppendTimestamps(out, o.TSval, o.TSecr)
	case o.SACKPerm:
		out = tcpopt.AppendSACKPermitted(tcpopt.AppendNOPs(out, 2))
	}
	if o.WScale >= 0 {
		out = tcpopt.AppendWindowScale(tcpopt.AppendNOPs(out, 1), uint8(o.WScale))
	}
	return len(out)
}
