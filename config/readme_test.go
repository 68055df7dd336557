package config

import (
	"os"
	"strings"
	"testing"
)

// README's minimal configuration (tapvs in the namespace it runs in) is a
// valid one: the block after its marker parses and has no netns.
func TestREADMEMinimalConfig(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "<!-- minimal config"
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("README.md has no %q block", marker)
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("the minimal config block does not end")
	}
	c, err := Parse(block)
	if err != nil {
		t.Fatalf("README's minimal config: %v", err)
	}
	if c.Client.Netns != "" || c.Server.Netns != "" || len(c.Services) != 1 {
		t.Fatalf("not the minimal config: %+v", c)
	}
}

// README's test command is the one CI runs, word for word, and it installs
// what the end-to-end tests need first (.ci/deps): on a fresh machine the
// command alone works.
func TestREADMETestCommandIsCIsAndInstallsFirst(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	var cmd string
	for _, l := range strings.Split(string(readme), "\n") {
		if strings.Contains(l, "go test -count=1 -timeout 20m ./...") {
			cmd, _, _ = strings.Cut(l, "#")
			cmd = strings.TrimSpace(cmd)
			break
		}
	}
	if !strings.HasPrefix(cmd, "bash .ci/deps && ") {
		t.Fatalf("README's test command %q does not install what the tests need first (bash .ci/deps)", cmd)
	}
	if !strings.Contains(string(ci), "\n"+cmd+" || ") {
		t.Fatalf(".ci/run does not run README's test command %q as written", cmd)
	}
	if _, err := os.Stat("../.ci/deps"); err != nil {
		t.Fatal(err)
	}
}
