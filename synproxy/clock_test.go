package synproxy

import (
	"testing"
	"time"
)

// A jar's own clock counts minutes since the Unix epoch.
func TestCookiesMinuteClock(t *testing.T) {
	before := uint32(time.Now().Unix() / 60)
	got := NewCookies().Minute()
	after := uint32(time.Now().Unix() / 60)
	if got < before || got > after {
		t.Fatalf("minute %d, want %d-%d", got, before, after)
	}
}
