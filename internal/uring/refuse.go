package uring

import (
	"errors"
	"fmt"
)

// Cause says why io_uring cannot be used, so the caller's one log line can
// tell an operator what to change.
type Cause int

// The causes of a refusal.
const (
	// CauseOther is a failure that is not a refusal of io_uring itself
	// (out of memory, too many open files): no fallback hides it.
	CauseOther Cause = iota
	// CauseUnavailable: no io_uring in this kernel (CONFIG_IO_URING off),
	// or a seccomp filter answering ENOSYS.
	CauseUnavailable
	// CauseDisabled: the kernel.io_uring_disabled sysctl forbids it.
	CauseDisabled
	// CauseSeccomp: a seccomp profile (containers' default ones) refuses it.
	CauseSeccomp
	// CauseOldKernel: the kernel lacks a flag, feature or opcode tapvs needs.
	CauseOldKernel
)

func (c Cause) String() string {
	switch c {
	case CauseUnavailable:
		return "unavailable"
	case CauseDisabled:
		return "disabled"
	case CauseSeccomp:
		return "seccomp"
	case CauseOldKernel:
		return "old kernel"
	}
	return "other"
}

// ErrUnsupported is the error of New on systems without io_uring.
var ErrUnsupported = errors.ErrUnsupported

// RefusedError is New's error: the step that failed, why, and a hint for the
// operator. It unwraps to the system call's errno (or ErrUnsupported).
type RefusedError struct {
	Step  string // "io_uring_setup", "features", "probe", ...
	Cause Cause
	Hint  string
	Err   error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("io_uring: %s: %v (%s: %s)", e.Step, e.Err, e.Cause, e.Hint)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Refused reports whether err means io_uring is refused here (so falling
// back to system calls is right), as opposed to a failure that would hit
// the fallback too.
func Refused(err error) bool {
	var re *RefusedError
	return errors.As(err, &re) && re.Cause != CauseOther
}
