package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"golang.org/x/sys/unix"

	"github.com/tapvs/tapvs/control/api"
	"github.com/tapvs/tapvs/nat"
)

// Server serves a Manager over HTTP.
type Server struct {
	m   *Manager
	log *slog.Logger
	srv *http.Server
	ln  net.Listener
}

// NewServer returns a server for m.
func NewServer(m *Manager, log *slog.Logger) *Server {
	s := &Server{m: m, log: log}
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Listen serves on a unix socket at path, mode 0600. Connections from users
// other than tapvs's own and root are refused (SO_PEERCRED).
func (s *Server) Listen(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: another tapvs is listening there", path)
	}
	if err := removeStale(path); err != nil {
		return err
	}
	old := unix.Umask(0o077) // no window in which the socket is open to others
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	s.ln = &peerCheck{Listener: ln, log: s.log}
	go s.srv.Serve(s.ln)
	s.log.Info("control API listening", "socket", path)
	return nil
}

// removeStale removes what a tapvs that ended without Close left at path:
// a socket nobody listens on (Listen has just tried it). Anything else
// there (a regular file, a directory, a link) is the operator's, and is
// refused by the field that names it rather than deleted.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("control.socket: %s: %w", path, err)
	case fi.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("control.socket: %s exists and is not a socket (%s): tapvs removes only a stale socket of its own; pick another path", path, fileKind(fi.Mode()))
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("control.socket: removing the stale socket %s: %w", path, err)
	}
	return nil
}

// fileKind names what a path is, for a refusal.
func fileKind(m os.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case os.ModeDir:
		return "a directory"
	case os.ModeSymlink:
		return "a symbolic link"
	case os.ModeNamedPipe:
		return "a named pipe"
	case os.ModeDevice, os.ModeDevice | os.ModeCharDevice:
		return "a device"
	}
	return m.Type().String()
}

// Close stops serving and removes the socket.
func (s *Server) Close() {
	s.srv.Close()
	if s.ln != nil {
		if ul, ok := s.ln.(*peerCheck).Listener.(*net.UnixListener); ok {
			os.Remove(ul.Addr().String())
		}
	}
}

// peerCheck refuses peers that are neither tapvs's user nor root.
type peerCheck struct {
	net.Listener
	log *slog.Logger
}

func (p *peerCheck) Accept() (net.Conn, error) {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return c, nil
		}
		raw, err := uc.SyscallConn()
		if err != nil {
			c.Close()
			continue
		}
		var cred *unix.Ucred
		var cerr error
		raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
		if cerr != nil || (cred.Uid != 0 && int(cred.Uid) != os.Getuid()) {
			p.log.Warn("control API: refused a peer", "uid", uidOf(cred), "err", cerr)
			c.Close()
			continue
		}
		return c, nil
	}
}

func uidOf(c *unix.Ucred) int {
	if c == nil {
		return -1
	}
	return int(c.Uid)
}

