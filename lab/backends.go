package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// Backend is the set of small servers one real server runs: HTTP that says
// who answered and whom it saw, a bulk-transfer server, and a UDP echo;
// and the same three behind a PROXY protocol header (v1 or v2, decoded by
// github.com/pires/go-proxyproto), which they require. Each listens on the
// real server's IPv4 address and, when it has one, its IPv6 address.
type Backend struct {
	Name  string
	Addr  netip.Addr
	Addr6 netip.Addr // the real server's IPv6 address; invalid: IPv4 only

	Requests atomic.Int64 // HTTP requests served
	Echoes   atomic.Int64 // UDP datagrams answered on EchoPort

	closers []io.Closer
	wg      sync.WaitGroup
	ns      string
	srv     *http.Server
	httpMu  sync.Mutex
	httpL   []net.Listener // one per address; nil while stopped
}

// StartBackend listens inside namespace ns on addr and, for the lab's real
// servers (RS1, RS2) on a host with IPv6, on their IPv6 addresses too.
func StartBackend(ns, name string, addr netip.Addr) (*Backend, error) {
	var addr6 netip.Addr
	if HasIPv6() {
		addr6 = RS6(addr)
	}
	return StartBackendAt(ns, name, addr, addr6)
}

// StartBackendAt listens inside namespace ns on addr and, if it is valid,
// on addr6 as well.
func StartBackendAt(ns, name string, addr, addr6 netip.Addr) (*Backend, error) {
	b := &Backend{Name: name, Addr: addr, Addr6: addr6, ns: ns}
	type socks struct {
		http, bulk, pHTTP, pBulk net.Listener
		udp, pUDP                net.PacketConn
	}
	var all []*socks
	listen := func(network string, a netip.Addr, port uint16) (net.Listener, error) {
		l, err := net.Listen(network, netip.AddrPortFrom(a, port).String())
		if err == nil {
			b.closers = append(b.closers, l)
		}
		return l, err
	}
	listenPacket := func(network string, a netip.Addr, port uint16) (net.PacketConn, error) {
		c, err := net.ListenPacket(network, netip.AddrPortFrom(a, port).String())
		if err == nil {
			b.closers = append(b.closers, c)
		}
		return c, err
	}
	err := InNetns(ns, func() error {
		for _, a := range b.addrs() {
			tcp, udp := networks(a)
			s := &socks{}
			var err error
			if s.http, err = listen(tcp, a, HTTPPort); err != nil {
				return err
			}
			if s.bulk, err = listen(tcp, a, BulkPort); err != nil {
				return err
			}
			if s.pHTTP, err = listen(tcp, a, ProxyHTTPPort); err != nil {
				return err
			}
			if s.pBulk, err = listen(tcp, a, ProxyBulkPort); err != nil {
				return err
			}
			if s.pUDP, err = listenPacket(udp, a, ProxyEchoPort); err != nil {
				return err
			}
			if s.udp, err = listenPacket(udp, a, EchoPort); err != nil {
				return err
			}
			all = append(all, s)
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("backend %s in %s: %w", name, ns, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(b.serveHTTP), ReadHeaderTimeout: 5 * time.Second}
	psrv := &http.Server{Handler: http.HandlerFunc(b.serveProxyHTTP), ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*proxyproto.Conn); ok {
				ctx = context.WithValue(ctx, rawLocalKey{}, pc.Raw().LocalAddr())
				return context.WithValue(ctx, rawRemoteKey{}, pc.Raw().RemoteAddr().String())
			}
			return ctx
		}}
	b.closers = append(b.closers, srv, psrv)
	b.srv = srv
	for _, s := range all {
		b.httpL = append(b.httpL, s.http)
		b.wg.Add(6)
		go func() { defer b.wg.Done(); srv.Serve(s.http) }()
		go func() { defer b.wg.Done(); b.serveBulk(s.bulk) }()
		go func() { defer b.wg.Done(); b.serveEcho(s.udp) }()
		go func() { defer b.wg.Done(); psrv.Serve(requireProxy(s.pHTTP)) }()
		go func() { defer b.wg.Done(); b.serveBulk(requireProxy(s.pBulk)) }()
		go func() { defer b.wg.Done(); b.serveProxyEcho(s.pUDP) }()
	}
	return b, nil
}

// addrs are the addresses the backend listens on: Addr, then Addr6 if set.
func (b *Backend) addrs() []netip.Addr {
	if b.Addr6.IsValid() {
		return []netip.Addr{b.Addr, b.Addr6}
	}
	return []netip.Addr{b.Addr}
}

// networks names the TCP and UDP networks for sockets on a: "tcp4" and
// "udp4" for IPv4, "tcp6" and "udp6" for IPv6.
func networks(a netip.Addr) (tcp, udp string) {
	if a.Is4() || a.Is4In6() {
		return "tcp4", "udp4"
	}
	return "tcp6", "udp6"
}

// StopHTTP stops accepting HTTP connections on every address, as a crashed
// web server would; connections already open are served on.
func (b *Backend) StopHTTP() {
	b.httpMu.Lock()
	defer b.httpMu.Unlock()
	for _, l := range b.httpL {
		l.Close()
	}
	b.httpL = nil
}

// StartHTTP listens again after StopHTTP.
func (b *Backend) StartHTTP() error {
	b.httpMu.Lock()
	defer b.httpMu.Unlock()
	if b.httpL != nil {
		return nil
	}
	var ls []net.Listener
	if err := InNetns(b.ns, func() error {
		for _, a := range b.addrs() {
			tcp, _ := networks(a)
			l, err := net.Listen(tcp, netip.AddrPortFrom(a, HTTPPort).String())
			if err != nil {
				return err
			}
			ls = append(ls, l)
		}
		return nil
	}); err != nil {
		for _, l := range ls {
			l.Close()
		}
		return err
	}
	b.httpL = ls
	for _, l := range ls {
		b.wg.Add(1)
		go func() { defer b.wg.Done(); b.srv.Serve(l) }()
	}
	return nil
}

// Close stops the servers. Connections already accepted finish on their own.
func (b *Backend) Close() {
	for _, c := range b.closers {
		c.Close()
	}
	b.wg.Wait()
}

// The HTTP answer is one line: "<name> <addr> saw <source ip:port>", addr
// being the real server's address the request came to (Addr or Addr6).
func (b *Backend) serveHTTP(w http.ResponseWriter, r *http.Request) {
	b.Requests.Add(1)
	fmt.Fprintf(w, "%s %s saw %s\n", b.Name, b.local(r), r.RemoteAddr)
}

// local is the real server's address the request came to: Addr, or Addr6
// for a request over IPv6.
func (b *Backend) local(r *http.Request) netip.Addr {
	la, ok := r.Context().Value(rawLocalKey{}).(net.Addr)
	if !ok {
		la, ok = r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	}
	if ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil && ap.Addr().Is6() && !ap.Addr().Is4In6() {
			return ap.Addr()
		}
	}
	return b.Addr
}

