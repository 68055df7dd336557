package tun

import (
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

// OpenTAP creates the TAP interface and returns one Device per queue.
func OpenTAP(cfg TAPConfig) ([]Device, error) {
	if err := CheckIfName(cfg.Name); err != nil {
		return nil, fmt.Errorf("tap: name %q %w", cfg.Name, err)
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
		// water opens /dev/net/tun non-blocking: the file is in Go's netpoller.
		devs = append(devs, newTapQueue(ifce.Name(), f, 0))
	}
	return devs, nil
}
