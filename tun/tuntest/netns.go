// Package tuntest runs a test in a network namespace of its own, so that the
// TAPs it makes touch nothing else.
package tuntest

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// InNewNetns runs the rest of the test on a thread in a network namespace
// of its own; the namespace goes when the test ends. It needs root (CI
// runs as root).
func InNewNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it makes a network namespace and TAPs (CI runs as root)")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		netns.Set(orig)
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	})
}