// requireProxy makes l's connections start with a PROXY protocol header (v1
// or v2): a connection without one fails at its first read.
func requireProxy(l net.Listener) net.Listener {
	return &proxyproto.Listener{Listener: l, ReadHeaderTimeout: 10 * time.Second,
		ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }}
}

type rawRemoteKey struct{}

// rawLocalKey holds a PROXY connection's own local address: its LocalAddr
// is the one the header names.
type rawLocalKey struct{}

// The answer behind a PROXY header is one line: "<name> <addr> saw <LIP:port>
// told <client ip:port>": the connection's own source, and the source the
// header gave.
func (b *Backend) serveProxyHTTP(w http.ResponseWriter, r *http.Request) {
	b.Requests.Add(1)
	raw, _ := r.Context().Value(rawRemoteKey{}).(string)
	fmt.Fprintf(w, "%s %s saw %s told %s\n", b.Name, b.local(r), raw, r.RemoteAddr)
}

// serveProxyEcho echoes datagrams that each start with a PROXY v2 header:
// "<name> saw <LIP:port> told <client ip:port>: <payload>". A datagram
// without a valid header is answered "<name> saw <source>: no PROXY header".
func (b *Backend) serveProxyEcho(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		r := bufio.NewReaderSize(bytes.NewReader(buf[:n]), n+16)
		h, err := proxyproto.Read(r)
		var reply []byte
		if err != nil || h.Version != 2 {
			reply = fmt.Appendf(nil, "%s saw %s: no PROXY header", b.Name, from)
		} else {
			rest, _ := io.ReadAll(r)
			reply = append(fmt.Appendf(nil, "%s saw %s told %s: ", b.Name, from, h.SourceAddr), rest...)
		}
		pc.WriteTo(reply, from)
	}
}