// Handler routes the API. Each route is the HTTP edge of one Manager
// call: it decodes the body, parses the strings of the path and body into
// typed keys (edge.go), and only then calls the Manager.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	m := s.m
	pathKey := func(r *http.Request) (ServiceKey, error) {
		return parseKey(api.ServiceKey{Protocol: r.PathValue("proto"), Addr: r.PathValue("addr")})
	}
	mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, r *http.Request) { reply(w, m.Info()) })
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("order") {
		case "":
			reply(w, m.Services())
		case "added":
			reply(w, m.ServicesAsAdded())
		default:
			fail(w, &api.Error{Code: api.CodeInvalid, Message: "order: only \"added\" (the order services were added in) or none (sorted)"}, http.StatusBadRequest)
		}
	})
	mux.HandleFunc("DELETE /v1/services", func(w http.ResponseWriter, r *http.Request) { s.done(w, r, m.Clear(), Op{Kind: OpClear}) })
	mux.HandleFunc("POST /v1/services", func(w http.ResponseWriter, r *http.Request) {
		var in api.ServiceSpec
		if !decode(w, r, &in) {
			return
		}
		spec, err := parseService(in)
		if err == nil {
			err = m.AddService(spec)
		}
		s.done(w, r, err, Op{Kind: OpAddService, Service: spec})
	})
	mux.HandleFunc("PUT /v1/services/{proto}/{addr}", func(w http.ResponseWriter, r *http.Request) {
		var in api.ServiceSpec
		if !decode(w, r, &in) {
			return
		}
		in.ServiceKey = api.ServiceKey{Protocol: r.PathValue("proto"), Addr: r.PathValue("addr")}
		spec, err := parseService(in)
		if err == nil {
			err = m.EditService(spec)
		}
		s.done(w, r, err, Op{Kind: OpEditService, Service: spec})
	})
	mux.HandleFunc("DELETE /v1/services/{proto}/{addr}", func(w http.ResponseWriter, r *http.Request) {
		k, err := pathKey(r)
		if err == nil {
			err = m.DeleteService(k)
		}
		s.done(w, r, err, Op{Kind: OpDeleteService, Service: ServiceSpec{ServiceKey: k}})
	})
	// dest reads a real server and then the service's key, in the order the
	// API has always checked them.
	dest := func(r *http.Request, in api.DestSpec) (ServiceKey, DestSpec, error) {
		d, err := parseDest(in)
		if err != nil {
			return ServiceKey{}, d, err
		}
		k, err := pathKey(r)
		return k, d, err
	}
	mux.HandleFunc("POST /v1/services/{proto}/{addr}/dests", func(w http.ResponseWriter, r *http.Request) {
		var in api.DestSpec
		if !decode(w, r, &in) {
			return
		}
		k, d, err := dest(r, in)
		if err == nil {
			err = m.AddDest(k, d)
		}
		s.done(w, r, err, Op{Kind: OpAddDest, Service: ServiceSpec{ServiceKey: k}, Dest: d})
	})
	mux.HandleFunc("PUT /v1/services/{proto}/{addr}/dests/{dest}", func(w http.ResponseWriter, r *http.Request) {
		var in api.DestSpec
		if !decode(w, r, &in) {
			return
		}
		in.Addr = r.PathValue("dest")
		k, d, err := dest(r, in)
		if err == nil {
			err = m.EditDest(k, d)
		}
		s.done(w, r, err, Op{Kind: OpEditDest, Service: ServiceSpec{ServiceKey: k}, Dest: d})
	})
	mux.HandleFunc("DELETE /v1/services/{proto}/{addr}/dests/{dest}", func(w http.ResponseWriter, r *http.Request) {
		k, d, err := dest(r, api.DestSpec{Addr: r.PathValue("dest")})
		if err == nil {
			err = m.DeleteDest(k, d.Addr)
		}
		s.done(w, r, err, Op{Kind: OpDeleteDest, Service: ServiceSpec{ServiceKey: k}, Dest: d})
	})
	lip := func(r *http.Request, addr string) (ServiceKey, netip.Addr, error) {
		a, err := parseLIP(addr)
		if err != nil {
			return ServiceKey{}, a, err
		}
		k, err := pathKey(r)
		return k, a, err
	}
	mux.HandleFunc("POST /v1/services/{proto}/{addr}/laddrs", func(w http.ResponseWriter, r *http.Request) {
		var in api.LocalAddr
		if !decode(w, r, &in) {
			return
		}
		k, a, err := lip(r, in.Addr)
		if err == nil {
			err = m.AddLocalAddr(k, a)
		}
		s.done(w, r, err, Op{Kind: OpAddLocalAddr, Service: ServiceSpec{ServiceKey: k}, LocalAddr: a})
	})
	mux.HandleFunc("DELETE /v1/services/{proto}/{addr}/laddrs/{lip}", func(w http.ResponseWriter, r *http.Request) {
		k, a, err := lip(r, r.PathValue("lip"))
		if err == nil {
			err = m.DeleteLocalAddr(k, a)
		}
		s.done(w, r, err, Op{Kind: OpDeleteLocalAddr, Service: ServiceSpec{ServiceKey: k}, LocalAddr: a})
	})
	mux.HandleFunc("POST /v1/batch", func(w http.ResponseWriter, r *http.Request) {
		var in api.Batch
		if !decode(w, r, &in) {
			return
		}
		ops, err := parseBatch(in.Ops)
		if err == nil {
			err = m.Batch(ops)
		}
		s.done(w, r, err, ops...)
	})
	mux.HandleFunc("GET /v1/conns", func(w http.ResponseWriter, r *http.Request) { reply(w, m.Conns()) })
	mux.HandleFunc("GET /v1/timeouts", func(w http.ResponseWriter, r *http.Request) { reply(w, m.Timeouts()) })
	mux.HandleFunc("PUT /v1/timeouts", func(w http.ResponseWriter, r *http.Request) {
		var in api.Timeouts
		if decode(w, r, &in) {
			t := timeoutsOf(in)
			s.done(w, r, m.SetTimeouts(t), Op{Kind: OpSetTimeouts, Timeouts: t})
		}
	})
	mux.HandleFunc("POST /v1/zero", func(w http.ResponseWriter, r *http.Request) { m.Zero(); s.done(w, r, nil) })
	mux.HandleFunc("POST /v1/services/{proto}/{addr}/zero", func(w http.ResponseWriter, r *http.Request) {
		k, err := pathKey(r)
		if err == nil {
			err = m.ZeroService(k)
		}
		s.done(w, r, err)
	})
	mux.HandleFunc("GET /v1/services/{proto}/{addr}/health", func(w http.ResponseWriter, r *http.Request) {
		s.health(w, r, func(c Checks, k ServiceKey) error {
			h, err := c.HealthCheck(k)
			if err == nil {
				reply(w, h)
			}
			return err
		})
	})
	mux.HandleFunc("PUT /v1/services/{proto}/{addr}/health", func(w http.ResponseWriter, r *http.Request) {
		var in api.HealthCheck
		if !decode(w, r, &in) {
			return
		}
		s.health(w, r, func(c Checks, k ServiceKey) error { return s.noted(w, r)(c.SetHealthCheck(k, in)) })
	})
	mux.HandleFunc("DELETE /v1/services/{proto}/{addr}/health", func(w http.ResponseWriter, r *http.Request) {
		s.health(w, r, func(c Checks, k ServiceKey) error { return s.noted(w, r)(c.ClearHealthCheck(k)) })
	})
	mux.HandleFunc("GET /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		// Without a daemon behind the API there are none: nothing can set one.
		var fs []api.FaultView
		if f := m.faultsOf(); f != nil {
			fs = f.Faults()
		}
		reply(w, nonNilFaults(fs))
	})
	mux.HandleFunc("PUT /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		var in []api.Fault
		if decode(w, r, &in) {
			s.faults(w, r, func(f Faults) error { return s.noted(w, r)(f.SetFaults(in)) })
		}
	})
	mux.HandleFunc("POST /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		var in api.Fault
		if decode(w, r, &in) {
			s.faults(w, r, func(f Faults) error { return s.noted(w, r)(f.AddFault(in)) })
		}
	})
	mux.HandleFunc("DELETE /v1/faults", func(w http.ResponseWriter, r *http.Request) {
		// ?service=|server=|client= names one fault's target; none clears
		// them all.
		q := r.URL.Query()
		t := api.Fault{Service: q.Get("service"), Server: q.Get("server"), Client: q.Get("client")}
		s.faults(w, r, func(f Faults) error {
			if t == (api.Fault{}) {
				return s.noted(w, r)(f.SetFaults(nil))
			}
			return s.noted(w, r)(f.RemoveFault(t))
		})
	})
	mux.HandleFunc("POST /v1/reload", s.reload)
	mux.HandleFunc("GET /v1/bgp", s.bgp)
	mux.HandleFunc("POST /v1/drain", func(w http.ResponseWriter, r *http.Request) {
		s.drain(w, r, func(c Cluster) api.Drain { return c.Drain(true) })
	})
	mux.HandleFunc("GET /v1/drain", func(w http.ResponseWriter, r *http.Request) { s.drain(w, r, Cluster.DrainStatus) })
	mux.HandleFunc("DELETE /v1/drain", func(w http.ResponseWriter, r *http.Request) {
		s.drain(w, r, func(c Cluster) api.Drain { return c.Drain(false) })
	})
	mux.HandleFunc("GET /v1/capture", s.capture)
	mux.HandleFunc("GET /v1/events", s.events)
	// Profiles of the running data path. They show code paths, timings and
	// memory: served here, to the owner of the socket only, never on the
	// metrics address that every local user can reach.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// maxBody bounds a request body: a batch of ten thousand services with their
