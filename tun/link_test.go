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

// Issue 20, item 5: names the kernel would refuse, cut short or read as a
// path are refused before any system call, and the one rule is the one the
// configuration uses (config.TestNamesAndTimeoutsRefused).
func TestNamesRefusedBeforeTheKernel(t *testing.T) {
	for _, name := range []string{"", "abcdefghijklmnop", "a/b", "a:b", "a b", "a\tb", "a\nb", "a\x00b", ".", "..", "tà", "a\xa0", "tap%d", "%"} {
		if err := CheckIfName(name); err == nil {
			t.Errorf("interface name %q accepted", name)
		}
		if _, err := OpenTAP(TAPConfig{Name: name}); err == nil || !strings.HasPrefix(err.Error(), "tap: name ") {
			t.Errorf("OpenTAP(%q): %v, want refused by its name", name, err)
		}
	}
	for _, name := range []string{"tap-c", "abcdefghijklmno", "eth0.100", "br_a", "x"} {
		if err := CheckIfName(name); err != nil {
			t.Errorf("interface name %q refused: %v", name, err)
		}
	}
	for _, name := range []string{"", "/proc/1/ns/net", "../../proc/1/ns/net", "..", ".", "a/b", "a\x00", "a b", "\xff", strings.Repeat("n", 256)} {
		if err := CheckNetnsName(name); err == nil {
			t.Errorf("netns %q accepted", name)
		}
		if name == "" {
			continue // no namespace: SetupLink leaves the link where it is
		}
		// lo is never moved: the name is refused first.
		if err := SetupLink("lo", LinkConfig{Netns: name}); err == nil || !strings.Contains(err.Error(), "netns name ") {
			t.Errorf("SetupLink with netns %q: %v, want refused by its name", name, err)
		}
	}
	for _, name := range []string{"tvs-client", "ns.1", "été", strings.Repeat("n", 255)} {
		if err := CheckNetnsName(name); err != nil {
			t.Errorf("netns %q refused: %v", name, err)
		}
	}
}
