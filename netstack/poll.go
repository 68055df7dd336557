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

func (st *Stack) startPolling(spin time.Duration) error {
	var qs []*queue
	var ps []tun.Poller
	for _, e := range []*Endpoint{st.Client, st.Server} {
		for q := range e.devs {
			p, ok := e.devs[q].(tun.Poller)
			if !ok {
				return fmt.Errorf("busy poll: %s queue %d (%T) cannot be polled", e.devs[q].Name(), q, e.devs[q])
			}
			qs, ps = append(qs, e.queue(q)), append(ps, p)
		}
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("busy poll: epoll: %w", err)
	}
	fds := make([]int, len(ps))
	for i, p := range ps {
		fd, err := p.Detach()
		fds[i] = fd
		if err != nil {
			unix.Close(ep)
			return fmt.Errorf("busy poll: %w", err)
		}
		// Level-triggered: a queue with frames left wakes the wait at once.
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}); err != nil {
			unix.Close(ep)
			return fmt.Errorf("busy poll: epoll add %s: %w", p.Name(), err)
		}
	}
	st.polling = true
	st.done.Add(1)
	go func() {
		defer st.done.Done()
		defer unix.Close(ep)
		st.pollLoop(qs, ps, fds, ep, spin)
	}()
	return nil
}

func (st *Stack) pollLoop(qs []*queue, ps []tun.Poller, fds []int, ep int, spin time.Duration) {
	// The thread sleeps in epoll_wait itself; locked, that sleep parks only
	// this goroutine's thread and not a P the rest of tapvs needs.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, len(ps))
	dead := make([]bool, len(ps))
	var idleSince time.Time
	for !st.stopping.Load() {
		busy := false
		for i, p := range ps {
			if dead[i] {
				continue
			}
			got, err := p.TryRead(qs[i].bufs, qs[i].sizes, Headroom)
			if err != nil {
				// A queue that fails (its TAP deleted under tapvs) would
				// fail, and wake the epoll, on every pass: drop it.
				dead[i] = true
				unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fds[i], nil)
				if !errors.Is(err, os.ErrClosed) {
					qs[i].e.log.Error("busy poll: queue dropped", "queue", qs[i].q, "err", err)
				}
				continue
			}
			if got > 0 {
				qs[i].handle(got)
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