// servers fits well within it.
const maxBody = 64 << 20

// decode reads a request body that is exactly one JSON value of v's shape:
// unknown fields, a second value or anything else after it is refused.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&json.RawMessage{}) != io.EOF {
			err = errors.New("more after the JSON value")
		}
	}
	if err != nil {
		fail(w, &api.Error{Code: api.CodeInvalid, Message: "request body: " + err.Error()}, 400)
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "weight 7 -> 1", not "-\u003e": read by people, not put in HTML
	enc.Encode(v)
}

func fail(w http.ResponseWriter, e *api.Error, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(e)
}

// done answers a change: 204, 200 with the notes on how a reload of the
// configuration file will treat ops (Manager.SetNotes), or the error with
// its code. Every change is logged, refused ones too.
func (s *Server) done(w http.ResponseWriter, r *http.Request, err error, ops ...Op) {
	if err == nil {
		notes := s.m.Notes(ops)
		if len(notes) == 0 {
			s.log.Info("control: applied", "op", r.Method+" "+r.URL.Path)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		s.log.Info("control: applied", "op", r.Method+" "+r.URL.Path, "notes", strings.Join(notes, "; "))
		reply(w, api.Result{Notes: notes})
		return
	}
	code, status := codeOf(err)
	var ae *api.Error
	if errors.As(err, &ae) {
		code = ae.Code
	}
	s.log.Warn("control: refused", "op", r.Method+" "+r.URL.Path, "err", err)
	e := &api.Error{Code: code, Message: strings.TrimSpace(err.Error())}
	var be *BatchError
	if errors.As(err, &be) {
		e.Message, e.Op = strings.TrimSpace(be.Err.Error()), &be.Index
	}
	fail(w, e, status)
}

// reload reloads the configuration file (Manager.SetReload), as SIGHUP
// does, and answers what it did: the changes, the runtime changes it
// overrode with the file's changes, those it kept, what takes a restart.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	res, ok, err := s.m.Reload()
	if !ok {
		fail(w, &api.Error{Code: api.CodeNoConfig, Message: "this tapvs has no configuration file to reload"}, http.StatusNotFound)
		return
	}
	if err != nil {
		// A file's refusal is a line per field: the API's is one line.
		msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
		s.log.Warn("control: refused", "op", r.Method+" "+r.URL.Path, "err", msg)
		fail(w, &api.Error{Code: api.CodeInvalid, Message: "reload refused, the running configuration is kept: " + msg}, http.StatusBadRequest)
		return
	}
	reply(w, res)
}

