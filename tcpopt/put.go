package tcpopt

import "encoding/binary"

// Appenders for the options tapvs writes on the SYNs and SYN-ACKs it makes
// (synproxy.SynOptions): each appends one option, kind and length first,
// to b. Callers append into a stack buffer with the room (MaxLen), so
// nothing allocates.

// AppendMSS appends a maximum segment size option.
func AppendMSS(b []byte, mss uint16) []byte {
	return binary.BigEndian.AppendUint16(append(b, MSS, LenMSS), mss)
}

// AppendSACKPermitted appends a SACK-permitted option.
func AppendSACKPermitted(b []byte) []byte { return append(b, SACKPermitted, LenSACKPermitted) }

// AppendTimestamps appends a timestamps option.
func AppendTimestamps(b []byte, val, ecr uint32) []byte {
	b = binary.BigEndian.AppendUint32(append(b, Timestamps, LenTimestamps), val)
	return binary.BigEndian.AppendUint32(b, ecr)
}

// AppendWindowScale appends a window scale option.
func AppendWindowScale(b []byte, shift uint8) []byte {
	return append(b, WindowScale, LenWindowScale, shift)
}

// AppendNOPs appends n NOPs, the padding that aligns the next option.
func AppendNOPs(b []byte, n int) []byte {
	for range n {
		b = append(b, NOP)
	}
	return b
}

// AppendTOA appends a TOA option (kind 254) carrying a client's port and
// address: length 8 for an IPv4 address (4 bytes), 20 for IPv6 (16), the
// layouts of Alibaba's toa_data and DPVS's toa_ip6_data.
func AppendTOA(b []byte, port uint16, addr []byte) []byte {
	b = binary.BigEndian.AppendUint16(append(b, TOA, byte(4+len(addr))), port)
	return append(b, addr...)
}
