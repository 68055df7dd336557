package takeover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/tun"
)

// fakeQueue stands for a TAP queue: one end of a socketpair, so that what
// is written to the descriptor passed shows at the other end (it is the
// same open file).
type fakeQueue struct {
	tun.Device
	f *os.File
}

func (q *fakeQueue) Dup() (int, error) {
	raw, err := q.f.SyscallConn()
	if err != nil {
		return -1, err
	}
	d, derr := -1, error(nil)
	raw.Control(func(fd uintptr) { d, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	return d, derr
}
func (q *fakeQueue) SetReadDeadline(t time.Time) error { return nil }

// fakeSource counts Freeze and Resume and exports records.
type fakeSource struct {
	mu        sync.Mutex
	freezes   int
	resumes   int
	frozen    bool
	qs        []Queue
	devs      []tun.Passer
	far       []*os.File // the socketpairs' other ends
	records   [][]byte
	hops      []NextHop
	keys      []byte
	noTable   bool
	freezeErr error
}

func (s *fakeSource) Freeze() ([]Queue, []tun.Passer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.freezeErr != nil {
		return nil, nil, s.freezeErr
	}
	s.freezes++
	s.frozen = true
	return s.qs, s.devs, nil
}

func (s *fakeSource) Export(yield func([]byte) bool) bool {
	if s.noTable {
		return false
	}
	for _, r := range s.records {
		if !yield(r) {
			break
		}
	}
	return true
}

func (s *fakeSource) NextHops(yield func(NextHop) bool) {
	for _, h := range s.hops {
		if !yield(h) {
			return
		}
	}
}

func (s *fakeSource) Keys() []byte { return s.keys }

func (s *fakeSource) Resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resumes++
	s.frozen = false
	return nil
}

func (s *fakeSource) counts() (freezes, resumes int, frozen bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.freezes, s.resumes, s.frozen
}

func newSource(t *testing.T, n int) *fakeSource {
	s := &fakeSource{}
	for i := range n {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		near, far := os.NewFile(uintptr(fds[0]), "near"), os.NewFile(uintptr(fds[1]), "far")
		t.Cleanup(func() { near.Close(); far.Close() })
		s.devs = append(s.devs, &fakeQueue{f: near})
		s.far = append(s.far, far)
		s.qs = append(s.qs, Queue{Side: uint8(i % 2), Index: uint8(i / 2), VNetHdrLen: 10, MAC: [6]byte{2, 0, 0, 0, 0, byte(i % 2)}, Name: fmt.Sprintf("tk-%d", i%2)})
	}
	return s
}

func listen(t *testing.T, src Source) (*Server, string) {
	path := filepath.Join(t.TempDir(), "t.takeover.sock")
	srv, err := Listen(path, src, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.Timeouts = Timeouts{Step: time.Second, Done: 2 * time.Second}
	t.Cleanup(srv.Close)
	return srv, path
}

func collect(into *[][]byte) func([]byte) error {
	return func(r []byte) error {
		*into = append(*into, append([]byte(nil), r...))
		return nil
	}
}

// A takeover hands every queue's descriptor (the same open file: written
// on the copy received, it reads at the far end), its description and the
// records, then the old side learns of DONE and is never resumed.
func TestTakeoverHandsQueuesAndRecords(t *testing.T) {
	src := newSource(t, 4)
	for i := range 3000 { // several RECORDS messages
		src.records = append(src.records, []byte(strings.Repeat(string(rune('a'+i%26)), 1+i%200)))
	}
	for i := range 3000 { // several NEXTHOPS messages
		src.hops = append(src.hops, NextHop{Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), MAC: [6]byte{2, 0, 0, 0, byte(i >> 8), byte(i)}})
	}
	src.keys = []byte("the cookie keys")
	srv, path := listen(t, src)
	s, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Version != 2 {
		t.Fatalf("version %d", s.Version)
	}
	var got [][]byte
	tk, err := s.Receive(collect(&got), 1024)
	if err != nil {
		t.Fatal(err)
	}
	if f, r, frozen := src.counts(); f != 1 || r != 0 || !frozen {
		t.Fatalf("freezes %d resumes %d frozen %v", f, r, frozen)
	}
	if len(tk.FDs) != 4 || len(tk.Queues) != 4 || !tk.Table || tk.Records != len(src.records) {
		t.Fatalf("taken: %d fds, %d queues, table %v, %d records", len(tk.FDs), len(tk.Queues), tk.Table, tk.Records)
	}
	for i := range src.records {
		if string(got[i]) != string(src.records[i]) {
			t.Fatalf("record %d: %q, want %q", i, got[i], src.records[i])
		}
	}
	if string(tk.Keys) != string(src.keys) {
		t.Fatalf("keys %q, want %q", tk.Keys, src.keys)
	}
	if len(tk.NextHops) != len(src.hops) {
		t.Fatalf("%d next hops, want %d", len(tk.NextHops), len(src.hops))
	}
	for i, h := range tk.NextHops {
		if h != src.hops[i] {
			t.Fatalf("next hop %d: %v, want %v", i, h, src.hops[i])
		}
	}
	for i, q := range tk.Queues {
		if q != src.qs[i] {
			t.Fatalf("queue %d: %+v, want %+v", i, q, src.qs[i])
		}
		msg := fmt.Sprintf("frame %d", i)
		if _, err := unix.Write(tk.FDs[i], []byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		src.far[i].SetReadDeadline(time.Now().Add(time.Second))
		n, err := src.far[i].Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("queue %d: the descriptor passed is not the same file: %q, %v", i, buf[:n], err)
		}
		// The sender's copy stays non-blocking (no Fd() anywhere).
		if fl, _ := unix.FcntlInt(uintptr(tk.FDs[i]), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
			t.Fatalf("queue %d turned blocking", i)
		}
		unix.Close(tk.FDs[i])
	}
	select {
	case <-srv.HandedOver():
		t.Fatal("handed over before DONE")
	default:
	}
	if err := s.Done(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.HandedOver():
	case <-time.After(5 * time.Second):
		t.Fatal("DONE did not hand over")
	}
	// The session stays open until the old side has let go (Close).
	gone := make(chan error, 1)
	go func() { gone <- s.WaitGone(5 * time.Second) }()
	select {
	case err := <-gone:
		t.Fatalf("WaitGone returned before the old side closed: %v", err)
	default:
	}
	srv.Close()
	if err := <-gone; err != nil {
		t.Fatal(err)
	}
	if _, r, _ := src.counts(); r != 0 || srv.Ended("done") != 1 {
		t.Fatalf("resumed %d times after DONE; done %d", r, srv.Ended("done"))
	}
}

// A new process that aborts, or goes away, before DONE leaves the old one
// serving: resumed, not handed over, and ready for the next session.
func TestTakeoverFailureResumes(t *testing.T) {
	src := newSource(t, 2)
	srv, path := listen(t, src)
	for i, end := range []func(*Session){
		func(s *Session) { s.Abort("config refused") },
		func(s *Session) { s.Close() }, // died
	} {
		s, err := Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		tk, err := s.Receive(collect(new([][]byte)), 1024)
		if err != nil {
			t.Fatal(err)
		}
		closeFDs(tk.FDs)
		end(s)
		if !eventually(func() bool { _, r, frozen := src.counts(); return r == i+1 && !frozen }) {
			f, r, frozen := src.counts()
			t.Fatalf("session %d: freezes %d resumes %d frozen %v", i, f, r, frozen)
		}
	}
	select {
	case <-srv.HandedOver():
		t.Fatal("handed over without DONE")
	default:
	}
	if srv.Ended("aborted") != 2 {
		t.Fatalf("aborted %d", srv.Ended("aborted"))
	}
	// And a later session still works.
	s, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tk, err := s.Receive(collect(new([][]byte)), 1024)
	if err != nil {
		t.Fatal(err)
	}
	closeFDs(tk.FDs)
	if err := s.Done(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.HandedOver():
	case <-time.After(5 * time.Second):
		t.Fatal("the third session did not hand over")
	}
}

// A new process that goes quiet after taking the queues is killed before
// the old one reads again (two readers would split the queues' frames).
// The quiet process here is a child of the test: `tapvs-takeover-quiet`.
func TestTakeoverQuietSuccessorKilled(t *testing.T) {
	if path := os.Getenv("TAKEOVER_QUIET_PATH"); path != "" {
		s, err := Dial(path)
		if err != nil {
			os.Exit(3)
		}
		if _, err := s.Receive(func([]byte) error { return nil }, 1024); err != nil {
			os.Exit(4)
		}
		os.Stdout.WriteString("received\n")
		time.Sleep(time.Minute) // quiet: never DONE
		os.Exit(5)
	}
	src := newSource(t, 2)
	srv, path := listen(t, src)
	srv.Timeouts.Done = 500 * time.Millisecond
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := newCmd(exe, "-test.run=^TestTakeoverQuietSuccessorKilled$")
	cmd.Env = append(os.Environ(), "TAKEOVER_QUIET_PATH="+path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee interface{ Sys() any }
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
				break
			}
		}
		t.Fatalf("the quiet successor ended with %v, not SIGKILL", err)
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the quiet successor was not killed")
	}
	if !eventually(func() bool { _, r, frozen := src.counts(); return r == 1 && !frozen }) {
		t.Fatal("not resumed after killing the quiet successor")
	}
}

