// Package tun gives tapvs its frames: a small, batch-friendly device interface
// and a TAP implementation of it.
//
// The interface follows wireguard-go's tun.Device: a reader hands in a slice of
// buffers and gets back how many frames it filled, so an implementation that can
// read several frames per system call (recvmmsg, a vnet-header GSO device) slots
// in without touching the code above it.
package tun

// Device is one queue of a layer-2 device. A multi-queue TAP is several Devices
// sharing one interface; each is read by its own goroutine.
type Device interface {
	// Read fills bufs[i][offset:] with frames and sizes[i] with their lengths,
	// and returns how many frames it read. A device with a virtio-net header
	// puts it in the VNetHdrLen bytes just before offset; the bytes before
	// that are left free for the caller (headroom to insert TCP options).
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	// Write sends each frame in frames whole, its virtio-net header first
	// when the device has one. It returns how many were sent.
	Write(frames [][]byte) (int, error)
	// VNetHdrLen is the size of the virtio-net header before each frame:
	// 0, or VNetHdrLen for a TAP with offloads.
	VNetHdrLen() int
	// BatchSize is the largest number of frames one Read may return.
	BatchSize() int
	// Name is the interface name the device had when it was created.
	Name() string
	// Close releases the queue; once every queue of a TAP is closed the
	// kernel removes the interface, wherever it has been moved.
	Close() error
}

// Poller is a Device queue that can be polled: tapvs's busy-poll mode reads
// every queue of both sides from one thread, without waiting on any.
type Poller interface {
	Device
	// TryRead is Read that returns 0 frames at once if the queue is empty.
	TryRead(bufs [][]byte, sizes []int, offset int) (int, error)
	// Detach takes the queue out of Go's netpoller for good (Read stops
	// working) and returns its descriptor, to wait on all queues at once
	// (epoll) when polling finds nothing for a while. The descriptor stays
	// the Device's: Close closes it.
	Detach() (int, error)
}
