package lab

import (
	"context"
	"fmt"
	"time"
)

// Takeover restarts the instance with `tapvs run --takeover`: a new
// process takes the TAPs and the connection table from the running one,
// which exits. It returns once the old process has exited and the new one
// answers on its control socket (within ctx), with how long the old one
// took to go.
func (in *Instance) Takeover(ctx context.Context) (time.Duration, error) {
	if in.Exited() {
		return 0, fmt.Errorf("instance t%d is not running", in.N)
	}
	oldDone := in.done
	start := time.Now()
	if err := in.spawn("--takeover"); err != nil {
		return 0, err
	}
	newDone := in.done
	select {
	case <-oldDone:
	case <-newDone:
		return 0, fmt.Errorf("instance t%d: the new tapvs exited before the old one: %s", in.N, in.tailLog())
	case <-ctx.Done():
		return 0, fmt.Errorf("instance t%d: the old tapvs did not exit: %w", in.N, ctx.Err())
	}
	gone := time.Since(start)
	return gone, in.WaitReady(ctx)
}