// Refusals: a version this build does not speak, a HELLO that is not
// one, and a freeze that cannot be done. Each names why in one line; none
// leaves the old side frozen.
func TestTakeoverRefusals(t *testing.T) {
	src := newSource(t, 2)
	_, path := listen(t, src)
	raw := func(hello []byte) string {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1024)
		n, err := c.Read(buf)
		if err != nil || n == 0 || buf[0] != msgRefuse {
			t.Fatalf("reply to %q: %q, %v", hello, buf[:n], err)
		}
		return string(buf[1:n])
	}
	if r := raw(appendHello(nil, 3, 4)); !strings.Contains(r, "version") || !strings.Contains(r, "1..2") || !strings.Contains(r, "3..4") {
		t.Fatalf("version mismatch: %q", r)
	}
	if r := raw([]byte("GET / HTTP/1.0\r\n")); !strings.Contains(r, "not a HELLO") {
		t.Fatalf("garbage: %q", r)
	}
	if r := raw(binary.BigEndian.AppendUint16(appendHello(nil, 1, 1)[:1+len(magic)+2], 0)); !strings.Contains(r, "versions 1..0") {
		t.Fatalf("inverted range: %q", r)
	}
	src.mu.Lock()
	src.freezeErr = errors.New("busy polling: the readers cannot be paused")
	src.mu.Unlock()
	s, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Receive(collect(new([][]byte)), 1024); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "busy polling") {
		t.Fatalf("freeze refused: %v", err)
	}
	if f, _, frozen := src.counts(); f != 0 || frozen {
		t.Fatal("frozen after a refusal")
	}
}