// health answers /v1/services/{proto}/{addr}/health with what f does on
// the service's checks; f answers unless it fails.
func (s *Server) health(w http.ResponseWriter, r *http.Request, f func(Checks, ServiceKey) error) {
	c := s.m.checksOf()
	if c == nil {
		fail(w, &api.Error{Code: api.CodeInternal, Message: "this tapvs runs no health checks (no daemon behind the API)"}, http.StatusNotImplemented)
		return
	}
	k, err := parseKey(api.ServiceKey{Protocol: r.PathValue("proto"), Addr: r.PathValue("addr")})
	if err == nil {
		_, err = s.m.service(k)
	}
	if err == nil {
		err = f(c, k)
	}
	if err != nil {
		s.done(w, r, err)
	}
}

// faults runs f on the Faults served, or answers that there are none.
func (s *Server) faults(w http.ResponseWriter, r *http.Request, f func(Faults) error) {
	fs := s.m.faultsOf()
	if fs == nil {
		fail(w, &api.Error{Code: api.CodeInternal, Message: "this tapvs serves no faults (no daemon behind the API)"}, http.StatusNotImplemented)
		return
	}
	if err := f(fs); err != nil {
		s.done(w, r, err)
	}
}

func nonNilFaults(fs []api.FaultView) []api.FaultView {
	if fs == nil {
		return []api.FaultView{}
	}
	return fs
}

