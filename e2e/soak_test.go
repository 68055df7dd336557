package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/tapvs/tapvs/soak"
)

// The soak for a minute (`tapvs soak --duration 1m`): mixed TCP and UDP,
// short and long connections, SYNPROXY, reloads, real-server restarts and a
// SYN flood burst; then the table drains, goroutines and memory come back
// within the stated bounds of the baseline, and every client error and every
// drop reason that moved is explained by a fault the soak made.
func TestSoak(t *testing.T) {
	need(t)
	var rnd [2]byte
	rand.Read(rnd[:])
	prefix := nsPrefix + hex.EncodeToString(rnd[:])
	claim(t, prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep, err := soak.Run(ctx, soak.Options{Duration: time.Minute, Prefix: prefix, Out: testWriter{t}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	// Run's checks are the soak's; these say the run was a soak at all.
	if rep.Reloads < 5 || rep.Restarts < 2 || rep.Flood.Sent == 0 {
		t.Fatalf("too few faults: %d reloads, %d restarts, %d flood frames", rep.Reloads, rep.Restarts, rep.Flood.Sent)
	}
}
