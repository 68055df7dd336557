package tun

import (
	"errors"
	"os"
	"testing"
)

// A queue detached for polling reads and writes through its own descriptor,
// reports an empty queue as 0 frames, and once closed fails every call
// instead of reaching a file that reuses the descriptor's number.
func TestQueueFileDetach(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	q := newTapQueue("test", r, 0)
	buf := make([]byte, 16)
	fd, err := q.Detach()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := q.Detach(); err != nil || again != fd {
		t.Fatalf("second Detach: %d, %v (first %d)", again, err, fd)
	}
	if n, err := q.tryRead(buf); n != 0 || err != nil {
		t.Fatalf("empty queue: %d, %v", n, err)
	}
	if _, err := q.read(buf); err == nil {
		t.Fatal("a detached queue was read through Go's netpoller")
	}
	if _, err := w.Write([]byte("frame")); err != nil {
		t.Fatal(err)
	}
	if n, err := q.tryRead(buf); n != 5 || err != nil || string(buf[:5]) != "frame" {
		t.Fatalf("tryRead: %d %q, %v", n, buf[:n], err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// The number is free now; whatever takes it must not see our calls.
	other, err := os.CreateTemp(t.TempDir(), "reuse")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := q.write([]byte("late")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if _, err := q.tryRead(buf); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if err := q.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	if st, _ := other.Stat(); st.Size() != 0 {
		t.Fatalf("%d bytes reached the file that reused the descriptor", st.Size())
	}
}