// noted answers an applied change with its notes, as done does for the
// Manager's: a runtime check's notes say that a reload re-applies the
// file's.
func (s *Server) noted(w http.ResponseWriter, r *http.Request) func([]string, error) error {
	return func(notes []string, err error) error {
		if err != nil {
			return err
		}
		s.log.Info("control: applied", "op", r.Method+" "+r.URL.Path, "notes", strings.Join(notes, "; "))
		reply(w, api.Result{Notes: notes})
		return nil
	}
}

// bgp answers GET /v1/bgp.
func (s *Server) bgp(w http.ResponseWriter, r *http.Request) {
	c := s.m.clusterOf()
	if c == nil {
		fail(w, &api.Error{Code: api.CodeNoBGP, Message: "this tapvs has no bgp: section"}, http.StatusNotFound)
		return
	}
	b, ok := c.BGP()
	if !ok {
		fail(w, &api.Error{Code: api.CodeNoBGP, Message: "this tapvs has no bgp: section"}, http.StatusNotFound)
		return
	}
	reply(w, b)
}

// drain answers /v1/drain with what f does.
func (s *Server) drain(w http.ResponseWriter, r *http.Request, f func(Cluster) api.Drain) {
	c := s.m.clusterOf()
	if c == nil {
		fail(w, &api.Error{Code: api.CodeInternal, Message: "this tapvs cannot drain (no daemon behind the API)"}, http.StatusNotImplemented)
		return
	}
	reply(w, f(c))
}

// maxCapture bounds the frames of one capture.
const maxCapture = 1000000

// capture streams a pcap of a service's frames on both sides, as received
// and as sent: ?proto=tcp&addr=VIP:port&count=N&timeout=30s.
func (s *Server) capture(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key, err := parseKey(api.ServiceKey{Protocol: q.Get("proto"), Addr: q.Get("addr")})
	var svc *nat.Service
	if err == nil {
		svc, err = s.m.service(key)
	}
	if err != nil {
		s.done(w, r, err)
		return
	}
	count, timeout := 100, 30*time.Second
	if v := q.Get("count"); v != "" {
		if count, err = strconv.Atoi(v); err != nil || count < 1 || count > maxCapture {
			fail(w, &api.Error{Code: api.CodeInvalid, Message: fmt.Sprintf("count: %q is not a number from 1 to %d", v, maxCapture)}, 400)
			return
		}
	}
	if v := q.Get("timeout"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 || timeout > time.Hour {
			fail(w, &api.Error{Code: api.CodeInvalid, Message: fmt.Sprintf("timeout: %q is not a duration from 1ns to 1h", v)}, 400)
			return
		}
	}
	tap, err := s.m.bal.StartTap(svc, 4096)
	if err != nil {
		fail(w, &api.Error{Code: api.CodeInvalid, Message: err.Error()}, http.StatusConflict)
		return
	}
	defer s.m.bal.StopTap(tap)
	s.log.Info("capture started", "service", key.String(), "count", count)
	w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		return
	}
	flusher, _ := w.(http.Flusher)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for n := 0; n < count; n++ {
		select {
		case f := <-tap.C:
			ci := gopacket.CaptureInfo{Timestamp: f.Time, CaptureLength: len(f.Data), Length: len(f.Data)}
			if err := pw.WritePacket(ci, f.Data); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		case <-deadline.C:
			return
		case <-r.Context().Done():
			return
		}
	}
}
