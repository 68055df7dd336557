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

	"github.com/tapvs/tapvs/lab"
)

// capture records every frame on one interface inside a namespace through an
// AF_PACKET socket, for gopacket to decode. gopacket's pcapgo handle blocks
// in recvmsg with no timeout; this one wakes every 100ms so it can stop.
type capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
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
	unix.Close(c.fd)
}

// packets decodes what was captured so far.
func (c *capture) packets() []gopacket.Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]gopacket.Packet, 0, len(c.frames))
	for _, f := range c.frames {
		out = append(out, gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default))
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

// inject writes raw frames out of an interface inside a namespace.
func inject(ns, ifname string, frames ...[]byte) error {
	return lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for i, f := range frames {
			sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Protocol: htons(binary.BigEndian.Uint16(f[12:]))}
			copy(sa.Addr[:], f[0:6])
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return fmt.Errorf("frame %d: %w", i, err)
			}
		}
		return nil
	})
}
