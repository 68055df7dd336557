package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tapvs/tapvs/nat"
)

// keepalived's MISC_CHECK: a program run on the host, in tapvs's own
// namespaces (not through its stack), its exit code read as keepalived
// reads it.

// The environment a misc script gets, besides tapvs's own: the server it
// checks and the service it belongs to (keepalived passes none; its
// scripts take the address as an argument, which works here too).
const (
	envRSAddr  = "TAPVS_RS_ADDR"
	envRSPort  = "TAPVS_RS_PORT" // the check's port: Spec.Port, or the server's
	envVIPAddr = "TAPVS_VIP_ADDR"
	envVIPPort = "TAPVS_VIP_PORT"
	envProto   = "TAPVS_PROTO"  // tcp or udp
	envMark    = "TAPVS_FWMARK" // a match service's mark (its VIP port 0); 0 for a VIP:port service
)

// runMisc runs t's script for at most its timeout. Exit 0 passes, 1 fails;
// 2-255 pass and, with misc_dynamic, set the weight to code-2 (keepalived's
// rule), else fail. A script that outlives its timeout is killed with its
// whole process group and fails. weight is -1 unless misc_dynamic set one.
func runMisc(t Target) (weight int, err error) {
	spec := t.Spec
	if len(spec.Script) == 0 {
		return -1, errors.New("misc: no script")
	}
	port := spec.Port
	if port == 0 {
		port = t.RS.Port()
	}
	ctx, cancel := context.WithTimeout(context.Background(), spec.Timeout)
	defer cancel()
	err = command(ctx, spec.Script,
		envRSAddr+"="+t.RS.Addr().Unmap().String(),
		envRSPort+"="+strconv.Itoa(int(port)),
		envVIPAddr+"="+t.VIP.Addr().String(),
		envVIPPort+"="+strconv.Itoa(int(t.VIP.Port())),
		envProto+"="+strings.ToLower(t.Proto.String()),
		envMark+"="+strconv.FormatUint(uint64(t.Mark), 10),
	).Run()
	if ctx.Err() != nil {
		return -1, fmt.Errorf("misc: %s timed out after %s", spec.Script[0], spec.Timeout)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return -1, nil
	case !errors.As(err, &exit):
		return -1, fmt.Errorf("misc: %w", err)
	}
	code := exit.ExitCode() // -1 if killed by a signal
	switch {
	case code >= 2 && spec.MiscDynamic:
		return code - 2, nil
	case code < 0:
		return -1, fmt.Errorf("misc: %s: %s", spec.Script[0], exit)
	default:
		return -1, fmt.Errorf("misc: %s exited %d", spec.Script[0], code)
	}
}

// command is argv run without a shell, with env added to tapvs's own, in a
// process group of its own, so that ctx's end kills what it started too; no
// pipes (stdin, stdout and stderr are /dev/null), so a child left behind
// cannot hold Wait.
func command(ctx context.Context, argv []string, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// setDynamic sets a server's weight to what its misc_dynamic script said:
// at once if it is up (and listed), and as the weight a recovery restores.
func (c *Checker) setDynamic(s *state, w int) {
	k := s.t.stateKey()
	c.qmu.Lock()
	defer c.qmu.Unlock()
	defer c.evalQuorum(k.svc, false) // the weights summed changed
	c.mu.Lock()
	s.weight = w
	up := s.up && c.servingLocked(k) // below quorum it waits at 0
	c.mu.Unlock()
	if !up {
		return
	}
	rs := s.t.RS
	changed := false
	err := c.change(s.t, func(tx *nat.Tx, svc *nat.Service, d *nat.Dest) error {
		if d == nil || tx.Weight(svc, d) == w {
			return nil
		}
		changed = true
		return tx.SetWeight(svc, rs.Addr(), rs.Port(), w)
	})
	switch {
	case err != nil:
		c.log.Warn("misc_dynamic weight not set", "service", s.t.key().String(), "rs", rs.String(), "weight", w, "err", err)
	case changed:
		c.log.Info("real server weight set by its check (misc_dynamic)", "service", s.t.key().String(), "rs", rs.String(), "weight", w)
	}
}
