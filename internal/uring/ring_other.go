//go:build !linux

package uring

// Ring is io_uring's ring; there is none off Linux.
type Ring struct{}

// New returns ErrUnsupported off Linux, as a refusal, so callers fall back.
func New(sqEntries, cqEntries uint32) (*Ring, error) {
	return nil, &RefusedError{Step: "io_uring_setup", Cause: CauseUnavailable, Hint: "io_uring is Linux only", Err: ErrUnsupported}
}

// Close does nothing.
func (r *Ring) Close() error { return nil }
