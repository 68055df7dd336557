package tun

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vishvananda/netns"
)

// The names tapvs hands the kernel: an interface's and a named network
// namespace's. Each is checked here, where it meets the kernel, and by the
// configuration (package config), which names the field: a name the kernel
// would refuse, cut short or read as a path never gets that far.

// MaxIfNameLen is the longest interface name: IFNAMSIZ (16) with its NUL.
const MaxIfNameLen = 15

// CheckIfName says why name cannot be an interface's name, or nil. The
// kernel refuses an empty name, ".", "..", and one with '/', ':' or white
// space (dev_valid_name); TUNSETIFF cuts a longer one to 15 bytes, and a
// NUL ends it early. A '%' makes it a template to TUNSETIFF ("tap%d" is the
// first free tapN), so the TAP tapvs made would not be the one the file
// names. tapvs also keeps to printable ASCII: any other byte (a UTF-8
// character among them) is either refused by the kernel (0xA0 is white
// space to it) or unreadable in `ip link`.
func CheckIfName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > MaxIfNameLen:
		return fmt.Errorf("is %d bytes long: an interface name is at most %d (IFNAMSIZ less its NUL)", len(name), MaxIfNameLen)
	case name == "." || name == "..":
		return errors.New("is . or .., a directory's name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == '/' || c == ':' || c == '%' {
			return fmt.Errorf("has %q at byte %d: an interface name is printable ASCII without white space, '/', ':' or '%%' (a template to the kernel)", name[i:i+1], i)
		}
	}
	return nil
}

// MaxNetnsNameLen is the longest name of a named network namespace: a file
// name in /run/netns (NAME_MAX).
const MaxNetnsNameLen = 255

// CheckNetnsName says why name cannot name a network namespace, or nil. A
// name is what `ip netns add` made: a file in /run/netns. A '/' (or "..")
// would make it a path that leaves /run/netns (../../proc/1/ns/net is PID
// 1's namespace), so none is taken.
func CheckNetnsName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > MaxNetnsNameLen:
		return fmt.Errorf("is %d bytes long: a namespace's name is at most %d", len(name), MaxNetnsNameLen)
	case name == "." || name == "..":
		return errors.New("is . or .., a directory's name")
	case strings.Contains(name, "/"):
		return errors.New("has a '/': give the name of a namespace in /run/netns (as `ip netns` lists them), not a path")
	case !utf8.ValidString(name):
		return errors.New("is not UTF-8")
	}
	for i, r := range name {
		if !unicode.IsPrint(r) || r == ' ' {
			return fmt.Errorf("has the character %U at byte %d: a namespace's name is printable, without spaces", r, i)
		}
	}
	return nil
}

// NetnsByName opens the named network namespace (in /run/netns), after
// checking its name.
func NetnsByName(name string) (netns.NsHandle, error) {
	if err := CheckNetnsName(name); err != nil {
		return -1, fmt.Errorf("netns name %w", err)
	}
	return netns.GetFromName(name)
}
