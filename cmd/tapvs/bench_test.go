package main

import (
	"os"
	"path/filepath"
	"testing"
)

// tapvs bench writes, by default, where the committed results live, so a
// run from the repository's root updates them in place.
func TestBenchDefaultOut(t *testing.T) {
	f := benchCmd().Flags().Lookup("out")
	if f == nil {
		t.Fatal("tapvs bench has no --out")
	}
	if f.DefValue != "bench/results" {
		t.Errorf("--out defaults to %q, want bench/results", f.DefValue)
	}
	// From cmd/tapvs, the repository's root is two up.
	if _, err := os.Stat(filepath.Join("..", "..", f.DefValue, "results.md")); err != nil {
		t.Errorf("the default --out holds no results: %v", err)
	}
}
