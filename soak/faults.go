package soak

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/csum"
	"github.com/tapvs/tapvs/lab"
)

// The faults' shape.
const (
	reloadMin, reloadMax = 2 * time.Second, 4 * time.Second // between reloads
	downtime             = time.Second                      // a restarted real server's
	floodRate            = 3000                             // spoofed SYNs/s
	floodFor             = 3 * time.Second
)

// Flood is what the SYN flood did.
type Flood struct {
	At       time.Duration // into the soak phase
	Sent     int           // frames the TAP took
	Built    int
	Cookies  uint64 // SYN-ACKs with a cookie during the flood (the legitimate clients' too)
	Spoofed  int    // connection entries with a spoofed source, seen right after it
	Injected bool
}

// faults runs, during a soak phase of length d: a reload every 2-4s, a
// real-server restart every third of the phase (at most a minute apart,
// 15s at least), and one SYN flood burst a little before the middle. It
// returns the first fault that could not be made (a refused reload, a
// server that did not come back, a flood that could not be sent).
func (s *soak) faults(ctx context.Context, d time.Duration) error {
	start := time.Now()
	restartEvery := min(max(d/3, 15*time.Second), time.Minute)
	nextRestart := start.Add(restartEvery)
	floodAt := start.Add(d * 45 / 100)
	nextReload := start.Add(s.reloadGap())
	for {
		now := time.Now()
		next := min(nextRestart.Sub(now), nextReload.Sub(now))
		if !s.flood.Injected {
			next = min(next, floodAt.Sub(now))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
		now = time.Now()
		switch {
		case !s.flood.Injected && !now.Before(floodAt):
			if err := s.synFlood(ctx, now.Sub(start)); err != nil {
				return fmt.Errorf("SYN flood: %w", err)
			}
		case !now.Before(nextRestart):
			if err := s.restart(s.rnd.IntN(2)); err != nil {
				return err
			}
			nextRestart = nextRestart.Add(restartEvery)
		case !now.Before(nextReload):
			s.reloads++
			if err := s.writeConfig(s.reloads); err != nil {
				return err
			}
			if err := s.d.Reload(s.cfgPath); err != nil {
				return fmt.Errorf("reload %d: %w", s.reloads, err)
			}
			nextReload = time.Now().Add(s.reloadGap())
		}
	}
}

func (s *soak) reloadGap() time.Duration {
	return reloadMin + time.Duration(s.rnd.Int64N(int64(reloadMax-reloadMin)))
}

// restart stops real server i's servers (listeners and open HTTP
// connections: a crashed process; bulk connections it accepted go on) and
// starts them again after the downtime.
func (s *soak) restart(i int) error {
	s.mu.Lock()
	s.restarts = append(s.restarts, window{from: time.Now()})
	w := &s.restarts[len(s.restarts)-1]
	b := s.rs[i]
	s.rs[i] = nil
	s.mu.Unlock()
	b.Close()
	time.Sleep(downtime) // the outage itself, not a wait for a condition
	nb, err := lab.StartBackend(s.top.RS[i], b.Name, b.Addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	w.to = time.Now()
	if err != nil {
		return fmt.Errorf("restarting %s: %w", b.Name, err)
	}
	s.rs[i] = nb
	return nil
}

// synFlood sends spoofed SYNs (random sources of the client subnet that
// exist only on the wire) to the SYNPROXY VIP at floodRate for floodFor,
// from the client's namespace, and then looks for connection entries of
// spoofed sources: there must be none.
func (s *soak) synFlood(ctx context.Context, at time.Duration) error {
	s.flood.Injected, s.flood.At = true, at
	var src net.HardwareAddr
	if err := lab.InNetns(s.top.Client, func() error {
		ifi, err := net.InterfaceByName(s.top.TapClient)
		if err == nil {
			src = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		return err
	}
	dst := net.HardwareAddr(s.d.Stack.Client.LinkAddress())
	n := int(floodRate * floodFor / time.Second)
	frames := make([][]byte, n)
	for i := range frames {
		host := netip.AddrFrom4([4]byte{172, 25, 254, byte(2 + s.rnd.IntN(90))}) // .2-.91: not the client, the VIP or tapvs
		frames[i] = spoofedSYN(src, dst, host, uint16(1024+s.rnd.IntN(60000)), s.rnd.Uint32())
	}
	s.flood.Built = n
	cookies0, _, _, _ := s.d.Balancer.Stats.Synproxy()
	sent, err := inject(ctx, s.top.Client, s.top.TapClient, frames, floodRate)
	s.flood.Sent = sent
	cookies, _, _, _ := s.d.Balancer.Stats.Synproxy()
	s.flood.Cookies = cookies - cookies0
	for _, c := range s.d.Balancer.Table().Conns() {
		if c.Client.Addr() != lab.ClientAddr.Addr() {
			s.flood.Spoofed++
		}
	}
	return err
}

// spoofedSYN builds an Ethernet frame: a SYN with an MSS option from
// src:sport to the SYNPROXY VIP, checksums right.
func spoofedSYN(srcMAC, dstMAC net.HardwareAddr, src netip.Addr, sport uint16, seq uint32) []byte {
	f := make([]byte, 14+20+24)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 20+24)
	ip[8], ip[9] = 64, 6 // TTL, TCP
	s4, d4 := src.As4(), lab.VIP.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], csum.Checksum(ip, 0))
	tcp := f[34:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], lab.SynproxyPort)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 6 << 4 // 24 bytes of header
	tcp[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	copy(tcp[20:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
	binary.BigEndian.PutUint16(tcp[16:], csum.Checksum(tcp, csum.PseudoV4(ip[12:16], ip[16:20], 6, len(tcp))))
	return f
}

// inject writes frames out of interface ifname in namespace ns through an
// AF_PACKET socket, in bursts paced to about perSecond, and returns how many
// the device took (a full TAP queue loses a frame as a wire would).
func inject(ctx context.Context, ns, ifname string, frames [][]byte, perSecond int) (int, error) {
	fd := -1
	var sa unix.SockaddrLinklayer
	if err := lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0); err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		sa = unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Protocol: 0x0008} // ETH_P_IP, network order
		return nil
	}); err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	const burst = 100
	tick := time.Duration(burst) * time.Second / time.Duration(perSecond)
	next := time.Now()
	sent := 0
	for i := 0; i < len(frames) && ctx.Err() == nil; i += burst {
		for _, f := range frames[i:min(i+burst, len(frames))] {
			copy(sa.Addr[:], f[0:6])
			if err := unix.Sendto(fd, f, 0, &sa); err != nil {
				if err == unix.ENOBUFS {
					continue
				}
				return sent, fmt.Errorf("sending on %s: %w", ifname, err)
			}
			sent++
		}
		next = next.Add(tick)
		time.Sleep(time.Until(next)) // pacing; a sender behind schedule does not sleep
	}
	return sent, nil
}
