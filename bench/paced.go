package bench

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/lab"
)

// The paced flood (--flood-rate): hping3's flood sends as fast as its own
// system calls go, and that speed depends on the path. Into a TAP a send
// only queues the frame for tapvs; into the kernel paths' veth the same
// send also runs the router namespace's SYNPROXY and the client
// namespace's receipt of the SYN-ACK, so the flooder slows down as the
// kernel works. The two then face floods of different sizes. A paced
// flood sends the same SYNs, from a raw IP socket as hping3 does (the
// client namespace routes them), at the same rate to every path.

// pacedTick is how often the paced flood sends what it is due: at 50 000
// SYN/s, bursts of 50.
const pacedTick = time.Millisecond

// pacedFlood sends spoofed SYNs to `to` at about rate a second from a raw
// socket in namespace ns until stop, which returns the SYNs/s the socket
// took. A send the kernel refuses (ENOBUFS: a full queue) is not retried,
// as hping3 does not.
func pacedFlood(ns string, to netip.AddrPort, rate int) (stop func() (float64, error), err error) {
	if !to.Addr().Is4() || rate <= 0 {
		return nil, fmt.Errorf("paced flood: an IPv4 VIP and a rate above 0, not %s at %d/s", to, rate)
	}
	fd := -1
	if err := lab.InNetns(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) // IP_HDRINCL implied
		return err
	}); err != nil {
		return nil, fmt.Errorf("paced flood: raw socket in %s: %w", ns, err)
	}
	done := make(chan struct{})
	var sent uint64
	var sendErr error
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() {
		defer wg.Done()
		sent, sendErr = pace(fd, to, rate, start, done)
	}()
	var once sync.Once
	var r float64
	return func() (float64, error) {
		once.Do(func() {
			close(done)
			wg.Wait()
			unix.Close(fd)
			r = float64(sent) / time.Since(start).Seconds()
		})
		return r, sendErr
	}, nil
}

// pace sends on fd what the rate makes due at every tick, until done, and
// returns the SYNs the socket took. It never sends more than a second's
// worth at once: a stall is not made up for with a burst.
func pace(fd int, to netip.AddrPort, rate int, start time.Time, done <-chan struct{}) (uint64, error) {
	sa := &unix.SockaddrInet4{Addr: to.Addr().As4()}
	rnd := rand.New(rand.NewPCG(uint64(start.UnixNano()), 0x5eed))
	var pkt [synLen]byte
	var due, sent uint64
	t := time.NewTicker(pacedTick)
	defer t.Stop()
	for {
		select {
		case <-done:
			return sent, nil
		case <-t.C:
		}
		want := uint64(time.Since(start).Seconds() * float64(rate))
		due = max(due, want-min(want, uint64(rate))) // at most a second behind
		for ; due < want; due++ {
			spoofedSYN(pkt[:], randomSource(rnd), to, uint16(rnd.IntN(64512)+1024), rnd.Uint32())
			switch err := unix.Sendto(fd, pkt[:], 0, sa); err {
			case nil:
				sent++
			case unix.ENOBUFS, unix.EAGAIN, unix.EINTR:
			default:
				return sent, fmt.Errorf("paced flood: send to %s: %w", to.Addr(), err)
			}
		}
	}
}

// randomSource is a unicast IPv4 address anywhere but 0/8, 10/8, 127/8 and
// the bench's own 172.16/12 (whose SYN-ACKs would reach a namespace of the
// lab instead of being dropped as they are for the rest): hping3's
// --rand-source, short of the addresses a SYN-ACK can be delivered to.
func randomSource(rnd *rand.Rand) netip.Addr {
	for {
		a := [4]byte{}
		binary.BigEndian.PutUint32(a[:], rnd.Uint32())
		switch {
		case a[0] == 0, a[0] == 10, a[0] == 127, a[0] >= 224, a[0] == 172 && a[1]&0xf0 == 16:
			continue
		}
		return netip.AddrFrom4(a)
	}
}

// synLen is the paced flood's SYN: an IPv4 header and a TCP header with an
// MSS option, as hping3 -S sends none but a client's SYN has one.
const synLen = 20 + 24

// spoofedSYN writes into b (synLen bytes) a SYN from src:sport to `to`,
// checksums right.
func spoofedSYN(b []byte, src netip.Addr, to netip.AddrPort, sport uint16, seq uint32) {
	ip, tcp := b[:20], b[20:synLen]
	clear(b[:synLen])
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], synLen)
	ip[8], ip[9] = 64, unix.IPPROTO_TCP
	s4, d4 := src.As4(), to.Addr().As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], to.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 6 << 4 // 24 bytes
	tcp[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	copy(tcp[20:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
	binary.BigEndian.PutUint16(tcp[16:], csum.Checksum(tcp, csum.PseudoV4(ip[12:16], ip[16:20], unix.IPPROTO_TCP, len(tcp))))
}