// No tapvs at the path (no file, or a socket its process left) is
// ErrNoOld: start cold.
func TestTakeoverNoOld(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dial(filepath.Join(dir, "none.sock")); !errors.Is(err, ErrNoOld) {
		t.Fatalf("no file: %v", err)
	}
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(stale); !errors.Is(err, ErrNoOld) {
		t.Fatalf("stale socket: %v", err)
	}
}

// The old process dying mid-transfer (after QUEUES, before END): the new
// one gets an error and keeps no descriptor.
func TestTakeoverOldDiesMidTransfer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	src := newSource(t, 2)
	dead := make(chan struct{})
	go func() {
		defer close(dead)
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		cn := newConn(c)
		cn.recv(time.Second, 0)
		cn.send(binary.BigEndian.AppendUint16([]byte{msgAccept}, 1), nil, time.Second)
		cn.recv(time.Second, 0)
		body, _ := appendQueues(nil, src.qs)
		fds := []int{}
		for _, d := range src.devs {
			fd, _ := d.Dup()
			fds = append(fds, fd)
		}
		cn.send(body, fds, time.Second)
		closeFDs(fds)
		// dies
	}()
	s, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Receive(collect(new([][]byte)), 1024); err == nil {
		t.Fatal("a transfer cut before END was taken")
	}
	<-dead
	for i, d := range src.devs {
		if n := copies(t, d.(*fakeQueue).f); n != 1 {
			t.Fatalf("queue %d: %d descriptors of it open: the copies received were kept", i, n)
		}
	}
}

