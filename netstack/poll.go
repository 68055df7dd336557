package netstack

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/tun"
)

// Busy polling: one thread reads every queue of both sides in turn and
// never parks while frames keep coming, as a DPVS lcore does. A parked reader
// costs a wake-up per frame (on a virtual machine tens of microseconds: more
// than the frame's whole trip through tapvs) and a few system calls to park
// and wake; a polling thread costs a core while it polls. After busyPoll
// without a frame it sleeps in epoll on all queues, so an idle tapvs is idle.

// pollWait bounds each sleep so that Close is noticed.
const pollWait = 100 // ms

// polled is one queue as the poller sees it.
type polled struct {
	*queue
	dev  tun.Poller
	fd   int
	dead bool // failed (its TAP deleted under tapvs): no longer read
}

func (st *Stack) startPolling(spin time.Duration) error {
	var qs []polled
	for _, e := range []*Endpoint{st.Client, st.Server} {
		for q := range e.devs {
			p, ok := e.devs[q].(tun.Poller)
			if !ok {
				return fmt.Errorf("busy poll: %s queue %d (%T) cannot be polled", e.devs[q].Name(), q, e.devs[q])
			}
			qs = append(qs, polled{queue: e.queue(q), dev: p})
		}
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("busy poll: epoll: %w", err)
	}
	for i := range qs {
		if qs[i].fd, err = qs[i].dev.Detach(); err != nil {
			unix.Close(ep)
			return fmt.Errorf("busy poll: %w", err)
		}
		// Level-triggered: a queue with frames left wakes the wait at once.
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, qs[i].fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}); err != nil {
			unix.Close(ep)
			return fmt.Errorf("busy poll: epoll add %s: %w", qs[i].dev.Name(), err)
		}
	}
	st.polling = true
	st.done.Add(1)
	go func() {
		defer st.done.Done()
		defer unix.Close(ep)
		st.pollLoop(qs, ep, spin)
	}()
	return nil
}

func (st *Stack) pollLoop(qs []polled, ep int, spin time.Duration) {
	// The thread sleeps in epoll_wait itself; locked, that sleep parks only
	// this goroutine's thread and not a P the rest of tapvs needs.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, len(qs))
	var idleSince time.Time
	for {
		select {
		case <-st.stop:
			return
		default:
		}
		busy := false
		for i := range qs {
			q := &qs[i]
			if q.dead {
				continue
			}
			got, err := q.dev.TryRead(q.bufs, q.sizes, Headroom)
			if err != nil {
				// A failing queue would fail, and wake the epoll, on
				// every pass: drop it.
				q.dead = true
				unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, q.fd, nil)
				if !errors.Is(err, os.ErrClosed) {
					q.e.fail(fmt.Errorf("%s side: busy poll: TAP %s queue %d: %w", q.e.side, q.queue.dev.Name(), q.q, err))
				}
				continue
			}
			if got > 0 {
				q.handle(got)
				busy = true
			}
		}
		if busy {
			idleSince = time.Time{}
			continue
		}
		if idleSince.IsZero() {
			idleSince = time.Now()
			continue
		}
		if time.Since(idleSince) < spin {
			continue
		}
		st.pollSleeps.Add(1)
		n, err := unix.EpollWait(ep, events, pollWait)
		if err != nil && err != unix.EINTR {
			st.log.Warn("busy poll: epoll wait failed", "err", err)
			time.Sleep(time.Millisecond)
		}
		if n > 0 {
			idleSince = time.Time{} // frames: poll again; a timeout goes back to sleep
		}
	}
}

// PollSleeps reports how often the busy poller went to sleep, and whether
// tapvs busy-polls at all.
func (st *Stack) PollSleeps() (sleeps uint64, polling bool) {
	return st.pollSleeps.Load(), st.polling
}
