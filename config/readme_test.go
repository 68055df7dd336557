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
