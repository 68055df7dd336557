package takeover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ErrNoOld is Dial's error when no tapvs listens at the path: start cold.
var ErrNoOld = errors.New("no tapvs to take over")

// ErrRefused is the error for a takeover the old process refused.
var ErrRefused = errors.New("takeover refused")

// Session is the new side of a takeover.
type Session struct {
	cn       *conn
	Version  uint16
	Timeouts Timeouts
}

// Dial connects to the old process at path and agrees on a version.
// ErrNoOld: nothing listens there. ErrRefused: the old one said why not.
func Dial(path string) (*Session, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		if isNoListener(err) {
			return nil, fmt.Errorf("%w at %s: %v", ErrNoOld, path, err)
		}
		return nil, fmt.Errorf("takeover socket %s: %w", path, err)
	}
	s := &Session{cn: newConn(c), Timeouts: DefaultTimeouts}
	if err := s.hello(); err != nil {
		c.Close()
		return nil, fmt.Errorf("takeover socket %s: %w", path, err)
	}
	return s, nil
}

func (s *Session) hello() error {
	serr := s.cn.send(appendHello(nil, MinVersion, MaxVersion), nil, s.Timeouts.Step)
	// A refusal that needs no HELLO (the uid) may be waiting already,
	// the old side gone: it is the answer, not the failed send.
	m, _, err := s.cn.recv(s.Timeouts.Step, 0)
	if err != nil {
		if serr != nil {
			return serr
		}
		return fmt.Errorf("no answer to HELLO: %w", err)
	}
	switch {
	case first(m) == msgRefuse:
		return fmt.Errorf("%w: %s", ErrRefused, m[1:])
	case first(m) != msgAccept || len(m) != 3:
		return bad("expected ACCEPT, got %s", msgName(first(m)))
	}
	s.Version = binary.BigEndian.Uint16(m[1:])
	if s.Version < MinVersion || s.Version > MaxVersion {
		return bad("ACCEPT: version %d, this build speaks %d..%d", s.Version, MinVersion, MaxVersion)
	}
	return nil
}

// Taken is what the old process handed over.
type Taken struct {
	Queues []Queue
	FDs    []int // Queues[i]'s descriptor; the caller's to adopt or close
	// Table is false when the old process could not export its table.
	Table    bool
	Records  int
	NextHops []NextHop
	Keys     []byte // the old process's KEYS; nil: none came
}

// Receive says READY and takes the queues and records (each handed to
// record, which must copy what it keeps; maxRecord bounds a record). On
// error nothing is kept: the descriptors received are closed.
func (s *Session) Receive(record func([]byte) error, maxRecord int) (*Taken, error) {
	if err := s.cn.send([]byte{msgReady}, nil, s.Timeouts.Step); err != nil {
		return nil, err
	}
	// The old process freezes, then sends at once.
	m, fds, err := s.cn.recv(s.Timeouts.Step, MaxQueues)
	if err != nil {
		return nil, fmt.Errorf("waiting for QUEUES: %w", err)
	}
	if first(m) == msgRefuse {
		closeFDs(fds)
		return nil, fmt.Errorf("%w: %s", ErrRefused, m[1:])
	}
	qs, err := parseQueues(m, len(fds))
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	t := &Taken{Queues: qs, FDs: fds}
	for {
		m, extra, err := s.cn.recv(s.Timeouts.Step, 0)
		if err != nil {
			closeFDs(fds)
			return nil, fmt.Errorf("waiting for the table (%d records so far): %w", t.Records, err)
		}
		closeFDs(extra)
		switch first(m) {
		case msgRecords:
			err = parseRecords(m, maxRecord, func(rec []byte) error {
				t.Records++
				return record(rec)
			})
		case msgNextHops:
			err = parseNextHops(m, func(h NextHop) { t.NextHops = append(t.NextHops, h) })
			if err == nil && len(t.NextHops) > MaxNextHops {
				err = bad("NEXTHOPS: more than %d", MaxNextHops)
			}
		case msgKeys:
			if t.Keys != nil {
				err = bad("KEYS twice")
			} else {
				t.Keys, err = parseKeys(m, s.Version)
			}
		case msgEnd:
			if len(m) != 6 || m[5] > 1 {
				err = bad("END: %d bytes", len(m))
			} else if n := int(binary.BigEndian.Uint32(m[1:])); n != t.Records {
				err = bad("END: %d records announced, %d received", n, t.Records)
			} else {
				t.Table = m[5] == 1
				return t, nil
			}
		default:
			err = bad("expected RECORDS, NEXTHOPS, KEYS or END, got %s", msgName(first(m)))
		}
		if err != nil {
			closeFDs(fds)
			s.Abort(err.Error())
			return nil, err
		}
	}
}

// Done tells the old process that this one serves: it exits.
func (s *Session) Done() error { return s.cn.send([]byte{msgDone}, nil, s.Timeouts.Step) }

// Abort tells the old process to serve on, and ends the session.
func (s *Session) Abort(reason string) {
	if len(reason) > 512 {
		reason = reason[:512]
	}
	s.cn.send(append([]byte{msgAbort}, reason...), nil, s.Timeouts.Step)
	s.Close()
}

// WaitGone waits (at most d) for the old process to close the session,
// which it does as it exits.
func (s *Session) WaitGone(d time.Duration) error {
	deadline := time.Now().Add(d)
	for range 100 {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		m, fds, err := s.cn.recv(left, 0)
		closeFDs(fds)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("waiting for the old tapvs to exit: %w", err)
		}
		_ = m // nothing is sent after DONE: ignored
	}
	return fmt.Errorf("the old tapvs is still there %v after DONE", d)
}

// Close ends the session.
func (s *Session) Close() error { return s.cn.c.Close() }
