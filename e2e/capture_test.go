package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/lab"
)

// capture records every frame on one interface inside a namespace through an
// AF_PACKET socket, for gopacket to decode. gopacket's pcapgo handle blocks
// in recvmsg with no timeout; this one wakes every 100ms so it can stop.
type capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	times  []time.Time // when each frame was read: the packets' metadata timestamps
	done   chan struct{}
	wg     sync.WaitGroup
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func startCapture(t *testing.T, ns, ifname string) *capture {
	t.Helper()
	c := &capture{fd: -1, done: make(chan struct{})}
	err := lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return err
		}
		// A bulk transfer outruns the reader: a big buffer loses fewer frames.
		// SO_RCVBUFFORCE needs CAP_NET_ADMIN on the host: in a user
		// namespace (TAPVS_E2E_ROOTLESS) the buffer is what rmem_max allows.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			if err != unix.EPERM {
				return err
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<20); err != nil {
				return err
			}
		}
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("capture on %s in %s: %v", ifname, ns, err)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.done:
				return
			default:
			}
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue // timeout: look at done again
			}
			c.mu.Lock()
			c.frames = append(c.frames, append([]byte(nil), buf[:n]...))
			c.times = append(c.times, time.Now())
			c.mu.Unlock()
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *capture) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.wg.Wait()
	// What the kernel queued on the socket before stop is part of the
	// capture: a frame that crossed the interface is never lost to the
	// reader not having come round to it yet.
	buf := make([]byte, 65536)
	for range 1 << 16 { // bounded: a socket buffer holds far fewer frames
		n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			break
		}
		c.mu.Lock()
		c.frames = append(c.frames, append([]byte(nil), buf[:n]...))
		c.times = append(c.times, time.Now())
		c.mu.Unlock()
	}
	unix.Close(c.fd)
}

// packets decodes what was captured so far.
func (c *capture) packets() []gopacket.Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]gopacket.Packet, 0, len(c.frames))
	for i, f := range c.frames {
		p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		p.Metadata().Timestamp = c.times[i]
		out = append(out, p)
	}
	return out
}

// tcpTo returns the captured TCP packets whose destination port is port.
func tcpPort(ps []gopacket.Packet, port uint16) []gopacket.Packet {
	var out []gopacket.Packet
	for _, p := range ps {
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && (uint16(tcp.DstPort) == port || uint16(tcp.SrcPort) == port) {
			out = append(out, p)
		}
	}
	return out
}

// injector writes raw frames out of an interface inside a namespace through
// one AF_PACKET socket.
type injector struct {
	fd int
	sa unix.SockaddrLinklayer
}

func newInjector(ns, ifname string) (*injector, error) {
	in := &injector{fd: -1}
	err := lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if in.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0); err != nil {
			return err
		}
		in.sa = unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		return nil
	})
	if err != nil && in.fd >= 0 {
		unix.Close(in.fd)
	}
	return in, err
}

// send writes frames and returns how many the device took; a full TAP queue
// (ENOBUFS) loses a frame as a wire would, and is not an error.
func (in *injector) send(frames ...[]byte) (int, error) {
	n := 0
	for i, f := range frames {
		in.sa.Protocol = htons(binary.BigEndian.Uint16(f[12:]))
		copy(in.sa.Addr[:], f[0:6])
		if err := unix.Sendto(in.fd, f, 0, &in.sa); err != nil {
			if err == unix.ENOBUFS {
				continue
			}
			return n, fmt.Errorf("frame %d: %w", i, err)
		}
		n++
	}
	return n, nil
}

func (in *injector) close() { unix.Close(in.fd) }

// inject writes raw frames out of an interface inside a namespace and
// returns how many the device took.
func inject(ns, ifname string, frames ...[]byte) (int, error) {
	in, err := newInjector(ns, ifname)
	if err != nil {
		return 0, err
	}
	defer in.close()
	return in.send(frames...)
}

// fixChecksums recomputes the IPv4 and TCP checksums of a frame edited in place.
// The segment ends where the IP total length says: a short frame carries
// Ethernet padding after it (gopacket pads to 60 bytes), which is not summed.
func fixChecksums(f []byte) {
	ip := f[14:34]
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
	tcp := f[34 : 14+int(binary.BigEndian.Uint16(ip[2:]))]
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:], csum.Checksum(tcp, csum.PseudoV4(ip[12:16], ip[16:20], 6, len(tcp))))
}
