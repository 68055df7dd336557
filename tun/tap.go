package tun

import (
	"errors"
	"fmt"
	"os"

	"github.com/songgao/water"
)

// TAPConfig describes a TAP interface to create.
type TAPConfig struct {
	Name   string
	Queues int // 1 or more; more than 1 sets IFF_MULTI_QUEUE
	// Offload opens the TAP with a virtio-net header and checksum/TSO
	// offload; if the kernel refuses, OpenTAP returns ErrOffloadRefused.
	Offload bool
}

// tap is one queue of a TAP opened through water. water opens /dev/net/tun
// non-blocking and wraps it in an *os.File, so reads park in Go's netpoller and
// Close wakes a blocked reader.
type tap struct {
	*queueFile
	name string
}

// OpenTAP creates the TAP interface and returns one Device per queue.
func OpenTAP(cfg TAPConfig) ([]Device, error) {
	if cfg.Name == "" {
		return nil, errors.New("tap: name is empty")
	}
	if cfg.Offload {
		return openVNetTAP(cfg)
	}
	queues := max(cfg.Queues, 1)
	devs := make([]Device, 0, queues)
	for i := range queues {
		ifce, err := water.New(water.Config{
			DeviceType: water.TAP,
			PlatformSpecificParams: water.PlatformSpecificParams{
				Name:       cfg.Name,
				MultiQueue: queues > 1,
			},
		})
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return nil, fmt.Errorf("tap %s: open queue %d: %w", cfg.Name, i, err)
		}
		f, ok := ifce.ReadWriteCloser.(*os.File)
		if !ok {
			ifce.Close()
			for _, d := range devs {
				d.Close()
			}
			return nil, fmt.Errorf("tap %s: queue %d: water gave a %T, not a file", cfg.Name, i, ifce.ReadWriteCloser)
		}
		devs = append(devs, &tap{queueFile: newQueueFile(ifce.Name(), f), name: ifce.Name()})
	}
	return devs, nil
}

func (t *tap) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

func (t *tap) Write(frames [][]byte) (int, error) {
	for i, f := range frames {
		if err := t.write(f); err != nil {
			return i, err
		}
	}
	return len(frames), nil
}

func (t *tap) BatchSize() int  { return 1 }
func (t *tap) VNetHdrLen() int { return 0 }
func (t *tap) Name() string    { return t.name }
func (t *tap) Close() error    { return t.close() }

func (t *tap) TryRead(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.tryRead(bufs[0][offset:])
	if n <= 0 || err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}
