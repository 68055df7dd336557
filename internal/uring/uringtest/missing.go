package uringtest

import (
	"os"
	"testing"
)

// Missing ends a test that cannot run here for want of what it names (a
// header, a compiler, an architecture's seccomp constant): skipped on a
// developer's machine, failed under CI=true, where nothing may skip.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Skipf(format, args...)
}
