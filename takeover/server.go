package takeover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/tun"
)

// Source is the running tapvs as the old side of a takeover sees it.
type Source interface {
	// Freeze stops every reader of the queues (between two batches) and
	// the timers that write frames or change the table, and returns the
	// queues to hand over with their descriptions.
	Freeze() ([]Queue, []tun.Passer, error)
	// Export calls yield with each connection record, encoded, until
	// yield returns false; it reports false if this build cannot export
	// its table (then the new process starts with an empty one).
	Export(yield func(rec []byte) bool) bool
	// NextHops calls yield with each real server's resolved next hop.
	NextHops(yield func(NextHop) bool)
	// Keys are the secrets the successor needs to finish what this
	// process began (SYNPROXY's cookie keys), opaque here, at most
	// MaxKeys bytes; nil: none to send.
	Keys() []byte
	// Resume undoes Freeze: the takeover failed and this process serves on.
	Resume() error
}

// Timeouts bound each wait of a session.
type Timeouts struct {
	Step time.Duration // each message of the handshake
	Done time.Duration // from END until DONE: the new process starts its data path
}

// DefaultTimeouts are the server's and the client's unless a test sets others.
var DefaultTimeouts = Timeouts{Step: 2 * time.Second, Done: 10 * time.Second}

// Server is the old side: it listens next to the control socket and hands
// everything over to the first peer that completes a session.
type Server struct {
	ln        *net.UnixListener
	src       Source
	log       *slog.Logger
	Timeouts  Timeouts
	handed    chan struct{} // closed once a successor said DONE
	successor *net.UnixConn // the session of the process that took over; closed by Close
	wg        sync.WaitGroup
	closed    chan struct{}
	once      sync.Once

	mu     sync.Mutex
	ended  map[string]int // sessions by how they ended, for tests and the log
	active *net.UnixConn  // the session under way, ended by Close
}

// Listen opens the takeover socket at path (mode 0600, SOCK_SEQPACKET) and
// serves sessions one at a time.
func Listen(path string, src Source, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("takeover socket %s: %w", path, err)
	}
	if c, err := net.Dial("unixpacket", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("takeover socket %s: another tapvs is listening there", path)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("takeover socket %s: a %s is there, not a socket: not removed", path, fi.Mode().Type())
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("takeover socket %s: %w", path, err)
		}
	}
	old := unix.Umask(0o077) // no window in which the socket is open to others
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("takeover socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("takeover socket %s: %w", path, err)
	}
	s := &Server{ln: ln, src: src, log: log, Timeouts: DefaultTimeouts, handed: make(chan struct{}),
		closed: make(chan struct{}), ended: map[string]int{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serve()
	}()
	return s, nil
}

// HandedOver is closed once a new process has taken over: this one must
// exit without its teardown (see Source).
func (s *Server) HandedOver() <-chan struct{} { return s.handed }

// Close stops listening (and removes the socket). After a takeover it
// also ends the successor's session: call it last, once everything the
// successor will open again is closed.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closed)
		s.ln.Close()
		s.mu.Lock()
		if s.active != nil {
			s.active.Close() // a session under way ends (and resumes)
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
	if s.successor != nil {
		s.successor.Close()
	}
}

// Ended reports how many sessions ended how ("done", "refused", "aborted").
func (s *Server) Ended(how string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended[how]
}

func (s *Server) count(how string) {
	s.mu.Lock()
	s.ended[how]++
	s.mu.Unlock()
}

func (s *Server) serve() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("takeover socket: accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		s.active = c
		s.mu.Unlock()
		select {
		case <-s.closed: // Close ran before active was set
			c.Close()
		default:
		}
		ok := s.session(c)
		s.mu.Lock()
		s.active = nil
		s.mu.Unlock()
		if ok {
			// The session stays open until Close: its end tells the new
			// process that this one has let go of everything (control
			// socket, metrics port, BGP session) and it may take them.
			s.successor = c
			s.count("done")
			close(s.handed)
			return
		}
		c.Close()
	}
}

