package tun

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// The first `tapvs run` with the lab's config.yaml on a machine without the
// lab's namespaces: the error says what to do.
func TestSetupLinkMissingNetnsSaysWhatToDo(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to make a link")
		}
		t.Skip("needs root to make a link")
	}
	const name = "tvsnonetns0"
	devs, err := OpenTAP(TAPConfig{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range devs {
			d.Close()
		}
	})
	err = SetupLink(name, LinkConfig{Netns: "tvs-no-such-ns"})
	if !errors.Is(err, ErrNoNetns) {
		t.Fatalf("error %v, want ErrNoNetns", err)
	}
	for _, want := range []string{`netns "tvs-no-such-ns" does not exist`, "ip netns add tvs-no-such-ns", "tapvs lab --keep", "drop the interface's netns: key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("not one line: %q", err)
	}
}
