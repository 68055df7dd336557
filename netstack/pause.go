package netstack

import (
	"errors"
	"fmt"
	"time"

	"github.com/tapvs/tapvs/tun"
)

// Pausing the readers: a takeover (tapvs run --takeover) hands the queues to
// another process, and two readers of one queue would split its frames
// between them. Pause stops every reader between two batches without
// closing a queue: frames that arrive meanwhile wait in the kernel's ring
// (txqueuelen frames per queue). Resume starts them again on the same
// queues, which is what the old process does when a takeover fails.

// ErrCannotPause is Pause's error when a reader cannot be stopped without
// closing its queue (the epoll busy poller reads detached descriptors).
var ErrCannotPause = errors.New("the readers cannot be paused")

// Pause stops the readers and returns once none is left. The timers that
// write frames (the balancer's) are the caller's to stop.
func (st *Stack) Pause() error {
	if st.polling && len(st.rings) == 0 {
		return fmt.Errorf("busy polling: %w", ErrCannotPause)
	}
	for _, e := range []*Endpoint{st.Client, st.Server} {
		for _, d := range e.devs {
			if _, ok := d.(tun.Passer); !ok {
				return fmt.Errorf("%s queue (%T): %w", d.Name(), d, ErrCannotPause)
			}
		}
	}
	if len(st.rings) > 0 {
		return st.pauseRings()
	}
	var errs []error
	for _, e := range []*Endpoint{st.Client, st.Server} {
		e.paused.Store(true)
		for _, d := range e.devs {
			// A deadline in the past wakes a parked Read at once; a
			// reader in the middle of a batch finishes it first.
			errs = append(errs, d.(tun.Passer).SetReadDeadline(time.Unix(1, 0)))
		}
	}
	st.Client.Wait()
	st.Server.Wait()
	return errors.Join(errs...)
}

// Resume starts the readers Pause stopped; the frames queued meanwhile are
// read first.
func (st *Stack) Resume() error {
	if len(st.rings) > 0 {
		return st.resumeRings()
	}
	var errs []error
	for _, e := range []*Endpoint{st.Client, st.Server} {
		for _, d := range e.devs {
			errs = append(errs, d.(tun.Passer).SetReadDeadline(time.Time{}))
		}
		e.paused.Store(false)
		e.start()
	}
	return errors.Join(errs...)
}

// Devices returns each side's queues (client, then server): what a takeover
// passes on.
func (st *Stack) Devices() (client, server []tun.Device) { return st.Client.devs, st.Server.devs }

// MACs are the sides' own MAC addresses: a takeover's successor keeps them,
// as the neighbours have them cached.
func (st *Stack) MACs() (client, server [6]byte) {
	copy(client[:], st.Client.mac)
	copy(server[:], st.Server.mac)
	return client, server
}