// Bulk protocol: the client sends 'U' or 'D' and an 8-byte length n.
// 'U': the client sends n bytes; the server answers with their SHA-256.
// 'D': the server sends n bytes of Stream(n).
func (b *Backend) serveBulk(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var hdr [9]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			n := int64(binary.BigEndian.Uint64(hdr[1:]))
			switch hdr[0] {
			case 'U':
				h := sha256.New()
				if _, err := io.CopyN(h, c, n); err != nil {
					return
				}
				c.Write(h.Sum(nil))
			case 'D':
				io.CopyN(c, Stream(n), n)
			}
		}()
	}
}

func (b *Backend) serveEcho(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		b.Echoes.Add(1)
		reply := append([]byte(fmt.Sprintf("%s saw %s: ", b.Name, from)), buf[:n]...)
		pc.WriteTo(reply, from)
	}
}

// Stream is the deterministic byte stream the bulk server sends for a
// download of n bytes; a client hashes its own copy to check what arrived.
func Stream(n int64) io.Reader {
	return bufio.NewReaderSize(&chachaReader{r: rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)})}, 64<<10)
}

type chachaReader struct{ r *rand.ChaCha8 }

func (c *chachaReader) Read(p []byte) (int, error) { return c.r.Read(p) }

// Dial opens a connection from inside namespace ns.
func Dial(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNetns(ns, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient is an HTTP client whose connections start in namespace ns, one
// connection per request (Connection: close), as a short-connection test wants.
func HTTPClient(ns string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return Dial(ctx, ns, network, addr)
			},
		},
	}
}

// bulk opens a bulk connection (IPv4 or IPv6) from namespace ns and asks for op ('U' or
// 'D') of n bytes; the connection ends with ctx's deadline.
func bulk(ctx context.Context, ns string, addr netip.AddrPort, op byte, n int64) (net.Conn, error) {
	tcp, _ := networks(addr.Addr())
	c, err := Dial(ctx, ns, tcp, addr.String())
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	var hdr [9]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Upload sends n bytes through a bulk connection to addr and checks the
// server's hash of them. It returns how long the transfer took.
func Upload(ctx context.Context, ns string, addr netip.AddrPort, n int64) (time.Duration, error) {
	start := time.Now()
	c, err := bulk(ctx, ns, addr, 'U', n)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	want := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(c, want), Stream(n), n); err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, got); err != nil {
		return 0, fmt.Errorf("upload: reading the server's hash: %w", err)
	}
	el := time.Since(start)
	if string(got) != string(want.Sum(nil)) {
		return el, errors.New("upload: the server's hash of the data differs: data was corrupted")
	}
	return el, nil
}

// Download receives n bytes from a bulk connection to addr and checks them
// against Stream(n). It returns how long the transfer took.
func Download(ctx context.Context, ns string, addr netip.AddrPort, n int64) (time.Duration, error) {
	start := time.Now()
	c, err := bulk(ctx, ns, addr, 'D', n)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	got := sha256.New()
	if m, err := io.Copy(got, c); err != nil || m != n {
		return 0, fmt.Errorf("download: got %d of %d bytes: %v", m, n, err)
	}
	el := time.Since(start)
	want := sha256.New()
	io.CopyN(want, Stream(n), n)
	if string(got.Sum(nil)) != string(want.Sum(nil)) {
		return el, errors.New("download: data differs from what the server sent: corrupted")
	}
	return el, nil
}

// UDPEcho sends msg to addr (IPv4 or IPv6) from namespace ns and returns
// the reply.
func UDPEcho(ctx context.Context, ns string, addr netip.AddrPort, msg string) (string, error) {
	_, udp := networks(addr.Addr())
	c, err := Dial(ctx, ns, udp, addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
