// Package tcpflag names the bits of a TCP header's flags byte (offset 13),
// once, for every package that reads or builds a TCP header.
package tcpflag

const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
	URG = 0x20
	ECE = 0x40
	CWR = 0x80
)

// Offset is the flags byte's offset in a TCP header.
const Offset = 13
