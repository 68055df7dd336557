package nat

import (
	"errors"
	"slices"
	"sync/atomic"
	"time"
)

// Tap copies one service's frames, on both sides and both before and after
// the rewrite, for a capture (tapvsadm --capture). With no tap the packet
// path pays one atomic load.
type Tap struct {
	svc     *Service
	C       chan TapFrame
	Dropped atomic.Uint64 // frames the reader was too slow for
}

// TapFrame is one captured frame.
type TapFrame struct {
	Time  time.Time
	Data  []byte
	Side  Side
	After bool // as sent, after the rewrite
}

// ErrTapBusy is returned while another capture runs.
var ErrTapBusy = errors.New("a capture is already running")

// StartTap starts capturing svc's traffic into a channel of depth frames.
func (b *Balancer) StartTap(svc *Service, depth int) (*Tap, error) {
	t := &Tap{svc: svc, C: make(chan TapFrame, depth)}
	if !b.tap.CompareAndSwap(nil, t) {
		return nil, ErrTapBusy
	}
	return t, nil
}

// StopTap ends a capture.
func (b *Balancer) StopTap(t *Tap) { b.tap.CompareAndSwap(t, nil) }

// record copies a frame of c if the capture is of its service. The packet
// path loads the tap once and calls this only when a capture runs.
func (t *Tap) record(c *Conn, side Side, after bool, frame []byte) {
	if t.svc != c.svc {
		return
	}
	select {
	case t.C <- TapFrame{Time: time.Now(), Data: slices.Clone(frame), Side: side, After: after}:
	default:
		t.Dropped.Add(1)
	}
}