// copies counts this process's descriptors of f's open file (by inode).
func copies(t *testing.T, f *os.File) int {
	var want unix.Stat_t
	raw, _ := f.SyscallConn()
	raw.Control(func(fd uintptr) { unix.Fstat(int(fd), &want) })
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		var st unix.Stat_t
		if unix.Stat("/proc/self/fd/"+e.Name(), &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			n++
		}
	}
	return n
}

func eventually(cond func() bool) bool {
	for range 500 {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// A peer of another uid than the old process's (and not root) is refused
// even if the socket's mode lets it connect: SO_PEERCRED, checked before
// anything is read. The peer is a child of the test run as nobody.
func TestTakeoverOtherUIDRefused(t *testing.T) {
	if path := os.Getenv("TAKEOVER_UID_PATH"); path != "" {
		_, err := Dial(path)
		if errors.Is(err, ErrRefused) && strings.Contains(err.Error(), "uid 65534") {
			os.Exit(0)
		}
		os.Stderr.WriteString(fmt.Sprint(err))
		os.Exit(6)
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it runs a child as another uid (CI runs as root)")
	}
	src := newSource(t, 2)
	dir, err := os.MkdirTemp("", "takeover-uid")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "t.sock")
	srv, err := Listen(path, src, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// Open to all, so that only the credential check stands in the way.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary must be readable by nobody: a copy in dir.
	bin := filepath.Join(dir, "takeover.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := newCmd(bin, "-test.run=^TestTakeoverOtherUIDRefused$")
	cmd.Env = append(os.Environ(), "TAKEOVER_UID_PATH="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the child as nobody: %v: %s", err, out)
	}
	if f, _, _ := src.counts(); f != 0 || srv.Ended("refused") != 1 {
		t.Fatalf("freezes %d, refused %d", f, srv.Ended("refused"))
	}
}

// A new process that speaks only version 1 gets no KEYS (it would refuse
// the message): the old side sends QUEUES, RECORDS, NEXTHOPS and END.
func TestTakeoverVersion1GetsNoKeys(t *testing.T) {
	src := newSource(t, 2)
	src.keys = []byte("the cookie keys")
	src.records = [][]byte{[]byte("a record")}
	_, path := listen(t, src)
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cn := newConn(c)
	if err := cn.send(appendHello(nil, 1, 1), nil, time.Second); err != nil {
		t.Fatal(err)
	}
	m, _, err := cn.recv(time.Second, 0)
	if err != nil || first(m) != msgAccept || binary.BigEndian.Uint16(m[1:]) != 1 {
		t.Fatalf("ACCEPT: %x, %v; want version 1", m, err)
	}
	if err := cn.send([]byte{msgReady}, nil, time.Second); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 10 {
		m, fds, err := cn.recv(time.Second, MaxQueues)
		closeFDs(fds)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, msgName(first(m)))
		if first(m) == msgEnd {
			break
		}
	}
	if strings.Join(got, " ") != "QUEUES RECORDS END" {
		t.Fatalf("version 1 got %v, want QUEUES RECORDS END", got)
	}
	cn.send([]byte{msgAbort}, nil, time.Second)
}

// KEYS is refused in version 1, empty or past MaxKeys; its body is copied.
func TestParseKeys(t *testing.T) {
	m := append([]byte{msgKeys}, "keys"...)
	k, err := parseKeys(m, 2)
	if err != nil || string(k) != "keys" {
		t.Fatalf("%q, %v", k, err)
	}
	m[1] = 'K'
	if string(k) != "keys" {
		t.Fatal("the keys alias the message")
	}
	for name, tc := range map[string]struct {
		m []byte
		v uint16
	}{
		"version 1": {m, 1},
		"empty":     {[]byte{msgKeys}, 2},
		"too long":  {append([]byte{msgKeys}, make([]byte, MaxKeys+1)...), 2},
		"not KEYS":  {[]byte{msgEnd, 1}, 2},
	} {
		if _, err := parseKeys(tc.m, tc.v); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := parseKeys(append([]byte{msgKeys}, make([]byte, MaxKeys)...), 2); err != nil {
		t.Errorf("MaxKeys bytes: %v", err)
	}
}
