package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A resolver names addresses and ports in a listing without -n, as
// ipvsadm's addrport_to_anyname does: the host's name by reverse lookup,
// the port's by /etc/services, the number where there is none. A listing
// must not hang where no resolver answers: each lookup is bounded, and
// after one times out the rest are numeric.
type resolver struct {
	// host is the reverse lookup of an address (the net package's, which
	// reads /etc/hosts before asking DNS); service the name of a port in
	// /etc/services ("" for none). Tests replace them.
	host    func(ctx context.Context, a netip.Addr) ([]string, error)
	service func(port uint16, proto string) string
	timeout time.Duration // for one reverse lookup

	cache map[netip.Addr]string
	dead  bool // a lookup timed out: no more are tried
}

func newResolver() *resolver {
	return &resolver{
		host: func(ctx context.Context, a netip.Addr) ([]string, error) {
			return net.DefaultResolver.LookupAddr(ctx, a.String())
		},
		service: etcServices,
		timeout: time.Second,
	}
}

// naming is the resolver of the listings; tests replace it.
var naming = newResolver()

// addrPort writes an address and port from the API ("10.0.0.1:80",
// "[2001:db8::1]:80") as ipvsadm does: as they are with -n, else each
// named where it has a name. What does not parse is written as it is.
func (r *resolver) addrPort(s, proto string, numeric bool) string {
	ap, err := netip.ParseAddrPort(s)
	if numeric || err != nil {
		return s
	}
	host := r.addr(ap.Addr())
	if ap.Addr().Is6() {
		host = "[" + host + "]"
	}
	return host + ":" + r.port(ap.Port(), proto)
}

// port is a port's service name for proto ("tcp", "udp"), or its number.
func (r *resolver) port(p uint16, proto string) string {
	if n := r.service(p, strings.ToLower(proto)); n != "" {
		return n
	}
	return strconv.Itoa(int(p))
}

// addr is an address's host name, or the address.
func (r *resolver) addr(a netip.Addr) string {
	if n, ok := r.cache[a]; ok {
		return n
	}
	n := a.String()
	if !r.dead {
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		hosts, err := r.host(ctx, a)
		timedOut := ctx.Err() == context.DeadlineExceeded
		cancel()
		switch {
		case err == nil && len(hosts) > 0 && hosts[0] != "":
			n = strings.TrimSuffix(hosts[0], ".")
		case timedOut:
			r.dead = true
		}
	}
	if r.cache == nil {
		r.cache = map[netip.Addr]string{}
	}
	r.cache[a] = n
	return n
}

// servicesFile is read once, on the first port named.
var servicesFile = sync.OnceValue(func() map[string]string {
	f, err := os.Open("/etc/services")
	if err != nil {
		return nil
	}
	defer f.Close()
	return parseServices(f)
})

// etcServices is getservbyport: the first name /etc/services gives the
// port under the protocol.
func etcServices(port uint16, proto string) string {
	return servicesFile()[strconv.Itoa(int(port))+"/"+proto]
}

// parseServices reads the services(5) format: "name port/proto aliases",
// "#" to the end of a line a comment. It returns port/proto to the first
// name given it; a line it cannot read is skipped, as getservent does.
func parseServices(r io.Reader) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		num, proto, ok := strings.Cut(f[1], "/")
		p, err := strconv.ParseUint(num, 10, 16)
		if !ok || err != nil || proto == "" || strings.Contains(proto, "/") { // "80//": no protocol
			continue
		}
		key := strconv.Itoa(int(p)) + "/" + strings.ToLower(proto)
		if _, seen := m[key]; !seen {
			m[key] = f[0]
		}
	}
	return m
}