// session runs one takeover from this side. It reports whether the peer
// took over; otherwise this process serves on as before.
func (s *Server) session(c *net.UnixConn) bool {
	cn := newConn(c)
	log := s.log
	cred, err := peer(c)
	if err != nil {
		s.count("refused")
		log.Warn("takeover refused: cannot read the peer's credentials", "err", err)
		return false
	}
	log = log.With("peer_pid", cred.Pid)
	refuse := func(reason string) bool {
		s.count("refused")
		log.Warn("takeover refused", "reason", reason)
		cn.send(append([]byte{msgRefuse}, reason...), nil, s.Timeouts.Step)
		// Until the peer has read it and gone (bounded): closing with
		// its messages unread would reset the connection, and the
		// refusal with it, before the peer reads it.
		for range 4 {
			if _, _, err := cn.recv(s.Timeouts.Step, 0); err != nil {
				break
			}
		}
		return false
	}
	if uid := uint32(os.Getuid()); cred.Uid != uid && cred.Uid != 0 {
		return refuse(fmt.Sprintf("uid %d may not take over a tapvs run by uid %d", cred.Uid, uid))
	}
	m, _, err := cn.recv(s.Timeouts.Step, 0)
	if err != nil {
		s.count("refused")
		log.Warn("takeover: no HELLO", "err", err)
		return false
	}
	lo, hi, err := parseHello(m)
	if err != nil {
		return refuse(err.Error())
	}
	if hi < MinVersion || lo > MaxVersion {
		return refuse(fmt.Sprintf("version: this tapvs speaks takeover protocol %d..%d, the new one %d..%d: restart cold (open connections are lost)",
			MinVersion, MaxVersion, lo, hi))
	}
	version := min(hi, MaxVersion)
	if err := cn.send(binary.BigEndian.AppendUint16([]byte{msgAccept}, version), nil, s.Timeouts.Step); err != nil {
		s.count("aborted")
		log.Warn("takeover aborted", "err", err)
		return false
	}
	if m, _, err = cn.recv(s.Timeouts.Step, 0); err != nil || first(m) != msgReady || len(m) != 1 {
		s.count("aborted")
		log.Warn("takeover aborted before READY", "err", err, "got", msgName(first(m)))
		return false
	}
	log.Info("takeover: a new tapvs is ready; freezing the data path")
	frozen := time.Now()
	qs, devs, err := s.src.Freeze()
	if err != nil {
		s.resume(log)
		return refuse("cannot hand over: " + err.Error())
	}
	sent, err := s.send(cn, version, qs, devs)
	if err != nil {
		s.count("aborted")
		log.Warn("takeover aborted while sending; serving on", "err", err)
		s.resume(log)
		return false
	}
	m, _, err = cn.recv(s.Timeouts.Done, 0)
	if err == nil && first(m) == msgDone && len(m) == 1 {
		log.Info("takeover done: the new tapvs serves; exiting without teardown", "records", sent, "frozen", time.Since(frozen).Round(time.Microsecond))
		return true
	}
	s.count("aborted")
	switch {
	case err == nil && first(m) == msgAbort:
		log.Warn("takeover aborted by the new tapvs; serving on", "reason", string(m[1:]))
	case errors.Is(err, os.ErrDeadlineExceeded):
		// It holds the queues and may read them: it must be gone before
		// this process reads again.
		log.Warn("takeover: the new tapvs did not finish in time; killing it and serving on", "timeout", s.Timeouts.Done)
		if cred.Pid == int32(os.Getpid()) {
			log.Error("takeover: the new tapvs is this process (a test?): not killed")
		} else if kerr := killPeer(cred.Pid); kerr != nil {
			log.Error("takeover: could not kill the new tapvs: two processes may read the TAPs", "err", kerr)
		}
	case errors.Is(err, io.EOF) || err != nil:
		log.Warn("takeover aborted: the new tapvs went away; serving on", "err", err)
	default:
		log.Warn("takeover aborted: unexpected reply; serving on", "got", msgName(first(m)))
	}
	s.resume(log)
	return false
}

func (s *Server) resume(log *slog.Logger) {
	if err := s.src.Resume(); err != nil {
		log.Error("takeover: resuming the data path failed", "err", err)
	}
}

// send sends QUEUES with the descriptors, the records, the next hops, the
// keys (version 2 on) and END; it returns how many records went.
func (s *Server) send(cn *conn, version uint16, qs []Queue, devs []tun.Passer) (int, error) {
	body, err := appendQueues(nil, qs)
	if err != nil {
		return 0, err
	}
	fds := make([]int, 0, len(devs))
	defer func() { closeFDs(fds) }() // the copies sent: the peer has its own
	for _, d := range devs {
		fd, err := d.Dup()
		if err != nil {
			return 0, err
		}
		fds = append(fds, fd)
	}
	if err := cn.send(body, fds, s.Timeouts.Step); err != nil {
		return 0, err
	}
	n := 0
	recs := batch{cn: cn, timeout: s.Timeouts.Step, msg: []byte{msgRecords}}
	exported := s.src.Export(func(rec []byte) bool {
		if len(rec) == 0 || len(rec) > 0xffff {
			recs.err = fmt.Errorf("a record of %d bytes", len(rec))
			return false
		}
		n++
		return recs.add(binary.BigEndian.AppendUint16(nil, uint16(len(rec))), rec)
	})
	if err := recs.flush(); err != nil {
		return n, err
	}
	hops, count := batch{cn: cn, timeout: s.Timeouts.Step, msg: []byte{msgNextHops}}, 0
	s.src.NextHops(func(h NextHop) bool {
		if count++; count > MaxNextHops {
			return false
		}
		a := h.Addr.As16()
		return hops.add(a[:], h.MAC[:])
	})
	if err := hops.flush(); err != nil {
		return n, err
	}
	if k := s.src.Keys(); version >= keysVersion && len(k) > 0 {
		if len(k) > MaxKeys {
			return n, fmt.Errorf("keys of %d bytes, at most %d", len(k), MaxKeys)
		}
		if err := cn.send(append([]byte{msgKeys}, k...), nil, s.Timeouts.Step); err != nil {
			return n, err
		}
	}
	end := binary.BigEndian.AppendUint32([]byte{msgEnd}, uint32(n))
	table := byte(0)
	if exported {
		table = 1
	}
	return n, cn.send(append(end, table), nil, s.Timeouts.Step)
}

// batch fills messages of one type (its first byte) with entries, sending
// each when the next entry would not fit; the first error stops it.
type batch struct {
	cn      *conn
	timeout time.Duration
	msg     []byte
	err     error
}

// add appends an entry (its parts, whole); false once sending failed.
func (b *batch) add(parts ...[]byte) bool {
	if b.err != nil {
		return false
	}
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	if len(b.msg)+size > MaxMessage {
		if b.err = b.cn.send(b.msg, nil, b.timeout); b.err != nil {
			return false
		}
		b.msg = b.msg[:1]
	}
	for _, p := range parts {
		b.msg = append(b.msg, p...)
	}
	return true
}

// flush sends what is left, and reports the first error.
func (b *batch) flush() error {
	if b.err == nil && len(b.msg) > 1 {
		b.err = b.cn.send(b.msg, nil, b.timeout)
	}
	return b.err
}
